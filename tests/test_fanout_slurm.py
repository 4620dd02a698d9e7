"""The fan-out on a real single-node SLURM cluster (scripts/slurm_local.sh; skipped, printing why, when it cannot
start): options SLURM rejects are refused before anything is written (`sbatch --test-only`); the tiny sweep runs as
one job array of 2 tasks; one array task, caught mid-run after its first checkpoint (the test hook pauses it there),
is cancelled with scancel; the launcher sees it CANCELLED without a result (squeue: the cluster has no accounting, so
no sacct), resubmits it, the new job resumes from the checkpoint, and the merged workdir equals a single-process run
of the same config bitwise (both on the 4 simulated devices of conftest; the jobs inherit XLA_FLAGS through sbatch).
"""

import json
import os
import subprocess
import sys
import time

import pytest

import slurm
from configs import cluster as cluster_configs
from configs import msp as msp_configs
from scaling.engine import fanout
from scaling.quanta import msp
from test_fanout import ROOT, MODULE, _assert_same_curves, _launch, _log

ARG = "slurm,partition=local,gpus_per_task=0,cpus_per_task=1,mem_gb=0.0,time_min=10,tasks=2"  # 1 CPU per task


@pytest.fixture(scope="module")
def slurm_cluster(tmp_path_factory):
  yield from slurm.cluster_fixture(tmp_path_factory)


def test_options_slurm_rejects_are_refused_before_anything_is_written(slurm_cluster, tmp_path):
  c, wd = cluster_configs.get_config(ARG).to_dict(), tmp_path / "wd"
  for bad, match in [({"partition": "nope"}, "invalid partition specified: nope"),
                     ({"gpus_per_task": 1}, "gres"), ({"additional": {"nodes": 2}}, "")]:
    with pytest.raises(ValueError, match="SLURM rejects the cluster options.*" + match):
      fanout.submit(MODULE, msp_configs.get_config("tiny"), str(wd), {**c, **bad})
  assert not wd.exists()


def _wait(predicate, timeout, what):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
    time.sleep(0.1)


def test_a_cancelled_array_task_is_resubmitted_and_the_merge_equals_the_single_run(slurm_cluster, tmp_path):
  t0 = time.monotonic()
  fan, ckpt = tmp_path / "fan", tmp_path / "fan" / "fanout" / "tasks" / "task1" / "checkpoints" / "program"
  with open(tmp_path / "out.txt", "w") as out, open(tmp_path / "err.txt", "w") as err:
    proc = _launch(f"--workdir={fan}", f"--cluster=configs/cluster.py:{ARG},poll_s=1.0",
                   env_extra={fanout.FAULT_ENV: "task1:pause"}, out=(out, err))
    try:
      _wait(lambda: ckpt.is_dir() and any(s.isdigit() for s in os.listdir(ckpt)), 300, "task1's first checkpoint")
      first = json.loads((fan / "fanout" / "jobs.json").read_text())["task1"][0]
      assert first.endswith("_1"), f"task1 runs as array task 1 of one array: {first}"
      subprocess.run(["scancel", first], check=True, timeout=30)
      msp.run(msp_configs.get_config("tiny"), str(tmp_path / "single"))  # meanwhile
      proc.wait(timeout=600)
    finally:
      if proc.poll() is None:
        proc.kill()
  out, err = (tmp_path / "out.txt").read_text(), (tmp_path / "err.txt").read_text()
  assert proc.returncode == 0, err[-4000:]
  assert "2 task(s), tries task0: 1, task1: 2" in out, out
  assert f"task1 failed (job {first}: SLURM state CANCELLED without a result)" in err
  assert "resumed from step" in _log(fan, 1, 1), "the resubmitted task resumes from its checkpoint"
  script = (fan / "fanout" / "submitit" / f"{first.split('_')[0]}_submission.sh").read_text()
  assert "#SBATCH --array=0-1%2" in script and "#SBATCH --partition=local" in script
  assert f"{sys.executable} -u -m submitit" in script and f"export PYTHONPATH={ROOT}" in script
  assert (fan / "config.json").read_bytes() == (tmp_path / "single" / "config.json").read_bytes()
  _assert_same_curves(fan, tmp_path / "single")
  print(f"SLURM fan-out with one cancelled task: {time.monotonic() - t0:.1f} s")
