r"""Random-feature GD through the sweep engine: `python -m launch.rf_gd --config=configs/rf_gd.py:quick --workdir=DIR`.

Re-running the same command resumes (finished points are skipped). Prints GD vs the DMFT flow at t = η·step. The
logic lives in `scaling.dynamics.rf_gd`.
"""

from absl import app, flags
import jax
from ml_collections import config_flags

from scaling.dynamics import rf_gd

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  jax.config.update("jax_transfer_guard", "disallow")
  curves = rf_gd.run(_CONFIG.value, _WORKDIR.value)
  print(rf_gd.comparison_table(rf_gd.compare_to_theory(curves, _CONFIG.value)))


if __name__ == "__main__":
  app.run(main)
