"""Inputs of the DMFT (spec `dmft.md` §1, §4): the power-law spectrum, the float64 guard and argument checks, the
continuation grid in t, the fixed-Talbot contour, and the sequential batch map over (1/N, 1/P).

Conventions: `inv_n` = 1/N and `inv_p` = 1/P, 0 for infinity. The underscored helpers are shared by
`scaling.dynamics.theory.solver` and `scaling.dynamics.theory.closed_forms`.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import numpy.typing as npt

T_START = 1e-3  # continuation starts at t <= T_START (spec §4)
MAX_RATIO = 1.5  # max ratio between consecutive continuation points (spec §4)
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



# --------------------------------------------------------------------------------------------- batching


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
