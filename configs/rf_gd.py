r"""Discrete gradient descent of the power-law random-feature model (spec dmft.md §1) through the sweep engine:
one compiled program per (N, P) point, seeds vmapped, lax.scan chunks, orbax checkpoints, bitwise resume, then the
GD losses at t = η·step against the DMFT gradient flow (and the exact flow on the same draws).

  python -m launch.rf_gd --config=configs/rf_gd.py:quick --workdir=runs/rf_gd_quick

quick   M=300, (N, P) = (32, 64), (64, ∞), 8 seeds, η=0.05, 2000 steps (t up to 100).
a2      spec §6 A2: M=2000, (64, 256) and (256, 64), 20 seeds, η=0.1, 1000 steps (t up to 100).
"""

import ml_collections

from scaling.dynamics.rf_gd import rf_gd_config


def get_config(arg: str = "quick") -> ml_collections.ConfigDict:
  c = rf_gd_config()
  if arg == "quick":
    c.task.M = 300
    c.train.update(eta=0.05, steps=2000, log_every=20)
    c.sweep.update(points=((32, 64), (64, 0)), seeds=8)
  elif arg == "a2":
    pass
  else:
    raise ValueError(f"unknown variant {arg!r}; one of quick, a2")
  return c
