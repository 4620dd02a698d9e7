"""The BNSL toy experiment (spec bnsl.md §4b): a 1-layer GPT trained full-batch on 4-digit addition vs dataset size.

The task (problems, encoding, splits) is `scaling.bnsl.addition_task`; the model (the shared transformer in its
minGPT form) and the per-seed full-batch AdamW training are `scaling.bnsl.addition_train`.

Sweep on the engine (`scaling.engine`): points are the training-set sizes (shape axis `train_size`, each with its own
number of steps), members the seeds (vmapped, sharded over devices). By default (`sweep.one_program`) the sizes share
one compiled program: buckets of sizes padded to their largest training set, each member weighing only its own rows
and frozen after its own steps (exact up to float32 summation order: see `addition_train`); with
`one_program=False` every size is its own program. A seed's training set is a member input (host numpy, leading seed
axis, zero rows past its size), with its true size and steps; the test set is shared. PRNG: `split(key(seed), n_seeds)`
gives the seed keys, each split once into (init, data) keys; the data key seeds the host numpy stream of training
problems. Every size reuses the same seed keys (same init, nested training sets: common random numbers).

Evaluation every `log_every` steps: test CE in nats, the mean over all n+1 output digits of all test problems (minGPT's
ignore_index mean over its single test batch of 1000), exact-match accuracy, and the same two on the training set.

Workdir (the engine's): config.json, metrics.jsonl (one line per size and log step), curves.npz with axes
[train_size, seed, log_step] (+ per [train_size, seed] final/min summaries, `steps` per size), points/n<size>.npz,
checkpoints/<program>/ (`program`, or n<size> per size). Re-running resumes bitwise.

Differences from the original: the test problems come from our numpy stream, not `RandomState(1).permutation(10^8)`,
and the training sets from numpy rather than Python's `random.shuffle` (same distributions, different problems); the
original gave every (size, seed) run its own seed; PyTorch's clipping divides by norm + 1e-6.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from scaling.bnsl import addition_task as task
from scaling.bnsl import addition_train as train_lib
from scaling.engine import config as C
from scaling.engine import experiment as E
from scaling.engine import members
from scaling.engine import io
from scaling.engine.config import PRECISIONS
from scaling.engine.members import Grid
from scaling.nn import transformer as lm

AXES = ("train_size", "seed", "log_step")
SUMMARY_AXES = AXES[:2]


def addition_config() -> ml_collections.ConfigDict:
  """Spec §4b's setup (4 digits, d_model 128, 1 layer, lr 1e-4, full batch); configs/ derive their variants."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root key; the seed axis is split(key(seed), sweep.seeds)
  c.task = ml_collections.ConfigDict(dict(
      n_digit=4,
      n_test=1000,  # min(0.2 * 10^8, 1000) in the original
      split_seed=1,  # fixed seed of the test problems (the original's arithmetic_split_seed=1)
  ))
  c.model = ml_collections.ConfigDict(dict(
      n_layer=1, d_model=128, n_head=2, d_ff=512,  # n_head = max(2, d_model // 64), d_ff = 4 d_model
      matmul_precision="highest",  # true f32 matmuls as PyTorch's default
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=3200,  # full-batch steps of every size, unless data_steps is set
      # Samples per run as the original's --data_steps: () = use `steps`; one value for all sizes or one per size.
      # Steps of a size = ceil(data_steps / train_size), rounded up to a multiple of log_every.
      data_steps=(),
      log_every=16,  # the original evaluated every 16 steps
      lr=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0,
      checkpoint_every=50,  # in chunks of log_every steps
      max_to_keep=2,
      max_memory_gb=8.0,  # refuse a point whose training activations (`train_memory_gb`) would exceed this
  ))
  c.sweep = ml_collections.ConfigDict(dict(
      one_program=True,  # sizes on the member axis: one compiled program (False: one program per size)
      efficiency=0.8,  # least useful / executed FLOPs of the size buckets (padding and frozen-step waste bound)
      max_memory_gb=0.0,  # memory budget of one program; 0: the device's (GPU) or the host's (CPU); over it: split
      train_size=(160, 320, 480, 640, 800, 928),  # shape axis: members of one program (padded) or one program each
      seeds=5,  # vmapped
  ))
  return c


