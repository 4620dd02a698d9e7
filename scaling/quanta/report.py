"""The quantization paper's numbers from MSP workdirs: exponent fits, a comparison table, and its figures.

`analyze(workdir)` computes what a workdir's axes allow (N-scaling needs >= 3 online widths, D-scaling >= 3 dataset
sizes, Fig 9/10 >= 2 values of α) and records what it cannot compute and why. `comparison_rows` sets our numbers
beside the theory and the paper, with bands from spec `quanta.md` (their sources are in
`scaling.quanta.theory.HEADLINE`). Paper values apply only to the paper's task and setup; rows say so when a run
differs. `scaling.quanta.figures` draws the figures; both read workdirs as `scaling.quanta.runs.Run`.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from scaling.fit import loglog
from scaling.quanta import analysis, theory
from scaling.quanta.runs import Run, load_run
from scaling.engine import launch

EXPONENT_TOL = 0.08  # spec §7's tolerance on α_N, used for every exponent vs the paper's Fig 9/10 values
_TOL_SOURCE = "paper ±0.08 (spec §7's α_N tolerance, applied to every exponent)"


def _fit(run: Run, quantity: str, alpha: float, fn, *args) -> None:
  try:
    run.fits.setdefault(quantity, {})[float(alpha)] = fn(*args)
  except ValueError as e:
    run.skipped.append(f"{quantity} at α={alpha:g}: {e}")


def analyze(workdir: str) -> Run:
  """All fits and headline values this workdir's axes allow (see the module docstring)."""
  run = load_run(workdir)
  c = run.curves
  if len(c.coords["lr"]) > 1 or len(c.coords["weight_decay"]) > 1:
    run.skipped.append(f"lr/weight_decay axes have several values; the analysis uses the first "
                       f"(lr={c.coords['lr'][0]:g}, weight_decay={c.coords['weight_decay'][0]:g})")
  if np.isnan(c["test_loss"]).any():
    run.skipped.append("some shape points have not finished yet; fits and figures use the finished ones")
  on, fixed, ws = run.online(), run.fixed_D(), run.online_widths()
  iw = ws[-1] if ws else run.widest()
  for a, alpha in enumerate(run.alphas):
    probs = c["probs"][a]
    if not ws:
      run.skipped.append("N- and S-scaling, Figs 7-8: no finished online (D=-1) runs in this workdir")
    else:
      if len(ws) >= 3:
        final = np.stack([run.loss_bits(i, on, a)[:, -1] for i in ws])
        _fit(run, "alpha_N", alpha, analysis.fit_alpha_N, c["params"][ws], final)
      else:
        run.skipped.append(f"α_N: needs >= 3 finished widths with online data, has {len(ws)}")
      loss = run.loss_bits(iw, on, a)
      _fit(run, "alpha_S", alpha, analysis.fit_alpha_S, run.steps, loss)
      _fit(run, "alpha_S_400_8900", alpha, analysis.fit_alpha_S, run.steps, loss, (400, 8900))
      conv = analysis.convergence_steps(run.task_nats(iw, on, a), run.steps)  # [seed, task]
      run.values.setdefault("convergence_steps", {})[float(alpha)] = conv
      _fit(run, "convergence_slope", alpha, analysis.fit_convergence_time, probs, conv)
    if len(fixed) >= 3:
      Ds = c.coords["D"][fixed]
      iw_D = run.widest()
      per_task = np.stack([run.task_nats(iw_D, j, a) for j in fixed])  # [D, seed, log_step, task]
      min_loss = analysis.min_over_training(np.stack([run.loss_bits(iw_D, j, a) for j in fixed]))  # [D, seed]
      n = analysis.n_learned(per_task)  # [D, seed]
      run.values.setdefault("min_loss_D", {})[float(alpha)] = (Ds, min_loss)
      run.values.setdefault("n_learned_D", {})[float(alpha)] = (Ds, n)
      _fit(run, "alpha_D", alpha, analysis.fit_alpha_D, Ds, min_loss)
      _fit(run, "n_learned_exponent", alpha, analysis.fit_n_learned_D, Ds, n)
    elif len(fixed):
      run.skipped.append(f"α_D and Fig 9: need >= 3 fixed-D values, have {len(fixed)}")
  run.skipped = list(dict.fromkeys(run.skipped))
  return run


