"""The one launcher helper: every `launch/<experiment>.py` is `launch.main(run)` (plus its own extra flags).

It defines `--config` (an ml_collections config file[:variant[,key=value...]], locked: a misspelt field is an
error), `--workdir` and the flags of a run over several processes (`--coordinator`, `--num_processes`,
`--process_id`; or a SLURM step of several tasks: `scaling.engine.distributed`), joins those processes, turns
config-override errors into one clear line instead of a traceback, sets JAX's transfer guard to "disallow"
(implicit host<->device copies in the hot loop are bugs), logs JAX's version, backend and devices, holds the
workdir's lock on process 0 (when the workdir exists; the engine takes it after its config checks when it does
not), calls `run(config, workdir)` and prints what it returns when it is text.
"""

from __future__ import annotations

import contextlib
import functools
import sys
from typing import Any, Callable

from absl import app, flags, logging

from scaling.engine import io


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    sys.exit(f"{argv[0]}: {e}\nPass --help for the flags.")
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # config_flags on an unknown or mistyped field
    bad = [a for a in argv[1:] if a.startswith("--config.")]
    sys.exit(f"{argv[0]}: bad config override {' '.join(bad) or ''}: {type(e).__name__}: {e} "
             "(the field does not exist, or the value has the wrong type)")


def host_driven(fn: Callable[..., Any]) -> Callable[..., Any]:
  """Marks an entry point driven from the host (theory solvers, fits, analysis): it runs with implicit transfers
  allowed, while the launcher keeps them disallowed everywhere else (a training hot loop must not copy implicitly)."""
  @functools.wraps(fn)
  def wrapped(*args: Any, **kwargs: Any) -> Any:
    import jax  # pylint: disable=import-outside-toplevel
    with jax.transfer_guard("allow"):
      return fn(*args, **kwargs)
  return wrapped


def log_devices() -> None:
  import jax  # pylint: disable=import-outside-toplevel
  logging.info("JAX %s, backend %s, process %d of %d, local devices: %s", jax.__version__, jax.default_backend(),
               jax.process_index(), jax.process_count(), jax.local_devices())


def _distributed_flags() -> dict[str, Any]:
  """Flags of a run over several processes (`scaling.engine.distributed`); unset: one process, or a SLURM step."""
  return {
      "coordinator": flags.DEFINE_string("coordinator", "", "HOST:PORT of process 0, for a run over several "
                                         "processes (jax.distributed); every process runs the same command."),
      "num_processes": flags.DEFINE_integer("num_processes", 1, "Number of processes (with --coordinator)."),
      "process_id": flags.DEFINE_integer("process_id", 0, "This process's index in [0, num_processes)."),
      "distributed_timeout_s": flags.DEFINE_integer("distributed_timeout_s", 300, "Seconds to wait for every "
                                                    "process to join the coordinator before failing."),
      "heartbeat_timeout_s": flags.DEFINE_integer("heartbeat_timeout_s", 100, "Seconds after which a silent "
                                                  "(dead) process makes the others fail instead of hanging."),
  }


def main(run: Callable[..., Any], *, config: bool = True, workdir: bool = True,
         extra: Callable[[], dict[str, Any]] | None = None) -> None:
  """Defines the flags and runs `run(config, workdir, **extra())` under absl (call under `__main__`).

  `config` / `workdir`: whether the launcher takes them; `extra`: reads the launcher's own flags into keyword
  arguments of `run`.
  """
  from ml_collections import config_flags  # pylint: disable=import-outside-toplevel
  required = []
  if config:
    cfg_flag = config_flags.DEFINE_config_file("config", None, "Config file[:variant[,key=value...]].",
                                               lock_config=True)
    required.append("config")
  if workdir:
    wd_flag = flags.DEFINE_string("workdir", None, "Directory of the run (created; resumed if it exists).")
    required.append("workdir")
  flags.mark_flags_as_required(required)
  multi = _distributed_flags()

  def _main(argv: list[str]) -> None:
    if len(argv) > 1:
      raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    import jax  # pylint: disable=import-outside-toplevel
    from scaling.engine import distributed  # pylint: disable=import-outside-toplevel
    try:
      procs = distributed.resolve(multi["coordinator"].value, multi["num_processes"].value,
                                  multi["process_id"].value)
      distributed.initialize(procs, multi["distributed_timeout_s"].value, multi["heartbeat_timeout_s"].value)
    except (ValueError, RuntimeError) as e:
      sys.exit(f"error: {e}")
    jax.config.update("jax_transfer_guard", "disallow")
    log_devices()
    args = ([cfg_flag.value] if config else []) + ([wd_flag.value] if workdir else [])
    try:
      with io.lock(wd_flag.value, create=False) if workdir and distributed.is_primary() else contextlib.nullcontext():
        out = run(*args, **(extra() if extra else {}))
    except (ValueError, FileNotFoundError, FloatingPointError, RuntimeError) as e:
      logging.error("%s: %s", type(e).__name__, e)
      sys.exit(f"error: {e}")
    if isinstance(out, str):
      print(out)

  app.run(_main, flags_parser=_parse)