def model_config(cfg: dict[str, Any]) -> lm.LMConfig:
  m = cfg["model"]
  return lm.mingpt(task.VOCAB, m["d_model"], m["n_layer"], m["n_head"], m["d_ff"],
                   max_len=task.block_size(cfg["task"]["n_digit"]))


def train_memory_gb(model: lm.LMConfig, n_seeds: int, train_size: int) -> float:
  """Estimated memory (GB) of a point's full-batch training step: the float32 activations that the backward pass
  keeps for every token of every training problem of every seed (the dominant term: parameters, Adam state and the
  test forward are megabytes). Per token, T = sequence length, per layer 10 D + 2 F + 2 H T (LN1 in/out, q, k, v,
  attention output, residual, LN2 in/out, MLP output: ~10 D; MLP pre-activation and GELU output: 2 F; attention scores
  and probabilities: 2 H T), and once 3 D + 2 V (embedding, final LN in/out, logits and softmax):
    bytes = 4 * seeds * train_size * T * (L (10 D + 2 F + 2 H T) + 3 D + 2 V)."""
  D, F, H, T, V = model.d_model, model.d_ff, model.n_heads, model.max_len, model.vocab_size
  per_token = model.n_layers * (10 * D + 2 * F + 2 * H * T) + 3 * D + 2 * V
  return 4.0 * n_seeds * train_size * T * per_token / 1e9


def step_flops(model: lm.LMConfig, rows: int) -> float:
  """Matmul FLOPs of a full-batch training step on `rows` problems: 3x the forward (forward and backward), whose
  per-token FLOPs are per layer 2 (4 D^2 + 2 D F) (projections, MLP) + 4 T D (scores and values, causal half counted
  in full), and 2 D V for the head, at all T positions."""
  D, F, T, V = model.d_model, model.d_ff, model.max_len, model.vocab_size
  per_token = model.n_layers * (2 * (4 * D * D + 2 * D * F) + 4 * T * D) + 2 * D * V
  return 3.0 * rows * T * per_token


