"""Fixed-D training sets with D on the member axis: keyed epoch shuffles, padded buffers, prefix-stable datasets."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.quanta import task as task_lib

SMALL = task_lib.MSPSpec(n_tasks=10, n=30, k=3)
WIDE = task_lib.MSPSpec(n_tasks=10, n=100, k=3)  # 4 words per row
# 99.9% quantiles of chi-square (scipy.stats.chi2.ppf(0.999, dof)) for dof = 5, 9, 81
CHI2_999 = {5: 20.515, 9: 27.877, 81: 126.083}

epoch_index = jax.jit(task_lib.epoch_index)
dataset_batch = jax.jit(task_lib.dataset_batch, static_argnames=("spec", "batch"))


def _subsets(spec):
  return jnp.asarray(task_lib.make_subsets(spec.n_tasks, spec.n, spec.k, seed=0))


def _dataset(spec, D, seed=0):
  return task_lib.make_dataset(jax.random.key(seed), spec, task_lib.task_probs(spec, 0.4), _subsets(spec), D)


def _tagged(D_max):
  """A dataset whose row r has task r (rows are identified by their task) and y = r % 2."""
  rows = jnp.arange(D_max, dtype=jnp.int32)
  words = (rows[:, None].astype(jnp.uint32) * jnp.uint32(2654435761)) >> jnp.uint32(3)
  return task_lib.Dataset(rows, words, rows % 2)


def _positions(key, epoch, D):
  return np.asarray(epoch_index(key, jnp.int32(epoch), jnp.arange(D, dtype=jnp.int32), jnp.int32(D)))


@pytest.mark.parametrize("D", [1, 2, 3, 7, 64, 100, 1000, 4097, 5_000_000])
def test_epoch_index_is_a_permutation(D):
  for epoch in (0, 1):
    np.testing.assert_array_equal(np.bincount(_positions(jax.random.key(3), epoch, D), minlength=D), 1)


@pytest.mark.parametrize("D", [7, 100, 4097])
def test_epochs_and_keys_give_different_orders(D):
  base = _positions(jax.random.key(0), 0, D)
  assert not np.array_equal(base, _positions(jax.random.key(0), 1, D))
  assert not np.array_equal(base, _positions(jax.random.key(1), 0, D))
  np.testing.assert_array_equal(base, _positions(jax.random.key(0), 0, D))  # deterministic


def test_epoch_index_vmapped_over_key_epoch_and_D_matches_per_D_calls():
  Ds = [1, 3, 7, 100, 4097]
  keys = jax.random.split(jax.random.key(5), len(Ds))
  epochs = jnp.asarray([0, 4, 1, 9, 2], jnp.int32)
  pos_P = jnp.arange(max(Ds), dtype=jnp.int32)
  D_M = jnp.asarray(Ds, jnp.int32)
  got_MxP = np.asarray(jax.jit(jax.vmap(task_lib.epoch_index))(
      keys, epochs, jnp.minimum(pos_P[None, :], D_M[:, None] - 1), D_M))
  for m, D in enumerate(Ds):
    want = np.asarray(epoch_index(keys[m], epochs[m], pos_P[:D], jnp.int32(D)))
    np.testing.assert_array_equal(got_MxP[m, :D], want)
    np.testing.assert_array_equal(got_MxP[m, D:], want[D - 1])  # padded positions repeat position D - 1
  unclamped = epoch_index(keys[0], epochs[0], pos_P, jnp.int32(Ds[0]))  # out-of-range positions are clamped too
  np.testing.assert_array_equal(np.asarray(unclamped), got_MxP[0])


def test_epoch_index_is_uniform_over_epochs():
  """Over E epochs at D = 10 each item-by-position count is ~ E/D. Row 0 (where item 0 lands) is multinomial:
  chi-square with 9 dof. The whole 10x10 table of E i.i.d. uniform permutation matrices has Pearson statistic
  -> D/(D-1) chi-square((D-1)^2) (covariance (I - J/D) x (I - J/D) / (D - 1)). Both against the 99.9% quantile; with
  4 or 6 Feistel rounds the table statistic is 2999 or 266 here (8: 81, 10: 67). D = 3: the 6 orders are equally
  frequent (chi-square with 5 dof)."""
  E, D = 100_000, 10
  orders = jax.jit(jax.vmap(task_lib.epoch_index, in_axes=(None, 0, None, None)))
  P_ExD = np.asarray(orders(jax.random.key(11), jnp.arange(E, dtype=jnp.int32), jnp.arange(D, dtype=jnp.int32),
                            jnp.int32(D)))
  e = E / D
  count_0 = np.bincount(np.argmax(P_ExD == 0, axis=1), minlength=D)
  assert ((count_0 - e) ** 2 / e).sum() < CHI2_999[9]
  table_DxD = np.stack([np.bincount(P_ExD[:, p], minlength=D) for p in range(D)])
  assert ((table_DxD - e) ** 2 / e).sum() * (D - 1) / D < CHI2_999[81]
  E3 = 60_000
  P3 = np.asarray(orders(jax.random.key(12), jnp.arange(E3, dtype=jnp.int32), jnp.arange(3, dtype=jnp.int32),
                         jnp.int32(3)))
  counts = np.asarray([np.all(P3 == np.asarray(o), axis=1).sum() for o in itertools.permutations(range(3))])
  assert counts.sum() == E3 and ((counts - E3 / 6) ** 2 / (E3 / 6)).sum() < CHI2_999[5]


@pytest.mark.parametrize("D,batch", [(5, 8), (8, 8), (24, 8), (29, 8), (3, 1), (1000, 64)])
@pytest.mark.parametrize("D_max_extra", [0, 13])
def test_every_epoch_covers_each_sample_once(D, batch, D_max_extra):
  data = _tagged(D + D_max_extra)
  nb = -(-D // min(D, batch))
  orders = set()
  for epoch in range(3):
    hits = np.zeros(D + D_max_extra)
    order = []
    for step in range(epoch * nb, (epoch + 1) * nb):
      b = dataset_batch(data, jax.random.key(2), jnp.int32(step), SMALL, batch, jnp.int32(D))
      assert b.task_B.shape == (min(D + D_max_extra, batch),)
      w = np.asarray(b.weight_B)
      assert set(np.unique(w)) <= {0.0, 1.0}
      np.add.at(hits, np.asarray(b.task_B), w)
      order += list(np.asarray(b.task_B)[w == 1])
    np.testing.assert_array_equal(hits, np.r_[np.ones(D), np.zeros(D_max_extra)])
    orders.add(tuple(order))
    if D <= batch:
      assert order == list(range(D))  # full batch in natural order
  if D > batch and D >= 7:
    assert len(orders) == 3  # reshuffled every epoch


def _weighted_sum(b):
  """An integer-valued function of the rows: float32 sums of it are exact below 2**24, so any order gives the same."""
  f_B = b.task_B * 3 + b.y_B + b.bits_BxN.astype(jnp.int32) @ jnp.arange(1, SMALL.n + 1)
  return jnp.sum(f_B.astype(jnp.float32) * b.weight_B)


@pytest.mark.parametrize("D,batch", [(5, 8), (8, 8), (24, 8), (29, 8), (37, 16)])
def test_padded_buffer_equals_exact_buffer(D, batch):
  D_max = 40
  big, exact = _dataset(SMALL, D_max), _dataset(SMALL, D)
  key = jax.random.key(4)
  nb = -(-D // min(D, batch))
  for step in range(3 * nb + 1):  # three epochs and the first batch of the fourth
    pb = dataset_batch(big, key, jnp.int32(step), SMALL, batch, jnp.int32(D))
    eb = dataset_batch(exact, key, jnp.int32(step), SMALL, batch, jnp.int32(D))
    pw, ew = np.asarray(pb.weight_B) == 1, np.asarray(eb.weight_B) == 1
    for p_field, e_field in zip(pb[:3], eb[:3]):
      np.testing.assert_array_equal(np.asarray(p_field)[pw], np.asarray(e_field)[ew])
    assert float(pb.weight_B.sum()) == float(eb.weight_B.sum()) == pw.sum()
    assert float(_weighted_sum(pb)) == float(_weighted_sum(eb))


def test_dataset_batch_vmapped_over_D_and_keys_matches_per_D_calls():
  Ds, batch, D_max = [3, 8, 29, 40], 8, 40
  big = _dataset(SMALL, D_max)
  keys = jax.random.split(jax.random.key(6), len(Ds))
  per_member = jax.jit(jax.vmap(lambda key, step, D: task_lib.dataset_batch(big, key, step, SMALL, batch, D),
                                in_axes=(0, None, 0)))
  for step in range(12):  # crosses epoch boundaries of every D (nb = 1, 1, 4, 5)
    got = per_member(keys, jnp.int32(step), jnp.asarray(Ds, jnp.int32))
    loss_M = jax.vmap(_weighted_sum)(got)
    for m, D in enumerate(Ds):
      want = dataset_batch(_dataset(SMALL, D), keys[m], jnp.int32(step), SMALL, batch, jnp.int32(D))
      gw, ww = np.asarray(got.weight_B[m]) == 1, np.asarray(want.weight_B) == 1
      for g_field, w_field in zip(got[:3], want[:3]):
        np.testing.assert_array_equal(np.asarray(g_field[m])[gw], np.asarray(w_field)[ww])
      assert gw.sum() == ww.sum() and float(loss_M[m]) == float(_weighted_sum(want))


@pytest.mark.parametrize("spec", [SMALL, WIDE])
def test_make_dataset_is_prefix_stable(spec):
  D_max = 1001
  big = _dataset(spec, D_max, seed=9)
  for D in (1, 2, 3, 1000):
    small = _dataset(spec, D, seed=9)
    for b_field, s_field in zip(big, small):
      np.testing.assert_array_equal(np.asarray(b_field)[:D], np.asarray(s_field))
  small_jit = jax.jit(task_lib.make_dataset, static_argnames=("spec", "D"))(
      jax.random.key(9), spec=spec, probs_T=task_lib.task_probs(spec, 0.4), subsets_TxK=_subsets(spec), D=1000)
  for b_field, j_field in zip(big, small_jit):
    np.testing.assert_array_equal(np.asarray(b_field)[:1000], np.asarray(j_field))
