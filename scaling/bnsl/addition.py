"""The BNSL toy experiment (spec bnsl.md §4b): a 1-layer GPT trained full-batch on 4-digit addition vs dataset size.

Task (minGPT's `AdditionDataset`, the version the BNSL author ran): the problem a + b is the token sequence
`a (n digits) b (n digits) c (n+1 digits)` with c = a + b written most-significant digit first (as in that version's
`'%0{n}d%0{n}d%0{n+1}d' % (a, b, c)`; later minGPT versions reverse c), no +/= tokens, vocab 10. Inputs are the first
3n tokens, targets the next tokens, and only the n+1 output digits count (minGPT masks the others with -100). The test
set is `n_test` distinct problems drawn with `split_seed`; the training set of seed i is the first `train_size`
problems of seed i's stream of distinct non-test problems, so a smaller training set is a prefix of a larger one.

Model: minGPT with pre-LN blocks, token + learned positional embeddings, causal attention, GELU MLP, final LN, untied
head without bias. Init as minGPT: Linear/Embedding weights N(0, 0.02), biases 0, LN (1, 0), positional embedding 0.
Dropout is 0 (the later sweeps pass `--dropout_prob=0.0`; spec §4b notes the job script may have dropped that flag).

Optimiser: AdamW (0.9, 0.95), weight decay 0.1 on Linear weights only, global grad-norm clip 1.0, constant lr 1e-4.
Full batch (the batch is the whole training set), so steps are deterministic: no per-step keys are needed.

Sweep: a static loop over `train_size` (one compiled program each), seeds vmapped inside. PRNG: `split(key(seed),
n_seeds)` gives the seed keys, each split once into (init, data) keys; the data key seeds the host numpy stream of
training problems. Every size reuses the same seed keys (same init, nested training sets: common random numbers).

Evaluation every `log_every` steps: test CE in nats, the mean over all n+1 output digits of all test problems (minGPT's
ignore_index mean over its single test batch of 1000), exact-match accuracy, and the same two on the training set.

Workdir (via `scaling.io`): config.json, metrics.jsonl (one line per size and log step), curves.npz with axes
[train_size, seed, log_step], points/n<size>.npz, checkpoints/n<size>/ (orbax). Re-running resumes bitwise.

Differences from the original: the test problems come from our numpy stream, not `RandomState(1).permutation(10^8)`,
and the training sets from numpy rather than Python's `random.shuffle` (same distributions, different problems); the
original gave every (size, seed) run its own seed; PyTorch's clipping divides by norm + 1e-6.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from scaling import io, loop
from scaling.config_utils import PRECISIONS, as_checked_dict, as_tuple

AXES = ("train_size", "seed", "log_step")
_PERMUTE_BELOW = 1 << 22  # problem sets up to this size are permuted outright; larger ones drawn with rejection
_BLOCK = 8192  # draws per block of the rejection stream (fixed, so streams do not depend on how much is drawn)


def addition_config() -> ml_collections.ConfigDict:
  """Spec §4b's setup (4 digits, d_model 128, 1 layer, lr 1e-4, full batch); configs/ derive their variants."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root key; the seed axis is split(key(seed), sweep.seeds)
  c.task = ml_collections.ConfigDict(dict(
      n_digit=4,
      n_test=1000,  # min(0.2 * 10^8, 1000) in the original
      split_seed=1,  # fixed seed of the test problems (the original's arithmetic_split_seed=1)
  ))
  c.model = ml_collections.ConfigDict(dict(
      n_layer=1, d_model=128, n_head=2, d_ff=512,  # n_head = max(2, d_model // 64), d_ff = 4 d_model
      matmul_precision="highest",  # true f32 matmuls as PyTorch's default
  ))
  c.train = ml_collections.ConfigDict(dict(
      steps=3200,  # full-batch steps of every size, unless data_steps is set
      # Samples per run as the original's --data_steps: () = use `steps`; one value for all sizes or one per size.
      # Steps of a size = ceil(data_steps / train_size), rounded up to a multiple of log_every.
      data_steps=(),
      log_every=16,  # the original evaluated every 16 steps
      lr=1e-4, b1=0.9, b2=0.95, eps=1e-8, weight_decay=0.1, grad_clip=1.0,
      checkpoint_every=50,  # in chunks of log_every steps
      max_to_keep=2,
  ))
  c.sweep = ml_collections.ConfigDict(dict(
      train_size=(160, 320, 480, 640, 800, 928),  # looped: one compiled program per size
      seeds=5,  # vmapped
  ))
  return c


