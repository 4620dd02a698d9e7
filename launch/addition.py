r"""BNSL toy experiment: `python -m launch.addition --config=configs/addition.py:quick --workdir=runs/add_quick`.

Re-running the same command on the same workdir resumes from the latest checkpoint. Override any field with
`--config.train.steps=800`, `--config.sweep.train_size='(256,512)'`. The logic lives in `scaling.bnsl.addition.run`.
"""

from absl import app, flags, logging
import jax
from ml_collections import config_flags

from scaling.bnsl import addition

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  jax.config.update("jax_transfer_guard", "disallow")  # implicit host<->device copies are bugs in the hot loop
  logging.info("JAX %s, backend %s, local devices: %s", jax.__version__, jax.default_backend(), jax.local_devices())
  curves = addition.run(_CONFIG.value, _WORKDIR.value)
  print(addition.summary_table(curves))


if __name__ == "__main__":
  app.run(main)
