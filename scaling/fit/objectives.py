"""Fitting objectives, weighted by `w_P` so padded points (w = 0) drop out (spec `bnsl.md` §2, §5 pitfall 2).

* ``msle_log1p``: mean (log(pred + 1) - log(y + 1))^2, the BNSL paper's objective (grid and curve_fit alike).
* ``sle``: mean (log pred - log y)^2, the squared log error the benchmark scores.
* ``huber_log``: sum of Huber_delta(log pred - log y), delta = 1e-3 (Epoch AI's Chinchilla replication).

Means are weighted means sum(w e) / sum(w); a weight may be any non-negative count (bootstrap resamples use the
multiplicity of each point). Least-squares objectives also expose residuals r_P with loss = sum r^2, for
Levenberg-Marquardt; Huber has none and is polished with BFGS.

Padded points must still hold valid values (positive x and y): 0 * NaN is NaN, also in gradients.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from scaling.fit.forms import Form

Residual = Callable[[Form, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]


class Objective(NamedTuple):
  """loss(form, theta_K, x, y_P, w_P) -> scalar; residual(...) -> r_P with loss = sum r^2, or None."""

  name: str
  loss: Callable[[Form, jax.Array, jax.Array, jax.Array, jax.Array], jax.Array]
  residual: Residual | None


def _sum_sq(residual: Residual) -> Callable[..., jax.Array]:
  return lambda form, t, x, y, w: jnp.sum(residual(form, t, x, y, w) ** 2)


def _log1p_residual(form: Form, theta_K: jax.Array, x: jax.Array, y_P: jax.Array, w_P: jax.Array) -> jax.Array:
  return jnp.sqrt(w_P / jnp.sum(w_P)) * (jnp.log1p(form.predict(theta_K, x)) - jnp.log1p(y_P))


def _log_residual(form: Form, theta_K: jax.Array, x: jax.Array, y_P: jax.Array, w_P: jax.Array) -> jax.Array:
  return jnp.sqrt(w_P / jnp.sum(w_P)) * (form.log_predict(theta_K, x) - jnp.log(y_P))


def huber(r: jax.Array, delta: float) -> jax.Array:
  """r^2 / 2 for |r| <= delta, delta (|r| - delta / 2) beyond (as scipy.special.huber)."""
  a = jnp.abs(r)
  return jnp.where(a <= delta, 0.5 * r ** 2, delta * (a - 0.5 * delta))


@functools.lru_cache(maxsize=None)
def huber_log(delta: float = 1e-3) -> Objective:
  """Sum of Huber losses of log pred - log y (sum, not mean, as in Epoch AI's replication)."""
  def loss(form, t, x, y, w):
    return jnp.sum(w * huber(form.log_predict(t, x) - jnp.log(y), delta))

  return Objective(f"huber_log({delta:g})", loss, None)


MSLE_LOG1P = Objective("msle_log1p", _sum_sq(_log1p_residual), _log1p_residual)
SLE = Objective("sle", _sum_sq(_log_residual), _log_residual)
OBJECTIVES = {"msle_log1p": MSLE_LOG1P, "sle": SLE, "huber_log": huber_log()}


def get(objective: str | Objective) -> Objective:
  if isinstance(objective, Objective):
    return objective
  if objective not in OBJECTIVES:
    raise ValueError(f"unknown objective {objective!r}; choose one of {sorted(OBJECTIVES)} or pass an Objective")
  return OBJECTIVES[objective]
