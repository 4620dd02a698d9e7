"""scaling.fit: the acceptance checks of spec `bnsl.md` §6 (numbered as there) and the fitter's contracts.

CPU-sized. Measured numbers are printed (run with -s to see them); spec tolerances are asserted.
"""

import math
import os
import subprocess
import sys
import time
from unittest import mock

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling import fit as F
from scaling.fit import data, fitter, forms, metrics, objectives

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BENCH_LANG = data.benchmark_csv("lang")
X4, Y4 = data.DIGIT4_X, data.DIGIT4_Y


def rel(a, b):
  return np.abs(np.asarray(a) / np.asarray(b) - 1.0)


# --------------------------------------------------------------------------- check 1: forward values


def test_forward_values_4digit_params():
  x = np.array([160, 612.5836172918001, 928, 4000, 1e6])
  want = np.array([2.135823986, 1.681532551, 0.5625980687, 0.4139195537, 0.4138845307])
  f = F.bnsl(1)
  assert np.all(rel(f.evaluate(f.unconstrained(data.DIGIT4_BNSL1), x), want) < 1e-9)
  assert np.all(rel(F.bnsl_naive(data.DIGIT4_BNSL1, x), want) < 1e-9)


def test_forward_values_fig1_three_breaks():
  x = np.array([1, 1e6, 1e10, 1e15, 1e21, 1e25])
  want = np.array([4659.997752, 1972.323382, 27.72211347, 0.4417052638, 0.5154515319, 0.001000024851])
  f = F.bnsl(3)
  assert np.all(rel(f.evaluate(f.unconstrained(data.FIG1_BNSL3), x), want) < 1e-9)
  assert np.all(rel(F.bnsl_naive(data.FIG1_BNSL3, x), want) < 1e-9)


@pytest.mark.parametrize("params", [data.DIGIT4_BNSL1, data.FIG1_BNSL3], ids=["4digit", "fig1"])
def test_log_space_form_matches_naive(params):
  n = sum(k.startswith("d") for k in params)
  x = np.logspace(-1, 26, 2048)
  with np.errstate(over="ignore"):  # the naive form overflows to inf**(-c f) = 0 where the log form is exact
    naive = F.bnsl_naive(params, x)
  ours = F.bnsl(n).evaluate(F.bnsl(n).unconstrained(params), x)
  print(f"max rel diff log-space vs naive ({n} breaks): {rel(ours, naive).max():.2e}")
  assert np.all(rel(ours, naive) < 1e-12)


def test_log_space_form_finite_for_sharp_break():
  nat = {"a": 0.1, "b": 2.0, "c0": 0.3, "c1": 1.5, "d1": 1e3, "f1": 1e-4}
  x = np.array([1e3 * 1e6])  # x / d = 1e6: (x/d)^(1/f) = 1e60000 overflows in the naive form
  f = F.bnsl(1)
  theta = f.unconstrained(nat)
  y = f.evaluate(theta, x)
  far = 0.1 + 2.0 * x ** -0.3 * 1e6 ** -1.5  # x >> d: (1 + (x/d)^(1/f))^(-c f) -> (x/d)^(-c)
  assert np.all(np.isfinite(y)) and np.all(rel(y, far) < 1e-12)
  with jax.enable_x64(True):
    g = jax.jacfwd(lambda t: f.log_predict(t, jnp.asarray(x)))(jnp.asarray(theta))
  assert np.all(np.isfinite(np.asarray(g)))


def test_m4_prediction_solves_implicit_equation_and_is_differentiable():
  f = F.m4(1.0)
  nat = {"a": 0.2, "alpha": 0.5, "b": 3.0, "c": 0.3}
  theta, x = f.unconstrained(nat), np.logspace(0, 12, 13)
  y = f.evaluate(theta, x)
  lhs = (y - nat["a"]) / (1.0 - y) ** nat["alpha"]
  assert np.all((y > nat["a"]) & (y < 1.0)) and np.all(rel(lhs, nat["b"] * x ** -nat["c"]) < 1e-10)
  with jax.enable_x64(True):
    jac = np.asarray(jax.jacfwd(lambda t: f.predict(t, jnp.asarray(x)))(jnp.asarray(theta)))
  eps = 1e-6
  fd = np.stack([(f.evaluate(theta + eps * e, x) - f.evaluate(theta - eps * e, x)) / (2 * eps) for e in np.eye(4)], 1)
  assert np.max(np.abs(jac - fd)) < 1e-8


