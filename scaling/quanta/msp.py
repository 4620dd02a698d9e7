"""Sweeps: a static loop over shape-changing axes (width, D) x vmapped axes (seed, alpha, lr, weight_decay).

Each (width, D) *shape point* is one compiled program whose leading axis holds every member of the vmapped grid.
When more than one device is visible, that axis is sharded over all local devices (jit + NamedSharding): the sweep is
embarrassingly parallel, so no collectives are needed and each device trains its slice of members.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import time
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scaling import io, loop
from scaling.config_utils import PRECISIONS, as_checked_dict, as_tuple
from scaling.nn import mlp
from scaling.quanta import analysis, msp_train
from scaling.quanta import task as task_lib

SHAPE_AXES = ("width", "D")
VMAP_AXES = ("seed", "alpha", "lr", "weight_decay")
AXES = SHAPE_AXES + VMAP_AXES + ("log_step", "task")


def msp_config() -> ml_collections.ConfigDict:
  """The paper's MSP task, model and optimizer (v4 script) at paper scale; configs/ derive their variants from it."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root key; the seed axis is split(key(seed), sweep.seeds)
  c.task = ml_collections.ConfigDict(dict(
      n_tasks=500, n=100, k=3,
      distribution="zipf",  # or "uniform"
      offset=0.0,
      subset_seed=0,  # Python `random` seed of the subsets (the original used its run seed, 0 in the paper)
      subsets_per_seed=False,  # True: seed index i uses subsets of subset_seed + i (the original's multi-seed sweeps)
  ))
  c.model = ml_collections.ConfigDict(dict(
      depth=2, activation="relu", onehot_lookup=True,
      matmul_precision="highest",  # f32 matmuls, as the original (PyTorch disables TF32); "default" allows TF32
  ))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=20000, steps=200_000, log_every=100, eval_per_task=1000,
      optimizer="adam", b1=0.9, b2=0.999, eps=1e-8,
      checkpoint_every=100,  # in chunks of log_every steps
      max_to_keep=2,
      # v5's early stopping, per member (frozen once stopped): after step stop_after, stop when the logged mean
      # test loss rose at stop_patience consecutive logs. The paper's figures used v4 (no stopping).
      stop_early=False, stop_after=4000, stop_patience=10,
  ))
  c.sweep = ml_collections.ConfigDict(dict(
      width=(500,),  # looped: one program per width
      D=(-1,),  # looped; -1 = online (fresh samples every step), >= 1 = fixed training set of D samples
      seeds=1,  # vmapped: number of seeds
      alpha=(0.4,),  # vmapped: the paper's α (p_i ∝ i^-(α+1)); the original code's alpha is α+1
      lr=(1e-3,),  # vmapped
      weight_decay=(0.0,),  # vmapped (used by optimizer="adamw")
  ))
  return c


