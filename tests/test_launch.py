"""The launcher end to end on `:quick`, config variants, config_flags overrides."""

import os
import subprocess
import sys

import numpy as np
import pytest

from configs import msp as msp_configs
from scaling.engine import io
from scaling.quanta import msp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_DEVICE = "--xla_force_host_platform_device_count=1"  # not the 4 simulated devices of tests/conftest.py


def _launch(*args, env_extra=None):
  env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ONE_DEVICE, **(env_extra or {})}  # as a user runs it
  return subprocess.run([sys.executable, "-m", "launch.msp", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)


def test_launcher_quick_end_to_end_and_rerun_resumes(tmp_path):
  """The main job (README) with 1,000 of its 5,000 steps: every width in one program, the table, the figure."""
  wd = tmp_path / "quick"
  r = _launch("--config=configs/msp.py:quick", f"--workdir={wd}", "--config.train.steps=1000")
  assert r.returncode == 0, r.stderr[-3000:]
  assert "width" in r.stdout and "loss [bit]" in r.stdout and "learned" in r.stdout
  c = msp_configs.get_config("quick")
  rows = [l.split()[0] for l in r.stdout.splitlines() if l.strip() and l.split()[0].isdigit()]
  assert rows == [str(w) for w in c.sweep.width]
  assert (wd / "summary.png").stat().st_size > 10_000
  curves = io.load_workdir(str(wd))
  final = curves["test_loss"][:, 0, :, 0, 0, 0, -1].mean(axis=1) / np.log(2)
  assert final[-1] < final[0] - 0.2, f"wider nets reach lower loss: {final}"
  assert "steps/s" in r.stderr and "ETA" in r.stderr and "the sweep compiles 1 program(s)" in r.stderr
  again = _launch("--config=configs/msp.py:quick", f"--workdir={wd}", "--config.train.steps=1000")
  assert again.returncode == 0 and "complete, skipping" in again.stderr


def test_launcher_overrides_and_unknown_keys(tmp_path):
  r = _launch("--config=configs/msp.py:quick", f"--workdir={tmp_path / 'a'}", "--config.train.lr=0.1")
  assert r.returncode != 0 and "lr" in r.stderr and not (tmp_path / "a").exists()
  r = _launch("--config=configs/msp.py:quick", f"--workdir={tmp_path / 'b'}", "--config.sweep.width=(8,)",
              "--config.train.steps=100", "--config.sweep.seeds=1")
  assert r.returncode == 0, r.stderr[-3000:]
  assert io.load_workdir(str(tmp_path / "b"))["test_loss"].shape[:3] == (1, 1, 1)


@pytest.mark.parametrize("variant,widths,Ds,alphas,seeds,steps", [
    ("fig2_n", [9, 11, 13, 14, 17, 19, 22, 25, 29, 33, 38, 44, 50, 57, 66, 75, 86, 99, 113, 129, 148, 169, 194, 222,
                254, 291, 333, 381, 436, 500], [-1], [0.4], 1, 200_000),
    ("fig2_d", [500], "D-scaling-6", [0.4], 1, 1_000_000),
    ("fig10_n", [9, 11, 14, 17, 20, 24, 29, 35, 41, 50, 59, 71, 85, 102, 122, 146, 175, 209, 250, 300], [-1],
     [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], 3, 100_000),
    ("fig10_d", [500], "D-scaling-9", list(np.round(np.arange(0.1, 0.801, 0.05), 3)), 1, 100_000),
])
def test_paper_variants_match_spec_grids(variant, widths, Ds, alphas, seeds, steps):
  c = msp_configs.get_config(variant)
  p = msp.plan(c)  # validates without compiling
  Ds_p = tuple(int(d) for d in p.shape_axes["D"])
  grid = dict(zip(p.grid.axes, p.grid.values))
  assert list(p.shape_axes["width"]) == widths
  if Ds == "D-scaling-6":
    assert len(Ds_p) == 30 and Ds_p[:3] == (9999, 12389, 15350) and Ds_p[-2:] == (4035543, 4999999)
  elif Ds == "D-scaling-9":
    assert len(Ds_p) == 25 and Ds_p[:3] == (9999, 12955, 16784) and Ds_p[-2:] == (3859338, 4999999)
  else:
    assert list(Ds_p) == Ds
  np.testing.assert_allclose(grid["alpha"], alphas)
  assert len(grid["seed"]) == seeds and c.train.steps == steps
  assert (c.task.n_tasks, c.task.n, c.task.k, c.train.batch_size) == (500, 100, 3, 20000)
  assert c.sweep.lr == (1e-3,) and c.train.optimizer == "adam"
  if variant == "fig10_n":  # the original's seeds 0, 1, 2 also seeded the subsets
    assert not np.array_equal(p.extra.subsets[0], p.extra.subsets[1])
  assert msp_configs.__doc__.count(f"configs/msp.py:{variant} ") == 1


def test_unknown_override_is_one_clear_line_and_writes_nothing(tmp_path):
  r = _launch("--config=configs/msp.py:quick", f"--workdir={tmp_path / 'a'}", "--config.train.foo=1")
  assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
  assert "--config.train.foo=1" in r.stderr and "foo" in r.stderr
  r = _launch("--config=configs/msp.py:quick,width=()", f"--workdir={tmp_path / 'a'}")
  assert r.returncode != 0 and "sweep.width is empty" in r.stderr, r.stderr[-2000:]
  assert not (tmp_path / "a").exists()


def test_variant_arguments_and_a_workdir_in_use(tmp_path):
  r = _launch("--config=configs/msp.py:quick,width=(8,),seeds=1,train.steps=100", f"--workdir={tmp_path / 'b'}")
  assert r.returncode == 0, r.stderr[-3000:]
  assert io.load_workdir(str(tmp_path / "b"))["test_loss"].shape[:3] == (1, 1, 1)
  holder = subprocess.Popen([sys.executable, "-c", (
      f"import sys, time; sys.path.insert(0, {ROOT!r}); from scaling.engine import io\n"
      f"with io.lock({str(tmp_path / 'b')!r}):\n  print('locked', flush=True); time.sleep(600)")],
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    before = sorted(os.listdir(tmp_path / "b"))
    r = _launch("--config=configs/msp.py:quick,width=(8,),seeds=1,train.steps=100", f"--workdir={tmp_path / 'b'}")
    assert r.returncode != 0 and f"in use by another run (pid {holder.pid}" in r.stderr, r.stderr[-2000:]
    assert sorted(os.listdir(tmp_path / "b")) == before
  finally:
    holder.kill()
    holder.wait()
