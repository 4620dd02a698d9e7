"""The model family's data regimes (scaling.lm.family_data: one pass, reuse of a slice), the train-window loss, and
the train-test gap table (scaling.lm.reuse)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lm_family
from scaling.engine import experiment as E
from scaling.engine import io as wd
from scaling.engine import loop
from scaling.lm import family, family_data, family_train, reuse
import test_engine


def tiny(regime: str = "random", reuse_tokens: int = 0, **train):
  """The engine contract's tiny family (default corpus, 20 documents, context 16, batch 4), in `regime`."""
  _, c, _, _ = test_engine._lm_family()  # pylint: disable=protected-access
  c.n_seeds = 1
  c.data.update(regime=regime, reuse_tokens=reuse_tokens)
  c.train.update(**train)
  return c


def visits(regime: str, n_tokens: int, reuse_tokens: int = 0, **train) -> tuple[np.ndarray, np.ndarray, int]:
  """(window starts [steps, batch] that the jitted `batch_windows` takes at every step, train-window starts, T1) of
  the regime on a stream whose token at offset i is i (so a window's first token is its start)."""
  cfg = family.plan(tiny(regime, reuse_tokens, **train)).config
  spec = family.plan(cfg).points[0].spec
  train_N = np.arange(n_tokens, dtype=np.int32)
  order_W, train_eval_starts = family_data.regime_windows(cfg, train_N)
  steps = jnp.arange(spec.steps, dtype=jnp.int32)
  windows_SxBxT1 = jax.jit(jax.vmap(lambda s: family_train.batch_windows(
      s, jax.random.key(0), jnp.asarray(train_N), jnp.asarray(order_W), spec)))(steps)
  w = np.asarray(windows_SxBxT1)
  t1 = spec.length + 1
  np.testing.assert_array_equal(w - w[..., :1], np.broadcast_to(np.arange(t1), w.shape), "contiguous windows")
  return w[..., 0], np.asarray(train_eval_starts), t1


def test_one_pass_never_repeats_a_window():
  n_tokens = 5000  # 294 windows of T1 = 17; 60 steps x 4 = 240 of them
  starts, train_eval, t1 = visits("one_pass", n_tokens, steps=60, log_every=4)
  flat = starts.ravel()
  assert flat.size == 240 and len(set(flat.tolist())) == flat.size, "every window at most once"
  assert np.all(flat % t1 == 0) and flat.min() >= 0 and flat.max() + t1 <= n_tokens, "non-overlapping, in the stream"
  assert flat.max() - flat[:4].min() > n_tokens // 2, "the first batch is spread over the stream, not one document"
  # the train windows are the first ones visited: 4 windows (the tiny config's eval.n_windows) of step 0
  np.testing.assert_array_equal(train_eval, starts[0])


def test_reuse_repeats_exactly_its_slice():
  t1, n_slice = 17, 22  # 22 windows, not a multiple of the batch of 4: epochs straddle batches
  slice_tokens = n_slice * t1 + 9  # the remainder of 9 tokens is no window
  starts, train_eval, _ = visits("reuse", 5000, slice_tokens, steps=24, log_every=4)  # 96 windows: 4.4 epochs
  seq = starts.ravel()  # in visit order
  np.testing.assert_array_equal(np.sort(seq[:n_slice]), np.arange(n_slice) * t1, "epoch 0 is the slice's windows")
  np.testing.assert_array_equal(seq[n_slice:], seq[:-n_slice], "epoch e + 1 visits epoch e's windows in its order")
  assert seq.max() + t1 <= slice_tokens
  assert set(train_eval.tolist()) <= set(seq.tolist()) and train_eval[0] == 0 and train_eval[-1] == (n_slice - 1) * t1


def test_random_regime_is_unchanged():
  """The default draws `sample_windows(fold_in(data_key, step))`, as before the regimes existed."""
  spec = family.plan(tiny()).points[0].spec
  train_N, key = jnp.arange(3000, dtype=jnp.int32), jax.random.key(3)
  got = family_train.batch_windows(jnp.int32(7), key, train_N, jnp.zeros(1, jnp.int32), spec)
  want = family_train.sample_windows(jax.random.fold_in(key, 7), train_N, spec.batch_size, spec.length)
  np.testing.assert_array_equal(got, want)


def test_golden_order_is_a_permutation():
  for n in (1, 2, 5, 12, 97, 100, 1024):
    np.testing.assert_array_equal(np.sort(family_data.golden_order(n)), np.arange(n), err_msg=str(n))


