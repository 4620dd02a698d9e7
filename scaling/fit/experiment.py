"""`python -m launch.fit`: fit scaling-law forms to benchmark curves or to our own sweeps, in a workdir.

Sources (`config.source.kind`):
- "benchmark": Alabdulmohsin et al.'s CSVs (`source.lang`, `source.vision`; "" = found by
  :func:`scaling.fit.data.benchmark_csv`), domains from `source.domains` (IC, NMT, LM, BB).
- "sweep": a `scaling.quanta.msp` workdir (`source.workdir`), loss vs `source.axis`: "n" (parameters; final loss, seed
  mean), "d" (dataset size; min loss over steps, seed mean) or "steps" (seed-mean loss at every logged step > 0),
  one curve per combination of the other swept values.
- "addition": a `scaling.bnsl.addition` workdir, seed-mean `source.metric` (min_test_ce or final_test_ce) vs train size.
For the last two the `source.n_test` largest x are held out (0: a fifth of the points, at least 1).

The workdir holds `config.json`, `results/<domain>__<method>.json` (one per fitted (domain, method); re-running
the command skips those present), `summary.md` (the tables) and `figures/<domain>/<curve>.png`.

The stored config holds the resolved absolute path and the sha256 of every data file read (`data`: the benchmark
CSVs, or the source workdir's curves.npz); a re-run whose data changed is refused, naming the file, before anything
is loaded from or written to the workdir, so results fitted on old data are never reported for new data.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from typing import Any, Callable

import ml_collections
import numpy as np
from absl import logging

from scaling.engine import io
from scaling.engine.config import as_tuple, checked_dict
from scaling.fit import benchmark as bm
from scaling.fit import data as data_lib
from scaling.fit import objectives
from scaling.engine import launch

KINDS = ("benchmark", "sweep", "addition")
AXES = ("n", "d", "steps")
DOMAINS = {"lang": ("NMT", "LM", "BB"), "vision": ("IC",)}


def fit_config() -> ml_collections.ConfigDict:
  """Defaults: the full benchmark, every form, the paper's objective (MSLE of log(y + 1))."""
  c = ml_collections.ConfigDict()
  c.source = ml_collections.ConfigDict(dict(kind="benchmark", lang="", vision="", domains=("IC", "NMT", "LM", "BB"),
                                            workdir="", axis="n", n_test=0, metric="min_test_ce"))
  c.methods = ("m1", "m2", "m3", "m4", "bnsl0", "bnsl1", "bnsl2", "bnsl", "ref_m1", "ref_m2", "ref_m3", "ref_m4")
  c.compare = ("ref_m1", "ref_m2", "ref_m3", "ref_m4", "bnsl1")  # the BNSL paper's comparison: its fit vs M1-M4
  c.fit = ml_collections.ConfigDict(dict(objective="msle_log1p", n_starts=2048, top_k=16, key=0, max_breaks=2,
                                         n_val=0))
  c.figures = True
  return c


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The checked config as a plain dict; ValueError on anything wrong (before any file is read or written)."""
  cfg = checked_dict(config, fit_config())
  src, f = cfg["source"], cfg["fit"]
  if src["kind"] not in KINDS:
    raise ValueError(f"source.kind must be one of {KINDS}, got {src['kind']!r}")
  src["domains"] = as_tuple(src["domains"])
  if src["kind"] == "benchmark":
    bad = set(src["domains"]) - set(DOMAINS["lang"] + DOMAINS["vision"])
    if bad or not src["domains"]:
      raise ValueError(f"source.domains must be among IC, NMT, LM, BB; got {src['domains']}")
  else:
    if not src["workdir"]:
      raise ValueError(f"source.kind={src['kind']!r} needs source.workdir (a workdir of that experiment)")
    if src["kind"] == "sweep" and src["axis"] not in AXES:
      raise ValueError(f"source.axis must be one of {AXES}, got {src['axis']!r}")
    if src["kind"] == "addition" and src["metric"] not in ("min_test_ce", "final_test_ce"):
      raise ValueError(f"source.metric must be min_test_ce or final_test_ce, got {src['metric']!r}")
    if not isinstance(src["n_test"], int) or src["n_test"] < 0:
      raise ValueError(f"source.n_test must be an int >= 0, got {src['n_test']!r}")
  cfg["methods"] = list(bm.check_methods(as_tuple(cfg["methods"])))
  cfg["compare"] = list(as_tuple(cfg["compare"]))
  if set(cfg["compare"]) - set(cfg["methods"]):
    raise ValueError(f"compare {cfg['compare']} must be a subset of methods {cfg['methods']}")
  if src["kind"] != "benchmark" and any(m.startswith("ref_") for m in cfg["methods"]):
    raise ValueError("the ref_m* estimators need a benchmark domain's settings; use m1..m4 on sweep workdirs")
  objectives.get(f["objective"])
  if not (isinstance(f["n_starts"], int) and isinstance(f["top_k"], int) and 1 <= f["top_k"] <= f["n_starts"]):
    raise ValueError(f"need ints 1 <= fit.top_k <= fit.n_starts, got {f['top_k']}, {f['n_starts']}")
  if not 0 <= f["max_breaks"] <= 3 or f["n_val"] < 0:
    raise ValueError(f"fit.max_breaks must be in 0..3 and fit.n_val >= 0, got {f['max_breaks']}, {f['n_val']}")
  return cfg


def _n_test(n: int, n_test: int) -> int:
  return n_test if n_test else max(1, n // 5)


def sweep_curves(workdir: str, axis: str, n_test: int = 0) -> list[bm.Curve]:
  """Loss-vs-`axis` curves of a sweep workdir (see the module docstring); domain "sweep"."""
  c = io.load_workdir(workdir)
  loss = c["test_loss"]  # [width, D, seed, alpha, lr, weight_decay, log_step], nats
  names = ("width", "D", "alpha", "lr", "weight_decay")
  out = []
  with np.errstate(all="ignore"), warnings.catch_warnings():
    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (points not run) are skipped
    if axis == "n":
      y = np.nanmean(loss[..., -1], axis=2)  # [width, D, alpha, lr, wd]
      x = c["params"].astype(np.float64)
      for idx in np.ndindex(y.shape[1:]):
        label = ",".join(f"{k}={c.coords[k][i]:g}" for k, i in zip(names[1:], idx))
        yy = y[(slice(None),) + idx]
        ok = np.isfinite(yy)
        if ok.sum() > 1:
          out.append(bm.split_curve("sweep", "loss_vs_N", label, x[ok], yy[ok], _n_test(int(ok.sum()), n_test)))
    elif axis == "d":
      y = np.nanmean(np.nanmin(loss, axis=-1), axis=2)  # [width, D, alpha, lr, wd]
      x = c.coords["D"].astype(np.float64)
      for idx in np.ndindex((y.shape[0],) + y.shape[2:]):
        label = ",".join(f"{k}={c.coords[k][i]:g}" for k, i in zip(names[:1] + names[2:], idx))
        yy = y[(idx[0], slice(None)) + idx[1:]]
        ok = np.isfinite(yy) & (x > 0)
        if ok.sum() > 1:
          out.append(bm.split_curve("sweep", "loss_vs_D", label, x[ok], yy[ok], _n_test(int(ok.sum()), n_test)))
    else:
      y = np.nanmean(loss, axis=2)  # [width, D, alpha, lr, wd, log_step]
      x = c.coords["log_step"].astype(np.float64)
      for idx in np.ndindex(y.shape[:-1]):
        label = ",".join(f"{k}={c.coords[k][i]:g}" for k, i in zip(names, idx))
        yy = y[idx]
        ok = np.isfinite(yy) & (x > 0)
        if ok.sum() > 1:
          out.append(bm.split_curve("sweep", "loss_vs_steps", label, x[ok], yy[ok], _n_test(int(ok.sum()), n_test)))
  if not out:
    raise ValueError(f"{workdir}: no curve with >= 2 finite points along axis {axis!r}")
  return out


def addition_curves(workdir: str, metric: str = "min_test_ce", n_test: int = 0) -> list[bm.Curve]:
  """The seed-mean `metric` vs training-set size of an addition workdir; domain "addition"."""
  from scaling.bnsl import addition  # pylint: disable=g-import-not-at-top  (imports the transformer)
  s = addition.summary(io.load_workdir(workdir))
  x, y = np.asarray(s["train_size"], np.float64), np.asarray(s[metric], np.float64)
  ok = np.isfinite(y)
  return [bm.split_curve("addition", metric, "4-digit", x[ok], y[ok], _n_test(int(ok.sum()), n_test))]


def resolve_data(cfg: dict[str, Any]) -> dict[str, Any]:
  """`cfg` with absolute data paths in `source` and `data` = {role: {path, sha256}} of each file `load_curves`
  reads (roles: "lang" / "vision" for the benchmark CSVs, "curves" for a source workdir). Reads only."""
  cfg = json.loads(json.dumps(cfg))  # a copy
  src = cfg["source"]
  paths = {}
  if src["kind"] == "benchmark":
    for name, domains in DOMAINS.items():
      if any(d in domains for d in src["domains"]):
        src[name] = paths[name] = os.path.abspath(src[name] or data_lib.benchmark_csv(name))
  else:
    src["workdir"] = os.path.abspath(src["workdir"])
    paths["curves"] = os.path.join(src["workdir"], io.CURVES)
  cfg["data"] = {role: {"path": path, "sha256": sha256(path)} for role, path in paths.items()}
  return cfg


def sha256(path: str) -> str:
  """Hex sha256 of a file's bytes; FileNotFoundError naming it if it is missing."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"data file {path} does not exist")
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def check_data(workdir: str, cfg: dict[str, Any]) -> None:
  """Raises ValueError naming each data file whose sha256 differs from the one stored in `workdir/config.json`
  (the fits there were made on other data). Writes nothing; a workdir without a config passes."""
  path = os.path.join(workdir, io.CONFIG)
  if not os.path.exists(path):
    return
  try:
    with open(path) as f:
      stored = json.load(f).get("data") or {}
  except (json.JSONDecodeError, AttributeError):
    return  # io.check_config reports a foreign config.json
  changed = [f"{new['path']} (sha256 {stored[role]['sha256'][:12]}... -> {new['sha256'][:12]}...)"
             for role, new in cfg["data"].items()
             if isinstance(stored.get(role), dict) and stored[role].get("path") == new["path"]
             and stored[role].get("sha256") != new["sha256"]]
  if changed:
    raise ValueError(f"the data changed since workdir {workdir} was fitted: {'; '.join(changed)}. Its results are "
                     "for the old data; fit into a new workdir (or restore the file)")


