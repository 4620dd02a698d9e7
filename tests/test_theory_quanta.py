"""Quantization-model theory helpers against the spec's numbers (quanta.md §1, §3, §7 item 7)."""

import numpy as np
import pytest
from scipy import special

from scaling.quanta import theory as quanta

ALPHAS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
PAPER_PROBS = quanta.zipf_probs(500, 0.4)
# Transcribed by hand from spec quanta.md §3 (Fig 10 and Fig 9 tables, paper α = 0.4 column).
SPEC_FIG10_ALPHA04 = {"alpha_N": 0.38, "alpha_S": 0.35, "alpha_D": 0.31}
SPEC_FIG9_ALPHA04 = 0.68


def _exact_tail(n, alpha):
  """Σ_{k>n} p_k of the infinite Zipf law, via the Hurwitz zeta ζ(s, n+1) = Σ_{k>=n+1} k^-s."""
  s = alpha + 1.0
  return special.zeta(s, np.asarray(n, np.float64) + 1.0) / special.zeta(s)


def test_zipf_probs_paper_values():
  p = PAPER_PROBS
  assert p.shape == (500,) and p.dtype == np.float64
  np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-12)
  for i, want in [(0, 0.34513), (1, 0.13078), (2, 0.07413), (3, 0.04956), (4, 0.03626)]:
    assert p[i] == pytest.approx(want, abs=5e-6), i
  assert p[499] == pytest.approx(5.75e-5, rel=1e-3)
  assert p[:41].sum() == pytest.approx(0.877, abs=5e-4)
  assert np.all(np.diff(p) < 0)


def test_zipf_probs_code_convention_and_offset():
  np.testing.assert_allclose(quanta.zipf_probs(500, 1.4, convention="code"), PAPER_PROBS, rtol=1e-12)
  q = quanta.zipf_probs(20, 0.4, offset=10.0)
  ranks = np.arange(11, 31, dtype=np.float64)
  np.testing.assert_allclose(q, ranks ** -1.4 / (ranks ** -1.4).sum(), rtol=1e-12)
  np.testing.assert_allclose(quanta.zipf_probs(7, 0.0, convention="code"), np.full(7, 1 / 7), rtol=1e-12)


@pytest.mark.parametrize("kwargs", [dict(n_tasks=0, alpha=0.4), dict(n_tasks=5, alpha=0.4, convention="torch"),
                                    dict(n_tasks=5, alpha=0.4, offset=-1.0)])
def test_zipf_probs_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    quanta.zipf_probs(**kwargs)


def test_zipf_probs_infinite():
  k = np.arange(1, 501)
  p = quanta.zipf_probs_infinite(k, 0.4)
  np.testing.assert_allclose(p[1:] / p[0], PAPER_PROBS[1:] / PAPER_PROBS[0], rtol=1e-12)  # same shape as finite law
  np.testing.assert_allclose(p.sum() + _exact_tail(500, 0.4), 1.0, rtol=1e-12)
  assert quanta.zipf_probs_infinite(1, 0.4) == pytest.approx(1 / special.zeta(1.4), rel=1e-14)
  for bad in (0, 1.5):
    with pytest.raises(ValueError):
      quanta.zipf_probs_infinite(bad, 0.4)
  with pytest.raises(ValueError):
    quanta.zipf_probs_infinite(1, 0.0)


def test_residual_mass_table():
  ns = np.array(sorted(quanta.RESIDUAL_MASS_ALPHA04))
  want = np.array([quanta.RESIDUAL_MASS_ALPHA04[n] for n in ns])
  got = quanta.residual_mass(ns, PAPER_PROBS)
  np.testing.assert_allclose(got, want, atol=1e-3)
  for n, w in quanta.RESIDUAL_MASS_ALPHA04.items():  # scalar path, spec's 3-decimal rounding
    assert isinstance(quanta.residual_mass(n, PAPER_PROBS), float)
    assert round(quanta.residual_mass(n, PAPER_PROBS), 3) == w
  assert quanta.residual_mass(0, PAPER_PROBS) == pytest.approx(1.0, abs=1e-12)
  assert quanta.residual_mass(500, PAPER_PROBS) == 0.0
  np.testing.assert_allclose(quanta.residual_mass(41, PAPER_PROBS), 1 - 0.8774, atol=1e-4)
  for bad in (-1, 501, 2.5):
    with pytest.raises(ValueError):
      quanta.residual_mass(bad, PAPER_PROBS)


