"""Fan-out of a sweep over tasks (scaling.engine.fanout) with submitit's local executor, through the launcher.

One fan-out of configs/msp.py:tiny in 2 tasks runs beside one single-process run of the same config (both on the 4
simulated devices of conftest: the launcher's task processes inherit XLA_FLAGS). Its first attempts fail through the
test hook (`SCALING_FANOUT_TEST_FAULT`): task0 is SIGKILLed after its first checkpoint (its process ends without a
result, as a cancelled job), task1 raises at start; both are resubmitted, task0 resumes from its checkpoint. The merged
workdir must equal the single run's bitwise: XLA on CPU is deterministic, and a task compiles the same buckets with
the same members per device as the single run (`programs.units`), so no tolerance applies.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from configs import cluster as cluster_configs
from configs import msp as msp_configs
from scaling.engine import fanout, io, programs
from scaling.quanta import msp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = "scaling.quanta.msp"
TIMING = ("time", "steps_per_s")  # metrics fields that differ between any two runs


def _launch(*args, env_extra=None, out=None):
  env = {**os.environ, "PYTHONPATH": ROOT, **(env_extra or {})}
  cmd = [sys.executable, "-m", "launch.fanout", "--config=configs/msp.py:tiny", *args]
  if out is None:
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out[0], stderr=out[1], text=True)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """(single-run workdir, fan-out workdir, the launcher's (returncode, stdout, stderr)); both run at once."""
  base = tmp_path_factory.mktemp("fanout")
  fan = base / "fan"
  with open(base / "out.txt", "w") as out, open(base / "err.txt", "w") as err:
    proc = _launch(f"--workdir={fan}", "--cluster=configs/cluster.py:local,tasks=2,poll_s=0.5",
                   env_extra={fanout.FAULT_ENV: "task0:kill,task1:raise"}, out=(out, err))
    try:
      msp.run(msp_configs.get_config("tiny"), str(base / "single"))
      proc.wait(timeout=600)
    finally:
      if proc.poll() is None:
        proc.kill()
  return base / "single", fan, (proc.returncode, (base / "out.txt").read_text(), (base / "err.txt").read_text())


def _assert_same_curves(a, b):
  a, b = io.load_workdir(str(a)), io.load_workdir(str(b))
  assert a.arrays.keys() == b.arrays.keys() and a.axes == b.axes
  for k in b.arrays:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and a[k].tobytes() == b[k].tobytes(), k
  assert a.coords.keys() == b.coords.keys()
  for k in b.coords:
    np.testing.assert_array_equal(a.coords[k], b.coords[k], err_msg=k)


def _metrics(workdir):
  recs = [{k: v for k, v in r.items() if k not in TIMING and not k.endswith("_per_s")}
          for r in io.read_metrics(workdir)]
  return sorted(recs, key=lambda r: (r["point"], r["step"]))


def _log(fan, task, attempt):
  ids = json.loads((fan / "fanout" / "jobs.json").read_text())[f"task{task}"]
  return (fan / "fanout" / "submitit" / f"{ids[attempt]}_0_log.err").read_text()


def test_fanout_with_failures_equals_the_single_run_bitwise(runs):
  single, fan, (rc, out, err) = runs
  assert rc == 0, err[-4000:]
  assert "2 task(s), tries task0: 2, task1: 2" in out, out
  assert err.count("resubmitted as job") == 2 and "complete, skipping" in err
  assert "killing task0 after its first checkpoint" in _log(fan, 0, 0)
  assert "resumed from step" in _log(fan, 0, 1), "the killed task resumes from its checkpoint"
  assert "injected failure of task1" in _log(fan, 1, 0)
  manifest = json.loads((fan / "fanout" / "manifest.json").read_text())
  assert [tuple(t) for t in manifest["tasks"]] == fanout.plan_tasks(msp.EXPERIMENT, msp_configs.get_config("tiny"), 2)
  assert (fan / "config.json").read_bytes() == (single / "config.json").read_bytes()
  _assert_same_curves(fan, single)
  assert _metrics(fan) == _metrics(single), "the merged metrics lines are the single run's (timing aside)"
  assert sorted(os.listdir(fan / "points")) == sorted(os.listdir(single / "points"))


def test_plan_tasks_deals_whole_units():
  cfg = msp_configs.get_config("tiny")
  plan = msp.plan(cfg)
  units = {frozenset(p.name for p in u.points) for u in programs.units(msp.EXPERIMENT, plan)}
  assert len(units) == 2, "tiny: widths 8 and 16 share a bucket, 64 has its own"
  for n in (0, 1, 2, 9):
    tasks = fanout.plan_tasks(msp.EXPERIMENT, cfg, n)
    assert len(tasks) == (len(units) if n in (0, 9) else n)
    names = [x for t in tasks for x in t]
    assert sorted(names) == sorted(p.name for p in plan.points), "every point in exactly one task"
    assert all(u <= set(t) or not u & set(t) for u in units for t in tasks), "units are never cut"


def test_merge_is_idempotent_refuses_other_configs_and_names_missing_tasks(runs, tmp_path):
  single, fan, _ = runs
  cfg = msp_configs.get_config("tiny")
  before = {n: (fan / n).read_bytes() for n in ("config.json", "metrics.jsonl")}
  r = _launch(f"--workdir={fan}", "--merge_only")
  assert r.returncode == 0 and "complete, skipping" in r.stderr and "merged into" in r.stdout, r.stderr[-3000:]
  assert {n: (fan / n).read_bytes() for n in before} == before
  _assert_same_curves(fan, single)

  other = tmp_path / "other"  # the same fan-out, to be damaged
  shutil.copytree(fan / "fanout", other / "fanout", ignore=shutil.ignore_patterns("submitit"))
  tasks = json.loads((other / "fanout" / "manifest.json").read_text())["tasks"]
  task1 = other / "fanout" / "tasks" / "task1"
  stored = (task1 / "config.json").read_text()
  edited = json.loads(stored)
  edited["train"]["steps"] = 400
  (task1 / "config.json").write_text(json.dumps(edited))
  with pytest.raises(ValueError, match=r"task1: .*train\.steps: 400 -> 200"):
    fanout.merge(msp.EXPERIMENT, cfg, str(other))
  (task1 / "config.json").write_text(stored)
  (task1 / "points" / f"{tasks[1][-1]}.npz").unlink()
  shutil.rmtree(other / "fanout" / "tasks" / "task0")
  with pytest.raises(ValueError, match=r"2 of 2 task\(s\) missing or incomplete: task0 \(" + ", ".join(tasks[0])):
    fanout.merge(msp.EXPERIMENT, cfg, str(other))
  assert os.listdir(other) == ["fanout"], "a refused merge writes nothing"
  with pytest.raises(ValueError, match=r"another sweep.*seed: 0 -> 1"):
    fanout.merge(msp.EXPERIMENT, msp_configs.get_config("tiny,seed=1"), str(fan))


def _snapshot(path):
  return {os.path.relpath(os.path.join(d, f), path): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(path) for f in files}


def test_bad_input_is_refused_before_anything_is_written(runs, tmp_path):
  _, fan, _ = runs
  cfg, local = msp_configs.get_config("tiny"), cluster_configs.get_config("local").to_dict()
  snap = _snapshot(fan)
  with pytest.raises(ValueError, match=r"holds the fan-out of another sweep.*seed: 0 -> 1"):
    fanout.submit(MODULE, msp_configs.get_config("tiny,seed=1"), str(fan), local)
  with pytest.raises(ValueError, match=r"split into 2 task\(s\), not 1"):
    fanout.submit(MODULE, cfg, str(fan), {**local, "tasks": 1})
  assert _snapshot(fan) == snap

  new = tmp_path / "new"
  for bad, match in [({"executor": "nope"}, r"executor must be one of \('local', 'slurm', 'auto'\)"),
                     ({"tasks": -1}, "tasks must be an integer >= 0"), ({"poll_s": 0}, "poll_s must be"),
                     ({"additional": ["qos"]}, "additional must be a dict"), ({"gpus": 1}, r"unknown config keys")]:
    with pytest.raises(ValueError, match=match):
      fanout.submit(MODULE, cfg, str(new), {**local, **bad})
  with pytest.raises(ValueError, match=r"train\.steps=201 must be a multiple"):
    fanout.submit(MODULE, msp_configs.get_config("tiny,steps=201"), str(new), local)
  (tmp_path / "stray" / "fanout").mkdir(parents=True)
  with pytest.raises(ValueError, match="has no manifest.json"):
    fanout.submit(MODULE, cfg, str(tmp_path / "stray"), local)
  r = subprocess.run([sys.executable, "-m", "launch.fanout", "--config=configs/dmft.py:quick", f"--workdir={new}",
                      "--cluster=configs/cluster.py:local"], cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT},
                     capture_output=True, text=True, timeout=300)
  assert r.returncode != 0 and "no engine experiment for configs/dmft.py" in r.stderr, r.stderr[-2000:]
  assert not new.exists()


