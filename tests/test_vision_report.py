"""scaling.dynamics.vision_report: Fig 1 (a, b) of a finished vision workdir: files written, kernels taken at the
run's own initial parameters, the table's rows; bad analysis settings refused before the run."""

import json
import os

import numpy as np
import pytest

from scaling.dynamics import vision, vision_report
from scaling.nn import cnn


def _config(**fig1):
  c = vision.vision_config()
  c.data.n_test = 120
  c.train.update(batch_size=8, steps=120, log_every=10, warmup_steps=10, lr=1e-2, checkpoint_every=4)
  c.sweep.update(widths=(0.5, 1, 1.5), seeds=2)
  c.fig1.update(t_min=20, n_times=8, n_boot=40, ntk_points=100, k_range=(2, 10))
  c.fig1.update(fig1)
  return c


def test_report_files_table_and_the_runs_own_initial_params(tmp_path):
  """One test on one tiny run (two tests sharing a module fixture could build it on both xdist workers)."""
  workdir = str(tmp_path / "vision_fig1")
  curves = vision.run(_config(), workdir)
  text = vision_report.report(workdir)
  for name in ("fig1.md", "fig1.json", "fig1.png", "fig1_spectra.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0, name
  with open(os.path.join(workdir, "fig1.json")) as f:
    summ = json.load(f)
  assert set(summ["kernels"]) == {"initial", "after"}
  assert summ["law"]["n_points"] == 3 * 2 * len(summ["steps"])
  assert 0 < summ["law"]["n_converged"] <= 40
  for name in ("alpha_t", "alpha_N", "n_star", "t_star"):
    assert np.isfinite(summ["law"]["estimates"][name]), name
  assert summ["law"]["estimates"]["n_star"] + summ["law"]["estimates"]["t_star"] == pytest.approx(1.0)
  for k in summ["kernels"].values():
    assert np.isfinite(k["a"]) and np.isfinite(k["b"]) and k["n"] == 100
  for row in ("α_t", "α_N", "N* ∝ C^x", "t* ∝ C^x", "b (λ_k", "a (task power"):
    assert row in text, row
  assert "DMFT, initial kernel" in text and "paper: CIFAR-5M initial NTK" in text
  # the step-0 held-out loss of every width and seed is the loss of the parameters initial_params rebuilds
  x, s = vision.heldout(workdir)
  for w in range(3):
    for seed in range(2):
      p = vision_report.initial_params(workdir, w, seed)
      loss = float(np.mean(cnn.bce(cnn.apply(p, x), s)))
      # same float32 forward pass, vmapped over seeds in the run and alone here: reordered sums of 120 x C terms,
      # ~log2(120 x 24) ≈ 12 ulp ≈ 1.4e-6 relative; 1e-5 is a 7x margin (a different init misses by > 1e-2)
      assert loss == pytest.approx(float(curves["test_loss"][w, seed, 0]), rel=1e-5), (w, seed)


@pytest.mark.parametrize("fig1, field", [
    ({"k_range": (5, 500)}, "fig1.k_range"),
    ({"k_range": (3, 3)}, "fig1.k_range"),
    ({"t_min": 120}, "fig1.t_min"),
    ({"n_boot": 1}, "fig1.n_boot"),
])
def test_bad_analysis_settings_are_refused_before_the_run(tmp_path, fig1, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    vision.run(_config(**fig1), str(tmp_path / "w"))
  assert not os.path.exists(tmp_path / "w" / "config.json")
