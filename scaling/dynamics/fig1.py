"""The dynamical model's Fig 1 (spec `dmft.md` §5.1) on a real network: the measured loss surface L(t, N) of a width
x time sweep, its 2-D law with bootstrap intervals, the compute-optimal frontier, and the DMFT's exponents predicted
from the network's kernel spectra (at initialisation and after training) beside the measured ones.

Conventions:
- N is the parameter count, t the training step, B the batch; one pass, so the samples seen are D = B·t and the
  training compute is C = 6·N·D (the usual FLOPs per parameter per sample; the exponents do not depend on the 6).
- The law is Chinchilla's form in (N, D): L = L∞ + A N^-α_N + B' D^-α_t (`scaling.fit.chinchilla_fit`: Huber on log
  residuals, bootstrap by case resampling of the (width, seed, t) points). With D ∝ t, α_t is the time exponent.
  Minimising it at fixed C gives N* ∝ C^(α_t/(α_N+α_t)), t* ∝ C^(α_N/(α_N+α_t)) and L* − L∞ ∝ C^(−α_N α_t/(α_N+α_t)).
- The DMFT (§3) reads the exponents off the kernel: λ_k ∝ k^-b, task power tail Σ_{j>k} λ_j w*_j² ∝ k^(1−a);
  then α_t = (a−1)/b, α_N = min(a−1, b) and the frontier of `theory.exponents.compute_optimal_exponents`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import numpy as np

from scaling.dynamics import spectra
from scaling.dynamics.theory import exponents
from scaling.fit import chinchilla_fit as cf

FLOPS_PER_PARAM_SAMPLE = 6.0
# Spec §3 / §5 item 3: the initial NTK of a ResNet on CIFAR-5M (animate vs inanimate), per the paper's notes.
PAPER_CIFAR5M = {"a": 1.15, "b": 2.0}


@dataclasses.dataclass(frozen=True)
class Surface:
  """Test loss per width, seed and step of a one-pass sweep, at log-spaced steps."""

  width_W: np.ndarray
  n_params_W: np.ndarray
  steps_T: np.ndarray  # float: a bin's geometric-mean step
  batch: int
  L_WxSxT: np.ndarray

  @property
  def mean_WxT(self) -> np.ndarray:
    return self.L_WxSxT.mean(axis=1)

  @property
  def samples_T(self) -> np.ndarray:
    return self.batch * self.steps_T.astype(np.float64)

  def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, D, L) per (width, seed, step): the fit's data."""
    W, S, T = self.L_WxSxT.shape
    N = np.broadcast_to(self.n_params_W[:, None, None], (W, S, T)).astype(np.float64)
    D = np.broadcast_to(self.samples_T[None, None, :], (W, S, T))
    return N.ravel(), D.ravel(), self.L_WxSxT.astype(np.float64).ravel()


def log_bins(steps: np.ndarray, t_min: int, n: int) -> list[np.ndarray]:
  """Indices of the logged steps in each of `n` log-spaced bins over [t_min, last step] (empty bins dropped)."""
  steps = np.asarray(steps)
  if steps[-1] < max(t_min, 1) or np.sum(steps >= max(t_min, 1)) < 2:
    raise ValueError(f"need >= 2 logged steps >= t_min={t_min} (the last is {int(steps[-1])})")
  edges = np.geomspace(max(t_min, 1), steps[-1], n + 1)
  edges[-1] = np.inf
  bins = [np.flatnonzero((steps >= lo) & (steps < hi)) for lo, hi in zip(edges[:-1], edges[1:])]
  return [b for b in bins if b.size]


def surface(test_loss_WxSxT: np.ndarray, width_W: np.ndarray, n_params_W: np.ndarray, log_steps_T: np.ndarray,
            batch: int, *, t_min: int, n_times: int = 24, average: bool = True) -> Surface:
  """The surface on <= n_times log-spaced bins of logged steps >= t_min: per bin the mean loss of its logged steps
  at their geometric-mean step (a constant learning rate leaves step-to-step jitter that this averages out; the
  curvature of L in log t biases it by a fraction of a bin's width), or with `average` False its first step's.
  ValueError if the widths do not grow N or a loss is not finite and positive."""
  n = np.asarray(n_params_W, np.float64)
  if n.ndim != 1 or n.size < 3 or np.any(np.diff(n) <= 0):
    raise ValueError(f"need >= 3 widths with increasing parameter counts, got {n.tolist()}")
  steps = np.asarray(log_steps_T)
  bins = log_bins(steps, t_min, n_times)
  L = np.asarray(test_loss_WxSxT, np.float64)
  if not np.all(np.isfinite(L[..., np.concatenate(bins)]) & (L[..., np.concatenate(bins)] > 0)):
    raise ValueError("test losses must be finite and > 0 at the steps used")
  if not average:
    bins = [b[:1] for b in bins]
  L_WxSxT = np.stack([L[..., b].mean(axis=-1) for b in bins], axis=-1)
  t_T = np.array([np.exp(np.log(steps[b]).mean()) for b in bins])
  return Surface(np.asarray(width_W), n, t_T, int(batch), L_WxSxT)


