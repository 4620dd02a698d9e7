"""The power-law random-feature model of spec `dmft.md` §1, simulated exactly (no time stepping).

Model: features ψ = Λ^{1/2} z (z ~ N(0, I_M)), λ_k = k^{-b}, target w*_k = k^{-(a-b)/2}; student f = w·Aψ/√N with a
fixed projection A (N×M, iid N(0,1)) and trainable w (w(0)=0). With S the data factor (Ĝ = SᵀS: S = Ψ/√P for P
samples, S = Λ^{1/2} for P = ∞) and B = A Sᵀ/√N, gradient flow on L̂/2 (η=1) is dw/dt = B(g − Bᵀw), g = S w*, so

  w(t) = φ_t(BBᵀ) B g = B φ_t(BᵀB) g,   φ_t(μ) = (1 − e^{−μt})/μ  (→ t as μ→0),

evaluated through the eigendecomposition of the N×N primal K = BBᵀ (or of the P×P dual BᵀB when P < N). Then
v = w* − Aᵀw/√N, test loss L = Σ_k λ_k v_k², train loss L̂ = |Sv|² = |g − Bᵀw|².

Widths and data sizes are row masks of one A_max (N_max rows) and one Ψ_max (P_max rows): common random numbers
across (N, P), and one jitted call gives a (seeds × P × N × t) surface. A masked row/column of K is replaced by the
identity, so the masked block decouples exactly, and the masked rows of the eigenvectors are zeroed.

PRNG: one root `jax.random.key(seed)`; the seed axis is `split(root, n_seeds)`; each seed key is split once into
(projection, data) keys; ensemble member e uses `fold_in(projection_key, e)`; row i of A (or Ψ) is drawn from
`fold_in(key, i)`, so a narrower matrix is exactly a prefix of a wider one.

Everything runs in float64 (inside `jax.enable_x64(True)`; x64 is not enabled globally); public functions return
numpy arrays.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

# ----------------------------------------------------------------------------------------------------------------
# Validation (plain Python / numpy: runs before anything is traced or compiled)


def _positive_number(name: str, x: Any) -> float:
  if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not math.isfinite(x) or x <= 0:
    raise ValueError(f"{name} must be a finite number > 0, got {x!r}")
  return float(x)


def _positive_int(name: str, x: Any) -> int:
  if isinstance(x, bool) or not isinstance(x, (int, np.integer)) or x < 1:
    raise ValueError(f"{name} must be an integer >= 1, got {x!r}")
  return int(x)


def _data_size(name: str, x: Any) -> int | float:
  """A number of samples: an integer >= 1 or math.inf (population / online)."""
  if isinstance(x, (float, np.floating)) and math.isinf(x) and x > 0:
    return math.inf
  return _positive_int(name, x)


def _times(t_T: Any) -> np.ndarray:
  t = np.asarray(t_T, np.float64)
  if t.ndim != 1 or t.size == 0:
    raise ValueError(f"t must be a non-empty 1-D array, got shape {t.shape}")
  if not np.all(np.isfinite(t)) or np.any(t < 0):
    raise ValueError("t must be finite and >= 0")
  if np.any(np.diff(t) <= 0):
    raise ValueError("t must be strictly increasing")
  return t


def _task(lam_M: Any, wstar_M: Any) -> tuple[np.ndarray, np.ndarray]:
  lam, wstar = np.asarray(lam_M, np.float64), np.asarray(wstar_M, np.float64)
  if lam.ndim != 1 or lam.size == 0 or lam.shape != wstar.shape:
    raise ValueError(f"lam_M and wstar_M must be 1-D of the same length M >= 1, got {lam.shape}, {wstar.shape}")
  if not (np.all(np.isfinite(lam)) and np.all(lam > 0) and np.all(np.isfinite(wstar))):
    raise ValueError("lam_M must be finite and > 0, wstar_M finite")
  return lam, wstar


def _sizes(name: str, xs: Any, cap: int | None, cap_name: str) -> list[int]:
  xs = [xs] if np.ndim(xs) == 0 else list(xs)
  if not xs:
    raise ValueError(f"{name} must not be empty")
  out = [_positive_int(name, x) for x in xs]
  if cap is not None and max(out) > cap:
    raise ValueError(f"{name} must be <= {cap_name}={cap}, got {max(out)}")
  return out


# ----------------------------------------------------------------------------------------------------------------
# Task and sampling


def power_law_task(a: float, b: float, M: int) -> tuple[np.ndarray, np.ndarray]:
  """λ_k = k^{-b} and w*_k = k^{-(a-b)/2} for k = 1..M (so λ_k w*_k² = k^{-a})."""
  a, b, M = _positive_number("a", a), _positive_number("b", b), _positive_int("M", M)
  k = np.arange(1, M + 1, dtype=np.float64)
  return k ** -b, k ** (-(a - b) / 2)


def _gaussian_rows(key: jax.Array, n_rows: int, M: int) -> jax.Array:
  """n_rows×M iid N(0,1), row i from fold_in(key, i): prefix-stable in n_rows."""
  return jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(key, i), (M,), jnp.float64))(jnp.arange(n_rows))


def _projection(proj_key: jax.Array, member: int | jax.Array, n_max: int, M: int) -> jax.Array:
  return _gaussian_rows(jax.random.fold_in(proj_key, member), n_max, M)


def _features(data_key: jax.Array, lam_M: jax.Array, P: int) -> jax.Array:
  return _gaussian_rows(data_key, P, lam_M.shape[0]) * jnp.sqrt(lam_M)[None, :]


def sample(key: jax.Array, lam_M: Any, n_max: int, P: float, *,
           member: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
  """(A_NmaxxM, psi_PxM) for one seed key; psi is None for P = inf (population: Ĝ = Λ exactly).

  Width N uses A[:N] and P' < P samples psi[:P'] (both prefix-stable); `member` picks an ensemble member's A, with
  the data shared. :func:`simulate` draws seed s from ``split(key(seed), n_seeds)[s]`` the same way.
  """
  lam = np.asarray(lam_M, np.float64)
  if lam.ndim != 1 or lam.size == 0 or not np.all(lam > 0):
    raise ValueError(f"lam_M must be 1-D, non-empty and > 0, got shape {lam.shape}")
  n_max, P = _positive_int("n_max", n_max), _data_size("P", P)
  if isinstance(member, bool) or not isinstance(member, (int, np.integer)) or member < 0:
    raise ValueError(f"member must be an integer >= 0, got {member!r}")
  with jax.enable_x64(True):
    proj_key, data_key = jax.random.split(key)
    A = _projection(proj_key, member, n_max, lam.size)
    psi = None if P == math.inf else _features(data_key, jnp.asarray(lam), P)
    return np.asarray(A), None if psi is None else np.asarray(psi)


# ----------------------------------------------------------------------------------------------------------------
# Exact gradient flow


def _phi(mu_K: jax.Array, t_T: jax.Array) -> jax.Array:
  """φ_t(μ) = (1 − e^{−μt})/μ as T×K, with the μ→0 limit t (expm1: no cancellation for small μt)."""
  x_TxK = jnp.maximum(mu_K, 0.0)[None, :] * t_T[:, None]
  pos = x_TxK > 0
  safe = jnp.where(pos, x_TxK, 1.0)
  return t_T[:, None] * jnp.where(pos, -jnp.expm1(-safe) / safe, 1.0)


def _data_factor(A_NxM: jax.Array, psi_QxM: jax.Array | None, lam_M: jax.Array,
                 wstar_M: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Unnormalised C = A S_maxᵀ (N×Q) and g_max = S_max w* (Q); S_max = Ψ_max, or Λ^{1/2} for P = ∞ (Q = M)."""
  if psi_QxM is None:
    sqrt_lam = jnp.sqrt(lam_M)
    return A_NxM * sqrt_lam[None, :], sqrt_lam * wstar_M
  return A_NxM @ psi_QxM.T, psi_QxM @ wstar_M


