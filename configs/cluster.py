r"""The cluster side of a fan-out (`launch/fanout.py`): executor, tasks and SLURM options. Not part of the
experiment's config, so the merged workdir's config.json equals a single run's. Fields: `scaling.engine.fanout
.default_cluster`.

Variants (`--cluster=configs/cluster.py:<variant>[,field=value...]`):

local   The tasks as processes on this machine (tests, laptops): one task per unit, 60 min each, 2 retries.
          python -m launch.fanout --config=configs/msp.py:tiny --workdir=runs/tiny_fan \
            --cluster=configs/cluster.py:local,tasks=2
        Expect: the same config.json and curves.npz as `python -m launch.msp --config=configs/msp.py:tiny` (bitwise
        when each task sees as many devices as the single run).

slurm   One SLURM job array (submitit), one task per unit, 1 GPU, 4 CPUs, 16 GB, 4 h per task; failed, cancelled or
        dead tasks are resubmitted (twice at most) and resume from their checkpoints; preempted or timed-out ones are
        requeued by submitit. The options are checked with `sbatch --test-only` before anything is written.
          python -m launch.fanout --config=configs/msp.py:fig2_n --workdir=runs/fig2_n \
            --cluster=configs/cluster.py:slurm,partition=gpu,additional="{'qos':'high'}",setup="('module load cuda',)"
        Merge finished tasks again without submitting: add `--merge_only`.

Fields can also be overridden as flags: `--cluster.tasks=8 --cluster.time_min=120` (`additional` only in the
variant argument, as a dict).
"""

import ml_collections

from scaling.engine import config as C
from scaling.engine.fanout import default_cluster


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "local")
  c = default_cluster()
  if name == "local":
    c.update(executor="local", poll_s=2.0)
  elif name == "slurm":
    c.update(executor="slurm", time_min=240, gpus_per_task=1, cpus_per_task=4, mem_gb=16.0, poll_s=30.0)
  else:
    raise ValueError(f"unknown variant {name!r}; one of local, slurm")
  if "additional" in overrides:  # a dict: not a leaf field, so set here rather than by `apply_args`
    extra = overrides.pop("additional")
    if not isinstance(extra, dict):
      raise ValueError(f"config argument additional={extra!r} must be a dict of sbatch options")
    c.additional = extra
  return C.apply_args(c, overrides)
