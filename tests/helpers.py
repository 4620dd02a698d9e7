"""Tiny configs and checkpoints shared by the tests."""

import json
import os

import jax
import numpy as np

from configs import msp as msp_configs
from scaling.nn import transformer as lm


def tiny_config(**sections):
  """A CPU-second-sized sweep: 5 tasks, n=12, widths (8, 16), 2 seeds x 2 alphas, 200 steps."""
  c = msp_configs.get_config("quick")
  c.task.update(n_tasks=5, n=12, k=3)
  c.train.update(batch_size=128, steps=200, log_every=50, eval_per_task=64, checkpoint_every=1)
  c.sweep.update(width=(8, 16), seeds=2, alpha=(0.4, 0.8))
  for name, values in sections.items():
    c[name].update(values)
  return c


def set_dotted(config, overrides):
  """Sets each "section.field" path of `overrides` in a config (a ConfigDict or a plain dict); returns it."""
  for path, v in overrides.items():
    *parents, leaf = path.split(".")
    node = config
    for k in parents:
      node = node[k]
    node[leaf] = v
  return config


def hf_llama_dir(path, tok, d_model, n_layers, seed):
  """A tiny Llama checkpoint directory as Hugging Face writes it (config.json + safetensors + tokenizer.json)."""
  from safetensors.numpy import save_file

  cfg = lm.llama(tok.get_vocab_size(), d_model, n_layers, 2, 2 * d_model, max_len=128)
  p = jax.tree.map(np.asarray, lm.init(jax.random.key(seed), cfg))
  b = p["blocks"]
  sd = {"model.embed_tokens.weight": p["embed"], "model.norm.weight": p["final_norm"]["scale"]}
  names = {"wq": "self_attn.q_proj", "wk": "self_attn.k_proj", "wv": "self_attn.v_proj", "wo": "self_attn.o_proj",
           "w_gate": "mlp.gate_proj", "w_up": "mlp.up_proj", "w_down": "mlp.down_proj"}
  for i in range(n_layers):
    for ours, theirs in names.items():
      sd[f"model.layers.{i}.{theirs}.weight"] = np.ascontiguousarray(b[ours][i].T)
    sd[f"model.layers.{i}.input_layernorm.weight"] = b["norm1"]["scale"][i]
    sd[f"model.layers.{i}.post_attention_layernorm.weight"] = b["norm2"]["scale"][i]
  os.makedirs(path)
  save_file(sd, os.path.join(path, "model.safetensors"))
  tok.save(os.path.join(path, "tokenizer.json"))
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(dict(model_type="llama", vocab_size=cfg.vocab_size, hidden_size=d_model, num_hidden_layers=n_layers,
                   num_attention_heads=2, num_key_value_heads=2, intermediate_size=2 * d_model,
                   max_position_embeddings=128, rms_norm_eps=1e-5, tie_word_embeddings=True), f)
  return cfg, p
