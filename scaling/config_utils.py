"""Small helpers shared by the experiments' config validation
(`scaling.quanta.msp.plan`, `scaling.bnsl.addition.plan`)."""

from __future__ import annotations

from typing import Any

import ml_collections

PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16")  # model.matmul_precision


def flat_keys(d: dict[str, Any], prefix: str = "") -> set[str]:
  """Dotted paths of the leaves of a nested dict: {"a": {"b": 1}} -> {"a.b"}."""
  out = set()
  for k, v in d.items():
    key = f"{prefix}{k}"
    out |= flat_keys(v, key + ".") if isinstance(v, dict) else {key}
  return out


def as_tuple(v: Any) -> tuple:
  """A list or tuple as a tuple; anything else as a 1-tuple."""
  return tuple(v) if isinstance(v, (list, tuple)) else (v,)


def as_checked_dict(config: ml_collections.ConfigDict | dict[str, Any],
                    reference: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config` as a plain dict; ValueError when its keys differ from those of `reference` (the default config)."""
  cfg = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  known, given = flat_keys(reference.to_dict()), flat_keys(cfg)
  if given - known:
    raise ValueError(f"unknown config keys: {sorted(given - known)}")
  if known - given:
    raise ValueError(f"missing config keys: {sorted(known - given)}")
  return cfg
