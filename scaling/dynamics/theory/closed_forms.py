"""The t -> inf closed forms of the DMFT (spec `dmft.md` §2.7): the ridgeless random-feature test loss, the E = inf
ensemble's loss, the renormalised ridge κ*, and the early-time transfer function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from scaling.dynamics.theory.inputs import ArrayOrFloat, _batched, _check_spectrum, _inv, _out, _precision



def _static_one(lam_M, wstar2_M, inv_n, inv_p, iters: int = 200):
  """(L(∞), L_{E=∞}(∞)) by bisection in log κ on Σ λ/(λ+κ) = n = min(N, P); n >= M gives κ = 0 and zero loss."""
  M = lam_M.shape[0]
  n = 1.0 / jnp.maximum(inv_n, inv_p)  # inf when N = P = inf
  full = n >= M
  n = jnp.where(full, 0.5 * M, n)
  lo = jnp.log(jnp.min(lam_M) * (M - n) / n)  # there Σ λ/(λ+κ) >= n
  hi = jnp.log(jnp.sum(lam_M) / n)  # there Σ λ/(λ+κ) <= n

  def bisect(_, bounds):
    lo, hi = bounds
    mid = 0.5 * (lo + hi)
    above = jnp.sum(lam_M / (lam_M + jnp.exp(mid))) > n
    return jnp.where(above, mid, lo), jnp.where(above, hi, mid)

  lo, hi = jax.lax.fori_loop(0, iters, bisect, (lo, hi))
  kappa = jnp.exp(0.5 * (lo + hi))
  q_M = 1.0 / (kappa + lam_M) ** 2
  g2, g1 = jnp.sum(lam_M ** 2 * q_M), jnp.sum(lam_M * q_M)
  g0 = kappa ** 2 * g1
  b0 = kappa ** 2 * jnp.sum(lam_M * wstar2_M * q_M)
  b2 = kappa ** 2 * jnp.sum(lam_M ** 2 * wstar2_M * q_M)
  den = (1.0 - g2 * inv_p) * (1.0 - g2 * inv_n) - g0 * g1 * inv_n * inv_p
  loss = (b0 * (1.0 - g2 * inv_n) + g1 * inv_n * b2) / den
  loss_e = b0 / (1.0 - g2 * inv_p)
  loss = jnp.where(inv_n == inv_p, jnp.inf, loss)  # N = P: the denominator vanishes identically (double descent)
  return jnp.where(full, 0.0, loss), jnp.where(full, 0.0, loss_e), jnp.where(full, 0.0, kappa)


def _static(lam_M, wstar2_M, N, P):
  _check_spectrum(lam_M, wstar2_M)
  _precision(False, lam_M=lam_M, wstar2_M=wstar2_M, N=N, P=P)
  inv_n, inv_p = _inv(N, "N"), _inv(P, "P")
  with jax.enable_x64(True):
    outs = _batched(_static_one, (), inv_n, inv_p, jnp.asarray(lam_M, jnp.float64), jnp.asarray(wstar2_M, jnp.float64))
  return [_out(o) for o in outs]


def static_loss(lam_M, wstar2_M, N, P) -> ArrayOrFloat:
  """t -> ∞ (ridgeless random-feature regression) test loss, the closed form of spec §2.7; N, P > 0 may be inf and
  broadcast. It diverges at N = P (double descent)."""
  return _static(lam_M, wstar2_M, N, P)[0]


def static_loss_ensemble_inf(lam_M, wstar2_M, N, P) -> ArrayOrFloat:
  """t -> ∞ loss of the E = ∞ ensemble, B̃0/(1 − Γ2/P) (spec §2.7)."""
  return _static(lam_M, wstar2_M, N, P)[1]


def static_kappa(lam_M, N, P) -> ArrayOrFloat:
  """The renormalised ridge κ* solving Σ λ_k/(λ_k+κ) = min(N, P) (0 when min(N, P) >= M)."""
  return _static(lam_M, lam_M, N, P)[2]


def early_time_H(lam_M, t, N, P) -> np.ndarray:
  """Early-time H_k(t) ≈ e^{−λt} + ε/λ [1 − e^{−λt} − λt e^{−λt}], ε = trΛ (1/N + 1/P), valid for t << N/trΛ
  (spec §2.7). Shape t.shape + (M,)."""
  lam = np.asarray(lam_M, np.float64)
  eps = lam.sum() * (_inv(N, "N") + _inv(P, "P"))
  t = np.asarray(t, np.float64)[..., None]
  x = lam * t
  return np.exp(-x) + eps / lam * (-np.expm1(-x) - x * np.exp(-x))
