"""The exact random-feature simulator (spec dmft.md §1, §2.5, §6 A2/A3/A8)."""

import math

import jax
import numpy as np
import pytest
import scipy.linalg

from scaling.dynamics import random_features as rf

TINY = rf.power_law_task(1.5, 1.25, 30)
T_TINY = np.array([0.0, 0.1, 1.0, 10.0, 100.0, 1000.0])


def _brute_force_v(A, psi, lam, wstar, t_T):
  """v(t) = expm(−t F Ĝ) w* (P = inf: Ĝ = Λ)."""
  F = A.T @ A / A.shape[0]
  G = np.diag(lam) if psi is None else psi.T @ psi / psi.shape[0]
  return np.stack([scipy.linalg.expm(-t * F @ G) @ wstar for t in t_T])


@pytest.mark.parametrize("N,P", [(8, 12), (12, 8)])  # primal (P > N) and dual (P < N) default paths
def test_flow_equals_matrix_exponential(N, P):
  lam, wstar = TINY
  A, psi = rf.sample(jax.random.key(3), lam, N, P)
  v_ref = _brute_force_v(A, psi, lam, wstar, T_TINY)
  for dual in (None, True, False):  # both eigenproblems on the same problem
    out = rf.flow(A, psi, lam, wstar, T_TINY, dual=dual)
    np.testing.assert_allclose(out["v"], v_ref, rtol=1e-10, atol=1e-11 * np.abs(wstar).max())
    np.testing.assert_allclose(out["test"], (v_ref ** 2) @ lam, rtol=1e-10)
    np.testing.assert_allclose(out["train"], np.sum((v_ref @ psi.T) ** 2, axis=1) / P, rtol=1e-9, atol=1e-14)
  np.testing.assert_array_equal(out["v"][0], wstar)  # t = 0: v = w* (φ_0 = 0)


def test_population_flow_equals_matrix_exponential():
  lam, wstar = TINY
  A, psi = rf.sample(jax.random.key(4), lam, 8, math.inf)
  assert psi is None
  out = rf.flow(A, None, lam, wstar, T_TINY)
  np.testing.assert_allclose(out["v"], _brute_force_v(A, None, lam, wstar, T_TINY), rtol=1e-10, atol=1e-11)
  np.testing.assert_allclose(out["train"], out["test"], rtol=1e-12)  # Ĝ = Λ: no train-test gap


@pytest.mark.parametrize("N,P", [(8, 12), (12, 8)])
def test_masked_width_and_data_equal_prefix_run(N, P):
  lam, wstar = TINY
  key = jax.random.key(5)
  A_max, psi_max = rf.sample(key, lam, 20, 16)
  A, psi = rf.sample(key, lam, N, P)
  np.testing.assert_array_equal(A, A_max[:N])  # prefix-stable sampling: common random numbers
  np.testing.assert_array_equal(psi, psi_max[:P])
  t = T_TINY[:-1]
  for dual in (False, True):
    masked = rf.flow(A_max, psi_max, lam, wstar, t, n=N, p=P, dual=dual)
    plain = rf.flow(A, psi, lam, wstar, t, dual=dual)
    for k in ("v", "test", "train"):
      np.testing.assert_allclose(masked[k], plain[k], rtol=0, atol=1e-12)


def test_identity_projection_population_gives_exponential_decay():
  """N = M, A = √N·O (AᵀA/N = I), P = inf: L(t) = Σ λ w*² e^{−2λt}.

  M = 500 keeps L(1e4) ~ 1e-3 (the unlearned tail); once every mode is learned (L ~ 1e-15) v = w* − Aᵀw/√N only has
  absolute accuracy ~1e-16·|w*|.
  """
  M = 500
  lam, wstar = rf.power_law_task(1.5, 1.25, M)
  O, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((M, M)))
  A = np.sqrt(M) * O
  t = np.r_[0.0, np.logspace(-3, 4, 30)]
  out = rf.flow(A, None, lam, wstar, t)
  expected = np.exp(-2 * np.outer(t, lam)) @ (lam * wstar ** 2)
  np.testing.assert_allclose(out["test"], expected, rtol=1e-10)
  np.testing.assert_allclose(out["v"], wstar * np.exp(-np.outer(t, lam)), rtol=1e-8, atol=1e-12)


def test_gd_matches_flow_to_first_order_in_eta():
  lam, wstar = TINY
  A, psi = rf.sample(jax.random.key(0), lam, 12, 16)
  errors = []
  for eta in (0.04, 0.02):
    gd = rf.run_gd(A, psi, lam, wstar, eta, round(5 / eta), n=8, p=12)
    fl = rf.flow(A, psi, lam, wstar, gd["t"], n=8, p=12)
    errors.append(max(np.abs(gd[k] - fl[k]).max() for k in ("test", "train")))
  assert errors[0] < 0.03
  assert 0.4 < errors[1] / errors[0] < 0.6  # O(η)
  gd = rf.run_gd(A, None, lam, wstar, 0.01, 100)
  fl = rf.flow(A, None, lam, wstar, gd["t"])
  assert np.abs(gd["test"] - fl["test"]).max() < 2e-3


