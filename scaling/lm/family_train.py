"""Training of one seed of one family size as pure functions (the engine vmaps them over seeds).

Step `s` takes `batch_size` windows of `length + 1` tokens of the training stream inside the jitted step (no host
data pipeline), by the data regime (`Spec.regime`, see `scaling.lm.family_data`): "random" draws uniform random
starts with `fold_in(data_key, s)`; "one_pass" and "reuse" take the starts `order_W[(s * batch_size + b) % W]`,
b < batch_size, of the host-built visit order (one pass: each window once; reuse: the slice's windows, cycled), so a
step's windows depend on the step index alone. The loss is the mean next-token cross-entropy over the `length`
predictions of every window. Optimiser: global-norm clipping, then AdamW with
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
  regime: str = "random"  # "random", "one_pass" or "reuse" (scaling.lm.family_data.REGIMES)


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
  return windows_at(starts_B, train_N, length)


def windows_at(starts_B: jax.Array, train_N: jax.Array, length: int) -> jax.Array:
  """The windows of `length + 1` tokens at `starts_B`: [B, length + 1] int32."""
  return jax.vmap(lambda s: jax.lax.dynamic_slice(train_N, (s,), (length + 1,)))(starts_B)


def ordered_starts(step: jax.Array, order_W: jax.Array, batch_size: int) -> jax.Array:
  """Starts of step `step` in the visit order: `order_W[(step * batch_size + b) % W]`, b < batch_size."""
  i_B = jnp.asarray(step, jnp.int32) * batch_size + jnp.arange(batch_size, dtype=jnp.int32)
  return order_W[i_B % order_W.shape[0]]


def batch_windows(step: jax.Array, data_key: jax.Array, train_N: jax.Array, order_W: jax.Array,
                  spec: Spec) -> jax.Array:
  """The training windows of step `step` under the spec's regime: [batch_size, length + 1] int32."""
  if spec.regime == "random":
    return sample_windows(jax.random.fold_in(data_key, step), train_N, spec.batch_size, spec.length)
  return windows_at(ordered_starts(step, order_W, spec.batch_size), train_N, spec.length)


def window_loss(params: lm.Params, windows_BxT1: jax.Array, cfg: lm.LMConfig) -> jax.Array:
  """Mean next-token cross-entropy (nats) over all predictions of the windows."""
  logits_BxTxV = lm.apply(params, windows_BxT1[:, :-1], cfg)
  return jnp.mean(lm.cross_entropy(logits_BxTxV, windows_BxT1[:, 1:]))


def train_step(state: State, windows_BxT1: jax.Array, *, spec: Spec) -> tuple[State, dict[str, jax.Array]]:
  """One AdamW step on the windows; metrics: the loss before the step and the gradient norm."""
  loss, grads = jax.value_and_grad(window_loss)(state["params"], windows_BxT1, spec.model)
  updates, opt = make_optimizer(spec).update(grads, state["opt"], state["params"])
  return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, {
      "loss": loss, "grad_norm": optax.tree.norm(grads)}


def fixed_losses(params: lm.Params, eval_ExT1: jax.Array, train_eval_ExT1: jax.Array,
                 spec: Spec) -> dict[str, jax.Array]:
  """{eval_loss: on the fixed held-out windows, train_eval_loss: on the fixed windows of the training data}."""
  return {"eval_loss": window_loss(params, eval_ExT1, spec.model),
          "train_eval_loss": window_loss(params, train_eval_ExT1, spec.model)}


def chunk(state: State, data_key: jax.Array, start: jax.Array, train_N: jax.Array, eval_ExT1: jax.Array,
          train_eval_ExT1: jax.Array, order_W: jax.Array, *, spec: Spec, n_steps: int):
  """Evaluates at step `start`, then scans `n_steps` steps (step s takes `batch_windows(s, ...)`).

  Returns (state, {eval_loss, train_eval_loss, train_loss: mean over the chunk, lr at `start`}, per-step {loss,
  grad_norm}: "loss" of step s is that of the parameters after s updates, as the engine expects).
  """
  evals = fixed_losses(state["params"], eval_ExT1, train_eval_ExT1, spec)

  def body(s: State, i: jax.Array):
    return train_step(s, batch_windows(start + i, data_key, train_N, order_W, spec), spec=spec)

  state, metrics = jax.lax.scan(body, state, jnp.arange(n_steps, dtype=jnp.int32))
  evals.update(train_loss=jnp.mean(metrics["loss"]), lr=learning_rate(start, spec))
  return state, evals, metrics


def evaluate(state: State, eval_ExT1: jax.Array, train_eval_ExT1: jax.Array, step: jax.Array,
             spec: Spec) -> dict[str, jax.Array]:
  """The evaluation after the last step: the fixed-window losses, train loss NaN (no chunk follows), lr at `step`."""
  evals = fixed_losses(state["params"], eval_ExT1, train_eval_ExT1, spec)
  evals.update(train_loss=jnp.full_like(evals["eval_loss"], jnp.nan), lr=learning_rate(step, spec))
  return evals
