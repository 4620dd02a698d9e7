"""Quanta discovery from gradients (QDG) on a language model: per-token gradients and the whole pipeline
(spec `quanta.md` §4, §9). Token selection and projection are `scaling.lm.qdg_inputs`; the similarity / clustering /
report half is `scaling.lm.qdg_cluster`.

Per-token gradients: for each selected prediction, the gradient of that single token's loss with respect to the
paper's parameter subset — every block parameter except the per-block norms, plus the final norm; no embeddings (for
Pythia: names containing neither `layernorm` nor `embed`, `final_layer_norm` included). `last_blocks=B` restricts
the subset to the last B blocks (+ the final norm) for CPU-sized runs. One forward per document, then one VJP per
selected token of that document, vmapped over `grad_batch` tokens at a time: the forward is shared and nothing is
recomputed per token; each token's output head is differentiated at its own position only.

Each gradient is L2-normalised exactly (its norm is taken over the full subset), then either kept whole
(`similarity="exact"`, flattened; N x P floats must fit in memory) or projected by the sparse JL map of
`qdg_inputs.sparse_projection` (generated from a PRNG key, never materialised) to `proj_dim` dims and
re-normalised. C = G Gᵀ, A = 1 - arccos(clip(C))/π, spectral clustering for each K, the rank-frequency envelope and
its slope.

Workdir: config.json, losses.npz (per-token losses of the selection model on the corpus), selection.npz (flat
indices, document, position, loss, context strings), features.npz (normalised gradients or their projection; saved
every `save_every` documents, so a killed run resumes), similarity.npy (C, float32), clusters.npz (labels per K),
rank_frequency.png, clusters_K<k>.md / .html, summary.md.
"""

from __future__ import annotations

import functools
import json
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from scaling.engine import io
from scaling.lm import checkpoints
from scaling.lm import corpus as corpus_lib
from scaling.lm import evaluate, family_checkpoint
from scaling.lm import qdg_cluster as qc
from scaling.lm import qdg_inputs as qi
from scaling.nn import transformer as lm
from scaling.engine import launch

Params = lm.Params


# ------------------------------------------------------------------------------------------- parameter subset


def split_params(params: Params, cfg: lm.LMConfig, last_blocks: int | None = None) -> tuple[Params, Params]:
  """(differentiated, fixed) parts of `params`: differentiated = the paper's subset (blocks without their norms,
  restricted to the last `last_blocks` blocks if given, and the final norm)."""
  L = cfg.n_layers
  b = L if last_blocks is None else last_blocks
  if not 1 <= b <= L:
    raise ValueError(f"last_blocks={last_blocks} must be in [1, n_layers={L}]")
  blocks = params["blocks"]
  tail = {k: jax.tree.map(lambda a: a[L - b:], v) for k, v in blocks.items() if k not in lm.NORM_NAMES}
  diff = {"blocks": tail, "final_norm": params["final_norm"]}
  fixed = {k: v for k, v in params.items() if k not in ("blocks", "final_norm")}
  fixed["norms"] = {k: jax.tree.map(lambda a: a[L - b:], blocks[k]) for k in lm.NORM_NAMES}
  fixed["lead_blocks"] = jax.tree.map(lambda a: a[: L - b], blocks)
  return diff, fixed


def subset_size(cfg: lm.LMConfig, last_blocks: int | None = None) -> int:
  """Number of differentiated parameters (the gradient dimension)."""
  diff = jax.eval_shape(lambda p: split_params(p, cfg, last_blocks)[0], lm.param_shapes(cfg))
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(diff))


def _frozen_prefix(params: Params, fixed: Params, tokens_1xT: jax.Array, cfg: lm.LMConfig) -> jax.Array:
  """The residual stream entering the differentiated blocks (embeddings and leading blocks, no gradient)."""
  x = lm.embed(params, tokens_1xT)
  if jax.tree.leaves(fixed["lead_blocks"])[0].shape[0]:
    x = lm.run_blocks(fixed["lead_blocks"], x, cfg)
  return jax.lax.stop_gradient(x)