@dataclasses.dataclass
class Row:
  quantity: str
  ours: str
  theory: str
  paper: str
  band: str
  within: str  # "yes" / "no" / "n/a: why"
  source: str = ""


def _row(quantity: str, ours: float, err: float | None, theory_value: float | None, paper: float | None,
         band: tuple[float, float] | None, source: str, applies: str | None = None) -> Row:
  fmt = lambda v: "—" if v is None else f"{v:.3g}"
  ours_s = f"{ours:.3g}" + (f" ± {err:.2g}" if err is not None else "")
  if applies == "*":
    within = "n/a*"
  elif applies:
    within = f"n/a: {applies}"
  elif band is None or not np.isfinite(ours):
    within = "n/a"
  else:
    within = "yes" if band[0] <= ours <= band[1] else "no"
  band_s = "—" if band is None else f"[{band[0]:.3g}, {band[1]:.3g}]"
  return Row(quantity, ours_s, fmt(theory_value), fmt(paper), band_s, within, source)


def _paper_exponent(quantity: str, alpha: float) -> float | None:
  key = {"alpha_N": "alpha_N", "alpha_S": "alpha_S", "alpha_D": "alpha_D"}.get(quantity)
  a = round(float(alpha), 2)
  if key and a in theory.FIG10:
    return theory.FIG10[a][key]
  if quantity == "n_learned_exponent" and a in theory.FIG9:
    return theory.FIG9[a]
  return None


_THEORY = {"alpha_N": theory.alpha_N, "alpha_S": theory.alpha_S, "alpha_D": theory.alpha_D,
           "n_learned_exponent": theory.n_learned_exponent}
_LABEL = {"alpha_N": "α_N", "alpha_S": "α_S (500<S<15k)", "alpha_D": "α_D", "n_learned_exponent": "n_learned(D) exp."}


def _not_paper(run: Run) -> str:
  return (f"this run has task {run.task[0]}/{run.task[1]}/{run.task[2]}, batch {run.config['train']['batch_size']};"
          f" the paper's is 500/100/3 (Zipf), batch 20000")


def comparison_rows(run: Run) -> list[Row]:
  """Our numbers beside theory and the paper; paper values only apply to the paper's task and batch."""
  rows: list[Row] = []
  paper = run.is_paper_setup()
  not_paper = None if paper else "*"
  H = theory.HEADLINE
  short = _too_short(run)
  for quantity in ("alpha_N", "alpha_S", "alpha_D", "n_learned_exponent"):
    for alpha, fit in sorted(run.fits.get(quantity, {}).items()):
      p = _paper_exponent(quantity, alpha)
      band = None if p is None else (p - EXPONENT_TOL, p + EXPONENT_TOL)
      rows.append(_row(f"{_LABEL[quantity]}, α={alpha:g}", fit.exponent, fit.stderr, _THEORY[quantity](alpha), p,
                       band, _TOL_SOURCE, not_paper or short.get(quantity)))
  for alpha, fit in sorted(run.fits.get("alpha_S_400_8900", {}).items()):
    h = H["alpha_S_window_400_8900"]
    rows.append(_row(f"S-panel slope 400<S<8900, α={alpha:g}", fit.exponent, fit.stderr, theory.alpha_S(alpha),
                     h["value"] if alpha == 0.4 else None, h["band"] if alpha == 0.4 else None, h["source"],
                     not_paper or short.get("alpha_S_400_8900")))
  for alpha, fit in sorted(run.fits.get("convergence_slope", {}).items()):
    h = H["convergence_slope"]
    use = paper and alpha == 0.4
    rows.append(_row(f"convergence-time slope vs p_i, α={alpha:g}", fit.exponent, fit.stderr,
                     theory.convergence_time_exponent(), h["value"] if use else None, h["band"] if use else None,
                     h["source"], not_paper or short.get("convergence_slope")))
  if 0.4 in run.values.get("convergence_steps", {}):
    rows += _paper_setup_rows(run, not_paper)
  if 0.4 in run.values.get("min_loss_D", {}):
    rows += _data_rows(run, not_paper)
  return rows


