"""Discrete GD of the random-feature model on the engine: GD numbers, the per-step loss, the η·μ_max < 2 check,
the DMFT comparison. Kill-and-resume, device counts, bad configs and NaN stops: tests/test_engine.py (rf_gd)."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.engine import io, loop
from scaling.dynamics import random_features as rf
from scaling.dynamics import rf_gd

ARRAYS = ("test_loss", "train_loss")


def tiny_config(**sections):
  """A CPU-second-sized run: M=50, (N, P) = (8, 12) and (12, ∞), 3 seeds, 40 steps of η=0.2 in 4 chunks."""
  c = rf_gd.rf_gd_config()
  c.task.update(M=50)
  c.train.update(eta=0.2, steps=40, log_every=10, checkpoint_every=1)
  c.sweep.update(points=((8, 12), (12, 0)), seeds=3)
  for name, values in sections.items():
    c[name].update(values)
  return c


def test_loop_equals_run_gd_and_a_finished_run_is_skipped(tmp_path, monkeypatch):
  c = tiny_config()
  wd = str(tmp_path / "wd")
  curves = rf_gd.run(c, wd)
  assert curves.axes["test_loss"] == rf_gd.AXES == ("point", "seed", "log_step")
  assert curves["test_loss"].shape == curves["train_loss"].shape == (2, 3, 5)
  assert curves["test_loss"].dtype == np.float64
  np.testing.assert_array_equal(curves.coords["log_step"], [0, 10, 20, 30, 40])
  np.testing.assert_allclose(curves.coords["t"], [0, 2, 4, 6, 8], rtol=1e-15)
  np.testing.assert_array_equal(curves.coords["point"], ["N8_P12", "N12_Pinf"])
  np.testing.assert_array_equal(curves.coords["P"], [12, math.inf])
  lam, wstar = rf.power_law_task(1.5, 1.25, 50)
  np.testing.assert_allclose(curves["test_loss"][..., 0], np.sum(lam * wstar ** 2), rtol=1e-14)  # w = 0 at step 0
  keys = jax.random.split(jax.random.key(0), 3)
  for i, (N, P) in enumerate(c.sweep.points):
    for s in range(3):
      A, psi = rf.sample(keys[s], lam, N, P if P else math.inf)
      gd = rf.run_gd(A, psi, lam, wstar, 0.2, 40)
      for name in ARRAYS:
        np.testing.assert_allclose(curves[name][i, s, 1:], gd[name.split("_")[0]][9::10], rtol=1e-12, atol=0,
                                   err_msg=f"{name} (N, P) = ({N}, {P}), seed {s}")
      B = A @ (np.diag(np.sqrt(lam)) if psi is None else psi.T / np.sqrt(P)) / np.sqrt(N)
      np.testing.assert_allclose(curves["mu_max"][i, s], np.linalg.norm(B, 2) ** 2, rtol=1e-10)
  np.testing.assert_allclose(curves["train_loss"][1], curves["test_loss"][1], rtol=1e-13)  # population: L̂ = L
  loaded = io.load_workdir(wd)
  for name in ARRAYS + ("mu_max",):
    np.testing.assert_array_equal(loaded[name], curves[name])
  records = io.read_metrics(wd)
  expected = [(p, s) for p in ("N8_P12", "N12_Pinf") for s in range(0, 41, 10)]
  assert [(r["point"], r["step"]) for r in records] == expected
  assert not [f for f in os.listdir(wd) if f.startswith(".tmp")]

  def never(*args, **kwargs):
    raise AssertionError("a finished point was trained again")

  monkeypatch.setattr(loop, "run_chunk", never)
  again = rf_gd.run(c, wd)
  for name in ARRAYS:
    np.testing.assert_array_equal(again[name], curves[name])
  assert len(io.read_metrics(wd)) == len(records)


def test_per_step_loss_is_the_train_loss_before_each_step():
  """The engine's per-step "loss" at step start + i is L̂ of the weights after start + i updates: the chunk-start
  evaluation for i = 0, and run_gd's loss after update i for i >= 1; 4 steps of 40, through loop.run_chunk."""
  c = tiny_config()
  plan = rf_gd.plan(c)
  point = plan.points[0]
  with jax.enable_x64(True):
    keys, shared = rf_gd.EXPERIMENT.inputs(plan, point, point.spec)
    with jax.transfer_guard("allow"):
      states, problems = loop.init_members(keys, shared, exp=rf_gd.EXPERIMENT, spec=point.spec)
      per_step = []
      for start in range(0, 8, 2):
        ev0 = loop.run_evaluate(states, problems, shared, jnp.int32(start), exp=rf_gd.EXPERIMENT, spec=point.spec)
        states, ev, means, first = loop.run_chunk(states, problems, shared, jnp.int32(start), exp=rf_gd.EXPERIMENT,
                                                  spec=point.spec, n_steps=1)
        np.testing.assert_array_equal(ev["train_loss"], ev0["train_loss"])
        np.testing.assert_allclose(means["loss"], ev["train_loss"], rtol=1e-14)
        assert np.all(np.asarray(first) == -1)
        per_step.append(np.asarray(means["loss"]))
  lam, wstar = rf.power_law_task(1.5, 1.25, 50)
  A, psi = rf.sample(jax.random.split(jax.random.key(0), 3)[0], lam, 8, 12)
  gd = rf.run_gd(A, psi, lam, wstar, 0.2, 3)
  np.testing.assert_allclose([l[0] for l in per_step[1:]], gd["train"], rtol=1e-12)
  assert per_step[0][0] > gd["train"][0]


