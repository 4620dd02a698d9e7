"""scaling.fit.reference: the published M1-M4 baselines (spec `bnsl.md` §3) reproduced on the NMT benchmark, LM/BB
tables printed (run with -s), the compiled loops checked against a literal numpy port, and input validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import optimize

from scaling.fit import data, metrics
from scaling.fit import reference as R

# Extrapolation RMSLE on the held-out NMT point, spec §3 (a faithful transcription of the Google code).
NMT_TARGETS = {
    "28 Enc, 6 Dec": {"m1": .1708, "m2": .0564, "m3": .0337, "m4": .0181},
    "6 Enc, 28 Dec": {"m1": .2340, "m2": .0527, "m3": .0165, "m4": .0444},
    "6 Enc, 6 Dec": {"m1": .2619, "m2": .0384, "m3": .0892, "m4": .0205},
    "Dec-only": {"m1": .2520, "m2": .0103, "m3": .0328, "m4": .0084},
    "TEnc-LSTM": {"m1": .1899, "m2": .0126, "m3": .0632, "m4": .0126},
}
TOL = 1e-3


def _curves(domain: str) -> dict[tuple[str, str], dict[str, np.ndarray]]:
  return data.load_benchmark(data.benchmark_csv("lang"), domain)


def _scores(domain: str) -> dict[tuple[str, str], dict[str, tuple[float, np.ndarray]]]:
  """{curve: {method: (extrapolation RMSLE, test predictions)}}, printed as a table."""
  out = {}
  print(f"\n{domain}: extrapolation RMSLE of the reference M1-M4 (fit on Training==1, score on Training==0)")
  print(f"  {'curve':<32}{'n fit':>6}{'n test':>7}" + "".join(f"{m:>9}" for m in R.METHODS))
  for name, c in sorted(_curves(domain).items()):
    out[name] = {}
    for m in R.METHODS:
      pred = R.fit_reference(m, c["x_fit"], c["y_fit"], domain=domain).predict(c["x_test"])
      out[name][m] = (metrics.rmsle(pred, c["y_test"]), pred)
    label = " / ".join(name if domain != "NMT" else name[1:])
    print(f"  {label:<32}{len(c['x_fit']):>6}{len(c['x_test']):>7}"
          + "".join(f"{out[name][m][0]:>9.4f}" for m in R.METHODS))
  return out


@pytest.fixture(scope="module")
def nmt_scores():
  return {model: {m: v[0] for m, v in row.items()} for (_, model), row in _scores("NMT").items()}


@pytest.mark.parametrize("method", R.METHODS)
@pytest.mark.parametrize("model", sorted(NMT_TARGETS))
def test_nmt_reproduces_published_baselines(nmt_scores, model, method):
  got, want = nmt_scores[model][method], NMT_TARGETS[model][method]
  assert abs(got - want) <= TOL, f"{method.upper()} on NMT {model!r}: got RMSLE {got:.4f}, published {want:.4f}"


@pytest.mark.parametrize("domain", ["LM", "BB"])
def test_lm_bb_tables(domain):
  scores = _scores(domain)
  assert len(scores) == {"LM": 5, "BB": 10}[domain]
  for name, row in scores.items():
    for m, (e, pred) in row.items():
      assert np.all(np.isfinite(pred)) and np.all(pred > 0), f"{m} on {domain} {name}: predictions {pred}"
      assert math.isfinite(e)


def test_settings_are_the_notebooks():
  got = {d: (s["err_0"], s["up_bound"], s["max_iterations"], s["stop"]) for d, s in R.REFERENCE_SETTINGS.items()}
  assert got == {"IC": (1.0, 1.0, 10_000, 1e-10), "NMT": (1.0, None, 10_000, 1e-10),
                 "LM": (1.0, None, 10_000, 1e-10), "BB": (1.001, 1.0, 10_000, 1e-10)}


# --------------------------------------------------------------------------- literal numpy port, the oracle


def _literal(method: str, x_P, y_P, s: dict) -> dict[str, float]:
  """M2 / M4 step by step as methods/{base,m2,m4}.py (scalar projections, np.mean, lstsq / scipy nnls)."""
  lo, hi = 0.0, min(y_P) - 1e-3
  e0_lo, up = max(y_P) + 1e-3, (None if s["up_bound"] is None else s["up_bound"] + 1e-3)
  e, e0, beta, c, alpha = hi, float(s["err_0"]), 1.0, -0.5, 0.0
  a_Px3 = np.stack([np.ones_like(x_P), -np.log(x_P), np.log(e0 - y_P)], axis=1)
  old_beta = beta
  for k in range(s["max_iterations"]):
    if method == "m2":
      log_beta, c = np.linalg.lstsq(a_Px3[:, :2] * [1, -1], np.log(y_P - e), rcond=None)[0]
    else:
      log_beta, minus_c, alpha = optimize.nnls(a_Px3, np.log(y_P - e))[0]
      c = -minus_c
    beta = np.exp(log_beta)
    log_f = np.log(beta * x_P ** c)
    for _ in range(s["epochs"] if k < s["grad_iters"] else R.NEWTON_EPOCHS):
      log_g = np.log((y_P - e) / (e0 - y_P) ** alpha)
      grad_inf = -np.mean((log_g - log_f) / (y_P - e))
      grad_0 = -alpha * np.mean((log_g - log_f) / (e0 - y_P))
      if k < s["grad_iters"]:
        e -= s["lr"] * grad_inf
        e0 -= s["lr"] * grad_0 if method == "m4" else 0.0
      else:
        h_inf = np.mean((1 - log_g + log_f) / (y_P - e) ** 2)
        h_0 = alpha * np.mean((alpha + log_g - log_f) / (e0 - y_P) ** 2)
        if method == "m2" or abs(h_inf) > R.EPS:
          e -= R.NEWTON_LR * grad_inf / h_inf
        if method == "m4" and abs(h_0) > R.EPS:
          e0 -= R.NEWTON_LR * grad_0 / h_0
      e = min(max(e, lo), hi)
      e0 = max(e0, e0_lo) if up is None else min(max(e0, e0_lo), up)
    gap, old_beta = beta - old_beta, beta
    if abs(gap) < s["stop"] and k > s["grad_iters"] + 1:
      break
  out = {"beta": beta, "c": c, "err_inf": e, "iterations": k + 1}
  return out if method == "m2" else {**out, "alpha": alpha, "err_0": e0}


@pytest.mark.parametrize("method", ["m2", "m4"])
@pytest.mark.parametrize("domain,name", [("NMT", ("log_perplexity", "6 Enc, 6 Dec")),
                                         ("BB", ("('ling', '2-shot')", "262M"))])
def test_compiled_loop_matches_literal_port(method, domain, name):
  c = _curves(domain)[name]
  short = {"max_iterations": 60, "grad_iters": 3, "epochs": 40}  # both phases, a few thousand epochs
  fit = R.fit_reference(method, c["x_fit"], c["y_fit"], domain=domain, **short)
  want = _literal(method, c["x_fit"], c["y_fit"], {**R.REFERENCE_SETTINGS[domain], **short})
  assert fit.iterations == want.pop("iterations")
  for k, v in want.items():
    assert fit.params[k] == pytest.approx(v, rel=1e-9, abs=1e-12), (method, domain, k)


def test_m4_grid_solve_is_the_pointwise_argmin():
  f, alpha, b = np.array([1e-3, 0.05, 0.3, 2.0]), 0.7, 0.6
  w = np.linspace(0, b, R.M4_GRID)
  want = [w[np.argmin(np.abs(w - fi * (b - w) ** alpha))] for fi in f]
  np.testing.assert_array_equal(R.m4_grid_solve(f, alpha, b), want)


def test_input_order_does_not_matter():
  c = _curves("NMT")[("log_perplexity", "Dec-only")]
  perm = np.random.default_rng(0).permutation(len(c["x_fit"]))
  for m in ("m1", "m3", "m4"):
    kw = {"max_iterations": 5, "grad_iters": 2, "epochs": 10} if m == "m4" else {}
    a = R.fit_reference(m, c["x_fit"], c["y_fit"], **kw).params
    b = R.fit_reference(m, c["x_fit"][perm], c["y_fit"][perm], **kw).params
    assert a == b, m


# --------------------------------------------------------------------------- validation

X = np.array([1e6, 2e6, 4e6, 8e6, 1.6e7])
Y = np.array([0.9, 0.7, 0.6, 0.55, 0.52])


@pytest.mark.parametrize("args,kwargs,match", [
    (("m5", X, Y), {}, "method"),
    (("m2", X, Y), {"domain": "XYZ"}, "domain"),
    (("m2", X, Y), {"learning_rate": 1e-3}, "unknown settings"),
    (("m2", X, Y[:-1]), {}, "same length"),
    (("m2", X[None], Y[None]), {}, "1-D"),
    (("m2", X[:2], Y[:2]), {}, "at least 3"),
    (("m4", X[:3], Y[:3]), {}, "at least 4"),
    (("m2", np.r_[X[:-1], np.nan], Y), {}, "finite"),
    (("m2", X, np.r_[Y[:-1], np.inf]), {}, "finite"),
    (("m1", np.r_[0.0, X[1:]], Y), {}, "positive"),
    (("m3", X, np.r_[-0.1, Y[1:]]), {}, "positive"),
    (("m2", np.r_[X[:-1], X[0]], Y), {}, "distinct"),
    (("m4", X, np.r_[1.2, Y[1:]]), {}, "err_0"),
    (("m4", X, Y), {"domain": "BB", "err_0": 0.9}, "err_0"),
    (("m2", X, Y), {"max_iterations": 0}, "max_iterations"),
    (("m2", X, Y), {"epochs": 2.5}, "epochs"),
    (("m2", X, Y), {"lr": float("nan")}, "lr"),
    (("m4", X, Y), {"up_bound": -1.0}, "up_bound"),
])
def test_bad_input_raises(args, kwargs, match):
  with pytest.raises(ValueError, match=match):
    R.fit_reference(*args, **kwargs)
