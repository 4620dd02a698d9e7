"""The slow reference for 2-D Chinchilla fits: scipy L-BFGS-B from every point of a start grid, one at a time, as in
Epoch AI's replication (and Hoffmann et al.): alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1},
a, b in {0, 5, ..., 25}: 5 x 5 x 5 x 6 x 6 = 4,500 starts. Parameters (e, a, b, alpha, beta) = (log E, log A, log B,
alpha, beta), objective and gradient in numpy on the raw (uncentred) logs, as there. Used by the tests (a subgrid)
and bench/fit_chinchilla.py (the full grid).
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
from scipy import optimize, special

# Tighter than scipy's defaults (ftol 2.2e-9, gtol 1e-5), which stop L-BFGS well before the minimum on this
# objective: the reference should be the best L-BFGS can do, not a strawman.
LBFGS_OPTIONS = {"ftol": 1e-15, "gtol": 1e-11, "maxiter": 2000, "maxfun": 4000}


def epoch_grid() -> np.ndarray:
  """The 4,500 starts (e, a, b, alpha, beta) of Hoffmann et al. / Epoch AI."""
  axes = (np.linspace(-1, 1, 5), np.arange(0, 30, 5.0), np.arange(0, 30, 5.0), np.linspace(0, 2, 5),
          np.linspace(0, 2, 5))
  return np.array(list(itertools.product(*axes)))


def objective_and_grad(theta: np.ndarray, lN: np.ndarray, lD: np.ndarray, lL: np.ndarray, kind: str,
                       delta: float) -> tuple[float, np.ndarray]:
  """sum Huber_delta(r) (or sum r^2) of r = logsumexp(e, a - alpha lN, b - beta lD) - lL, and its gradient."""
  e, a, b, al, be = theta
  t1, t2 = a - al * lN, b - be * lD
  m = np.maximum(np.maximum(t1, t2), e)  # logsumexp by hand: scipy's costs ~5x more per call here
  x0, x1, x2 = np.exp(e - m), np.exp(t1 - m), np.exp(t2 - m)
  s = x0 + x1 + x2
  r = m + np.log(s) - lL
  if kind == "huber_log":
    f, h1 = np.sum(special.huber(delta, r)), np.clip(r, -delta, delta)
  else:
    f, h1 = np.sum(r ** 2), 2 * r
  c0, c1, c2 = x0 * h1 / s, x1 * h1 / s, x2 * h1 / s
  return float(f), np.array([c0.sum(), c1.sum(), c2.sum(), -(c1 @ lN), -(c2 @ lD)])


@dataclasses.dataclass(frozen=True)
class GridResult:
  """The best start's theta and objective, and every start's final objective (inf: failed)."""

  theta: np.ndarray
  loss: float
  losses: np.ndarray


def lbfgs_grid(N, D, L, *, starts: np.ndarray | None = None, objective: str = "huber_log", delta: float = 1e-3,
               options: dict | None = None) -> GridResult:
  """scipy L-BFGS-B from each start (default: :func:`epoch_grid`); the best final objective wins."""
  lN, lD, lL = np.log(np.asarray(N, float)), np.log(np.asarray(D, float)), np.log(np.asarray(L, float))
  starts = epoch_grid() if starts is None else np.asarray(starts, float)
  opts = dict(LBFGS_OPTIONS, **(options or {}))
  thetas, losses = [], []
  with np.errstate(all="ignore"):
    for t0 in starts:
      res = optimize.minimize(objective_and_grad, t0, args=(lN, lD, lL, objective, delta), jac=True,
                              method="L-BFGS-B", options=opts)
      thetas.append(res.x)
      losses.append(res.fun if np.isfinite(res.fun) else np.inf)
  losses = np.array(losses)
  best = int(np.argmin(losses))
  return GridResult(np.asarray(thetas[best]), float(losses[best]), losses)
