r"""Multitask sparse parity sweeps of Michaud et al. (2023), "The Quantization Model of Neural Scaling".

`alpha` here is the **paper's** α (p_i ∝ i^-(α+1)); the original code's `alpha=1.4` is our `alpha=0.4`.
Sweep axes live in `config.sweep`: `width`, `D`, `seeds`, `alpha`, `lr` and `weight_decay` are all on the member
axis of one compiled program (widths and D padded in buckets and masked per member; sharded over all local devices);
`--config.sweep.one_program=False` compiles one program per (width, D) instead. See the README's "Whole sweeps as
one program".

Variants (`--config=configs/msp.py:<variant>`):

quick   CPU demo: 10 tasks, n=30, k=3, widths 4..256, 2 seeds, batch 2048, 5k steps. About 1-2 min on 2 CPU cores.
          python -m launch.msp --config=configs/msp.py:quick --workdir=runs/quick
        Expect: loss falls with width from ~0.6 bit to <0.1 bit; the widest nets learn most of the 10 subtasks.

tiny    Tests of multi-process and cluster runs: widths 8, 16, 64, online; 2 seeds, batch 256, 200 steps (two
        buckets, so two tasks of a fan-out; seconds).
          python -m launch.msp --config=configs/msp.py:tiny --workdir=runs/tiny

quick_d CPU demo of data scaling: the quick task at width 128, D = 1,000..100,000 (one program), α in {0.3, 0.6}
        vmapped, 3k steps. About 1 min on 2 CPU cores.
          python -m launch.msp --config=configs/msp.py:quick_d --workdir=runs/quick_d
        Expect: min-over-time loss falls with D once D reaches a few thousand; α_D and Fig 9 computable.

small   Spec §8's small CI config: 10/30/3, width 128, batch 2048, 10k steps, 3 seeds (~1 min on CPU).
        Expect: subtask 0 below 0.1 bit by step ~700, mean loss 0.12-0.25 bit at 3k steps and < 0.1 bit at 10k.

fig2_n  P-scaling-15 (Fig 2 N-panel and S-panel, Figs 7-8): 500 tasks, n=100, k=3, α=0.4, 30 widths 9..500,
        batch 20000, 200k steps, online, log every 100, seed 0.
          python -m launch.msp --config=configs/msp.py:fig2_n --workdir=runs/fig2_n
        Cost: 6.0M member-steps (30 widths x 200k), 7.2 PFLOP with evaluation, as one program of 6 buckets.
        Measured on one H200 (bench/fig2_device.py): 85 s compile, then 5.88 ms per step for all 30 widths with
        evaluation, so about 20 min for the 200k steps (the original used up to one GPU-day per width); two
        programs on a 24 GB CPU VM. Expect: final mean loss ~0.62-0.65 bit at N~5e3 falling to
        ~0.13 bit at N=3.0e5 (width 500) along N^-0.4; the width-500 run learns ~35-41 subtasks.

fig2_d  D-scaling-6 (Fig 2 D-panel): width 500, 30 values of D from 9,999 to 4,999,999, 1M steps, log every 100.
          python -m launch.msp --config=configs/msp.py:fig2_d --workdir=runs/fig2_d
        Cost: 30M steps (30 values of D x 1M), 139 PFLOP; at 10-20 ms/step (spec estimate, not timed here) 83-167
        GPU-hours. The paper's argmin of the test loss came at <= 9,500 steps for every D, so
        `--config.train.steps=20000` gives the same figure 50x cheaper (1.7-3.3 GPU-hours).
        Expect: min-over-time loss flat at ~1 bit for D <~ 6e4, then falling along D^-0.286 to ~0.25 bit at 5e6.

fig10_n P-scaling-17 (Fig 10 rows 1-2): α in 0.1..0.8 (8 values) x 3 seeds vmapped (24 members per program),
        20 widths 9..300, 100k steps, log every 500. Subsets differ per seed, as in the original (seed 0, 1, 2).
          python -m launch.msp --config=configs/msp.py:fig10_n --workdir=runs/fig10_n
        Cost: 2M steps (20 widths x 100k) of 24 members each, 36 PFLOP; not yet timed on a GPU.
        Expect: α_N ≈ 0.23, 0.28, 0.34, 0.38, 0.46, 0.50, 0.57, 0.61 and α_S ≈ 0.23 .. 0.48 for α = 0.1 .. 0.8.

fig10_d D-scaling-9 (Fig 10 row 3, Fig 9): width 500, α in 0.1..0.8 step 0.05 (15 values vmapped), 25 values of D
        from 9,999 to 4,999,999, 100k steps, log every 500, seed 0.
          python -m launch.msp --config=configs/msp.py:fig10_d --workdir=runs/fig10_d
        Cost: 2.5M steps (25 values of D x 100k) of 15 members each, 158 PFLOP; not yet timed on a GPU. The 15
        datasets of D=5e6 take 1.2 GB on device (bits packed 32 per word).
        Expect: α_D ≈ 0.27 .. 0.40 (nearly flat in α); n_learned(D) exponents ≈ 0.88 .. 0.58.

Any field can be overridden: `--config.sweep.width='(32,64)' --config.train.steps=2000`.
"""

