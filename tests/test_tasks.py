"""Deterministic checks of the MSP task (spec quanta.md §1, §7)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.quanta import task as task_lib

PAPER = task_lib.MSPSpec(n_tasks=500, n=100, k=3)
SMALL = task_lib.MSPSpec(n_tasks=10, n=30, k=3)


def _subsets(spec, seed=0):
  return jnp.asarray(task_lib.make_subsets(spec.n_tasks, spec.n, spec.k, seed))


def test_batch_layout_one_hot_and_parity_labels():
  subsets = _subsets(SMALL)
  probs = task_lib.task_probs(SMALL, 0.4)
  b = task_lib.online_batch(jax.random.key(1), SMALL, probs, subsets, 4096)
  x = np.asarray(task_lib.to_inputs(b.task_B, b.bits_BxN, SMALL.n_tasks))
  assert x.shape == (4096, SMALL.n_tasks + SMALL.n)
  control, bits = x[:, :SMALL.n_tasks], x[:, SMALL.n_tasks:]
  np.testing.assert_array_equal(control.sum(1), 1.0)
  np.testing.assert_array_equal(control.argmax(1), np.asarray(b.task_B))
  assert set(np.unique(x)) == {0.0, 1.0}  # 0/1 inputs, not ±1
  s = np.asarray(subsets)[np.asarray(b.task_B)]
  expected = np.take_along_axis(bits, s, axis=1).sum(1) % 2
  np.testing.assert_array_equal(np.asarray(b.y_B), expected)
  assert 0.45 < bits.mean() < 0.55 and 0.4 < expected.mean() < 0.6


def test_unpack_bits_order_and_width():
  words = jnp.asarray([[0b1011, 1]], jnp.uint32)
  bits = np.asarray(task_lib.unpack_bits(words, 40))
  assert bits.shape == (1, 40)
  np.testing.assert_array_equal(bits[0, :5], [1, 1, 0, 1, 0])
  assert bits[0, 32] == 1 and bits[0].sum() == 4


def test_subsets_distinct_sorted_reproducible():
  s = task_lib.make_subsets(500, 100, 3, seed=0)
  assert s.shape == (500, 3) and s.dtype == np.int32
  assert len({tuple(r) for r in s}) == 500
  assert np.all(np.diff(s, axis=1) > 0) and s.min() >= 0 and s.max() < 100
  np.testing.assert_array_equal(s, task_lib.make_subsets(500, 100, 3, seed=0))
  assert not np.array_equal(s, task_lib.make_subsets(500, 100, 3, seed=1))


def test_subsets_follow_python_random_procedure():
  """The original: after random.seed(seed), draw tuple(sorted(random.sample(range(n), k))), skip repeats."""
  import random
  random.seed(0)
  want = []
  while len(want) < 50:
    s = tuple(sorted(random.sample(range(100), 3)))
    if s not in want:
      want.append(s)
  assert [tuple(r) for r in task_lib.make_subsets(50, 100, 3, seed=0)] == want


def test_frequencies_paper_values():
  p = np.asarray(task_lib.task_probs(PAPER, 0.4), np.float64)
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-6)
  np.testing.assert_allclose(p[:5], [0.34513, 0.13078, 0.07413, 0.04956, 0.03626], rtol=2e-4)
  np.testing.assert_allclose(p[499], 5.75e-5, rtol=2e-3)
  np.testing.assert_allclose(p[:41].sum(), 0.877, atol=1e-3)
  ranks = np.arange(1, 501)
  np.testing.assert_allclose(p / p[0], ranks ** -1.4, rtol=1e-4)  # paper α=0.4 is the code's exponent 1.4
  assert task_lib.zipf_exponent(0.4) == pytest.approx(1.4)


def test_offset_and_uniform_variants():
  p = np.asarray(task_lib.task_probs(task_lib.MSPSpec(500, 100, 3, offset=10.0), 0.4), np.float64)
  np.testing.assert_allclose(p[1] / p[0], (12 / 11) ** -1.4, rtol=1e-5)
  u = np.asarray(task_lib.task_probs(task_lib.MSPSpec(500, 100, 3, distribution="uniform"), 0.4))
  np.testing.assert_allclose(u, 1 / 500)


def test_sampled_task_frequencies_chi_square():
  p = task_lib.task_probs(SMALL, 0.4)
  n = 200_000
  counts = np.bincount(np.asarray(task_lib.sample_tasks(jax.random.key(0), p, n)), minlength=SMALL.n_tasks)
  expected = n * np.asarray(p, np.float64)
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 27.9, f"chi-square {chi2:.1f} with 9 dof exceeds the 0.001 critical value"


def test_exact_count_test_batch():
  counts = task_lib.exact_counts(np.asarray(task_lib.task_probs(PAPER, 0.4), np.float64), 1_000_000)
  assert counts.sum() == 999_746
  assert counts[0] == 345_126
  assert counts.min() == 57


def test_eval_batch_is_task_major():
  b = task_lib.eval_batch(jax.random.key(0), SMALL, _subsets(SMALL), per_task=7)
  np.testing.assert_array_equal(np.asarray(b.task_B).reshape(10, 7), np.arange(10)[:, None].repeat(7, 1))


def test_fixed_dataset_epochs_cover_every_sample_once():
  D, batch = 2500, 1024  # 3 minibatches per epoch, the last one partial (452)
  data = task_lib.make_dataset(jax.random.key(0), SMALL, task_lib.task_probs(SMALL, 0.4), _subsets(SMALL), D)
  assert task_lib.batches_per_epoch(D, batch) == 3
  want = np.stack([np.asarray(data.task_D), np.asarray(data.y_D)], 1)
  orders = []
  for epoch in range(2):
    seen = []
    for step in range(3 * epoch, 3 * epoch + 3):
      b = task_lib.dataset_batch(data, jax.random.key(1), jnp.int32(step), SMALL, batch, D)
      w = np.asarray(b.weight_B).astype(bool)
      assert b.task_B.shape == (batch,)
      seen.append(np.stack([np.asarray(b.task_B)[w], np.asarray(b.y_B)[w]], 1))
    assert [len(s) for s in seen] == [1024, 1024, 452]
    got = np.concatenate(seen)
    np.testing.assert_array_equal(got[np.lexsort(got.T)], want[np.lexsort(want.T)])
    orders.append(got)
  assert not np.array_equal(orders[0], orders[1])  # reshuffled every epoch


def test_fixed_dataset_counts_and_full_batch():
  D = 500
  data = task_lib.make_dataset(jax.random.key(0), SMALL, task_lib.task_probs(SMALL, 0.4), _subsets(SMALL), D)
  b = task_lib.dataset_batch(data, jax.random.key(1), jnp.int32(7), SMALL, 2048, D)  # min(D, batch) = D: full batch
  np.testing.assert_array_equal(np.asarray(b.task_B), np.asarray(data.task_D))
  np.testing.assert_array_equal(np.asarray(b.weight_B), 1.0)
  counts = np.bincount(np.asarray(data.task_D), minlength=10)
  assert counts.sum() == D and counts[0] > counts[5]


@pytest.mark.parametrize("n_tasks,n,k,match", [(5, 3, 4, "exceeds"), (200, 10, 3, "distinct subsets"),
                                               (1, 0, 1, ">= 1")])
def test_impossible_tasks_raise(n_tasks, n, k, match):
  with pytest.raises(ValueError, match=match):
    task_lib.make_subsets(n_tasks, n, k, seed=0)


def test_subset_count_boundary():
  assert math.comb(10, 3) == 120
  s = task_lib.make_subsets(60, 10, 3, seed=0)  # half of all subsets: found within 600 draws
  assert len({tuple(r) for r in s}) == 60
