"""`python -m launch.fit --config=configs/fit_sweep.py:csv --config.source.path=FILE`: fit a user's table.

The table (CSV or JSON lines) is read by :mod:`scaling.fit.table` (columns, groups, filters, held-out rule; see its
docstring). With one x column each group is a curve: every form of `config.methods` is fitted to its fitting
points (`scaling.fit.benchmark.fit_methods`, objective `fit.objective`), scored by RMSLE on its held-out points, and
bootstrapped (`fit.n_boot` case resamples: parameter intervals and a prediction band). With two x columns (N, D),
or N and a compute column (D = C / (k N)), each group gets Chinchilla's L(N, D) fits and the compute-optimal
frontier (:mod:`scaling.fit.table_2d`).

The workdir holds `config.json` (with the table's absolute path and sha256: a re-run on changed data is refused,
naming the file, before anything is read from or written to the workdir), `results/<method>.json` (skipped when
present on a re-run), `summary.json`, `summary.md` (the printed tables) and `figures/`. Every check of the config
and of the table runs before the workdir is created.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from scaling.engine import config as C
from scaling.engine import io
from scaling.engine import launch
from scaling.fit import benchmark as bm
from scaling.fit import experiment
from scaling.fit import fitter
from scaling.fit import forms as forms_lib
from scaling.fit import objectives
from scaling.fit import table as table_lib
from scaling.fit import table_2d

DOMAIN = "csv"


def csv_config() -> ml_collections.ConfigDict:
  """Defaults: x column N, y column loss, no groups, the largest fifth of x held out; M1-M4 and BNSL (n <= 1, and n
  chosen by validation); 200 bootstrap resamples; 2-D: Huber on log (delta 1e-3) and MSE on log, the frontier at
  fit2d.C (empty: 5 values log-spaced over each group's fitting compute range)."""
  c = ml_collections.ConfigDict()
  c.source = ml_collections.ConfigDict(dict(
      kind="csv", path="", x=("N",), y="loss", compute="", k=6.0, group=(), isoflop="", drop="", drop_lines=(),
      x_min=0.0, x_max=0.0, holdout="largest", n_test=0, test_column=""))
  c.methods = ("m1", "m2", "m3", "m4", "bnsl0", "bnsl1", "bnsl")
  c.fit = ml_collections.ConfigDict(dict(objective="msle_log1p", n_starts=2048, top_k=16, key=0, max_breaks=1,
                                         n_val=0, n_boot=200, level=0.95))
  c.fit2d = ml_collections.ConfigDict(dict(objectives=("huber_log", "mse_log"), delta=1e-3,
                                           C=()))
  c.figures = True
  return c


def _strings(v: Any, field: str, lo: int, hi: int) -> tuple[str, ...]:
  t = C.as_tuple(v)
  if not lo <= len(t) <= hi or not all(isinstance(s, str) and s for s in t) or len(set(t)) != len(t):
    raise ValueError(f"{field} must be {lo}..{hi} distinct non-empty column names, got {v!r}")
  return t


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The checked config as a plain dict; ValueError naming the field on anything wrong (reads and writes nothing)."""
  cfg = C.checked_dict(config, csv_config())
  src, f, f2 = cfg["source"], cfg["fit"], cfg["fit2d"]
  if src["kind"] != "csv":
    raise ValueError(f"source.kind must be 'csv' for a table, got {src['kind']!r}")
  if not isinstance(src["path"], str) or not src["path"]:
    raise ValueError("source.path must name the table: a CSV file or JSON lines (.jsonl)")
  src["x"] = list(_strings(src["x"], "source.x", 1, 2))
  src["group"] = list(_strings(src["group"], "source.group", 0, 8))
  for field in ("y", "compute", "isoflop", "drop", "test_column"):
    if not isinstance(src[field], str):
      raise ValueError(f"source.{field} must be a string, got {src[field]!r}")
  if not src["y"]:
    raise ValueError("source.y must name the column of the loss (or error) to fit")
  if src["compute"] and len(src["x"]) != 1:
    raise ValueError(f"source.compute gives D = C / (k N): use it with one x column (N), got source.x={src['x']}")
  C.number(cfg, "source.k", 0, lo_open=True)
  src["drop_lines"] = list(C.as_tuple(src["drop_lines"]))
  if not all(C.is_int(v) and v >= 1 for v in src["drop_lines"]):
    raise ValueError(f"source.drop_lines must be file line numbers >= 1, got {src['drop_lines']}")
  lo, hi = C.number(cfg, "source.x_min", 0), C.number(cfg, "source.x_max", 0)
  if hi and hi <= lo:
    raise ValueError(f"source.x_max ({hi}) must exceed source.x_min ({lo}) (or be 0: no upper bound)")
  C.choice(cfg, "source.holdout", table_lib.HOLDOUTS)
  C.integer(cfg, "source.n_test", 0)
  if src["n_test"] and src["holdout"] != "largest":
    raise ValueError(f"source.n_test ({src['n_test']}) counts the largest x held out: it needs "
                     f"source.holdout='largest', got {src['holdout']!r}")
  if (src["holdout"] == "column") != bool(src["test_column"]):
    raise ValueError("source.test_column names the held-out column exactly when source.holdout='column' (got "
                     f"holdout={src['holdout']!r}, test_column={src['test_column']!r})")
  two_d = len(src["x"]) == 2 or bool(src["compute"])
  if src["isoflop"] and not two_d:
    raise ValueError("source.isoflop marks compute groups of 2-D data: give two x columns (N, D) or source.compute")
  cfg["methods"] = list(bm.check_methods(C.as_tuple(cfg["methods"])))
  if any(m in bm.REFERENCE for m in cfg["methods"]):
    raise ValueError("the ref_m* estimators need a benchmark domain's settings; use m1..m4 on a table")
  objectives.get(f["objective"])
  C.integer(cfg, "fit.n_starts", 1)
  C.integer(cfg, "fit.top_k", 1, f["n_starts"])
  C.integer(cfg, "fit.max_breaks", 0, 3)
  C.integer(cfg, "fit.n_val", 0)
  C.integer(cfg, "fit.key", 0)
  C.integer(cfg, "fit.n_boot", 0)
  C.number(cfg, "fit.level", 0, 1, lo_open=True, hi_open=True)
  # percentile intervals need >= 2 / (1 - level) resamples, else they are (nearly) the min and max of the resamples
  # (rounded: 2 / (1 - 0.95) is 40.00000000000004 in float64)
  min_boot = math.ceil(round(2 / (1 - f["level"]), 9))
  if 0 < f["n_boot"] < min_boot:
    raise ValueError(f"fit.n_boot must be 0 (no intervals) or >= 2 / (1 - fit.level) = {min_boot} (the "
                     f"{100 * f['level']:g} % percentiles of fewer resamples are their min and max), got {f['n_boot']}")
  f2["objectives"] = list(_strings(f2["objectives"], "fit2d.objectives", 1, 2))
  if set(f2["objectives"]) - set(table_2d.OBJECTIVES):
    raise ValueError(f"fit2d.objectives must be among {table_2d.OBJECTIVES}, got {f2['objectives']}")
  C.number(cfg, "fit2d.delta", 0, lo_open=True)
  f2["C"] = list(C.axis(cfg, "fit2d.C", lo=0, lo_open=True)) if C.as_tuple(f2["C"]) else []  # []: the data's range
  return cfg


def resolve_data(cfg: dict[str, Any]) -> dict[str, Any]:
  """`cfg` with the table's absolute path, and `data` = {"table": {path, sha256}}. Reads only."""
  cfg = json.loads(json.dumps(cfg))
  path = cfg["source"]["path"] = os.path.abspath(cfg["source"]["path"])
  cfg["data"] = {"table": {"path": path, "sha256": experiment.sha256(path)}}
  return cfg


def need_points(cfg: dict[str, Any], two_d: bool) -> dict[str, int]:
  """Fitting points each method needs per group: its parameters ("bnsl": 3 + its validation points)."""
  if two_d:
    return {"chinchilla": forms_lib.chinchilla().n_params}
  return {m: (3 + (cfg["fit"]["n_val"] or 2) if m == "bnsl" else forms_lib.FORMS[m]().n_params)
          for m in cfg["methods"]}


@launch.host_driven
def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str) -> tuple[table_lib.Dataset, dict, str]:
  """Fits (or resumes) the table in `config.source`; writes results, figures, `summary.json` and `summary.md`;
  returns (the dataset, the summary dict, the summary text)."""
  cfg = resolve_data(plan(config))  # a missing file fails here, before anything is written
  workdir = os.path.abspath(workdir)
  experiment.check_data(workdir, cfg)
  resumed = io.check_config(workdir, cfg)
  data = table_lib.load(cfg["source"])  # every check of the table, before anything is written
  table_lib.check_counts(data, need_points(cfg, data.two_d))
  if data.two_d:
    table_2d.check_identifiable(data)
  if experiment.sha256(data.path) != cfg["data"]["table"]["sha256"]:
    raise ValueError(f"data file {data.path} changed while it was being read; run again")
  os.makedirs(os.path.join(workdir, "results"), exist_ok=True)
  if not resumed:
    io.write_config(workdir, cfg)
  if data.two_d:
    out = table_2d.fit_groups(data, cfg, os.path.join(workdir, "results"))
  else:
    out = fit_curves(data, cfg, os.path.join(workdir, "results"))
  summary = {"file": data.path, "sha256": cfg["data"]["table"]["sha256"], "mode": "2d" if data.two_d else "1d",
             "x": list(data.x_names), "y": data.y_name, "compute": cfg["source"]["compute"] or None,
             "k": cfg["source"]["k"],
             "groups": [{"group": g.label, "points": len(g.y), "fit": g.n_fit, "held_out": int(g.test.sum()),
                         "lines_held_out": [int(l) for l in g.lines[g.test]]} for g in data.groups], **out}
  summary = _finite(summary)
  io.save_text(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=1, allow_nan=False))
  text = (table_2d.summary_text if data.two_d else summary_text)(summary, cfg)
  io.save_text(os.path.join(workdir, "summary.md"), text)
  if cfg["figures"]:
    (table_2d.plot_groups if data.two_d else plot_curves)(data, summary, os.path.join(workdir, "figures"))
  return data, summary, text


