r"""Throughput of MSP training: one model at a time vs the vmapped sweep, against a plain f32 matmul.

Measures, in one run on the current machine:

* model-steps/s (and achieved GFLOP/s) of the engine's `run_chunk` on the MSP experiment in two modes, at a small and a
  paper-sized width:
  - ``loop``: M models trained one after another in a Python loop, each a `run_chunk` call on a member axis of size 1
    (the same compiled scan chunk as the sweep, just M=1), blocking after each model's chunk;
  - ``vmap``: all M members in one `run_chunk` call (member axis of size M), as `scaling.quanta.msp` runs a shape point;
  and the ratio vmap/loop for every (task, width);
* the GFLOP/s of a jitted 2048x2048 @ 2048x2048 f32 matmul, as the machine's reference;
* at the paper width 500, the step time of the dense first layer (`Spec(onehot_lookup=False)`) vs the one-hot row
  lookup (`onehot_lookup=True`), M=1.

Members and states are built as the engine builds them for `scaling.quanta.msp` (`loop.init_members`). Compile time is excluded (one warm-up call per program); each timing is the median of a few repeats. Every `run_chunk` call
also runs one per-task evaluation; the bench spec sets `eval_per_task` small so the numbers measure training.
FLOPs per model-step are `mlp.flops_per_example(spec.model, lookup_rows=n_tasks)["train_step"] * batch` (the
one-hot block as a lookup costs no matmul FLOPs), so GFLOP/s counts useful matmul work only.

Run from the repository root:

    .venv/bin/python bench/msp_throughput.py           # full, a few minutes on a 2-core CPU
    .venv/bin/python bench/msp_throughput.py --quick   # smoke mode, under a minute

Numbers vary by +-20-30% between runs on a shared VM; compare ratios measured in the same run.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import statistics
import sys
import time

try:
  import scaling  # noqa: F401  (installed with `pip install -e .`)
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np

from scaling.engine import loop
from scaling.nn import mlp
from scaling.quanta import msp, msp_train
from scaling.quanta import task as task_lib

_QUICK = flags.DEFINE_bool("quick", False, "Smoke mode: fewer members, steps and repeats (under a minute).")

EVAL_PER_TASK = 16  # one small per-task evaluation per run_chunk call, so the timings measure training
ALPHA, LR = 0.4, 1e-3  # the paper's α and learning rate (values do not affect the timing)
MATMUL_N = 2048


@dataclasses.dataclass(frozen=True)
class Case:
  """One task configuration measured at several widths with M members and S steps per chunk."""

  name: str
  n_tasks: int
  n: int
  k: int
  batch: int
  widths: tuple[int, ...]
  M: int
  S: int  # steps per run_chunk call
  repeats: int


def cases(quick: bool) -> list[Case]:
  if quick:
    return [Case("ci", 10, 30, 3, 2048, (16, 128), M=8, S=20, repeats=2),
            Case("paper", 500, 100, 3, 20000, (32, 500), M=2, S=2, repeats=1)]
  return [Case("ci", 10, 30, 3, 2048, (16, 128), M=8, S=100, repeats=7),
          Case("paper", 500, 100, 3, 20000, (32, 500), M=4, S=10, repeats=5)]


def make_spec(c: Case, width: int, onehot_lookup: bool = True) -> msp_train.Spec:
  return msp_train.Spec(task=task_lib.MSPSpec(c.n_tasks, c.n, c.k), model=mlp.MLPSpec(c.n_tasks + c.n, width),
                    batch=c.batch, D=-1, eval_per_task=EVAL_PER_TASK, onehot_lookup=onehot_lookup)


def build(spec: msp_train.Spec, M: int):
  """Members and states of an M-member sweep, built as `scaling.quanta.msp` builds them."""
  t = spec.task
  seed_keys = jax.random.split(jax.random.key(0), M)
  subsets = np.broadcast_to(task_lib.make_subsets(t.n_tasks, t.n, t.k, 0), (M, t.n_tasks, t.k))
  alphas, lrs, wds = (np.full((M,), v, np.float32) for v in (ALPHA, LR, 0.0))
  states, members = loop.init_members((seed_keys, alphas, lrs, wds, subsets), None, exp=msp.EXPERIMENT, spec=spec)
  return jax.block_until_ready((members, states))


def median_time(fn, repeats: int) -> float:
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


class Trainer:
  """Advances a list of (states, members) groups by one chunk each, feeding back the donated states."""

  def __init__(self, spec: msp_train.Spec, groups: list, S: int):
    self.spec, self.groups, self.S, self.step = spec, groups, S, 0

  def chunk(self, only_first: bool = False) -> None:
    for i, (states, members) in enumerate(self.groups[:1] if only_first else self.groups):
      out = loop.run_chunk(states, members, None, jnp.int32(self.step), exp=msp.EXPERIMENT, spec=self.spec,
                           n_steps=self.S)
      jax.block_until_ready(out)
      self.groups[i] = (out[0], members)
    self.step += self.S


def loop_trainer(spec: msp_train.Spec, M: int, S: int) -> Trainer:
  members, states = build(spec, M)
  sl = lambda tree, i: jax.tree.map(lambda x: x[i:i + 1], tree)
  return Trainer(spec, [(sl(states, i), sl(members, i)) for i in range(M)], S)


def vmap_trainer(spec: msp_train.Spec, M: int, S: int) -> Trainer:
  members, states = build(spec, M)
  return Trainer(spec, [(states, members)], S)


def time_trainers(trainers: list[Trainer], repeats: int) -> list[float]:
  """Median seconds per chunk of each trainer; repeats are interleaved so drifts of a shared VM hit all alike."""
  for tr in trainers:
    tr.chunk(only_first=True)  # compile + warm-up (every group of a trainer shares one program)
  times = [[] for _ in trainers]
  for _ in range(repeats):
    for tr, ts in zip(trainers, times):
      ts.append(median_time(tr.chunk, 1))
  return [statistics.median(ts) for ts in times]


def matmul_gflops(repeats: int) -> float:
  ka, kb = jax.random.split(jax.random.key(1))
  a = jax.random.normal(ka, (MATMUL_N, MATMUL_N), jnp.float32)
  b = jax.random.normal(kb, (MATMUL_N, MATMUL_N), jnp.float32)
  f = jax.jit(jnp.matmul)
  for _ in range(3):
    jax.block_until_ready(f(a, b))
  t = median_time(lambda: jax.block_until_ready(f(a, b)), repeats)
  return 2 * MATMUL_N**3 / t / 1e9


def main(argv):
  del argv
  quick = _QUICK.value
  t_start = time.perf_counter()
  try:
    affinity = len(os.sched_getaffinity(0))
  except AttributeError:
    affinity = None
  print(f"MSP training throughput ({'quick' if quick else 'full'} mode)")
  print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}")
  print(f"cpu count {os.cpu_count()} (usable {affinity}), {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}")
  print(f"eval_per_task={EVAL_PER_TASK} (each run_chunk call also runs one small per-task evaluation; "
        f"the timings measure training), online data (D=-1), adam, depth 2, one-hot lookup unless stated")
  print("timings: compile excluded (one warm-up call), median of the repeats (loop and vmap repeats interleaved); "
        "loop blocks after each model's chunk")
  print(flush=True)

  mm_repeats = 3 if quick else 10
  mm_start = matmul_gflops(mm_repeats)

  rows = []  # (task, width, M, S, mode, seconds per chunk, model-steps/s, GFLOP/s)
  for c in cases(quick):
    task = f"{c.name} T={c.n_tasks} n={c.n} k={c.k} B={c.batch}"
    for width in c.widths:
      print(f"  measuring {task}, width {width} ...", flush=True)
      spec = make_spec(c, width)
      flops_step = mlp.flops_per_example(spec.model, lookup_rows=c.n_tasks)["train_step"] * c.batch
      t_modes = time_trainers([loop_trainer(spec, c.M, c.S), vmap_trainer(spec, c.M, c.S)], c.repeats)
      for mode, t in zip(("loop", "vmap"), t_modes):
        rate = c.M * c.S / t
        rows.append((task, width, c.M, c.S, mode, t, rate, flops_step * rate / 1e9))

  # One-hot lookup vs dense first layer, paper task at width 500, one member.
  print("  measuring one-hot lookup vs dense first layer ...", flush=True)
  paper = cases(quick)[-1]
  S, repeats = (1, 1) if quick else (5, 3)
  t_lookup, t_dense = time_trainers([vmap_trainer(make_spec(paper, 500, onehot_lookup=lookup), 1, S)
                                     for lookup in (True, False)], repeats)
  mm_end = matmul_gflops(mm_repeats)
  mm = max(mm_start, mm_end)
  print()

  print(f"reference: jitted f32 matmul {MATMUL_N}x{MATMUL_N} @ {MATMUL_N}x{MATMUL_N}: {mm_start:.1f} GFLOP/s at "
        f"the start, {mm_end:.1f} at the end; % matmul below is against the better, {mm:.1f} GFLOP/s")
  print()
  print(f"{'task':<29} {'width':>5} {'M':>3} {'S':>4} {'mode':<5} {'ms/chunk':>9} {'model-steps/s':>13} "
        f"{'GFLOP/s':>8} {'% matmul':>8}")
  for task, width, M, S_, mode, t, rate, gf in rows:
    print(f"{task:<29} {width:>5} {M:>3} {S_:>4} {mode:<5} {t * 1e3:>9.1f} {rate:>13.1f} {gf:>8.2f} "
          f"{100 * gf / mm:>7.1f}%")
  print("(S: steps per run_chunk call; ms/chunk: wall time to advance all M models by one chunk of S steps; "
        "model-steps/s = M*S / ms/chunk)")
  print()
  print("vmapped sweep vs one model at a time (model-steps/s ratio vmap/loop):")
  for loop, vmap in zip(rows[0::2], rows[1::2]):
    print(f"  {loop[0]:<29} width {loop[1]:>3}, M={loop[2]}: {vmap[6] / loop[6]:.2f}x")
  print()

  f_lookup = mlp.flops_per_example(make_spec(paper, 500).model, lookup_rows=paper.n_tasks)["train_step"]
  f_dense = mlp.flops_per_example(make_spec(paper, 500).model, lookup_rows=0)["train_step"]
  print(f"one-hot lookup vs dense first layer (paper task, width 500, B={paper.batch}, M=1, S={S}):")
  print(f"  onehot_lookup=True : {t_lookup / S * 1e3:8.1f} ms/step  ({f_lookup * paper.batch / 1e9:.2f} GFLOP/step)")
  print(f"  onehot_lookup=False: {t_dense / S * 1e3:8.1f} ms/step  ({f_dense * paper.batch / 1e9:.2f} GFLOP/step)")
  print(f"  dense/lookup step time = {t_dense / t_lookup:.2f}x  (FLOP ratio {f_dense / f_lookup:.2f}x)")
  print()
  print(f"total bench time {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
  app.run(main)
