"""One way to define an experiment, and `run`, which runs any of them.

An experiment is a `Experiment` subclass (one instance per module) with
- `default_config()`: the full config with every field (configs/ derive their variants from it);
- `plan(cfg)`: checks a config (ValueError naming the field) and returns a `Plan`: its points (one compiled
  program each, with a hashable static `spec`), the member grid (vmapped scalar axes) and the log schedule;
- pure per-member functions, which the engine vmaps over the member axis, jits once per point and shards over
  devices: `init(inputs, shared, spec=)` -> (state, consts), `chunk(state, consts, shared, start, spec=, n_steps=)`
  -> (state, evaluation at `start`, per-step metrics with "loss": the training loss of the parameters at step
  start + i), `evaluate(state, consts, shared, step, spec=)` -> evaluation at `step`;
- host hooks: `inputs(plan, point)` (member inputs with a leading member axis, and shared inputs), `record` /
  `progress` (a metrics line and the progress text), `outputs` / `arrays` (extra named arrays), and the optional
  `prepare` / `write` / `finish` around the run;
- optionally, packing several points into one program (`pack_group`, `pack`, `cost`, `memory`; see
  `scaling.engine.programs`). A bucket's points train for the same number of steps, unless `packs_steps` is True:
  then points of different steps may share a bucket, which runs to its longest point's steps; the experiment's
  inputs must carry each point's own steps, and its `chunk` must freeze a member (parameters and optimizer state)
  from step `point.steps` on. The engine records a point only at log steps <= its steps (its final evaluation is
  the one at its own last step), so its files and arrays are those of its own program.

The engine owns the rest (see `scaling.engine`). Evaluation arrays get the axes
shape axes + grid axes + ("log_step",) + `tail_axes[name]`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from typing import Any, Hashable, Mapping, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from scaling.engine import config as config_lib
from scaling.engine import distributed
from scaling.engine import members as members_lib
from scaling.engine import io as wd
from scaling.engine import programs as programs_lib
from scaling.engine.loop import ProgramRun

Arrays = dict[str, np.ndarray]


@dataclasses.dataclass(frozen=True)
class Point:
  """One compiled program of a sweep."""

  name: str  # file names in the workdir: points/<name>.npz, checkpoints/<name>/
  index: tuple[int, ...]  # position on the plan's shape axes
  spec: Hashable  # static: everything that changes shapes or code paths
  steps: int  # training steps (a multiple of the plan's log_every)
  coords: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # shown in metrics lines and messages


@dataclasses.dataclass(frozen=True)
class Plan:
  """A checked experiment: the config as a plain dict, shape axes, points, member grid and log schedule."""

  config: dict[str, Any]
  shape_axes: dict[str, np.ndarray]  # ordered; the points' `index` refers to them
  points: tuple[Point, ...]
  grid: members_lib.Grid
  log_every: int
  checkpoint_every: int  # in chunks of log_every steps
  max_to_keep: int
  coords: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)  # extra coordinates saved with the arrays
  extra: Any = None  # the experiment's own planned data
  one_program: bool = False  # pack the points into one program (see `scaling.engine.programs`); else one per shape
  efficiency: float = 0.8  # least useful / executed cost of the packed buckets
  max_memory_gb: float = 0.0  # memory budget of a program's member axis; 0: the devices' own limit

  @property
  def log_steps(self) -> np.ndarray:
    return np.arange(0, max(p.steps for p in self.points) + 1, self.log_every)


class Experiment:
  """Base class; see the module docstring. Methods taking `spec=` are pure and traced once per point."""

  name = "experiment"
  unit = "members"  # what the member axis holds, in the progress line
  x64 = False  # run the points (states, checkpoints) with float64 enabled
  tail_axes: Mapping[str, tuple[str, ...]] = {}  # extra trailing axes of evaluation arrays
  finite_names: Mapping[str, str] = {}  # evaluation key -> name in the NaN/Inf message; all must stay finite
  packs_steps = False  # points of different steps may share a bucket (members frozen past their own; see above)

  # -- config and plan -------------------------------------------------------------------------------------------
  def default_config(self) -> ml_collections.ConfigDict:
    raise NotImplementedError

  def plan(self, cfg: dict[str, Any]) -> Plan:
    raise NotImplementedError

  def prepare(self, plan: Plan, workdir: str) -> Plan:
    """Host work and checks that need the workdir (read only); runs before anything is written."""
    return plan

  def write(self, plan: Plan, workdir: str) -> None:
    """Writes the experiment's own setup files (after config.json)."""

  # -- packing several points into one program (optional) -----------------------------------------------------
  def pack_group(self, plan: Plan, point: Point) -> Hashable | None:
    """Points with the same (non-None) group may share a bucket of one program; None: never (the default)."""
    return None

  def pack(self, plan: Plan, points: Sequence[Point]) -> Hashable | None:
    """The static spec of a bucket running the members of `points` (shapes padded to the largest); None: cannot."""
    return None

  def cost(self, plan: Plan, spec: Hashable) -> float:
    """Cost (e.g. FLOPs) of one member's training step under `spec`; x steps, the bucketing's measure of padding
    waste."""
    return 1.0

  def memory(self, plan: Plan, spec: Hashable) -> float:
    """Estimated device bytes of one member under `spec` (state, inputs, activations); 0: never split."""
    return 0.0

  # -- device work (one member; pure) --------------------------------------------------------------------------
  def inputs(self, plan: Plan, point: Point, spec: Hashable) -> tuple[Any, Any]:
    """(member inputs with a leading axis of `plan.grid.size`, shared inputs) of a point running under `spec` (its
    own spec, or its bucket's with padded shapes: the inputs then carry the point's true sizes), host or device."""
    raise NotImplementedError

  def init(self, inputs: Any, shared: Any, *, spec: Any) -> tuple[Any, Any]:
    raise NotImplementedError

  def chunk(self, state: Any, consts: Any, shared: Any, start: jax.Array, *, spec: Any, n_steps: int):
    raise NotImplementedError

  def evaluate(self, state: Any, consts: Any, shared: Any, step: jax.Array, *, spec: Any) -> dict[str, jax.Array]:
    raise NotImplementedError

  def all_stopped(self, states: Any) -> bool:
    """True when no member trains any more (then only `evaluate` runs); `states` has the padded member axis."""
    return False

  # -- host outputs --------------------------------------------------------------------------------------------
  def record(self, plan: Plan, point: Point, step: int, evals: Arrays) -> dict[str, Any]:
    """Summary scalars of log step `step` for metrics.jsonl (evals hold the real members only)."""
    return {k: float(np.mean(v)) for k, v in evals.items() if np.ndim(v) == 1}

  def progress(self, rec: dict[str, Any]) -> str:
    """What the progress line shows of a metrics line."""
    return ""

  def units_per_step(self, plan: Plan, point: Point) -> dict[str, float]:
    """Work per step of all members, e.g. {"tokens": n}: the metrics lines get `tokens_per_s` next to steps/s."""
    return {}

  def outputs(self, plan: Plan, point: Point, states: Any) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """Per-member arrays of a finished point: name -> (array [members, ...], trailing axes)."""
    return {}

  def arrays(self, plan: Plan, arrays: Arrays) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """Extra named arrays of the whole run (may derive from the assembled `arrays`): name -> (array, axes)."""
    return {}

  def finish(self, plan: Plan, workdir: str, curves: wd.Curves) -> Any:
    """Runs after every point is complete; its value is what `run` returns (default: the curves)."""
    return curves


