"""The member grid of a sweep and its placement on devices.

A *member* is one run inside a compiled program: one combination of the vmapped scalar axes (seed, α, lr, ...). The
grid is their Cartesian product, flattened in C order. On devices, the member axis is padded to a multiple of the
device count by repeating member 0 and sharded over a 1-D mesh; no collectives are needed (members are
independent). Host-side arrays, checkpoints and outputs always hold the real members only.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from scaling.engine import distributed

AXIS = "members"  # the mesh axis name


@dataclasses.dataclass(frozen=True)
class Grid:
  """Vmapped axes: names and coordinate values, in order (the first varies slowest)."""

  axes: tuple[str, ...]
  values: tuple[tuple[Any, ...], ...]

  @classmethod
  def of(cls, **axes: Sequence[Any]) -> "Grid":
    return cls(tuple(axes), tuple(tuple(v) for v in axes.values()))

  @property
  def shape(self) -> tuple[int, ...]:
    return tuple(len(v) for v in self.values)

  @property
  def size(self) -> int:
    return math.prod(self.shape)

  def column(self, axis: str) -> np.ndarray:
    """The value of `axis` for every member (length `size`)."""
    j = self.axes.index(axis)
    return np.asarray(self.values[j])[np.unravel_index(np.arange(self.size), self.shape)[j]]

  def index(self, axis: str) -> np.ndarray:
    """The position along `axis` of every member (e.g. the seed index)."""
    return np.unravel_index(np.arange(self.size), self.shape)[self.axes.index(axis)]

  def coords(self, i: int) -> dict[str, Any]:
    idx = np.unravel_index(i, self.shape)
    return {a: v[j] for a, v, j in zip(self.axes, self.values, idx)}


def seed_keys(seed: int, n_seeds: int, purposes: int = 0) -> jax.Array | tuple[jax.Array, ...]:
  """The seed axis `split(key(seed), n_seeds)` ([S]); with `purposes` > 0, each seed key split once more: a tuple
  of `purposes` key arrays [S] (e.g. init and data keys), the PRNG convention of every experiment."""
  with jax.transfer_guard("allow"):  # setup on the host: keys from Python ints
    keys_S = jax.random.split(jax.random.key(seed), n_seeds)
    if not purposes:
      return keys_S
    keys_SxP = jax.vmap(lambda k: jax.random.split(k, purposes))(keys_S)
    return tuple(keys_SxP[:, i] for i in range(purposes))


def mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A 1-D mesh over `devices` (default: every device of every process)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (AXIS,))


def padded_size(n: int, m: Mesh) -> int:
  return -(-n // m.devices.size) * m.devices.size


def pad(tree: Any, n_padded: int) -> Any:
  """Repeats member 0 to fill the leading axis up to `n_padded` (numpy or jax arrays, keys included)."""
  def f(x):
    n = x.shape[0]
    if n == n_padded:
      return x
    return x[np.arange(n_padded) % n]
  return jax.tree.map(f, tree)


def shard(tree: Any, m: Mesh) -> Any:
  """Pads the leading (member) axis of every leaf and places it sharded over the mesh."""
  n = {x.shape[0] for x in jax.tree.leaves(tree)}
  if len(n) > 1:
    raise ValueError(f"member inputs disagree on the number of members: {sorted(n)}")
  if not n:
    return tree
  return _place(tree, NamedSharding(m, P(AXIS)), padded_size(n.pop(), m))


def replicate(tree: Any, m: Mesh) -> Any:
  """Places `tree` whole on every device of the mesh."""
  return _place(tree, NamedSharding(m, P()))


def _place(tree: Any, sharding: NamedSharding, n_padded: int | None = None) -> Any:
  """`device_put` through host values (PRNG keys as key data), which every process of a multi-host mesh supplies;
  with `n_padded`, the member axis padded first."""
  leaves, treedef = jax.tree.flatten(tree)
  impls = [jax.random.key_impl(x) if distributed.is_key(x) else None for x in leaves]
  host = distributed.to_numpy(leaves)
  with jax.transfer_guard("allow"):  # setup: inputs come from the host
    placed = jax.device_put(host if n_padded is None else pad(host, n_padded), sharding)
    return treedef.unflatten([x if i is None else jax.random.wrap_key_data(x, impl=i)
                              for x, i in zip(placed, impls)])
