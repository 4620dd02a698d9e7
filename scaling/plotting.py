"""Shared matplotlib helpers (Agg backend; imported only by figure code)."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402


def tidy_log_axes(fig) -> None:
  """Readable log axes: majors at 1, 2, 5 x 10^k as plain numbers, no minor labels (they collide)."""
  for ax in fig.axes:
    for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
      if scale == "log":
        axis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
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