@dataclasses.dataclass(frozen=True)
class Law:
  """The fitted 2-D law and its bootstrap: `params` (E = L∞, A, B, alpha = α_N, beta = α_t) and 95% intervals of
  every derived exponent in `intervals` (alpha_N, alpha_t, n_star, t_star, loss_star); `n_converged` counts the
  usable resamples."""

  params: dict[str, float]
  estimates: dict[str, float]
  intervals: dict[str, tuple[float, float]]
  n_boot: int
  n_converged: int
  converged: bool
  n_points: int


def _derived(alpha: np.ndarray, beta: np.ndarray) -> dict[str, np.ndarray]:
  s = alpha + beta
  return {"alpha_N": alpha, "alpha_t": beta, "n_star": beta / s, "t_star": alpha / s, "loss_star": -alpha * beta / s}


# A refit whose floor L∞ fell below this fraction of the smallest loss sits on the L∞ -> 0 boundary: the objective is
# flat along log L∞ there (no prediction changes by a float64 ulp), so Newton's decrement test is not meaningful
# and the refit counts as usable when its parameters are finite.
FLOOR_AT_ZERO = 1e-12


def fit_law(s: Surface, *, n_boot: int = 1000, key: int = 0, level: float = 0.95, delta: float = 1e-3) -> Law:
  """L(N, D) fitted to every (width, seed, step) point; percentile intervals over the usable resamples (converged,
  or on the L∞ = 0 boundary: `FLOOR_AT_ZERO`). n_boot = 0: no intervals (NaN)."""
  N, D, L = s.points()
  base = cf.fit_chinchilla(N, D, L, objective="huber_log", delta=delta)
  est = {k: float(v) for k, v in _derived(np.asarray(base.params["alpha"]), np.asarray(base.params["beta"])).items()}
  intervals = {k: (math.nan, math.nan) for k in est}
  n_ok = 0
  if n_boot:
    boot = cf.bootstrap_chinchilla(N, D, L, n_boot=n_boot, key=key, level=level, base=base, delta=delta,
                                   k=FLOPS_PER_PARAM_SAMPLE)
    nat = cf.natural(boot.theta_Bx5)
    ok = boot.converged_B | (np.all(np.isfinite(boot.theta_Bx5), axis=1) & (nat["E"] < FLOOR_AT_ZERO * L.min()))
    n_ok = int(ok.sum())
    if n_ok:
      q = (50 * (1 - level), 50 * (1 + level))
      samples = _derived(nat["alpha"][ok], nat["beta"][ok])
      intervals = {k: tuple(float(x) for x in np.percentile(v, q)) for k, v in samples.items()}
  converged = base.converged or base.params["E"] < FLOOR_AT_ZERO * L.min()
  return Law(dict(base.params), est, intervals, n_boot, n_ok, converged, len(L))


def measured_frontier(s: Surface) -> exponents.Frontier:
  """The frontier of the seed-mean data themselves (no law): min over the widths that reach C = 6 N B t at a logged
  step (log L interpolated in log t), over the whole range of C; exponents of N*, t* (= D*/B) and L* (of L, not
  L − L∞) over the optima strictly inside the width grid."""
  C = np.geomspace(s.n_params_W[0] * s.samples_T[0], s.n_params_W[-1] * s.samples_T[-1], 60)
  f = exponents.compute_optimal_frontier(s.mean_WxT, s.n_params_W, s.samples_T, C)
  return f._replace(C_C=FLOPS_PER_PARAM_SAMPLE * f.C_C, t_C=f.t_C / s.batch)


