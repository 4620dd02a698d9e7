"""The addition toy's training-set sizes on the member axis: one program (sizes padded to their bucket's largest
training set, members frozen after their own steps) equals one program per size; the per-size run's numbers; packing.

Tolerance of one program against per-size programs. The one program pads size 16 to the 32-row buffer, runs 40 steps
(size 32's members frozen after their 20) and vmaps 4 members instead of 2: the padded rows add exact zeros, so only the
order of float32 sums changes: a reordered sum of k terms differs by ~log2(k) ulp, and the longest (a weight gradient
over 32 problems x 12 positions, the test CE over 100 x 5 digits) give ~9 ulp ≈ 1e-6 relative. Adam turns a gradient
perturbation of relative size 1e-6 into a parameter change <= lr x 1e-6 = 1e-9 per step (normalised updates), <= 4e-8
after 40 steps, which moves a CE by <= ||grad CE||_1 x 4e-8 <= sqrt(P = 9.6k) x ||grad CE||_2 (<= 4) x 4e-8 ≈ 1.6e-5
nats (the key bias, whose gradient is pure rounding noise, moves by more but shifts all scores of a query equally: the
CE does not see it). With the CE's own ~1e-6 x 2.3 nats: atol 2e-5 nats (measured: 2.3e-6). Accuracies (0 here) may flip
at a tie: one problem of the smallest set.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import addition as addition_configs
from scaling.bnsl import addition
from scaling.bnsl import addition_task as task
from scaling.bnsl import addition_train as train_lib
from scaling.engine import io
from scaling.engine import programs as programs_lib
from scaling.nn import transformer as lm
from test_addition import ARRAYS, EXP, tiny_config

CE_ATOL = 2e-5  # nats: see the module docstring


def test_padding_rows_add_nothing_to_the_loss_and_gradients():
  """The first n of N rows weighted: the loss, accuracy and gradients of the n real problems alone (to float32 sums:
  the padded sums add exact zeros in a possibly different order, ~log2(N) ulp)."""
  spec = addition.plan(tiny_config()).points[0].spec
  params = jax.jit(lm.init, static_argnums=1)(jax.random.key(0), spec.model)  # one compile, not one per op
  data = task.make_data(np.arange(24) * 1_999_993, 4)
  padded = task.Data(*(np.concatenate([a, np.zeros((8, a.shape[1]), a.dtype)]) for a in data))
  grad = jax.jit(jax.value_and_grad(lambda p, d, n: train_lib.loss_fn(p, d, spec, n), has_aux=True))
  (ce, acc), g = grad(params, padded, jnp.int32(24))
  (want_ce, want_acc), want_g = grad(params, data, None)
  np.testing.assert_allclose(ce, want_ce, rtol=1e-6)
  assert float(acc) == float(want_acc)
  for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(want_g)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def _sizes_config(one_program):
  """Sizes 16 and 32 with 40 and 20 steps; in one program a single bucket (useful / executed FLOPs 0.5)."""
  return tiny_config(train=dict(data_steps=(640,)), sweep=dict(one_program=one_program, efficiency=0.5))


@pytest.fixture(scope="module")
def per_size(tmp_path_factory):
  """The sizes of `_sizes_config` run one program per size: (curves, workdir)."""
  wd = tmp_path_factory.mktemp("per_size") / "wd"
  return addition.run(_sizes_config(False), str(wd)), wd


def test_curves_summary_and_per_size_steps(per_size):
  curves, wd = per_size
  assert curves.axes["test_ce"] == addition.AXES == ("train_size", "seed", "log_step")
  assert curves["test_ce"].shape == (2, 2, 5)
  np.testing.assert_array_equal(curves["steps"], [40, 20])
  np.testing.assert_array_equal(curves.coords["log_step"], [0, 10, 20, 30, 40])
  assert np.isfinite(curves["test_ce"][0]).all() and np.isfinite(curves["test_ce"][1, :, :3]).all()
  assert np.isnan(curves["test_ce"][1, :, 3:]).all(), "NaN past the last step of a size"
  np.testing.assert_array_equal(curves["final_test_ce"][1], curves["test_ce"][1, :, 2])
  np.testing.assert_array_equal(curves["min_test_ce"][0], curves["test_ce"][0].min(axis=-1))
  # The toy's own minGPT port (before the shared transformer) gave these; the transformer computes the same logits
  # up to float32 rounding, which 40 Adam steps at lr 1e-3 amplify to ~4e-5 relative (measured), so rtol 1e-3.
  np.testing.assert_allclose(curves["final_test_ce"], [[2.258499, 2.2338343], [2.1907907, 2.190671]], rtol=1e-3,
                             err_msg="the addition toy's numbers changed (task, model, init or optimiser)")
  np.testing.assert_allclose(curves["final_train_ce"], [[1.3748631, 1.2515385], [1.8708951, 1.8360039]], rtol=1e-3)
  s = addition.summary(curves)
  np.testing.assert_allclose(s["final_test_acc"], curves["final_test_acc"].mean(axis=1))
  assert "train_size" in addition.summary_table(curves)
  loaded = io.load_workdir(str(wd))
  for name in ARRAYS:
    np.testing.assert_array_equal(loaded[name], curves[name])
  records = io.read_metrics(str(wd))
  assert [(r["train_size"], r["step"]) for r in records] == [(16, s) for s in range(0, 41, 10)] + [
      (32, s) for s in range(0, 21, 10)]
  assert {"test_ce", "test_ce_min", "test_ce_max", "test_acc", "train_ce", "train_acc", "chunk_loss",
          "chunk_grad_norm"} <= set(records[0])
  assert json.load(open(wd / "config.json"))["sweep"]["train_size"] == [16, 32]
  assert not [f for f in os.listdir(wd) if f.startswith(".tmp")]




def test_sizes_in_one_program_equal_per_size_programs(per_size, tmp_path, caplog):
  per, per_wd = per_size
  with caplog.at_level("INFO"):
    one = addition.run(_sizes_config(True), str(tmp_path / "one"))
  assert any("compiles 1 program(s) of 1 bucket(s)" in m for m in caplog.messages), caplog.messages
  assert set(one.arrays) == set(per.arrays)
  for name in one.arrays:
    assert one.axes[name] == per.axes[name] and one[name].shape == per[name].shape, name
    atol = CE_ATOL if name.endswith("_ce") else 1 / 16 + 1e-6 if name.endswith("_acc") else 0
    np.testing.assert_allclose(one[name], per[name], rtol=0, atol=atol, err_msg=name)  # NaN where per is NaN
  assert np.isfinite(one["test_ce"][1, :, :3]).all() and np.isnan(one["test_ce"][1, :, 3:]).all(), \
      "size 32 stops at its 20 steps: NaN past them"
  np.testing.assert_array_equal(one["final_test_ce"][1], one["test_ce"][1, :, 2])
  lines = lambda wd: {(r["point"], r["step"]): sorted(r) for r in io.read_metrics(str(wd))}
  assert lines(tmp_path / "one") == lines(per_wd), "the same metrics lines, fields included"
  for name in ("n16.npz", "n32.npz"):
    a, b = np.load(tmp_path / "one" / "points" / name), np.load(per_wd / "points" / name)
    assert {k: a[k].shape for k in a.files} == {k: b[k].shape for k in b.files} and bool(a["complete"]), name
  assert sorted(os.listdir(tmp_path / "one" / "checkpoints")) == ["program"]


def test_sizes_pack_into_buckets_of_any_steps_and_programs_of_equal_steps():
  """The paper's 17 sizes (4,064 steps at 160 down to 1,312 at 576, up to 3,024 at 928): buckets mix steps and bound
  the useful / executed FLOPs (a step's FLOPs x steps) by `sweep.efficiency`; only buckets of equal (longest) steps
  share a program."""
  c = addition_configs.get_config("paper")
  c.sweep.max_memory_gb = 1e3  # no split, whatever this host's memory
  plan = addition.plan(c)
  progs, summary = programs_lib.plan_programs(EXP, plan, jax.devices()[:1])
  assert summary["efficiency"] >= plan.efficiency
  assert sum(len(p.points) for p in progs) == 17
  assert any(len({pt.steps for pt in b.points}) > 1 for p in progs for b in p.buckets), "a bucket mixes steps"
  for p in progs:
    assert len({b.steps for b in p.buckets}) == 1, p.name
    for b in p.buckets:
      assert b.spec.train_size == max(pt.coords["train_size"] for pt in b.points)
  spec = plan.points[-1].spec
  assert EXP.memory(plan, spec) * plan.grid.size == pytest.approx(
      addition.train_memory_gb(spec.model, plan.grid.size, 928) * 1e9)
  assert EXP.cost(plan, spec) == pytest.approx(EXP.cost(plan, plan.points[0].spec) * 928 / 160)
  c.sweep.one_program = False
  assert len(programs_lib.plan_programs(EXP, addition.plan(c), jax.devices()[:1])[0]) == 17
