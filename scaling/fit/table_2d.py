"""Chinchilla's L(N, D) and the compute-optimal frontier of a user's table, for `launch.fit`'s "csv" source.

Per group (see :mod:`scaling.fit.table`) and objective of `fit2d.objectives` ("huber_log": Huber_delta on log
residuals, Epoch AI's choice; "mse_log": squares of log residuals): `scaling.fit.chinchilla_fit.fit_chinchilla` on
the fitting points, scored by RMSLE on the held-out ones, `bootstrap_chinchilla` (`fit.n_boot` resamples) for
intervals of E, A, B, alpha, beta, the frontier exponents a = beta / (alpha + beta), b = alpha / (alpha + beta) and
N*(C), D*(C), tokens per parameter D*/N* at the compute values `fit2d.C` (default: 5 log-spaced over the group's
fitting runs; a value outside their compute range is marked "extrapolated"). Where the runs come in compute groups (a
compute column, or `source.isoflop`), Chinchilla's approach 2 -- a parabola of L against log N per group, a power
law through the minima (`scaling.fit.compute_optimal.isoflop_parabola`) -- is reported beside it for comparison.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from scaling.fit import chinchilla_fit as cf
from scaling.fit import experiment
from scaling.fit import metrics
from scaling.fit import table as table_lib
from scaling.fit.compute_optimal import isoflop_parabola

OBJECTIVES = cf.OBJECTIVES
FRONTIER = ("N_opt", "D_opt", "tokens_per_param")


def _iv(value: Any, lo: Any = None, hi: Any = None) -> dict[str, float | None]:
  f = lambda v: None if v is None else float(v)  # noqa: E731
  return {"value": f(value), "lo": f(lo), "hi": f(hi)}


def check_identifiable(data: table_lib.Dataset) -> None:
  """ValueError naming the file and group when a group's fitting points cannot identify L(N, D): fewer than 2
  distinct N or D, or log N and log D collinear (rank [1, log N, log D] < 3: e.g. every run at one N / D ratio)."""
  for g in data.groups:
    N, D = g.x[~g.test, 0], g.x[~g.test, 1]
    where = f"{data.path}: group {g.label}"
    for name, v in (("N", N), ("D", D)):
      if len(np.unique(v)) < 2:
        raise ValueError(f"{where}: its fitting points have {len(np.unique(v))} distinct {name} "
                         f"({data.x_names[0] if name == 'N' else 'D'}); L(N, D) needs >= 2 distinct N and D")
    X = np.stack([np.ones_like(N), np.log(N), np.log(D)], axis=1)
    if np.linalg.matrix_rank(X) < 3:
      raise ValueError(f"{where}: log N and log D of its fitting points lie on one line (rank [1, log N, log D] < 3, "
                       "e.g. one tokens-per-parameter ratio); L(N, D) cannot separate A / N^alpha from B / D^beta")


def frontier_C(g: table_lib.Group, cfg: dict[str, Any]) -> np.ndarray:
  """The compute values of the frontier: `fit2d.C`, or when empty 5 log-spaced over the group's fitting runs."""
  if cfg["fit2d"]["C"]:
    return np.asarray(cfg["fit2d"]["C"], np.float64)
  return np.geomspace(*np.percentile(g.compute[~g.test], [0, 100]), 5)


def _at(g: table_lib.Group, C: np.ndarray) -> list[dict[str, Any]]:
  """Per frontier compute value: C and whether it lies outside the fitting runs' compute range (extrapolated)."""
  lo, hi = np.percentile(g.compute[~g.test], [0, 100])
  return [{"C": float(c), "extrapolated": bool(c < lo * (1 - 1e-12) or c > hi * (1 + 1e-12))} for c in C]


