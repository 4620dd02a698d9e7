"""The quantization paper's figures (2, 7, 8, 9, 10) from analysed MSP workdirs (`scaling.quanta.runs.Run`).

Each `fig*` function draws what the run holds and returns the list of files written (PNG and PDF), or raises
`CannotDraw` with the reason when the run lacks the axes the figure needs.
"""

from __future__ import annotations

import os

import numpy as np

from scaling import plotting
from scaling.fit import loglog
from scaling.plotting import plt
from scaling.quanta import analysis, theory
from scaling.quanta.runs import Run

N_HEATMAP = 41  # the paper's emergence grids show the first 41 subtasks


class CannotDraw(Exception):
  """The workdir lacks the axes a figure needs; the message says which."""


def _save(fig, workdir: str, name: str) -> list[str]:
  return plotting.save(fig, [os.path.join(workdir, f"{name}.{ext}") for ext in ("png", "pdf")])


def _alpha_index(run: Run) -> int:
  """α = 0.4 (the paper's Fig 2) when present, else the first α."""
  close = np.nonzero(np.isclose(run.alphas, 0.4))[0]
  return int(close[0]) if close.size else 0


def _theory_line(ax, x: np.ndarray, y_anchor: float, x_anchor: float, slope: float, label: str) -> None:
  x = np.asarray(x, np.float64)
  ax.plot(x, y_anchor * (x / x_anchor) ** slope, "k--", lw=1, label=label)


def _heatmap(ax, grid_TxX: np.ndarray, x: np.ndarray, xlabel: str, log_x: bool = True):
  """Subtask x (N|S|D) grid of losses in bits, colour 0..1 bit; returns the mesh for a colorbar."""
  T = min(N_HEATMAP, grid_TxX.shape[0])
  x = np.asarray(x, np.float64)
  edges = np.sqrt(x[1:] * x[:-1]) if log_x else (x[1:] + x[:-1]) / 2
  first = x[0] ** 2 / edges[0] if log_x else 2 * x[0] - edges[0]
  last = x[-1] ** 2 / edges[-1] if log_x else 2 * x[-1] - edges[-1]
  mesh = ax.pcolormesh(np.concatenate([[first], edges, [last]]), np.arange(T + 1) - 0.5, grid_TxX[:T],
                       cmap="viridis", vmin=0, vmax=1, shading="flat")
  if log_x:
    ax.set_xscale("log")
  ax.set(xlabel=xlabel, ylabel="subtask (frequency rank)", label="sparse-ticks")
  return mesh


def _note(ax, text: str) -> None:
  ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
  ax.set_axis_off()


