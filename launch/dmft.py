r"""DMFT theory vs random-feature simulation: `python -m launch.dmft --config=configs/dmft.py:quick --workdir=DIR`.

Prints the variant's tables (also in `workdir/summary.md`); figures go to the workdir. Re-running the same command
reloads `theory.npz` / `sim.npz` instead of recomputing. The logic lives in `scaling.dynamics.dmft.run`.
"""

from absl import app, flags
from ml_collections import config_flags

from scaling.dynamics import dmft

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created; reloaded if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(dmft.run(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
