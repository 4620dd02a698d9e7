"""Emergence quantities on hand-made arrays; every fit recovers a known exponent from noisy synthetic curves."""

import numpy as np
import pytest

from scaling.fit import loglog
from scaling.quanta import analysis

LN2 = np.log(2)


def test_convergence_steps_hand_made():
  steps = np.array([0, 100, 200, 300])
  bits = np.array([[1.0, 1.0, 1.0], [0.5, 1.0, 1.0], [0.09, 0.2, 1.0], [0.01, 0.099, 1.0]])  # [log_step, task]
  got = analysis.convergence_steps(bits * LN2, steps)
  np.testing.assert_array_equal(got, [200, 300, np.inf])
  batched = analysis.convergence_steps(np.stack([bits, bits[:, ::-1]]) * LN2, steps)
  np.testing.assert_array_equal(batched, [[200, 300, np.inf], [np.inf, 300, 200]])


def test_n_learned_uses_min_over_training_in_nats():
  nats = np.array([[0.69, 0.69, 0.69], [0.05, 0.12, 0.69], [0.3, 0.09, 0.69]])  # task 0 learned then forgotten
  assert analysis.n_learned(nats) == 2
  assert analysis.n_learned_final(nats) == 0  # last log: 0.3 and 0.09 nats are 0.43 and 0.13 bit, above 0.1 bit
  np.testing.assert_allclose(analysis.min_over_training(np.array([[3.0, 1.0, 2.0]])), [1.0])
  np.testing.assert_array_equal(analysis.argmin_step(np.array([3.0, 1.0, 2.0]), np.array([0, 10, 20])), 10)


@pytest.mark.parametrize("true", [0.23, 0.4, 0.61])
def test_fit_alpha_N_recovers_exponent(true):
  rng = np.random.default_rng(0)
  N = np.geomspace(5e3, 3e5, 20)
  loss = 3.0 * N[:, None] ** -true * np.exp(rng.normal(0, 0.05, (20, 3)))
  fit = analysis.fit_alpha_N(N, loss)
  assert fit.n_points == 60 and fit.method == "ols"
  assert abs(fit.exponent - true) < 3 * fit.stderr + 1e-3, str(fit)
  assert 0 < fit.stderr < 0.05
  boot = loglog.fit_loglog(np.repeat(N, 3), loss.ravel(), sign=-1, bootstrap=400)
  assert boot.method == "bootstrap(400)" and 0.3 * fit.stderr < boot.stderr < 3 * fit.stderr


def test_fit_alpha_S_uses_open_window():
  rng = np.random.default_rng(1)
  steps = np.arange(0, 20_001, 100)
  loss = np.where(steps > 0, 5.0 * np.maximum(steps, 1) ** -0.35, 1.0)
  loss = np.where(steps >= 15_000, 0.13, loss)  # plateau outside the window must not bias the fit
  noisy = loss[None] * np.exp(rng.normal(0, 0.03, (3, steps.size)))
  fit = analysis.fit_alpha_S(steps, noisy)
  assert fit.x_range == (600.0, 14_900.0)
  assert abs(fit.exponent - 0.35) < 3 * fit.stderr + 1e-3, str(fit)


def test_fit_alpha_D_starts_below_flat_region():
  rng = np.random.default_rng(2)
  Ds = np.geomspace(1e4, 5e6, 25)
  min_loss = np.minimum(1.0, 20.0 * Ds ** -0.31) * np.exp(rng.normal(0, 0.02, 25))
  min_loss[Ds < 6e4] = 1.0  # no generalisation: flat at 1 bit
  fit = analysis.fit_alpha_D(Ds[::-1], min_loss[::-1])  # order-independent
  assert fit.x_range[0] >= 6e4
  assert abs(fit.exponent - 0.31) < 3 * fit.stderr + 1e-3, str(fit)
  with pytest.raises(ValueError, match="undefined"):
    analysis.fit_alpha_D(Ds, np.ones(25))


def test_fit_n_learned_D_and_convergence_time():
  rng = np.random.default_rng(3)
  Ds = np.geomspace(1e4, 5e6, 25)
  n = np.floor(0.02 * Ds ** 0.68 * np.exp(rng.normal(0, 0.05, 25)))
  n[:3] = 0
  fit = analysis.fit_n_learned_D(Ds, n)
  assert fit.x_range[0] == pytest.approx(Ds[3]) and abs(fit.exponent - 0.68) < 0.06, str(fit)
  p = np.geomspace(0.35, 1e-3, 40)
  steps = 80 / p ** 0.81 * np.exp(rng.normal(0, 0.1, 40))
  steps[-5:] = np.inf  # never converged: excluded
  fit = analysis.fit_convergence_time(p, steps)
  assert fit.n_points == 35 and abs(fit.exponent + 0.81) < 3 * fit.stderr + 1e-3, str(fit)


def test_fit_needs_three_points():
  with pytest.raises(ValueError, match=">= 3 points"):
    loglog.fit_loglog([1, 2], [1, 2])
