"""Per-token loss scaling (quanta paper Fig 3, 4, 12) on synthetic families with planted structure."""

from __future__ import annotations

import os

import numpy as np
import pytest

from scaling.lm import token_scaling as tsc

LN2 = np.log(2.0)
PYTHIA_N = np.array([18_915_328, 85_056_000, 302_311_424, 805_736_448, 1_208_602_624, 2_517_652_480,
                     6_444_163_072], np.float64)
PYTHIA_NAMES = ["19m", "125m", "350m", "800m", "1.3b", "2.7b", "6.4b"]


def _power_law_family(alpha: float, T: int = 2000, seed: int = 0) -> np.ndarray:
  """Every token's loss is c_t (N / N_0)^-alpha (nats), one shared exponent."""
  c = np.random.default_rng(seed).uniform(0.5, 8.0, T)
  return c[None, :] * (PYTHIA_N[:, None] / PYTHIA_N[0]) ** -alpha


@pytest.mark.parametrize("alpha", [0.083, 0.21])
def test_mean_loss_fit_recovers_planted_alpha(alpha):
  losses = _power_law_family(alpha)
  ts = tsc.analyse(losses, PYTHIA_N, PYTHIA_NAMES)
  assert ts.fit is not None and ts.fit.n_points == 7
  assert abs(ts.fit.exponent - alpha) < 1e-6
  np.testing.assert_allclose(ts.mean_loss_bits, losses.mean(axis=1) / LN2, rtol=1e-12)
  np.testing.assert_allclose(ts.mean_loss_nats, losses.mean(axis=1), rtol=1e-12)
  # the paper's choice: fit the first 6, the 6.4b point excluded; a bent last point does not move the exponent
  bent = losses.copy()
  bent[-1] *= 1.5
  ts6 = tsc.analyse(bent, PYTHIA_N, PYTHIA_NAMES, fit_models=slice(0, 6))
  assert ts6.fit.n_points == 6 and abs(ts6.fit.exponent - alpha) < 1e-6
  np.testing.assert_array_equal(ts6.fit_mask, [True] * 6 + [False])
  assert abs(tsc.analyse(bent, PYTHIA_N, PYTHIA_NAMES).fit.exponent - alpha) > 1e-3  # fitting all 7 does move it
  same = tsc.analyse(bent, PYTHIA_N, PYTHIA_NAMES, fit_models=np.arange(6))
  assert same.fit.exponent == ts6.fit.exponent
  same = tsc.analyse(bent, PYTHIA_N, PYTHIA_NAMES, fit_models=np.array([True] * 6 + [False]))
  assert same.fit.exponent == ts6.fit.exponent


def test_two_models_skip_the_fit_and_still_report(tmp_path):
  losses = _power_law_family(0.1, T=300)[:2]
  ts = tsc.analyse(losses, PYTHIA_N[:2], PYTHIA_NAMES[:2])
  assert ts.fit is None and "no α_N fit" in ts.fit_note
  assert not ts.polygenic_mask.any() and np.isnan(ts.polygenic_r2).all()
  md = tsc.summary_markdown(ts, "synthetic")
  assert "α_N fit skipped" in md and "| 19m |" in md
  assert len(tsc.figures(ts, losses, str(tmp_path))) == 4


