"""MLP: PyTorch-default init, parameter counts, one-hot lookup == dense matmul, padded (masked) widths."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
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


# Widths on the member axis: params stored at padded width W, true width w traced per member.

PAD_W = 12
EPS32 = float(np.finfo(np.float32).eps)


def _narrow(params, w):
  """The first w hidden units of padded params (rows fed by and columns/biases of hidden units)."""
  last = len(params) - 1
  return [{"w": l["w"][(slice(None) if i == 0 else slice(w)), (slice(w) if i < last else slice(None))],
           "b": l["b"][:w] if i < last else l["b"]} for i, l in enumerate(params)]


def _masked(params, w):
  """Every masked entry of padded params, flattened (empty when w == W)."""
  last, out = len(params) - 1, []
  for i, l in enumerate(params):
    wt = np.asarray(l["w"])
    rows = np.arange(wt.shape[0]) >= w if i > 0 else np.zeros(wt.shape[0], bool)
    cols = np.arange(wt.shape[1]) >= w if i < last else np.zeros(wt.shape[1], bool)
    out += [wt[rows[:, None] | cols[None, :]], np.asarray(l["b"])[cols]]
  return np.concatenate(out)


def _stacked_init(spec, widths):
  """Padded init of one member per width in a single vmapped program (width traced, as in the engine)."""
  keys = jnp.stack([jax.random.key(7)] * len(widths))
  return jax.vmap(lambda k, w: mlp.init(k, spec, w))(keys, jnp.asarray(widths, jnp.int32))


@pytest.mark.parametrize("depth", [2, 3])
def test_padded_init_equals_narrow_init(depth):
  spec = mlp.MLPSpec(10, PAD_W, depth=depth)
  widths = [1, 5, 12]
  traced = _stacked_init(spec, widths)
  for m, w in enumerate(widths):
    narrow = mlp.init(jax.random.key(7), mlp.MLPSpec(10, w, depth=depth))
    for padded in (mlp.init(jax.random.key(7), spec, w), jax.tree.map(lambda a, m=m: a[m], traced)):
      for a, b in zip(jax.tree.leaves(_narrow(padded, w)), jax.tree.leaves(narrow)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise: per-unit keys, prefix-stable draws
      masked = _masked(padded, w)
      n_masked = mlp.param_count(spec) - mlp.param_count(dataclasses.replace(spec, width=w))
      assert masked.size == n_masked
      np.testing.assert_array_equal(masked, 0.0)


def test_init_keys_are_per_unit():
  """Output unit j of layer i draws its column and bias from split(fold_in(fold_in(key, i), j)), as documented."""
  spec = mlp.MLPSpec(10, 6, depth=3)
  params = mlp.init(jax.random.key(7), spec)
  for i, j, fan_in in ((0, 4, 10), (1, 2, 6), (2, 1, 6)):
    kw, kb = jax.random.split(jax.random.fold_in(jax.random.fold_in(jax.random.key(7), i), j))
    bound = 1 / jnp.sqrt(jnp.float32(fan_in))
    np.testing.assert_array_equal(params[i]["w"][:, j], jax.random.uniform(kw, (fan_in,), jnp.float32, -bound, bound))
    np.testing.assert_array_equal(params[i]["b"][j], jax.random.uniform(kb, (), jnp.float32, -bound, bound))


def _forward_bound(narrow, x_BxI, activation):
  """Elementwise bound on |float32 logits - exact logits| of the narrow net (float64 numpy).

  Each Linear layer adds a float32 dot of K = fan_in + 1 terms (bias included), error <= K·eps·Σ|terms| (Higham's
  γ_K with eps = 2^-23, twice the unit roundoff, as margin); the previous layer's error passes through the
  activation (Lipschitz <= 1 for relu, sigmoid, tanh) and |W|. Padded and narrow nets each err by at most this.
  """
  act = mlp.ACTIVATIONS[activation]
  a, err = np.asarray(x_BxI, np.float64), np.zeros((x_BxI.shape[0], 1))
  for i, l in enumerate(narrow):
    w, b = np.asarray(l["w"], np.float64), np.asarray(l["b"], np.float64)
    err = (w.shape[0] + 1) * EPS32 * (np.abs(a) @ np.abs(w) + np.abs(b)) + (err @ np.abs(w) if i else 0.0)
    a = np.asarray(act(jnp.asarray(a @ w + b, jnp.float32)), np.float64)
  return err


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("activation", ["relu", "sigmoid"])
def test_padded_forward_equals_narrow(depth, activation):
  spec = task_lib.MSPSpec(n_tasks=5, n=12, k=3)
  net = mlp.MLPSpec(spec.input_dim, PAD_W, depth=depth)
  widths = [1, 5, 12]
  padded = _stacked_init(net, widths)
  masked = activation not in mlp.ZERO_AT_ZERO
  if masked:  # junk in every masked entry: the activation mask alone must cut masked units off (sigmoid(0) = 0.5)
    junk = jax.tree.map(lambda a: jax.random.normal(jax.random.key(3), a.shape), padded)
    padded = [{k: jnp.where(l[k] == 0, jk[k], l[k]) for k in l} for l, jk in zip(padded, junk)]
  subsets = jnp.asarray(task_lib.make_subsets(5, 12, 3, 0))
  b = task_lib.online_batch(jax.random.key(1), spec, task_lib.task_probs(spec, 0.4), subsets, 128)
  x = task_lib.to_inputs(b.task_B, b.bits_BxN, 5)
  ws = jnp.asarray(widths, jnp.int32)
  dense = jax.vmap(lambda p, w: mlp.apply(p, x, activation, w))(padded, ws)
  lookup = jax.vmap(lambda p, w: mlp.apply_lookup(p, b.task_B, b.bits_BxN, activation, w))(padded, ws)
  for m, w in enumerate(widths):
    narrow = mlp.init(jax.random.key(7), mlp.MLPSpec(spec.input_dim, w, depth=depth))
    want = np.asarray(mlp.apply(narrow, x, activation))
    # Measured on CPU: <= 1.2e-7, <= 6% of tol (XLA sums K = W and K = w terms in other orders); dense is exact at w = W.
    tol = 2 * _forward_bound(narrow, x, activation)
    for got in (dense[m], lookup[m]):
      assert np.all(np.abs(np.asarray(got) - want) <= tol), (w, np.abs(np.asarray(got) - want).max(), tol.min())
    if masked and w < PAD_W:  # without the mask the junk leaks in
      leak = np.asarray(mlp.apply(jax.tree.map(lambda a, m=m: a[m], padded), x, activation))
      assert np.abs(leak - want).max() > 1e-2


def _train(params, x_BxI, y_B, activation, width, opt, n_steps):
  def loss(p):
    return optax.softmax_cross_entropy_with_integer_labels(mlp.apply(p, x_BxI, activation, width), y_B).mean()
  state = opt.init(params)
  for _ in range(n_steps):
    g = jax.grad(loss)(params)
    updates, state = opt.update(g, state, params)
    params = optax.apply_updates(params, updates)
  return params, g


@pytest.mark.parametrize("depth", [2, 3])
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])  # unmasked (act'(0) = 0 and 1) and masked
@pytest.mark.parametrize("opt_name", ["adam", "adamw"])
def test_padded_training_equals_narrow(depth, activation, opt_name):
  lr, n_steps = 1e-2, 5
  opt = optax.adam(lr) if opt_name == "adam" else optax.adamw(lr, weight_decay=0.1)
  x = jax.random.normal(jax.random.key(1), (128, 10))
  y = jax.random.bernoulli(jax.random.key(2), 0.5, (128,)).astype(jnp.int32)
  net = mlp.MLPSpec(10, PAD_W, depth=depth)
  for w in (1, 5):
    padded = mlp.init(jax.random.key(7), net, w)
    train = jax.jit(lambda p, wid: _train(p, x, y, activation, wid, opt, n_steps))
    grads0 = jax.jit(jax.grad(lambda p, wid: optax.softmax_cross_entropy_with_integer_labels(
        mlp.apply(p, x, activation, wid), y).mean()))(padded, jnp.int32(w))
    np.testing.assert_array_equal(_masked(grads0, w), 0.0)
    trained, last_grads = train(padded, jnp.int32(w))
    np.testing.assert_array_equal(_masked(last_grads, w), 0.0)
    np.testing.assert_array_equal(_masked(trained, w), 0.0)  # Adam: 0/(0+eps) = 0; AdamW: + wd·0 = 0
    narrow, _ = jax.jit(lambda p: _train(p, x, y, activation, None, opt, n_steps))(
        mlp.init(jax.random.key(7), mlp.MLPSpec(10, w, depth=depth)))
    # Adam is scale-invariant: a relative gradient error δ moves an update by <= ~2δ·lr (|m̂/√v̂| <= ~1 in the first
    # steps). Float32 sums over B = 128 examples and K <= 13 terms give δ ~ (B + K)·eps ~ 2e-5 for well-conditioned
    # entries; δ = 1e-3 leaves a 50x margin for cancellation in small gradients, so tol = steps·2·lr·δ = 1e-4.
    # Measured on CPU: <= 1.2e-7 (a few ulp of the parameters).
    for a, b in zip(jax.tree.leaves(_narrow(trained, w)), jax.tree.leaves(narrow)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=n_steps * 2 * lr * 1e-3)


def test_output_bound_follows_true_width():
  """Output weights are U(±1/sqrt(w)) for the true width w, not the padded W (traced width, vmapped members)."""
  net = mlp.MLPSpec(10, 400)
  for w, n_keys in ((4, 64), (400, 1)):  # >= 512 output weights per width: P(max < 0.9·bound) = 0.9^512 < 1e-23
    keys = jax.random.split(jax.random.key(0), n_keys)
    params = jax.vmap(lambda k, w=w: mlp.init(k, net, w))(keys, jnp.full((n_keys,), w, jnp.int32))
    w_out = np.asarray(params[1]["w"])[:, :w]
    bound = 1 / np.sqrt(w)
    assert np.abs(w_out).max() <= bound
    assert np.abs(w_out).max() > 0.9 * bound
    np.testing.assert_array_equal(np.asarray(params[1]["w"])[:, w:], 0.0)
