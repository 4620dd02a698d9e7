"""A model family trained here: 4-6 sizes of our transformer on the local corpus, then the per-token loss scaling
report (spec `quanta.md` §3, "Pythia / LLM results", with our own small models in place of Pythia), as an
experiment of the engine (`scaling.engine`).

Points are the sizes (shape axis `size`, named `d<d_model>_L<n_layers>`, sorted by non-embedding parameters), members
the seeds (vmapped). PRNG: root `key(seed)`, seed axis `split(root, n_seeds)`, each seed key split once into (init,
data) keys, the member inputs; every size uses the same keys (same batches at every step: common random numbers
across sizes). The training stream and the eval windows are shared inputs (`scaling.lm.family_data`; corpus
`corpus.read_documents(source)`, default "pydoc_data", the Python reference shipped with CPython, NOT the Pile).
Training: `scaling.lm.family_train`.

Data regimes (`data.regime`, `scaling.lm.family_data`): "random" windows (the default), "one_pass" over the stream, or
"reuse" of a slice of `data.reuse_tokens` tokens, epoch after epoch. Each log step records the held-out eval loss on
`eval.n_windows` fixed windows of the held-out stream, the train-window loss (`train_eval_loss`) on `eval.n_windows`
fixed windows of the training data the regime uses, the train loss averaged over the chunk that starts there (NaN at
the last step), the learning rate, steps/s and tokens/s (predictions per second, all seeds). Off the default regime,
`finish` adds the train-test gap table and figure (`scaling.lm.reuse`). After training, `finish` restores the final parameters of seed 0 of every size
(`final_params`) and writes the per-token pass, the report and summary.md (`scaling.lm.family_report`).

Workdir: config.json, tokenizer.json, metrics.jsonl, points/<name>.npz, checkpoints/<name>/ (orbax), curves.npz
(axes [size, seed, log_step]), learning_curves.png, losses.npz, report/*.png, summary.md; train_test.png off the
default regime.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from typing import Any, Sequence

import jax
import ml_collections
import numpy as np
from absl import logging

from scaling.engine import checkpoints
from scaling.engine import config as C
from scaling.engine import experiment as E
from scaling.engine import members
from scaling.engine import io as wd
from scaling.engine.members import Grid
from scaling.lm import corpus as corpus_lib
from scaling.lm import family_data, family_report, family_train
from scaling.lm.family_data import TOKENIZER, load_tokenizer  # noqa: F401  (re-exported)
from scaling.lm.family_train import Spec
from scaling.nn import transformer as lm

AXES = ("size", "seed", "log_step")
LEARNING_CURVES = family_report.LEARNING_CURVES
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
  c.data = ml_collections.ConfigDict(dict(
      regime="random",  # "random" windows, "one_pass" over the stream, "reuse" of a slice (scaling.lm.family_data)
      reuse_tokens=0,  # "reuse": the slice is the first reuse_tokens training tokens (>= one batch of windows)
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


@dataclasses.dataclass(frozen=True)
class Extra:
  """The plan's own data: parameter counts per size; the corpus data once `prepare` has read them."""

  n_params: tuple[int, ...]
  n_nonemb: tuple[int, ...]
  tokens_per_step: int  # predictions per step, all seeds
  data: family_data.Data | None = None


def check_regime(cfg: dict[str, Any]) -> str:
  """The data regime, its fields checked against the batch and context (the corpus is checked in `prepare`)."""
  regime = C.choice(cfg, "data.regime", family_data.REGIMES)
  reuse = C.integer(cfg, "data.reuse_tokens", 0)
  batch, t1 = cfg["train"]["batch_size"], cfg["context"]["length"] + 1
  if regime == "reuse" and reuse < batch * t1:
    raise ValueError(f"data.reuse_tokens={reuse:,} is smaller than one batch of windows, train.batch_size * "
                     f"(context.length + 1) = {batch} * {t1} = {batch * t1:,} tokens")
  if regime != "reuse" and reuse:
    raise ValueError(f"data.reuse_tokens={reuse} is set but data.regime={regime!r}: it applies to 'reuse' only")
  return regime


def point_name(d_model: int, n_layers: int) -> str:
  return f"d{d_model}_L{n_layers}"


def model_config(arch: str, vocab_size: int, size: Sequence[int], heads_per_kv: int, max_len: int) -> lm.LMConfig:
  """The `LMConfig` of one (d_model, n_layers, n_heads, d_ff) size."""
  d, n_layers, n_heads, d_ff = (int(v) for v in size)
  kv = n_heads // heads_per_kv
  if arch == "llama":
    return lm.llama(vocab_size, d, n_layers, n_heads, d_ff, n_kv_heads=kv, max_len=max_len)
  return lm.gpt_neox(vocab_size, d, n_layers, n_heads, d_ff, n_kv_heads=kv, max_len=max_len)


