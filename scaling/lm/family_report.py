"""The family's outputs after training: learning curves, the per-token pass of seed 0 of every size on the held-out
documents (`losses.npz`), the per-token scaling report (`report/`, spec `quanta.md` §3) and `summary.md`; off the
default data regime, the train-test gap table and figure (`scaling.lm.reuse`)."""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np
from absl import logging

from scaling.engine import experiment as E
from scaling.engine import io
from scaling.fit.loglog import LN2, fit_loglog
from scaling.lm import corpus as corpus_lib
from scaling.lm import evaluate, reuse
from scaling.lm.family_data import Data, load_tokenizer

LEARNING_CURVES = "learning_curves.png"
SUMMARY = "summary.md"


def learning_curves_figure(plan: E.Plan, curves: io.Curves, path: str) -> str:
  """Held-out eval loss (mean over seeds) against step, one line per size."""
  from scaling import plotting  # pylint: disable=import-outside-toplevel  (matplotlib only for figures)

  plt = plotting.plt
  fig, ax = plt.subplots(figsize=(6, 4.2))
  cmap = plt.get_cmap("viridis")
  n = len(plan.points)
  for i, point in enumerate(plan.points):
    ax.plot(plan.log_steps, curves["eval_loss"][i].mean(axis=0), color=cmap(i / max(1, n - 1)),
            label=f"{point.name} (N = {plan.extra.n_nonemb[i]:,})")
  ax.set(yscale="log", xlabel="step", ylabel="held-out loss (nats)",
         title=f"eval loss on {plan.config['eval']['n_windows']} fixed held-out windows")
  ax.legend(fontsize=8)
  fig.tight_layout()
  plotting.save(fig, [path])
  return path


def regime_text(plan: E.Plan, data: Data) -> str:
  """How the run used its training stream, e.g. "one pass over 41% of the stream"."""
  tr, t1 = plan.config["train"], plan.config["context"]["length"] + 1
  windows, regime = tr["steps"] * tr["batch_size"], plan.config["data"]["regime"]
  if regime == "one_pass":
    return (f"one pass over {windows:,} of the stream's {data.train_N.size // t1:,} non-overlapping windows "
            f"({windows * t1 / data.train_N.size:.0%} of it), each once")
  if regime == "reuse":
    n = data.order_W.size
    return (f"reuse of a slice of {plan.config['data']['reuse_tokens']:,} tokens ({n:,} windows), "
            f"{windows / n:.1f} epochs in a fixed order")
  return f"random windows, {windows * plan.config['context']['length'] / data.train_N.size:.1f} epochs"


def training_markdown(plan: E.Plan, curves: io.Curves, data: Data) -> str:
  tr, cx, ex = plan.config["train"], plan.config["context"], plan.extra
  tokens = tr["steps"] * tr["batch_size"] * cx["length"]
  about = (f"{len(plan.points)} {plan.config['model']['arch']} models, {plan.grid.size} seed(s), vocab "
           f"{plan.config['tokenizer']['vocab_size']} (BPE on the {data.n_train_docs} training documents: "
           f"{data.train_N.size:,} tokens), context {cx['length']}, {tr['steps']} steps of {tr['batch_size']} "
           f"windows ({tokens:,} training predictions; {regime_text(plan, data)}). Held out: "
           f"{data.n_heldout_docs} documents ({data.heldout_N.size:,} tokens).")
  header = ("| model | d_model | layers | heads | d_ff | params | non-embedding | final eval loss (nats) | "
            "final train-window loss (nats) | last-chunk train loss (nats) |")
  lines = ["## Training", "", about, "", header, "|---|---|---|---|---|---|---|---|---|---|"]
  for i, point in enumerate(plan.points):
    c = point.spec.model
    ev, trl = curves["eval_loss"][i, :, -1].mean(), curves["train_loss"][i, :, -2].mean()
    tew = curves["train_eval_loss"][i, :, -1].mean()
    lines.append(f"| {point.name} | {c.d_model} | {c.n_layers} | {c.n_heads} | {c.d_ff} | {ex.n_params[i]:,} | "
                 f"{ex.n_nonemb[i]:,} | {ev:.4f} | {tew:.4f} | {trl:.4f} |")
  return "\n".join(lines) + "\n"


def write(plan: E.Plan, workdir: str, curves: io.Curves, params_of: Callable[[int], Any]) -> dict[str, Any]:
  """Writes the learning curves, the per-token losses of `params_of(i)` for every size, the report and summary.md;
  returns the summary: per-size non-embedding params, final eval loss, per-token mean loss, α_N (>= 3 sizes, else
  None), tokens/s of the largest model's per-token pass, the train-test gap table off the default regime (`gap`,
  `reuse.GapTable.to_dict`, else None) and the summary.md text (`markdown`)."""
  data: Data = plan.extra.data
  names = [p.name for p in plan.points]
  learning_curves_figure(plan, curves, os.path.join(workdir, LEARNING_CURVES))
  evals = []
  with jax.transfer_guard("allow"):  # the per-token pass copies each batch in and its losses out
    for i, name in enumerate(names):
      ev = evaluate.per_token_losses(params_of(i), plan.points[i].spec.model, data.heldout,
                                     batch_size=plan.config["eval"]["batch_size"])
      if ev.losses.shape != (data.heldout.n_predictions,) or not np.isfinite(ev.losses).all():
        raise FloatingPointError(f"{name}: per-token losses are not finite on the held-out corpus")
      logging.info("%s: per-token mean loss %.4f nats over %d predictions, %.0f tokens/s", name, ev.mean,
                   ev.losses.size, ev.tokens_per_s)
      evals.append(ev)
    evaluate.save_losses(workdir, names, [e.losses for e in evals], [p.spec.model for p in plan.points],
                         [e.tokens_per_s for e in evals], data.heldout.source)

  decode = corpus_lib.decoder(load_tokenizer(workdir))

  def contexts(t: int) -> str:
    ctx, target = data.heldout.context(t, decode)
    return f"{ctx}→{target}"

  text = evaluate.report(workdir, contexts=contexts)
  text += "\n" + training_markdown(plan, curves, data)
  gap = None
  if plan.config["data"]["regime"] != "random":
    gap = reuse.from_curves(plan, curves)
    reuse.figure(plan, curves, os.path.join(workdir, reuse.TRAIN_TEST))
    text += "\n" + reuse.markdown(gap)
  io.save_text(os.path.join(workdir, SUMMARY), text)

  means = np.array([e.mean for e in evals])
  n_nonemb = list(plan.extra.n_nonemb)
  fit = fit_loglog(np.asarray(n_nonemb), means / LN2, sign=-1.0) if len(names) >= 3 else None
  summary = {
      "names": names, "n_nonemb": n_nonemb,
      "final_eval_loss": [float(curves["eval_loss"][i, :, -1].mean()) for i in range(len(names))],
      "per_token_mean_loss": [float(m) for m in means],
      "alpha_N": None if fit is None else fit.exponent, "alpha_N_stderr": None if fit is None else fit.stderr,
      "n_predictions": data.heldout.n_predictions, "tokens_per_s_largest": float(evals[-1].tokens_per_s),
      "gap": None if gap is None else gap.to_dict(), "markdown": text,
  }
  logging.info("lm family summary:\n%s", text)
  return summary