def _data_steps(cfg: dict[str, Any], sizes: tuple[int, ...]) -> tuple[int, ...]:
  """Training steps of each size (checked)."""
  tr = cfg["train"]
  log_every = tr["log_every"]
  data_steps = C.as_tuple(tr["data_steps"])
  if not data_steps:
    C.multiple(cfg, "train.steps", "train.log_every")
    return (tr["steps"],) * len(sizes)
  for v in data_steps:
    if not C.is_int(v) or v < 1:
      raise ValueError(f"train.data_steps values must be integers >= 1, got {v!r}")
  if len(data_steps) not in (1, len(sizes)):
    raise ValueError(f"train.data_steps needs 1 or {len(sizes)} (one per size) values, got {len(data_steps)}")
  data_steps = data_steps * len(sizes) if len(data_steps) == 1 else data_steps
  return tuple(-(-math.ceil(d / n) // log_every) * log_every for d, n in zip(data_steps, sizes))


def point_name(size: int) -> str:
  return f"n{size}"


def seed_keys(plan: E.Plan) -> tuple[jax.Array, list[list[int]]]:
  """Init keys (S,) and the host entropy of each seed's training stream, from split(key(seed), S) split once."""
  init_S, data_S = members.seed_keys(plan.config["seed"], plan.grid.size, 2)
  with jax.transfer_guard("allow"):
    entropy = np.asarray(jax.device_get(jax.random.key_data(data_S)), np.uint32)
  return init_S, [[int(v) for v in e.reshape(-1)] for e in entropy]


def datasets(plan: E.Plan, size: int) -> tuple[task.Data, task.Data]:
  """Training sets (S, size, T) of every seed and the shared test set (n_test, T), as numpy arrays."""
  t = plan.config["task"]
  test_idx = task.held_out_indices(t["n_digit"], t["n_test"], t["split_seed"])
  _, entropy = seed_keys(plan)
  train = [task.make_data(task.train_indices(t["n_digit"], size, e, test_idx), t["n_digit"]) for e in entropy]
  return task.Data(*(np.stack(a) for a in zip(*train))), task.make_data(test_idx, t["n_digit"])


class Addition(E.Experiment):
  """Points: training-set sizes; members: seeds. The training set of a seed is its member input."""

  name = "addition"
  unit = "seeds"
  finite_names = {"test_ce": "test CE", "train_ce": "train CE"}
  packs_steps = True  # sizes of different steps share a bucket: members are frozen past their own steps

  def default_config(self) -> ml_collections.ConfigDict:
    return addition_config()

  def plan(self, cfg: dict[str, Any]) -> E.Plan:
    C.integer(cfg, "seed", 0)
    n_digit = C.integer(cfg, "task.n_digit", 1, 9)  # indices are int64
    n_test = C.integer(cfg, "task.n_test", 1)
    C.integer(cfg, "task.split_seed", 0)
    num = task.n_problems(n_digit)
    if n_test >= num:
      raise ValueError(f"task.n_test={n_test} leaves no training problems of the {num} with {n_digit} digits")
    for path in ("model.n_layer", "model.d_model", "model.n_head", "model.d_ff", "train.steps", "train.log_every",
                 "train.checkpoint_every", "train.max_to_keep", "sweep.seeds"):
      C.integer(cfg, path, 1)
    m = cfg["model"]
    if m["d_model"] % m["n_head"]:
      raise ValueError(f"model.d_model={m['d_model']} must be divisible by model.n_head={m['n_head']}")
    C.choice(cfg, "model.matmul_precision", PRECISIONS)
    for path in ("train.lr", "train.eps", "train.grad_clip", "train.max_memory_gb"):
      C.number(cfg, path, 0, lo_open=True)
    for path in ("train.b1", "train.b2"):
      C.number(cfg, path, 0, 1, hi_open=True)
    C.number(cfg, "train.weight_decay", 0)
    programs = C.program_options(cfg)
    sizes = C.axis(cfg, "sweep.train_size", integer=True, lo=1)
    available = num - n_test
    if max(sizes) > available:
      raise ValueError(f"sweep.train_size {max(sizes)} exceeds the {available} non-test problems")
    steps = _data_steps(cfg, sizes)
    model, n_seeds, tr = model_config(cfg), cfg["sweep"]["seeds"], cfg["train"]
    need = train_memory_gb(model, n_seeds, max(sizes))
    if need > tr["max_memory_gb"]:
      raise ValueError(f"sweep.train_size {max(sizes)} with {n_seeds} seeds needs ~{need:.1f} GB of training "
                       f"activations, over train.max_memory_gb={tr['max_memory_gb']} (fewer seeds, smaller sizes, or "
                       "raise the limit)")
    spec = lambda n: train_lib.Spec(model, n, n_digit, float(tr["lr"]), float(tr["b1"]), float(tr["b2"]),
                                    float(tr["eps"]), float(tr["weight_decay"]), float(tr["grad_clip"]),
                                    m["matmul_precision"])
    points = tuple(E.Point(point_name(n), (i,), spec(n), s, {"train_size": n})
                   for i, (n, s) in enumerate(zip(sizes, steps)))
    return E.Plan(cfg, {"train_size": np.asarray(sizes)}, points, Grid.of(seed=range(n_seeds)), tr["log_every"],
                  tr["checkpoint_every"], tr["max_to_keep"], **programs)

  def prepare(self, plan: E.Plan, workdir: str) -> E.Plan:
    with jax.transfer_guard("allow"):  # eval_shape of the init from a Python-int key
      n_params = lm.count_params(plan.points[0].spec.model)[0]
    logging.info("addition: %d parameters", n_params)
    return plan

  # -- packing: every size may share a bucket (of any steps); the training-set buffer is padded to the largest
  def pack_group(self, plan: E.Plan, point: E.Point) -> str:
    return "sizes"

  def pack(self, plan: E.Plan, points: Sequence[E.Point]) -> train_lib.Spec:
    return dataclasses.replace(points[0].spec, train_size=max(p.coords["train_size"] for p in points))

  def cost(self, plan: E.Plan, spec: train_lib.Spec) -> float:
    """FLOPs of one seed's full-batch step: every row of the buffer, padding included."""
    return step_flops(spec.model, spec.train_size)

  def memory(self, plan: E.Plan, spec: train_lib.Spec) -> float:
    """Bytes of one seed's training activations on the buffer (`train_memory_gb`; the rest is megabytes)."""
    return train_memory_gb(spec.model, 1, spec.train_size) * 1e9

  def inputs(self, plan: E.Plan, point: E.Point, spec: train_lib.Spec):
    """(seed keys, training sets padded with zero rows to spec.train_size, true sizes, steps), and the test set."""
    init_S, _ = seed_keys(plan)
    n = point.coords["train_size"]
    train, test = datasets(plan, n)
    pad = lambda a: np.pad(a, ((0, 0), (0, spec.train_size - n), (0, 0)))
    full = lambda v: np.full(plan.grid.size, v, np.int32)
    return (init_S, task.Data(*map(pad, train)), full(n), full(point.steps)), test

  def init(self, inputs, shared, *, spec: train_lib.Spec):
    key, train, n, steps = inputs
    return train_lib.init_state(key, spec), train_lib.Member(train, n, steps)

  def chunk(self, state, member, test, start, *, spec: train_lib.Spec, n_steps: int):
    return train_lib.chunk(state, member, test, start, spec=spec, n_steps=n_steps)

  def evaluate(self, state, member, test, step, *, spec: train_lib.Spec):
    return train_lib.evaluate(state["params"], member, test, spec)

  def record(self, plan: E.Plan, point: E.Point, step: int, ev: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"test_ce": float(ev["test_ce"].mean()), "test_ce_min": float(ev["test_ce"].min()),
            "test_ce_max": float(ev["test_ce"].max()), "test_acc": float(ev["test_acc"].mean()),
            "train_ce": float(ev["train_ce"].mean()), "train_acc": float(ev["train_acc"].mean())}

  def progress(self, rec: dict[str, Any]) -> str:
    return f"test CE {rec['test_ce']:.3f} nats, test acc {rec['test_acc']:.3f}, train CE {rec['train_ce']:.3f}"

  def arrays(self, plan: E.Plan, arrays) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    """Per [train_size, seed]: the final test CE, accuracy and train CE, and the min test CE over the logged steps
    (NaN for sizes not yet run); `steps` per size."""
    steps = np.asarray([p.steps for p in plan.points])
    out = {"steps": (steps, ("train_size",))}
    if "test_ce" not in arrays:
      return out
    rows, final = np.arange(len(steps)), steps // plan.log_every
    for name in ("test_ce", "test_acc", "train_ce"):
      out[f"final_{name}"] = (arrays[name][rows, :, final], SUMMARY_AXES)
    test_ce = arrays["test_ce"]
    min_ce = np.full(test_ce.shape[:2], np.nan, test_ce.dtype)
    ran = np.isfinite(test_ce).any(axis=-1)
    min_ce[ran] = np.nanmin(test_ce[ran], axis=-1)
    out["min_test_ce"] = (min_ce, SUMMARY_AXES)
    return out

  def finish(self, plan: E.Plan, workdir: str, curves: io.Curves) -> io.Curves:
    logging.info("addition summary:\n%s", summary_table(curves))
    return curves


EXPERIMENT = Addition()


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> E.Plan:
  """Checks a config (ValueError naming the field) and builds the plan. Touches no device, writes nothing."""
  return E.check(EXPERIMENT, config)


def summary(curves: io.Curves) -> dict[str, np.ndarray]:
  """Per train_size, means over seeds: final and min-over-training test CE (nats), final exact-match accuracy."""
  return {"train_size": curves.coords["train_size"], "steps": curves["steps"],
          "final_test_ce": curves["final_test_ce"].mean(axis=1), "min_test_ce": curves["min_test_ce"].mean(axis=1),
          "final_test_acc": curves["final_test_acc"].mean(axis=1),
          "final_train_ce": curves["final_train_ce"].mean(axis=1)}


def summary_table(curves: io.Curves) -> str:
  s = summary(curves)
  n_seeds = len(curves.coords["seed"])
  lines = [f"{'train_size':>10} {'steps':>6} {'final test CE':>13} {'min test CE':>11} {'test acc':>8} "
           f"{'train CE':>8}   (nats, means over {n_seeds} seeds)"]
  for i in range(len(s["train_size"])):
    lines.append(f"{s['train_size'][i]:>10d} {s['steps'][i]:>6d} {s['final_test_ce'][i]:>13.4f} "
                 f"{s['min_test_ce'][i]:>11.4f} {s['final_test_acc'][i]:>8.3f} {s['final_train_ce'][i]:>8.4f}")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
        devices: Sequence[jax.Device] | None = None) -> io.Curves:
  """Runs (or resumes) the experiment in `workdir`; returns the curves (also in `workdir/curves.npz`).

  All validation happens before anything is compiled or written. `devices`: where the seed axis is sharded (default:
  all local devices).
  """
  return E.run(EXPERIMENT, config, workdir, devices)