def fig2(run: Run) -> list[str]:
  """Top: loss vs N, S, D with theory slopes; bottom: emergence heat-maps of the first 41 subtasks."""
  c, a = run.curves, _alpha_index(run)
  alpha = float(run.alphas[a])
  on, fixed, ws = run.online(), run.fixed_D(), run.online_widths()
  widths, N = c.coords["width"], c["params"][ws]
  iw, iw_D = (ws[-1] if ws else run.widest()), run.widest()
  if not ws and len(fixed) < 3:
    raise CannotDraw("Fig 2 needs finished online runs (N, S panels) or >= 3 fixed-D runs (D panel)")
  fig, axes = plt.subplots(2, 3, figsize=(14, 8))
  slope_s = -theory.alpha_S(alpha)
  if len(ws) >= 2:
    final = np.stack([run.loss_bits(i, on, a)[:, -1] for i in ws])  # [width, seed]
    ax = axes[0, 0]
    ax.plot(np.repeat(N, final.shape[1]), final.ravel(), ".", alpha=0.4)
    ax.plot(N, final.mean(1), "o-", label=f"ours, step {run.steps[-1]}")
    _theory_line(ax, N, final.mean(1)[-1], N[-1], -theory.alpha_N(alpha), f"N^-{theory.alpha_N(alpha):.3g}")
    ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="test loss [bits]", title="loss vs N")
    ax.legend(fontsize=7)
    tasks_final = np.stack([analysis.to_bits(run.task_nats(i, on, a)[:, -1]).mean(0) for i in ws])
    fig.colorbar(_heatmap(axes[1, 0], tasks_final.T, N, "parameters N"), ax=axes[1, 0], label="bits")
  else:
    _note(axes[0, 0], "N panel: needs >= 2 widths with online (D=-1) runs")
    _note(axes[1, 0], "N heat-map: needs >= 2 widths with online runs")
  if ws and len(run.steps) >= 3:
    s = run.steps
    loss = run.loss_bits(iw, on, a).mean(0)
    ax = axes[0, 1]
    ax.plot(s[1:], loss[1:], "-", label=f"ours, width {widths[iw]}")
    mid = len(s) // 2
    _theory_line(ax, s[1:], loss[mid], s[mid], slope_s, f"S^{slope_s:.3g}")
    ax.set(xscale="log", yscale="log", xlabel="steps S", ylabel="test loss [bits]", title="loss vs S")
    ax.legend(fontsize=7)
    per_task = analysis.to_bits(run.task_nats(iw, on, a)).mean(0)  # [log, task]
    fig.colorbar(_heatmap(axes[1, 1], per_task[1:].T, s[1:], "steps S"), ax=axes[1, 1], label="bits")
  else:
    _note(axes[0, 1], "S panel: needs an online (D=-1) run with >= 3 log steps")
    _note(axes[1, 1], "S heat-map: needs an online run")
  if len(fixed) >= 3:
    Ds = c.coords["D"][fixed]
    curves_D = np.stack([run.loss_bits(iw_D, j, a) for j in fixed])  # [D, seed, log]
    min_loss = analysis.min_over_training(curves_D)
    ax = axes[0, 2]
    ax.plot(np.repeat(Ds, min_loss.shape[1]), min_loss.ravel(), ".", alpha=0.4)
    ax.plot(Ds, min_loss.mean(1), "o-", label=f"ours, width {widths[iw_D]}, min over steps")
    _theory_line(ax, Ds, min_loss.mean(1)[-1], Ds[-1], slope_s, f"D^{slope_s:.3g}")
    ax.set(xscale="log", yscale="log", xlabel="training samples D", ylabel="test loss [bits]", title="loss vs D")
    ax.legend(fontsize=7)
    at_best = []
    for j, curve in zip(fixed, curves_D):  # per-subtask loss at the log step of the best mean loss
      k = np.nanargmin(curve.mean(0))
      at_best.append(analysis.to_bits(run.task_nats(iw_D, j, a)[:, k]).mean(0))
    fig.colorbar(_heatmap(axes[1, 2], np.stack(at_best).T, Ds, "training samples D"), ax=axes[1, 2], label="bits")
  else:
    _note(axes[0, 2], f"D panel: needs >= 3 fixed-D runs, this workdir has {len(fixed)}")
    _note(axes[1, 2], "D heat-map: needs >= 3 fixed-D runs")
  fig.suptitle(f"MSP {run.task[0]}/{run.task[1]}/{run.task[2]}, α={alpha:g} (theory slopes dashed)")
  fig.tight_layout()
  return _save(fig, run.workdir, "fig2")


def fig7(run: Run) -> list[str]:
  """Per-subtask test loss vs steps with the mean: widest online run and (if any) the largest-D run, seed 0."""
  a, ws, fixed = _alpha_index(run), run.online_widths(), run.fixed_D()
  if not ws and not len(fixed):
    raise CannotDraw("Fig 7 needs a finished online or fixed-D run")
  widths, D = run.curves.coords["width"], run.curves.coords["D"]
  panels = ([(ws[-1], run.online(), "online")] if ws else []) + (
      [(run.widest(), fixed[-1], f"D={D[fixed[-1]]}")] if len(fixed) else [])
  fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
  s = run.steps[1:]
  for ax, (iw, j, label) in zip(axes[0], panels):
    per_task = analysis.to_bits(run.task_nats(iw, j, a)[0])[1:]  # [log, task]
    colors = plt.cm.viridis(np.linspace(0, 1, per_task.shape[1]))
    for t in range(per_task.shape[1]):
      ax.plot(s, per_task[:, t], color=colors[t], lw=0.6, alpha=0.6)
    ax.plot(s, run.loss_bits(iw, j, a)[0, 1:], "r-", lw=2, label="mean loss")
    ax.set(xscale="log", xlabel="steps", ylabel="test loss [bits]", title=f"width {widths[iw]}, {label}, seed 0")
    ax.legend(fontsize=7)
  fig.tight_layout()
  return _save(fig, run.workdir, "fig7")