def _losses_from_subset(diff: Params, fixed: Params, x_BxTxD: jax.Array, tokens_BxT: jax.Array,
                        cfg: lm.LMConfig) -> jax.Array:
  """Per-prediction losses [T-1] of one document given the residual stream after the fixed leading blocks."""
  blocks = {**diff["blocks"], **fixed["norms"]}
  x = lm.run_blocks(blocks, x_BxTxD, cfg)
  params = {"final_norm": diff["final_norm"], "embed": fixed["embed"]}
  if "unembed" in fixed:
    params["unembed"] = fixed["unembed"]
  logits = lm.head(params, x, cfg)
  return lm.cross_entropy(logits[:, :-1], tokens_BxT[:, 1:])[0]


@functools.partial(jax.jit, static_argnames=("cfg", "last_blocks"))
def document_grads(params: Params, tokens_1xT: jax.Array, positions_G: jax.Array, cfg: lm.LMConfig,
                   last_blocks: int | None = None) -> tuple[Params, jax.Array]:
  """Gradients of the single-token losses at prediction indices `positions_G` of one document, w.r.t. the QDG
  subset: a pytree with leaves [G, ...], and the losses [G].

  One forward through the blocks (its VJP kept), then per token: the loss of its one output row (final norm and
  unembedding of a single position, so the gradient w.r.t. that row's hidden state and the final norm costs one
  D x V product, not T of them) and one VJP of the blocks with the cotangent on that row; vmapped over tokens.
  """
  diff, fixed = split_params(params, cfg, last_blocks)
  x = _frozen_prefix(params, fixed, tokens_1xT, cfg)
  h_1xTxD, vjp_blocks = jax.vjp(lambda b: lm.run_blocks({**b, **fixed["norms"]}, x, cfg), diff["blocks"])
  head_params = {k: v for k, v in fixed.items() if k in lm.EMBED_NAMES}

  def row_loss(final_norm: Params, h_D: jax.Array, target: jax.Array) -> jax.Array:
    logits = lm.head({**head_params, "final_norm": final_norm}, h_D[None, None, :], cfg)
    return lm.cross_entropy(logits, target[None, None])[0, 0]

  def one(position: jax.Array) -> tuple[Params, jax.Array]:
    target = tokens_1xT[0, position + 1]
    loss, (g_norm, g_h_D) = jax.value_and_grad(row_loss, argnums=(0, 1))(diff["final_norm"], h_1xTxD[0, position],
                                                                           target)
    ct_1xTxD = jnp.zeros_like(h_1xTxD).at[0, position].set(g_h_D)
    (g_blocks,) = vjp_blocks(ct_1xTxD)
    return {"blocks": g_blocks, "final_norm": g_norm}, loss

  return jax.vmap(one)(positions_G)


def token_grad(params: Params, tokens_1xT: jax.Array, position: int, cfg: lm.LMConfig,
               last_blocks: int | None = None) -> Params:
  """The gradient of one token's loss by a plain `jax.grad` (the reference the batched method is tested against)."""
  diff, fixed = split_params(params, cfg, last_blocks)
  x = _frozen_prefix(params, fixed, tokens_1xT, cfg)
  return jax.grad(lambda d: _losses_from_subset(d, fixed, x, tokens_1xT, cfg)[position])(diff)


@functools.partial(jax.jit, static_argnames=("dim", "nnz", "chunk"))
def _normalise_project(g: Params, key: jax.Array, dim: int, nnz: int, chunk: int) -> jax.Array:
  norms_G = jnp.sqrt(sum(jnp.sum(jnp.reshape(x, (x.shape[0], -1)) ** 2, axis=1) for x in jax.tree.leaves(g)))
  g = jax.tree.map(lambda x: x / norms_G.reshape((-1,) + (1,) * (x.ndim - 1)), g)
  p_GxD = qi.sparse_projection(g, key, dim, nnz_per_column=nnz, chunk=chunk)
  return p_GxD / jnp.linalg.norm(p_GxD, axis=1, keepdims=True)


@jax.jit
def _normalise_flat(g: Params) -> jax.Array:
  flat = jnp.concatenate([jnp.reshape(x, (x.shape[0], -1)) for x in jax.tree.leaves(g)], axis=1)
  return flat / jnp.linalg.norm(flat, axis=1, keepdims=True)


