"""The compute-optimal frontier of a Chinchilla law, the isoFLOP-parabola estimate (Chinchilla's approach 2), and a
synthetic isoFLOP dataset. Numpy only.

With C = k N D (k FLOPs per parameter per token, 6 by default), minimising E + A / N^alpha + B / D^beta over N at
fixed C gives alpha A N^-alpha = beta B D^-beta, hence

    N*(C) = G (C/k)^a,  D*(C) = G^-1 (C/k)^b,  a = beta / (alpha + beta),  b = alpha / (alpha + beta),
    G = (alpha A / (beta B))^(1 / (alpha + beta)).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.typing import ArrayLike

# Epoch AI's replication estimates (Besiroglu et al. 2024), the default planted law
EPOCH_PARAMS = {"E": 1.82, "A": 482.0, "B": 2085.0, "alpha": 0.35, "beta": 0.37}


def check_arrays(N: ArrayLike, D: ArrayLike, L: ArrayLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float64 1-D copies of N, D, L, finite, > 0 and of one length; ValueError naming the argument and first bad row."""
  arrays = {}
  for name, v in (("N", N), ("D", D), ("L", L)):
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1:
      raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    bad = np.flatnonzero(~np.isfinite(a))
    if bad.size:
      raise ValueError(f"{name} must be finite: row {bad[0]} is {a[bad[0]]}")
    bad = np.flatnonzero(a <= 0)
    if bad.size:
      raise ValueError(f"{name} must be > 0 (the law takes logs): row {bad[0]} is {a[bad[0]]}")
    arrays[name] = a
  n = len(arrays["N"])
  if len(arrays["D"]) != n or len(arrays["L"]) != n:
    raise ValueError(f"N, D, L must have the same length, got {n}, {len(arrays['D'])}, {len(arrays['L'])}")
  return arrays["N"], arrays["D"], arrays["L"]