@dataclasses.dataclass(frozen=True)
class KernelExponents:
  """b, a (and OLS standard errors) of a kernel on n points, over ranks `k_range`."""

  b: float
  b_se: float
  a: float
  a_se: float
  n: int
  k_range: tuple[int, int]
  lam: np.ndarray
  power: np.ndarray


def kernel_exponents(apply_fn: Callable[[Any, Any], Any], params: Any, x_NxD: np.ndarray, y_N: np.ndarray,
                     k_range: tuple[int, int]) -> KernelExponents:
  """The empirical NTK of the scalar-output `apply_fn` at `params` on x, its spectrum and (b, a) against the ±1
  target y (`scaling.dynamics.spectra`)."""
  K = spectra.ntk_jacobian(apply_fn, params, x_NxD)
  lam, power = spectra.kernel_spectrum(K, y_N)
  b, a = spectra.spectral_exponent(lam, k_range), spectra.task_exponent(power, k_range)
  return KernelExponents(b.exponent, b.stderr, a.exponent, a.stderr, len(y_N), tuple(k_range), lam, power)


def theory(a: float, b: float) -> dict[str, float]:
  """The DMFT's exponents (positive decay rates; frontier exponents signed) for task exponent a and spectral b;
  NaN where the asymptotics need a > 1 and b > 1."""
  if not (a > 1 and b > 1):
    return dict.fromkeys(("alpha_t", "alpha_N", "n_star", "t_star", "loss_star"), math.nan)
  co = exponents.compute_optimal_exponents(a, b)
  return {"alpha_t": -exponents.time_exponent(a, b), "alpha_N": -exponents.model_exponent(a, b),
          "n_star": co["n"], "t_star": co["t"], "loss_star": co["loss"]}


ROWS = (("alpha_t", "α_t (L − L∞ ∝ t^-α_t)"), ("alpha_N", "α_N (L − L∞ ∝ N^-α_N)"), ("n_star", "N* ∝ C^x"),
        ("t_star", "t* ∝ C^x"), ("loss_star", "L* − L∞ ∝ C^x"))


def table(law: Law, frontier: exponents.Frontier, kernels: dict[str, KernelExponents]) -> list[dict[str, str]]:
  """One row per exponent: measured (2-D law, 95% CI), the data's own frontier, the DMFT from each kernel, and the
  paper's CIFAR-5M initial-NTK prediction; plus rows for the kernels' b and a."""
  paper = theory(**PAPER_CIFAR5M)
  rows = []
  for name, label in ROWS:
    lo, hi = law.intervals[name]
    row = {"quantity": label, "measured (2-D law, 95% CI)": f"{law.estimates[name]:.3f} [{lo:.3f}, {hi:.3f}]"}
    fr = {"n_star": frontier.exponents["n"], "t_star": frontier.exponents["t"]}.get(name)
    row["measured (frontier of the data)"] = ("" if fr is None else f"{fr:.3f}" if math.isfinite(fr) else
                                              f"none: {int(frontier.interior.sum())} optima inside the widths")
    for kname, k in kernels.items():
      row[f"DMFT, {kname} kernel"] = f"{theory(k.a, k.b)[name]:.3f}"
    row["paper: CIFAR-5M initial NTK"] = f"{paper[name]:.3f}"
    rows.append(row)
  for sym, label in (("b", "b (λ_k ∝ k^-b)"), ("a", "a (task power tail ∝ k^(1−a))")):
    row = {"quantity": label, "measured (2-D law, 95% CI)": "", "measured (frontier of the data)": ""}
    for kname, k in kernels.items():
      row[f"DMFT, {kname} kernel"] = f"{getattr(k, sym):.3f} ± {getattr(k, sym + '_se'):.3f}"
    row["paper: CIFAR-5M initial NTK"] = f"{PAPER_CIFAR5M[sym]:.2f}"
    rows.append(row)
  return rows


def verdict(law: Law, kernel: KernelExponents, name: str = "initial") -> list[str]:
  """Plain sentences: where the trained network's measured decay beats (or trails) the kernel's DMFT prediction,
  and by what factor; "outside the interval" only when the prediction lies outside the 95% CI."""
  pred = theory(kernel.a, kernel.b)
  out = []
  for key, what in (("alpha_t", "in time"), ("alpha_N", "in width")):
    m, (lo, hi), p = law.estimates[key], law.intervals[key], pred[key]
    if not math.isfinite(p):
      out.append(f"{what}: no DMFT prediction from the {name} kernel (needs a > 1 and b > 1; measured a = "
                 f"{kernel.a:.3f}, b = {kernel.b:.3f})")
      continue
    inside = lo <= p <= hi
    side = "beats" if m > p else "trails"
    out.append(f"{what}: measured α = {m:.3f} [{lo:.3f}, {hi:.3f}] {side} the {name} kernel's DMFT α = {p:.3f} "
               f"by {m / p:.2f}x" + (" (within the interval)" if inside else " (outside the interval)"))
  return out


