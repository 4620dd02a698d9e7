r"""Cost of a loss surface L(t, N): the DMFT against simulation, and vmapping over widths against a loop.

  python bench/dmft_surface.py                     # 30 widths x 60 times, M = 8000, P = inf (spec §4's cost case)
  python bench/dmft_surface.py --M=2000 --widths=10 --times=30

Measured in one run on this machine:
1. DMFT: the whole (widths x times) surface in one batched call over 1/N (after compile), and a Python loop of one
   call per width.
2. Simulation (exact gradient flow, P = inf): the same surface for a few seeds with all widths as row masks of one
   projection in one call, and a loop of one call per width; the relative seed-to-seed spread of L gives the number
   of seeds needed for a 1 % standard error, and the time that would take at the measured per-seed cost. (The DMFT
   is deterministic and accurate to ~1e-9 (spec §4), a precision no seed count reaches.)
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaling.dynamics import random_features as rf  # noqa: E402
from scaling.dynamics.theory import inputs, solver  # noqa: E402


def timed(fn, repeat: int = 1) -> tuple[float, object]:
  out = fn()  # compile
  t0 = time.perf_counter()
  for _ in range(repeat):
    out = fn()
  return (time.perf_counter() - t0) / repeat, out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--a", type=float, default=2.0)
  ap.add_argument("--b", type=float, default=1.5)
  ap.add_argument("--M", type=int, default=8000)
  ap.add_argument("--widths", type=int, default=30)
  ap.add_argument("--times", type=int, default=60)
  ap.add_argument("--seeds", type=int, default=4, help="seeds simulated (the cost per seed is extrapolated)")
  ap.add_argument("--sim_max_width", type=int, default=512, help="simulate widths up to this (eigh is O(N^3))")
  args = ap.parse_args()
  N = np.unique(np.geomspace(16, 2048, args.widths).round().astype(int))
  t = np.geomspace(0.1, 1e5, args.times)
  lam, w2 = inputs.power_law_spectrum(args.a, args.b, args.M)
  print(f"a={args.a}, b={args.b}, M={args.M}, {len(N)} widths {N[0]}..{N[-1]}, {len(t)} times "
        f"{t[0]:g}..{t[-1]:g}, P = inf; {os.cpu_count()} CPUs")

  th_batch, (L_NxT, _) = timed(lambda: solver.loss_curve(lam, w2, t, 1.0 / N, 0.0))
  th_loop, _ = timed(lambda: [solver.loss_curve(lam, w2, t, 1.0 / n, 0.0) for n in N])
  print(f"DMFT surface: batched over 1/N {th_batch:.1f} s, loop over widths {th_loop:.1f} s "
        f"({th_loop / th_batch:.2f}x); {th_batch / L_NxT.size * 1e3:.2f} ms per (N, t) point")

  lam_s, wstar = rf.power_law_task(args.a, args.b, args.M)
  Ns = [int(n) for n in N if n <= args.sim_max_width]
  S = args.seeds
  sim_vmap, r = timed(lambda: rf.simulate(0, lam_s, wstar, Ns, math.inf, t, S), repeat=2)
  sim_loop, _ = timed(lambda: [rf.simulate(0, lam_s, wstar, [n], math.inf, t, S) for n in Ns], repeat=2)
  test = r["test"][:, 0]  # [seed, width, t]
  rel_sd = test.std(0, ddof=1) / test.mean(0)
  need = int(math.ceil((np.median(rel_sd) / 0.01) ** 2))
  need_max = int(math.ceil((rel_sd.max() / 0.01) ** 2))
  per_seed = sim_vmap / S
  dev = np.abs(test.mean(0) / L_NxT[:len(Ns)] - 1) / (rel_sd / math.sqrt(S))
  print(f"simulation, {len(Ns)} widths <= {args.sim_max_width}, {S} seeds: widths as masks in one call "
        f"{sim_vmap:.1f} s, loop over widths {sim_loop:.1f} s ({sim_loop / sim_vmap:.2f}x)")
  print(f"  seed-to-seed relative sd of L: median {np.median(rel_sd):.3f}, max {rel_sd.max():.3f} -> seeds for a 1 % "
        f"SE: {need} (median point), {need_max} (worst point)")
  print(f"  time for those seeds at {per_seed:.2f} s/seed: {need * per_seed:.0f} s (median), "
        f"{need_max * per_seed:.0f} s (worst); DMFT on the same widths: "
        f"{th_batch * len(Ns) / len(N):.1f} s -> DMFT / simulation speed-up {need * per_seed / th_batch:.0f}x "
        f"(median precision)")
  print(f"  |sim mean - DMFT| / SE over the simulated surface: median {np.median(dev):.2f}, "
        f"95th percentile {np.percentile(dev, 95):.2f}")


if __name__ == "__main__":
  main()
