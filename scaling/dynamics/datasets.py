"""Real data through tensorflow-datasets *without* TensorFlow: array_record files read as random-access data sources.

Without TF, tfds can only write `file_format="array_record"` and read it with `builder.as_data_source()` /
`tfds.data_source(...)`; `tfds.load`, `as_dataset` and `tfds.as_numpy` import TF and must not be used. Reads are
batched with `source.__getitems__(indices)` (one call per chunk is ~10x faster than `source[i]` in a loop).

Two kinds of dataset:
- "mnist1d": generated offline by the `mnist1d` package's procedural generator and written by the local builder
  `Mnist1d` into `data_dir` on first use (idempotent: an already prepared config is read back, never regenerated).
  Defaults are the package's: 40-dim signals, 10 classes, 5000 samples split 4000 train / 1000 test, seed 42.
- any other tfds name (mnist, cifar10, ...): read from a copy the user prepared beforehand in `data_dir` with
  `file_format="array_record"`. Nothing is ever downloaded; a missing dataset raises `DatasetNotPreparedError`.

`data_dir=None` means tfds' default: `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

MNIST1D_DIM = 40  # mnist1d `final_seq_length`
MNIST1D_CLASSES = 10
READ_CHUNK = 8192  # rows per `__getitems__` call


class DatasetNotPreparedError(FileNotFoundError):
  """A tfds dataset is not prepared (as array_record) in the given data_dir; we never download."""


@dataclasses.dataclass(eq=False)
class Mnist1dConfig(tfds.core.BuilderConfig):
  """Generator arguments that change the data; everything else is `mnist1d.data.get_dataset_args()`'s default."""

  num_samples: int = 5000  # total; the generator makes num_samples // 10 per class
  train_split: float = 0.8  # the first int(train_split * num_samples) shuffled samples are "train", the rest "test"
  seed: int = 42

  @classmethod
  def make(cls, num_samples: int = 5000, train_split: float = 0.8, seed: int = 42) -> Mnist1dConfig:
    if num_samples < MNIST1D_CLASSES or num_samples % MNIST1D_CLASSES:
      raise ValueError(f"num_samples must be a positive multiple of {MNIST1D_CLASSES}, got {num_samples}")
    if not 0.0 < train_split < 1.0:
      raise ValueError(f"train_split must be in (0, 1), got {train_split}")
    n_train = int(num_samples * train_split)
    return cls(name=f"n{num_samples}_train{n_train}_seed{seed}", num_samples=num_samples, train_split=train_split,
               seed=seed, description=f"MNIST-1D, {num_samples} samples ({n_train} train), generator seed {seed}")


def generate_mnist1d(config: Mnist1dConfig) -> dict[str, np.ndarray]:
  """Runs `mnist1d.data.make_dataset` offline; restores the global `random` / `np.random` state it reseeds.

  The generator standardises x over the whole set (both splits) to mean 0 and std 1.
  """
  # mnist1d imports matplotlib.pyplot: keep it off this module's import path.
  from mnist1d import data as mnist1d_data

  args = mnist1d_data.get_dataset_args()
  args.num_samples, args.train_split, args.seed = config.num_samples, config.train_split, config.seed
  py_state, np_state = random.getstate(), np.random.get_state()
  try:
    d = mnist1d_data.make_dataset(args)
  finally:
    random.setstate(py_state)
    np.random.set_state(np_state)
  return {"x_train": d["x"].astype(np.float32), "y_train": d["y"].astype(np.int64),
          "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}


class Mnist1d(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """MNIST-1D (Greydanus 2020) as a local tfds builder; features `x` float32 (40,), `label` ClassLabel(10).

  Not registered in tfds' global registry (no name clashes, no import side effects); a prepared config is still
  readable from another process with `tfds.data_source("mnist1d/<config name>", data_dir=...)`.
  """

  name = "mnist1d"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "Generated with mnist1d.data.make_dataset."}
  BUILDER_CONFIG_CLASS = Mnist1dConfig
  BUILDER_CONFIGS: ClassVar[list[Mnist1dConfig]] = [Mnist1dConfig.make()]

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10's own lookup for a builder inside a package touches `importlib_resources`, which it does not
    # install on Python >= 3.9; the path only locates an (absent) checksums file next to the code.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "x": tfds.features.Tensor(shape=(MNIST1D_DIM,), dtype=np.float32),
            "label": tfds.features.ClassLabel(num_classes=MNIST1D_CLASSES),
        }),
        supervised_keys=("x", "label"),
        homepage="https://github.com/greydanus/mnist1d",
    )

  def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
    del dl_manager  # nothing to download
    d = generate_mnist1d(self.builder_config)
    return {"train": self._generate_examples(d["x_train"], d["y_train"]),
            "test": self._generate_examples(d["x_test"], d["y_test"])}

  def _generate_examples(self, x_NxD: np.ndarray, y_N: np.ndarray):
    for i in range(len(y_N)):
      yield i, {"x": x_NxD[i], "label": int(y_N[i])}


