"""Reference numbers for the BNSL checks (spec `bnsl.md` §2, §4b, §1) and a reader for the benchmark CSVs.

The 4-digit-addition points and the parameter sets are numbers printed in the BNSL paper's code; the benchmark
CSVs (Alabdulmohsin et al. 2022) are read from a path the caller gives and are never copied into the repository.
"""

from __future__ import annotations

import csv
import os

import numpy as np

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# 4-digit addition, x = training-set size, y = test cross-entropy (spec §4b); sorted by x.
DIGIT4_X = np.array([160, 192, 256, 320, 384, 448, 480, 512, 544, 576, 608, 640, 672, 736, 800, 864, 928], np.float64)
DIGIT4_Y = np.array([2.13809046, 2.11813418, 2.08955508, 2.06988398, 2.05404987, 2.03837089, 2.02814281, 2.00496872,
                     1.95576149, 1.86313841, 1.70891537, 1.50637664, 1.29754721, 0.96559684, 0.75856477, 0.64768338,
                     0.55695445], np.float64)

# The official split-14 fit of the 4-digit data; also the noiseless-simulation ground truth (spec §2).
DIGIT4_BNSL1 = {"a": 0.41388453071629455, "b": 2.2772722897737556, "c0": 0.055077348404973955,
                "c1": 5.662903816010331, "d1": 612.5836172918001, "f1": 0.059193036393742314}

# The official recipe's split-14 popt and RMSLEs as measured in the spec (§2 table, §6 check 2).
OFFICIAL_SPLIT14 = {"popt": (0.413885, 2.27727, 0.0550774, 5.66291, 612.584, 0.0591931), "rmsle_fit": 5.98e-4,
                    "rmsle_extrap": 0.01092}

# Fig. 1's 3-break example (spec §1).
FIG1_BNSL3 = {"a": 1e-3, "b": 4.66e3, "c0": 0.05, "c1": 0.49, "c2": -0.811, "c3": 2.1, "d1": 3e6, "d2": 1e14,
              "d3": 2e20, "f1": 1.1, "f2": 1.425, "f3": 0.05}

# M4's published NMT extrapolation RMSLEs (spec §3, via correspondence with Alabdulmohsin et al.), by model.
NMT_M4_RMSLE = {"28 Enc, 6 Dec": 0.0181, "6 Enc, 28 Dec": 0.0444, "6 Enc, 6 Dec": 0.0205, "Dec-only": 0.0084,
                "TEnc-LSTM": 0.0126}


def benchmark_csv(name: str) -> str:
  """Path of `benchmark.{name}.csv` (name: "lang" or "vision"): in $SCALING_BENCHMARK_DIR if set, else in
  `../shared/data/scaling_benchmark/` beside the repository (where this project's CI puts the public data)."""
  if name not in ("lang", "vision"):
    raise ValueError(f"benchmark name must be 'lang' or 'vision', got {name!r}")
  root = os.environ.get("SCALING_BENCHMARK_DIR",
                        os.path.join(os.path.dirname(_REPO), "shared", "data", "scaling_benchmark"))
  path = os.path.join(root, f"benchmark.{name}.csv")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: pass the CSV's path, or set SCALING_BENCHMARK_DIR to the folder "
                            "holding Alabdulmohsin et al.'s benchmark.{lang,vision}.csv")
  return path


def load_benchmark(path: str, domain: str) -> dict[tuple[str, str], dict[str, np.ndarray]]:
  """Curves of one domain of a `benchmark.*.csv`: {(task, model): {x_fit, y_fit, x_test, y_test}}.

  Hygiene of spec §5.7: rows are split by `Training` (1 = fit, 0 = extrapolate), repeated (x, y) pairs are
  dropped and each part is sorted by x.
  """
  rows: dict[tuple[str, str], dict[int, set[tuple[float, float]]]] = {}
  with open(path, newline="") as f:
    for r in csv.DictReader(f):
      if r["Domain"] != domain:
        continue
      parts = rows.setdefault((r["Task"], r["Model"]), {0: set(), 1: set()})
      parts[int(float(r["Training"]))].add((float(r["Seen Examples"]), float(r["Loss"])))
  if not rows:
    raise ValueError(f"no rows of domain {domain!r} in {path}")
  out = {}
  for name, parts in rows.items():
    fit_xy, test_xy = np.array(sorted(parts[1])).reshape(-1, 2), np.array(sorted(parts[0])).reshape(-1, 2)
    out[name] = {"x_fit": fit_xy[:, 0], "y_fit": fit_xy[:, 1], "x_test": test_xy[:, 0], "y_test": test_xy[:, 1]}
  return out
