"""The one-pass data of the vision experiment: a training pool (each row used once) and a fixed held-out set.

Task: even vs odd digit (`spectra.parity_labels`: +1 even, −1 odd), the binary analogue of the paper's
animate-vs-inanimate CIFAR-5M task.

MNIST-1D ("mnist1d", the default source): ONE call of the project's generator (`datasets.generate_mnist1d`, seed
`data.seed`, num_samples = n_train + n_test rounded up to a multiple of 10) makes every sample; its train and test
splits are concatenated (the generator has already shuffled them), the first n_train rows are the pool and the LAST
n_test rows the held-out set, so the two are disjoint rows of one generation (one standardisation). It makes ~4,300
samples/s on this CPU, so `prepare` does it once and the experiment stores the arrays in the workdir (`data.npz`): a
resumed run reads them back and never regenerates.

A tfds name (`data.source`, read by `datasets.load_arrays` from `data.data_dir`; never downloaded): the pool is the
first n_train rows of its "train" split (fewer than n_train is an error: one pass never reuses a sample), the held-out
set the first n_test rows of "test". Inputs are flattened (an image becomes one signal of H·W·C values) and the labels
made even/odd, a pipeline for any prepared dataset rather than a tuned model of it.

Order: a member's step s uses the rows `order[s·B : (s+1)·B]` of the pool (`batch_rows`), where `order` is the
identity ("shared": every seed and width sees the same batch at every step) or a fixed permutation of the pool drawn
from the member's data key ("per_seed"; the same for every width: common random numbers across widths). Either way
the steps x B rows of a run are distinct: no sample is ever reused.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time

import jax
import numpy as np
from absl import logging

from scaling.dynamics import datasets
from scaling.dynamics.spectra import parity_labels
from scaling.engine import io as wd

FILE = "data.npz"
MNIST1D = "mnist1d"


@dataclasses.dataclass(frozen=True, eq=False)
class Data:
  """Host arrays: the training pool and the held-out set; targets ±1 float32."""

  x_pool_NxL: np.ndarray
  s_pool_N: np.ndarray
  x_test_MxL: np.ndarray
  s_test_M: np.ndarray

  def arrays(self) -> dict[str, np.ndarray]:
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@functools.lru_cache(maxsize=2)
def _mnist1d(n_train: int, n_test: int, seed: int) -> Data:
  n = -(-(n_train + n_test) // datasets.MNIST1D_CLASSES) * datasets.MNIST1D_CLASSES
  t0 = time.time()
  d = datasets.generate_mnist1d(datasets.Mnist1dConfig.make(num_samples=n, seed=seed))
  logging.info("vision data: generated %d MNIST-1D samples (seed %d) in %.1f s", n, seed, time.time() - t0)
  x = np.concatenate([d["x_train"], d["x_test"]])
  s = parity_labels(np.concatenate([d["y_train"], d["y_test"]]))
  out = Data(x[:n_train], s[:n_train], x[n - n_test:], s[n - n_test:])
  for a in out.arrays().values():
    a.flags.writeable = False  # cached: shared by every caller
  return out


def _tfds(name: str, data_dir: str | None, n_train: int, n_test: int) -> Data:
  x, y = datasets.load_arrays(name, "train", data_dir=data_dir, max_examples=n_train)
  if len(y) < n_train:
    raise ValueError(f"data.source={name!r}: its train split has {len(y)} examples, fewer than train.steps x "
                     f"train.batch_size = {n_train}; a one-pass run never reuses a sample")
  xt, yt = datasets.load_arrays(name, "test", data_dir=data_dir, max_examples=n_test)
  if len(yt) < n_test:
    raise ValueError(f"data.source={name!r}: its test split has {len(yt)} examples, fewer than data.n_test={n_test}")
  return Data(x, parity_labels(y), xt, parity_labels(yt))


def make(source: str, n_train: int, n_test: int, seed: int, data_dir: str = "") -> Data:
  """The pool of n_train rows and the held-out set of n_test rows of `source` (see the module docstring)."""
  if source == MNIST1D:
    return _mnist1d(n_train, n_test, seed)
  return _tfds(source, data_dir or None, n_train, n_test)


def load(workdir: str, n_train: int, n_test: int) -> Data | None:
  """The workdir's stored data, or None if it has none; ValueError if its row counts are not the config's."""
  path = os.path.join(workdir, FILE)
  if not os.path.exists(path):
    return None
  z = wd.load_npz(path)
  names = [f.name for f in dataclasses.fields(Data)]
  if any(k not in z for k in names):
    raise ValueError(f"{path}: not a data file of the vision experiment (arrays {sorted(z)}); use a new workdir")
  rows = (len(z["x_pool_NxL"]), len(z["x_test_MxL"]))
  if rows != (n_train, n_test):
    raise ValueError(f"{path}: stores {rows[0]} pool and {rows[1]} held-out rows, not the config's train.steps x "
                     f"train.batch_size = {n_train} and data.n_test = {n_test}; use a new workdir")
  return Data(**{k: z[k] for k in names})


def save(workdir: str, data: Data) -> None:
  wd.save_npz(os.path.join(workdir, FILE), **data.arrays())


def batch_rows(order_N: jax.Array, step: jax.Array, batch_size: int) -> jax.Array:
  """Pool rows of step `step`: order[step·B : (step+1)·B] (traced step; the pool holds steps x B rows)."""
  return jax.lax.dynamic_slice(order_N, (step * batch_size,), (batch_size,))
