"""The vision experiment (`scaling.dynamics.vision`): its 1-D ResNet, its one-pass data and its outputs.

The engine contract (resume, bad config, NaN stop, 4 devices = 1, lock) runs in tests/test_engine.py (`_vision`).
"""

import dataclasses
import hashlib
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.dynamics import datasets, vision, vision_data
from scaling.engine import experiment as E
from scaling.engine import io as wd
from scaling.engine import members
from scaling.nn import cnn
from helpers import set_dotted

EPS32 = float(np.finfo(np.float32).eps)


def tiny(**overrides):
  """Two widths (1, 2), 2 seeds, 160 steps of 32 (a 5,120-row pool), 200 held-out samples."""
  c = vision.vision_config()
  c.data.n_test = 200
  c.train.update(batch_size=32, steps=160, log_every=40, warmup_steps=10, lr=1e-2, checkpoint_every=1)
  c.sweep.update(widths=(1, 2), seeds=2)
  c.fig1.update(t_min=20, ntk_points=200, k_range=(2, 20))
  return set_dotted(c, overrides)


def _hashes(x_NxL):
  return [hashlib.sha1(np.ascontiguousarray(r).tobytes()).hexdigest() for r in np.asarray(x_NxL)]


@pytest.mark.parametrize("kernel,stride,n", [(3, 1, 40), (3, 2, 40), (4, 2, 9), (5, 1, 7)])
def test_matmul_conv_equals_lax_conv(kernel, stride, n):
  kx, kw, kb = jax.random.split(jax.random.key(0), 3)
  x = jax.random.normal(kx, (5, n, 6))
  p = {"w": jax.random.normal(kw, (kernel, 6, 7)), "b": jax.random.normal(kb, (7,))}
  ours = cnn._conv(p, x, stride)  # pylint: disable=protected-access
  conv = lambda a, w: jax.lax.conv_general_dilated(a, w, (stride,), "SAME", dimension_numbers=("NWC", "WIO", "NWC"),
                                                   precision=jax.lax.Precision.HIGHEST)
  ref = conv(x, p["w"]) + p["b"][None, None]
  # Each output sums k * C_in = up to 30 products plus a bias in some order: the two orders differ by at most
  # (k * C_in + 1) * eps32 times the sum of the terms' magnitudes.
  bound = (kernel * 6 + 1) * EPS32 * (conv(jnp.abs(x), jnp.abs(p["w"])) + jnp.abs(p["b"])[None, None])
  assert ours.shape == ref.shape
  assert bool(jnp.all(jnp.abs(ours - ref) <= bound))


def test_param_count_and_flops_of_a_hand_counted_net():
  cfg = cnn.CNNConfig(channels=(2, 4), blocks=1, kernel=3, length=8)
  params = cnn.init(jax.random.key(0), 1, cfg)
  assert sum(x.size for x in jax.tree.leaves(params)) == cnn.param_count(1, cfg) == 173, (
      "by hand: stem 3*1*2+2, two convs 3*2*2+2 each, down 3*2*4+4, two convs 3*4*4+4 each, readout 4+1 = 173")
  # multiply-adds by hand: stem 8*3*1*2 = 48, stage 0 2 x 8*3*2*2 = 192, down 4*3*2*4 = 96 (length 8 -> 4),
  # stage 1 2 x 4*3*4*4 = 384, readout 4: 724, x 6 = 4344 training FLOPs.
  assert cnn.flops_per_example(1, cfg) == 4344
  counts = [cnn.param_count(w) for w in (0.5, 1, 2, 4)]
  assert all(b > 3 * a for a, b in zip(counts, counts[1:])), f"~4x per doubling of the channels: {counts}"
  logits = cnn.apply(params, jax.random.normal(jax.random.key(1), (3, 8)))
  assert logits.shape == (3,)


