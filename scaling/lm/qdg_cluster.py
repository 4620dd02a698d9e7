"""Quanta discovery from gradients (QDG), the similarity / clustering / reporting half (spec `quanta.md` §4, §9).

Pipeline (the per-token gradients come from elsewhere; steps 1-2 are `scaling.lm.qdg_inputs`):

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
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from scaling.fit import loglog

# Spec §4.6: the 30 cluster counts of the Pile run.
PAPER_KS: tuple[int, ...] = (tuple(range(10, 100, 10)) + tuple(range(100, 301, 25)) + (350, 400)
                             + tuple(range(500, 1201, 100)) + (1400, 1500))
assert len(PAPER_KS) == 30

NEWLINE_SYMBOL = "⏎"


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


def envelope_slope(env: np.ndarray, ranks: tuple[int, int] = (100, 1000)) -> loglog.Fit:
  """OLS of log size on log rank over the inclusive rank window (clipped to the ranks present); paper: -1.237.

  The Fit's `exponent` is the slope itself (sign +1). Raises ValueError with fewer than 3 ranks in the window.
  """
  env = np.asarray(env, np.float64).ravel()
  lo, hi = _window(env.size, ranks)
  if hi - lo + 1 < 3:
    raise ValueError(f"rank window {tuple(ranks)} holds {max(hi - lo + 1, 0)} of the {env.size} ranks; need >= 3")
  r = np.arange(lo, hi + 1, dtype=np.float64)
  return loglog.fit_loglog(r, env[lo - 1:hi])


def implied_alpha(slope: float) -> float:
  """α from the rank-frequency slope: size ∝ r^-(α+1), so α = -slope - 1 (paper: -1.237 -> 0.237)."""
  return -float(slope) - 1.0


# --------------------------------------------------------------------------- output


def rank_frequency_figure(labels_by_k: dict[int, np.ndarray], path: str, ranks: tuple[int, int] = (100, 1000),
                          alpha_n: float | None = None) -> loglog.Fit | None:
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
