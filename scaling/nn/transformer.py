"""A pure-function decoder-only transformer: the Llama family and GPT-NeoX (Pythia) from one implementation.

Switches (`LMConfig`):
  * Llama: RMSNorm, sequential residual, full rotary, grouped-query attention (`n_kv_heads < n_heads`), SwiGLU MLP,
    no biases, tied input/output embeddings (SmolLM2).
  * GPT-NeoX: LayerNorm, parallel attention + MLP residual, partial rotary (`rotary_dim < head_dim`), GELU MLP,
    biases, untied `unembed`.
  * minGPT (the BNSL addition toy): LayerNorm, pre-LN sequential blocks, learned positional embeddings
    (`position="learned"`, initialised to 0) instead of rotary, GELU MLP, biases, untied head without bias, and
    minGPT's init (`init="mingpt"`: every matrix N(0, 0.02), biases 0, in minGPT-port key order).

Parameters are a dict pytree with the blocks stacked on a leading layer axis (one `lax.scan` over layers)::

  embed        V x D
  pos_embed    max_len x D (learned positions only)
  blocks/      norm1/{scale[, bias]} LxD, wq LxDx(H*hd), wk/wv LxDx(K*hd), wo Lx(H*hd)xD, [bq, bk, bv, bo],
               norm2/{...}, MLP: w_gate, w_up LxDxF, w_down LxFxD (SwiGLU) or w_up, b_up, w_down, b_down (GELU)
  final_norm/  scale[, bias]  D
  unembed      D x V (untied only)

Rotary embeddings use the half-split ("rotate_half") layout of the Hugging Face classes; loaders of llama.cpp's
interleaved layout undo its row permutation (`scaling.lm.checkpoints`). Activations and losses are float32.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, Any]
NORM_NAMES = ("norm1", "norm2")  # per-block norms (QDG leaves them out; the final norm is kept)
EMBED_NAMES = ("embed", "unembed")


@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Architecture of a decoder-only transformer (hashable: it is a static argument of the jitted functions)."""

  vocab_size: int
  d_model: int
  n_layers: int
  n_heads: int
  d_ff: int
  n_kv_heads: int | None = None  # grouped-query attention; None = n_heads
  head_dim: int | None = None  # None = d_model // n_heads
  norm: str = "rms"  # "rms" (Llama) or "layer" (GPT-NeoX)
  norm_eps: float = 1e-5
  parallel_residual: bool = False  # GPT-NeoX: x + attn(ln1 x) + mlp(ln2 x)
  rotary_dim: int | None = None  # rotated dims per head (None = head_dim); Pythia: head_dim // 4
  rope_base: float = 10_000.0
  mlp: str = "swiglu"  # "swiglu" (Llama) or "gelu" (GPT-NeoX, exact erf GELU)
  bias: bool = False  # biases on q, k, v, o and the MLP (GPT-NeoX)
  tied: bool = True  # output projection = embed^T
  max_len: int = 2048
  position: str = "rotary"  # "rotary" or "learned" (absolute embeddings `pos_embed`, init 0; no rotary)
  init: str = "gpt2"  # "gpt2" (output projections std / sqrt(2 L)) or "mingpt" (every matrix std)
  name: str = ""

  def __post_init__(self):
    kv = self.kv_heads
    bad = []
    for f in ("vocab_size", "d_model", "n_layers", "n_heads", "d_ff", "max_len"):
      if getattr(self, f) < 1:
        bad.append(f"{f}={getattr(self, f)} must be >= 1")
    if self.head_dim is None and self.d_model % self.n_heads:
      bad.append(f"d_model={self.d_model} is not a multiple of n_heads={self.n_heads} (give head_dim)")
    if kv < 1 or self.n_heads % kv:
      bad.append(f"n_heads={self.n_heads} is not a multiple of n_kv_heads={kv}")
    if self.norm not in ("rms", "layer"):
      bad.append(f"norm={self.norm!r} is not 'rms' or 'layer'")
    if self.mlp not in ("swiglu", "gelu"):
      bad.append(f"mlp={self.mlp!r} is not 'swiglu' or 'gelu'")
    if self.position not in ("rotary", "learned"):
      bad.append(f"position={self.position!r} is not 'rotary' or 'learned'")
    if self.init not in ("gpt2", "mingpt"):
      bad.append(f"init={self.init!r} is not 'gpt2' or 'mingpt'")
    if not bad and (self.rot_dim % 2 or not 0 <= self.rot_dim <= self.hd):
      bad.append(f"rotary_dim={self.rot_dim} must be even and within [0, head_dim={self.hd}]")
    if bad:
      raise ValueError("LMConfig: " + "; ".join(bad))

  @property
  def kv_heads(self) -> int:
    return self.n_heads if self.n_kv_heads is None else self.n_kv_heads

  @property
  def hd(self) -> int:
    return self.d_model // self.n_heads if self.head_dim is None else self.head_dim

  @property
  def rot_dim(self) -> int:
    if self.position == "learned":
      return 0
    return self.hd if self.rotary_dim is None else self.rotary_dim