def test_loss_exact():
  n = np.arange(501)
  tail = quanta.residual_mass(n, PAPER_PROBS)
  np.testing.assert_allclose(quanta.loss_exact(n, PAPER_PROBS), tail, atol=1e-15)
  np.testing.assert_allclose(quanta.loss_exact(n, PAPER_PROBS, a=0.1, b=0.9), 0.1 + 0.8 * tail, atol=1e-12)
  assert quanta.loss_exact(0, PAPER_PROBS, a=0.2, b=0.7) == pytest.approx(0.7)
  assert quanta.loss_exact(500, PAPER_PROBS, a=0.2, b=0.7) == pytest.approx(0.2)
  assert np.all(np.diff(quanta.loss_exact(n, PAPER_PROBS)) <= 0)


def test_hurwitz_tail_matches_a_direct_sum():
  """The reference tail (Hurwitz ζ) against an explicit sum to 1e7 plus integral bounds on the rest."""
  alpha, n, cut = 0.4, 1000, 10**7
  k = np.arange(n + 1, cut + 1, dtype=np.float64)
  head = np.sum(k ** -(alpha + 1.0)) / special.zeta(alpha + 1.0)
  rest_lo = (cut + 1.0) ** -alpha / alpha / special.zeta(alpha + 1.0)  # ∫_{cut+1}^∞ <= Σ_{k>cut} <= ∫_cut^∞
  rest_hi = float(cut) ** -alpha / alpha / special.zeta(alpha + 1.0)
  assert head + rest_lo <= _exact_tail(n, alpha) * (1 + 1e-12)
  assert _exact_tail(n, alpha) <= (head + rest_hi) * (1 + 1e-12)


@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.8])
def test_loss_asymptotic_against_tail_sum(alpha):
  """L_n formula vs the exact tail of the infinite law (a=0, b=1).

  k^-(α+1) is decreasing, so ∫_{n+1}^∞ < Σ_{k>n} < ∫_n^∞ = the asymptotic form: the relative error r_n is in
  (0, (1+1/n)^α − 1) ⊂ (0, α/n), and Euler–Maclaurin gives r_n ≈ α/(2n).
  """
  n = np.array([1e2, 1e3, 1e4, 1e5])
  exact = _exact_tail(n, alpha)
  rel = quanta.loss_asymptotic(n, alpha) / exact - 1.0
  assert np.all(rel > 0)
  assert np.all(rel < (1.0 + 1.0 / n) ** alpha - 1.0)
  assert np.all(np.diff(rel) < 0)
  np.testing.assert_allclose(rel * n / (alpha / 2), 1.0, rtol=0.1)
  assert rel[-1] < 1e-5
  a, b = 0.05, 0.95
  bound = (1 + 1 / n[0]) ** alpha - 1
  np.testing.assert_allclose(quanta.loss_asymptotic(n, alpha, a, b), a + (b - a) * exact, rtol=bound)


def test_exponents_paper_alpha04():
  assert quanta.alpha_S(0.4) == quanta.alpha_D(0.4) == pytest.approx(2 / 7, rel=1e-14)  # 0.4 / 1.4 by hand
  assert round(quanta.alpha_D(0.4), 3) == 0.286
  assert quanta.n_learned_exponent(0.4) == pytest.approx(5 / 7, rel=1e-14)  # 1 / 1.4 by hand
  assert quanta.alpha_D_from_alpha_N(0.34) == pytest.approx(0.254, abs=5e-4)  # spec §3: Chinchilla prediction


def _slope(x, y):
  return np.polyfit(np.log(x), np.log(y), 1)[0]


@pytest.mark.parametrize("alpha", [0.1, 0.4, 0.8])
def test_alpha_N_is_the_slope_of_the_exact_tail(alpha):
  """α_N against the loss it describes: with n = N/C quanta learned, L − a ∝ Σ_{k>n} p_k (Hurwitz ζ, not the
  asymptotic formula); its log-log slope over n in 1e3..1e6 is −α_N (corrections ~α/(2n) < 1e-3)."""
  n = np.logspace(3, 6, 13)
  assert -_slope(n, _exact_tail(n, alpha)) == pytest.approx(quanta.alpha_N(alpha), abs=1e-3)


def test_fig10_and_fig9_theory_rows():
  a = np.array(ALPHAS)
  theory_sd = [0.091, 0.167, 0.231, 0.286, 0.333, 0.375, 0.412, 0.444]
  np.testing.assert_array_equal(np.round(quanta.alpha_S(a), 3), theory_sd)
  np.testing.assert_array_equal(np.round(quanta.alpha_D(a), 3), theory_sd)
  theory_nl = [0.909, 0.833, 0.769, 0.714, 0.667, 0.625, 0.588, 0.556]
  np.testing.assert_array_equal(np.round(quanta.n_learned_exponent(a), 3), theory_nl)


