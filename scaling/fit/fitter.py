"""Vmapped multistart fits of scaling-law forms, and the bootstrap (BNSL break selection: `scaling.fit.breaks`).

:func:`fit` draws `n_starts` data-driven starting points (`Form.init_fn`), moves each by a few damped Gauss-Newton
steps and evaluates the objective at all of them in one vmapped call, keeps the best start of each of `top_k`
blocks, polishes those in one vmapped call (rounds of optimistix Levenberg-Marquardt -- BFGS for Huber -- in
whitened coordinates, alternated with Gauss-Newton steps; see `_polish_one`), discards invalid results (NaN,
non-finite or non-positive predictions at the data) and returns the best.

Everything after the input checks is one jitted function per (form, objective, settings, chunk shape), run in
float64 inside ``jax.enable_x64(True)``. Curves are padded to a bucketed length with weight-0 copies of their last
point and fitted in vmapped chunks of curves of one padded length (`Batching`), so lengths share compilations;
:func:`fit` is the same call with one curve. Results are bit-reproducible for a fixed `key` where XLA:CPU runs on one
thread; with more, one compiled module can differ in the last bits between calls (jax-ml/jax#39741), which a start
that has not converged can amplify; the best (converged) fit then agrees in its loss to ~1e-9 relative.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from scaling.fit import objectives as objectives_lib
from scaling.fit.forms import Form
from scaling.fit.objectives import Objective


ROUND_RTOL = 1e-10  # a polish round that gains less (relative loss) is the last


class Polish(NamedTuple):
  """Local search settings (see `_polish_one`): `pre_steps` scaled LM steps on every start before screening; then, on
  the top_k, `rounds` of (optimistix LM or BFGS, <= `max_steps`, in whitened coordinates; Gauss-Newton <= `gn_steps`).
  """

  rtol: float = 1e-12
  atol: float = 1e-14
  max_steps: int = 300
  gn_steps: int = 20
  rounds: int = 4
  pre_steps: int = 10
  floor: float = 1e-12


@dataclasses.dataclass(frozen=True)
class FitResult:
  """The best valid polished start. `loss` is the objective (inf and `ok` False when no start was valid)."""

  form: Form
  objective: str
  theta: np.ndarray
  natural: dict[str, float]
  loss: float
  n_valid: int
  polished_theta: np.ndarray
  polished_loss: np.ndarray

  @property
  def ok(self) -> bool:
    return self.n_valid > 0

  def predict(self, x: np.ndarray) -> np.ndarray:
    return self.form.evaluate(self.theta, x)


# --------------------------------------------------------------------------- input checks (numpy, before any compile)


def _check(form: Form, x, y, w=None, name: str = "") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """float64 copies of (x, y, w) after ValueError checks; a point with w = 0 is not checked, only replaced."""
  x, y = np.array(x, np.float64), np.array(y, np.float64)
  where = f"{form.name}{name}"
  if y.ndim != 1:
    raise ValueError(f"{where}: y must be 1-D, got shape {y.shape}")
  want = (len(y),) if form.x_dim == 1 else (len(y), form.x_dim)
  if x.shape != want:
    raise ValueError(f"{where}: x must have shape {want} to match y of length {len(y)}, got {x.shape}")
  w = np.ones(len(y)) if w is None else np.array(w, np.float64)
  if w.shape != y.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
    raise ValueError(f"{where}: w must be finite, >= 0 and of shape {y.shape}")
  m = w > 0
  xm = x[m].reshape(-1)
  if not (np.all(np.isfinite(xm)) and np.all(np.isfinite(y[m]))):
    raise ValueError(f"{where}: x and y must be finite (NaN or inf found)")
  if np.any(xm <= 0) or np.any(y[m] <= 0):
    raise ValueError(f"{where}: x and y must be > 0 (the forms and objectives take logs)")
  if np.any(y[m] >= form.y_upper):
    raise ValueError(f"{where}: y must be < {form.y_upper} (the form's upper bound e0)")
  if m.sum() < form.n_params:
    raise ValueError(f"{where}: {m.sum()} points cannot determine {form.n_params} parameters {form.param_names}")
  last = len(m) - 1 - int(np.argmax(m[::-1]))
  x[~m], y[~m] = x[last], y[last]  # padding must hold valid values (as `_pad`, a copy of the last point)
  return x, y, w


def _bucket(n: int) -> int:
  """Padded length: 16, 32, 64, then multiples of 16 (few compiled shapes, at most 1/4 padding above 64 points)."""
  return max(16, 1 << (n - 1).bit_length()) if n <= 64 else -(-n // 16) * 16


def _pad(a: np.ndarray, length: int, axis: int = 0) -> np.ndarray:
  """Pad by repeating the last entry along `axis`."""
  reps = length - a.shape[axis]
  return np.concatenate([a, np.repeat(np.take(a, [-1], axis=axis), reps, axis=axis)], axis=axis)


def pad_curves(xs: list[np.ndarray], ys: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Curves of different lengths -> (x_CxP, y_CxP, w_CxP) with weight-0 padding, for :func:`fit_many`."""
  length = max(len(y) for y in ys)
  w = np.stack([np.r_[np.ones(len(y)), np.zeros(length - len(y))] for y in ys])
  x, y = (np.stack([_pad(np.asarray(a, np.float64), length) for a in arrs]) for arrs in (xs, ys))
  return x, y, w