def _masks(n: jax.Array, p: jax.Array, n_max: int, Q: int, population: bool):
  """Row masks (1.0 kept) and normalisations 1/√N, 1/√P (P = ∞: all Q = M modes kept, 1/√P → 1)."""
  mask_N = (jnp.arange(n_max) < n).astype(jnp.float64)
  if population:
    return mask_N, jnp.ones(Q), 1.0 / jnp.sqrt(n), 1.0
  return mask_N, (jnp.arange(Q) < p).astype(jnp.float64), 1.0 / jnp.sqrt(n), 1.0 / jnp.sqrt(p)


def _flow_np(A_NxM: jax.Array, C_NxQ: jax.Array, g_Q: jax.Array, wstar_M: jax.Array, t_T: jax.Array, n: jax.Array,
             p: jax.Array, *, dual: bool, population: bool) -> tuple[jax.Array, jax.Array]:
  """Error vectors v_TxM and train residuals r_TxQ = S v for width n and p samples (row masks of the max sizes)."""
  n_max, Q = C_NxQ.shape
  mask_N, mask_Q, inv_sqrt_n, inv_sqrt_p = _masks(n, p, n_max, Q, population)
  Cp_NxQ = C_NxQ * mask_Q[None, :] * inv_sqrt_p  # = √N · B on the kept rows
  g_Q = g_Q * mask_Q * inv_sqrt_p
  if not dual:
    K_NxN = (Cp_NxQ @ Cp_NxQ.T) * (mask_N[:, None] * mask_N[None, :]) / n + jnp.diag(1.0 - mask_N)
    mu_N, U_NxN = jnp.linalg.eigh(K_NxN)
    U_NxN = U_NxN * mask_N[:, None]
    alpha_N = U_NxN.T @ ((Cp_NxQ @ g_Q) * mask_N * inv_sqrt_n)
    w_TxN = (_phi(mu_N, t_T) * alpha_N[None, :]) @ U_NxN.T
  else:
    K_QxQ = (Cp_NxQ.T * mask_N[None, :]) @ Cp_NxQ / n + jnp.diag(1.0 - mask_Q)
    nu_Q, V_QxQ = jnp.linalg.eigh(K_QxQ)
    V_QxQ = V_QxQ * mask_Q[:, None]
    y_TxQ = (_phi(nu_Q, t_T) * (V_QxQ.T @ g_Q)[None, :]) @ V_QxQ.T
    w_TxN = (y_TxQ @ Cp_NxQ.T) * mask_N[None, :] * inv_sqrt_n
  v_TxM = wstar_M[None, :] - (w_TxN @ A_NxM) * inv_sqrt_n
  r_TxQ = g_Q[None, :] - (w_TxN @ Cp_NxQ) * inv_sqrt_n
  return v_TxM, r_TxQ