def _monogenic_family(seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
  """5 models; tokens 0..39 step at a known j (10 per j in 1..4), then smooth and edge-case tokens (expected -1)."""
  rng = np.random.default_rng(seed)
  M = 5
  cols, want = [], []
  for j in range(1, M):
    for _ in range(10):
      col = np.where(np.arange(M) < j, rng.uniform(5.01, 12.0, M), rng.uniform(0.0, 0.29, M))
      cols.append(col)
      want.append(j)
  smooth = [np.linspace(6.0, 0.1, M), np.geomspace(10.0, 0.05, M), np.full(M, 0.1), np.full(M, 7.0),
            np.array([6.0, 6.0, 5.0, 0.1, 0.1]),  # exactly 5.0 is not > 5.0
            np.array([6.0, 6.0, 0.1, 0.3, 0.1]),  # exactly 0.3 is not < 0.3
            np.array([6.0, 0.1, 6.0, 0.1, 0.1]),  # two drops
            np.array([0.1, 6.0, 6.0, 0.1, 0.1])]
  cols += smooth
  want += [-1] * len(smooth)
  perm = rng.permutation(len(cols))
  return np.stack(cols, axis=1)[:, perm], np.array(want)[perm]


def test_monogenic_tokens_found_exactly():
  losses, want = _monogenic_family()
  ts = tsc.analyse(losses, PYTHIA_N[:5], PYTHIA_NAMES[:5])
  np.testing.assert_array_equal(ts.monogenic_index, want)
  assert ts.monogenic_index.dtype.kind == "i"
  np.testing.assert_array_equal(tsc.monogenic_index(losses, high=5.0, low=0.3), want)
  # thresholds are parameters: with high=7 (above the drawn mid values) fewer steps qualify, never more
  loose = tsc.analyse(losses, PYTHIA_N[:5], PYTHIA_NAMES[:5], mono_high=7.0).monogenic_index
  assert ((loose > 0) <= (want > 0)).all() and (loose > 0).sum() < (want > 0).sum()


def test_polygenic_tokens_found_and_slope_r2_match_polyfit():
  rng = np.random.default_rng(2)
  lnN = np.log(PYTHIA_N)
  M, T = 7, 400
  kind = rng.integers(0, 4, T)  # 0: polygenic, 1: flat, 2: shallow slope, 3: steep but noisy
  a = rng.uniform(12.0, 16.0, T)
  losses = np.empty((M, T))
  losses[:, kind == 0] = a[kind == 0] - 0.5 * lnN[:, None] + rng.normal(0, 1e-3, (M, (kind == 0).sum()))
  losses[:, kind == 1] = rng.uniform(1, 5, (kind == 1).sum()) + rng.normal(0, 1e-3, (M, (kind == 1).sum()))
  losses[:, kind == 2] = a[kind == 2] / 2 - 0.1 * lnN[:, None] + rng.normal(0, 1e-3, (M, (kind == 2).sum()))
  losses[:, kind == 3] = a[kind == 3] - 0.5 * lnN[:, None] + rng.normal(0, 1.0, (M, (kind == 3).sum()))
  losses = np.abs(losses)
  ts = tsc.analyse(losses, PYTHIA_N, PYTHIA_NAMES)
  np.testing.assert_array_equal(ts.polygenic_mask, kind == 0)
  for t in (0, 1, 2, 3, 57, 399):
    coef = np.polyfit(lnN, losses[:, t], 1)
    resid = losses[:, t] - np.polyval(coef, lnN)
    r2 = 1 - resid @ resid / np.sum((losses[:, t] - losses[:, t].mean()) ** 2)
    assert ts.polygenic_slope[t] == pytest.approx(coef[0], rel=1e-9, abs=1e-12)
    assert ts.polygenic_r2[t] == pytest.approx(r2, rel=1e-9, abs=1e-12)
  # only the first `first` tokens are considered
  head = tsc.analyse(losses, PYTHIA_N, PYTHIA_NAMES, first=50)
  assert head.polygenic_mask.shape == (50,)
  np.testing.assert_array_equal(head.polygenic_mask, kind[:50] == 0)
  assert tsc.analyse(losses, PYTHIA_N, PYTHIA_NAMES, poly_slope=-0.6).polygenic_mask.sum() == 0
  # a perfectly flat token has no R²
  flat = np.full((M, 3), 2.0)
  flat[:, 1] = 12 - 0.5 * lnN
  fts = tsc.analyse(flat, PYTHIA_N, PYTHIA_NAMES)
  assert np.isnan(fts.polygenic_r2[[0, 2]]).all() and fts.polygenic_r2[1] == pytest.approx(1.0)
  np.testing.assert_array_equal(fts.polygenic_mask, [False, True, False])


def test_stay_below_hand_made():
  tokens = [[0.1, 0.2, 0.1],   # first below at 0, stays
            [0.1, 0.5, 0.1],   # 0, comes back up
            [1.0, 0.2, 0.25],  # 1, stays
            [1.0, 0.2, 0.4],   # 1, comes back up
            [1.0, 0.1, 0.1],   # 1, stays
            [1.0, 1.0, 0.1],   # 2 (nothing larger)
            [1.0, 1.0, 1.0],   # never
            [0.3, 0.29, 0.3]]  # 0.3 is not below: first at 1, comes back up
  ts = tsc.analyse(np.array(tokens).T, [1e6, 1e7, 1e8], ["s", "m", "l"])
  np.testing.assert_array_equal(ts.stay_first_counts, [2, 4, 1])
  np.testing.assert_array_equal(ts.stay_counts, [1, 2, 1])
  np.testing.assert_allclose(ts.stay_below[:2], [0.5, 0.5])
  assert np.isnan(ts.stay_below[2])
  none_first = tsc.analyse(np.array([[1.0, 0.1, 0.1], [1.0, 1.0, 0.1]]).T, [1e6, 1e7, 1e8], ["s", "m", "l"])
  assert np.isnan(none_first.stay_below[0]) and none_first.stay_below[1] == 1.0


def test_histograms_integrate_to_one():
  rng = np.random.default_rng(3)
  losses = rng.uniform(0, 20 * LN2, (4, 5000))  # 0..20 bits, all inside [0, 30]
  losses[:, :3] = [0.0, 30 * LN2, 1e-9]  # the edges belong to the histogram
  ts = tsc.analyse(losses, [1e6, 1e7, 1e8, 1e9], list("abcd"))
  width = np.diff(ts.bin_edges_bits)
  assert ts.density.shape == ts.integrand.shape == (4, 3000) and ts.bin_edges_bits[[0, -1]].tolist() == [0, 30]
  np.testing.assert_allclose((ts.density * width).sum(axis=1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(ts.frac_out_of_range, 0.0, atol=1e-12)
  # Σ L p(L) ΔL is the mean loss up to half a bin
  np.testing.assert_allclose((ts.integrand * width).sum(axis=1), ts.mean_loss_bits, atol=0.5 * width[0])
  high = losses.copy()
  high[:, :500] = 40 * LN2  # 10% above 30 bits: counted out of range, not renormalised away
  hs = tsc.analyse(high, [1e6, 1e7, 1e8, 1e9], list("abcd"))
  np.testing.assert_allclose((hs.density * width).sum(axis=1), 0.9, rtol=1e-12)
  np.testing.assert_allclose(hs.frac_out_of_range, 0.1, rtol=1e-9)


def test_near_zero_fraction_and_float32_input():
  losses = np.array([[0.05, 0.2, 3.0, 0.09], [0.01, 0.02, 0.0, 0.5]], np.float32)
  ts = tsc.analyse(losses, [1.0, 2.0], ["a", "b"])
  np.testing.assert_allclose(ts.near_zero_frac, [0.5, 0.75])


@pytest.mark.parametrize("losses, n, names, match", [
    (np.ones(5), [1, 2], ["a", "b"], "2-D"),
    (np.array([[1.0, np.nan], [1.0, 1.0]]), [1, 2], ["a", "b"], "non-finite"),
    (np.array([[1.0, np.inf], [1.0, 1.0]]), [1, 2], ["a", "b"], "non-finite"),
    (np.array([[1.0, -0.1], [1.0, 1.0]]), [1, 2], ["a", "b"], "negative"),
    (np.ones((3, 4)), [1, 2], ["a", "b", "c"], "one entry per model"),
    (np.ones((2, 4)), [1, 2], ["a"], "names"),
    (np.ones((2, 4)), [2, 1], ["a", "b"], "strictly increasing"),
    (np.ones((2, 4)), [1, 1], ["a", "b"], "strictly increasing"),
    (np.ones((2, 4)), [0, 1], ["a", "b"], "positive"),
    (np.ones((1, 4)), [1], ["a"], ">= 2 models"),
    (np.ones((2, 4), bool), [1, 2], ["a", "b"], "real numbers"),
])
def test_validation_errors(losses, n, names, match):
  with pytest.raises(ValueError, match=match):
    tsc.analyse(losses, np.asarray(n, np.float64), names)


def test_bad_fit_models():
  losses = _power_law_family(0.1, T=50)
  with pytest.raises(ValueError, match="out of range"):
    tsc.analyse(losses, PYTHIA_N, PYTHIA_NAMES, fit_models=np.array([0, 7]))
  with pytest.raises(ValueError, match="boolean fit_models"):
    tsc.analyse(losses, PYTHIA_N, PYTHIA_NAMES, fit_models=np.array([True, False]))
  assert tsc.analyse(losses, PYTHIA_N, PYTHIA_NAMES, fit_models=slice(0, 2)).fit is None


def test_figures_and_summary(tmp_path):
  mono, mono_want = _monogenic_family()
  rng = np.random.default_rng(4)
  lnN = np.log(PYTHIA_N[:5])
  poly = 12.0 - 0.5 * lnN[:, None] + rng.normal(0, 1e-3, (5, 20))
  losses = np.concatenate([poly, mono, rng.uniform(0, 25 * LN2, (5, 500))], axis=1)
  seen = []

  def contexts(t: int) -> str:
    seen.append(t)
    return f"The price is $5 and\nthe answer to question {t} is " + "x" * 100

  ts = tsc.analyse(losses, PYTHIA_N[:5], PYTHIA_NAMES[:5], fit_models=slice(0, 4))
  assert ts.polygenic_mask[:20].all() and (ts.monogenic_index > 0).sum() >= 40
  out = tmp_path / "figs"
  paths = tsc.figures(ts, losses, str(out), contexts=contexts, n_examples=3)
  names = ["mean_loss_vs_params.png", "loss_density.png", "loss_integrand.png", "monogenic_polygenic.png"]
  assert sorted(os.path.basename(p) for p in paths) == sorted(names)
  for p in paths:
    assert os.path.dirname(p) == str(out) and os.path.getsize(p) > 1000
  assert len(seen) == 6 and set(seen[3:]) <= set(range(20))  # 3 monogenic then 3 polygenic tokens
  assert sorted(ts.monogenic_index[seen[:3]].tolist()) == [1, 2, 3]  # spread over the drop sizes
  with pytest.raises(ValueError, match="shape"):
    tsc.figures(ts, losses[:, :10], str(out))

  # the summary's numbers against computations made here, not against the analysis object it prints
  md = tsc.summary_markdown(ts, "Pile test, first 10k predictions")
  assert "| model | N (non-emb) | mean loss (bits) | mean loss (nats) | frac < 0.1 nats |" in md
  bits = losses.mean(axis=1) / LN2
  coef, cov = np.polyfit(np.log(PYTHIA_N[:4]), np.log(bits[:4]), 1, cov=True)  # OLS over the 4 fitted models
  assert f"**α_N = {-coef[0]:.4f} ± {np.sqrt(cov[0, 0]):.4f}**" in md
  assert "Pile test, first 10k predictions" in md and "Excluded from the fit (plotted grey): 1.3b" in md
  assert f"| 18,915,328 | {bits[0]:.4f} | {losses[0].mean():.4f} |" in md
  rand = losses[:, 20 + mono.shape[1]:]  # the uniform block may hold a chance step; counted by hand
  for j in range(1, 5):
    chance = int(np.sum(np.all(rand[:j] > 5.0, axis=0) & np.all(rand[j:] < 0.3, axis=0)))
    assert f"| {j} | {PYTHIA_NAMES[j]} | {int((mono_want == j).sum()) + chance:,} |" in md  # 10 planted per j
  lnN = np.log(PYTHIA_N[:5])
  c1 = np.polyfit(lnN, losses, 1)  # per-token OLS of loss on ln N, all tokens at once
  fitted = c1[0][None, :] * lnN[:, None] + c1[1][None, :]
  with np.errstate(divide="ignore", invalid="ignore"):  # flat tokens: R² undefined (nan), never polygenic
    r2 = 1 - ((losses - fitted) ** 2).sum(0) / ((losses - losses.mean(0)) ** 2).sum(0)
  n_poly = int(np.sum((c1[0] < -0.3) & (r2 > 0.98)))
  assert n_poly >= 20  # the 20 planted polygenic tokens
  assert f"**Polygenic tokens** (slope of loss vs ln N < -0.3 nats, R² > 0.98): {n_poly:,} of the first " \
         f"{losses.shape[1]:,} tokens considered" in md
