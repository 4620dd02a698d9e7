"""`launch.dmft` / `scaling.dynamics.dmft`: config checks and every experiment end to end at toy size."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import dmft as dmft_configs
from scaling.engine import io
from scaling.dynamics import dmft

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(variant, **task):
  c = dmft_configs.get_config(variant)
  c.task.update(**{"M": 300, **task})
  c.t.update(min=0.1, max=300.0, num=9)
  c.sim.seeds = 4
  return c


@pytest.mark.parametrize("field,value,match", [
    ("experiment", "nope", "experiment"),
    ("task.M", 0, "task.M"),
    ("N", (32, -1), "N entries"),
    ("P", (16.5,), "P entries"),
    ("t.min", 0.0, "t.min"),
    ("sim.seeds", 1, "sim.seeds"),
])
def test_bad_config_raises_before_writing(tmp_path, field, value, match):
  c = _tiny("quick")
  section, _, key = field.rpartition(".")
  (c[section] if section else c)[key] = value
  with pytest.raises(ValueError, match=match):
    dmft.run(c, str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


def test_frontier_variants_need_increasing_widths_and_one_p(tmp_path):
  c = _tiny("width_convergence")
  c.N = (100, 50)
  with pytest.raises(ValueError, match="increasing widths"):
    dmft.plan(c)
  c = _tiny("compute_optimal")
  c.P = (0, 64)
  with pytest.raises(ValueError, match="one P"):
    dmft.plan(c)


def test_exponent_variants_need_a_b_above_one(tmp_path):
  c = _tiny("exponents", a=0.9)
  with pytest.raises(ValueError, match="a > 1"):
    dmft.plan(c)


def test_quick_launcher_end_to_end_and_reload(tmp_path):
  wd = tmp_path / "quick"
  env = {**os.environ, "PYTHONPATH": ROOT}
  cmd = [sys.executable, "-m", "launch.dmft", "--config=configs/dmft.py:quick", f"--workdir={wd}"]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  print(r.stdout)
  rows = [l for l in r.stdout.splitlines() if l.startswith("| N=")]
  assert len(rows) == 8 and all(l.rstrip(" |").endswith("True") for l in rows), "theory within 3 SE or 4 % of sim"
  assert (wd / "theory_vs_sim.png").stat().st_size > 10_000
  th = io.load_npz(str(wd / "theory.npz"))
  again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert again.returncode == 0 and "loaded from" in again.stderr
  np.testing.assert_array_equal(io.load_npz(str(wd / "theory.npz"))["test"], th["test"])


def test_train_test_gap_and_width_convergence(tmp_path):
  c = _tiny("train_test_gap")
  c.N, c.P = (64,), (32, 128)
  text = dmft.run(c, str(tmp_path / "gap"))
  th = io.load_npz(str(tmp_path / "gap" / "theory.npz"))
  assert np.all(th["train"] <= th["test"] + 1e-12)  # spec A8
  assert th["test"][0, -1] - th["train"][0, -1] > th["test"][1, -1] - th["train"][1, -1]  # more data, smaller gap
  assert "| N=64, P=32 | train |" in text
  c = _tiny("width_convergence")
  c.N = (25, 50, 100)
  c.check_t = (0.1, 300.0)
  c.sim.enabled = False
  text = dmft.run(c, str(tmp_path / "width"))
  early = [l for l in text.splitlines() if l.startswith("| 0.1000 |")][0]
  c_early = [float(v) for v in early.strip("| ").split(" | ")[1:]]
  assert all(abs(v - 1) < 0.05 for v in c_early), f"early-time 1/N convergence (spec A6): {c_early}"


def test_exponents_and_compute_optimal_run(tmp_path):
  c = _tiny("exponents", M=4000)
  c.N = (50, 100, 200)
  c.t.update(min=10.0, max=1000.0, num=5)
  text = dmft.run(c, str(tmp_path / "exp"))
  assert "L(t, ∞, ∞) vs t" in text and (tmp_path / "exp" / "exponents.png").exists()
  c = _tiny("compute_optimal", M=1000)
  c.N = (16, 23, 32, 45, 64, 90, 128)
  c.t.update(min=0.1, max=1e5, num=25)
  c.sim.max_width = 32
  text = dmft.run(c, str(tmp_path / "co"))
  sim = io.load_npz(str(tmp_path / "co" / "sim.npz"))
  assert np.all(np.isfinite(sim["test"][:, :3])) and np.all(np.isnan(sim["test"][:, 3:]))  # widths > max_width
  assert "N*(C)" in text and "t*(C)" in text


def test_ensembles_theory_and_sim(tmp_path):
  c = _tiny("ensembles")
  c.N, c.P = (32, 32), (0, 128)
  c.E = (1, 2, 0)
  c.check_t = (10.0, 300.0)
  dmft.run(c, str(tmp_path / "ens"))
  th = io.load_npz(str(tmp_path / "ens" / "theory.npz"))["L_E"]  # [E, point, t]
  assert np.all(th[0] >= th[1] - 1e-12) and np.all(th[1] >= th[2] - 1e-12), "more members never hurt"
  sims = {E: io.load_npz(str(tmp_path / "ens" / f"sim_E{E}.npz")) for E in (1, 2)}
  assert not (tmp_path / "ens" / "sim_Einf.npz").exists()
  np.testing.assert_allclose(sims[1]["test_ens"], sims[1]["test"], rtol=1e-12)
  assert np.all(sims[2]["test_ens"].mean(0) <= sims[2]["test"].mean(0) + 1e-12)
  assert math.isfinite(float(th[2, 0, -1]))


def test_real_spectrum_on_generated_mnist1d(tmp_path):
  """The real-spectrum pipeline end to end on a small MNIST-1D pool generated offline through the local tfds
  builder: fitted exponents are finite, the linearised network starts at the target's power, and the DMFT with the
  empirical spectrum tracks it early (t <= 1, within 3 %)."""
  c = dmft_configs.get_config("real_spectrum")
  c.real.update(n_pool=300, P=(50, 100), width=64, draws=3, k_range=(3, 30), data_dir=str(tmp_path / "tfds"))
  c.t.update(min=0.1, max=1e3, num=13)
  c.check_t = (1.0, 100.0)
  text = dmft.run(c, str(tmp_path / "real"))
  r = io.load_npz(str(tmp_path / "real" / "real_spectrum.npz"))
  print(text)
  assert np.isfinite(r["a"]) and np.isfinite(r["b"]) and r["b"] > 0
  assert r["power"].sum() == pytest.approx(1.0, rel=1e-9)  # ±1 labels: E[y²] = 1 in the spectrum's normalisation
  early = r["t"] <= 1.0
  net = r["test"].mean(1)[:, early]
  np.testing.assert_allclose(r["theory_emp"][:, early], net, rtol=0.03)
  assert "b (λ_k ∝ k^-b" in text and (tmp_path / "real" / "real_spectrum.png").exists()
  assert (tmp_path / "tfds").exists()  # the generated dataset lives where it was asked to


def test_rf_gd_launcher(tmp_path):
  env = {**os.environ, "PYTHONPATH": ROOT}
  cmd = [sys.executable, "-m", "launch.rf_gd", "--config=configs/rf_gd.py:quick", "--config.train.steps=200",
         f"--workdir={tmp_path / 'gd'}"]
  r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode == 0, r.stderr[-3000:]
  rows = [l.split() for l in r.stdout.splitlines() if l.strip().startswith(("N32_P64", "N64_Pinf"))]
  assert len(rows) >= 4 and all(abs(float(row[10].rstrip("%"))) < 1.0 for row in rows), "GD within 1 % of the flow"
  assert (tmp_path / "gd" / "curves.npz").exists()


def test_ensemble_formula_matches_simulated_ensembles():
  """Spec §6 A3: the ensemble formula (E members, independent projections, shared data) against simulated ensembles
  within 3 SE at several t; E -> ∞ approaches C_x."""
  from scaling.dynamics import random_features as rf
  from scaling.dynamics.theory import inputs, solver
  a, b, M, N, P, E, S = 1.5, 1.25, 1000, 192, 384, 4, 16
  t = np.array([1.0, 10.0, 100.0, 1000.0])
  lam, w2 = inputs.power_law_spectrum(a, b, M)
  fn = solver.ensemble_curve_fn(lam, w2)
  th = fn(t, 1.0 / N, 1.0 / P, E)
  lam_s, wstar = rf.power_law_task(a, b, M)
  sim = rf.simulate(0, lam_s, wstar, [N], [P], t, S, n_members=E)["test_ens"][:, 0, 0]  # [seed, t]
  m, se = sim.mean(0), sim.std(0, ddof=1) / np.sqrt(S)
  z = np.abs(m - th["L_E"]) / se
  print("A3 ensemble E=4: theory", np.round(th["L_E"], 4), "sim", np.round(m, 4), "±", np.round(se, 4))
  assert np.all(z < 3), f"|theory - sim| / SE = {z}"
  big = fn(t, 1.0 / N, 1.0 / P, 1e9)
  np.testing.assert_allclose(big["L_E"], th["Cx"], rtol=1e-6)
  assert np.all(th["Cx"] < th["L_E"]) and np.all(th["L_E"] < th["C0"])
