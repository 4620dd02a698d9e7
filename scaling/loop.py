"""The chunked host loop of one compiled program ("point") of a sweep, shared by `scaling.quanta.msp` and
`scaling.bnsl.addition`.

A point trains a leading axis of members (vmapped, possibly padded for sharding) in chunks of `log_every` steps. The
loop skips a point whose `points/<name>.npz` is complete, resumes from the latest orbax checkpoint in
`checkpoints/<name>/` (truncating the saved partial records to it and dropping metric lines that will be recomputed),
appends one `metrics.jsonl` line per log step, saves the partial records and a checkpoint every `checkpoint_every`
chunks and at the end, logs progress (steps/s, ETA) about every 10 s, and stops with a FloatingPointError naming the
step and member of the first non-finite value. Subclasses supply the device work and the wording through hooks.
"""

from __future__ import annotations

import os
import time
from typing import Any

import jax
import numpy as np
from absl import logging

from scaling import io

LOG_SECONDS = 10.0  # seconds between progress lines
Arrays = dict[str, np.ndarray]


class PointLoop:
  """Host loop of one point; subclass it and implement the hooks, then call `run()`.

  Hooks: `init`, `chunk`, `final_eval`, `record`, `finite`, `describe` (required); `progress`, `all_stopped` with
  `eval_only`, `extra_outputs` (optional). `states` and `aux` are whatever `init` returns (`aux`: inputs that do not
  change, such as data); evaluations and chunk metrics map names to arrays with the member axis first.
  """

  unit = "members"  # what the member axis holds, in the progress line

  def __init__(self, name: str, workdir: str, log_every: int, n_chunks: int, checkpoint_every: int,
               max_to_keep: int, n_members: int):
    """`n_members`: the real members; entries past it are padding and are sliced off every host-side array."""
    self.name, self.workdir, self.log_every, self.n_chunks = name, workdir, log_every, n_chunks
    self.checkpoint_every, self.max_to_keep, self.n_members = checkpoint_every, max_to_keep, n_members
    self.npz = os.path.join(workdir, "points", name + ".npz")

  # -- hooks ---------------------------------------------------------------------------------------------------------

  def init(self) -> tuple[Any, Any]:
    """Initial (states, aux) on device; `states` is what gets checkpointed."""
    raise NotImplementedError

  def chunk(self, states: Any, aux: Any, step: int) -> tuple[Any, Any, Any]:
    """Trains `log_every` steps from `step`: (states, evaluation at `step`, chunk metrics), device arrays allowed.

    The chunk metrics hold `first_nonfinite_step` per member (the absolute step of the first non-finite training
    loss, -1 if none); the loop logs the means of the others as `chunk_<name>`.
    """
    raise NotImplementedError

  def final_eval(self, states: Any, aux: Any, step: int) -> Any:
    """The evaluation after the last step."""
    raise NotImplementedError

  def record(self, step: int, evals: Arrays, extra: dict[str, Any], t0: float, done: int) -> dict[str, Any]:
    """The metrics.jsonl line of log step `step` (with `extra` merged in); `done` steps took the time since `t0`."""
    raise NotImplementedError

  def finite(self, evals: Arrays) -> Arrays:
    """The values (by name in error messages) that must be finite."""
    raise NotImplementedError

  def describe(self, i: int) -> str:
    """Names member i in error messages: `non-finite <name> at step <step> <describe(i)>; ...`."""
    raise NotImplementedError

  def progress(self, rec: dict[str, Any], step: int) -> str:
    """The end of the progress line, from the metrics line `rec` of log step `step`."""
    return ""

  def all_stopped(self, states: Any) -> bool:
    """True when no member trains any more: the loop then only calls `eval_only`."""
    return False

  def eval_only(self, states: Any, aux: Any, step: int) -> Any:
    """The evaluation at `step` without training (see `all_stopped`)."""
    raise NotImplementedError

  def extra_outputs(self, states: Any) -> Arrays:
    """Per-member arrays added to the complete point's outputs."""
    return {}

  # -- the loop ------------------------------------------------------------------------------------------------------

  def check_finite(self, step: int | np.ndarray, values: Arrays) -> None:
    """Raises FloatingPointError naming the step (one, or one per member) and the member of the first non-finite
    value."""
    for name, v in values.items():
      bad = np.nonzero(~np.isfinite(v[: self.n_members]))[0]
      if bad.size:
        i = int(bad[0])
        at = int(step[i]) if np.ndim(step) else step
        raise FloatingPointError(
            f"non-finite {name} at step {at} {self.describe(i)}; the workdir keeps everything written before")

  def run(self) -> Arrays:
    """Runs (or resumes, or skips when complete) the point; returns its per-member arrays [member, log_step, ...]."""
    if os.path.exists(self.npz):
      done = io.load_npz(self.npz)
      if bool(done.pop("complete")):
        logging.info("%s: complete, skipping", self.name)
        return done
    states, aux = self.init()
    mngr = io.checkpoint_manager(os.path.join(self.workdir, "checkpoints", self.name), self.max_to_keep)
    try:
      return self._train(mngr, states, aux)
    finally:
      mngr.wait_until_finished()  # a killed or failed run still finishes the checkpoint it started
      mngr.close()

  def _train(self, mngr: Any, states: Any, aux: Any) -> Arrays:
    records: dict[str, list[np.ndarray]] = {}
    start = 0
    latest = mngr.latest_step()
    if latest is not None:
      states = io.restore_checkpoint(mngr, latest, states)
      start = latest // self.log_every
      saved = io.load_npz(self.npz)
      saved.pop("complete")
      records = {k: list(np.moveaxis(v[:, :start], 1, 0)) for k, v in saved.items()}
      logging.info("%s: resumed from step %d", self.name, latest)
    # Forget metric lines of steps that will be recomputed (written after the last checkpoint of a killed run).
    io.drop_metrics(self.workdir, lambda r: r.get("point") == self.name and r["step"] >= start * self.log_every)

    def add(ev: Arrays) -> None:
      for k, v in ev.items():
        records.setdefault(k, []).append(v[: self.n_members])

    def stacked() -> Arrays:
      return {k: np.stack(v, axis=1) for k, v in records.items()}  # [member, n_logs, ...]

    total = self.n_chunks * self.log_every
    t0, s0, last_log = time.time(), start * self.log_every, 0.0
    for c in range(start, self.n_chunks):
      step, end = c * self.log_every, (c + 1) * self.log_every
      if self.all_stopped(states):
        ev, tm = jax.device_get(self.eval_only(states, aux, step)), {}
      else:
        states, ev, tm = self.chunk(states, aux, step)
        ev, tm = jax.device_get((ev, tm))
      self.check_finite(step, self.finite(ev))
      add(ev)
      bad_step = tm.pop("first_nonfinite_step", np.full(1, -1))
      chunk_stats = {f"chunk_{k}": float(np.mean(v[: self.n_members])) for k, v in tm.items()}
      rec = self.record(step, ev, chunk_stats, t0, end - s0)
      io.append_metrics(self.workdir, [rec])
      self.check_finite(bad_step, {"training loss": np.where(bad_step >= 0, np.nan, 0.0)})
      if (c + 1) % self.checkpoint_every == 0 or c + 1 == self.n_chunks:
        io.save_npz(self.npz, complete=np.asarray(False), **stacked())
        io.save_checkpoint(mngr, end, states)
      if time.time() - last_log > LOG_SECONDS or c + 1 == self.n_chunks:
        last_log = time.time()
        rate = (end - s0) / max(time.time() - t0, 1e-9)
        eta = (total - end) / max(rate, 1e-9)
        logging.info("%s: step %d/%d, %.1f steps/s (x%d %s), ETA %.0fs%s", self.name, end, total, rate,
                     self.n_members, self.unit, eta, self.progress(rec, step))
    ev = jax.device_get(self.final_eval(states, aux, total))
    self.check_finite(total, self.finite(ev))
    add(ev)
    io.append_metrics(self.workdir, [self.record(total, ev, {}, t0, total - s0)])
    out = {**stacked(), **self.extra_outputs(states)}
    io.save_npz(self.npz, complete=np.asarray(True), **out)
    return out
