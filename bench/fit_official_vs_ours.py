r"""BNSL n=1 on the extrapolation benchmark: the official recipe (scipy brute grid + curve_fit, one curve at a time)
against our vmapped multistart fit (a domain's curves in chunks of one padded length), in one run on this machine.

  python bench/fit_official_vs_ours.py                       # all 92 curves (~30 min; BB qa 2-shot alone 21 min)
  python bench/fit_official_vs_ours.py --domains=NMT,BB      # a subset

Prints, per curve, the held-out RMSLE and wall time of each, then totals per domain and overall: mean RMSLE,
failures (non-finite or non-positive predictions, which the official unbounded fit can produce), official time /
our time. Our time is given with compilation (first call of a shape) and warm (the same call again); the warm
times and the official ones also in CPU seconds of this process (the ratio that holds when other jobs share the cores).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from scaling import fit as F  # noqa: E402
from scaling.fit import benchmark as bm  # noqa: E402
from scaling.fit import data  # noqa: E402


def ours(curves: list[bm.Curve], n_starts: int, top_k: int) -> tuple[list[float], float, float, float]:
  """Held-out RMSLE per curve, seconds of the first (compiling) call and of a second, warm call (wall and CPU)."""
  args = F.pad_curves([c.x_fit for c in curves], [c.y_fit for c in curves])
  t0 = time.perf_counter()
  fits = F.fit_many(F.bnsl(1), *args, n_starts=n_starts, top_k=top_k)
  cold = time.perf_counter() - t0
  t0, c0 = time.perf_counter(), time.process_time()
  F.fit_many(F.bnsl(1), *args, n_starts=n_starts, top_k=top_k)
  warm, warm_cpu = time.perf_counter() - t0, time.process_time() - c0
  errs = []
  for c, r in zip(curves, fits):
    p = r.predict(c.x_test)
    errs.append(F.rmsle(p, c.y_test) if r.ok and np.all(np.isfinite(p) & (p > 0)) else math.nan)
  return errs, cold, warm, warm_cpu


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--domains", default="IC,NMT,LM,BB")
  ap.add_argument("--n_starts", type=int, default=2048)
  ap.add_argument("--top_k", type=int, default=16)
  ap.add_argument("--workers", type=int, default=1, help="scipy.optimize.brute workers (the official script: -1)")
  args = ap.parse_args()
  domains = args.domains.split(",")
  print(f"BNSL n=1, official recipe (brute {np.prod([len(np.r_[s]) for s in F.official.OFFICIAL_GRID])} points, "
        f"workers={args.workers}) vs ours ({args.n_starts} starts, top {args.top_k}); {os.cpu_count()} CPUs")
  total = {"off_s": 0.0, "off_cpu": 0.0, "cold_s": 0.0, "warm_s": 0.0, "warm_cpu": 0.0, "off": [], "ours": []}
  rows = []
  for domain in domains:
    name = "vision" if domain == "IC" else "lang"
    curves = bm.benchmark_curves(data.benchmark_csv(name), domain)
    our_err, cold, warm, warm_cpu = ours(curves, args.n_starts, args.top_k)
    off_err, off_s, off_cpu = [], 0.0, 0.0
    for c, e in zip(curves, our_err):
      c0 = time.process_time()
      r = F.official_fit(c.x_fit, c.y_fit, c.x_test, c.y_test, workers=args.workers)
      off_cpu += time.process_time() - c0
      ok = np.all(np.isfinite(r.predict(c.x_test))) and np.all(r.predict(c.x_test) > 0)
      off_err.append(r.rmsle_extrap if ok else math.nan)
      off_s += r.seconds
      print(f"  {c.name:45s} P={len(c.x_fit):3d}  official {off_err[-1]:8.4f} in {r.seconds:5.1f} s   "
            f"ours {e:8.4f}", flush=True)
    rows.append((domain, len(curves), off_err, our_err, off_s, off_cpu, cold, warm, warm_cpu))
    for k, v in (("off_s", off_s), ("off_cpu", off_cpu), ("cold_s", cold), ("warm_s", warm), ("warm_cpu", warm_cpu)):
      total[k] += v
    total["off"] += off_err
    total["ours"] += our_err
  print("\n| domain | curves | official RMSLE (failed) | ours RMSLE (failed) | ours better | official s (CPU s) | "
        "ours s (compile + fit) | ours s warm (CPU s) | official / ours, warm: wall (CPU) |")
  print("|---|---|---|---|---|---|---|---|---|")
  t = total
  for domain, n, off, our, off_s, off_cpu, cold, warm, warm_cpu in rows + [
      ("all", len(t["off"]), t["off"], t["ours"], t["off_s"], t["off_cpu"], t["cold_s"], t["warm_s"], t["warm_cpu"])]:
    off, our = np.array(off), np.array(our)
    better = np.sum(np.nan_to_num(our, nan=1.0) < np.nan_to_num(off, nan=1.0))
    print(f"| {domain} | {n} | {np.nanmean(off):.4f} ({np.sum(np.isnan(off))}) | {np.nanmean(our):.4f} "
          f"({np.sum(np.isnan(our))}) | {better}/{n} | {off_s:.1f} ({off_cpu:.1f}) | {cold:.1f} | {warm:.1f} "
          f"({warm_cpu:.1f}) | {off_s / warm:.1f}x ({off_cpu / warm_cpu:.1f}x) |")


if __name__ == "__main__":
  main()