import ml_collections
import numpy as np

from scaling.quanta.msp import msp_config
from scaling.engine import config as C


def log2_grid(a: float, b: float, m: int) -> tuple[int, ...]:
  """The original configs' grids: int(2**linspace(log2 a, log2 b, m)) (truncation makes 10 -> 9)."""
  return tuple(int(x) for x in 2 ** np.linspace(np.log2(a), np.log2(b), m))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "quick")  # "variant[,field=value...]"
  c = msp_config()  # the paper's task, model and optimizer (v4 script)
  if name == "quick":
    c.task.update(n_tasks=10, n=30, k=3)
    c.train.update(batch_size=2048, steps=5000, log_every=100, eval_per_task=500, checkpoint_every=10)
    c.sweep.update(width=(4, 8, 16, 32, 64, 128, 256), seeds=2)
  elif name == "tiny":
    c.task.update(n_tasks=10, n=30, k=3)
    c.train.update(batch_size=256, steps=200, log_every=50, eval_per_task=100, checkpoint_every=1)
    c.sweep.update(width=(8, 16, 64), seeds=2)
  elif name == "quick_d":
    c.task.update(n_tasks=10, n=30, k=3)
    c.train.update(batch_size=2048, steps=3000, log_every=100, eval_per_task=500, checkpoint_every=10)
    c.sweep.update(width=(128,), D=(1000, 3000, 10_000, 30_000, 100_000), alpha=(0.3, 0.6), seeds=1)
  elif name == "small":
    c.task.update(n_tasks=10, n=30, k=3)
    c.train.update(batch_size=2048, steps=10_000, log_every=100, eval_per_task=1000, checkpoint_every=20)
    c.sweep.update(width=(128,), seeds=3)
  elif name == "fig2_n":
    c.sweep.update(width=log2_grid(10, 500, 30))
  elif name == "fig2_d":
    c.train.update(steps=1_000_000)
    c.sweep.update(width=(500,), D=log2_grid(1e4, 5e6, 30))
  elif name == "fig10_n":
    c.task.update(subsets_per_seed=True)
    c.train.update(steps=100_000, log_every=500, checkpoint_every=20)
    c.sweep.update(width=log2_grid(10, 300, 20), seeds=3,
                   alpha=tuple(round(a, 2) for a in np.arange(0.1, 0.81, 0.1)))
  elif name == "fig10_d":
    c.train.update(steps=100_000, log_every=500, checkpoint_every=20)
    c.sweep.update(width=(500,), D=log2_grid(1e4, 5e6, 25),
                   alpha=tuple(round(a, 3) for a in np.arange(0.1, 0.8001, 0.05)))
  else:
    raise ValueError(f"unknown variant {name!r}; one of quick, tiny, quick_d, small, fig2_n, fig2_d, fig10_n, fig10_d")
  return C.apply_args(c, overrides)
