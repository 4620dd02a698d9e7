"""Per-token losses of the checkpoints an `lm_eval` config names (model files, or sizes of our family), then the
per-token scaling report (`launch.lm_eval`). The losses and the report are `scaling.lm.evaluate`'s.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from absl import logging

from scaling.engine import io
from scaling.lm import checkpoints
from scaling.lm import corpus as corpus_lib
from scaling.lm import evaluate, family_checkpoint
from scaling.engine import launch


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
  """`family_checkpoint.load_model(spec)` with its tokenizer; any failure names the spec (original kept as __cause__)."""
  try:
    m = family_checkpoint.load_model(spec)
  except FileNotFoundError as e:
    raise FileNotFoundError(f"model spec {spec!r} does not load: {e}") from e
  except (ValueError, KeyError, OSError, ImportError) as e:
    raise ValueError(f"model spec {spec!r} does not load: {type(e).__name__}: {e}") from e
  if m.tokenizer is None:
    raise ValueError(f"model spec {spec!r} has no tokenizer (tokenizer.json) to tokenise the corpus with")
  return m


@launch.host_driven
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
      ev = evaluate.per_token_losses(m.params, m.cfg, corpus, c["batch_size"], c["bucket"])
      ev_losses, rate = ev.losses, ev.tokens_per_s
      io.save_npz(cache, losses=ev_losses, tokens_per_s=np.asarray(rate), source=np.asarray(m.source))
      logging.info("%s: mean loss %.4f nats over %d predictions, %.0f tokens/s (compile %.1fs)", name, ev.mean,
                   len(ev.losses), rate, ev.compile_seconds)
    names.append(name)
    losses.append(ev_losses)
    cfgs.append(model_cfgs[spec])
    rates.append(rate)
    del m
  evaluate.save_losses(workdir, names, losses, cfgs, rates,
                       f"{label}, {corpus.n_docs} documents, context {corpus.max_len}")

  def contexts(i: int) -> str:
    before, target = corpus.context(int(i), decode)
    return f"{before}[{target}]"

  return evaluate.report(workdir, contexts=contexts)
