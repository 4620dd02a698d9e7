"""The MSP sweep as an experiment of the engine: points are the shape axes (width, D), members the vmapped axes
(seed, alpha, lr, weight_decay). The per-member training is `msp_train`'s. By default (`sweep.one_program`) the
engine packs every (width, D) point into one compiled program: buckets of points padded to their widest width and
largest D, each member masked to its own width and D (exact: see `msp_train`); with `one_program=False` every point
is its own program. The engine shards the members over all devices and owns the workdir, checkpoints, resume and the
named-axis arrays (axes `AXES`), the same in both modes.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scaling.engine import config as C
from scaling.engine import distributed
from scaling.engine import experiment as E
from scaling.engine import members
from scaling.engine import io
from scaling.engine.config import PRECISIONS
from scaling.engine.members import Grid
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
      one_program=True,  # widths and D on the member axis: one compiled program (False: one program per shape)
      efficiency=0.8,  # least useful / executed FLOPs of the width buckets (padding waste bound)
      max_memory_gb=0.0,  # memory budget of one program; 0: the device's (GPU) or the host's (CPU); over it: split
      width=(500,),  # shape axis: members of one program (padded and masked) or one program per width
      D=(-1,),  # shape axis; -1 = online (fresh samples every step), >= 1 = fixed training set of D samples
      seeds=1,  # vmapped: number of seeds
      alpha=(0.4,),  # vmapped: the paper's α (p_i ∝ i^-(α+1)); the original code's alpha is α+1
      lr=(1e-3,),  # vmapped
      weight_decay=(0.0,),  # vmapped (used by optimizer="adamw")
  ))
  return c


@dataclasses.dataclass(frozen=True)
class Extra:
  """The MSP task and the subsets of every seed (the plan's `extra`)."""

  task: task_lib.MSPSpec
  subsets: np.ndarray  # (n_seeds, n_tasks, k)


def point_name(width: int, D: int) -> str:
  return f"w{width}_D{'online' if D == -1 else D}"


def make_spec(cfg: dict[str, Any], task: task_lib.MSPSpec, width: int, D: int) -> msp_train.Spec:
  t, m = cfg["train"], cfg["model"]
  net = mlp.MLPSpec(task.input_dim, width, 2, m["depth"], m["activation"])
  return msp_train.Spec(task, net, t["batch_size"], D, t["eval_per_task"], t["optimizer"], t["b1"], t["b2"], t["eps"],
                    m["onehot_lookup"], m["matmul_precision"], t["stop_early"], t["stop_after"], t["stop_patience"])


class MSP(E.Experiment):
  """MLPs on multitask sparse parity: points are (width, D), members (seed, α, lr, weight decay)."""

  name = "msp"
  tail_axes = {"test_loss_task": ("task",), "test_acc_task": ("task",)}
  finite_names = {"test_loss": "test loss", "train_loss": "train loss"}

  def default_config(self) -> ml_collections.ConfigDict:
    return msp_config()

  def plan(self, cfg: dict[str, Any]) -> E.Plan:
    for path in ("train.batch_size", "train.steps", "train.log_every", "train.eval_per_task",
                 "train.checkpoint_every", "train.max_to_keep", "train.stop_patience", "sweep.seeds", "model.depth",
                 "task.n_tasks", "task.n", "task.k"):
      C.integer(cfg, path, 1)
    C.integer(cfg, "train.stop_after", 0)
    C.integer(cfg, "task.subset_seed", 0)
    C.integer(cfg, "seed", 0)
    C.multiple(cfg, "train.steps", "train.log_every")
    for path in ("train.b1", "train.b2"):
      C.number(cfg, path, 0, 1, hi_open=True)
    C.number(cfg, "train.eps", 0, lo_open=True)
    C.number(cfg, "task.offset")
    C.choice(cfg, "task.distribution", task_lib.DISTRIBUTIONS)
    C.choice(cfg, "model.matmul_precision", PRECISIONS)
    C.choice(cfg, "train.optimizer", msp_train.OPTIMIZERS)
    widths = C.axis(cfg, "sweep.width", integer=True, lo=1)
    Ds = C.axis(cfg, "sweep.D", integer=True, lo=1, allowed=(-1,))
    zipf = cfg["task"]["distribution"] == "zipf"
    alphas = C.axis(cfg, "sweep.alpha", lo=0, lo_open=zipf)
    lrs = C.axis(cfg, "sweep.lr", lo=0, lo_open=True)
    wds = C.axis(cfg, "sweep.weight_decay", lo=0)
    programs = C.program_options(cfg)
    t, m = cfg["task"], cfg["model"]
    spec = task_lib.MSPSpec(t["n_tasks"], t["n"], t["k"], float(t["offset"]), t["distribution"])
    task_lib.check_spec(spec)
    mlp.check_spec(mlp.MLPSpec(spec.input_dim, 1, 2, m["depth"], m["activation"]))
    n_seeds = cfg["sweep"]["seeds"]
    subset_seeds = [t["subset_seed"] + (i if t["subsets_per_seed"] else 0) for i in range(n_seeds)]
    first = task_lib.make_subsets(spec.n_tasks, spec.n, spec.k, subset_seeds[0])
    subsets = np.stack([first if s == subset_seeds[0] else task_lib.make_subsets(spec.n_tasks, spec.n, spec.k, s)
                        for s in subset_seeds])
    steps = cfg["train"]["steps"]
    points = tuple(E.Point(point_name(w, D), (i, j), make_spec(cfg, spec, w, D), steps, {"width": w, "D": D})
                   for (i, w), (j, D) in itertools.product(enumerate(widths), enumerate(Ds)))
    grid = Grid.of(seed=range(n_seeds), alpha=alphas, lr=lrs, weight_decay=wds)
    tr = cfg["train"]
    return E.Plan(cfg, {"width": np.asarray(widths), "D": np.asarray(Ds)}, points, grid, tr["log_every"],
                  tr["checkpoint_every"], tr["max_to_keep"], extra=Extra(spec, subsets), **programs)

  # -- packing: online points share buckets, and so do fixed-D points; widths and D are padded to the largest
  def pack_group(self, plan: E.Plan, point: E.Point) -> str:
    return "online" if point.spec.online else "fixed"

  def pack(self, plan: E.Plan, points) -> msp_train.Spec:
    return make_spec(plan.config, plan.extra.task, max(p.coords["width"] for p in points),
                     max(p.coords["D"] for p in points))

  def cost(self, plan: E.Plan, spec: msp_train.Spec) -> float:
    """Training FLOPs of one member-step: matmul FLOPs per example x the rows of its batch."""
    return float(mlp.flops_per_example(spec.model, spec.task.n_tasks if spec.onehot_lookup else 0)["train_step"]
                 * spec.batch_rows)

  def memory(self, plan: E.Plan, spec: msp_train.Spec) -> float:
    """Device bytes of one member: params with Adam's two moments and the gradient (x4), the dataset buffer, and
    the training and evaluation activations (pre-activation, activation and their gradients: 4 per hidden unit)."""
    params = mlp.param_count(spec.model)
    rows = spec.batch_rows
    data = 0 if spec.online else spec.D * (4 * spec.task.n_words + 8)
    hidden = spec.model.width * (spec.model.depth - 1)
    acts = 4 * hidden * rows + 2 * hidden * spec.task.n_tasks * spec.eval_per_task
    inputs = (rows + spec.task.n_tasks * spec.eval_per_task) * (spec.task.n + 12)
    return float(4 * (4 * params + acts) + data + inputs)

  def inputs(self, plan: E.Plan, point: E.Point, spec):
    seed_idx = plan.grid.index("seed")
    with jax.transfer_guard("allow"):  # setup: keys indexed on the host
      keys = members.seed_keys(plan.config["seed"], plan.grid.shape[0])[seed_idx]
    f32 = lambda a: plan.grid.column(a).astype(np.float32)
    sizes = lambda v: np.full(plan.grid.size, v, np.int32)  # the point's true width and D (the spec's are padded)
    return (keys, f32("alpha"), f32("lr"), f32("weight_decay"), plan.extra.subsets[seed_idx],
            sizes(point.coords["width"]), sizes(point.coords["D"])), None

  def init(self, inputs, shared, *, spec: msp_train.Spec):
    member = msp_train.make_member(*inputs, spec=spec)
    return msp_train.init_state(member, spec=spec), member

  def chunk(self, state, member, shared, start, *, spec: msp_train.Spec, n_steps: int):
    return msp_train.chunk(state, member, start, spec=spec, n_steps=n_steps)

  def evaluate(self, state, member, shared, step, *, spec: msp_train.Spec):
    return msp_train.evaluate(state, member, step, spec)

  def all_stopped(self, states) -> bool:
    return "early" in states and bool(jax.device_get(jnp.all(states["early"]["stopped"])))  # a replicated scalar

  def record(self, plan: E.Plan, point: E.Point, step: int, ev: dict[str, np.ndarray]) -> dict[str, Any]:
    bits = analysis.to_bits(ev["test_loss"])
    learned = (analysis.to_bits(ev["test_loss_task"]) < analysis.CONVERGED_BITS).sum(axis=1)
    return {"test_loss_bits": float(bits.mean()), "test_loss_bits_min": float(bits.min()),
            "test_loss_bits_max": float(bits.max()), "train_loss_bits": float(analysis.to_bits(ev["train_loss"]).mean()),
            "n_learned": float(learned.mean())}

  def progress(self, rec: dict[str, Any]) -> str:
    return f"test loss {rec['test_loss_bits']:.3f} bit"

  def outputs(self, plan: E.Plan, point: E.Point, states) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    stop = states["early"]["stop_step"] if "early" in states else np.full(plan.grid.size, -1, np.int32)
    return {"stop_step": (np.asarray(stop, np.int32), ())}

  def arrays(self, plan: E.Plan, arrays) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    task = plan.extra.task
    with jax.transfer_guard("allow"):  # host-side bookkeeping, outside any hot loop
      probs = np.stack([np.asarray(task_lib.task_probs(task, a)) for a in plan.grid.values[1]])
    params = [mlp.param_count(mlp.MLPSpec(task.input_dim, int(w), 2, plan.config["model"]["depth"],
                                                plan.config["model"]["activation"])) for w in plan.shape_axes["width"]]
    return {"probs": (probs, ("alpha", "task")), "params": (np.asarray(params), ("width",)),
            "subsets": (plan.extra.subsets, ("seed", "task", "subset"))}


EXPERIMENT = MSP()


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> E.Plan:
  """Checks a config (ValueError naming the field) and builds the plan. Touches no device, writes nothing."""
  return E.check(EXPERIMENT, config)


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
        devices: Sequence[jax.Device] | None = None, summarize: bool = False,
        only: Sequence[str] | None = None) -> io.Curves:
  """Runs (or resumes) a sweep in `workdir` and returns its curves (also written to `workdir/curves.npz`).

  All validation happens before anything is compiled or written. `devices`: where the member axis is sharded
  (default: all local devices). `summarize`: print the summary table and write `summary.png` at the end. `only`:
  the points of one task of a fan-out (`scaling.engine.programs.units`).
  """
  curves = E.run(EXPERIMENT, config, workdir, devices, only)
  if summarize and distributed.is_primary():  # process 0 writes the table and figure
    from scaling.quanta import summary as report  # pylint: disable=g-import-not-at-top
    report.summarize(workdir)
  return curves
