"""Test setup: 4 simulated CPU devices (multi-device sharding is tested on CPU), strict rank promotion."""

import os
import sys
import tempfile

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # pytest -n 2 on 2 cores: numpy's eigh must not oversubscribe
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
# JAX's persistent compilation cache, shared by the xdist workers, the launcher subprocesses and the notebook kernels
# (they inherit the environment): the same tiny programs are compiled by many tests (environment.md §7). CI points it
# at a fresh folder per run (.ci/run). The default folder is keyed by this CPU's model and feature flags and by the
# jaxlib version, so an executable compiled on one x86-64 CPU is never loaded on another (a /tmp that outlives a
# machine change would otherwise hand AVX-512 code to a CPU without it).


def _machine_tag() -> str:
  import hashlib  # pylint: disable=g-import-not-at-top
  import importlib.metadata  # pylint: disable=g-import-not-at-top
  try:
    with open("/proc/cpuinfo") as f:
      cpu = "".join(sorted({l for l in f if l.startswith(("model name", "flags"))}))
  except OSError:
    import platform  # pylint: disable=g-import-not-at-top
    cpu = platform.processor() + platform.machine()
  return hashlib.sha256((cpu + importlib.metadata.version("jaxlib")).encode()).hexdigest()[:12]


os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"scaling-jax-cache-{os.getuid()}-{_machine_tag()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)  # for `configs`

import jax  # noqa: E402  (after XLA_FLAGS)

jax.config.update("jax_numpy_rank_promotion", "raise")
