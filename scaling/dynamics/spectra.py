"""Spectra of a real network's NTK at initialisation, their power-law exponents, and linearised training.

Spec `dmft.md` §5 item 3: the initial NTK of a network on real data has eigenvalues λ_k ~ k^{-b} and task power
λ_k w*_k² ~ k^{-a}; the linearised network trained by gradient flow is the random-feature model of §1 at N = ∞.

Conventions (all in this module):
- Network: a scalar-output MLP in NTK parametrisation, z_{l+1} = σ_w h_l W_l / √fan_in + σ_b b_l with W, b ~ N(0, 1),
  ReLU hidden layers, σ_w = √2 on hidden layers and 1 on the readout, σ_b = 0.1. `sizes = [D, width, ..., 1]`.
  The target is a scalar (binary tasks as ±1, e.g. `parity_labels`: even vs odd digit, like the paper's
  animate-vs-inanimate CIFAR task).
- Kernel: the empirical NTK K(x, x') = ∇_θ f(x)·∇_θ f(x') at the initial parameters.
- Spectrum on n points: λ_k = eig_k(K)/n (the integral operator's eigenvalues under the empirical measure) with
  eigenfunctions φ_k = √n u_k, so the target y = Σ_k √λ_k w*_k φ_k has λ_k w*_k² = (u_k·y)²/n and
  Σ_k λ_k w*_k² = (1/n)Σ_i y_i² (the RF model's E[y²] with ψ_k = √λ_k φ_k).
- Training: gradient flow on L̂/2 with L̂ = (1/n)Σ_i (f(x_i) − y_i)², i.e. dθ/dt = −(1/n) Jᵀ(f − y), so the
  train predictions obey df/dt = −(K/n)(f − y): mode k relaxes as e^{−λ_k t} with the λ_k above, and
  L̂(t) = Σ_k λ_k w*_k² e^{−2λ_k t} (from f_0 = 0), the §1 formula with η = 1. Discrete GD with step η is compared
  at t = η·steps.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from scaling.fit import loglog

Params = list[dict[str, jax.Array]]

SIGMA_W_HIDDEN = float(np.sqrt(2.0))  # ReLU: keeps the pre-activation scale across layers
SIGMA_W_OUT = 1.0
SIGMA_B = 0.1


# ----------------------------------------------------------------------------------------------------------------
# The network and its NTK


def init(key: jax.Array, sizes: list[int]) -> Params:
  """Standard-normal weights and biases for `sizes = [D, h_1, ..., 1]` (the NTK scalings live in `apply`)."""
  if len(sizes) < 2 or sizes[-1] != 1 or min(sizes) < 1:
    raise ValueError(f"sizes must be [D, hidden..., 1] with positive entries, got {sizes}")
  keys = jax.random.split(key, 2 * (len(sizes) - 1))
  return [{"w": jax.random.normal(keys[2 * i], (fan_in, fan_out), jnp.float32),
           "b": jax.random.normal(keys[2 * i + 1], (fan_out,), jnp.float32)}
          for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes))]


def _sigma_w(layer: int, n_layers: int) -> float:
  return SIGMA_W_OUT if layer == n_layers - 1 else SIGMA_W_HIDDEN


def _forward(params: Params, x_NxD: jax.Array, eps: list[jax.Array] | None = None):
  """Outputs f_N and each layer's input h_l; `eps[l]` (N × fan_out) is added to layer l's pre-activation."""
  h, inputs = x_NxD, []
  for i, layer in enumerate(params):
    inputs.append(h)
    z = (_sigma_w(i, len(params)) / np.sqrt(layer["w"].shape[0])) * (h @ layer["w"]) + SIGMA_B * layer["b"][None, :]
    if eps is not None:
      z = z + eps[i]
    h = jax.nn.relu(z)
  return z[:, 0], inputs


def apply(params: Params, x_NxD: jax.Array) -> jax.Array:
  """Scalar outputs f_N of the NTK-parametrised ReLU MLP."""
  return _forward(params, x_NxD)[0]


def param_count(params: Params) -> int:
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))


@jax.jit
def _taps(params: Params, x_NxD: jax.Array) -> tuple[list[jax.Array], list[jax.Array]]:
  """Per-example layer inputs h_l (N × fan_in) and backprop signals δ_l = ∂f/∂z_l (N × fan_out), one backward pass."""
  def total(eps):
    f_N, inputs = _forward(params, x_NxD, eps)
    return f_N.sum(), inputs  # examples are independent: ∂Σf/∂z_l[i] = ∂f(x_i)/∂z_l

  eps0 = [jnp.zeros((x_NxD.shape[0], layer["w"].shape[1]), x_NxD.dtype) for layer in params]
  delta, inputs = jax.grad(total, has_aux=True)(eps0)
  return inputs, delta


@jax.jit
def _ntk_rows(inputs_a: list[jax.Array], delta_a: list[jax.Array], inputs_b: list[jax.Array],
              delta_b: list[jax.Array]) -> jax.Array:
  hp = jax.lax.Precision.HIGHEST
  K = 0.0
  for i, (ha, da, hb, db) in enumerate(zip(inputs_a, delta_a, inputs_b, delta_b)):
    s2 = _sigma_w(i, len(inputs_a)) ** 2 / ha.shape[1]
    K = K + jnp.matmul(da, db.T, precision=hp) * (s2 * jnp.matmul(ha, hb.T, precision=hp) + SIGMA_B ** 2)
  return K


def ntk(params: Params, x_NxD: np.ndarray, x2_MxD: np.ndarray | None = None, *, block: int = 1024) -> np.ndarray:
  """Empirical NTK K_NxM = ∇_θf(x)·∇_θf(x2) of the MLP (x2 = x by default), exact, from the factored Jacobian.

  The gradient of layer l's weights is the outer product (σ_w/√fan_in) h_l ⊗ δ_l (and σ_B δ_l for the bias), so
  J Jᵀ = Σ_l (δ_l δ_lᵀ) ∘ (σ_w²/fan_in · h_l h_lᵀ + σ_B²): O(N M Σ widths) work and O(N Σ widths) memory instead of
  the (N × #params) Jacobian. Rows are produced in blocks of `block`. `ntk_jacobian` is the generic J Jᵀ.
  """
  x = jnp.asarray(x_NxD, jnp.float32)
  ins_b, del_b = _taps(params, x if x2_MxD is None else jnp.asarray(x2_MxD, jnp.float32))
  n = x.shape[0]
  rows = []
  for blk in _blocks(np.asarray(x), max(1, min(block, n))):
    ins_a, del_a = _taps(params, jnp.asarray(blk))
    rows.append(np.asarray(_ntk_rows(ins_a, del_a, ins_b, del_b)))
  K = np.concatenate(rows)[:n]
  return 0.5 * (K + K.T) if x2_MxD is None else K


@functools.partial(jax.jit, static_argnums=0)
def _jacobian(apply_fn, params, x_BxD: jax.Array) -> jax.Array:
  """Per-example gradients ∇_θ f(x_b), flattened to (B, P)."""
  grads = jax.vmap(jax.grad(lambda p, x: apply_fn(p, x[None, :])[0]), in_axes=(None, 0))(params, x_BxD)
  return jnp.concatenate([g.reshape(x_BxD.shape[0], -1) for g in jax.tree.leaves(grads)], axis=1)


@jax.jit
def _gram(Ja_BxP: jax.Array, Jb_BxP: jax.Array) -> jax.Array:
  return jnp.matmul(Ja_BxP, Jb_BxP.T, precision=jax.lax.Precision.HIGHEST)


def _blocks(x_NxD: np.ndarray, block: int) -> list[np.ndarray]:
  """Row blocks, the last zero-padded to `block` rows (one compiled shape)."""
  n = x_NxD.shape[0]
  pad = np.zeros(((-n) % block, x_NxD.shape[1]), x_NxD.dtype)
  xp = np.concatenate([x_NxD, pad])
  return [xp[i:i + block] for i in range(0, n, block)]


def ntk_jacobian(apply_fn: Callable[[Any, jax.Array], jax.Array], params: Any, x_NxD: np.ndarray,
                 x2_MxD: np.ndarray | None = None, *, block: int = 256) -> np.ndarray:
  """Generic empirical NTK J(x) J(x2)ᵀ of any scalar-output `apply_fn(params, x_BxD) -> f_B`, by blocks.

  Memory is two (block × P) flattened per-example Jacobians (vmap of grad) at a time; a block's Jacobian is
  recomputed per block pair. The symmetric case computes the upper block triangle and mirrors it.
  """
  x = np.asarray(x_NxD, np.float32)
  x2 = x if x2_MxD is None else np.asarray(x2_MxD, np.float32)
  n, m = x.shape[0], x2.shape[0]
  block = max(1, min(block, n, m))
  K = np.empty((n, m), np.float32)
  for i, a in enumerate(_blocks(x, block)):
    Ja = _jacobian(apply_fn, params, jnp.asarray(a))
    r0, r1 = i * block, min(n, (i + 1) * block)
    for j, b in enumerate(_blocks(x2, block)):
      if x2_MxD is None and j < i:
        continue
      Jb = Ja if (x2_MxD is None and j == i) else _jacobian(apply_fn, params, jnp.asarray(b))
      c0, c1 = j * block, min(m, (j + 1) * block)
      K[r0:r1, c0:c1] = np.asarray(_gram(Ja, Jb))[:r1 - r0, :c1 - c0]
      if x2_MxD is None and j > i:
        K[c0:c1, r0:r1] = K[r0:r1, c0:c1].T
  return K


def parity_labels(y_N: np.ndarray) -> np.ndarray:
  """±1 binary target from class labels: +1 for even classes, −1 for odd (MNIST-1D: even vs odd digit)."""
  return np.where(np.asarray(y_N) % 2 == 0, 1.0, -1.0).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------
# Spectrum and exponents


def _eigh_desc(K_NxN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  K = np.asarray(K_NxN, np.float64)
  mu, U = np.linalg.eigh(0.5 * (K + K.T))
  return mu[::-1], U[:, ::-1]


def kernel_spectrum(K_NxN: np.ndarray, y_N: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(λ_K, power_K): λ_k = eig_k(K)/n in decreasing order and the task power λ_k w*_k² = (u_k·y)²/n.

  Normalisation of the RF model (module docstring): Σ_k power_k = (1/n)Σ_i y_i² and w*_k² = power_k/λ_k. Computed
  in float64; round-off can leave the smallest λ_k slightly negative (not clipped here).
  """
  y = np.asarray(y_N, np.float64)
  n = y.shape[0]
  if np.shape(K_NxN) != (n, n):
    raise ValueError(f"K must be {n}x{n} for {n} targets, got {np.shape(K_NxN)}")
  mu, U = _eigh_desc(K_NxN)
  return mu / n, (U.T @ y) ** 2 / n


class PowerLawFit(NamedTuple):
  """v_k ≈ prefactor · k^{-exponent}; `stderr` is the OLS standard error of the exponent."""

  exponent: float
  prefactor: float
  stderr: float


def fit_power_law(values_K: np.ndarray, k_range: tuple[int, int]) -> PowerLawFit:
  """Log-log OLS of v_k ~ C k^{-exponent} over the ranks k_min..k_max (1-based, inclusive) of `values_K`.

  Non-positive values in the window are dropped (a log-log fit cannot use them); at least 3 must remain.
  """
  k_min, k_max = int(k_range[0]), int(k_range[1])
  v = np.asarray(values_K, np.float64)
  if not 1 <= k_min < k_max <= v.shape[0]:
    raise ValueError(f"k_range must satisfy 1 <= k_min < k_max <= {v.shape[0]}, got {k_range}")
  k = np.arange(k_min, k_max + 1)
  fit = loglog.fit_loglog(k, v[k_min - 1:k_max], sign=-1.0)
  return PowerLawFit(fit.exponent, float(np.exp(fit.intercept)), fit.stderr)


def spectral_exponent(lam_K: np.ndarray, k_range: tuple[int, int]) -> PowerLawFit:
  """b from λ_k ~ k^{-b}."""
  return fit_power_law(lam_K, k_range)


def tail_power(power_K: np.ndarray) -> np.ndarray:
  """T_k = Σ_{j>k} λ_j w*_j² for ranks k = 1..n (T_n = 0), summed from the small end (no cancellation)."""
  p = np.asarray(power_K, np.float64)
  return np.concatenate([np.cumsum(p[::-1])[::-1][1:], [0.0]])


def task_exponent(power_K: np.ndarray, k_range: tuple[int, int]) -> PowerLawFit:
  """a from the cumulative task-power tail T_k = Σ_{j>k} λ_j w*_j² ~ k^{1-a}, by OLS over ranks k_min..k_max.

  The per-mode power (u_k·y)²/n scatters like a one-degree chi-square around its trend; its tail sum averages that
  out (an OLS on the per-mode power itself is badly biased by the scatter). Returns `exponent` = a = 1 + (tail
  exponent), the tail's `prefactor`, and the OLS `stderr` of the slope (optimistic: tail sums are correlated).
  On n points the sum stops at rank n, which steepens T_k, increasingly so as a → 1: keep k_max ≲ n/10.
  Measured on the Gaussian-feature RF model (n = 1000, M = 2000–32000 modes, windows 5–50 and 10–100): a = 2 is
  recovered within 0.05, but a = 1.5 reads 1.54–1.62 and a = 1.25 reads 1.32–1.44.
  """
  fit = fit_power_law(tail_power(power_K), k_range)
  return PowerLawFit(1.0 + fit.exponent, fit.prefactor, fit.stderr)


# ----------------------------------------------------------------------------------------------------------------
# Linearised training


class Curves(NamedTuple):
  """Mean-squared errors at times t_T (t = η·steps for GD)."""

  t_T: np.ndarray
  train_T: np.ndarray
  test_T: np.ndarray


def _decay_gain(lam_K: np.ndarray, t_T: np.ndarray, lr: float | None) -> tuple[np.ndarray, np.ndarray]:
  """Per-mode residual decay d = e^{−λt} (flow) or (1 − ηλ)^{t/η} (GD) and gain (1 − d)/λ (→ t as λ → 0), T×K."""
  lam = np.maximum(lam_K, 0.0)[None, :]
  t = t_T[:, None]
  if lr is None:
    expo = -lam * t
  else:
    if np.any(lr * lam >= 1.0):
      raise ValueError(f"GD with lr={lr} is not monotone for λ_max={lam.max():.4g}: need lr·λ_max < 1")
    expo = (t / lr) * np.log1p(-lr * lam)
  decay = np.exp(expo)
  pos = lam > 0
  gain = np.where(pos, -np.expm1(expo) / np.where(pos, lam, 1.0), t)
  return decay, gain


def linearized_predictions(K_tr_NxN: np.ndarray, K_te_MxN: np.ndarray, y_tr_N: np.ndarray, t_T: np.ndarray, *,
                           f0_tr_N: np.ndarray | None = None, f0_te_M: np.ndarray | None = None,
                           lr: float | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Train and test predictions (f_tr_TxN, f_te_TxM) of the linearised network trained on the n train points.

  Gradient flow on L̂/2 (module docstring): with r = y − f0 on train and K/n = Σ_k λ_k u_k u_kᵀ,
    f_tr(t) = f0_tr + U diag(1 − e^{−λ_k t}) Uᵀ r,
    f_te(t) = f0_te + K_te,tr U diag((1 − e^{−λ_k t})/(n λ_k)) Uᵀ r     (= K_te,tr K⁻¹ (I − e^{−Kt/n}) r),
  through the eigendecomposition, so small λ_k give the gain t/n and are never inverted (λ_k < 0 from round-off
  count as 0). `lr` switches to discrete GD with that step, e^{−λt} → (1 − lr λ)^{t/lr} (t on the grid lr·steps).
  f0 defaults to 0: the centred linearised model f_lin(x) = ∇f(x;θ₀)·(θ − θ₀), the RF model's w(0) = 0.
  """
  y_tr = np.asarray(y_tr_N, np.float64)
  n, m = y_tr.shape[0], np.shape(K_te_MxN)[0]
  f0_tr = np.zeros(n) if f0_tr_N is None else np.asarray(f0_tr_N, np.float64)
  f0_te = np.zeros(m) if f0_te_M is None else np.asarray(f0_te_M, np.float64)
  mu, U = _eigh_desc(K_tr_NxN)
  c_K = U.T @ (y_tr - f0_tr)
  decay_TxK, gain_TxK = _decay_gain(mu / n, np.asarray(t_T, np.float64), lr)
  f_tr = f0_tr[None, :] + ((1.0 - decay_TxK) * c_K[None, :]) @ U.T
  f_te = f0_te[None, :] + (gain_TxK * c_K[None, :]) @ (np.asarray(K_te_MxN, np.float64) @ U / n).T
  return f_tr, f_te


def linearized_flow(K_tr_NxN: np.ndarray, K_te_MxN: np.ndarray, y_tr_N: np.ndarray, y_te_M: np.ndarray,
                    t_T: np.ndarray, *, f0_tr_N: np.ndarray | None = None, f0_te_M: np.ndarray | None = None,
                    lr: float | None = None) -> Curves:
  """Train/test MSE curves of `linearized_predictions` (same arguments and conventions) at times t_T."""
  f_tr, f_te = linearized_predictions(K_tr_NxN, K_te_MxN, y_tr_N, t_T, f0_tr_N=f0_tr_N, f0_te_M=f0_te_M, lr=lr)
  y_tr, y_te = np.asarray(y_tr_N, np.float64), np.asarray(y_te_M, np.float64)
  return Curves(np.asarray(t_T, np.float64), np.mean((f_tr - y_tr[None, :]) ** 2, axis=1),
                np.mean((f_te - y_te[None, :]) ** 2, axis=1))


@functools.partial(jax.jit, static_argnames=("n_steps", "center"))
def _gd_linearized(params: Params, x_tr: jax.Array, y_tr: jax.Array, x_te: jax.Array, y_te: jax.Array,
                   lr: jax.Array, n_steps: int, center: bool) -> tuple[jax.Array, jax.Array]:
  f0_tr, jvp_tr = jax.linearize(lambda p: apply(p, x_tr), params)
  f0_te, jvp_te = jax.linearize(lambda p: apply(p, x_te), params)
  vjp_tr = jax.linear_transpose(jvp_tr, params)
  off_tr, off_te = (0.0, 0.0) if center else (f0_tr, f0_te)
  n = y_tr.shape[0]

  def step(delta, _):
    out_tr = off_tr + jvp_tr(delta)
    out_te = off_te + jvp_te(delta)
    (g,) = vjp_tr((out_tr - y_tr) / n)
    delta = jax.tree.map(lambda d, gi: d - lr * gi, delta, g)
    return delta, (jnp.mean((out_tr - y_tr) ** 2), jnp.mean((out_te - y_te) ** 2))

  delta0 = jax.tree.map(jnp.zeros_like, params)
  _, (train, test) = jax.lax.scan(step, delta0, None, length=n_steps + 1)
  return train, test


def train_linearized(params: Params, x_tr_NxD: np.ndarray, y_tr_N: np.ndarray, x_te_MxD: np.ndarray,
                     y_te_M: np.ndarray, *, lr: float, n_steps: int, center: bool = True) -> Curves:
  """Explicit GD on the linearised network θ ↦ f(x;θ₀) + ∇f(x;θ₀)·(θ − θ₀) (`jax.linearize` around `params`).

  Step θ ← θ − lr·(1/n)Jᵀ(f − y) (GD on L̂/2); curves at t = lr·s, s = 0..n_steps. `center=True` drops f(x;θ₀), the
  convention of `linearized_flow` with f0 = 0.
  """
  train, test = _gd_linearized(params, jnp.asarray(x_tr_NxD, jnp.float32), jnp.asarray(y_tr_N, jnp.float32),
                               jnp.asarray(x_te_MxD, jnp.float32), jnp.asarray(y_te_M, jnp.float32),
                               jnp.float32(lr), n_steps, center)
  return Curves(lr * np.arange(n_steps + 1, dtype=np.float64), np.asarray(train, np.float64),
                np.asarray(test, np.float64))
