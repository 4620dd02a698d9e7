"""Per-token losses of language models on a corpus (batched, jitted forwards) and the per-token scaling report.

`per_token_losses` runs a model over a `Corpus` in batches of documents. Each batch is cut to its longest document,
rounded up to a multiple of `bucket` tokens, so a handful of compiled shapes serve the whole corpus and padding
costs little. It returns the flat vector of per-prediction losses (nats) in the corpus's flat index order, together
with tokens/s.

A losses workdir (`losses.npz`: `losses_MxT`, `n_nonemb`, `n_params`, `names`; `tokens_per_s`) is the input of
`report`, which writes the paper's Fig 3 / 4 / 12 analysis (`scaling.lm.token_scaling`) as figures and `summary.md`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from scaling import io
from scaling.lm import checkpoints
from scaling.lm import corpus as corpus_lib
from scaling.lm import model as lm
from scaling.lm import token_scaling

LOSSES = "losses.npz"


@functools.partial(jax.jit, static_argnums=(2,))
def _batch_losses(params: lm.Params, tokens_BxT: jax.Array, cfg: lm.LMConfig) -> jax.Array:
  return lm.token_losses(params, tokens_BxT, cfg)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Per-token losses (nats, flat corpus order) of one model and how fast they were computed."""

  losses: np.ndarray
  tokens_per_s: float  # valid (non-padding) tokens through the forward per second, after compilation
  seconds: float
  compile_seconds: float

  @property
  def mean(self) -> float:
    return float(self.losses.mean())


