"""The chunked host loop of one point (one compiled program): its members train in chunks of `log_every` steps.

The loop skips a point whose `points/<name>.npz` is complete; otherwise it pads and shards the member inputs,
initialises, and resumes from the latest checkpoint in `checkpoints/<name>/` (partial records truncated to it, metric
lines after it dropped, a torn last line too). After each chunk it appends one `metrics.jsonl` line, stops with a
FloatingPointError naming the step and member of the first non-finite value, saves partial records and a checkpoint
every `checkpoint_every` chunks and at the end, and logs progress about every `LOG_SECONDS`.

One meaning of "step" everywhere: the evaluation logged at step s is of the parameters after s updates; a non-finite
training loss "at step s" is the loss of those same parameters, computed by update s + 1.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import NamedSharding, PartitionSpec as P

from scaling.engine import checkpoints
from scaling.engine import members as members_lib
from scaling.engine import io as wd

# Types: `exp` is a `scaling.engine.experiment.Experiment`, `plan` / `point` its `Plan` / `Point` (not imported here:
# experiment.py imports this module).
LOG_SECONDS = 10.0  # seconds between progress lines
Arrays = dict[str, np.ndarray]


# Compiled entry points: one program per (experiment, spec), vmapped over the member axis of states and inputs.
@functools.partial(jax.jit, static_argnames=("exp", "spec"))
def init_members(inputs: Any, shared: Any, *, exp: Any, spec: Any):
  return jax.vmap(lambda i: exp.init(i, shared, spec=spec))(inputs)


@functools.partial(jax.jit, static_argnames=("exp", "spec", "n_steps"), donate_argnums=(0,))
def run_chunk(states: Any, consts: Any, shared: Any, start: jax.Array, *, exp: Any, spec: Any, n_steps: int):
  """(states, evals at `start`, per-step metric means, first non-finite step per member or -1)."""
  states, evals, per_step = jax.vmap(
      lambda s, c: exp.chunk(s, c, shared, start, spec=spec, n_steps=n_steps))(states, consts)
  bad_MxS = ~jnp.isfinite(per_step["loss"])
  first_M = jnp.where(bad_MxS.any(axis=1), start + jnp.argmax(bad_MxS, axis=1).astype(jnp.int32), -1)
  return states, evals, {k: v.mean(axis=1) for k, v in per_step.items()}, first_M


@functools.partial(jax.jit, static_argnames=("exp", "spec"))
def run_evaluate(states: Any, consts: Any, shared: Any, step: jax.Array, *, exp: Any, spec: Any):
  return jax.vmap(lambda s, c: exp.evaluate(s, c, shared, step, spec=spec))(states, consts)


class PointRun:
  """Runs one point of an experiment's plan in a workdir, on a mesh."""

  def __init__(self, exp: Any, plan: Any, point: Any, workdir: str, mesh: Any):
    self.exp, self.plan, self.point, self.workdir, self.mesh = exp, plan, point, workdir, mesh
    self.name, self.M = point.name, plan.grid.size
    self.npz = os.path.join(workdir, "points", point.name + ".npz")
    self.replicated = NamedSharding(mesh, P())

  def describe(self, i: int) -> str:
    where = ", ".join(f"{k}={v}" for k, v in self.point.coords.items())
    return f"in point {self.name}{f' ({where})' if where else ''}, member {i} {self.plan.grid.coords(i)}"

  def check_finite(self, step: int | np.ndarray, values: Arrays) -> None:
    """FloatingPointError naming the step (one, or one per member) and member of the first non-finite value."""
    for name, v in values.items():
      bad = np.nonzero(~np.isfinite(np.asarray(v)[: self.M].reshape(self.M, -1)).any(axis=1))[0]
      if bad.size:
        i = int(bad[0])
        at = int(step[i]) if np.ndim(step) else int(step)
        raise FloatingPointError(f"{self.exp.name}: non-finite {name} at step {at} {self.describe(i)}; the "
                                 "workdir keeps everything written before")

  def _step(self, step: int) -> jax.Array:
    return jax.device_put(np.int32(step), self.replicated)

  def run(self) -> tuple[Arrays, dict[str, tuple[str, ...]]]:
    """Runs, resumes or skips the point; returns (per-member arrays, trailing axes of the non-per-log ones)."""
    if os.path.exists(self.npz):
      done = wd.load_npz(self.npz)
      if bool(done.pop("complete")):
        logging.info("%s: complete, skipping", self.name)
        return _split_axes(done)
    ctx = jax.enable_x64(True) if self.exp.x64 else contextlib.nullcontext()
    with ctx:
      inputs, shared = self.exp.inputs(self.plan, self.point)
      inputs, shared = members_lib.shard(inputs, self.mesh), members_lib.replicate(shared, self.mesh)
      states, consts = init_members(inputs, shared, exp=self.exp, spec=self.point.spec)
      mngr = checkpoints.manager(os.path.join(self.workdir, "checkpoints", self.name), self.plan.max_to_keep)
      try:
        return self._train(mngr, states, consts, shared)
      finally:
        mngr.wait_until_finished()  # a killed or failed run still finishes the checkpoint it started
        mngr.close()

  def _train(self, mngr: Any, states: Any, consts: Any, shared: Any):
    exp, spec, log_every = self.exp, self.point.spec, self.plan.log_every
    n_chunks = self.point.steps // log_every
    records: dict[str, list[np.ndarray]] = {}
    units = exp.units_per_step(self.plan, self.point)
    start = 0
    latest = mngr.latest_step()
    if latest is not None:
      host = checkpoints.restore(mngr, latest, states, self.M)
      states = members_lib.shard(host, self.mesh)
      start = latest // log_every
      saved = wd.load_npz(self.npz)
      saved.pop("complete")
      records = {k: list(np.moveaxis(v[:, :start], 1, 0)) for k, v in saved.items() if not k.startswith("axes__")}
      logging.info("%s: resumed from step %d", self.name, latest)
    wd.drop_metrics(self.workdir, lambda r: r.get("point") == self.name and r["step"] >= start * log_every)

    def add(ev: Arrays) -> None:
      for k, v in ev.items():
        records.setdefault(k, []).append(np.asarray(v)[: self.M])

    def stacked() -> Arrays:
      return {k: np.stack(v, axis=1) for k, v in records.items()}  # [member, n_logs, ...]

    def line(step: int, ev: Arrays, extra: dict[str, Any], done: int) -> dict[str, Any]:
      now = time.time()
      real = {k: np.asarray(v)[: self.M] for k, v in ev.items()}
      rate = done / (now - t0) if done else None
      rates = {f"{k}_per_s": rate * n if rate else None for k, n in units.items()}
      return {"point": self.name, **self.point.coords, "step": step, "time": now, "steps_per_s": rate, **rates,
              **exp.record(self.plan, self.point, step, real), **extra}

    total = n_chunks * log_every
    t0, s0, last_log = time.time(), start * log_every, 0.0
    for c in range(start, n_chunks):
      step, end = c * log_every, (c + 1) * log_every
      if exp.all_stopped(states):
        ev = jax.device_get(run_evaluate(states, consts, shared, self._step(step), exp=exp, spec=spec))
        means, first = {}, np.full(self.M, -1)
      else:
        states, ev, means, first = run_chunk(states, consts, shared, self._step(step), exp=exp, spec=spec,
                                          n_steps=log_every)
        ev, means, first = jax.device_get((ev, means, first))
      self.check_finite(step, {exp.finite_names.get(k, k): ev[k] for k in exp.finite_names})
      add(ev)
      rec = line(step, ev, {f"chunk_{k}": float(np.mean(v[: self.M])) for k, v in means.items()}, end - s0)
      wd.append_metrics(self.workdir, [rec])
      self.check_finite(np.asarray(first)[: self.M], {"training loss": np.where(first >= 0, np.nan, 0.0)})
      if (c + 1) % self.plan.checkpoint_every == 0 or c + 1 == n_chunks:
        wd.save_npz(self.npz, complete=np.asarray(False), **stacked())
        checkpoints.save(mngr, end, states, self.M)
      if time.time() - last_log > LOG_SECONDS or c + 1 == n_chunks:
        last_log = time.time()
        rate = (end - s0) / max(time.time() - t0, 1e-9)
        logging.info("%s: %d/%d steps, %.1f steps/s (x%d %s), ETA %.0fs; at step %d: %s", self.name, end, total,
                     rate, self.M, exp.unit, (total - end) / max(rate, 1e-9), step, exp.progress(rec))
    ev = jax.device_get(run_evaluate(states, consts, shared, self._step(total), exp=exp, spec=spec))
    self.check_finite(total, {exp.finite_names.get(k, k): ev[k] for k in exp.finite_names})
    add(ev)
    wd.append_metrics(self.workdir, [line(total, ev, {}, total - s0)])
    outs = exp.outputs(self.plan, self.point, checkpoints.to_host(states, self.M))
    arrays = {**stacked(), **{k: a for k, (a, _) in outs.items()}}
    axes = {k: ax for k, (_, ax) in outs.items()}
    wd.save_npz(self.npz, complete=np.asarray(True), **arrays,
                **{f"axes__{k}": np.asarray(ax, dtype=str) for k, ax in axes.items()})
    return arrays, axes


def _split_axes(z: Arrays) -> tuple[Arrays, dict[str, tuple[str, ...]]]:
  axes = {k[len("axes__"):]: tuple(str(a) for a in v) for k, v in z.items() if k.startswith("axes__")}
  return {k: v for k, v in z.items() if not k.startswith("axes__")}, axes
