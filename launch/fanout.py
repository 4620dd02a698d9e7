r"""Fans a sweep out over a cluster and merges it: `python -m launch.fanout --config=configs/msp.py:tiny
--workdir=runs/tiny_fan --cluster=configs/cluster.py:local`; `--merge_only` merges finished tasks without submitting.

The experiment is the config file's: configs/<name>.py runs `EXPERIMENTS[name]`. The merged workdir equals the
single run's (`python -m launch.<name>`). Logic: `scaling.engine.fanout`; cluster settings: configs/cluster.py.
"""

import importlib
import os

from absl import flags
from ml_collections import config_flags

from scaling.engine import fanout, launch

EXPERIMENTS = {"msp": "scaling.quanta.msp", "addition": "scaling.bnsl.addition", "rf_gd": "scaling.dynamics.rf_gd",
               "lm_family": "scaling.lm.family"}  # configs/<name>.py -> the module with its engine EXPERIMENT

_CLUSTER = config_flags.DEFINE_config_file("cluster", None, "Cluster config file[:variant[,key=value...]], e.g. "
                                           "configs/cluster.py:local (not needed with --merge_only).",
                                           lock_config=True)
_MERGE_ONLY = flags.DEFINE_bool("merge_only", False, "Merge the finished tasks without submitting anything.")


def module_of(config_file: str) -> str:
  """The experiment module of a config file path (`configs/msp.py[:variant]` -> scaling.quanta.msp)."""
  name = os.path.splitext(os.path.basename(config_file.split(":", 1)[0]))[0]
  if name not in EXPERIMENTS:
    raise ValueError(f"{config_file}: no engine experiment for configs/{name}.py; fan-out runs {sorted(EXPERIMENTS)}")
  return EXPERIMENTS[name]


def run(config, workdir: str, cluster, merge_only: bool) -> str:
  """Submits and follows the tasks (unless `merge_only`), then merges them; returns a one-line summary."""
  module = module_of(config_flags.get_config_filename(flags.FLAGS["config"]))
  exp = importlib.import_module(module).EXPERIMENT
  text = f"fan-out of {exp.name} merged into {os.path.abspath(workdir)}"
  if not merge_only:
    if cluster is None:
      raise ValueError("--cluster is required to submit (e.g. --cluster=configs/cluster.py:local)")
    done = fanout.submit(module, config, workdir, cluster)
    tries = ", ".join(f"task{i}: {n}" for i, n in sorted(done["attempts"].items()))
    text += f"; {done['tasks']} task(s), tries {tries or 'none (all were complete)'}"
  fanout.merge(exp, config, workdir)
  return text


if __name__ == "__main__":
  launch.main(run, extra=lambda: {"cluster": _CLUSTER.value, "merge_only": _MERGE_ONLY.value})
