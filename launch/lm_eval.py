r"""Per-token losses of checkpoints on a corpus: `python -m launch.lm_eval --config=configs/lm_eval.py --workdir=DIR`.

Writes losses.npz, models/<name>.npz, summary.md and report/ figures; re-running resumes.
Logic: `scaling.lm.eval_models`.
"""

from absl import app, flags
from ml_collections import config_flags

from scaling.lm import eval_models

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  print(eval_models.evaluate_models(_CONFIG.value, _WORKDIR.value))


if __name__ == "__main__":
  app.run(main)
