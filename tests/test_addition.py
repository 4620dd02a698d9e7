"""The BNSL toy experiment: addition task, the transformer in its minGPT form, full-batch training over dataset sizes.

Sizes on the member axis (one program vs one per size) and the per-size run's numbers: tests/test_addition_program.py.
Kill-and-resume (in one program of sizes with different steps), 4 devices vs 1, NaN stops and bad-config writes are
the engine contract's (tests/test_engine.py).
"""

import math
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import addition as addition_configs
from scaling.bnsl import addition
from scaling.bnsl import addition_task as task
from scaling.bnsl import addition_train as train_lib
from scaling.engine import io, loop
from scaling.nn import transformer as lm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ONE_DEVICE = "--xla_force_host_platform_device_count=1"  # not the 4 simulated devices of tests/conftest.py
ARRAYS = ("test_ce", "test_acc", "train_ce", "train_acc")
EXP = addition.EXPERIMENT
apply = jax.jit(lm.apply, static_argnames=("cfg", "first"))
loss_fn = jax.jit(train_lib.loss_fn, static_argnames="spec")


def tiny_config(**sections):
  """A CPU-second-sized run: d_model 32, sizes (16, 32), 2 seeds, 40 steps, 100 test problems."""
  c = addition.addition_config()
  c.task.update(n_test=100)
  c.model.update(d_model=32, n_head=2, d_ff=64)
  c.train.update(steps=40, log_every=10, lr=1e-3, checkpoint_every=1)
  c.sweep.update(train_size=(16, 32), seeds=2)
  for name, values in sections.items():
    c[name].update(values)
  return c


def _spec(p):
  return p.points[0].spec


# --- task


