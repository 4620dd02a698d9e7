"""The engine's contract, parametrised over every experiment (`EXPERIMENTS`: `:tiny` sizes).

For each: kill-and-resume is bitwise, a bad config writes nothing, a NaN stop names the step and member, 4 devices
equal 1, a workdir in use is refused, a resume on another device count gives the uninterrupted arrays, a torn last
metrics line is dropped on resume. The toy regression (tests/toy_experiment.py) is the README's worked example.
"""

import copy
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from scaling.engine import experiment as E
from scaling.engine import io as wd
from helpers import set_dotted
import toy_experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Kill(Exception):
  """Stands for a kill: raised by the n-th metrics append."""


def _toy():
  return toy_experiment.TOY, toy_experiment.TOY.default_config(), {"nan_at_step": 25, "nan_lr": 0.05}, {"dim": 0}


def _msp():
  from helpers import tiny_config  # pylint: disable=import-outside-toplevel
  from scaling.quanta import msp  # pylint: disable=import-outside-toplevel
  # one program of two buckets (online, fixed D), widths 4 and 8 padded to 8: 12 members each, padded to 12 on 4
  c = tiny_config(sweep=dict(width=(4, 8), D=(-1, 700), alpha=(0.4, 0.6, 0.8), efficiency=0.5))
  return msp.EXPERIMENT, c, {"train.optimizer": "sgd", "sweep.lr": (1e-3, 1e38)}, {"sweep.width": ()}


def _lm_family():
  from scaling.lm import family  # pylint: disable=import-outside-toplevel
  c = family.family_config()
  c.n_seeds = 3  # padded to 4 on 4 devices
  c.corpus.max_docs = 20  # 18 training and 2 held-out documents of the default corpus
  c.tokenizer.vocab_size = 260
  c.context.update(length=16, heldout_len=16)
  c.model.sizes = ((8, 1, 2, 16), (16, 1, 2, 32))
  c.train.update(batch_size=4, steps=12, warmup_steps=2, log_every=4, checkpoint_every=1)
  c.eval.update(n_windows=4)
  return family.EXPERIMENT, c, {"train.lr": 1e38}, {"model.sizes": ()}


def _addition():
  from scaling.bnsl import addition  # pylint: disable=import-outside-toplevel
  c = addition.addition_config()
  c.task.update(n_test=50)
  c.model.update(d_model=16, n_head=2, d_ff=32)
  # one program of one bucket: size 8 (20 steps) and 16 (10 steps; frozen after them, so the kill after the third
  # metrics append, at step 10, resumes through its last evaluation); 6 members padded to 8 on 4 devices
  c.train.update(steps=20, data_steps=(160,), log_every=5, lr=1e-3, checkpoint_every=1)
  c.sweep.update(train_size=(8, 16), seeds=3, efficiency=0.4)
  return addition.EXPERIMENT, c, {"train.lr": 1e30}, {"sweep.train_size": ()}
def _rf_gd():
  from scaling.dynamics import rf_gd  # pylint: disable=import-outside-toplevel
  c = rf_gd.rf_gd_config()  # M=50, (N, P) = (8, 12) and (12, inf), 3 seeds (padded to 4 on 4), 40 steps in 4 chunks
  c.task.update(M=50)
  c.train.update(eta=0.2, steps=40, log_every=10, checkpoint_every=1)
  c.sweep.update(points=((8, 12), (12, 0)), seeds=3)
  # b = 400: λ_k underflows to 0 and w*_k overflows to inf for large k, so g = Ψw* and L̂ are NaN from step 0 while
  # μ_max (of Ψ ∝ √λ) stays finite; GD under η·μ_max < 2 cannot diverge later.
  return rf_gd.EXPERIMENT, c, {"task.b": 400.0}, {"sweep.points": ()}