def _finite(v: Any) -> Any:
  """A copy of a JSON-like value with every non-finite float replaced by None (standard JSON has no NaN)."""
  if isinstance(v, dict):
    return {k: _finite(u) for k, u in v.items()}
  if isinstance(v, (list, tuple)):
    return [_finite(u) for u in v]
  return None if isinstance(v, float) and not math.isfinite(v) else v


# --------------------------------------------------------------------------- 1-D: forms per curve


def curves(data: table_lib.Dataset) -> list[bm.Curve]:
  """One benchmark-style curve per group (fitting and held-out points, sorted by x)."""
  return [bm.Curve(DOMAIN, f"{data.y_name}_vs_{data.x_names[0]}", g.label, g.x[~g.test], g.y[~g.test],
                   g.x[g.test], g.y[g.test]) for g in data.groups]


def bootstrap_one(method: str, curve: bm.Curve, r: bm.MethodResult, f: dict[str, Any]) -> dict[str, Any] | None:
  """Percentile intervals of one fitted form's parameters and of its predictions on `curve.grid()`: case
  resampling of the fitting points, warm-started from the fit. None when `fit.n_boot` is 0; {"skipped": reason}
  when the fit failed, its parameters lie on a bound, or no resample gave a finite fit."""
  if f["n_boot"] == 0:
    return None
  if not r.params or not np.isfinite(r.rmsle_fit):
    return {"skipped": "the fit failed"}
  form = forms_lib.bnsl(r.n_breaks) if method == "bnsl" else forms_lib.FORMS[method]()
  scale = r.params.get("y_scale", 1.0)
  try:  # natural -> unconstrained fails where a parameter sits at its bound (M4's a rounded to e0)
    theta = form.unconstrained(r.params)
  except (ValueError, OverflowError):
    theta = np.full(form.n_params, np.nan)
  if not np.all(np.isfinite(theta)):
    logging.warning("bootstrap of %s on %s skipped: its parameters %s lie on a bound", method, curve.name, r.params)
    return {"skipped": "the fitted parameters lie on a bound of the form"}
  base = fitter.FitResult(form, f["objective"], theta, {}, math.nan, 1, theta[None], np.zeros(1))
  try:
    b = fitter.bootstrap(form, curve.x_fit, curve.y_fit / scale, n_boot=f["n_boot"], key=f["key"],
                         x_eval=curve.grid(), level=f["level"], objective=f["objective"], base=base)
  except IndexError:  # the percentiles of no valid resample (fitter.bootstrap keeps the finite refits only)
    logging.warning("bootstrap of %s on %s skipped: no resample gave a finite fit", method, curve.name)
    return {"skipped": f"none of {f['n_boot']} resamples gave a finite fit"}
  return {"level": b.level, "n_valid": b.n_valid, "lo": b.natural_lo, "hi": b.natural_hi,
          "pred_lo": (scale * b.pred_lo).tolist(), "pred_hi": (scale * b.pred_hi).tolist()}


