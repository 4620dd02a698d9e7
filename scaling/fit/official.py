"""The official BNSL fitting recipe (spec `bnsl.md` §2), for parity checks and the speed benchmark.

scipy.optimize.brute over the real-data grid (163,840 points, no finish, b and d1 searched as 1.25**p - 1 + 1e-8),
then unbounded curve_fit (Levenberg-Marquardt) of log(y + 1) from the grid optimum, maxfev = 1e8; scored by RMSLE.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np
from scipy import optimize

from scaling.fit import metrics

OFFICIAL_GRID = (slice(0, 1, .1), slice(0, 40, 2.5), slice(0, 1, .25), slice(0, 1, .25), slice(0, 40, 2.5),
                 slice(0, 1, .25))


def _bnsl1(x, a, b, c0, c1, d1, f1):
  return a + b * x ** (-c0) * (1 + (x / d1) ** (1 / f1)) ** (-c1 * f1)


def _official_msle(p, x, y):
  a, b, c0, c1, d1, f1 = p
  b, d1 = 1.25 ** b - 1 + 1e-8, 1.25 ** d1 - 1 + 1e-8
  return np.mean((np.log(_bnsl1(x, a, b, c0, c1, d1, f1) + 1) - np.log(y + 1)) ** 2)


class OfficialResult(NamedTuple):
  """popt (a, b, c0, c1, d1, f1), the brute-grid optimum (b, d1 as grid exponents), RMSLEs, wall time.

  An RMSLE is NaN where a prediction is not positive (the unbounded fit can give a < 0, spec §5 pitfall 4).
  """

  popt: np.ndarray
  grid_point: np.ndarray
  rmsle_fit: float
  rmsle_extrap: float
  seconds: float

  def predict(self, x) -> np.ndarray:
    with np.errstate(all="ignore"):
      return _bnsl1(np.asarray(x, np.float64), *self.popt)


def official_fit(x_fit, y_fit, x_test, y_test, *, workers: int = 1) -> OfficialResult:
  """The official 1-break code path on explicit fitting and held-out points (each sorted by x here)."""
  parts = []
  for name, x, y in (("fit", x_fit, y_fit), ("test", x_test, y_test)):
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
      raise ValueError(f"x_{name}, y_{name} must be finite 1-D arrays of one length, got {x.shape}, {y.shape}")
    if np.any(x <= 0) or np.any(y <= 0):
      raise ValueError(f"x_{name} and y_{name} must be > 0 (logs are taken)")
    order = np.argsort(x, kind="stable")
    parts += [x[order], y[order]]
  x1, y1, x2, y2 = parts
  if len(y1) < 6 or len(y2) < 1:
    raise ValueError(f"need >= 6 fitting points and >= 1 held-out point, got {len(y1)} and {len(y2)}")
  t0 = time.perf_counter()
  with np.errstate(all="ignore"):
    p = optimize.brute(_official_msle, OFFICIAL_GRID, args=(x1, y1), full_output=False, finish=None, workers=workers)
    p0 = np.array(p, np.float64)
    p0[[1, 4]] = 1.25 ** p0[[1, 4]] - 1 + 1e-8
    log_model = lambda _x, *q: np.log(_bnsl1(_x, *q) + 1)  # noqa: E731
    try:
      popt, _ = optimize.curve_fit(log_model, x1, np.log(y1 + 1), p0=p0, maxfev=100000000)
    except RuntimeError:  # curve_fit gives up (does not happen on the 4-digit data); keep the grid point
      popt = p0
    e_fit, e_ext = metrics.rmsle(_bnsl1(x1, *popt), y1), metrics.rmsle(_bnsl1(x2, *popt), y2)
  return OfficialResult(popt, np.asarray(p, np.float64), e_fit, e_ext, time.perf_counter() - t0)


def official_recipe(x, y, split: int, *, workers: int = 1) -> OfficialResult:
  """The official script: points sorted by x, the first `split` fitted, the rest scored."""
  x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x.ndim != 1 or x.shape != y.shape:
    raise ValueError(f"x and y must be 1-D of one length, got {x.shape}, {y.shape}")
  order = np.argsort(x, kind="stable")
  x, y = x[order], y[order]
  if not 6 <= split < len(y):
    raise ValueError(f"split={split} must leave >= 6 fitting points and >= 1 held-out point of {len(y)}")
  return official_fit(x[:split], y[:split], x[split:], y[split:], workers=workers)