def check(exp: Experiment, config: ml_collections.ConfigDict | dict[str, Any]) -> Plan:
  """The experiment's plan of `config`, or ValueError naming the field. Writes nothing, compiles nothing."""
  return exp.plan(config_lib.checked_dict(config, exp.default_config()))


def assemble(exp: Experiment, plan: Plan, results: dict[str, Arrays],
             out_axes: dict[str, tuple[str, ...]]) -> wd.Curves:
  """Named-axis arrays of the points run so far; NaN (or -1 for integers) where a point has not run or has fewer
  log steps than the longest."""
  lead = tuple(len(v) for v in plan.shape_axes.values()) + plan.grid.shape
  lead_axes = tuple(plan.shape_axes) + plan.grid.axes
  n_logs = len(plan.log_steps)
  arrays: Arrays = {}
  axes: dict[str, tuple[str, ...]] = {}
  for point in plan.points:
    rec = results.get(point.name)
    if rec is None:
      continue
    for name, a in rec.items():
      per_log = name not in out_axes
      tail = (a.shape[1:] if not per_log else (n_logs,) + a.shape[2:])
      if name not in arrays:
        fill = np.nan if np.issubdtype(a.dtype, np.floating) else -1
        dtype = a.dtype if np.issubdtype(a.dtype, np.floating) or not per_log else np.float32
        arrays[name] = np.full(lead + tail, fill, dtype)
        axes[name] = lead_axes + (("log_step",) + tuple(exp.tail_axes.get(name, ())) if per_log else out_axes[name])
      a = a.reshape(plan.grid.shape + a.shape[1:])
      target = arrays[name][point.index]
      g = len(plan.grid.shape)
      target[(slice(None),) * g + (slice(0, a.shape[g]),) if per_log else ...] = a
  for name, (a, ax) in exp.arrays(plan, arrays).items():
    arrays[name], axes[name] = np.asarray(a), tuple(ax)
  coords = {**{k: np.asarray(v) for k, v in plan.shape_axes.items()},
            **{a: np.asarray(v) for a, v in zip(plan.grid.axes, plan.grid.values)},
            "log_step": plan.log_steps, **plan.coords}
  return wd.Curves(arrays, axes, coords)


