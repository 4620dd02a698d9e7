"""Smoke test of the local SLURM cluster (scripts/slurm_local.sh): job arrays, scancel of one task, submitit."""

import os
import re
import subprocess
import sys
import time

import pytest

import slurm


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
  yield from slurm.cluster_fixture(tmp_path_factory)


def _run(*cmd: str) -> str:
  return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout


def _wait(predicate, timeout: float, what: str) -> None:
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
    time.sleep(0.2)


def _task_states(job: str) -> dict[int, str]:
  """Array task id -> JobState, from `scontrol show job` (no accounting storage, so no sacct)."""
  out = _run("scontrol", "show", "job", "-o", job)
  return {int(m[1]): m[2] for m in re.finditer(r"ArrayTaskId=(\d+) .*?JobState=(\w+)", out)}


def test_job_array_and_scancel(slurm_cluster, tmp_path):
  # An array of 3 tasks, each writing its file; --wait returns when all are done.
  out = tmp_path / "array"
  out.mkdir()
  _run("sbatch", "--array=0-2", "--wait", "-o", f"{out}/%A_%a.log",
       "--wrap", f"echo $SLURM_ARRAY_TASK_ID > {out}/task_$SLURM_ARRAY_TASK_ID.txt")
  assert sorted(p.name for p in out.glob("task_*.txt")) == ["task_0.txt", "task_1.txt", "task_2.txt"]
  assert (out / "task_2.txt").read_text().strip() == "2"

  # Cancel a running task of an array of sleepers: the others still run to completion.
  out = tmp_path / "cancel"
  out.mkdir()
  job = _run("sbatch", "--parsable", "--array=0-2", "-o", f"{out}/%A_%a.log", "--wrap",
             f"i=$SLURM_ARRAY_TASK_ID; touch {out}/start_$i; sleep 4; touch {out}/done_$i").strip()
  _wait(lambda: _run("squeue", "-h", "-t", "R", "-j", f"{job}_1", "-o", "%i").strip(), 20, "task 1 to run")
  _wait(lambda: (out / "start_1").exists(), 10, "task 1 to start its script")
  _run("scancel", f"{job}_1")
  _wait(lambda: not _run("squeue", "-h", "-j", job, "-o", "%i").strip(), 30, "the array to finish")
  assert {p.name for p in out.glob("done_*")} == {"done_0", "done_2"}
  assert _task_states(job) == {0: "COMPLETED", 1: "CANCELLED", 2: "COMPLETED"}


def test_submitit_map_array(slurm_cluster, tmp_path):
  submitit = pytest.importorskip("submitit")
  executor = submitit.AutoExecutor(folder=tmp_path / "submitit", cluster="slurm", slurm_python=sys.executable)
  executor.update_parameters(slurm_partition=slurm.PARTITION, timeout_min=2, cpus_per_task=1,
                             slurm_setup=[f"export PYTHONPATH={slurm.TESTS}:{slurm.ROOT}"])
  jobs = executor.map_array(slurm.job_probe, [1, 2])
  _wait(lambda: all(j.done() for j in jobs), 45, "the submitit jobs")
  results = [j.result() for j in jobs]
  assert [r["square"] for r in results] == [1, 4]
  assert {r["task"] for r in results} == {"0", "1"}
  assert all(os.path.samefile(r["python"], sys.executable) for r in results)