def fit_curves(data: table_lib.Dataset, cfg: dict[str, Any], results_dir: str) -> dict[str, Any]:
  """Every method on every curve, with bootstrap intervals; `results_dir/<method>.json` loaded when present."""
  cs, f = curves(data), cfg["fit"]
  kw = dict(objective=f["objective"], n_starts=f["n_starts"], top_k=f["top_k"], key=f["key"],
            max_breaks=f["max_breaks"], n_val=f["n_val"] or None)
  fits, seconds = [], {}
  for m in cfg["methods"]:
    def compute(m=m):
      rs = bm.fit_methods(cs, [m], **kw)[m]
      return {"results": [r.to_json() for r in rs], "bootstrap": [bootstrap_one(m, c, r, f) for c, r in zip(cs, rs)]}

    stored = experiment.stored(os.path.join(results_dir, f"{m}.json"), compute, f"{m} ({len(cs)} curves)")
    seconds[m] = stored["seconds"]
    for c, r, boot in zip(cs, stored["results"], stored["bootstrap"]):
      b = boot if boot and "skipped" not in boot else None
      params = {k: {"value": v, "lo": b["lo"].get(k) if b else None, "hi": b["hi"].get(k) if b else None}
                for k, v in r["params"].items() if not (k == "y_scale" and v == 1.0)}  # y_scale: M4 only
      fits.append({"group": c.model, "method": m, "n_breaks": r["n_breaks"], "rmsle_fit": r["rmsle_fit"],
                   "rmsle_test": r["rmsle_test"], "params": params, "grid": c.grid().tolist(),
                   "pred_grid": r["pred_grid"], "band_lo": b["pred_lo"] if b else None,
                   "band_hi": b["pred_hi"] if b else None, "n_boot_valid": b["n_valid"] if b else 0,
                   **({"bootstrap": {"skipped": boot["skipped"]}} if boot and "skipped" in boot else {})})
  best = {}
  for g in data.groups:
    errs = {d["method"]: d["rmsle_test"] for d in fits if d["group"] == g.label and np.isfinite(d["rmsle_test"])}
    best[g.label] = min(errs, key=errs.get) if errs else None
  return {"fits": fits, "best": best, "seconds": seconds}