def _model_configs(cfg: dict[str, Any], vocab: int, length: int) -> list[lm.LMConfig]:
  m = cfg["model"]
  heads_per_kv = C.integer(cfg, "model.heads_per_kv", 1)
  sizes = C.as_tuple(m["sizes"])
  if not sizes:
    raise ValueError("model.sizes is empty: give at least one (d_model, n_layers, n_heads, d_ff)")
  cfgs = []
  for i, size in enumerate(sizes):
    where = f"model.sizes[{i}]={size!r}"
    if not isinstance(size, (tuple, list)) or len(size) != 4 or not all(C.is_int(v) and v >= 1 for v in size):
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
  return cfgs


class Family(E.Experiment):
  """Transformer sizes on the local corpus: points are the sizes, members the seeds."""

  name = "lm_family"
  unit = "seeds"
  finite_names = {"eval_loss": "eval loss", "train_eval_loss": "train-window loss"}

  def default_config(self) -> ml_collections.ConfigDict:
    return family_config()

  def plan(self, cfg: dict[str, Any]) -> E.Plan:
    C.integer(cfg, "seed", 0)
    n_seeds = C.integer(cfg, "n_seeds", 1)
    if not isinstance(cfg["corpus"]["source"], str) or not cfg["corpus"]["source"]:
      raise ValueError(f"corpus.source must be a non-empty string, got {cfg['corpus']['source']!r}")
    C.integer(cfg, "corpus.doc_chars", 1)
    C.integer(cfg, "corpus.heldout_every", 2)
    C.integer(cfg, "corpus.max_docs", 0)
    vocab = C.integer(cfg, "tokenizer.vocab_size", 258)  # 2 special tokens + 256 bytes
    C.integer(cfg, "tokenizer.min_frequency", 1)
    length = C.integer(cfg, "context.length", 2)
    heldout_len = C.integer(cfg, "context.heldout_len", 2)
    if heldout_len > length:
      raise ValueError(f"context.heldout_len={heldout_len} exceeds context.length={length}: the models are never "
                       "trained at those positions")
    C.choice(cfg, "model.arch", ARCHS)
    cfgs = _model_configs(cfg, vocab, length)
    names = tuple(point_name(c.d_model, c.n_layers) for c in cfgs)
    if len(set(names)) != len(names):
      raise ValueError(f"model.sizes give repeated point names {names}: (d_model, n_layers) must be distinct")
    with jax.transfer_guard("allow"):  # eval_shape only (a key from a Python int); nothing is compiled
      counts = [lm.count_params(c) for c in cfgs]
    nonemb = tuple(n for _, n in counts)
    if any(b <= a for a, b in itertools.pairwise(nonemb)):
      raise ValueError(f"model.sizes must be sorted by non-embedding parameters and distinct: "
                       f"{dict(zip(names, nonemb))}")
    for name in ("batch_size", "steps", "log_every", "checkpoint_every", "max_to_keep"):
      C.integer(cfg, f"train.{name}", 1)
    C.multiple(cfg, "train.steps", "train.log_every")
    tr = cfg["train"]
    warmup = C.integer(cfg, "train.warmup_steps", 0, tr["steps"] - 1)
    for name in ("lr", "eps", "grad_clip"):
      C.number(cfg, f"train.{name}", 0, lo_open=True)
    for name in ("b1", "b2"):
      C.number(cfg, f"train.{name}", 0, 1, hi_open=True)
    C.number(cfg, "train.weight_decay", 0)
    C.number(cfg, "train.end_lr_frac", 0, 1)
    C.integer(cfg, "eval.n_windows", 1)
    C.integer(cfg, "eval.batch_size", 1)
    regime = check_regime(cfg)
    points = tuple(
        E.Point(n, (i,), Spec(c, int(tr["batch_size"]), length, int(tr["steps"]), float(tr["lr"]), warmup,
                              float(tr["end_lr_frac"]), float(tr["b1"]), float(tr["b2"]), float(tr["eps"]),
                              float(tr["weight_decay"]), float(tr["grad_clip"]), regime),
                tr["steps"], {"n_nonemb": nn}) for i, (n, c, nn) in enumerate(zip(names, cfgs, nonemb)))
    extra = Extra(tuple(t for t, _ in counts), nonemb, tr["batch_size"] * length * n_seeds)
    return E.Plan(cfg, {"size": np.asarray(names)}, points, Grid.of(seed=range(n_seeds)), tr["log_every"],
                  tr["checkpoint_every"], tr["max_to_keep"], extra=extra)

  def prepare(self, plan: E.Plan, workdir: str) -> E.Plan:
    data = family_data.prepare_data(plan.config)
    family_data.check_tokenizer(workdir, data.tokenizer)  # ValueError if the workdir's tokenizer differs
    return dataclasses.replace(plan, extra=dataclasses.replace(plan.extra, data=data))

  def write(self, plan: E.Plan, workdir: str) -> None:
    data = plan.extra.data
    if not family_data.check_tokenizer(workdir, data.tokenizer):
      wd.save_text(os.path.join(workdir, TOKENIZER), data.tokenizer.to_str())
    logging.info("lm family: non-embedding params %s; %d training tokens",
                 dict(zip((p.name for p in plan.points), plan.extra.n_nonemb)), data.train_N.size)

  # -- device work (one seed) ----------------------------------------------------------------------------------
  def inputs(self, plan: E.Plan, point: E.Point, spec):
    init_S, data_S = seed_keys(plan)
    d = plan.extra.data
    return (init_S, data_S), (d.train_N, d.eval_windows_ExT1, d.train_eval_windows_ExT1, d.order_W)

  def init(self, inputs, shared, *, spec: Spec):
    init_key, data_key = inputs
    return family_train.init_state(init_key, spec), data_key

  def chunk(self, state, data_key, shared, start, *, spec: Spec, n_steps: int):
    return family_train.chunk(state, data_key, start, *shared, spec=spec, n_steps=n_steps)

  def evaluate(self, state, data_key, shared, step, *, spec: Spec):
    return family_train.evaluate(state, shared[1], shared[2], step, spec)

  # -- host outputs --------------------------------------------------------------------------------------------
  def record(self, plan: E.Plan, point: E.Point, step: int, ev: dict[str, np.ndarray]) -> dict[str, Any]:
    train = float(np.mean(ev["train_loss"]))
    return {"lr": float(np.mean(ev["lr"])), "eval_loss": float(np.mean(ev["eval_loss"])),
            "eval_loss_min": float(np.min(ev["eval_loss"])), "eval_loss_max": float(np.max(ev["eval_loss"])),
            "train_eval_loss": float(np.mean(ev["train_eval_loss"])),
            "train_loss": train if math.isfinite(train) else None}

  def progress(self, rec: dict[str, Any]) -> str:
    train = "-" if rec["train_loss"] is None else f"{rec['train_loss']:.3f}"
    return (f"eval loss {rec['eval_loss']:.3f} nats, train-window loss {rec['train_eval_loss']:.3f}, train loss "
            f"{train}, lr {rec['lr']:.2e}")

  def arrays(self, plan: E.Plan, arrays) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    return {"n_nonemb": (np.asarray(plan.extra.n_nonemb, np.int64), ("size",)),
            "n_params": (np.asarray(plan.extra.n_params, np.int64), ("size",))}

  def units_per_step(self, plan: E.Plan, point: E.Point) -> dict[str, float]:
    return {"tokens": plan.extra.tokens_per_step}

  def finish(self, plan: E.Plan, workdir: str, curves: wd.Curves) -> dict[str, Any]:
    return family_report.write(plan, workdir, curves, lambda i: final_params(plan, i, workdir))