# --------------------------------------------------------------------------- the jitted core


def _valid_loss(form: Form, obj: Objective, theta_K, x, y_P, w_P) -> jax.Array:
  """The objective, or inf when it or a prediction at a weighted point is not finite and positive. (The objective
  reuses the predictions: M4's are an implicit solve, which XLA does not merge when computed twice.)"""
  pred = form.predict(theta_K, x)
  loss = obj.loss(dataclasses.replace(form, predict_fn=lambda t, x: pred), theta_K, x, y_P, w_P)
  ok = jnp.isfinite(loss) & jnp.all(jnp.isfinite(pred) & (pred > 0) | (w_P == 0)) & jnp.all(jnp.isfinite(theta_K))
  return jnp.where(ok, loss, jnp.inf)


def _residual_fn(obj: Objective) -> objectives_lib.Residual:
  """The objective's residuals; log residuals (a Gauss-Newton proxy) for Huber, which has none."""
  return obj.residual or objectives_lib.SLE.residual


def _gn_steps(form: Form, obj: Objective, n_steps: int, damping: float, theta_K, x, y_P, w_P) -> jax.Array:
  """`n_steps` Gauss-Newton steps, kept only where the objective decreases: undamped ones are tried at lengths
  1, 1/4 and 1/16; with `damping` > 0 they are Marquardt-damped (by damping * diag(J^T J)) and tried once."""
  residual = _residual_fn(obj)
  loss_fn = lambda t: _valid_loss(form, obj, t, x, y_P, w_P)  # noqa: E731
  scales = jnp.array([1.0, 0.25, 0.0625])

  def step(carry, _):
    theta, loss = carry
    r_P = residual(form, theta, x, y_P, w_P)
    J_PxK = jax.jacfwd(lambda t: residual(form, t, x, y_P, w_P))(theta)
    if damping > 0:  # normal equations: cheap, and well enough conditioned once damped
      JtJ_KxK = J_PxK.T @ J_PxK
      delta_K = -jnp.linalg.solve(JtJ_KxK + damping * jnp.diag(jnp.diag(JtJ_KxK)) + 1e-300 * jnp.eye(len(theta)),
                                  J_PxK.T @ r_P)
    else:  # SVD least squares: accurate when J is ill-conditioned
      delta_K = -jnp.linalg.lstsq(J_PxK, r_P)[0]
    trial_3xK = theta[None, :] + scales[:, None] * delta_K[None, :]
    trial_loss = jax.vmap(loss_fn)(trial_3xK)
    i = jnp.argmin(trial_loss)
    ok = jnp.isfinite(trial_loss[i]) & (trial_loss[i] < loss)
    return (jnp.where(ok, trial_3xK[i], theta), jnp.where(ok, trial_loss[i], loss)), None

  (theta_K, _), _ = jax.lax.scan(step, (theta_K, loss_fn(theta_K)), None, length=n_steps)
  return theta_K


def _whitener(form: Form, obj: Objective, floor: float, theta_K, x, y_P, w_P) -> jax.Array:
  """M_KxK = V diag(1 / s) from the SVD J = U diag(s) V^T of the residual Jacobian, singular values floored at
  `floor` * s_max; the identity where J is not finite."""
  J_PxK = jax.jacfwd(lambda t: _residual_fn(obj)(form, t, x, y_P, w_P))(theta_K)
  _, s_K, vt_KxK = jnp.linalg.svd(J_PxK, full_matrices=False)
  M_KxK = vt_KxK.T / jnp.maximum(s_K, floor * s_K[0] + 1e-300)[None, :]
  return jnp.where(jnp.all(jnp.isfinite(M_KxK)), M_KxK, jnp.eye(theta_K.shape[0], dtype=theta_K.dtype))


