"""One program over several hosts, with JAX's own multi-controller runtime (`jax.distributed`).

Every process runs the same launcher command; `initialize` joins them before any computation. The engine then builds
its mesh over all global devices, shards the member axis across hosts, gathers results to every process (`gather`),
lets process 0 alone write the workdir's files (`is_primary`), and writes orbax checkpoints collectively (every
process calls save; the checkpoint root must be on storage all hosts see).

Where the processes come from: explicit flags (`--coordinator=HOST:PORT --num_processes=N --process_id=I`), or a
SLURM step of several tasks (`srun` with `--ntasks` > 1), read from SLURM's variables. A single-task SLURM job (e.g.
one task of a job array) stays one process: JAX's own SLURM auto-detection is never used, because it assumes local
rank i drives GPU i (jax #23452, #28194) and breaks on partially set variables (jax #30073); here every visible
device belongs to the process, and a half-set SLURM environment is an error naming the missing variables.
On CPU the processes talk through gloo (`jax_cpu_collectives_implementation`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import socket
import time
from typing import Any, Mapping

import jax
import numpy as np

SLURM_VARS = ("SLURM_JOB_ID", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_NODELIST")


@dataclasses.dataclass(frozen=True)
class Processes:
  coordinator: str  # host:port of process 0
  num_processes: int
  process_id: int


def first_host(nodelist: str) -> str:
  """The first host of a SLURM hostlist: 'gpu[003-005,9],cpu1' -> 'gpu003'."""
  m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
  if not m or not m.group(1):
    raise ValueError(f"cannot read the SLURM node list {nodelist!r}")
  if not m.group(2):
    return m.group(1)
  return m.group(1) + m.group(2).split(",")[0].split("-")[0]


def from_slurm(env: Mapping[str, str]) -> Processes | None:
  """The processes of a multi-task SLURM step, or None outside one (no SLURM, or a single task)."""
  present = [v for v in SLURM_VARS if v in env]
  if not present or int(env.get("SLURM_NTASKS", "1") or 1) <= 1:
    return None
  missing = [v for v in SLURM_VARS if v not in env]
  if missing:
    raise ValueError(f"a SLURM step of {env['SLURM_NTASKS']} tasks without {', '.join(missing)}: run the processes "
                     "with srun, or pass --coordinator, --num_processes and --process_id")
  job = int(env["SLURM_JOB_ID"])
  return Processes(f"{first_host(env['SLURM_STEP_NODELIST'])}:{20000 + job % 20000}",
                   int(env["SLURM_NTASKS"]), int(env["SLURM_PROCID"]))


def resolve(coordinator: str, num_processes: int, process_id: int,
            env: Mapping[str, str] | None = None) -> Processes | None:
  """The processes from explicit settings, else from SLURM; None for a single process. ValueError naming the
  setting when they are inconsistent (checked before anything starts)."""
  if coordinator or num_processes > 1:
    if not re.fullmatch(r"[^:\s]+:\d+", coordinator or ""):
      raise ValueError(f"--coordinator must be HOST:PORT (process 0's address), got {coordinator!r}")
    if num_processes < 2:
      raise ValueError(f"--num_processes must be >= 2 with --coordinator, got {num_processes}")
    if not 0 <= process_id < num_processes:
      raise ValueError(f"--process_id must be in [0, {num_processes}), got {process_id}")
    return Processes(coordinator, num_processes, process_id)
  return from_slurm(os.environ if env is None else env)


def _hello(procs: Processes, timeout_s: float) -> None:
  """A check before `jax.distributed.initialize` (which aborts the process, with no usable message, on a silent
  coordinator or a wrong process count): every process says (id, count) to process 0 on the coordinator's port + 1;
  process 0 answers once all N have, or names who is missing or inconsistent. RuntimeError on every failure."""
  host, port = procs.coordinator.rsplit(":", 1)
  addr, deadline = (host, int(port) + 1), time.monotonic() + timeout_s
  where = f"the coordinator {procs.coordinator} (process 0; check port {int(port) + 1} too)"
  if procs.process_id == 0:
    with socket.create_server(("", addr[1]), reuse_port=False) as server:
      peers: dict[int, socket.socket] = {}
      problems: list[str] = []
      while len(peers) < procs.num_processes - 1 and not problems:
        server.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
          conn, _ = server.accept()
        except socket.timeout:
          missing = sorted(set(range(1, procs.num_processes)) - set(peers))
          raise RuntimeError(f"processes {missing} of {procs.num_processes} did not reach {where} within "
                             f"{timeout_s:g} s") from None
        conn.settimeout(5)
        try:
          i, n = (int(v) for v in conn.makefile().readline().split())
        except (OSError, ValueError):
          conn.close()
          continue
        if n != procs.num_processes or not 0 < i < n or i in peers:
          problems.append(f"process {i} says there are {n} processes; process 0 has --num_processes="
                          f"{procs.num_processes}" if n != procs.num_processes else f"process id {i} is taken "
                          "or out of range")
        peers[i] = conn
      reply = ("error " + "; ".join(problems) if problems else "ok") + "\n"
      for conn in peers.values():
        with contextlib.suppress(OSError):
          conn.sendall(reply.encode())
        conn.close()
      if problems:
        raise RuntimeError("; ".join(problems))
    return
  while True:
    try:
      with socket.create_connection(addr, timeout=max(deadline - time.monotonic(), 0.01)) as conn:
        conn.sendall(f"{procs.process_id} {procs.num_processes}\n".encode())
        conn.settimeout(max(deadline - time.monotonic(), 0.01) + 5)
        reply = conn.makefile().readline().strip()
      break
    except (ConnectionRefusedError, socket.timeout, OSError) as e:
      if time.monotonic() > deadline:
        raise RuntimeError(f"{where} did not answer within {timeout_s:g} s ({type(e).__name__})") from None
      time.sleep(0.2)
  if reply != "ok":
    raise RuntimeError(f"process 0 refused process {procs.process_id}: {reply.removeprefix('error ') or 'no answer'}")


def initialize(procs: Processes | None, timeout_s: int = 300, heartbeat_s: int = 100) -> None:
  """Joins the processes (no-op for None). A coordinator that does not answer within `timeout_s`, or a process count
  that differs between processes, is a RuntimeError saying so; a process that dies stops the others after
  `heartbeat_s` (they abort: the job fails instead of hanging)."""
  if procs is None:
    return
  _hello(procs, timeout_s)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes; GPUs use NCCL regardless
  try:
    jax.distributed.initialize(procs.coordinator, procs.num_processes, procs.process_id,
                               cluster_detection_method="deactivate", initialization_timeout=timeout_s,
                               heartbeat_timeout_seconds=heartbeat_s)
  except Exception as e:  # pylint: disable=broad-except  # XlaRuntimeError: the coordinator's status, long
    raise RuntimeError(f"process {procs.process_id} of {procs.num_processes} could not join the coordinator at "
                       f"{procs.coordinator} within {timeout_s} s: {str(e).splitlines()[0][:300]}") from e


def is_primary() -> bool:
  """Process 0: the one that writes the workdir's files (config, metrics, arrays, curves)."""
  return jax.process_index() == 0


