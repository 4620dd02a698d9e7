"""Orbax checkpoints of a program's train states, stored on the host with the real members only (no padding), so a
run resumes on any device count: restore gives numpy arrays, which the engine pads and shards again. Over several
processes every process gathers the states and calls save (orbax synchronises them; process 0 writes the numpy
arrays), so the checkpoint root must be on storage all hosts see."""

from __future__ import annotations

import logging
import os
from typing import Any, Callable

import jax
import numpy as np

from scaling.engine import distributed


class _DropOrbaxInfo(logging.Filter):
  """orbax logs dozens of INFO lines per save through absl; keep its warnings and errors only."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or f"{os.sep}orbax{os.sep}" not in record.pathname


def quiet_orbax() -> None:
  absl_logger = logging.getLogger("absl")
  if not any(isinstance(f, _DropOrbaxInfo) for f in absl_logger.filters):
    absl_logger.addFilter(_DropOrbaxInfo())


def manager(directory: str, max_to_keep: int = 2):
  """An orbax CheckpointManager on an absolute path (orbax fails on relative ones, in a background thread)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  quiet_orbax()
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def to_host(tree: Any, n_members: int) -> Any:
  """The tree as numpy arrays with the member axis cut to the real members (padding dropped)."""
  return jax.tree.map(lambda x: np.asarray(x)[:n_members], distributed.gather(tree))


def save(mngr, step: int, host_tree: Any) -> None:
  """Saves `host_tree` (numpy arrays of the real members, see `to_host`) at `step`."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  mngr.save(step, args=ocp.args.StandardSave(host_tree))


def restore(mngr, step: int, like: Any) -> Any:
  """Restores numpy arrays shaped like `like` (arrays or shape-dtype structs of the real members)."""
  import orbax.checkpoint as ocp  # pylint: disable=import-outside-toplevel
  abstract = jax.tree.map(lambda x: np.zeros(tuple(x.shape), x.dtype), like)
  return mngr.restore(step, args=ocp.args.StandardRestore(abstract))


def final_member(directory: str, max_to_keep: int, steps: int, n_members: int, init_state: Callable[[], Any],
                 member: int) -> Any:
  """Member `member`'s state (numpy) after `steps`, from the checkpoints in `directory`. `init_state()` builds one
  member's state (only traced, for its structure). ValueError for a member out of range; RuntimeError when the
  latest checkpoint is not at `steps` (an unfinished point)."""
  if not 0 <= member < n_members:
    raise ValueError(f"member {member} is not in [0, {n_members})")
  with jax.transfer_guard("allow"):  # eval_shape only
    one = jax.eval_shape(init_state)
  like = jax.tree.map(lambda x: jax.ShapeDtypeStruct((n_members,) + x.shape, x.dtype), one)
  mngr = manager(directory, max_to_keep)
  try:
    latest = mngr.latest_step()
    if latest != steps:
      raise RuntimeError(f"{os.path.basename(directory)}: the latest checkpoint is at step {latest}, not {steps}")
    states = restore(mngr, latest, like)
  finally:
    mngr.close()
  return jax.tree.map(lambda x: np.asarray(x[member]), states)
