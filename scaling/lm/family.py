"""A model family trained here: 4-6 sizes of our transformer on the local corpus, then the per-token loss scaling
report (spec `quanta.md` §3, "Pythia / LLM results", with our own small models in place of Pythia).

Corpus: `corpus.read_documents(source)` (default "pydoc_data", the Python reference shipped with CPython, NOT the
Pile). Document i is held out iff i % heldout_every == heldout_every - 1 (the rule of `Corpus.split`), applied to the
documents before anything else, so the byte-level BPE tokenizer is trained on the training documents only. It is
deterministic; it is saved to `workdir/tokenizer.json`, and a re-run refuses a workdir whose tokenizer differs from
the one it would train.

Training data: the training documents encoded and joined into one int32 stream with `EOS_ID` between documents,
placed on the device once. Step `s` of seed `k` draws `batch_size` windows of `context.length + 1` tokens at uniform
random starts with `fold_in(data_key_k, s)`, inside the jitted step (no host data pipeline). The loss is the mean
next-token cross-entropy over the `context.length` predictions of every window.

Optimiser: global-norm clipping, then AdamW (b1 0.9, b2 0.95) with decoupled weight decay on the weight matrices
only (embeddings and projection matrices; not norm scales or biases); learning rate: linear warmup from 0 over
`warmup_steps`, then cosine decay to `end_lr_frac` of the peak at the last step.

PRNG: root `key(seed)`, seed axis `split(root, n_seeds)`, each seed key split once into (init, data) keys. Every
size uses the same keys (same batches at every step: common random numbers across sizes).

The sweep engine's conventions (`scaling.loop.PointLoop`): one point per size, named `d<d_model>_L<n_layers>`, its
members the seeds (vmapped); a chunk is one jitted `lax.scan` of `log_every` steps. Each log step records the
held-out eval loss on `eval.n_windows` fixed windows of the held-out stream (evenly spaced starts), the train loss
averaged over the chunk that starts there, the learning rate, steps/s and tokens/s (predictions per second, all
seeds). Checkpoints every `checkpoint_every` chunks; a re-run skips finished sizes and resumes unfinished ones
bitwise.

After training, the final parameters of seed 0 of every size are restored from their checkpoints and evaluated on
the held-out documents truncated to `context.heldout_len` tokens (`evaluate.per_token_losses`: one loss per
next-token prediction, the corpus's flat order), and `evaluate.report` writes the paper's Fig 3 / 4 / 12 analysis.

Workdir: config.json, tokenizer.json, metrics.jsonl, points/<name>.npz, checkpoints/<name>/ (orbax), curves.npz
(axes [size, seed, log_step]), learning_curves.png, losses.npz, report/*.png, summary.md.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import os
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from scaling import io, loop
from scaling.config_utils import as_checked_dict, as_tuple
from scaling.fit.loglog import LN2, fit_loglog
from scaling.lm import corpus as corpus_lib
from scaling.lm import evaluate
from scaling.nn import transformer as lm

AXES = ("size", "seed", "log_step")
TOKENIZER = "tokenizer.json"
LEARNING_CURVES = "learning_curves.png"
ARCHS = ("llama", "gpt_neox")


def family_config() -> ml_collections.ConfigDict:
  """The base config (configs/lm_family.py derives its variants from it)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root key
  c.n_seeds = 1  # vmapped members of every size; the per-token evaluation uses seed 0
  c.corpus = ml_collections.ConfigDict(dict(
      source=corpus_lib.DEFAULT_CORPUS,  # "pydoc_data", a .txt / .jsonl / .jsonl.zst file or a directory
      doc_chars=2000,  # document size of the default corpus (paragraphs packed up to this many characters)
      heldout_every=10,  # document i is held out iff i % heldout_every == heldout_every - 1
      max_docs=0,  # keep the first max_docs documents; 0 = all
  ))
  c.tokenizer = ml_collections.ConfigDict(dict(vocab_size=2048, min_frequency=2))  # BPE on the training documents
  c.context = ml_collections.ConfigDict(dict(
      length=128,  # training windows: length + 1 tokens, length predictions
      heldout_len=128,  # held-out documents are truncated to this many tokens (<= length)
  ))
  c.model = ml_collections.ConfigDict(dict(
      arch="llama",  # or "gpt_neox"
      sizes=((32, 2, 2, 128), (64, 2, 4, 256), (96, 3, 4, 384), (128, 3, 4, 512), (192, 4, 6, 768)),  # (d, L, H, F)
      heads_per_kv=1,  # query heads per key/value head (grouped-query attention); 1 = n_kv_heads = n_heads
  ))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=8, steps=1200, lr=3e-3, warmup_steps=100, end_lr_frac=0.1, b1=0.9, b2=0.95, eps=1e-8,
      weight_decay=0.1, grad_clip=1.0,
      log_every=50,  # steps per chunk (one metrics line each)
      checkpoint_every=4,  # in chunks
      max_to_keep=2,
  ))
  c.eval = ml_collections.ConfigDict(dict(
      n_windows=64,  # fixed held-out windows of the logged eval loss
      batch_size=8,  # documents per batch of the per-token pass
  ))
  return c