def test_x64_is_scoped_to_the_fitter():
  f = F.bnsl(1)
  assert f.evaluate(f.unconstrained(data.DIGIT4_BNSL1), X4).dtype == np.float64
  assert not jax.config.jax_enable_x64  # nothing switched x64 on globally
  assert jnp.ones(1).dtype == jnp.float32


@pytest.mark.parametrize("name", sorted(forms.FORMS))
def test_init_grid_is_data_driven_and_finite(name):
  """Every form's starts are finite, reproducible for a key, and give finite losses on data it can describe."""
  form = forms.FORMS[name]()
  x1 = np.logspace(2, 6, 20)
  x = x1 if form.x_dim == 1 else np.stack([x1, 10 * x1], axis=1)
  y = 0.2 + 0.6 * x1 ** -0.2
  theta = form.init_grid(x, y, 256, key=1)
  assert theta.shape == (256, form.n_params) and np.all(np.isfinite(theta))
  np.testing.assert_array_equal(theta, form.init_grid(x, y, 256, key=1))
  assert not np.array_equal(theta, form.init_grid(x, y, 256, key=2))
  with jax.enable_x64(True):
    loss = jax.vmap(lambda t: objectives.MSLE_LOG1P.loss(form, t, jnp.asarray(x), jnp.asarray(y), jnp.ones(20)))(
        jnp.asarray(theta))
  assert np.mean(np.isfinite(np.asarray(loss))) > 0.9
  nat = form.natural(theta[0])
  np.testing.assert_allclose(form.unconstrained(nat), theta[0], rtol=1e-12, atol=1e-12)


# --------------------------------------------------------------------------- objectives


def test_weights_drop_padded_points():
  f, theta = F.bnsl(1), F.bnsl(1).unconstrained(data.DIGIT4_BNSL1)
  x_pad, y_pad = np.r_[X4, 5.0, 7.0], np.r_[Y4, 3.0, 0.1]
  w_pad = np.r_[np.ones(len(X4)), 0.0, 0.0]
  with jax.enable_x64(True):
    for obj in objectives.OBJECTIVES.values():
      full = obj.loss(f, jnp.asarray(theta), jnp.asarray(X4), jnp.asarray(Y4), jnp.ones(len(X4)))
      padded = obj.loss(f, jnp.asarray(theta), jnp.asarray(x_pad), jnp.asarray(y_pad), jnp.asarray(w_pad))
      assert float(full) == pytest.approx(float(padded), rel=1e-14), obj.name
  e = np.log1p(F.bnsl_naive(data.DIGIT4_BNSL1, X4)) - np.log1p(Y4)
  with jax.enable_x64(True):
    ours = objectives.MSLE_LOG1P.loss(f, jnp.asarray(theta), jnp.asarray(X4), jnp.asarray(Y4), jnp.ones(len(X4)))
  assert float(ours) == pytest.approx(np.mean(e ** 2), rel=1e-10)


# --------------------------------------------------------------------------- check 2: official-recipe parity


def test_official_recipe_parity_split14():
  r = F.official_recipe(X4, Y4, 14)
  print(f"official recipe split 14: popt={np.round(r.popt, 7)}, rmsle fit {r.rmsle_fit:.4g}, "
        f"extrap {r.rmsle_extrap:.5g}, {r.seconds:.1f} s (workers=1)")
  assert np.all(rel(r.popt, data.OFFICIAL_SPLIT14["popt"]) < 1e-3)
  assert abs(r.rmsle_fit - 5.98e-4) <= 2e-5
  assert r.rmsle_extrap <= 0.0110