def mnist1d_builder(data_dir: str | None = None, *, num_samples: int = 5000, train_split: float = 0.8,
                    seed: int = 42, prepare: bool = True) -> Mnist1d:
  """The MNIST-1D builder for one generator config, prepared (array_record) in `data_dir` unless already there."""
  config = Mnist1dConfig.make(num_samples, train_split, seed)
  known = {c.name for c in Mnist1d.BUILDER_CONFIGS}  # tfds refuses a config object named like a built-in one
  builder = Mnist1d(config=config.name if config.name in known else config, data_dir=data_dir,
                    file_format="array_record")
  if prepare and not builder.is_prepared():
    builder.download_and_prepare(file_format="array_record")
  return builder


def _not_prepared(name: str, data_dir: str | None, cause: str) -> DatasetNotPreparedError:
  where = data_dir or "$TFDS_DATA_DIR or ~/tensorflow_datasets"
  return DatasetNotPreparedError(
      f"tfds dataset {name!r} is not available as array_record in data_dir={where!r} ({cause}). This code never "
      f"downloads. Prepare it once on a machine with network access, e.g.\n"
      f"  tfds.builder({name!r}, data_dir=DIR, file_format='array_record').download_and_prepare()\n"
      f"(or `tfds build {name} --data_dir=DIR --file_format=array_record`), then copy DIR here and pass "
      f"data_dir=DIR (or set TFDS_DATA_DIR).")


def _data_source(name: str, split: str, data_dir: str | None, builder_kwargs: dict[str, Any] | None):
  if name == "mnist1d":
    return mnist1d_builder(data_dir, **(builder_kwargs or {})).as_data_source(split)
  try:
    return tfds.data_source(name, split=split, data_dir=data_dir, download=False, builder_kwargs=builder_kwargs)
  except tfds.core.DatasetNotFoundError as e:
    raise _not_prepared(name, data_dir, "no such tfds builder and no prepared files") from e
  except (NotImplementedError, AssertionError, FileNotFoundError) as e:
    # Missing data shows up as "random access not supported for TFRECORD" (the default format of an unprepared
    # builder); a real tfrecord copy (prepared with TF) gives the same error, so say which case it is.
    builder = tfds.builder(name, data_dir=data_dir, **(builder_kwargs or {}))
    if builder.is_prepared():
      raise _not_prepared(name, data_dir, f"prepared at {builder.data_dir} as {builder.info.file_format}, "
                          "which needs TensorFlow to read") from e
    raise _not_prepared(name, data_dir, f"nothing at {builder.data_dir}") from e


def _input_label_keys(info: tfds.core.DatasetInfo) -> tuple[str, str]:
  keys = info.supervised_keys
  if keys is not None and len(keys) == 2 and all(isinstance(k, str) for k in keys):
    return keys[0], keys[1]
  if {"image", "label"} <= set(info.features.keys()):
    return "image", "label"
  raise ValueError(f"{info.name}: cannot tell input and label features apart (supervised_keys={keys})")


def _read_rows(source: Any, idx: list[int]) -> list[dict[str, Any]]:
  try:
    return source.__getitems__(idx)
  except TypeError:
    # tfds 4.9.10 `tfds.testing.mock_data` binds its fake `__getitems__` without `self` (TypeError on any call);
    # its `__getitem__` works, so fall back to row reads (a genuine error re-raises from there).
    return [source[i] for i in idx]


def load_arrays(name: str, split: str, *, data_dir: str | None = None, max_examples: int | None = None,
                builder_kwargs: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """All (or the first `max_examples`) rows of a split as numpy arrays `(x_NxD float32, y_N int32)`.

  x is the supervised input feature (`image` for image datasets) flattened to D values per example: uint8 (image)
  inputs are scaled to [0, 1]; other inputs are cast to float32 unchanged (MNIST-1D is already standardised
  over the whole generated set). y is the integer class label. `split` accepts tfds slicing ("train[:10%]").
  `builder_kwargs` go to the builder (for "mnist1d": num_samples, train_split, seed).
  """
  source = _data_source(name, split, data_dir, builder_kwargs)
  x_key, y_key = _input_label_keys(source.dataset_info)
  n = len(source) if max_examples is None else min(len(source), max_examples)
  xs, ys = [], []
  for start in range(0, n, READ_CHUNK):
    rows = _read_rows(source, list(range(start, min(n, start + READ_CHUNK))))
    xs.append(np.stack([np.asarray(r[x_key]) for r in rows]))
    ys.append(np.asarray([r[y_key] for r in rows]))
  if not xs:
    raise ValueError(f"{name}/{split}: no examples")
  x = np.concatenate(xs)
  x_NxD = (x / np.float32(255) if x.dtype == np.uint8 else x).astype(np.float32)
  return x_NxD.reshape(n, -1), np.concatenate(ys).astype(np.int32)