@functools.partial(jax.jit, static_argnames=("dual", "population"))
def _flow_one(A_NxM, psi_QxM, lam_M, wstar_M, t_T, n, p, *, dual, population):
  C_NxQ, g_Q = _data_factor(A_NxM, psi_QxM, lam_M, wstar_M)
  v_TxM, r_TxQ = _flow_np(A_NxM, C_NxQ, g_Q, wstar_M, t_T, n, p, dual=dual, population=population)
  return v_TxM, v_TxM ** 2 @ lam_M, jnp.sum(r_TxQ ** 2, axis=-1)


def _check_problem(A_NxM, psi_PxM, lam_M, wstar_M, n, p):
  lam, wstar = _task(lam_M, wstar_M)
  A = np.asarray(A_NxM, np.float64)
  if A.ndim != 2 or A.shape[1] != lam.size:
    raise ValueError(f"A_NxM must be 2-D with M={lam.size} columns, got shape {A.shape}")
  psi = None if psi_PxM is None else np.asarray(psi_PxM, np.float64)
  if psi is not None and (psi.ndim != 2 or psi.shape[1] != lam.size):
    raise ValueError(f"psi_PxM must be 2-D with M={lam.size} columns (or None for P = inf), got shape {psi.shape}")
  n = A.shape[0] if n is None else _positive_int("n", n)
  if n > A.shape[0]:
    raise ValueError(f"n must be <= N_max={A.shape[0]} (rows of A), got {n}")
  if psi is None:
    if p is not None:
      raise ValueError("p must be None for P = inf (psi_PxM is None)")
    p = 1
  else:
    p = psi.shape[0] if p is None else _positive_int("p", p)
    if p > psi.shape[0]:
      raise ValueError(f"p must be <= P_max={psi.shape[0]} (rows of psi), got {p}")
  return A, psi, lam, wstar, n, p


def flow(A_NxM: Any, psi_PxM: Any, lam_M: Any, wstar_M: Any, t_T: Any, *, n: int | None = None,
         p: int | None = None, dual: bool | None = None) -> dict[str, np.ndarray]:
  """Exact gradient flow for one projection and data set: {"v": v_TxM, "test": L_T, "train": L̂_T}.

  `psi_PxM` None means P = inf (Ĝ = Λ). `n` / `p` use the first n rows of A / p rows of psi by masking (default:
  all). `dual` forces the P×P (True) or N×N (False) eigenproblem; default: dual iff P_max < N_max.
  """
  A, psi, lam, wstar, n, p = _check_problem(A_NxM, psi_PxM, lam_M, wstar_M, n, p)
  t = _times(t_T)
  population = psi is None
  if dual is None:
    dual = not population and psi.shape[0] < A.shape[0]
  if dual and population:
    raise ValueError("the dual (P×P) path needs finite P")
  with jax.enable_x64(True):
    v, test, train = _flow_one(A, psi, lam, wstar, t, jnp.float64(n), jnp.float64(p), dual=bool(dual),
                               population=population)
    return {"v": np.asarray(v), "test": np.asarray(test), "train": np.asarray(train)}