# ------------------------------------------------------------------------------------------------------------------
# Plan (validation: no device work, no writes)


@dataclasses.dataclass(frozen=True)
class Spec:
  """Static description of one compiled training program (hashable)."""

  model: lm.LMConfig
  batch_size: int
  length: int  # predictions per window
  steps: int
  lr: float
  warmup_steps: int
  end_lr_frac: float
  b1: float
  b2: float
  eps: float
  weight_decay: float
  grad_clip: float


@dataclasses.dataclass(frozen=True)
class Plan:
  """A validated experiment."""

  config: dict[str, Any]
  specs: tuple[Spec, ...]  # one per size, sorted by non-embedding parameters
  names: tuple[str, ...]
  n_params: tuple[int, ...]
  n_nonemb: tuple[int, ...]
  n_seeds: int
  log_steps: np.ndarray  # 0, log_every, ..., steps


def _is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _int(name: str, v: Any, lo: int) -> int:
  if not _is_int(v) or v < lo:
    raise ValueError(f"{name} must be an integer >= {lo}, got {v!r}")
  return int(v)


def point_name(d_model: int, n_layers: int) -> str:
  return f"d{d_model}_L{n_layers}"


def model_config(arch: str, vocab_size: int, size: Sequence[int], heads_per_kv: int, max_len: int) -> lm.LMConfig:
  """The `LMConfig` of one (d_model, n_layers, n_heads, d_ff) size."""
  d, n_layers, n_heads, d_ff = (int(v) for v in size)
  kv = n_heads // heads_per_kv
  if arch == "llama":
    return lm.llama(vocab_size, d, n_layers, n_heads, d_ff, n_kv_heads=kv, max_len=max_len)
  return lm.gpt_neox(vocab_size, d, n_layers, n_heads, d_ff, n_kv_heads=kv, max_len=max_len)


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> Plan:
  """Validates a config (ValueError naming the field) and builds the plan. Touches no device, writes nothing."""
  cfg = as_checked_dict(config, family_config())
  co, tk, cx, m, tr, ev = (cfg[k] for k in ("corpus", "tokenizer", "context", "model", "train", "eval"))
  _int("seed", cfg["seed"], 0)
  n_seeds = _int("n_seeds", cfg["n_seeds"], 1)
  if not isinstance(co["source"], str) or not co["source"]:
    raise ValueError(f"corpus.source must be a non-empty string, got {co['source']!r}")
  _int("corpus.doc_chars", co["doc_chars"], 1)
  _int("corpus.heldout_every", co["heldout_every"], 2)
  _int("corpus.max_docs", co["max_docs"], 0)
  vocab = _int("tokenizer.vocab_size", tk["vocab_size"], 258)  # 2 special tokens + 256 bytes
  _int("tokenizer.min_frequency", tk["min_frequency"], 1)
  length = _int("context.length", cx["length"], 2)
  heldout_len = _int("context.heldout_len", cx["heldout_len"], 2)
  if heldout_len > length:
    raise ValueError(f"context.heldout_len={heldout_len} exceeds context.length={length}: the models are never "
                     "trained at those positions")
  if m["arch"] not in ARCHS:
    raise ValueError(f"model.arch must be one of {ARCHS}, got {m['arch']!r}")
  heads_per_kv = _int("model.heads_per_kv", m["heads_per_kv"], 1)
  sizes = as_tuple(m["sizes"])
  if not sizes:
    raise ValueError("model.sizes is empty")
  cfgs = []
  for i, size in enumerate(sizes):
    where = f"model.sizes[{i}]={size!r}"
    if not isinstance(size, (tuple, list)) or len(size) != 4 or not all(_is_int(v) and v >= 1 for v in size):
      raise ValueError(f"{where} must be (d_model, n_layers, n_heads, d_ff), positive integers")
    d, _, n_heads, _ = size
    if d % n_heads:
      raise ValueError(f"{where}: d_model={d} is not a multiple of n_heads={n_heads}")
    if n_heads % heads_per_kv:
      raise ValueError(f"{where}: n_heads={n_heads} is not a multiple of model.heads_per_kv={heads_per_kv}")
    try:
      cfgs.append(model_config(m["arch"], vocab, size, heads_per_kv, length))
    except ValueError as e:
      raise ValueError(f"{where}: {e}") from e
  names = tuple(point_name(c.d_model, c.n_layers) for c in cfgs)
  if len(set(names)) != len(names):
    raise ValueError(f"model.sizes give repeated point names {names}: (d_model, n_layers) must be distinct")
  with jax.transfer_guard("allow"):  # eval_shape only (a key from a Python int); nothing is compiled
    counts = [lm.count_params(c) for c in cfgs]
  nonemb = [n for _, n in counts]
  if any(b <= a for a, b in itertools.pairwise(nonemb)):
    raise ValueError(f"model.sizes must be sorted by non-embedding parameters and distinct: "
                     f"{dict(zip(names, nonemb))}")
  for name in ("batch_size", "steps", "log_every", "checkpoint_every", "max_to_keep"):
    _int(f"train.{name}", tr[name], 1)
  if tr["steps"] % tr["log_every"]:
    raise ValueError(f"train.steps={tr['steps']} must be a multiple of train.log_every={tr['log_every']}")
  warmup = _int("train.warmup_steps", tr["warmup_steps"], 0)
  if warmup >= tr["steps"]:
    raise ValueError(f"train.warmup_steps={warmup} must be < train.steps={tr['steps']}")
  for name in ("lr", "eps", "grad_clip"):
    if not _is_number(tr[name]) or not tr[name] > 0:
      raise ValueError(f"train.{name} must be > 0, got {tr[name]!r}")
  for name in ("b1", "b2"):
    if not _is_number(tr[name]) or not 0 <= tr[name] < 1:
      raise ValueError(f"train.{name} must lie in [0, 1), got {tr[name]!r}")
  if not _is_number(tr["weight_decay"]) or tr["weight_decay"] < 0:
    raise ValueError(f"train.weight_decay must be >= 0, got {tr['weight_decay']!r}")
  if not _is_number(tr["end_lr_frac"]) or not 0 <= tr["end_lr_frac"] <= 1:
    raise ValueError(f"train.end_lr_frac must lie in [0, 1], got {tr['end_lr_frac']!r}")
  _int("eval.n_windows", ev["n_windows"], 1)
  _int("eval.batch_size", ev["batch_size"], 1)
  specs = tuple(Spec(c, int(tr["batch_size"]), length, int(tr["steps"]), float(tr["lr"]), warmup,
                     float(tr["end_lr_frac"]), float(tr["b1"]), float(tr["b2"]), float(tr["eps"]),
                     float(tr["weight_decay"]), float(tr["grad_clip"])) for c in cfgs)
  return Plan(cfg, specs, names, tuple(t for t, _ in counts), tuple(nonemb), n_seeds,
              np.arange(0, tr["steps"] + 1, tr["log_every"]))


