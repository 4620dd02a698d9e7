r"""Fits scaling-law forms to benchmark curves or to a workdir of ours:
`python -m launch.fit --config=configs/fit_sweep.py:n --config.source.workdir=runs/quick --workdir=runs/quick_fit`;
or to a table of anyone's runs: `python -m launch.fit --config=configs/fit_sweep.py:csv --config.source.path=FILE
--workdir=DIR`; prints the tables. Logic: `scaling.fit.experiment`, `scaling.fit.table_fit` (source.kind "csv")."""

from scaling.engine import launch
from scaling.fit import experiment, table_fit


def run(config, workdir: str) -> str:
  fit = table_fit.run if config.source.kind == "csv" else experiment.run
  return fit(config, workdir)[2]


if __name__ == "__main__":
  launch.main(run)
