"""The train step, vmapped members and fixed-D mode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.engine import loop
from scaling.nn import mlp
from scaling.quanta import msp, msp_train
from scaling.quanta import task as task_lib

TASK = task_lib.MSPSpec(5, 12, 3)
SUBSETS = jnp.asarray(task_lib.make_subsets(5, 12, 3, 0))


def _spec(**kw):
  return msp_train.Spec(TASK, mlp.MLPSpec(TASK.input_dim, kw.pop("width", 16)), **{"batch": 64, "eval_per_task": 32,
                                                                                 **kw})


def test_train_step_golden_values():
  spec = _spec()
  member = msp_train.make_member(jax.random.key(0), 0.4, 1e-3, 0.0, SUBSETS, spec=spec)
  state = msp_train.init_state(member, spec=spec)
  batch = msp_train.get_batch(member, jnp.int32(0), spec)
  new, metrics = msp_train.jit_train_step(state, batch, member, spec=spec)
  msg = ("train_step changed numerically: init, sampling (keys, inverse CDF, packed bits), loss or Adam changed. "
         "If intended, update these golden values and say why in the commit.")
  # Golden values last updated when mlp.init became per-unit (fold_in(fold_in(key, layer), unit)) for padded widths.
  np.testing.assert_allclose(float(metrics["loss"]), 0.6992338, rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(float(metrics["grad_norm"]), 0.2908139, rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(float(metrics["param_norm"]), 2.5081639, rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(np.asarray(new["params"][1]["b"]), [-0.01918537, 0.02418799], rtol=1e-5, err_msg=msg)
  assert int(new["opt"][0].count) == 1


def _init(spec, seeds, alphas, lrs):
  """(states, members) through the engine's vmapped init of the MSP experiment."""
  keys = jax.random.split(jax.random.key(0), max(seeds) + 1)[np.asarray(seeds)]
  f32 = lambda v: jnp.asarray(v, jnp.float32)
  subsets = jnp.broadcast_to(SUBSETS, (len(seeds),) + SUBSETS.shape)
  inputs = (keys, f32(alphas), f32(lrs), f32([0.0] * len(seeds)), subsets)
  return loop.init_members(inputs, None, exp=msp.EXPERIMENT, spec=spec)


def _chunk(states, members, start, spec, n_steps):
  """(states, evals at start, per-step means, first non-finite step) of the engine's vmapped chunk."""
  return loop.run_chunk(states, members, None, jnp.int32(start), exp=msp.EXPERIMENT, spec=spec, n_steps=n_steps)


@pytest.mark.parametrize("D", [-1, 300])
def test_vmapped_members_equal_separate_runs(D):
  spec = _spec(D=D)
  states, members = _init(spec, [0, 1, 0], [0.4, 0.4, 0.9], [1e-3, 3e-3, 1e-3])
  states, ev, _, _ = _chunk(states, members, 0, spec, 30)
  for i in range(3):
    st, one = _init(spec, [[0, 1, 0][i]], [[0.4, 0.4, 0.9][i]], [[1e-3, 3e-3, 1e-3][i]])
    st, ev1, _, _ = _chunk(st, one, 0, spec, 30)
    for a, b in zip(jax.tree.leaves(st["params"]), jax.tree.leaves(states["params"])):
      np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[i]), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ev1["test_loss_task"][0], ev["test_loss_task"][i], rtol=1e-5)


def test_common_random_numbers_across_alpha():
  """Members that differ only in α share init and eval bits (same seed key)."""
  spec = _spec()
  states, _ = _init(spec, [0, 0], [0.4, 0.9], [1e-3, 1e-3])
  for leaf in jax.tree.leaves(states["params"]):
    np.testing.assert_array_equal(np.asarray(leaf[0]), np.asarray(leaf[1]))


def test_fixed_d_minibatches_overfit():
  """D=300 with batch 64: 5 minibatches per epoch (last partial); train loss falls below test loss."""
  spec = _spec(D=300, width=64)
  states, members = _init(spec, [0], [0.4], [3e-3])
  assert set(states) == {"params", "opt"}, "the epoch shuffle is a keyed bijection: no permutation in the state"
  states, _, _, _ = _chunk(states, members, 0, spec, 1500)
  ev = loop.run_evaluate(states, members, None, jnp.int32(1500), exp=msp.EXPERIMENT, spec=spec)
  assert float(ev["train_loss"][0]) < 0.05
  assert float(ev["test_loss"][0]) > float(ev["train_loss"][0]) + 0.1


def test_full_batch_when_d_below_batch():
  spec = _spec(D=40)
  _, members = _init(spec, [0], [0.4], [1e-3])
  batch = msp_train.get_batch(jax.tree.map(lambda x: x[0], members), jnp.int32(3), spec)
  assert batch.task_B.shape == (40,)
  np.testing.assert_array_equal(batch.task_B, members.data.task_D[0], err_msg="full batch in natural order")


def test_early_stop_rule_on_hand_made_losses():
  """v5 rule: after step stop_after, stop at the log where the loss has risen at `patience` consecutive logs."""
  spec = _spec(stop_early=True, stop_after=300, stop_patience=3)
  early = {"stopped": jnp.bool_(False), "rises": jnp.int32(0), "prev": jnp.float32(jnp.inf), "stop_step": jnp.int32(-1)}
  losses = [1.0, 0.9, 1.0, 1.1, 1.2, 1.3, 0.5, 0.6, 0.7, 0.8, 0.9]
  stops = []
  for i, loss in enumerate(losses):
    early = msp_train.update_early_stop(early, jnp.float32(loss), jnp.int32(100 * i), spec)
    stops.append(int(early["stop_step"]))
  # rises at logs 2,3,4 (step 400: 3 rises and 400 > 300) -> stops at 400; later rises do not move stop_step
  assert stops[4] == 400 and stops[-1] == 400 and stops[3] == -1
  early = {"stopped": jnp.bool_(False), "rises": jnp.int32(0), "prev": jnp.float32(jnp.inf), "stop_step": jnp.int32(-1)}
  for i, loss in enumerate([1.0, 1.1, 1.2, 1.3]):  # 3 rises by step 300, but not after stop_after
    early = msp_train.update_early_stop(early, jnp.float32(loss), jnp.int32(100 * i), spec)
  assert not bool(early["stopped"])


def test_early_stop_freezes_exactly_the_stopped_members():
  spec = _spec(stop_early=True, stop_after=0, stop_patience=1)
  states, members = _init(spec, [0, 1, 2], [0.4, 0.4, 0.4], [1e-3, 1e-3, 1e-3])
  # Member 1 has just seen a rise (prev below any real loss): it stops at this chunk's first log; 0 and 2 cannot.
  states["early"]["prev"] = jnp.asarray([jnp.inf, -1.0, jnp.inf], jnp.float32)
  before = jax.tree.map(np.asarray, states["params"])
  states, _, _, _ = _chunk(states, members, 100, spec, 20)
  np.testing.assert_array_equal(np.asarray(states["early"]["stopped"]), [False, True, False])
  np.testing.assert_array_equal(np.asarray(states["early"]["stop_step"]), [-1, 100, -1])
  for b, a in zip(jax.tree.leaves(before), jax.tree.leaves(states["params"])):
    np.testing.assert_array_equal(np.asarray(a[1]), b[1])  # frozen
    assert not np.array_equal(np.asarray(a[0]), b[0]) and not np.array_equal(np.asarray(a[2]), b[2])
  assert int(states["opt"][0].count[1]) == 0 and int(states["opt"][0].count[0]) == 20
