"""The addition problems of the BNSL toy (minGPT's `AdditionDataset`, the version the BNSL author ran).

The problem a + b is the token sequence `a (n digits) b (n digits) c (n+1 digits)` with c = a + b written most
significant digit first (that version's `'%0{n}d%0{n}d%0{n+1}d' % (a, b, c)`; later minGPT versions reverse c), no
+/= tokens, vocab 10. Inputs are the first 3n tokens, targets the next tokens, and only the n+1 output digits count
(minGPT masks the others with -100). The test set is `n_test` distinct problems drawn with `split_seed`; the training
set of a seed is the first `size` problems of its stream of distinct non-test problems, so a smaller training set is a
prefix of a larger one.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import numpy as np

VOCAB = 10
_PERMUTE_BELOW = 1 << 22  # problem sets up to this size are permuted outright; larger ones drawn with rejection
_BLOCK = 8192  # draws per block of the rejection stream (fixed, so streams do not depend on how much is drawn)


class Data(NamedTuple):
  """Problems as next-token prediction: inputs and targets, both (N, 3n) int32."""

  x_NxT: jax.Array | np.ndarray
  y_NxT: jax.Array | np.ndarray


def n_problems(n_digit: int) -> int:
  """All (a, b) pairs of n-digit numbers: 10^(2n)."""
  return 10 ** (2 * n_digit)


def block_size(n_digit: int) -> int:
  """Input length: n + n + (n+1) digits, minus the last one (it is only ever a target)."""
  return 3 * n_digit


def first_output(n_digit: int) -> int:
  """Position of the first target that is an output digit (the target of the last digit of b)."""
  return 2 * n_digit - 1


def loss_mask(n_digit: int) -> np.ndarray:
  """(3n,) bool: True at the n+1 target positions of c's digits (minGPT's unmasked labels)."""
  return np.arange(block_size(n_digit)) >= first_output(n_digit)


def digits(v_N: np.ndarray, n: int) -> np.ndarray:
  """(N, n) decimal digits of v, most significant first (zero-padded)."""
  powers_n = 10 ** np.arange(n - 1, -1, -1, dtype=np.int64)
  return (np.asarray(v_N, np.int64)[:, None] // powers_n[None, :]) % 10


def problems(idx_N: np.ndarray, n_digit: int) -> tuple[np.ndarray, np.ndarray]:
  """(a, b) of problem indices: a = idx // 10^n, b = idx % 10^n, as minGPT."""
  idx_N = np.asarray(idx_N, np.int64)
  return idx_N // 10 ** n_digit, idx_N % 10 ** n_digit


def encode(idx_N: np.ndarray, n_digit: int) -> np.ndarray:
  """(N, 3n+1) token sequences `a b c` of problem indices, c = a + b most significant digit first."""
  a, b = problems(idx_N, n_digit)
  return np.concatenate([digits(a, n_digit), digits(b, n_digit), digits(a + b, n_digit + 1)], axis=1)


def make_data(idx_N: np.ndarray, n_digit: int) -> Data:
  seq = encode(idx_N, n_digit).astype(np.int32)
  return Data(seq[:, :-1], seq[:, 1:])


def _distinct_stream(rng: np.random.Generator, num: int, count: int, exclude: np.ndarray) -> np.ndarray:
  """The first `count` of a random order of the problems 0..num-1 not in `exclude` (same rng: same order)."""
  if num <= _PERMUTE_BELOW:
    perm = rng.permutation(num)
    return perm[~np.isin(perm, exclude)][:count]
  out: list[np.ndarray] = []
  seen = np.asarray(exclude, np.int64)
  have = 0
  while have < count:  # uniform draws, dropping repeats and excluded problems, in draw order
    block = rng.integers(0, num, size=_BLOCK, dtype=np.int64)
    _, first = np.unique(block, return_index=True)
    block = block[np.sort(first)]
    block = block[~np.isin(block, seen)]
    out.append(block)
    seen = np.concatenate([seen, block])
    have += block.size
  return np.concatenate(out)[:count]


def held_out_indices(n_digit: int, n_test: int, split_seed: int) -> np.ndarray:
  """The fixed test problems: `n_test` distinct indices drawn with `split_seed`."""
  rng = np.random.default_rng(np.random.SeedSequence([split_seed, n_digit]))
  return _distinct_stream(rng, n_problems(n_digit), n_test, np.zeros(0, np.int64))


def train_indices(n_digit: int, size: int, entropy: Sequence[int], test_idx: np.ndarray) -> np.ndarray:
  """The first `size` problems of the stream of distinct non-test problems seeded by `entropy`."""
  rng = np.random.default_rng(np.random.SeedSequence(list(entropy)))
  return _distinct_stream(rng, n_problems(n_digit), size, test_idx)
