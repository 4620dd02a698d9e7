"""Faithful port of the scaling-law estimators M1-M4 of Alabdulmohsin, Neyshabur & Zhai, "Revisiting Neural Scaling
Laws in Language and Vision" (NeurIPS 2022), as their public code fits them (google-research/google-research,
`revisiting_neural_scaling_laws/methods/{base,m1,m2,m3,m4}.py` and the notebook; spec `bnsl.md` §3).

Forms (the original's sign convention: c < 0 in M1, M2 and M4):

    M1: y = beta x^c                                  one least-squares fit of log y on [1, log x]
    M2: y = err_inf + beta x^c                        alternate LS for (beta, c) with err_inf steps: 1000 epochs of
                                                      GD (lr 1e-8) for 100 iterations, then 100 damped Newton epochs
    M3: y = beta (1/x + gamma)^c, c >= 0, gamma >= 0  alternate LS for (beta, c) with gamma picked among the values
                                                      that solve the equation exactly at single points
    M4: (y - err_inf) / (err_0 - y)^alpha = beta x^c  alternate non-negative LS for (log beta, -c, alpha) with GD, then
                                                      Newton, steps on (err_inf, err_0); predictions solve the
                                                      implicit equation on a 10,000-point grid

Every step of the original is kept, quirks included: err_inf is projected after each step onto [0, min y - 1e-3]
and err_0 onto [max y + 1e-3, up_bound + 1e-3]; M4's regression column log(err_0 - y) keeps the *initial* err_0
while err_0 moves, and its non-negative LS also forces log beta >= 0; M3 clips c at 0; the loops stop when
|change of beta| < stop (M2 and M4 only after the switch to Newton).

Only the machinery differs. sklearn's LinearRegression becomes the SVD least-squares solution of the fixed design
matrix (the pseudo-inverse, precomputed once; sklearn calls LAPACK gelsd, also SVD) and, for M4's positive=True,
the exact NNLS solution: the best non-negative least-squares solution over the 8 supports of the 3 coefficients
(scipy's Lawson-Hanson `nnls`, which sklearn calls, returns the same unique minimiser). M2's and M4's alternating
loops, up to 10^6 scalar epochs each, run as one jitted float64 JAX loop; curves are padded with weight-0 copies to
a bucketed length so lengths share compilations. M3 and the M4 grid solve are plain numpy.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np

ERR_MARGIN = 1e-3  # base.py: slack around the observed loss range used by the projections
EPS = 1e-5  # m4.py: |alpha| < EPS predicts as M2; Newton skips a coordinate whose |hessian| <= EPS
M4_GRID = 10_000  # m4.py `predict_loss(prec=10_000)`: grid size of the implicit-equation solve
NEWTON_LR, NEWTON_EPOCHS = 0.1, 100  # m2.py / m4.py `_update_errs_hessian` defaults (the fit call cannot change them)
METHODS = ("m1", "m2", "m3", "m4")

# `estimate_scaling_params` defaults; the notebook passes only max_iterations=10_000 (the default).
_OPTIMIZER = {"max_iterations": 10_000, "stop": 1e-10, "lr": 1e-8, "epochs": 1000, "grad_iters": 100}

# The notebook's keyword settings per domain; err_0 and up_bound are M4's constructor arguments (M1-M3 ignore them).
REFERENCE_SETTINGS: dict[str, dict] = {
    "IC": {**_OPTIMIZER, "err_0": 1.0, "up_bound": 1.0},
    "NMT": {**_OPTIMIZER, "err_0": 1.0, "up_bound": None},  # log-perplexity: no upper bound
    "LM": {**_OPTIMIZER, "err_0": 1.0, "up_bound": None},  # cross-entropy: no upper bound
    "BB": {**_OPTIMIZER, "err_0": 1.001, "up_bound": 1.0},
}


@dataclasses.dataclass(frozen=True)
class ReferenceFit:
  """A fitted estimator. params: beta, c, err_inf (m1, m2); beta, c, gamma (m3); beta, c, alpha, err_inf, err_0 (m4).
  `iterations` counts the outer (least-squares) iterations run."""

  method: str
  params: dict[str, float]
  iterations: int = 1

  def predict(self, x) -> np.ndarray:
    """Predicted loss at data sizes x (any shape), as the original `predict_loss`."""
    x = np.asarray(x, np.float64)
    p = self.params
    if self.method == "m3":
      return p["beta"] * (1.0 / x + p["gamma"]) ** p["c"]
    if self.method != "m4" or abs(p["alpha"]) < EPS:
      return p["err_inf"] + p["beta"] * x ** p["c"]
    return m4_grid_solve(p["beta"] * x ** p["c"], p["alpha"], p["err_0"] - p["err_inf"]) + p["err_inf"]


def m4_grid_solve(f, alpha: float, b: float, prec: int = M4_GRID) -> np.ndarray:
  """For each f: the w on linspace(0, b, prec) minimising |w - f (b - w)^alpha| (the first one on ties)."""
  f = np.asarray(f, np.float64)
  w_G = np.linspace(0.0, b, prec)
  rhs_G = (b - w_G) ** alpha
  f_N = f.reshape(-1)
  out_N = np.empty_like(f_N)
  for i in range(0, len(f_N), 256):  # chunks keep the (points, grid) table small
    out_N[i:i + 256] = w_G[np.argmin(np.abs(w_G - f_N[i:i + 256, None] * rhs_G), axis=1)]
  return out_N.reshape(f.shape)


def fit_reference(method: str, x, y, *, domain: str = "NMT", **overrides) -> ReferenceFit:
  """Fit estimator `method` ("m1".."m4") to one learning curve (x = data seen, y = loss) as the original does.

  `domain` picks the notebook's settings (REFERENCE_SETTINGS[domain]); keyword `overrides` replace single ones
  (max_iterations, stop, lr, epochs, grad_iters, err_0, up_bound).
  """
  x_P, y_P, s = _check_inputs(method, x, y, domain, overrides)
  if method == "m1":
    log_beta, c = np.linalg.lstsq(_design(x_P), np.log(y_P), rcond=None)[0]
    return ReferenceFit("m1", {"beta": math.exp(log_beta), "c": float(c), "err_inf": 0.0})
  if method == "m3":
    return _fit_m3(x_P, y_P, s)
  return _fit_m2(x_P, y_P, s) if method == "m2" else _fit_m4(x_P, y_P, s)


def _check_inputs(method: str, x, y, domain: str, overrides: Mapping) -> tuple[np.ndarray, np.ndarray, dict]:
  """Validated (x sorted, y in the same order, settings)."""
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if domain not in REFERENCE_SETTINGS:
    raise ValueError(f"domain must be one of {tuple(REFERENCE_SETTINGS)}, got {domain!r}")
  unknown = set(overrides) - set(REFERENCE_SETTINGS[domain])
  if unknown:
    raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(REFERENCE_SETTINGS[domain])}")
  s = {**REFERENCE_SETTINGS[domain], **overrides}
  x_P, y_P = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x_P.ndim != 1 or y_P.ndim != 1:
    raise ValueError(f"x and y must be 1-D, got shapes {x_P.shape} and {y_P.shape}")
  if x_P.shape != y_P.shape:
    raise ValueError(f"x and y must have the same length, got {len(x_P)} and {len(y_P)}")
  n_min = 4 if method == "m4" else 3  # more points than least-squares coefficients
  if len(x_P) < n_min:
    raise ValueError(f"{method} needs at least {n_min} points, got {len(x_P)}")
  if not (np.all(np.isfinite(x_P)) and np.all(np.isfinite(y_P))):
    raise ValueError("x and y must be finite")
  if np.any(x_P <= 0) or np.any(y_P <= 0):
    raise ValueError("x and y must be positive")
  if len(np.unique(x_P)) != len(x_P):
    raise ValueError("x values must be distinct (the original keys a curve by x); drop repeated points first")
  for k, least in (("max_iterations", 1), ("epochs", 0), ("grad_iters", 0)):
    if not (isinstance(s[k], (int, np.integer)) and not isinstance(s[k], bool) and s[k] >= least):
      raise ValueError(f"{k} must be an int >= {least}, got {s[k]!r}")
  for k in ("stop", "lr", "err_0"):
    if not (isinstance(s[k], (int, float)) and math.isfinite(s[k]) and s[k] >= 0):
      raise ValueError(f"{k} must be a finite number >= 0, got {s[k]!r}")
  if s["up_bound"] is not None and not s["up_bound"] > 0:
    raise ValueError(f"up_bound must be None or > 0 (the lower bound), got {s['up_bound']!r}")
  if method == "m4" and not np.all(y_P < s["err_0"]):
    raise ValueError(f"m4 needs every y < err_0 = {s['err_0']} (it regresses on log(err_0 - y)); max y = {y_P.max()}")
  order = np.argsort(x_P)
  return x_P[order], y_P[order], s


def _design(x_P: np.ndarray) -> np.ndarray:
  return np.stack([np.ones_like(x_P), np.log(x_P)], axis=1)


def _fit_m3(x_P: np.ndarray, y_P: np.ndarray, s: dict) -> ReferenceFit:
  log_y, inv_x = np.log(y_P), 1.0 / x_P
  beta, c, gamma = 1.0, -0.5, 0.0
  old_beta, k = beta, 0
  for k in range(s["max_iterations"]):
    design_Px2 = np.stack([np.ones_like(x_P), np.log(inv_x + gamma)], axis=1)  # recomputed: gamma moves
    coef = np.linalg.lstsq(design_Px2, log_y, rcond=None)[0]
    beta, c = math.exp(coef[0]), max(0.0, float(coef[1]))
    gamma = _m3_gamma(inv_x, y_P, log_y, beta, c, gamma)
    gap, old_beta = beta - old_beta, beta
    if abs(gap) < s["stop"]:
      break
  return ReferenceFit("m3", {"beta": beta, "c": c, "gamma": float(gamma)}, k + 1)


def _m3_objective(log_y, inv_x, beta, c, gamma):
  """The original's 0.5 ||log y - log f||, for each gamma (points on the last axis)."""
  return 0.5 * np.sqrt(np.sum((log_y - np.log(beta * (inv_x + gamma) ** c)) ** 2, axis=-1))


