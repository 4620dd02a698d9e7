r"""Runs (or resumes) the BNSL addition toy: `python -m launch.addition --config=configs/addition.py:quick
--workdir=runs/addition`; prints the per-size summary. Logic: `scaling.bnsl.addition`."""

from scaling.bnsl import addition
from scaling.engine import launch

if __name__ == "__main__":
  launch.main(lambda config, workdir: addition.summary_table(addition.run(config, workdir)))
