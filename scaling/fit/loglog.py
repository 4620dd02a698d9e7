"""The log-log OLS fit with a standard error, used across the papers' analyses (`Fit`, `fit_loglog`), and LN2 for
nats <-> bits."""

from __future__ import annotations

import dataclasses

import numpy as np

LN2 = np.log(2.0)


@dataclasses.dataclass(frozen=True)
class Fit:
  """A log-log OLS fit log y = intercept + slope log x.

  `exponent` is the paper's sign convention for the quantity (e.g. α_N = -slope for L ∝ N^-α_N); `stderr` is its
  OLS standard error (or the bootstrap standard deviation when `method` says so).
  """

  exponent: float
  stderr: float
  slope: float
  intercept: float
  n_points: int
  x_range: tuple[float, float]
  method: str = "ols"

  def predict(self, x: np.ndarray) -> np.ndarray:
    return np.exp(self.intercept) * np.asarray(x, np.float64) ** self.slope

  def __str__(self) -> str:
    return f"{self.exponent:.3f} ± {self.stderr:.3f}"


def fit_loglog(x: np.ndarray, y: np.ndarray, sign: float = 1.0, bootstrap: int = 0, seed: int = 0) -> Fit:
  """OLS of log y on log x over the finite, positive points; `exponent = sign * slope`.

  With `bootstrap > 0` the standard error is the std of the slope over that many resamples of the points.
  Raises ValueError with fewer than 3 usable points (no standard error).
  """
  x, y = np.asarray(x, np.float64).ravel(), np.asarray(y, np.float64).ravel()
  ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
  lx, ly = np.log(x[ok]), np.log(y[ok])
  n = lx.size
  if n < 3 or np.ptp(lx) == 0:
    raise ValueError(f"need >= 3 points with distinct positive x for a fit with an error, got {n}")
  A = np.stack([np.ones(n), lx], axis=1)
  coef, *_ = np.linalg.lstsq(A, ly, rcond=None)
  resid = ly - A @ coef
  sxx = np.sum((lx - lx.mean()) ** 2)
  se = float(np.sqrt(resid @ resid / (n - 2) / sxx))
  method = "ols"
  if bootstrap:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(bootstrap, n))
    bx, by = lx[idx], ly[idx]
    bxm = bx - bx.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
      slopes = (bxm * (by - by.mean(1, keepdims=True))).sum(1) / (bxm ** 2).sum(1)
    se, method = float(np.nanstd(slopes)), f"bootstrap({bootstrap})"
  return Fit(float(sign * coef[1]), se, float(coef[1]), float(coef[0]), n, (float(x[ok].min()), float(x[ok].max())),
             method)
