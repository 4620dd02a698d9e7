"""The workdir: `config.json`, `metrics.jsonl`, arrays in `.npz` (named axes), orbax checkpoints.

Layout::

  workdir/config.json            the full config; a re-run must match it (then it resumes)
  workdir/metrics.jsonl          one line per log step and shape point: step, wall time, steps/s, summary metrics
  workdir/curves.npz             all curves with named axes [width, D, seed, alpha, lr, weight_decay, log_step, task]
  workdir/points/<point>.npz     per shape point, members flattened (written at each checkpoint and when done)
  workdir/checkpoints/<point>/   orbax CheckpointManager of the vmapped train states

Every `.npz` and JSON file is written to a temp file and renamed, so a killed run never leaves a torn file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from typing import Any, Callable, Iterable

import numpy as np

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CURVES = "curves.npz"


def _atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-" + os.path.basename(path))
  try:
    with os.fdopen(fd, mode) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def save_npz(path: str, **arrays: Any) -> None:
  """Atomic `np.savez` (temp file + rename)."""
  _atomic_write(path, lambda f: np.savez(f, **arrays))


def save_npy(path: str, array: np.ndarray) -> None:
  """Atomic `np.save` (temp file + rename)."""
  _atomic_write(path, lambda f: np.save(f, array))


def save_text(path: str, text: str) -> None:
  """Atomic text write (temp file + rename)."""
  _atomic_write(path, lambda f: f.write(text), "w")


def load_npz(path: str) -> dict[str, np.ndarray]:
  with np.load(path) as z:
    return {k: z[k] for k in z.files}


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
  if isinstance(old, dict) and isinstance(new, dict):
    out = []
    for k in sorted(set(old) | set(new)):
      key = f"{prefix}.{k}" if prefix else k
      if k not in old or k not in new:
        out.append(f"{key}: {old.get(k, '<absent>')!r} -> {new.get(k, '<absent>')!r}")
      else:
        out += _diff(old[k], new[k], key)
    return out
  return [] if old == new else [f"{prefix}: {old!r} -> {new!r}"]


def check_config(workdir: str, config: dict[str, Any]) -> bool:
  """True if `workdir` already holds this config (resume), False if it holds none.

  Raises ValueError naming the differing fields if it holds a different one. Writes nothing.
  """
  path = os.path.join(workdir, CONFIG)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    old = json.load(f)
  new = json.loads(json.dumps(config))  # tuples -> lists, as stored
  diffs = _diff(old, new)
  if diffs:
    raise ValueError(f"workdir {workdir} holds a different config; use a new workdir or the same config. "
                     f"Differences (stored -> given): " + "; ".join(diffs))
  return True


def write_config(workdir: str, config: dict[str, Any]) -> None:
  _atomic_write(os.path.join(workdir, CONFIG), lambda f: json.dump(config, f, indent=2, sort_keys=True), "w")


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return []
  with open(path) as f:
    return [json.loads(line) for line in f if line.strip()]


def append_metrics(workdir: str, records: Iterable[dict[str, Any]]) -> None:
  with open(os.path.join(workdir, METRICS), "a") as f:
    for r in records:
      f.write(json.dumps(r) + "\n")


def drop_metrics(workdir: str, drop: Callable[[dict[str, Any]], bool]) -> None:
  """Rewrites metrics.jsonl without the records `drop` selects (used on resume to forget uncheckpointed steps)."""
  records = read_metrics(workdir)
  keep = [r for r in records if not drop(r)]
  if len(keep) != len(records):
    _atomic_write(os.path.join(workdir, METRICS), lambda f: f.writelines(json.dumps(r) + "\n" for r in keep), "w")


class _DropOrbaxInfo(logging.Filter):
  """orbax logs dozens of INFO lines per save through absl; keep its warnings and errors only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax() -> None:
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropOrbaxInfo) for f in absl_logger.filters):
    absl_logger.addFilter(_DropOrbaxInfo())


def checkpoint_manager(directory: str, max_to_keep: int = 2):
  """An orbax CheckpointManager on an absolute path (orbax fails on relative ones, in a background thread)."""
  import orbax.checkpoint as ocp
  quiet_orbax()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def save_checkpoint(mngr, step: int, tree: Any) -> None:
  import orbax.checkpoint as ocp
  mngr.save(step, args=ocp.args.StandardSave(tree))


def restore_checkpoint(mngr, step: int, like: Any) -> Any:
  """Restores into the structure, dtypes and shardings of `like` (keeps optax NamedTuples)."""
  import jax
  import orbax.checkpoint as ocp
  abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract))


@dataclasses.dataclass
class Curves:
  """Arrays with named axes, as stored in `curves.npz`.

  `arrays[name]` has axes `axes[name]`; `coords[axis]` gives the values along each axis (absent for `task`).
  """

  arrays: dict[str, np.ndarray]
  axes: dict[str, tuple[str, ...]]
  coords: dict[str, np.ndarray]

  def __getitem__(self, name: str) -> np.ndarray:
    return self.arrays[name]

  def save(self, path: str) -> None:
    out: dict[str, np.ndarray] = {}
    for name, a in self.arrays.items():
      out[name] = a
      out[f"axes__{name}"] = np.asarray(self.axes[name], dtype=str)
    for axis, c in self.coords.items():
      out[f"coord__{axis}"] = c
    save_npz(path, **out)

  @classmethod
  def load(cls, path: str) -> "Curves":
    z = load_npz(path)
    coords = {k[len("coord__"):]: v for k, v in z.items() if k.startswith("coord__")}
    names = [k for k in z if not k.startswith(("coord__", "axes__"))]
    return cls({n: z[n] for n in names}, {n: tuple(str(a) for a in z[f"axes__{n}"]) for n in names}, coords)

  def to_dataframe(self, names: Iterable[str] | None = None):
    """Long-format pandas DataFrame of the per-log-step arrays (no `task` axis); requires pandas."""
    import pandas as pd
    names = [n for n in (names or self.arrays) if self.axes[n][-1:] == ("log_step",)]
    frames = None
    for n in names:
      a, axes = self.arrays[n], self.axes[n]
      index = pd.MultiIndex.from_product([self.coords[ax] for ax in axes], names=list(axes))
      col = pd.Series(a.reshape(-1), index=index, name=n)
      frames = col.to_frame() if frames is None else frames.join(col, how="outer")
    return frames.reset_index()


def load_workdir(workdir: str) -> Curves:
  """Loads `workdir/curves.npz` as a `Curves` (use `.to_dataframe()` for pandas)."""
  path = os.path.join(workdir, CURVES)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: has the sweep in {workdir} run?")
  return Curves.load(path)