# ------------------------------------------------------------------------------------------------------------------
# Data (host, before anything is written)


@dataclasses.dataclass(frozen=True)
class Data:
  """The tokenizer, the training stream, the fixed eval windows and the held-out corpus of the per-token pass."""

  tokenizer: Any  # tokenizers.Tokenizer
  n_train_docs: int
  n_heldout_docs: int
  train_N: np.ndarray  # int32 stream of the training documents, EOS between documents
  heldout_N: np.ndarray  # the same for the held-out documents
  eval_windows_ExT1: np.ndarray  # [n_windows, length + 1] int32, evenly spaced starts in heldout_N
  heldout: corpus_lib.Corpus  # held-out documents truncated to heldout_len tokens


def split_documents(docs: Sequence[str], every: int) -> tuple[list[str], list[str]]:
  """(train, held-out) documents: document i is held out iff i % every == every - 1 (`Corpus.split`'s rule)."""
  held = [i % every == every - 1 for i in range(len(docs))]
  return [d for d, h in zip(docs, held) if not h], [d for d, h in zip(docs, held) if h]


def stream(docs: Sequence[str], encode: Any) -> np.ndarray:
  """The documents encoded and joined with `EOS_ID` between them (int32)."""
  parts: list[list[int]] = []
  for i, doc in enumerate(docs):
    if i:
      parts.append([corpus_lib.EOS_ID])
    parts.append(list(encode(doc)))
  return np.fromiter((t for part in parts for t in part), np.int32)


