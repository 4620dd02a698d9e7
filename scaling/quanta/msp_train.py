"""Training of MSP MLPs as pure functions: one `train_step`, `lax.scan` chunks, batched evaluation.

A *member* is one run of a sweep (a seed, scalar hyperparameters, and its own width and D). Everything here is
written for one member; the engine (`scaling.engine`) vmaps it over members. The static `Spec` holds the shapes of
a bucket: its width and D are the largest of its members (padded), while every member carries its true width and D
as traced values: hidden units past its width are masked (zero, no gradient, no update) and it samples only from the
first D rows of its dataset buffer, so it trains exactly as it would in a program of its own shape.

PRNG: each member's seed key is split once into purpose keys (init, data, shuffle, loop, eval); the batch of step s
uses `fold_in(loop_key, s)`, the shuffle of epoch e `task.epoch_index(shuffle_key, e, ., D)` and the evaluation
at step s `fold_in(eval_key, s)`, so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scaling.nn import mlp
from scaling.quanta import task as task_lib

OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of one compiled program (everything that changes shapes or code paths)."""

  task: task_lib.MSPSpec
  model: mlp.MLPSpec
  batch: int
  D: int = -1  # -1: online (fresh samples every step); >= 1: fixed training set of D samples
  eval_per_task: int = 1000
  optimizer: str = "adam"
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  onehot_lookup: bool = True
  matmul_precision: str = "highest"  # true f32 matmuls as PyTorch's default; "default" allows TF32 on GPUs
  # Early stopping of the original v5 script: stop once step > stop_after and the logged mean test loss has risen
  # at `stop_patience` consecutive logs. Per member: a stopped member's params and optimizer state stay frozen.
  stop_early: bool = False
  stop_after: int = 4000
  stop_patience: int = 10

  @property
  def online(self) -> bool:
    return self.D == -1

  @property
  def batch_rows(self) -> int:
    """Rows of a training batch: `batch` online, else min(D, batch) (`task.dataset_batch`)."""
    return self.batch if self.online else task_lib.minibatch_size(self.D, self.batch)


class Member(NamedTuple):
  """Per-member inputs that never change during training (vmapped leading axis in a sweep)."""

  alpha: jax.Array  # paper α of the Zipf law
  lr: jax.Array
  weight_decay: jax.Array
  subsets_TxK: jax.Array
  init_key: jax.Array
  loop_key: jax.Array
  shuffle_key: jax.Array
  eval_key: jax.Array
  width: jax.Array  # true hidden width (<= spec.model.width), int32
  D: jax.Array  # true training-set size (<= spec.D; -1 online), int32
  data: task_lib.Dataset | None  # fixed-D training set (spec.D rows, the first D used), None online


# {"params", "opt"}; with early stopping also "early":
# {"stopped": bool, "rises": consecutive rises of the logged test loss, "prev": last logged loss, "stop_step"}.
State = dict[str, Any]


def make_optimizer(spec: Spec, member: Member) -> optax.GradientTransformation:
  """The optimizer with this member's (possibly traced) learning rate and weight decay."""
  if spec.optimizer == "adam":
    return optax.adam(member.lr, b1=spec.b1, b2=spec.b2, eps=spec.eps)
  if spec.optimizer == "adamw":
    return optax.adamw(member.lr, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=member.weight_decay)
  if spec.optimizer == "sgd":
    return optax.sgd(member.lr)
  raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {spec.optimizer!r}")


def make_member(seed_key: jax.Array, alpha: jax.Array, lr: jax.Array, weight_decay: jax.Array,
                subsets_TxK: jax.Array, width: jax.Array | int | None = None, D: jax.Array | int | None = None, *,
                spec: Spec) -> Member:
  """Splits the seed key into purpose keys once and materialises the fixed-D dataset buffer (if any).

  `width` / `D`: the member's true sizes (default: the spec's); the buffer has spec.D rows, prefix-stable in D.
  """
  init_key, data_key, shuffle_key, loop_key, eval_key = jax.random.split(seed_key, 5)
  data = None
  if not spec.online:
    data = task_lib.make_dataset(data_key, spec.task, task_lib.task_probs(spec.task, alpha), subsets_TxK, spec.D)
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  i32 = lambda v, default: jnp.asarray(default if v is None else v, jnp.int32)
  return Member(f32(alpha), f32(lr), f32(weight_decay), subsets_TxK, init_key, loop_key, shuffle_key, eval_key,
                i32(width, spec.model.width), i32(D, spec.D), data)


def init_state(member: Member, *, spec: Spec) -> State:
  params = mlp.init(member.init_key, spec.model, width=member.width)
  state = {"params": params, "opt": make_optimizer(spec, member).init(params)}
  if spec.stop_early:
    state["early"] = {"stopped": jnp.bool_(False), "rises": jnp.int32(0), "prev": jnp.float32(jnp.inf),
                      "stop_step": jnp.int32(-1)}
  return state


