"""Discrete gradient descent of the power-law random-feature model (spec `dmft.md` §1) through the sweep engine.

The model, its sampling and the GD step are `scaling.dynamics.random_features`' (`gd_step`: w ← w + η B(g − Bᵀw)
from w = 0, i.e. v_{n+1} = (I − ηFĜ) v_n on L̂/2); this module only runs it as `loop.PointLoop` points. One point per (N, P) of
`sweep.points` (P = 0 is the population, Ĝ = Λ), one compiled program per point; its members are the seeds
(vmapped). A chunk is a jitted `lax.scan` of `log_every` GD steps; the test loss L = Σ λ_k v_k² and train loss
L̂ = |S v|² are evaluated at every log step 0, log_every, ..., steps (time t = η·step).

PRNG (as `random_features.sample` / `simulate`): seed s uses ``split(key(seed), seeds)[s]``, split once into
(projection, data) keys; A is ensemble member 0 of the projection key (N rows, prefix-stable), Ψ has P rows. So point
(N, P), seed s runs exactly `random_features.run_gd(*sample(split(key(seed), S)[s], lam, N, P or inf), ...)`.

Stability: `plan` computes μ_max(FĜ) = ‖B‖₂² of every (point, seed) (one SVD per seed, before anything is written)
and refuses η·μ_max ≥ 2. A cheap a-priori bound such as ‖F‖‖Ĝ‖ is useless here: ‖F‖ ≈ (1 + √(M/N))² while μ_max(FĜ)
≈ 1, so it would reject every useful η.

Everything runs in float64 inside ``jax.enable_x64(True)`` (the loop, checkpoints included; x64 is not enabled
globally). Workdir (via `scaling.io` and `scaling.loop`): config.json, metrics.jsonl (one line per point and log
step), curves.npz with axes [point, seed, log_step], points/<N..._P...>.npz, checkpoints/<point>/ (orbax). Re-running
the same command skips finished points and resumes unfinished ones bitwise.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from scaling import io, loop
from scaling.config_utils import as_checked_dict, as_tuple
from scaling.dynamics import random_features as rf
from scaling.dynamics.theory import solver

AXES = ("point", "seed", "log_step")


def rf_gd_config() -> ml_collections.ConfigDict:
  """Spec §6 A2's task and (N, P) points, GD with η = 0.1 up to t = 100."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root key; the seed axis is split(key(seed), sweep.seeds)
  c.task = ml_collections.ConfigDict(dict(a=1.5, b=1.25, M=2000))  # λ_k = k^-b, λ_k w*_k² = k^-a, k = 1..M
  c.train = ml_collections.ConfigDict(dict(
      eta=0.1,  # GD step on L̂/2; needs η·μ_max(FĜ) < 2 for every point and seed (μ_max ≈ 1 here)
      steps=1000,  # GD steps of every point (t = η·steps)
      log_every=10,  # evaluation every log_every steps = one chunk
      checkpoint_every=20,  # in chunks
      max_to_keep=2,
  ))
  c.sweep = ml_collections.ConfigDict(dict(
      points=((64, 256), (256, 64)),  # (N, P) pairs, one compiled program each; P = 0 means P = ∞ (population)
      seeds=20,  # vmapped
  ))
  return c


# ------------------------------------------------------------------------------------------------------------------
# Device work (one seed; vmapped over seeds by the jitted entry points)


def evaluate(w_N: jax.Array, problem: rf.GDProblem) -> dict[str, jax.Array]:
  """Test loss Σ λ_k v_k² and train loss |g − Bᵀw|² of weights w (the expressions of `random_features.gd_step`)."""
  v_M = problem.wstar_M - (w_N @ problem.A_NxM) * problem.inv_sqrt_n
  r_Q = problem.g_Q - problem.B_NxQ.T @ w_N
  return {"test_loss": jnp.sum(problem.lam_M * v_M ** 2), "train_loss": jnp.sum(r_Q ** 2)}