def plot(path: str, s: Surface, law: Law, frontier: exponents.Frontier, title: str = "") -> str:
  """Fig 1(a, b): (a) test loss against steps per width (seed means; the law dashed), (b) against compute
  C = 6 N B t, with the law's frontier L*(C) and the data's own frontier optima."""
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  from scaling import plotting  # pylint: disable=import-outside-toplevel
  from scaling.fit import compute_optimal  # pylint: disable=import-outside-toplevel

  fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(s.width_W)))
  for i, c in enumerate(colors):
    label = f"width {s.width_W[i]:g} (N={s.n_params_W[i]:.3g})"
    pred = cf.predict(law.params, np.full(s.samples_T.shape, s.n_params_W[i]), s.samples_T)
    ax.plot(s.steps_T, s.mean_WxT[i], "o-", ms=3, color=c, label=label)
    ax.plot(s.steps_T, pred, "--", color=c, lw=1)
    C = FLOPS_PER_PARAM_SAMPLE * s.n_params_W[i] * s.samples_T
    bx.plot(C, s.mean_WxT[i], "-", color=c)
  C_grid = np.geomspace(FLOPS_PER_PARAM_SAMPLE * s.n_params_W[0] * s.samples_T[0],
                        FLOPS_PER_PARAM_SAMPLE * s.n_params_W[-1] * s.samples_T[-1], 60)
  opt = compute_optimal.frontier(law.params, C_grid, k=FLOPS_PER_PARAM_SAMPLE)
  bx.plot(C_grid, opt["L_opt"], "k--", lw=1.2,
          label=f"law's frontier: N* ∝ C^{law.estimates['n_star']:.2f}, t* ∝ C^{law.estimates['t_star']:.2f}")
  m = frontier.interior
  bx.plot(frontier.C_C[m], frontier.L_C[m], "k.", ms=5, label="data's frontier optima")
  for a, xl in ((ax, "step t"), (bx, "compute C = 6 N B t (FLOPs)")):
    a.set(xscale="log", yscale="log", xlabel=xl, ylabel="test loss (nats)")
  ax.set_title(f"(a) one-pass test dynamics; law: α_t={law.estimates['alpha_t']:.3f}, α_N={law.estimates['alpha_N']:.3f}",
               fontsize=9)
  bx.set_title("(b) compute scaling", fontsize=9)
  ax.legend(fontsize=7)
  bx.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=10)
  fig.tight_layout()
  return plotting.save(fig, [path])[0]


def markdown(rows: list[dict[str, str]]) -> str:
  keys = list(rows[0])
  return "\n".join(["| " + " | ".join(keys) + " |", "|---" * len(keys) + "|"]
                   + ["| " + " | ".join(str(r.get(k, "")) for k in keys) + " |" for r in rows]) + "\n"


def summary(s: Surface, law: Law, frontier: exponents.Frontier, kernels: dict[str, KernelExponents]) -> dict[str, Any]:
  """Everything the report states, as plain JSON-able values."""
  return {"widths": s.width_W.tolist(), "n_params": s.n_params_W.tolist(), "steps": s.steps_T.tolist(),
          "batch": s.batch, "seeds": int(s.L_WxSxT.shape[1]),
          "law": {"params": law.params, "estimates": law.estimates, "intervals": law.intervals,
                  "n_boot": law.n_boot, "n_converged": law.n_converged, "converged": law.converged,
                  "n_points": law.n_points},
          "data_frontier": {"exponents": frontier.exponents, "n_interior": int(frontier.interior.sum())},
          "kernels": {k: {"a": v.a, "a_se": v.a_se, "b": v.b, "b_se": v.b_se, "n": v.n, "k_range": list(v.k_range),
                          "theory": theory(v.a, v.b)} for k, v in kernels.items()},
          "paper_cifar5m": {**PAPER_CIFAR5M, "theory": theory(**PAPER_CIFAR5M)},
          "verdict": {k: verdict(law, v, k) for k, v in kernels.items()}}
