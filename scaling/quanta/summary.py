"""Summary of a sweep workdir: a table of final losses and a figure (loss vs N, per-subtask emergence)."""

from __future__ import annotations

import itertools
import os

import numpy as np

from scaling.engine import io
from scaling.fit.loglog import LN2
from scaling.quanta.analysis import CONVERGED_BITS

EMERGENCE_TASKS = 41  # the paper's heat-maps show the first 41 subtasks


def _other_axes(curves: io.Curves) -> list[str]:
  """Axes besides width and seed that vary in this sweep (each value gets its own rows / lines)."""
  return [a for a in ("D", "alpha", "lr", "weight_decay") if len(curves.coords[a]) > 1]


def _final(curves: io.Curves) -> tuple[np.ndarray, np.ndarray]:
  """Final mean loss in bits [width, D, seed, alpha, lr, wd] and per-task final loss in bits [..., task]."""
  return curves["test_loss"][..., -1] / LN2, curves["test_loss_task"][..., -1, :] / LN2


def summary_table(curves: io.Curves) -> str:
  """Rows: width, N, other varying axes, final mean loss in bits (mean ± sd over seeds), min over steps (fixed-D
  runs), subtasks below 0.1 bit at the end."""
  loss, loss_task = _final(curves)
  learned = (loss_task < CONVERGED_BITS).sum(-1).astype(float)
  learned[np.isnan(loss)] = np.nan
  others = _other_axes(curves)
  n_tasks = loss_task.shape[-1]
  n_seeds = loss.shape[2]
  fixed_D = bool((curves.coords["D"] >= 1).any())
  min_loss = np.nanmin(curves["test_loss"], axis=-1) / LN2  # data scaling uses the min over logged losses
  head = (["width", "N"] + others + [f"loss [bit] (seeds={n_seeds})"] + (["min over steps [bit]"] if fixed_D else [])
          + [f"learned (of {n_tasks})"])
  rows = []
  ranges = [range(len(curves.coords[a])) for a in ("D", "alpha", "lr", "weight_decay")]
  for i, w in enumerate(curves.coords["width"]):
    for jd, ja, jl, jw in itertools.product(*ranges):
      l = loss[i, jd, :, ja, jl, jw]
      if np.all(np.isnan(l)):
        continue
      idx = dict(D=jd, alpha=ja, lr=jl, weight_decay=jw)
      sd = f" ± {np.nanstd(l):.3f}" if n_seeds > 1 else ""
      rows.append([str(w), str(curves["params"][i])] + [f"{curves.coords[a][idx[a]]:g}" for a in others]
                  + [f"{np.nanmean(l):.3f}{sd}"]
                  + ([f"{np.nanmean(min_loss[i, jd, :, ja, jl, jw]):.3f}"] if fixed_D else [])
                  + [f"{np.nanmean(learned[i, jd, :, ja, jl, jw]):.1f}"])
  widths = [max(len(r[c]) for r in [head] + rows) for c in range(len(head))]
  fmt = lambda r: "  ".join(v.rjust(n) for v, n in zip(r, widths))
  return "\n".join([fmt(head), fmt(["-" * n for n in widths])] + [fmt(r) for r in rows])


def plot_summary(curves: io.Curves, path: str) -> str:
  """Loss vs N (log-log, seed mean with seeds as dots) and the per-subtask emergence heat-map vs N."""
  from scaling import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
  plt = plotting.plt

  loss, loss_task = _final(curves)
  N = curves["params"]
  fig, (ax, hm) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw=dict(width_ratios=[1, 1.3]))
  others = _other_axes(curves)
  ranges = [range(len(curves.coords[a])) for a in ("D", "alpha", "lr", "weight_decay")]
  for jd, ja, jl, jw in itertools.product(*ranges):
    l = loss[:, jd, :, ja, jl, jw]  # [width, seed]
    idx = dict(D=jd, alpha=ja, lr=jl, weight_decay=jw)
    label = ", ".join(f"{a}={curves.coords[a][idx[a]]:g}" for a in others) or None
    line, = ax.plot(N, np.nanmean(l, axis=1), "o-", label=label)
    if l.shape[1] > 1:
      ax.plot(np.repeat(N, l.shape[1]), l.reshape(-1), ".", color=line.get_color(), alpha=0.3)
  ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="final mean test loss [bits]",
         title="loss vs N")
  if others:
    ax.legend(fontsize=7)
  T = min(EMERGENCE_TASKS, loss_task.shape[-1])
  grid = np.nanmean(loss_task[:, 0, :, 0, 0, 0, :T], axis=1).T  # [task, width], first combination, seed mean
  im = hm.imshow(grid, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
  hm.set_xticks(range(len(N)), [f"{n:.2g}" if n >= 1e5 else str(n) for n in N], rotation=60, fontsize=7)
  hm.set(xlabel="parameters N", ylabel="subtask (frequency rank)", title=f"per-subtask final loss, first {T}")
  fig.colorbar(im, ax=hm, label="test loss [bits]")
  fig.tight_layout()
  return plotting.save(fig, [path], dpi=120)[0]


def summarize(workdir: str) -> str:
  """Prints the table of a workdir and writes `summary.png` into it; returns the table."""
  curves = io.load_workdir(workdir)
  table = summary_table(curves)
  path = plot_summary(curves, os.path.join(workdir, "summary.png"))
  print(table)
  print(f"\nplot: {path}")
  return table