def test_one_pass_never_repeats_a_sample():
  p = E.check(vision.EXPERIMENT, tiny())
  data = vision._make(p.config)  # pylint: disable=protected-access
  n_steps, batch = p.config["train"]["steps"], p.config["train"]["batch_size"]
  assert len(set(_hashes(data.x_pool_NxL))) == n_steps * batch, "the pool holds steps x batch distinct samples"
  spec = p.points[0].spec
  shared = (data.x_pool_NxL, data.s_pool_N, data.x_test_MxL, data.s_test_M)
  keys = members.seed_keys(0, 2, 2)
  orders = {}
  for order in vision.ORDERS:
    s = dataclasses.replace(spec, order=order)
    for seed in range(2):
      _, order_N = vision.EXPERIMENT.init((keys[0][seed], keys[1][seed]), shared, spec=s)
      rows = np.concatenate([np.asarray(vision_data.batch_rows(order_N, jnp.int32(t), batch)) for t in range(n_steps)])
      used = _hashes(data.x_pool_NxL[rows])
      assert len(set(used)) == len(used) == n_steps * batch, f"{order}, seed {seed}: a sample was reused"
      orders[order, seed] = rows
  np.testing.assert_array_equal(orders["shared", 0], np.arange(n_steps * batch))
  np.testing.assert_array_equal(orders["shared", 0], orders["shared", 1])
  assert not np.array_equal(orders["per_seed", 0], orders["per_seed", 1]), "per_seed: each seed its own order"



def test_a_run_trains_on_each_pool_sample_at_most_once(tmp_path, monkeypatch):
  """End to end: a spy on `batch_rows` inside the compiled chunk records every (step, rows) the engine's run uses."""
  seen = []
  real = vision_data.batch_rows

  def spy(order_N, step, batch_size):
    rows = real(order_N, step, batch_size)
    jax.debug.callback(lambda t, r: seen.append((int(t), np.asarray(r))), step, rows)
    return rows
  monkeypatch.setattr(vision_data, "batch_rows", spy)
  # batch 24 and width 1.25: a spec no other test compiles, so the chunk is traced afresh with the spy
  c = tiny(**{"train.batch_size": 24, "train.steps": 80, "sweep.widths": (1.25,)})
  vision.run(c, str(tmp_path / "w"), devices=jax.devices()[:1])
  pool = vision_data.load(str(tmp_path / "w"), 80 * 24, 200)
  by_step = {}
  for t, rows in seen:  # a vmapped callback runs once per member, in member order
    by_step.setdefault(t, []).append(rows)
  assert sorted(by_step) == list(range(80)) and all(len(v) == 2 for v in by_step.values()), "each step once per seed"
  for m in range(2):
    used = _hashes(pool.x_pool_NxL[np.concatenate([by_step[t][m] for t in range(80)])])
    assert len(set(used)) == len(used) == 80 * 24, f"seed {m} trained on a sample twice"
  assert not np.array_equal(by_step[0][0], by_step[0][1]), "data.order per_seed: the seeds' batches differ"

