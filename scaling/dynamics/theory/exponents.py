"""Scaling exponents of the random-feature model (spec `dmft.md` §3) and the compute-optimal frontier of a loss
surface. Exponents are signed: L ∝ t^time_exponent, etc."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt


def _check_ab(a: float, b: float) -> None:
  if not (a > 1 and b > 1):
    raise ValueError(f"the exponents are M -> inf asymptotics and need a > 1 and b > 1, got a={a}, b={b}")


def time_exponent(a: float, b: float) -> float:
  """L(t, ∞, ∞) ∝ t^x with x = −(a−1)/b."""
  _check_ab(a, b)
  return -(a - 1) / b


def data_exponent(a: float, b: float) -> float:
  """L(∞, ∞, P) ∝ P^x with x = −min(a−1, 2b)."""
  _check_ab(a, b)
  return -min(a - 1, 2 * b)


def model_exponent(a: float, b: float) -> float:
  """Single model, L(∞, N, ∞) ∝ N^x with x = −min(a−1, b) (variance-limited for easy tasks; spec §3)."""
  _check_ab(a, b)
  return -min(a - 1, b)


def ensemble_model_exponent(a: float, b: float) -> float:
  """E = ∞ ensemble (bias), L ∝ N^x with x = −min(a−1, 2b)."""
  _check_ab(a, b)
  return -min(a - 1, 2 * b)


def compute_optimal_exponents(a: float, b: float) -> dict[str, float]:
  """C = N t, P = ∞: L* ∝ C^loss, N* ∝ C^n, t* ∝ C^t from L ≈ t^{−(a−1)/b} + N^{−m}, m = min(a−1, b):
  loss = −(a−1)m/(a−1+bm), n = (a−1)/(a−1+bm), t = bm/(a−1+bm)."""
  m = -model_exponent(a, b)
  den = a - 1 + b * m
  return {"loss": -(a - 1) * m / den, "n": (a - 1) / den, "t": b * m / den}


def fit_power_law(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float]:
  """(exponent, prefactor) of y ≈ prefactor · x^exponent by least squares in log-log."""
  lx, ly = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
  if lx.shape != ly.shape or lx.size < 2 or not (np.all(np.isfinite(lx)) and np.all(np.isfinite(ly))):
    raise ValueError("fit_power_law needs >= 2 matching points with x, y > 0")
  slope, icpt = np.polyfit(lx, ly, 1)
  return float(slope), float(np.exp(icpt))


class Frontier(NamedTuple):
  """Compute-optimal frontier of a loss surface: per C, the best L*, N*, t* = C/N*; `interior` marks optima strictly
  inside the N grid; `exponents` (loss, n, t) are log-log least-squares slopes over the interior points (NaN if
  fewer than two)."""

  C_C: np.ndarray
  L_C: np.ndarray
  N_C: np.ndarray
  t_C: np.ndarray
  interior: np.ndarray
  exponents: dict[str, float]


def compute_optimal_frontier(L_NxT, N_N, t_T, C_C: npt.ArrayLike | None = None) -> Frontier:
  """L*(C) = min_N L(N, C/N) with C = N·t (P = ∞), log L interpolated linearly in log t per width and the optimum
  refined by a parabola in log N through the best grid width and its neighbours.

  Default C grid: 40 log-spaced points over [N_max t_min, N_min t_max], where every width has a valid t.
  """
  L = np.asarray(L_NxT, np.float64)
  N, t = np.asarray(N_N, np.float64), np.asarray(t_T, np.float64)
  if L.shape != (N.size, t.size) or N.ndim != 1 or t.ndim != 1:
    raise ValueError(f"L_NxT must have shape (len(N_N), len(t_T)), got {L.shape}")
  if np.any(np.diff(N) <= 0) or np.any(np.diff(t) <= 0) or N[0] <= 0 or t[0] <= 0 or np.any(~(L > 0)):
    raise ValueError("N_N and t_T must be positive and increasing, L_NxT positive")
  if C_C is None:
    lo, hi = N[-1] * t[0], N[0] * t[-1]
    if not hi > lo:
      raise ValueError("no C has a valid t for every width; pass C_C")
    C_C = np.geomspace(lo, hi, 40)
  C = np.asarray(C_C, np.float64)
  lt, lL, lN = np.log(t), np.log(L), np.log(N)
  lLc_NxC = np.full((N.size, C.size), np.inf)
  for i in range(N.size):
    ltc = np.log(C) - lN[i]
    ok = (ltc >= lt[0]) & (ltc <= lt[-1])
    lLc_NxC[i, ok] = np.interp(ltc[ok], lt, lL[i])
  best = np.argmin(lLc_NxC, axis=0)
  lNs, lLs = lN[best].copy(), lLc_NxC[best, np.arange(C.size)]
  interior = (best > 0) & (best < N.size - 1)
  for c in np.flatnonzero(interior):
    y = lLc_NxC[best[c] - 1:best[c] + 2, c]
    if not np.all(np.isfinite(y)):
      interior[c] = False
      continue
    x = lN[best[c] - 1:best[c] + 2]
    p2, p1, p0 = np.polyfit(x, y, 2)
    if p2 > 0:
      lNs[c] = np.clip(-p1 / (2 * p2), x[0], x[2])
      lLs[c] = np.polyval([p2, p1, p0], lNs[c])
  Ls, Ns = np.exp(lLs), np.exp(lNs)
  ts = C / Ns
  exps = {"loss": math.nan, "n": math.nan, "t": math.nan}  # NaN: fewer than two interior optima
  if interior.sum() >= 2:
    exps = {name: fit_power_law(C[interior], y[interior])[0] for name, y in (("loss", Ls), ("n", Ns), ("t", ts))}
  return Frontier(C, Ls, Ns, ts, interior, exps)
