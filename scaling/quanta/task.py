"""Multitask sparse parity (MSP), generated on device inside jit.

Conventions follow Michaud et al. (2023) and their code (spec `quanta.md` §1):

* Subset identities come from Python's `random` after `random.seed(seed)`, the same procedure as the original, so
  task ``i`` has the paper's subset for the same seed.
* ``alpha`` everywhere in this package is the **paper's** α: p_i ∝ (i + 1 + offset)^-(α+1). The original code's
  ``alpha`` config value is our ``alpha + 1`` (see :func:`zipf_exponent`).
* Inputs are ``[one-hot control | task bits]`` with values in {0, 1}; labels are the parity of the task's subset,
  used as a 2-class target.

Bits are drawn as packed uint32 words (32 bits per random draw) and unpacked on use. A fixed training set's epoch
shuffle is a keyed bijection evaluated only at the minibatch's positions (:func:`epoch_index`), so the set size D can
be a traced per-member value: members with different D share one program and a buffer of the largest D's rows.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

DISTRIBUTIONS = ("zipf", "uniform")


@dataclasses.dataclass(frozen=True)
class MSPSpec:
  """Static (shape-determining) description of an MSP task."""

  n_tasks: int
  n: int
  k: int
  offset: float = 0.0
  distribution: str = "zipf"

  @property
  def input_dim(self) -> int:
    return self.n_tasks + self.n

  @property
  def n_words(self) -> int:
    return -(-self.n // 32)


class Batch(NamedTuple):
  """A batch in factored form; `weight_B` masks padding (partial last batch of an epoch)."""

  task_B: jax.Array
  bits_BxN: jax.Array
  y_B: jax.Array
  weight_B: jax.Array


class Dataset(NamedTuple):
  """A fixed training set of D samples (fixed-D mode), bits packed 32 per uint32 word."""

  task_D: jax.Array
  words_DxW: jax.Array
  y_D: jax.Array


def zipf_exponent(alpha: float) -> float:
  """Exponent of the Zipf law p_i ∝ i^-(α+1); equals the original code's `alpha` config value."""
  return alpha + 1.0


def check_spec(spec: MSPSpec) -> None:
  """Raises ValueError for an impossible task, before anything is compiled."""
  if spec.n_tasks < 1 or spec.n < 1 or spec.k < 1:
    raise ValueError(f"n_tasks, n and k must be >= 1, got {spec}")
  if spec.k > spec.n:
    raise ValueError(f"subset size k={spec.k} exceeds the number of task bits n={spec.n}")
  n_subsets = math.comb(spec.n, spec.k)
  if spec.n_tasks > n_subsets:
    raise ValueError(
        f"n_tasks={spec.n_tasks} distinct subsets asked for, but only C(n={spec.n}, k={spec.k}) = {n_subsets} exist")
  if spec.distribution not in DISTRIBUTIONS:
    raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {spec.distribution!r}")
  if spec.offset < 0:
    raise ValueError(f"offset must be >= 0, got {spec.offset}")


def make_subsets(n_tasks: int, n: int, k: int, seed: int) -> np.ndarray:
  """The original code's subsets: sorted k-samples of range(n), deduplicated, from `random.seed(seed)`.

  Returns an int32 array of shape (n_tasks, k). Raises ValueError if the procedure's n_tasks*10 draws do not find
  n_tasks distinct subsets (the original asserts).
  """
  check_spec(MSPSpec(n_tasks, n, k))
  random.seed(seed)
  subsets: list[tuple[int, ...]] = []
  seen: set[tuple[int, ...]] = set()
  for _ in range(n_tasks * 10):
    s = tuple(sorted(random.sample(range(n), k)))
    if s not in seen:
      seen.add(s)
      subsets.append(s)
    if len(subsets) == n_tasks:
      break
  if len(subsets) != n_tasks:
    raise ValueError(f"only {len(subsets)} distinct subsets found in {n_tasks * 10} draws "
                     f"(n_tasks={n_tasks}, n={n}, k={k}); ask for fewer tasks or a larger n")
  return np.asarray(subsets, dtype=np.int32)


def task_probs(spec: MSPSpec, alpha: jax.Array | float) -> jax.Array:
  """Task frequencies p_i, i = 0..n_tasks-1; `alpha` is the paper's α and may be traced."""
  if spec.distribution == "uniform":
    return jnp.full((spec.n_tasks,), 1.0 / spec.n_tasks, jnp.float32)
  ranks = jnp.arange(1, spec.n_tasks + 1, dtype=jnp.float32) + spec.offset
  logits = -(jnp.asarray(alpha, jnp.float32) + 1.0) * jnp.log(ranks)
  return jax.nn.softmax(logits)


