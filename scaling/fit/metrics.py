"""Benchmark metrics, exactly the formulas of Alabdulmohsin et al.'s `get_error` and win rate (spec `bnsl.md` §3).

    e = (log pred - log y)^2;  RMSLE = sqrt(mean e);  stderr = sqrt(mean e + std(e) / sqrt(len e)) - sqrt(mean e)

with numpy's population std (ddof 0). Win rates truncate errors to 3 decimals (int(e * 1000) / 1000), count a
NaN error as 1, and split a win evenly among tied methods.
"""

from __future__ import annotations

import numpy as np


def sle(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Squared log errors (log pred - log y)^2, elementwise."""
  return (np.log(np.asarray(pred, np.float64)) - np.log(np.asarray(y, np.float64))) ** 2


def rmsle(pred: np.ndarray, y: np.ndarray) -> float:
  return float(np.sqrt(np.mean(sle(pred, y))))


def get_error(pred: np.ndarray, y: np.ndarray) -> tuple[float, float]:
  """(RMSLE, root standard log error) as Google's `get_error`."""
  e = sle(pred, y)
  mu = np.mean(e)
  return float(np.sqrt(mu)), float(np.sqrt(mu + np.std(e) / np.sqrt(len(e))) - np.sqrt(mu))


def truncate(errors: np.ndarray) -> np.ndarray:
  """NaN -> 1, then int(e * 1000) / 1000 (truncation toward zero, as Python's int)."""
  e = np.where(np.isnan(errors), 1.0, np.asarray(errors, np.float64))
  return np.trunc(e * 1000) / 1000


def win_rates(errors_MxT: np.ndarray) -> np.ndarray:
  """Fraction of tasks each of M methods wins, from an (M methods, T tasks) error table; ties split the win."""
  e_MxT = truncate(errors_MxT)
  best_MxT = e_MxT == np.min(e_MxT, axis=0, keepdims=True)
  return np.mean(best_MxT / np.sum(best_MxT, axis=0, keepdims=True), axis=1)