def test_sequences_are_a_b_and_the_sum_most_significant_first():
  idx = np.asarray([1234 * 10**4 + 9876, 5 * 10**4 + 7, 9999 * 10**4 + 9999])
  seq = task.encode(idx, 4)
  np.testing.assert_array_equal(seq[0], [1, 2, 3, 4, 9, 8, 7, 6, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(seq[1], [0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 1, 2])
  np.testing.assert_array_equal(seq[2], [9, 9, 9, 9, 9, 9, 9, 9, 1, 9, 9, 9, 8])
  data = task.make_data(idx, 4)
  assert data.x_NxT.shape == data.y_NxT.shape == (3, 12) and data.x_NxT.dtype == np.int32
  np.testing.assert_array_equal(data.x_NxT, seq[:, :-1])
  np.testing.assert_array_equal(data.y_NxT, seq[:, 1:])


def test_random_problems_decode_to_their_sum_and_the_mask_covers_the_five_output_digits():
  idx = np.random.default_rng(0).integers(0, 10**8, 500)
  a, b = task.problems(idx, 4)
  seq = task.encode(idx, 4)
  as_int = lambda d: (d * 10 ** np.arange(d.shape[1] - 1, -1, -1)).sum(axis=1)
  np.testing.assert_array_equal(as_int(seq[:, :4]), a)
  np.testing.assert_array_equal(as_int(seq[:, 4:8]), b)
  np.testing.assert_array_equal(as_int(seq[:, 8:]), a + b)
  mask = task.loss_mask(4)
  np.testing.assert_array_equal(np.nonzero(mask)[0], [7, 8, 9, 10, 11])
  y = task.make_data(idx, 4).y_NxT
  np.testing.assert_array_equal(y[:, mask], seq[:, 8:])  # the masked-in targets are exactly c's 5 digits


def test_splits_are_disjoint_deterministic_and_nested():
  p = addition.plan(tiny_config(task=dict(n_test=1000), sweep=dict(train_size=(200, 500), seeds=3)))
  test_idx = task.held_out_indices(4, 1000, 1)
  assert len(np.unique(test_idx)) == 1000
  np.testing.assert_array_equal(test_idx, task.held_out_indices(4, 1000, 1))
  assert not np.array_equal(test_idx, task.held_out_indices(4, 1000, 2))
  small, test = addition.datasets(p, 200)
  big, _ = addition.datasets(p, 500)
  np.testing.assert_array_equal(test.x_NxT, task.make_data(test_idx, 4).x_NxT)
  np.testing.assert_array_equal(small.x_NxT, big.x_NxT[:, :200])  # a smaller training set is a prefix
  np.testing.assert_array_equal(small.x_NxT, addition.datasets(p, 200)[0].x_NxT)  # deterministic
  rows = lambda x: {tuple(r) for r in x}
  for s in range(3):
    assert len(rows(big.x_NxT[s])) == 500, "training problems are distinct"
    assert not rows(big.x_NxT[s]) & rows(test.x_NxT), "train and test are disjoint"
  assert not np.array_equal(big.x_NxT[0], big.x_NxT[1]), "each seed has its own training set"


def test_small_problem_sets_use_a_permutation():
  test_idx = task.held_out_indices(1, 20, 0)
  train_idx = task.train_indices(1, 80, [1, 2], test_idx)
  np.testing.assert_array_equal(np.sort(np.concatenate([test_idx, train_idx])), np.arange(100))


# --- model: the shared transformer in its minGPT form


def _params_and_tokens(d_model=128, batch=4):
  cfg = lm.mingpt(10, d_model, 1, 2, 4 * d_model, max_len=12)
  params = lm.init(jax.random.key(0), cfg)
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)  # not at init
  tokens = jax.random.randint(jax.random.key(2), (batch, 12), 0, 10)
  return cfg, params, tokens


def _reference_logits(params, tokens, n_head):
  """minGPT's forward written out in float64 numpy: pre-LN blocks, learned positions, causal attention, erf GELU."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  erf = np.vectorize(math.erf)
  ln = lambda x, q: (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * q["scale"] + q["bias"]
  tokens = np.asarray(tokens)
  B, T = tokens.shape
  x = p["embed"][tokens] + p["pos_embed"][:T]
  for i in range(p["blocks"]["wq"].shape[0]):
    b = jax.tree.map(lambda a: a[i], p["blocks"])
    h = ln(x, b["norm1"])
    heads = lambda y: y.reshape(B, T, n_head, -1).transpose(0, 2, 1, 3)
    q, k, v = (heads(h @ b[f"w{n}"] + b[f"b{n}"]) for n in "qkv")
    att = q @ k.transpose(0, 1, 3, 2) / np.sqrt(q.shape[-1])
    att = np.where(np.tril(np.ones((T, T), bool)), att, -np.inf)
    att = np.exp(att - att.max(-1, keepdims=True))
    y = (att / att.sum(-1, keepdims=True)) @ v
    x = x + y.transpose(0, 2, 1, 3).reshape(B, T, -1) @ b["wo"] + b["bo"]
    u = ln(x, b["norm2"]) @ b["w_up"] + b["b_up"]
    x = x + (0.5 * u * (1 + erf(u / np.sqrt(2)))) @ b["w_down"] + b["b_down"]
  return ln(x, p["final_norm"]) @ p["unembed"]


def test_logits_equal_a_numpy_reference_of_mingpt():
  """The toy's model is the shared transformer's minGPT form: its logits are minGPT's, to float32 rounding. Bound:
  logits are ~3 in size and each passes through 4 chained matmuls of <= 512 terms; float32 dot products carry a relative
  error ~eps32 sqrt(n) (1.2e-7 x 23 ≈ 3e-6), so 2e-5 absolute leaves a margin (measured: 1.8e-6, about the same as the
  difference from the toy's old, separately written minGPT port)."""
  cfg, params, tokens = _params_and_tokens()
  want = _reference_logits(params, tokens, cfg.n_heads)
  with jax.default_matmul_precision("highest"):
    got = np.asarray(apply(params, tokens, cfg))
  np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)


def test_param_count_init_and_decay_mask():
  cfg = lm.mingpt(10, 128, 1, 2, 512, max_len=12)
  params = lm.init(jax.random.key(0), cfg)
  assert lm.count_params(cfg)[0] == 202_624  # minGPT's count for d_model 128, d_ff 512, 1 layer, vocab 10
  assert not np.asarray(params["pos_embed"]).any() and not np.asarray(params["blocks"]["b_up"]).any()
  for name in ("wq", "wo", "w_up", "w_down"):  # minGPT: no 1/sqrt(2L) scaling of the output projections
    np.testing.assert_allclose(np.std(params["blocks"][name]), 0.02, rtol=0.05, err_msg=name)
  mask = lm.linear_weight_mask(params)
  decayed = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(mask) if v]
  assert sorted(decayed) == sorted([f"['blocks']['{m}']" for m in ("wq", "wk", "wv", "wo", "w_up", "w_down")]
                                   + ["['unembed']"]), "minGPT decays exactly the Linear weights"


def test_logits_shape_and_causality():
  cfg, params, tokens = _params_and_tokens()
  logits = apply(params, tokens, cfg)
  assert logits.shape == (4, 12, 10)
  for t in (0, 5, 11):
    changed = tokens.at[:, t].set((tokens[:, t] + 3) % 10)
    other = apply(params, changed, cfg)
    np.testing.assert_allclose(other[:, :t], logits[:, :t], rtol=1e-6, atol=1e-6, err_msg=f"t={t}")
    assert np.abs(np.asarray(other[:, t:] - logits[:, t:])).max() > 1e-3, "later positions see token t"