def per_token_losses(params: lm.Params, cfg: lm.LMConfig, corpus: corpus_lib.Corpus, batch_size: int = 8,
                     bucket: int = 64) -> Evaluation:
  """Losses of every prediction of `corpus` (flat order), by batched jitted forwards.

  The first batch of each new shape is timed separately (compile) and left out of tokens/s.
  """
  if corpus.max_len > cfg.max_len:
    raise ValueError(f"corpus documents are up to {corpus.max_len} tokens, the model takes {cfg.max_len}")
  if batch_size < 1 or bucket < 1:
    raise ValueError(f"batch_size={batch_size} and bucket={bucket} must be >= 1")
  params = jax.device_put(params)
  out_DxT1 = np.zeros((corpus.n_docs, corpus.max_len - 1), np.float32)
  seen: set[int] = set()
  t_compile = t_run = 0.0
  n_tokens = 0
  for start, tokens_BxT, lengths_B in corpus.batches(batch_size):
    t = int(min(corpus.max_len, -(-max(int(lengths_B.max()), 2) // bucket) * bucket))
    t0 = time.perf_counter()
    losses = np.asarray(_batch_losses(params, jnp.asarray(tokens_BxT[:, :t]), cfg))
    dt = time.perf_counter() - t0
    if t in seen:
      t_run += dt
      n_tokens += int(lengths_B.sum())
    else:
      seen.add(t)
      t_compile += dt
    n = min(batch_size, corpus.n_docs - start)
    out_DxT1[start:start + n, : t - 1] = losses[:n]
  rate = n_tokens / t_run if t_run > 0 else float("nan")
  return Evaluation(corpus.flatten(out_DxT1), rate, t_run + t_compile, t_compile)


def tokens_per_second(params: lm.Params, cfg: lm.LMConfig, batch_size: int, length: int, repeats: int = 3,
                      seed: int = 0) -> float:
  """Forward + per-token loss throughput on random tokens of one shape (median of `repeats`, after compiling)."""
  tokens = jax.random.randint(jax.random.key(seed), (batch_size, length), 0, cfg.vocab_size, jnp.int32)
  params = jax.device_put(params)
  _batch_losses(params, tokens, cfg).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    _batch_losses(params, tokens, cfg).block_until_ready()
    times.append(time.perf_counter() - t0)
  return batch_size * length / float(np.median(times))


# ------------------------------------------------------------------------------------------------ losses workdir


def save_losses(workdir: str, names: Sequence[str], losses: Sequence[np.ndarray], cfgs: Sequence[lm.LMConfig],
                tokens_per_s: Sequence[float], source: str) -> str:
  """Writes `losses.npz` (models in the given order) and returns its path."""
  if len({len(x) for x in losses}) != 1:
    raise ValueError(f"models were evaluated on different predictions: {[len(x) for x in losses]}")
  counts = np.array([lm.count_params(c) for c in cfgs], np.int64)
  path = os.path.join(workdir, LOSSES)
  io.save_npz(path, losses_MxT=np.stack(losses).astype(np.float32), n_params=counts[:, 0], n_nonemb=counts[:, 1],
              names=np.array(list(names)), tokens_per_s=np.array(tokens_per_s, np.float64), source=np.array(source))
  return path


def load_losses(workdir: str) -> dict[str, np.ndarray]:
  path = os.path.join(workdir, LOSSES)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: evaluate the models first")
  return io.load_npz(path)


def report(workdir: str, contexts: Callable[[int], str] | None = None, fit_models: Any = None) -> str:
  """The per-token scaling report of a losses workdir: figures under `report/` and `summary.md` (returned).

  Models are sorted by non-embedding parameters. With a single model only the per-model table and the loss
  density are written.
  """
  d = load_losses(workdir)
  order = np.argsort(d["n_nonemb"], kind="stable")
  losses, n, names = d["losses_MxT"][order], d["n_nonemb"][order], [str(x) for x in d["names"][order]]
  rates = d["tokens_per_s"][order]
  source = str(d["source"])
  lines = [f"# Per-token losses on {source}", "",
           f"{losses.shape[1]:,} token predictions per model.", "",
           "| model | params | non-embedding | mean loss (nats) | mean loss (bits) | tokens/s (CPU forward) |",
           "|---|---|---|---|---|---|"]
  for i, name in enumerate(names):
    lines.append(f"| {name} | {int(d['n_params'][order][i]):,} | {int(n[i]):,} | {losses[i].mean():.4f} | "
                 f"{losses[i].mean() / np.log(2):.4f} | {rates[i]:,.0f} |")
  text = "\n".join(lines) + "\n"
  out = os.path.join(workdir, "report")
  if len(names) >= 2:
    if np.any(np.diff(n) <= 0):
      raise ValueError(f"models need distinct non-embedding sizes for a scaling report: {dict(zip(names, n))}")
    ts = token_scaling.analyse(losses, n, names, fit_models=fit_models)
    token_scaling.figures(ts, losses, out, contexts=contexts)
    text += "\n" + token_scaling.summary_markdown(ts, source)
  else:
    edges, density, integrand, _ = token_scaling.loss_histograms(losses)
    _single_density_figure(edges, density, integrand, names[0], os.path.join(out, "loss_density.png"))
  io.save_text(os.path.join(workdir, "summary.md"), text)
  logging.info("wrote %s", os.path.join(workdir, "summary.md"))
  return text


def _single_density_figure(edges: np.ndarray, density: np.ndarray, integrand: np.ndarray, name: str,
                           path: str) -> None:
  from scaling import plotting  # noqa: PLC0415  (matplotlib only for figures)

  fig, axes = plotting.plt.subplots(1, 2, figsize=(9, 3.5))
  centres = 0.5 * (edges[1:] + edges[:-1])
  axes[0].plot(centres, density[0])
  axes[0].set(xscale="log", xlabel="per-token loss (bits)", ylabel="p(L)", title=name)
  axes[1].plot(centres, integrand[0])
  axes[1].set(xscale="log", xlabel="per-token loss (bits)", ylabel="L p(L)")
  fig.tight_layout()
  plotting.save(fig, [path])


# ---------------------------------------------------------------------------------------- evaluating checkpoints


def eval_config_dict(config: Any) -> dict[str, Any]:
  """Validated plain dict of an `lm_eval` config (raises before anything is loaded or written)."""
  c = config.to_dict() if hasattr(config, "to_dict") else dict(config)
  specs = model_specs(c)
  if not specs:
    raise ValueError(f"config.models is empty: give {checkpoints.SPEC_FORMS} (comma-separated)")
  for s in specs:
    checkpoints.check_spec(s)
  names = [checkpoints.model_name(s) for s in specs]
  if len(set(names)) != len(names):
    raise ValueError(f"model names collide: {names}")
  cc = c["corpus"]
  if cc["context"] < 2 or c["batch_size"] < 1 or (cc.get("max_docs") is not None and cc["max_docs"] < 1):
    raise ValueError(f"need context >= 2, batch_size >= 1, max_docs >= 1 or None; got {cc}, {c['batch_size']}")
  return c


def model_specs(c: dict[str, Any]) -> list[str]:
  """The model specs of an `lm_eval` config (`models` is comma-separated)."""
  return [s.strip() for s in str(c["models"]).split(",") if s.strip()]


KEEP_LOADED_BYTES = 4 << 30  # models checked before the first write stay loaded up to this many parameter bytes


def _load(spec: str) -> checkpoints.Loaded:
  """`checkpoints.load_model(spec)` with its tokenizer; any failure names the spec (original kept as __cause__)."""
  try:
    m = checkpoints.load_model(spec)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"model spec {spec!r} does not load: {e}") from e
  except (ValueError, KeyError, OSError, ImportError) as e:
    raise ValueError(f"model spec {spec!r} does not load: {type(e).__name__}: {e}") from e
  if m.tokenizer is None:
    raise ValueError(f"model spec {spec!r} has no tokenizer (tokenizer.json) to tokenise the corpus with")
  return m


def evaluate_models(config: Any, workdir: str) -> str:
  """Per-token losses of every model of `config.models` on the corpus, then the report; returns summary.md.

  Before anything is written into `workdir`, every model is loaded with its tokenizer and the corpus tokenised:
  a spec that does not load, lacks a tokenizer or tokenises the corpus differently from the first (models of a
  scaling report must share the tokenised corpus) raises naming the spec and leaves the workdir as it was. Models
  then are evaluated one at a time (`models/<name>.npz` caches each, so a re-run resumes); a model checked but not
  kept in memory (beyond KEEP_LOADED_BYTES) is loaded again for its evaluation.
  """
  c = eval_config_dict(config)
  specs = model_specs(c)
  workdir = os.path.abspath(workdir)
  io.check_config(workdir, c)
  cc = c["corpus"]
  docs = corpus_lib.read_documents(cc["source"], cc.get("max_docs"), doc_chars=cc["doc_chars"])
  label = corpus_lib.source_label(cc["source"])
  corpus, decode, model_cfgs, kept, kept_bytes = None, None, {}, {}, 0
  for spec in specs:  # reads only
    m = _load(spec)
    this = corpus_lib.tokenize(docs, corpus_lib.encoder(m.tokenizer), max_len=min(cc["context"], m.cfg.max_len),
                               source=label)
    if corpus is not None and (this.tokens.shape != corpus.tokens.shape or np.any(this.tokens != corpus.tokens)):
      raise ValueError(f"{spec} tokenises the corpus differently from {specs[0]}: per-token losses would not align")
    corpus, decode = corpus or this, decode or corpus_lib.decoder(m.tokenizer)
    model_cfgs[spec] = m.cfg
    size = sum(np.asarray(x).nbytes for x in jax.tree.leaves(m.params))
    if kept_bytes + size <= KEEP_LOADED_BYTES:
      kept[spec], kept_bytes = m, kept_bytes + size
    del m
  io.write_config(workdir, c)
  names, losses, cfgs, rates = [], [], [], []
  for spec in specs:
    name = checkpoints.model_name(spec)
    cache = os.path.join(workdir, "models", name + ".npz")
    m = kept.pop(spec, None)
    if os.path.exists(cache):
      d = io.load_npz(cache)
      ev_losses, rate = d["losses"], float(d["tokens_per_s"])
      logging.info("%s: per-token losses cached", name)
    else:
      m = m if m is not None else _load(spec)
      ev = per_token_losses(m.params, m.cfg, corpus, c["batch_size"], c["bucket"])
      ev_losses, rate = ev.losses, ev.tokens_per_s
      io.save_npz(cache, losses=ev_losses, tokens_per_s=np.asarray(rate), source=np.asarray(m.source))
      logging.info("%s: mean loss %.4f nats over %d predictions, %.0f tokens/s (compile %.1fs)", name, ev.mean,
                   len(ev.losses), rate, ev.compile_seconds)
    names.append(name)
    losses.append(ev_losses)
    cfgs.append(model_cfgs[spec])
    rates.append(rate)
    del m
  save_losses(workdir, names, losses, cfgs, rates, f"{label}, {corpus.n_docs} documents, context {corpus.max_len}")

  def contexts(i: int) -> str:
    before, target = corpus.context(int(i), decode)
    return f"{before}[{target}]"

  return report(workdir, contexts=contexts)


def parse_fit_models(text: str) -> slice | None:
  """`--fit_models` text: "" (all models) or a Python slice "a:b" over the models sorted by size (the paper fits
  the first 6 of 7 Pythia sizes: ":6" or ":-1")."""
  if not text.strip():
    return None
  parts = text.split(":")
  if len(parts) != 2:
    raise ValueError(f"fit_models {text!r} is not a slice 'a:b' (e.g. ':-1')")
  try:
    a, b = (int(x) if x.strip() else None for x in parts)
  except ValueError as e:
    raise ValueError(f"fit_models {text!r} is not a slice of integers") from e
  return slice(a, b)
