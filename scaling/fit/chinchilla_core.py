"""The jitted core of the 2-D Chinchilla fit: exact derivatives, a multi-damping Newton solver, variable-projection
starts. Public API in :mod:`scaling.fit.chinchilla_fit`; call these inside ``jax.enable_x64(True)``.

Parameters are ``t = (e, a, b, alpha, beta)`` in *centred* coordinates: with lN = log N - mean log N and
lD = log D - mean log D (over the data), log L_pred = logsumexp(e, a - alpha lN, b - beta lD). Centring removes the
near-collinearity of a and alpha (log N spans a few units around ~20), so the Hessian is well conditioned.

Objectives on log residuals r = log L_pred - log L, weighted by w (a bootstrap multiplicity; 0 = padding):
``huber_log``: sum w Huber_delta(r) (r^2/2 inside delta, delta (|r| - delta/2) beyond); ``mse_log``: sum w r^2.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

Array = jax.Array

# Marquardt dampings (relative to diag(J^T W J)) tried at every Newton step around the adaptive mu (see `newton`):
# each costs one objective evaluation, which is what a step costs, so 7 trials per step (with pure Newton and 1e4).
MU_FACTORS = (1 / 30, 1 / 3, 1.0, 3.0, 30.0)
MU_START, MU_RANGE = 1e-3, (1e-10, 1e6)


def _pieces(kind: str, delta: float, r: Array) -> tuple[Array, Array, Array]:
  """(h, h', h'') of the per-point loss at residuals r."""
  if kind == "huber_log":
    inside = jnp.abs(r) <= delta
    h = jnp.where(inside, 0.5 * r ** 2, delta * (jnp.abs(r) - 0.5 * delta))
    return h, jnp.clip(r, -delta, delta), inside.astype(r.dtype)
  if kind == "mse_log":
    return r ** 2, 2.0 * r, jnp.full_like(r, 2.0)
  raise ValueError(f"unknown objective {kind!r}")


def _log_pred(t: ArrayLike, lN: ArrayLike, lD: ArrayLike) -> tuple[Array, Array, Array, Array]:
  """log(e^e + e^(a - alpha lN) + e^(b - beta lD)) and the two exponentials (2 exp per point, not logsumexp's 3: the
  trial evaluations dominate the cost; the sum of positive terms loses nothing, and centred lN, lD keep the
  exponents moderate; an overflow gives inf, a rejected trial)."""
  x1, x2 = jnp.exp(t[1] - t[3] * lN), jnp.exp(t[2] - t[4] * lD)
  s = jnp.exp(t[0]) + x1 + x2
  return jnp.log(s), x1, x2, s


def loss(kind: str, delta: float, t: ArrayLike, lN: ArrayLike, lD: ArrayLike, lL: ArrayLike,
         w: ArrayLike) -> Array:
  """The objective at t; inf where it is not finite."""
  f = jnp.sum(w * _pieces(kind, delta, _log_pred(t, lN, lD)[0] - lL)[0])
  return jnp.where(jnp.isfinite(f), f, jnp.inf)


def derivatives(kind: str, delta: float, t: ArrayLike, lN: ArrayLike, lD: ArrayLike, lL: ArrayLike,
                w: ArrayLike) -> tuple[Array, Array, Array, Array]:
  """(f, gradient g_5, Hessian H_5x5, scale s_5 = diag(J^T W J)) of the objective, in closed form.

  With p_j the softmax weights of the three log terms (e, a - alpha lN, b - beta lD), dr/dt = G_Px5 =
  (p0, p1, p2, -p1 lN, -p2 lD) and d^2r/dt^2 = sum_j p_j g_j g_j^T - G G^T (g_j the constant gradient of term j),
  so H = G^T diag(w (h'' - h')) G + sum_P w h' sum_j p_j g_j g_j^T; the last sum has 7 distinct entries.
  """
  lp, x1, x2, s = _log_pred(t, lN, lD)
  p0, p1, p2 = jnp.exp(t[0]) / s, x1 / s, x2 / s
  h, h1, h2 = _pieces(kind, delta, lp - lL)
  G_Px5 = jnp.stack([p0, p1, p2, -p1 * lN, -p2 * lD], axis=1)
  c_P = w * h1
  m = (jnp.stack([p0, p1, p2, p1 * lN, p1 * lN ** 2, p2 * lD, p2 * lD ** 2], axis=0) @ c_P)
  M = jnp.zeros((5, 5), lp.dtype).at[jnp.diag_indices(5)].set(jnp.stack([m[0], m[1], m[2], m[4], m[6]]))
  M = M.at[1, 3].set(-m[3]).at[3, 1].set(-m[3]).at[2, 4].set(-m[5]).at[4, 2].set(-m[5])
  H = (G_Px5.T * (w * (h2 - h1))[None, :]) @ G_Px5 + M
  return jnp.sum(w * h), G_Px5.T @ c_P, H, jnp.sum(w[:, None] * G_Px5 ** 2, axis=0)


def newton(kind: str, delta: float, max_steps: int, t0: Array, lN: ArrayLike, lD: ArrayLike, lL: ArrayLike,
           w: ArrayLike) -> tuple[Array, Array, Array, Array]:
  """Damped Newton from t0 until no trial lowers f (or `max_steps`). Each step solves (H + lam diag(s)) d = -g for
  lam = 1e-12 (Newton), mu * MU_FACTORS (around the adaptive damping mu) and 1e4 (a short, nearly gradient step),
  keeps the best trial if it lowers f, and sets mu to the damping that won. Returns (t, f, steps, decrement).

  Why this works on Huber with a tiny delta: the objective is C^1 and piecewise smooth; Newton on the current piece
  converges quadratically once the inlier set (|r| <= delta) settles. Before that a full Newton step leaves the
  piece and overshoots; the damping that fits is found by the trials and carried by mu (it moves 30x per step),
  so the solver does not crawl with a fixed damping. `decrement` is g^T (H + 1e-10 diag(s))^-1 g / 2 at the end
  (the decrease a Newton step predicts): the convergence check.
  """
  f_trials = jax.vmap(lambda t: loss(kind, delta, t, lN, lD, lL, w))

  def body(state):
    t, f, mu, i, _ = state
    _, g, H, s = derivatives(kind, delta, t, lN, lD, lL, w)
    lam_L = jnp.concatenate([jnp.array([1e-12]), mu * jnp.asarray(MU_FACTORS), jnp.array([1e4])])
    A_Lx5x5 = H[None] + lam_L[:, None, None] * jnp.diag(s + 1e-300)[None]
    d_Lx5 = -jnp.linalg.solve(A_Lx5x5, jnp.broadcast_to(g, (len(lam_L), 5))[..., None])[..., 0]
    trial_Lx5 = t[None, :] + d_Lx5
    f_L = f_trials(trial_Lx5)
    f_L = jnp.where(jnp.all(jnp.isfinite(trial_Lx5), axis=1), f_L, jnp.inf)
    best = jnp.argmin(f_L)
    better = f_L[best] < f
    mu = jnp.where(better, jnp.clip(lam_L[best], MU_RANGE[0], MU_RANGE[1]), mu)
    return jnp.where(better, trial_Lx5[best], t), jnp.where(better, f_L[best], f), mu, i + 1, ~better

  def cond(state):
    return (state[3] < max_steps) & ~state[4]

  f0 = loss(kind, delta, t0, lN, lD, lL, w)
  init = (t0, f0, jnp.asarray(MU_START, t0.dtype), jnp.asarray(0), jnp.asarray(False))
  t, f, _, steps, _ = jax.lax.while_loop(cond, body, init)
  _, g, H, s = derivatives(kind, delta, t, lN, lD, lL, w)
  dec = 0.5 * g @ jnp.linalg.solve(H + 1e-10 * jnp.diag(s + 1e-300), g)
  return t, f, steps, dec


def _nnls3(M_Px3: Array, b_P: Array) -> Array:
  """Non-negative least squares min ||M c - b||, c >= 0, for 3 columns: the best feasible solution over the 7
  non-empty supports (the NNLS optimum is the unconstrained solution on its support, and is feasible)."""
  masks_7x3 = jnp.array([[(s >> j) & 1 for j in range(3)] for s in range(1, 8)], dtype=M_Px3.dtype)
  MtM, Mtb, btb = M_Px3.T @ M_Px3, M_Px3.T @ b_P, b_P @ b_P

  def on_support(m):
    A = MtM * m[:, None] * m[None, :] + jnp.diag(1.0 - m)
    c = jnp.linalg.solve(A, Mtb * m) * m
    res = btb - 2 * c @ Mtb + c @ MtM @ c
    return c, jnp.where(jnp.all(c >= 0) & jnp.isfinite(res), res, jnp.inf)

  c_7x3, res_7 = jax.vmap(on_support)(masks_7x3)
  return c_7x3[jnp.argmin(res_7)]


def vp_starts(kind: str, delta: float, alphas: Array, betas: Array, top_k: int, lN: ArrayLike, lD: ArrayLike,
              lL: ArrayLike, w: ArrayLike) -> tuple[Array, Array]:
  """Variable-projection starts: for every (alpha, beta) on the grid, L_pred is linear in (E, A, B); solve the
  relative least squares min sum w ((L_pred - L) / L)^2 (the first-order log residual) with E, A, B >= 0, evaluate
  the objective there, and return the `top_k` best grid points that are local minima over their 8 neighbours
  (then the best others), as top_k x 5 starts with their objective values."""
  sw, L = jnp.sqrt(w), jnp.exp(lL)
  floor = 1e-9 * jnp.sum(w * L) / jnp.sum(w)  # E, A, B > 0: their logs are parameters

  def one(al, be):
    M_Px3 = jnp.stack([jnp.ones_like(lN), jnp.exp(-al * lN), jnp.exp(-be * lD)], axis=1) * (sw / L)[:, None]
    c = jnp.maximum(_nnls3(M_Px3, sw), floor)
    t = jnp.concatenate([jnp.log(c), jnp.stack([al, be])])
    return t, loss(kind, delta, t, lN, lD, lL, w)

  t_AxBx5, f_AxB = jax.vmap(lambda al: jax.vmap(lambda be: one(al, be))(betas))(alphas)
  f_AxB = jnp.where(jnp.isfinite(f_AxB), f_AxB, jnp.inf)
  pad = jnp.pad(f_AxB, 1, constant_values=jnp.inf)
  n_a, n_b = f_AxB.shape
  neighbours = [pad[1 + i:1 + i + n_a, 1 + j:1 + j + n_b] for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
  local = jnp.all(jnp.stack([f_AxB <= nb for nb in neighbours]), axis=0) & jnp.isfinite(f_AxB)
  order = jnp.lexsort((f_AxB.reshape(-1), ~local.reshape(-1)))[:top_k]
  return t_AxBx5.reshape(-1, 5)[order], f_AxB.reshape(-1)[order]


@functools.lru_cache(maxsize=None)
def compiled_fit(kind: str, delta: float, n_grid: int, lo: float, hi: float, top_k: int,
                 max_steps: int) -> Callable[..., tuple[Array, Array, Array, Array, Array]]:
  """(lN, lD, lL, w) -> (t_kx5, f_k, steps_k, decrement_k, start_f_k): Newton from the top_k VP starts."""
  def run(lN, lD, lL, w):
    grid = jnp.linspace(lo, hi, n_grid)
    t0_kx5, f0_k = vp_starts(kind, delta, grid, grid, top_k, lN, lD, lL, w)
    t, f, steps, dec = jax.vmap(lambda t0: newton(kind, delta, max_steps, t0, lN, lD, lL, w))(t0_kx5)
    return t, f, steps, dec, f0_k
  return jax.jit(run)


@functools.lru_cache(maxsize=None)
def compiled_refit(kind: str, delta: float, max_steps: int) -> Callable[..., tuple[Array, Array, Array, Array]]:
  """(t0_5, lN, lD, lL, w_BxP) -> (t_Bx5, f_B, steps_B, decrement_B): one warm-started Newton per weight vector."""
  one = lambda t0, lN, lD, lL, w: newton(kind, delta, max_steps, t0, lN, lD, lL, w)  # noqa: E731
  return jax.jit(jax.vmap(one, in_axes=(None, None, None, None, 0)))
