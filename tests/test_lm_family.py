"""The trained model family (scaling.lm.family): config validation, the workdir, per-token losses, the report.

Kill-and-resume, device counts, NaN stops and bad configs writing nothing are the engine's contract
(tests/test_engine.py, case "lm_family")."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lm_family
from scaling.engine import io
from scaling.engine import loop
from scaling.lm import corpus as corpus_lib
from scaling.lm import evaluate, family, family_checkpoint, family_data, family_train
from scaling.nn import transformer as lm

STEPS = 40


def _read(path, mode: str = "r"):
  with open(path, mode) as f:
    return f.read()


def tiny_config(**sections):
  """A CPU-second-sized family: vocab 300, context 32, 3 one-layer sizes, 40 steps of 8 windows."""
  c = lm_family.get_config("quick")
  c.tokenizer.vocab_size = 300
  c.context.update(length=32, heldout_len=32)
  c.model.sizes = ((8, 1, 2, 16), (16, 1, 2, 32), (24, 1, 2, 48))
  c.train.update(batch_size=8, steps=STEPS, warmup_steps=5, log_every=10, checkpoint_every=2)
  c.eval.update(n_windows=8)
  for name, values in sections.items():
    if isinstance(values, dict):
      c[name].update(values)
    else:
      c[name] = values
  return c


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  wd = str(tmp_path_factory.mktemp("family") / "wd")
  return wd, family.run(tiny_config(), wd)


# --- config


def test_config_variants_validate():
  quick = family.plan(lm_family.get_config("quick"))
  assert len(quick.points) == 4 and quick.config["context"]["length"] == 64
  assert list(quick.extra.n_nonemb) == sorted(set(quick.extra.n_nonemb))
  full = family.plan(lm_family.get_config("full"))
  assert len(full.points) == 5 and full.config["tokenizer"]["vocab_size"] == 2048
  assert list(full.shape_axes["size"]) == [p.name for p in family.plan(lm_family.get_config()).points]
  with pytest.raises(ValueError, match="unknown variant"):
    lm_family.get_config("huge")


@pytest.mark.parametrize("sections,match", [
    (dict(model=dict(sizes=((16, 1, 2, 32), (8, 1, 2, 16)))), "sorted by non-embedding"),
    (dict(model=dict(sizes=((16, 1, 2, 32), (16, 1, 2, 64)))), "repeated point names"),
    (dict(model=dict(sizes=((18, 1, 4, 32),))), "multiple of n_heads"),
    (dict(model=dict(sizes=((16, 1, 2),))), r"model.sizes\[0\]"),
    (dict(model=dict(sizes=((12, 1, 4, 32),))), "rotary_dim"),  # head_dim 3: RoPE needs an even one
    (dict(model=dict(heads_per_kv=3)), "heads_per_kv"),
    (dict(model=dict(arch="gpt2")), "model.arch"),
    (dict(tokenizer=dict(vocab_size=257)), "vocab_size"),
    (dict(context=dict(length=1)), "context.length"),
    (dict(context=dict(heldout_len=64)), "heldout_len"),
    (dict(train=dict(steps=45)), "multiple of"),
    (dict(train=dict(warmup_steps=40)), "warmup_steps"),
    (dict(train=dict(lr=0.0)), "train.lr"),
    (dict(train=dict(end_lr_frac=1.5)), "end_lr_frac"),
    (dict(eval=dict(n_windows=0)), "eval.n_windows"),
    (dict(corpus=dict(heldout_every=1)), "heldout_every"),
    (dict(n_seeds=0), "n_seeds"),
])
def test_bad_config_names_the_rule(sections, match):
  with pytest.raises(ValueError, match=match):
    family.plan(tiny_config(**sections))


def test_corpus_too_small_for_the_context_raises_before_compiling_or_writing(tmp_path, monkeypatch):
  """Found on the data, in `prepare`: the workdir holds only the engine's lock file."""
  compiled = []
  monkeypatch.setattr(loop, "init_program", lambda *a, **k: compiled.append(1))
  with pytest.raises(ValueError, match="fewer than one window"):
    family.run(tiny_config(context=dict(length=10**6, heldout_len=32)), str(tmp_path / "wd"))
  assert os.listdir(tmp_path / "wd") == [".lock"] and not compiled


# --- pieces


def test_schedule_decay_mask_and_stream():
  spec = family.plan(tiny_config()).points[0].spec
  lr = [float(family_train.learning_rate(jnp.int32(s), spec)) for s in (0, 5, STEPS)]
  np.testing.assert_allclose(lr, [0.0, spec.lr, 0.1 * spec.lr], rtol=1e-6)
  mask = family_train.decay_mask(lm.init(jax.random.key(0), spec.model))
  assert mask["embed"] and mask["blocks"]["wq"] and mask["blocks"]["w_down"]
  assert not mask["blocks"]["norm1"]["scale"] and not mask["final_norm"]["scale"]
  s = family_data.stream(["ab", "c"], lambda t: [ord(ch) for ch in t])
  np.testing.assert_array_equal(s, [97, 98, corpus_lib.EOS_ID, 99])
  train, held = family_data.split_documents([str(i) for i in range(25)], 10)
  assert held == ["9", "19"] and len(train) == 23


def test_windows_are_slices_of_the_stream():
  train_N = jnp.arange(100, dtype=jnp.int32)
  w = np.asarray(family_train.sample_windows(jax.random.key(1), train_N, 16, 7))
  assert w.shape == (16, 8) and w.min() >= 0 and w.max() <= 99
  np.testing.assert_array_equal(w - w[:, :1], np.broadcast_to(np.arange(8), (16, 8)))


