"""Fig 1(a, b) of a `vision` workdir (spec `dmft.md` §5.1): the measured surface L(t, N), its 2-D law with bootstrap
intervals, the compute-optimal frontier, and the DMFT exponents from the network's own NTK spectra beside them.

Settings are the run's `fig1` config section. The kernels are the empirical NTK of the widest width, seed 0, on the
first `fig1.ntk_points` held-out samples with their ±1 targets: at the run's own initial parameters ("initial") and,
with `fig1.after_kernel`, at its trained parameters ("after"). Writes to the workdir: fig1.md (the table and the
verdict), fig1.json (`fig1.summary`), fig1.png (Fig 1 a, b) and fig1_spectra.png; returns the markdown.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np

from scaling.dynamics import fig1, vision
from scaling.engine import io as wd
from scaling.engine import members
from scaling.nn import cnn


def initial_params(workdir: str, width_index: int, seed_index: int) -> cnn.Params:
  """The parameters seed `seed_index` of width `width_index` started from (the run's init key, `Vision.inputs`)."""
  p = vision._stored_plan(workdir)  # pylint: disable=protected-access
  init_S, _ = members.seed_keys(p.config["seed"], p.grid.size, 2)
  spec = p.points[width_index].spec
  with jax.transfer_guard("allow"):  # setup keys from Python ints
    return jax.tree.map(np.asarray, cnn.init(init_S[seed_index], spec.width, spec.model))


def kernels(workdir: str, cfg: dict[str, Any]) -> dict[str, fig1.KernelExponents]:
  """The initial (and after-training) NTK exponents of the widest width, seed 0."""
  a = cfg["fig1"]
  x, s = vision.heldout(workdir)
  n = min(a["ntk_points"], len(s))
  widest = len(cfg["sweep"]["widths"]) - 1
  k_range = tuple(int(k) for k in a["k_range"])
  params = {"initial": initial_params(workdir, widest, 0)}
  if a["after_kernel"]:
    params["after"] = vision.final_params(workdir, widest, 0)
  return {name: fig1.kernel_exponents(cnn.apply, p, x[:n], s[:n], k_range) for name, p in params.items()}


def plot_spectra(path: str, ks: dict[str, fig1.KernelExponents]) -> str:
  """λ_k and the task-power tail of each kernel, log-log, with the fitted rank window marked."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from scaling import plotting  # pylint: disable=import-outside-toplevel
  from scaling.dynamics import spectra  # pylint: disable=import-outside-toplevel

  fig, (ax, bx) = plt.subplots(1, 2, figsize=(10, 3.8))
  for name, k in ks.items():
    r = np.arange(1, len(k.lam) + 1)
    ax.plot(r, np.maximum(k.lam, 1e-30), label=f"{name}: b = {k.b:.2f}")
    bx.plot(r[:-1], spectra.tail_power(k.power)[:-1], label=f"{name}: a = {k.a:.2f}")
  for a, yl in ((ax, "λ_k"), (bx, "task power beyond rank k")):
    a.axvspan(*next(iter(ks.values())).k_range, color="0.9")
    a.set(xscale="log", yscale="log", xlabel="rank k", ylabel=yl)
    a.legend(fontsize=8)
  ax.set_title("NTK spectrum (widest width, held-out points)", fontsize=9)
  bx.set_title("task power tail", fontsize=9)
  fig.tight_layout()
  return plotting.save(fig, [path])[0]


def report(workdir: str, curves: wd.Curves | None = None) -> str:
  """Analyses a finished vision workdir and writes fig1.{md,json,png}, fig1_spectra.png; returns the markdown.
  Host-side analysis: small arrays move to the device freely (the launcher's transfer guard is for the training)."""
  with jax.transfer_guard("allow"):
    return _report(workdir, curves)


def _report(workdir: str, curves: wd.Curves | None) -> str:
  workdir = os.path.abspath(workdir)
  cfg = vision._stored_plan(workdir).config  # pylint: disable=protected-access
  curves = curves if curves is not None else wd.Curves.load(os.path.join(workdir, wd.CURVES))
  a = cfg["fig1"]
  s = fig1.surface(curves["test_loss"], curves.coords["width"], curves["n_params"], curves.coords["log_step"],
                   cfg["train"]["batch_size"], t_min=a["t_min"], n_times=a["n_times"])
  law = fig1.fit_law(s, n_boot=a["n_boot"], key=cfg["seed"])
  frontier = fig1.measured_frontier(s)
  ks = kernels(workdir, cfg)
  summ = fig1.summary(s, law, frontier, ks)
  with open(os.path.join(workdir, "fig1.json"), "w") as f:
    json.dump(summ, f, indent=1)
  fig1.plot(os.path.join(workdir, "fig1.png"), s, law, frontier,
            title=f"1-D ResNets on MNIST-1D, one pass: {len(s.width_W)} widths x {summ['seeds']} seeds")
  plot_spectra(os.path.join(workdir, "fig1_spectra.png"), ks)
  lines = [f"Fig 1 (a, b): L(t, N) = L∞ + A N^-α_N + B (batch·t)^-α_t fitted to {law.n_points} points (widths "
           f"x seeds x {len(s.steps_T)} log bins of steps {s.steps_T[0]:.0f}..{s.steps_T[-1]:.0f}); "
           f"L∞ = {law.params['E']:.4f}; {law.n_converged}/{law.n_boot} bootstrap refits converged. Kernels: NTK "
           f"of the widest width, seed 0, on {ks['initial'].n} held-out points, exponents over ranks "
           f"{ks['initial'].k_range}.", "", fig1.markdown(fig1.table(law, frontier, ks)), ""]
  lines += [f"- {v}" for name in ks for v in summ["verdict"][name]]
  text = "\n".join(lines) + "\n"
  with open(os.path.join(workdir, "fig1.md"), "w") as f:
    f.write(text)
  return text