def exact_counts(probs: np.ndarray, test_points: int) -> np.ndarray:
  """The original's exact-count test batch: int(p_i * test_points) samples of task i."""
  return np.floor(np.asarray(probs, np.float64) * test_points).astype(np.int64)


def sample_tasks(key: jax.Array, probs_T: jax.Array, size: int) -> jax.Array:
  """i.i.d. task indices by inverse CDF (as the original), shape (size,), int32."""
  cdf = jnp.cumsum(probs_T)
  u = jax.random.uniform(key, (size,), dtype=cdf.dtype) * cdf[-1]
  return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), probs_T.shape[0] - 1).astype(jnp.int32)


def sample_words(key: jax.Array, size: int, n_words: int) -> jax.Array:
  """Uniform random bit words, shape (size, n_words), uint32."""
  return jax.random.bits(key, (size, n_words), jnp.uint32)


def unpack_bits(words_BxW: jax.Array, n: int) -> jax.Array:
  """(B, W) uint32 words -> (B, n) uint8 bits in {0, 1}; bit j is bit (j % 32) of word j // 32."""
  shifts = jnp.arange(32, dtype=jnp.uint32)
  bits = (words_BxW[:, :, None] >> shifts[None, None, :]) & jnp.uint32(1)
  return bits.reshape(words_BxW.shape[0], -1)[:, :n].astype(jnp.uint8)


def parity(bits_BxN: jax.Array, subsets_TxK: jax.Array, task_B: jax.Array) -> jax.Array:
  """Label y = sum of the task's subset bits mod 2, int32."""
  picked = jnp.take_along_axis(bits_BxN, subsets_TxK[task_B], axis=1)
  return (picked.astype(jnp.int32).sum(axis=1) % 2).astype(jnp.int32)


def online_batch(key: jax.Array, spec: MSPSpec, probs_T: jax.Array, subsets_TxK: jax.Array,
                 batch: int) -> Batch:
  """Fresh samples: task ~ p, bits ~ U{0,1}^n (online / infinite-data mode)."""
  k_task, k_bits = jax.random.split(key)
  task = sample_tasks(k_task, probs_T, batch)
  bits = unpack_bits(sample_words(k_bits, batch, spec.n_words), spec.n)
  return Batch(task, bits, parity(bits, subsets_TxK, task), jnp.ones((batch,), jnp.float32))


def eval_batch(key: jax.Array, spec: MSPSpec, subsets_TxK: jax.Array, per_task: int) -> Batch:
  """`per_task` fresh samples of every task, task-major: row t*per_task + j is sample j of task t."""
  task = jnp.repeat(jnp.arange(spec.n_tasks, dtype=jnp.int32), per_task)
  bits = unpack_bits(sample_words(key, spec.n_tasks * per_task, spec.n_words), spec.n)
  return Batch(task, bits, parity(bits, subsets_TxK, task), jnp.ones(task.shape, jnp.float32))


def make_dataset(key: jax.Array, spec: MSPSpec, probs_T: jax.Array, subsets_TxK: jax.Array, D: int) -> Dataset:
  """A fixed training set: task counts ~ Multinomial(D, p) (by inverse CDF), bits drawn once.

  Prefix-stable in D (the first D rows of a larger set are the set of size D, bitwise), so members with different D
  can share one buffer: each draw is keyed by its flat index (`jax_threefry_partitionable`, on by default).
  """
  k_task, k_bits = jax.random.split(key)
  task = sample_tasks(k_task, probs_T, D)
  words = sample_words(k_bits, D, spec.n_words)
  return Dataset(task, words, parity(unpack_bits(words, spec.n), subsets_TxK, task))


def minibatch_size(D: int, batch: int) -> int:
  """Fixed-D minibatch = min(D, batch), as the original loader."""
  return min(D, batch)


