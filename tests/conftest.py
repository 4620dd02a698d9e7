"""Test setup: 4 simulated CPU devices (multi-device sharding is tested on CPU), strict rank promotion."""

import os
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # pytest -n 2 on 2 cores: numpy's eigh must not oversubscribe
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
# JAX's persistent compilation cache, shared by the xdist workers, the launcher subprocesses and the notebook kernels
# (they inherit the environment): the same tiny programs are compiled by many tests. Content-addressed, so sharing
# it between runs is safe; environment.md §7 measured it on CPU.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(tempfile.gettempdir(), f"scaling-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # for `configs`

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_numpy_rank_promotion", "raise")
