r"""Fit scaling laws: `python -m launch.fit --config=configs/fit_benchmark.py[:variant] --workdir=runs/fit_benchmark`.

Prints the per-domain tables (also in `workdir/summary.md`); figures go to `workdir/figures/`. Re-running the same
command reuses the fits already in `workdir/results/`. The logic lives in `scaling.fit.experiment.run`.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from scaling.fit import experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.info("fitting into %s", _WORKDIR.value)
  _, _, text = experiment.run(_CONFIG.value, _WORKDIR.value)
  print(text)


if __name__ == "__main__":
  app.run(main)
