"""A small 1-D ResNet with a channel-width multiplier, as pure functions (no normalisation, one scalar logit).

Why this model: the dynamical-model paper's Fig 1(a, b) trains ResNets of several channel widths one pass on
CIFAR-5M; this is the same family shrunk to MNIST-1D's length-40 signals, so a 2-core CPU can sweep six widths.
Architecture (NWC layout, 'SAME' padding, kernel `k` everywhere):

  stem     conv 1 -> C_0 (stride 1)
  stage i  (i > 0 first: conv relu(h), C_{i-1} -> C_i, stride 2: the length halves)
           then `blocks` pre-activation residual blocks  h <- h + β · conv(relu(conv(relu(h))))
  head     global average pool of relu(h) over the length, linear C_last -> 1 logit

with C_i = max(1, round(width · channels[i])) and β = 1/√(total residual blocks).

Parametrisation: standard (PyTorch-like) with He-normal init, conv weights ~ N(0, 2/fan_in) (fan_in = k · C_in),
the readout ~ N(0, 1/C_last), every bias 0. A residual branch then has about the second moment of its input, so
without normalisation each block multiplies it by ≈ 1 + β² and the whole network by ≤ (1 + 1/n)^n < e: the logits
start at O(1) at every width (measured on MNIST-1D: their spread over inputs is 0.1-0.7 at widths 0.5-16). There
are no normalisation layers (no batch statistics): `apply` is one function of (params, x) whose NTK is that of the
trained network.

Params: {"stem": conv, "stage<i>": {"down": conv (i > 0), "block<j>": {"conv1", "conv2"}}, "head": {"w", "b"}},
a conv being {"w": (k, C_in, C_out), "b": (C_out,)}. `apply` reads the architecture off the params (the strides
off the presence of "down"), so it needs no config.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class CNNConfig:
  """The architecture at width 1 (hashable: part of a compiled program's static spec)."""

  channels: tuple[int, ...] = (8, 16)  # per stage at width 1; every stage after the first halves the length
  blocks: int = 1  # residual blocks per stage (two convs each)
  kernel: int = 3
  length: int = 40  # input signal length (MNIST-1D: 40)


def stage_channels(width: float, cfg: CNNConfig) -> tuple[int, ...]:
  """C_i = max(1, round(width · channels[i]))."""
  return tuple(max(1, int(round(width * c))) for c in cfg.channels)


def _lengths(cfg: CNNConfig) -> list[int]:
  """Signal length in each stage ('SAME' padding: stride 2 gives ceil(L / 2))."""
  out, n = [], cfg.length
  for i in range(len(cfg.channels)):
    n = n if i == 0 else -(-n // 2)
    out.append(n)
  return out


def _layers(width: float, cfg: CNNConfig) -> list[tuple[str, int, int, int]]:
  """Every conv as (path, C_in, C_out, output length), in order; the readout is separate."""
  chans, lens = stage_channels(width, cfg), _lengths(cfg)
  out = [("stem", 1, chans[0], lens[0])]
  for i, (c, n) in enumerate(zip(chans, lens)):
    if i > 0:
      out.append((f"stage{i}/down", chans[i - 1], c, n))
    for j in range(cfg.blocks):
      out += [(f"stage{i}/block{j}/conv1", c, c, n), (f"stage{i}/block{j}/conv2", c, c, n)]
  return out


def param_count(width: float, cfg: CNNConfig = CNNConfig()) -> int:
  """Weights and biases of the network at `width`."""
  convs = sum(cfg.kernel * ci * co + co for _, ci, co, _ in _layers(width, cfg))
  return convs + stage_channels(width, cfg)[-1] + 1


def flops_per_example(width: float, cfg: CNNConfig = CNNConfig()) -> int:
  """Training FLOPs per example: forward multiply-adds (convs: L_out · k · C_in · C_out; readout: C_last) x 2 FLOPs
  per multiply-add x 3 (forward + backward, the usual 6·N·D count). Biases, ReLUs and the pool are not counted."""
  macs = sum(n * cfg.kernel * ci * co for _, ci, co, n in _layers(width, cfg)) + stage_channels(width, cfg)[-1]
  return 2 * 3 * macs


def init(key: jax.Array, width: float, cfg: CNNConfig = CNNConfig()) -> Params:
  """He-normal conv weights, N(0, 1/C) readout, zero biases. All weights are consecutive slices (in `_layers`
  order, readout last) of ONE standard-normal draw `normal(key, (param_count,))` (one threefry call compiles several
  times faster than one per layer)."""
  layers = _layers(width, cfg)
  c_last = stage_channels(width, cfg)[-1]
  sizes = [cfg.kernel * ci * co for _, ci, co, _ in layers] + [c_last]
  z = jax.random.normal(key, (sum(sizes),), jnp.float32)
  offsets = [0, *itertools.accumulate(sizes)]
  params: Params = {}
  for l, (path, ci, co, _) in enumerate(layers):
    node = params
    *parents, leaf = path.split("/")
    for p in parents:
      node = node.setdefault(p, {})
    w = z[offsets[l]:offsets[l + 1]].reshape(cfg.kernel, ci, co) * math.sqrt(2.0 / (cfg.kernel * ci))  # He-normal
    node[leaf] = {"w": w, "b": jnp.zeros((co,), jnp.float32)}
  params["head"] = {"w": z[offsets[-2]:] / math.sqrt(c_last), "b": jnp.zeros((), jnp.float32)}
  return params


def _conv(p: dict[str, jax.Array], h_BxLxC: jax.Array, stride: int = 1) -> jax.Array:
  """'SAME' 1-D convolution as one matmul of the k shifted (strided) copies of the input: XLA:CPU trains this net
  5-15x faster than with `conv_general_dilated` (bench/vision_conv.py: widths 1-4, 1-2 members), and vmapped over
  members it stays a batched matmul (a vmapped conv becomes a grouped conv). Equal to
  `lax.conv_general_dilated(h, w, (stride,), "SAME", ("NWC", "WIO", "NWC")) + b` up to float rounding
  (tests/test_vision.py checks it)."""
  k, c_in, c_out = p["w"].shape
  n = h_BxLxC.shape[1]
  out = -(-n // stride)
  pad = max((out - 1) * stride + k - n, 0)
  hp = jnp.pad(h_BxLxC, ((0, 0), (pad // 2, pad - pad // 2), (0, 0)))
  patches_BxOxKC = jnp.concatenate([hp[:, j:j + (out - 1) * stride + 1:stride] for j in range(k)], axis=-1)
  w_KCxO = p["w"].reshape(k * c_in, c_out)
  return jnp.matmul(patches_BxOxKC, w_KCxO, precision=jax.lax.Precision.HIGHEST) + p["b"][None, None]


def n_blocks(params: Params) -> int:
  return sum(k.startswith("block") for name, st in params.items() if name.startswith("stage") for k in st)


def apply(params: Params, x_BxL: jax.Array) -> jax.Array:
  """The logits [B] of signals x [B, L]."""
  beta = 1.0 / math.sqrt(max(n_blocks(params), 1))
  h = _conv(params["stem"], x_BxL[:, :, None])
  for i in range(sum(name.startswith("stage") for name in params)):
    st = params[f"stage{i}"]
    if "down" in st:
      h = _conv(st["down"], jax.nn.relu(h), stride=2)
    for j in range(sum(k.startswith("block") for k in st)):
      b = st[f"block{j}"]
      h = h + beta * _conv(b["conv2"], jax.nn.relu(_conv(b["conv1"], jax.nn.relu(h))))
  pooled_BxC = jnp.mean(jax.nn.relu(h), axis=1)
  return pooled_BxC @ params["head"]["w"] + params["head"]["b"]


def bce(logits_B: jax.Array, s_B: jax.Array) -> jax.Array:
  """Binary cross-entropy in nats of ±1 targets, per example: log(1 + e^{−s·f}) = softplus(−s·f)."""
  return jax.nn.softplus(-s_B * logits_B)


def error(logits_B: jax.Array, s_B: jax.Array) -> jax.Array:
  """1 where the sign of the logit misses the ±1 target (a logit of exactly 0 counts as wrong), else 0."""
  return (s_B * logits_B <= 0).astype(jnp.float32)
