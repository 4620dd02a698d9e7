r"""A whole MSP sweep as one compiled program vs one program per shape (issue: widths and D on the member axis).

Prints, measured in one run on this machine (ratios are what to compare; absolute times vary ±20-30 % on a VM):

1. `configs/msp.py:quick` (7 widths x 2 seeds, 5k steps) through the launcher, end to end in a fresh process, in
   both modes (`sweep.one_program` True / False): wall, compile (JAX's own compile events: tracing, lowering and XLA
   compilation, summed) and the rest (steady-state training, evaluation, I/O).
2. A reduced Fig 2 N-sweep: the paper task (500 tasks, n=100, k=3, α=0.4, batch 20000, online), every third of the
   paper's 30 widths (10 widths, 9..500), 200 steps, evaluation on 100 samples per subtask (the paper's 1000 would
   dominate a 200-step run), in both modes, in this process.
3. 8 seeds at width 50, batch 20000: model-steps/s of one program of 8 members vs one model at a time (the same
   compiled chunk with a member axis of 1, 8 calls), after warm-up.
4. FLOPs: useful / executed training FLOPs of the packed Fig 2 grid (all 30 widths, the planner's buckets), and the
   fraction of this machine's f32 matmul peak (a 2048^3 GEMM, measured here) reached by the reduced sweep.

    .venv/bin/python bench/sweep_program.py           # about 6-8 minutes on a 2-core CPU
    .venv/bin/python bench/sweep_program.py --quick   # sections 3-4 and a 100-step section 2, about 2 minutes
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout: scaling, configs

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import numpy as np

import configs.msp as msp_configs
from scaling.engine import loop, programs
from scaling.nn import mlp
from scaling.quanta import msp, msp_train
from scaling.quanta import task as task_lib

_QUICK = flags.DEFINE_bool("quick", False, "Skip the :quick launcher runs and shorten the Fig 2 sweep.")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_compile_s = [0.0]


def _on_event(event: str, duration: float, **_) -> None:
  if event in COMPILE_EVENTS:
    _compile_s[0] += duration


def launcher(one_program: bool) -> dict[str, float]:
  """`python -m launch.msp --config=configs/msp.py:quick` end to end; compile time from JAX_LOG_COMPILES lines."""
  with tempfile.TemporaryDirectory() as d:
    cmd = [sys.executable, "-m", "launch.msp", "--config=configs/msp.py:quick", f"--workdir={d}/wd",
           f"--config.sweep.one_program={one_program}"]
    env = {**os.environ, "JAX_LOG_COMPILES": "1", "PYTHONPATH": ROOT}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
  found = re.findall(r"Finished (?:tracing \+ transforming|jaxpr to MLIR module conversion|XLA compilation) .*? in "
                     r"([\d.e-]+) sec", out.stderr)
  programs_line = re.search(r"compiles (\d+) program", out.stderr)
  return {"wall": wall, "compile": sum(map(float, found)), "programs": int(programs_line.group(1))}


def fig2_config(steps: int, one_program: bool):
  c = msp_configs.get_config("fig2_n")
  c.train.update(steps=steps, log_every=100, eval_per_task=100, checkpoint_every=1000)
  c.sweep.update(width=c.sweep.width[::3], one_program=one_program)
  return c


def in_process(config) -> dict[str, float]:
  with tempfile.TemporaryDirectory() as d:
    _compile_s[0] = 0.0
    t0 = time.perf_counter()
    msp.run(config, os.path.join(d, "wd"))
    wall = time.perf_counter() - t0
  return {"wall": wall, "compile": _compile_s[0]}


def seeds_vs_one(width: int = 50, n: int = 8, steps: int = 20, repeats: int = 3) -> dict[str, float]:
  """Seconds per model-step: n seeds in one chunk vs one model at a time (member axis 1, n calls)."""
  task = task_lib.MSPSpec(500, 100, 3)
  spec = msp_train.Spec(task, mlp.MLPSpec(task.input_dim, width), batch=20000, eval_per_task=4)
  subsets = task_lib.make_subsets(500, 100, 3, 0)

  def members(m: int):
    keys = jax.random.split(jax.random.key(0), m)
    f32 = lambda v: np.full(m, v, np.float32)
    return loop.init_members((keys, f32(0.4), f32(1e-3), f32(0.0), np.broadcast_to(subsets, (m,) + subsets.shape)),
                             None, exp=msp.EXPERIMENT, spec=spec)

  def timed(states, consts) -> float:
    best = np.inf
    for r in range(repeats + 1):
      t0 = time.perf_counter()
      states, ev, _, _ = loop.run_chunk(states, consts, None, jnp.int32(r * steps), exp=msp.EXPERIMENT, spec=spec,
                                        n_steps=steps)
      jax.block_until_ready(ev)
      if r:  # the first call compiles
        best = min(best, time.perf_counter() - t0)
    return best

  together = timed(*members(n)) / (n * steps)
  ones = [members(1) for _ in range(n)]
  alone = sum(timed(*ones[i]) for i in range(n)) / (n * steps)
  return {"together": together, "alone": alone}


def matmul_gflops(n: int = 2048) -> float:
  a = jnp.ones((n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  jax.block_until_ready(f(a))
  t = min(_time(lambda: jax.block_until_ready(f(a))) for _ in range(5))
  return 2 * n ** 3 / t / 1e9


def _time(fn) -> float:
  t0 = time.perf_counter()
  fn()
  return time.perf_counter() - t0


def main(_):
  logging.set_verbosity(logging.WARNING)
  jax.monitoring.register_event_duration_secs_listener(_on_event)
  print(f"jax {jax.__version__}, {jax.devices()[0].platform}, {os.cpu_count()} CPUs")
  peak = matmul_gflops()
  print(f"f32 matmul peak (2048^3 GEMM): {peak:.1f} GFLOP/s")

  if not _QUICK.value:
    print("\n1. configs/msp.py:quick through the launcher, end to end (fresh process)")
    rows = {mode: launcher(mode == "one program") for mode in ("one program", "per shape")}
    for mode, r in rows.items():
      print(f"   {mode:12s} {r['programs']:2d} program(s): wall {r['wall']:6.1f} s, compile {r['compile']:5.1f} s, "
            f"rest {r['wall'] - r['compile']:6.1f} s")
    a, b = rows["one program"], rows["per shape"]
    print(f"   per shape / one program: wall {b['wall'] / a['wall']:.2f}x, compile {b['compile'] / a['compile']:.2f}x, "
          f"rest {(b['wall'] - b['compile']) / (a['wall'] - a['compile']):.2f}x")

  steps = 100 if _QUICK.value else 200
  print(f"\n2. reduced Fig 2 N-sweep: 10 of the paper's widths, batch 20000, {steps} steps, in this process")
  plan = msp.plan(fig2_config(steps, True))
  progs, summary = programs.plan_programs(msp.EXPERIMENT, plan, jax.devices())
  print(f"   one program: {len(progs)} program(s), {summary['buckets']} bucket(s), useful/executed "
        f"{summary['efficiency']:.3f}; widths {[int(w) for w in plan.shape_axes['width']]}")
  one = in_process(fig2_config(steps, True))
  per = in_process(fig2_config(steps, False))
  for mode, r in (("one program", one), ("per shape", per)):
    print(f"   {mode:12s}: wall {r['wall']:6.1f} s, compile {r['compile']:5.1f} s, rest {r['wall'] - r['compile']:6.1f} s")
  print(f"   per shape / one program: wall {per['wall'] / one['wall']:.2f}x, "
        f"rest {(per['wall'] - per['compile']) / (one['wall'] - one['compile']):.2f}x")
  useful = sum(msp.EXPERIMENT.cost(plan, p.spec) for p in plan.points) * steps
  print(f"   one program: {useful / (one['wall'] - one['compile']) / 1e9:.1f} useful GFLOP/s (training matmuls, "
        f"wall minus compile) = {useful / (one['wall'] - one['compile']) / 1e9 / peak:.2f} of the f32 peak")

  print("\n3. 8 seeds at width 50, batch 20000 (paper task): seconds per model-step")
  r = seeds_vs_one()
  print(f"   one program of 8: {1e3 * r['together']:.2f} ms, one at a time: {1e3 * r['alone']:.2f} ms; "
        f"one program / one at a time throughput {r['alone'] / r['together']:.2f}x")

  print("\n4. the paper's Fig 2 width grid (30 widths 9..500), packed")
  full = msp.plan(msp_configs.get_config("fig2_n"))
  progs, summary = programs.plan_programs(msp.EXPERIMENT, full, jax.devices())
  for i, prog in enumerate(progs):
    for b in prog.buckets:
      print(f"   program {i}, bucket width {b.spec.model.width:4d}: widths {[p.coords['width'] for p in b.points]}")
  print(f"   {summary['buckets']} buckets in {len(progs)} program(s); useful / executed FLOPs {summary['efficiency']:.3f}; "
        f"estimated memory {summary['bytes'] / 1e9:.2f} GB")


if __name__ == "__main__":
  app.run(main)
