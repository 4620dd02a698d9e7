r"""Fit scaling-law forms to our own runs: loss vs parameters, dataset size or steps of a `launch.msp` sweep, or
test CE vs training-set size of a `launch.addition` run. The largest `source.n_test` x are held out and scored
(0: a fifth of the points, at least 1). Or to anyone's runs in a table (variant `csv`).

Variants (`--config=configs/fit_sweep.py:<variant>`), each needing `--config.source.workdir=DIR`:

n         loss vs N (final loss, seed mean) of a width sweep, e.g. configs/msp.py:quick.
            python -m launch.fit --config=configs/fit_sweep.py:n --config.source.workdir=runs/quick \
                --workdir=runs/quick_fit_n
d         loss vs D (min over steps, seed mean) of a dataset-size sweep (msp.py:quick_d, fig2_d).
steps     loss vs steps of every run of a sweep.
addition  test CE (min over training, seed mean) vs training-set size of configs/addition.py:fit / paper.
            python -m launch.fit --config=configs/fit_sweep.py:addition --config.source.workdir=runs/add_fit \
                --workdir=runs/add_fit_bnsl
csv       a CSV or JSON-lines (.jsonl) table of runs, `--config.source.path=FILE` (`scaling.fit.table_fit`; fields
          in `scaling.fit.table`): source.x (one column: 1-D curves, fitted with `methods` and bootstrapped; two
          columns N, D, or N with source.compute = C, D = C / (source.k N): Chinchilla's L(N, D), the
          compute-optimal frontier at fit2d.C, the isoFLOP parabolas where the runs share compute values),
          source.y, source.group, source.drop / drop_lines / x_min / x_max, source.holdout (largest, column, none).
            python -m launch.fit --config=configs/fit_sweep.py:csv --config.source.path=tests/data/runs_1d.csv \
                --config.source.group="('lr',)" --workdir=runs/csv_fit
          ~3 min on 2 shared CPU cores for tests/data/runs_1d.csv (3 curves of 8 points, 7 forms, 2048 starts, 200
          resamples; M4 alone 52 s), 25 s for tests/data/runs_2d.csv (--config.source.x="('N',)"
          --config.source.compute=C); writes summary.md (held-out RMSLE per group and form, parameters with bootstrap
          intervals), summary.json and figures/ (data, fits, bands; 2-D: the isoFLOP frontier).
"""

import ml_collections

from scaling.fit.experiment import fit_config
from scaling.fit.table_fit import csv_config
from scaling.engine import config as C


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "n")  # "variant[,field=value...]"
  if name == "csv":
    return C.apply_args(csv_config(), overrides)
  c = fit_config()
  c.methods = ("m1", "m2", "m3", "m4", "bnsl0", "bnsl1", "bnsl")
  c.compare = ("m1", "m2", "m3", "m4", "bnsl")
  c.fit.update(max_breaks=1)
  if name in ("n", "d", "steps"):
    c.source.update(kind="sweep", axis=name)
  elif name == "addition":
    c.source.update(kind="addition", n_test=3)  # the paper's 4-digit split holds out the 3 largest sizes
  else:
    raise ValueError(f"unknown variant {name!r}; one of n, d, steps, addition, csv")
  return C.apply_args(c, overrides)
