"""Test setup: 4 simulated CPU devices (multi-device sharding is tested on CPU), strict rank promotion."""

import os
import shutil
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
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


# Native crashes. `.ci/run` reruns a test whose xdist worker died of a native fault (pytest-rerunfailures; never a
# failing assertion). Each worker writes Python's fault dump (every thread's stack) to a file, and the controller
# prints the crashing thread's stack at the very end of the session, where a CI log's tail shows it.
@pytest.hookimpl(trylast=True)  # after pytest's own faulthandler set-up, which writes to stderr
def pytest_configure(config):
  worker = os.environ.get("PYTEST_XDIST_WORKER")
  if not worker:  # the controller: one fresh folder per session, inherited by the workers it spawns
    os.environ["SCALING_CRASH_DIR"] = tempfile.mkdtemp(prefix="scaling-crash-")
  elif os.environ.get("SCALING_CRASH_DIR"):
    import faulthandler  # pylint: disable=g-import-not-at-top
    path = os.path.join(os.environ["SCALING_CRASH_DIR"], f"{worker}-{os.getpid()}.txt")
    config.scaling_crash_file = open(path, "w")  # kept open for the worker's life  pylint: disable=consider-using-with
    faulthandler.enable(file=config.scaling_crash_file, all_threads=True)


def _crashing_thread(text: str) -> list[str]:
  """The fatal-error line and the stack of the thread that faulted (the rest of the dump is other threads)."""
  lines = text.splitlines()
  head = [l for l in lines if l.startswith("Fatal Python error")]
  start = next((i for i, l in enumerate(lines) if l.startswith("Current thread")), None)
  if start is None:
    return head + lines[:40]
  end = next((i for i in range(start + 1, len(lines)) if not lines[i].strip()), len(lines))
  return head + lines[start:min(end, start + 16)]  # the innermost frames


@pytest.hookimpl(trylast=True)  # the very end of the log
def pytest_terminal_summary(terminalreporter):
  folder = os.environ.get("SCALING_CRASH_DIR", "")
  if os.environ.get("PYTEST_XDIST_WORKER") or not os.path.isdir(folder):
    return
  for name in sorted(os.listdir(folder)):
    with open(os.path.join(folder, name)) as f:
      text = f.read()
    if text.strip():
      terminalreporter.write_sep("=", f"native crash in xdist worker {name[:-4]}")
      terminalreporter.write_line("\n".join(_crashing_thread(text)))
  shutil.rmtree(folder, ignore_errors=True)