def fig8(run: Run) -> list[str]:
  """Steps to convergence (first log < 0.1 bit) vs subtask frequency, with the fit and the 80/p reference."""
  a = _alpha_index(run)
  alpha = float(run.alphas[a])
  conv = run.values.get("convergence_steps", {}).get(alpha)
  fit = run.fits.get("convergence_slope", {}).get(alpha)
  if conv is None or fit is None:
    raise CannotDraw("Fig 8 needs an online run in which >= 3 subtasks converge (loss < 0.1 bit)")
  p = run.curves["probs"][a]
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  pp = np.broadcast_to(p, conv.shape)
  ok = np.isfinite(conv)
  ax.plot(pp[ok], conv[ok], "o", ms=3, alpha=0.6, label="subtasks (all seeds)")
  xs = np.geomspace(pp[ok].min(), pp[ok].max(), 50)
  ax.plot(xs, fit.predict(xs), "b-", label=f"fit slope {fit.slope:.2f} ± {fit.stderr:.2f}")
  ax.plot(xs, 80 / xs, "m:", label="80/p (paper's reference)")
  ax.set(xscale="log", yscale="log", xlabel="subtask frequency p_i", ylabel="steps to < 0.1 bit",
         title=f"convergence time, width {run.curves.coords['width'].max()}")
  ax.legend(fontsize=7)
  fig.tight_layout()
  return _save(fig, run.workdir, "fig8")


def _exponent_panel(ax, fits: dict[float, loglog.Fit], theory_fn, paper: dict[float, float], title: str) -> None:
  al = np.array(sorted(fits))
  ax.errorbar(al, [fits[x].exponent for x in al], [fits[x].stderr for x in al], fmt="o-", capsize=3, label="ours")
  grid = np.linspace(min(al.min(), 0.1), max(al.max(), 0.8), 50)
  ax.plot(grid, theory_fn(grid), "k--", label="theory")
  if paper:
    ax.plot(list(paper), list(paper.values()), "s", mfc="none", color="gray", label="paper")
  ax.set(xlabel="paper α", title=title)
  ax.legend(fontsize=7)


def fig9(fits: dict[str, dict[float, loglog.Fit]], workdir: str) -> list[str]:
  f = fits.get("n_learned_exponent", {})
  if len(f) < 2:
    raise CannotDraw("Fig 9 needs the n_learned(D) exponent at >= 2 values of α (a D sweep over α)")
  fig, ax = plt.subplots(figsize=(5, 4))
  _exponent_panel(ax, f, theory.n_learned_exponent, theory.FIG9, "exponent of n_learned(D)")
  fig.tight_layout()
  return _save(fig, workdir, "fig9")


def fig10(fits: dict[str, dict[float, loglog.Fit]], workdir: str) -> list[str]:
  have = [q for q in ("alpha_N", "alpha_S", "alpha_D") if len(fits.get(q, {})) >= 2]
  if not have:
    raise CannotDraw("Fig 10 needs α_N, α_S or α_D at >= 2 values of α")
  fig, axes = plt.subplots(1, len(have), figsize=(4.5 * len(have), 4), squeeze=False)
  fns = {"alpha_N": theory.alpha_N, "alpha_S": theory.alpha_S, "alpha_D": theory.alpha_D}
  for ax, q in zip(axes[0], have):
    _exponent_panel(ax, fits[q], fns[q], {a: v[q] for a, v in theory.FIG10.items()}, q.replace("alpha_", "α_"))
  fig.tight_layout()
  return _save(fig, workdir, "fig10")
