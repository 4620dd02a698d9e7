"""Cluster fan-out: a sweep split into tasks of whole units (`programs.units`), submitted as one job array through
submitit (SLURM, or local processes), followed, retried, and merged into one workdir equal to a single run's.

Layout of the sweep's workdir::

  fanout/manifest.json       the module, the sweep's config, the tasks (point names) and the cluster settings
  fanout/jobs.json           the job ids of every task's attempts (for squeue / scancel)
  fanout/submitit/           submitit's pickles and logs (<job>_0_log.out / .err)
  fanout/tasks/task<i>/      each task's own workdir: the sweep's config.json, its points only
  config.json, points/, metrics.jsonl, curves.npz   written by `merge` as a single run writes them

A task is a single process (`jax.distributed` is never initialised): `experiment.run(..., only=names)` on the
devices its job gets. Its arrays equal the single run's bitwise when it shards the members the same way: the same
number of devices (XLA's kernels depend on the members per device). A task that fails, is cancelled or dies is
resubmitted as a job of its own (at most `max_retries` times); it resumes from its workdir's checkpoints. A task
whose job is preempted or reaches its time limit is requeued by submitit (`Task` is `Checkpointable`).

Test hook: the environment variable `SCALING_FANOUT_TEST_FAULT` = "task<i>:<fault>,..." makes the first attempt of
task i fail: `raise` raises at start, `kill` kills itself (SIGKILL) once its first checkpoint is written, `pause`
stops itself (SIGSTOP) then, and again whenever continued, until killed (a test's `scancel` of a task mid-run).
"""

from __future__ import annotations

import importlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from typing import Any, Sequence

import ml_collections
import numpy as np
import submitit
from absl import logging

from scaling.engine import config as config_lib
from scaling.engine import experiment as E
from scaling.engine import follow
from scaling.engine import io
from scaling.engine import programs

FANOUT, MANIFEST, JOBS, TASKS = "fanout", "manifest.json", "jobs.json", "tasks"
EXECUTORS = ("local", "slurm", "auto")
FAULT_ENV = "SCALING_FANOUT_TEST_FAULT"


def default_cluster() -> ml_collections.ConfigDict:
  """The cluster side of a fan-out (not part of the experiment's config); configs/cluster.py derives from it."""
  return ml_collections.ConfigDict(dict(
      executor="local",  # "local" (processes here), "slurm" (sbatch), "auto" (slurm if srun exists, else local)
      tasks=0,  # number of tasks (array jobs); 0 = one per unit (a point, or a bucket of a one-program sweep)
      partition="",  # SLURM partition; "" = the cluster's default
      time_min=60,  # time limit per task in minutes (local processes are killed past it too)
      gpus_per_task=0,
      cpus_per_task=1,
      mem_gb=0.0,  # 0 = the partition's default
      array_parallelism=256,  # at most this many array tasks run at once
      max_retries=2,  # resubmissions per task after a failure, a cancellation or a dead job
      poll_s=10.0,  # seconds between status checks (and progress lines)
      additional={},  # extra sbatch options, e.g. {"qos": "high", "account": "lab"}
      setup=(),  # shell lines run before each task, e.g. ("module load cuda/12.4",)
  ))


