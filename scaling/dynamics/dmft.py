"""`python -m launch.dmft`: DMFT theory and random-feature simulations side by side (spec `dmft.md`).

One experiment per config (`config.experiment`), each writing to its workdir `config.json`, `theory.npz`, `sim.npz`
(re-running the command loads them instead of recomputing), `summary.md` (the tables) and figures (theory as lines,
simulation as points with ± 1 SE error bars):

- theory_vs_sim: L(t) and L̂(t) for the (N, P) points, table of theory vs simulation at `check_t` (spec §6 A2).
- train_test_gap: the same at one width and several P (data reuse), plus the gap L − L̂.
- exponents: local log-slopes of L(∞, N, ∞), L(∞, ∞, P) (closed form) and L(t, ∞, ∞) vs the predictions (A4).
- compute_optimal: the theory surface L(N, t) at P = ∞, its frontier L*(C), N*(C), t*(C) and exponents (A5).
- width_convergence: c(t) = −d log(L_N − L_∞)/d log N across widths (A6).
- ensembles: E members of width N against one wider model, online and with finite data (§2.5, §3).
- real_spectrum: the NTK spectrum of a network at initialisation on real data fed to the DMFT, against the
  linearised network trained by gradient flow (`scaling.dynamics.real_spectrum`).

N or P = 0 in a config means infinity. Simulations use the same finite M as the theory (pitfall §7.3).
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import ml_collections
import numpy as np
from absl import logging

from scaling.engine import io
from scaling.engine.config import as_tuple, checked_dict
from scaling.dynamics import random_features as rf
from scaling.dynamics.dmft_figures import (mean_se, plot_curves, plot_ensembles, plot_exponents, plot_frontier,
                                           point_label)
from scaling.dynamics.theory import closed_forms, exponents, inputs, solver
from scaling.engine import launch

EXPERIMENTS = ("theory_vs_sim", "train_test_gap", "exponents", "compute_optimal", "width_convergence", "ensembles",
               "real_spectrum")


def dmft_config() -> ml_collections.ConfigDict:
  """Defaults: spec §6 A2 (a=1.5, b=1.25, M=2000; (N, P) = (64, 256) and (256, 64); 20 seeds; gradient flow)."""
  c = ml_collections.ConfigDict()
  c.experiment = "theory_vs_sim"
  c.task = ml_collections.ConfigDict(dict(a=1.5, b=1.25, M=2000))
  c.N = (64, 256)  # widths (0 = infinite)
  c.P = (256, 64)  # data sizes (0 = infinite); paired with N (zip) when `pairs`, else the grid N x P
  c.pairs = True
  c.E = (1,)  # ensemble sizes (ensembles; 0 = infinite, theory only)
  c.t = ml_collections.ConfigDict(dict(min=0.1, max=1e4, num=41))
  c.check_t = (1.0, 10.0, 100.0, 1e4)
  c.theory = ml_collections.ConfigDict(dict(mt=16))
  c.sim = ml_collections.ConfigDict(dict(enabled=True, seeds=20, seed=0, seed_batch=0, max_width=0))
  c.real = ml_collections.ConfigDict(dict(dataset="mnist1d", data_dir="", n_pool=2000, P=(125, 250, 500, 1000),
                                          width=256, depth=3, k_range=(5, 100), draws=4, init_seed=0,
                                          t_fit=(1.0, 100.0)))  # real_spectrum only
  return c


def _size(v: Any, name: str) -> float:
  if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0 or (v and v != int(v)):
    raise ValueError(f"{name} entries must be integers >= 1 (0 = infinite), got {v!r}")
  return math.inf if v == 0 else float(v)


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The checked config as a plain dict; ValueError before anything is computed or written."""
  cfg = checked_dict(config, dmft_config())
  if cfg["experiment"] not in EXPERIMENTS:
    raise ValueError(f"experiment must be one of {EXPERIMENTS}, got {cfg['experiment']!r}")
  a, b, M = cfg["task"]["a"], cfg["task"]["b"], cfg["task"]["M"]
  if not (isinstance(M, int) and M >= 1):
    raise ValueError(f"task.M must be an int >= 1, got {M!r}")
  inputs.power_law_spectrum(a, b, M)  # its own checks (a, b > 0)
  if cfg["experiment"] in ("exponents", "compute_optimal"):
    exponents.time_exponent(a, b)  # predictions need a, b > 1
  for k in ("N", "P", "E", "check_t"):
    cfg[k] = list(as_tuple(cfg[k]))
  Ns, Ps = [_size(v, "N") for v in cfg["N"]], [_size(v, "P") for v in cfg["P"]]
  [_size(v, "E") for v in cfg["E"]]
  if not Ns or not Ps:
    raise ValueError("N and P must not be empty")
  if cfg["pairs"] and len(Ns) != len(Ps):
    raise ValueError(f"pairs=True needs as many N as P, got {len(Ns)} and {len(Ps)}")
  if cfg["experiment"] in ("compute_optimal", "width_convergence", "exponents") and (
      len(Ps) != 1 or cfg["pairs"] or any(math.isinf(n) for n in Ns) or np.any(np.diff(Ns) <= 0)):
    raise ValueError(f"{cfg['experiment']} needs finite, increasing widths N, one P and pairs=False; got N={cfg['N']}, "
                     f"P={cfg['P']}, pairs={cfg['pairs']}")
  t = cfg["t"]
  if not (0 < t["min"] < t["max"] and isinstance(t["num"], int) and t["num"] >= 2):
    raise ValueError(f"need 0 < t.min < t.max and an int t.num >= 2, got {t}")
  s = cfg["sim"]
  if not (isinstance(s["seeds"], int) and s["seeds"] >= 2):
    raise ValueError(f"sim.seeds must be an int >= 2 (standard errors), got {s['seeds']!r}")
  r = cfg["real"]
  r["P"], r["k_range"], r["t_fit"] = list(as_tuple(r["P"])), list(as_tuple(r["k_range"])), list(as_tuple(r["t_fit"]))
  if cfg["experiment"] == "real_spectrum":
    ints = (r["n_pool"], r["width"], r["depth"], r["draws"], *r["P"], *r["k_range"])
    if not all(isinstance(v, int) and v >= 1 for v in ints) or r["depth"] < 2 or r["draws"] < 2:
      raise ValueError(f"real: n_pool, width, P, k_range must be ints >= 1, depth >= 2, draws >= 2; got {r}")
    if max(r["P"]) >= r["n_pool"] or sorted(r["P"]) != r["P"] or len(set(r["P"])) != len(r["P"]):
      raise ValueError(f"real.P must be increasing and < n_pool={r['n_pool']} (the rest is the test set): {r['P']}")
    if len(r["k_range"]) != 2 or not 1 <= r["k_range"][0] < r["k_range"][1] < r["n_pool"]:
      raise ValueError(f"real.k_range must be (k_min, k_max) with 1 <= k_min < k_max < n_pool, got {r['k_range']}")
    if len(r["t_fit"]) != 2 or not 0 < r["t_fit"][0] < r["t_fit"][1]:
      raise ValueError(f"real.t_fit must be (t_min, t_max) with 0 < t_min < t_max, got {r['t_fit']}")
  return cfg


