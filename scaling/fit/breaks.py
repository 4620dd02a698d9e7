"""BNSL's number of breaks n, chosen per curve by validation on its largest x and a stability check.

The rule (:func:`select_breaks_many`):

1. Validation: fit n = 0..max_breaks on all but the last `n_val` points (by x) and score RMSLE on those points.
2. Stability: an n is *stable* when its fit on all points and its validation fit agree beyond the data: the RMS log
   ratio D_n of their predictions on `HORIZON_POINTS` log-spaced x from x_max to x_max (x_max / x_min)^HORIZON
   (half the fitted log-range past the data) is finite and at most max(STABILITY_RATIO * validation RMSLE_n,
   STABILITY_FLOOR). Adding the last n_val points should not move the extrapolation by much more than the
   validation error itself; a form whose extrapolation jumps (or stops being finite) when 3 points are added is
   fitting noise with its extra breaks.
3. Choice: n* of least validation RMSLE (ties: fewer breaks) if it is stable. Otherwise the simpler n < n* that
   validate comparably (RMSLE <= max(COMPARABLE * RMSLE_n*, RMSLE_n* + STABILITY_FLOOR)) are tried in order of
   validation RMSLE and the first stable one is chosen; when none is, the tried n of least D_n (n* among them).
   A simpler form that validates much worse is never chosen for stability alone (it cannot describe the data).
   The chosen n's fit on all points is returned.

Why: on BIG-Bench `unit` 1-shot (19 points) n=2 has the best validation RMSLE (.0074 vs .0077 for n=1) but its
full fit extrapolates to RMSLE 2.5 on the held-out points; its D is infinite (n=1's is .004), so n=1 is chosen. On
the 4-digit addition curve up to x = 736 (spec §4b) no n is stable (the break is only pinned down by the last
points), and n=1, which validates 20x better than n=0, is kept. Costs: only the full fit of each n tried is
computed, so a stable first choice costs what validation alone did (one refit per curve).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from absl import logging

from scaling.fit import fitter
from scaling.fit import forms as forms_lib
from scaling.fit import metrics
from scaling.fit.fitter import Batching, FitResult, Polish
from scaling.fit.objectives import Objective

HORIZON = 0.5  # the stability grid reaches half the fitted log x-range past the largest x
HORIZON_POINTS = 16
STABILITY_RATIO = 10.0
STABILITY_FLOOR = 0.01  # a 1 % disagreement is always acceptable
COMPARABLE = 2.0  # a simpler fallback must validate within this factor (or STABILITY_FLOOR) of the best n


@dataclasses.dataclass(frozen=True)
class BreakSelection:
  """The chosen number of breaks, its fit on all points, the validation RMSLE of every n (inf: skipped) and the
  stability D_n of every n checked (see the module docstring)."""

  n: int
  fit: FitResult
  val_rmsle: dict[int, float]
  stability: dict[int, float] = dataclasses.field(default_factory=dict)


def horizon_grid(x: np.ndarray) -> np.ndarray:
  """`HORIZON_POINTS` log-spaced x from max x to max x (max x / min x)^HORIZON."""
  lo, hi = math.log(float(np.min(x))), math.log(float(np.max(x)))
  return np.exp(hi + np.linspace(0.0, HORIZON * (hi - lo), HORIZON_POINTS))


def disagreement(a: FitResult, b: FitResult, x_G: np.ndarray) -> float:
  """RMS log ratio of two fits' predictions on x_G; inf when either is not finite and positive there."""
  if not (a.ok and b.ok):
    return math.inf
  pa, pb = a.predict(x_G), b.predict(x_G)
  if not (np.all(np.isfinite(pa) & (pa > 0)) and np.all(np.isfinite(pb) & (pb > 0))):
    return math.inf
  return float(np.sqrt(np.mean(np.log(pa / pb) ** 2)))


def is_stable(d: float, val: float) -> bool:
  return math.isfinite(d) and d <= max(STABILITY_RATIO * val, STABILITY_FLOOR)