def corpus_label(p: Plan) -> str:
  co = p.config["corpus"]
  base = corpus_lib.source_label(co["source"])
  return (f"{base}; held-out documents (every {co['heldout_every']}th), first {p.config['context']['heldout_len']} "
          "tokens each")


def prepare_data(p: Plan) -> Data:
  """Reads and splits the documents, trains the tokenizer on the training ones, builds the streams and windows."""
  co, cx = p.config["corpus"], p.config["context"]
  docs = corpus_lib.read_documents(co["source"], max_docs=co["max_docs"] or None, doc_chars=co["doc_chars"])
  train_docs, heldout_docs = split_documents(docs, co["heldout_every"])
  if not train_docs or not heldout_docs:
    raise ValueError(f"corpus {co['source']!r}: {len(docs)} documents leave {len(train_docs)} training and "
                     f"{len(heldout_docs)} held-out ones at heldout_every={co['heldout_every']}; need >= 1 of each")
  tok = corpus_lib.train_bpe(train_docs, p.config["tokenizer"]["vocab_size"], p.config["tokenizer"]["min_frequency"])
  encode = corpus_lib.encoder(tok)
  train_N, heldout_N = stream(train_docs, encode), stream(heldout_docs, encode)
  t1 = cx["length"] + 1
  for name, s in (("training", train_N), ("held-out", heldout_N)):
    if s.size < t1:
      raise ValueError(f"the {name} documents hold {s.size} tokens, fewer than one window of context.length + 1 = "
                       f"{t1}")
  starts_E = np.linspace(0, heldout_N.size - t1, p.config["eval"]["n_windows"]).astype(np.int64)
  windows = np.stack([heldout_N[s:s + t1] for s in starts_E]).astype(np.int32)
  heldout = corpus_lib.tokenize(heldout_docs, encode, max_len=cx["heldout_len"], pad_id=corpus_lib.PAD_ID,
                                source=corpus_label(p))
  if heldout.n_predictions < 1:
    raise ValueError("the held-out documents have no next-token predictions")
  return Data(tok, len(train_docs), len(heldout_docs), train_N, heldout_N, windows, heldout)


def check_tokenizer(workdir: str, tok: Any) -> bool:
  """True if `workdir/tokenizer.json` holds `tok`, False if absent; ValueError if it holds a different one."""
  path = os.path.join(workdir, TOKENIZER)
  if not os.path.exists(path):
    return False
  with open(path, encoding="utf-8") as f:
    saved = json.load(f)
  if saved != json.loads(tok.to_str()):
    raise ValueError(f"{path} differs from the tokenizer this config trains on this corpus (did the corpus "
                     "change?); use a new workdir")
  return True


def load_tokenizer(workdir: str) -> Any:
  """The tokenizer saved in `workdir/tokenizer.json`."""
  from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel

  with open(os.path.join(workdir, TOKENIZER), encoding="utf-8") as f:
    return Tokenizer.from_str(f.read())


# ------------------------------------------------------------------------------------------------------------------
# Device work (one seed; vmapped over seeds by the jitted entry points)


class TrainState(NamedTuple):
  params: lm.Params
  opt_state: Any


def learning_rate(step: jax.Array, spec: Spec) -> jax.Array:
  """Linear warmup from 0 over `warmup_steps`, then cosine decay from `lr` to `end_lr_frac * lr` at `steps`."""
  s = jnp.asarray(step, jnp.float32)
  warm = spec.lr * s / max(spec.warmup_steps, 1)
  t = jnp.clip((s - spec.warmup_steps) / max(spec.steps - spec.warmup_steps, 1), 0.0, 1.0)
  decay = spec.lr * (spec.end_lr_frac + (1.0 - spec.end_lr_frac) * 0.5 * (1.0 + jnp.cos(jnp.pi * t)))
  return jnp.where(s < spec.warmup_steps, warm, decay)