def fit_one(g: table_lib.Group, objective: str, cfg: dict[str, Any]) -> dict[str, Any]:
  """One group, one objective: parameters, frontier at `fit2d.C` and a, b, each with its bootstrap interval."""
  f, f2, k = cfg["fit"], cfg["fit2d"], cfg["source"]["k"]
  N, D, L = g.x[~g.test, 0], g.x[~g.test, 1], g.y[~g.test]
  base = cf.fit_chinchilla(N, D, L, objective=objective, delta=f2["delta"])
  C = frontier_C(g, cfg)
  iv: dict[str, Any] = {}
  n_valid, skipped = 0, {}
  if f["n_boot"] >= 2 and base.converged:
    b = cf.bootstrap_chinchilla(N, D, L, n_boot=f["n_boot"], key=f["key"], level=f["level"], base=base,
                                objective=objective, delta=f2["delta"], k=k, C=C)
    iv, n_valid = (b.intervals, b.n_converged) if b.n_converged else ({}, 0)
    if not b.n_converged:
      skipped = {"bootstrap": {"skipped": f"none of {f['n_boot']} resampled refits converged"}}
  lohi = lambda name, i=None: (iv[name][0] if i is None else iv[name][0][i],  # noqa: E731
                               iv[name][1] if i is None else iv[name][1][i]) if name in iv else (None, None)
  front = base.frontier(C, k)
  test = g.test
  pred_test = base.predict(g.x[test, 0], g.x[test, 1])
  if not base.converged:  # its frontier would be read as a result: omitted
    return {"group": g.label, "objective": objective, "loss": base.loss, "converged": False,
            "rmsle_fit": metrics.rmsle(base.predict(N, D), L),
            "rmsle_test": metrics.rmsle(pred_test, g.y[test]) if test.any() else None,
            "params": {p: _iv(v) for p, v in base.params.items()}, "a": _iv(None), "b": _iv(None), "at": [],
            "n_boot_valid": 0, "frontier_omitted": "not converged"}
  return {"group": g.label, "objective": objective, "loss": base.loss, "converged": base.converged,
          "rmsle_fit": metrics.rmsle(base.predict(N, D), L),
          "rmsle_test": metrics.rmsle(pred_test, g.y[test]) if test.any() else None,
          "params": {p: _iv(v, *lohi(p)) for p, v in base.params.items()},
          "a": _iv(front["a"], *lohi("a")), "b": _iv(front["b"], *lohi("b")),
          "at": [{**at, **{q: _iv(front[q][i], *lohi(q, i)) for q in FRONTIER}} for i, at in enumerate(_at(g, C))],
          "n_boot_valid": n_valid, **skipped}


def isoflop_groups(g: table_lib.Group) -> np.ndarray | None:
  """Each fitting point's compute group (C to 6 significant digits), or None when the data carry no groups."""
  if g.isoflop is None:
    return None
  return np.array([float(f"{c:.6g}") for c in g.isoflop[~g.test]])


def isoflop_one(g: table_lib.Group, cfg: dict[str, Any]) -> dict[str, Any]:
  """Approach 2 on one group's fitting points: a, b with intervals, N*, D*, D*/N* at `fit2d.C`; or the reason it
  could not be fitted (fewer than 2 compute groups of >= 3 points, or a parabola opening downward)."""
  f, k = cfg["fit"], cfg["source"]["k"]
  C_group = isoflop_groups(g)
  if C_group is None:
    return {"group": g.label, "skipped": "no compute groups (give source.compute or source.isoflop)"}
  m = ~g.test
  counts = {c: int((C_group == c).sum()) for c in np.unique(C_group)}
  keep = np.array([counts[c] >= 3 for c in C_group])
  if not keep.any():
    return {"group": g.label, "skipped": "no compute value has >= 3 fitting runs; give budgets in source.isoflop"}
  try:
    r = isoflop_parabola(g.x[m, 0][keep], g.x[m, 1][keep], g.y[m][keep], C_group[keep], k,
                         n_boot=f["n_boot"], key=f["key"], level=f["level"])
  except ValueError as e:
    return {"group": g.label, "skipped": str(e)}
  C = frontier_C(g, cfg)
  N_opt = r.N_at(C)
  boot = f["n_boot"] > 0  # fit.n_boot = 0: no intervals
  return {"group": g.label, "a": _iv(r.a, *(r.a_interval if boot else ())),
          "b": _iv(r.b, *(r.b_interval if boot else ())), "n0": r.n0,
          "n_boot_valid": r.n_valid,
          "groups_used": {f"{c:g}": n for c, n in counts.items() if n >= 3},
          "groups_skipped": {f"{c:g}": n for c, n in counts.items() if n < 3},
          "minima": [{"C": float(c), "N_opt": float(n), "D_opt": float(d)} for c, n, d in zip(r.C, r.N_opt, r.D_opt)],
          "at": [{**at, "N_opt": _iv(n), "D_opt": _iv(c / (k * n)), "tokens_per_param": _iv(c / (k * n * n))}
                 for at, c, n in zip(_at(g, C), C, N_opt)]}