def run(exp: Experiment, config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
        devices: Sequence[jax.Device] | None = None, only: Sequence[str] | None = None) -> Any:
  """Runs (or resumes, or skips when complete) `exp` with `config` in `workdir`; returns `exp.finish(...)`.

  Order: check the config, compare it with the workdir's, the experiment's read-only preparation, then take the
  workdir's lock and write. `devices`: where the member axis is sharded (default: all local devices). `only`: the
  point names of one task of a fan-out (whole `programs.units`); the workdir then holds those points only.
  """
  plan = check(exp, config)
  if only is not None:  # before anything is written
    programs_lib.check_only(exp, plan, only)
  workdir = os.path.abspath(workdir)
  resumed = wd.check_config(workdir, plan.config)
  mesh = members_lib.mesh(devices)
  primary = distributed.is_primary()  # process 0 holds the lock and writes files; every process computes
  with wd.lock(workdir) if primary else contextlib.nullcontext():
    plan = exp.prepare(plan, workdir)
    if primary:
      if not resumed:
        wd.write_config(workdir, plan.config)
      exp.write(plan, workdir)
    progs, summary = programs_lib.plan_programs(exp, plan, list(mesh.devices.flat), only)
    logging.info("%s: %d point(s) x %d %s on %d device(s); workdir %s", exp.name, len(plan.points), plan.grid.size,
                 exp.unit, mesh.devices.size, workdir)
    if plan.one_program:
      logging.info("%s: the sweep compiles %d program(s) of %d bucket(s) (useful / executed cost %.3f); estimated "
                   "memory %.3g GB of a %.3g GB budget%s", exp.name, len(progs), summary["buckets"],
                   summary["efficiency"], summary["bytes"] / 1e9, summary["budget"] / 1e9,
                   "" if len(progs) == 1 else ": it does not fit one program, so the member axis is split")
    else:
      logging.info("%s: the sweep compiles %d program(s), one per shape point", exp.name, len(progs))
    results: dict[str, Arrays] = {}
    out_axes: dict[str, tuple[str, ...]] = {}
    curves = None
    for prog in progs:
      res, axes = ProgramRun(exp, plan, prog, workdir, mesh).run()
      results.update(res)
      for ax in axes.values():
        out_axes.update({k: tuple(plan.shape_axes) + plan.grid.axes + v for k, v in ax.items()})
      curves = assemble(exp, plan, results, out_axes)
      if primary:
        curves.save(os.path.join(workdir, wd.CURVES))
    distributed.barrier("run-written")  # every process returns once process 0 has written the curves
    return exp.finish(plan, workdir, curves) if primary else curves