def decay_mask(params: lm.Params) -> lm.Params:
  """True for weight matrices (embeddings and `w*` projections), False for norm scales / biases and biases."""
  def is_matrix(path: tuple[Any, ...], _: Any) -> bool:
    name = str(path[-1].key)
    return name in lm.EMBED_NAMES or name.startswith("w")

  return jax.tree_util.tree_map_with_path(is_matrix, params)


def make_optimizer(spec: Spec) -> optax.GradientTransformation:
  return optax.chain(
      optax.clip_by_global_norm(spec.grad_clip),
      optax.adamw(functools.partial(learning_rate, spec=spec), b1=spec.b1, b2=spec.b2, eps=spec.eps,
                  weight_decay=spec.weight_decay, mask=decay_mask))


def init_state(key: jax.Array, spec: Spec) -> TrainState:
  params = lm.init(key, spec.model)
  return TrainState(params, make_optimizer(spec).init(params))


def sample_windows(key: jax.Array, train_N: jax.Array, batch_size: int, length: int) -> jax.Array:
  """`batch_size` windows of `length + 1` tokens at uniform random starts: [B, length + 1] int32."""
  starts_B = jax.random.randint(key, (batch_size,), 0, train_N.shape[0] - length)
  return jax.vmap(lambda s: jax.lax.dynamic_slice(train_N, (s,), (length + 1,)))(starts_B)


def window_loss(params: lm.Params, windows_BxT1: jax.Array, cfg: lm.LMConfig) -> jax.Array:
  """Mean next-token cross-entropy (nats) over all predictions of the windows."""
  logits_BxTxV = lm.apply(params, windows_BxT1[:, :-1], cfg)
  return jnp.mean(lm.cross_entropy(logits_BxTxV, windows_BxT1[:, 1:]))


def train_step(state: TrainState, key: jax.Array, train_N: jax.Array, *,
               spec: Spec) -> tuple[TrainState, dict[str, jax.Array]]:
  """One AdamW step on the batch drawn with `key`; metrics: the loss before the step and the gradient norm."""
  windows_BxT1 = sample_windows(key, train_N, spec.batch_size, spec.length)
  loss, grads = jax.value_and_grad(window_loss)(state.params, windows_BxT1, spec.model)
  updates, opt_state = make_optimizer(spec).update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return TrainState(params, opt_state), {"loss": loss, "grad_norm": optax.tree.norm(grads)}


def chunk(state: TrainState, data_key: jax.Array, start: jax.Array, train_N: jax.Array, eval_ExT1: jax.Array, *,
          spec: Spec, n_steps: int):
  """Evaluates at step `start`, then scans `n_steps` steps (step s uses `fold_in(data_key, s)`).

  Returns (state, {eval_loss, train_loss (mean over the chunk), lr at `start`}, {grad_norm (chunk mean),
  first_nonfinite_step (index within the chunk, -1 if none)}).
  """
  eval_loss = window_loss(state.params, eval_ExT1, spec.model)

  def body(s: TrainState, i: jax.Array):
    return train_step(s, jax.random.fold_in(data_key, start + i), train_N, spec=spec)

  state, metrics = jax.lax.scan(body, state, jnp.arange(n_steps, dtype=jnp.int32))
  bad = ~jnp.isfinite(metrics["loss"])
  evals = {"eval_loss": eval_loss, "train_loss": jnp.mean(metrics["loss"]), "lr": learning_rate(start, spec)}
  summary = {"grad_norm": jnp.mean(metrics["grad_norm"]),
             "first_nonfinite_step": jnp.where(bad.any(), jnp.argmax(bad), -1)}
  return state, evals, summary


# Compiled entry points, vmapped over the leading seed axis of states and data keys (data shared).
@functools.partial(jax.jit, static_argnames=("spec",))
def init_states(keys_S: jax.Array, *, spec: Spec) -> TrainState:
  return jax.vmap(functools.partial(init_state, spec=spec))(keys_S)