def fit_groups(data: table_lib.Dataset, cfg: dict[str, Any], results_dir: str) -> dict[str, Any]:
  """Every objective and the isoFLOP estimate on every group; `results_dir/<name>.json` loaded when present."""
  out: dict[str, Any] = {"seconds": {}}
  jobs = [(f"chinchilla_{o}", lambda g, o=o: fit_one(g, o, cfg)) for o in cfg["fit2d"]["objectives"]]
  jobs.append(("isoflop", lambda g: isoflop_one(g, cfg)))
  for name, job in jobs:
    stored = experiment.stored(os.path.join(results_dir, f"{name}.json"),
                               lambda job=job: {"results": [job(g) for g in data.groups]},
                               f"{name} ({len(data.groups)} group(s))")
    out["seconds"][name] = stored["seconds"]
    key = "isoflop" if name == "isoflop" else "chinchilla"
    out.setdefault(key, []).extend(stored["results"])
  return out


# --------------------------------------------------------------------------- tables and figures


def _n(v: float | None) -> str:
  return "nan" if v is None or not np.isfinite(v) else f"{v:.4g}"


def _cell(d: dict[str, Any]) -> str:
  return _n(d["value"]) + (f" [{_n(d['lo'])}, {_n(d['hi'])}]" if d.get("lo") is not None else "")


