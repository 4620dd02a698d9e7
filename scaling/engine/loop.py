"""The chunked host loop of one compiled program: its members train in chunks of `log_every` steps.

A program holds one or more buckets (`programs.Bucket`: one static spec, the members of its points side by side).
The loop skips a program whose points' `points/<name>.npz` are all complete; otherwise it pads and shards every
bucket's member inputs, initialises, and resumes from the latest checkpoint in `checkpoints/<program>/` (partial
records truncated to it, metric lines after it dropped, a torn last line too). After each chunk it appends one
`metrics.jsonl` line per point, stops with a FloatingPointError naming the step, point and member of the first
non-finite value, saves every point's partial records and the program's checkpoint every `checkpoint_every` chunks
and at the end, and logs progress about every `LOG_SECONDS`.

A program runs to its longest point's steps. A point of fewer steps (in a bucket of an experiment that packs steps;
its members are frozen from their last step on) is recorded, logged and checked only at log steps <= its own: its
last line and final evaluation are those at its last step, the evaluation at the start of the first chunk past it.

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
from scaling.engine import distributed
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


# A program: the same entry points over a tuple of buckets, compiled once per (experiment, bucket specs).
@functools.partial(jax.jit, static_argnames=("exp", "specs"))
def init_program(inputs: tuple, shared: tuple, *, exp: Any, specs: tuple):
  out = [init_members(i, s, exp=exp, spec=sp) for i, s, sp in zip(inputs, shared, specs)]
  return tuple(o[0] for o in out), tuple(o[1] for o in out)


@functools.partial(jax.jit, static_argnames=("exp", "specs", "n_steps"), donate_argnums=(0,))
def run_program_chunk(states: tuple, consts: tuple, shared: tuple, start: jax.Array, *, exp: Any, specs: tuple,
                      n_steps: int):
  out = [run_chunk(*a, start, exp=exp, spec=sp, n_steps=n_steps) for *a, sp in zip(states, consts, shared, specs)]
  return tuple(tuple(o[i] for o in out) for i in range(4))


@functools.partial(jax.jit, static_argnames=("exp", "specs"))
def run_program_evaluate(states: tuple, consts: tuple, shared: tuple, step: jax.Array, *, exp: Any, specs: tuple):
  return tuple(run_evaluate(*a, step, exp=exp, spec=sp) for *a, sp in zip(states, consts, shared, specs))


class ProgramRun:
  """Runs one program of an experiment's plan in a workdir, on a mesh."""

  def __init__(self, exp: Any, plan: Any, program: Any, workdir: str, mesh: Any):
    self.exp, self.plan, self.program, self.workdir, self.mesh = exp, plan, program, workdir, mesh
    self.G = plan.grid.size  # members per point
    self.buckets = program.buckets
    self.specs = tuple(b.spec for b in self.buckets)
    self.Ms = tuple(len(b.points) * self.G for b in self.buckets)  # real members per bucket
    self.points = program.points
    self.where = [(bi, k) for bi, b in enumerate(self.buckets) for k in range(len(b.points))]  # point -> bucket
    self.npz = {p.name: os.path.join(workdir, "points", p.name + ".npz") for p in self.points}
    self.steps = max(p.steps for p in self.points)
    if not exp.packs_steps and any(p.steps != self.steps for p in self.points):
      raise ValueError(f"program {program.name}: its points train for different numbers of steps")
    self.replicated = NamedSharding(mesh, P())

  def describe(self, point: Any, i: int) -> str:
    where = ", ".join(f"{k}={v}" for k, v in point.coords.items())
    return f"in point {point.name}{f' ({where})' if where else ''}, member {i} {self.plan.grid.coords(i)}"

  def per_point(self, tree_per_bucket: tuple) -> list[Any]:
    """Each point's slice (real members) of a per-bucket tuple of host trees with a leading member axis."""
    G = self.G
    return [jax.tree.map(lambda x, k=k: np.asarray(x)[k * G:(k + 1) * G], tree_per_bucket[bi]) for bi, k in self.where]

  def check_finite(self, point: Any, step: int | np.ndarray, values: Arrays) -> None:
    """FloatingPointError naming the step (one, or one per member), point and member of the first non-finite value."""
    for name, v in values.items():
      bad = np.nonzero(~np.isfinite(np.asarray(v).reshape(self.G, -1)).any(axis=1))[0]
      if bad.size:
        i = int(bad[0])
        at = int(step[i]) if np.ndim(step) else int(step)
        raise FloatingPointError(f"{self.exp.name}: non-finite {name} at step {at} {self.describe(point, i)}; the "
                                 "workdir keeps everything written before")

  def _step(self, step: int) -> jax.Array:
    return jax.device_put(np.int32(step), self.replicated)

  def _inputs(self) -> tuple[tuple, tuple]:
    inputs, shared = [], []
    for b in self.buckets:
      per = [self.exp.inputs(self.plan, p, b.spec) for p in b.points]
      with jax.transfer_guard("allow"):  # setup: the points' member inputs side by side
        ins = per[0][0] if len(per) == 1 else jax.tree.map(_concat, *[q[0] for q in per])
      inputs.append(members_lib.shard(ins, self.mesh))
      shared.append(members_lib.replicate(per[0][1], self.mesh))
    return tuple(inputs), tuple(shared)

  def run(self) -> tuple[dict[str, Arrays], dict[str, dict[str, tuple[str, ...]]]]:
    """Runs, resumes or skips the program; returns per point (per-member arrays, trailing axes of the outputs)."""
    done = {n: wd.load_npz(f) for n, f in self.npz.items() if os.path.exists(f)}
    if len(done) == len(self.points) and all(bool(d["complete"]) for d in done.values()):
      logging.info("%s: complete, skipping", self.program.name)
      out = {n: _split_axes({k: v for k, v in d.items() if k != "complete"}) for n, d in done.items()}
      return {n: o[0] for n, o in out.items()}, {n: o[1] for n, o in out.items()}
    ctx = jax.enable_x64(True) if self.exp.x64 else contextlib.nullcontext()
    with ctx:
      inputs, shared = self._inputs()
      states, consts = init_program(inputs, shared, exp=self.exp, specs=self.specs)
      mngr = checkpoints.manager(os.path.join(self.workdir, "checkpoints", self.program.name), self.plan.max_to_keep)
      try:
        return self._train(mngr, states, consts, shared)
      finally:
        mngr.wait_until_finished()  # a killed or failed run still finishes the checkpoint it started
        mngr.close()

  def _host(self, states: tuple) -> Any:
    """The checkpointed tree: real members only; a one-bucket program stores its bucket's tree itself."""
    host = tuple(checkpoints.to_host(s, m) for s, m in zip(states, self.Ms))
    return host[0] if len(host) == 1 else list(host)

  def _restore(self, mngr: Any, step: int, states: tuple) -> tuple:
    like = [jax.tree.map(lambda x, m=m: jax.ShapeDtypeStruct((m,) + tuple(x.shape[1:]), x.dtype), s)
            for s, m in zip(states, self.Ms)]
    host = checkpoints.restore(mngr, step, like[0] if len(like) == 1 else like)
    host = (host,) if len(like) == 1 else tuple(host)
    return tuple(members_lib.shard(h, self.mesh) for h in host)

  def _train(self, mngr: Any, states: tuple, consts: tuple, shared: tuple):
    exp, log_every, points = self.exp, self.plan.log_every, self.points
    n_chunks = self.steps // log_every
    records: dict[str, dict[str, list[np.ndarray]]] = {p.name: {} for p in points}
    units = {p.name: exp.units_per_step(self.plan, p) for p in points}
    start = 0
    latest = mngr.latest_step()
    if latest is not None:
      states = self._restore(mngr, latest, states)
      start = latest // log_every
      for p in points:
        saved = wd.load_npz(self.npz[p.name])
        saved.pop("complete")
        records[p.name] = {k: list(np.moveaxis(v[:, :start], 1, 0)) for k, v in saved.items()
                           if not k.startswith("axes__")}
      logging.info("%s: resumed from step %d", self.program.name, latest)
    names = {p.name for p in points}
    primary = distributed.is_primary()  # process 0 alone writes files; every process computes and checkpoints
    if primary:
      wd.drop_metrics(self.workdir, lambda r: r.get("point") in names and r["step"] >= start * log_every)
    distributed.barrier(f"{self.program.name}-resume")  # every process has read the workdir before anyone writes

    def add(step: int, evs: tuple) -> tuple[list[Any], list[Arrays]]:
      """Records the evaluations at `step` of the points that train that far; returns those points and theirs."""
      live = [(p, ev) for p, ev in zip(points, self.per_point(evs)) if step <= p.steps]
      for p, ev in live:
        for k, v in ev.items():
          records[p.name].setdefault(k, []).append(v)
      return [p for p, _ in live], [ev for _, ev in live]

    def stacked(p: Any) -> Arrays:
      return {k: np.stack(v, axis=1) for k, v in records[p.name].items()}  # [member, n_logs, ...]

    def lines(step: int, pts: list[Any], per: list[Arrays], extra: list[dict[str, Any]],
              done: int) -> list[dict[str, Any]]:
      now = time.time()
      rate = done / (now - t0) if done else None
      return [{"point": p.name, **p.coords, "step": step, "time": now, "steps_per_s": rate,
               **{f"{k}_per_s": rate * n if rate else None for k, n in units[p.name].items()},
               **exp.record(self.plan, p, step, ev), **x} for p, ev, x in zip(pts, per, extra)]

    def check(step: Any, pts: list[Any], per: list[Arrays]) -> None:
      for p, ev in zip(pts, per):
        self.check_finite(p, step, {exp.finite_names.get(k, k): ev[k] for k in exp.finite_names})

    total = n_chunks * log_every
    t0, s0, last_log = time.time(), start * log_every, 0.0
    for c in range(start, n_chunks):
      step, end = c * log_every, (c + 1) * log_every
      if all(exp.all_stopped(s) for s in states):
        evs = distributed.gather(run_program_evaluate(states, consts, shared, self._step(step), exp=exp,
                                                      specs=self.specs))
        means, firsts = [{} for _ in points], [np.full(self.G, -1) for _ in points]
      else:
        states, evs, means_b, first_b = run_program_chunk(states, consts, shared, self._step(step), exp=exp,
                                                          specs=self.specs, n_steps=log_every)
        evs, means_b, first_b = distributed.gather((evs, means_b, first_b))
        means, firsts = self.per_point(means_b), self.per_point(first_b)
      pts, per = add(step, evs)
      check(step, pts, per)
      chunk_means = {p.name: {f"chunk_{k}": float(np.mean(v)) for k, v in m.items()} for p, m in zip(points, means)}
      recs = lines(step, pts, per, [chunk_means[p.name] if step < p.steps else {} for p in pts], end - s0)
      if primary:
        wd.append_metrics(self.workdir, recs)
      for p, first in zip(points, firsts):
        if step < p.steps:  # the chunk trained this point (else its members stay frozen)
          self.check_finite(p, first, {"training loss": np.where(first >= 0, np.nan, 0.0)})
      if (c + 1) % self.plan.checkpoint_every == 0 or c + 1 == n_chunks:
        if primary:
          for p in points:
            wd.save_npz(self.npz[p.name], complete=np.asarray(False), **stacked(p))
        checkpoints.save(mngr, end, self._host(states))  # every process (orbax synchronises them)
      if time.time() - last_log > LOG_SECONDS or c + 1 == n_chunks:
        last_log = time.time()
        rate = (end - s0) / max(time.time() - t0, 1e-9)
        shown = recs[-1]  # the last point of the program (the widest of a packed sweep)
        logging.info("%s: %d/%d steps, %.1f steps/s (x%d %s), ETA %.0fs; %sat step %d: %s", self.program.name,
                     end, total, rate, sum(self.Ms), exp.unit, (total - end) / max(rate, 1e-9),
                     f"{shown['point']} " if len(recs) > 1 else "", step, exp.progress(shown))
    evs = distributed.gather(run_program_evaluate(states, consts, shared, self._step(total), exp=exp,
                                                  specs=self.specs))
    pts, per = add(total, evs)
    check(total, pts, per)
    if primary:
      wd.append_metrics(self.workdir, lines(total, pts, per, [{} for _ in pts], total - s0))
    host = tuple(checkpoints.to_host(s, m) for s, m in zip(states, self.Ms))
    results, out_axes = {}, {}
    for p, st in zip(points, self.per_point(host)):
      outs = exp.outputs(self.plan, p, st)
      arrays = {**stacked(p), **{k: a for k, (a, _) in outs.items()}}
      axes = {k: ax for k, (_, ax) in outs.items()}
      if primary:
        wd.save_npz(self.npz[p.name], complete=np.asarray(True), **arrays,
                    **{f"axes__{k}": np.asarray(ax, dtype=str) for k, ax in axes.items()})
      results[p.name], out_axes[p.name] = arrays, axes
    return results, out_axes


def _concat(*a: Any) -> Any:
  """Member inputs of several points side by side (jax arrays, typed PRNG keys included, or numpy arrays)."""
  return jnp.concatenate(a) if isinstance(a[0], jax.Array) else np.concatenate(a)


def _split_axes(z: Arrays) -> tuple[Arrays, dict[str, tuple[str, ...]]]:
  axes = {k[len("axes__"):]: tuple(str(a) for a in v) for k, v in z.items() if k.startswith("axes__")}
  return {k: v for k, v in z.items() if not k.startswith("axes__")}, axes
