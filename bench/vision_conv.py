r"""Training speed of the vision experiment's 1-D ResNet: its convolutions as matmuls (`cnn._conv`, what the model
uses) vs `lax.conv_general_dilated`, one member and 2 vmapped members (as the engine runs seeds).

Prints, in one run on this machine, seconds per 100 Adam steps of batch 32 and achieved GFLOP/s
(`cnn.flops_per_example` x batch x steps / time) for widths 1, 2, 4, and the ratio lax / matmul. Compile time is
excluded (one warm-up call); each timing is the median of 3 repeats. Numbers vary by +-20-30% on a shared VM;
compare the ratios of one run.

    .venv/bin/python bench/vision_conv.py
"""

from __future__ import annotations

import os
import statistics
import sys
import time

try:
  import scaling  # noqa: F401  (installed with `pip install -e .`)
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp
import optax

from scaling.nn import cnn

BATCH, STEPS = 32, 100


def lax_conv(p, h, stride=1):
  out = jax.lax.conv_general_dilated(h, p["w"], (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"),
                                     precision=jax.lax.Precision.HIGHEST)
  return out + p["b"][None, None]


def timed(width: float, members: int) -> float:
  cfg = cnn.CNNConfig()
  opt = optax.adam(1e-3)
  params = cnn.init(jax.random.key(0), width, cfg)

  def step(c, x_BxL):
    p, o = c
    loss, g = jax.value_and_grad(lambda p: jnp.mean(cnn.bce(cnn.apply(p, x_BxL), jnp.ones(BATCH))))(p)
    u, o = opt.update(g, o, p)
    return (optax.apply_updates(p, u), o), loss

  run = jax.jit(jax.vmap(lambda p, o, xs: jax.lax.scan(step, (p, o), xs), in_axes=(0, 0, None)))
  ps = jax.tree.map(lambda a: jnp.stack([a] * members), params)
  os_ = jax.vmap(opt.init)(ps)
  xs = jax.random.normal(jax.random.key(1), (STEPS, BATCH, cfg.length))
  jax.block_until_ready(run(ps, os_, xs))
  times = []
  for _ in range(3):
    t = time.perf_counter()
    jax.block_until_ready(run(ps, os_, xs))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def main() -> None:
  print(f"JAX {jax.__version__}, {jax.default_backend()}; {STEPS} Adam steps of batch {BATCH}")
  print(f"{'width':>5} {'members':>7} {'matmul s':>9} {'GFLOP/s':>8} {'lax s':>8} {'GFLOP/s':>8} {'lax/matmul':>10}")
  matmul_conv = cnn._conv  # pylint: disable=protected-access
  for width in (1, 2, 4):
    for members in (1, 2):
      flops = cnn.flops_per_example(width) * BATCH * STEPS * members
      cnn._conv = matmul_conv  # pylint: disable=protected-access
      a = timed(width, members)
      cnn._conv = lax_conv  # pylint: disable=protected-access
      b = timed(width, members)
      cnn._conv = matmul_conv  # pylint: disable=protected-access
      print(f"{width:>5} {members:>7} {a:>9.3f} {flops / a / 1e9:>8.1f} {b:>8.3f} {flops / b / 1e9:>8.1f} "
            f"{b / a:>10.1f}")


if __name__ == "__main__":
  main()