def test_skipping_positions_before_the_outputs_gives_the_same_logits():
  cfg, params, tokens = _params_and_tokens(d_model=64)
  full = apply(params, tokens, cfg)
  np.testing.assert_allclose(apply(params, tokens, cfg, first=7), full[:, 7:], rtol=1e-5, atol=1e-5)
  cfg2 = lm.mingpt(10, 16, 2, 2, 32, max_len=12)  # two layers: only the last one skips positions
  p2 = lm.init(jax.random.key(3), cfg2)
  np.testing.assert_allclose(apply(p2, tokens, cfg2, first=7), apply(p2, tokens, cfg2)[:, 7:], rtol=1e-5, atol=1e-5)


def test_loss_ignores_targets_outside_the_output_digits():
  spec = _spec(addition.plan(tiny_config()))
  params = lm.init(jax.random.key(0), spec.model)
  data = task.make_data(np.arange(50) * 1_999_993, 4)
  ce, _ = loss_fn(params, data, spec)
  scrambled = task.Data(data.x_NxT, data.y_NxT.copy())
  scrambled.y_NxT[:, :7] = (scrambled.y_NxT[:, :7] + 1) % 10
  assert float(loss_fn(params, scrambled, spec)[0]) == float(ce)
  scrambled.y_NxT[:, 9] = (scrambled.y_NxT[:, 9] + 1) % 10
  assert float(loss_fn(params, scrambled, spec)[0]) != float(ce)
  np.testing.assert_allclose(float(ce), np.log(10), rtol=0.01)  # uniform at init


# --- training


