r"""Per-token gradient throughput for QDG: the batched method (`qdg.document_grads`: one forward per document,
vmapped VJPs for its selected tokens) against a plain loop of `jax.grad` calls (`qdg.token_grad`, jitted once, one
forward + backward per token), on SmolLM2-135M, and each method's peak memory.

Each method runs in its own subprocess (so `ru_maxrss` is that method's peak resident memory, model included), on
the same document (the default corpus's first document of >= 256 tokens, 256 tokens) and the same 32 positions;
compile time is excluded (one warm-up call). The ratio is taken in one run of this script.

    .venv/bin/python bench/qdg_throughput.py                 # last 2 blocks (the CPU quick config), ~2 min
    .venv/bin/python bench/qdg_throughput.py --last_blocks=0  # every block (the paper's subset)
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time

try:
  import scaling  # noqa: F401
except ImportError:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

N_TOKENS, LENGTH = 32, 256


def worker(method: str, last_blocks: int | None, grad_batch: int) -> dict:
  import jax
  import jax.numpy as jnp
  import numpy as np

  from scaling.lm import checkpoints, qdg
  from scaling.lm import corpus as corpus_lib

  m = checkpoints.load_model("smollm2")
  docs = corpus_lib.read_documents(corpus_lib.DEFAULT_CORPUS)
  corpus = corpus_lib.tokenize(docs, corpus_lib.encoder(m.tokenizer), max_len=LENGTH)
  d = int(np.nonzero(corpus.lengths == LENGTH)[0][0])
  tokens = jnp.asarray(corpus.tokens[d:d + 1])
  positions = np.linspace(1, LENGTH - 2, N_TOKENS).astype(np.int32)
  params = jax.device_put(m.params)
  if method == "batched":
    def run():
      out = []
      for s in range(0, N_TOKENS, grad_batch):
        g, _ = qdg.document_grads(params, tokens, jnp.asarray(positions[s:s + grad_batch]), m.cfg, last_blocks)
        out.append(jax.block_until_ready(g))
      return out
  else:
    grad = jax.jit(qdg.token_grad, static_argnames=("cfg", "last_blocks"))

    def run():
      return [jax.block_until_ready(grad(params, tokens, jnp.int32(p), m.cfg, last_blocks)) for p in positions]
  t0 = time.perf_counter()
  jax.block_until_ready(run()[0])  # compile (+ one pass)
  warm = time.perf_counter() - t0
  t0 = time.perf_counter()
  run()
  dt = time.perf_counter() - t0
  return dict(method=method, tokens_per_s=N_TOKENS / dt, seconds=dt, first_pass_s=warm,
              peak_rss_gb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
              dims=qdg.subset_size(m.cfg, last_blocks))


def main(argv: list[str]) -> None:
  lb = next((int(a.split("=")[1]) for a in argv if a.startswith("--last_blocks=")), 2)
  gb = next((int(a.split("=")[1]) for a in argv if a.startswith("--grad_batch=")), 8)
  if "--worker" in argv:
    print(json.dumps(worker(argv[argv.index("--worker") + 1], lb or None, gb)))
    return
  res = {}
  for method in ("batched", "loop"):
    out = subprocess.run([sys.executable, __file__, "--worker", method, f"--last_blocks={lb}", f"--grad_batch={gb}"],
                         capture_output=True, text=True, check=True)
    res[method] = json.loads(out.stdout.strip().splitlines()[-1])
  blocks = "every block" if not lb else f"the last {lb} blocks"
  print(f"# QDG per-token gradients, SmolLM2-135M, {blocks} ({res['batched']['dims']:,} parameters), "
        f"{N_TOKENS} tokens of one {LENGTH}-token document, grad_batch {gb}\n")
  print("| method | tokens/s | s for 32 tokens | first pass incl. compile (s) | peak RSS (GB) |\n|---|---|---|---|---|")
  for r in res.values():
    print(f"| {r['method']} | {r['tokens_per_s']:.2f} | {r['seconds']:.1f} | {r['first_pass_s']:.1f} | "
          f"{r['peak_rss_gb']:.2f} |")
  print(f"\nbatched / loop throughput: {res['batched']['tokens_per_s'] / res['loop']['tokens_per_s']:.2f}x")


if __name__ == "__main__":
  main(sys.argv[1:])
