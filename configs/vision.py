r"""One-pass training of 1-D ResNets of several widths on MNIST-1D (even vs odd digit) through the sweep engine: the
dynamical-model paper's Fig 1(a, b) (spec dmft.md §5.1) on a real network. Logic: `scaling.dynamics.vision`; model
`scaling.nn.cnn`; data `scaling.dynamics.vision_data`.

  python -m launch.vision --config=configs/vision.py:quick --workdir=runs/vision_quick

Re-running the same command skips finished widths and resumes unfinished ones from their latest checkpoint (bitwise,
the stored data.npz reused). Override fields after the variant, e.g. `--config=configs/vision.py:quick,seeds=4`.
Every variant: Adam (0.9, 0.999, 1e-8), lr 2e-3 after a 50-step linear warmup, constant; channels (8, 16) x width,
one residual block per stage; 1,000 held-out samples; each seed its own permutation of the pool.

quick   widths (0.5, 1, 1.5, 2, 3, 4) (633 to 37,313 params, 59x), 2 seeds, batch 32, 1,000 steps (32,000 fresh
        samples each), log every 20. Measured end to end with the Fig 1 analysis: 51 s wall on 2 idle cores.
        Final held-out loss (nats, mean of the seeds) / error: 0.375 / 0.172, 0.149 / 0.055, 0.105 / 0.033,
        0.076 / 0.027, 0.075 / 0.023, 0.072 / 0.024. Fig 1 analysis (fig1.md): α_t = 1.14 [1.05, 1.22], α_N =
        0.76 [0.71, 0.83] (95 % bootstrap), against the DMFT's 0.20 and 0.23 from the initial NTK (b = 1.13,
        a = 1.23): the network is 3-6x faster. (At 1,500 steps, 55 s + 15 s: α_t 0.96 [0.91, 1.03], α_N 0.86
        [0.74, 0.98]; the quick variant is kept short for CI, which runs it in colab/vision.ipynb.)
cpu     widths (0.5, 0.75, 1, 1.5, 2, 3, 4, 6) (633 to 83,617 params, 132x), 3 seeds, batch 32, 4,000 steps
        (128,000 samples), log every 20: 8.6 TFLOP of training. Measured: 4 min 18 s wall on 2 idle cores
        (generation 26.7 s; the widest width at 48 steps/s x 3 seeds ≈ 53 GFLOP/s), 7 min 50 s shared. Final
        held-out loss / error: 0.119 / 0.041, 0.096 / 0.032, 0.065 / 0.019, 0.046 / 0.014, 0.036 / 0.010,
        0.036 / 0.008, 0.030 / 0.008, 0.025 / 0.007. At the constant lr the late curves are jagged: successive
        logged losses differ by 9-41 % (std of the log-loss increments after step 500, growing with width).
        Fig 1 analysis: α_t = 1.10 [0.99, 1.18], α_N = 0.97 [0.79, 1.10], N* ∝ C^0.53 [0.49, 0.58]; DMFT from the
        initial NTK (b = 1.150, a = 1.245): 0.21, 0.25, 0.47. The exponents move with fig1.t_min (README).
paper   widths (0.5, 1, 2, 4, 8, 16) (633 to 591,617 params, 935x), 5 seeds, batch 128, 20,000 steps (2.56M samples;
        data.npz 410 MB), 5,000 held-out samples, log every 100. ESTIMATED, not run: 6 x Σ forward multiply-adds =
        110 MFLOP per example summed over widths, x 5 seeds x 128 x 20,000 = 1.4 PFLOP of training, ~8 h on this
        CPU at the ~50 GFLOP/s measured above; MNIST-1D generation ~10 min at 4,300 samples/s. On a GPU at an
        assumed 5-10 TFLOP/s of float32 matmuls this size: 3-5 min of training plus the generation (no device was
        lent to measure it).
"""

from __future__ import annotations

import ml_collections

from scaling.dynamics.vision import vision_config
from scaling.engine import config as C


def quick() -> ml_collections.ConfigDict:
  c = vision_config()
  c.train.update(batch_size=32, steps=1000, log_every=20)
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
