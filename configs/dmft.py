r"""Dynamical model of neural scaling laws (Bordelon, Atanasov & Pehlevan 2024; spec dmft.md): DMFT theory (lines)
and exact gradient-flow simulations of the power-law random-feature model (points, ± 1 SE over seeds), one figure
and one table per variant. λ_k = k^-b, λ_k w*_k² = k^-a, M modes; N or P = 0 means infinity.

  python -m launch.dmft --config=configs/dmft.py:<variant> --workdir=runs/dmft_<variant>

quick              CI: a=1.5, b=1.25, M=500, (N, P) = (32, 128), (128, 32); 8 seeds; t in [0.1, 1e3].
theory_vs_sim      spec §6 A2: a=1.5, b=1.25, M=2000, 20 seeds, (N, P) = (64, 256), (256, 64), (128, 256),
                   (256, 128), (128, ∞), (∞, 128) (N = ∞: theory only); t in [0.1, 1e4].
exponents          spec A4: a=2, b=1.5, M=2e5, theory only: L(∞, N, ∞), L(∞, ∞, P) for N, P = 100 ... 3200 (x2) and
                   L(t, ∞, ∞) for t in [10, 1e4]; predicted -1, -1, -0.667.
compute_optimal    spec A5: a=2, b=1.5, M=8000, P=∞, N = 16 ... 2048 on a 2^(1/4) grid (theory; simulation up to
                   N=256, 10 seeds); frontier L*(C), N*(C), t*(C) with C = N t; predicted -0.4, 0.4, 0.6.
width_convergence  spec A6: a=1.5, b=1.25, M=2e4, P=∞, N = 50 ... 800; c(t) ≈ 1 early, → a-1 = 0.5 late.
train_test_gap     data reuse: N=256, P = 64 ... 1024, M=2000, 20 seeds; test, train and their gap.
ensembles          spec §3: E = 1, 4, ∞ members of width 64 vs one of width 256, online (P=∞) and P=512.
real_spectrum      spec §5.3: NTK of a 40-256-256-1 MLP at init on 2000 MNIST-1D points (generated offline by a local
                   tfds builder into <workdir>/tfds, or --config.real.dataset=mnist / cifar10 prepared by you in
                   --config.real.data_dir), even-vs-odd labels; b and a fitted over ranks 5-100; the linearised
                   network trained by gradient flow on P = 125 ... 1000 points (4 draws) against the DMFT with the
                   empirical and the power-law spectrum.
"""

import ml_collections

from scaling.dynamics.dmft import dmft_config
from scaling.engine import config as C


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "quick")  # "variant[,field=value...]"
  c = dmft_config()
  if name == "quick":
    c.task.M = 500
    c.N, c.P = (32, 128), (128, 32)
    c.t.update(min=0.1, max=1e3, num=21)
    c.check_t = (1.0, 10.0, 100.0)
    c.sim.seeds = 8
  elif name == "theory_vs_sim":
    c.N, c.P = (64, 256, 128, 256, 128, 0), (256, 64, 256, 128, 0, 128)
  elif name == "exponents":
    c.experiment = "exponents"
    c.task.update(a=2.0, b=1.5, M=200_000)
    c.N = tuple(100 * 2 ** k for k in range(6))
    c.P = (0,)
    c.pairs = False
    c.t.update(min=10.0, max=1e4, num=31)
    c.check_t = ()
    c.sim.enabled = False
  elif name == "compute_optimal":
    c.experiment = "compute_optimal"
    c.task.update(a=2.0, b=1.5, M=8000)
    c.N = tuple(sorted({int(round(16 * 2 ** (k / 4))) for k in range(29)}))
    c.P = (0,)
    c.pairs = False
    c.t.update(min=0.1, max=2e6, num=60)
    c.check_t = ()
    c.sim.update(seeds=10, max_width=256)
  elif name == "width_convergence":
    c.experiment = "width_convergence"
    c.task.M = 20_000
    c.N, c.P, c.pairs = (50, 100, 200, 400, 800), (0,), False
    c.t.update(min=0.1, max=1e6, num=43)
    c.check_t = (0.1, 1.0, 10.0, 100.0, 1e3, 1e6)
    c.sim.update(seeds=10)
  elif name == "train_test_gap":
    c.experiment = "train_test_gap"
    c.N, c.P, c.pairs = (256,), (64, 128, 256, 512, 1024), False
  elif name == "ensembles":
    c.experiment = "ensembles"
    c.N, c.P = (64, 256, 64, 256), (0, 0, 512, 512)
    c.E = (1, 4, 0)
    c.check_t = (100.0, 1e4)
  elif name == "real_spectrum":
    c.experiment = "real_spectrum"
    c.t.update(min=0.1, max=1e4, num=41)
    c.check_t = (1.0, 10.0, 100.0, 1e4)
  else:
    raise ValueError(f"unknown variant {name!r}; one of quick, theory_vs_sim, exponents, compute_optimal, "
                     "width_convergence, train_test_gap, ensembles, real_spectrum")
  return C.apply_args(c, overrides)