def test_steps_to_learn_and_convergence_slope():
  p = PAPER_PROBS
  steps = quanta.steps_to_learn(p, tau=80 * 20000, batch=20000)  # Fig 8's pink reference line steps = 80/p
  np.testing.assert_allclose(steps, 80 / p, rtol=1e-15)
  slope = np.polyfit(np.log(p), np.log(steps), 1)[0]
  assert slope == pytest.approx(quanta.convergence_time_exponent(), abs=1e-12)
  assert quanta.steps_to_learn(0.5, tau=10.0, batch=4) == pytest.approx(5.0)


@pytest.mark.parametrize("alpha", [0.2, 0.4, 0.8])
def test_threshold_model_gives_n_learned_and_alpha_D_exponents(alpha):
  """D p_k >= τ on the infinite law: n_learned ∝ D^{1/(α+1)}, L(D) ∝ D^{-α/(α+1)} (spec §3 Theory); and the
  Fig 18 relation α_D = f(α_N) holds between the two simulated slopes (loss vs n, loss vs D)."""
  tau = 1.0
  D = np.logspace(4, 10, 25)
  p1 = quanta.zipf_probs_infinite(1, alpha)
  n = np.floor((D * p1 / tau) ** (1 / (alpha + 1)))  # largest k with D p_k >= τ
  assert _slope(D, n) == pytest.approx(quanta.n_learned_exponent(alpha), abs=0.01)
  loss = _exact_tail(n, alpha)
  sim_alpha_D = -_slope(D, loss)
  assert sim_alpha_D == pytest.approx(quanta.alpha_D(alpha), abs=0.01)
  sim_alpha_N = -_slope(n, loss)
  assert quanta.alpha_D_from_alpha_N(sim_alpha_N) == pytest.approx(sim_alpha_D, abs=0.01)


def test_fig10_fig9_tables_well_formed():
  assert tuple(quanta.FIG10) == ALPHAS and tuple(quanta.FIG9) == ALPHAS
  for alpha, row in quanta.FIG10.items():
    assert set(row) == {"alpha_N", "alpha_S", "alpha_D"}
    assert all(0 < v < 1 for v in row.values())
    excess = row["alpha_S"] - quanta.alpha_S(alpha)  # spec §3: α_S above theory everywhere, by +0.03 to +0.14
    assert 0.03 - quanta.FIG_READ_TOL <= excess <= 0.14 + quanta.FIG_READ_TOL, alpha
  emp_n = [quanta.FIG10[a]["alpha_N"] for a in ALPHAS]
  assert 0 < np.polyfit(ALPHAS, emp_n, 1)[0] < 1  # spec §3: empirical α_N trend has slope < 1
  assert np.all(np.diff([quanta.FIG9[a] for a in ALPHAS]) <= 0)


def test_headline_entries_well_formed():
  assert len(quanta.HEADLINE) >= 10
  for name, q in quanta.HEADLINE.items():
    assert set(q) == {"value", "band", "source"}, name
    lo, hi = q["band"]
    assert lo <= q["value"] <= hi, name
    assert isinstance(q["source"], str) and "spec" in q["source"], name
  h = quanta.HEADLINE
  for q, want in SPEC_FIG10_ALPHA04.items():  # both tables against the spec's numbers, not against each other
    assert quanta.FIG10[0.4][q] == want and h[f"{q}_alpha04"]["value"] == want, q
  assert quanta.FIG9[0.4] == SPEC_FIG9_ALPHA04 and h["n_learned_exponent_alpha04"]["value"] == SPEC_FIG9_ALPHA04


def test_headline_consistent_with_theory():
  h = quanta.HEADLINE
  lo, hi = h["fig2_n_n_learned_width500"]["band"]  # residual mass over 35..41 learned tasks ≈ 0.12–0.14 bits
  flo, fhi = h["fig2_n_final_loss_width500_bits"]["band"]
  assert flo <= quanta.residual_mass(hi, PAPER_PROBS) <= quanta.residual_mass(lo, PAPER_PROBS) <= fhi
  d_first = h["task0_threshold_examples"]["value"] / PAPER_PROBS[0]  # D·p0 ≈ 2e4  =>  flat region up to ≈ 6e4
  dlo, dhi = h["flat_region_D_max"]["band"]
  assert dlo <= d_first <= dhi
  clo, chi = h["convergence_slope"]["band"]
  assert clo <= quanta.convergence_time_exponent() <= chi
  nlo, nhi = h["alpha_N_alpha04"]["band"]
  assert nlo <= quanta.alpha_N(0.4) <= nhi