def _m3_gamma(inv_x, y_P, log_y, beta, c, gamma) -> float:
  """The first candidate >= 0 of least objective if it beats the current gamma (the original's sequential scan)."""
  if c == 0.0:  # the original divides by c here (ZeroDivisionError); keep gamma
    return gamma
  cand_G = (y_P / beta) ** (1.0 / c) - inv_x
  cand_G = cand_G[cand_G >= 0]
  if cand_G.size == 0:
    return gamma
  loss_G = _m3_objective(log_y, inv_x, beta, c, cand_G[:, None])
  i = int(np.argmin(loss_G))
  return float(cand_G[i]) if loss_G[i] < _m3_objective(log_y, inv_x, beta, c, gamma) else gamma


# --------------------------------------------------------------------------- M2 and M4: one jitted loop each


def _bucket(n: int) -> int:
  return max(16, 1 << (n - 1).bit_length())


def _padded(x_P: np.ndarray, y_P: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(x, y, w) padded to the bucket length with weight-0 copies of the last point (finite logs everywhere)."""
  extra = _bucket(len(x_P)) - len(x_P)
  pad = lambda a: np.r_[a, np.repeat(a[-1:], extra)]
  return pad(x_P), pad(y_P), np.r_[np.ones(len(x_P)), np.zeros(extra)]


def _pinv_padded(a_PxK: np.ndarray, length: int) -> np.ndarray:
  """SVD pseudo-inverse (K, P) of the design, with zero columns for the padding rows."""
  pinv = np.linalg.pinv(a_PxK)
  return np.concatenate([pinv, np.zeros((a_PxK.shape[1], length - a_PxK.shape[0]))], axis=1)


def _f64(*values) -> tuple:
  """Strongly typed float64 scalars (loop carries and jit arguments must not be weakly typed)."""
  return tuple(np.float64(v) for v in values)


def _mean(w_P, v_P, n):
  return jnp.sum(w_P * v_P) / n


def _project(v, lo, hi):
  return jnp.minimum(jnp.maximum(v, lo), hi)


@jax.jit
def _m2_loop(pinv_2xP, x_P, y_P, w_P, lo, hi, max_iterations, grad_iters, epochs, lr, stop):
  n = jnp.sum(w_P)

  def descent(e, log_f_P):
    def epoch(_, e):
      g_P = y_P - e
      return _project(e - lr * -_mean(w_P, (jnp.log(g_P) - log_f_P) / g_P, n), lo, hi)
    return jax.lax.fori_loop(0, epochs, epoch, e)

  def newton(e, log_f_P):
    def epoch(_, e):
      g_P = y_P - e
      log_g_P = jnp.log(g_P)
      grad = -_mean(w_P, (log_g_P - log_f_P) / g_P, n)
      hess = _mean(w_P, (1 - log_g_P + log_f_P) / g_P ** 2, n)
      return _project(e - NEWTON_LR * grad / hess, lo, hi)
    return jax.lax.fori_loop(0, NEWTON_EPOCHS, epoch, e)

  def body(state):
    k, old_beta, _, _, e, _ = state
    log_beta, c = pinv_2xP @ jnp.log(y_P - e)
    beta = jnp.exp(log_beta)
    e = jax.lax.cond(k < grad_iters, descent, newton, e, jnp.log(beta * x_P ** c))
    return k + 1, beta, beta, c, e, (jnp.abs(beta - old_beta) < stop) & (k > grad_iters + 1)

  init = (jnp.zeros_like(max_iterations), *_f64(1.0, 1.0, -0.5), hi, jnp.asarray(False))
  return jax.lax.while_loop(lambda st: (st[0] < max_iterations) & ~st[-1], body, init)


def _fit_m2(x_P: np.ndarray, y_P: np.ndarray, s: dict) -> ReferenceFit:
  lo, hi = max(0.0, 0.0 - ERR_MARGIN), float(np.min(y_P)) - ERR_MARGIN  # err_inf's interval (initial: hi)
  xp_P, yp_P, w_P = _padded(x_P, y_P)
  with jax.enable_x64(True):
    out = jax.device_get(_m2_loop(_pinv_padded(_design(x_P), len(w_P)), xp_P, yp_P, w_P, *_f64(lo, hi),
                                  *_ints(s), *_f64(s["lr"], s["stop"])))
  k, beta, _, c, e, _ = (x.item() for x in out)
  return ReferenceFit("m2", {"beta": beta, "c": c, "err_inf": e}, k)


_SUPPORTS_8x3 = np.array(list(itertools.product((0.0, 1.0), repeat=3)))


@jax.jit
def _m4_loop(pinv_8x3xP, a_Px3, x_P, y_P, w_P, err_0, lo, hi, e0_lo, e0_hi, max_iterations, grad_iters, epochs, lr,
             stop):
  n = jnp.sum(w_P)

  def nnls(b_P):
    """The exact NNLS solution: the feasible support solution of least residual."""
    coef_8x3 = jnp.einsum("skp,p->sk", pinv_8x3xP, b_P)
    res_8 = jnp.sum(w_P[None, :] * (jnp.einsum("pk,sk->sp", a_Px3, coef_8x3) - b_P[None, :]) ** 2, axis=1)
    return coef_8x3[jnp.argmin(jnp.where(jnp.all(coef_8x3 >= 0, axis=1), res_8, jnp.inf))]

  def grads(e, e0, alpha, log_f_P):
    g_P, h_P = y_P - e, e0 - y_P
    log_g_P = jnp.log(g_P / h_P ** alpha)
    r_P = log_g_P - log_f_P
    return -_mean(w_P, r_P / g_P, n), -alpha * _mean(w_P, r_P / h_P, n), g_P, h_P, log_g_P

  def project(e, e0):
    return _project(e, lo, hi), _project(e0, e0_lo, e0_hi)

  def descent(errs, alpha, log_f_P):
    def epoch(_, errs):
      grad_inf, grad_0, *_ = grads(*errs, alpha, log_f_P)
      return project(errs[0] - lr * grad_inf, errs[1] - lr * grad_0)
    return jax.lax.fori_loop(0, epochs, epoch, errs)

  def newton(errs, alpha, log_f_P):
    def epoch(_, errs):
      e, e0 = errs
      grad_inf, grad_0, g_P, h_P, log_g_P = grads(e, e0, alpha, log_f_P)
      h_inf = _mean(w_P, (1 - log_g_P + log_f_P) / g_P ** 2, n)
      h_0 = alpha * _mean(w_P, (alpha + log_g_P - log_f_P) / h_P ** 2, n)
      e = jnp.where(jnp.abs(h_inf) > EPS, e - NEWTON_LR * grad_inf / h_inf, e)
      e0 = jnp.where(jnp.abs(h_0) > EPS, e0 - NEWTON_LR * grad_0 / h_0, e0)
      return project(e, e0)
    return jax.lax.fori_loop(0, NEWTON_EPOCHS, epoch, errs)

  def body(state):
    k, old_beta, _, _, _, e, e0, _ = state
    log_beta, minus_c, alpha = nnls(jnp.log(y_P - e))
    beta, c = jnp.exp(log_beta), -minus_c
    e, e0 = jax.lax.cond(k < grad_iters, descent, newton, (e, e0), alpha, jnp.log(beta * x_P ** c))
    return k + 1, beta, beta, c, alpha, e, e0, (jnp.abs(beta - old_beta) < stop) & (k > grad_iters + 1)

  init = (jnp.zeros_like(max_iterations), *_f64(1.0, 1.0, -0.5, 0.0), hi, err_0, jnp.asarray(False))
  return jax.lax.while_loop(lambda st: (st[0] < max_iterations) & ~st[-1], body, init)


def _fit_m4(x_P: np.ndarray, y_P: np.ndarray, s: dict) -> ReferenceFit:
  lo, hi = max(0.0, 0.0 - ERR_MARGIN), float(np.min(y_P)) - ERR_MARGIN  # err_inf's interval (initial: hi)
  e0_lo = float(np.max(y_P)) + ERR_MARGIN  # err_0's interval [e0_lo, up_bound + margin]
  e0_hi = math.inf if s["up_bound"] is None else s["up_bound"] + ERR_MARGIN
  a_Px3 = np.stack([np.ones_like(x_P), -np.log(x_P), np.log(s["err_0"] - y_P)], axis=1)  # the initial err_0, kept
  xp_P, yp_P, w_P = _padded(x_P, y_P)
  pinv_8x3xP = np.stack([_pinv_padded(a_Px3 * m, len(w_P)) * m[:, None] for m in _SUPPORTS_8x3])
  with jax.enable_x64(True):
    out = jax.device_get(_m4_loop(pinv_8x3xP, _pad_rows(a_Px3, len(w_P)), xp_P, yp_P, w_P,
                                  *_f64(s["err_0"], lo, hi, e0_lo, e0_hi), *_ints(s), *_f64(s["lr"], s["stop"])))
  k, beta, _, c, alpha, e, e0, _ = (x.item() for x in out)
  return ReferenceFit("m4", {"beta": beta, "c": c, "alpha": alpha, "err_inf": e, "err_0": e0}, k)


def _ints(s: dict) -> tuple:
  return tuple(np.int64(s[k]) for k in ("max_iterations", "grad_iters", "epochs"))


def _pad_rows(a_PxK: np.ndarray, length: int) -> np.ndarray:
  return np.concatenate([a_PxK, np.repeat(a_PxK[-1:], length - len(a_PxK), axis=0)])
