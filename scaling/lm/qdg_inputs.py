"""Quanta discovery from gradients (QDG), what gets clustered (spec `quanta.md` §4, §9): which predictions
(`select_tokens`: loss below a threshold, minus induction tokens (`induction_mask`), then every 50th, first 10,000)
and the optional sparse random (JL) projection of their per-token gradients (`sparse_projection`, the author's
`proj_dim=5000, sparsity=0.999` variant, generated on the fly from a PRNG key). The similarity / clustering /
reporting half is `scaling.lm.qdg_cluster`.

Flat prediction index: documents in order, each contributing max(len - 1, 0) predictions; prediction l of a document
predicts its token l + 1.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

LN2 = math.log(2.0)

INDUCTION_KINDS = ("trigram", "bigram")


# --------------------------------------------------------------------------- token selection


def _pred_offsets(lengths_D: np.ndarray) -> np.ndarray:
  """[D + 1] start of each document's predictions in the flat index (last entry = total predictions)."""
  preds_D = np.maximum(np.asarray(lengths_D, np.int64) - 1, 0)
  return np.concatenate([np.zeros(1, np.int64), np.cumsum(preds_D)])


def _flat_to_doc_pos(flat: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Flat prediction index -> (document, prediction position) via searchsorted over the cumulative counts."""
  flat = np.asarray(flat, np.int64)
  doc = np.searchsorted(offsets[1:], flat, side="right")
  return doc, flat - offsets[doc]


def induction_mask(tokens_T: np.ndarray, kind: str = "trigram") -> np.ndarray:
  """Bool [T-1] over the predictions of one document: is the target an induction token?

  "trigram" (the paper): prediction l is flagged when (tokens[l-1], tokens[l], tokens[l+1]) occurred earlier in the
  document as a trigram ending at a position < l + 1; prediction 0 is never flagged. "bigram" (the later
  quanta-discovery repo): flagged when (tokens[l], tokens[l+1]) occurred earlier. Vectorised first-occurrence pass
  (np.unique), O(T log T) in C rather than a Python set loop.
  """
  if kind not in INDUCTION_KINDS:
    raise ValueError(f"kind must be one of {INDUCTION_KINDS}, got {kind!r}")
  tokens_T = np.asarray(tokens_T)
  if tokens_T.ndim != 1:
    raise ValueError(f"tokens_T must be 1-D (one document), got shape {tokens_T.shape}")
  T = tokens_T.shape[0]
  mask = np.zeros(max(T - 1, 0), bool)
  n = 3 if kind == "trigram" else 2
  if T < n:
    return mask
  # grams ending at positions n-1 .. T-1, i.e. predictions n-2 .. T-2.
  grams_GxN = np.stack([tokens_T[i:T - n + 1 + i] for i in range(n)], axis=1)
  _, first, inverse = np.unique(grams_GxN, axis=0, return_index=True, return_inverse=True)
  repeated_G = first[inverse.ravel()] < np.arange(grams_GxN.shape[0])
  mask[n - 2:] = repeated_G
  return mask


def select_tokens(losses_flat: np.ndarray, tokens_DxT: np.ndarray, lengths_D: np.ndarray, threshold: float = 0.1,
                  units: str = "nats", exclude_induction: str | None = "trigram", every: int = 50,
                  first: int = 10_000) -> np.ndarray:
  """Sorted flat prediction indices chosen for QDG (spec §4.2); defaults are the paper's.

  `losses_flat` are per-prediction losses in nats over the flat index of (`tokens_DxT` [D, T] padded,
  `lengths_D` [D]); `threshold` is in `units` ("nats" or "bits"). Keeps losses < threshold, removes induction tokens
  of `exclude_induction` kind (None keeps them), then takes `[::every][:first]`. (The flat -> (doc, pos) map is
  computed here from `lengths_D`.)
  """
  if units not in ("nats", "bits"):
    raise ValueError(f"units must be 'nats' or 'bits', got {units!r}")
  if exclude_induction is not None and exclude_induction not in INDUCTION_KINDS:
    raise ValueError(f"exclude_induction must be None or one of {INDUCTION_KINDS}, got {exclude_induction!r}")
  if int(every) < 1 or int(first) < 1:
    raise ValueError(f"every and first must be >= 1, got every={every}, first={first}")
  tokens_DxT, lengths_D = np.asarray(tokens_DxT), np.asarray(lengths_D)
  losses_flat = np.asarray(losses_flat, np.float64)
  if tokens_DxT.ndim != 2 or lengths_D.ndim != 1 or lengths_D.shape[0] != tokens_DxT.shape[0]:
    raise ValueError(f"need tokens_DxT [D, T] and lengths_D [D], got {tokens_DxT.shape} and {lengths_D.shape}")
  if lengths_D.size and (lengths_D.min() < 0 or lengths_D.max() > tokens_DxT.shape[1]):
    raise ValueError(f"lengths_D must lie in [0, T={tokens_DxT.shape[1]}], got range "
                     f"[{lengths_D.min()}, {lengths_D.max()}]")
  offsets = _pred_offsets(lengths_D)
  if losses_flat.shape != (int(offsets[-1]),):
    raise ValueError(f"losses_flat must be [{int(offsets[-1])}] (sum of max(len-1, 0)), got {losses_flat.shape}")
  threshold_nats = float(threshold) * (LN2 if units == "bits" else 1.0)
  idx = np.nonzero(losses_flat < threshold_nats)[0]
  if exclude_induction is not None and idx.size:
    doc, pos = _flat_to_doc_pos(idx, offsets)
    keep = np.ones(idx.size, bool)
    bounds = np.nonzero(np.diff(doc, prepend=-1, append=-1))[0]  # idx is sorted, so each doc is one run
    for a, b in itertools.pairwise(bounds):
      d = doc[a]
      ind = induction_mask(tokens_DxT[d, :lengths_D[d]], exclude_induction)
      keep[a:b] = ~ind[pos[a:b]]
    idx = idx[keep]
  return idx[::int(every)][:int(first)]


# --------------------------------------------------------------------------- sparse random (JL) projection


def jl_dim(n_points: int, eps: float) -> int:
  """Johnson-Lindenstrauss dimension ceil(8 ln(n) / eps²).

  With that many dims a (sparse) JL map keeps all pairwise squared distances of n points within (1 ± eps) with high
  probability; for unit vectors that bounds every inner-product error by eps (polarisation identity).
  """
  if n_points < 2 or not 0 < eps < 1:
    raise ValueError(f"need n_points >= 2 and 0 < eps < 1, got {n_points}, {eps}")
  return math.ceil(8.0 * math.log(n_points) / eps ** 2)


def _project_leaf(g_NxP: jax.Array, key: jax.Array, dim: int, s: int, chunk: int) -> jax.Array:
  n, p = g_NxP.shape
  n_full, rem = divmod(p, chunk)
  scale = 1.0 / math.sqrt(s)

  def add_chunk(out_NxD, g_NxC, k):
    c = g_NxC.shape[1]
    k_rows, k_signs = jax.random.split(k)
    # Always draw a full chunk and slice, so a coordinate's rows/signs do not depend on the leaf size.
    rows_CxS = jax.random.randint(k_rows, (chunk, s), 0, dim)[:c]
    signs_CxS = jax.random.rademacher(k_signs, (chunk, s), dtype=jnp.float32)[:c] * scale
    vals_NxCxS = g_NxC.astype(jnp.float32)[:, :, None] * signs_CxS[None, :, :]
    return out_NxD.at[:, rows_CxS.reshape(-1)].add(vals_NxCxS.reshape(n, c * s))

  out_NxD = jnp.zeros((n, dim), jnp.float32)
  if n_full:
    def body(out, i):
      g_NxC = jax.lax.dynamic_slice_in_dim(g_NxP, i * chunk, chunk, axis=1)
      return add_chunk(out, g_NxC, jax.random.fold_in(key, i)), None
    out_NxD, _ = jax.lax.scan(body, out_NxD, jnp.arange(n_full, dtype=jnp.uint32))
  if rem:
    out_NxD = add_chunk(out_NxD, g_NxP[:, n_full * chunk:], jax.random.fold_in(key, n_full))
  return out_NxD


def sparse_projection(tree_or_array: Any, key: jax.Array, dim: int, nnz_per_column: int | None = None,
                      sparsity: float = 0.999, chunk: int = 1 << 16) -> jax.Array:
  """[N, dim] sparse JL projection of a batch of gradients (an array [N, P] or a pytree of leaves [N, ...]).

  Leaf i (in `jax.tree_util` order) is flattened to [N, P_i] and uses key `fold_in(key, i)`; its coordinates go in
  chunks of `chunk` with key `fold_in(leaf_key, chunk_index)`. Each coordinate j gets s = `nnz_per_column`
  (default max(1, round(dim·(1 - sparsity)))) output rows drawn uniformly (with replacement) and independent ±1
  signs, and adds g[:, j]·sign/√s to them. So each output row has ~Poisson(P(1 - sparsity)) nonzeros (the author's
  `proj_dim=5000, sparsity=0.999`), E<Πx, Πy> = <x, y>, and Var ≈ (|x|²|y|² + <x, y>²)/dim. The P x dim matrix is
  never built: memory is O(N·dim + N·chunk·s). Jittable with `dim`, `nnz_per_column`, `sparsity`, `chunk` static;
  deterministic given the key; the same map for every row. Accumulates in float32.
  """
  if dim < 1 or chunk < 1:
    raise ValueError(f"dim and chunk must be >= 1, got dim={dim}, chunk={chunk}")
  if nnz_per_column is None:
    if not 0.0 <= sparsity < 1.0:
      raise ValueError(f"sparsity must lie in [0, 1), got {sparsity}")
    nnz_per_column = max(1, round(dim * (1.0 - sparsity)))
  if nnz_per_column < 1:
    raise ValueError(f"nnz_per_column must be >= 1, got {nnz_per_column}")
  leaves = jax.tree_util.tree_leaves(tree_or_array)
  if not leaves:
    raise ValueError("sparse_projection needs at least one leaf")
  if any(jnp.ndim(x) < 1 for x in leaves):
    raise ValueError("every leaf needs a leading batch axis N")
  n = jnp.shape(leaves[0])[0]
  if any(jnp.shape(x)[0] != n for x in leaves):
    raise ValueError(f"leaves disagree on the batch size N: {[jnp.shape(x)[0] for x in leaves]}")
  out_NxD = jnp.zeros((n, dim), jnp.float32)
  for i, leaf in enumerate(leaves):
    g_NxP = jnp.reshape(jnp.asarray(leaf), (n, -1))
    if g_NxP.shape[1]:
      out_NxD = out_NxD + _project_leaf(g_NxP, jax.random.fold_in(key, i), dim, nnz_per_column, chunk)
  return out_NxD