def chunk(state: rf.GDState, problem: rf.GDProblem, *, n_steps: int):
  """Evaluates, then scans `n_steps` GD steps (`random_features.gd_step`).

  Returns (state, evaluation at the chunk start, {"first_nonfinite_step": index within the chunk of the first step
  after which a loss is non-finite, -1 if none}).
  """
  evals = evaluate(state.w_N, problem)
  state, metrics = jax.lax.scan(functools.partial(rf.gd_step, problem=problem), state, None, length=n_steps)
  bad = ~(jnp.isfinite(metrics["test"]) & jnp.isfinite(metrics["train"]))
  return state, evals, {"first_nonfinite_step": jnp.where(bad.any(), jnp.argmax(bad), -1)}


def _problem(seed_key: jax.Array, lam_M: jax.Array, wstar_M: jax.Array, eta: jax.Array, N: int, P: int):
  """(GDProblem, μ_max) of one seed: the draws of `random_features.sample(seed_key, lam, N, P or inf)`."""
  # pylint: disable=protected-access
  proj_key, data_key = jax.random.split(seed_key)
  A_NxM = rf._projection(proj_key, 0, N, lam_M.shape[0])
  psi_PxM = None if P == 0 else rf._features(data_key, lam_M, P)
  return rf._gd_problem(A_NxM, psi_PxM, lam_M, wstar_M, jnp.float64(N), jnp.float64(max(P, 1)), eta,
                        population=P == 0)


# Compiled entry points over the leading seed axis (every GDProblem field has it; call inside jax.enable_x64(True)).
@functools.partial(jax.jit, static_argnames=("N", "P"))
def make_problems(keys_S: jax.Array, lam_M: jax.Array, wstar_M: jax.Array, eta: jax.Array, *, N: int,
                  P: int) -> tuple[rf.GDProblem, jax.Array]:
  """(GDProblem with a seed axis on every field, μ_max(FĜ)_S) of point (N, P); P = 0: population."""
  return jax.vmap(lambda k: _problem(k, lam_M, wstar_M, eta, N, P))(keys_S)


@functools.partial(jax.jit, static_argnames=("n_steps",), donate_argnums=(0,))
def run_chunk(states: rf.GDState, probs: rf.GDProblem, *, n_steps: int):
  return jax.vmap(functools.partial(chunk, n_steps=n_steps))(states, probs)


@jax.jit
def run_eval(states: rf.GDState, probs: rf.GDProblem) -> dict[str, jax.Array]:
  return jax.vmap(evaluate)(states.w_N, probs)


@functools.partial(jax.jit, static_argnames=("n_seeds", "N"))
def init_states(n_seeds: int, N: int) -> rf.GDState:
  """w = 0 and step 0 for every seed (float64: call inside jax.enable_x64(True))."""
  return rf.GDState(jnp.zeros((n_seeds, N), jnp.float64), jnp.zeros((n_seeds,), jnp.int32))


# ------------------------------------------------------------------------------------------------------------------
# Plan


def _is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


@dataclasses.dataclass(frozen=True)
class Plan:
  """A validated experiment."""

  config: dict[str, Any]
  points: tuple[tuple[int, int], ...]  # (N, P); P = 0: population
  n_seeds: int
  eta: float
  log_steps: np.ndarray  # 0, log_every, ..., steps
  mu_max: np.ndarray | None  # μ_max(FĜ) per [point, seed] (None when planned with check_eta=False)

  @property
  def task(self) -> tuple[np.ndarray, np.ndarray]:
    """(λ_M, w*_M)."""
    t = self.config["task"]
    return rf.power_law_task(t["a"], t["b"], t["M"])

  def seed_keys(self) -> jax.Array:
    with jax.transfer_guard("allow"):  # setup on the host: keys from Python ints
      return jax.random.split(jax.random.key(self.config["seed"]), self.n_seeds)


def point_name(N: int, P: int) -> str:
  return f"N{N}_P{P if P else 'inf'}"


def problems(p: Plan, i: int) -> tuple[rf.GDProblem, jax.Array]:
  """The seeds' (GDProblem, μ_max) of point i, on device (call inside jax.enable_x64(True))."""
  N, P = p.points[i]
  lam, wstar = p.task
  with jax.transfer_guard("allow"):
    return make_problems(p.seed_keys(), jnp.asarray(lam), jnp.asarray(wstar), jnp.float64(p.eta), N=N, P=P)


