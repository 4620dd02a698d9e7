r"""Extrapolation benchmark of scaling-law forms on Alabdulmohsin et al.'s curves (spec bnsl.md §3): every method is
fitted on each curve's Training==1 points and scored by RMSLE on its Training==0 points.

Methods: our multistart fits of M1-M4 and BNSL with n = 0, 1, 2 breaks ("bnsl": n chosen per curve by validation on
its largest fitted x), all with the BNSL paper's objective (MSLE of log(y + 1)), and ref_m1..ref_m4, the benchmark
authors' own estimators (`scaling.fit.reference`). Win rates compare the BNSL paper's set: ref_m1..ref_m4 and BNSL
n=1. The CSVs are read from ../shared/data/scaling_benchmark (or $SCALING_BENCHMARK_DIR); pass your own with
`--config.source.lang=PATH --config.source.vision=PATH`.

Variants (`--config=configs/fit_benchmark.py:<variant>`):

full    (default) all 92 curves: IC (72), NMT (5), LM (5), BB (10).
          python -m launch.fit --config=configs/fit_benchmark.py --workdir=runs/fit_benchmark
lang    NMT, LM and BB only (20 curves).
nmt     the 5 NMT curves of spec §3's table.
quick   CI: NMT and BB with 512 starts / top 8 and no n = 2 fits.
          python -m launch.fit --config=configs/fit_benchmark.py:quick --workdir=runs/fit_quick
"""

import ml_collections

from scaling.fit.experiment import fit_config
from scaling.engine import config as C


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "full")  # "variant[,field=value...]"
  c = fit_config()
  if name == "full":
    pass
  elif name == "lang":
    c.source.domains = ("NMT", "LM", "BB")
  elif name == "nmt":
    c.source.domains = ("NMT",)
  elif name == "quick":
    c.source.domains = ("NMT", "BB")
    c.methods = ("m1", "m2", "m3", "m4", "bnsl0", "bnsl1", "bnsl", "ref_m1", "ref_m2", "ref_m3", "ref_m4")
    c.fit.update(n_starts=512, top_k=8, max_breaks=1)
  else:
    raise ValueError(f"unknown variant {name!r}; one of full, lang, nmt, quick")
  return C.apply_args(c, overrides)