def gradient_features(params: Params, cfg: lm.LMConfig, corpus: corpus_lib.Corpus, flat_idx: np.ndarray,
                      last_blocks: int | None, similarity: str, proj_dim: int, proj_nnz: int, key: jax.Array,
                      grad_batch: int = 16, bucket: int | None = None, done: np.ndarray | None = None,
                      save: Any = None, save_every: int = 20) -> np.ndarray:
  """Normalised per-token gradient features [N, P] (exact) or [N, proj_dim] (JL) of the selected predictions.

  Tokens are grouped by document (one forward each), `grad_batch` VJPs at a time (the last group padded by
  repeating a position, whose result is dropped). Documents are padded to a multiple of `bucket` tokens (default:
  the corpus length, so one compiled program serves every document; padding is causal, so it changes nothing). `done`/`save` resume: rows already computed are skipped, and
  `save(features, done)` is called every `save_every` documents.
  """
  doc_N, pos_N = corpus.locate(flat_idx)
  dim = proj_dim if similarity == "jl" else subset_size(cfg, last_blocks)
  feats = np.zeros((len(flat_idx), dim), np.float32)
  done = np.zeros(len(flat_idx), bool) if done is None else done.copy()
  params = jax.device_put(params)
  docs = [d for d in np.unique(doc_N) if not done[doc_N == d].all()]
  t0, n_done, last = time.time(), 0, time.time()
  for i, d in enumerate(docs):
    rows = np.nonzero((doc_N == d) & ~done)[0]
    n = int(corpus.lengths[d])
    t = corpus.max_len if bucket is None else int(min(corpus.max_len, -(-n // bucket) * bucket))
    tokens = jnp.asarray(corpus.tokens[d:d + 1, :t])
    for s in range(0, len(rows), grad_batch):
      r = rows[s:s + grad_batch]
      pos = np.full(grad_batch, pos_N[r[0]], np.int32)
      pos[: len(r)] = pos_N[r]
      g, _ = document_grads(params, tokens, jnp.asarray(pos), cfg, last_blocks)
      f = (_normalise_project(g, key, proj_dim, proj_nnz, 1 << 16) if similarity == "jl" else _normalise_flat(g))
      feats[r] = np.asarray(f)[: len(r)]
      done[r] = True
      n_done += len(r)
    if save is not None and ((i + 1) % save_every == 0 or i + 1 == len(docs)):
      save(feats, done)
    if time.time() - last > 10 or i + 1 == len(docs):
      last = time.time()
      rate = n_done / max(time.time() - t0, 1e-9)
      logging.info("QDG gradients: %d/%d documents, %d tokens, %.1f tokens/s", i + 1, len(docs), n_done, rate)
  return feats


# ------------------------------------------------------------------------------------------------- the pipeline


def config_dict(config: Any) -> dict[str, Any]:
  """Validated plain dict of a QDG config (raises before anything is loaded or written)."""
  c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  s, g, k = c["select"], c["gradients"], c["cluster"]
  errs = []
  if s["units"] not in ("nats", "bits"):
    errs.append(f"select.units={s['units']!r} is not 'nats' or 'bits'")
  if s["induction"] not in (None, "trigram", "bigram"):
    errs.append(f"select.induction={s['induction']!r} is not None, 'trigram' or 'bigram'")
  if s["every"] < 1 or s["first"] < 2 or s["threshold"] <= 0:
    errs.append(f"select needs every >= 1, first >= 2, threshold > 0: {s}")
  if g["similarity"] not in ("exact", "jl"):
    errs.append(f"gradients.similarity={g['similarity']!r} is not 'exact' or 'jl'")
  if g["proj_dim"] < 1 or g["proj_nnz"] < 1 or g["grad_batch"] < 1:
    errs.append(f"gradients needs proj_dim, proj_nnz, grad_batch >= 1: {g}")
  if g["last_blocks"] is not None and g["last_blocks"] < 1:
    errs.append(f"gradients.last_blocks={g['last_blocks']} must be >= 1 or None")
  if not k["ks"] or any(x < 2 for x in k["ks"]) or list(k["ks"]) != sorted(set(k["ks"])):
    errs.append(f"cluster.ks={k['ks']} must be increasing and >= 2")
  if not 1 <= k["ranks"][0] < k["ranks"][1]:
    errs.append(f"cluster.ranks={k['ranks']} must be a window 1 <= lo < hi")
  if k["report_k"] not in k["ks"]:
    errs.append(f"cluster.report_k={k['report_k']} is not one of cluster.ks")
  if errs:
    raise ValueError("QDG config: " + "; ".join(errs))
  checkpoints.check_spec(c["model"])
  return c


@launch.host_driven
def run(config: Any, workdir: str) -> dict[str, Any]:
  """The whole QDG pipeline into `workdir` (each stage cached; a re-run resumes). Returns a summary dict."""
  c = config_dict(config)
  workdir = os.path.abspath(workdir)
  io.check_config(workdir, c)
  m = family_checkpoint.load_model(c["model"])
  if c["gradients"]["last_blocks"] is not None and c["gradients"]["last_blocks"] > m.cfg.n_layers:
    raise ValueError(f"gradients.last_blocks={c['gradients']['last_blocks']} > the model's {m.cfg.n_layers} blocks")
  if m.tokenizer is None:
    raise ValueError(f"{c['model']} has no tokenizer")
  io.write_config(workdir, c)
  cc = c["corpus"]
  docs = corpus_lib.read_documents(cc["source"], cc["max_docs"], doc_chars=cc["doc_chars"])
  corpus = corpus_lib.tokenize(docs, corpus_lib.encoder(m.tokenizer), max_len=min(cc["context"], m.cfg.max_len))
  decode = corpus_lib.decoder(m.tokenizer)

  # 1. per-token losses of the model on the corpus (selection by loss)
  lpath = os.path.join(workdir, "losses.npz")
  if os.path.exists(lpath):
    losses = io.load_npz(lpath)["losses"]
  else:
    ev = evaluate.per_token_losses(m.params, m.cfg, corpus, c["batch_size"])
    losses = ev.losses
    io.save_npz(lpath, losses=losses, tokens_per_s=np.asarray(ev.tokens_per_s))
    logging.info("per-token losses: mean %.3f nats, %d predictions, %.0f tokens/s", ev.mean, len(losses),
                 ev.tokens_per_s)

  # 2. token selection
  s = c["select"]
  idx = qi.select_tokens(losses, corpus.tokens, corpus.lengths, threshold=s["threshold"], units=s["units"],
                         exclude_induction=s["induction"], every=s["every"], first=s["first"])
  if len(idx) < max(c["cluster"]["ks"]) + 1:
    raise ValueError(f"only {len(idx)} tokens selected, fewer than max K + 1 = {max(c['cluster']['ks']) + 1}: "
                     "use more documents, a higher threshold or a smaller `every`")
  doc_N, pos_N = corpus.locate(idx)
  contexts = [corpus.context(int(i), decode, n_before=c["report"]["context_tokens"]) for i in idx]
  io.save_npz(os.path.join(workdir, "selection.npz"), flat_idx=idx, doc=doc_N, pos=pos_N, loss=losses[idx],
              before=np.array([b for b, _ in contexts]), target=np.array([t for _, t in contexts]))
  n_below = int(np.sum(losses < s["threshold"] * (np.log(2.0) if s["units"] == "bits" else 1.0)))
  logging.info("selected %d tokens (%d below the threshold of %d predictions)", len(idx), n_below, len(losses))

  # 3. per-token gradients -> normalised features (resumable)
  g = c["gradients"]
  fpath = os.path.join(workdir, "features.npz")
  done = feats = None
  if os.path.exists(fpath):
    d = io.load_npz(fpath)
    feats, done = d["features"], d["done"]
  if done is None or not done.all():
    t0 = time.time()
    feats = gradient_features(
        m.params, m.cfg, corpus, idx, g["last_blocks"], g["similarity"], g["proj_dim"], g["proj_nnz"],
        jax.random.key(c["seed"]), g["grad_batch"], done=done,
        save=lambda f, dn: io.save_npz(fpath, features=f, done=dn))
    logging.info("gradients of %d tokens in %.1fs", len(idx), time.time() - t0)

  # 4. similarity, affinity, clusters
  C = qc.cosine_blockwise(feats, block=c["cluster"]["block"])
  io.save_npy(os.path.join(workdir, "similarity.npy"), C.astype(np.float32))
  A = qc.affinity(C)
  kpath = os.path.join(workdir, "clusters.npz")
  k = c["cluster"]
  labels = {int(kk.removeprefix("K")): v for kk, v in io.load_npz(kpath).items()} if os.path.exists(kpath) else {}
  todo = [kk for kk in k["ks"] if kk not in labels]
  if todo:
    labels.update(qc.spectral_clusters(A, todo, n_init=k["n_init"], random_state=c["seed"]))
    io.save_npz(kpath, **{f"K{kk}": v for kk, v in sorted(labels.items())})
  labels = {kk: labels[kk] for kk in k["ks"] if kk in labels}

  # 5. rank-frequency envelope, figure, reports
  env = qc.envelope(labels)
  fit = qc.rank_frequency_figure(labels, os.path.join(workdir, "rank_frequency.png"), ranks=tuple(k["ranks"]),
                                 alpha_n=c["report"]["alpha_n"])
  rk = k["report_k"]
  title = f"QDG clusters of {m.source} (K = {rk}, {len(idx)} tokens)"
  for ext in ("md", "html"):
    qc.cluster_report(labels[rk], contexts, rk, os.path.join(workdir, f"clusters_K{rk}.{ext}"),
                      n_clusters=c["report"]["n_clusters"], n_examples=c["report"]["n_examples"], title=title)
  sizes = qc.rank_frequency(labels[rk])
  summary = dict(model=m.source, n_selected=int(len(idx)), n_below_threshold=n_below,
                 n_predictions=int(len(losses)), gradient_dim=int(subset_size(m.cfg, g["last_blocks"])),
                 feature_dim=int(feats.shape[1]), ks=[int(x) for x in labels], largest_clusters=sizes[:10].tolist(),
                 envelope_ranks=int(len(env)),
                 slope=None if fit is None else fit.slope, slope_se=None if fit is None else fit.stderr,
                 alpha=None if fit is None else qc.implied_alpha(fit.slope))
  io.save_text(os.path.join(workdir, "summary.json"), json.dumps(summary, indent=2))
  summary["markdown"] = summary_markdown(summary, c)
  io.save_text(os.path.join(workdir, "summary.md"), summary["markdown"])
  return summary


def summary_markdown(s: dict[str, Any], c: dict[str, Any]) -> str:
  sel, g, k = c["select"], c["gradients"], c["cluster"]
  sim = (f"sparse JL projection to {g['proj_dim']} dims ({g['proj_nnz']} nonzeros per column)"
         if g["similarity"] == "jl" else "exact cosine")
  blocks = "all blocks" if g["last_blocks"] is None else f"the last {g['last_blocks']} blocks"
  slope = ("n/a (window has < 3 ranks)" if s["slope"] is None
           else f"{s['slope']:.3f} ± {s['slope_se']:.3f}, implied α = {s['alpha']:.3f}")
  return "\n".join([
      f"# QDG on {s['model']}", "",
      f"- Tokens: loss < {sel['threshold']} {sel['units']}: {s['n_below_threshold']:,} of "
      f"{s['n_predictions']:,} predictions; induction filter {sel['induction']}; one in every {sel['every']}, first "
      f"{sel['first']:,} -> **{s['n_selected']:,} tokens**.",
      f"- Gradients: {s['gradient_dim']:,} parameters ({blocks} without their norms, + final norm; no embeddings); "
      f"{sim}.",
      f"- Spectral clustering, K in {list(k['ks'])}.",
      f"- Rank-frequency envelope slope over ranks {k['ranks'][0]}-{k['ranks'][1]}: {slope} "
      "(paper, pythia-70m-v0: -1.237, α ≈ 0.24).",
      f"- Largest clusters at K = {k['report_k']}: {s['largest_clusters']}.",
      f"- Examples: clusters_K{k['report_k']}.md / .html; figure: rank_frequency.png.", ""])

