"""The family's data, built on the host before anything is written: documents, tokenizer, streams, eval windows.

Document i is held out iff i % heldout_every == heldout_every - 1 (the rule of `Corpus.split`), applied to the
documents before anything else, so the byte-level BPE tokenizer is trained on the training documents only. It is
deterministic; it is saved to `workdir/tokenizer.json`, and a re-run refuses a workdir whose tokenizer differs from
the one it would train. The training data are the training documents encoded and joined into one int32 stream with
`EOS_ID` between documents; the logged eval loss uses `eval.n_windows` windows of the held-out stream at evenly
spaced starts; the per-token pass uses the held-out documents truncated to `context.heldout_len` tokens.

Data regimes (`data.regime`; windows of T1 = `context.length + 1` tokens):
- "random" (the default): every step draws its windows at uniform random starts of the whole stream
  (`family_train.sample_windows`); the train-window loss uses `eval.n_windows` windows at evenly spaced starts.
- "one_pass": the stream is cut into its W = floor(N / T1) consecutive non-overlapping windows, visited once each in
  the fixed order `golden_order(W)` (which spreads the windows of a batch over the whole stream, so the data seen is
  stationary in time although the corpus is sorted by topic or file); `train.steps * train.batch_size * T1` must not
  exceed the N training tokens. The train-window loss uses the first `eval.n_windows` windows of that order, i.e. the
  windows of the first steps: training data from the first log steps on, never seen again, so train minus held-out
  loss measures what one visit of a window buys (the paper's one-pass train ≈ test).
- "reuse": only the first `data.reuse_tokens` tokens of the stream (the slice) are used: its floor(reuse_tokens / T1)
  windows, visited in the fixed order `golden_order` and cycled epoch after epoch in that same order (epoch e + 1 sees
  the same windows as epoch e). The train-window loss uses `eval.n_windows` windows of the slice at evenly spaced
  window indices (repeated if the slice has fewer). The slice is the first tokens of a sorted corpus, so its gap to the
  held-out loss includes a shift of topic or file as well as memorisation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Sequence

import numpy as np

from scaling.lm import corpus as corpus_lib

TOKENIZER = "tokenizer.json"
REGIMES = ("random", "one_pass", "reuse")


@dataclasses.dataclass(frozen=True)
class Data:
  """The tokenizer, the training stream, the fixed eval windows and the held-out corpus of the per-token pass."""

  tokenizer: Any  # tokenizers.Tokenizer
  n_train_docs: int
  n_heldout_docs: int
  train_N: np.ndarray  # int32 stream of the training documents, EOS between documents
  heldout_N: np.ndarray  # the same for the held-out documents
  eval_windows_ExT1: np.ndarray  # [n_windows, length + 1] int32, evenly spaced starts in heldout_N
  train_eval_windows_ExT1: np.ndarray  # [n_windows, length + 1] int32, fixed windows of the training data used
  order_W: np.ndarray  # int32 window starts in train_N in visit order (one_pass, reuse); [0] for random
  heldout: corpus_lib.Corpus  # held-out documents truncated to heldout_len tokens


def split_documents(docs: Sequence[str], every: int) -> tuple[list[str], list[str]]:
  """(train, held-out) documents: document i is held out iff i % every == every - 1 (`Corpus.split`'s rule)."""
  held = [i % every == every - 1 for i in range(len(docs))]
  return [d for d, h in zip(docs, held) if not h], [d for d, h in zip(docs, held) if h]


def stream(docs: Sequence[str], encode: Any) -> np.ndarray:
  """The documents encoded and joined with `EOS_ID` between them (int32)."""
  parts: list[list[int]] = []
  for i, doc in enumerate(docs):
    if i:
      parts.append([corpus_lib.EOS_ID])
    parts.append(list(encode(doc)))
  return np.fromiter((t for part in parts for t in part), np.int32)


def golden_order(n: int) -> np.ndarray:
  """A fixed permutation of range(n): i -> (a * i) % n, a the integer nearest n (√5 − 1) / 2 that is coprime to n
  (consecutive visits land ~0.62 n apart: a low-discrepancy spread over the stream)."""
  a0 = max(1, round(n * (5 ** 0.5 - 1) / 2))
  a = next(c for d in range(n + 1) for c in (a0 + d, a0 - d) if 1 <= c and math.gcd(c, n) == 1)
  return (a * np.arange(n, dtype=np.int64)) % n


def regime_windows(config: dict[str, Any], train_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(visit order of window starts [W] int32, starts of the fixed train-window set [n_windows]) of the config's data
  regime on the training stream; ValueError naming the fields when the stream is too short for the regime."""
  regime, t1 = config["data"]["regime"], config["context"]["length"] + 1
  tr, n_eval, n_tokens = config["train"], config["eval"]["n_windows"], int(train_N.size)
  source = config["corpus"]["source"]
  if regime == "random":
    return np.zeros(1, np.int32), np.linspace(0, n_tokens - t1, n_eval).astype(np.int64)
  if regime == "one_pass":
    need = tr["steps"] * tr["batch_size"] * t1
    if need > n_tokens:
      raise ValueError(f"data.regime='one_pass': train.steps * train.batch_size * (context.length + 1) = "
                       f"{tr['steps']} * {tr['batch_size']} * {t1} = {need:,} tokens exceed the {n_tokens:,} training "
                       f"tokens of corpus {source!r}: fewer steps, a smaller batch or a larger corpus")
    order_W = golden_order(n_tokens // t1) * t1
    return order_W.astype(np.int32), order_W[np.arange(n_eval) % order_W.size]
  slice_tokens = config["data"]["reuse_tokens"]
  if slice_tokens > n_tokens:
    raise ValueError(f"data.reuse_tokens={slice_tokens:,} exceeds the {n_tokens:,} training tokens of corpus "
                     f"{source!r}")
  n_slice = slice_tokens // t1
  order_W = golden_order(n_slice) * t1
  return order_W.astype(np.int32), np.linspace(0, n_slice - 1, n_eval).round().astype(np.int64) * t1


def corpus_label(config: dict[str, Any]) -> str:
  co = config["corpus"]
  base = corpus_lib.source_label(co["source"])
  return (f"{base}; held-out documents (every {co['heldout_every']}th), first {config['context']['heldout_len']} "
          "tokens each")


def prepare_data(config: dict[str, Any]) -> Data:
  """Reads and splits the documents, trains the tokenizer on the training ones, builds the streams and windows;
  ValueError when the corpus is too small for the config."""
  co, cx = config["corpus"], config["context"]
  docs = corpus_lib.read_documents(co["source"], max_docs=co["max_docs"] or None, doc_chars=co["doc_chars"])
  train_docs, heldout_docs = split_documents(docs, co["heldout_every"])
  if not train_docs or not heldout_docs:
    raise ValueError(f"corpus {co['source']!r}: {len(docs)} documents leave {len(train_docs)} training and "
                     f"{len(heldout_docs)} held-out ones at heldout_every={co['heldout_every']}; need >= 1 of each")
  tok = corpus_lib.train_bpe(train_docs, config["tokenizer"]["vocab_size"], config["tokenizer"]["min_frequency"])
  encode = corpus_lib.encoder(tok)
  train_N, heldout_N = stream(train_docs, encode), stream(heldout_docs, encode)
  t1 = cx["length"] + 1
  for name, s in (("training", train_N), ("held-out", heldout_N)):
    if s.size < t1:
      raise ValueError(f"corpus {co['source']!r}: the {name} documents hold {s.size:,} tokens, fewer than one window "
                       f"of context.length + 1 = {t1}")
  starts_E = np.linspace(0, heldout_N.size - t1, config["eval"]["n_windows"]).astype(np.int64)
  windows = np.stack([heldout_N[s:s + t1] for s in starts_E]).astype(np.int32)
  order_W, train_starts_E = regime_windows(config, train_N)
  train_windows = np.stack([train_N[s:s + t1] for s in train_starts_E]).astype(np.int32)
  heldout = corpus_lib.tokenize(heldout_docs, encode, max_len=cx["heldout_len"], pad_id=corpus_lib.PAD_ID,
                                source=corpus_label(config))
  if heldout.n_predictions < 1:
    raise ValueError("the held-out documents have no next-token predictions")
  return Data(tok, len(train_docs), len(heldout_docs), train_N, heldout_N, windows, train_windows, order_W, heldout)


def check_tokenizer(workdir: str, tok: Any) -> bool:
  """True if `workdir/tokenizer.json` holds `tok`, False if absent; ValueError if it holds a different one."""
  path = os.path.join(workdir, TOKENIZER)
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  if saved != json.loads(tok.to_str()):
    raise ValueError(f"{path} differs from the tokenizer this config trains on this corpus (did the corpus "
                     "change?); use a new workdir")
  return True


def load_tokenizer(workdir: str) -> Any:
  """The tokenizer saved in `workdir/tokenizer.json`."""
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel

  with open(os.path.join(workdir, TOKENIZER), encoding="utf-8") as f:
    return Tokenizer.from_str(f.read())