def load_curves(cfg: dict[str, Any]) -> list[bm.Curve]:
  src = cfg["source"]
  if src["kind"] == "sweep":
    return sweep_curves(src["workdir"], src["axis"], src["n_test"])
  if src["kind"] == "addition":
    return addition_curves(src["workdir"], src["metric"], src["n_test"])
  curves = []
  for name, domains in DOMAINS.items():
    for d in (d for d in src["domains"] if d in domains):
      curves += bm.benchmark_curves(src[name] or data_lib.benchmark_csv(name), d)
  return curves


@launch.host_driven
def stored(path: str, compute: Callable[[], dict[str, Any]], what: str) -> dict[str, Any]:
  """The JSON an earlier run wrote at `path` (a resumed fit), else `{"seconds": ..., "cpu_seconds": ...,
  **compute()}`, timed (wall, and CPU of this process: user + system, all threads) and written there."""
  if os.path.exists(path):
    with open(path) as fh:
      out = json.load(fh)
    logging.info("fit: %s loaded from %s", what, path)
    return out
  t0, c0 = time.perf_counter(), time.process_time()
  payload = compute()
  out = {"seconds": time.perf_counter() - t0, "cpu_seconds": time.process_time() - c0, **payload}
  io.save_text(path, json.dumps(out))
  logging.info("fit: %s in %.1f s (%.1f CPU-s)", what, out["seconds"], out["cpu_seconds"])
  return out


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str) -> tuple[list[bm.Curve], dict, str]:
  """Fits (or resumes) every method on every curve; writes results, `summary.md` and figures; returns
  (curves, {method: [MethodResult per curve]}, the summary text)."""
  cfg = resolve_data(plan(config))  # reads only: missing files fail here, before anything is written
  workdir = os.path.abspath(workdir)
  check_data(workdir, cfg)
  resumed = io.check_config(workdir, cfg)  # the data hashes are part of the config compared
  curves = load_curves(cfg)  # reads only: bad files fail here, before anything is written
  for role, d in cfg["data"].items():  # the bytes loaded are the bytes hashed
    if sha256(d["path"]) != d["sha256"]:
      raise ValueError(f"data file {d['path']} ({role}) changed while it was being read; run again")
  os.makedirs(os.path.join(workdir, "results"), exist_ok=True)
  if not resumed:
    io.write_config(workdir, cfg)
  f = cfg["fit"]
  kw = dict(objective=f["objective"], n_starts=f["n_starts"], top_k=f["top_k"], key=f["key"],
            max_breaks=f["max_breaks"], n_val=f["n_val"] or None)
  results: dict[str, list] = {m: [None] * len(curves) for m in cfg["methods"]}
  seconds: dict[tuple[str, str], tuple[float, float]] = {}
  for domain in dict.fromkeys(c.domain for c in curves):
    idx = [i for i, c in enumerate(curves) if c.domain == domain]
    for m in cfg["methods"]:
      out = stored(os.path.join(workdir, "results", f"{domain}__{m}.json"),
                   lambda: {"results": [r.to_json() for r in bm.fit_methods([curves[i] for i in idx], [m], **kw)[m]]},
                   f"{domain} / {m} ({len(idx)} curves)")
      seconds[(domain, m)] = (out["seconds"], out.get("cpu_seconds", math.nan))
      for i, d in zip(idx, out["results"]):
        results[m][i] = bm.MethodResult.from_json(d)
  text = summary(curves, results, cfg, seconds)
  io.save_text(os.path.join(workdir, "summary.md"), text)
  if cfg["figures"]:
    for i, c in enumerate(curves):
      d = os.path.join(workdir, "figures", c.domain)
      os.makedirs(d, exist_ok=True)
      bm.plot_curve(c, {m: results[m][i] for m in cfg["methods"] if m != "bnsl0"}, os.path.join(d, c.slug))
  return curves, results, text