def test_a_requeued_task_is_the_same_call():
  task = fanout.Task(MODULE, msp.plan(msp_configs.get_config("tiny")).config)
  again = task.checkpoint(1, ("w16_Donline",), "/wd/fanout/tasks/task1")
  assert again.function is task and again.args == (1, ("w16_Donline",), "/wd/fanout/tasks/task1") and not again.kwargs


def test_executor_parameters_map_the_cluster_config():
  c = fanout.check_cluster(cluster_configs.get_config(
      "slurm,partition=gpu,additional={'qos':'high'},setup=('module load cuda',),time_min=30"))
  p = fanout.executor_parameters(c, "fanout-msp")
  assert p["slurm_partition"] == "gpu" and p["timeout_min"] == 30 and p["gpus_per_node"] == 1
  assert p["cpus_per_task"] == 4 and p["mem_gb"] == 16.0 and p["slurm_additional_parameters"] == {"qos": "high"}
  assert p["slurm_setup"][0] == "module load cuda" and p["slurm_setup"][-1].startswith(f"export PYTHONPATH={ROOT}")
  local = fanout.executor_parameters(fanout.check_cluster(cluster_configs.get_config("local")), "x")
  assert "slurm_partition" not in local and "gpus_per_node" not in local and "mem_gb" not in local
