"""Quanta discovery from gradients (QDG), the similarity / clustering / reporting half (spec `quanta.md` §4, §9).

Pipeline (the per-token gradients come from elsewhere):

1. `select_tokens`: predictions with loss below a threshold (paper: 0.1 nats), minus induction tokens
   (`induction_mask`), then every 50th, first 10,000.
2. Optionally `sparse_projection` of each per-token gradient to `dim` dims (the author's sparse-random-projection
   variant, `proj_dim=5000, sparsity=0.999`), generated on the fly from a PRNG key.
3. `l2_normalize`, `cosine_blockwise` (C = G Gᵀ) and `affinity` (A = 1 - arccos(C)/π, *not* (C+1)/2).
4. `spectral_clusters` over `PAPER_KS`; `rank_frequency`, `envelope`, `envelope_slope` (paper: slope -1.237 over
   ranks 100-1000, so α = `implied_alpha(slope)` ≈ 0.24).
5. `rank_frequency_figure` (Fig 15) and `cluster_report` (Fig 1 / 13 style examples, Markdown or HTML).

Flat prediction index: documents in order, each contributing max(len - 1, 0) predictions; prediction l of a document
predicts its token l + 1.
"""

from __future__ import annotations

import html
import itertools
import math
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from scaling import analysis

LN2 = math.log(2.0)

# Spec §4.6: the 30 cluster counts of the Pile run.
PAPER_KS: tuple[int, ...] = (tuple(range(10, 100, 10)) + tuple(range(100, 301, 25)) + (350, 400)
                             + tuple(range(500, 1201, 100)) + (1400, 1500))
assert len(PAPER_KS) == 30

INDUCTION_KINDS = ("trigram", "bigram")
NEWLINE_SYMBOL = "⏎"


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


# --------------------------------------------------------------------------- similarity and affinity


def l2_normalize(g_NxP: np.ndarray) -> np.ndarray:
  """Rows scaled to unit L2 norm (float dtype kept); raises on a zero or non-finite row, naming its index."""
  g_NxP = np.asarray(g_NxP)
  if g_NxP.ndim != 2:
    raise ValueError(f"g_NxP must be 2-D, got shape {g_NxP.shape}")
  if not np.issubdtype(g_NxP.dtype, np.floating):
    g_NxP = g_NxP.astype(np.float64)
  norms_N = np.linalg.norm(g_NxP, axis=1)
  bad = np.nonzero(~np.isfinite(norms_N) | (norms_N == 0))[0]
  if bad.size:
    raise ValueError(f"cannot normalise rows with zero or non-finite norm, first at row {int(bad[0])} "
                     f"({bad.size} such rows)")
  return g_NxP / norms_N[:, None].astype(g_NxP.dtype)


def cosine_blockwise(g_NxP: np.ndarray, block: int = 250, accumulate: str = "float32") -> np.ndarray:
  """C = G Gᵀ [N, N] from row blocks of `block` (upper blocks only, mirrored); G should have unit rows.

  `accumulate` is "float32" (inputs cast to float32) or "float64".
  """
  if accumulate not in ("float32", "float64"):
    raise ValueError(f"accumulate must be 'float32' or 'float64', got {accumulate!r}")
  if block < 1:
    raise ValueError(f"block must be >= 1, got {block}")
  g_NxP = np.asarray(g_NxP)
  if g_NxP.ndim != 2:
    raise ValueError(f"g_NxP must be 2-D, got shape {g_NxP.shape}")
  dtype = np.dtype(accumulate)
  n = g_NxP.shape[0]
  c_NxN = np.empty((n, n), dtype)
  for i in range(0, n, block):
    gi = g_NxP[i:i + block].astype(dtype)
    for j in range(i, n, block):
      cij = gi @ g_NxP[j:j + block].astype(dtype).T
      c_NxN[i:i + block, j:j + block] = cij
      c_NxN[j:j + block, i:i + block] = cij.T
  return c_NxN


def affinity(c_NxN: np.ndarray) -> np.ndarray:
  """Angular similarity A = 1 - arccos(clip(C, -1, 1))/π in [0, 1] (spec §4.5), symmetrised, unit diagonal."""
  c_NxN = np.asarray(c_NxN, np.float64)
  if c_NxN.ndim != 2 or c_NxN.shape[0] != c_NxN.shape[1]:
    raise ValueError(f"C must be square, got shape {c_NxN.shape}")
  a_NxN = 1.0 - np.arccos(np.clip(c_NxN, -1.0, 1.0)) / np.pi
  a_NxN = 0.5 * (a_NxN + a_NxN.T)
  np.fill_diagonal(a_NxN, 1.0)
  return a_NxN


# --------------------------------------------------------------------------- clustering and rank-frequency


