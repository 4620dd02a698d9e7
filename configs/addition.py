r"""The BNSL paper's toy experiment (Caballero et al., spec bnsl.md §4b): test CE of a 1-layer GPT on 4-digit addition
against training-set size, trained full batch. The plotted curve is flat near 2.1 nats until ~550 problems, drops
sharply (fitted break d1 ≈ 613, f1 ≈ 0.059) and tends to ≈ 0.41 nats; `scaling.bnsl.addition.summary(curves)` gives the
(train_size, test CE) points to fit.

Which number the paper plots is not stated (spec: [guess]); every run records the final and the min-over-training test
CE. The paper's points are the *min over training*: a CPU check of the `paper` setting at 3 sizes, 1 seed, gave min
test CE 2.071 / 1.467 / 0.585 nats at 320 / 640 / 928 problems (paper: 2.070 / 1.506 / 0.557), while the final test
CE was 8.21 / 2.52 / 2.27 (the nets memorise their training set: train CE < 1e-3, and test CE climbs afterwards).

Variants (`--config=configs/addition.py:<variant>`):

quick   CI demo: sizes (64, 256, 512, 1024), 2 seeds, 200 steps at lr 1e-3 (10x the paper's, so that the break shows
        within 200 steps), log every 20. 0.74M sample-steps, 118 s of CPU time: measured 2 min 34 s wall on 2 cores
        shared with other jobs (the run got 0.76 of a core on average); about 1-1.5 min on 2 idle cores. The default
        one program (3 buckets: 64 padded to 256, 512, 1024; useful / executed FLOPs 0.91) and one program per size
        (--config.sweep.one_program=False) took the same time here: 86 s wall, 148 s CPU each on 2 near-idle cores.
          python -m launch.addition --config=configs/addition.py:quick --workdir=runs/add_quick
        Expect (measured, means over the 2 seeds): min test CE 2.31 nats at 64 and 2.10 at 256 (memorised: final CE
        6.1 and 5.7, accuracy 0), then a sharp drop: 0.64 at 512 (accuracy 0.16) and 0.21 at 1024 (accuracy 0.64).

fit     The quick setting on a grid fine enough to fit a BNSL to: sizes 64, 128, ..., 1024 (16 sizes) x 2 seeds, 200
        steps at lr 1e-3. 3.5M sample-steps, ~4.7x quick.
          python -m launch.addition --config=configs/addition.py:fit --workdir=runs/add_fit
          python -m launch.fit --config=configs/fit_sweep.py:addition --config.source.workdir=runs/add_fit \
              --workdir=runs/add_fit_bnsl

paper   The fit-script sizes 160, 192, 256, ..., 928 (17 sizes, spec §4b) x 8 seeds, lr 1e-4, log every 16 steps.
        Training length as the original's --data_steps (samples; steps = data_steps / train_size, rounded up to a
        multiple of 16): 650k for sizes up to 544 (the original's 160 and 192; its 256-544 runs were only limited by
        wall time, so 650k there is our choice), 750k for 576-608, 1M for 640-800, 2.8M for 864-992, 6M from 1056.
        E.g. 4,064 steps at 160, 1,312 at 576, 1,568 at 640, 3,024 at 928.
          python -m launch.addition --config=configs/addition.py:paper --workdir=runs/add_paper
        Cost: 17.0M sample-steps per seed, 136M in all, ~7 MFLOP each (0.2M parameters; 12 tokens in, the last block
        computed at the 5 output positions only): ~1 PFLOP. At the measured ~0.15 ms of CPU time per sample-step,
        ~5.7 CPU-hours (~3 h on 2 idle cores); not yet timed on a GPU. Expect the paper's curve: test CE ≈ 2.14 at
        160, ≈ 2.0 at 512, ≈ 1.5 at 640, ≈ 0.56 at 928, and a BNSL n=1 fit with its break near 600.

dense   The original's early metajob grid: sizes 16, 32, ..., 1024 (64 sizes) x 4 seeds, data_steps as `paper`
        (40,640 steps at size 16). Cost: 76M sample-steps per seed, 305M in all (~2.2 PFLOP, ~13 CPU-hours); a GPU job.

Any field can be overridden: `--config.sweep.seeds=2 --config.train.data_steps='(650000,)'`.
"""

import ml_collections

from scaling.bnsl.addition import addition_config

FIT_SIZES = (160, 192, 256, 320, 384, 448, 480, 512, 544, 576, 608, 640, 672, 736, 800, 864, 928)


def data_steps(size: int) -> int:
  """Samples per run of the original sweeps for `size` (650k below 576 is our choice for the wall-time-limited runs)."""
  if size < 576:
    return 650_000
  if size < 640:
    return 750_000
  if size <= 800:
    return 1_000_000
  if size < 1056:
    return 2_800_000
  return 6_000_000


def get_config(arg: str = "quick") -> ml_collections.ConfigDict:
  c = addition_config()  # spec §4b: 4 digits, 1 layer, d_model 128, AdamW lr 1e-4, full batch
  if arg == "quick":
    c.train.update(steps=200, log_every=20, lr=1e-3, checkpoint_every=5)
    c.sweep.update(train_size=(64, 256, 512, 1024), seeds=2)
  elif arg == "fit":
    c.train.update(steps=200, log_every=20, lr=1e-3, checkpoint_every=5)
    c.sweep.update(train_size=tuple(range(64, 1025, 64)), seeds=2)
  elif arg == "paper":
    c.train.update(data_steps=tuple(data_steps(n) for n in FIT_SIZES), log_every=16, checkpoint_every=50)
    c.sweep.update(train_size=FIT_SIZES, seeds=8)
  elif arg == "dense":
    sizes = tuple(range(16, 1025, 16))
    c.train.update(data_steps=tuple(data_steps(n) for n in sizes), log_every=16, checkpoint_every=50)
    c.sweep.update(train_size=sizes, seeds=4)
  else:
    raise ValueError(f"unknown variant {arg!r}; one of quick, fit, paper, dense")
  return c
