"""Figures of `scaling.dynamics.dmft` (theory as lines, simulation as points with ± 1 SE error bars), and the point
label and mean ± SE they share with its tables. matplotlib is imported only when a figure is drawn."""

from __future__ import annotations

import math

import numpy as np

from scaling.dynamics.theory import exponents


def point_label(n: float, p: float) -> str:
  f = lambda v: "∞" if math.isinf(v) else f"{int(v)}"  # noqa: E731
  return f"N={f(n)}, P={f(p)}"


def mean_se(x_SxT: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  return x_SxT.mean(0), x_SxT.std(0, ddof=1) / math.sqrt(x_SxT.shape[0])


def plot_curves(path: str, pts, t, theory: dict[str, np.ndarray], sim: dict[str, np.ndarray] | None,
                title: str, gap: bool = False) -> str:
  """Panels: test loss, train loss (finite P), optionally the gap; theory lines, simulation means ± SE as points."""
  from scaling import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.plt
  panels = ["test", "train"] + (["gap"] if gap else [])
  fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.2), squeeze=False)
  sel = np.unique(np.geomspace(1, len(t), 14).astype(int) - 1)  # points at ~14 log-spaced times
  for i, (n, p) in enumerate(pts):
    color = f"C{i % 10}"
    has_sim = sim is not None and np.all(np.isfinite(sim["test"][:, i]))
    for ax, kind in zip(axes[0], panels):
      if kind != "test" and math.isinf(p):
        continue
      th = theory["test"][i] - theory["train"][i] if kind == "gap" else theory[kind][i]
      (ax.semilogx if kind == "gap" else ax.loglog)(t, th, "-", color=color, label=point_label(n, p))
      if has_sim:
        m, se = mean_se(sim["test"][:, i] - sim["train"][:, i] if kind == "gap" else sim[kind][:, i])
        ax.errorbar(t[sel], m[sel], yerr=se[sel], fmt="o", ms=3.5, color=color, capsize=2, lw=0.8)
  for ax, kind in zip(axes[0], panels):
    ax.set(xlabel="t (gradient-flow time)", ylabel={"test": "test loss L(t)", "train": "train loss L̂(t)",
                                                    "gap": "L(t) − L̂(t)"}[kind])
    if kind == "train":  # below ~1e-10 the train loss is round-off of an interpolating fit
      ax.set_ylim(bottom=max(ax.get_ylim()[0], 1e-10))
    if ax.get_legend_handles_labels()[0]:
      ax.legend(fontsize=7, title="lines: DMFT; points: simulation ± SE", title_fontsize=7)
  axes[0, 0].set_title(title)
  plotting.tidy_log_axes(fig)
  out = plotting.save(fig, [path])[0]
  plt.close(fig)
  return out


def plot_exponents(path: str, curves: dict[str, np.ndarray]) -> str:
  from scaling import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.plt
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
  for ax, (x, y, lab) in zip(axes, ((curves["x_N"], curves["L_N"], "N (P = t = ∞)"),
                                    (curves["x_N"], curves["L_P"], "P (N = t = ∞)"),
                                    (curves["t"], curves["L_t"], "t (N = P = ∞)"))):
    ax.loglog(x, y, "o-", ms=3)
    ax.set(xlabel=lab, ylabel="test loss")
  plotting.tidy_log_axes(fig)
  out = plotting.save(fig, [path])[0]
  plt.close(fig)
  return out


def plot_frontier(path: str, pts, t, th, sim, f: exponents.Frontier) -> str:
  from scaling import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  cmap = plt.get_cmap("viridis")
  for i, (n, _) in enumerate(pts):
    color = cmap(i / max(1, len(pts) - 1))
    axes[0].loglog(n * t, th["test"][i], "-", color=color, lw=0.9)
    if sim is not None and np.all(np.isfinite(sim["test"][:, i])):
      m, se = mean_se(sim["test"][:, i])
      sel = np.unique(np.geomspace(1, len(t), 10).astype(int) - 1)
      axes[0].errorbar(n * t[sel], m[sel], yerr=se[sel], fmt="o", ms=3, color=color, capsize=2, lw=0.7)
  axes[0].loglog(f.C_C, f.L_C, "k--", lw=2, label=f"L* ∝ C^{f.exponents['loss']:.3f}")
  axes[0].set(xlabel="compute C = N t", ylabel="test loss", title="lines: DMFT per width (dark: small N)")
  axes[0].legend(fontsize=8)
  axes[1].loglog(f.C_C, f.N_C, "o-", ms=3, label=f"N* ∝ C^{f.exponents['n']:.3f}")
  axes[1].loglog(f.C_C, f.t_C, "s-", ms=3, label=f"t* ∝ C^{f.exponents['t']:.3f}")
  axes[1].set(xlabel="compute C", ylabel="optimal N*, t*")
  axes[1].legend(fontsize=8)
  plotting.tidy_log_axes(fig)
  out = plotting.save(fig, [path])[0]
  plt.close(fig)
  return out


def plot_ensembles(path: str, pts, t, Es, L_ExPxT, sims) -> str:
  from scaling import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.plt
  fig, axes = plt.subplots(1, len(pts), figsize=(5.5 * len(pts), 4.2), squeeze=False)
  for i, (n, p) in enumerate(pts):
    ax = axes[0, i]
    for e, E in enumerate(Es):
      ax.loglog(t, L_ExPxT[e, i], "-", color=f"C{e}", label=f"E={'∞' if math.isinf(E) else int(E)}")
      if E in sims and np.all(np.isfinite(sims[E]["test_ens"][:, i])):
        m, se = mean_se(sims[E]["test_ens"][:, i])
        sel = np.unique(np.geomspace(1, len(t), 12).astype(int) - 1)
        ax.errorbar(t[sel], m[sel], yerr=se[sel], fmt="o", ms=3, color=f"C{e}", capsize=2, lw=0.7)
    ax.set(xlabel="t", ylabel="ensemble-mean test loss", title=point_label(n, p))
    ax.legend(fontsize=8)
  plotting.tidy_log_axes(fig)
  out = plotting.save(fig, [path])[0]
  plt.close(fig)
  return out