def summary_text(s: dict[str, Any], cfg: dict[str, Any]) -> str:
  """Chinchilla fits with intervals, then the frontier of every estimate at each `fit2d.C` (markdown)."""
  f = cfg["fit"]
  n = sum(g["points"] for g in s["groups"])
  d_from = f"D = C / ({s['k']:g} N), C = {s['compute']}" if s["compute"] else f"D = {s['x'][1]}"
  lines = [f"# L(N, D) = E + A / N^alpha + B / D^beta: {os.path.basename(s['file'])} (sha256 {s['sha256'][:12]}), "
           f"{len(s['groups'])} group(s), {n} points, {sum(g['held_out'] for g in s['groups'])} held out",
           "", f"N = {s['x'][0]}, {d_from}, L = {s['y']}; Huber delta {cfg['fit2d']['delta']:g}; bootstrap: "
           f"{f['n_boot']} resamples, {100 * f['level']:g} % intervals; frontier with C = {s['k']:g} N D", "",
           "### Chinchilla fits", "",
           "| group | objective | fit + held out | RMSLE fit | RMSLE held out | E | A | B | alpha | beta |",
           "|---" * 10 + "|"]
  pts = {g["group"]: f"{g['fit']} + {g['held_out']}" for g in s["groups"]}
  for d in s["chinchilla"]:
    obj = d["objective"] + ("" if d["converged"] else " (not converged)")
    lines.append(f"| {d['group']} | {obj} | {pts[d['group']]} | {_n(d['rmsle_fit'])} | "
                 f"{_n(d['rmsle_test'])} | " + " | ".join(_cell(d["params"][p]) for p in cf.PARAMS) + " |")
  for d in s["chinchilla"]:
    if "bootstrap" in d:
      lines += ["", f"L(N, D) {d['objective']}, group {d['group']}: bootstrap skipped ({d['bootstrap']['skipped']})"]
  lines += ["", "### Compute-optimal frontier: N*(C) ∝ C^a, D*(C) ∝ C^b", "",
            "| group | estimate | a | b | C | N* | D* | tokens / parameter |", "|---" * 8 + "|"]
  for d in s["chinchilla"] + [d for d in s["isoflop"] if "skipped" not in d]:
    est = f"L(N, D) {d['objective']}" if "objective" in d else "isoFLOP parabolas"
    for i, at in enumerate(d["at"]):
      ab = f"{_cell(d['a'])} | {_cell(d['b'])}" if i == 0 else " | "
      c = f"{at['C']:.3g}" + (" (extrapolated)" if at.get("extrapolated") else "")
      lines.append(f"| {d['group']} | {est} | {ab} | {c} | {_cell(at['N_opt'])} | {_cell(at['D_opt'])} | "
                   f"{_cell(at['tokens_per_param'])} |")
  for d in s["chinchilla"]:
    if "frontier_omitted" in d:
      lines += ["", f"L(N, D) {d['objective']}, group {d['group']}: frontier omitted ({d['frontier_omitted']})"]
  for d in s["isoflop"]:
    if "skipped" in d:
      lines += ["", f"isoFLOP parabolas, group {d['group']}: not fitted ({d['skipped']})"]
    elif d["groups_skipped"]:
      lines += ["", f"isoFLOP parabolas, group {d['group']}: compute groups with < 3 points left out: "
                f"{d['groups_skipped']}"]
  lines += ["", "Wall time (s): " + ", ".join(f"{m} {t:.1f}" for m, t in s["seconds"].items())]
  return "\n".join(lines) + "\n"


def plot_groups(data: table_lib.Dataset, s: dict[str, Any], folder: str) -> list[str]:
  """figures/<group>_isoflop.png (:func:`scaling.fit.chinchilla_plot.isoflop_panels`): L against N coloured by
  compute with the first converged law along each compute budget, and N*(C) of every converged law with its band at
  `fit2d.C` and the isoFLOP parabolas' minima, over the runs' (C, N)."""
  from scaling.fit import chinchilla_plot as cp  # pylint: disable=g-import-not-at-top  (matplotlib only when plotting)
  paths = []
  for g in data.groups:
    laws = []
    for d in s["chinchilla"]:
      if d["group"] != g.label or not d["converged"]:
        continue
      at = d["at"]
      band = None
      if at and at[0]["N_opt"]["lo"] is not None:
        band = (np.array([a["C"] for a in at]), np.array([a["N_opt"]["lo"] for a in at]),
                np.array([a["N_opt"]["hi"] for a in at]))
      laws.append(cp.Law(f"L(N, D) {d['objective']}", {q: v["value"] for q, v in d["params"].items()}, band))
    iso = next((d for d in s["isoflop"] if d["group"] == g.label and "skipped" not in d), None)
    minima = None if iso is None else cp.Minima(np.array([m["C"] for m in iso["minima"]]),
                                                np.array([m["N_opt"] for m in iso["minima"]]), iso["a"]["value"],
                                                iso["n0"])
    budgets = None if g.isoflop is None else np.unique([float(f"{c:.6g}") for c in g.isoflop])
    slug = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in g.label)
    paths.append(cp.isoflop_panels(os.path.join(folder, f"{slug}_isoflop.png"), g.x[:, 0], g.y, g.compute, laws,
                                   k=s["k"], budgets=budgets, minima=minima, held_out=g.test, title=g.label,
                                   xlabel=f"N ({data.x_names[0]})", ylabel=f"L ({data.y_name})"))
  return paths
