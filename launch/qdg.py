r"""Quanta discovery from gradients: `python -m launch.qdg --config=configs/qdg.py:quick --workdir=DIR`.

Writes the selection, gradient features, similarity, clusters, rank_frequency.png, clusters_K<k>.md/.html and
summary.md; re-running resumes. Logic: `scaling.lm.qdg`.
"""

import os

from absl import app, flags
from ml_collections import config_flags

from scaling.lm import qdg

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  qdg.run(_CONFIG.value, _WORKDIR.value)
  with open(os.path.join(_WORKDIR.value, "summary.md")) as f:
    print(f.read())


if __name__ == "__main__":
  app.run(main)