def _vision():
  from scaling.dynamics import vision  # pylint: disable=import-outside-toplevel
  c = vision.vision_config()  # widths 0.5 and 1 (633 and 2,417 params), 3 seeds padded to 4 on 4 devices
  c.data.n_test = 64
  c.train.update(batch_size=8, steps=40, log_every=10, warmup_steps=5, checkpoint_every=1)
  c.sweep.update(widths=(0.5, 1), seeds=3)
  c.fig1.update(t_min=10, ntk_points=64, k_range=(2, 6))
  # Adam's first step moves every weight by ~lr = 1e38: the next forward pass overflows to inf and the BCE is NaN.
  return vision.EXPERIMENT, c, {"train.lr": 1e38}, {"sweep.widths": ()}

# Relative tolerance of 4 devices against 1 (0: bitwise). Splitting the member axis over devices lets XLA:CPU
# vectorise and fuse the per-member reductions differently; a reordered pairwise sum of n float32 terms differs by up
# to ~log2(n) ulp (eps32 = 1.19e-7), and MSP's evaluation averages 5 tasks x 64 samples (log2(320) ≈ 8.3): 8.3 x
# 1.19e-7 ≈ 1e-6 relative. Kills and resumes on the same device count are always bitwise.
# lm_family: its logged losses are means of B x T = 4 x 16 = 64 next-token cross-entropies, each a logsumexp over
# V = 260 logits: reordered sums give up to ~log2(64) + log2(260) ≈ 14 ulp, 14 x 1.19e-7 ≈ 1.7e-6 relative; the 12
# AdamW steps (normalised, clipped updates) carry parameter differences of that order into the loss without
# amplifying them at these sizes (measured on this config: 1.7e-7). Bound: 2e-6.
# Addition: its test CE averages 50 problems x 5 digits (log2(250) ≈ 8 ulp ≈ 1e-6); and the training reductions may be
# reordered too (6 members on 1 device vs 2 per device, on avx512 CPUs), perturbing gradients by ~1e-6 relative, which
# Adam's normalised step turns into <= lr x 1e-6 per step per parameter: <= 20 x 1e-3 x 1e-6 = 2e-8 in the (at most) 20
# steps, changing the loss by <= ||grad L||_1 x 2e-8 <= sqrt(P = 2.8k) x ||grad L||_2 (<= 4) x 2e-8 ≈ 4e-6, 2e-6
# relative to CE ≈ 2.2. The key bias, whose gradient is pure rounding noise (softmax is shift invariant), moves by up to
# ~lr x steps differently but shifts all scores of a query equally, so the loss does not see it (measured: CE differs by
# <= 1 ulp). Sum ≈ 3e-6; 1e-5 leaves a 3x margin.
# rf_gd is float64: the same reordering of its length-n dot products (n <= max(N, P, M) = 50: log2(50) ≈ 6 ulp,
# eps64 = 2.2e-16) in each of its 40 GD steps, which stable GD (|1 - ημ| <= 1 on every mode) does not amplify, adds up
# to <= 40 x 6 x 2.2e-16 ≈ 5e-14 relative in w, ≈ 1e-13 in the losses (squares; they stay O(1), no cancellation).
# Measured: 1 ulp.
# vision (float32): the test loss is a mean of M = 64 BCEs (log2(64) = 6 ulp) of a forward pass whose convs are
# matmuls over k x C <= 48 terms (log2(48) ≈ 6 ulp, not compounding: each layer's rounding is relative), so ≈ 12 ulp
# ≈ 1.4e-6 from evaluation; training reorders the batch-of-8 gradient sums the same way (≈ 1e-6 relative), which
# Adam's normalised step turns into <= lr x 1e-6 = 2e-9 per step per parameter, <= 8e-8 in 40 steps, moving the loss
# by <= ||grad L||_1 x 8e-8 <= sqrt(P = 2.4k) x ||grad L||_2 (<= 1) x 8e-8 ≈ 4e-6, 6e-6 relative to BCE ≈ 0.68.
# Sum ≈ 7e-6: 1e-5. test_error counts sign(logit) misses and is equal unless a logit lies within ~1e-6 of 0.
# Measured (seeds 0-3 of this config): test loss <= 1.8e-7 relative, test error equal.
TOLERANCE = {"msp": 1e-6, "lm_family": 2e-6, "addition": 1e-5, "rf_gd": 1e-13, "vision": 1e-5}