def check_cluster(cluster: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """The cluster settings as a plain dict; ValueError naming the field."""
  try:
    return _check_cluster(cluster.to_dict() if isinstance(cluster, ml_collections.ConfigDict) else dict(cluster))
  except ValueError as e:
    raise ValueError(f"cluster settings: {e}") from None


def _check_cluster(c: dict[str, Any]) -> dict[str, Any]:
  additional = c.pop("additional", {})
  config_lib.checked_dict({**c, "additional": {}}, default_cluster())
  config_lib.choice(c, "executor", EXECUTORS)
  for path, lo in (("tasks", 0), ("time_min", 1), ("gpus_per_task", 0), ("cpus_per_task", 1),
                   ("array_parallelism", 1), ("max_retries", 0)):
    config_lib.integer(c, path, lo)
  config_lib.number(c, "mem_gb", 0)
  config_lib.number(c, "poll_s", 0, lo_open=True)
  if not isinstance(c["partition"], str):
    raise ValueError(f"partition must be a string, got {c['partition']!r}")
  if not isinstance(additional, dict) or not all(isinstance(k, str) for k in additional):
    raise ValueError(f"additional must be a dict of sbatch options, got {additional!r}")
  setup = config_lib.as_tuple(c["setup"]) if c["setup"] else ()
  if not all(isinstance(s, str) for s in setup):
    raise ValueError(f"setup must be shell lines (strings), got {c['setup']!r}")
  return {**c, "additional": dict(additional), "setup": setup}


def plan_tasks(exp: E.Experiment, config: ml_collections.ConfigDict | dict[str, Any],
               n_tasks: int) -> list[tuple[str, ...]]:
  """The point names of each task: whole units balanced by cost; `n_tasks=0`: one task per unit."""
  plan = E.check(exp, config)
  units = programs.units(exp, plan)
  return programs.assign(exp, plan, units, n_tasks or len(units))


def _task_dir(workdir: str, i: int) -> str:
  return os.path.join(workdir, FANOUT, TASKS, f"task{i}")


def complete(task_dir: str, names: Sequence[str]) -> bool:
  """Whether every point of a task has its final `points/<name>.npz`."""
  for n in names:
    path = os.path.join(task_dir, "points", n + ".npz")
    try:
      with np.load(path) as z:
        if not bool(z["complete"]):
          return False
    except (OSError, KeyError, ValueError):
      return False
  return True


class Task(submitit.helpers.Checkpointable):
  """One array task: `experiment.run(module.EXPERIMENT, config, workdir, only=names)` in this process. On preemption
  or a time limit submitit calls `checkpoint`, which resubmits the same call: it resumes from the workdir."""

  def __init__(self, module: str, config: dict[str, Any]):
    self.module, self.config = module, config

  def __call__(self, index: int, names: tuple[str, ...], workdir: str) -> str:
    import jax  # pylint: disable=import-outside-toplevel
    logging.set_verbosity(logging.INFO)
    jax.config.update("jax_transfer_guard", "disallow")  # as the single-run launcher
    _inject_fault(index, workdir)
    exp = importlib.import_module(self.module).EXPERIMENT
    logging.info("fan-out task%d: %d point(s) in %s", index, len(names), workdir)
    E.run(exp, self.config, workdir, only=names)
    return f"task{index}: {len(names)} point(s) complete"

  def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
    """The same call again, for submitit to requeue: the task resumes from its workdir's checkpoints."""
    return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


def _inject_fault(index: int, workdir: str) -> None:
  """The test hook (module docstring): acts on the first attempt only (a marker file in the task's workdir)."""
  faults = dict(p.split(":", 1) for p in os.environ.get(FAULT_ENV, "").split(",") if ":" in p)
  kind, marker = faults.get(f"task{index}"), os.path.join(workdir, ".test_fault")
  if kind is None or os.path.exists(marker):
    return
  if kind not in ("raise", "kill", "pause"):
    raise ValueError(f"{FAULT_ENV}: unknown fault {kind!r} for task{index}; one of raise, kill, pause")
  os.makedirs(workdir, exist_ok=True)
  io.save_text(marker, kind)
  if kind == "raise":
    raise RuntimeError(f"{FAULT_ENV}: injected failure of task{index}")

  def saved() -> bool:
    root = os.path.join(workdir, "checkpoints")
    try:
      return any(s.isdigit() for d in os.listdir(root) for s in os.listdir(os.path.join(root, d)))
    except OSError:
      return False

  def kill_after_checkpoint() -> None:
    while not saved():
      time.sleep(0.02)
    logging.warning("%s: %s task%d after its first checkpoint", FAULT_ENV, "pausing" if kind == "pause" else "killing",
                    index)
    while True:  # a paused task stops again whenever continued (scancel sends SIGCONT, SIGTERM, then SIGKILL)
      os.kill(os.getpid(), signal.SIGSTOP if kind == "pause" else signal.SIGKILL)
  threading.Thread(target=kill_after_checkpoint, daemon=True).start()


# -- submission -------------------------------------------------------------------------------------------------------


def executor_parameters(c: dict[str, Any], name: str) -> dict[str, Any]:
  """submitit's `update_parameters` of the cluster settings (shared names, `slurm_*` and `local_*`); the setup lines
  end by putting this checkout first on PYTHONPATH, so jobs run the code that submitted them."""
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  setup = list(c["setup"])
  if os.path.exists(os.path.join(root, "setup.cfg")):  # a source checkout, not an installed package
    setup.append(f"export PYTHONPATH={shlex.quote(root)}${{PYTHONPATH:+:$PYTHONPATH}}")
  p: dict[str, Any] = {"name": name, "timeout_min": c["time_min"], "cpus_per_task": c["cpus_per_task"],
                       "slurm_array_parallelism": c["array_parallelism"], "slurm_setup": setup,
                       "local_setup": setup}
  if c["mem_gb"]:
    p["mem_gb"] = c["mem_gb"]
  if c["gpus_per_task"]:
    p["gpus_per_node"] = c["gpus_per_task"]  # one task per job: its node's GPUs are the task's
  if c["partition"]:
    p["slurm_partition"] = c["partition"]
  if c["additional"]:
    p["slurm_additional_parameters"] = dict(c["additional"])
  return p


def _executor(folder: str, c: dict[str, Any], name: str) -> submitit.AutoExecutor:
  try:
    ex = submitit.AutoExecutor(folder=folder, cluster=None if c["executor"] == "auto" else c["executor"])
    ex.update_parameters(**executor_parameters(c, name))
  except (AssertionError, NameError, RuntimeError, TypeError, ValueError) as e:
    raise ValueError(f"cluster settings rejected by submitit ({c['executor']} executor): {e}") from None
  return ex


def check_slurm(ex: submitit.AutoExecutor, n_tasks: int) -> None:
  """ValueError unless `sbatch --test-only` accepts the array script submitit would submit (nothing is queued)."""
  # pylint: disable=protected-access  (submitit 1.5.4's own script builder, as its map_array uses it)
  from submitit.slurm import slurm as slurm_lib  # pylint: disable=import-outside-toplevel
  inner = ex._executor
  text = slurm_lib._make_sbatch_string(command=inner._submitit_command_str, folder=inner.folder, map_count=n_tasks,
                                       **inner.parameters)
  try:
    p = subprocess.run(["sbatch", "--test-only"], input=text, capture_output=True, text=True, timeout=60, check=False)
  except (OSError, subprocess.TimeoutExpired) as e:
    raise ValueError(f"cannot check the SLURM options with sbatch --test-only: {e}") from None
  if p.returncode:
    options = [l for l in text.splitlines() if l.startswith("#SBATCH")]
    raise ValueError(f"SLURM rejects the cluster options (sbatch --test-only: {p.stderr.strip() or p.stdout.strip()}); "
                     f"options: {' '.join(o[len('#SBATCH '):] for o in options)}")


def _read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f"{path}: not valid JSON ({e})") from e


