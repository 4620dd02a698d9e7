r"""One-pass training of 1-D ResNets of several widths on MNIST-1D (even vs odd digit) through the sweep engine: the
dynamical-model paper's Fig 1(a, b) on a real network. Logic: `scaling.dynamics.vision`.

  python -m launch.vision --config=configs/vision.py:quick --workdir=runs/vision_quick

Variants (`--config=configs/vision.py:<variant>[,key=value...]`):

quick   (to be measured)
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


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  return C.variant(arg, "quick", {"quick": quick})
