"""DMFT of the random-feature scaling-law model (Bordelon, Atanasov & Pehlevan 2024; spec `dmft.md`).

Model (spec §1): features with covariance Λ = diag(λ_k), target weights w*, a fixed Gaussian projection to N
features, P training points, gradient flow on L̂/2 from w = 0 (η = 1). Power law: λ_k = k^-b, λ_k w*_k² = k^-a.

Theory (spec §2, §4). In Laplace space one scalar root ρ(s) = R_1 R_3 per frequency gives H_k(s) = 1/(s + λ_k ρ);
the test-loss correlation C_0(s, s') solves a 2x2 linear system per frequency pair, and L(t) is a 2-D fixed-Talbot
inverse transform on the diagonal. Roots are tracked by continuation in t: warm-started Newton in a `lax.scan` over
an increasing, internally densified t grid (pitfall §7.1). Newton runs on D = Σ_k ρλ_k H_k rather than on ρ (spec §4):
as s -> 0 the physical root has D -> min(N, P) and the spurious one D -> max(N, P), while in ρ both go to 0, so
Newton on ρ jumps branches at late times once N and P are within a factor ~1.3 (e.g. N=128, P=160 at t ~ 4e4).

Speed: only the MT upper contour nodes are solved (the lower half is the conjugate), the mode sums run as real GEMMs
over cache-sized chunks of modes, and a batch of (1/N, 1/P) runs as a `lax.map` (faster than vmap on CPU).

Conventions: `inv_n` = 1/N and `inv_p` = 1/P, 0 for infinity, so widths and data sizes are vmappable scalars.
Everything runs in float64 inside ``jax.enable_x64(True)`` scopes; nothing turns x64 on globally. float32 is refused
(the 2-D Talbot sum amplifies round-off by ~e^{0.8 MT}: ~5e-3 relative error at MT=16) unless ``allow_float32``.
Exponents are signed: L ∝ t^time_exponent, etc.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

T_START = 1e-3  # continuation starts at t <= T_START (spec §4)
MAX_RATIO = 1.5  # max ratio between consecutive continuation points (spec §4)
CHUNK = 2048  # modes per block of the mode sums (keeps the blocks in cache; large M is much faster)
_LOW_PRECISION = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.complex64), np.dtype(jnp.bfloat16))
_F32_MESSAGE = ("the DMFT needs float64: the 2-D Talbot sum amplifies round-off by ~e^{0.8 MT} (spec §4, §7.2; float32 "
                "gives ~5e-3 relative error at MT=16). Pass float64 numpy arrays or Python floats, or build jax arrays "
                "and run jax.vmap/jit inside `with jax.enable_x64(True):`")

ArrayOrFloat = np.ndarray | float


def _out(x) -> ArrayOrFloat:
  x = np.asarray(x)
  return float(x) if x.ndim == 0 else x


def _host(x):
  """Concrete results come back as float64 numpy (jax float64 arrays would be truncated by later jnp ops outside an
  x64 scope); tracers (under the caller's vmap/jit) pass through."""
  return x if isinstance(x, jax.core.Tracer) else np.asarray(x)


# --------------------------------------------------------------------------------------------- inputs and checks


def power_law_spectrum(a: float, b: float, M: float | None) -> tuple[np.ndarray, np.ndarray]:
  """λ_k = k^-b and w*_k² = k^(b−a) (so λ_k w*_k² = k^-a) for k = 1..M, float64 numpy."""
  if M is None or (isinstance(M, float) and math.isinf(M)):
    if a <= 1 or b <= 1:
      raise ValueError(f"the M -> inf limit needs a > 1 and b > 1 (Σ k^-a and tr Λ = Σ k^-b diverge), got a={a}, "
                       f"b={b}")
    raise ValueError("M = inf cannot be materialised: pick a finite M >> max(N, P, t^(1/b)); the neglected tail is "
                     "Σ_(k>M) k^-a ~ M^(1-a)/(a-1) (spec §7.3)")
  if int(M) != M or M < 1:
    raise ValueError(f"M must be an integer >= 1, got {M}")
  k_M = np.arange(1, int(M) + 1, dtype=np.float64)
  return k_M ** -float(b), k_M ** (float(b) - float(a))


def _is_low_precision(x) -> bool:
  dt = getattr(x, "dtype", None)
  return dt is not None and np.dtype(dt) in _LOW_PRECISION


def _precision(allow_float32: bool, **arrays) -> np.dtype:
  """float64, or float32 (with a loud warning) when some input is low precision and `allow_float32`."""
  low = [name for name, x in arrays.items() if _is_low_precision(x)]
  if not low:
    return np.dtype(np.float64)
  if not allow_float32:
    raise ValueError(f"{', '.join(low)} is float32: {_F32_MESSAGE}")
  warnings.warn(f"computing the DMFT in float32 ({', '.join(low)}): expect ~1e-5 (MT=8) to ~5e-3 (MT=16) relative "
                "error; results are NOT float64-accurate", RuntimeWarning, stacklevel=3)
  return np.dtype(np.float32)


def _check_spectrum(lam_M, wstar2_M) -> None:
  if jnp.ndim(lam_M) < 1 or jnp.shape(lam_M)[-1] < 1 or jnp.shape(lam_M) != jnp.shape(wstar2_M):
    raise ValueError(f"lam_M and wstar2_M must be non-empty arrays of the same shape (M,), got {jnp.shape(lam_M)} "
                     f"and {jnp.shape(wstar2_M)}")
  if jnp.ndim(lam_M) != 1:
    raise ValueError(f"lam_M must be 1-D (vmap over spectra instead of stacking them), got {jnp.shape(lam_M)}")
  if not isinstance(lam_M, jax.core.Tracer):
    lam = np.asarray(lam_M, np.float64)
    if not np.all(np.isfinite(lam)) or np.any(lam <= 0):
      raise ValueError("lam_M must be finite and > 0")
  if not isinstance(wstar2_M, jax.core.Tracer):
    w2 = np.asarray(wstar2_M, np.float64)
    if not np.all(np.isfinite(w2)) or np.any(w2 < 0):
      raise ValueError("wstar2_M must be finite and >= 0")


def _check_inv(x, name: str) -> None:
  """`x` = 1/N (or 1/P) must be finite and >= 0, i.e. N > 0 (0 for N = inf); tracers are not checked."""
  if isinstance(x, jax.core.Tracer):
    return
  arr = np.asarray(x, np.float64)
  if not np.all(np.isfinite(arr)) or np.any(arr < 0):
    what = name.replace("inv_", "")
    raise ValueError(f"{name} = 1/{what.upper()} must be finite and >= 0 ({what.upper()} > 0, 0 for infinity), "
                     f"got {x}")


def _inv(x, name: str) -> np.ndarray:
  """N (or P) > 0, possibly inf -> 1/N as float64."""
  arr = np.asarray(x, np.float64)
  if np.any(np.isnan(arr)) or np.any(arr <= 0):
    raise ValueError(f"{name} must be > 0 (inf allowed), got {x}")
  return 1.0 / arr


def _check_t(t_T) -> np.ndarray:
  if isinstance(t_T, jax.core.Tracer):
    raise TypeError("t_T must be a concrete (numpy) array: the continuation grid is built on the host")
  t = np.asarray(t_T, np.float64)
  if t.ndim != 1 or t.size == 0:
    raise ValueError(f"t_T must be a non-empty 1-D array, got shape {t.shape}")
  if not np.all(np.isfinite(t)) or np.any(t <= 0):
    raise ValueError(f"t_T must be finite and > 0, got {t_T}")
  if np.any(np.diff(t) <= 0):
    raise ValueError("t_T must be strictly increasing (the Newton continuation runs along t)")
  return t


def continuation_grid(t_T: npt.ArrayLike, t_start: float = T_START, max_ratio: float = MAX_RATIO
                      ) -> tuple[np.ndarray, np.ndarray]:
  """(t_D, idx_T): t_T with geometric points prepended from min(t_start, t_T[0]) and inserted wherever consecutive
  points are more than `max_ratio` apart; t_D[idx_T] == t_T."""
  t = _check_t(t_T)
  pts, idx = [], []
  prev = min(t_start, t[0])
  pts.append(prev)
  for tk in t:
    if tk > prev:
      n = max(1, math.ceil(math.log(tk / prev) / math.log(max_ratio) - 1e-12))
      pts.extend(prev * (tk / prev) ** (np.arange(1, n + 1) / n))
    pts[-1] = tk
    idx.append(len(pts) - 1)
    prev = tk
  return np.asarray(pts), np.asarray(idx)


# --------------------------------------------------------------------------------------------- Talbot contour


def talbot(mt: int = 16) -> tuple[np.ndarray, np.ndarray]:
  """Fixed-Talbot unit nodes z_J and weights w_J over the full contour, J = 2 MT − 1 (spec §4).

  For time t: r = 2 MT/(5t), s_J = r z_J, c_J = r w_J and f(t) ≈ Re Σ_j c_j e^{s_j t} F(s_j); the unit nodes have
  z = θ(cot θ + i) (1 at θ = 0) and w = (1 + iσ)/(2 MT), σ = θ/sin²θ − cot θ (0 at θ = 0), θ_j = jπ/MT.
  """
  if int(mt) != mt or mt < 2:
    raise ValueError(f"mt must be an integer >= 2, got {mt}")
  theta = np.arange(-(mt - 1), mt) * np.pi / mt
  nz = theta != 0
  th = np.where(nz, theta, 1.0)
  cot = np.cos(th) / np.sin(th)
  z_J = np.where(nz, th * cot, 1.0) + 1j * theta
  sigma_J = np.where(nz, th / np.sin(th) ** 2 - cot, 0.0)
  return z_J, (1.0 + 1j * sigma_J) / (2 * mt)


# --------------------------------------------------------------------------------------------- jitted core


def _half_contour(mt: int, dtype) -> tuple[jax.Array, jax.Array]:
  """Unit nodes z_J and weights m_J w_J of the upper half contour θ_j >= 0, J = MT, with the multiplicity m_J = 1
  (θ = 0) or 2 (a conjugate pair): f(s̄) = conj f(s) for every quantity here, so Re Σ over the full contour equals
  Σ_j m_j Re(...) over the half and ρ, H need only be solved at the MT upper nodes."""
  z_J, w_J = talbot(mt)
  m_J = np.where(np.arange(mt) == 0, 1.0, 2.0)
  cdtype = np.result_type(dtype, np.complex64)
  return jnp.asarray(z_J[mt - 1:], cdtype), jnp.asarray(m_J * w_J[mt - 1:], cdtype)


def _full(x_J):
  """Upper-half node values -> all 2 MT − 1 nodes (the lower half by conjugation)."""
  return jnp.concatenate([x_J, jnp.conj(x_J[1:])])


def _chunked(chunk: int, *arrays_M):
  """Zero-pad (M,) arrays to a multiple of `chunk` and reshape to (C, chunk). A padded mode has λ = 0 and drops out
  of every sum (all of them carry a factor λ)."""
  M = arrays_M[0].shape[0]
  n = -(-M // chunk)
  return [jnp.pad(x, (0, n * chunk - M)).reshape(n, chunk) for x in arrays_M]


def _resolvent(lam_B, s_J, rho_J):
  """(Re, Im) of H_JxB = 1/(s_J + ρ_J λ_B) in real arithmetic (faster than XLA's complex division on CPU)."""
  a_JxB = jnp.real(s_J)[:, None] + jnp.real(rho_J)[:, None] * lam_B[None, :]
  b_JxB = jnp.imag(s_J)[:, None] + jnp.imag(rho_J)[:, None] * lam_B[None, :]
  d_JxB = 1.0 / (a_JxB * a_JxB + b_JxB * b_JxB)
  return a_JxB * d_JxB, -b_JxB * d_JxB


def _newton_sums(lam_CxB, s_J, rho_J):
  """(Σ_k λ_k H_k, Σ_k λ_k H_k²) per node, accumulated over chunks of modes."""

  def body(acc_4xJ, lam_B):
    hr, hi = _resolvent(lam_B, s_J, rho_J)
    return acc_4xJ + jnp.stack([hr, hi, hr * hr - hi * hi, 2.0 * hr * hi]) @ lam_B, None

  acc_4xJ, _ = jax.lax.scan(body, jnp.zeros((4,) + s_J.shape, lam_CxB.dtype), lam_CxB)
  return jax.lax.complex(acc_4xJ[0], acc_4xJ[1]), jax.lax.complex(acc_4xJ[2], acc_4xJ[3])


def _newton(lam_CxB, s_J, D_J, inv_n, inv_p, max_steps: int, tol: float):
  """Newton on F(D) = D − Σ_k ρλ_k/(s + ρλ_k) with ρ = R_1 R_3 = (1 − D/P)(1 − D/N) at every node, from the warm
  start `D_J`; stops when every step is < tol·|D|. Returns (D_J, ρ_J, worst relative step).

  Solving for D rather than ρ keeps the branches apart: as s -> 0 the physical root has D -> min(N, P) and the
  spurious one D -> max(N, P), while in ρ both go to 0 (the cold-start/branch pitfall, spec §4, §7.1).
  """

  def body(state):
    i, D, _ = state
    R1_J, R3_J = 1.0 - D * inv_p, 1.0 - D * inv_n
    rho = R1_J * R3_J
    h1_J, h2_J = _newton_sums(lam_CxB, s_J, rho)  # D(ρ) = ρ Σ λH, dD/dρ = s Σ λH²
    step = (D - rho * h1_J) / (1.0 + s_J * h2_J * (R3_J * inv_p + R1_J * inv_n))
    D = D - step
    return i + 1, D, jnp.max(jnp.abs(step) / jnp.maximum(jnp.abs(D), jnp.finfo(lam_CxB.dtype).tiny))

  def cond(state):
    i, _, err = state
    return (i < max_steps) & (err > tol)

  err0 = jnp.array(jnp.inf, lam_CxB.dtype)
  _, D_J, err = jax.lax.while_loop(cond, body, (0, D_J, err0))
  return D_J, (1.0 - D_J * inv_p) * (1.0 - D_J * inv_n), err


def _rho_scan(lam_CxB, z_J, t_D, inv_n, inv_p, max_steps: int, tol: float):
  """(ρ_DxJ, D_DxJ, worst Newton step) at the upper Talbot nodes of every t in t_D (increasing), by continuation in t
  from D = 0 (ρ = 1, exact as s -> ∞) at t_D[0]."""
  mt = z_J.shape[0]

  def step(D_J, t):
    D_J, rho_J, err = _newton(lam_CxB, (2.0 * mt / 5.0 / t) * z_J, D_J, inv_n, inv_p, max_steps, tol)
    return D_J, (rho_J, D_J, err)

  _, (rho_DxJ, D_DxJ, err_D) = jax.lax.scan(step, jnp.zeros_like(z_J), t_D)
  return rho_DxJ, D_DxJ, jnp.max(err_D)


def _polish(lam_CxB, s_J, D_J, rho_J, inv_n, inv_p, steps: int = 3):
  """(ρ, R_1, R_3) to full relative precision from the converged D.

  At late times ρ = R_1 R_3 is small because the factor of the smaller of N, P is: computing it as 1 − D/min(N, P)
  cancels (D -> min(N, P)) and the 2-D Talbot sum amplifies that error (8% in L at t = 1e8 for N=2, P=∞). Instead
  solve Σ_k λ_k/(λ_k + κ) = D for the renormalised ridge κ = s/ρ by Newton from κ = s/ρ (well conditioned: D and κ
  are both O(1)-sensitive to each other), set ρ = s/κ, take the other factor 1 − D/max(N, P) (no cancellation unless
  N ≈ P) and the small one as ρ/(other factor).
  """
  kappa = s_J / rho_J
  ones = jnp.ones_like(kappa)
  for _ in range(steps):
    f_J, df_J = _newton_sums(lam_CxB, kappa, ones)  # Σ λ/(κ+λ), Σ λ/(κ+λ)²
    kappa = kappa + (f_J - D_J) / df_J
  rho = s_J / kappa
  big = 1.0 - D_J * jnp.minimum(inv_n, inv_p)
  small = rho / big
  n_small = inv_n >= inv_p
  return rho, jnp.where(n_small, big, small), jnp.where(n_small, small, big)


def _pair_sums(lam_CxB, wstar2_CxB, s_J, rho_J):
  """The four pair sums (S1, S2, B0, B2)_4xJxL = Σ_k (λ, λ², λw*², λ²w*²)_k H_jk H_lk, rows j the upper nodes,
  columns l all 2 MT − 1 nodes: real GEMMs over chunks of modes, then the conjugate half by symmetry."""
  J = s_J.shape[0]

  def body(acc_8Jx2J, xs):
    lam_B, w2_B = xs
    hr, hi = _resolvent(lam_B, s_J, rho_J)
    wts_4xB = jnp.stack([lam_B, lam_B * lam_B, lam_B * w2_B, lam_B * lam_B * w2_B])
    rows_8JxB = jnp.concatenate([wts_4xB[:, None, :] * hr[None], wts_4xB[:, None, :] * hi[None]]).reshape(8 * J, -1)
    return acc_8Jx2J + rows_8JxB @ jnp.concatenate([hr, hi]).T, None

  X, _ = jax.lax.scan(body, jnp.zeros((8 * J, 2 * J), lam_CxB.dtype), (lam_CxB, wstar2_CxB))
  rr, ri, ir, ii = X[:4 * J, :J], X[:4 * J, J:], X[4 * J:, :J], X[4 * J:, J:]
  same = jax.lax.complex(rr - ii, ri + ir)  # Σ w H_j H_l
  conj = jax.lax.complex(rr + ii, ir - ri)  # Σ w H_j conj(H_l) = Σ w H_j H_{-l}
  sums_4xJxL = jnp.concatenate([same, conj[:, 1:]], axis=1).reshape(4, J, 2 * J - 1)
  return sums_4xJxL


def _losses_at(lam_CxB, wstar2_CxB, z_J, w_J, t, rho_J, D_J, inv_n, inv_p):
  """(L, L̂, L_x) at time t: test loss C_0(t,t), train loss and the cross-member (E = ∞) loss C_x(t,t).

  Rows J are the upper-half nodes, columns L all 2 MT − 1 nodes (see `_half_contour`)."""
  mt = z_J.shape[0]
  r = 2.0 * mt / 5.0 / t
  s_J = r * z_J
  u_J = r * w_J * jnp.exp((2.0 * mt / 5.0) * z_J)  # c_j e^{s_j t}: s_j t = (2 MT/5) z_j does not depend on t
  rho_J, R1_J, R3_J = _polish(lam_CxB, s_J, D_J, rho_J, inv_n, inv_p)
  S1, S2, B0, B2 = _pair_sums(lam_CxB, wstar2_CxB, s_J, rho_J)
  s_L, R1_L, R3_L = _full(s_J), _full(R1_J), _full(R3_J)
  u_L = _full(u_J / jnp.where(jnp.arange(mt) == 0, 1.0, 2.0))
  r1_JxL = R1_J[:, None] * R1_L[None, :]
  r3_JxL = R3_J[:, None] * R3_L[None, :]
  ss_JxL = s_J[:, None] * s_L[None, :]
  a11 = 1.0 - r1_JxL * r3_JxL * S2 * inv_p
  a12 = -r3_JxL * S1 * inv_n
  a21 = -ss_JxL * r1_JxL * S1 * inv_p
  a22 = 1.0 - r1_JxL * r3_JxL * S2 * inv_n
  C0_JxL = (B0 * a22 - a12 * r1_JxL * B2) / (a11 * a22 - a12 * a21)  # Cramer's rule
  Cx_JxL = B0 / a11

  def inv_laplace2(C_JxL):
    return jnp.real(u_J @ C_JxL @ u_L)

  return inv_laplace2(C0_JxL), inv_laplace2(r1_JxL * C0_JxL), inv_laplace2(Cx_JxL)


def _curve_one(lam_M, wstar2_M, z_J, w_J, t_D, idx_T, inv_n, inv_p, max_steps: int, tol: float, chunk: int):
  lam_CxB, wstar2_CxB = _chunked(chunk, lam_M, wstar2_M)
  rho_DxJ, D_DxJ, err = _rho_scan(lam_CxB, z_J, t_D, inv_n, inv_p, max_steps, tol)

  def one(args):
    t, rho_J, D_J = args
    return _losses_at(lam_CxB, wstar2_CxB, z_J, w_J, t, rho_J, D_J, inv_n, inv_p)

  L_T, Lhat_T, Lx_T = jax.lax.map(one, (t_D[idx_T], rho_DxJ[idx_T], D_DxJ[idx_T]))
  return L_T, Lhat_T, Lx_T, _diagnostics(err, D_DxJ, lam_M.shape[0], inv_n, inv_p)


def _mode_one(lam_M, modes_K, z_J, w_J, t_D, idx_T, inv_n, inv_p, max_steps: int, tol: float, chunk: int):
  (lam_CxB,) = _chunked(chunk, lam_M)
  rho_DxJ, D_DxJ, err = _rho_scan(lam_CxB, z_J, t_D, inv_n, inv_p, max_steps, tol)
  mt = z_J.shape[0]
  r_T = 2.0 * mt / 5.0 / t_D[idx_T]
  u_TxJ = (r_T[:, None] * w_J[None, :]) * jnp.exp((2.0 * mt / 5.0) * z_J)[None, :]
  s_TxJ = r_T[:, None] * z_J[None, :]

  def polish(args):
    s_J, D_J, rho_J = args
    return _polish(lam_CxB, s_J, D_J, rho_J, inv_n, inv_p)[0]

  rho_TxJ = jax.lax.map(polish, (s_TxJ, D_DxJ[idx_T], rho_DxJ[idx_T]))
  lam_K = lam_M[modes_K]
  H_TxJxK = 1.0 / (s_TxJ[:, :, None] + rho_TxJ[:, :, None] * lam_K[None, None, :])
  H_TxK = jnp.real(jnp.einsum("tj,tjk->tk", u_TxJ, H_TxJxK))
  return H_TxK, _diagnostics(err, D_DxJ, lam_M.shape[0], inv_n, inv_p)


def _diagnostics(err, D_DxJ, M: int, inv_n, inv_p):
  """(worst Newton step, branch violation): on the real node s = r > 0 the physical D lies in [0, min(N, P, M)]."""
  D_D = jnp.real(D_DxJ[:, 0]) * jnp.maximum(jnp.maximum(inv_n, inv_p), 1.0 / M)
  return jnp.stack([err, jnp.maximum(jnp.max(D_D) - 1.0, -jnp.min(D_D))])


@functools.partial(jax.jit, static_argnames=("one", "static"))
def _map_batch(one: Callable, static: tuple, inv_n_B, inv_p_B, *args):
  """one(*args, inv_n, inv_p, *static) for every batch entry, sequentially (lax.map): on CPU this beats vmap, whose
  batched GEMMs are slow, and each entry runs its own Newton iterations."""
  return jax.lax.map(lambda np_: one(*args, np_[0], np_[1], *static), (inv_n_B, inv_p_B))


def _batched(one: Callable, static: tuple, inv_n, inv_p, *args):
  """Run `one` over broadcast (inv_n, inv_p); the outputs get the batch shape in front."""
  inv_n, inv_p = jnp.broadcast_arrays(jnp.asarray(inv_n), jnp.asarray(inv_p))
  shape = inv_n.shape
  outs = _map_batch(one, static, inv_n.reshape(-1), inv_p.reshape(-1), *args)
  return [o.reshape(shape + o.shape[1:]) for o in outs]


def _prepare(lam_M, t_T, inv_n, inv_p, mt: int, allow_float32: bool, **arrays):
  _check_inv(inv_n, "inv_n")
  _check_inv(inv_p, "inv_p")
  dtype = _precision(allow_float32, lam_M=lam_M, inv_n=inv_n, inv_p=inv_p, t_T=t_T, **arrays)
  t_D, idx_T = continuation_grid(t_T)
  z_J, w_J = _half_contour(mt, dtype)
  return dtype, jnp.asarray(t_D, dtype), jnp.asarray(idx_T), z_J, w_J


def _static_args(lam_M, newton_steps: int, newton_tol: float, dtype) -> tuple[int, float, int]:
  """(max Newton steps, Newton tolerance (>= 1e-6 in float32), mode-chunk size)."""
  if int(newton_steps) != newton_steps or newton_steps < 1 or not newton_tol >= 0:
    raise ValueError(f"need newton_steps >= 1 and newton_tol >= 0, got {newton_steps}, {newton_tol}")
  tol = max(float(newton_tol), 1e-6) if dtype == np.float32 else float(newton_tol)
  return int(newton_steps), tol, min(CHUNK, int(jnp.shape(lam_M)[0]))


def _warn_unconverged(diag, tol: float) -> None:
  """Warn (concrete results only) when Newton did not converge or left the physical branch."""
  if isinstance(diag, jax.core.Tracer):
    return
  diag = np.asarray(diag).reshape(-1, 2)
  worst, branch = float(np.max(diag[:, 0])), float(np.max(diag[:, 1]))
  if not worst <= max(1e3 * tol, 1e-10):
    warnings.warn(f"DMFT Newton did not converge (worst relative step {worst:.2e}); try more newton_steps or a "
                  "finer t grid", RuntimeWarning, stacklevel=3)
  if not branch <= 1e-8:
    warnings.warn(f"DMFT root left the physical branch (D outside [0, min(N, P, M)] by {branch:.2e}); the result "
                  "is unreliable (N close to P at late times?)", RuntimeWarning, stacklevel=3)


# --------------------------------------------------------------------------------------------- loss curves


def _curves(lam_M, wstar2_M, t_T, inv_n, inv_p, mt: int, newton_steps: int, newton_tol: float, allow_float32: bool):
  _check_spectrum(lam_M, wstar2_M)
  with jax.enable_x64(True):
    dtype, t_D, idx_T, z_J, w_J = _prepare(lam_M, t_T, inv_n, inv_p, mt, allow_float32, wstar2_M=wstar2_M)
    cast = functools.partial(jnp.asarray, dtype=dtype)
    static = _static_args(lam_M, newton_steps, newton_tol, dtype)
    L, Lhat, Lx, err = _batched(_curve_one, static, cast(inv_n), cast(inv_p), cast(lam_M), cast(wstar2_M), z_J, w_J,
                                t_D, idx_T)
  _warn_unconverged(err, static[1])
  return _host(L), _host(Lhat), _host(Lx)


def loss_curve(lam_M, wstar2_M, t_T: npt.ArrayLike, inv_n=0.0, inv_p=0.0, *, mt: int = 16, newton_steps: int = 25,
               newton_tol: float = 1e-14, allow_float32: bool = False) -> tuple[jax.Array, jax.Array]:
  """(L_T, L̂_T): DMFT test and train loss of gradient flow at the increasing times t_T (spec §2.3, §4).

  inv_n = 1/N and inv_p = 1/P (0 = infinite) may be arrays; they broadcast and the outputs get their shape + (T,).
  Vmappable in every argument except t_T (concrete: the continuation grid is built on the host).
  """
  L, Lhat, _ = _curves(lam_M, wstar2_M, t_T, inv_n, inv_p, mt, newton_steps, newton_tol, allow_float32)
  return L, Lhat


def loss_curve_fn(lam_M, wstar2_M, *, mt: int = 16, newton_steps: int = 25, newton_tol: float = 1e-14,
                  allow_float32: bool = False) -> Callable:
  """Returns f(t_T, inv_n, inv_p) -> (L_T, L̂_T) for this spectrum: :func:`loss_curve` with the spectrum bound.

  The heavy part is one jitted program per (M, MT, grid length); f works under jax.vmap over inv_n and inv_p
  (run such a vmap inside ``jax.enable_x64(True)``) and batches broadcast (inv_n, inv_p) arrays itself.
  """
  _check_spectrum(lam_M, wstar2_M)
  talbot(mt)

  def loss_curve_T(t_T, inv_n=0.0, inv_p=0.0):
    return loss_curve(lam_M, wstar2_M, t_T, inv_n, inv_p, mt=mt, newton_steps=newton_steps, newton_tol=newton_tol,
                      allow_float32=allow_float32)

  return loss_curve_T


def ensemble_curve_fn(lam_M, wstar2_M, *, mt: int = 16, newton_steps: int = 25, newton_tol: float = 1e-14
                      ) -> Callable:
  """Returns f(t_T, inv_n, inv_p, E) -> dict(C0=L_T, Cx=…, L_E=…) for E members with independent projections and
  shared data (spec §2.5): C_x = B0/(1 − r1 r3 S2/P) and L_E = C0/E + (1 − 1/E) C_x. E >= 1, may be inf."""
  _check_spectrum(lam_M, wstar2_M)
  talbot(mt)

  def ensemble_curve_T(t_T, inv_n=0.0, inv_p=0.0, E=1.0):
    E_arr = np.asarray(E, np.float64)
    if np.any(np.isnan(E_arr)) or np.any(E_arr < 1):
      raise ValueError(f"E (ensemble size) must be >= 1 (inf allowed), got {E}")
    C0, _, Cx = _curves(lam_M, wstar2_M, t_T, inv_n, inv_p, mt, newton_steps, newton_tol, False)
    inv_e = 1.0 / E_arr
    if inv_e.ndim >= jnp.ndim(C0):
      raise ValueError(f"E of shape {inv_e.shape} must broadcast against the (inv_n, inv_p) batch {jnp.shape(C0)[:-1]}")
    inv_e = inv_e.reshape((1,) * (jnp.ndim(C0) - 1 - inv_e.ndim) + inv_e.shape + (1,))
    with jax.enable_x64(True):
      return {"C0": C0, "Cx": Cx, "L_E": _host(inv_e * C0 + (1.0 - inv_e) * Cx)}

  return ensemble_curve_T


def mode_response_fn(lam_M, modes_K: npt.ArrayLike | None = None, *, mt: int = 16, newton_steps: int = 25,
                     newton_tol: float = 1e-14, allow_float32: bool = False) -> Callable:
  """Returns f(t_T, inv_n, inv_p) -> H_TxK, the mean transfer functions H_k(t) (E[v_k(t)] = H_k(t) w*_k, spec §2.1)
  of the modes `modes_K` (0-based indices into lam_M; default all)."""
  _check_spectrum(lam_M, lam_M)
  talbot(mt)
  M = jnp.shape(lam_M)[0]
  modes = np.arange(M) if modes_K is None else np.asarray(modes_K)
  if modes.ndim != 1 or not np.issubdtype(modes.dtype, np.integer) or np.any(modes < 0) or np.any(modes >= M):
    raise ValueError(f"modes_K must be a 1-D array of integer indices in [0, {M}), got {modes_K}")

  def mode_response_T(t_T, inv_n=0.0, inv_p=0.0):
    with jax.enable_x64(True):
      dtype, t_D, idx_T, z_J, w_J = _prepare(lam_M, t_T, inv_n, inv_p, mt, allow_float32)
      cast = functools.partial(jnp.asarray, dtype=dtype)
      static = _static_args(lam_M, newton_steps, newton_tol, dtype)
      H, err = _batched(_mode_one, static, cast(inv_n), cast(inv_p), cast(lam_M), jnp.asarray(modes), z_J, w_J, t_D,
                        idx_T)
    _warn_unconverged(err, static[1])
    return _host(H)

  return mode_response_T


# --------------------------------------------------------------------------------------------- closed forms (§2.7)


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


# --------------------------------------------------------------------------------------------- exponents (§3)


def _check_ab(a: float, b: float) -> None:
  if not (a > 1 and b > 1):
    raise ValueError(f"the exponents are M -> inf asymptotics and need a > 1 and b > 1, got a={a}, b={b}")


def time_exponent(a: float, b: float) -> float:
  """L(t, ∞, ∞) ∝ t^x with x = −(a−1)/b."""
  _check_ab(a, b)
  return -(a - 1) / b


def data_exponent(a: float, b: float) -> float:
  """L(∞, ∞, P) ∝ P^x with x = −min(a−1, 2b)."""
  _check_ab(a, b)
  return -min(a - 1, 2 * b)


def model_exponent(a: float, b: float) -> float:
  """Single model, L(∞, N, ∞) ∝ N^x with x = −min(a−1, b) (variance-limited for easy tasks; spec §3)."""
  _check_ab(a, b)
  return -min(a - 1, b)


def ensemble_model_exponent(a: float, b: float) -> float:
  """E = ∞ ensemble (bias), L ∝ N^x with x = −min(a−1, 2b)."""
  _check_ab(a, b)
  return -min(a - 1, 2 * b)


def compute_optimal_exponents(a: float, b: float) -> dict[str, float]:
  """C = N t, P = ∞: L* ∝ C^loss, N* ∝ C^n, t* ∝ C^t from L ≈ t^{−(a−1)/b} + N^{−m}, m = min(a−1, b):
  loss = −(a−1)m/(a−1+bm), n = (a−1)/(a−1+bm), t = bm/(a−1+bm)."""
  m = -model_exponent(a, b)
  den = a - 1 + b * m
  return {"loss": -(a - 1) * m / den, "n": (a - 1) / den, "t": b * m / den}


def fit_power_law(x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[float, float]:
  """(exponent, prefactor) of y ≈ prefactor · x^exponent by least squares in log-log."""
  lx, ly = np.log(np.asarray(x, np.float64)), np.log(np.asarray(y, np.float64))
  if lx.shape != ly.shape or lx.size < 2 or not (np.all(np.isfinite(lx)) and np.all(np.isfinite(ly))):
    raise ValueError("fit_power_law needs >= 2 matching points with x, y > 0")
  slope, icpt = np.polyfit(lx, ly, 1)
  return float(slope), float(np.exp(icpt))


class Frontier(NamedTuple):
  """Compute-optimal frontier of a loss surface: per C, the best L*, N*, t* = C/N*; `interior` marks optima strictly
  inside the N grid; `exponents` (loss, n, t) are log-log least-squares slopes over the interior points (NaN if
  fewer than two)."""

  C_C: np.ndarray
  L_C: np.ndarray
  N_C: np.ndarray
  t_C: np.ndarray
  interior: np.ndarray
  exponents: dict[str, float]


def compute_optimal_frontier(L_NxT, N_N, t_T, C_C: npt.ArrayLike | None = None) -> Frontier:
  """L*(C) = min_N L(N, C/N) with C = N·t (P = ∞), log L interpolated linearly in log t per width and the optimum
  refined by a parabola in log N through the best grid width and its neighbours.

  Default C grid: 40 log-spaced points over [N_max t_min, N_min t_max], where every width has a valid t.
  """
  L = np.asarray(L_NxT, np.float64)
  N, t = np.asarray(N_N, np.float64), np.asarray(t_T, np.float64)
  if L.shape != (N.size, t.size) or N.ndim != 1 or t.ndim != 1:
    raise ValueError(f"L_NxT must have shape (len(N_N), len(t_T)), got {L.shape}")
  if np.any(np.diff(N) <= 0) or np.any(np.diff(t) <= 0) or N[0] <= 0 or t[0] <= 0 or np.any(~(L > 0)):
    raise ValueError("N_N and t_T must be positive and increasing, L_NxT positive")
  if C_C is None:
    lo, hi = N[-1] * t[0], N[0] * t[-1]
    if not hi > lo:
      raise ValueError("no C has a valid t for every width; pass C_C")
    C_C = np.geomspace(lo, hi, 40)
  C = np.asarray(C_C, np.float64)
  lt, lL, lN = np.log(t), np.log(L), np.log(N)
  lLc_NxC = np.full((N.size, C.size), np.inf)
  for i in range(N.size):
    ltc = np.log(C) - lN[i]
    ok = (ltc >= lt[0]) & (ltc <= lt[-1])
    lLc_NxC[i, ok] = np.interp(ltc[ok], lt, lL[i])
  best = np.argmin(lLc_NxC, axis=0)
  lNs, lLs = lN[best].copy(), lLc_NxC[best, np.arange(C.size)]
  interior = (best > 0) & (best < N.size - 1)
  for c in np.flatnonzero(interior):
    y = lLc_NxC[best[c] - 1:best[c] + 2, c]
    if not np.all(np.isfinite(y)):
      interior[c] = False
      continue
    x = lN[best[c] - 1:best[c] + 2]
    p2, p1, p0 = np.polyfit(x, y, 2)
    if p2 > 0:
      lNs[c] = np.clip(-p1 / (2 * p2), x[0], x[2])
      lLs[c] = np.polyval([p2, p1, p0], lNs[c])
  Ls, Ns = np.exp(lLs), np.exp(lNs)
  ts = C / Ns
  exps = {"loss": math.nan, "n": math.nan, "t": math.nan}  # NaN: fewer than two interior optima
  if interior.sum() >= 2:
    exps = {name: fit_power_law(C[interior], y[interior])[0] for name, y in (("loss", Ls), ("n", Ns), ("t", ts))}
  return Frontier(C, Ls, Ns, ts, interior, exps)