def update_early_stop(early: dict[str, jax.Array], test_loss: jax.Array, step: jax.Array,
                      spec: Spec) -> dict[str, jax.Array]:
  """Records the test loss logged at `step`; stops once step > stop_after after `stop_patience` consecutive rises."""
  rises = jnp.where(test_loss > early["prev"], early["rises"] + 1, 0)
  stop_now = ~early["stopped"] & (step > spec.stop_after) & (rises >= spec.stop_patience)
  return {"stopped": early["stopped"] | stop_now, "rises": rises, "prev": test_loss,
          "stop_step": jnp.where(stop_now, step, early["stop_step"])}


def get_batch(member: Member, step: jax.Array, spec: Spec) -> task_lib.Batch:
  """The training batch of `step`: fresh samples online; else minibatch `step` of the epoch shuffles of the member's
  own first D samples (`task.dataset_batch`; weight 0 on padding rows)."""
  if spec.online:
    probs = task_lib.task_probs(spec.task, member.alpha)
    key = jax.random.fold_in(member.loop_key, step)
    return task_lib.online_batch(key, spec.task, probs, member.subsets_TxK, spec.batch)
  return task_lib.dataset_batch(member.data, member.shuffle_key, step, spec.task, spec.batch, member.D)


def logits_fn(params: mlp.Params, batch: task_lib.Batch, spec: Spec, width: jax.Array | None = None) -> jax.Array:
  with jax.default_matmul_precision(spec.matmul_precision):
    if spec.onehot_lookup:
      return mlp.apply_lookup(params, batch.task_B, batch.bits_BxN, spec.model.activation, width=width)
    x = task_lib.to_inputs(batch.task_B, batch.bits_BxN, spec.task.n_tasks)
    return mlp.apply(params, x, spec.model.activation, width=width)


def per_example(params: mlp.Params, batch: task_lib.Batch, spec: Spec,
                width: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Cross-entropy (nats) and 0/1 correctness of every example."""
  logits = logits_fn(params, batch, spec, width)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch.y_B)
  return ce, (jnp.argmax(logits, axis=-1) == batch.y_B).astype(jnp.float32)


def loss_fn(params: mlp.Params, batch: task_lib.Batch, spec: Spec, width: jax.Array | None = None) -> jax.Array:
  """Mean CE in nats over the (unmasked) batch."""
  ce, _ = per_example(params, batch, spec, width)
  return jnp.sum(ce * batch.weight_B) / jnp.sum(batch.weight_B)


def train_step(state: State, batch: task_lib.Batch, member: Member, spec: Spec) -> tuple[State, dict[str, jax.Array]]:
  """One optimizer step on `batch`; returns the new state and scalar metrics (loss in nats, l2 norms)."""
  loss, grads = jax.value_and_grad(loss_fn)(state["params"], batch, spec, member.width)
  updates, opt = make_optimizer(spec, member).update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), "update_norm": optax.tree.norm(updates),
             "param_norm": optax.tree.norm(params)}
  return {**state, "params": params, "opt": opt}, metrics


def evaluate(state: State, member: Member, step: jax.Array, spec: Spec) -> dict[str, jax.Array]:
  """Per-subtask CE (nats) and accuracy on `eval_per_task` fresh samples each, in one batched forward.

  Also the frequency-weighted means Σ p_i L_i and Σ p_i A_i, and the loss on the training batch of `step`.
  """
  key = jax.random.fold_in(member.eval_key, step)
  batch = task_lib.eval_batch(key, spec.task, member.subsets_TxK, spec.eval_per_task)
  ce, correct = per_example(state["params"], batch, spec, member.width)
  loss_T = ce.reshape(spec.task.n_tasks, spec.eval_per_task).mean(axis=1)
  acc_T = correct.reshape(spec.task.n_tasks, spec.eval_per_task).mean(axis=1)
  probs = task_lib.task_probs(spec.task, member.alpha)
  train_batch = get_batch(member, step, spec)
  return {"test_loss_task": loss_T, "test_acc_task": acc_T, "test_loss": jnp.dot(probs, loss_T),
          "test_acc": jnp.dot(probs, acc_T), "train_loss": loss_fn(state["params"], train_batch, spec, member.width)}


def chunk(state: State, member: Member, start: jax.Array, *, spec: Spec, n_steps: int):
  """Evaluates at `start`, then scans `n_steps` training steps.

  Returns (state, evaluation at `start`, per-step metrics: "loss" of step s is that of the parameters after s
  updates, as the engine expects).
  """
  evals = evaluate(state, member, start, spec)
  if spec.stop_early:
    state = {**state, "early": update_early_stop(state["early"], evals["test_loss"], start, spec)}

  def body(state, step):
    batch = get_batch(member, step, spec)
    new, metrics = train_step(state, batch, member, spec)
    if spec.stop_early:  # a stopped member keeps its parameters and optimizer state
      frozen = state["early"]["stopped"]
      new = {**new, **jax.tree.map(lambda a, b: jnp.where(frozen, a, b), {k: state[k] for k in ("params", "opt")},
                                   {k: new[k] for k in ("params", "opt")})}
    return new, metrics

  state, metrics = jax.lax.scan(body, state, start + jnp.arange(n_steps, dtype=jnp.int32))
  return state, evals, metrics


# One member's step, jitted (tests and bench/msp_throughput.py); sweeps run through `scaling.engine`.
jit_train_step = jax.jit(train_step, static_argnames=("spec",), donate_argnums=(0,))
