r"""Fit scaling-law forms to our own runs: loss vs parameters, dataset size or steps of a `launch.msp` sweep, or
test CE vs training-set size of a `launch.addition` run. The largest `source.n_test` x are held out and scored
(0: a fifth of the points, at least 1).

Variants (`--config=configs/fit_sweep.py:<variant>`), each needing `--config.source.workdir=DIR`:

n         loss vs N (final loss, seed mean) of a width sweep, e.g. configs/msp.py:quick.
            python -m launch.fit --config=configs/fit_sweep.py:n --config.source.workdir=runs/quick \
                --workdir=runs/quick_fit_n
d         loss vs D (min over steps, seed mean) of a dataset-size sweep (msp.py:quick_d, fig2_d).
steps     loss vs steps of every run of a sweep.
addition  test CE (min over training, seed mean) vs training-set size of configs/addition.py:fit / paper.
            python -m launch.fit --config=configs/fit_sweep.py:addition --config.source.workdir=runs/add_fit \
                --workdir=runs/add_fit_bnsl
"""

import ml_collections

from scaling.fit.experiment import fit_config
from scaling.engine import config as C


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "n")  # "variant[,field=value...]"
  c = fit_config()
  c.methods = ("m1", "m2", "m3", "m4", "bnsl0", "bnsl1", "bnsl")
  c.compare = ("m1", "m2", "m3", "m4", "bnsl")
  c.fit.update(max_breaks=1)
  if name in ("n", "d", "steps"):
    c.source.update(kind="sweep", axis=name)
  elif name == "addition":
    c.source.update(kind="addition", n_test=3)  # the paper's 4-digit split holds out the 3 largest sizes
  else:
    raise ValueError(f"unknown variant {name!r}; one of n, d, steps, addition")
  return C.apply_args(c, overrides)
