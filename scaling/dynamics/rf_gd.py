"""Discrete gradient descent of the power-law random-feature model (spec `dmft.md` §1) as an experiment of the engine.

The model and its sampling are `scaling.dynamics.random_features`' (GD w ← w + η B(g − Bᵀw) from w = 0, i.e.
v_{n+1} = (I − ηFĜ) v_n on L̂/2, as `random_features.gd_step`). Points are the (N, P) pairs of `sweep.points` (P = 0 is
the population, Ĝ = Λ), one compiled program each; members are the seeds. Each member builds its GD problem from its
seed key in `init` (so the draws are sharded like everything else). Per step, the engine's "loss" is the training
loss L̂ = |g − Bᵀw|² of the weights before the step (the residual the step uses: no extra matvec); the test loss
L = Σ λ_k v_k² and L̂ are evaluated at every log step 0, log_every, ..., steps (time t = η·step).

PRNG (as `random_features.sample` / `simulate`): seed s uses ``split(key(seed), seeds)[s]``, split once into
(projection, data) keys; A is ensemble member 0 of the projection key (N rows, prefix-stable), Ψ has P rows. So point
(N, P), seed s runs exactly `random_features.run_gd(*sample(split(key(seed), S)[s], lam, N, P or inf), ...)`.

Stability: `plan` computes μ_max(FĜ) = ‖B‖₂² of every (point, seed) (one SVD per seed, before anything is written)
and refuses η·μ_max ≥ 2. A cheap a-priori bound such as ‖F‖‖Ĝ‖ is useless here: ‖F‖ ≈ (1 + √(M/N))² while μ_max(FĜ)
≈ 1, so it would reject every useful η. Under that bound L̂ never increases, so a non-finite loss can only come from
a task that overflows (huge b − a): it shows at step 0, where the engine's check of the evaluation stops the run.

Float64 throughout (`x64 = True`). Workdir (the engine's): config.json, metrics.jsonl (one line per point and log
step), curves.npz with axes [point, seed, log_step] (coords t = η·log_step, N, P with P = inf for the population) and
`mu_max` [point, seed], points/<N..._P...>.npz, checkpoints/<point>/.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scaling.engine import config as C
from scaling.engine import experiment as E
from scaling.engine import members
from scaling.engine import io
from scaling.engine.members import Grid
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


def point_name(N: int, P: int) -> str:
  return f"N{N}_P{P if P else 'inf'}"


@dataclasses.dataclass(frozen=True)
class Spec:
  """One compiled program: width N and data size P (0: population)."""

  N: int
  P: int


@dataclasses.dataclass(frozen=True)
class Settings:
  """The checked fields of a config that the run and the theory comparison use."""

  points: tuple[tuple[int, int], ...]  # (N, P); P = 0: population
  n_seeds: int
  eta: float
  log_steps: np.ndarray  # 0, log_every, ..., steps
  lam_M: np.ndarray
  wstar_M: np.ndarray


def settings(cfg: dict[str, Any]) -> Settings:
  """Checks the fields of a plain config dict (ValueError naming the field); no device work."""
  C.integer(cfg, "seed", 0)
  for path in ("task.a", "task.b", "train.eta"):
    C.number(cfg, path, 0, lo_open=True)
  for path in ("task.M", "train.steps", "train.log_every", "train.checkpoint_every", "train.max_to_keep",
               "sweep.seeds"):
    C.integer(cfg, path, 1)
  C.multiple(cfg, "train.steps", "train.log_every")
  points = C.as_tuple(cfg["sweep"]["points"])
  if not points:
    raise ValueError("sweep.points is empty: give at least one (N, P) pair")
  for pt in points:
    ok = isinstance(pt, (list, tuple)) and len(pt) == 2 and all(C.is_int(x) for x in pt)
    if not ok or pt[0] < 1 or pt[1] < 0:
      raise ValueError(f"sweep.points must be (N, P) pairs of integers with N >= 1 and P >= 0 (0 = infinity), "
                       f"got {pt!r}")
  points = tuple((int(N), int(P)) for N, P in points)
  if len(set(points)) != len(points):
    raise ValueError(f"sweep.points has repeated (N, P) pairs: {points}")
  t, tr = cfg["task"], cfg["train"]
  lam_M, wstar_M = rf.power_law_task(t["a"], t["b"], t["M"])
  return Settings(points, cfg["sweep"]["seeds"], float(tr["eta"]), np.arange(0, tr["steps"] + 1, tr["log_every"]),
                  lam_M, wstar_M)


def _seed_keys(seed: int, n_seeds: int, index: np.ndarray | None = None) -> jax.Array:
  """split(key(seed), n_seeds), optionally taken at `index` (the members' seed indices)."""
  keys = members.seed_keys(seed, n_seeds)
  if index is None:
    return keys
  with jax.transfer_guard("allow"):
    return keys[index]


# ------------------------------------------------------------------------------------------------------------------
# One seed (pure; the engine vmaps, jits and shards these)


def _problem(seed_key: jax.Array, lam_M: jax.Array, wstar_M: jax.Array, eta: jax.Array, N: int, P: int):
  """(GDProblem, μ_max) of one seed: the draws of `random_features.sample(seed_key, lam, N, P or inf)`."""
  # pylint: disable=protected-access
  proj_key, data_key = jax.random.split(seed_key)
  A_NxM = rf._projection(proj_key, 0, N, lam_M.shape[0])
  psi_PxM = None if P == 0 else rf._features(data_key, lam_M, P)
  return rf._gd_problem(A_NxM, psi_PxM, lam_M, wstar_M, jnp.float64(N), jnp.float64(max(P, 1)), eta,
                        population=P == 0)


@functools.partial(jax.jit, static_argnames=("N", "P"))
def _mu_max_S(keys_S: jax.Array, lam_M: jax.Array, wstar_M: jax.Array, *, N: int, P: int) -> jax.Array:
  """μ_max(FĜ) of every seed of point (N, P): the stability check of `plan` (float64: inside enable_x64)."""
  return jax.vmap(lambda k: _problem(k, lam_M, wstar_M, jnp.float64(0.0), N, P)[1])(keys_S)


def evaluate(w_N: jax.Array, problem: rf.GDProblem) -> dict[str, jax.Array]:
  """Test loss Σ λ_k v_k² and train loss |g − Bᵀw|² of weights w (the expressions of `random_features.gd_step`)."""
  v_M = problem.wstar_M - (w_N @ problem.A_NxM) * problem.inv_sqrt_n
  r_Q = problem.g_Q - problem.B_NxQ.T @ w_N
  return {"test_loss": jnp.sum(problem.lam_M * v_M ** 2), "train_loss": jnp.sum(r_Q ** 2)}


def gd_steps(w_N: jax.Array, problem: rf.GDProblem, n_steps: int) -> tuple[jax.Array, jax.Array]:
  """`n_steps` GD steps w ← w + η B r, r = g − Bᵀw; returns (w, |r|² before each step)."""
  def step(w_N, _):
    r_Q = problem.g_Q - problem.B_NxQ.T @ w_N
    return w_N + problem.eta * (problem.B_NxQ @ r_Q), jnp.sum(r_Q ** 2)
  return jax.lax.scan(step, w_N, None, length=n_steps)


# ------------------------------------------------------------------------------------------------------------------
# The experiment


class RFGD(E.Experiment):
  """GD of random-feature models: points are (N, P), members the seeds."""

  name = "rf_gd"
  unit = "seeds"
  x64 = True
  finite_names = {"test_loss": "test loss", "train_loss": "train loss"}

  def default_config(self) -> ml_collections.ConfigDict:
    return rf_gd_config()

  def plan(self, cfg: dict[str, Any]) -> E.Plan:
    s = settings(cfg)
    with jax.enable_x64(True), jax.transfer_guard("allow"):
      keys_S, lam_M, wstar_M = _seed_keys(cfg["seed"], s.n_seeds), jnp.asarray(s.lam_M), jnp.asarray(s.wstar_M)
      mu_max = np.stack([np.asarray(jax.device_get(_mu_max_S(keys_S, lam_M, wstar_M, N=N, P=P)))
                         for N, P in s.points])
    worst = np.unravel_index(np.argmax(mu_max), mu_max.shape)
    if not s.eta * mu_max[worst] < 2:
      N, P = s.points[worst[0]]
      raise ValueError(f"GD is unstable: train.eta * mu_max = {s.eta} * {mu_max[worst]:.4g} = "
                       f"{s.eta * mu_max[worst]:.4g} >= 2 at (N, P) = ({N}, {P}), seed {worst[1]}; "
                       f"use train.eta < {2 / mu_max.max():.4g}")
    tr = cfg["train"]
    points = tuple(E.Point(point_name(N, P), (i,), Spec(N, P), tr["steps"], {"N": N, "P": P})
                   for i, (N, P) in enumerate(s.points))
    coords = {"t": s.eta * s.log_steps, "N": np.asarray([N for N, _ in s.points]),
              "P": np.asarray([P if P else math.inf for _, P in s.points], np.float64)}
    return E.Plan(cfg, {"point": np.asarray([p.name for p in points])}, points, Grid.of(seed=range(s.n_seeds)),
                  tr["log_every"], tr["checkpoint_every"], tr["max_to_keep"], coords, extra=mu_max)

  def inputs(self, plan: E.Plan, point: E.Point, spec):
    s = settings(plan.config)
    keys = _seed_keys(plan.config["seed"], s.n_seeds, plan.grid.index("seed"))
    return keys, (s.lam_M, s.wstar_M, np.float64(s.eta))

  def init(self, key, shared, *, spec: Spec):
    lam_M, wstar_M, eta = shared
    problem, _ = _problem(key, lam_M, wstar_M, eta, spec.N, spec.P)
    return jnp.zeros(spec.N, jnp.float64), problem

  def chunk(self, w_N, problem, shared, start, *, spec: Spec, n_steps: int):
    evals = evaluate(w_N, problem)
    w_N, loss_S = gd_steps(w_N, problem, n_steps)
    return w_N, evals, {"loss": loss_S}

  def evaluate(self, w_N, problem, shared, step, *, spec: Spec):
    return evaluate(w_N, problem)

  def record(self, plan: E.Plan, point: E.Point, step: int, ev: dict[str, np.ndarray]) -> dict[str, Any]:
    test = ev["test_loss"]
    return {"t": plan.config["train"]["eta"] * step, "test_loss": float(test.mean()), "test_loss_min": float(test.min()), "test_loss_max": float(test.max()),
            "train_loss": float(ev["train_loss"].mean())}

  def progress(self, rec: dict[str, Any]) -> str:
    return f"test loss {rec['test_loss']:.4g}, train loss {rec['train_loss']:.4g}"

  def arrays(self, plan: E.Plan, arrays) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    return {"mu_max": (np.asarray(plan.extra, np.float64), AXES[:2])}


EXPERIMENT = RFGD()


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> E.Plan:
  """Checks a config (ValueError naming the field, or the η·μ_max < 2 check) and builds the plan; `extra` holds
  μ_max [point, seed]. Writes nothing."""
  return E.check(EXPERIMENT, config)


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
        devices: Sequence[jax.Device] | None = None) -> io.Curves:
  """Runs (or resumes) the experiment in `workdir`; returns the curves (also in `workdir/curves.npz`).

  All validation (the η·μ_max < 2 check included) happens before anything is written. `devices`: where the seeds
  are sharded (default: all local devices).
  """
  return E.run(EXPERIMENT, config, workdir, devices)


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
  cfg = C.checked_dict(config, rf_gd_config())
  s = settings(cfg)
  have = {int(x) for x in curves.coords["log_step"]}
  logged = [int(x) for x in s.log_steps if x > 0 and x in have]
  if steps is None:
    idx = np.unique(np.round(np.geomspace(1, len(logged), min(n_times, len(logged)))).astype(int)) - 1
    steps = [logged[j] for j in idx]
  bad = [x for x in steps if x not in logged]
  if bad:
    raise ValueError(f"steps {bad} are not logged steps > 0 of this run (log_every={cfg['train']['log_every']})")
  where = [int(np.nonzero(curves.coords["log_step"] == x)[0][0]) for x in steps]
  t_T = s.eta * np.asarray(steps, np.float64)
  lam, wstar = s.lam_M, s.wstar_M
  rows = []
  for i, (N, P) in enumerate(s.points):
    with jax.transfer_guard("allow"):  # analysis on the host, outside any hot loop
      theory = dict(zip(("test", "train"), solver.loss_curve(lam, wstar ** 2, t_T, 1.0 / N, 1.0 / P if P else 0.0)))
      if flow:
        sim = rf.simulate(cfg["seed"], lam, wstar, [N], [P if P else math.inf], t_T, s.n_seeds)
    for j, step in enumerate(steps):
      row: dict[str, Any] = {"point": point_name(N, P), "N": N, "P": P, "step": step, "t": float(t_T[j])}
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
