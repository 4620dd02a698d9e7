"""Spectra from a real network fed to the DMFT (spec `dmft.md` §5.3), the `real_spectrum` variant of launch.dmft.

1. A pool of n_pool points of a dataset read through tensorflow-datasets without TensorFlow
   (`scaling.dynamics.datasets`: MNIST-1D is generated offline by a local builder; any tfds dataset the user has
   prepared works too), binary ±1 labels (even vs odd class).
2. The NTK of an MLP at initialisation on the pool: eigenvalues λ_k = eig(K)/n_pool and task powers λ_k w*_k²
   (`scaling.dynamics.spectra.kernel_spectrum`), the exponents b and a fitted over a rank window.
3. The linearised network trained by gradient flow on P points of the pool (kernel gradient flow, N = ∞), tested on
   the rest, over `draws` random training sets: test and train MSE against t.
4. The DMFT at N = ∞, P with (i) the empirical spectrum of the pool and (ii) the fitted power law, as predictions of
   those curves, and the predicted time and data exponents against the ones measured on the linearised network.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from scaling.dynamics import datasets, spectra
from scaling.dynamics.theory import exponents, inputs, solver


def pool(real: dict[str, Any], workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """The first n_pool training points (x_NxD, ±1 labels) of `real.dataset`."""
  data_dir = real["data_dir"] or os.path.join(workdir, "tfds")
  need = 10 * math.ceil(real["n_pool"] / 0.8 / 10)  # the generator's train split is 0.8; a multiple of 10 classes
  kwargs = {"num_samples": max(5000, need)} if real["dataset"] == "mnist1d" else None
  x, y = datasets.load_arrays(real["dataset"], "train", data_dir=data_dir, max_examples=real["n_pool"],
                              builder_kwargs=kwargs)
  if len(x) < real["n_pool"]:
    raise ValueError(f"{real['dataset']} has only {len(x)} training points, n_pool={real['n_pool']}")
  return np.asarray(x, np.float32), spectra.parity_labels(y).astype(np.float64)


def compute(cfg: dict[str, Any], workdir: str, t_T: np.ndarray) -> dict[str, np.ndarray]:
  """Spectrum, fitted exponents, linearised-network curves [P, draw, t] and DMFT curves [P, t]."""
  real = cfg["real"]
  x, y = pool(real, workdir)
  n = len(y)
  params = spectra.init(jax.random.key(real["init_seed"]), [x.shape[1]] + [real["width"]] * (real["depth"] - 1) + [1])
  K = spectra.ntk(params, x)
  lam, power = spectra.kernel_spectrum(K, y)
  k_range = tuple(real["k_range"])
  b_fit = spectra.spectral_exponent(lam, k_range)
  a_fit = spectra.task_exponent(power, k_range)
  keep = lam > lam[0] * 1e-12  # numerically zero modes carry no usable w*
  lam_e, w2_e = lam[keep], power[keep] / lam[keep]
  Ps = np.asarray(real["P"], np.int64)
  rng = np.random.default_rng(real["init_seed"])
  test = np.zeros((len(Ps), real["draws"], len(t_T)))
  train = np.zeros_like(test)
  for i, P in enumerate(Ps):
    for d in range(real["draws"]):
      perm = rng.permutation(n)
      tr, te = perm[:P], perm[P:]
      c = spectra.linearized_flow(K[np.ix_(tr, tr)], K[np.ix_(te, tr)], y[tr], y[te], t_T)
      test[i, d], train[i, d] = c.test_T, c.train_T
  th_emp, th_emp_train = solver.loss_curve(lam_e, w2_e, t_T, 0.0, 1.0 / Ps)
  a, b = a_fit.exponent, b_fit.exponent
  lam_pl, w2_pl = inputs.power_law_spectrum(a, b, n)
  scale = float(np.sum(power) / np.sum(lam_pl * w2_pl))  # the power law with the measured total E[y²]
  th_pl, _ = solver.loss_curve(lam_pl, w2_pl * scale, t_T, 0.0, 1.0 / Ps)
  return {"t": t_T, "P": Ps, "lam": lam, "power": power, "b": b, "b_se": b_fit.stderr, "a": a, "a_se": a_fit.stderr,
          "test": test, "train": train, "theory_emp": np.asarray(th_emp), "theory_emp_train": np.asarray(th_emp_train),
          "theory_pl": np.asarray(th_pl)}


def rows(r: dict[str, np.ndarray], cfg: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
  """(curve comparison at check_t, exponent table)."""
  t, Ps = r["t"], r["P"]
  comp = []
  for i, P in enumerate(Ps):
    m = r["test"][i].mean(0)
    se = r["test"][i].std(0, ddof=1) / math.sqrt(r["test"].shape[1])
    for tc in cfg["check_t"]:
      j = int(np.argmin(np.abs(t - tc)))
      comp.append({"P": int(P), "t": float(t[j]), "linearised net (mean ± SE)": f"{m[j]:.4f} ± {se[j]:.4f}",
                   "DMFT, empirical spectrum": float(r["theory_emp"][i, j]),
                   "DMFT, fitted power law": float(r["theory_pl"][i, j])})
  a, b = float(r["a"]), float(r["b"])
  lo, hi = cfg["real"]["t_fit"]
  sel = (t >= lo) & (t <= hi)
  big = len(Ps) - 1
  t_meas = exponents.fit_power_law(t[sel], r["test"][big].mean(0)[sel])[0]
  t_emp = exponents.fit_power_law(t[sel], r["theory_emp"][big][sel])[0]
  best = r["test"].mean(1).min(axis=1)  # early-stopped test loss per P
  p_meas = exponents.fit_power_law(Ps, best)[0]
  p_emp = exponents.fit_power_law(Ps, r["theory_emp"].min(axis=1))[0]
  ex = [{"quantity": f"b (λ_k ∝ k^-b, ranks {cfg['real']['k_range']})", "value": f"{b:.3f} ± {float(r['b_se']):.3f}"},
        {"quantity": "a (Σ_{j>k} λ_j w*_j² ∝ k^(1-a))", "value": f"{a:.3f} ± {float(r['a_se']):.3f}"},
        {"quantity": f"time exponent, t in [{lo:g}, {hi:g}], P={int(Ps[big])}",
         "value": f"predicted −(a−1)/b = {-(a - 1) / b:.3f}; DMFT (empirical spectrum) {t_emp:.3f}; "
                  f"linearised net {t_meas:.3f}"},
        {"quantity": "data exponent (early-stopped loss vs P)",
         "value": f"predicted −min(a−1, 2b) = {-min(a - 1, 2 * b):.3f}; DMFT (empirical spectrum) {p_emp:.3f}; "
                  f"linearised net {p_meas:.3f}"}]
  return comp, ex


def plot(path: str, r: dict[str, np.ndarray]) -> str:
  from scaling import plotting  # pylint: disable=g-import-not-at-top
  plt = plotting.plt
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
  k = np.arange(1, len(r["lam"]) + 1)
  axes[0].loglog(k, r["lam"], label=f"λ_k (b ≈ {float(r['b']):.2f})")
  axes[0].loglog(k[:-1], spectra.tail_power(r["power"])[:-1], label=f"Σ_(j>k) λ_j w*_j² (a ≈ {float(r['a']):.2f})")
  axes[0].set(xlabel="rank k", title="NTK at initialisation")
  axes[0].legend(fontsize=8)
  t = r["t"]
  sel = np.unique(np.geomspace(1, len(t), 14).astype(int) - 1)
  for i, P in enumerate(r["P"]):
    color = f"C{i}"
    m = r["test"][i].mean(0)
    se = r["test"][i].std(0, ddof=1) / math.sqrt(r["test"].shape[1])
    axes[1].errorbar(t[sel], m[sel], yerr=se[sel], fmt="o", ms=3.5, color=color, capsize=2, label=f"P={int(P)}")
    axes[1].loglog(t, r["theory_emp"][i], "-", color=color)
    axes[1].loglog(t, r["theory_pl"][i], ":", color=color)
  axes[1].set(xlabel="t (gradient-flow time)", ylabel="test MSE",
              title="points: linearised net; —: DMFT (empirical λ); ··: DMFT (power law)")
  axes[1].legend(fontsize=8)
  plotting.tidy_log_axes(fig)
  out = plotting.save(fig, [path])[0]
  plt.close(fig)
  return out