def select_breaks_many(xs: list, ys: list, *, max_breaks: int = 3, n_val: int | None = None,
                       objective: str | Objective = "msle_log1p", n_starts: int = 4096, top_k: int = 32,
                       key: int = 0, polish: Polish = Polish(), batching: Batching = Batching(),
                       fits: Mapping[int, Sequence[FitResult]] | None = None) -> list[BreakSelection]:
  """BNSL's n for each curve by validation and stability (module docstring); `n_val` defaults to max(2, P // 5).

  Each n is one :func:`~scaling.fit.fitter.fit_many` call over all curves (held-out points get weight 0). `fits`
  may give, per n, the fits of every curve on all its points (as `fit_many` with the same settings would), which are
  then used instead of refitting. An n with more parameters than a curve's fitting points is skipped for that curve
  (validation RMSLE inf).
  """
  if len(xs) != len(ys) or not ys:
    raise ValueError(f"need as many x as y curves (>= 1), got {len(xs)} and {len(ys)}")
  curves = []
  for i, (x, y) in enumerate(zip(xs, ys)):
    x, y, _ = fitter._check(forms_lib.bnsl(0), x, y, name=f"[curve {i}]")  # pylint: disable=protected-access
    order = np.argsort(x, kind="stable")
    nv = max(2, len(y) // 5) if n_val is None else n_val
    if not 1 <= nv <= len(y) - 3:
      raise ValueError(f"curve {i}: n_val={nv} must leave >= 3 fitting points of {len(y)}")
    curves.append((x[order], y[order], nv))
  x_CxP, y_CxP, w_CxP = fitter.pad_curves([c[0] for c in curves], [c[1] for c in curves])
  kw = {"objective": objective, "n_starts": n_starts, "top_k": top_k, "key": key, "polish": polish,
        "batching": batching}
  val: list[dict[int, float]] = [{} for _ in curves]
  val_fit: list[dict[int, FitResult]] = [{} for _ in curves]
  for n in range(max_breaks + 1):
    form = forms_lib.bnsl(n)
    w_val = w_CxP.copy()
    for c, (_, y, nv) in enumerate(curves):
      w_val[c, len(y) - nv:] = 0.0
    ok_c = (w_val.sum(axis=1) >= form.n_params).astype(bool)
    res = iter(fitter.fit_many(form, x_CxP[ok_c], y_CxP[ok_c], w_val[ok_c], **kw) if ok_c.any() else [])
    for c, (x, y, nv) in enumerate(curves):
      if not ok_c[c]:
        val[c][n] = math.inf
        logging.info("select_breaks: curve %d n=%d skipped (%d params > %d fitting points)", c, n, form.n_params,
                     len(y) - nv)
        continue
      r = val_fit[c][n] = next(res)
      err = metrics.rmsle(r.predict(x[-nv:]), y[-nv:]) if r.ok else math.nan
      val[c][n] = err if math.isfinite(err) else math.inf
      logging.info("select_breaks: curve %d n=%d validation RMSLE %.6g on the last %d points", c, n, val[c][n], nv)
  return _choose(curves, x_CxP, y_CxP, w_CxP, val, val_fit, fits or {}, kw)


def _candidates(v: dict[int, float], fitted: set[int]) -> list[int]:
  """n* (least validation RMSLE, ties: fewer breaks), then the simpler n that validate comparably, best first."""
  order = sorted((n for n in v if n in fitted), key=lambda n: (v[n], n))
  best = order[0]
  bar = max(COMPARABLE * v[best], v[best] + STABILITY_FLOOR)
  return [best] + [n for n in order[1:] if n < best and v[n] <= bar]


def _choose(curves, x_CxP, y_CxP, w_CxP, val, val_fit, given, kw) -> list[BreakSelection]:
  """Step 3 of the rule: full fits of each curve's next candidate n, in rounds of one fit_many per n."""
  todo = {c: _candidates(v, set(val_fit[c])) for c, v in enumerate(val)}
  full: list[dict[int, FitResult]] = [{} for _ in curves]
  stab: list[dict[int, float]] = [{} for _ in curves]
  out: list[BreakSelection | None] = [None] * len(curves)
  while todo:
    for n in sorted({cands[0] for cands in todo.values()}):
      rows = [c for c, cands in todo.items() if cands[0] == n]
      res = ([given[n][c] for c in rows] if n in given else
             fitter.fit_many(forms_lib.bnsl(n), x_CxP[rows], y_CxP[rows], w_CxP[rows], **kw))
      for c, r in zip(rows, res):
        full[c][n] = r
        stab[c][n] = d = disagreement(r, val_fit[c][n], horizon_grid(curves[c][0]))
        logging.info("select_breaks: curve %d n=%d stability D %.4g (validation RMSLE %.4g)", c, n, d, val[c][n])
        todo[c].pop(0)
        stable = is_stable(d, val[c][n])
        if stable or not todo[c]:
          chosen = n if stable else min(stab[c], key=lambda m, s=stab[c]: (s[m], m))
          logging.info("select_breaks: curve %d chose n=%d%s", c, chosen, "" if stable else " (none stable)")
          out[c] = BreakSelection(chosen, full[c][chosen], val[c], stab[c])
          del todo[c]
  return out  # type: ignore[return-value]


def select_breaks(x, y, *, max_breaks: int = 3, n_val: int | None = None, objective: str | Objective = "msle_log1p",
                  n_starts: int = 4096, top_k: int = 32, key: int = 0) -> BreakSelection:
  """:func:`select_breaks_many` for one curve."""
  return select_breaks_many([x], [y], max_breaks=max_breaks, n_val=n_val, objective=objective, n_starts=n_starts,
                            top_k=top_k, key=key)[0]