# id -> () -> (experiment, tiny config, overrides that make a training loss NaN, overrides that are invalid)
EXPERIMENTS = {"toy": _toy, "msp": _msp, "lm_family": _lm_family, "addition": _addition, "rf_gd": _rf_gd,
               "vision": _vision}


def _with(config, overrides):
  return set_dotted(copy.deepcopy(config.to_dict() if hasattr(config, "to_dict") else config), overrides)


def _run_killed(monkeypatch, exp, config, workdir, after, devices=None):
  """Runs until the `after`-th metrics line is written, then raises as a kill would."""
  real, calls = wd.append_metrics, []

  def append(*a, **k):
    real(*a, **k)
    calls.append(1)
    if len(calls) == after:
      raise Kill
  monkeypatch.setattr(wd, "append_metrics", append)
  with pytest.raises(Kill):
    E.run(exp, config, workdir, devices=devices)
  monkeypatch.setattr(wd, "append_metrics", real)


def _same(a, b, rtol=0.0):
  assert set(a.arrays) == set(b.arrays)
  for k in a.arrays:
    if rtol and np.issubdtype(a[k].dtype, np.floating):
      np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=0, err_msg=k)
    else:
      np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert a.axes[k] == b.axes[k]


@pytest.fixture(params=sorted(EXPERIMENTS))
def case(request):
  return EXPERIMENTS[request.param]()


def test_kill_resume_and_device_counts(case, tmp_path, monkeypatch):
  """4 devices equal 1 (within the experiment's stated tolerance); a kill and resume on the same device count is
  bitwise; a resume on another device count (1 -> 4, 4 -> 1) gives the uninterrupted run's arrays."""
  exp, config, _, _ = case
  rtol = TOLERANCE.get(exp.name, 0.0)
  assert len(jax.devices()) == 4, "conftest sets 4 simulated CPU devices"
  one, four = jax.devices()[:1], jax.devices()
  E.run(exp, config, str(tmp_path / "one"), devices=one)
  E.run(exp, config, str(tmp_path / "four"), devices=four)
  ref = wd.load_workdir(str(tmp_path / "four"))
  _same(wd.load_workdir(str(tmp_path / "one")), ref, rtol)
  for name, first, then, tol in (("4to4", four, four, 0.0), ("1to4", one, four, rtol), ("4to1", four, one, rtol)):
    _run_killed(monkeypatch, exp, config, str(tmp_path / name), after=3, devices=first)
    E.run(exp, config, str(tmp_path / name), devices=then)
    _same(wd.load_workdir(str(tmp_path / name)), ref, tol)
    steps = [(r["point"], r["step"]) for r in wd.read_metrics(str(tmp_path / name))]
    assert len(steps) == len(set(steps)), "a resumed run logs every (point, step) once"


def test_bad_config_writes_nothing(case, tmp_path):
  exp, config, _, invalid = case
  for bad in (invalid, {"not_a_field": 1}):
    c = _with(config, bad) if "not_a_field" not in bad else {**config.to_dict(), "not_a_field": 1}
    with pytest.raises(ValueError) as e:
      E.run(exp, c, str(tmp_path / "w"))
    name = next(iter(bad)).split(".")[-1]
    assert name in str(e.value), f"the error names the field {name}: {e.value}"
    assert not (tmp_path / "w").exists()


def test_nan_stop_names_step_and_member(case, tmp_path):
  exp, config, nan, _ = case
  w = str(tmp_path / "w")
  with pytest.raises(FloatingPointError) as e:
    E.run(exp, _with(config, nan), w)
  m = re.search(r"non-finite (.+) at step (\d+) in point (\S+).*member (\d+) \{", str(e.value))
  assert m, str(e.value)
  step = int(m.group(2))
  logged = [r["step"] for r in wd.read_metrics(w)]
  assert max(logged, default=step) <= step, f"nothing is logged after the step the stop names ({step}): {logged}"