def spectral_clusters(a_NxN: np.ndarray, ks: Sequence[int], n_init: int = 30, random_state: int = 0
                      ) -> dict[int, np.ndarray]:
  """{K: labels [N]} from sklearn SpectralClustering on the precomputed affinity, one run per K (K >= N skipped)."""
  from sklearn.cluster import SpectralClustering  # slow import, only needed here

  a_NxN = np.asarray(a_NxN, np.float64)
  if a_NxN.ndim != 2 or a_NxN.shape[0] != a_NxN.shape[1]:
    raise ValueError(f"affinity must be square, got shape {a_NxN.shape}")
  if not np.all(np.isfinite(a_NxN)):
    raise ValueError("affinity has non-finite entries")
  if not np.allclose(a_NxN, a_NxN.T, rtol=0, atol=1e-6):
    raise ValueError(f"affinity is not symmetric (max |A - Aᵀ| = {np.abs(a_NxN - a_NxN.T).max():.3g})")
  if a_NxN.min() < -1e-9 or a_NxN.max() > 1 + 1e-9:
    raise ValueError(f"affinity values must lie in [0, 1], got [{a_NxN.min():.3g}, {a_NxN.max():.3g}]")
  n = a_NxN.shape[0]
  out: dict[int, np.ndarray] = {}
  for k in ks:
    k = int(k)
    if k < 1:
      raise ValueError(f"cluster counts must be >= 1, got {k}")
    if k >= n:
      logging.info("spectral_clusters: skipping K=%d >= N=%d", k, n)
      continue
    sc = SpectralClustering(n_clusters=k, affinity="precomputed", n_init=n_init, random_state=random_state,
                            assign_labels="kmeans", eigen_tol="auto")
    out[k] = np.asarray(sc.fit_predict(np.clip(a_NxN, 0.0, 1.0)), np.int64)
  return out


def rank_frequency(labels: np.ndarray) -> np.ndarray:
  """Cluster sizes sorted descending (empty clusters do not appear)."""
  _, counts = np.unique(np.asarray(labels).ravel(), return_counts=True)
  return np.sort(counts)[::-1].astype(np.int64)


def envelope(labels_by_k: dict[int, np.ndarray]) -> np.ndarray:
  """Max over K of the rank-r cluster size, for ranks r = 1 .. max number of clusters (index r - 1)."""
  if not labels_by_k:
    raise ValueError("envelope needs at least one clustering")
  sizes = [rank_frequency(v) for v in labels_by_k.values()]
  env = np.zeros(max(len(s) for s in sizes), np.int64)
  for s in sizes:
    env[:len(s)] = np.maximum(env[:len(s)], s)
  return env


def _window(n_ranks: int, ranks: tuple[int, int]) -> tuple[int, int]:
  lo, hi = max(1, int(ranks[0])), min(n_ranks, int(ranks[1]))
  return lo, hi


def envelope_slope(env: np.ndarray, ranks: tuple[int, int] = (100, 1000)) -> analysis.Fit:
  """OLS of log size on log rank over the inclusive rank window (clipped to the ranks present); paper: -1.237.

  The Fit's `exponent` is the slope itself (sign +1). Raises ValueError with fewer than 3 ranks in the window.
  """
  env = np.asarray(env, np.float64).ravel()
  lo, hi = _window(env.size, ranks)
  if hi - lo + 1 < 3:
    raise ValueError(f"rank window {tuple(ranks)} holds {max(hi - lo + 1, 0)} of the {env.size} ranks; need >= 3")
  r = np.arange(lo, hi + 1, dtype=np.float64)
  return analysis.fit_loglog(r, env[lo - 1:hi])


def implied_alpha(slope: float) -> float:
  """α from the rank-frequency slope: size ∝ r^-(α+1), so α = -slope - 1 (paper: -1.237 -> 0.237)."""
  return -float(slope) - 1.0


# --------------------------------------------------------------------------- output


