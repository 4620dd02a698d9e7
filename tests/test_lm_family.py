"""The trained model family (scaling.lm.family): config validation, the workdir, per-token losses, resume."""

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
from scaling.lm import corpus as corpus_lib
from scaling.lm import evaluate, family
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
  assert len(quick.names) == 4 and quick.config["context"]["length"] == 64
  assert list(quick.n_nonemb) == sorted(set(quick.n_nonemb))
  full = family.plan(lm_family.get_config("full"))
  assert len(full.names) == 5 and full.config["tokenizer"]["vocab_size"] == 2048
  assert full.names == family.plan(lm_family.get_config()).names
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
    (dict(context=dict(length=10**6, heldout_len=32)), "fewer than one window"),  # found on the data, still early
])
def test_bad_config_raises_before_compiling_or_writing(tmp_path, monkeypatch, sections, match):
  compiled = []
  monkeypatch.setattr(family, "init_states", lambda *a, **k: compiled.append(1))
  with pytest.raises(ValueError, match=match):
    family.run(tiny_config(**sections), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists() and not compiled


def test_unknown_key_is_refused(tmp_path):
  cfg = tiny_config().to_dict()
  cfg["train"]["learning_rate"] = 1e-3
  with pytest.raises(ValueError, match="unknown config keys.*train.learning_rate"):
    family.run(cfg, str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


# --- pieces


def test_schedule_decay_mask_and_stream():
  spec = family.plan(tiny_config()).specs[0]
  lr = [float(family.learning_rate(jnp.int32(s), spec)) for s in (0, 5, STEPS)]
  np.testing.assert_allclose(lr, [0.0, spec.lr, 0.1 * spec.lr], rtol=1e-6)
  mask = family.decay_mask(lm.init(jax.random.key(0), spec.model))
  assert mask["embed"] and mask["blocks"]["wq"] and mask["blocks"]["w_down"]
  assert not mask["blocks"]["norm1"]["scale"] and not mask["final_norm"]["scale"]
  s = family.stream(["ab", "c"], lambda t: [ord(ch) for ch in t])
  np.testing.assert_array_equal(s, [97, 98, corpus_lib.EOS_ID, 99])
  train, held = family.split_documents([str(i) for i in range(25)], 10)
  assert held == ["9", "19"] and len(train) == 23


def test_windows_are_slices_of_the_stream():
  train_N = jnp.arange(100, dtype=jnp.int32)
  w = np.asarray(family.sample_windows(jax.random.key(1), train_N, 16, 7))
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
  tok = family.load_tokenizer(wd)
  docs = corpus_lib.read_documents(corpus_lib.DEFAULT_CORPUS, doc_chars=2000)
  train_docs, held_docs = family.split_documents(docs, 10)
  assert tok.to_str() == corpus_lib.train_bpe(train_docs, 300).to_str(), "trained on the training documents"
  held = corpus_lib.tokenize(held_docs, corpus_lib.encoder(tok), max_len=32)
  losses = d["losses_MxT"]
  assert losses.shape == (3, held.n_predictions) and np.isfinite(losses).all() and (losses >= 0).all()
  np.testing.assert_allclose(summary["per_token_mean_loss"], losses.mean(axis=1, dtype=np.float64), rtol=1e-6)
  mean_loss = jax.jit(lm.mean_loss, static_argnums=(3,))
  for i in (0, 2):
    params = family.final_params(p, i, wd)
    ref = float(mean_loss(params, jnp.asarray(held.tokens), jnp.asarray(held.lengths), p.specs[i].model))
    assert abs(losses[i].mean(dtype=np.float64) - ref) < 1e-5


def test_rerun_skips_training_and_gives_identical_losses(tiny):
  wd, _ = tiny
  metrics = _read(os.path.join(wd, "metrics.jsonl"), "rb")
  before = evaluate.load_losses(wd)["losses_MxT"]
  again = family.run(tiny_config(), wd)
  assert _read(os.path.join(wd, "metrics.jsonl"), "rb") == metrics, "no new metric lines"
  np.testing.assert_array_equal(evaluate.load_losses(wd)["losses_MxT"], before)
  assert again["names"] == ["d8_L1", "d16_L1", "d24_L1"]


class _Killed(Exception):
  pass


def test_kill_and_resume_is_bitwise(tiny, tmp_path, monkeypatch):
  """Killed in the second size after a metric line that no checkpoint covers; the re-run matches bitwise."""
  wd_full, _ = tiny
  real, calls = family.run_chunk, []

  def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) > 4 + 3:  # 4 chunks per size: dies at the 4th chunk of the second size
      raise _Killed()
    return real(*args, **kwargs)

  wd = str(tmp_path / "resumed")
  monkeypatch.setattr(family, "run_chunk", dying)
  with pytest.raises(_Killed):
    family.run(tiny_config(), wd)
  # The line of step 20 (eval at 20, train loss of steps 20-29) was written; the checkpoint at step 20 is the state
  # before that chunk, so the re-run drops the line and computes it again.
  assert [r["step"] for r in io.read_metrics(wd) if r["point"] == "d16_L1"] == [0, 10, 20]
  assert not os.path.exists(os.path.join(wd, "losses.npz"))
  monkeypatch.setattr(family, "run_chunk", real)
  family.run(tiny_config(), wd)
  for name in ("d8_L1", "d16_L1", "d24_L1"):
    a, b = (io.load_npz(os.path.join(w, "points", name + ".npz")) for w in (wd_full, wd))
    for k in a:
      np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name} {k}")
  np.testing.assert_array_equal(evaluate.load_losses(wd)["losses_MxT"], evaluate.load_losses(wd_full)["losses_MxT"])
  steps = [(r["point"], r["step"]) for r in io.read_metrics(wd)]
  assert len(steps) == len(set(steps)) == 3 * 5, "one metrics line per size and log step"


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
  assert sorted(os.listdir(other)) == ["config.json", "tokenizer.json"]
  assert json.loads(_read(other / "config.json")) == json.loads(_read(os.path.join(wd, "config.json")))
