"""Pure-function MLP: `init(key, spec)` / `apply(params, x)`.

`depth` counts Linear layers, as in the original code (depth 2 = one hidden layer). Weights and biases use PyTorch's
`nn.Linear` default init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)). Params are a list of `{"w": (in, out), "b": (out,)}`.
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


def init(key: jax.Array, spec: MLPSpec) -> Params:
  """PyTorch-default uniform init of every layer."""
  sizes = spec.sizes
  params = []
  for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
    kw, kb = jax.random.split(jax.random.fold_in(key, i))
    bound = 1.0 / jnp.sqrt(jnp.float32(fan_in))
    params.append({
        "w": jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
        "b": jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
    })
  return params


def param_count(spec: MLPSpec) -> int:
  """All weights and biases; width*(n_tasks+n+3)+2 for the default MSP net."""
  sizes = spec.sizes
  return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _head(params: Params, h: jax.Array, activation: str) -> jax.Array:
  act = ACTIVATIONS[activation]
  for layer in params[1:]:
    h = act(h) @ layer["w"] + layer["b"][None, :]
  return h


def apply(params: Params, x_BxI: jax.Array, activation: str = "relu") -> jax.Array:
  """Logits (B, out_dim) of a dense input."""
  return _head(params, x_BxI @ params[0]["w"] + params[0]["b"][None, :], activation)


def apply_lookup(params: Params, task_B: jax.Array, bits_BxN: jax.Array, activation: str = "relu") -> jax.Array:
  """Same logits as `apply(params, [one_hot(task) | bits])`, with the one-hot block done as a row lookup.

  The first layer's rows 0..n_tasks-1 multiply the one-hot control block, so their product is a gather.
  """
  w = params[0]["w"]
  n_tasks = w.shape[0] - bits_BxN.shape[1]
  h = w[:n_tasks][task_B] + bits_BxN.astype(jnp.float32) @ w[n_tasks:] + params[0]["b"][None, :]
  return _head(params, h, activation)


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
