"""Following a fan-out's jobs (`scaling.engine.fanout`): status, progress, resubmission of failed tasks.

A task's job is done when submitit's result file says success. It failed when the result file holds an error, when
its local process ended without one, or, on SLURM, when squeue shows it ended (CANCELLED, TIMEOUT, ...) without one
or no longer lists it for `GRACE_S`. (Without SLURM accounting `sacct` fails, and submitit would see a cancelled job
as UNKNOWN forever: squeue is asked instead.) A failed task is resubmitted as a job of its own, at most
`max_retries` times.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import os
import subprocess
import time
from typing import Any, Callable

import submitit
from absl import logging

from scaling.engine import io

GRACE_S = 20.0  # a SLURM job ended without a result file, or gone from squeue, for this long is dead
ACTIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD", "RESIZING",
          "SUSPENDED", "SIGNALING", "STAGE_OUT", "STOPPED", "RESV_DEL_HOLD"}
ENDED = {"CANCELLED", "TIMEOUT", "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY"}  # dead at once if no result


@dataclasses.dataclass
class Slot:
  """A task being followed: its job (the latest attempt), attempts so far and state."""

  index: int
  names: tuple[str, ...]
  job: Any  # submitit.Job
  attempts: int = 1
  state: str = "running"  # running | done | failed
  why: str = ""  # the last failure
  gone_since: float | None = None  # when its SLURM job was first seen ended without a result


def squeue() -> dict[str, str] | None:
  """Job id ("123_4" for array tasks) -> SLURM state of this user's jobs still known to slurmctld; None if squeue
  fails (then nothing is declared dead)."""
  user = os.environ.get("USER") or getpass.getuser()
  try:
    p = subprocess.run(["squeue", "-h", "-r", "-t", "all", "-u", user, "-o", "%i %T"], capture_output=True,
                       text=True, timeout=60, check=True)
  except (OSError, subprocess.SubprocessError) as e:
    logging.warning("fan-out: squeue failed (%s); checking again at the next poll", e)
    return None
  return dict(l.split()[:2] for l in p.stdout.splitlines() if len(l.split()) >= 2)


def status(s: Slot, kind: str, queue: dict[str, str] | None) -> tuple[str, str]:
  """("done" | "failed" | "alive", why) of a slot's current job; `queue`: `squeue()` (SLURM only)."""
  job = s.job
  if job.paths.result_pickle.exists():
    outcome, payload = submitit.core.utils.pickle_load(job.paths.result_pickle)
    if outcome != "error":
      return "done", ""
    trace = [l for l in str(payload).splitlines() if l.strip()]
    return "failed", trace[-1] if trace else "an error"
  if kind != "slurm":
    return ("failed", "its process ended without a result") if job.done() else ("alive", "")
  if queue is None:
    return "alive", ""
  state = queue.get(job.job_id)
  if state in ACTIVE:
    s.gone_since = None
    return "alive", ""
  if state in ENDED:
    return "failed", f"SLURM state {state} without a result"
  s.gone_since = s.gone_since or time.monotonic()  # a result file may lag on a shared file system
  if time.monotonic() - s.gone_since > GRACE_S:
    return "failed", f"{f'SLURM state {state}' if state else 'gone from squeue'} without a result"
  return "alive", ""


def progress(task_dir: str, s: Slot, steps: dict[str, int], log_every: int) -> str:
  """"task<i> [job, try n]: steps trained / steps" from the task's metrics.jsonl (a line at step s with chunk
  metrics means the chunk s .. s + log_every has trained)."""
  try:
    recs = io.read_metrics(task_dir)
  except (OSError, ValueError):
    recs = []
  last: dict[str, int] = {}
  for r in recs:
    if r.get("point") in steps:
      trained = int(r["step"]) + (log_every if any(k.startswith("chunk_") for k in r) else 0)
      last[r["point"]] = max(last.get(r["point"], 0), trained)
  done = sum(min(last.get(n, 0), steps[n]) for n in s.names)
  return f"task{s.index} [job {s.job.job_id}, try {s.attempts}]: {done}/{sum(steps[n] for n in s.names)} steps"


def tail(path: Any, n: int = 8) -> str:
  try:
    with open(path, errors="replace") as f:
      return "".join(f.readlines()[-n:]).rstrip()
  except OSError:
    return "(no log)"


def follow(slots: list[Slot], kind: str, resubmit: Callable[[Slot], Any], task_dir: Callable[[int], str],
           plan: Any, c: dict[str, Any], jobs_path: str) -> None:
  """Polls every `c["poll_s"]` seconds until every task is done or out of retries, logging progress when it changes
  (at least every minute) and recording job ids in `jobs_path`; `resubmit(slot)` submits a task again and returns
  its job. RuntimeError naming the tasks that still failed, with the last lines of their stderr logs."""
  history: dict[str, list[str]] = {}
  if os.path.exists(jobs_path):
    with open(jobs_path) as f:
      history = json.load(f)

  def record() -> None:
    for s in slots:
      ids = history.setdefault(f"task{s.index}", [])
      if s.job.job_id not in ids:
        ids.append(s.job.job_id)
    io.atomic_write(jobs_path, lambda f: json.dump(history, f, indent=2), "w")

  record()
  steps, log_every = {p.name: p.steps for p in plan.points}, plan.log_every
  last_log, last_text = 0.0, ""
  while True:
    queue = squeue() if kind == "slurm" else None
    for s in (s for s in slots if s.state == "running"):
      state, why = status(s, kind, queue)
      if state == "done":
        s.state = "done"
        logging.info("fan-out: task%d done (job %s, try %d)", s.index, s.job.job_id, s.attempts)
      elif state == "failed" and s.attempts > c["max_retries"]:
        s.state, s.why = "failed", why
        logging.error("fan-out: task%d failed (%s) after %d tries", s.index, why, s.attempts)
      elif state == "failed":
        old = s.job.job_id
        s.job, s.attempts, s.gone_since = resubmit(s), s.attempts + 1, None
        logging.warning("fan-out: task%d failed (job %s: %s); resubmitted as job %s (try %d of %d)", s.index, old,
                        why, s.job.job_id, s.attempts, c["max_retries"] + 1)
        record()
    running = [s for s in slots if s.state == "running"]
    text = (f"{sum(s.state == 'done' for s in slots)}/{len(slots)} task(s) done, "
            f"{sum(s.state == 'failed' for s in slots)} failed"
            + "".join(f"; {progress(task_dir(s.index), s, steps, log_every)}" for s in running[:8]))
    if text != last_text or time.monotonic() - last_log > 60:
      logging.info("fan-out: %s", text)
      last_log, last_text = time.monotonic(), text
    if not running:
      break
    time.sleep(c["poll_s"])
  failed = [s for s in slots if s.state == "failed"]
  if failed:
    logs = "\n".join(f"--- task{s.index} (job {s.job.job_id}: {s.why}), {s.job.paths.stderr}:\n"
                     f"{tail(s.job.paths.stderr)}" for s in failed)
    raise RuntimeError(f"fan-out: task(s) {', '.join(f'task{s.index}' for s in failed)} still failed after "
                       f"{c['max_retries'] + 1} tries; the other tasks are complete, and submitting again runs only "
                       f"the unfinished ones. Last lines of their stderr logs:\n{logs}")
