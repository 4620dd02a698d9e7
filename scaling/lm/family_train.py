"""Training of one seed of one family size as pure functions (the engine vmaps them over seeds).

Step `s` draws `batch_size` windows of `length + 1` tokens at uniform random starts of the training stream with
`fold_in(data_key, s)`, inside the jitted step (no host data pipeline); the loss is the mean next-token
cross-entropy over the `length` predictions of every window. Optimiser: global-norm clipping, then AdamW with
decoupled weight decay on the weight matrices only (embeddings and projections; not norm scales or biases); learning
rate: linear warmup from 0 over `warmup_steps`, then cosine decay to `end_lr_frac` of the peak at the last step.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from scaling.nn import transformer as lm

State = dict[str, Any]  # {"params": lm.Params, "opt": the optax state}


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of one compiled training program (hashable)."""

  model: lm.LMConfig
  batch_size: int
  length: int  # predictions per window
  steps: int
  lr: float
  warmup_steps: int
  end_lr_frac: float
  b1: float
  b2: float
  eps: float
  weight_decay: float
  grad_clip: float


def learning_rate(step: jax.Array, spec: Spec) -> jax.Array:
  """Linear warmup from 0 over `warmup_steps`, then cosine decay from `lr` to `end_lr_frac * lr` at `steps`."""
  s = jnp.asarray(step, jnp.float32)
  warm = spec.lr * s / max(spec.warmup_steps, 1)
  t = jnp.clip((s - spec.warmup_steps) / max(spec.steps - spec.warmup_steps, 1), 0.0, 1.0)
  decay = spec.lr * (spec.end_lr_frac + (1.0 - spec.end_lr_frac) * 0.5 * (1.0 + jnp.cos(jnp.pi * t)))
  return jnp.where(s < spec.warmup_steps, warm, decay)


def decay_mask(params: lm.Params) -> lm.Params:
  """True for weight matrices (embeddings and `w*` projections), False for norm scales / biases and biases."""
  def is_matrix(path: tuple[Any, ...], _: Any) -> bool:
    name = str(path[-1].key)
    return name in lm.EMBED_NAMES or name.startswith("w")

  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(spec: Spec) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(spec.grad_clip),
      optax.adamw(functools.partial(learning_rate, spec=spec), b1=spec.b1, b2=spec.b2, eps=spec.eps,
                  weight_decay=spec.weight_decay, mask=decay_mask))


def init_state(key: jax.Array, spec: Spec) -> State:
  params = lm.init(key, spec.model)
  return {"params": params, "opt": make_optimizer(spec).init(params)}


def sample_windows(key: jax.Array, train_N: jax.Array, batch_size: int, length: int) -> jax.Array:
  """`batch_size` windows of `length + 1` tokens at uniform random starts: [B, length + 1] int32."""
  starts_B = jax.random.randint(key, (batch_size,), 0, train_N.shape[0] - length)
  return jax.vmap(lambda s: jax.lax.dynamic_slice(train_N, (s,), (length + 1,)))(starts_B)


def window_loss(params: lm.Params, windows_BxT1: jax.Array, cfg: lm.LMConfig) -> jax.Array:
  """Mean next-token cross-entropy (nats) over all predictions of the windows."""
  logits_BxTxV = lm.apply(params, windows_BxT1[:, :-1], cfg)
  return jnp.mean(lm.cross_entropy(logits_BxTxV, windows_BxT1[:, 1:]))


def train_step(state: State, key: jax.Array, train_N: jax.Array, *, spec: Spec) -> tuple[State, dict[str, jax.Array]]:
  """One AdamW step on the batch drawn with `key`; metrics: the loss before the step and the gradient norm."""
  windows_BxT1 = sample_windows(key, train_N, spec.batch_size, spec.length)
  loss, grads = jax.value_and_grad(window_loss)(state["params"], windows_BxT1, spec.model)
  updates, opt = make_optimizer(spec).update(grads, state["opt"], state["params"])
  return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, {
      "loss": loss, "grad_norm": optax.tree.norm(grads)}


def chunk(state: State, data_key: jax.Array, start: jax.Array, train_N: jax.Array, eval_ExT1: jax.Array, *,
          spec: Spec, n_steps: int):
  """Evaluates at step `start`, then scans `n_steps` steps (step s uses `fold_in(data_key, s)`).

  Returns (state, {eval_loss, train_loss: mean over the chunk, lr at `start`}, per-step {loss, grad_norm}: "loss"
  of step s is that of the parameters after s updates, as the engine expects).
  """
  eval_loss = window_loss(state["params"], eval_ExT1, spec.model)

  def body(s: State, i: jax.Array):
    return train_step(s, jax.random.fold_in(data_key, start + i), train_N, spec=spec)

  state, metrics = jax.lax.scan(body, state, jnp.arange(n_steps, dtype=jnp.int32))
  evals = {"eval_loss": eval_loss, "train_loss": jnp.mean(metrics["loss"]), "lr": learning_rate(start, spec)}
  return state, evals, metrics


def evaluate(state: State, eval_ExT1: jax.Array, step: jax.Array, spec: Spec) -> dict[str, jax.Array]:
  """The evaluation after the last step: eval loss, train loss NaN (no chunk follows), lr at `step`."""
  eval_loss = window_loss(state["params"], eval_ExT1, spec.model)
  return {"eval_loss": eval_loss, "train_loss": jnp.full_like(eval_loss, jnp.nan), "lr": learning_rate(step, spec)}
