"""A real single-node SLURM cluster for tests (scripts/slurm_local.sh); skipped, with the reason printed, when the
packages cannot be installed. Use in a test module:

  @pytest.fixture(scope="module")
  def slurm_cluster(tmp_path_factory):
    yield from slurm.cluster_fixture(tmp_path_factory)
"""

import contextlib
import fcntl
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

import pytest

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
SCRIPT = os.path.join(ROOT, "scripts", "slurm_local.sh")
PARTITION = "local"  # the cluster's only (and default) partition


def _script(*args: str, timeout: float) -> subprocess.CompletedProcess:
  try:
    return subprocess.run(["bash", SCRIPT, *args], capture_output=True, text=True, timeout=timeout, check=False)
  except subprocess.TimeoutExpired as e:
    return subprocess.CompletedProcess(e.cmd, 124, "", f"slurm_local: {' '.join(args[:1])} timed out after {timeout} s")


def _reason(p: subprocess.CompletedProcess) -> str:
  lines = (p.stderr.strip() or p.stdout.strip() or f"exit status {p.returncode}").splitlines()
  return lines[-1]


@contextlib.contextmanager
def _one_cluster_at_a_time(timeout: float = 900) -> Iterator[None]:
  """Holds an OS lock while a cluster runs: its daemons use fixed ports, and two test modules (xdist workers) may
  each want one."""
  with open(os.path.join(tempfile.gettempdir(), f"scaling-slurm-local-{os.getuid()}.lock"), "w") as f:
    deadline = time.monotonic() + timeout
    while True:
      try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except BlockingIOError:
        if time.monotonic() > deadline:
          pytest.fail(f"another test's local SLURM cluster ran for over {timeout} s", pytrace=False)
        time.sleep(1)
    yield  # the lock dies with the file (or the process)


@contextlib.contextmanager
def local_cluster(tmp_dir: str | os.PathLike) -> Iterator[dict[str, str]]:
  """Installs (if needed) and starts the cluster under `tmp_dir`; yields the environment additions ({"SLURM_CONF"})
  and stops the cluster at exit. Skips the test, printing why, when slurm cannot be installed."""
  with _one_cluster_at_a_time():
    yield from _local_cluster(tmp_dir)


def _local_cluster(tmp_dir: str | os.PathLike) -> Iterator[dict[str, str]]:
  p = _script("install", timeout=300)
  if p.returncode != 0:
    reason = f"no local SLURM cluster: {_reason(p)}"
    print(reason)
    print(reason, file=sys.stderr)
    pytest.skip(reason)
  tmp_dir = os.fspath(tmp_dir)
  try:
    p = _script("start", tmp_dir, timeout=60)
    last = p.stdout.strip().splitlines()[-1:] if p.returncode == 0 else []
    if not last or not last[0].startswith("export SLURM_CONF="):
      pytest.fail(f"scripts/slurm_local.sh start failed ({p.returncode}): {p.stdout}\n{p.stderr}", pytrace=False)
    yield {"SLURM_CONF": last[0].split("=", 1)[1]}
  finally:
    _script("stop", tmp_dir, timeout=60)


def cluster_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
  """Body of a module- or session-scoped fixture: the cluster's environment, also set in os.environ meanwhile."""
  with local_cluster(tmp_path_factory.mktemp("slurm")) as env, pytest.MonkeyPatch.context() as mp:
    for key, value in env.items():
      mp.setenv(key, value)
    yield env

