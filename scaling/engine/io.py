"""The workdir, the unit of a run: `config.json`, `metrics.jsonl`, arrays in `.npz` (named axes), checkpoints.

Layout::

  workdir/config.json            the full config; a re-run must match it (then it resumes)
  workdir/metrics.jsonl          one JSON line per log step and point
  workdir/curves.npz             all arrays with named axes (see `Curves`)
  workdir/points/<point>.npz     per point, members flattened (written at each checkpoint and when done)
  workdir/checkpoints/<point>/   orbax checkpoints of the point's train states (unpadded member axis)
  workdir/.lock                  an OS lock (flock) held while a run uses the workdir

Every `.npz` and JSON file is written to a temp file and renamed, so a killed run never leaves a torn file; files
get the user's umask (as `open` would), not mkstemp's 0600. A metrics line torn by a kill mid-append is dropped when
the run resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import socket
import sys
import tempfile
import zipfile
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from absl import logging

CONFIG = "config.json"
METRICS = "metrics.jsonl"
CURVES = "curves.npz"
LOCK = ".lock"


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def atomic_write(path: str, write: Callable[[Any], None], mode: str = "wb") -> None:
  """Writes `path` through `write(file)` into a temp file renamed into place; mode 0666 minus the umask."""
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-" + os.path.basename(path))
  try:
    os.fchmod(fd, 0o666 & ~_umask())
    with os.fdopen(fd, mode) as f:
      write(f)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def save_npz(path: str, **arrays: Any) -> None:
  """Atomic `np.savez`."""
  atomic_write(path, lambda f: np.savez(f, **arrays))


def save_npy(path: str, array: np.ndarray) -> None:
  """Atomic `np.save`."""
  atomic_write(path, lambda f: np.save(f, array))


def save_text(path: str, text: str) -> None:
  """Atomic text write."""
  atomic_write(path, lambda f: f.write(text), "w")


def load_npz(path: str) -> dict[str, np.ndarray]:
  """All arrays of an `.npz`; a missing, truncated or foreign file raises naming the path."""
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except FileNotFoundError:
    raise
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path}: not a readable .npz file ({type(e).__name__}: {e})") from e


# -- config ----------------------------------------------------------------------------------------------------------


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
  try:
    with open(path) as f:
      old = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e}); it was not written by this package") from e
  diffs = _diff(old, json.loads(json.dumps(config)))  # tuples -> lists, as stored
  if diffs:
    mode = ("; a sweep resumes only in the mode it was started in (one program, or one program per shape)"
            if any(d.split(":")[0].endswith(".one_program") for d in diffs) else "")
    raise ValueError(f"workdir {workdir} holds a different config; use a new workdir or the same config. "
                     f"Differences (stored -> given): " + "; ".join(diffs) + mode)
  return True


def write_config(workdir: str, config: dict[str, Any]) -> None:
  atomic_write(os.path.join(workdir, CONFIG), lambda f: json.dump(config, f, indent=2, sort_keys=True), "w")


# -- metrics ---------------------------------------------------------------------------------------------------------


def _read_lines(path: str) -> tuple[list[dict[str, Any]], bool]:
  """(records, torn): a last line that is not complete JSON (a kill mid-append) is dropped and reported."""
  with open(path) as f:
    lines = f.read().split("\n")
  records, torn = [], False
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      records.append(json.loads(line))
    except json.JSONDecodeError as e:
      if any(l.strip() for l in lines[i + 1:]):
        raise ValueError(f"{path}: line {i + 1} is not valid JSON ({e}) and is not the last line") from e
      torn = True
  return records, torn


def read_metrics(workdir: str) -> list[dict[str, Any]]:
  """The records of `metrics.jsonl` (a torn last line is skipped)."""
  path = os.path.join(workdir, METRICS)
  return _read_lines(path)[0] if os.path.exists(path) else []


def append_metrics(workdir: str, records: Iterable[dict[str, Any]]) -> None:
  text = "".join(json.dumps(r) + "\n" for r in records)
  with open(os.path.join(workdir, METRICS), "a") as f:
    f.write(text)


def drop_metrics(workdir: str, drop: Callable[[dict[str, Any]], bool]) -> None:
  """Rewrites metrics.jsonl without the records `drop` selects and without a torn last line (used on resume)."""
  path = os.path.join(workdir, METRICS)
  if not os.path.exists(path):
    return
  records, torn = _read_lines(path)
  keep = [r for r in records if not drop(r)]
  if torn:
    logging.warning("%s: dropped a torn last line (a run was killed while writing it)", path)
  if torn or len(keep) != len(records):
    atomic_write(path, lambda f: f.writelines(json.dumps(r) + "\n" for r in keep), "w")


# -- lock ------------------------------------------------------------------------------------------------------------


class WorkdirInUse(RuntimeError):
  """Another live process holds the workdir's lock."""


_HELD: set[str] = set()  # workdirs whose lock this process holds (re-entrant: the launcher and the engine both lock)


@contextlib.contextmanager
def lock(workdir: str, create: bool = True) -> Iterator[None]:
  """Holds an exclusive OS lock (flock) on `workdir/.lock` for the duration: a second run on the same workdir fails
  at once naming the holder; the lock dies with its process, so a killed run never blocks the next one.

  Re-entrant within a process. `create=False`: a workdir that does not exist yet is not created (nothing to guard).
  """
  workdir = os.path.abspath(workdir)
  if workdir in _HELD or (not create and not os.path.isdir(workdir)):
    yield
    return
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, LOCK)
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666 & ~_umask())
  try:
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "unknown process"
      raise WorkdirInUse(f"workdir {workdir} is in use by another run ({holder}); wait for it to finish or use "
                         "another workdir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}: {' '.join(sys.argv)}\n".encode(), 0)
    _HELD.add(workdir)
    try:
      yield
    finally:
      _HELD.discard(workdir)
  finally:
    os.close(fd)  # releases the flock


# -- named-axis arrays -----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Curves:
  """Arrays with named axes, as stored in `curves.npz`.

  `arrays[name]` has axes `axes[name]`; `coords[axis]` gives the values along an axis (absent for some, e.g. `task`).
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
    try:
      axes = {n: tuple(str(a) for a in z[f"axes__{n}"]) for n in names}
    except KeyError as e:
      raise ValueError(f"{path}: array {e} has no axes__ entry; not a named-axis file of this package") from e
    return cls({n: z[n] for n in names}, axes, coords)

  def to_dataframe(self, names: Iterable[str] | None = None):
    """Long-format pandas DataFrame of the per-log-step arrays (ending in `log_step`); requires pandas."""
    import pandas as pd  # pylint: disable=import-outside-toplevel
    names = [n for n in (names or self.arrays) if self.axes[n][-1:] == ("log_step",)]
    frames = None
    for n in names:
      a, axes = self.arrays[n], self.axes[n]
      index = pd.MultiIndex.from_product([self.coords[ax] for ax in axes], names=list(axes))
      col = pd.Series(a.reshape(-1), index=index, name=n)
      frames = col.to_frame() if frames is None else frames.join(col, how="outer")
    return frames.reset_index()


def load_workdir(workdir: str) -> Curves:
  """Loads `workdir/curves.npz` as `Curves` (use `.to_dataframe()` for pandas)."""
  path = os.path.join(workdir, CURVES)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: has the run in {workdir} started?")
  return Curves.load(path)