def test_train_step_golden_values():
  spec = _spec(addition.plan(addition.addition_config()))  # the paper's model and optimiser
  state = train_lib.init_state(jax.random.key(0), spec)
  batch = jax.tree.map(jnp.asarray, task.make_data(task.train_indices(4, 16, [0], np.zeros(0)), 4))
  new, metrics = jax.jit(train_lib.train_step, static_argnames="spec")(state, batch, spec=spec)
  msg = ("addition train_step changed numerically: the problems (stream, encoding), init, model, loss mask, clipping "
         "or AdamW changed. If intended, update these golden values and say why in the commit.")
  np.testing.assert_allclose(float(metrics["loss"]), GOLDEN["loss"], rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(float(metrics["grad_norm"]), GOLDEN["grad_norm"], rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(float(metrics["param_norm"]), GOLDEN["param_norm"], rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(np.asarray(new["params"]["unembed"][0, :3]), GOLDEN["head_w"], rtol=1e-5,
                             atol=1e-7, err_msg=msg)


# jax 0.10.2 CPU, computed with the toy's own minGPT port before it moved onto the shared transformer (same init, same
# key order); the batch is 16 problems of host stream [0]; grad_norm > 1, so clipping is active.
GOLDEN = {"loss": 2.3435998, "grad_norm": 3.7488122, "param_norm": 21.529020,
          "head_w": [-0.048948623, -0.040813200, 0.0042108432]}


def test_vmapped_seeds_equal_separate_runs():
  """Seeds vmapped together train as they do alone: 10 steps in float64 through the engine's vmapped entry points.

  Bound: Adam moves a parameter by lr m/(sqrt(v) + eps), whose sensitivity to its gradient is at most lr / eps
  (= 1e-3 / 1e-8 = 1e5 here). A batched reduction reorders sums, which changes a gradient by ~eps64 x the sum of the
  absolute terms (2.2e-16 x <= 10: the gradient norms here are ~1-4), so a step moves a parameter by <= 2.2e-10
  differently and 10 steps by <= 2.2e-9 (compounding through the loss is negligible at lr 1e-3 over 10 steps);
  atol 1e-8 keeps a 4x margin (measured: 8e-15, on the key bias). In float32 the same bound is 1.2e-3: rounding noise
  in gradients that vanish in exact arithmetic (the key bias shifts all scores of a query equally) becomes ~lr-sized
  Adam steps, so float32 runs agree only loosely, and how loosely depends on the CPU's vector width.
  """
  p = addition.plan(tiny_config(sweep=dict(train_size=(32,), seeds=2)))
  spec, point = _spec(p), p.points[0]
  inputs, test = EXP.inputs(p, point, point.spec)

  def run(idx):
    with jax.enable_x64(True):
      states, consts = loop.init_members(jax.tree.map(lambda a: a[idx], inputs), test, exp=EXP, spec=spec)
      states = jax.tree.map(lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, states)
      states, ev, _, _ = loop.run_chunk(states, consts, test, jnp.int32(0), exp=EXP, spec=spec, n_steps=10)
      assert all(a.dtype != jnp.float32 for a in jax.tree.leaves(states["params"]))
      return jax.device_get((states["params"], ev))

  both, ev = run(np.arange(2))
  for i in range(2):
    one, ev1 = run(np.asarray([i]))
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one), jax.tree.leaves(both)):
      np.testing.assert_allclose(a[0], b[i], rtol=0, atol=1e-8, err_msg=jax.tree_util.keystr(path))
    np.testing.assert_allclose(ev1["test_ce"][0], ev["test_ce"][i], rtol=1e-10)
  assert not np.allclose(ev["test_ce"][0], ev["test_ce"][1]), "seeds differ"


# --- config


@pytest.mark.parametrize("sections,match", [
    (dict(sweep=dict(train_size=(10**8,))), "exceeds"),
    (dict(task=dict(n_digit=1, n_test=20), sweep=dict(train_size=(81,))), "exceeds the 80"),
    (dict(train=dict(steps=45)), "train.steps=45 must be a multiple of train.log_every=10"),
    (dict(train=dict(data_steps=(100, 200, 300))), "data_steps"),
    (dict(train=dict(data_steps=(100, 0))), "data_steps"),
    (dict(model=dict(n_head=3)), "divisible"),
    (dict(task=dict(n_test=10**8)), "task.n_test"),
    (dict(task=dict(n_digit=10)), "task.n_digit"),
    (dict(sweep=dict(efficiency=0.0)), "sweep.efficiency"),
    (dict(sweep=dict(max_memory_gb=-1.0)), "sweep.max_memory_gb"),
])
def test_experiment_specific_checks_name_the_field(sections, match):
  with pytest.raises(ValueError, match=match):
    addition.plan(tiny_config(**sections))


def test_memory_check_refuses_a_training_set_too_large_before_allocating():
  """train_size=100000 was OOM-killed at 15 GB with no message; now the plan refuses it, naming the field."""
  c = addition.addition_config()
  c.sweep.update(train_size=(928, 100_000))
  with pytest.raises(ValueError, match=r"sweep.train_size 100000 with 5 seeds needs ~\d+\.\d GB .*max_memory_gb=8"):
    addition.plan(c)
  c.train.update(max_memory_gb=100.0)
  addition.plan(c)  # within a raised limit
  model = addition.model_config(addition.plan(addition.addition_config()).config)
  # 4 bytes x 12 tokens x (10 D + 2 F + 2 H T + 3 D + 2 V = 1280 + 1024 + 48 + 384 + 20 = 2756) per problem and seed
  assert addition.train_memory_gb(model, 1, 1000) == pytest.approx(4 * 12 * 2756 * 1000 / 1e9)
  assert addition.train_memory_gb(model, 5, 100_000) > 8 > addition.train_memory_gb(model, 8, 928)


def test_config_variants():
  sizes = lambda p: tuple(int(n) for n in p.shape_axes["train_size"])
  quick = addition.plan(addition_configs.get_config("quick"))
  assert sizes(quick) == (64, 256, 512, 1024) and quick.grid.size == 2
  assert [pt.steps for pt in quick.points] == [200] * 4
  paper = addition.plan(addition_configs.get_config("paper"))
  assert sizes(paper) == addition_configs.FIT_SIZES and _spec(paper).lr == 1e-4
  steps = {pt.coords["train_size"]: pt.steps for pt in paper.points}
  assert (steps[160], steps[576], steps[640], steps[928]) == (4064, 1312, 1568, 3024)  # ceil(data_steps / n) to 16
  dense = addition.plan(addition_configs.get_config("dense"))
  assert sizes(dense) == tuple(range(16, 1025, 16))
  with pytest.raises(ValueError, match="unknown variant"):
    addition_configs.get_config("huge")


# --- end to end


def _launch(*args):
  env = {**os.environ, "PYTHONPATH": ROOT, "XLA_FLAGS": ONE_DEVICE}  # as a user runs it (no padding to 4 devices)
  return subprocess.run([sys.executable, "-m", "launch.addition", *args], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=600)


def test_launcher_short_quick_run_shows_the_drop_and_resumes(tmp_path):
  """The quick variant cut to sizes (64, 512) and one seed (~30 s): the larger set generalises, the smaller not."""
  wd = tmp_path / "quick"
  args = ("--config=configs/addition.py:quick", f"--workdir={wd}", "--config.sweep.train_size=(64,512)",
          "--config.sweep.seeds=1")
  r = _launch(*args)
  assert r.returncode == 0, r.stderr[-3000:]
  assert "min test CE" in r.stdout and "steps/s" in r.stderr
  curves = io.load_workdir(str(wd))
  min_ce, acc = curves["min_test_ce"][:, 0], curves["final_test_acc"][:, 0]
  assert min_ce[0] > 2.0 and min_ce[1] < 1.2, f"sharp drop between 64 and 512 problems: min test CE {min_ce}"
  assert curves["final_test_ce"][0, 0] > 3.0 and acc[0] < 0.01, "64 problems are memorised, not generalised"
  again = _launch(*args)
  assert again.returncode == 0 and "complete, skipping" in again.stderr