def plan(config: ml_collections.ConfigDict | dict[str, Any], *, check_eta: bool = True) -> Plan:
  """Validates a config (ValueError with a clear message) and builds the plan. Writes nothing.

  With `check_eta` (the default) it then computes μ_max(FĜ) of every point and seed (one jitted program per point:
  the only device work) and raises unless η·μ_max < 2 for all of them.
  """
  cfg = as_checked_dict(config, rf_gd_config())
  t, tr, sw = cfg["task"], cfg["train"], cfg["sweep"]
  if not _is_int(cfg["seed"]) or cfg["seed"] < 0:
    raise ValueError(f"seed must be an integer >= 0, got {cfg['seed']!r}")
  for name in ("a", "b"):
    if not _is_number(t[name]) or not t[name] > 0:
      raise ValueError(f"task.{name} must be a finite number > 0, got {t[name]!r}")
  for section, name in (("task", "M"), ("train", "steps"), ("train", "log_every"), ("train", "checkpoint_every"),
                        ("train", "max_to_keep"), ("sweep", "seeds")):
    v = cfg[section][name]
    if not _is_int(v) or v < 1:
      raise ValueError(f"{section}.{name} must be an integer >= 1, got {v!r}")
  if not _is_number(tr["eta"]) or not tr["eta"] > 0:
    raise ValueError(f"train.eta must be a finite number > 0, got {tr['eta']!r}")
  if tr["steps"] % tr["log_every"]:
    raise ValueError(f"train.steps={tr['steps']} must be a multiple of train.log_every={tr['log_every']}")
  points = as_tuple(sw["points"])
  if not points:
    raise ValueError("sweep.points is empty")
  for pt in points:
    ok = isinstance(pt, (list, tuple)) and len(pt) == 2 and all(_is_int(x) for x in pt)
    if not ok or pt[0] < 1 or pt[1] < 0:
      raise ValueError(f"sweep.points must be (N, P) pairs of integers with N >= 1 and P >= 0 (0 = infinity), "
                       f"got {pt!r}")
  points = tuple((int(N), int(P)) for N, P in points)
  if len(set(points)) != len(points):
    raise ValueError(f"sweep.points has repeated (N, P) pairs: {points}")
  p = Plan(cfg, points, sw["seeds"], float(tr["eta"]), np.arange(0, tr["steps"] + 1, tr["log_every"]), None)
  if not check_eta:
    return p
  with jax.enable_x64(True):
    mu_max = np.stack([np.asarray(jax.device_get(problems(p, i)[1])) for i in range(len(points))])
  worst = np.unravel_index(np.argmax(mu_max), mu_max.shape)
  if not p.eta * mu_max[worst] < 2:
    N, P = points[worst[0]]
    raise ValueError(f"GD is unstable: train.eta * mu_max = {p.eta} * {mu_max[worst]:.4g} = "
                     f"{p.eta * mu_max[worst]:.4g} >= 2 at (N, P) = ({N}, {P}), seed {worst[1]}; "
                     f"use train.eta < {2 / mu_max.max():.4g}")
  return dataclasses.replace(p, mu_max=mu_max)


# ------------------------------------------------------------------------------------------------------------------
# The host loop


