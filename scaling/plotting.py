"""Shared matplotlib helpers (imported only by figure code).

The backend is left to matplotlib: headless (no display, `MPLBACKEND` unset) it falls back to Agg, so scripts and
tests write files; in Jupyter / Colab the kernel's inline backend shows figures. `save` closes what it writes, so
saved figures are not shown twice."""

from __future__ import annotations

import os

import matplotlib
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np


def tidy_log_axes(fig) -> None:
  """Readable log axes: majors at 1, 2, 5 x 10^k as plain numbers (1 x 10^k only over > 2.5 decades or on axes
  labelled "sparse-ticks"), no minor labels (they collide)."""
  for ax in fig.axes:
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
      if scale == "log":
        lo, hi = (ax.get_xlim() if axis is ax.xaxis else ax.get_ylim())
        decades = np.log10(max(hi, 1e-300) / max(lo, 1e-300))
        subs = (1.0, 2.0, 5.0) if decades < 2.5 and ax.get_label() != "sparse-ticks" else (1.0,)
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=subs))
        axis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
        axis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def save(fig, paths: list[str], dpi: int = 130) -> list[str]:
  """Tidies log axes, writes every path (format from its extension), closes the figure."""
  tidy_log_axes(fig)
  for p in paths:
    os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
    fig.savefig(p, dpi=dpi)
  plt.close(fig)
  return paths