# ----------------------------------------------------------------------------------------------------------------
# Surfaces over seeds × P × N × t, with ensembles


@functools.partial(jax.jit, static_argnames=("n_max", "p_max", "n_members", "dual", "population", "seed_batch"))
def _surface(seed_keys, lam_M, wstar_M, n_N, p_P, t_T, *, n_max, p_max, n_members, dual, population, seed_batch):
  M = lam_M.shape[0]

  def one_seed(seed_key):
    proj_key, data_key = jax.random.split(seed_key)
    psi_QxM = None if population else _features(data_key, lam_M, p_max)

    def member(carry, e):
      A_NxM = _projection(proj_key, e, n_max, M)
      C_NxQ, g_Q = _data_factor(A_NxM, psi_QxM, lam_M, wstar_M)
      at_np = lambda p, n: _flow_np(A_NxM, C_NxQ, g_Q, wstar_M, t_T, n, p, dual=dual, population=population)
      v, r = jax.vmap(lambda p: jax.vmap(lambda n: at_np(p, n))(n_N))(p_P)  # P×N×T×M, P×N×T×Q
      losses = (v ** 2 @ lam_M, jnp.sum(r ** 2, axis=-1))
      return (carry[0] + v, carry[1] + r), losses

    Q = M if population else p_max
    shape = (p_P.shape[0], n_N.shape[0], t_T.shape[0])
    init = (jnp.zeros(shape + (M,)), jnp.zeros(shape + (Q,)))
    (sum_v, sum_r), (test_E, train_E) = jax.lax.scan(member, init, jnp.arange(n_members))
    return {"test": test_E.mean(0), "train": train_E.mean(0),
            "test_ens": (sum_v / n_members) ** 2 @ lam_M,
            "train_ens": jnp.sum((sum_r / n_members) ** 2, axis=-1)}

  if seed_batch is None:
    return jax.vmap(one_seed)(seed_keys)
  return jax.lax.map(one_seed, seed_keys, batch_size=seed_batch)


def simulate(seed: int, lam_M: Any, wstar_M: Any, widths: Sequence[int] | int, Ps: Sequence[int] | float,
             t_T: Any, n_seeds: int, *, n_members: int = 1, n_max: int | None = None, p_max: int | None = None,
             seed_batch: int | None = None) -> dict[str, np.ndarray]:
  """Exact gradient-flow losses on a (seeds × P × N × t) grid in one jitted call.

  Returns "test"/"train" (members' mean loss) and "test_ens"/"train_ens" (loss of the ensemble-mean predictor of
  `n_members` independent projections on shared data; equal to test/train for one member), each of shape
  (n_seeds, len(Ps), len(widths), T), plus "t". Widths are prefixes of one A_max (n_max rows, default max(widths))
  and data sizes prefixes of one Ψ_max (p_max rows, default max(Ps)). Ps = inf (alone) is the population flow.
  `seed_batch` bounds memory by mapping over seeds in batches (default: all seeds vmapped at once).
  """
  lam, wstar = _task(lam_M, wstar_M)
  t = _times(t_T)
  n_seeds, n_members = _positive_int("n_seeds", n_seeds), _positive_int("n_members", n_members)
  if n_max is not None:
    n_max = _positive_int("n_max", n_max)
  widths = _sizes("widths", widths, n_max, "n_max")
  n_max = max(widths) if n_max is None else n_max
  Ps = [Ps] if np.ndim(Ps) == 0 else list(Ps)
  if not Ps:
    raise ValueError("Ps must not be empty")
  Ps = [_data_size("Ps", x) for x in Ps]
  population = math.inf in Ps
  if population and len(Ps) > 1:
    raise ValueError("P = inf cannot be mixed with finite P in one call")
  if population:
    if p_max is not None:
      raise ValueError("p_max must be None for P = inf")
    p_max, Ps = 0, [1]
  else:
    if p_max is not None:
      p_max = _positive_int("p_max", p_max)
    Ps = _sizes("Ps", Ps, p_max, "p_max")
    p_max = max(Ps) if p_max is None else p_max
  if seed_batch is not None:
    seed_batch = _positive_int("seed_batch", seed_batch)
  if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
    raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
  dual = not population and p_max < n_max
  with jax.enable_x64(True):
    seed_keys = jax.random.split(jax.random.key(int(seed)), n_seeds)
    out = _surface(seed_keys, lam, wstar, jnp.asarray(widths, jnp.float64), jnp.asarray(Ps, jnp.float64), t,
                   n_max=n_max, p_max=p_max, n_members=n_members, dual=dual, population=population,
                   seed_batch=seed_batch)
    out = {k: np.asarray(x) for k, x in out.items()}
  return {**out, "t": t}