def rank_frequency_figure(labels_by_k: dict[int, np.ndarray], path: str, ranks: tuple[int, int] = (100, 1000),
                          alpha_n: float | None = None) -> analysis.Fit | None:
  """Fig 15: log-log cluster size vs rank per K (thin), the envelope (thick), its fit over `ranks` and, with
  `alpha_n`, the slope -(α_N + 1) line anchored at the window start. Returns the fit (None if the window is short)."""
  from scaling import plotting  # matplotlib only for figures
  from scaling.plotting import plt

  env = envelope(labels_by_k)
  fig, ax = plt.subplots(figsize=(5.5, 4.2))
  cmap = plt.get_cmap("viridis")
  ks = sorted(labels_by_k)
  for i, k in enumerate(ks):
    s = rank_frequency(labels_by_k[k])
    ax.plot(np.arange(1, s.size + 1), s, lw=0.6, alpha=0.6, color=cmap(i / max(len(ks) - 1, 1)))
  r_all = np.arange(1, env.size + 1)
  ax.plot(r_all, env, "k-", lw=2.2, label="envelope (max over K)")
  try:
    fit = envelope_slope(env, ranks)
  except ValueError as e:
    logging.info("rank_frequency_figure: no envelope fit (%s)", e)
    fit = None
  lo, hi = _window(env.size, ranks)
  if fit is not None:
    rw = np.arange(lo, hi + 1)
    ax.plot(rw, fit.predict(rw), "r--", lw=1.5,
            label=f"fit r{lo}-{hi}: slope {fit.slope:.3f} ± {fit.stderr:.3f} (α ≈ {implied_alpha(fit.slope):.2f})")
  if alpha_n is not None and lo <= env.size:
    rr = np.arange(lo, env.size + 1)
    ax.plot(rr, env[lo - 1] * (rr / lo) ** -(alpha_n + 1.0), "b:", lw=1.5,
            label=f"α_N = {alpha_n:.3f}: slope {-(alpha_n + 1):.3f}")
  ax.set(xscale="log", yscale="log", xlabel="cluster rank", ylabel="cluster size (tokens)",
         title=f"QDG rank-frequency, K in [{ks[0]}, {ks[-1]}] ({len(ks)} runs)")
  ax.legend(fontsize=7)
  fig.tight_layout()
  plotting.save(fig, [path])
  return fit


def _visible(text: str) -> str:
  return text.replace("\r\n", NEWLINE_SYMBOL).replace("\n", NEWLINE_SYMBOL).replace("\r", NEWLINE_SYMBOL)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*_[]<>#|~"})


def _md_example(before: str, target: str) -> str:
  before, target = _visible(before).translate(_MD_SPECIAL), _visible(target).translate(_MD_SPECIAL)
  core = target.strip()
  if not core:
    return f"{before}**{'␣' * max(len(target), 1)}**"
  lead = target[:len(target) - len(target.lstrip())]
  trail = target[len(target.rstrip()):]
  return f"{before}{lead}**{core}**{trail}"


def cluster_report(labels: np.ndarray, contexts: Sequence[tuple[str, str]], k: int, path: str,
                   n_clusters: int = 10, n_examples: int = 12, title: str = "", max_context_chars: int = 300) -> str:
  """Writes the largest clusters' example tokens (Fig 1 / 13 style) to `path` (.md or .html); returns the text.

  `contexts[i]` = (preceding text, target token text) for selected token i; the target is highlighted (**bold** /
  <b>), newlines shown as ⏎, the preceding text cut to its last `max_context_chars` characters. Clusters are ranked
  by size (ties by label); each shows its size and its first `n_examples` members in selection order.
  """
  ext = os.path.splitext(path)[1].lower()
  if ext not in (".md", ".html"):
    raise ValueError(f"report path must end in .md or .html, got {path!r}")
  labels = np.asarray(labels).ravel()
  if len(contexts) != labels.size:
    raise ValueError(f"{len(contexts)} contexts for {labels.size} labels")
  ids, counts = np.unique(labels, return_counts=True)
  order = np.lexsort((ids, -counts))[:n_clusters]
  heading = title or f"QDG clusters (K = {k})"
  summary = f"K = {k}, {labels.size} tokens, {ids.size} non-empty clusters; the {order.size} largest shown."
  md, body = [f"# {heading}", "", summary, ""], []
  for rank, c in enumerate(order, 1):
    members = np.nonzero(labels == ids[c])[0][:n_examples]
    head = f"Cluster rank {rank} (label {ids[c]}): {counts[c]} tokens ({counts[c] / labels.size:.1%})"
    md += [f"## {head}", ""]
    body.append(f"<h2>{html.escape(head)}</h2>\n<ol>")
    for i in members:
      before, target = contexts[i]
      if len(before) > max_context_chars:
        before = "…" + before[-max_context_chars:]
      md.append(f"1. {_md_example(before, target)}")
      body.append(f"<li><span class='ctx'>{html.escape(_visible(before))}"
                  f"<b>{html.escape(_visible(target))}</b></span></li>")
    md.append("")
    body.append("</ol>")
  if ext == ".md":
    text = "\n".join(md)
  else:
    text = ("<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(heading)}</title>\n<style>body{{font-family:sans-serif;max-width:60em}} "
            ".ctx{font-family:monospace;white-space:pre-wrap} b{background:#ffe066}</style></head><body>\n"
            f"<h1>{html.escape(heading)}</h1>\n<p>{html.escape(summary)}</p>\n" + "\n".join(body)
            + "\n</body></html>\n")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    f.write(text)
  return text