def t_grid(cfg: dict[str, Any]) -> np.ndarray:
  t = cfg["t"]
  return np.unique(np.r_[np.geomspace(t["min"], t["max"], t["num"]), cfg["check_t"]])


def points(cfg: dict[str, Any]) -> list[tuple[float, float]]:
  """(N, P) points of the experiment (inf for 0)."""
  Ns, Ps = [_size(v, "N") for v in cfg["N"]], [_size(v, "P") for v in cfg["P"]]
  return list(zip(Ns, Ps)) if cfg["pairs"] else [(n, p) for n in Ns for p in Ps]


def _inv(x: float) -> float:
  return 0.0 if math.isinf(x) else 1.0 / x


# --------------------------------------------------------------------------------------------- computations


def theory_curves(cfg: dict[str, Any], pts: list[tuple[float, float]], t: np.ndarray) -> dict[str, np.ndarray]:
  """DMFT test and train losses [point, t] in one batched call."""
  lam, w2 = inputs.power_law_spectrum(cfg["task"]["a"], cfg["task"]["b"], cfg["task"]["M"])
  inv_n = np.array([_inv(n) for n, _ in pts])
  inv_p = np.array([_inv(p) for _, p in pts])
  L, Lhat = solver.loss_curve(lam, w2, t, inv_n, inv_p, mt=cfg["theory"]["mt"])
  return {"test": np.asarray(L), "train": np.asarray(Lhat)}