def batches_per_epoch(D: int, batch: int) -> int:
  return -(-D // minibatch_size(D, batch))


# Tiny domains need many rounds: at D = 10 (4-bit domain) the item-by-position counts over 1e5 epochs deviate from
# uniform by z = 224, 11, 2.6 and -0.2 standard errors with 4, 6, 8 and 10 rounds (D = 100: 5.4, -0.5, -0.7, 0.9).
FEISTEL_ROUNDS = 10


def _fmix32(x: jax.Array) -> jax.Array:
  """MurmurHash3's 32-bit finalizer (a bijective avalanche mix of uint32)."""
  x = x ^ (x >> 16)
  x = x * jnp.uint32(0x85EBCA6B)
  x = x ^ (x >> 13)
  x = x * jnp.uint32(0xC2B2AE35)
  return x ^ (x >> 16)


def epoch_index(shuffle_key: jax.Array, epoch: jax.Array, pos_B: jax.Array, D: jax.Array | int) -> jax.Array:
  """Item at positions `pos_B` of epoch `epoch`'s shuffle: a keyed bijection of [0, D), int32.

  A balanced Feistel network on 2h bits (smallest h >= 1 with 4**h >= D) whose round function hashes (key words,
  epoch, round, right half), made a bijection of [0, D) by cycle-walking. D may be a traced int32 scalar; the
  function is vmappable over (shuffle_key, epoch, D); each cycle-walk pass costs O(B), never O(D). Positions outside
  [0, D) are clamped into it (cycle-walking from outside the 4**h domain would never end).
  """
  if jnp.issubdtype(shuffle_key.dtype, jax.dtypes.prng_key):
    shuffle_key = jax.random.key_data(shuffle_key)
  words = shuffle_key.reshape(-1).astype(jnp.uint32)
  D = jnp.asarray(D, jnp.int32)
  acc = _fmix32(jnp.asarray(epoch, jnp.int32).astype(jnp.uint32) * jnp.uint32(0x9E3779B1) + jnp.uint32(0x7F4A7C15))
  for i in range(words.shape[0]):
    acc = _fmix32(acc ^ words[i])
  round_keys_R = _fmix32(acc + jnp.arange(1, FEISTEL_ROUNDS + 1, dtype=jnp.uint32) * jnp.uint32(0x632BE5AB))
  n_bits = jnp.uint32(32) - jax.lax.clz(jnp.maximum(D - 1, 1).astype(jnp.uint32))  # bits of D - 1 (>= 1)
  h = (n_bits + jnp.uint32(1)) // jnp.uint32(2)  # 1 <= h <= 16
  mask = (jnp.uint32(1) << h) - jnp.uint32(1)
  D_u = D.astype(jnp.uint32)

  def feistel(x_B: jax.Array) -> jax.Array:
    left, right = x_B >> h, x_B & mask
    for r in range(FEISTEL_ROUNDS):
      left, right = right, left ^ (_fmix32(right ^ round_keys_R[r]) & mask)
    return (left << h) | right

  def walk(y_B: jax.Array) -> jax.Array:
    return jnp.where(y_B >= D_u, feistel(y_B), y_B)

  y_B = feistel(jnp.clip(jnp.asarray(pos_B, jnp.int32), 0, D - 1).astype(jnp.uint32))
  y_B = jax.lax.while_loop(lambda y: jnp.any(y >= D_u), walk, y_B)
  return y_B.astype(jnp.int32)


def dataset_batch(data: Dataset, shuffle_key: jax.Array, step: jax.Array, spec: MSPSpec, batch: int,
                  D: jax.Array | int) -> Batch:
  """Minibatch `step % nb` of the epoch's shuffle of the first D rows of `data` (D may be traced, D <= rows).

  Returns min(rows, batch) rows; the member's own minibatch is min(D, batch) and the last one of an epoch may be
  partial: rows past either have weight 0. When D <= batch it is the full batch in natural order.
  """
  D_max = data.task_D.shape[0]
  B = minibatch_size(D_max, batch)
  D = jnp.asarray(D, jnp.int32)
  step = jnp.asarray(step, jnp.int32)
  mb = jnp.minimum(D, batch)
  nb = (D + mb - 1) // mb
  row_B = jnp.arange(B, dtype=jnp.int32)
  pos_B = (step % nb) * mb + row_B
  weight_B = ((row_B < mb) & (pos_B < D)).astype(jnp.float32)
  pos_B = jnp.minimum(pos_B, D - 1)
  idx_B = jax.lax.cond(D <= batch, lambda: pos_B, lambda: epoch_index(shuffle_key, step // nb, pos_B, D))
  bits = unpack_bits(data.words_DxW[idx_B], spec.n)
  return Batch(data.task_D[idx_B], bits, data.y_D[idx_B], weight_B)


def to_inputs(task_B: jax.Array, bits_BxN: jax.Array, n_tasks: int) -> jax.Array:
  """The dense input `[one-hot control | task bits]`, float32 of shape (B, n_tasks + n)."""
  return jnp.concatenate([jax.nn.one_hot(task_B, n_tasks, dtype=jnp.float32), bits_BxN.astype(jnp.float32)], axis=1)
