r"""One-pass training of 1-D ResNets of several widths on MNIST-1D (even vs odd digit) through the sweep engine: the
dynamical-model paper's Fig 1(a, b) (spec dmft.md §5.1) on a real network. Logic: `scaling.dynamics.vision`; model
`scaling.nn.cnn`; data `scaling.dynamics.vision_data`.

  python -m launch.vision --config=configs/vision.py:quick --workdir=runs/vision_quick

Re-running the same command skips finished widths and resumes unfinished ones from their latest checkpoint (bitwise,
the stored data.npz reused). Override fields after the variant, e.g. `--config=configs/vision.py:quick,seeds=4`.
Every variant: Adam (0.9, 0.999, 1e-8), lr 2e-3 after a 50-step linear warmup, constant; channels (8, 16) x width,
one residual block per stage; 1,000 held-out samples; each seed its own permutation of the pool.

quick   widths (0.5, 1, 1.5, 2, 3, 4) (633 to 37,313 params, 59x), 2 seeds, batch 32, 1,500 steps (48,000 fresh
        samples each), log every 20. MEASURED
cpu     widths (0.5, 0.75, 1, 1.5, 2, 3, 4, 6) (633 to 83,617 params, 132x), 3 seeds, batch 32, 4,000 steps
        (128,000 samples), log every 20. MEASURED
paper   widths (0.5, 1, 2, 4, 8, 16) (633 to 591,617 params, 935x), 5 seeds, batch 128, 20,000 steps (2.56M samples;
        data.npz 410 MB), 5,000 held-out samples, log every 100. ESTIMATED cost: 6 x Σ forward multiply-adds =
        110 MFLOP per example summed over widths, x 5 seeds x 128 x 20,000 = 1.4 PFLOP of training; MNIST-1D
        generation ~10 min at 4,300 samples/s. This CPU runs these convs at ~18 GFLOP/s (measured on the quick run,
        2 shared cores): ~22 h. A GPU at an assumed 5-10 TFLOP/s of float32 (HIGHEST precision, small matmuls):
        3-5 min of training plus the data generation (not measured: no device was lent).
"""

from __future__ import annotations

import ml_collections

from scaling.dynamics.vision import vision_config
from scaling.engine import config as C


def quick() -> ml_collections.ConfigDict:
  c = vision_config()
  c.train.update(batch_size=32, steps=1500, log_every=20)
  c.sweep.update(widths=(0.5, 1, 1.5, 2, 3, 4), seeds=2)
  return c


def cpu() -> ml_collections.ConfigDict:
  c = vision_config()
  c.train.update(batch_size=32, steps=4000, log_every=20)
  c.sweep.update(widths=(0.5, 0.75, 1, 1.5, 2, 3, 4, 6), seeds=3)
  return c


def paper() -> ml_collections.ConfigDict:
  c = vision_config()
  c.data.n_test = 5000
  c.train.update(batch_size=128, steps=20000, log_every=100, checkpoint_every=20)
  c.sweep.update(widths=(0.5, 1, 2, 4, 8, 16), seeds=5)
  return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return C.variant(arg, "quick", {"quick": quick, "cpu": cpu, "paper": paper})