@dataclasses.dataclass(frozen=True)
class Plan:
  """A validated sweep: shape points, the flattened member grid and everything static."""

  config: dict[str, Any]
  task: task_lib.MSPSpec
  widths: tuple[int, ...]
  Ds: tuple[int, ...]
  grid: dict[str, tuple]  # vmapped axis -> coordinate values (seed: indices)
  subsets: np.ndarray  # (n_seeds, n_tasks, k)
  log_steps: np.ndarray

  @property
  def grid_shape(self) -> tuple[int, ...]:
    return tuple(len(self.grid[a]) for a in VMAP_AXES)

  @property
  def n_members(self) -> int:
    return math.prod(self.grid_shape)

  def member_coords(self, i: int) -> dict[str, Any]:
    idx = np.unravel_index(i, self.grid_shape)
    return {a: self.grid[a][j] for a, j in zip(VMAP_AXES, idx)}

  def spec(self, width: int, D: int) -> msp_train.Spec:
    t, m = self.config["train"], self.config["model"]
    net = mlp.MLPSpec(self.task.input_dim, width, 2, m["depth"], m["activation"])
    return msp_train.Spec(self.task, net, t["batch_size"], D, t["eval_per_task"], t["optimizer"], t["b1"], t["b2"],
                      t["eps"], m["onehot_lookup"], m["matmul_precision"], t["stop_early"], t["stop_after"],
                      t["stop_patience"])


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> Plan:
  """Validates a config (raises ValueError with a clear message) and builds the sweep plan. Touches no device."""
  cfg = as_checked_dict(config, msp_config())
  t, tr, sw, m = cfg["task"], cfg["train"], cfg["sweep"], cfg["model"]

  def positive(name: str, values: Sequence[Any], integer: bool = True) -> None:
    for v in values:
      if (integer and (not isinstance(v, (int, np.integer)) or isinstance(v, bool))) or not v > 0:
        raise ValueError(f"{name} must be {'positive integers' if integer else '> 0'}, got {v!r}")

  positive("sweep.width", as_tuple(sw["width"]))
  positive("train.batch_size", [tr["batch_size"]])
  positive("train.steps", [tr["steps"]])
  positive("train.log_every", [tr["log_every"]])
  positive("train.eval_per_task", [tr["eval_per_task"]])
  positive("train.checkpoint_every", [tr["checkpoint_every"]])
  positive("train.max_to_keep", [tr["max_to_keep"]])
  positive("train.stop_patience", [tr["stop_patience"]])
  if not isinstance(tr["stop_after"], (int, np.integer)) or tr["stop_after"] < 0:
    raise ValueError(f"train.stop_after must be an integer >= 0, got {tr['stop_after']!r}")
  positive("sweep.seeds", [sw["seeds"]])
  positive("model.depth", [m["depth"]])
  positive("sweep.lr", as_tuple(sw["lr"]), integer=False)
  if tr["steps"] % tr["log_every"]:
    raise ValueError(f"train.steps={tr['steps']} must be a multiple of train.log_every={tr['log_every']}")
  for D in as_tuple(sw["D"]):
    if not isinstance(D, (int, np.integer)) or (D != -1 and D < 1):
      raise ValueError(f"sweep.D values must be -1 (online) or a dataset size D >= 1, got {D!r}")
  if t["distribution"] == "zipf":
    for a in as_tuple(sw["alpha"]):
      if not a > 0:
        raise ValueError(f"sweep.alpha must be > 0 for a Zipf task distribution (paper α), got {a!r}")
  for wd in as_tuple(sw["weight_decay"]):
    if not wd >= 0:
      raise ValueError(f"sweep.weight_decay must be >= 0, got {wd!r}")
  if m["matmul_precision"] not in PRECISIONS:
    raise ValueError(f"model.matmul_precision must be one of {PRECISIONS}, got {m['matmul_precision']!r}")
  if tr["optimizer"] not in msp_train.OPTIMIZERS:
    raise ValueError(f"train.optimizer must be one of {msp_train.OPTIMIZERS}, got {tr['optimizer']!r}")
  for name, values in (("width", sw["width"]), ("D", sw["D"]), ("alpha", sw["alpha"]), ("lr", sw["lr"]),
                       ("weight_decay", sw["weight_decay"])):
    if len(set(as_tuple(values))) != len(as_tuple(values)):
      raise ValueError(f"sweep.{name} has repeated values: {values}")
  if not isinstance(t["subset_seed"], (int, np.integer)) or t["subset_seed"] < 0:
    raise ValueError(f"task.subset_seed must be an integer >= 0, got {t['subset_seed']!r}")

  spec = task_lib.MSPSpec(t["n_tasks"], t["n"], t["k"], float(t["offset"]), t["distribution"])
  task_lib.check_spec(spec)
  mlp.check_spec(mlp.MLPSpec(spec.input_dim, 1, 2, m["depth"], m["activation"]))
  n_seeds = sw["seeds"]
  subset_seeds = [t["subset_seed"] + (i if t["subsets_per_seed"] else 0) for i in range(n_seeds)]
  first = task_lib.make_subsets(spec.n_tasks, spec.n, spec.k, subset_seeds[0])
  subsets = np.stack([first if s == subset_seeds[0] else task_lib.make_subsets(spec.n_tasks, spec.n, spec.k, s)
                      for s in subset_seeds])
  grid = {"seed": tuple(range(n_seeds)), "alpha": as_tuple(sw["alpha"]), "lr": as_tuple(sw["lr"]),
          "weight_decay": as_tuple(sw["weight_decay"])}
  log_steps = np.arange(0, tr["steps"] + 1, tr["log_every"])
  return Plan(cfg, spec, as_tuple(sw["width"]), as_tuple(sw["D"]), grid, subsets, log_steps)


