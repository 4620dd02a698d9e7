"""A local text corpus with a flat index over next-token predictions (the quantization paper's Pile pipeline).

The paper tokenises Pile documents, truncates each to the model's context (1024 tokens) and indexes every
next-token prediction of every document by one flat integer. Here the same pipeline runs on whatever text is on
disk: `.txt` files, Pile-style `.jsonl` / `.jsonl.zst` shards (`{"text": ..., "meta": ...}` per line), or, by
default, `DEFAULT_CORPUS = "pydoc_data"`: the Python language reference that ships with CPython
(`pydoc_data.topics`). That default is NOT the Pile; it is used because nothing may be downloaded.

Conventions: prediction `l` of a document predicts token `l + 1` from tokens `0..l`, so per-token cross entropy is
`logits[:, :-1]` against `tokens[:, 1:]`. A document of `n` tokens has `preds_len = max(n - 1, 0)` predictions; flat
index `i` maps to `(doc, pos)` by a searchsorted over `offsets = [0, cumsum(preds_len)]`. Documents with 0 or 1
tokens have no predictions and are never returned by `Corpus.locate`.

`zstandard` and `tokenizers` are imported lazily, only by the functions that need them.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
  import tokenizers

DEFAULT_CORPUS = "pydoc_data"
DEFAULT_CORPUS_LABEL = "Python reference docs shipped with CPython (pydoc_data.topics), not the Pile"
PAD_TOKEN, EOS_TOKEN = "<pad>", "<eos>"
PAD_ID, EOS_ID = 0, 1  # ids of the special tokens of `train_bpe` tokenizers
DOC_SUFFIXES = (".txt", ".jsonl", ".jsonl.zst")
STDLIB_CORPUS = "python_stdlib"
STDLIB_CORPUS_LABEL = "Python standard library source shipped with CPython (code, not English; not the Pile)"
_STDLIB_SKIP = ("test", "tests", "idle_test", "site-packages", "dist-packages", "__pycache__")
BUILTIN_CORPORA = (DEFAULT_CORPUS, STDLIB_CORPUS)

_BLANK_LINES = re.compile(r"\n\s*\n")


# ----------------------------------------------------------------------------------------------------------------
# Documents


def _paragraphs(text: str) -> list[str]:
  """Paragraphs of `text`, split at blank lines; leading indentation kept, trailing whitespace dropped."""
  paras = (p.lstrip("\n").rstrip() for p in _BLANK_LINES.split(text))
  return [p for p in paras if p.strip()]


def _pack(paragraphs: Sequence[str], doc_chars: int) -> list[str]:
  """Greedily join consecutive paragraphs with "\\n\\n" into documents of at most `doc_chars` characters.

  A paragraph longer than `doc_chars` becomes a document of its own (it is never split).
  """
  docs: list[str] = []
  current = ""
  for para in paragraphs:
    if current and len(current) + 2 + len(para) <= doc_chars:
      current = current + "\n\n" + para
    else:
      if current:
        docs.append(current)
      current = para
  if current:
    docs.append(current)
  return docs


def _topic_documents(doc_chars: int) -> list[tuple[str, str]]:
  """(topic, document) pairs of the default corpus; topics in sorted order, documents never cross topics."""
  if isinstance(doc_chars, bool) or not isinstance(doc_chars, int) or doc_chars < 1:
    raise ValueError(f"doc_chars must be a positive int, got {doc_chars!r}")
  from pydoc_data.topics import topics  # pylint: disable=import-outside-toplevel

  return [(name, doc) for name in sorted(topics) for doc in _pack(_paragraphs(topics[name]), doc_chars)]


def default_documents(doc_chars: int = 2000) -> list[str]:
  """The default corpus: the Python language reference shipped with CPython (`pydoc_data.topics`), NOT the Pile.

  Used because nothing may be downloaded. Deterministic: topics in sorted key order, each topic's text split into
  paragraphs at blank lines, consecutive paragraphs packed greedily into documents of at most `doc_chars`
  characters (a longer single paragraph is its own document), never crossing a topic boundary.
  """
  return [doc for _, doc in _topic_documents(doc_chars)]


def source_label(source: str | os.PathLike) -> str:
  """A human-readable label of a corpus source for reports (the built-in corpora say what they are)."""
  return {DEFAULT_CORPUS: DEFAULT_CORPUS_LABEL, STDLIB_CORPUS: STDLIB_CORPUS_LABEL}.get(str(source), str(source))


def stdlib_documents(doc_chars: int = 2000) -> list[str]:
  """A larger built-in corpus: the `.py` source of the Python standard library this interpreter ships
  (`sysconfig.get_paths()["stdlib"]`, ~12.6 MB on CPython 3.11 without its test directories). It is code, not
  English, and not the Pile; it exists on every machine without download and is ~30x the size of the default
  corpus, enough to train a small model family for about one epoch.

  Deterministic: files in sorted relative-path order (directories named test, tests, idle_test, site-packages and
  __pycache__ skipped), each file split at blank lines and packed like `default_documents`, never crossing files.
  """
  if isinstance(doc_chars, bool) or not isinstance(doc_chars, int) or doc_chars < 1:
    raise ValueError(f"doc_chars must be a positive int, got {doc_chars!r}")
  import sysconfig  # pylint: disable=import-outside-toplevel

  root = Path(sysconfig.get_paths()["stdlib"])
  files = sorted(p.relative_to(root) for p in root.rglob("*.py")
                 if not set(p.relative_to(root).parts[:-1]) & set(_STDLIB_SKIP))
  docs: list[str] = []
  for rel in files:
    text = (root / rel).read_text(encoding="utf-8", errors="replace")
    docs.extend(_pack(_paragraphs(text), doc_chars))
  return docs


def _jsonl_lines(lines: Iterator[str] | io.TextIOBase, path: Path, text_key: str,
                 limit: int | None) -> Iterator[str]:
  """Documents `json.loads(line)[text_key]` of a jsonl stream, blank lines skipped, at most `limit` of them."""
  if limit is not None and limit < 1:
    return
  count = 0
  for lineno, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
    if not isinstance(record, dict) or text_key not in record:
      raise ValueError(f"{path}:{lineno}: no {text_key!r} key in record")
    text = record[text_key]
    if not isinstance(text, str):
      raise ValueError(f"{path}:{lineno}: {text_key!r} is {type(text).__name__}, not str")
    yield text
    count += 1
    if limit is not None and count >= limit:
      return  # stop reading: a .jsonl.zst shard is never decompressed past max_docs


def _read_file(path: Path, text_key: str, limit: int | None) -> Iterator[str]:
  """Documents of one `.txt` (one document), `.jsonl` or `.jsonl.zst` file (one per non-blank line)."""
  name = path.name
  if name.endswith(".txt"):
    yield path.read_text(encoding="utf-8")
  elif name.endswith(".jsonl"):
    with open(path, encoding="utf-8") as fh:
      yield from _jsonl_lines(fh, path, text_key, limit)
  elif name.endswith(".jsonl.zst"):
    import zstandard  # pylint: disable=import-outside-toplevel

    with open(path, "rb") as raw:
      reader = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
      with io.TextIOWrapper(reader, encoding="utf-8") as fh:  # streamed: never the whole file in memory
        yield from _jsonl_lines(fh, path, text_key, limit)
  else:
    raise ValueError(f"{path}: unknown extension; expected one of {DOC_SUFFIXES}")


def read_documents(source: str | os.PathLike, max_docs: int | None = None, text_key: str = "text",
                   doc_chars: int = 2000) -> list[str]:
  """Documents of `source`: "pydoc_data" (`default_documents(doc_chars)`), "python_stdlib"
  (`stdlib_documents(doc_chars)`), a `.txt` file (one document), a
  Pile-style `.jsonl` / `.jsonl.zst` file (one document per non-blank line, `json.loads(line)[text_key]`), or a
  directory (its `*.txt`, `*.jsonl`, `*.jsonl.zst` files, sorted by name, non-recursive, read in order).

  `max_docs` keeps the first `max_docs` documents (reading stops there).
  """
  if max_docs is not None and (isinstance(max_docs, bool) or not isinstance(max_docs, int) or max_docs < 1):
    raise ValueError(f"max_docs must be None or an int >= 1, got {max_docs!r}")
  if isinstance(source, str) and source in BUILTIN_CORPORA:
    docs = (default_documents if source == DEFAULT_CORPUS else stdlib_documents)(doc_chars)
    return docs if max_docs is None else docs[:max_docs]
  path = Path(source)
  if not path.exists():
    raise FileNotFoundError(f"corpus source not found: {path} (and it is not one of {BUILTIN_CORPORA})")
  if path.is_dir():
    files = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(DOC_SUFFIXES))
    if not files:
      raise ValueError(f"{path}: directory holds no {', '.join('*' + s for s in DOC_SUFFIXES)} files")
  elif path.name.endswith(DOC_SUFFIXES):
    files = [path]
  else:
    raise ValueError(f"{path}: unknown extension; expected a directory or one of {DOC_SUFFIXES}")
  docs = []
  for file in files:
    left = None if max_docs is None else max_docs - len(docs)
    docs.extend(_read_file(file, text_key, left))
    if max_docs is not None and len(docs) >= max_docs:
      break
  return docs


# ----------------------------------------------------------------------------------------------------------------
# Tokenised corpus with a flat prediction index


def _readonly(a: np.ndarray) -> np.ndarray:
  a.setflags(write=False)
  return a


def _int_array(x: np.ndarray | int | Sequence[int], name: str) -> np.ndarray:
  a = np.asarray(x)
  if a.size == 0 and a.dtype == np.float64:
    a = a.astype(np.int64)
  if not np.issubdtype(a.dtype, np.integer):
    raise TypeError(f"{name} must be integers, got dtype {a.dtype}")
  return a.astype(np.int64)


@dataclasses.dataclass(frozen=True, eq=False)
class Corpus:
  """Tokenised documents `tokens` [n_docs, max_len] int32 padded with `pad_id`, true `lengths` [n_docs] int32.

  `source` labels the text (for reports); `texts` optionally keeps the raw documents. Arrays are read-only.
  """

  tokens: np.ndarray
  lengths: np.ndarray
  pad_id: int
  source: str = ""
  texts: tuple[str, ...] | None = None

  def __post_init__(self):
    tokens = np.array(self.tokens, dtype=np.int32, copy=True)
    lengths = np.array(self.lengths, dtype=np.int32, copy=True)
    if tokens.ndim != 2 or tokens.shape[1] < 2:
      raise ValueError(f"tokens must be [n_docs, max_len >= 2], got shape {tokens.shape}")
    if lengths.shape != (tokens.shape[0],):
      raise ValueError(f"lengths shape {lengths.shape} != ({tokens.shape[0]},)")
    if lengths.size and (lengths.min() < 0 or lengths.max() > tokens.shape[1]):
      raise ValueError(f"lengths must lie in [0, {tokens.shape[1]}]")
    if self.texts is not None:
      object.__setattr__(self, "texts", tuple(self.texts))
      if len(self.texts) != tokens.shape[0]:
        raise ValueError(f"{len(self.texts)} texts for {tokens.shape[0]} documents")
    object.__setattr__(self, "tokens", _readonly(tokens))
    object.__setattr__(self, "lengths", _readonly(lengths))

  @property
  def n_docs(self) -> int:
    """Number of documents (rows of `tokens`)."""
    return int(self.tokens.shape[0])

  @property
  def max_len(self) -> int:
    """Padded length of every row (the context length)."""
    return int(self.tokens.shape[1])

  @functools.cached_property
  def preds_len(self) -> np.ndarray:
    """Number of next-token predictions per document, `max(length - 1, 0)` (int64)."""
    return _readonly(np.maximum(self.lengths.astype(np.int64) - 1, 0))

  @functools.cached_property
  def offsets(self) -> np.ndarray:
    """[n_docs + 1] flat index of each document's first prediction, then the total (int64)."""
    return _readonly(np.concatenate([[0], np.cumsum(self.preds_len)]).astype(np.int64))

  @property
  def n_predictions(self) -> int:
    """Total number of next-token predictions over all documents."""
    return int(self.offsets[-1])

  @functools.cached_property
  def _valid(self) -> np.ndarray:
    """[n_docs, max_len - 1] mask of real predictions (position < preds_len)."""
    return _readonly(np.arange(self.max_len - 1)[None, :] < self.preds_len[:, None])

  def locate(self, flat_idx: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """(doc, pos) int64 arrays, the shape of `flat_idx`; documents without predictions are never returned."""
    idx = _int_array(flat_idx, "flat_idx")
    if idx.size and (idx.min() < 0 or idx.max() >= self.n_predictions):
      raise IndexError(f"flat index out of range [0, {self.n_predictions})")
    doc = np.searchsorted(self.offsets, idx, side="right") - 1
    return doc, idx - self.offsets[doc]

  def flat_index(self, doc: np.ndarray | int, pos: np.ndarray | int) -> np.ndarray:
    """Inverse of `locate`: flat index of prediction `pos` (predicting token pos + 1) of document `doc`."""
    d, p = np.broadcast_arrays(_int_array(doc, "doc"), _int_array(pos, "pos"))
    if d.size and (d.min() < 0 or d.max() >= self.n_docs):
      raise IndexError(f"doc out of range [0, {self.n_docs})")
    if d.size and (p.min() < 0 or np.any(p >= self.preds_len[d])):
      raise IndexError("pos out of range [0, preds_len[doc])")
    return self.offsets[d] + p

  def targets_flat(self) -> np.ndarray:
    """All target tokens `tokens[d, 1:lengths[d]]`, concatenated in flat-index order (int32)."""
    return self.tokens[:, 1:][self._valid]

  def flatten(self, per_position: np.ndarray) -> np.ndarray:
    """[n_docs, max_len - 1, ...] per-prediction values (e.g. losses of logits[:, :-1] vs tokens[:, 1:]) -> the
    [n_predictions, ...] flat vector of the valid predictions, in flat-index order.

    Batches from `batches` carry padding rows: slice the stacked result to `[:n_docs]` first.
    """
    a = np.asarray(per_position)
    if a.shape[:2] != (self.n_docs, self.max_len - 1):
      raise ValueError(f"expected shape ({self.n_docs}, {self.max_len - 1}, ...), got {a.shape}")
    return a[self._valid]

  def context(self, flat_idx: int, decode: Callable[[list[int]], str], n_before: int = 40) -> tuple[str, str]:
    """(decoded context: at most `n_before` tokens up to and including position pos, decoded target token)."""
    if n_before < 1:
      raise ValueError(f"n_before must be >= 1, got {n_before}")
    d, p = (int(x) for x in self.locate(int(flat_idx)))
    ctx = self.tokens[d, max(0, p + 1 - n_before):p + 1]
    return decode([int(t) for t in ctx]), decode([int(self.tokens[d, p + 1])])

  def batches(self, batch_size: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(doc_start, tokens [B, max_len], lengths [B]) over documents in order; the last batch is padded with rows
    of `pad_id` and length 0 to a full `batch_size`, so one compiled shape serves all batches."""
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, self.n_docs, batch_size):
      toks = np.full((batch_size, self.max_len), self.pad_id, np.int32)
      lens = np.zeros(batch_size, np.int32)
      n = min(batch_size, self.n_docs - start)
      toks[:n] = self.tokens[start:start + n]
      lens[:n] = self.lengths[start:start + n]
      yield start, toks, lens

  def select(self, docs: np.ndarray | Sequence[int]) -> Corpus:
    """A corpus of the given documents (same max_len, pad_id and source)."""
    d = _int_array(docs, "docs")
    texts = None if self.texts is None else tuple(self.texts[i] for i in d)
    return Corpus(self.tokens[d], self.lengths[d], self.pad_id, self.source, texts)

  def split(self, every: int = 10) -> tuple[Corpus, Corpus]:
    """Deterministic (train, held_out) split by document: document i is held out iff i % every == every - 1."""
    if every < 2:
      raise ValueError(f"every must be >= 2, got {every}")
    held = np.arange(self.n_docs) % every == every - 1
    return self.select(np.flatnonzero(~held)), self.select(np.flatnonzero(held))


def tokenize(docs: Sequence[str], encode: Callable[[str], list[int]], max_len: int, pad_id: int = 0,
             bos_id: int | None = None, source: str = "", keep_texts: bool = True) -> Corpus:
  """Encode each document, prepend `bos_id` if given, truncate to `max_len` tokens (the paper: 1024), pad with
  `pad_id`. Every id is checked (0 <= id < 2**31) before anything is built."""
  if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
    raise ValueError(f"max_len must be an int >= 2, got {max_len!r}")
  if pad_id < 0 or (bos_id is not None and bos_id < 0):
    raise ValueError(f"pad_id and bos_id must be >= 0, got {pad_id}, {bos_id}")
  if isinstance(docs, str):
    raise TypeError("docs must be a sequence of strings, not a single string")
  encoded = []
  for i, doc in enumerate(docs):
    ids = ([] if bos_id is None else [bos_id]) + list(encode(doc))
    arr = _int_array(ids, f"ids of document {i}")
    if arr.size and (arr.min() < 0 or arr.max() >= 2**31):
      raise ValueError(f"document {i}: token ids must lie in [0, 2**31), got min {arr.min()} max {arr.max()}")
    encoded.append(arr[:max_len])
  tokens = np.full((len(encoded), max_len), pad_id, np.int32)
  lengths = np.zeros(len(encoded), np.int32)
  for i, arr in enumerate(encoded):
    tokens[i, :len(arr)] = arr
    lengths[i] = len(arr)
  return Corpus(tokens, lengths, int(pad_id), source, tuple(docs) if keep_texts else None)


# ----------------------------------------------------------------------------------------------------------------
# Tokenizers


def encoder(tok: tokenizers.Tokenizer) -> Callable[[str], list[int]]:
  """`encode` callable for `tokenize` from a `tokenizers.Tokenizer`."""
  return lambda s: tok.encode(s).ids


def decoder(tok: tokenizers.Tokenizer) -> Callable[[list[int]], str]:
  """`decode` callable for `Corpus.context` from a `tokenizers.Tokenizer`."""
  return lambda ids: tok.decode(ids)


def train_bpe(docs: Sequence[str], vocab_size: int, min_frequency: int = 2) -> tokenizers.Tokenizer:
  """A byte-level BPE tokenizer trained on `docs` (deterministic); `<pad>` is id 0 (`PAD_ID`), `<eos>` id 1."""
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

  n_base = 2 + len(pre_tokenizers.ByteLevel.alphabet())
  if vocab_size < n_base:
    raise ValueError(f"vocab_size must be >= {n_base} (2 special tokens + 256 bytes), got {vocab_size}")
  tok = Tokenizer(models.BPE())
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, show_progress=False,
                                special_tokens=[PAD_TOKEN, EOS_TOKEN],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tok.train_from_iterator(list(docs), trainer=trainer)
  if tok.token_to_id(PAD_TOKEN) != PAD_ID or tok.token_to_id(EOS_TOKEN) != EOS_ID:
    raise RuntimeError("special token ids are not <pad>=0, <eos>=1")
  return tok