def _check_folder(workdir: str, manifest: dict[str, Any]) -> None:
  """ValueError if the workdir holds a fan-out (or a run) of another sweep or another split; writes nothing."""
  folder = os.path.join(workdir, FANOUT)
  path = os.path.join(folder, MANIFEST)
  if os.path.isdir(folder) and not os.path.exists(path):
    raise ValueError(f"{folder} exists but has no {MANIFEST}: not a fan-out of this package; use another workdir")
  if os.path.exists(path):
    old = _read_json(path)
    diffs = io._diff(old.get("config"), json.loads(json.dumps(manifest["config"])))  # pylint: disable=protected-access
    if diffs or old.get("module") != manifest["module"]:
      what = "; ".join(diffs) or f"module {old.get('module')!r} -> {manifest['module']!r}"
      raise ValueError(f"{folder} holds the fan-out of another sweep; use a new workdir or the same config. "
                       f"Differences (stored -> given): {what}")
    if old.get("tasks") != json.loads(json.dumps(manifest["tasks"])):
      raise ValueError(f"{folder} holds this sweep split into {len(old.get('tasks', []))} task(s), not "
                       f"{len(manifest['tasks'])}: use the same cluster `tasks` or a new workdir")
  io.check_config(workdir, manifest["config"])
  for i in range(len(manifest["tasks"])):
    try:
      io.check_config(_task_dir(workdir, i), manifest["config"])
    except ValueError as e:
      raise ValueError(f"fan-out task folder {_task_dir(workdir, i)}: {e}") from None