EXPERIMENT = Family()


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> E.Plan:
  """Checks a config (ValueError naming the field) and builds the plan. Touches no device, writes nothing."""
  return E.check(EXPERIMENT, config)


def seed_keys(plan: E.Plan) -> tuple[jax.Array, jax.Array]:
  """(init keys [S], data keys [S]): split(key(seed), n_seeds), each split once into (init, data)."""
  return members.seed_keys(plan.config["seed"], plan.grid.size, 2)


def final_params(plan: E.Plan, i: int, workdir: str, seed: int = 0) -> lm.Params:
  """Parameters (numpy) of seed `seed` of size i after its last step, restored from its checkpoint."""
  point = plan.points[i]
  state = checkpoints.final_member(os.path.join(workdir, "checkpoints", point.name), plan.max_to_keep, point.steps,
                                   plan.grid.size, lambda: family_train.init_state(jax.random.key(0), point.spec),
                                   seed)
  return state["params"]


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
        devices: Sequence[jax.Device] | None = None) -> dict[str, Any]:
  """Trains (or resumes, or skips) every size, evaluates per-token losses on the held-out documents and writes the
  scaling report; returns the summary of `family_report.write`. The config, corpus and tokenizer are checked before
  anything is compiled or written. `devices`: where the seed axis is sharded (default: all local devices)."""
  return E.run(EXPERIMENT, config, os.path.abspath(workdir), devices)