# --------------------------------------------------------------------------- check 3: the robust fitter


@pytest.fixture(scope="module")
def digit4_splits():
  out = {}
  for split in range(12, 17):
    r = F.fit(F.bnsl(1), X4[:split], Y4[:split])
    out[split] = (r, metrics.rmsle(r.predict(X4[split:]), Y4[split:]))
  return out


def test_robust_fitter_4digit(digit4_splits):
  ext = {s: e for s, (_, e) in digit4_splits.items()}
  print("robust fitter 4-digit extrapolation RMSLE by split:", {s: round(e, 5) for s, e in ext.items()})
  print("  split 12 fit:", {k: round(v, 5) for k, v in digit4_splits[12][0].natural.items()})
  assert ext[14] <= 0.011
  assert abs(ext[13] - 0.084) <= 0.005
  for s in range(12, 16):  # adding one fitted point never moves the error by an order of magnitude
    assert 0.1 < ext[s + 1] / ext[s] < 10, (s, ext)
  assert all(r.n_valid > 0 and r.natural["a"] >= 0 for r, _ in digit4_splits.values())


# --------------------------------------------------------------------------- check 4: noiseless 1-break recovery


def test_noiseless_recovery_and_predictability_limit():
  """Fit x <= 405 of the noiseless simulation: the break at 612.6 is recovered.

  The predictability limit (spec: fitting x <= 390 fails) is asserted on x <= 390 with 1e-8 relative noise: the fit
  describes the fitted range well but c1, and so the extrapolation, are wrong. Which wrong answer depends on whether
  the multistart finds the sharp-break basin at all (a local minimum with c1 ~ 0 and loss ~1e-10, or the noise-floor
  minimum, c1 ~ 9.2 and loss ~5e-17, which fits better than the truth). From exact float64 data our fitter recovers
  even x <= 390 for some keys (the break is then a ~1e-6 relative curvature), so that case is not asserted.
  """
  gt = data.DIGIT4_BNSL1
  x = np.arange(1.0, 4096.0)
  y = F.bnsl_naive(gt, x)
  y_noisy = y * np.exp(1e-8 * np.random.default_rng(0).standard_normal(len(x)))
  t0 = time.perf_counter()
  r405 = F.fit(F.bnsl(1), x[:405], y[:405])
  r390 = F.fit(F.bnsl(1), x[:390], y_noisy[:390])
  print(f"noiseless sim: 2 fits of <= 405 points in {time.perf_counter() - t0:.1f} s (incl. compile)")
  ext = {}
  for name, r, split in (("x <= 405", r405, 405), ("x <= 390, 1e-8 noise", r390, 390)):
    ext[split] = metrics.rmsle(r.predict(x[split:]), y[split:])
    print(f"  {name}: c1 {r.natural['c1']:.6g} d1 {r.natural['d1']:.6g} f1 {r.natural['f1']:.6g} "
          f"loss {r.loss:.2e} extrap RMSLE {ext[split]:.3g}")
  nat = r405.natural
  assert rel(nat["c1"], gt["c1"]) < 1e-3 and rel(nat["d1"], gt["d1"]) < 1e-4 and rel(nat["f1"], gt["f1"]) < 1e-3
  assert ext[405] < 1e-4
  assert metrics.rmsle(r390.predict(x[:390]), y_noisy[:390]) < 1e-4  # the fitted range is described well ...
  assert rel(r390.natural["c1"], gt["c1"]) > 0.1 and ext[390] > 1e-2  # ... but the break beyond it is not


# --------------------------------------------------------------------------- check 5: double descent


def test_double_descent_needs_two_breaks():
  nat = {"a": 0.05, "b": 1.0, "c0": 0.5, "c1": -1.0, "c2": 1.5, "d1": 100.0, "d2": 1000.0, "f1": 0.3, "f2": 0.3}
  x = np.logspace(0, 4, 81)
  y = F.bnsl_naive(nat, x)
  dy = np.sign(np.diff(y))
  assert dy[0] < 0 and dy.max() > 0 and dy[-1] < 0  # down, up, down
  m = x <= 3000
  err = {}
  for n in (1, 2):
    r = F.fit(F.bnsl(n), x[m], y[m])
    err[n] = metrics.rmsle(r.predict(x[~m]), y[~m])
  print(f"double descent held-out RMSLE: n=1 {err[1]:.3g}, n=2 {err[2]:.3g}")
  assert err[2] < 1e-9
  assert err[1] > 0.1


