"""The isoFLOP figure of a 2-D Chinchilla fit: loss against N per compute group with the fitted law's curves and
both frontiers (the law's N*(C) and the isoFLOP parabolas' minima), and N*(C) against C with its bootstrap band."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import ArrayLike

from scaling import plotting
from scaling.fit import compute_optimal
from scaling.fit.chinchilla_fit import ChinchillaBootstrap, ChinchillaFit


def isoflop_figure(path: str, N: ArrayLike, D: ArrayLike, L: ArrayLike, C_group: ArrayLike, fit: ChinchillaFit, *,
                   boot: ChinchillaBootstrap | None = None, iso: compute_optimal.IsoflopResult | None = None,
                   k: float = 6.0) -> str:
  """Writes the two-panel figure to `path` (format from its extension); returns the path."""
  N, D, L, C_group = (np.asarray(a, float) for a in (N, D, L, C_group))
  C_G = np.unique(C_group)
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(C_G)))
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
  for c, col in zip(C_G, colors):
    m = C_group == c
    ax.scatter(N[m], L[m], s=10, color=col, alpha=0.7)
    n = np.geomspace(N[m].min(), N[m].max(), 100)
    ax.plot(n, fit.predict(n, c / (k * n)), color=col, lw=1.2, label=f"C={c:.1e}")
  fr = fit.frontier(C_G, k)
  ax.plot(fr["N_opt"], fr["L_opt"], "k--", lw=1.2, label="law's N*(C)")
  if iso is not None:
    ax.plot(iso.N_opt, fit.predict(iso.N_opt, iso.C / (k * iso.N_opt)), "rx", ms=7, label="parabola minima")
  ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="loss L", title="isoFLOP curves")
  ax.legend(fontsize=7)
  C_line = np.geomspace(C_G.min(), C_G.max(), 100)
  ax2.plot(C_line, fit.frontier(C_line, k)["N_opt"], "k-", label=f"law: a={fr['a']:.3f}")
  if boot is not None:
    band = compute_optimal.frontier(boot.samples, C_line, k)["N_opt"]
    lo, hi = np.percentile(band, [50 * (1 - boot.level), 50 * (1 + boot.level)], axis=0)
    ax2.fill_between(C_line, lo, hi, color="k", alpha=0.15, label=f"{100 * boot.level:g}% bootstrap band")
  if iso is not None:
    ax2.plot(iso.C, iso.N_opt, "rx", ms=7, label=f"parabolas: a={iso.a:.3f}")
    ax2.plot(C_line, iso.N_at(C_line), "r:", lw=1)
  ax2.set(xscale="log", yscale="log", xlabel=f"compute C = {k:g} N D", ylabel="N*(C)", title="compute-optimal N")
  ax2.legend(fontsize=7)
  fig.tight_layout()
  return plotting.save(fig, [path])[0]
