r"""Runs (or resumes) an MSP sweep: `python -m launch.msp --config=configs/msp.py:quick --workdir=runs/quick`.

Re-running the same command resumes. Override fields with `--config.train.steps=2000` or in the variant argument
(`configs/msp.py:quick,width=(16,32)`). Prints the summary table and writes `summary.png`. Logic: `scaling.quanta.msp`.
"""

from scaling.engine import launch
from scaling.quanta import msp

if __name__ == "__main__":
  launch.main(lambda config, workdir: msp.run(config, workdir, summarize=True))