def llama(vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, **kw: Any) -> LMConfig:
  """A Llama-family config (RMSNorm, RoPE, GQA via `n_kv_heads`, SwiGLU, tied embeddings unless `tied=False`)."""
  return LMConfig(vocab_size, d_model, n_layers, n_heads, d_ff, **{"name": "llama", **kw})


def gpt_neox(vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int | None = None,
             rotary_pct: float = 0.25, **kw: Any) -> LMConfig:
  """A GPT-NeoX (Pythia) config: LayerNorm, parallel residual, partial rotary, GELU, biases, untied embeddings."""
  hd = d_model // n_heads
  return LMConfig(vocab_size, d_model, n_layers, n_heads, 4 * d_model if d_ff is None else d_ff,
                  **{"norm": "layer", "parallel_residual": True, "rotary_dim": int(hd * rotary_pct), "mlp": "gelu",
                     "bias": True, "tied": False, "name": "gpt_neox", **kw})


def mingpt(vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_ff: int, max_len: int,
           **kw: Any) -> LMConfig:
  """minGPT's GPT: LayerNorm, pre-LN sequential blocks, learned positions, GELU, biases, untied head, its init."""
  return LMConfig(vocab_size, d_model, n_layers, n_heads, d_ff,
                  **{"norm": "layer", "mlp": "gelu", "bias": True, "tied": False, "max_len": max_len,
                     "position": "learned", "init": "mingpt", "name": "mingpt", **kw})


# --------------------------------------------------------------------------------------------------------------- init


def init(key: jax.Array, cfg: LMConfig, std: float = 0.02) -> Params:
  """Random parameters: normal(0, std) matrices (output projections of each block scaled by 1/sqrt(2 L), as in
  GPT-2), zero biases, unit norm scales, zero positional embeddings; float32. `init="mingpt"`: every matrix N(0, std)
  (no output scaling), drawn in the key order of the addition toy's minGPT port (its numbers are unchanged)."""
  L, D, F, V = cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.vocab_size
  q, kv = cfg.n_heads * cfg.hd, cfg.kv_heads * cfg.hd
  out_std = std / math.sqrt(2 * L) if cfg.init == "gpt2" else std
  shapes = {"wq": ((L, D, q), std), "wk": ((L, D, kv), std), "wv": ((L, D, kv), std), "wo": ((L, q, D), out_std),
            "w_up": ((L, D, F), std), "w_down": ((L, F, D), out_std)}
  if cfg.mlp == "swiglu":
    shapes["w_gate"] = ((L, D, F), std)
  normal = lambda k, shape, s: s * jax.random.normal(k, shape, jnp.float32)
  if cfg.init == "mingpt":  # split(key, 2 + L) -> embed, unembed, one key per layer split over its matrices
    k_embed, k_unembed, *k_layers = jax.random.split(key, 2 + L)
    keys_L = [jax.random.split(k, len(shapes)) for k in k_layers]
    blocks: Params = {n: jnp.stack([normal(ks[j], shape[1:], s) for ks in keys_L])
                      for j, (n, (shape, s)) in enumerate(shapes.items())}
  else:
    k_embed, k_unembed, k_blocks = jax.random.split(key, 3)
    keys = jax.random.split(k_blocks, len(shapes))
    blocks = {n: normal(k, shape, s) for k, (n, (shape, s)) in zip(keys, shapes.items())}
  if cfg.bias:
    blocks.update(bq=jnp.zeros((L, q)), bk=jnp.zeros((L, kv)), bv=jnp.zeros((L, kv)), bo=jnp.zeros((L, D)))
    if cfg.mlp == "gelu":
      blocks.update(b_up=jnp.zeros((L, F)), b_down=jnp.zeros((L, D)))
  for n in NORM_NAMES:
    blocks[n] = _norm_params(cfg, (L, D))
  params: Params = {"embed": std * jax.random.normal(k_embed, (V, D), jnp.float32), "blocks": blocks,
                    "final_norm": _norm_params(cfg, (D,))}
  if cfg.position == "learned":
    params["pos_embed"] = jnp.zeros((cfg.max_len, D), jnp.float32)
  if not cfg.tied:
    params["unembed"] = std * jax.random.normal(k_unembed, (D, V), jnp.float32)
  return params


