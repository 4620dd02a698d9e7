"""Widths and D on the member axis: a packed MSP sweep (one compiled program) equals its per-shape programs.

Tolerances. A packed member computes the same sums as its per-shape program plus exact zeros from masked units, but
XLA may order a dot product's terms differently for a padded length (SIMD lanes, blocking), so each forward and
backward differs by rounding: relative ~ K·eps_f32 for a K-term sum (K <= 100 inputs or 16 hidden units here,
eps_f32 = 1.19e-7, so ~1e-5 per step at worst). Adam normalises updates, so a relative perturbation of a gradient
moves a parameter by about lr·(that perturbation) per step; over T = 100 steps at lr = 1e-3 the parameters move by
< T·lr·1e-5 = 1e-6 relative to their O(1) size, and the losses (Lipschitz in the parameters with constant ~1 at
these sizes) by the same order. The tests use atol 2e-5 nats on losses (20x that estimate) and check the masked
units exactly.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from scaling.engine import io
from scaling.engine import loop
from scaling.nn import mlp
from scaling.quanta import msp, msp_train
from scaling.quanta import task as task_lib

ATOL = 2e-5  # nats: see the module docstring
LOSSES = ("test_loss_task", "test_loss", "train_loss")


def _config(**sweep):
  c = tiny_config(sweep=dict(alpha=(0.4,), **sweep))
  c.train.update(steps=100, log_every=50)
  return c


def _compare(a, b):
  for k in LOSSES:
    np.testing.assert_allclose(a[k], b[k], rtol=0, atol=ATOL, err_msg=k)
  np.testing.assert_allclose(a["test_acc_task"], b["test_acc_task"], rtol=0, atol=2 / 64 + 1e-9,
                             err_msg="accuracy: at most 2 of 64 evaluation samples may flip at a tie-level margin")


def test_widths_in_one_program_equal_per_shape_programs(tmp_path, caplog):
  """Widths 1 .. 16 (the narrowest possible and the widest) padded into one bucket of width 16."""
  c = _config(width=(1, 5, 16), efficiency=0.3)
  with caplog.at_level("INFO"):
    one = msp.run(c, str(tmp_path / "one"))
  assert any("compiles 1 program(s) of 1 bucket(s)" in m for m in caplog.messages), caplog.messages
  per = msp.run(_config(width=(1, 5, 16), one_program=False), str(tmp_path / "per"))
  _compare(one, per)
  assert sorted(p.name for p in (tmp_path / "one" / "points").iterdir()) == \
      sorted(p.name for p in (tmp_path / "per" / "points").iterdir()), "same workdir layout in both modes"
  assert (tmp_path / "one" / "checkpoints" / "program").is_dir()


def test_dataset_sizes_in_one_program_equal_per_d_programs(tmp_path):
  """D = 30 (full batch), 100 and 300 (minibatches of 128 and partial last ones) in one bucket of D = 300."""
  c = _config(width=(8,), D=(30, 100, 300), efficiency=0.5)
  plan = msp.plan(c)
  assert plan.one_program
  one = msp.run(c, str(tmp_path / "one"))
  per = msp.run(_config(width=(8,), D=(30, 100, 300), efficiency=0.5, one_program=False), str(tmp_path / "per"))
  _compare(one, per)
  assert (one["train_loss"][..., -1] < one["test_loss"][..., -1]).all(), "fixed-D members fit their own data"


def test_masked_units_never_change_and_the_rest_trains_as_its_own_width():
  """Members of widths 1, 5, 12 in a width-12 spec, adamw with weight decay: every masked weight stays exactly 0."""
  task = task_lib.MSPSpec(5, 12, 3)
  subsets = jnp.asarray(task_lib.make_subsets(5, 12, 3, 0))
  spec = msp_train.Spec(task, mlp.MLPSpec(task.input_dim, 12), batch=64, eval_per_task=32, optimizer="adamw")
  widths = np.array([1, 5, 12], np.int32)
  keys = jax.random.split(jax.random.key(0), 3)
  f32 = lambda v: jnp.full((3,), v, jnp.float32)
  inputs = (keys, f32(0.4), f32(3e-3), f32(0.1), jnp.broadcast_to(subsets, (3,) + subsets.shape), widths,
            np.full(3, -1, np.int32))
  states, members = loop.init_members(inputs, None, exp=msp.EXPERIMENT, spec=spec)
  states, _, _, _ = loop.run_chunk(states, members, None, jnp.int32(0), exp=msp.EXPERIMENT, spec=spec, n_steps=30)
  w0, b0, w1 = (np.asarray(states["params"][0]["w"]), np.asarray(states["params"][0]["b"]),
                np.asarray(states["params"][1]["w"]))
  for i, w in enumerate(widths):
    assert not w0[i][:, w:].any() and not b0[i][w:].any() and not w1[i][w:].any(), f"width {w}: masked units moved"
    assert np.abs(w0[i][:, :w]).min() > 0, "live units train"
  for i, w in enumerate(widths[:2]):  # the narrow members against their own width's program
    narrow = msp_train.Spec(task, mlp.MLPSpec(task.input_dim, int(w)), batch=64, eval_per_task=32,
                            optimizer="adamw")
    one = jax.tree.map(lambda x, i=i: x[i:i + 1], inputs[:5])
    st, _ = loop.init_members(one, None, exp=msp.EXPERIMENT, spec=narrow)
    st, _, _, _ = loop.run_chunk(st, _, None, jnp.int32(0), exp=msp.EXPERIMENT, spec=narrow, n_steps=30)
    np.testing.assert_allclose(np.asarray(st["params"][0]["w"])[0], w0[i][:, :w], rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(st["params"][1]["w"])[0], w1[i][:w], rtol=0, atol=1e-5)


def test_memory_split_gives_the_arrays_of_one_program(tmp_path, caplog):
  c = _config(width=(4, 8, 16), efficiency=0.99)  # three buckets
  one = msp.run(c, str(tmp_path / "one"))
  plan = msp.plan(c)
  widest = msp.EXPERIMENT.memory(plan, plan.points[-1].spec) * plan.grid.size  # the largest bucket's bytes
  with caplog.at_level("INFO"):
    split = msp.run(_config(width=(4, 8, 16), efficiency=0.99, max_memory_gb=1.01 * widest / 1e9),
                    str(tmp_path / "split"))
  said = [m for m in caplog.messages if "does not fit one program" in m]
  assert said and int(re.search(r"compiles (\d+) program", said[0]).group(1)) >= 2, caplog.messages
  for k in one.arrays:
    np.testing.assert_allclose(one[k], split[k], rtol=0, atol=ATOL, err_msg=k)


def test_a_sweep_resumes_only_in_its_mode(tmp_path):
  c = _config(width=(4, 8))
  msp.run(c, str(tmp_path / "wd"))
  before = open(tmp_path / "wd" / "metrics.jsonl").read()
  with pytest.raises(ValueError, match="sweep.one_program.*mode it was started in"):
    msp.run(_config(width=(4, 8), one_program=False), str(tmp_path / "wd"))
  assert open(tmp_path / "wd" / "metrics.jsonl").read() == before
  assert io.load_workdir(str(tmp_path / "wd"))["test_loss"].shape[0] == 2