@functools.partial(jax.jit, static_argnames=("spec", "n_steps"), donate_argnums=(0,))
def run_chunk(states: TrainState, data_keys_S: jax.Array, start: jax.Array, train_N: jax.Array,
              eval_ExT1: jax.Array, *, spec: Spec, n_steps: int):
  f = functools.partial(chunk, spec=spec, n_steps=n_steps)
  return jax.vmap(f, in_axes=(0, 0, None, None, None))(states, data_keys_S, start, train_N, eval_ExT1)


@functools.partial(jax.jit, static_argnames=("spec",))
def run_eval(states: TrainState, step: jax.Array, eval_ExT1: jax.Array, *, spec: Spec) -> dict[str, jax.Array]:
  """The final evaluation: eval loss at `step`, train loss NaN (no chunk follows), lr at `step`."""
  eval_S = jax.vmap(lambda p: window_loss(p, eval_ExT1, spec.model))(states.params)
  return {"eval_loss": eval_S, "train_loss": jnp.full_like(eval_S, jnp.nan),
          "lr": jnp.full_like(eval_S, learning_rate(step, spec))}


# ------------------------------------------------------------------------------------------------------------------
# The host loop of one size


def seed_keys(p: Plan) -> tuple[jax.Array, jax.Array]:
  """(init keys [S], data keys [S]): split(key(seed), n_seeds), each split once into (init, data)."""
  with jax.transfer_guard("allow"):  # setup on the host: keys from Python ints
    keys_S = jax.random.split(jax.random.key(p.config["seed"]), p.n_seeds)
    purpose_Sx2 = jax.vmap(lambda k: jax.random.split(k, 2))(keys_S)
    return purpose_Sx2[:, 0], purpose_Sx2[:, 1]


class _Aux(NamedTuple):
  data_keys_S: jax.Array
  train_N: jax.Array
  eval_ExT1: jax.Array


def _device_step(step: int) -> jax.Array:
  return jax.device_put(np.int32(step))


class _SizeRun(loop.PointLoop):
  """One model size: its seeds as the members of the shared host loop."""

  unit = "seeds"

  def __init__(self, p: Plan, i: int, workdir: str, data: Data):
    t = p.config["train"]
    super().__init__(p.names[i], workdir, t["log_every"], t["steps"] // t["log_every"], t["checkpoint_every"],
                     t["max_to_keep"], p.n_seeds)
    self.p, self.i, self.spec, self.data = p, i, p.specs[i], data
    self.tokens_per_step = t["batch_size"] * p.config["context"]["length"] * p.n_seeds

  def init(self) -> tuple[TrainState, _Aux]:
    init_S, data_S = seed_keys(self.p)
    with jax.transfer_guard("allow"):  # the data go to the device once
      train_N, eval_ExT1 = jax.device_put((self.data.train_N, self.data.eval_windows_ExT1))
    return init_states(init_S, spec=self.spec), _Aux(data_S, train_N, eval_ExT1)

  def chunk(self, states: TrainState, aux: _Aux, step: int):
    states, ev, tm = run_chunk(states, aux.data_keys_S, _device_step(step), aux.train_N, aux.eval_ExT1,
                               spec=self.spec, n_steps=self.log_every)
    ev, tm = jax.device_get((ev, tm))
    bad = tm["first_nonfinite_step"]  # index within the chunk; the loop wants the step
    tm["first_nonfinite_step"] = np.where(bad >= 0, step + bad, -1)
    return states, ev, tm

  def final_eval(self, states: TrainState, aux: _Aux, step: int) -> dict[str, jax.Array]:
    return run_eval(states, _device_step(step), aux.eval_ExT1, spec=self.spec)

  def finite(self, ev: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"eval loss": ev["eval_loss"]}

  def describe(self, i: int) -> str:
    return f"for size {self.name}, seed {i}"

  def record(self, step: int, ev: dict[str, np.ndarray], extra: dict[str, Any], t0: float,
             done: int) -> dict[str, Any]:
    now = time.time()
    rate = done / (now - t0) if done else None
    train = float(np.mean(ev["train_loss"]))
    return {"point": self.name, "n_nonemb": self.p.n_nonemb[self.i], "step": step, "time": now,
            "steps_per_s": rate, "tokens_per_s": rate * self.tokens_per_step if rate else None,
            "lr": float(np.mean(ev["lr"])), "eval_loss": float(np.mean(ev["eval_loss"])),
            "eval_loss_min": float(np.min(ev["eval_loss"])), "eval_loss_max": float(np.max(ev["eval_loss"])),
            "train_loss": train if math.isfinite(train) else None, **extra}

  def progress(self, rec: dict[str, Any], step: int) -> str:
    train = "-" if rec["train_loss"] is None else f"{rec['train_loss']:.3f}"
    return f"; at step {step}: eval loss {rec['eval_loss']:.3f} nats, train loss {train}, lr {rec['lr']:.2e}"