# The paper's fits need runs at least this long (steps): α_N uses the final loss of 1e5-step runs (Fig 10; Fig 2
# used 2e5), α_S its window's end, the Fig 8 slope the 2e5-step run, α_D and Fig 9 the min over >= 1e5 steps (its
# argmin came at <= 9,500 steps, so 1e4 suffices).
_MIN_STEPS = {"alpha_N": 100_000, "alpha_S": 15_000, "alpha_S_400_8900": 8_900, "convergence_slope": 200_000,
              "alpha_D": 10_000, "n_learned_exponent": 10_000}


def _too_short(run: Run) -> dict[str, str]:
  last = int(run.steps[-1])
  return {q: f"run ends at {last} steps, the paper's fit needs >= {n}" for q, n in _MIN_STEPS.items() if last < n}


def _paper_setup_rows(run: Run, not_paper: str | None) -> list[Row]:
  """Rows for the paper's α=0.4 setup: early-training values at the widest net, final values, D-scaling values."""
  H, rows = theory.HEADLINE, []
  a = int(np.nonzero(np.isclose(run.alphas, 0.4))[0][0])
  widths = run.curves.coords["width"]
  iw, on = run.online_widths()[-1], run.online()
  width_note = None if widths[iw] == 500 else f"widest finished net is {widths[iw]}, the paper's 500"
  conv = run.values["convergence_steps"][0.4]
  steps, loss = run.steps, run.loss_bits(iw, on, a).mean(axis=0)
  h = H["task0_convergence_step"]
  rows.append(_row("task 0 converges (first log < 0.1 bit)", float(np.mean(conv[:, 0])), None, None, h["value"],
                   h["band"], h["source"], not_paper or width_note))
  for s, key in ((500, "mean_loss_500_steps_bits"), (1000, "mean_loss_1000_steps_bits")):
    if s in steps:
      h = H[key]
      rows.append(_row(f"mean loss at {s} steps [bit]", float(loss[steps == s][0]), None, None, h["value"],
                       h["band"], h["source"], not_paper or width_note))
  final_note = None if steps[-1] >= 199_900 else f"run ends at {steps[-1]} steps, the paper's at 2e5"
  h = H["fig2_n_final_loss_width500_bits"]
  rows.append(_row(f"final mean loss, width {widths[iw]} [bit]", float(loss[-1]), None, None, h["value"], h["band"],
                   h["source"], not_paper or width_note or final_note))
  n_final = float(analysis.n_learned_final(run.task_nats(iw, on, a)).mean())
  h = H["fig2_n_n_learned_width500"]
  rows.append(_row(f"subtasks < 0.1 bit at the end, width {widths[iw]}", n_final, None, None, h["value"], h["band"],
                   h["source"], not_paper or width_note or final_note))
  if 9 in widths[run.online_widths()]:
    h = H["fig2_n_loss_N5e3_bits"]
    l9 = float(run.loss_bits(int(np.nonzero(widths == 9)[0][0]), on, a)[:, -1].mean())
    rows.append(_row("final mean loss, width 9 (N=5,429) [bit]", l9, None, None, h["value"], h["band"], h["source"],
                     not_paper or final_note))
  return rows