def _local_solve(form: Form, obj: Objective, polish: Polish, theta_K, x, y_P, w_P) -> jax.Array:
  """One optimistix solve from theta_K in whitened coordinates theta = theta_K + M z: Levenberg-Marquardt on the
  residuals (trust-region constants as MINPACK's: grow x2 above ratio 0.75, halve below 1e-4), or BFGS on Huber."""
  M_KxK = _whitener(form, obj, polish.floor, theta_K, x, y_P, w_P)
  if obj.residual is None:
    fn = lambda z, args: obj.loss(form, theta_K + M_KxK @ z, x, y_P, w_P)  # noqa: E731
    sol = optx.minimise(fn, optx.BFGS(rtol=polish.rtol, atol=polish.atol), jnp.zeros_like(theta_K),
                        max_steps=polish.max_steps, throw=False)
  else:
    lm = eqx.tree_at(lambda s: s.search, optx.LevenbergMarquardt(rtol=polish.rtol, atol=polish.atol),
                     optx.ClassicalTrustRegion(high_cutoff=0.75, low_cutoff=1e-4, high_constant=2.0, low_constant=0.5))
    fn = lambda z, args: obj.residual(form, theta_K + M_KxK @ z, x, y_P, w_P)  # noqa: E731
    sol = optx.least_squares(fn, lm, jnp.zeros_like(theta_K), max_steps=polish.max_steps, throw=False)
  return theta_K + M_KxK @ sol.value


def _polish_one(form: Form, obj: Objective, polish: Polish, theta0_K, x, y_P, w_P) -> jax.Array:
  """`polish.rounds` of (a whitened optimistix solve, then `gn_steps` Gauss-Newton steps); never increases the loss.

  Why: the fits are sloppy (the singular values of J span ~10 decades on noiseless BNSL data) and the minimum can
  lie at the end of a long curved valley. Whitening makes each LM solve well conditioned (a unit step in z changes
  the residuals by about one unit, so `atol` reads as a residual tolerance). LM's damped trust region gets into a
  basin but then crawls along such a valley (thousands of steps), where undamped Gauss-Newton steps reach the
  minimum in a few dozen; hence the alternation. A round that lowers the loss by less than a relative `ROUND_RTOL`
  ends the polish (the next round would start where it ended, from the same whitening).
  """
  def one_round(carry):
    i, theta_K, loss, _ = carry
    new_K = _local_solve(form, obj, polish, theta_K, x, y_P, w_P)
    new_loss = _valid_loss(form, obj, new_K, x, y_P, w_P)
    better = new_loss <= loss
    theta_K = jnp.where(better, new_K, theta_K)
    theta_K = _gn_steps(form, obj, polish.gn_steps, 0.0, theta_K, x, y_P, w_P)
    end_loss = _valid_loss(form, obj, theta_K, x, y_P, w_P)
    return i + 1, theta_K, end_loss, ~(end_loss >= loss * (1.0 - ROUND_RTOL))

  loss0 = _valid_loss(form, obj, theta0_K, x, y_P, w_P)
  cond = lambda c: (c[0] < polish.rounds) & c[3]  # noqa: E731
  _, theta_K, _, _ = jax.lax.while_loop(cond, one_round, (0, theta0_K, loss0, jnp.asarray(True)))
  return theta_K


def _fit_core(form: Form, obj: Objective, n_starts: int, top_k: int, polish: Polish, x, y_P, w_P, key):
  valid_loss = jax.vmap(lambda t: _valid_loss(form, obj, t, x, y_P, w_P))
  theta0_NxK = form.init_fn(key, x, y_P, w_P, n_starts)
  if polish.pre_steps:
    theta0_NxK = jax.vmap(lambda t: _gn_steps(form, obj, polish.pre_steps, 1e-3, t, x, y_P, w_P))(theta0_NxK)
  block = n_starts // top_k  # the best start of each of top_k blocks: diverse candidates, not 32 near-copies
  loss_kxB = valid_loss(theta0_NxK[:top_k * block]).reshape(top_k, block)
  idx_k = jnp.arange(top_k) * block + jnp.argmin(loss_kxB, axis=1)
  theta_kxK = jax.vmap(lambda t: _polish_one(form, obj, polish, t, x, y_P, w_P))(theta0_NxK[idx_k])
  loss_k = valid_loss(theta_kxK)
  best = jnp.argmin(loss_k)
  return theta_kxK[best], loss_k[best], jnp.sum(jnp.isfinite(loss_k)), theta_kxK, loss_k