def final_params(p: Plan, i: int, workdir: str, seed: int = 0) -> lm.Params:
  """Parameters of seed `seed` of size i after its last step, restored from its checkpoint."""
  init_S, _ = seed_keys(p)
  like = init_states(init_S, spec=p.specs[i])
  mngr = io.checkpoint_manager(os.path.join(workdir, "checkpoints", p.names[i]), p.config["train"]["max_to_keep"])
  try:
    latest = mngr.latest_step()
    if latest != p.specs[i].steps:
      raise RuntimeError(f"{p.names[i]}: the latest checkpoint is at step {latest}, not {p.specs[i].steps}")
    states = io.restore_checkpoint(mngr, latest, like)
  finally:
    mngr.close()
  return jax.tree.map(lambda x: x[seed], states.params)


# ------------------------------------------------------------------------------------------------------------------
# Outputs


def assemble(p: Plan, points: dict[int, dict[str, np.ndarray]]) -> io.Curves:
  """Named-axis arrays [size, seed, log_step] (`eval_loss`, `train_loss`: mean over the chunk starting at the log
  step, NaN at the last one; `lr`), NaN for sizes not yet run; `n_nonemb`, `n_params` per size."""
  S, L = p.n_seeds, len(p.log_steps)
  arrays: dict[str, np.ndarray] = {}
  axes: dict[str, tuple[str, ...]] = {}
  for name in ("eval_loss", "train_loss", "lr"):
    a = np.full((len(p.names), S, L), np.nan, np.float32)
    for i, rec in points.items():
      a[i] = rec[name]
    arrays[name], axes[name] = a, AXES
  arrays["n_nonemb"], axes["n_nonemb"] = np.asarray(p.n_nonemb, np.int64), ("size",)
  arrays["n_params"], axes["n_params"] = np.asarray(p.n_params, np.int64), ("size",)
  coords = {"size": np.asarray(p.names), "seed": np.arange(S), "log_step": p.log_steps}
  return io.Curves(arrays, axes, coords)


def learning_curves_figure(p: Plan, curves: io.Curves, path: str) -> str:
  """Held-out eval loss (mean over seeds) against step, one line per size."""
  from scaling import plotting  # pylint: disable=import-outside-toplevel  (matplotlib only for figures)

  plt = plotting.plt
  fig, ax = plt.subplots(figsize=(6, 4.2))
  cmap = plt.get_cmap("viridis")
  for i, name in enumerate(p.names):
    color = cmap(i / max(1, len(p.names) - 1))
    ax.plot(p.log_steps, curves["eval_loss"][i].mean(axis=0), color=color,
            label=f"{name} (N = {p.n_nonemb[i]:,})")
  ax.set(yscale="log", xlabel="step", ylabel="held-out loss (nats)",
         title=f"eval loss on {p.config['eval']['n_windows']} fixed held-out windows")
  ax.legend(fontsize=8)
  fig.tight_layout()
  plotting.save(fig, [path])
  return path