def sim_curves(cfg: dict[str, Any], pts: list[tuple[float, float]], t: np.ndarray, n_members: int = 1
               ) -> dict[str, np.ndarray]:
  """Simulated losses [seed, point, t] (members' mean and ensemble-mean predictor): one `rf.simulate` call per
  distinct P (widths are row masks of one projection, so they share random numbers); N = ∞ is not simulable."""
  lam, wstar = rf.power_law_task(cfg["task"]["a"], cfg["task"]["b"], cfg["task"]["M"])
  s = cfg["sim"]
  S = s["seeds"]
  out = {k: np.full((S, len(pts), len(t)), np.nan) for k in ("test", "train", "test_ens", "train_ens")}
  for p in dict.fromkeys(p for _, p in pts):
    idx = [i for i, (n, q) in enumerate(pts) if q == p and math.isfinite(n)]
    if not idx:
      continue
    widths = sorted({int(pts[i][0]) for i in idx})
    r = rf.simulate(s["seed"], lam, wstar, widths, p if math.isinf(p) else [int(p)], t, S, n_members=n_members,
                    seed_batch=s["seed_batch"] or None)
    for i in idx:
      j = widths.index(int(pts[i][0]))
      for k in out:
        out[k][:, i] = r[k][:, 0, j]
  return out


def comparison_rows(pts, t, theory, sim, check_t, train_t=100.0) -> list[dict[str, Any]]:
  """Theory vs simulation at `check_t` (test) and `train_t` (train): the spec's criterion is |diff| < 3 SE or < 4 %."""
  rows = []
  for i, (n, p) in enumerate(pts):
    if not np.all(np.isfinite(sim["test"][:, i])):
      continue
    for kind, times in (("test", check_t), ("train", [train_t])):
      m, se = mean_se(sim[kind][:, i])
      for tc in times:
        j = int(np.argmin(np.abs(t - tc)))
        th = float(theory[kind][i, j])
        d = abs(m[j] - th)
        rows.append({"point": point_label(n, p), "loss": kind, "t": float(t[j]), "theory": th, "sim": float(m[j]),
                     "se": float(se[j]), "z": d / se[j] if se[j] > 0 else math.inf,
                     "ok": bool(d < 3 * se[j] or d < 0.04 * abs(th))})
  return rows


def local_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  return np.diff(np.log(y)) / np.diff(np.log(x))