@functools.lru_cache(maxsize=None)
def _compiled_fit(form: Form, obj: Objective, n_starts: int, top_k: int, polish: Polish):
  """(x_CxP, y_CxP, w_CxP, key) -> per-curve (theta, loss, n_valid, theta_kxK, loss_k), vmapped over curves."""
  core = functools.partial(_fit_core, form, obj, n_starts, top_k, polish)
  return jax.jit(jax.vmap(core, in_axes=(0, 0, 0, None)))


@functools.lru_cache(maxsize=None)
def _compiled_refit(form: Form, obj: Objective, polish: Polish):
  """theta0_K, x, y_P, w_BxP -> (theta_BxK, loss_B): one warm-started polish per weight vector."""
  def one(theta0_K, x, y_P, w_P):
    t = _polish_one(form, obj, polish, theta0_K, x, y_P, w_P)
    return t, _valid_loss(form, obj, t, x, y_P, w_P)
  return jax.jit(jax.vmap(one, in_axes=(None, None, None, 0)))


def _result(form: Form, obj: Objective, out) -> FitResult:
  theta, loss, n_valid, theta_kxK, loss_k = (np.asarray(o) for o in out)
  return FitResult(form, obj.name, theta, form.natural(theta), float(loss), int(n_valid), theta_kxK, loss_k)


# --------------------------------------------------------------------------- public API


class Batching(NamedTuple):
  """How curves are cut into vmapped calls (see `_chunks`). Each call holds curves of one padded length, the
  smallest of `lengths` that fits them (`()` or a longer curve: the `_bucket` of its length), and `chunk` curves
  (`fixed`) or fewer when fewer share a length (the next power of 2 >= their number)."""

  chunk: int = 8
  lengths: tuple[int, ...] = ()
  fixed: bool = False


def _padded_length(n: int, lengths: tuple[int, ...]) -> int:
  return min([b for b in lengths if b >= n] or [_bucket(n)])


def _chunks(lengths: list[int], batching: Batching = Batching()) -> list[tuple[int, list[int]]]:
  """(padded length, curve indices) per vmapped call: curves grouped by padded length, each group cut into chunks,
  the last one filled with copies of its last curve.

  Why: a curve costs its padded length, so grouping by length cuts padding (IC: 71 points padded to 128 before); a
  batched loop runs until its slowest lane converges, so small chunks stop sooner; and each distinct (chunk, length)
  is one compilation (~5-15 s), so few fixed shapes (`Batching(fixed=True)`) let domains, validation fits and refits
  share compiled programs.
  """
  groups: dict[int, list[int]] = {}
  for i, n in enumerate(lengths):
    groups.setdefault(_padded_length(n, batching.lengths), []).append(i)
  out = []
  for length, idx in sorted(groups.items()):
    size = batching.chunk if batching.fixed else min(batching.chunk, 1 << (len(idx) - 1).bit_length())
    for j in range(0, len(idx), size):
      part = idx[j:j + size]
      out.append((length, part + part[-1:] * (size - len(part))))
  return out


def _fit_checked(form: Form, obj: Objective, curves: list[tuple[np.ndarray, ...]], n_starts: int, top_k: int,
                 key: int, polish: Polish, batching: Batching = Batching()) -> list[FitResult]:
  """Checked curves (x, y, w) -> vmapped calls over chunks of curves (`_chunks`; a curve's trailing weight-0 points
  are dropped first), each curve's row the same as when it is fitted alone."""
  if not 1 <= top_k <= n_starts:
    raise ValueError(f"need 1 <= top_k <= n_starts, got top_k={top_k}, n_starts={n_starts}")
  trimmed = [tuple(a[:len(c[2]) - int(np.argmax(c[2][::-1] > 0))] for a in c) for c in curves]
  out: list[FitResult | None] = [None] * len(curves)
  fn = _compiled_fit(form, obj, n_starts, top_k, polish)
  for length, idx in _chunks([len(c[1]) for c in trimmed], batching):
    x, y = (np.stack([_pad(trimmed[i][j], length) for i in idx]) for j in (0, 1))
    w = np.stack([np.r_[trimmed[i][2], np.zeros(length - len(trimmed[i][2]))] for i in idx])
    with jax.enable_x64(True):
      res = jax.device_get(fn(x, y, w, jax.random.PRNGKey(key)))
    for row, i in enumerate(idx):
      out[i] = _result(form, obj, [o[row] for o in res])
  return out  # type: ignore[return-value]


