"""Full-batch training of the addition toy's GPT, one seed (the engine vmaps it over seeds).

Model: the shared transformer (`scaling.nn.transformer`) in its minGPT form (`lm.mingpt`): pre-LN blocks, token +
learned positional embeddings, causal attention, exact-GELU MLP, final LN, untied head without bias; minGPT's init
(weights N(0, 0.02), biases 0, LN (1, 0), positional embedding 0). Dropout is 0 (the later sweeps pass
`--dropout_prob=0.0`; spec §4b notes the job script may have dropped that flag).

Optimiser: AdamW (0.9, 0.95), weight decay 0.1 on Linear weights only, global grad-norm clip 1.0, constant lr 1e-4.
Full batch (the batch is the whole training set), so steps are deterministic: no per-step keys are needed.

Sizes on the member axis: the static `Spec` holds the rows of a bucket's training-set buffer (its largest size), while
every member carries its true size n and its steps as traced values (`Member`). The loss and training metrics weigh
the first n rows 1 and the padding rows 0 (mean over the n real problems), so padding adds exact zeros to the loss
and the gradients; from step `steps` on the member's parameters and optimizer state stay frozen. A member thus trains
as it would in a program of its own size and length, up to the order of float32 sums.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from scaling.bnsl.addition_task import Data, first_output
from scaling.nn import transformer as lm

Params = dict[str, Any]
State = dict[str, Any]  # {"params", "opt"}


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of one compiled program (with the training-set shape)."""

  model: lm.LMConfig
  train_size: int  # rows of the training-set buffer: the largest training set of the bucket
  n_digit: int = 4
  lr: float = 1e-4
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  grad_clip: float = 1.0
  matmul_precision: str = "highest"  # true f32 matmuls as PyTorch's default


class Member(NamedTuple):
  """A seed's constants (vmapped leading axis in a sweep): its training set and true sizes."""

  train: Data  # (spec.train_size, T) buffer: the first n rows are the training set, the rest padding
  n: jax.Array  # true training-set size, int32
  steps: jax.Array  # training steps; frozen from step `steps` on, int32


def make_optimizer(spec: Spec) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with decoupled weight decay on Linear weights only (minGPT's Trainer)."""
  return optax.chain(
      optax.clip_by_global_norm(spec.grad_clip),
      optax.adamw(spec.lr, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay,
                  mask=lm.linear_weight_mask))


def init_state(key: jax.Array, spec: Spec) -> State:
  params = lm.init(key, spec.model)
  return {"params": params, "opt": make_optimizer(spec).init(params)}


def apply(params: Params, x_NxT: jax.Array, spec: Spec, first: int = 0) -> jax.Array:
  """Next-token logits (N, T - first, vocab) at positions first..T-1 at the spec's matmul precision."""
  with jax.default_matmul_precision(spec.matmul_precision):
    return lm.apply(params, x_NxT, spec.model, first=first)


def per_problem(params: Params, data: Data, spec: Spec) -> tuple[jax.Array, jax.Array]:
  """Mean CE (nats) over the output digits of each problem, and exact match of all of them (greedy decoding of c
  gets c right iff every teacher-forced argmax is right)."""
  out = first_output(spec.n_digit)  # loss_mask(n_digit) is True exactly at positions out.. (a static slice)
  logits_NxOxV, y_NxO = apply(params, data.x_NxT, spec, first=out), data.y_NxT[:, out:]
  ce_NxO = optax.softmax_cross_entropy_with_integer_labels(logits_NxOxV, y_NxO)
  exact_N = jnp.all(jnp.argmax(logits_NxOxV, axis=-1) == y_NxO, axis=-1)
  return ce_NxO.mean(axis=-1), exact_N.astype(jnp.float32)


def loss_fn(params: Params, data: Data, spec: Spec, n: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Mean CE (nats) over all output digits of all problems (minGPT's ignore_index mean), and exact-match accuracy.

  `n`: only the first n problems count (weight 1; the others 0). Every problem has the same n_digit + 1 output
  digits, so the mean over the real problems of their per-problem means is the mean over all their output digits.
  """
  ce_N, exact_N = per_problem(params, data, spec)
  if n is None:
    return ce_N.mean(), exact_N.mean()
  w_N = (jnp.arange(ce_N.shape[0]) < n).astype(ce_N.dtype)
  n_real = n.astype(ce_N.dtype)
  return jnp.sum(ce_N * w_N) / n_real, jnp.sum(exact_N * w_N) / n_real


def train_step(state: State, batch: Data, *, spec: Spec,
               n: jax.Array | None = None) -> tuple[State, dict[str, jax.Array]]:
  """One full-batch AdamW step on the first `n` problems of `batch` (all if None); metrics are the train CE and
  accuracy *before* the step and the l2 norms."""
  (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, spec, n)
  updates, opt = make_optimizer(spec).update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"loss": loss, "acc": acc, "grad_norm": optax.tree.norm(grads), "update_norm": optax.tree.norm(updates),
             "param_norm": optax.tree.norm(params)}
  return {"params": params, "opt": opt}, metrics


def evaluate(params: Params, member: Member, test: Data, spec: Spec) -> dict[str, jax.Array]:
  """Test CE (nats, output digits) and exact-match accuracy on the test problems; the same on the training set."""
  test_ce, test_acc = loss_fn(params, test, spec)
  train_ce, train_acc = loss_fn(params, member.train, spec, member.n)
  return {"test_ce": test_ce, "test_acc": test_acc, "train_ce": train_ce, "train_acc": train_acc}


def chunk(state: State, member: Member, test: Data, start: jax.Array, *, spec: Spec, n_steps: int):
  """Evaluates, then scans the `n_steps` full-batch steps start, start + 1, ...; from step `member.steps` on the
  state stays as it is. The train metrics at the chunk start are the first step's (same params, same batch), so
  evaluation only runs the test forward.

  Returns (state, evaluation at the chunk start, per-step metrics: "loss" of step i is that of the parameters after
  start + i updates, as the engine expects).
  """
  test_ce, test_acc = loss_fn(state["params"], test, spec)

  def body(state: State, step: jax.Array) -> tuple[State, dict[str, jax.Array]]:
    new, metrics = train_step(state, member.train, spec=spec, n=member.n)
    live = step < member.steps  # a member past its own steps keeps its parameters and optimizer state
    return jax.tree.map(lambda b, a: jnp.where(live, b, a), new, state), metrics

  state, metrics = jax.lax.scan(body, state, start + jnp.arange(n_steps, dtype=jnp.int32))
  evals = {"test_ce": test_ce, "test_acc": test_acc, "train_ce": metrics["loss"][0], "train_acc": metrics["acc"][0]}
  return state, evals, metrics