# --------------------------------------------------------------------------- check 6: NMT benchmark


@pytest.fixture(scope="module")
def nmt():
  curves = data.load_benchmark(BENCH_LANG, "NMT")
  names = [model for _, model in curves]
  xs, ys = [c["x_fit"] for c in curves.values()], [c["y_fit"] for c in curves.values()]
  fits = F.fit_many(F.bnsl(1), *F.pad_curves(xs, ys))
  err = {name: metrics.rmsle(r.predict(c["x_test"]), c["y_test"]) for name, r, c in zip(names, fits, curves.values())}
  return curves, fits, err


def test_nmt_bnsl1_extrapolation(nmt):
  _, _, err = nmt
  wins = sum(err[k] < v for k, v in data.NMT_M4_RMSLE.items())
  print("NMT BNSL n=1 extrapolation RMSLE:", {k: round(v, 4) for k, v in err.items()},
        f"mean {np.mean(list(err.values())):.4f}; beats published M4 on {wins}/5")
  assert np.mean(list(err.values())) <= 0.012
  assert max(err.values()) <= 0.02
  assert wins >= 4


def test_fit_many_equals_individual_fits(nmt):
  curves, fits, _ = nmt
  for c, many in zip(curves.values(), fits):
    one = F.fit(F.bnsl(1), c["x_fit"], c["y_fit"])
    assert one.loss == pytest.approx(many.loss, rel=1e-9)
    x = np.r_[c["x_fit"], c["x_test"]]
    np.testing.assert_allclose(one.predict(x), many.predict(x), rtol=1e-9)


# --------------------------------------------------------------------------- check 7: metrics


def test_metrics_match_get_error_formula():
  pred = np.array([0.51, 0.33, 0.29, 1.7, 0.05])
  y = np.array([0.5, 0.35, 0.3, 1.5, 0.06])
  e = [(math.log(p) - math.log(t)) ** 2 for p, t in zip(pred, y)]
  mu = sum(e) / len(e)
  std = math.sqrt(sum((v - mu) ** 2 for v in e) / len(e))
  assert F.rmsle(pred, y) == pytest.approx(math.sqrt(mu), rel=1e-14)
  rmsle, stderr = F.get_error(pred, y)
  assert rmsle == pytest.approx(math.sqrt(mu), rel=1e-14)
  assert stderr == pytest.approx(math.sqrt(mu + std / math.sqrt(len(e))) - math.sqrt(mu), rel=1e-12)


def test_win_rates_truncate_split_ties_and_count_nan_as_one():
  errors = np.array([[0.0121, 0.5, np.nan, 0.2],     # method 0
                     [0.0129, 0.4, 0.9999, 0.2],     # method 1: ties method 0 on task 0 after truncation
                     [0.0200, 0.3, 2.0, 0.1999]])    # method 2
  assert np.allclose(metrics.truncate(np.array([0.0129, np.nan, 0.9999])), [0.012, 1.0, 0.999])
  # task 0: 0.012 vs 0.012 vs 0.020 -> 1/2, 1/2; task 1: method 2; task 2: NaN -> 1 vs 0.999 vs 2 -> method 1;
  # task 3: 0.2 vs 0.2 vs 0.199 -> method 2
  np.testing.assert_allclose(F.win_rates(errors), [0.5 / 4, 1.5 / 4, 2 / 4])


# --------------------------------------------------------------------------- check 8: determinism / speed