def fit(form: Form, x, y, *, objective: str | Objective = "msle_log1p", n_starts: int = 4096, top_k: int = 32,
        key: int = 0, w=None, polish: Polish = Polish()) -> FitResult:
  """Multistart fit of `form` to (x, y): screen `n_starts` starts, polish the best `top_k`, keep the best valid.

  `w` weights the points (0 = ignore). Deterministic for a fixed `key` (bitwise on one CPU thread: see the module docstring).
  """
  obj = objectives_lib.get(objective)
  return _fit_checked(form, obj, [_check(form, x, y, w)], n_starts, top_k, key, polish)[0]


def fit_many(form: Form, x_CxP, y_CxP, w_CxP=None, *, objective: str | Objective = "msle_log1p",
             n_starts: int = 4096, top_k: int = 32, key: int = 0, polish: Polish = Polish(),
             batching: Batching = Batching()) -> list[FitResult]:
  """:func:`fit` of C curves in a few vmapped calls (the same `key` for each, so each equals its own fit up to
  rounding; `batching` says how curves are grouped into calls).

  Curves of different lengths are padded with weight-0 points (see :func:`pad_curves`).
  """
  obj = objectives_lib.get(objective)
  y_CxP = np.asarray(y_CxP, np.float64)
  if y_CxP.ndim != 2:
    raise ValueError(f"y_CxP must be 2-D (curves, points), got shape {y_CxP.shape}")
  w_CxP = np.ones(y_CxP.shape) if w_CxP is None else np.asarray(w_CxP, np.float64)
  if w_CxP.shape != y_CxP.shape or np.shape(x_CxP)[0] != len(y_CxP):
    raise ValueError(f"x_CxP, y_CxP, w_CxP disagree in (curves, points): {np.shape(x_CxP)}, {y_CxP.shape}, "
                     f"{w_CxP.shape}")
  curves = [_check(form, xc, yc, wc, f"[curve {i}]") for i, (xc, yc, wc) in enumerate(zip(x_CxP, y_CxP, w_CxP))]
  return _fit_checked(form, obj, curves, n_starts, top_k, key, polish, batching)


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
  """Percentile intervals ([lo, hi] at `level`) of natural parameters and of predictions at `x_eval`."""

  level: float
  n_valid: int
  natural_lo: dict[str, float]
  natural_hi: dict[str, float]
  pred_lo: np.ndarray
  pred_hi: np.ndarray
  theta_BxK: np.ndarray


def bootstrap(form: Form, x, y, *, n_boot: int = 200, key: int = 0, x_eval=None, level: float = 0.95,
              objective: str | Objective = "msle_log1p", base: FitResult | None = None,
              polish: Polish = Polish()) -> BootstrapResult:
  """Case-resampling bootstrap: each resample is a multiplicity weight vector over the points; all resamples are
  refitted in one vmapped call, warm-started from the full fit (`base`, fitted here when not given).
  """
  obj = objectives_lib.get(objective)
  x, y, _ = _check(form, x, y)
  base = fit(form, x, y, objective=obj, key=key, polish=polish) if base is None else base
  P, length = len(y), _bucket(len(y))
  rng = np.random.default_rng(key)
  w_BxP = np.zeros((n_boot, length))
  np.add.at(w_BxP, (np.arange(n_boot)[:, None], rng.integers(0, P, (n_boot, P))), 1.0)
  x_eval = x if x_eval is None else np.asarray(x_eval, np.float64)
  with jax.enable_x64(True):
    theta_BxK, loss_B = jax.device_get(_compiled_refit(form, obj, polish)(base.theta, _pad(x, length),
                                                                         _pad(y, length), w_BxP))
    pred_BxE = np.asarray(jax.vmap(lambda t: form.predict(t, jnp.asarray(x_eval)))(theta_BxK))
  ok = np.isfinite(loss_B) & np.all(np.isfinite(pred_BxE), axis=1)
  q = (50 * (1 - level), 50 * (1 + level))
  nat = form.natural(theta_BxK[ok])
  lo_hi = {k: np.percentile(v, q) for k, v in nat.items()}
  pred = np.percentile(pred_BxE[ok], q, axis=0)
  return BootstrapResult(level, int(ok.sum()), {k: float(v[0]) for k, v in lo_hi.items()},
                         {k: float(v[1]) for k, v in lo_hi.items()}, pred[0], pred[1], theta_BxK[ok])