def is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def to_numpy(tree: Any) -> Any:
  """Host numpy leaves (typed PRNG keys as their key data), so that every process can place the same values on a
  global sharding (`jax.device_put` takes host values there, not single-device arrays)."""
  with jax.transfer_guard("allow"):
    return jax.tree.map(lambda x: np.asarray(jax.random.key_data(x) if is_key(x) else x)
                        if isinstance(x, jax.Array) else x, tree)


def gather(tree: Any) -> Any:
  """Every leaf whole, as numpy, on every process (one allgather per call over several processes)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
  leaves, treedef = jax.tree.flatten(tree)
  impls = [jax.random.key_impl(x) if is_key(x) else None for x in leaves]
  data = [jax.random.key_data(x) if i is not None else x for x, i in zip(leaves, impls)]
  with jax.transfer_guard("allow"):  # an explicit gather: it places host-local pieces itself
    out = multihost_utils.process_allgather(data, tiled=True)
  return treedef.unflatten([np.asarray(x) if i is None else jax.random.wrap_key_data(x, impl=i)
                            for x, i in zip(out, impls)])


def barrier(name: str) -> None:
  """Waits for every process (no-op for one)."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=import-outside-toplevel
    with jax.transfer_guard("allow"):
      multihost_utils.sync_global_devices(name)
