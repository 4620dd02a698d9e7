"""Test setup: 4 simulated CPU devices (multi-device sharding is tested on CPU), strict rank promotion."""

import os
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # pytest -n 2 on 2 cores: numpy's eigh must not oversubscribe
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # for `configs`

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_numpy_rank_promotion", "raise")
