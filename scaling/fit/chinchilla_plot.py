"""The isoFLOP figure of 2-D Chinchilla fits: left, loss against N coloured by compute, the first law's curves
along each compute budget and its optimum; right, N*(C) of every law with its bootstrap band and the isoFLOP
parabolas' minima with their power law, over the runs' (C, N). One drawing (:func:`isoflop_panels`) serves the
Python API (:func:`isoflop_figure`, from fit objects) and `launch.fit`'s CSV command (`table_2d.plot_groups`, from
the stored JSON results)."""

from __future__ import annotations

import dataclasses

import matplotlib.pyplot as plt
import numpy as np
from numpy.typing import ArrayLike

from scaling import plotting
from scaling.fit import compute_optimal
from scaling.fit.chinchilla_fit import ChinchillaBootstrap, ChinchillaFit


@dataclasses.dataclass(frozen=True)
class Law:
  """One fitted law to draw: its legend label, parameters (E, A, B, alpha, beta) and optionally a band of N*(C):
  (C_b, lo_b, hi_b)."""

  label: str
  params: dict[str, float]
  band: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None


@dataclasses.dataclass(frozen=True)
class Minima:
  """isoFLOP parabola minima (C_G, N_opt_G) and their power law N* = 10^n0 C^a."""

  C: np.ndarray
  N_opt: np.ndarray
  a: float
  n0: float


def isoflop_panels(path: str, N: ArrayLike, L: ArrayLike, C: ArrayLike, laws: list[Law], *, k: float = 6.0,
                   budgets: ArrayLike | None = None, minima: Minima | None = None, held_out: ArrayLike | None = None,
                   title: str = "isoFLOP curves", xlabel: str = "parameters N", ylabel: str = "loss L") -> str:
  """Writes the two-panel figure to `path` (format from its extension); returns the path. N, L, C: per run (C its
  compute); `budgets`: the compute values whose curves are drawn (default: the distinct C, at most 8, else 4
  log-spaced); `held_out`: a mask of runs drawn as open red circles."""
  N, L, C = (np.asarray(a, float) for a in (N, L, C))
  lc = np.log10(C)
  if budgets is None:
    distinct = np.unique(C)
    budgets = distinct if len(distinct) <= 8 else np.geomspace(C.min(), C.max(), 4)
  budgets = np.asarray(budgets, float)
  color = lambda c: plt.cm.viridis((np.log10(c) - lc.min()) / max(np.ptp(lc), 1e-9))  # noqa: E731
  fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
  sc = ax.scatter(N, L, c=lc, cmap="viridis", s=14, zorder=3)
  if held_out is not None and np.any(held_out):
    m = np.asarray(held_out, bool)
    ax.scatter(N[m], L[m], facecolors="none", edgecolors="r", s=40, label="held out", zorder=4)
  fig.colorbar(sc, ax=ax, label="log10 C")
  if laws:
    p = laws[0].params
    n = np.geomspace(N.min() / 2, N.max() * 2, 100)
    for c in budgets:
      ax.plot(n, _predict(p, n, c / (k * n)), "-", lw=0.8, color=color(c))
    opt = compute_optimal.frontier(p, budgets, k)
    ax.plot(opt["N_opt"], opt["L_opt"], "k--", lw=1, label=f"optimum ({laws[0].label})")
  if minima is not None and laws:
    ax.plot(minima.N_opt, _predict(laws[0].params, minima.N_opt, minima.C / (k * minima.N_opt)), "rx", ms=7,
            label="parabola minima")
  ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
  ax.legend(fontsize=7)
  bx.scatter(C, N, c="0.6", s=10, label="runs")
  C_band = [c for law in laws if law.band is not None for c in law.band[0]]
  C_line = np.geomspace(min([C.min()] + C_band), max([C.max()] + C_band), 100)
  for i, law in enumerate(laws):
    fr = compute_optimal.frontier(law.params, C_line, k)
    bx.plot(C_line, fr["N_opt"], "-", color=f"C{i}", label=f"{law.label}: a = {float(fr['a']):.3f}")
    if law.band is not None:
      bx.fill_between(*law.band, color=f"C{i}", alpha=0.2, lw=0)
  if minima is not None:
    bx.plot(minima.C, minima.N_opt, "ks", ms=5, label=f"parabola minima: a = {minima.a:.3f}")
    bx.plot(C_line, 10.0 ** minima.n0 * C_line ** minima.a, "k:", lw=1)
  bx.set(xscale="log", yscale="log", xlabel=f"compute C = {k:g} N D", ylabel="N*(C)", title="compute-optimal N")
  bx.legend(fontsize=7)
  fig.tight_layout()
  return plotting.save(fig, [path])[0]


def _predict(p: dict[str, float], N: np.ndarray, D: np.ndarray) -> np.ndarray:
  return p["E"] + p["A"] * N ** -p["alpha"] + p["B"] * D ** -p["beta"]


def isoflop_figure(path: str, N: ArrayLike, D: ArrayLike, L: ArrayLike, C_group: ArrayLike, fit: ChinchillaFit, *,
                   boot: ChinchillaBootstrap | None = None, iso: compute_optimal.IsoflopResult | None = None,
                   k: float = 6.0) -> str:
  """:func:`isoflop_panels` of one fit (band: `boot`'s percentiles of N*(C) over the data's compute range) and the
  isoFLOP parabolas `iso`; C_group: each run's compute group. D is not drawn (C_group fixes it)."""
  C_group = np.asarray(C_group, float)
  band = None
  if boot is not None:
    C_b = np.geomspace(C_group.min(), C_group.max(), 50)
    samples = compute_optimal.frontier(boot.samples, C_b, k)["N_opt"]
    lo, hi = np.percentile(samples, [50 * (1 - boot.level), 50 * (1 + boot.level)], axis=0)
    band = (C_b, lo, hi)
  minima = None if iso is None else Minima(iso.C, iso.N_opt, iso.a, iso.n0)
  return isoflop_panels(path, N, L, C_group, [Law(f"law ({fit.objective})", fit.params, band)], k=k, minima=minima)
