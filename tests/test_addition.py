"""The BNSL toy experiment: addition task, 1-layer GPT, full-batch training over dataset sizes, the workdir."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import addition as addition_configs
from scaling.engine import io
from scaling.bnsl import addition

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARRAYS = ("test_ce", "test_acc", "train_ce", "train_acc")
apply = jax.jit(addition.apply, static_argnames=("spec", "first"))
loss_fn = jax.jit(addition.loss_fn, static_argnames="spec")


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


# --- task


def test_sequences_are_a_b_and_the_sum_most_significant_first():
  idx = np.asarray([1234 * 10**4 + 9876, 5 * 10**4 + 7, 9999 * 10**4 + 9999])
  seq = addition.encode(idx, 4)
  np.testing.assert_array_equal(seq[0], [1, 2, 3, 4, 9, 8, 7, 6, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(seq[1], [0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 1, 2])
  np.testing.assert_array_equal(seq[2], [9, 9, 9, 9, 9, 9, 9, 9, 1, 9, 9, 9, 8])
  data = addition.make_data(idx, 4)
  assert data.x_NxT.shape == data.y_NxT.shape == (3, 12) and data.x_NxT.dtype == np.int32
  np.testing.assert_array_equal(data.x_NxT, seq[:, :-1])
  np.testing.assert_array_equal(data.y_NxT, seq[:, 1:])


def test_random_problems_decode_to_their_sum_and_the_mask_covers_the_five_output_digits():
  idx = np.random.default_rng(0).integers(0, 10**8, 500)
  a, b = addition.problems(idx, 4)
  seq = addition.encode(idx, 4)
  as_int = lambda d: (d * 10 ** np.arange(d.shape[1] - 1, -1, -1)).sum(axis=1)
  np.testing.assert_array_equal(as_int(seq[:, :4]), a)
  np.testing.assert_array_equal(as_int(seq[:, 4:8]), b)
  np.testing.assert_array_equal(as_int(seq[:, 8:]), a + b)
  mask = addition.loss_mask(4)
  np.testing.assert_array_equal(np.nonzero(mask)[0], [7, 8, 9, 10, 11])
  y = addition.make_data(idx, 4).y_NxT
  np.testing.assert_array_equal(y[:, mask], seq[:, 8:])  # the masked-in targets are exactly c's 5 digits


def test_splits_are_disjoint_deterministic_and_nested():
  p = addition.plan(tiny_config(task=dict(n_test=1000), sweep=dict(train_size=(200, 500), seeds=3)))
  test_idx = addition.held_out_indices(4, 1000, 1)
  assert len(np.unique(test_idx)) == 1000
  np.testing.assert_array_equal(test_idx, addition.held_out_indices(4, 1000, 1))
  assert not np.array_equal(test_idx, addition.held_out_indices(4, 1000, 2))
  small, test = addition.datasets(p, 200)
  big, _ = addition.datasets(p, 500)
  np.testing.assert_array_equal(test.x_NxT, addition.make_data(test_idx, 4).x_NxT)
  np.testing.assert_array_equal(small.x_NxT, big.x_NxT[:, :200])  # a smaller training set is a prefix
  np.testing.assert_array_equal(small.x_NxT, addition.datasets(p, 200)[0].x_NxT)  # deterministic
  rows = lambda x: {tuple(r) for r in x}
  for s in range(3):
    assert len(rows(big.x_NxT[s])) == 500, "training problems are distinct"
    assert not rows(big.x_NxT[s]) & rows(test.x_NxT), "train and test are disjoint"
  assert not np.array_equal(big.x_NxT[0], big.x_NxT[1]), "each seed has its own training set"


def test_small_problem_sets_use_a_permutation():
  test_idx = addition.held_out_indices(1, 20, 0)
  train_idx = addition.train_indices(1, 80, [1, 2], test_idx)
  np.testing.assert_array_equal(np.sort(np.concatenate([test_idx, train_idx])), np.arange(100))


# --- model


def _params_and_tokens(d_model=128, batch=4):
  spec = addition.ModelSpec(d_model=d_model, d_ff=4 * d_model)
  params = addition.init(jax.random.key(0), spec)
  params = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(1), x.shape), params)  # not at init
  tokens = jax.random.randint(jax.random.key(2), (batch, 12), 0, 10)
  return spec, params, tokens


def test_param_count_init_and_decay_mask():
  params = addition.init(jax.random.key(0), addition.ModelSpec())
  assert addition.param_count(params) == 202_624  # minGPT's count for d_model 128, d_ff 512, 1 layer, vocab 10
  assert not np.asarray(params["pos_emb_TxD"]).any() and not np.asarray(params["block_0"]["fc"]["b_512"]).any()
  np.testing.assert_allclose(np.std(params["block_0"]["fc"]["w_128x512"]), 0.02, rtol=0.02)
  decayed = [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(addition.decay_mask(params)) if v]
  assert sorted(decayed) == sorted(
      [f"['block_0']['{m}']['w_128x128']" for m in ("query", "key", "value", "proj")]
      + ["['block_0']['fc']['w_128x512']", "['block_0']['out']['w_512x128']", "['head']['w_128x10']"])


def test_logits_shape_and_causality():
  spec, params, tokens = _params_and_tokens()
  logits = apply(params, tokens, spec)
  assert logits.shape == (4, 12, 10)
  for t in (0, 5, 11):
    changed = tokens.at[:, t].set((tokens[:, t] + 3) % 10)
    other = apply(params, changed, spec)
    np.testing.assert_allclose(other[:, :t], logits[:, :t], rtol=1e-6, atol=1e-6, err_msg=f"t={t}")
    assert np.abs(np.asarray(other[:, t:] - logits[:, t:])).max() > 1e-3, "later positions see token t"


def test_skipping_positions_before_the_outputs_gives_the_same_logits():
  spec, params, tokens = _params_and_tokens(d_model=64)
  full = apply(params, tokens, spec)
  np.testing.assert_allclose(apply(params, tokens, spec, first=7), full[:, 7:], rtol=1e-5, atol=1e-5)


def test_loss_ignores_targets_outside_the_output_digits():
  p = addition.plan(tiny_config())
  params = addition.init(jax.random.key(0), p.spec.model)
  data = addition.make_data(np.arange(50) * 1_999_993, 4)
  ce, _ = loss_fn(params, data, p.spec)
  scrambled = addition.Data(data.x_NxT, data.y_NxT.copy())
  scrambled.y_NxT[:, :7] = (scrambled.y_NxT[:, :7] + 1) % 10
  assert float(loss_fn(params, scrambled, p.spec)[0]) == float(ce)
  scrambled.y_NxT[:, 9] = (scrambled.y_NxT[:, 9] + 1) % 10
  assert float(loss_fn(params, scrambled, p.spec)[0]) != float(ce)
  np.testing.assert_allclose(float(ce), np.log(10), rtol=0.01)  # uniform at init


# --- training


def test_train_step_golden_values():
  p = addition.plan(addition.addition_config())  # the paper's model and optimiser
  state = addition.init_state(jax.random.key(0), p.spec)
  batch = jax.tree.map(jnp.asarray, addition.make_data(addition.train_indices(4, 16, [0], np.zeros(0)), 4))
  new, metrics = jax.jit(addition.train_step, static_argnames="spec")(state, batch, spec=p.spec)
  msg = ("addition.train_step changed numerically: the problems (stream, encoding), init, model, loss mask, clipping "
         "or AdamW changed. If intended, update these golden values and say why in the commit.")
  np.testing.assert_allclose(float(metrics["loss"]), GOLDEN["loss"], rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(float(metrics["grad_norm"]), GOLDEN["grad_norm"], rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(float(metrics["param_norm"]), GOLDEN["param_norm"], rtol=1e-5, err_msg=msg)
  np.testing.assert_allclose(np.asarray(new["params"]["head"]["w_128x10"][0, :3]), GOLDEN["head_w"], rtol=1e-5,
                             atol=1e-7, err_msg=msg)


# jax 0.10.2 CPU; the batch is 16 problems of host stream [0]; grad_norm > 1, so clipping is active.
GOLDEN = {"loss": 2.3435998, "grad_norm": 3.7488122, "param_norm": 21.529020,
          "head_w": [-0.048948623, -0.040813200, 0.0042108432]}


def test_vmapped_seeds_equal_separate_runs():
  p = addition.plan(tiny_config(sweep=dict(train_size=(32,), seeds=2)))  # the (2 seeds, 32) program is reused below
  init_S, _ = addition.seed_keys(p)
  train, test = jax.device_put(addition.datasets(p, 32))
  states = addition.init_states(init_S, spec=p.spec)
  states, ev, _ = addition.run_chunk(states, train, test, spec=p.spec, n_steps=10)
  for i in range(2):
    one = addition.init_states(init_S[i:i + 1], spec=p.spec)
    one, ev1, _ = addition.run_chunk(one, jax.tree.map(lambda a: a[i:i + 1], train), test, spec=p.spec, n_steps=10)
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(one["params"]), jax.tree.leaves(states["params"])):
      # The key bias shifts all scores of a query equally, so its gradient is rounding noise that Adam scales to
      # ~lr-sized steps (as in PyTorch): its values agree only to ~1e-5 absolute.
      atol = 1e-4 if "'key'" in jax.tree_util.keystr(path) else 1e-6
      np.testing.assert_allclose(np.asarray(a[0]), np.asarray(b[i]), rtol=1e-5, atol=atol,
                                 err_msg=jax.tree_util.keystr(path))
    np.testing.assert_allclose(ev1["test_ce"][0], ev["test_ce"][i], rtol=1e-5)
  assert not np.allclose(ev["test_ce"][0], ev["test_ce"][1]), "seeds differ"


def test_curves_summary_and_per_size_steps(tmp_path):
  c = tiny_config(train=dict(data_steps=(640,)))  # 40 steps at 16, 20 at 32
  curves = addition.run(c, str(tmp_path / "wd"))
  assert curves.axes["test_ce"] == addition.AXES == ("train_size", "seed", "log_step")
  assert curves["test_ce"].shape == (2, 2, 5)
  np.testing.assert_array_equal(curves["steps"], [40, 20])
  np.testing.assert_array_equal(curves.coords["log_step"], [0, 10, 20, 30, 40])
  assert np.isfinite(curves["test_ce"][0]).all() and np.isfinite(curves["test_ce"][1, :, :3]).all()
  assert np.isnan(curves["test_ce"][1, :, 3:]).all(), "NaN past the last step of a size"
  np.testing.assert_array_equal(curves["final_test_ce"][1], curves["test_ce"][1, :, 2])
  np.testing.assert_array_equal(curves["min_test_ce"][0], curves["test_ce"][0].min(axis=-1))
  s = addition.summary(curves)
  np.testing.assert_allclose(s["final_test_acc"], curves["final_test_acc"].mean(axis=1))
  assert "train_size" in addition.summary_table(curves)
  loaded = io.load_workdir(str(tmp_path / "wd"))
  for name in ARRAYS:
    np.testing.assert_array_equal(loaded[name], curves[name])
  records = io.read_metrics(str(tmp_path / "wd"))
  assert [(r["train_size"], r["step"]) for r in records] == [(16, s) for s in range(0, 41, 10)] + [
      (32, s) for s in range(0, 21, 10)]
  assert json.load(open(tmp_path / "wd" / "config.json"))["sweep"]["train_size"] == [16, 32]
  assert not [f for f in os.listdir(tmp_path / "wd") if f.startswith(".tmp")]


class _Killed(Exception):
  pass


@pytest.mark.parametrize("checkpoint_every,kill_after", [(1, 2), (3, 1)])
def test_kill_and_resume_is_bitwise(tmp_path, monkeypatch, checkpoint_every, kill_after):
  """Kill inside the second size (between checkpoints when checkpoint_every=3), re-run: same curves, bitwise."""
  c = tiny_config(train=dict(checkpoint_every=checkpoint_every))
  full = addition.run(c, str(tmp_path / "full"))
  real, calls = addition.run_chunk, []

  def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) > kill_after + 4:  # 4 chunks per size: dies inside the second size
      raise _Killed()
    return real(*args, **kwargs)

  monkeypatch.setattr(addition, "run_chunk", dying)
  with pytest.raises(_Killed):
    addition.run(c, str(tmp_path / "resumed"))
  monkeypatch.setattr(addition, "run_chunk", real)
  resumed = addition.run(c, str(tmp_path / "resumed"))
  for name in ARRAYS + ("final_test_ce", "min_test_ce"):
    np.testing.assert_array_equal(resumed[name], full[name], err_msg=name)
  steps = [(r["point"], r["step"]) for r in io.read_metrics(str(tmp_path / "resumed"))]
  assert len(steps) == len(set(steps)) == 2 * 5, "metrics.jsonl has one line per size and log step"


def test_nan_stops_with_size_step_and_seed_named(tmp_path):
  c = tiny_config(train=dict(lr=1e30, steps=20), sweep=dict(train_size=(16,), seeds=1))
  with pytest.raises(FloatingPointError, match=r"non-finite .* step \d+ for train_size=16, seed 0"):
    addition.run(c, str(tmp_path / "wd"))
  assert (tmp_path / "wd" / "config.json").exists() and io.read_metrics(str(tmp_path / "wd"))


@pytest.mark.parametrize("sections,match", [
    (dict(sweep=dict(train_size=(16, 0))), "sweep.train_size"),
    (dict(sweep=dict(train_size=(16, 16))), "repeated"),
    (dict(sweep=dict(train_size=(10**8,))), "exceeds"),
    (dict(task=dict(n_digit=1, n_test=20), sweep=dict(train_size=(81,))), "exceeds the 80"),
    (dict(sweep=dict(seeds=0)), "seeds"),
    (dict(train=dict(steps=0)), "train.steps"),
    (dict(train=dict(steps=45)), "multiple of"),
    (dict(train=dict(log_every=0)), "log_every"),
    (dict(train=dict(lr=0.0)), "train.lr"),
    (dict(train=dict(data_steps=(100, 200, 300))), "data_steps"),
    (dict(model=dict(n_head=3)), "divisible"),
    (dict(model=dict(matmul_precision="fp8")), "matmul_precision"),
    (dict(task=dict(n_test=10**8)), "n_test"),
])
def test_bad_config_raises_before_compiling_or_writing(tmp_path, monkeypatch, sections, match):
  compiled = []
  monkeypatch.setattr(addition, "init_states", lambda *a, **k: compiled.append(1))
  with pytest.raises(ValueError, match=match):
    addition.run(tiny_config(**sections), str(tmp_path / "wd"))
  assert not (tmp_path / "wd").exists() and not compiled


def test_unknown_key_and_other_config_are_refused(tmp_path):
  cfg = tiny_config().to_dict()
  cfg["train"]["learning_rate"] = 1e-3
  with pytest.raises(ValueError, match="unknown config keys.*train.learning_rate"):
    addition.run(cfg, str(tmp_path / "a"))
  assert not (tmp_path / "a").exists()
  wd = tmp_path / "b"
  addition.run(tiny_config(sweep=dict(train_size=(16,), seeds=1)), str(wd))
  before = open(wd / "metrics.jsonl", "rb").read()
  with pytest.raises(ValueError, match=r"different config.*train.steps: 40 -> 80"):
    addition.run(tiny_config(sweep=dict(train_size=(16,), seeds=1), train=dict(steps=80)), str(wd))
  assert open(wd / "metrics.jsonl", "rb").read() == before


def test_config_variants():
  quick = addition.plan(addition_configs.get_config("quick"))
  assert quick.sizes == (64, 256, 512, 1024) and quick.n_seeds == 2 and quick.steps == (200,) * 4
  paper = addition.plan(addition_configs.get_config("paper"))
  assert paper.sizes == addition_configs.FIT_SIZES and paper.spec.lr == 1e-4
  steps = dict(zip(paper.sizes, paper.steps))
  assert (steps[160], steps[576], steps[640], steps[928]) == (4064, 1312, 1568, 3024)  # ceil(data_steps / n) to 16
  dense = addition.plan(addition_configs.get_config("dense"))
  assert dense.sizes == tuple(range(16, 1025, 16))
  with pytest.raises(ValueError, match="unknown variant"):
    addition_configs.get_config("huge")


# --- end to end


def _launch(*args):
  env = {**os.environ, "PYTHONPATH": ROOT}
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