_ONE_THREAD_FITS = """
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before jax: XLA sizes its thread pool from this
import numpy as np
from scaling import fit as F
from scaling.fit import data
rng = np.random.default_rng(1)
x = np.sort(np.exp(rng.uniform(np.log(100), np.log(1000), 100)))
y = F.bnsl_naive(data.DIGIT4_BNSL1, x) * np.exp(0.01 * rng.standard_normal(100))
a, b = (F.fit(F.bnsl(1), x, y, key=3) for _ in range(2))
np.savez(sys.argv[1], theta=np.stack([a.theta, b.theta]), loss=[a.loss, b.loss],
         polished=np.stack([a.polished_theta, b.polished_theta]))
"""


def test_bit_reproducible_on_one_thread_and_timing(tmp_path):
  """Two fits with one key are bitwise equal, every polished start included, where XLA:CPU runs on one thread.

  With more intra-op threads one compiled module can return results that differ in the last bits between calls
  (jax-ml/jax#39741, open); a start that has not converged amplifies that (CI once saw one of 32 polished starts
  move by 0.27), so the bitwise claim is checked in a one-CPU subprocess. In this multi-threaded process the best
  fit is a converged minimum, where the loss is first-order insensitive to such perturbations: equal to 1e-9
  relative (the spread the issue measured per call).
  """
  out = tmp_path / "fits.npz"
  subprocess.run([sys.executable, "-c", _ONE_THREAD_FITS, str(out)], cwd=ROOT, check=True, timeout=600)
  with np.load(out) as r:
    np.testing.assert_array_equal(r["theta"][0], r["theta"][1])
    np.testing.assert_array_equal(r["polished"][0], r["polished"][1])
    assert r["loss"][0] == r["loss"][1]
  rng = np.random.default_rng(1)
  x = np.sort(np.exp(rng.uniform(np.log(100), np.log(1000), 100)))
  y = F.bnsl_naive(data.DIGIT4_BNSL1, x) * np.exp(0.01 * rng.standard_normal(100))
  a = F.fit(F.bnsl(1), x, y, key=3)
  t0 = time.perf_counter()
  b = F.fit(F.bnsl(1), x, y, key=3)
  print(f"n=1 fit on 100 points after compile: {time.perf_counter() - t0:.2f} s (spec: < 5 s)")
  assert b.loss == pytest.approx(a.loss, rel=1e-9)


# --------------------------------------------------------------------------- n selection, bootstrap, Chinchilla


def test_select_breaks_4digit():
  sel = F.select_breaks(X4[:14], Y4[:14])
  print("select_breaks 4-digit (x <= 736): chose n =", sel.n, "validation RMSLE",
        {n: round(v, 4) for n, v in sel.val_rmsle.items()})
  assert sel.n == 1 and sel.fit.form is F.bnsl(1)
  assert set(sel.val_rmsle) == {0, 1, 2, 3}


def test_bootstrap_intervals(digit4_splits):
  base = digit4_splits[14][0]
  b = F.bootstrap(F.bnsl(1), X4[:14], Y4[:14], n_boot=200, x_eval=X4[14:], base=base)
  print("bootstrap 4-digit split 14, 95% intervals: d1", (round(b.natural_lo["d1"], 1), round(b.natural_hi["d1"], 1)),
        "pred", np.round(b.pred_lo, 3), np.round(b.pred_hi, 3), "true", np.round(Y4[14:], 3), "valid", b.n_valid)
  assert b.n_valid >= 180
  for k, v in base.natural.items():
    assert b.natural_lo[k] <= b.natural_hi[k]
  assert np.all(b.pred_lo <= base.predict(X4[14:]) + 1e-12) and np.all(base.predict(X4[14:]) <= b.pred_hi + 1e-12)