def test_ensemble_is_mean_of_member_predictors():
  lam, wstar = TINY
  t = np.array([0.5, 5.0, 50.0])
  out = rf.simulate(2, lam, wstar, (4, 8), (6, 12), t, 3, n_members=3)
  assert out["test"].shape == (3, 2, 2, 3)
  seed_key = jax.random.split(jax.random.key(2), 3)[1]
  runs = [rf.flow(*rf.sample(seed_key, lam, 8, 12, member=e), lam, wstar, t, n=4, p=6) for e in range(3)]
  v_ens = np.mean([r["v"] for r in runs], axis=0)
  np.testing.assert_allclose(out["test_ens"][1, 0, 0], (v_ens ** 2) @ lam, rtol=1e-10)
  np.testing.assert_allclose(out["test"][1, 0, 0], np.mean([r["test"] for r in runs], axis=0), rtol=1e-10)
  np.testing.assert_allclose(out["train"][1, 0, 0], np.mean([r["train"] for r in runs], axis=0), rtol=1e-10)
  assert np.all(out["test_ens"] <= out["test"] + 1e-12)  # convexity: ensembling never hurts
  assert np.all(out["train_ens"] <= out["train"] + 1e-12)
  single = rf.simulate(2, lam, wstar, (4, 8), (6, 12), t, 3)  # member 0 is the single model
  np.testing.assert_allclose(single["test"][1, 0, 0], runs[0]["test"], rtol=1e-10)
  np.testing.assert_array_equal(single["test"], single["test_ens"])


def test_population_surface_has_no_train_test_gap():
  lam, wstar = TINY
  out = rf.simulate(0, lam, wstar, (4, 8, 16), math.inf, np.logspace(-1, 3, 5), 2)
  assert out["test"].shape == (2, 1, 3, 5)
  np.testing.assert_allclose(out["train"], out["test"], rtol=1e-12)


# Spec §6 A2 theory (DMFT) values, a=1.5, b=1.25, M=2000: test at t = 1, 10, 100, 1e4 and train at t = 100.
A2_THEORY = {(64, 256): ([1.3696, 0.6949, 0.6166, 0.6755], 0.3940),
             (256, 64): ([1.3620, 0.6577, 0.5419, 0.5810], 0.02261)}


def test_a2_simulation_matches_dmft_and_a8_train_below_test():
  lam, wstar = rf.power_law_task(1.5, 1.25, 2000)
  t = np.array([1.0, 10.0, 100.0, 1e3, 1e4])
  n_seeds = 20
  mean_se = lambda x: (x.mean(0), x.std(0, ddof=1) / np.sqrt(n_seeds))
  print("\nA2 (a=1.5, b=1.25, M=2000, 20 seeds): theory / sim mean ± SE")
  for (N, P), (theory_test, theory_train) in A2_THEORY.items():
    # one call per (N, P): the eigenproblem is min(N, P)-sized (a shared 256×256 grid would pad both to 256)
    out = rf.simulate(0, lam, wstar, N, P, t, n_seeds)
    test, train = out["test"][:, 0, 0], out["train"][:, 0, 0]
    m, se = mean_se(test[:, [0, 1, 2, 4]])
    mt, set_ = mean_se(train[:, 2])
    cells = [f"{th:.4f} / {a:.4f}±{s:.4f}" for th, a, s in zip(theory_test, m, se)]
    print(f"  (N,P)=({N},{P}): t=1,10,100,1e4: " + " | ".join(cells) + f" | train t=100: {theory_train:.5f} / "
          f"{mt:.5f}±{set_:.5f}")
    ok = lambda th, a, s: abs(th - a) < 3 * s or abs(th - a) < 0.04 * th
    for th, a, s in zip(theory_test + [theory_train], list(m) + [mt], list(se) + [set_]):
      assert ok(th, a, s), ((N, P), th, a, s)
    # A8: train <= test (soft: on the seed mean) at every t
    assert np.all(train.mean(0) <= test.mean(0))
  assert train[:, 3].mean() < 1e-4  # A8, (N, P) = (256, 64): P <= N interpolates, L̂(t=1e3) -> 0


def test_bad_inputs_raise():
  lam, wstar = TINY
  A, psi = rf.sample(jax.random.key(0), lam, 8, 12)
  t = np.array([0.0, 1.0])
  bad = [
      lambda: rf.power_law_task(0.0, 1.25, 10),
      lambda: rf.power_law_task(1.5, -1.0, 10),
      lambda: rf.power_law_task(1.5, 1.25, 2.5),
      lambda: rf.sample(jax.random.key(0), lam, 0, 12),
      lambda: rf.sample(jax.random.key(0), lam, 8, 0),
      lambda: rf.sample(jax.random.key(0), lam, 8, 1.5),
      lambda: rf.flow(A, psi, lam, wstar, [1.0, 0.5]),
      lambda: rf.flow(A, psi, lam, wstar, [1.0, 1.0]),
      lambda: rf.flow(A, psi, lam, wstar, [-1.0, 1.0]),
      lambda: rf.flow(A, psi, lam, wstar, t, n=9),
      lambda: rf.flow(A, psi, lam, wstar, t, p=13),
      lambda: rf.flow(A, None, lam, wstar, t, dual=True),
      lambda: rf.flow(A[:, :10], psi, lam, wstar, t),
      lambda: rf.run_gd(A, psi, lam, wstar, 0.0, 10),
      lambda: rf.run_gd(A, psi, lam, wstar, 50.0, 10),  # η·μ_max >= 2
      lambda: rf.simulate(0, lam, wstar, (4, 16), 12, t, 2, n_max=8),
      lambda: rf.simulate(0, lam, wstar, (4, 8), (12, math.inf), t, 2),
      lambda: rf.simulate(0, lam, wstar, (), 12, t, 2),
      lambda: rf.simulate(0, lam, wstar, (4, 8), 12, t, 0),
      lambda: rf.simulate(0, lam, wstar, (4, 8), 12, t, 2, n_members=0),
      lambda: rf.simulate(-1, lam, wstar, (4, 8), 12, t, 2),
  ]
  for i, f in enumerate(bad):
    with pytest.raises(ValueError):
      f()
      pytest.fail(f"case {i} did not raise")
