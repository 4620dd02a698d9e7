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


BENCHMARK_COLUMNS = ("Domain", "Task", "Model", "Training", "Seen Examples", "Loss")


def load_benchmark(path: str, domain: str) -> dict[tuple[str, str], dict[str, np.ndarray]]:
  """Curves of one domain of a `benchmark.*.csv`: {(task, model): {x_fit, y_fit, x_test, y_test}}.

  Hygiene of spec §5.7: rows are split by `Training` (1 = fit, 0 = extrapolate), repeated (x, y) pairs are
  dropped and each part is sorted by x. A missing column, a short row or a cell that is not a number raises
  ValueError naming the file, the column and the row as a spreadsheet numbers it (the header is row 1).
  """
  rows: dict[tuple[str, str], dict[int, set[tuple[float, float]]]] = {}
  with open(path, newline="") as f:
    reader = csv.DictReader(f)
    missing = [c for c in BENCHMARK_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
      raise ValueError(f"{path}: row 1 (header) lacks column(s) {missing}; found {reader.fieldnames}")
    for row_no, r in enumerate(reader, start=2):
      empty = [c for c in reader.fieldnames if c in BENCHMARK_COLUMNS and r[c] is None]  # file order
      if empty:
        raise ValueError(f"{path}: row {row_no} has no cell for column {empty[0]!r} (the row is too short)")
      if r["Domain"] != domain:
        continue

      def number(column: str, row_no: int = row_no, r: dict = r) -> float:
        try:
          return float(r[column])
        except ValueError as e:
          raise ValueError(f"{path}: row {row_no}, column {column!r}: {r[column]!r} is not a number") from e

      training = number("Training")
      if training not in (0.0, 1.0):
        raise ValueError(f"{path}: row {row_no}, column 'Training': {r['Training']!r} is not 0 or 1")
      parts = rows.setdefault((r["Task"], r["Model"]), {0: set(), 1: set()})
      parts[int(training)].add((number("Seen Examples"), number("Loss")))
  if not rows:
    raise ValueError(f"no rows of domain {domain!r} in {path}")
  out = {}
  for name, parts in rows.items():
    fit_xy, test_xy = np.array(sorted(parts[1])).reshape(-1, 2), np.array(sorted(parts[0])).reshape(-1, 2)
    out[name] = {"x_fit": fit_xy[:, 0], "y_fit": fit_xy[:, 1], "x_test": test_xy[:, 0], "y_test": test_xy[:, 1]}
  return out
