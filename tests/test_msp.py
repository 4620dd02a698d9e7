"""The MSP sweep on the engine: its axes and arrays, config checks, NaN stops, early stopping (the engine's
kill-and-resume, 4-device and lock contract is in test_engine.py)."""

import json
import os

import jax
import numpy as np
import pytest

from helpers import tiny_config
from scaling.quanta import msp
from scaling.engine import loop
from scaling.engine import io

ARRAYS = ("test_loss_task", "test_acc_task", "test_loss", "test_acc", "train_loss")


def test_sweep_axes_and_workdir_contents(tmp_path):
  c = tiny_config()
  curves = msp.run(c, str(tmp_path / "wd"))
  assert curves.axes["test_loss_task"] == msp.AXES
  assert curves["test_loss_task"].shape == (2, 1, 2, 2, 1, 1, 5, 5)
  np.testing.assert_array_equal(curves.coords["log_step"], [0, 50, 100, 150, 200])
  np.testing.assert_array_equal(curves["params"], [8 * (5 + 12 + 3) + 2, 16 * 20 + 2])
  assert np.isfinite(curves["test_loss"]).all()
  np.testing.assert_allclose(curves["test_loss"][..., 0], np.log(2), atol=0.05)  # chance at init
  loaded = io.load_workdir(str(tmp_path / "wd"))
  for name in ARRAYS:
    np.testing.assert_array_equal(loaded[name], curves[name])
  df = loaded.to_dataframe()
  assert len(df) == 2 * 2 * 2 * 5 and {"width", "seed", "alpha", "log_step", "test_loss"} <= set(df.columns)
  records = io.read_metrics(str(tmp_path / "wd"))
  assert len(records) == 2 * 5
  assert {"step", "time", "steps_per_s", "test_loss_bits", "train_loss_bits"} <= set(records[-1])
  assert json.load(open(tmp_path / "wd" / "config.json"))["sweep"]["width"] == [8, 16]
  assert not [f for f in os.listdir(tmp_path / "wd") if f.startswith(".tmp")]


def test_nan_stops_with_step_and_member_named(tmp_path):
  c = tiny_config(train=dict(optimizer="sgd", checkpoint_every=1), sweep=dict(lr=(1e-3, 1e38), width=(8,)))
  wd = tmp_path / "wd"
  with pytest.raises(FloatingPointError, match=r"step \d+ .*width=8.*member \d+ .*'lr': 1e\+38"):
    msp.run(c, str(wd))
  assert (wd / "config.json").exists()
  assert io.read_metrics(str(wd)), "lines written before the NaN chunk are kept"


def _bad(**sections):
  return lambda: tiny_config(**sections)


@pytest.mark.parametrize("make,match", [
    (_bad(task=dict(k=13)), "exceeds"),
    (_bad(task=dict(n_tasks=300, n=10, k=3)), "distinct subsets"),
    (_bad(sweep=dict(width=(8, 0))), "sweep.width"),
    (_bad(sweep=dict(width=(-4,))), "sweep.width"),
    (_bad(train=dict(batch_size=0)), "batch_size"),
    (_bad(train=dict(steps=0)), "steps"),
    (_bad(train=dict(steps=120)), "multiple of"),
    (_bad(sweep=dict(alpha=(0.4, 0.0))), "alpha"),
    (_bad(sweep=dict(alpha=(-0.5,))), "alpha"),
    (_bad(sweep=dict(D=(0,))), "sweep.D"),
    (_bad(sweep=dict(D=(-3,))), "sweep.D"),
    (_bad(sweep=dict(seeds=0)), "seeds"),
    (_bad(sweep=dict(lr=(0.0,))), "sweep.lr"),
    (_bad(model=dict(activation="swish")), "activation"),
    (_bad(train=dict(optimizer="lion")), "optimizer"),
    (_bad(model=dict(matmul_precision="fp8")), "matmul_precision"),
])
def test_bad_config_raises_before_writing(tmp_path, monkeypatch, make, match):
  compiled = []
  monkeypatch.setattr(loop, "init_program", lambda *a, **k: compiled.append(1))
  with pytest.raises(ValueError, match=match):
    msp.run(make(), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists() and not compiled


def test_unknown_config_key_raises(tmp_path):
  cfg = tiny_config().to_dict()
  cfg["train"]["learning_rate"] = 1e-3
  with pytest.raises(ValueError, match="unknown config keys.*train.learning_rate"):
    msp.run(cfg, str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists()


def test_workdir_with_other_config_is_refused_and_kept(tmp_path):
  wd = tmp_path / "wd"
  msp.run(tiny_config(sweep=dict(width=(8,))), str(wd))
  before = {p: open(os.path.join(wd, p), "rb").read() for p in ("config.json", "metrics.jsonl", "curves.npz")}
  with pytest.raises(ValueError, match=r"different config.*train.steps: 200 -> 400"):
    msp.run(tiny_config(sweep=dict(width=(8,)), train=dict(steps=400)), str(wd))
  for p, data in before.items():
    assert open(os.path.join(wd, p), "rb").read() == data


def test_early_stopping_in_a_sweep(tmp_path):
  """Fixed D=64 (full batch) overfits: members stop, their train loss stays fixed, stop steps are recorded."""
  c = tiny_config(train=dict(steps=3000, log_every=100, stop_early=True, stop_after=500, stop_patience=2),
                  sweep=dict(width=(64,), D=(64,), lr=(1e-2,), alpha=(0.4,)))
  curves = msp.run(c, str(tmp_path / "wd"))
  stop = curves["stop_step"].reshape(-1)
  steps = curves.coords["log_step"]
  assert np.all(stop > 500), f"both seeds overfit and stop: {stop}"
  train_loss = curves["train_loss"].reshape(2, -1)
  for s, row in zip(stop, train_loss):
    after = row[steps >= s]
    np.testing.assert_array_equal(after, after[0])  # frozen params: identical full-batch loss
    assert not np.all(row[steps < s] == row[0])
  test_loss = curves["test_loss"].reshape(2, -1)
  for s, row in zip(stop, test_loss):  # the stop came after 2 consecutive rises of the logged test loss
    i = int(np.nonzero(steps == s)[0][0])
    assert row[i] > row[i - 1] > row[i - 2]
