"""Small synthetic tables of runs with planted laws, for the README's worked example, the notebook and the tests.

`tests/data/runs_1d.csv` is `write_curves_csv(path)` with the defaults (seed 0): three learning rates, 8 model sizes
each from 1e6 to 1e9 parameters, loss L = E + A N^-alpha with the planted values of `CURVES`, times log-normal noise
of `sigma` (multiplicative). `write_runs_2d_csv` draws isoFLOP runs of Chinchilla's law L = E + A/N^alpha + B/D^beta.
"""

from __future__ import annotations

import csv

import numpy as np

# Planted (E, A, alpha) per learning rate of the 1-D example.
CURVES = {"0.001": (1.9, 400.0, 0.30), "0.003": (1.8, 300.0, 0.30), "0.01": (2.0, 200.0, 0.28)}
# Chinchilla's published approach-3 fit (Hoffmann et al. 2022), the 2-D example's planted law.
CHINCHILLA = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}


def curves_rows(seed: int = 0, sigma: float = 0.01, n_points: int = 8) -> list[dict[str, str]]:
  """Rows {N, lr, loss} of the 1-D example (see the module docstring)."""
  rng = np.random.default_rng(seed)
  N = np.geomspace(1e6, 1e9, n_points).round()
  rows = []
  for lr, (E, A, alpha) in CURVES.items():
    loss = (E + A * N ** -alpha) * np.exp(sigma * rng.standard_normal(n_points))
    rows += [{"N": f"{n:.0f}", "lr": lr, "loss": f"{v:.5f}"} for n, v in zip(N, loss)]
  return rows


def runs_2d_rows(seed: int = 0, sigma: float = 0.01, budgets=(1e18, 1e19, 1e20, 1e21), per_budget: int = 9,
                 k: float = 6.0, law: dict[str, float] | None = None) -> list[dict[str, str]]:
  """Rows {N, D, C, loss} of isoFLOP runs: for each compute budget C, `per_budget` model sizes log-spaced around
  the law's compute-optimal N (x1/8 .. x8), D = C / (k N), loss from the law times log-normal noise."""
  p = CHINCHILLA if law is None else law
  rng = np.random.default_rng(seed)
  G = (p["alpha"] * p["A"] / (p["beta"] * p["B"])) ** (1 / (p["alpha"] + p["beta"]))
  rows = []
  for C in budgets:
    n_opt = G * (C / k) ** (p["beta"] / (p["alpha"] + p["beta"]))
    N = n_opt * np.geomspace(1 / 8, 8, per_budget)
    D = C / (k * N)
    loss = (p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]) * np.exp(sigma *
                                                                                     rng.standard_normal(len(N)))
    rows += [{"N": f"{n:.6g}", "D": f"{d:.6g}", "C": f"{C:g}", "loss": f"{v:.5f}"} for n, d, v in zip(N, D, loss)]
  return rows


def write_csv(path: str, rows: list[dict[str, str]]) -> str:
  with open(path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
  return path


def write_curves_csv(path: str, seed: int = 0, sigma: float = 0.01) -> str:
  return write_csv(path, curves_rows(seed, sigma))


def write_runs_2d_csv(path: str, seed: int = 0, sigma: float = 0.01) -> str:
  return write_csv(path, runs_2d_rows(seed, sigma))
