"""MLP: PyTorch-default init, parameter counts, one-hot lookup == dense matmul."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scaling.nn import mlp
from scaling.quanta import task as task_lib


@pytest.mark.parametrize("width,expected", [(500, 301_502), (9, 5_429), (300, 180_902)])
def test_param_count_paper(width, expected):
  spec = mlp.MLPSpec(in_dim=600, width=width)
  assert mlp.param_count(spec) == expected == width * (500 + 100 + 3) + 2
  params = mlp.init(jax.random.key(0), spec)
  assert sum(x.size for x in jax.tree.leaves(params)) == expected


def test_pytorch_uniform_init():
  spec = mlp.MLPSpec(in_dim=600, width=400)
  params = mlp.init(jax.random.key(0), spec)
  for layer, fan_in in zip(params, (600, 400)):
    bound = 1 / np.sqrt(fan_in)
    for name in ("w", "b"):
      a = np.asarray(layer[name])
      assert np.abs(a).max() <= bound
      if a.size >= 400:  # spread uniformly over the whole interval, not a normal init
        assert np.abs(a).max() > 0.95 * bound
        np.testing.assert_allclose(a.std(), bound / np.sqrt(3), rtol=0.15)


@pytest.mark.parametrize("depth,activation", [(2, "relu"), (3, "tanh"), (4, "gelu")])
def test_lookup_equals_dense(depth, activation):
  spec = task_lib.MSPSpec(n_tasks=50, n=20, k=3)
  net = mlp.MLPSpec(spec.input_dim, 64, depth=depth, activation=activation)
  params = mlp.init(jax.random.key(0), net)
  subsets = jnp.asarray(task_lib.make_subsets(50, 20, 3, 0))
  b = task_lib.online_batch(jax.random.key(1), spec, task_lib.task_probs(spec, 0.4), subsets, 256)
  dense = mlp.apply(params, task_lib.to_inputs(b.task_B, b.bits_BxN, 50), activation)
  lookup = mlp.apply_lookup(params, b.task_B, b.bits_BxN, activation)
  assert dense.shape == (256, 2)
  np.testing.assert_allclose(np.asarray(lookup), np.asarray(dense), rtol=1e-5, atol=1e-6)


def test_depth_counts_linear_layers():
  assert mlp.MLPSpec(in_dim=10, width=8, depth=2).sizes == [10, 8, 2]
  assert len(mlp.init(jax.random.key(0), mlp.MLPSpec(in_dim=10, width=8, depth=3))) == 3
  with pytest.raises(ValueError, match="activation"):
    mlp.check_spec(mlp.MLPSpec(10, 8, activation="swish"))