def test_workdir_in_use_is_refused_and_a_killed_holder_never_blocks(case, tmp_path):
  exp, config, _, _ = case
  w = tmp_path / "w"
  w.mkdir()
  holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
      import sys, time
      sys.path.insert(0, {ROOT!r})
      from scaling.engine import io as wd
      with wd.lock({str(w)!r}):
          print("locked", flush=True)
          time.sleep(600)
      """)], stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(wd.WorkdirInUse, match=f"pid {holder.pid}"):
      E.run(exp, config, str(w))
    assert sorted(os.listdir(w)) == [".lock"], "the refused run wrote nothing"
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with wd.lock(str(w)):  # the killed holder's lock died with its process: the next run takes it at once
    assert f"pid {os.getpid()}" in (w / wd.LOCK).read_text()


def test_torn_metrics_line_is_dropped_on_resume(case, tmp_path, monkeypatch):
  exp, config, _, _ = case
  w = str(tmp_path / "w")
  _run_killed(monkeypatch, exp, config, w, after=2)
  with open(os.path.join(w, wd.METRICS), "a") as f:
    f.write('{"point": "x", "step": 1')  # a kill mid-write
  E.run(exp, config, w)
  with open(os.path.join(w, wd.METRICS)) as f:
    lines = f.read().splitlines()
  assert all(l.endswith("}") for l in lines) and len(wd.read_metrics(w)) == len(lines)


# -- engine-only checks (the toy) -------------------------------------------------------------------------------


def test_files_follow_the_umask(tmp_path):
  old = os.umask(0o027)
  try:
    wd.save_npz(str(tmp_path / "a.npz"), x=np.zeros(2))
    wd.save_text(str(tmp_path / "b.txt"), "x")
  finally:
    os.umask(old)
  for name in ("a.npz", "b.txt"):
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o640, name


def test_progress_line_shows_the_loss_of_the_step_it_names(tmp_path, caplog):
  exp = toy_experiment.TOY
  with caplog.at_level("INFO"):
    E.run(exp, exp.default_config(), str(tmp_path))
  recs = {r["step"]: r for r in wd.read_metrics(str(tmp_path))}
  lines = [m for m in caplog.messages if "at step" in m]
  assert lines
  for line in lines:
    m = re.search(r"at step (\d+): test loss ([\d.]+)", line)
    assert m, line
    assert float(m.group(2)) == pytest.approx(recs[int(m.group(1))]["test_loss"], abs=1e-4)


def test_empty_axis_non_numeric_and_unknown_key_name_the_field():
  exp = toy_experiment.TOY
  for overrides, field in (({"sweep.lr": ()}, "sweep.lr"), ({"sweep.lr": ("a",)}, "sweep.lr"),
                           ({"batch": "8"}, "batch"), ({"sweep.seeds": 0}, "sweep.seeds")):
    with pytest.raises(ValueError, match=re.escape(field)):
      E.check(exp, _with(exp.default_config(), overrides))
  c = exp.default_config().to_dict()
  c["sweep"]["foo"] = 1
  with pytest.raises(ValueError, match="sweep.foo"):
    E.check(exp, c)


def test_toy_learns_with_the_larger_rate(tmp_path):
  exp = toy_experiment.TOY
  c = E.run(exp, exp.default_config(), str(tmp_path))
  final = c["test_loss"][:, :, -1].mean(axis=0)  # [lr]
  assert c.axes["test_loss"] == ("seed", "lr", "log_step")
  assert final[2] < final[0] / 100, f"lr 0.1 fits w* far better than lr 0.01 in 60 steps: {final}"


def test_readme_example(tmp_path):
  """The README's worked example runs as printed (its workdir moved under tmp_path) and learns."""
  with open(os.path.join(ROOT, "README.md")) as f:
    text = f.read()
  block = re.search(r"```python\n(import jax, jax.numpy as jnp, ml_collections\n.*?)```", text, re.S).group(1)
  block = block.replace('"runs/regression"', repr(str(tmp_path / "regression")))
  scope: dict = {}
  exec(compile(block, "README.md", "exec"), scope)  # pylint: disable=exec-used
  curves = scope["curves"]
  assert curves.axes["test_loss"] == ("seed", "lr", "log_step") and curves["test_loss"].shape == (2, 2, 11)
  final = curves["test_loss"][:, :, -1].mean(axis=0)
  assert final[1] < final[0] / 10, f"lr 0.1 fits w* far better than lr 0.01 in 100 steps: {final}"
