"""Fast 2-D Chinchilla fits L(N, D) = E + A / N^alpha + B / D^beta, and their bootstrap.

Method (see :mod:`scaling.fit.chinchilla_core`): for fixed (alpha, beta) the law is linear in (E, A, B), so a
32 x 32 grid of exponents with a non-negative linear least-squares solve at each point (variable projection) maps
the objective's landscape in one vmapped call; Newton with exact closed-form derivatives then runs from the best
`top_k` local minima of that grid, vmapped, to the exact minimum of the chosen objective. This replaces Epoch AI's
4,500 L-BFGS starts: the grid finds the basins, Newton converges quadratically inside one. The bootstrap refits
every resample (a multiplicity weight vector) by the same Newton, warm-started from the full fit, in one call.

Objectives on r = log L_pred - log L: ``huber_log`` = sum Huber_delta(r) (Epoch AI's replication, delta = 1e-3),
``mse_log`` = sum r^2. `theta` is (log E, log A, log B, alpha, beta) as in Epoch AI's code.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from numpy.typing import ArrayLike

from scaling.fit import chinchilla_core as core
from scaling.fit import compute_optimal as frontier_lib

PARAMS = ("E", "A", "B", "alpha", "beta")
OBJECTIVES = ("huber_log", "mse_log")
# A fit is "converged" when the Newton decrement (the decrease a further Newton step predicts) is below this
# fraction of the objective plus a floor per point: 1e-12 is ~1e4 float64 eps, what rounding leaves in a sum of a few
# hundred terms; the floor (1e-13)^2 per point is the squared rounding error of a log residual (|log L| ~ 1, many
# ops), so a noiseless fit (objective ~ 1e-30) counts as converged too.
CONVERGED_RTOL, CONVERGED_ATOL_PER_POINT = 1e-12, 1e-26


def _converged(f: ArrayLike, dec: ArrayLike, n_points: float) -> np.ndarray:
  return np.isfinite(f) & (np.abs(dec) <= CONVERGED_RTOL * np.abs(f) + CONVERGED_ATOL_PER_POINT * n_points)


def _bucket(n: int) -> int:
  """Padded length (shared compilations): a multiple of 16, then of 64 past 256."""
  step = 16 if n <= 256 else 64
  return -(-n // step) * step


class _Data:
  """Centred, padded log data for the core (padding: weight-0 copies of the last point)."""

  def __init__(self, N: np.ndarray, D: np.ndarray, L: np.ndarray, w: np.ndarray):
    self.mN, self.mD = np.average(np.log(N), weights=w), np.average(np.log(D), weights=w)
    self.P, self.length = len(L), _bucket(len(L))
    pad = lambda a: np.r_[a, np.full(self.length - len(a), a[-1])]  # noqa: E731
    self.lN, self.lD, self.lL = pad(np.log(N) - self.mN), pad(np.log(D) - self.mD), pad(np.log(L))
    self.w = np.r_[w, np.zeros(self.length - len(w))]

  def to_theta(self, t_x5: np.ndarray) -> np.ndarray:
    """Centred core parameters -> (log E, log A, log B, alpha, beta)."""
    t = np.array(t_x5, dtype=np.float64)
    t[..., 1] += t[..., 3] * self.mN
    t[..., 2] += t[..., 4] * self.mD
    return t

  def to_core(self, theta_x5: np.ndarray) -> np.ndarray:
    t = np.array(theta_x5, dtype=np.float64)
    t[..., 1] -= t[..., 3] * self.mN
    t[..., 2] -= t[..., 4] * self.mD
    return t


def natural(theta_x5: np.ndarray) -> dict[str, np.ndarray]:
  """(log E, log A, log B, alpha, beta)[..., 5] -> dict of E, A, B, alpha, beta arrays."""
  t = np.asarray(theta_x5, dtype=np.float64)
  return {"E": np.exp(t[..., 0]), "A": np.exp(t[..., 1]), "B": np.exp(t[..., 2]), "alpha": t[..., 3],
          "beta": t[..., 4]}


def predict(params: dict[str, ArrayLike], N: ArrayLike, D: ArrayLike) -> np.ndarray:
  """E + A / N^alpha + B / D^beta (broadcasting)."""
  N, D = np.asarray(N, np.float64), np.asarray(D, np.float64)
  return params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]


@dataclasses.dataclass(frozen=True)
class ChinchillaFit:
  """The best of the polished starts. `loss` is the objective; `converged` the Newton-decrement check."""

  params: dict[str, float]
  theta: np.ndarray
  loss: float
  objective: str
  delta: float
  converged: bool
  decrement: float
  n_points: int
  starts_theta: np.ndarray  # every polished start (top_k x 5) and its objective: the basins found
  starts_loss: np.ndarray

  def predict(self, N: ArrayLike, D: ArrayLike) -> np.ndarray:
    return predict(self.params, N, D)

  def frontier(self, C: ArrayLike, k: float = 6.0) -> dict[str, np.ndarray]:
    """Compute-optimal N*, D*, tokens per parameter at compute C (see :func:`scaling.fit.compute_optimal.frontier`)."""
    return frontier_lib.frontier(self.params, C, k)


def _kind(objective: str) -> str:
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
  return objective


def fit_chinchilla(N: ArrayLike, D: ArrayLike, L: ArrayLike, *, objective: str = "huber_log", delta: float = 1e-3,
                   w: ArrayLike | None = None, n_grid: int = 32,
                   exponent_range: tuple[float, float] = (0.02, 2.0), top_k: int = 8,
                   max_steps: int = 100) -> ChinchillaFit:
  """Fit L(N, D) = E + A / N^alpha + B / D^beta by `objective` on log residuals (weights `w`: 0 = ignore).

  Variable-projection starts on an `n_grid` x `n_grid` grid of (alpha, beta) over `exponent_range`, then damped
  Newton (<= `max_steps`) from the `top_k` best grid basins, vmapped; returns the best.
  """
  kind = _kind(objective)
  N, D, L, w = frontier_lib.check_points(N, D, L, w)
  if not delta > 0:
    raise ValueError(f"delta must be > 0, got {delta}")
  d = _Data(N, D, L, w)
  run = core.compiled_fit(kind, float(delta), n_grid, *map(float, exponent_range), top_k, max_steps)
  with jax.enable_x64(True):
    t_kx5, f_k, _, dec_k, _ = jax.device_get(run(d.lN, d.lD, d.lL, d.w))
  best = int(np.argmin(f_k))
  theta = d.to_theta(t_kx5[best])
  params = {k: float(v) for k, v in natural(theta).items()}
  conv = bool(_converged(f_k[best], dec_k[best], w.sum()))
  return ChinchillaFit(params, theta, float(f_k[best]), kind, float(delta), conv, float(dec_k[best]), d.P,
                       d.to_theta(t_kx5), np.asarray(f_k))


def chinchilla_loss(N: ArrayLike, D: ArrayLike, L: ArrayLike, theta: ArrayLike, *, objective: str = "huber_log",
                    delta: float = 1e-3, w: ArrayLike | None = None) -> float:
  """The objective of `theta` = (log E, log A, log B, alpha, beta) on the data (to compare fitters)."""
  N, D, L, w = frontier_lib.check_points(N, D, L, w)
  d = _Data(N, D, L, w)
  with jax.enable_x64(True):
    return float(core.loss(_kind(objective), float(delta), jnp.asarray(d.to_core(np.asarray(theta))), d.lN, d.lD,
                           d.lL, d.w))


@dataclasses.dataclass(frozen=True)
class ChinchillaBootstrap:
  """Percentile intervals at `level` over the converged resamples.

  `intervals[name] = (lo, hi)`: for E, A, B, alpha, beta, the frontier exponents a, b and G (scalars), and for
  N_opt, D_opt, tokens_per_param (arrays over `C`). `samples` holds each quantity per converged resample.
  """

  level: float
  n_boot: int
  n_converged: int
  C: np.ndarray
  k: float
  intervals: dict[str, tuple]
  samples: dict[str, np.ndarray]
  theta_Bx5: np.ndarray
  converged_B: np.ndarray
  base: ChinchillaFit


def resample_weights(P: int, n_boot: int, key: int) -> np.ndarray:
  """n_boot x P multiplicities of case resampling (each row sums to P)."""
  rng = np.random.default_rng(key)
  w_BxP = np.zeros((n_boot, P))
  np.add.at(w_BxP, (np.arange(n_boot)[:, None], rng.integers(0, P, (n_boot, P))), 1.0)
  return w_BxP


def bootstrap_chinchilla(N: ArrayLike, D: ArrayLike, L: ArrayLike, *, n_boot: int = 4000, key: int = 0,
                         level: float = 0.95, base: ChinchillaFit | None = None, objective: str = "huber_log",
                         delta: float = 1e-3, k: float = 6.0, C: ArrayLike | None = None, max_steps: int = 100,
                         chunk: int = 500) -> ChinchillaBootstrap:
  """Case-resampling bootstrap: every resample refitted by Newton warm-started at the full fit (`base`, fitted here
  when not given), vmapped in chunks of `chunk` resamples (one compilation for any n_boot; a chunk stops at its own
  slowest refit). Intervals for the parameters and the frontier at compute `C` (default: 5 values log-spaced over
  the data's k N D), over the refits that converged (`n_converged`).
  """
  kind = _kind(objective)
  N, D, L, _ = frontier_lib.check_points(N, D, L)
  if not 0 < level < 1 or n_boot < 2:
    raise ValueError(f"need 0 < level < 1 and n_boot >= 2, got level={level}, n_boot={n_boot}")
  base = fit_chinchilla(N, D, L, objective=kind, delta=delta) if base is None else base
  if base.objective != kind or base.delta != delta or base.n_points != len(L):
    raise ValueError(f"base was fitted with {base.objective} (delta={base.delta}) to {base.n_points} points, not "
                     f"{kind} (delta={delta}) to these {len(L)}")
  d = _Data(N, D, L, np.ones(len(L)))
  chunk = min(chunk, n_boot)
  n_chunks = -(-n_boot // chunk)
  w_BxP = np.zeros((n_chunks * chunk, d.length))
  w_BxP[:n_boot, :d.P] = resample_weights(d.P, n_boot, key)
  w_BxP[n_boot:, :d.P] = 1.0  # filler rows of the last chunk, dropped below
  refit = core.compiled_refit(kind, float(delta), max_steps)
  with jax.enable_x64(True):
    outs = [jax.device_get(refit(d.to_core(base.theta), d.lN, d.lD, d.lL, w_BxP[i * chunk:(i + 1) * chunk]))
            for i in range(n_chunks)]
  t_Bx5, f_B, _, dec_B = (np.concatenate(o)[:n_boot] for o in zip(*outs))
  conv_B = _converged(f_B, dec_B, d.P)
  theta_Bx5 = d.to_theta(t_Bx5)
  C = np.geomspace(*np.percentile(k * N * D, [0, 100]), 5) if C is None else np.atleast_1d(np.asarray(C, float))
  samples = natural(theta_Bx5[conv_B])
  samples.update(frontier_lib.frontier(samples, C, k))
  q = (50 * (1 - level), 50 * (1 + level))
  nan = lambda v: (np.full(np.shape(v)[1:], np.nan),) * 2  # noqa: E731  (no refit converged: no interval)
  intervals = {name: tuple(np.percentile(v, q, axis=0)) if conv_B.any() else nan(v) for name, v in samples.items()}
  return ChinchillaBootstrap(level, n_boot, int(conv_B.sum()), C, k, intervals, samples, theta_Bx5, conv_B, base)