class _PointRun(loop.PointLoop):
  """One (N, P) point: its seeds as the members of the shared host loop."""

  unit = "seeds"

  def __init__(self, p: Plan, i: int, workdir: str):
    t = p.config["train"]
    self.N, self.P = p.points[i]
    super().__init__(point_name(self.N, self.P), workdir, t["log_every"], t["steps"] // t["log_every"],
                     t["checkpoint_every"], t["max_to_keep"], p.n_seeds)
    self.p, self.i = p, i

  def run(self) -> loop.Arrays:
    with jax.enable_x64(True):  # float64 states, problems and checkpoints
      return super().run()

  def init(self) -> tuple[rf.GDState, rf.GDProblem]:
    probs, _ = problems(self.p, self.i)
    return init_states(n_seeds=self.p.n_seeds, N=self.N), probs

  def chunk(self, states: rf.GDState, probs: rf.GDProblem, step: int):
    states, ev, tm = run_chunk(states, probs, n_steps=self.log_every)
    ev, tm = jax.device_get((ev, tm))
    bad = tm["first_nonfinite_step"]  # index within the chunk of the step after which a loss is non-finite
    tm["first_nonfinite_step"] = np.where(bad >= 0, step + bad + 1, -1)
    return states, ev, tm

  def final_eval(self, states: rf.GDState, probs: rf.GDProblem, step: int) -> dict[str, jax.Array]:
    return run_eval(states, probs)

  def finite(self, ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"test loss": ev["test_loss"], "train loss": ev["train_loss"]}

  def describe(self, i: int) -> str:
    return f"for (N, P) = ({self.N}, {self.P}), seed {i}"

  def record(self, step: int, ev: dict[str, np.ndarray], extra: dict[str, Any], t0: float,
             done: int) -> dict[str, Any]:
    now = time.time()
    return {"point": self.name, "N": self.N, "P": self.P, "step": step, "t": self.p.eta * step, "time": now,
            "steps_per_s": done / (now - t0) if done else None,
            "test_loss": float(ev["test_loss"].mean()), "test_loss_min": float(ev["test_loss"].min()),
            "test_loss_max": float(ev["test_loss"].max()), "train_loss": float(ev["train_loss"].mean()), **extra}

  def progress(self, rec: dict[str, Any], step: int) -> str:
    return f"; at t={rec['t']:.4g}: test loss {rec['test_loss']:.4g}, train loss {rec['train_loss']:.4g}"


def assemble(p: Plan, points: dict[int, dict[str, np.ndarray]]) -> io.Curves:
  """Named-axis float64 arrays [point, seed, log_step] ("test_loss", "train_loss"; NaN for points not yet run) and
  "mu_max" [point, seed]. Coords: point (names), seed, log_step, and t = η·log_step, N, P (P = inf: population)."""
  shape = (len(p.points), p.n_seeds, len(p.log_steps))
  arrays: dict[str, np.ndarray] = {}
  axes: dict[str, tuple[str, ...]] = {}
  for name in ("test_loss", "train_loss"):
    a = np.full(shape, np.nan, np.float64)
    for i, rec in points.items():
      a[i] = rec[name]
    arrays[name], axes[name] = a, AXES
  if p.mu_max is not None:
    arrays["mu_max"], axes["mu_max"] = np.asarray(p.mu_max, np.float64), AXES[:2]
  coords = {"point": np.asarray([point_name(N, P) for N, P in p.points]), "seed": np.arange(p.n_seeds),
            "log_step": p.log_steps, "t": p.eta * p.log_steps, "N": np.asarray([N for N, _ in p.points]),
            "P": np.asarray([P if P else math.inf for _, P in p.points], np.float64)}
  return io.Curves(arrays, axes, coords)


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str) -> io.Curves:
  """Runs (or resumes) the experiment in `workdir`; returns the curves (also in `workdir/curves.npz`).

  All validation (the η·μ_max < 2 check included) happens before anything is written.
  """
  p = plan(config)
  workdir = os.path.abspath(workdir)
  resumed = io.check_config(workdir, p.config)
  os.makedirs(workdir, exist_ok=True)
  if not resumed:
    io.write_config(workdir, p.config)
  logging.info("rf_sweep: %d (N, P) points x %d seeds, eta=%g (max eta*mu_max %.3f); workdir %s", len(p.points),
               p.n_seeds, p.eta, p.eta * p.mu_max.max(), workdir)
  points: dict[int, dict[str, np.ndarray]] = {}
  curves = assemble(p, points)
  for i in range(len(p.points)):
    points[i] = _PointRun(p, i, workdir).run()
    curves = assemble(p, points)
    curves.save(os.path.join(workdir, io.CURVES))
  return curves


# ------------------------------------------------------------------------------------------------------------------
# Theory comparison


def _mean_se(x_S: np.ndarray) -> tuple[float, float]:
  se = float(np.std(x_S, ddof=1) / np.sqrt(x_S.size)) if x_S.size > 1 else math.nan
  return float(np.mean(x_S)), se


