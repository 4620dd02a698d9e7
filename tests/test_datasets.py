"""tfds without TensorFlow: the local MNIST-1D builder, the generic `tfds.data_source` path, mocks, offline errors."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import tensorflow_datasets as tfds

from scaling.dynamics import datasets

SMALL = {"num_samples": 800, "train_split": 0.75, "seed": 0}  # 600 train / 200 test


@pytest.fixture(autouse=True)
def offline(monkeypatch):
  """No test here may touch the network: any connection attempt fails loudly."""

  def refuse(*args, **kwargs):
    raise AssertionError(f"network access attempted: {args}")

  monkeypatch.setattr(socket.socket, "connect", refuse)
  monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


def test_mnist1d_prepare_and_read(small_dir):
  x, y = datasets.load_arrays("mnist1d", "train", data_dir=small_dir, builder_kwargs=SMALL)
  x_te, y_te = datasets.load_arrays("mnist1d", "test", data_dir=small_dir, builder_kwargs=SMALL)
  assert x.shape == (600, datasets.MNIST1D_DIM) and x_te.shape == (200, datasets.MNIST1D_DIM)
  assert x.dtype == np.float32 and y.dtype == np.int32 and y.shape == (600,) and y_te.shape == (200,)
  assert y.min() >= 0 and y.max() <= 9 and len(np.unique(y)) == 10
  assert np.all(np.isfinite(x))
  both = np.concatenate([x, x_te])
  assert abs(both.mean()) < 1e-3 and abs(both.std() - 1.0) < 1e-3  # the generator standardises the whole set
  # ~80 examples per class over both splits (num_samples // 10 each)
  assert np.all(np.bincount(np.concatenate([y, y_te]), minlength=10) == 80)


def test_mnist1d_not_regenerated_and_deterministic(small_dir, tmp_path, monkeypatch):
  x, y = datasets.load_arrays("mnist1d", "train", data_dir=small_dir, builder_kwargs=SMALL)
  # A fresh directory with the same config regenerates the same data; another seed gives other data.
  x2, y2 = datasets.load_arrays("mnist1d", "train", data_dir=str(tmp_path / "again"), builder_kwargs=SMALL)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  x3, _ = datasets.load_arrays("mnist1d", "train", data_dir=str(tmp_path / "other"),
                               builder_kwargs={**SMALL, "seed": 1})
  assert not np.allclose(x, x3)

  def fail(config):
    raise AssertionError("prepared data was regenerated")

  monkeypatch.setattr(datasets, "generate_mnist1d", fail)
  x4, y4 = datasets.load_arrays("mnist1d", "train", data_dir=small_dir, builder_kwargs=SMALL, max_examples=50)
  np.testing.assert_array_equal(x4, x[:50])
  np.testing.assert_array_equal(y4, y[:50])


def test_generator_leaves_global_rng_alone():
  np.random.seed(123)
  expected = np.random.rand(3)
  np.random.seed(123)
  datasets.generate_mnist1d(datasets.Mnist1dConfig.make(num_samples=20, seed=5))
  np.testing.assert_array_equal(np.random.rand(3), expected)


def test_generic_data_source_reads_prepared_array_record(small_dir):
  """Any other tfds name goes through `tfds.data_source`, here on the prepared MNIST-1D files (no builder class)."""
  x, y = datasets.load_arrays("mnist1d", "test", data_dir=small_dir, builder_kwargs=SMALL)
  name = "mnist1d/" + datasets.Mnist1dConfig.make(**SMALL).name
  x2, y2 = datasets.load_arrays(name, "test", data_dir=small_dir)
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(y, y2)
  x3, _ = datasets.load_arrays(name, "test[:10]", data_dir=small_dir)
  np.testing.assert_array_equal(x3, x[:10])


def test_mock_data_mnist(tmp_path):
  with tfds.testing.mock_data(num_examples=20):
    x, y = datasets.load_arrays("mnist", "train", data_dir=str(tmp_path))
  assert x.shape == (20, 28 * 28) and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0
  assert y.dtype == np.int32 and y.min() >= 0 and y.max() <= 9


@pytest.mark.parametrize("name", ["mnist", "no_such_dataset_xyz"])
def test_missing_dataset_clear_error_offline(tmp_path, name):
  with pytest.raises(datasets.DatasetNotPreparedError, match="never downloads") as err:
    datasets.load_arrays(name, "train", data_dir=str(tmp_path / "empty"))
  assert "array_record" in str(err.value) and name in str(err.value)
  assert not (tmp_path / "empty").exists()  # nothing written either


def test_mnist1d_config_validation():
  with pytest.raises(ValueError, match="multiple of 10"):
    datasets.Mnist1dConfig.make(num_samples=805)
  with pytest.raises(ValueError, match="train_split"):
    datasets.Mnist1dConfig.make(train_split=1.0)