def test_run_learns_writes_the_interface_and_restores_final_params(tmp_path):
  w = str(tmp_path / "w")
  curves = vision.run(tiny(), w, devices=jax.devices()[:1])  # 2 seeds, unpadded (the contract suite runs 4)
  assert curves.axes["test_loss"] == curves.axes["test_error"] == ("width", "seed", "log_step")
  np.testing.assert_array_equal(curves.coords["width"], [1.0, 2.0])
  np.testing.assert_array_equal(curves.coords["log_step"], [0, 40, 80, 120, 160])
  assert curves.axes["n_params"] == curves.axes["flops_per_example"] == ("width",)
  np.testing.assert_array_equal(curves["n_params"], [cnn.param_count(1), cnn.param_count(2)])
  np.testing.assert_array_equal(curves["flops_per_example"], [cnn.flops_per_example(1), cnn.flops_per_example(2)])
  stored = wd.load_workdir(w)
  assert stored.arrays.keys() == curves.arrays.keys()
  # A chance classifier's error on M = 200 held-out samples has mean 1/2 and SD sqrt(1/4 / M) = 0.035: 0.5 - 4 SD
  # = 0.36 is out of its reach; the initial loss is ≈ ln 2 = 0.69 and must have fallen.
  err = curves["test_error"][:, :, -1]
  assert np.all(err < 0.5 - 4 * np.sqrt(0.25 / 200)), err
  assert np.all(curves["test_loss"][:, :, -1] < curves["test_loss"][:, :, 0]), curves["test_loss"]
  # The held-out set of the workdir is the config's, disjoint from the training pool.
  x, s = vision.heldout(w)
  x2, s2 = vision.heldout(tiny())
  np.testing.assert_array_equal(x, x2)
  np.testing.assert_array_equal(s, s2)
  assert set(np.unique(s)) == {-1.0, 1.0}
  pool = vision_data.load(w, 160 * 32, 200)
  assert not set(_hashes(x)) & set(_hashes(pool.x_pool_NxL)), "a held-out sample is in the training pool"
  # final_params reproduce the final logged test loss: the same function of the same arrays, evaluated outside the
  # vmapped program; XLA may fuse the M = 200-term mean and the forward sums differently, a few ulp of relative
  # rounding per reduction (log2(200) ≈ 8 for the mean, ≈ 5 for the k * C = 48-term convs, x depth 6): < 1e-5.
  for i in range(2):
    for seed in range(2):
      params = vision.final_params(w, i, seed)
      loss = float(jnp.mean(cnn.bce(cnn.apply(params, jnp.asarray(x)), jnp.asarray(s))))
      np.testing.assert_allclose(loss, curves["test_loss"][i, seed, -1], rtol=1e-5)


@pytest.mark.parametrize("overrides,field", [
    ({"sweep.widths": ()}, "sweep.widths"),
    ({"sweep.widths": (1, 1)}, "sweep.widths"),
    ({"sweep.widths": (1, 1.01)}, "sweep.widths"),  # round(8 x 1.01) = 8 channels: the same parameter count
    ({"sweep.widths": (2, 1)}, "sweep.widths"),
    ({"sweep.widths": (0, 1)}, "sweep.widths"),
    ({"sweep.seeds": 0}, "sweep.seeds"),
    ({"train.batch_size": 0}, "train.batch_size"),
    ({"train.steps": 100}, "train.steps"),  # not a multiple of log_every = 40
    ({"train.lr": -1.0}, "train.lr"),
    ({"data.n_test": 0}, "data.n_test"),
    ({"data.order": "random"}, "data.order"),
    ({"model.channels": ()}, "model.channels"),
    ({"model.blocks": 0}, "model.blocks"),
])
def test_bad_input_names_the_field_and_writes_nothing(tmp_path, overrides, field):
  with pytest.raises(ValueError, match=re.escape(field)):
    vision.run(tiny(**overrides), str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_a_dataset_too_small_for_one_pass_is_refused(tmp_path, monkeypatch):
  def load_arrays(name, split, *, data_dir=None, max_examples=None):
    return np.zeros((1000, 40), np.float32), np.arange(1000) % 10  # a prepared dataset of 1,000 examples
  monkeypatch.setattr(datasets, "load_arrays", load_arrays)
  with pytest.raises(ValueError, match=r"1000 examples, fewer than train.steps x train.batch_size = 5120"):
    vision.run(tiny(**{"data.source": "fake"}), str(tmp_path / "w"))
  assert os.listdir(tmp_path / "w") == [wd.LOCK], "only the lock: nothing written"


def test_an_unprepared_tfds_dataset_names_the_builder(tmp_path):
  with pytest.raises(datasets.DatasetNotPreparedError, match=r"'mnist'.*never downloads"):
    vision.run(tiny(**{"data.source": "mnist", "data.data_dir": str(tmp_path / "tfds")}), str(tmp_path / "w"))
  assert os.listdir(tmp_path / "w") == [wd.LOCK]