def _data_rows(run: Run, not_paper: str | None) -> list[Row]:
  """D-scaling rows for α=0.4 at the widest net: the flat (no generalisation) region, values at D = 5e6."""
  H, rows = theory.HEADLINE, []
  Ds, min_loss = run.values["min_loss_D"][0.4]
  _, n = run.values["n_learned_D"][0.4]
  width = run.curves.coords["width"][run.widest()]
  note = not_paper or (None if width == 500 else f"width {width}, the paper's 500")
  flat = Ds[min_loss.mean(axis=1) >= analysis.FLAT_BITS]
  if flat.size:
    h = H["flat_region_D_max"]
    above = Ds[Ds > flat.max()]
    nxt = f" (next D {above.min():.3g} below)" if above.size else " (no D below 0.95 bit)"
    rows.append(_row(f"largest D with min loss >= 0.95 bit{nxt}", float(flat.max()), None, None, h["value"],
                     h["band"], h["source"], note))
  if Ds.max() >= 4.9e6:
    i = int(np.argmax(Ds))
    for key, label, value in (("loss_D5e6_bits", "min loss at D=5e6 [bit]", min_loss[i].mean()),
                              ("n_learned_D5e6", "n_learned at D=5e6", n[i].mean())):
      h = H[key]
      rows.append(_row(label, float(value), None, None, h["value"], h["band"], h["source"],
                       note or _too_short(run).get("alpha_D")))
  return rows


def format_table(rows: list[Row]) -> str:
  head = ["quantity", "ours", "theory", "paper", "band", "within band"]
  cells = [[r.quantity, r.ours, r.theory, r.paper, r.band, r.within] for r in rows]
  widths = [max(len(x[i]) for x in [head] + cells) for i in range(len(head))]
  fmt = lambda r: "  ".join(v.ljust(n) for v, n in zip(r, widths)).rstrip()
  return "\n".join([fmt(head), fmt(["-" * n for n in widths])] + [fmt(r) for r in cells])


def merged_fits(runs: list[Run]) -> dict[str, dict[float, loglog.Fit]]:
  """Exponent fits of several workdirs (e.g. fig10_n + fig10_d) in one table: quantity -> α -> fit."""
  out: dict[str, dict[float, loglog.Fit]] = {}
  for run in runs:
    for q, by_alpha in run.fits.items():
      out.setdefault(q, {}).update(by_alpha)
  return out


@launch.host_driven
def report(workdirs: list[str]) -> str:
  """Analyses each workdir, writes its figures (PNG and PDF) into it, and returns the printed text.

  Fig 9 and Fig 10 use the fits of all workdirs together (e.g. fig10_n for α_N, α_S and fig10_d for α_D) and are
  written into every workdir. Whatever cannot be drawn is listed with the reason.
  """
  from scaling.quanta import figures as figs  # pylint: disable=g-import-not-at-top  (matplotlib only here)

  runs = [analyze(w) for w in workdirs]
  out: list[str] = []
  fits = merged_fits(runs)
  for run in runs:
    out.append(f"== {run.workdir} (task {run.task[0]}/{run.task[1]}/{run.task[2]}, steps {run.steps[-1]}, "
               f"widths {run.curves.coords['width'].tolist()}, D {run.curves.coords['D'].tolist()}, "
               f"α {run.alphas.tolist()}, seeds {len(run.curves.coords['seed'])})")
    if not run.is_paper_setup():
      out.append(f"n/a* : {_not_paper(run)}: paper values are shown for reference only")
    written, cannot = [], list(run.skipped)
    for draw in (lambda: figs.fig2(run), lambda: figs.fig7(run), lambda: figs.fig8(run),
                 lambda: figs.fig9(fits, run.workdir), lambda: figs.fig10(fits, run.workdir)):
      try:
        written += draw()
      except figs.CannotDraw as e:
        cannot.append(str(e))
    rows = comparison_rows(run)
    out.append(format_table(rows) if rows else "(no quantity could be computed)")
    sources = dict.fromkeys(r.source for r in rows if r.source)
    if sources:
      out.append("band sources:\n" + "\n".join(f"  - {s}" for s in sources))
    out.append("figures: " + ", ".join(os.path.basename(p) for p in written if p.endswith(".png")) +
               " (and .pdf)" if written else "figures: none")
    if cannot:
      out.append("not computed / not drawn:\n" + "\n".join(f"  - {c}" for c in dict.fromkeys(cannot)))
  return "\n".join(out)