def _training_markdown(p: Plan, curves: io.Curves, data: Data) -> str:
  tr, cx = p.config["train"], p.config["context"]
  tokens = tr["steps"] * tr["batch_size"] * cx["length"]
  about = (f"{len(p.names)} {p.config['model']['arch']} models, {p.n_seeds} seed(s), vocab "
           f"{p.config['tokenizer']['vocab_size']} (BPE on the {data.n_train_docs} training documents: "
           f"{data.train_N.size:,} tokens), context {cx['length']}, {tr['steps']} steps of {tr['batch_size']} "
           f"windows ({tokens:,} training predictions, {tokens / data.train_N.size:.1f} epochs). Held out: "
           f"{data.n_heldout_docs} documents ({data.heldout_N.size:,} tokens).")
  header = ("| model | d_model | layers | heads | d_ff | params | non-embedding | final eval loss (nats) | "
            "last-chunk train loss (nats) |")
  lines = ["## Training", "", about, "", header, "|---|---|---|---|---|---|---|---|---|"]
  for i, name in enumerate(p.names):
    c = p.specs[i].model
    ev, trl = curves["eval_loss"][i, :, -1].mean(), curves["train_loss"][i, :, -2].mean()
    lines.append(f"| {name} | {c.d_model} | {c.n_layers} | {c.n_heads} | {c.d_ff} | {p.n_params[i]:,} | "
                 f"{p.n_nonemb[i]:,} | {ev:.4f} | {trl:.4f} |")
  return "\n".join(lines) + "\n"


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str) -> dict[str, Any]:
  """Trains (or resumes, or skips) every size, evaluates per-token losses on the held-out documents and writes the
  scaling report. Returns a summary: per-size non-embedding params, final eval loss, per-token mean loss, α_N (>= 3
  sizes, else None), tokens/s of the largest model's per-token pass, and the summary.md text (`markdown`).

  The config, corpus and tokenizer are validated before anything is compiled or written.
  """
  p = plan(config)
  workdir = os.path.abspath(workdir)
  resumed = io.check_config(workdir, p.config)
  data = prepare_data(p)
  has_tokenizer = check_tokenizer(workdir, data.tokenizer)
  os.makedirs(workdir, exist_ok=True)
  if not resumed:
    io.write_config(workdir, p.config)
  if not has_tokenizer:
    io.save_text(os.path.join(workdir, TOKENIZER), data.tokenizer.to_str())
  logging.info("lm family: %d sizes x %d seeds, non-embedding params %s; %d training tokens; workdir %s",
               len(p.names), p.n_seeds, dict(zip(p.names, p.n_nonemb)), data.train_N.size, workdir)

  points: dict[int, dict[str, np.ndarray]] = {}
  for i in range(len(p.names)):
    points[i] = _SizeRun(p, i, workdir, data).run()
    assemble(p, points).save(os.path.join(workdir, io.CURVES))
  curves = assemble(p, points)
  learning_curves_figure(p, curves, os.path.join(workdir, LEARNING_CURVES))

  tok = load_tokenizer(workdir)
  decode = corpus_lib.decoder(tok)
  evals = []
  with jax.transfer_guard("allow"):  # the per-token pass copies each batch in and its losses out
    for i, name in enumerate(p.names):
      ev = evaluate.per_token_losses(final_params(p, i, workdir), p.specs[i].model, data.heldout,
                                     batch_size=p.config["eval"]["batch_size"])
      if ev.losses.shape != (data.heldout.n_predictions,) or not np.isfinite(ev.losses).all():
        raise FloatingPointError(f"{name}: per-token losses are not finite on the held-out corpus")
      logging.info("%s: per-token mean loss %.4f nats over %d predictions, %.0f tokens/s", name, ev.mean,
                   ev.losses.size, ev.tokens_per_s)
      evals.append(ev)
    evaluate.save_losses(workdir, p.names, [e.losses for e in evals], [s.model for s in p.specs],
                         [e.tokens_per_s for e in evals], data.heldout.source)

  def contexts(t: int) -> str:
    ctx, target = data.heldout.context(t, decode)
    return f"{ctx}→{target}"

  text = evaluate.report(workdir, contexts=contexts)
  text += "\n" + _training_markdown(p, curves, data)
  io.save_text(os.path.join(workdir, "summary.md"), text)

  means = np.array([e.mean for e in evals])
  fit = fit_loglog(np.asarray(p.n_nonemb), means / LN2, sign=-1.0) if len(p.names) >= 3 else None
  summary = {
      "names": list(p.names), "n_nonemb": list(p.n_nonemb),
      "final_eval_loss": [float(curves["eval_loss"][i, :, -1].mean()) for i in range(len(p.names))],
      "per_token_mean_loss": [float(m) for m in means],
      "alpha_N": None if fit is None else fit.exponent, "alpha_N_stderr": None if fit is None else fit.stderr,
      "n_predictions": data.heldout.n_predictions, "tokens_per_s_largest": float(evals[-1].tokens_per_s),
      "markdown": text,
  }
  logging.info("lm family summary:\n%s", text)
  return summary