def check_points(N: ArrayLike, D: ArrayLike, L: ArrayLike,
                 w: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """float64 1-D copies of N, D, L, w (see :func:`check_arrays`) for a fit of the law: >= 5 points with w > 0."""
  N, D, L = check_arrays(N, D, L)
  n = len(N)
  w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
  if w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError(f"w must be finite, >= 0 and of shape ({n},)")
  if np.count_nonzero(w) < 5:
    raise ValueError(f"{np.count_nonzero(w)} points (rows with w > 0) cannot determine the 5 "
                     f"parameters (E, A, B, alpha, beta)")
  return N, D, L, w


def frontier(params: dict[str, ArrayLike], C: ArrayLike, k: float = 6.0) -> dict[str, np.ndarray]:
  """a, b, G (shaped like the parameters) and N_opt, D_opt, tokens_per_param = D*/N*, L_opt (shape params + C).

  Vectorised: parameters may be arrays (e.g. bootstrap samples, shape S), C any 1-D array; outputs are S x len(C).
  """
  al, be = np.asarray(params["alpha"], float), np.asarray(params["beta"], float)
  A, B, E = (np.asarray(params[n], float) for n in ("A", "B", "E"))
  a, b = be / (al + be), al / (al + be)
  G = (al * A / (be * B)) ** (1.0 / (al + be))
  c = np.asarray(C, float) / k
  ex = lambda v: np.asarray(v)[..., None]  # noqa: E731  (parameter axes, then C)
  N_opt = ex(G) * c ** ex(a)
  D_opt = c ** ex(b) / ex(G)
  L_opt = ex(E) + ex(A) * N_opt ** -ex(al) + ex(B) * D_opt ** -ex(be)
  return {"a": a, "b": b, "G": G, "N_opt": N_opt, "D_opt": D_opt, "tokens_per_param": D_opt / N_opt, "L_opt": L_opt}


# --------------------------------------------------------------------------- isoFLOP parabolas (approach 2)


@dataclasses.dataclass(frozen=True)
class IsoflopResult:
  """Per group: C, N_opt, D_opt (parabola minima); the power laws N_opt = 10^n0 C^a, D_opt = 10^d0 C^b; percentile
  intervals of a and b at `level` over the bootstrap resamples whose every parabola opened upward (`n_valid`)."""

  C: np.ndarray
  N_opt: np.ndarray
  D_opt: np.ndarray
  a: float
  b: float
  n0: float
  d0: float
  k: float
  level: float
  n_valid: int
  a_interval: tuple[float, float]
  b_interval: tuple[float, float]
  a_samples: np.ndarray
  b_samples: np.ndarray

  def N_at(self, C: ArrayLike) -> np.ndarray:
    return 10.0 ** self.n0 * np.asarray(C, float) ** self.a


def _parabola_min(x_SxP: np.ndarray, y_SxP: np.ndarray, w_SxP: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Weighted quadratic fits y ~ c0 + c1 x + c2 x^2 of S rows at once -> (argmin x, curvature c2)."""
  xm = np.sum(w_SxP * x_SxP, 1, keepdims=True) / np.sum(w_SxP, 1, keepdims=True)
  u = x_SxP - xm  # centred: a well-conditioned 3 x 3 system
  V = np.stack([np.ones_like(u), u, u * u], -1)
  VtV = np.einsum("sp,spi,spj->sij", w_SxP, V, V)
  Vty = np.einsum("sp,spi,sp->si", w_SxP, V, y_SxP)
  # a row with < 3 distinct weighted points (a bootstrap resample can draw one) has a singular system: NaN, not an error
  singular = np.linalg.matrix_rank(VtV) < 3
  c = np.linalg.solve(np.where(singular[:, None, None], np.eye(3)[None], VtV), Vty[..., None])[..., 0]
  c[singular] = np.nan
  return xm[:, 0] - c[:, 1] / (2 * c[:, 2]), c[:, 2]


def _line(x_G: np.ndarray, y_xG: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Least-squares slopes and intercepts of rows of y against x."""
  X = np.stack([x_G, np.ones_like(x_G)], 1)
  coef = np.linalg.lstsq(X, np.atleast_2d(y_xG).T, rcond=None)[0]
  return coef[0], coef[1]


def isoflop_parabola(N: ArrayLike, D: ArrayLike, L: ArrayLike, C_group: ArrayLike, k: float = 6.0, *,
                     n_boot: int = 1000, key: int = 0, level: float = 0.95) -> IsoflopResult:
  """Chinchilla's approach 2: per compute group, fit L against log10 N by a parabola; its minimum gives N_opt(C)
  and D_opt = C / (k N_opt); fit log N_opt = a log C + n0 and log D_opt = b log C + d0 over the groups. Intervals of
  a and b resample points within each group (`n_boot` times; 0 = no bootstrap: the intervals are (NaN, NaN), the
  samples empty and `n_valid` 0). `C_group` holds each point's group compute C.

  D is checked but not used: each group's C fixes D_opt.
  """
  N, D, L = check_arrays(N, D, L)  # no 5-point minimum: the groups' sizes are checked below
  C_group = np.asarray(C_group, float)
  if C_group.shape != N.shape:
    raise ValueError(f"C_group must have one value per point ({len(N)}), got shape {C_group.shape}")
  bad = np.flatnonzero(~np.isfinite(C_group) | (C_group <= 0))
  if bad.size:
    raise ValueError(f"C_group must be finite and > 0: row {bad[0]} is {C_group[bad[0]]}")
  C_G = np.unique(C_group)
  if len(C_G) < 2:
    raise ValueError(f"need >= 2 compute groups to fit a slope, got {len(C_G)}")
  rows = [np.flatnonzero(C_group == c) for c in C_G]
  for c, r in zip(C_G, rows):
    if len(r) < 3:
      raise ValueError(f"compute group C={c:g} has {len(r)} point(s); a parabola needs >= 3")
  width = max(len(r) for r in rows)
  pad = lambda a, r: np.r_[a[r], np.full(width - len(r), a[r][-1])]  # noqa: E731
  x_GxP = np.stack([pad(np.log10(N), r) for r in rows])
  y_GxP = np.stack([pad(L, r) for r in rows])
  w_GxP = np.stack([np.r_[np.ones(len(r)), np.zeros(width - len(r))] for r in rows])
  xopt_G, curv_G = _parabola_min(x_GxP, y_GxP, w_GxP)
  for c, cv in zip(C_G, curv_G):
    if not cv > 0:
      raise ValueError(f"compute group C={c:g}: the parabola of L against log N opens downward (curvature {cv:.3g}); "
                       "its points do not bracket a minimum")
  lC = np.log10(C_G)
  (a,), (n0,) = _line(lC, xopt_G)
  lDopt_G = lC - np.log10(k) - xopt_G
  (b,), (d0,) = _line(lC, lDopt_G)
  if n_boot == 0:  # no bootstrap: no intervals
    nan2, empty = (float("nan"), float("nan")), np.zeros(0)
    return IsoflopResult(C_G, 10.0 ** xopt_G, 10.0 ** lDopt_G, float(a), float(b), float(n0), float(d0), k, level, 0,
                         nan2, nan2, empty, empty)
  # bootstrap: resample within each group (multiplicity weights), all groups and resamples in one batched solve
  rng = np.random.default_rng(key)
  n_G = np.array([len(r) for r in rows])
  w_BxGxP = np.zeros((n_boot, len(C_G), width))
  for g, n in enumerate(n_G):
    np.add.at(w_BxGxP[:, g], (np.arange(n_boot)[:, None], rng.integers(0, n, (n_boot, n))), 1.0)
  xs, cs = _parabola_min(np.broadcast_to(x_GxP, w_BxGxP.shape).reshape(-1, width),
                         np.broadcast_to(y_GxP, w_BxGxP.shape).reshape(-1, width), w_BxGxP.reshape(-1, width))
  xs_BxG, ok_B = xs.reshape(n_boot, -1), np.all(cs.reshape(n_boot, -1) > 0, axis=1) & np.all(np.isfinite(xs.reshape(
      n_boot, -1)), axis=1)
  a_B = _line(lC, xs_BxG[ok_B])[0] if ok_B.any() else np.array([np.nan])
  b_B = 1.0 - a_B  # log D_opt = log C - log k - log N_opt: slopes add to 1
  q = (50 * (1 - level), 50 * (1 + level))
  return IsoflopResult(C_G, 10.0 ** xopt_G, 10.0 ** lDopt_G, float(a), float(b), float(n0), float(d0), k, level,
                       int(ok_B.sum()), tuple(np.percentile(a_B, q)), tuple(np.percentile(b_B, q)), a_B, b_B)


# --------------------------------------------------------------------------- synthetic isoFLOP data


def synthetic_chinchilla(n_groups: int = 8, per_group: int = 30, params: dict | None = None, noise: float = 0.01,
                         seed: int = 0, C_range: tuple[float, float] = (1e18, 1e22), spread: float = 1.0,
                         k: float = 6.0) -> dict[str, np.ndarray]:
  """isoFLOP groups from a planted law (Epoch AI's estimates by default): `n_groups` compute values log-spaced over
  `C_range`, `per_group` model sizes log-spaced within +-`spread` decades of each group's N*(C), D = C / (k N),
  L = L_true * exp(noise * standard normal). Returns N, D, L, L_true, C (per point) and the params."""
  params = dict(EPOCH_PARAMS if params is None else params)
  rng = np.random.default_rng(seed)
  C_G = np.geomspace(*C_range, n_groups)
  N_opt_G = frontier(params, C_G, k)["N_opt"]
  off = np.linspace(-spread, spread, per_group)
  N = (N_opt_G[:, None] * 10.0 ** off[None, :]).reshape(-1)
  C = np.repeat(C_G, per_group)
  D = C / (k * N)
  L_true = params["E"] + params["A"] * N ** -params["alpha"] + params["B"] * D ** -params["beta"]
  L = L_true * np.exp(noise * rng.standard_normal(L_true.shape))
  return {"N": N, "D": D, "L": L, "L_true": L_true, "C": C, "params": params}