# --- the run


def test_run_writes_the_workdir_and_losses_fall(tiny):
  wd, summary = tiny
  for f in ("config.json", "tokenizer.json", "metrics.jsonl", "curves.npz", "learning_curves.png", "losses.npz",
            "summary.md", "report/mean_loss_vs_params.png", "report/loss_density.png",
            "report/loss_integrand.png", "report/monogenic_polygenic.png"):
    assert os.path.exists(os.path.join(wd, f)), f
  names = summary["names"]
  assert names == ["d8_L1", "d16_L1", "d24_L1"]
  for n in names:
    assert io.load_npz(os.path.join(wd, "points", n + ".npz"))["complete"]
  records = io.read_metrics(wd)
  assert [(r["point"], r["step"]) for r in records] == [(n, s) for n in names for s in range(0, STEPS + 1, 10)]
  assert all(r["steps_per_s"] and r["tokens_per_s"] for r in records if r["step"])
  curves = io.load_workdir(wd)
  assert curves.axes["eval_loss"] == family.AXES and curves["eval_loss"].shape == (3, 1, 5)
  ev = curves["eval_loss"][:, 0]
  assert np.all(ev[:, -1] < ev[:, 0] - 0.5), f"eval loss falls from init (ln 300 = 5.70): {ev}"
  assert np.all(np.abs(ev[:, 0] - np.log(300)) < 0.1)
  assert np.isnan(curves["train_loss"][:, 0, -1]).all() and np.isfinite(curves["train_loss"][:, 0, :-1]).all()
  np.testing.assert_array_equal(summary["n_nonemb"], curves["n_nonemb"])
  np.testing.assert_allclose(summary["final_eval_loss"], ev[:, -1], rtol=1e-6)
  assert summary["alpha_N"] is not None and np.isfinite(summary["alpha_N"])
  assert summary["tokens_per_s_largest"] > 0
  text = _read(os.path.join(wd, "summary.md"))
  assert text == summary["markdown"] and "α_N" in text and "## Training" in text and "d24_L1" in text
  assert not [f for f in os.listdir(wd) if f.startswith(".tmp")]


def test_per_token_losses_are_aligned_and_average_to_mean_loss(tiny):
  wd, summary = tiny
  p = family.plan(tiny_config())
  d = evaluate.load_losses(wd)
  assert [str(n) for n in d["names"]] == summary["names"]
  tok = family_data.load_tokenizer(wd)
  docs = corpus_lib.read_documents(corpus_lib.DEFAULT_CORPUS, doc_chars=2000)
  train_docs, held_docs = family_data.split_documents(docs, 10)
  assert tok.to_str() == corpus_lib.train_bpe(train_docs, 300).to_str(), "trained on the training documents"
  held = corpus_lib.tokenize(held_docs, corpus_lib.encoder(tok), max_len=32)
  losses = d["losses_MxT"]
  assert losses.shape == (3, held.n_predictions) and np.isfinite(losses).all() and (losses >= 0).all()
  np.testing.assert_allclose(summary["per_token_mean_loss"], losses.mean(axis=1, dtype=np.float64), rtol=1e-6)
  mean_loss = jax.jit(lm.mean_loss, static_argnums=(3,))
  for i in (0, 2):
    params = family.final_params(p, i, wd)
    ref = float(mean_loss(params, jnp.asarray(held.tokens), jnp.asarray(held.lengths), p.points[i].spec.model))
    assert abs(losses[i].mean(dtype=np.float64) - ref) < 1e-5
  loaded = family_checkpoint.load_model(f"family:{wd}")  # the largest size, seed 0
  assert loaded.source == "family:d24_L1" and loaded.cfg == p.points[2].spec.model
  assert loaded.tokenizer.to_str() == tok.to_str()
  jax.tree.map(np.testing.assert_array_equal, loaded.params, family.final_params(p, 2, wd))


def test_rerun_skips_training_and_gives_identical_losses(tiny):
  wd, _ = tiny
  metrics = _read(os.path.join(wd, "metrics.jsonl"), "rb")
  before = evaluate.load_losses(wd)["losses_MxT"]
  again = family.run(tiny_config(), wd)
  assert _read(os.path.join(wd, "metrics.jsonl"), "rb") == metrics, "no new metric lines"
  np.testing.assert_array_equal(evaluate.load_losses(wd)["losses_MxT"], before)
  assert again["names"] == ["d8_L1", "d16_L1", "d24_L1"]


def test_other_config_or_tokenizer_in_the_same_workdir_is_refused(tiny, tmp_path):
  wd, _ = tiny
  metrics = _read(os.path.join(wd, "metrics.jsonl"), "rb")
  with pytest.raises(ValueError, match=r"different config.*train.steps: 40 -> 80"):
    family.run(tiny_config(train=dict(steps=80)), wd)
  assert _read(os.path.join(wd, "metrics.jsonl"), "rb") == metrics
  other = tmp_path / "other"
  other.mkdir()
  shutil.copy(os.path.join(wd, "config.json"), other / "config.json")
  docs = corpus_lib.read_documents(corpus_lib.DEFAULT_CORPUS, doc_chars=2000)
  (other / "tokenizer.json").write_text(corpus_lib.train_bpe(docs, 300).to_str())  # trained on all documents
  with pytest.raises(ValueError, match="tokenizer"):
    family.run(tiny_config(), str(other))
  assert sorted(os.listdir(other)) == [".lock", "config.json", "tokenizer.json"]
  assert json.loads(_read(other / "config.json")) == json.loads(_read(os.path.join(wd, "config.json")))
