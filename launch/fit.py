r"""Fits scaling-law forms to benchmark curves or to a workdir of ours:
`python -m launch.fit --config=configs/fit_sweep.py:n --config.source.workdir=runs/quick --workdir=runs/quick_fit`;
prints the tables. Logic: `scaling.fit.experiment`."""

from scaling.engine import launch
from scaling.fit import experiment

if __name__ == "__main__":
  launch.main(lambda config, workdir: experiment.run(config, workdir)[2])
