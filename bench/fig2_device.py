r"""The Fig 2 N-sweep (`configs/msp.py:fig2_n`: 30 widths 9..500, batch 20000, online, α=0.4, eval 1000 per subtask
every 100 steps) as one compiled program on an accelerator, sized to a time budget, then `launch.report`'s table.

Measured in one run, in this process:
1. the f32 matmul peak: a random 8192^3 GEMM at precision HIGHEST (true f32, what the MSP models use) and DEFAULT;
2. a calibration run of the paper's config for `--calib_steps` steps (compile timed separately from the rest);
3. the same config for S steps, S the largest multiple of `--calib_steps` (at most the paper's 200k) that fits what is left of
   `--budget_s` at the calibrated rate; its wall time, ms per step, useful training FLOP/s and fraction of the peak,
   and the projected wall time of the paper's 200k steps;
4. `scaling.quanta.report` on that workdir (α_N, α_S and the convergence slope scored against the paper).

    python bench/fig2_device.py --budget_s=300 --workdir=/tmp/fig2_n   # on a GPU
"""

from __future__ import annotations

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the checkout: scaling, configs

from absl import app, flags, logging
import jax
import jax.numpy as jnp
import numpy as np

import configs.msp as msp_configs
from scaling.quanta import msp, report

_BUDGET = flags.DEFINE_float("budget_s", 300.0, "Seconds for the whole script (calibration, run and report).")
_CALIB = flags.DEFINE_integer("calib_steps", 1000, "Steps of the calibration run.")
_WORKDIR = flags.DEFINE_string("workdir", "/tmp/fig2_n", "Workdir of the sized run (removed first).")
_GEMM = flags.DEFINE_integer("gemm_n", 8192, "Size of the square GEMM that measures the peak.")
_VARIANT = flags.DEFINE_string("variant", "fig2_n", "configs/msp.py variant (fig2_n; `quick` to try the script on a CPU).")
_OUT = flags.DEFINE_string("out", "", "Folder to copy the report's figures and the run's metrics into.")
COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration", "/jax/core/compile/jaxpr_to_mlir_module_duration",
                  "/jax/core/compile/backend_compile_duration")
_compile_s = [0.0]


def _on_event(event: str, duration: float, **_) -> None:
  if event in COMPILE_EVENTS:
    _compile_s[0] += duration


def matmul_tflops(precision: str, n: int = 8192, repeats: int = 10) -> float:
  """Median TFLOP/s of a random n^3 f32 GEMM at `precision`."""
  a, b = (jax.random.normal(k, (n, n), jnp.float32) for k in jax.random.split(jax.random.key(0)))
  f = jax.jit(lambda x, y: jnp.matmul(x, y, precision=precision))
  jax.block_until_ready(f(a, b))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(f(a, b))
    times.append(time.perf_counter() - t0)
  return 2 * n ** 3 / float(np.median(times)) / 1e12


def timed_run(steps: int, workdir: str) -> dict[str, float]:
  c = msp_configs.get_config(_VARIANT.value)
  c.train.update(steps=steps)
  shutil.rmtree(workdir, ignore_errors=True)
  _compile_s[0] = 0.0
  t0 = time.perf_counter()
  msp.run(c, workdir)
  wall = time.perf_counter() - t0
  plan = msp.plan(c)
  useful = sum(msp.EXPERIMENT.cost(plan, p.spec) for p in plan.points) * steps
  return {"wall": wall, "compile": _compile_s[0], "rest": wall - _compile_s[0], "useful": useful}


def main(_):
  t_start = time.perf_counter()
  logging.set_verbosity(logging.WARNING)
  jax.monitoring.register_event_duration_secs_listener(_on_event)
  print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}, {len(jax.devices())} device(s)", flush=True)
  peak = {p: matmul_tflops(p, _GEMM.value) for p in ("highest", "default")}
  print(f"1. f32 GEMM {_GEMM.value}^3 (random): HIGHEST {peak['highest']:.1f} TFLOP/s, DEFAULT {peak['default']:.1f} TFLOP/s",
        flush=True)

  cal = timed_run(_CALIB.value, _WORKDIR.value + "_calib")
  rate = _CALIB.value / cal["rest"]
  print(f"2. calibration, {_CALIB.value} steps: wall {cal['wall']:.1f} s, compile {cal['compile']:.1f} s, "
        f"{1e3 / rate:.2f} ms/step with evaluation", flush=True)

  left = _BUDGET.value - (time.perf_counter() - t_start) - cal["compile"] - 30.0  # 30 s for the report and I/O
  g = _CALIB.value
  full = msp_configs.get_config(_VARIANT.value).train.steps
  steps = int(min(full, max(g, left * rate // g * g)))
  r = timed_run(steps, _WORKDIR.value)
  ms = 1e3 * r["rest"] / steps
  tflops = r["useful"] / r["rest"] / 1e12
  print(f"3. {_VARIANT.value}, {steps} of the config's {full} steps, one program: wall {r['wall']:.1f} s (compile "
        f"{r['compile']:.1f} s), {ms:.2f} ms/step; projected {full} steps {full * ms / 1e3 / 60:.1f} min + compile; "
        f"useful training {tflops:.2f} TFLOP/s = {tflops / peak['highest']:.3f} of the HIGHEST f32 peak", flush=True)

  print("4. launch.report:", flush=True)
  print(report.report([_WORKDIR.value]), flush=True)
  if _OUT.value:
    os.makedirs(_OUT.value, exist_ok=True)
    for name in sorted(os.listdir(_WORKDIR.value)):
      if name.endswith(".png") or name in ("metrics.jsonl", "config.json", "curves.npz"):
        shutil.copy(os.path.join(_WORKDIR.value, name), _OUT.value)
  print(f"total {time.perf_counter() - t_start:.0f} s")


if __name__ == "__main__":
  app.run(main)
