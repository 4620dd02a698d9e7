"""A pure-function decoder-only transformer: the Llama family and GPT-NeoX (Pythia) from one implementation.

Switches (`LMConfig`):
  * Llama: RMSNorm, sequential residual, full rotary, grouped-query attention (`n_kv_heads < n_heads`), SwiGLU MLP,
    no biases, tied input/output embeddings (SmolLM2).
  * GPT-NeoX: LayerNorm, parallel attention + MLP residual, partial rotary (`rotary_dim < head_dim`), GELU MLP,
    biases, untied `unembed`.

Parameters are a dict pytree with the blocks stacked on a leading layer axis (one `lax.scan` over layers)::

  embed        V x D
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


# --------------------------------------------------------------------------------------------------------------- init


def init(key: jax.Array, cfg: LMConfig, std: float = 0.02) -> Params:
  """Random parameters: normal(0, std) matrices (output projections of each block scaled by 1/sqrt(2 L), as in
  GPT-2), zero biases, unit norm scales; float32."""
  L, D, F, V = cfg.n_layers, cfg.d_model, cfg.d_ff, cfg.vocab_size
  q, kv = cfg.n_heads * cfg.hd, cfg.kv_heads * cfg.hd
  k_embed, k_unembed, k_blocks = jax.random.split(key, 3)
  out_std = std / math.sqrt(2 * L)
  shapes = {"wq": ((L, D, q), std), "wk": ((L, D, kv), std), "wv": ((L, D, kv), std), "wo": ((L, q, D), out_std),
            "w_up": ((L, D, F), std), "w_down": ((L, F, D), out_std)}
  if cfg.mlp == "swiglu":
    shapes["w_gate"] = ((L, D, F), std)
  keys = jax.random.split(k_blocks, len(shapes))
  blocks: Params = {n: s * jax.random.normal(k, shape, jnp.float32) for k, (n, (shape, s)) in zip(keys, shapes.items())}
  if cfg.bias:
    blocks.update(bq=jnp.zeros((L, q)), bk=jnp.zeros((L, kv)), bv=jnp.zeros((L, kv)), bo=jnp.zeros((L, D)))
    if cfg.mlp == "gelu":
      blocks.update(b_up=jnp.zeros((L, F)), b_down=jnp.zeros((L, D)))
  for n in NORM_NAMES:
    blocks[n] = _norm_params(cfg, (L, D))
  params: Params = {"embed": std * jax.random.normal(k_embed, (V, D), jnp.float32), "blocks": blocks,
                    "final_norm": _norm_params(cfg, (D,))}
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
  """(total, non-embedding) parameter counts; non-embedding = all but `embed` and `unembed` (norms included), the
  convention of Pythia's `num_params` that the paper's Fig 3 uses (pythia-70m: 18,915,328)."""
  shapes = param_shapes(cfg)
  total = sum(int(np.prod(s.shape)) for s in jax.tree.leaves(shapes))
  emb = sum(int(np.prod(shapes[n].shape)) for n in EMBED_NAMES if n in shapes)
  return total, total - emb


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


def _attention(p: Params, x_BxTxD: jax.Array, cos: jax.Array, sin: jax.Array, cfg: LMConfig) -> jax.Array:
  B, T, _ = x_BxTxD.shape
  H, K, E = cfg.n_heads, cfg.kv_heads, cfg.hd
  q, k, v = (jnp.einsum("btd,de->bte", x_BxTxD, p[w]) for w in ("wq", "wk", "wv"))
  if cfg.bias:
    q, k, v = q + _lead(p["bq"], q), k + _lead(p["bk"], k), v + _lead(p["bv"], v)
  q_BxTxHxE = _rope(q.reshape(B, T, H, E), cos, sin)
  k_BxTxKxE = _rope(k.reshape(B, T, K, E), cos, sin)
  v_BxTxKxE = v.reshape(B, T, K, E)
  q_BxTxKxGxE = q_BxTxHxE.reshape(B, T, K, H // K, E)  # query head h uses kv head h // (H/K), as repeat_kv does
  s_BxKxGxTxS = jnp.einsum("btkge,bske->bkgts", q_BxTxKxGxE, k_BxTxKxE) / math.sqrt(E)
  causal_TxS = jnp.tril(jnp.ones((T, T), bool))
  s_BxKxGxTxS = jnp.where(causal_TxS[None, None, None], s_BxKxGxTxS, jnp.finfo(jnp.float32).min)
  w_BxKxGxTxS = jax.nn.softmax(s_BxKxGxTxS, axis=-1)
  o_BxTxKxGxE = jnp.einsum("bkgts,bske->btkge", w_BxKxGxTxS, v_BxTxKxE)
  out = jnp.einsum("bte,ed->btd", o_BxTxKxGxE.reshape(B, T, H * E), p["wo"])
  return out + _lead(p["bo"], out) if cfg.bias else out


def _mlp(p: Params, x_BxTxD: jax.Array, cfg: LMConfig) -> jax.Array:
  up = jnp.einsum("btd,df->btf", x_BxTxD, p["w_up"])
  if cfg.mlp == "swiglu":
    h = jax.nn.silu(jnp.einsum("btd,df->btf", x_BxTxD, p["w_gate"])) * up
    return jnp.einsum("btf,fd->btd", h, p["w_down"])
  h = jax.nn.gelu(up + _lead(p["b_up"], up), approximate=False)
  out = jnp.einsum("btf,fd->btd", h, p["w_down"])
  return out + _lead(p["b_down"], out)


def _block(p: Params, x_BxTxD: jax.Array, cos: jax.Array, sin: jax.Array, cfg: LMConfig) -> jax.Array:
  attn = _attention(p, _norm(p["norm1"], x_BxTxD, cfg), cos, sin, cfg)
  if cfg.parallel_residual:
    return x_BxTxD + attn + _mlp(p, _norm(p["norm2"], x_BxTxD, cfg), cfg)
  x_BxTxD = x_BxTxD + attn
  return x_BxTxD + _mlp(p, _norm(p["norm2"], x_BxTxD, cfg), cfg)


def embed(params: Params, tokens_BxT: jax.Array) -> jax.Array:
  """Input embeddings [B, T, D]."""
  return jnp.take(params["embed"], tokens_BxT, axis=0)


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
  """Final norm and output projection: logits [B, T, V] (float32)."""
  h = _norm(params["final_norm"], x_BxTxD, cfg)
  w_DxV = params["embed"].T if cfg.tied else params["unembed"]
  return jnp.einsum("btd,dv->btv", h, w_DxV)


def apply(params: Params, tokens_BxT: jax.Array, cfg: LMConfig, remat: bool = False) -> jax.Array:
  """Logits [B, T, V] of a causal LM; position t sees tokens 0..t. Trailing padding does not change earlier
  positions."""
  if tokens_BxT.ndim != 2:
    raise ValueError(f"tokens must be [batch, time], got shape {tokens_BxT.shape}")
  if tokens_BxT.shape[1] > cfg.max_len:
    raise ValueError(f"sequence length {tokens_BxT.shape[1]} exceeds max_len={cfg.max_len}")
  return head(params, run_blocks(params["blocks"], embed(params, tokens_BxT), cfg, remat), cfg)


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