def compare_to_theory(curves: io.Curves, config: ml_collections.ConfigDict | dict[str, Any], *,
                      steps: Sequence[int] | None = None, n_times: int = 7, flow: bool = True) -> list[dict[str, Any]]:
  """GD seed means ± SE vs the DMFT gradient-flow losses at t = η·step (spec §1), one row per point and step.

  `steps`: logged steps > 0 to compare at (default: `n_times` roughly log-spaced logged steps, the last included).
  Row keys: point, N, P (0 = ∞), step, t, and for x in (test, train): x_theory (DMFT flow), x_gd, x_gd_se (SE over
  seeds), x_z = (gd − theory)/SE, x_rel = gd/theory − 1. With `flow`, also x_flow: the exact gradient flow
  (`random_features.simulate`) of the same seeds' draws at t, and x_gd_vs_flow = gd/flow − 1: the discretisation
  error alone (O(η), largest early: GD contracts mode μ by 1 − ημ per step against e^{−ημ}), free of seed noise.
  """
  p = plan(config, check_eta=False)
  have = {int(x) for x in curves.coords["log_step"]}
  logged = [int(s) for s in p.log_steps if s > 0 and s in have]
  if steps is None:
    idx = np.unique(np.round(np.geomspace(1, len(logged), min(n_times, len(logged)))).astype(int)) - 1
    steps = [logged[j] for j in idx]
  bad = [s for s in steps if s not in logged]
  if bad:
    raise ValueError(f"steps {bad} are not logged steps > 0 of this run (log_every={p.config['train']['log_every']})")
  where = [int(np.nonzero(curves.coords["log_step"] == s)[0][0]) for s in steps]
  t_T = p.eta * np.asarray(steps, np.float64)
  lam, wstar = p.task
  rows = []
  for i, (N, P) in enumerate(p.points):
    with jax.transfer_guard("allow"):  # analysis on the host, outside any hot loop
      theory = dict(zip(("test", "train"), solver.loss_curve(lam, wstar ** 2, t_T, 1.0 / N, 1.0 / P if P else 0.0)))
      if flow:
        sim = rf.simulate(p.config["seed"], lam, wstar, [N], [P if P else math.inf], t_T, p.n_seeds)
    for j, s in enumerate(steps):
      row: dict[str, Any] = {"point": point_name(N, P), "N": N, "P": P, "step": s, "t": float(t_T[j])}
      for x in ("test", "train"):
        gd_S = curves[f"{x}_loss"][i, :, where[j]]
        mean, se = _mean_se(gd_S)
        th = float(np.asarray(theory[x])[j])
        row.update({f"{x}_theory": th, f"{x}_gd": mean, f"{x}_gd_se": se, f"{x}_z": (mean - th) / se,
                    f"{x}_rel": mean / th - 1})
        if flow:
          fl = float(np.mean(sim[x][:, 0, 0, j]))
          row.update({f"{x}_flow": fl, f"{x}_gd_vs_flow": mean / fl - 1})
      rows.append(row)
  return rows


def comparison_table(rows: list[dict[str, Any]]) -> str:
  """The rows of `compare_to_theory` as a text table (relative differences in %)."""
  flow = "test_flow" in rows[0] if rows else False
  head = (f"{'point':>12} {'step':>6} {'t':>8} {'DMFT test':>10} {'GD test ± SE':>18} {'z':>6} {'rel':>7}"
          + (f" {'flow test':>10} {'GD/flow-1':>9}" if flow else "")
          + f" {'DMFT train':>10} {'GD train ± SE':>18} {'rel':>7}")
  lines = [head]
  for r in rows:
    line = (f"{r['point']:>12} {r['step']:>6d} {r['t']:>8.4g} {r['test_theory']:>10.5f} "
            f"{r['test_gd']:>9.5f} ± {r['test_gd_se']:<6.4f} {r['test_z']:>6.2f} {100 * r['test_rel']:>6.2f}%")
    if flow:
      line += f" {r['test_flow']:>10.5f} {100 * r['test_gd_vs_flow']:>8.3f}%"
    line += (f" {r['train_theory']:>10.5f} {r['train_gd']:>9.5f} ± {r['train_gd_se']:<6.4f} "
             f"{100 * r['train_rel']:>6.2f}%")
    lines.append(line)
  return "\n".join(lines)
