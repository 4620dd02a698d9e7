"""Runs over several processes (`scaling.engine.distributed`): 2 real processes x 2 CPU devices on loopback (gloo)
equal a 1-process run on 4 devices bitwise; a killed process fails the job within the heartbeat timeout and the same
command resumes; bad process settings are clear errors before anything is written."""

import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import configs.msp as msp_configs
from scaling.engine import distributed
from scaling.engine import io as wd
from scaling.quanta import msp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HEARTBEAT_S = 5
STEPS, CKPT = 500, 2  # :tiny's 200 steps end before a kill can land; log every 50 steps, checkpoint every 100


def _ports() -> int:
  """A port p with p and p + 1 free (the coordinator and the pre-flight check)."""
  for _ in range(50):
    with socket.socket() as s:
      s.bind(("127.0.0.1", 0))
      p = s.getsockname()[1]
    try:
      with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", p))
        b.bind(("127.0.0.1", p + 1))
      return p
    except OSError:
      continue
  raise RuntimeError("no free port pair")


def _launch(workdir, port, pid, n=2, steps=STEPS, timeout_s=60, log=None):
  cmd = [sys.executable, "-m", "launch.msp", "--config=configs/msp.py:tiny", f"--config.train.steps={steps}",
         f"--config.train.checkpoint_every={CKPT}",
         f"--workdir={workdir}", f"--coordinator=127.0.0.1:{port}", f"--num_processes={n}", f"--process_id={pid}",
         f"--heartbeat_timeout_s={HEARTBEAT_S}", f"--distributed_timeout_s={timeout_s}"]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "PYTHONPATH": ROOT}
  out = open(log, "w") if log else subprocess.PIPE  # pylint: disable=consider-using-with
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)


def test_two_processes_equal_one_and_a_kill_resumes(tmp_path):
  work = str(tmp_path / "wd")
  port = _ports()
  logs = [str(tmp_path / f"p{i}.log") for i in range(2)]
  t0 = time.time()
  procs = [_launch(work, port, i, log=logs[i]) for i in range(2)]
  ckpt = os.path.join(work, "checkpoints", "program")
  deadline = time.time() + 120
  while not (os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt))):
    assert time.time() < deadline and procs[0].poll() is None, open(logs[0]).read()[-3000:]
    time.sleep(0.05)
  print(f"first checkpoint after {time.time() - t0:.1f} s")
  procs[1].kill()
  t_kill = time.time()
  rc0 = procs[0].wait(timeout=HEARTBEAT_S + 60)  # no hang: the coordination service stops it after the heartbeat
  waited = time.time() - t_kill
  print(f"process 0 exited {waited:.1f} s after process 1 was killed (heartbeat {HEARTBEAT_S} s), rc {rc0}")
  assert rc0 != 0, "process 0 finished although process 1 was killed mid-run (the kill came too late?)"
  procs[1].wait()
  assert not wd.load_npz(os.path.join(work, "points", "w8_Donline.npz"))["complete"]

  port = _ports()  # the same command again: it resumes
  procs = [_launch(work, port, i, log=logs[i]) for i in range(2)]
  for i, p in enumerate(procs):
    assert p.wait(timeout=300) == 0, open(logs[i]).read()[-3000:]
  assert "resumed from step" in open(logs[0]).read()
  print(f"resumed run done {time.time() - t0:.1f} s after the start")

  ref = str(tmp_path / "ref")  # one process on this test process's 4 devices (tests/conftest.py)
  cfg = msp_configs.get_config("tiny")
  cfg.train.steps, cfg.train.checkpoint_every = STEPS, CKPT
  msp.run(cfg, ref)
  print(f"reference run done {time.time() - t0:.1f} s after the start")
  assert open(os.path.join(work, wd.CONFIG)).read() == open(os.path.join(ref, wd.CONFIG)).read()
  got, want = wd.load_workdir(work), wd.load_workdir(ref)
  assert set(got.arrays) == set(want.arrays)
  for k, a in want.arrays.items():  # same global devices and shapes: the same executables, so bitwise
    np.testing.assert_array_equal(got.arrays[k], a, err_msg=f"{k}: 2 processes x 2 devices != 1 process x 4")
  lines = wd.read_metrics(work)
  assert len(lines) == len(wd.read_metrics(ref)), "metrics.jsonl: a step logged twice or lost across the resume"


def test_bad_process_settings_are_clear_errors(tmp_path):
  work = str(tmp_path / "wd")
  port = _ports()
  alone = _launch(work, port, 1, timeout_s=2)  # process 0 never comes
  out = alone.communicate(timeout=60)[0]
  assert alone.returncode != 0 and f"127.0.0.1:{port}" in out and "did not answer within 2 s" in out, out[-2000:]
  port = _ports()
  p0, p1 = _launch(work, port, 0, timeout_s=20), _launch(work, port, 1, n=3, timeout_s=20)
  out0, out1 = p0.communicate(timeout=60)[0], p1.communicate(timeout=60)[0]
  for p, out in ((p0, out0), (p1, out1)):
    assert p.returncode != 0 and "says there are 3 processes; process 0 has --num_processes=2" in out, out[-2000:]
  assert not os.path.exists(work), "a failed start wrote to the workdir"


def test_process_settings_from_flags_and_slurm():
  assert distributed.resolve("", 1, 0, env={}) is None
  assert distributed.resolve("h:1", 2, 1, env={}) == distributed.Processes("h:1", 2, 1)
  with pytest.raises(ValueError, match="--process_id"):
    distributed.resolve("h:1", 2, 2, env={})
  with pytest.raises(ValueError, match="HOST:PORT"):
    distributed.resolve("h", 2, 0, env={})
  step = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "4", "SLURM_PROCID": "3", "SLURM_STEP_NODELIST": "gpu[007-8],cpu1"}
  assert distributed.resolve("", 1, 0, env=step) == distributed.Processes("gpu007:24242", 4, 3)
  assert distributed.resolve("", 1, 0, env={**step, "SLURM_NTASKS": "1"}) is None  # one array task: one process
  partial = {k: v for k, v in step.items() if k != "SLURM_PROCID"}
  with pytest.raises(ValueError, match="SLURM_PROCID"):  # jax #30073: variables only partly set
    distributed.resolve("", 1, 0, env=partial)
  assert distributed.first_host("node1") == "node1" and distributed.first_host("a[1-3,5],b") == "a1"