@pytest.mark.parametrize("regime,reuse_tokens,match", [
    ("reuse", 4 * 17 - 1, r"data.reuse_tokens=67 is smaller than one batch of windows.*4 \* 17"),
    ("random", 100, "data.reuse_tokens=100 is set but data.regime='random'"),
    ("epochs", 0, "data.regime"),
])
def test_bad_regime_config_names_the_field(regime, reuse_tokens, match, tmp_path):
  with pytest.raises(ValueError, match=match):
    family.run(tiny(regime, reuse_tokens), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


@pytest.mark.parametrize("overrides,match", [
    (dict(regime="one_pass", steps=4000, log_every=4),
     r"train.steps \* train.batch_size \* \(context.length \+ 1\) = 4000 \* 4 \* 17 = 272,000 tokens exceed the "
     r"[\d,]+ training tokens of corpus 'pydoc_data'"),
    (dict(regime="reuse", reuse_tokens=10**7), r"data.reuse_tokens=10,000,000 exceeds the [\d,]+ training tokens"),
    (dict(length=10**5), r"corpus 'pydoc_data': the training documents hold [\d,]+ tokens, fewer than one window of "
     r"context.length \+ 1 = 100001"),
])
def test_data_too_small_raises_before_compiling_or_writing(overrides, match, tmp_path, monkeypatch):
  """Found on the tokenised corpus, in `prepare`: the workdir holds only the engine's lock file."""
  c = tiny(overrides.pop("regime", "random"), overrides.pop("reuse_tokens", 0), **{
      k: v for k, v in overrides.items() if k != "length"})
  if "length" in overrides:
    c.context.length = overrides["length"]
  compiled = []
  monkeypatch.setattr(loop, "init_program", lambda *a, **k: compiled.append(1))
  with pytest.raises(ValueError, match=match):
    family.run(c, str(tmp_path / "wd"))
  assert os.listdir(tmp_path / "wd") == [".lock"] and not compiled


def test_reuse_kill_and_resume_is_bitwise_and_logs_both_losses(tmp_path, monkeypatch):
  c = tiny("reuse", 8 * 17)  # a slice of 2 batches: 12 steps are 6 epochs
  one = jax.devices()[:1]
  summary = E.run(family.EXPERIMENT, c, str(tmp_path / "ref"), devices=one)
  assert os.path.exists(tmp_path / "ref" / reuse.TRAIN_TEST) and "## Train-test gap (reuse)" in summary["markdown"]
  assert summary["gap"]["names"] == ["d8_L1", "d16_L1"] and len(summary["gap"]["mark_steps"]) == 4
  monkeypatch.setattr(family.EXPERIMENT, "finish", lambda plan, w, curves: curves)  # the report is checked above
  test_engine._run_killed(monkeypatch, family.EXPERIMENT, c, str(tmp_path / "killed"), after=3, devices=one)
  E.run(family.EXPERIMENT, c, str(tmp_path / "killed"), devices=one)
  ref = wd.load_workdir(str(tmp_path / "ref"))
  test_engine._same(wd.load_workdir(str(tmp_path / "killed")), ref)  # pylint: disable=protected-access
  assert ref.axes["train_eval_loss"] == family.AXES and ref["train_eval_loss"].shape == (2, 1, 4)
  train, test = ref["train_eval_loss"][:, 0], ref["eval_loss"][:, 0]
  assert np.all(np.abs(train[:, 0] - np.log(260)) < 0.1), f"both start at ln V = 5.56 (uniform init): {train[:, 0]}"
  assert np.all(train[:, -1] < test[:, -1]), f"after 6 epochs of its slice the model fits it better: {train} {test}"
  records = wd.read_metrics(str(tmp_path / "ref"))
  assert all(np.isfinite(r["train_eval_loss"]) for r in records)


def test_gap_table_orders_widths_and_measures_growth():
  # 3 sizes, 2 seeds, 5 log steps; the seeds differ by ±0.1 around the mean curves below
  test_ZxL = np.array([[5.0, 4.0, 3.9, 3.9, 3.9], [5.0, 3.5, 3.4, 3.6, 3.8], [5.0, 3.4, 3.3, 3.7, 4.0]])
  train_ZxL = np.array([[5.0, 3.9, 3.8, 3.75, 3.7], [5.0, 3.4, 3.1, 2.9, 2.6], [5.0, 3.3, 2.9, 2.3, 1.9]])
  pm = np.array([-0.1, 0.1])[None, :, None]
  t = reuse.gap_table("reuse", ["a", "b", "c"], [10, 20, 40], np.arange(0, 50, 10),
                      test_ZxL[:, None] + pm, train_ZxL[:, None] + pm, n_marks=3)
  assert t.mark_steps == (0, 20, 40)
  np.testing.assert_allclose(t.gap_ZxK, [[0, 0.1, 0.2], [0, 0.3, 1.2], [0, 0.4, 2.1]], atol=1e-12)
  assert t.grows_Z.tolist() == [False, True, True]  # growth 0.1 (< MIN_GROWTH 0.2), 0.9, 1.7 nats
  np.testing.assert_allclose(t.best_test_Z, [3.9, 3.4, 3.3]) and t.best_step_Z.tolist() == [20, 20, 20]
  assert t.order(t.test_Z) == "b < a < c" and not t.monotone(t.test_Z)
  assert t.order(t.best_test_Z) == "c < b < a" and t.monotone(t.best_test_Z)
  text = reuse.markdown(t)
  assert "+0.000 -> +0.400 -> +2.100 nats at steps 0, 20, 40" in text and "not monotone in width at the last" in text
  with pytest.raises(ValueError, match="do not match"):
    reuse.gap_table("reuse", ["a", "b"], [1, 2], np.arange(5), test_ZxL[:, None], train_ZxL[:, None])


def test_regime_variants_differ_only_in_the_data_regime():
  """The quick (and the larger) one-pass and reuse variants are the same runs but for the data they see."""
  for one_pass, reused in (("one_pass_quick", "reuse_quick"), ("one_pass", "reuse")):
    a, b = (family.plan(lm_family.get_config(v)).config for v in (one_pass, reused))
    da, db = a.pop("data"), b.pop("data")
    assert da == {"regime": "one_pass", "reuse_tokens": 0} and db["regime"] == "reuse" and db["reuse_tokens"] > 0
    assert a == b, (one_pass, reused)
