"""The DMFT loss-curve solver of the random-feature scaling-law model (Bordelon, Atanasov & Pehlevan 2024; spec `dmft.md`).

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
Inputs and checks are `scaling.dynamics.theory.inputs`; the t -> ∞ closed forms `closed_forms`; the exponents and
the compute-optimal frontier `exponents`.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

from scaling.dynamics.theory.inputs import (_batched, _check_inv, _check_spectrum, _host, _precision, continuation_grid,
                                            talbot)

CHUNK = 2048  # modes per block of the mode sums (keeps the blocks in cache; large M is much faster)


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
