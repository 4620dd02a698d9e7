"""Config checks shared by every experiment, and config-variant arguments.

Every check raises `ValueError` naming the field (dotted path) before anything is compiled or written. `variant`
parses big_vision-style arguments: `--config=configs/msp.py:quick,width=256` gives ("quick", {"width": 256}).
"""

from __future__ import annotations

import ast
import math
import re
from typing import Any, Sequence

import ml_collections
import numpy as np

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


def checked_dict(config: ml_collections.ConfigDict | dict[str, Any],
                 reference: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config` as a plain dict; ValueError when its keys differ from those of `reference` (the default config)."""
  cfg = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
  known, given = flat_keys(reference.to_dict()), flat_keys(cfg)
  if given - known:
    raise ValueError(f"unknown config keys: {sorted(given - known)}")
  if known - given:
    raise ValueError(f"missing config keys: {sorted(known - given)}")
  return cfg


def get(cfg: dict[str, Any], path: str) -> Any:
  """The value at a dotted path."""
  v: Any = cfg
  for k in path.split("."):
    v = v[k]
  return v


def is_int(v: Any) -> bool:
  return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
  """A finite real number (bool is not one)."""
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)


def _range_text(lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> str:
  parts = []
  if lo is not None:
    parts.append(f"{'>' if lo_open else '>='} {lo}")
  if hi is not None:
    parts.append(f"{'<' if hi_open else '<='} {hi}")
  return " and ".join(parts)


def _check_value(name: str, v: Any, integer: bool, lo: Any, hi: Any, lo_open: bool, hi_open: bool) -> None:
  ok = is_int(v) if integer else is_number(v)
  if ok and lo is not None:
    ok = v > lo if lo_open else v >= lo
  if ok and hi is not None:
    ok = v < hi if hi_open else v <= hi
  if not ok:
    kind = "an integer" if integer else "a finite number"
    rng = _range_text(lo, hi, lo_open, hi_open)
    raise ValueError(f"{name} must be {kind}{' ' + rng if rng else ''}, got {v!r}")


def integer(cfg: dict[str, Any], path: str, lo: int | None = None, hi: int | None = None) -> int:
  """The integer at `path`, checked to lie in [lo, hi]."""
  v = get(cfg, path)
  _check_value(path, v, True, lo, hi, False, False)
  return int(v)


def number(cfg: dict[str, Any], path: str, lo: float | None = None, hi: float | None = None, *,
           lo_open: bool = False, hi_open: bool = False) -> float:
  """The finite number at `path`, checked against the bounds (open bounds with `lo_open` / `hi_open`)."""
  v = get(cfg, path)
  _check_value(path, v, False, lo, hi, lo_open, hi_open)
  return float(v)


def choice(cfg: dict[str, Any], path: str, options: Sequence[str]) -> str:
  v = get(cfg, path)
  if v not in options:
    raise ValueError(f"{path} must be one of {tuple(options)}, got {v!r}")
  return v


def axis(cfg: dict[str, Any], path: str, *, integer: bool = False, lo: Any = None, hi: Any = None,
         lo_open: bool = False, allowed: Sequence[Any] = ()) -> tuple:
  """A sweep axis: a non-empty tuple of distinct numbers in range (values in `allowed` pass as they are)."""
  values = as_tuple(get(cfg, path))
  if not values:
    raise ValueError(f"{path} is empty: a sweep axis needs at least one value")
  for v in values:
    if v in allowed and not isinstance(v, bool):
      continue
    _check_value(f"{path} values", v, integer, lo, hi, lo_open, False)
  if len(set(values)) != len(values):
    raise ValueError(f"{path} has repeated values: {values}")
  return values


def program_options(cfg: dict[str, Any], section: str = "sweep") -> dict[str, Any]:
  """A sweep section's `one_program` (bool), `efficiency` (in (0, 1]) and `max_memory_gb` (>= 0), checked, as the
  keyword arguments of `experiment.Plan` (see `scaling.engine.programs`)."""
  one = get(cfg, f"{section}.one_program")
  if not isinstance(one, bool):
    raise ValueError(f"{section}.one_program must be true or false, got {one!r}")
  return {"one_program": one, "efficiency": number(cfg, f"{section}.efficiency", 0, 1, lo_open=True),
          "max_memory_gb": number(cfg, f"{section}.max_memory_gb", 0)}


def multiple(cfg: dict[str, Any], path: str, of: str) -> None:
  """`path` must be a multiple of `of` (both positive integers, already checked)."""
  a, b = get(cfg, path), get(cfg, of)
  if a % b:
    raise ValueError(f"{path}={a} must be a multiple of {of}={b}")


def parse_arg(arg: str | None, default: str) -> tuple[str, dict[str, Any]]:
  """Splits a config argument `name[,key=value...]` into the variant name and overrides (values are Python
  literals, else strings): "quick,width=(256,),train.steps=100" -> ("quick", {"width": (256,), "train.steps": 100})."""
  parts = [p for p in re.split(r",(?![^()\[\]]*[)\]])", arg or "") if p.strip()]
  name = default
  if parts and "=" not in parts[0]:
    name = parts.pop(0).strip()
  out: dict[str, Any] = {}
  for p in parts:
    if "=" not in p:
      raise ValueError(f"config argument {arg!r}: {p!r} is not key=value (the variant name comes first)")
    k, v = (s.strip() for s in p.split("=", 1))
    try:
      out[k] = ast.literal_eval(v)
    except (ValueError, SyntaxError):
      out[k] = v
  return name, out


def apply_args(config: ml_collections.ConfigDict, overrides: dict[str, Any]) -> ml_collections.ConfigDict:
  """Sets each override on `config`: a key is a dotted path (`train.steps`) or a leaf name found once (`width`)."""
  leaves = sorted(flat_keys(config.to_dict()))
  for key, value in overrides.items():
    matches = [p for p in leaves if p == key or p.endswith("." + key)]
    if key in leaves:
      matches = [key]
    if len(matches) != 1:
      why = "is not a field" if not matches else f"is ambiguous ({matches})"
      raise ValueError(f"config argument {key}={value!r} {why}; fields: {leaves}")
    *parents, leaf = matches[0].split(".")
    node = config
    for k in parents:
      node = node[k]
    node[leaf] = tuple(value) if isinstance(value, list) else value
  return config


def variant(arg: str | None, default: str, variants: dict[str, Any]) -> ml_collections.ConfigDict:
  """The config of `variants[name]()` with the argument's overrides applied; ValueError naming unknown variants."""
  name, overrides = parse_arg(arg, default)
  if name not in variants:
    raise ValueError(f"unknown config variant {name!r}; choose one of {sorted(variants)}")
  return apply_args(variants[name](), overrides)