# ------------------------------------------------------------------------------------------------------------------
# Task


class Data(NamedTuple):
  """Problems as next-token prediction: inputs and targets, both (N, 3n) int32."""

  x_NxT: jax.Array | np.ndarray
  y_NxT: jax.Array | np.ndarray


def n_problems(n_digit: int) -> int:
  """All (a, b) pairs of n-digit numbers: 10^(2n)."""
  return 10 ** (2 * n_digit)


def block_size(n_digit: int) -> int:
  """Input length: n + n + (n+1) digits, minus the last one (it is only ever a target)."""
  return 3 * n_digit


def first_output(n_digit: int) -> int:
  """Position of the first target that is an output digit (the target of the last digit of b)."""
  return 2 * n_digit - 1


def loss_mask(n_digit: int) -> np.ndarray:
  """(3n,) bool: True at the n+1 target positions of c's digits (minGPT's unmasked labels)."""
  return np.arange(block_size(n_digit)) >= first_output(n_digit)


def digits(v_N: np.ndarray, n: int) -> np.ndarray:
  """(N, n) decimal digits of v, most significant first (zero-padded)."""
  powers_n = 10 ** np.arange(n - 1, -1, -1, dtype=np.int64)
  return (np.asarray(v_N, np.int64)[:, None] // powers_n[None, :]) % 10


def problems(idx_N: np.ndarray, n_digit: int) -> tuple[np.ndarray, np.ndarray]:
  """(a, b) of problem indices: a = idx // 10^n, b = idx % 10^n, as minGPT."""
  idx_N = np.asarray(idx_N, np.int64)
  return idx_N // 10 ** n_digit, idx_N % 10 ** n_digit


def encode(idx_N: np.ndarray, n_digit: int) -> np.ndarray:
  """(N, 3n+1) token sequences `a b c` of problem indices, c = a + b most significant digit first."""
  a, b = problems(idx_N, n_digit)
  return np.concatenate([digits(a, n_digit), digits(b, n_digit), digits(a + b, n_digit + 1)], axis=1)


def make_data(idx_N: np.ndarray, n_digit: int) -> Data:
  seq = encode(idx_N, n_digit).astype(np.int32)
  return Data(seq[:, :-1], seq[:, 1:])


def _distinct_stream(rng: np.random.Generator, num: int, count: int, exclude: np.ndarray) -> np.ndarray:
  """The first `count` of a random order of the problems 0..num-1 not in `exclude` (same rng: same order)."""
  if num <= _PERMUTE_BELOW:
    perm = rng.permutation(num)
    return perm[~np.isin(perm, exclude)][:count]
  out: list[np.ndarray] = []
  seen = np.asarray(exclude, np.int64)
  have = 0
  while have < count:  # uniform draws, dropping repeats and excluded problems, in draw order
    block = rng.integers(0, num, size=_BLOCK, dtype=np.int64)
    _, first = np.unique(block, return_index=True)
    block = block[np.sort(first)]
    block = block[~np.isin(block, seen)]
    out.append(block)
    seen = np.concatenate([seen, block])
    have += block.size
  return np.concatenate(out)[:count]


def held_out_indices(n_digit: int, n_test: int, split_seed: int) -> np.ndarray:
  """The fixed test problems: `n_test` distinct indices drawn with `split_seed`."""
  rng = np.random.default_rng(np.random.SeedSequence([split_seed, n_digit]))
  return _distinct_stream(rng, n_problems(n_digit), n_test, np.zeros(0, np.int64))


def train_indices(n_digit: int, size: int, entropy: Sequence[int], test_idx: np.ndarray) -> np.ndarray:
  """The first `size` problems of the stream of distinct non-test problems seeded by `entropy`."""
  rng = np.random.default_rng(np.random.SeedSequence(list(entropy)))
  return _distinct_stream(rng, n_problems(n_digit), size, test_idx)


# ------------------------------------------------------------------------------------------------------------------
# Model

Params = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  vocab: int = 10
  block_size: int = 12
  n_layer: int = 1
  d_model: int = 128
  n_head: int = 2
  d_ff: int = 512
  matmul_precision: str = "highest"


def _linear(key: jax.Array, n_in: int, n_out: int, bias: bool = True) -> dict[str, jax.Array]:
  p = {f"w_{n_in}x{n_out}": 0.02 * jax.random.normal(key, (n_in, n_out), jnp.float32)}
  if bias:
    p[f"b_{n_out}"] = jnp.zeros((n_out,), jnp.float32)
  return p


def _ln(d: int) -> dict[str, jax.Array]:
  return {"scale_D": jnp.ones((d,), jnp.float32), "bias_D": jnp.zeros((d,), jnp.float32)}


def init(key: jax.Array, spec: ModelSpec) -> Params:
  """minGPT init: weights N(0, 0.02), biases 0, LayerNorm (1, 0), positional embedding 0."""
  D, F, V = spec.d_model, spec.d_ff, spec.vocab
  k_emb, k_head, *k_blocks = jax.random.split(key, 2 + spec.n_layer)
  params: Params = {
      "tok_emb_VxD": 0.02 * jax.random.normal(k_emb, (V, D), jnp.float32),
      "pos_emb_TxD": jnp.zeros((spec.block_size, D), jnp.float32),
      "ln_f": _ln(D),
      "head": _linear(k_head, D, V, bias=False),
  }
  for i, k in enumerate(k_blocks):
    kq, kk, kv, kp, k1, k2 = jax.random.split(k, 6)
    params[f"block_{i}"] = {
        "ln1": _ln(D), "query": _linear(kq, D, D), "key": _linear(kk, D, D), "value": _linear(kv, D, D),
        "proj": _linear(kp, D, D), "ln2": _ln(D), "fc": _linear(k1, D, F), "out": _linear(k2, F, D),
    }
  return params


def decay_mask(params: Params) -> Params:
  """True for Linear weights (keys `w_*`): minGPT decays those only (not biases, LayerNorms, embeddings)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: str(path[-1].key).startswith("w_"), params)


def param_count(params: Params) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def _dense(p: dict[str, jax.Array], x: jax.Array) -> jax.Array:
  """x @ w (+ b) over the last axis (as one 2-D matmul: XLA:CPU's backward of 3-D ones is ~1.5x slower)."""
  (w,) = [v for k, v in p.items() if k.startswith("w_")]
  y_MxO = x.reshape(-1, x.shape[-1]) @ w
  for k, b in p.items():
    if k.startswith("b_"):
      y_MxO = y_MxO + b[None, :]
  return y_MxO.reshape(x.shape[:-1] + (w.shape[1],))


def gelu(x: jax.Array) -> jax.Array:
  """Exact (erf) GELU as PyTorch's nn.GELU(); written out since jax.nn.gelu(approximate=False) differentiates ~3x
  slower on XLA:CPU."""
  return 0.5 * x * (1.0 + jax.lax.erf(x * (1.0 / math.sqrt(2.0))))


def _layer_norm(p: dict[str, jax.Array], x_BxTxD: jax.Array, eps: float = 1e-5) -> jax.Array:
  mean = x_BxTxD.mean(axis=-1, keepdims=True)
  var = jnp.square(x_BxTxD - mean).mean(axis=-1, keepdims=True)
  y = (x_BxTxD - mean) * jax.lax.rsqrt(var + eps)
  return y * p["scale_D"][None, None, :] + p["bias_D"][None, None, :]


def _attention(p: Params, h_BxTxD: jax.Array, n_head: int, first: int) -> jax.Array:
  """Causal self-attention output at positions first..T-1 (queries there; keys and values at every position)."""
  B, T, D = h_BxTxD.shape
  K, Q = D // n_head, T - first
  heads = lambda y_BxLxD: jnp.transpose(y_BxLxD.reshape(B, y_BxLxD.shape[1], n_head, K), (0, 2, 1, 3))
  q_BxHxQxK = heads(_dense(p["query"], h_BxTxD[:, first:]))
  k_BxHxTxK = heads(_dense(p["key"], h_BxTxD))
  v_BxHxTxK = heads(_dense(p["value"], h_BxTxD))
  att_BxHxQxT = jnp.einsum("bhqk,bhtk->bhqt", q_BxHxQxK, k_BxHxTxK) / jnp.sqrt(jnp.float32(K))
  causal_QxT = jnp.arange(first, T)[:, None] >= jnp.arange(T)[None, :]
  att_BxHxQxT = jax.nn.softmax(jnp.where(causal_QxT[None, None], att_BxHxQxT, -jnp.inf), axis=-1)
  y_BxHxQxK = jnp.einsum("bhqt,bhtk->bhqk", att_BxHxQxT, v_BxHxTxK)
  return _dense(p["proj"], jnp.transpose(y_BxHxQxK, (0, 2, 1, 3)).reshape(B, Q, D))


def apply(params: Params, tokens_BxT: jax.Array, spec: ModelSpec, first: int = 0) -> jax.Array:
  """Next-token logits (B, T - first, vocab) at positions first..T-1; position t sees tokens 0..t only.

  `first` > 0 skips the last block's queries, MLP and head at earlier positions (the loss needs only the output
  digits); the logits equal `apply(params, tokens_BxT, spec)[:, first:]` up to float rounding.
  """
  T = tokens_BxT.shape[1]
  with jax.default_matmul_precision(spec.matmul_precision):
    x_BxTxD = params["tok_emb_VxD"][tokens_BxT] + params["pos_emb_TxD"][None, :T]
    for i in range(spec.n_layer):
      p = params[f"block_{i}"]
      f = first if i == spec.n_layer - 1 else 0
      x_BxTxD = x_BxTxD[:, f:] + _attention(p, _layer_norm(p["ln1"], x_BxTxD), spec.n_head, f)
      h_BxTxF = gelu(_dense(p["fc"], _layer_norm(p["ln2"], x_BxTxD)))
      x_BxTxD = x_BxTxD + _dense(p["out"], h_BxTxF)
    return _dense(params["head"], _layer_norm(params["ln_f"], x_BxTxD))


# ------------------------------------------------------------------------------------------------------------------
# Training (one seed; vmapped over seeds by the jitted entry points)


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of one compiled program."""

  model: ModelSpec
  n_digit: int = 4
  lr: float = 1e-4
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  weight_decay: float = 0.1
  grad_clip: float = 1.0


State = dict[str, Any]  # {"params", "opt"}


def make_optimizer(spec: Spec) -> optax.GradientTransformation:
  """Global-norm clipping, then AdamW with decoupled weight decay on Linear weights only (minGPT's Trainer)."""
  return optax.chain(
      optax.clip_by_global_norm(spec.grad_clip),
      optax.adamw(spec.lr, b1=spec.b1, b2=spec.b2, eps=spec.eps, weight_decay=spec.weight_decay, mask=decay_mask))


def init_state(key: jax.Array, spec: Spec) -> State:
  params = init(key, spec.model)
  return {"params": params, "opt": make_optimizer(spec).init(params)}


def per_problem(params: Params, data: Data, spec: Spec) -> tuple[jax.Array, jax.Array]:
  """Mean CE (nats) over the output digits of each problem, and exact match of all of them (greedy decoding of c
  gets c right iff every teacher-forced argmax is right)."""
  out = first_output(spec.n_digit)  # loss_mask(n_digit) is True exactly at positions out.. (a static slice)
  logits_NxOxV, y_NxO = apply(params, data.x_NxT, spec.model, first=out), data.y_NxT[:, out:]
  ce_NxO = optax.softmax_cross_entropy_with_integer_labels(logits_NxOxV, y_NxO)
  exact_N = jnp.all(jnp.argmax(logits_NxOxV, axis=-1) == y_NxO, axis=-1)
  return ce_NxO.mean(axis=-1), exact_N.astype(jnp.float32)


def loss_fn(params: Params, data: Data, spec: Spec) -> tuple[jax.Array, jax.Array]:
  """Mean CE (nats) over all output digits of all problems (minGPT's ignore_index mean), and exact-match accuracy."""
  ce_N, exact_N = per_problem(params, data, spec)
  return ce_N.mean(), exact_N.mean()


def train_step(state: State, batch: Data, *, spec: Spec) -> tuple[State, dict[str, jax.Array]]:
  """One full-batch AdamW step; metrics are the train CE and accuracy *before* the step and the l2 norms."""
  (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch, spec)
  updates, opt = make_optimizer(spec).update(grads, state["opt"], state["params"])
  params = optax.apply_updates(state["params"], updates)
  metrics = {"loss": loss, "acc": acc, "grad_norm": optax.tree.norm(grads), "update_norm": optax.tree.norm(updates),
             "param_norm": optax.tree.norm(params)}
  return {"params": params, "opt": opt}, metrics


def evaluate(params: Params, train: Data, test: Data, spec: Spec) -> dict[str, jax.Array]:
  """Test CE (nats, output digits) and exact-match accuracy on the test problems; the same on the training set."""
  test_ce, test_acc = loss_fn(params, test, spec)
  train_ce, train_acc = loss_fn(params, train, spec)
  return {"test_ce": test_ce, "test_acc": test_acc, "train_ce": train_ce, "train_acc": train_acc}


def chunk(state: State, train: Data, test: Data, *, spec: Spec, n_steps: int):
  """Evaluates, then scans `n_steps` full-batch steps. The train metrics at the chunk start are the first step's
  (same params, same batch), so evaluation only runs the test forward.

  Returns (state, evaluation at the chunk start, step metrics averaged over the chunk + `first_nonfinite_step`:
  the index within the chunk, -1 if none).
  """
  test_ce, test_acc = loss_fn(state["params"], test, spec)
  state, metrics = jax.lax.scan(lambda s, _: train_step(s, train, spec=spec), state, None, length=n_steps)
  evals = {"test_ce": test_ce, "test_acc": test_acc, "train_ce": metrics["loss"][0], "train_acc": metrics["acc"][0]}
  bad = ~jnp.isfinite(metrics["loss"])
  summary = jax.tree.map(lambda m: jnp.mean(m, axis=0), metrics)
  summary["first_nonfinite_step"] = jnp.where(bad.any(), jnp.argmax(bad), -1)
  return state, evals, summary


# Compiled entry points, vmapped over the leading seed axis of keys, states and training sets (test set shared).
@functools.partial(jax.jit, static_argnames=("spec",))
def init_states(keys_S: jax.Array, *, spec: Spec) -> State:
  return jax.vmap(functools.partial(init_state, spec=spec))(keys_S)


@functools.partial(jax.jit, static_argnames=("spec", "n_steps"), donate_argnums=(0,))
def run_chunk(states: State, train: Data, test: Data, *, spec: Spec, n_steps: int):
  return jax.vmap(functools.partial(chunk, spec=spec, n_steps=n_steps), in_axes=(0, 0, None))(states, train, test)


@functools.partial(jax.jit, static_argnames=("spec",))
def run_eval(states: State, train: Data, test: Data, *, spec: Spec) -> dict[str, jax.Array]:
  return jax.vmap(lambda s, tr: evaluate(s["params"], tr, test, spec))(states, train)


# ------------------------------------------------------------------------------------------------------------------
# Sweep over dataset sizes


def _is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


@dataclasses.dataclass(frozen=True)
class Plan:
  """A validated experiment: sizes, steps per size, the static spec."""

  config: dict[str, Any]
  spec: Spec
  sizes: tuple[int, ...]
  steps: tuple[int, ...]  # training steps of each size
  n_seeds: int
  log_steps: np.ndarray  # 0, log_every, ..., max(steps)


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> Plan:
  """Validates a config (ValueError with a clear message) and builds the plan. Touches no device, writes nothing."""
  cfg = as_checked_dict(config, addition_config())
  t, m, tr, sw = cfg["task"], cfg["model"], cfg["train"], cfg["sweep"]

  def positive(name: str, values: Sequence[Any], integer: bool = True) -> None:
    for v in values:
      ok = _is_int(v) if integer else isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
      if not ok or not v > 0:
        raise ValueError(f"{name} must be {'positive integers' if integer else '> 0'}, got {v!r}")

  if not _is_int(cfg["seed"]) or cfg["seed"] < 0:
    raise ValueError(f"seed must be an integer >= 0, got {cfg['seed']!r}")
  positive("task.n_digit", [t["n_digit"]])
  positive("task.n_test", [t["n_test"]])
  if not _is_int(t["split_seed"]) or t["split_seed"] < 0:
    raise ValueError(f"task.split_seed must be an integer >= 0, got {t['split_seed']!r}")
  if t["n_digit"] > 9:
    raise ValueError(f"task.n_digit must be <= 9 (indices are int64), got {t['n_digit']}")
  num = n_problems(t["n_digit"])
  if t["n_test"] >= num:
    raise ValueError(f"task.n_test={t['n_test']} leaves no training problems of the {num} with {t['n_digit']} digits")
  positive("model.n_layer", [m["n_layer"]])
  positive("model.d_model", [m["d_model"]])
  positive("model.n_head", [m["n_head"]])
  positive("model.d_ff", [m["d_ff"]])
  if m["d_model"] % m["n_head"]:
    raise ValueError(f"model.d_model={m['d_model']} must be divisible by model.n_head={m['n_head']}")
  if m["matmul_precision"] not in PRECISIONS:
    raise ValueError(f"model.matmul_precision must be one of {PRECISIONS}, got {m['matmul_precision']!r}")
  for name in ("steps", "log_every", "checkpoint_every", "max_to_keep"):
    positive(f"train.{name}", [tr[name]])
  for name in ("lr", "b1", "b2", "eps", "grad_clip"):
    positive(f"train.{name}", [tr[name]], integer=False)
  for name in ("b1", "b2"):
    if not tr[name] < 1:
      raise ValueError(f"train.{name} must be < 1, got {tr[name]!r}")
  if not isinstance(tr["weight_decay"], (int, float)) or not tr["weight_decay"] >= 0:
    raise ValueError(f"train.weight_decay must be >= 0, got {tr['weight_decay']!r}")
  sizes = as_tuple(sw["train_size"])
  if not sizes:
    raise ValueError("sweep.train_size is empty")
  positive("sweep.train_size", sizes)
  if len(set(sizes)) != len(sizes):
    raise ValueError(f"sweep.train_size has repeated values: {sizes}")
  available = num - t["n_test"]
  if max(sizes) > available:
    raise ValueError(f"sweep.train_size {max(sizes)} exceeds the {available} non-test problems")
  positive("sweep.seeds", [sw["seeds"]])
  log_every = tr["log_every"]
  data_steps = as_tuple(tr["data_steps"])
  if data_steps:
    positive("train.data_steps", data_steps)
    if len(data_steps) not in (1, len(sizes)):
      raise ValueError(f"train.data_steps needs 1 or {len(sizes)} (one per size) values, got {len(data_steps)}")
    data_steps = data_steps * len(sizes) if len(data_steps) == 1 else data_steps
    steps = tuple(-(-math.ceil(d / n) // log_every) * log_every for d, n in zip(data_steps, sizes))
  else:
    if tr["steps"] % log_every:
      raise ValueError(f"train.steps={tr['steps']} must be a multiple of train.log_every={log_every}")
    steps = (tr["steps"],) * len(sizes)
  model = ModelSpec(10, block_size(t["n_digit"]), m["n_layer"], m["d_model"], m["n_head"], m["d_ff"],
                    m["matmul_precision"])
  spec = Spec(model, t["n_digit"], float(tr["lr"]), float(tr["b1"]), float(tr["b2"]), float(tr["eps"]),
              float(tr["weight_decay"]), float(tr["grad_clip"]))
  return Plan(cfg, spec, sizes, steps, sw["seeds"], np.arange(0, max(steps) + 1, log_every))


def seed_keys(p: Plan) -> tuple[jax.Array, list[list[int]]]:
  """Init keys (S,) and the host entropy of each seed's training stream, from split(key(seed), S) split once."""
  with jax.transfer_guard("allow"):  # setup on the host: keys from Python ints
    keys_S = jax.random.split(jax.random.key(p.config["seed"]), p.n_seeds)
    purpose_Sx2 = jax.vmap(lambda k: jax.random.split(k, 2))(keys_S)
    init_S, data_S = purpose_Sx2[:, 0], purpose_Sx2[:, 1]
    entropy = np.asarray(jax.device_get(jax.random.key_data(data_S)), np.uint32)
  return init_S, [[int(v) for v in e.reshape(-1)] for e in entropy]


def datasets(p: Plan, size: int) -> tuple[Data, Data]:
  """Training sets (S, size, T) of every seed and the shared test set (n_test, T), as numpy arrays."""
  n_digit = p.spec.n_digit
  test_idx = held_out_indices(n_digit, p.config["task"]["n_test"], p.config["task"]["split_seed"])
  _, entropy = seed_keys(p)
  train = [make_data(train_indices(n_digit, size, e, test_idx), n_digit) for e in entropy]
  return Data(*(np.stack(a) for a in zip(*train))), make_data(test_idx, n_digit)


def point_name(size: int) -> str:
  return f"n{size}"


class _SizeRun(loop.PointLoop):
  """One training-set size: its seeds as the members of the shared host loop."""

  unit = "seeds"

  def __init__(self, p: Plan, i: int, workdir: str):
    t = p.config["train"]
    super().__init__(point_name(p.sizes[i]), workdir, t["log_every"], p.steps[i] // t["log_every"],
                     t["checkpoint_every"], t["max_to_keep"], p.n_seeds)
    self.p, self.size = p, p.sizes[i]

  def init(self) -> tuple[State, tuple[Data, Data]]:
    init_S, _ = seed_keys(self.p)
    train, test = datasets(self.p, self.size)
    with jax.transfer_guard("allow"):
      train, test = jax.device_put((train, test))
    return init_states(init_S, spec=self.p.spec), (train, test)

  def chunk(self, states: State, data: tuple[Data, Data], step: int):
    states, ev, tm = run_chunk(states, *data, spec=self.p.spec, n_steps=self.log_every)
    ev, tm = jax.device_get((ev, tm))
    bad = tm["first_nonfinite_step"]  # index within the chunk; the loop wants the step
    tm["first_nonfinite_step"] = np.where(bad >= 0, step + bad, -1)
    return states, ev, tm

  def final_eval(self, states: State, data: tuple[Data, Data], step: int) -> dict[str, jax.Array]:
    return run_eval(states, *data, spec=self.p.spec)

  def finite(self, ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"test CE": ev["test_ce"], "train CE": ev["train_ce"]}

  def describe(self, i: int) -> str:
    return f"for train_size={self.size}, seed {i}"

  def record(self, step: int, ev: dict[str, np.ndarray], extra: dict[str, Any], t0: float,
             done: int) -> dict[str, Any]:
    now = time.time()
    return {"point": self.name, "train_size": self.size, "step": step, "time": now,
            "steps_per_s": done / (now - t0) if done else None,
            "test_ce": float(ev["test_ce"].mean()), "test_ce_min": float(ev["test_ce"].min()),
            "test_ce_max": float(ev["test_ce"].max()), "test_acc": float(ev["test_acc"].mean()),
            "train_ce": float(ev["train_ce"].mean()), "train_acc": float(ev["train_acc"].mean()), **extra}

  def progress(self, rec: dict[str, Any], step: int) -> str:
    return (f"; at step {step}: test CE {rec['test_ce']:.3f} nats, test acc {rec['test_acc']:.3f}, "
            f"train CE {rec['train_ce']:.3f}")


def assemble(p: Plan, points: dict[int, dict[str, np.ndarray]]) -> io.Curves:
  """Named-axis arrays [train_size, seed, log_step]; NaN past a size's last step and for sizes not yet run.

  Also per [train_size, seed]: `final_test_ce`, `min_test_ce` (min over logged steps), `final_test_acc`.
  """
  S, L = p.n_seeds, len(p.log_steps)
  arrays: dict[str, np.ndarray] = {}
  axes: dict[str, tuple[str, ...]] = {}
  for name in ("test_ce", "test_acc", "train_ce", "train_acc"):
    a = np.full((len(p.sizes), S, L), np.nan, np.float32)
    for i, rec in points.items():
      a[i, :, : rec[name].shape[1]] = rec[name]
    arrays[name], axes[name] = a, AXES
  final_idx = np.asarray([s // p.config["train"]["log_every"] for s in p.steps])
  rows = np.arange(len(p.sizes))
  arrays["final_test_ce"] = arrays["test_ce"][rows, :, final_idx]
  arrays["final_test_acc"] = arrays["test_acc"][rows, :, final_idx]
  arrays["final_train_ce"] = arrays["train_ce"][rows, :, final_idx]
  with np.errstate(all="ignore"):
    arrays["min_test_ce"] = np.full((len(p.sizes), S), np.nan, np.float32)
    for i in points:
      arrays["min_test_ce"][i] = np.nanmin(arrays["test_ce"][i], axis=-1)
  for name in ("final_test_ce", "final_test_acc", "final_train_ce", "min_test_ce"):
    axes[name] = AXES[:2]
  arrays["steps"], axes["steps"] = np.asarray(p.steps), ("train_size",)
  coords = {"train_size": np.asarray(p.sizes), "seed": np.arange(S), "log_step": p.log_steps}
  return io.Curves(arrays, axes, coords)


def summary(curves: io.Curves) -> dict[str, np.ndarray]:
  """Per train_size, means over seeds: final and min-over-training test CE (nats), final exact-match accuracy."""
  return {"train_size": curves.coords["train_size"], "steps": curves["steps"],
          "final_test_ce": curves["final_test_ce"].mean(axis=1), "min_test_ce": curves["min_test_ce"].mean(axis=1),
          "final_test_acc": curves["final_test_acc"].mean(axis=1),
          "final_train_ce": curves["final_train_ce"].mean(axis=1)}


def summary_table(curves: io.Curves) -> str:
  s = summary(curves)
  n_seeds = len(curves.coords["seed"])
  lines = [f"{'train_size':>10} {'steps':>6} {'final test CE':>13} {'min test CE':>11} {'test acc':>8} "
           f"{'train CE':>8}   (nats, means over {n_seeds} seeds)"]
  for i in range(len(s["train_size"])):
    lines.append(f"{s['train_size'][i]:>10d} {s['steps'][i]:>6d} {s['final_test_ce'][i]:>13.4f} "
                 f"{s['min_test_ce'][i]:>11.4f} {s['final_test_acc'][i]:>8.3f} {s['final_train_ce'][i]:>8.4f}")
  return "\n".join(lines)


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str) -> io.Curves:
  """Runs (or resumes) the experiment in `workdir`; returns the curves (also in `workdir/curves.npz`).

  All validation happens before anything is compiled or written.
  """
  p = plan(config)
  workdir = os.path.abspath(workdir)
  resumed = io.check_config(workdir, p.config)
  os.makedirs(workdir, exist_ok=True)
  if not resumed:
    io.write_config(workdir, p.config)
  with jax.transfer_guard("allow"):
    n_params = param_count(jax.eval_shape(functools.partial(init, spec=p.spec.model), jax.random.key(0)))
  logging.info("addition: %d sizes x %d seeds, %d parameters; workdir %s", len(p.sizes), p.n_seeds, n_params, workdir)
  points: dict[int, dict[str, np.ndarray]] = {}
  curves = assemble(p, points)
  for i in range(len(p.sizes)):
    points[i] = _SizeRun(p, i, workdir).run()
    curves = assemble(p, points)
    curves.save(os.path.join(workdir, io.CURVES))
  logging.info("addition summary:\n%s", summary_table(curves))
  return curves
