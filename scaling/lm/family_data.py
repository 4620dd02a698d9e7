"""The family's data, built on the host before anything is written: documents, tokenizer, streams, eval windows.

Document i is held out iff i % heldout_every == heldout_every - 1 (the rule of `Corpus.split`), applied to the
documents before anything else, so the byte-level BPE tokenizer is trained on the training documents only. It is
deterministic; it is saved to `workdir/tokenizer.json`, and a re-run refuses a workdir whose tokenizer differs from
the one it would train. The training data are the training documents encoded and joined into one int32 stream with
`EOS_ID` between documents; the logged eval loss uses `eval.n_windows` windows of the held-out stream at evenly
spaced starts; the per-token pass uses the held-out documents truncated to `context.heldout_len` tokens.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Sequence

import numpy as np

from scaling.lm import corpus as corpus_lib

TOKENIZER = "tokenizer.json"


@dataclasses.dataclass(frozen=True)
class Data:
  """The tokenizer, the training stream, the fixed eval windows and the held-out corpus of the per-token pass."""

  tokenizer: Any  # tokenizers.Tokenizer
  n_train_docs: int
  n_heldout_docs: int
  train_N: np.ndarray  # int32 stream of the training documents, EOS between documents
  heldout_N: np.ndarray  # the same for the held-out documents
  eval_windows_ExT1: np.ndarray  # [n_windows, length + 1] int32, evenly spaced starts in heldout_N
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
      raise ValueError(f"the {name} documents hold {s.size} tokens, fewer than one window of context.length + 1 = "
                       f"{t1}")
  starts_E = np.linspace(0, heldout_N.size - t1, config["eval"]["n_windows"]).astype(np.int64)
  windows = np.stack([heldout_N[s:s + t1] for s in starts_E]).astype(np.int32)
  heldout = corpus_lib.tokenize(heldout_docs, encode, max_len=cx["heldout_len"], pad_id=corpus_lib.PAD_ID,
                                source=corpus_label(config))
  if heldout.n_predictions < 1:
    raise ValueError("the held-out documents have no next-token predictions")
  return Data(tok, len(train_docs), len(heldout_docs), train_N, heldout_N, windows, heldout)


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
