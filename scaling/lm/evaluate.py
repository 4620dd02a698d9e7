"""Per-token losses of language models on a corpus (batched, jitted forwards) and the per-token scaling report.

`per_token_losses` runs a model over a `Corpus` in batches of documents. Each batch is cut to its longest document,
rounded up to a multiple of `bucket` tokens, so a handful of compiled shapes serve the whole corpus and padding
costs little. It returns the flat vector of per-prediction losses (nats) in the corpus's flat index order, together
with tokens/s.

A losses workdir (`losses.npz`: `losses_MxT`, `n_nonemb`, `n_params`, `names`; `tokens_per_s`) is the input of
`report`, which writes the paper's Fig 3 / 4 / 12 analysis (`scaling.lm.token_scaling`) as figures and `summary.md`.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from scaling.engine import io
from scaling.lm import corpus as corpus_lib
from scaling.lm import token_scaling
from scaling.nn import transformer as lm
from scaling.engine import launch

LOSSES = "losses.npz"


@functools.partial(jax.jit, static_argnums=(2,))
def _batch_losses(params: lm.Params, tokens_BxT: jax.Array, cfg: lm.LMConfig) -> jax.Array:
  return lm.token_losses(params, tokens_BxT, cfg)


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """Per-token losses (nats, flat corpus order) of one model and how fast they were computed."""

  losses: np.ndarray
  tokens_per_s: float  # valid (non-padding) tokens through the forward per second, after compilation
  seconds: float
  compile_seconds: float

  @property
  def mean(self) -> float:
    return float(self.losses.mean())


def per_token_losses(params: lm.Params, cfg: lm.LMConfig, corpus: corpus_lib.Corpus, batch_size: int = 8,
                     bucket: int = 64) -> Evaluation:
  """Losses of every prediction of `corpus` (flat order), by batched jitted forwards.

  The first batch of each new shape is timed separately (compile) and left out of tokens/s.
  """
  if corpus.max_len > cfg.max_len:
    raise ValueError(f"corpus documents are up to {corpus.max_len} tokens, the model takes {cfg.max_len}")
  if batch_size < 1 or bucket < 1:
    raise ValueError(f"batch_size={batch_size} and bucket={bucket} must be >= 1")
  params = jax.device_put(params)
  out_DxT1 = np.zeros((corpus.n_docs, corpus.max_len - 1), np.float32)
  seen: set[int] = set()
  t_compile = t_run = 0.0
  n_tokens = 0
  for start, tokens_BxT, lengths_B in corpus.batches(batch_size):
    t = int(min(corpus.max_len, -(-max(int(lengths_B.max()), 2) // bucket) * bucket))
    t0 = time.perf_counter()
    losses = np.asarray(_batch_losses(params, jnp.asarray(tokens_BxT[:, :t]), cfg))
    dt = time.perf_counter() - t0
    if t in seen:
      t_run += dt
      n_tokens += int(lengths_B.sum())
    else:
      seen.add(t)
      t_compile += dt
    n = min(batch_size, corpus.n_docs - start)
    out_DxT1[start:start + n, : t - 1] = losses[:n]
  rate = n_tokens / t_run if t_run > 0 else float("nan")
  return Evaluation(corpus.flatten(out_DxT1), rate, t_run + t_compile, t_compile)


def tokens_per_second(params: lm.Params, cfg: lm.LMConfig, batch_size: int, length: int, repeats: int = 3,
                      seed: int = 0) -> float:
  """Forward + per-token loss throughput on random tokens of one shape (median of `repeats`, after compiling)."""
  tokens = jax.random.randint(jax.random.key(seed), (batch_size, length), 0, cfg.vocab_size, jnp.int32)
  params = jax.device_put(params)
  _batch_losses(params, tokens, cfg).block_until_ready()
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    _batch_losses(params, tokens, cfg).block_until_ready()
    times.append(time.perf_counter() - t0)
  return batch_size * length / float(np.median(times))


# ------------------------------------------------------------------------------------------------ losses workdir


def save_losses(workdir: str, names: Sequence[str], losses: Sequence[np.ndarray], cfgs: Sequence[lm.LMConfig],
                tokens_per_s: Sequence[float], source: str) -> str:
  """Writes `losses.npz` (models in the given order) and returns its path."""
  if len({len(x) for x in losses}) != 1:
    raise ValueError(f"models were evaluated on different predictions: {[len(x) for x in losses]}")
  counts = np.array([lm.count_params(c) for c in cfgs], np.int64)
  path = os.path.join(workdir, LOSSES)
  io.save_npz(path, losses_MxT=np.stack(losses).astype(np.float32), n_params=counts[:, 0], n_nonemb=counts[:, 1],
              names=np.array(list(names)), tokens_per_s=np.array(tokens_per_s, np.float64), source=np.array(source))
  return path


def load_losses(workdir: str) -> dict[str, np.ndarray]:
  path = os.path.join(workdir, LOSSES)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} does not exist: evaluate the models first")
  return io.load_npz(path)


@launch.host_driven
def report(workdir: str, contexts: Callable[[int], str] | None = None, fit_models: Any = None) -> str:
  """The per-token scaling report of a losses workdir: figures under `report/` and `summary.md` (returned).

  Models are sorted by non-embedding parameters. With a single model only the per-model table and the loss
  density are written.
  """
  d = load_losses(workdir)
  order = np.argsort(d["n_nonemb"], kind="stable")
  losses, n, names = d["losses_MxT"][order], d["n_nonemb"][order], [str(x) for x in d["names"][order]]
  rates = d["tokens_per_s"][order]
  source = str(d["source"])
  lines = [f"# Per-token losses on {source}", "",
           f"{losses.shape[1]:,} token predictions per model.", "",
           "| model | params | non-embedding | mean loss (nats) | mean loss (bits) | tokens/s (CPU forward) |",
           "|---|---|---|---|---|---|"]
  for i, name in enumerate(names):
    lines.append(f"| {name} | {int(d['n_params'][order][i]):,} | {int(n[i]):,} | {losses[i].mean():.4f} | "
                 f"{losses[i].mean() / np.log(2):.4f} | {rates[i]:,.0f} |")
  text = "\n".join(lines) + "\n"
  out = os.path.join(workdir, "report")
  if len(names) >= 2:
    if np.any(np.diff(n) <= 0):
      raise ValueError(f"models need distinct non-embedding sizes for a scaling report: {dict(zip(names, n))}")
    ts = token_scaling.analyse(losses, n, names, fit_models=fit_models)
    token_scaling.figures(ts, losses, out, contexts=contexts)
    text += "\n" + token_scaling.summary_markdown(ts, source)
  else:
    edges, density, integrand, _ = token_scaling.loss_histograms(losses)
    _single_density_figure(edges, density, integrand, names[0], os.path.join(out, "loss_density.png"))
  io.save_text(os.path.join(workdir, "summary.md"), text)
  logging.info("wrote %s", os.path.join(workdir, "summary.md"))
  return text


def _single_density_figure(edges: np.ndarray, density: np.ndarray, integrand: np.ndarray, name: str,
                           path: str) -> None:
  from scaling import plotting  # noqa: PLC0415  (matplotlib only for figures)

  fig, axes = plotting.plt.subplots(1, 2, figsize=(9, 3.5))
  centres = 0.5 * (edges[1:] + edges[:-1])
  axes[0].plot(centres, density[0])
  axes[0].set(xscale="log", xlabel="per-token loss (bits)", ylabel="p(L)", title=name)
  axes[1].plot(centres, integrand[0])
  axes[1].set(xscale="log", xlabel="per-token loss (bits)", ylabel="L p(L)")
  fig.tight_layout()
  plotting.save(fig, [path])


def parse_fit_models(text: str) -> slice | None:
  """`--fit_models` text: "" (all models) or a Python slice "a:b" over the models sorted by size (the paper fits
  the first 6 of 7 Pythia sizes: ":6" or ":-1")."""
  if not text.strip():
    return None
  parts = text.split(":")
  if len(parts) != 2:
    raise ValueError(f"fit_models {text!r} is not a slice 'a:b' (e.g. ':-1')")
  try:
    a, b = (int(x) if x.strip() else None for x in parts)
  except ValueError as e:
    raise ValueError(f"fit_models {text!r} is not a slice of integers") from e
  return slice(a, b)