def submit(module: str, config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
           cluster: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
  """Fans `module.EXPERIMENT` with `config` out over tasks in `workdir/fanout` as one job array, follows them,
  resubmits failed ones, and returns {"tasks", "attempts", "jobs"}; RuntimeError naming the tasks that still fail
  after `max_retries`. Every check (the settings, the config, the fan-out folder, SLURM's acceptance of the options)
  runs before anything is written. Then `merge` builds the sweep's workdir."""
  c = check_cluster(cluster)
  exp = importlib.import_module(module).EXPERIMENT
  plan = E.check(exp, config)
  tasks = plan_tasks(exp, plan.config, c["tasks"])
  workdir = os.path.abspath(workdir)
  manifest = {"module": module, "experiment": exp.name, "config": plan.config, "tasks": tasks, "cluster": c}
  _check_folder(workdir, manifest)
  name = f"fanout-{exp.name}"
  with tempfile.TemporaryDirectory() as tmp:
    probe = _executor(os.path.join(tmp, "submitit"), c, name)
    kind = probe.cluster
    if kind == "slurm":
      check_slurm(probe, len(tasks))
  with io.lock(workdir):
    io.atomic_write(os.path.join(workdir, FANOUT, MANIFEST), lambda f: json.dump(manifest, f, indent=2), "w")
    todo = [i for i, names in enumerate(tasks) if not complete(_task_dir(workdir, i), names)]
    logging.info("fan-out of %s: %d task(s) of %s point(s), %d to run on the %s executor", exp.name, len(tasks),
                 "/".join(str(len(t)) for t in tasks), len(todo), kind)
    if not todo:
      return {"tasks": len(tasks), "attempts": {}, "jobs": {}}
    ex = _executor(os.path.join(workdir, FANOUT, "submitit"), c, name)
    task = Task(module, plan.config)
    jobs = ex.map_array(task, todo, [tasks[i] for i in todo], [_task_dir(workdir, i) for i in todo])
    slots = [follow.Slot(i, tasks[i], j) for i, j in zip(todo, jobs)]
    follow.follow(slots, kind, lambda s: ex.submit(task, s.index, s.names, _task_dir(workdir, s.index)),
                  lambda i: _task_dir(workdir, i), plan, c, os.path.join(workdir, FANOUT, JOBS))
  return {"tasks": len(tasks), "attempts": {s.index: s.attempts for s in slots},
          "jobs": {s.index: s.job.job_id for s in slots}}


# -- merge ------------------------------------------------------------------------------------------------------------


def merge(exp: E.Experiment, config: ml_collections.ConfigDict | dict[str, Any], workdir: str) -> Any:
  """Merges the finished tasks of `workdir/fanout` into `workdir` and returns what `experiment.run` returns there
  (it finds every point complete and only assembles `curves.npz`). Refuses, before writing anything, a fan-out of
  another config and a task folder holding another config (naming it), and names missing or incomplete tasks.
  Re-running gives the same files."""
  plan = E.check(exp, config)
  workdir = os.path.abspath(workdir)
  path = os.path.join(workdir, FANOUT, MANIFEST)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: no fan-out to merge in {workdir} (submit it first)")
  manifest = _read_json(path)
  tasks = [tuple(t) for t in manifest["tasks"]]
  _check_folder(workdir, {"module": manifest.get("module", ""), "config": plan.config, "tasks": tasks})
  missing = [f"task{i} ({', '.join(n)})" for i, n in enumerate(tasks) if not complete(_task_dir(workdir, i), n)]
  if missing:
    raise ValueError(f"cannot merge {workdir}: {len(missing)} of {len(tasks)} task(s) missing or incomplete: "
                     f"{'; '.join(missing)}. Submit the fan-out again (only those run), then merge")
  order = {p.name: k for k, p in enumerate(plan.points)}
  with io.lock(workdir):
    records = []
    for i, names in enumerate(tasks):
      src = _task_dir(workdir, i)
      for n in names:
        _copy(os.path.join(src, "points", n + ".npz"), os.path.join(workdir, "points", n + ".npz"))
      records += [r for r in io.read_metrics(src) if r.get("point") in names]
      if not plan.one_program:  # per-shape programs are named by their point: the single run's checkpoints
        for n in names:
          if os.path.isdir(os.path.join(src, "checkpoints", n)):
            _copy_tree(os.path.join(src, "checkpoints", n), os.path.join(workdir, "checkpoints", n))
    records.sort(key=lambda r: (order[r["point"]], r["step"]))
    io.atomic_write(os.path.join(workdir, io.METRICS), lambda f: f.writelines(json.dumps(r) + "\n" for r in records),
                    "w")
    logging.info("fan-out: merged %d task(s) (%d points) into %s", len(tasks), len(order), workdir)
    return E.run(exp, config, workdir)


def _copy(src: str, dst: str) -> None:
  with open(src, "rb") as f:
    io.atomic_write(dst, lambda g: shutil.copyfileobj(f, g))


def _copy_tree(src: str, dst: str) -> None:
  """Replaces `dst` by a copy of `src` (copied beside it, then renamed: a killed merge leaves no mixed folder)."""
  tmp = dst + ".merging"
  shutil.rmtree(tmp, ignore_errors=True)
  shutil.copytree(src, tmp)
  shutil.rmtree(dst, ignore_errors=True)
  os.replace(tmp, dst)
