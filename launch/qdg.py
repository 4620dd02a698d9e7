r"""Quanta discovery from gradients on a language model: `python -m launch.qdg --config=configs/qdg.py:quick
--workdir=runs/qdg`; prints summary.md. Logic: `scaling.lm.qdg`."""

from scaling.engine import launch
from scaling.lm import qdg

if __name__ == "__main__":
  launch.main(lambda config, workdir: qdg.run(config, workdir)["markdown"])