def exponent_rows(cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
  """Spec A4: local slopes (×2 grid in N, P from the closed form; t from the DMFT at N = P = ∞) and their fits."""
  a, b, M = cfg["task"]["a"], cfg["task"]["b"], cfg["task"]["M"]
  lam, w2 = inputs.power_law_spectrum(a, b, M)
  NP = np.asarray([_size(v, "N") for v in cfg["N"]])
  tt = t_grid(cfg)
  curves = {"x_N": NP, "L_N": np.asarray(closed_forms.static_loss(lam, w2, NP, math.inf), np.float64),
            "L_P": np.asarray(closed_forms.static_loss(lam, w2, math.inf, NP), np.float64), "t": tt,
            "L_t": np.asarray(solver.loss_curve(lam, w2, tt, 0.0, 0.0, mt=cfg["theory"]["mt"])[0], np.float64)}
  rows = []
  for name, x, y, pred in (("L(∞, N, ∞) vs N", NP, curves["L_N"], exponents.model_exponent(a, b)),
                           ("L(∞, ∞, P) vs P", NP, curves["L_P"], exponents.data_exponent(a, b)),
                           ("L(t, ∞, ∞) vs t", tt, curves["L_t"], exponents.time_exponent(a, b))):
    s = local_slopes(x, y)
    rows.append({"quantity": name, "predicted": pred, "fit": exponents.fit_power_law(x, y)[0],
                 "slope_min": float(s.min()), "slope_max": float(s.max())})
  return rows, curves


def frontier_rows(cfg: dict[str, Any], theory: dict[str, np.ndarray], Ns: np.ndarray, t: np.ndarray
                  ) -> tuple[list[dict[str, Any]], exponents.Frontier]:
  f = exponents.compute_optimal_frontier(theory["test"], Ns, t)
  pred = exponents.compute_optimal_exponents(cfg["task"]["a"], cfg["task"]["b"])
  rows = [{"quantity": q, "predicted": pred[k], "fit": f.exponents[k]}
          for q, k in (("L*(C)", "loss"), ("N*(C)", "n"), ("t*(C)", "t"))]
  return rows, f


def width_rows(pts, t, L_NxT, L_inf_T, check_t) -> list[dict[str, Any]]:
  """c(t) between consecutive widths (spec A6)."""
  rows = []
  Ns = np.array([n for n, _ in pts])
  gap = L_NxT - L_inf_T[None, :]
  for tc in check_t:
    j = int(np.argmin(np.abs(t - tc)))
    c = -local_slopes(Ns, gap[:, j])
    rows.append({"t": float(t[j]), **{f"c({int(Ns[i])}→{int(Ns[i + 1])})": float(c[i]) for i in range(len(c))}})
  return rows


def ensemble_theory(cfg: dict[str, Any], pts, t: np.ndarray, Es: list[float]) -> np.ndarray:
  """L_E [E, point, t] from the ensemble formula (E may be inf)."""
  lam, w2 = inputs.power_law_spectrum(cfg["task"]["a"], cfg["task"]["b"], cfg["task"]["M"])
  fn = solver.ensemble_curve_fn(lam, w2, mt=cfg["theory"]["mt"])
  inv_n = np.array([_inv(n) for n, _ in pts])
  inv_p = np.array([_inv(p) for _, p in pts])
  return np.stack([np.asarray(fn(t, inv_n, inv_p, E)["L_E"]) for E in Es])


# --------------------------------------------------------------------------------------------- tables


def _md_table(rows: list[dict[str, Any]]) -> str:
  if not rows:
    return "(none)\n"
  keys = list(rows[0])
  fmt = lambda v: (f"{v:.4f}" if isinstance(v, float) and 1e-2 <= abs(v) < 1e4 else  # noqa: E731
                   f"{v:.4g}" if isinstance(v, float) else str(v))
  return "\n".join(["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
                   + ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]) + "\n"


# --------------------------------------------------------------------------------------------- the run


def _cached(workdir: str, name: str, compute) -> dict[str, np.ndarray]:
  """Load `name`.npz from the workdir, or compute, save (atomically) and return it."""
  path = os.path.join(workdir, name + ".npz")
  if os.path.exists(path):
    logging.info("dmft: %s loaded from %s", name, path)
    return io.load_npz(path)
  t0 = time.perf_counter()
  out = {k: np.asarray(v) for k, v in compute().items()}
  out["seconds"] = np.asarray(time.perf_counter() - t0)
  io.save_npz(path, **out)
  logging.info("dmft: %s computed in %.1f s", name, float(out["seconds"]))
  return out


def _theory_vs_sim(cfg: dict[str, Any], workdir: str, pts, sim_pts, t: np.ndarray, lines: list[str]) -> None:
  """theory_vs_sim and train_test_gap."""
  exp, task, sim_on = cfg["experiment"], cfg["task"], cfg["sim"]["enabled"]
  th = _cached(workdir, "theory", lambda: {**theory_curves(cfg, pts, t), "t": t})
  sim = _cached(workdir, "sim", lambda: sim_curves(cfg, sim_pts, t)) if sim_on else None
  rows = comparison_rows(pts, t, th, sim, cfg["check_t"]) if sim is not None else []
  lines += ["## Theory vs simulation (mean ± SE; ok: |diff| < 3 SE or < 4 %)", "", _md_table(rows)]
  plot_curves(os.path.join(workdir, f"{exp}.png"), pts, t, th, sim, f"a={task['a']}, b={task['b']}, "
              f"M={task['M']}", gap=exp == "train_test_gap")
  lines.append(f"theory {float(th['seconds']):.1f} s" + (f", simulation {float(sim['seconds']):.1f} s" if sim_on
                                                        else ""))


def _exponents(cfg: dict[str, Any], workdir: str, pts, sim_pts, t: np.ndarray, lines: list[str]) -> None:
  rows, curves = exponent_rows(cfg)
  lines += ["## Predicted vs measured exponents (DMFT; local slopes over the grid)", "", _md_table(rows)]
  plot_exponents(os.path.join(workdir, "exponents.png"), curves)


def _compute_optimal(cfg: dict[str, Any], workdir: str, pts, sim_pts, t: np.ndarray, lines: list[str]) -> None:
  Ns = np.asarray([n for n, _ in pts])
  th = _cached(workdir, "theory", lambda: {**theory_curves(cfg, pts, t), "t": t})
  rows, f = frontier_rows(cfg, th, Ns, t)
  sim = None
  if cfg["sim"]["enabled"]:
    sim = _cached(workdir, "sim", lambda: sim_curves(cfg, sim_pts, t))
  lines += ["## Compute-optimal frontier, C = N t, P = ∞ (predicted vs fitted exponents)", "", _md_table(rows)]
  plot_frontier(os.path.join(workdir, "compute_optimal.png"), pts, t, th, sim, f)


def _width_convergence(cfg: dict[str, Any], workdir: str, pts, sim_pts, t: np.ndarray, lines: list[str]) -> None:
  all_pts = pts + [(math.inf, pts[0][1])]
  th = _cached(workdir, "theory", lambda: {**theory_curves(cfg, all_pts, t), "t": t})
  rows = width_rows(pts, t, th["test"][:-1], th["test"][-1], cfg["check_t"])
  lines += ["## c(t) = −d log(L_N − L_∞) / d log N (spec A6: ≈1 early, → min(a−1, b) late)", "", _md_table(rows)]
  sim = _cached(workdir, "sim", lambda: sim_curves(cfg, sim_pts, t)) if cfg["sim"]["enabled"] else None
  plot_curves(os.path.join(workdir, "width_convergence.png"), all_pts, t, th,
              None if sim is None else {k: np.concatenate([v, np.full_like(v[:, :1], np.nan)], 1)
                                        for k, v in sim.items() if k != "seconds"}, "width convergence")


def _real_spectrum(cfg: dict[str, Any], workdir: str, pts, sim_pts, t: np.ndarray, lines: list[str]) -> None:
  from scaling.dynamics import real_spectrum  # pylint: disable=g-import-not-at-top  (imports tensorflow_datasets)
  r = _cached(workdir, "real_spectrum", lambda: real_spectrum.compute(cfg, workdir, t))
  comp, ex = real_spectrum.rows(r, cfg)
  lines[0] = (f"# real_spectrum: {cfg['real']['dataset']}, NTK of a depth-{cfg['real']['depth']} width-"
              f"{cfg['real']['width']} MLP at init on {cfg['real']['n_pool']} points, {cfg['real']['draws']} "
              "training sets per P")
  lines += ["## Exponents: fitted from the spectrum, predicted, measured", "", _md_table(ex),
            "## Test MSE of the linearised network vs the DMFT (N = ∞)", "", _md_table(comp)]
  real_spectrum.plot(os.path.join(workdir, "real_spectrum.png"), r)


def _ensembles(cfg: dict[str, Any], workdir: str, pts, sim_pts, t: np.ndarray, lines: list[str]) -> None:
  Es = [_size(v, "E") for v in cfg["E"]]
  th = _cached(workdir, "theory", lambda: {"L_E": ensemble_theory(cfg, pts, t, Es), "t": t})
  sims = {}
  if cfg["sim"]["enabled"]:
    for E in (e for e in Es if math.isfinite(e)):
      sims[E] = _cached(workdir, f"sim_E{int(E)}", lambda E=E: sim_curves(cfg, sim_pts, t, n_members=int(E)))
  rows = _ensemble_rows(pts, t, Es, th["L_E"], sims, cfg["check_t"])
  lines += ["## Ensemble-mean test loss L_E (theory / sim ± SE)", "", _md_table(rows)]
  plot_ensembles(os.path.join(workdir, "ensembles.png"), pts, t, Es, th["L_E"], sims)


# experiment -> f(cfg, workdir, pts, sim_pts, t, lines): computes (or reloads), draws, appends to the summary lines
VARIANTS = {"theory_vs_sim": _theory_vs_sim, "train_test_gap": _theory_vs_sim, "exponents": _exponents,
            "compute_optimal": _compute_optimal, "width_convergence": _width_convergence, "ensembles": _ensembles,
            "real_spectrum": _real_spectrum}


@launch.host_driven
def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str) -> str:
  """Runs (or reloads) the experiment in `workdir`; writes tables and figures; returns the summary text."""
  cfg = plan(config)
  workdir = os.path.abspath(workdir)
  resumed = io.check_config(workdir, cfg)
  os.makedirs(workdir, exist_ok=True)
  if not resumed:
    io.write_config(workdir, cfg)
  exp, task = cfg["experiment"], cfg["task"]
  lines = [f"# {exp}: a={task['a']}, b={task['b']}, M={task['M']}, MT={cfg['theory']['mt']}, "
           f"{cfg['sim']['seeds']} seeds" + ("" if cfg["sim"]["enabled"] else " (simulation off)"), ""]
  t = t_grid(cfg)
  pts = points(cfg)
  cap = cfg["sim"]["max_width"] or math.inf
  sim_pts = [(n, p) if n <= cap else (math.inf, p) for n, p in pts]  # N = ∞ rows are skipped by sim_curves
  VARIANTS[exp](cfg, workdir, pts, sim_pts, t, lines)
  text = "\n".join(lines) + "\n"
  io.save_text(os.path.join(workdir, "summary.md"), text)
  return text


def _ensemble_rows(pts, t, Es, L_ExPxT, sims, check_t) -> list[dict[str, Any]]:
  rows = []
  for e, E in enumerate(Es):
    for i, (n, p) in enumerate(pts):
      row = {"E": "∞" if math.isinf(E) else int(E), "point": point_label(n, p)}
      for tc in check_t:
        j = int(np.argmin(np.abs(t - tc)))
        cell = f"{L_ExPxT[e, i, j]:.4f}"
        if E in sims and np.all(np.isfinite(sims[E]["test_ens"][:, i, j])):
          m, se = mean_se(sims[E]["test_ens"][:, i])
          cell += f" / {m[j]:.4f} ± {se[j]:.4f}"
        row[f"t={t[j]:g}"] = cell
      rows.append(row)
  return rows


