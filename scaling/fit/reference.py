"""Faithful numpy port of the scaling-law estimators M1-M4 of Alabdulmohsin, Neyshabur & Zhai, "Revisiting Neural
Scaling Laws in Language and Vision" (NeurIPS 2022), as fitted by their public code (google-research/google-research,
`revisiting_neural_scaling_laws/methods/{base,m1,m2,m3,m4}.py` and the notebook; spec `bnsl.md` §3).

The forms (their sign convention: c < 0 in M1, M2, M4):

    M1: y = beta x^c                                  (one least-squares fit of log y on [1, log x])
    M2: y = err_inf + beta x^c                        (alternate: LS for beta, c; GD then Newton for err_inf)
    M3: y = beta (1/x + gamma)^c, c >= 0, gamma >= 0  (alternate: LS for beta, c; gamma from a per-point grid)
    M4: (y - err_inf) / (err_0 - y)^alpha = beta x^c  (alternate: non-negative LS for beta, c, alpha; GD then Newton
                                                       for err_inf, err_0; predictions solved on a 10,000-point grid)

Every step of the original is kept, its quirks included: err_inf and err_0 are projected after each step onto
[0, min y - 1e-3] and [max y + 1e-3, up_bound + 1e-3]; M4's regression column log(err_0 - y) keeps the *initial* err_0
while err_0 itself moves; M4's non-negative LS also forces log beta >= 0; M3's c is clipped at 0. The only changes
are mechanical: sklearn's LinearRegression is replaced by the LAPACK least-squares (`np.linalg.lstsq`, gelsd as in
sklearn) and `scipy.optimize.nnls` (what sklearn calls for positive=True), and M3's loop over candidate gammas is
vectorised (it picks the same first strict improvement).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
from scipy import optimize

ERR_MARGIN = 1e-3  # base.py: slack around the observed loss range used by the projections
EPS = 1e-5  # m4.py: |alpha| < EPS predicts as M2; Newton skips a coordinate whose |hessian| <= EPS
M4_GRID = 10_000  # m4.py `predict_loss(prec=10_000)`: grid size of the implicit-equation solve
NEWTON_LR, NEWTON_EPOCHS = 0.1, 100  # m2.py / m4.py `_update_errs_hessian` defaults (not exposed by the fit call)
METHODS = ("m1", "m2", "m3", "m4")

# `estimate_scaling_params` defaults (the notebook passes only max_iterations=10_000, which is the default).
_OPTIMIZER = {"max_iterations": 10_000, "stop": 1e-10, "lr": 1e-8, "epochs": 1000, "grad_iters": 100}

# The notebook's keyword settings per domain; err_0 and up_bound are M4's constructor arguments (M1-M3 ignore them).
REFERENCE_SETTINGS: dict[str, dict] = {
    "IC": {**_OPTIMIZER, "err_0": 1.0, "up_bound": 1.0},
    "NMT": {**_OPTIMIZER, "err_0": 1.0, "up_bound": None},  # log-perplexity: no upper bound
    "LM": {**_OPTIMIZER, "err_0": 1.0, "up_bound": None},  # cross-entropy: no upper bound
    "BB": {**_OPTIMIZER, "err_0": 1.001, "up_bound": 1.0},
}


@dataclasses.dataclass(frozen=True)
class ReferenceFit:
  """A fitted estimator. params: beta, c, err_inf (m1, m2); beta, c, gamma (m3); beta, c, alpha, err_inf, err_0 (m4).
  `iterations` counts the outer (least-squares) iterations the fit ran."""

  method: str
  params: dict[str, float]
  iterations: int = 0

  def predict(self, x) -> np.ndarray:
    """Predicted loss at data sizes x (any shape), as the original `predict_loss`."""
    x = np.asarray(x, np.float64)
    p = self.params
    if self.method == "m3":
      return p["beta"] * (1.0 / x + p["gamma"]) ** p["c"]
    if self.method != "m4" or abs(p["alpha"]) < EPS:
      return p["err_inf"] + p["beta"] * x ** p["c"]
    return _m4_grid_solve(p["beta"] * x ** p["c"], p["alpha"], p["err_0"] - p["err_inf"]) + p["err_inf"]


def _m4_grid_solve(f, alpha: float, b: float) -> np.ndarray:
  """w on linspace(0, b, M4_GRID) minimising |w - f (b - w)^alpha| (first minimiser), for each f."""
  w_G = np.linspace(0.0, b, M4_GRID)
  f = np.asarray(f, np.float64)
  out = np.empty(f.shape)
  for i, fi in np.ndenumerate(f):  # one row at a time: the original's memory footprint, any number of points
    out[i] = w_G[np.argmin(np.abs(w_G - fi * (b - w_G) ** alpha))]
  return out


def _check_inputs(method: str, x, y, domain: str, overrides: Mapping) -> tuple[np.ndarray, np.ndarray, dict]:
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")
  if domain not in REFERENCE_SETTINGS:
    raise ValueError(f"domain must be one of {tuple(REFERENCE_SETTINGS)}, got {domain!r}")
  unknown = set(overrides) - set(REFERENCE_SETTINGS[domain])
  if unknown:
    raise ValueError(f"unknown settings {sorted(unknown)}; known: {sorted(REFERENCE_SETTINGS[domain])}")
  s = {**REFERENCE_SETTINGS[domain], **overrides}
  x_P, y_P = np.asarray(x, np.float64), np.asarray(y, np.float64)
  if x_P.ndim != 1 or y_P.ndim != 1:
    raise ValueError(f"x and y must be 1-D, got shapes {x_P.shape} and {y_P.shape}")
  if x_P.shape != y_P.shape:
    raise ValueError(f"x and y must have the same length, got {len(x_P)} and {len(y_P)}")
  n_min = 4 if method == "m4" else 3  # more points than least-squares unknowns
  if len(x_P) < n_min:
    raise ValueError(f"{method} needs at least {n_min} points, got {len(x_P)}")
  if not (np.all(np.isfinite(x_P)) and np.all(np.isfinite(y_P))):
    raise ValueError("x and y must be finite")
  if np.any(x_P <= 0) or np.any(y_P <= 0):
    raise ValueError("x and y must be positive")
  if len(np.unique(x_P)) != len(x_P):
    raise ValueError("x must not repeat (the original keys the curve by x); drop duplicate points first")
  if not (isinstance(s["max_iterations"], int) and s["max_iterations"] >= 1):
    raise ValueError(f"max_iterations must be a positive int, got {s['max_iterations']!r}")
  for k in ("epochs", "grad_iters"):
    if not (isinstance(s[k], int) and s[k] >= 0):
      raise ValueError(f"{k} must be a non-negative int, got {s[k]!r}")
  if method == "m4":
    if s["up_bound"] is not None and s["up_bound"] <= 0:
      raise ValueError(f"up_bound must be > 0 (the lower bound), got {s['up_bound']}")
    if not np.all(y_P < s["err_0"]):
      raise ValueError(f"m4 needs every y < err_0 = {s['err_0']} (it regresses on log(err_0 - y)); "
                       f"max y = {y_P.max()}")
  order = np.argsort(x_P)
  return x_P[order], y_P[order], s


def fit_reference(method: str, x, y, *, domain: str = "NMT", **overrides) -> ReferenceFit:
  """Fit estimator `method` ("m1".."m4") to one learning curve (x = data seen, y = loss) exactly as the original.

  `domain` picks the notebook's settings (REFERENCE_SETTINGS); keyword `overrides` replace single settings.
  """
  x_P, y_P, s = _check_inputs(method, x, y, domain, overrides)
  if method == "m1":
    return _fit_m2(x_P, y_P, s, learn_err_inf=False)
  if method == "m2":
    return _fit_m2(x_P, y_P, s, learn_err_inf=True)
  if method == "m3":
    return _fit_m3(x_P, y_P, s)
  return _fit_m4(x_P, y_P, s)


def _lstsq(a_PxK: np.ndarray, b_P: np.ndarray) -> np.ndarray:
  return np.linalg.lstsq(a_PxK, b_P, rcond=None)[0]


def _fit_m2(x_P: np.ndarray, y_P: np.ndarray, s: dict, learn_err_inf: bool) -> ReferenceFit:
  """M2 (and M1 = M2 with err_inf fixed at 0 and a single least-squares step)."""
  design_Px2 = np.stack([np.ones_like(x_P), np.log(x_P)], axis=1)
  lo, hi = max(0.0, 0.0 - ERR_MARGIN), float(np.min(y_P)) - ERR_MARGIN  # projection interval of err_inf
  err_inf = hi if learn_err_inf else 0.0
  beta, c = 1.0, -0.5
  n_iter = s["max_iterations"] if learn_err_inf else 1
  old_beta, k = beta, 0
  for k in range(n_iter):
    log_beta, c = _lstsq(design_Px2, np.log(y_P - err_inf))
    beta = math.exp(log_beta)
    if learn_err_inf:
      log_f = np.log(beta * x_P ** c)
      if k < s["grad_iters"]:
        err_inf = _m2_descent(y_P, log_f, err_inf, lo, hi, s["lr"], s["epochs"])
      else:
        err_inf = _m2_newton(y_P, log_f, err_inf, lo, hi)
    gap, old_beta = beta - old_beta, beta
    if abs(gap) < s["stop"] and k > s["grad_iters"] + 1:
      break
  return ReferenceFit("m1" if not learn_err_inf else "m2", {"beta": beta, "c": float(c), "err_inf": err_inf}, k + 1)


def _project(v: float, lo: float, hi: float) -> float:
  return min(max(v, lo), hi)


def _m2_descent(y_P, log_f, e, lo, hi, lr, epochs) -> float:
  for _ in range(epochs):
    g = y_P - e
    e = _project(e - lr * -np.mean((np.log(g) - log_f) / g), lo, hi)
  return float(e)


def _m2_newton(y_P, log_f, e, lo, hi) -> float:
  for _ in range(NEWTON_EPOCHS):
    g = y_P - e
    log_g = np.log(g)
    grad = -np.mean((log_g - log_f) / g)
    hess = np.mean((1 - log_g + log_f) / g ** 2)
    e = _project(e - NEWTON_LR * grad / hess, lo, hi)
  return float(e)


def _fit_m3(x_P: np.ndarray, y_P: np.ndarray, s: dict) -> ReferenceFit:
  log_y = np.log(y_P)
  inv_x = 1.0 / x_P
  beta, c, gamma = 1.0, -0.5, 0.0
  old_beta, k = beta, 0
  for k in range(s["max_iterations"]):
    coef = _lstsq(np.stack([np.ones_like(x_P), np.log(inv_x + gamma)], axis=1), log_y)
    beta, c = math.exp(coef[0]), max(0.0, float(coef[1]))
    gamma = _m3_gamma(x_P, y_P, log_y, beta, c, gamma)
    gap, old_beta = beta - old_beta, beta
    if abs(gap) < s["stop"]:
      break
  return ReferenceFit("m3", {"beta": beta, "c": c, "gamma": float(gamma)}, k + 1)


def _m3_objective(log_y, inv_x, beta, c, gamma):
  """0.5 ||log y - log f|| for each gamma (last axis = points)."""
  return 0.5 * np.sqrt(np.sum((log_y - np.log(beta * (inv_x + gamma) ** c)) ** 2, axis=-1))


def _m3_gamma(x_P, y_P, log_y, beta, c, gamma) -> float:
  """Among the gammas solving the equation exactly at single points, the first >= 0 that lowers the objective most."""
  if c == 0.0:  # the original divides by c (ZeroDivisionError); no candidate is defined
    return gamma
  inv_x = 1.0 / x_P
  cand_G = (y_P / beta) ** (1.0 / c) - inv_x
  cand_G = cand_G[cand_G >= 0]
  if cand_G.size == 0:
    return gamma
  loss_G = _m3_objective(log_y, inv_x, beta, c, cand_G[:, None])
  i = int(np.argmin(loss_G))
  return float(cand_G[i]) if loss_G[i] < _m3_objective(log_y, inv_x, beta, c, gamma) else gamma


def _fit_m4(x_P: np.ndarray, y_P: np.ndarray, s: dict) -> ReferenceFit:
  err_0 = float(s["err_0"])
  up = None if s["up_bound"] is None else s["up_bound"] + ERR_MARGIN
  lo, hi = max(0.0, 0.0 - ERR_MARGIN), float(np.min(y_P)) - ERR_MARGIN  # err_inf in [lo, hi]
  e0_lo = float(np.max(y_P)) + ERR_MARGIN  # err_0 in [e0_lo, up]
  design_Px3 = np.stack([np.ones_like(x_P), -np.log(x_P), np.log(err_0 - y_P)], axis=1)  # initial err_0, kept
  err_inf, beta, c, alpha = hi, 1.0, -0.5, 0.0
  old_beta, k = beta, 0
  for k in range(s["max_iterations"]):
    coef = optimize.nnls(design_Px3, np.log(y_P - err_inf))[0]
    beta, c, alpha = math.exp(coef[0]), -float(coef[1]), float(coef[2])
    log_f = np.log(beta * x_P ** c)
    if k < s["grad_iters"]:
      err_inf, err_0 = _m4_descent(y_P, log_f, alpha, err_inf, err_0, lo, hi, e0_lo, up, s["lr"], s["epochs"])
    else:
      err_inf, err_0 = _m4_newton(y_P, log_f, alpha, err_inf, err_0, lo, hi, e0_lo, up)
    gap, old_beta = beta - old_beta, beta
    if abs(gap) < s["stop"] and k > s["grad_iters"] + 1:
      break
  params = {"beta": beta, "c": c, "alpha": alpha, "err_inf": err_inf, "err_0": err_0}
  return ReferenceFit("m4", params, k + 1)


def _project_m4(e, e0, lo, hi, e0_lo, up):
  e = min(max(e, lo), hi)
  e0 = max(e0, e0_lo)
  if up is not None:
    e0 = min(e0, up)
  return e, e0


def _m4_grad(y_P, log_f, alpha, e, e0):
  g, h = y_P - e, e0 - y_P
  log_g = np.log(g / h ** alpha)
  r = log_g - log_f
  return -np.mean(r / g), -alpha * np.mean(r / h), g, h, log_g


def _m4_descent(y_P, log_f, alpha, e, e0, lo, hi, e0_lo, up, lr, epochs):
  for _ in range(epochs):
    gi, g0, *_ = _m4_grad(y_P, log_f, alpha, e, e0)
    e, e0 = _project_m4(e - lr * gi, e0 - lr * g0, lo, hi, e0_lo, up)
  return float(e), float(e0)


def _m4_newton(y_P, log_f, alpha, e, e0, lo, hi, e0_lo, up):
  for _ in range(NEWTON_EPOCHS):
    gi, g0, g, h, log_g = _m4_grad(y_P, log_f, alpha, e, e0)
    h_inf = np.mean((1 - log_g + log_f) / g ** 2)
    h_0 = alpha * np.mean((alpha + log_g - log_f) / h ** 2)
    if abs(h_inf) > EPS:
      e = e - NEWTON_LR * gi / h_inf
    if abs(h_0) > EPS:
      e0 = e0 - NEWTON_LR * g0 / h_0
    e, e0 = _project_m4(e, e0, lo, hi, e0_lo, up)
  return float(e), float(e0)
