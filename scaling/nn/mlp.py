"""Pure-function MLP: `init(key, spec, width)` / `apply(params, x, width=width)`.

`depth` counts Linear layers, as in the original code (depth 2 = one hidden layer). Weights and biases use PyTorch's
`nn.Linear` default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Params are a list of `{"w": (in, out), "b": (out,)}`.

Widths on the member axis: params are stored at the padded width W = `spec.width`; the true width w <= W may be a
traced per-member int32. Hidden units j >= w have zero incoming column, bias and outgoing row, and `apply(...,
width=w)` masks their activations where act(0) != 0 (`ZERO_AT_ZERO` needs no mask), so the padded network equals the
width-w network (forward, gradients, Adam).
Init is per unit (output unit j of layer i draws from `fold_in(fold_in(key, i), j)`) and `uniform` is 1-D
prefix-stable with threefry-partitionable, so the padded init sliced to w equals the width-w init bit for bit.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

Params = list[dict[str, jax.Array]]

ACTIVATIONS = {
    "relu": jax.nn.relu,
    "tanh": jnp.tanh,
    "sigmoid": jax.nn.sigmoid,
    "gelu": jax.nn.gelu,
}


# act(0) == 0 exactly: a padded unit (zero incoming weights and bias) is 0 without a mask, and its gradients are 0
# (its outgoing row is 0, so d loss / d activation is 0 whatever act'(0) is). Other activations are masked.
ZERO_AT_ZERO = frozenset({"relu", "tanh", "gelu"})


@dataclasses.dataclass(frozen=True)
class MLPSpec:
  in_dim: int
  width: int
  out_dim: int = 2
  depth: int = 2
  activation: str = "relu"

  @property
  def sizes(self) -> list[int]:
    return [self.in_dim] + [self.width] * (self.depth - 1) + [self.out_dim]


def check_spec(spec: MLPSpec) -> None:
  if spec.width < 1:
    raise ValueError(f"width must be >= 1, got {spec.width}")
  if spec.depth < 1:
    raise ValueError(f"depth (number of Linear layers) must be >= 1, got {spec.depth}")
  if spec.activation not in ACTIVATIONS:
    raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {spec.activation!r}")


def _layer(key: jax.Array, fan_in: int, fan_out: int, bound: jax.Array) -> dict[str, jax.Array]:
  """One Linear layer, unit by unit: output unit j draws its weight column and bias from `fold_in(key, j)`."""
  def unit(j: jax.Array) -> tuple[jax.Array, jax.Array]:
    kw, kb = jax.random.split(jax.random.fold_in(key, j))
    return (jax.random.uniform(kw, (fan_in,), jnp.float32, -bound, bound),
            jax.random.uniform(kb, (), jnp.float32, -bound, bound))
  w_OxI, b_O = jax.vmap(unit)(jnp.arange(fan_out, dtype=jnp.uint32))
  return {"w": w_OxI.T, "b": b_O}


def hidden_mask(width: int | jax.Array, padded: int) -> jax.Array:
  """(padded,) bool: which of the stored hidden units are real."""
  return jnp.arange(padded) < width


def init(key: jax.Array, spec: MLPSpec, width: int | jax.Array | None = None) -> Params:
  """PyTorch-default uniform init of every layer, at true hidden width `width` (default `spec.width`).

  The bound uses the true fan-in (`width` after layer 0); hidden units >= `width` are exactly 0 in and out.
  """
  width = spec.width if width is None else width
  sizes = spec.sizes
  mask_W = hidden_mask(width, spec.width)
  params = []
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    bound = 1.0 / jnp.sqrt(jnp.asarray(fan_in if i == 0 else width, jnp.float32))
    layer = _layer(jax.random.fold_in(key, i), fan_in, fan_out, bound)
    if i > 0:  # rows fed by hidden units
      layer["w"] = jnp.where(mask_W[:, None], layer["w"], 0.0)
    if i < len(sizes) - 2:  # columns and biases of hidden units
      layer = {"w": jnp.where(mask_W[None, :], layer["w"], 0.0), "b": jnp.where(mask_W, layer["b"], 0.0)}
    params.append(layer)
  return params


def param_count(spec: MLPSpec) -> int:
  """All weights and biases; width*(n_tasks+n+3)+2 for the default MSP net."""
  sizes = spec.sizes
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _head(params: Params, h: jax.Array, activation: str, width: int | jax.Array | None) -> jax.Array:
  """Hidden stack from the first pre-activation on; hidden activations of units >= `width` are zeroed."""
  act = ACTIVATIONS[activation]
  mask_1xW = None
  if width is not None and len(params) > 1 and activation not in ZERO_AT_ZERO:
    mask_1xW = hidden_mask(width, params[0]["w"].shape[1]).astype(jnp.float32)[None, :]
  for layer in params[1:]:
    a = act(h) if mask_1xW is None else act(h) * mask_1xW  # act(0) != 0 (sigmoid): the mask zeroes padded units
    h = a @ layer["w"] + layer["b"][None, :]
  return h


def apply(params: Params, x_BxI: jax.Array, activation: str = "relu",
          width: int | jax.Array | None = None) -> jax.Array:
  """Logits (B, out_dim) of a dense input; `width` masks hidden units >= width (None: no mask)."""
  return _head(params, x_BxI @ params[0]["w"] + params[0]["b"][None, :], activation, width)


def apply_lookup(params: Params, task_B: jax.Array, bits_BxN: jax.Array, activation: str = "relu",
                 width: int | jax.Array | None = None) -> jax.Array:
  """Same logits as `apply(params, [one_hot(task) | bits], activation, width)`, the one-hot block as a row lookup.

  The first layer's rows 0..n_tasks-1 multiply the one-hot control block, so their product is a gather.
  """
  w = params[0]["w"]
  n_tasks = w.shape[0] - bits_BxN.shape[1]
  h = w[:n_tasks][task_B] + bits_BxN.astype(jnp.float32) @ w[n_tasks:] + params[0]["b"][None, :]
  return _head(params, h, activation, width)


def flops_per_example(spec: MLPSpec, lookup_rows: int = 0) -> dict[str, Any]:
  """Multiply-add FLOPs (2 per MAC) of one forward and one training step (fwd + bwd ≈ 3x fwd, no dx of layer 0).

  `lookup_rows`: input rows handled as a lookup (the one-hot block), which cost no matmul.
  """
  sizes = spec.sizes
  fwd = 2 * ((sizes[0] - lookup_rows) * sizes[1] + sum(a * b for a, b in zip(sizes[1:-1], sizes[2:])))
  first = 2 * (sizes[0] - lookup_rows) * sizes[1]
  # backward: dW for every layer (= fwd), dx for every layer but the first.
  train = fwd + fwd + (fwd - first)
  return {"forward": fwd, "train_step": train}
