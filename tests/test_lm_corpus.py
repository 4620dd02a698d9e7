"""Local LM corpus: default CPython docs, jsonl / jsonl.zst readers, flat prediction index, BPE tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zstandard
from pydoc_data.topics import topics

from scaling.lm import corpus as lc

TOY_DOCS = ["alpha beta gamma", "", "x", "delta epsilon", "zeta eta theta iota kappa", "y", "lambda mu"]


def _squash(s: str) -> str:
  return "".join(s.split())


def _char_encode(s: str) -> list[int]:
  return [ord(c) for c in s]


def _char_decode(ids: list[int]) -> str:
  return "".join(chr(i) for i in ids)


@pytest.fixture(name="small")
def fixture_small() -> lc.Corpus:
  """7 docs of lengths 16, 0, 1, 13, 25, 1, 9 truncated to 12: docs 1, 2 and 5 have no predictions."""
  return lc.tokenize(TOY_DOCS, _char_encode, max_len=12, pad_id=0, source="toy")


# ----------------------------------------------------------------------------------------------------------------
# Documents


def test_default_documents_deterministic_and_bounded():
  docs = lc.default_documents(1000)
  assert lc.DEFAULT_CORPUS == "pydoc_data" and "not the Pile" in lc.DEFAULT_CORPUS_LABEL
  assert len(docs) > 100 and docs == lc.default_documents(1000)
  assert any('The "if" statement' in d for d in docs)
  assert docs[0].startswith(topics[sorted(topics)[0]].strip()[:20])
  long = [d for d in docs if len(d) > 1000]
  assert long and all("\n\n" not in d for d in long)  # only single paragraphs may exceed doc_chars
  assert all(d.strip() for d in docs)
  assert len(lc.default_documents(4000)) < len(docs)  # bigger documents, fewer of them
  assert lc.read_documents("pydoc_data", max_docs=5, doc_chars=1000) == docs[:5]


def test_default_documents_preserve_text_and_never_cross_topics():
  pairs = lc._topic_documents(1500)  # pylint: disable=protected-access
  names = [name for name, _ in pairs]
  assert names == sorted(names) and set(names) == set(topics)
  for name in topics:
    mine = [d for n, d in pairs if n == name]
    assert _squash("".join(mine)) == _squash(topics[name])  # every character of the topic, in order, only there
  assert _squash("".join(lc.default_documents(1500))) == _squash("".join(topics[k] for k in sorted(topics)))


def test_pack_greedy():
  pack = lc._pack  # pylint: disable=protected-access
  assert pack(["aaa", "bbb", "cc", "dddddddddd", "e"], 8) == ["aaa\n\nbbb", "cc", "dddddddddd", "e"]
  assert pack(["aa", "bb"], 6) == ["aa\n\nbb"]  # exactly doc_chars fits
  assert lc._paragraphs("a\nb\n\n\n  c\n \nd\n") == ["a\nb", "  c", "d"]  # pylint: disable=protected-access


def _write_jsonl(tmp_path, texts):
  lines = [json.dumps({"text": t, "meta": {"i": i}}) for i, t in enumerate(texts)]
  raw = ("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n").encode()  # a blank line is skipped
  (tmp_path / "a.jsonl").write_bytes(raw)
  cctx = zstandard.ZstdCompressor()
  (tmp_path / "a.jsonl.zst").write_bytes(cctx.compress(raw[:50]) + cctx.compress(raw[50:]))  # two frames
  return tmp_path / "a.jsonl", tmp_path / "a.jsonl.zst"


def test_jsonl_and_zst_identical(tmp_path):
  texts = [f"document {i}\nwith ünïcode ✓ and {'x' * i}" for i in range(9)]
  plain, zst = _write_jsonl(tmp_path, texts)
  assert lc.read_documents(str(plain)) == texts
  assert lc.read_documents(zst) == texts
  assert lc.read_documents(zst, max_docs=4) == texts[:4] == lc.read_documents(plain, max_docs=4)
  assert lc.read_documents(zst, max_docs=100) == texts


def test_directory_and_txt(tmp_path):
  (tmp_path / "b.txt").write_text("plain text\n\nwhole file is one doc", encoding="utf-8")
  (tmp_path / "c.md").write_text("ignored", encoding="utf-8")
  (tmp_path / "sub").mkdir()
  (tmp_path / "sub" / "d.txt").write_text("not recursive", encoding="utf-8")
  _write_jsonl(tmp_path, ["j0", "j1", "j2"])
  # sorted: a.jsonl, a.jsonl.zst, b.txt
  assert lc.read_documents(tmp_path) == ["j0", "j1", "j2", "j0", "j1", "j2", "plain text\n\nwhole file is one doc"]
  assert lc.read_documents(tmp_path, max_docs=4) == ["j0", "j1", "j2", "j0"]
  assert lc.read_documents(tmp_path / "b.txt") == ["plain text\n\nwhole file is one doc"]


def test_read_errors(tmp_path):
  with pytest.raises(FileNotFoundError):
    lc.read_documents(tmp_path / "missing.jsonl")
  (tmp_path / "x.csv").write_text("a,b")
  with pytest.raises(ValueError, match="extension"):
    lc.read_documents(tmp_path / "x.csv")
  with pytest.raises(ValueError, match="no "):
    lc.read_documents(tmp_path)  # a directory without corpus files
  (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n\n{"content": "no text"}\n')
  with pytest.raises(ValueError, match=r"bad\.jsonl:3: no 'text' key"):
    lc.read_documents(tmp_path / "bad.jsonl")
  assert lc.read_documents(tmp_path / "bad.jsonl", text_key="text", max_docs=1) == ["ok"]
  (tmp_path / "bad2.jsonl").write_text('{"text": "ok"}\nnot json\n')
  with pytest.raises(ValueError, match=r"bad2\.jsonl:2: invalid JSON"):
    lc.read_documents(tmp_path / "bad2.jsonl")
  for bad in (0, -1):
    with pytest.raises(ValueError, match="max_docs"):
      lc.read_documents("pydoc_data", max_docs=bad)
  with pytest.raises(ValueError, match="doc_chars"):
    lc.default_documents(0)


# ----------------------------------------------------------------------------------------------------------------
# Tokenised corpus


def test_tokenize_truncation_bos_and_validation():
  c = lc.tokenize(["abcdef", "ab", ""], _char_encode, max_len=4, pad_id=7, bos_id=3, keep_texts=False)
  np.testing.assert_array_equal(c.lengths, [4, 3, 1])
  np.testing.assert_array_equal(c.tokens, [[3, 97, 98, 99], [3, 97, 98, 7], [3, 7, 7, 7]])
  assert c.tokens.dtype == np.int32 and c.lengths.dtype == np.int32 and c.texts is None and c.pad_id == 7
  np.testing.assert_array_equal(c.preds_len, [3, 2, 0])
  c2 = lc.tokenize(["abcdef"], _char_encode, max_len=4)
  np.testing.assert_array_equal(c2.tokens, [[97, 98, 99, 100]])
  assert c2.texts == ("abcdef",)
  with pytest.raises(ValueError, match="max_len"):
    lc.tokenize(["ab"], _char_encode, max_len=1)
  with pytest.raises(ValueError, match="ids"):
    lc.tokenize(["ab", "cd"], lambda s: [1, -2] if s == "cd" else [1, 2], max_len=4)
  with pytest.raises(ValueError):
    lc.tokenize(["ab"], _char_encode, max_len=4, bos_id=-1)
  with pytest.raises(ValueError):
    c.tokens[0, 0] = 1  # read-only


def test_locate_flat_index_round_trip(small):
  np.testing.assert_array_equal(small.lengths, [12, 0, 1, 12, 12, 1, 9])
  np.testing.assert_array_equal(small.preds_len, [11, 0, 0, 11, 11, 0, 8])
  assert small.n_predictions == 41 and small.offsets[-1] == 41
  brute = [(d, p) for d in range(small.n_docs) for p in range(int(small.lengths[d]) - 1)]
  doc, pos = small.locate(np.arange(small.n_predictions))
  assert list(zip(doc.tolist(), pos.tolist())) == brute
  assert not set(doc.tolist()) & {1, 2, 5}  # documents without predictions are never returned
  np.testing.assert_array_equal(small.flat_index(doc, pos), np.arange(small.n_predictions))
  d, p = small.locate(11)  # first prediction after the empty docs 1 and 2
  assert (int(d), int(p)) == (3, 0) and d.shape == ()
  idx = np.array([[40, 0], [22, 33]])
  assert small.locate(idx)[0].shape == (2, 2)
  for bad in (-1, 41):
    with pytest.raises(IndexError):
      small.locate(np.array([0, bad]))
  with pytest.raises(IndexError):
    small.flat_index(1, 0)  # doc 1 has no predictions
  with pytest.raises(IndexError):
    small.flat_index(0, 11)
  with pytest.raises(IndexError):
    small.flat_index(7, 0)


def test_targets_flat_and_flatten_match_brute_force(small):
  doc, pos = small.locate(np.arange(small.n_predictions))
  targets = small.targets_flat()
  assert targets.dtype == np.int32
  np.testing.assert_array_equal(targets, small.tokens[doc, pos + 1])
  values = np.random.default_rng(0).normal(size=(small.n_docs, small.max_len - 1))
  brute = [values[d, p] for d in range(small.n_docs) for p in range(max(int(small.lengths[d]) - 1, 0))]
  np.testing.assert_array_equal(small.flatten(values), brute)
  extra = np.stack([values, -values], axis=-1)  # trailing dims ride along
  np.testing.assert_array_equal(small.flatten(extra)[:, 1], -np.asarray(brute))
  with pytest.raises(ValueError):
    small.flatten(values[:, :-1])


def test_context(small):
  i = int(small.flat_index(4, 5))  # doc 4 "zeta eta th|eta..." position 5 predicts tokens[4, 6]
  assert small.context(i, _char_decode) == ("zeta e", "t")
  assert small.context(i, _char_decode, n_before=3) == ("a e", "t")
  assert small.context(0, _char_decode) == ("a", "l")


def test_batches_cover_all_docs_with_padding(small):
  got = list(small.batches(3))
  assert [s for s, _, _ in got] == [0, 3, 6]
  assert all(t.shape == (3, 12) and l.shape == (3,) for _, t, l in got)
  toks = np.concatenate([t for _, t, _ in got])
  lens = np.concatenate([l for _, _, l in got])
  np.testing.assert_array_equal(toks[:7], small.tokens)
  np.testing.assert_array_equal(lens[:7], small.lengths)
  assert (toks[7:] == small.pad_id).all() and (lens[7:] == 0).all()
  assert len(list(small.batches(7))) == 1


def test_split_disjoint_and_covering():
  docs = [f"doc {i}" for i in range(23)]
  c = lc.tokenize(docs, _char_encode, max_len=8, source="s")
  train, held = c.split(every=5)
  assert held.texts == tuple(docs[i] for i in (4, 9, 14, 19))
  assert set(train.texts).isdisjoint(held.texts) and set(train.texts) | set(held.texts) == set(docs)
  assert train.n_docs + held.n_docs == 23 and train.max_len == held.max_len == 8
  np.testing.assert_array_equal(held.tokens, c.tokens[[4, 9, 14, 19]])
  assert train.n_predictions + held.n_predictions == c.n_predictions
  assert c.split(5)[1].texts == held.texts  # deterministic
  with pytest.raises(ValueError):
    c.split(1)


# ----------------------------------------------------------------------------------------------------------------
# BPE


def test_train_bpe_deterministic_and_round_trip():
  docs = lc.default_documents(1500)[:60]
  tok = lc.train_bpe(docs, vocab_size=400)
  assert tok.to_str() == lc.train_bpe(docs, vocab_size=400).to_str()
  assert tok.get_vocab_size() == 400 and tok.token_to_id("<pad>") == lc.PAD_ID == 0
  enc, dec = lc.encoder(tok), lc.decoder(tok)
  for text in ["The \"if\" statement is used for conditional execution:\n\n   if x:\n\tpass  ", docs[3],
               "Ünïcode ✓ ünseen bytes 𝔘"]:
    ids = enc(text)
    assert dec(ids) == text
  assert len(enc(docs[0])) < len(docs[0].encode())  # merges compress the training text
  c = lc.tokenize(docs[:5], enc, max_len=64, bos_id=lc.EOS_ID, source=lc.DEFAULT_CORPUS_LABEL)
  assert (c.tokens[:, 0] == lc.EOS_ID).all() and c.source == lc.DEFAULT_CORPUS_LABEL
  before, target = c.context(10, dec, n_before=100)
  assert (docs[0]).startswith(before + target)
  with pytest.raises(ValueError):
    lc.train_bpe(docs, vocab_size=100)


def test_stdlib_corpus_is_the_standard_library_source():
  docs = lc.read_documents(lc.STDLIB_CORPUS)
  assert len(docs) > 3000 and sum(map(len, docs)) > 5_000_000, "the stdlib corpus should be ~12 MB of code"
  assert any("def " in d for d in docs[:50])
  assert lc.read_documents(lc.STDLIB_CORPUS, max_docs=7) == docs[:7]
  assert "not the Pile" in lc.source_label(lc.STDLIB_CORPUS)
  assert "not the Pile" in lc.source_label(lc.DEFAULT_CORPUS)
  assert lc.source_label("/data/pile/test.jsonl.zst") == "/data/pile/test.jsonl.zst"