def test_chinchilla_recovers_parameters():
  rng = np.random.default_rng(0)
  N = np.exp(rng.uniform(np.log(1e7), np.log(1e10), 200))
  D = np.exp(rng.uniform(np.log(1e8), np.log(1e11), 200))
  true = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
  L = true["E"] + true["A"] / N ** true["alpha"] + true["B"] / D ** true["beta"]
  x = np.stack([N, D], axis=1)
  r = F.fit(F.chinchilla(), x, L * np.exp(0.01 * rng.standard_normal(200)), objective="huber_log")
  print("Chinchilla (Huber, 1% noise):", {k: round(v, 4) for k, v in r.natural.items()})
  assert rel(r.natural["E"], true["E"]) < 0.03
  assert abs(r.natural["alpha"] - true["alpha"]) < 0.02 and abs(r.natural["beta"] - true["beta"]) < 0.02
  assert rel(r.natural["A"], true["A"]) < 0.3 and rel(r.natural["B"], true["B"]) < 0.3
  assert metrics.rmsle(r.predict(x), L) < 0.005  # closer to the truth than the 1% noise


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize("name", sorted(forms.FORMS))
def test_bad_input_raises_before_compile(name):
  form = forms.FORMS[name]()
  P = form.n_params + 2
  x1 = np.linspace(1.0, 10.0, P)
  x = x1 if form.x_dim == 1 else np.stack([x1, 2 * x1], axis=1)
  y = 0.9 - 0.05 * np.arange(P)
  bad = {
      "nan y": (x, np.where(np.arange(P) == 1, np.nan, y)),
      "non-positive x": (-x, y),
      "non-positive y": (x, y - 1.0),
      "too few points": (x[:form.n_params - 1], y[:form.n_params - 1]),
      "mismatched lengths": (x[:-1], y),
  }
  with mock.patch.object(fitter, "_compiled_fit", side_effect=AssertionError("compiled before checking")):
    for what, (xb, yb) in bad.items():
      with pytest.raises(ValueError):
        F.fit(form, xb, yb)
      with pytest.raises(ValueError):
        F.fit_many(form, xb[None], yb[None])
    if form.y_upper < np.inf:
      with pytest.raises(ValueError, match="e0"):
        F.fit(form, x, y + 1.0)


def _write_csv(path, rows):
  path.write_text("\n".join(",".join(r) for r in rows) + "\n")
  return str(path)


def test_load_benchmark_errors_name_file_column_and_row(tmp_path):
  header = ["Domain", "Task", "Model", "Seen Examples", "Loss", "Training"]
  good = [["NMT", "t", "m", "100", "0.9", "1"], ["NMT", "t", "m", "200", "0.8", "1"], ["NMT", "t", "m", "400", "0.7", "0"]]
  ok = data.load_benchmark(_write_csv(tmp_path / "ok.csv", [header] + good), "NMT")
  np.testing.assert_array_equal(ok[("t", "m")]["x_fit"], [100, 200])
  np.testing.assert_array_equal(ok[("t", "m")]["y_test"], [0.7])
  # data rows start at spreadsheet row 2: the third data row is row 4
  bad = good[:2] + [["NMT", "t", "m", "400", "n/a", "0"]]
  path = _write_csv(tmp_path / "bad_cell.csv", [header] + bad)
  with pytest.raises(ValueError, match=r"bad_cell\.csv: row 4, column 'Loss': 'n/a' is not a number") as e:
    data.load_benchmark(path, "NMT")
  assert isinstance(e.value.__cause__, ValueError)  # float()'s own error kept
  path = _write_csv(tmp_path / "bad_train.csv", [header] + [["NMT", "t", "m", "100", "0.9", "yes"]])
  with pytest.raises(ValueError, match=r"bad_train\.csv: row 2, column 'Training'"):
    data.load_benchmark(path, "NMT")
  path = _write_csv(tmp_path / "no_loss.csv", [[h for h in header if h != "Loss"]] + [r[:4] + r[5:] for r in good])
  with pytest.raises(ValueError, match=r"no_loss\.csv: row 1 \(header\) lacks column\(s\) \['Loss'\]"):
    data.load_benchmark(path, "NMT")
  path = _write_csv(tmp_path / "short.csv", [header] + good[:1] + [["NMT", "t", "m", "200"]])
  with pytest.raises(ValueError, match=r"short\.csv: row 3 has no cell for column 'Loss'"):
    data.load_benchmark(path, "NMT")