def _norm_params(cfg: LMConfig, shape: tuple[int, ...]) -> Params:
  p = {"scale": jnp.ones(shape, jnp.float32)}
  if cfg.norm == "layer":
    p["bias"] = jnp.zeros(shape, jnp.float32)
  return p


def param_shapes(cfg: LMConfig) -> Params:
  """The parameter pytree as ShapeDtypeStructs (no allocation)."""
  return jax.eval_shape(lambda k: init(k, cfg), jax.random.key(0))


def count_params(cfg: LMConfig) -> tuple[int, int]:
  """(total, non-embedding) parameter counts; non-embedding = all but `embed`, `unembed` and `pos_embed` (norms
  included), the convention of Pythia's `num_params` that the paper's Fig 3 uses (pythia-70m: 18,915,328)."""
  shapes = param_shapes(cfg)
  total = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  emb = sum(int(np.prod(shapes[n].shape)) for n in EMBED_NAMES + ("pos_embed",) if n in shapes)
  return total, total - emb


LINEAR_WEIGHTS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down", "unembed")


def linear_weight_mask(params: Params) -> Params:
  """True at the weight matrices of Linear layers (minGPT's weight-decay rule: not biases, norms or embeddings)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: str(path[-1].key) in LINEAR_WEIGHTS, params)


# ------------------------------------------------------------------------------------------------------------ forward


def _norm(p: Params, x: jax.Array, cfg: LMConfig) -> jax.Array:
  if cfg.norm == "rms":
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + cfg.norm_eps) * _lead(p["scale"], x)
  xc = x - jnp.mean(x, axis=-1, keepdims=True)
  y = xc * jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + cfg.norm_eps)
  return y * _lead(p["scale"], x) + _lead(p["bias"], x)


def _lead(v: jax.Array, like: jax.Array) -> jax.Array:
  """`v` with leading unit axes to the rank of `like` (explicit broadcasting; rank promotion is an error here)."""
  return v.reshape((1,) * (like.ndim - v.ndim) + v.shape)


def rope_tables(positions_T: jax.Array, cfg: LMConfig) -> tuple[jax.Array, jax.Array]:
  """cos, sin of shape [T, rot_dim] in the half-split layout (frequencies repeated for the two halves)."""
  r = cfg.rot_dim
  inv_freq = 1.0 / (cfg.rope_base ** (jnp.arange(0, r, 2, dtype=jnp.float32) / r))
  ang_TxR2 = positions_T.astype(jnp.float32)[:, None] * inv_freq[None, :]
  ang_TxR = jnp.concatenate([ang_TxR2, ang_TxR2], axis=-1)
  return jnp.cos(ang_TxR), jnp.sin(ang_TxR)


def _rope(x_BxTxHxE: jax.Array, cos_TxR: jax.Array, sin_TxR: jax.Array) -> jax.Array:
  r = cos_TxR.shape[-1]
  if r == 0:
    return x_BxTxHxE
  rot, rest = x_BxTxHxE[..., :r], x_BxTxHxE[..., r:]
  half = r // 2
  rotated = jnp.concatenate([-rot[..., half:], rot[..., :half]], axis=-1)
  cos, sin = cos_TxR[None, :, None, :], sin_TxR[None, :, None, :]
  return jnp.concatenate([rot * cos + rotated * sin, rest], axis=-1)


def _dense(x: jax.Array, w: jax.Array) -> jax.Array:
  """x @ w over the last axis, as one 2-D matmul (XLA:CPU differentiates 3-D ones ~1.5x slower)."""
  return (x.reshape(-1, x.shape[-1]) @ w).reshape(x.shape[:-1] + (w.shape[1],))


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU as PyTorch's nn.GELU(); written out since jax.nn.gelu(approximate=False) differentiates ~3x
  slower on XLA:CPU."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def _attention(p: Params, x_BxTxD: jax.Array, cos: jax.Array, sin: jax.Array, cfg: LMConfig,
               first: int = 0) -> jax.Array:
  """Causal self-attention output at positions first..T-1 (queries there; keys and values at every position)."""
  B, T, _ = x_BxTxD.shape
  H, K, E, Q = cfg.n_heads, cfg.kv_heads, cfg.hd, T - first
  q, k, v = _dense(x_BxTxD[:, first:], p["wq"]), _dense(x_BxTxD, p["wk"]), _dense(x_BxTxD, p["wv"])
  if cfg.bias:
    q, k, v = q + _lead(p["bq"], q), k + _lead(p["bk"], k), v + _lead(p["bv"], v)
  q_BxQxHxE = _rope(q.reshape(B, Q, H, E), cos[first:], sin[first:])
  k_BxTxKxE = _rope(k.reshape(B, T, K, E), cos, sin)
  v_BxTxKxE = v.reshape(B, T, K, E)
  q_BxQxKxGxE = q_BxQxHxE.reshape(B, Q, K, H // K, E)  # query head h uses kv head h // (H/K), as repeat_kv does
  s_BxKxGxQxS = jnp.einsum("btkge,bske->bkgts", q_BxQxKxGxE, k_BxTxKxE) / math.sqrt(E)
  causal_QxS = jnp.arange(first, T)[:, None] >= jnp.arange(T)[None, :]
  s_BxKxGxQxS = jnp.where(causal_QxS[None, None, None], s_BxKxGxQxS, jnp.finfo(jnp.float32).min)
  w_BxKxGxQxS = jax.nn.softmax(s_BxKxGxQxS, axis=-1)
  o_BxQxKxGxE = jnp.einsum("bkgts,bske->btkge", w_BxKxGxQxS, v_BxTxKxE)
  out = _dense(o_BxQxKxGxE.reshape(B, Q, H * E), p["wo"])
  return out + _lead(p["bo"], out) if cfg.bias else out


def _mlp(p: Params, x_BxTxD: jax.Array, cfg: LMConfig) -> jax.Array:
  up = _dense(x_BxTxD, p["w_up"])
  if cfg.mlp == "swiglu":
    return _dense(jax.nn.silu(_dense(x_BxTxD, p["w_gate"])) * up, p["w_down"])
  out = _dense(gelu(up + _lead(p["b_up"], up)), p["w_down"])
  return out + _lead(p["b_down"], out)


def _block(p: Params, x_BxTxD: jax.Array, cos: jax.Array, sin: jax.Array, cfg: LMConfig,
           first: int = 0) -> jax.Array:
  """One block; the output at positions first..T-1 only."""
  attn = _attention(p, _norm(p["norm1"], x_BxTxD, cfg), cos, sin, cfg, first)
  if cfg.parallel_residual:
    x_BxQxD = x_BxTxD[:, first:]
    return x_BxQxD + attn + _mlp(p, _norm(p["norm2"], x_BxQxD, cfg), cfg)
  x_BxQxD = x_BxTxD[:, first:] + attn
  return x_BxQxD + _mlp(p, _norm(p["norm2"], x_BxQxD, cfg), cfg)


def embed(params: Params, tokens_BxT: jax.Array) -> jax.Array:
  """Input embeddings [B, T, D] (plus the learned positional embeddings where the model has them)."""
  x_BxTxD = jnp.take(params["embed"], tokens_BxT, axis=0)
  if "pos_embed" in params:
    x_BxTxD = x_BxTxD + params["pos_embed"][None, : tokens_BxT.shape[1]]
  return x_BxTxD


def run_blocks(blocks: Params, x_BxTxD: jax.Array, cfg: LMConfig, remat: bool = False) -> jax.Array:
  """The residual stream after the (stacked) blocks `blocks`: any contiguous slice of the layer axis works, so a
  caller can split the stack (e.g. QDG differentiates only the last few blocks)."""
  cos, sin = rope_tables(jnp.arange(x_BxTxD.shape[1]), cfg)

  def body(x, p):
    return _block(p, x, cos, sin, cfg), None

  if remat:
    body = jax.checkpoint(body)
  x_BxTxD, _ = jax.lax.scan(body, x_BxTxD, blocks)
  return x_BxTxD


def head(params: Params, x_BxTxD: jax.Array, cfg: LMConfig) -> jax.Array:
  """Final norm and output projection (no bias): logits [B, T, V] (float32)."""
  h = _norm(params["final_norm"], x_BxTxD, cfg)
  return _dense(h, params["embed"].T if cfg.tied else params["unembed"])


def apply(params: Params, tokens_BxT: jax.Array, cfg: LMConfig, remat: bool = False, first: int = 0) -> jax.Array:
  """Logits [B, T - first, V] of a causal LM at positions first..T-1; position t sees tokens 0..t. Trailing padding
  does not change earlier positions. `first` > 0 skips the last block's queries, MLP and head at earlier positions
  (the same logits as `apply(...)[:, first:]` up to float rounding)."""
  if tokens_BxT.ndim != 2:
    raise ValueError(f"tokens must be [batch, time], got shape {tokens_BxT.shape}")
  T = tokens_BxT.shape[1]
  if T > cfg.max_len:
    raise ValueError(f"sequence length {T} exceeds max_len={cfg.max_len}")
  if not 0 <= first < T:
    raise ValueError(f"first={first} must be in [0, {T})")
  x_BxTxD = embed(params, tokens_BxT)
  if not first:
    return head(params, run_blocks(params["blocks"], x_BxTxD, cfg, remat), cfg)
  L = cfg.n_layers
  if L > 1:
    x_BxTxD = run_blocks(jax.tree.map(lambda a: a[: L - 1], params["blocks"]), x_BxTxD, cfg, remat)
  cos, sin = rope_tables(jnp.arange(T), cfg)
  x_BxQxD = _block(jax.tree.map(lambda a: a[L - 1], params["blocks"]), x_BxTxD, cos, sin, cfg, first)
  return head(params, x_BxQxD, cfg)


def cross_entropy(logits_BxTxV: jax.Array, targets_BxT: jax.Array) -> jax.Array:
  """Per-position cross-entropy in nats, float32."""
  logz = jax.nn.logsumexp(logits_BxTxV.astype(jnp.float32), axis=-1)
  picked = jnp.take_along_axis(logits_BxTxV, targets_BxT[..., None], axis=-1)[..., 0]
  return logz - picked.astype(jnp.float32)


def token_losses(params: Params, tokens_BxT: jax.Array, cfg: LMConfig, remat: bool = False) -> jax.Array:
  """Per-token losses [B, T-1] in nats: prediction l (logits at position l) against token l+1."""
  logits = apply(params, tokens_BxT, cfg, remat)
  return cross_entropy(logits[:, :-1], tokens_BxT[:, 1:])


def mean_loss(params: Params, tokens_BxT: jax.Array, lengths_B: jax.Array, cfg: LMConfig,
              remat: bool = False) -> jax.Array:
  """Mean per-token loss over the valid predictions (position l < length - 1) of a padded batch."""
  losses_BxT1 = token_losses(params, tokens_BxT, cfg, remat)
  valid = jnp.arange(losses_BxT1.shape[1])[None, :] < (lengths_B[:, None] - 1)
  return jnp.sum(jnp.where(valid, losses_BxT1, 0.0)) / jnp.maximum(jnp.sum(valid), 1)
