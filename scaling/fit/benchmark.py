"""Extrapolation benchmark: every method fitted to every curve, scored on held-out larger-x points (spec §3, §5.7).

A :class:`Curve` is one (domain, task, model) series split into fitting and held-out points. :func:`fit_methods`
fits a list of methods to a list of curves -- each of our forms is one :func:`~scaling.fit.fitter.fit_many` call
per domain, BNSL with n chosen by validation is :func:`~scaling.fit.breaks.select_breaks_many`, and ``ref_m1``..
``ref_m4`` are the benchmark authors' own estimators (:mod:`scaling.fit.reference`) -- and returns a
:class:`MethodResult` per curve: fit and held-out RMSLE, the root standard log error, parameters and predictions.
:func:`domain_table` aggregates them the way the benchmark's authors do (mean RMSLE, win rates with 3-decimal
truncation and split ties).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Sequence

import numpy as np

from scaling.fit import breaks
from scaling.fit import data as data_lib
from scaling.fit import fitter
from scaling.fit import forms as forms_lib
from scaling.fit import metrics

# M4's e0 per domain, as the benchmark notebook sets err_0 (spec §3): 1.0, except BIG-Bench (scores reach 1).
M4_E0 = {"IC": 1.0, "NMT": 1.0, "LM": 1.0, "BB": 1.001}
OUR_FORMS = ("m1", "m2", "m3", "m4", "bnsl0", "bnsl1", "bnsl2", "bnsl3")
REFERENCE = ("ref_m1", "ref_m2", "ref_m3", "ref_m4")
METHODS = OUR_FORMS + ("bnsl",) + REFERENCE
GRID_POINTS = 96
# One curve per call, padded to 32 or 80 points (the benchmark's curves have 9..71): every domain, validation fit and
# refit of a form runs one of two compiled programs (a compilation costs 5-15 s here, more than most fits). One curve
# per call: a vmapped polish runs until its slowest lane converges, and a fixed chunk pads a domain's last call with
# copies (LM's two long curves ran as 8). Measured (CPU s per IC curve, 2048 starts / top 16, the same fits): M4 .69
# vs .99 in chunks of 8, BNSL n=1 .36 (chunks of 4) vs .43, BNSL n=2 1.59 vs 1.69.
BATCHING = fitter.Batching(chunk=1, lengths=(32, 80), fixed=True)
_MEMO: dict[tuple, list] = {}  # BNSL fits on all points, reused by "bnsl" (its refits are the bnsl<n> fits)


@dataclasses.dataclass(frozen=True)
class Curve:
  """One series: fit on (x_fit, y_fit), score extrapolation on (x_test, y_test); both sorted by x."""

  domain: str
  task: str
  model: str
  x_fit: np.ndarray
  y_fit: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray

  @property
  def name(self) -> str:
    return f"{self.domain}/{self.task}/{self.model}"

  @property
  def slug(self) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{self.task}__{self.model}").strip("_")

  def grid(self, n: int = GRID_POINTS) -> np.ndarray:
    """Log-spaced x from the smallest fitted to the largest held-out point (where figures draw the fits)."""
    hi = max(self.x_fit.max(), self.x_test.max() if len(self.x_test) else 0.0)
    return np.geomspace(self.x_fit.min(), hi, n)


@dataclasses.dataclass(frozen=True)
class MethodResult:
  """One method on one curve. RMSLEs are NaN where a prediction is not finite and positive (counted as error 1 in
  win rates, as the benchmark's notebook does)."""

  method: str
  curve: str
  rmsle_fit: float
  rmsle_test: float
  stderr_test: float
  params: dict[str, float]
  pred_test: np.ndarray
  pred_grid: np.ndarray
  n_breaks: int | None = None
  val_rmsle: dict[int, float] | None = None

  def to_json(self) -> dict:
    d = dataclasses.asdict(self)
    d["pred_test"], d["pred_grid"] = self.pred_test.tolist(), self.pred_grid.tolist()
    d["val_rmsle"] = None if self.val_rmsle is None else {str(k): v for k, v in self.val_rmsle.items()}
    return d

  @classmethod
  def from_json(cls, d: dict) -> MethodResult:
    d = dict(d)
    d["pred_test"], d["pred_grid"] = np.asarray(d["pred_test"], np.float64), np.asarray(d["pred_grid"], np.float64)
    if d.get("val_rmsle") is not None:
      d["val_rmsle"] = {int(k): v for k, v in d["val_rmsle"].items()}
    return cls(**d)


def benchmark_curves(path: str, domain: str) -> list[Curve]:
  """The curves of one domain of a benchmark CSV (Training==1 fitted, Training==0 held out; sorted, deduplicated)."""
  return [Curve(domain, task, model, c["x_fit"], c["y_fit"], c["x_test"], c["y_test"])
          for (task, model), c in sorted(data_lib.load_benchmark(path, domain).items())]


def split_curve(domain: str, task: str, model: str, x, y, n_test: int) -> Curve:
  """A curve from raw points: sorted by x, repeated (x, y) pairs dropped, the `n_test` largest x held out."""
  x, y = np.asarray(x, np.float64).reshape(-1), np.asarray(y, np.float64).reshape(-1)
  if x.shape != y.shape:
    raise ValueError(f"{domain}/{task}/{model}: x and y differ in length ({len(x)} vs {len(y)})")
  keep = np.isfinite(x) & np.isfinite(y)
  xy = np.array(sorted(set(zip(x[keep].tolist(), y[keep].tolist())))).reshape(-1, 2)
  if not 0 <= n_test < len(xy):
    raise ValueError(f"{domain}/{task}/{model}: n_test={n_test} must be < the {len(xy)} distinct points")
  cut = len(xy) - n_test
  return Curve(domain, task, model, xy[:cut, 0], xy[:cut, 1], xy[cut:, 0], xy[cut:, 1])


def y_scale(method: str, curve: Curve) -> float:
  """The scale y is divided by before fitting: 1, except for M4 outside the benchmark's domains, where our losses
  are not bounded by 1 and y / (1.001 max y_fit) is fitted with e0 = 1 (the same family as e0 = 1.001 max y_fit)."""
  return float(1.001 * curve.y_fit.max()) if method == "m4" and curve.domain not in M4_E0 else 1.0


def _form(method: str, domain: str) -> forms_lib.Form:
  if method.startswith("bnsl"):
    return forms_lib.bnsl(int(method[4:]))
  if method == "m4":
    return forms_lib.m4(M4_E0.get(domain, 1.0))
  return {"m1": forms_lib.m1, "m2": forms_lib.m2, "m3": forms_lib.m3}[method]()


def _score(method: str, curve: Curve, predict, params: dict[str, float], **extra) -> MethodResult:
  with np.errstate(all="ignore"):
    pf, pt, pg = (np.asarray(predict(x), np.float64) for x in (curve.x_fit, curve.x_test, curve.grid()))
  e_fit = metrics.rmsle(pf, curve.y_fit) if np.all(pf > 0) else math.nan
  if len(curve.y_test) and np.all(np.isfinite(pt)) and np.all(pt > 0):
    e_test, se = metrics.get_error(pt, curve.y_test)
  else:
    e_test, se = math.nan, math.nan
  return MethodResult(method, curve.name, float(e_fit), float(e_test), float(se),
                      {k: float(v) for k, v in params.items()}, pt, pg, **extra)


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
  methods = tuple(methods)
  bad = [m for m in methods if m not in METHODS]
  if bad or not methods or len(set(methods)) != len(methods):
    raise ValueError(f"methods must be distinct names from {METHODS}; got {methods}")
  return methods


def fit_methods(curves: Sequence[Curve], methods: Sequence[str], *, objective: str = "msle_log1p",
                n_starts: int = 2048, top_k: int = 16, key: int = 0, max_breaks: int = 2,
                n_val: int | None = None) -> dict[str, list[MethodResult]]:
  """Fits each method to every curve; {method: [MethodResult per curve, in order]}.

  Our forms: `fit_many` per (method, domain) in `BATCHING` chunks; M4 outside the benchmark's domains fits
  y / `y_scale`. A curve with fewer fitting points than the form's parameters gets NaN errors for that form.
  "bnsl": n in 0..max_breaks chosen per curve by validation on its largest fitted x and stability
  (`breaks.select_breaks_many`), reusing this process's bnsl<n> fits of the same curves and settings.
  """
  methods = check_methods(methods)
  out: dict[str, list[MethodResult]] = {}
  domains = sorted({c.domain for c in curves})
  for method in methods:
    results: list[MethodResult | None] = [None] * len(curves)
    for domain in domains:
      idx = [i for i, c in enumerate(curves) if c.domain == domain]
      sub = [curves[i] for i in idx]
      if method in REFERENCE:
        from scaling.fit import reference  # pylint: disable=g-import-not-at-top
        for i, c in zip(idx, sub):
          r = reference.fit_reference(method[4:], c.x_fit, c.y_fit, domain=domain)
          results[i] = _score(method, c, r.predict, r.params)
      elif method == "bnsl":
        kw = dict(objective=objective, n_starts=n_starts, top_k=top_k, key=key)
        given = {n: _MEMO[k] for n in range(max_breaks + 1) if (k := _memo_key(f"bnsl{n}", sub, kw)) in _MEMO}
        sel = breaks.select_breaks_many([c.x_fit for c in sub], [c.y_fit for c in sub], max_breaks=max_breaks,
                                        n_val=n_val, batching=BATCHING, fits=given, **kw)
        for i, c, s in zip(idx, sub, sel):
          results[i] = _score(method, c, s.fit.predict, s.fit.natural, n_breaks=s.n, val_rmsle=s.val_rmsle)
      else:
        form = _form(method, domain)
        scale = [y_scale(method, c) for c in sub]
        ok = [len(c.y_fit) >= form.n_params for c in sub]
        xs, ys = [c.x_fit for c, o in zip(sub, ok) if o], [c.y_fit / k for c, k, o in zip(sub, scale, ok) if o]
        fits = fitter.fit_many(form, *fitter.pad_curves(xs, ys), objective=objective, n_starts=n_starts,
                               top_k=top_k, key=key, batching=BATCHING) if xs else []
        if method.startswith("bnsl") and all(ok):
          _remember(_memo_key(method, sub, dict(objective=objective, n_starts=n_starts, top_k=top_k, key=key)), fits)
        fits = iter(fits)
        for i, c, k, o in zip(idx, sub, scale, ok):
          r = next(fits) if o else None
          results[i] = (_score(method, c, lambda x, r=r, k=k: k * r.predict(x), {**r.natural, "y_scale": k})
                        if r is not None and r.ok else _score(method, c, lambda x: np.full(np.shape(x), np.nan), {}))
    out[method] = results  # type: ignore[assignment]
  return out


def _memo_key(method: str, curves: Sequence[Curve], kw: dict) -> tuple:
  data = tuple((c.name, c.x_fit.tobytes(), c.y_fit.tobytes()) for c in curves)
  return (method, tuple(sorted(kw.items())), data)


def _remember(k: tuple, fits: list) -> None:
  if len(_MEMO) >= 16:
    _MEMO.pop(next(iter(_MEMO)))
  _MEMO[k] = fits


# --------------------------------------------------------------------------- tables


def errors_matrix(results: dict[str, list[MethodResult]], methods: Sequence[str]) -> np.ndarray:
  """Held-out RMSLE [method, curve] (NaN where a method failed)."""
  return np.array([[r.rmsle_test for r in results[m]] for m in methods], np.float64)


def domain_table(curves: Sequence[Curve], results: dict[str, list[MethodResult]], methods: Sequence[str],
                 compare: Sequence[str]) -> list[dict]:
  """Per domain and method: curves, mean held-out RMSLE ± its standard error over curves, median, mean root
  standard log error, failures, and the win rate among `compare` (3-decimal truncation, split ties, NaN = 1)."""
  rows = []
  for domain in sorted({c.domain for c in curves}):
    idx = [i for i, c in enumerate(curves) if c.domain == domain]
    sub = {m: [results[m][i] for i in idx] for m in methods}
    cmp = [m for m in compare if m in methods]
    wins = dict(zip(cmp, metrics.win_rates(errors_matrix(sub, cmp)))) if cmp else {}
    for m in methods:
      e = np.array([r.rmsle_test for r in sub[m]])
      se = np.array([r.stderr_test for r in sub[m]])
      good = np.isfinite(e)
      n = int(good.sum())
      rows.append({"domain": domain, "method": m, "curves": len(idx), "failed": len(idx) - n,
                   "mean_rmsle": float(e[good].mean()) if n else math.nan,
                   "se_rmsle": float(e[good].std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan,
                   "median_rmsle": float(np.median(e[good])) if n else math.nan,
                   "mean_stderr": float(np.nanmean(se)) if n else math.nan,
                   "win_rate": float(wins[m]) if m in wins else math.nan})
  return rows


def format_domain_table(rows: list[dict], compare: Sequence[str]) -> str:
  """Markdown, one block per domain."""
  out = []
  for domain in dict.fromkeys(r["domain"] for r in rows):
    rs = [r for r in rows if r["domain"] == domain]
    out += [f"### {domain} ({rs[0]['curves']} curves): held-out RMSLE", "",
            f"| method | mean ± se | median | mean root std. log err | failed | wins among {', '.join(compare)} |",
            "|---|---|---|---|---|---|"]
    for r in rs:
      win = "" if math.isnan(r["win_rate"]) else f"{100 * r['win_rate']:.1f} %"
      se = "" if math.isnan(r["se_rmsle"]) else f" ± {r['se_rmsle']:.4f}"
      out.append(f"| {r['method']} | {r['mean_rmsle']:.4f}{se} | {r['median_rmsle']:.4f} | {r['mean_stderr']:.4f} "
                 f"| {r['failed']} | {win} |")
    out.append("")
  return "\n".join(out)


def format_curve_table(curves: Sequence[Curve], results: dict[str, list[MethodResult]], methods: Sequence[str],
                       domain: str) -> str:
  """Markdown: held-out RMSLE of every method on every curve of `domain` (best per row in bold)."""
  idx = [i for i, c in enumerate(curves) if c.domain == domain]
  lines = ["| task / model | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
  for i in idx:
    e = np.array([results[m][i].rmsle_test for m in methods])
    best = np.nanmin(e) if np.any(np.isfinite(e)) else math.nan
    cells = [("**%.4f**" if v == best else "%.4f") % v if np.isfinite(v) else "nan" for v in e]
    lines.append(f"| {curves[i].task} / {curves[i].model} | " + " | ".join(cells) + " |")
  mean = [np.nanmean([results[m][i].rmsle_test for i in idx]) for m in methods]
  lines.append("| mean | " + " | ".join(f"{v:.4f}" for v in mean) + " |")
  return "\n".join(lines)


# --------------------------------------------------------------------------- figures


def plot_curve(curve: Curve, results: dict[str, MethodResult], path_stem: str) -> list[str]:
  """Log-log: fitted points (black), held-out points (green), each method's fit as a line; PNG (+ nothing else)."""
  from scaling import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
  plt = plotting.plt
  fig, ax = plt.subplots(figsize=(5.2, 3.8))
  ax.loglog(curve.x_fit, curve.y_fit, "o", color="k", ms=3.5, label="fitted", zorder=3)
  if len(curve.x_test):
    ax.loglog(curve.x_test, curve.y_test, "o", color="tab:green", ms=3.5, label="held out", zorder=3)
  grid = curve.grid()
  for m, r in results.items():
    if np.all(np.isfinite(r.pred_grid)) and np.all(r.pred_grid > 0):
      lab = f"{m}{'' if r.n_breaks is None else f' (n={r.n_breaks})'}: {r.rmsle_test:.4f}"
      ax.loglog(grid, r.pred_grid, "-", lw=1.2, label=lab)
  ax.set_xlabel("x")
  ax.set_ylabel("y")
  ax.set_title(curve.name, fontsize=8)
  ax.legend(fontsize=6, title="held-out RMSLE", title_fontsize=6)
  plotting.tidy_log_axes(fig)
  paths = plotting.save(fig, [path_stem + ".png"])
  plt.close(fig)
  return paths