@pytest.mark.parametrize("points", [(), ((8, 12), (8, 12)), ((0, 12),), ((8, -1),), ((8, 12, 3),), ((8.0, 12),)])
def test_bad_points_name_the_field(points):
  with pytest.raises(ValueError, match="sweep.points"):
    rf_gd.plan(tiny_config(sweep=dict(points=points)))


def test_eta_too_large_raises_before_writing(tmp_path):
  mu_max = rf_gd.plan(tiny_config()).extra
  assert mu_max.shape == (2, 3) and np.all(mu_max > 0)
  with pytest.raises(ValueError, match=r"GD is unstable: train.eta \* mu_max .* >= 2 at \(N, P\) = \(8, 12\)"):
    rf_gd.run(tiny_config(train=dict(eta=2.0 / mu_max.max())), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()
  rf_gd.plan(tiny_config(train=dict(eta=1.99 / mu_max.max())))  # just below the limit is fine
  with pytest.raises(ValueError, match="unknown config keys.*train.lr"):
    cfg = tiny_config().to_dict()
    cfg["train"]["lr"] = 0.1
    rf_gd.run(cfg, str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


def test_gd_matches_the_dmft_flow_at_t_equal_eta_step(tmp_path):
  """η=0.05, M=300, (N, P) = (32, 64), 8 seeds: GD test-loss mean within 3 SE or 5 % of the DMFT flow for t >= 1."""
  c = rf_gd.rf_gd_config()
  c.task.update(M=300)
  c.train.update(eta=0.05, steps=2000, log_every=20, checkpoint_every=1000)
  c.sweep.update(points=((32, 64),), seeds=8)
  curves = rf_gd.run(c, str(tmp_path / "wd"))
  steps = [20, 40, 100, 200, 400, 1000, 2000]  # t = 1, 2, 5, 10, 20, 50, 100
  rows = rf_gd.compare_to_theory(curves, c, steps=steps)
  print("\n" + rf_gd.comparison_table(rows))
  assert [r["t"] for r in rows] == pytest.approx([1, 2, 5, 10, 20, 50, 100])
  for r in rows:
    assert abs(r["test_z"]) < 3 or abs(r["test_rel"]) < 0.05, r
    # The discretisation error alone (same draws, exact flow): O(η) and shrinking relative to the loss.
    assert abs(r["test_gd_vs_flow"]) < 0.02, r
    assert r["train_gd"] <= r["test_gd"]
  assert abs(rows[0]["test_gd_vs_flow"]) > abs(rows[-1]["test_gd_vs_flow"])