def summary(curves: list[bm.Curve], results: dict, cfg: dict[str, Any],
            seconds: dict[tuple[str, str], tuple[float, float]]) -> str:
  """The per-domain tables, the per-curve tables of the small domains, and the fit times (wall, CPU)."""
  methods, compare = cfg["methods"], list(cfg["compare"])
  lines = [f"# Extrapolation RMSLE: {len(curves)} curves, objective {cfg['fit']['objective']}, "
           f"{cfg['fit']['n_starts']} starts / top {cfg['fit']['top_k']} polished", "",
           bm.format_domain_table(bm.domain_table(curves, results, methods, compare), compare)]
  for domain in dict.fromkeys(c.domain for c in curves):
    if sum(c.domain == domain for c in curves) <= 12:
      lines += [f"### {domain}: held-out RMSLE per curve", "", bm.format_curve_table(curves, results, methods, domain),
                ""]
    sel = [r.n_breaks for r, c in zip(results.get("bnsl", []), curves) if c.domain == domain]
    if sel:
      lines += [f"{domain}: BNSL breaks chosen by validation: " +
                ", ".join(f"n={n}: {sel.count(n)}" for n in sorted(set(sel))), ""]
  lines += ["### Fit time (s): wall / CPU (user + system of the process; nan: a result stored by an older version)", "",
            "| domain | " + " | ".join(methods) + " |", "|---" * (len(methods) + 1) + "|"]
  for domain in dict.fromkeys(c.domain for c in curves):
    lines.append(f"| {domain} | " + " | ".join("%.1f / %.1f" % seconds[(domain, m)] for m in methods) + " |")
  total = [sum(seconds[k][i] for k in seconds) for i in (0, 1)]
  lines += ["", f"Total fit time: {total[0]:.1f} s wall, {total[1]:.1f} CPU-s."]
  return "\n".join(lines) + "\n"
