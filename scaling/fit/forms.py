"""Scaling-law functional forms as pure JAX functions of unconstrained parameters (spec `bnsl.md` §1, §3, §5).

Every form is a :class:`Form`: ``predict(theta_K, x)`` maps an *unconstrained* parameter vector to predictions, with
positive parameters stored as logs, so any real ``theta_K`` gives a valid curve and the fitter never needs bounds.
``natural`` / ``unconstrained`` convert to and from the named parameters of the paper.

Precision: the forms are meant to be evaluated in float64. Nothing here switches x64 on globally; the fitter runs
inside ``jax.enable_x64(True)`` (a context manager in jax 0.10) and :meth:`Form.evaluate` does the same. Calling
``predict`` yourself outside that context computes in float32.

BNSL is evaluated in log space (spec §5 pitfall 3)::

    y = a + exp(log b - c0 log x - sum_i c_i f_i softplus((log x - log d_i) / f_i))

which equals the official ``a + b x^-c0 prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i)`` and cannot overflow.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

LOG2 = math.log(2.0)
M4_HALLEY_ITERS = 6


@dataclasses.dataclass(frozen=True, eq=False)
class Form:
  """A functional form y = F(theta, x). Forms compare by identity; the factories below cache them.

  predict_fn / log_predict_fn: (theta_K, x) -> y_P / log y_P, pure JAX, x of shape (P,) or (P, x_dim).
  natural_fn: numpy theta[..., K] -> tuple of natural parameters (in `param_names` order), each theta[..., 0]-shaped.
  unconstrained_fn: natural parameters (in order) -> theta_K (numpy).
  init_fn: (key, x, y_P, w_P, n) -> theta_NxK, data-driven random starting points (JAX, traceable, w-masked).
  y_upper: predictions lie below this (M4's e0); y must too.
  """

  name: str
  param_names: tuple[str, ...]
  predict_fn: Callable[[jax.Array, jax.Array], jax.Array]
  log_predict_fn: Callable[[jax.Array, jax.Array], jax.Array]
  natural_fn: Callable[[np.ndarray], tuple[np.ndarray, ...]]
  unconstrained_fn: Callable[..., np.ndarray]
  init_fn: Callable[[jax.Array, jax.Array, jax.Array, jax.Array, int], jax.Array]
  x_dim: int = 1
  y_upper: float = math.inf

  @property
  def n_params(self) -> int:
    return len(self.param_names)

  def predict(self, theta_K: jax.Array, x: jax.Array) -> jax.Array:
    return self.predict_fn(theta_K, x)

  def log_predict(self, theta_K: jax.Array, x: jax.Array) -> jax.Array:
    return self.log_predict_fn(theta_K, x)

  def natural(self, theta: np.ndarray) -> dict[str, np.ndarray | float]:
    """Named natural parameters of theta[..., K]; floats for a single vector."""
    with np.errstate(over="ignore"):  # exp of a huge unconstrained value is inf, which is what it means
      values = self.natural_fn(np.asarray(theta, np.float64))
    return {k: (float(v) if np.ndim(v) == 0 else np.asarray(v)) for k, v in zip(self.param_names, values)}

  def unconstrained(self, natural: Mapping[str, float]) -> np.ndarray:
    missing = set(self.param_names) - set(natural)
    if missing:
      raise ValueError(f"{self.name}: missing parameters {sorted(missing)}")
    return np.asarray(self.unconstrained_fn(*[float(natural[k]) for k in self.param_names]), np.float64)

  def init_grid(self, x_P: np.ndarray, y_P: np.ndarray, n: int, *, key: int = 0,
                w_P: np.ndarray | None = None) -> np.ndarray:
    """`n` data-driven starting points theta_NxK (float64), reproducible for a fixed `key`."""
    with jax.enable_x64(True):
      w = np.ones(np.shape(y_P)) if w_P is None else w_P
      out = self.init_fn(jax.random.PRNGKey(key), jnp.asarray(x_P, jnp.float64), jnp.asarray(y_P, jnp.float64),
                         jnp.asarray(w, jnp.float64), n)
      return np.asarray(out)

  def evaluate(self, theta_K: np.ndarray, x: np.ndarray) -> np.ndarray:
    """predict in float64, as numpy."""
    with jax.enable_x64(True):
      return np.asarray(self.predict_fn(jnp.asarray(theta_K, jnp.float64), jnp.asarray(x, jnp.float64)))


# --------------------------------------------------------------------------- init helpers (JAX, masked by w > 0)


def _data_scale(lx_P: jax.Array, y_P: jax.Array, w_P: jax.Array) -> tuple[jax.Array, ...]:
  """(min log x, max log x, min y, slope scale S) over the points with w > 0."""
  m = w_P > 0
  lo, hi = jnp.min(jnp.where(m, lx_P, jnp.inf)), jnp.max(jnp.where(m, lx_P, -jnp.inf))
  ly = jnp.log(y_P)
  ly_span = jnp.max(jnp.where(m, ly, -jnp.inf)) - jnp.min(jnp.where(m, ly, jnp.inf))
  slope = jnp.maximum(0.5, 2.0 * ly_span / jnp.maximum(hi - lo, 1e-3))
  return lo, hi, jnp.min(jnp.where(m, y_P, jnp.inf)), slope


def _wmean_NxP(v_NxP: jax.Array, w_P: jax.Array) -> jax.Array:
  return jnp.sum(v_NxP * w_P[None, :], axis=1) / jnp.sum(w_P)


def _u(key: jax.Array, shape: tuple[int, ...], lo, hi) -> jax.Array:
  return jax.random.uniform(key, shape, jnp.float64, lo, hi)


def _log_offset(key: jax.Array, n: int, y_min: jax.Array) -> jax.Array:
  """log of an offset a in (0, min y): log-uniform over [min y e^-8, 0.999 min y]."""
  return jnp.log(y_min) + _u(key, (n,), -8.0, math.log(0.999))


def _signed_slope(key: jax.Array, shape: tuple[int, ...], scale: jax.Array) -> jax.Array:
  """Slopes of magnitude log-uniform in [0.02, 10 S], positive with probability 0.7."""
  k_mag, k_sign = jax.random.split(key)
  mag = jnp.exp(_u(k_mag, shape, math.log(0.02), jnp.log(10.0 * scale)))
  return jnp.where(_u(k_sign, shape, 0.0, 1.0) < 0.7, mag, -mag)


# --------------------------------------------------------------------------- power laws M1, M2, M3


@functools.lru_cache(maxsize=None)
def m1() -> Form:
  """M1: y = b x^-c (theta = log b, c)."""
  def log_predict(t, x):
    return t[0] - t[1] * jnp.log(x)

  def init(key, x, y, w, n):
    lx = jnp.log(x)
    c = _u(key, (n,), -0.5, 1.5) * _data_scale(lx, y, w)[3]
    tb = _wmean_NxP(jnp.log(y)[None, :] + c[:, None] * lx[None, :], w)
    return jnp.stack([tb, c], axis=1)

  return Form("m1", ("b", "c"), lambda t, x: jnp.exp(log_predict(t, x)), log_predict,
              lambda t: (np.exp(t[..., 0]), t[..., 1]), lambda b, c: [math.log(b), c], init)


@functools.lru_cache(maxsize=None)
def m2() -> Form:
  """M2: y = a + b x^-c (theta = log a, log b, c)."""
  def predict(t, x):
    return jnp.exp(t[0]) + jnp.exp(t[1] - t[2] * jnp.log(x))

  def log_predict(t, x):
    return jnp.logaddexp(t[0], t[1] - t[2] * jnp.log(x))

  def init(key, x, y, w, n):
    k_a, k_c = jax.random.split(key)
    lx = jnp.log(x)
    _, _, y_min, scale = _data_scale(lx, y, w)
    ta, c = _log_offset(k_a, n, y_min), _signed_slope(k_c, (n,), scale)
    tb = _wmean_NxP(jnp.log(y[None, :] - jnp.exp(ta)[:, None]) + c[:, None] * lx[None, :], w)
    return jnp.stack([ta, tb, c], axis=1)

  return Form("m2", ("a", "b", "c"), predict, log_predict, lambda t: (np.exp(t[..., 0]), np.exp(t[..., 1]), t[..., 2]),
              lambda a, b, c: [math.log(a), math.log(b), c], init)


@functools.lru_cache(maxsize=None)
def m3() -> Form:
  """M3: y = b (1/x + g)^c with c, g > 0 (theta = log b, log c, log g)."""
  def log_predict(t, x):
    return t[0] + jnp.exp(t[1]) * jnp.logaddexp(-jnp.log(x), t[2])

  def init(key, x, y, w, n):
    k_c, k_g = jax.random.split(key)
    lx = jnp.log(x)
    lo, hi, _, scale = _data_scale(lx, y, w)
    lc = _u(k_c, (n,), math.log(0.01), jnp.log(10.0 * scale))
    lg = _u(k_g, (n,), -hi - math.log(100.0), -lo + math.log(100.0))
    shape_NxP = jnp.exp(lc)[:, None] * jnp.logaddexp(-lx[None, :], lg[:, None])
    return jnp.stack([_wmean_NxP(jnp.log(y)[None, :] - shape_NxP, w), lc, lg], axis=1)

  return Form("m3", ("b", "c", "g"), lambda t, x: jnp.exp(log_predict(t, x)), log_predict,
              lambda t: (np.exp(t[..., 0]), np.exp(t[..., 1]), np.exp(t[..., 2])),
              lambda b, c, g: [math.log(b), math.log(c), math.log(g)], init)


# --------------------------------------------------------------------------- M4 (implicit)


def _softplus_sigmoid(u: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(softplus(u), sigmoid(u)) from one exp and one log1p."""
  e = jnp.exp(-jnp.abs(u))
  return jnp.maximum(u, 0.0) + jnp.log1p(e), jnp.where(u >= 0, 1.0, e) / (1.0 + e)


def _m4_solve(r_P: jax.Array, alpha: jax.Array) -> jax.Array:
  """The root u of h(u) = log sigmoid(u) - alpha log sigmoid(-u) = u + (alpha - 1) softplus(u) = r, elementwise,
  differentiable.

  h is strictly increasing (h' = 1 + (alpha - 1) sigmoid(u) > 0), and with phi(u) = min(u, 0) + alpha max(u, 0) the
  root lies in [phi^-1(r - alpha log 2), phi^-1(r + log 2)]. `M4_HALLEY_ITERS` safeguarded Halley steps (a step that
  leaves the bracket is replaced by bisection; one exp and one log1p each) run on stopped gradients from phi^-1(r);
  one last Newton step with gradients gives the implicit-function derivative du/dp = -(dh/dp - dr/dp) / h'(u)
  exactly at the root. (Measured on 4e5 random (r, alpha), alpha in [1e-4, 1e4]: 6 Halley steps reach a relative
  error <= 1e-12 in u, which the last Newton step squares; the former 30 Newton steps of two softplus and two
  sigmoids each evaluated 10x as many transcendentals.)
  """
  r0, al0 = jax.lax.stop_gradient(r_P), jnp.maximum(jax.lax.stop_gradient(alpha), 1e-300)
  am1 = al0 - 1.0
  inv = lambda v: jnp.where(v < 0, v, v / al0)  # noqa: E731
  lo = jnp.clip(inv(r0 - al0 * LOG2) - 1.0, -1e3, 1e3)
  hi = jnp.clip(inv(r0 + LOG2) + 1.0, -1e3, 1e3)

  def body(_, state):
    u, lo, hi = state
    sp, sig = _softplus_sigmoid(u)
    g, d1, d2 = u + am1 * sp - r0, 1.0 + am1 * sig, am1 * sig * (1.0 - sig)
    lo, hi = jnp.where(g < 0, u, lo), jnp.where(g > 0, u, hi)
    un = u - 2.0 * g * d1 / (2.0 * d1 * d1 - g * d2)
    return jnp.where((un >= lo) & (un <= hi), un, 0.5 * (lo + hi)), lo, hi

  u, _, _ = jax.lax.fori_loop(0, M4_HALLEY_ITERS, body, (jnp.clip(inv(r0), lo, hi), lo, hi))
  u = jax.lax.stop_gradient(u)
  sp, sig = _softplus_sigmoid(u)
  return u - (u + (alpha - 1.0) * sp - r_P) / (1.0 + (alpha - 1.0) * sig)


@functools.lru_cache(maxsize=None)
def m4(e0: float = 1.0) -> Form:
  """M4: (y - a) / (e0 - y)^alpha = b x^-c, with 0 < a < e0 and alpha, b, c > 0; e0 is fixed (spec §3: 1.0).

  theta = (logit(a / e0), log alpha, log b, log c). The prediction y = a + (e0 - a) sigmoid(u) solves the implicit
  equation in u (see `_m4_solve`), so it is exact to float64 and differentiable, unlike the reference grid solve.
  """
  le0 = math.log(e0)

  def predict(t, x):
    a, alpha = e0 * jax.nn.sigmoid(t[0]), jnp.exp(t[1])
    r = t[2] - jnp.exp(t[3]) * jnp.log(x) + (alpha - 1.0) * (le0 - jax.nn.softplus(t[0]))
    return a + (e0 - a) * jax.nn.sigmoid(_m4_solve(r, alpha))

  def init(key, x, y, w, n):
    k_a, k_al, k_c = jax.random.split(key, 3)
    lx = jnp.log(x)
    _, _, y_min, scale = _data_scale(lx, y, w)
    a = jnp.exp(_log_offset(k_a, n, y_min))
    lal = _u(k_al, (n,), math.log(0.01), math.log(10.0))
    lc = _u(k_c, (n,), math.log(0.01), jnp.log(10.0 * scale))
    v_NxP = (jnp.log(y[None, :] - a[:, None]) - jnp.exp(lal)[:, None] * jnp.log(e0 - y)[None, :]
             + jnp.exp(lc)[:, None] * lx[None, :])
    return jnp.stack([jnp.log(a) - jnp.log(e0 - a), lal, _wmean_NxP(v_NxP, w), lc], axis=1)

  def natural(t):
    return e0 * special.expit(t[..., 0]), np.exp(t[..., 1]), np.exp(t[..., 2]), np.exp(t[..., 3])

  def unconstrained(a, alpha, b, c):
    return [math.log(a) - math.log(e0 - a), math.log(alpha), math.log(b), math.log(c)]

  return Form(f"m4(e0={e0:g})", ("a", "alpha", "b", "c"), predict, lambda t, x: jnp.log(predict(t, x)), natural,
              unconstrained, init, y_upper=e0)


# --------------------------------------------------------------------------- BNSL


def bnsl_names(n: int) -> tuple[str, ...]:
  """a, b, c0, c1..cn, d1..dn, f1..fn (the official 1-break order a, b, c0, c1, d1, f1)."""
  idx = range(1, n + 1)
  return ("a", "b", "c0", *(f"c{i}" for i in idx), *(f"d{i}" for i in idx), *(f"f{i}" for i in idx))


def _bnsl_log_tail(t: jax.Array, lx_P: jax.Array, n: int) -> jax.Array:
  """log(y - a) = log b - c0 log x - sum_i c_i f_i softplus((log x - log d_i) / f_i)."""
  c, ld, f = jnp.sinh(t[3:3 + n]), t[3 + n:3 + 2 * n], jnp.exp(t[3 + 2 * n:3 + 3 * n])
  z_PxN = (lx_P[:, None] - ld[None, :]) / f[None, :]
  return t[1] - t[2] * lx_P - jnp.sum((c * f)[None, :] * jax.nn.softplus(z_PxN), axis=1)


@functools.lru_cache(maxsize=None)
def bnsl(n: int = 1) -> Form:
  """BNSL with n breaks; theta = (log a, log b, c0, asinh c1..cn, log d1..dn, log f1..fn). c_i may be negative.

  asinh (linear near 0, log-like for |c| > 1) straightens the valley of a break beyond the fitted range, where only
  c_i f_i (x / d_i)^(1 / f_i) is determined: log|c_i| - log d_i / f_i = const is a line in these coordinates.
  (Measured on the noiseless 4-digit simulation fitted to x <= 405: the break is recovered for 6 of 6 keys with
  asinh, 2 of 6 with c_i itself.)
  """
  if n < 0:
    raise ValueError(f"number of breaks must be >= 0, got {n}")

  def predict(t, x):
    return jnp.exp(t[0]) + jnp.exp(_bnsl_log_tail(t, jnp.log(x), n))

  def log_predict(t, x):
    return jnp.logaddexp(t[0], _bnsl_log_tail(t, jnp.log(x), n))

  def init(key, x, y, w, n_starts):
    k_a, k_c0, k_c, k_d, k_f = jax.random.split(key, 5)
    lx = jnp.log(x)
    lo, hi, y_min, scale = _data_scale(lx, y, w)
    span = jnp.maximum(hi - lo, 1e-3)
    ta = _log_offset(k_a, n_starts, y_min)
    c0 = _u(k_c0, (n_starts,), -0.5, 1.5) * scale
    c = jnp.arcsinh(_signed_slope(k_c, (n_starts, n), scale))
    ld = jnp.sort(_u(k_d, (n_starts, n), lo - math.log(10.0), hi + math.log(10.0)), axis=1)
    lf = _u(k_f, (n_starts, n), jnp.log(0.003 * span), jnp.log(3.0 * span))
    theta = jnp.concatenate([ta[:, None], jnp.zeros((n_starts, 1)), c0[:, None], c, ld, lf], axis=1)
    tail_NxP = jax.vmap(lambda t: _bnsl_log_tail(t, lx, n))(theta)
    tb = _wmean_NxP(jnp.log(y[None, :] - jnp.exp(ta)[:, None]) - tail_NxP, w)
    return theta.at[:, 1].set(tb)

  def natural(t):
    return (np.exp(t[..., 0]), np.exp(t[..., 1]), t[..., 2], *(np.sinh(t[..., 3 + i]) for i in range(n)),
            *(np.exp(t[..., 3 + n + i]) for i in range(2 * n)))

  def unconstrained(a, b, c0, *rest):
    return [math.log(a), math.log(b), c0, *(math.asinh(v) for v in rest[:n]), *(math.log(v) for v in rest[n:])]

  return Form(f"bnsl{n}", bnsl_names(n), predict, log_predict, natural, unconstrained, init)


def bnsl_naive(natural: Mapping[str, float], x: np.ndarray) -> np.ndarray:
  """The official formula a + b x^-c0 prod_i (1 + (x/d_i)^(1/f_i))^(-c_i f_i), in numpy (overflows for small f)."""
  x = np.asarray(x, np.float64)
  n = sum(1 for k in natural if k.startswith("d"))
  y = natural["b"] * x ** (-natural["c0"])
  for i in range(1, n + 1):
    c, d, f = natural[f"c{i}"], natural[f"d{i}"], natural[f"f{i}"]
    y = y * (1.0 + (x / d) ** (1.0 / f)) ** (-c * f)
  return natural["a"] + y


# --------------------------------------------------------------------------- Chinchilla


@functools.lru_cache(maxsize=None)
def chinchilla() -> Form:
  """L(N, D) = E + A / N^alpha + B / D^beta, x = (N, D) of shape (P, 2); theta = logs of (E, A, B, alpha, beta)."""
  def log_predict(t, x_Px2):
    lN, lD = jnp.log(x_Px2[:, 0]), jnp.log(x_Px2[:, 1])
    terms_3xP = jnp.stack([jnp.broadcast_to(t[0], lN.shape), t[1] - jnp.exp(t[3]) * lN, t[2] - jnp.exp(t[4]) * lD])
    return jax.nn.logsumexp(terms_3xP, axis=0)

  def init(key, x_Px2, y, w, n):
    k_e, k_al, k_be, k_u = jax.random.split(key, 4)
    _, _, y_min, _ = _data_scale(jnp.log(x_Px2[:, 0]), y, w)
    te = _log_offset(k_e, n, y_min)
    lal, lbe = (_u(k, (n,), math.log(0.05), math.log(2.0)) for k in (k_al, k_be))
    u = _u(k_u, (n,), 0.05, 0.95)
    lr = _wmean_NxP(jnp.log(y[None, :] - jnp.exp(te)[:, None]), w)  # log geometric mean of y - E
    mean_lN = jnp.sum(w * jnp.log(x_Px2[:, 0])) / jnp.sum(w)
    mean_lD = jnp.sum(w * jnp.log(x_Px2[:, 1])) / jnp.sum(w)
    ta, tb = lr + jnp.log(u) + jnp.exp(lal) * mean_lN, lr + jnp.log1p(-u) + jnp.exp(lbe) * mean_lD
    return jnp.stack([te, ta, tb, lal, lbe], axis=1)

  return Form("chinchilla", ("E", "A", "B", "alpha", "beta"), lambda t, x: jnp.exp(log_predict(t, x)), log_predict,
              lambda t: tuple(np.exp(t[..., i]) for i in range(5)), lambda *v: [math.log(u) for u in v], init,
              x_dim=2)


FORMS: dict[str, Callable[[], Form]] = {"m1": m1, "m2": m2, "m3": m3, "m4": m4, "bnsl0": lambda: bnsl(0),
                                         "bnsl1": lambda: bnsl(1), "bnsl2": lambda: bnsl(2), "bnsl3": lambda: bnsl(3),
                                         "chinchilla": chinchilla}
