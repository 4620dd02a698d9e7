r"""A transformer family and its per-token loss scaling report:
`python -m launch.lm_family --config=configs/lm_family.py:quick --workdir=runs/lm_quick`.

Re-running the same command on the same workdir skips finished sizes and resumes unfinished ones. Prints the
summary (also in `workdir/summary.md`). The logic lives in `scaling.lm.family.run`.
"""

from __future__ import annotations

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from scaling.lm import family

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file[:variant].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory of the run (created; resumed if it exists).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  jax.config.update("jax_transfer_guard", "disallow")  # implicit host<->device copies are bugs in the hot loop
  logging.info("JAX %s, backend %s, local devices: %s", jax.__version__, jax.default_backend(), jax.local_devices())
  summary = family.run(_CONFIG.value, _WORKDIR.value)
  print(summary["markdown"])


if __name__ == "__main__":
  app.run(main)