def point_name(width: int, D: int) -> str:
  return f"w{width}_D{'online' if D == -1 else D}"


def _mesh(devices: Sequence[jax.Device] | None) -> Mesh:
  return Mesh(np.asarray(devices if devices is not None else jax.local_devices()), ("sweep",))


def _member_inputs(p: Plan, n_padded: int) -> tuple:
  """Flattened member-grid inputs, padded (by repeating member 0) to a multiple of the device count."""
  idx = np.arange(n_padded) % p.n_members
  cols = np.unravel_index(idx, p.grid_shape)
  seed_idx = cols[0]
  root = jax.random.key(p.config["seed"])
  seed_keys = jax.random.split(root, len(p.grid["seed"]))[seed_idx]
  values = [np.asarray(p.grid[a], np.float32)[c] for a, c in zip(VMAP_AXES[1:], cols[1:])]
  return (seed_keys, *values, p.subsets[seed_idx])


class _PointRun(loop.PointLoop):
  """One shape point: its member grid (sharded over `mesh`) as the members of the shared host loop."""

  def __init__(self, p: Plan, width: int, D: int, workdir: str, mesh: Mesh):
    t = p.config["train"]
    super().__init__(point_name(width, D), workdir, t["log_every"], t["steps"] // t["log_every"],
                     t["checkpoint_every"], t["max_to_keep"], p.n_members)
    self.p, self.width, self.D, self.mesh = p, width, D, mesh
    self.spec = p.spec(width, D)
    self.replicated = NamedSharding(mesh, P())

  def _step(self, step: int) -> jax.Array:
    return jax.device_put(np.int32(step), self.replicated)

  def init(self) -> tuple[msp_train.State, msp_train.Member]:
    n_dev = self.mesh.devices.size
    n_padded = -(-self.p.n_members // n_dev) * n_dev
    with jax.transfer_guard("allow"):  # setup: keys from Python ints (the launcher disallows implicit transfers)
      inputs = jax.device_put(_member_inputs(self.p, n_padded), NamedSharding(self.mesh, P("sweep")))
    members = msp_train.make_members(*inputs, spec=self.spec)
    return msp_train.init_states(members, spec=self.spec), members

  def chunk(self, states: msp_train.State, members: msp_train.Member, step: int):
    return msp_train.run_chunk(states, members, self._step(step), spec=self.spec, n_steps=self.log_every)

  def final_eval(self, states: msp_train.State, members: msp_train.Member, step: int) -> dict[str, jax.Array]:
    return msp_train.run_eval(states, members, self._step(step), spec=self.spec)

  eval_only = final_eval  # every member stopped early: only evaluate the frozen nets

  def all_stopped(self, states: msp_train.State) -> bool:
    return self.spec.stop_early and bool(np.all(jax.device_get(states["early"]["stopped"])))

  def finite(self, ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"test loss": ev["test_loss"], "train loss": ev["train_loss"]}

  def describe(self, i: int) -> str:
    return f"in shape point width={self.width}, D={self.D}, sweep member {i} {self.p.member_coords(i)}"

  def record(self, step: int, ev: dict[str, np.ndarray], extra: dict[str, Any], t0: float,
             done: int) -> dict[str, Any]:
    M = self.n_members
    bits = analysis.to_bits(ev["test_loss"][:M])
    learned = (analysis.to_bits(ev["test_loss_task"][:M]) < analysis.CONVERGED_BITS).sum(axis=1)
    now = time.time()
    return {"point": self.name, "width": self.width, "D": self.D, "step": step, "time": now,
            "steps_per_s": done / (now - t0) if done else None,
            "test_loss_bits": float(bits.mean()), "test_loss_bits_min": float(bits.min()),
            "test_loss_bits_max": float(bits.max()),
            "train_loss_bits": float(analysis.to_bits(ev["train_loss"][:M]).mean()),
            "n_learned": float(learned.mean()), **extra}

  def progress(self, rec: dict[str, Any], step: int) -> str:
    return f", test loss {rec['test_loss_bits']:.3f} bit"

  def extra_outputs(self, states: msp_train.State) -> dict[str, np.ndarray]:
    if not self.spec.stop_early:
      return {"stop_step": np.full(self.n_members, -1, np.int32)}
    return {"stop_step": np.asarray(jax.device_get(states["early"]["stop_step"]))[: self.n_members]}


def assemble(p: Plan, points: dict[tuple[int, int], dict[str, np.ndarray]]) -> io.Curves:
  """Stacks per-point member-flat arrays into named-axis arrays; points not yet run are NaN."""
  lead = (len(p.widths), len(p.Ds)) + p.grid_shape
  n_logs, T = len(p.log_steps), p.task.n_tasks
  arrays, axes = {}, {}
  for name, tail in (("test_loss_task", (n_logs, T)), ("test_acc_task", (n_logs, T)), ("test_loss", (n_logs,)),
                     ("test_acc", (n_logs,)), ("train_loss", (n_logs,))):
    a = np.full(lead + tail, np.nan, np.float32)
    for (i, j), rec in points.items():
      a[i, j] = rec[name].reshape(p.grid_shape + tail)
    arrays[name] = a
    axes[name] = AXES[: len(lead) + 1] + (("task",) if len(tail) == 2 else ())
  stop = np.full(lead, -1, np.int32)
  for (i, j), rec in points.items():
    stop[i, j] = rec["stop_step"].reshape(p.grid_shape)
  arrays["stop_step"], axes["stop_step"] = stop, AXES[: len(lead)]
  with jax.transfer_guard("allow"):  # host-side bookkeeping, outside any hot loop
    arrays["probs"] = np.stack([np.asarray(task_lib.task_probs(p.task, a)) for a in p.grid["alpha"]])
  axes["probs"] = ("alpha", "task")
  arrays["params"] = np.asarray([mlp.param_count(p.spec(w, -1).model) for w in p.widths])
  axes["params"] = ("width",)
  arrays["subsets"] = p.subsets
  axes["subsets"] = ("seed", "task", "subset")
  coords = {"width": np.asarray(p.widths), "D": np.asarray(p.Ds), "log_step": p.log_steps,
            **{a: np.asarray(p.grid[a]) for a in VMAP_AXES}}
  return io.Curves(arrays, axes, coords)


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
        devices: Sequence[jax.Device] | None = None, summarize: bool = False) -> io.Curves:
  """Runs (or resumes) a sweep in `workdir` and returns its curves (also written to `workdir/curves.npz`).

  All validation happens before anything is compiled or written. `devices`: where the member axis is sharded
  (default: all local devices). `summarize`: print the summary table and write `summary.png` at the end.
  """
  p = plan(config)
  workdir = os.path.abspath(workdir)
  resumed = io.check_config(workdir, p.config)
  mesh = _mesh(devices)
  os.makedirs(workdir, exist_ok=True)
  if not resumed:
    io.write_config(workdir, p.config)
  logging.info("sweep: %d shape points x %d members on %d device(s); workdir %s",
               len(p.widths) * len(p.Ds), p.n_members, mesh.devices.size, workdir)
  points: dict[tuple[int, int], dict[str, np.ndarray]] = {}
  for (i, w), (j, D) in itertools.product(enumerate(p.widths), enumerate(p.Ds)):
    points[i, j] = _PointRun(p, w, D, workdir, mesh).run()
    curves = assemble(p, points)
    curves.save(os.path.join(workdir, io.CURVES))
  if summarize:
    from scaling.quanta import summary  # pylint: disable=g-import-not-at-top
    summary.summarize(workdir)
  return curves
