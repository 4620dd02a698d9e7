r"""2-D Chinchilla fits of a 240-point synthetic isoFLOP dataset (8 compute groups x 30 sizes, Epoch AI's estimates
planted, 1.5% log-normal noise), in one run on this machine:

  python bench/fit_chinchilla.py                      # everything (~5 min on 2 idle CPU cores; the L-BFGS grid most)
  python bench/fit_chinchilla.py --starts=450         # a 10% subset of the L-BFGS grid (its time extrapolated)
  python bench/fit_chinchilla.py --epoch_csv=PATH     # also Epoch AI's digitised Chinchilla data (their repo's
                                                      # data/svg_extracted_data.csv; not shipped here)

Prints: our fit (scaling.fit.fit_chinchilla) cold (first call: compilation) and warm (median of 5); scipy L-BFGS-B
from each of Epoch AI's 4,500 grid starts (chinchilla_reference.lbfgs_grid, tight tolerances); the generic
multistart fit F.fit(F.chinchilla(), ...); every best objective side by side with its relative difference to ours;
4,000 bootstrap refits (cold and warm, how many converged) against the generic F.bootstrap's 400 (extrapolated x10).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaling import fit as F  # noqa: E402
from scaling.fit import chinchilla_reference, compute_optimal  # noqa: E402


def timed(fn, *args, **kw):
  t0 = time.perf_counter()
  out = fn(*args, **kw)
  return out, time.perf_counter() - t0


def epoch(path: str, n_boot: int) -> None:
  """Epoch AI's digitised Chinchilla points, less the 5 highest losses as in their notebook; D = C / (6 N)."""
  import pandas as pd  # pylint: disable=g-import-not-at-top
  df = pd.read_csv(path)
  N, C, L = (df[c].to_numpy(float) for c in ("Model Size", "Training FLOP", "loss"))
  keep = L < np.sort(L)[-5]
  N, D, L = N[keep], C[keep] / (6 * N[keep]), L[keep]
  F.fit_chinchilla(N, D, L)
  r, t = timed(F.fit_chinchilla, N, D, L)
  b, tb = timed(F.bootstrap_chinchilla, N, D, L, n_boot=n_boot, base=r)
  print(f"Epoch AI's data ({len(L)} points): warm fit {t * 1e3:.1f} ms, objective {r.loss!r}; {n_boot} bootstrap "
        f"refits {tb:.2f} s ({b.n_converged} converged)")
  for k, v in r.params.items():
    lo, hi = b.intervals[k]
    print(f"  {k:6s} {v:10.4f}  95% [{lo:.4f}, {hi:.4f}]   Epoch AI: {compute_optimal.EPOCH_PARAMS[k]}")
  print(f"  a = {b.base.frontier([1e21])['a']:.4f} 95% {tuple(round(float(x), 4) for x in b.intervals['a'])}\n")


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--noise", type=float, default=0.015)
  ap.add_argument("--starts", type=int, default=4500, help="L-BFGS grid starts (a seeded subset below 4,500)")
  ap.add_argument("--n_boot", type=int, default=4000)
  ap.add_argument("--old_boot", type=int, default=400)
  ap.add_argument("--epoch_csv", default="", help="Epoch AI's svg_extracted_data.csv: fit it too")
  args = ap.parse_args()
  d = F.synthetic_chinchilla(8, 30, noise=args.noise, seed=0)
  N, D, L = d["N"], d["D"], d["L"]
  print(f"data: {len(L)} points, {args.noise:.1%} log noise, planted {d['params']}; load avg {os.getloadavg()[0]:.1f}")

  ours, cold = timed(F.fit_chinchilla, N, D, L)
  warm = float(np.median([timed(F.fit_chinchilla, N, D, L)[1] for _ in range(5)]))
  print(f"ours: cold {cold:.2f} s, warm {warm * 1e3:.1f} ms, objective {ours.loss!r}, converged {ours.converged}")
  print(f"      params {ours.params}")

  grid = chinchilla_reference.epoch_grid()
  starts = grid if args.starts >= len(grid) else grid[np.random.default_rng(0).choice(len(grid), args.starts, False)]
  ref, t_ref = timed(chinchilla_reference.lbfgs_grid, N, D, L, starts=starts)
  t_ref_full = t_ref * len(grid) / len(starts)
  near = np.sum(ref.losses <= ours.loss * (1 + 1e-9))
  print(f"L-BFGS-B grid ({len(starts)} starts): {t_ref:.1f} s (4,500 starts: {t_ref_full:.1f} s), objective "
        f"{ref.loss!r}; {near} starts reached ours within 1e-9")

  x = np.stack([N, D], axis=1)
  old, old_cold = timed(F.fit, F.chinchilla(), x, L, objective="huber_log")
  _, old_warm = timed(F.fit, F.chinchilla(), x, L, objective="huber_log")
  print(f"generic F.fit(F.chinchilla()): cold {old_cold:.2f} s, warm {old_warm:.2f} s, objective {old.loss!r}")

  print("\nbest objectives (Huber delta=1e-3 on log residuals, sum):")
  for name, v in (("ours", ours.loss), ("L-BFGS grid", ref.loss), ("generic F.fit", old.loss)):
    print(f"  {name:14s} {v:.17g}   (v - ours) / ours = {(v - ours.loss) / ours.loss:+.2e}")

  boot, b_cold = timed(F.bootstrap_chinchilla, N, D, L, n_boot=args.n_boot, base=ours)
  _, b_warm = timed(F.bootstrap_chinchilla, N, D, L, n_boot=args.n_boot, base=ours)
  print(f"\nbootstrap {args.n_boot} refits: cold {b_cold:.2f} s, warm {b_warm:.2f} s; {boot.n_converged}/{boot.n_boot} "
        "converged")
  for k in ("alpha", "beta", "a", "b"):
    lo, hi = boot.intervals[k]
    print(f"  {k:6s} 95% [{lo:.4f}, {hi:.4f}]")
  _, o_cold = timed(F.bootstrap, F.chinchilla(), x, L, n_boot=args.old_boot, objective="huber_log", base=old)
  _, o_warm = timed(F.bootstrap, F.chinchilla(), x, L, n_boot=args.old_boot, objective="huber_log", base=old)
  o_ext = o_warm * args.n_boot / args.old_boot
  print(f"generic F.bootstrap {args.old_boot} refits: cold {o_cold:.2f} s, warm {o_warm:.2f} s "
        f"(x{args.n_boot / args.old_boot:g}: {o_ext:.1f} s)")

  print("\nratios (warm):")
  print(f"  fit:       L-BFGS grid / ours = {t_ref_full / warm:.0f}x, generic / ours = {old_warm / warm:.0f}x")
  print(f"  bootstrap: generic (extrapolated) / ours = {o_ext / b_warm:.1f}x\n")
  if args.epoch_csv:
    epoch(args.epoch_csv, args.n_boot)


if __name__ == "__main__":
  main()