# ----------------------------------------------------------------------------------------------------------------
# Discrete gradient descent


class GDProblem(NamedTuple):
  """Everything a GD step needs (B, g with the masks and normalisations folded in)."""

  A_NxM: jax.Array
  B_NxQ: jax.Array  # A Sᵀ/√N on the kept rows, 0 on masked ones
  g_Q: jax.Array  # S w*
  lam_M: jax.Array
  wstar_M: jax.Array
  inv_sqrt_n: jax.Array
  eta: jax.Array


class GDState(NamedTuple):
  w_N: jax.Array
  step: jax.Array


def gd_step(state: GDState, _: Any, problem: GDProblem) -> tuple[GDState, dict[str, jax.Array]]:
  """w ← w + η B(g − Bᵀw) (i.e. v ← (I − ηFĜ)v); metrics are the losses after the step.

  Scan with ``functools.partial(gd_step, problem=problem)``.
  """
  pr = problem
  w_N = state.w_N + pr.eta * (pr.B_NxQ @ (pr.g_Q - pr.B_NxQ.T @ state.w_N))
  v_M = pr.wstar_M - (w_N @ pr.A_NxM) * pr.inv_sqrt_n
  r_Q = pr.g_Q - pr.B_NxQ.T @ w_N
  metrics = {"test": jnp.sum(pr.lam_M * v_M ** 2), "train": jnp.sum(r_Q ** 2)}
  return GDState(w_N, state.step + 1), metrics


@functools.partial(jax.jit, static_argnames=("population",))
def _gd_problem(A_NxM, psi_QxM, lam_M, wstar_M, n, p, eta, *, population):
  C_NxQ, g_Q = _data_factor(A_NxM, psi_QxM, lam_M, wstar_M)
  mask_N, mask_Q, inv_sqrt_n, inv_sqrt_p = _masks(n, p, *C_NxQ.shape, population)
  B_NxQ = C_NxQ * mask_N[:, None] * mask_Q[None, :] * (inv_sqrt_n * inv_sqrt_p)
  problem = GDProblem(A_NxM, B_NxQ, g_Q * mask_Q * inv_sqrt_p, lam_M, wstar_M, inv_sqrt_n, eta)
  return problem, jnp.linalg.norm(B_NxQ, ord=2) ** 2  # μ_max(FĜ) = μ_max(BBᵀ)


@functools.partial(jax.jit, static_argnames=("n_steps",))
def _run_gd(problem, *, n_steps):
  state = GDState(jnp.zeros(problem.B_NxQ.shape[0]), jnp.int32(0))
  _, metrics = jax.lax.scan(functools.partial(gd_step, problem=problem), state, None, length=n_steps)
  return metrics


def run_gd(A_NxM: Any, psi_PxM: Any, lam_M: Any, wstar_M: Any, eta: float, n_steps: int, *, n: int | None = None,
           p: int | None = None) -> dict[str, np.ndarray]:
  """Discrete GD v_{n+1} = (I − ηFĜ)v_n from w = 0: {"t": η·(1..n_steps), "test", "train"}.

  Same arguments as :func:`flow`; raises ValueError unless η·μ_max(FĜ) < 2.
  """
  A, psi, lam, wstar, n, p = _check_problem(A_NxM, psi_PxM, lam_M, wstar_M, n, p)
  eta, n_steps = _positive_number("eta", eta), _positive_int("n_steps", n_steps)
  with jax.enable_x64(True):
    problem, mu_max = _gd_problem(A, psi, lam, wstar, jnp.float64(n), jnp.float64(p), jnp.float64(eta),
                                  population=psi is None)
    if not eta * float(mu_max) < 2:
      raise ValueError(f"GD is unstable: eta * mu_max = {eta} * {float(mu_max):.4g} >= 2")
    metrics = _run_gd(problem, n_steps=n_steps)
    out = {k: np.asarray(x) for k, x in metrics.items()}
  return {"t": eta * np.arange(1, n_steps + 1), **out}