def _num(v: float | None) -> str:
  return "nan" if v is None or not np.isfinite(v) else f"{v:.4g}"


def summary_text(s: dict[str, Any], cfg: dict[str, Any]) -> str:
  """Held-out RMSLE per group and method, then every fit's parameters with bootstrap intervals (markdown)."""
  f, methods = cfg["fit"], cfg["methods"]
  n = sum(g["points"] for g in s["groups"])
  lines = [f"# {s['y']} vs {s['x'][0]}: {os.path.basename(s['file'])} (sha256 {s['sha256'][:12]}), "
           f"{len(s['groups'])} group(s), {n} points, {sum(g['held_out'] for g in s['groups'])} held out",
           "", f"objective {f['objective']}, {f['n_starts']} starts / top {f['top_k']}; bootstrap: {f['n_boot']} "
           f"resamples, {100 * f['level']:g} % intervals", "", "### Held-out RMSLE (best per group in bold)", "",
           "| group | fit + held out | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
  for g in s["groups"]:
    cells = []
    for m in methods:
      d = next(d for d in s["fits"] if d["group"] == g["group"] and d["method"] == m)
      v = _num(d["rmsle_test"])
      cells.append(f"**{v}**" if s["best"][g["group"]] == m else v)
    lines.append(f"| {g['group']} | {g['fit']} + {g['held_out']} | " + " | ".join(cells) + " |")
  lines += ["", f"### Parameters ({100 * f['level']:g} % bootstrap interval)", "",
            "| group | method | RMSLE fit | parameters |", "|---|---|---|---|"]
  for d in s["fits"]:
    ps = "; ".join(f"{k} = {_num(p['value'])}" + (f" [{_num(p['lo'])}, {_num(p['hi'])}]" if p["lo"] is not None
                                                  else "") for k, p in d["params"].items())
    name = d["method"] + (f" (n={d['n_breaks']})" if d["n_breaks"] is not None else "")
    skipped = f" (bootstrap skipped: {d['bootstrap']['skipped']})" if "bootstrap" in d else ""
    lines.append(f"| {d['group']} | {name} | {_num(d['rmsle_fit'])} | {ps or 'fit failed'}{skipped} |")
  lines += ["", "Fit + bootstrap wall time (s): " + ", ".join(f"{m} {t:.1f}" for m, t in s["seconds"].items())]
  return "\n".join(lines) + "\n"


def plot_curves(data: table_lib.Dataset, s: dict[str, Any], folder: str) -> list[str]:
  """figures/<group>.png: fitting (black) and held-out (green) points, each form's fit and bootstrap band."""
  from scaling import plotting  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
  paths = []
  for g, c in zip(data.groups, curves(data)):
    fig, ax = plotting.plt.subplots(figsize=(5.6, 4.0))
    ax.loglog(c.x_fit, c.y_fit, "o", color="k", ms=3.5, label="fitted", zorder=3)
    if len(c.x_test):
      ax.loglog(c.x_test, c.y_test, "o", color="tab:green", ms=3.5, label="held out", zorder=3)
    for i, d in enumerate(d for d in s["fits"] if d["group"] == g.label):
      pred, color = np.asarray(d["pred_grid"], np.float64), f"C{i % 10}"
      if not (np.all(np.isfinite(pred)) and np.all(pred > 0)):
        continue
      ax.loglog(d["grid"], pred, "-", lw=1.2, color=color, label=f"{d['method']}: {_num(d['rmsle_test'])}")
      if d["band_lo"] is not None:
        ax.fill_between(d["grid"], d["band_lo"], d["band_hi"], color=color, alpha=0.12, lw=0)
    ax.set(xlabel=data.x_names[0], ylabel=data.y_name, title=f"{g.label} ({os.path.basename(data.path)})")
    ax.legend(fontsize=6, title="held-out RMSLE", title_fontsize=6)
    paths += plotting.save(fig, [os.path.join(folder, c.slug + ".png")])
  return paths
