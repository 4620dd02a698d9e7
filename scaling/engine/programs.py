"""How a sweep's points become compiled programs.

Per shape (`one_program=False`): every point is its own program, as a single bucket with the point's spec.
One program (`one_program=True`): points the experiment can pack (same `pack_group`) share *buckets*: one static
spec with shapes padded to the bucket's largest (`Experiment.pack`), the members of all its points side by side on
the member axis, each with its own true sizes as traced values. A bucket's points train for the same number of steps,
unless the experiment packs steps (`Experiment.packs_steps`): then a bucket runs to its longest point's steps and
each member stops updating at its own. Buckets bound the padding waste: within each group the points are sorted by
cost and cut into the fewest contiguous buckets whose useful / executed cost (a step's cost x steps) is at least
`efficiency`. All buckets of equal steps run in one program, unless the estimated memory exceeds the budget: then the
buckets (and if needed a bucket's points) are split into as few programs as fit.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Hashable, Sequence

import jax


@dataclasses.dataclass(frozen=True)
class Bucket:
  """Points whose members run as one vmapped block: one static spec, members = points x member grid."""

  spec: Hashable
  points: tuple[Any, ...]  # experiment.Point

  @property
  def steps(self) -> int:
    """Steps the bucket runs: its longest point's (all of them, unless the experiment packs steps)."""
    return max(p.steps for p in self.points)


@dataclasses.dataclass(frozen=True)
class Program:
  """One compiled program (init, chunk and evaluation) of a sweep; its checkpoints live in checkpoints/<name>/."""

  name: str
  buckets: tuple[Bucket, ...]

  @property
  def points(self) -> tuple[Any, ...]:
    return tuple(p for b in self.buckets for p in b.points)


def per_shape(points: Sequence[Any]) -> list[Program]:
  return [Program(p.name, (Bucket(p.spec, (p,)),)) for p in points]


def useful_cost(exp: Any, plan: Any, points: Sequence[Any]) -> float:
  """Cost of the points' own programs: a member-step's cost under each point's spec x its steps."""
  return sum(exp.cost(plan, p.spec) * p.steps for p in points)


def executed_cost(exp: Any, plan: Any, b: Bucket) -> float:
  """Cost of a bucket: every point's members run the bucket's (padded) spec for the bucket's steps."""
  return len(b.points) * exp.cost(plan, b.spec) * b.steps


def _cut(exp: Any, plan: Any, pts: list[Any], efficiency: float) -> list[Bucket]:
  """The fewest contiguous buckets of `pts` (sorted by cost) with useful / executed cost >= efficiency (DP)."""
  n = len(pts)
  spec: dict[tuple[int, int], Hashable] = {}
  executed: dict[tuple[int, int], float] = {}
  for i in range(n):
    for j in range(i + 1, n + 1):
      s = pts[i].spec if j == i + 1 else exp.pack(plan, pts[i:j])
      spec[i, j] = s
      executed[i, j] = math.inf if s is None else executed_cost(exp, plan, Bucket(s, tuple(pts[i:j])))
  useful = useful_cost(exp, plan, pts)
  best = [[math.inf] * (n + 1) for _ in range(n + 1)]  # best[k][j]: least executed cost of pts[:j] in k buckets
  cut = [[0] * (n + 1) for _ in range(n + 1)]
  best[0][0] = 0.0
  for k in range(1, n + 1):
    for j in range(1, n + 1):
      for i in range(k - 1, j):
        c = best[k - 1][i] + executed[i, j]
        if c < best[k][j]:
          best[k][j], cut[k][j] = c, i
    if best[k][n] < math.inf and useful >= efficiency * best[k][n] * (1 - 1e-12):
      bounds, j = [], n
      for kk in range(k, 0, -1):
        bounds.append((cut[kk][j], j))
        j = cut[kk][j]
      return [Bucket(spec[i, j], tuple(pts[i:j])) for i, j in reversed(bounds)]
  return [Bucket(p.spec, (p,)) for p in pts]


def buckets(exp: Any, plan: Any, efficiency: float) -> list[Bucket]:
  """The points packed into buckets, group by group (in the plan's order of first appearance); a group's points share
  their number of steps unless the experiment packs steps."""
  groups: dict[Hashable, list[Any]] = {}
  out: list[Bucket] = []
  for p in plan.points:
    key = exp.pack_group(plan, p)
    if key is None:
      out.append(Bucket(p.spec, (p,)))
    else:
      groups.setdefault(key if exp.packs_steps else (p.steps, key), []).append(p)
  for pts in groups.values():
    out += _cut(exp, plan, sorted(pts, key=lambda p: exp.cost(plan, p.spec)), efficiency)
  return out


def bucket_bytes(exp: Any, plan: Any, b: Bucket) -> float:
  return len(b.points) * plan.grid.size * exp.memory(plan, b.spec)


def memory_budget(plan: Any, devices: Sequence[Any]) -> float:
  """Bytes the member axis may take on its devices: `max_memory_gb` if set, else the devices' own limit (GPU/TPU
  `bytes_limit`; on CPU the host's physical memory shared by the simulated devices), with 20 % headroom."""
  if plan.max_memory_gb > 0:
    return plan.max_memory_gb * 1e9
  local = [d for d in devices if d.process_index == jax.process_index()] or list(devices)
  stats = local[0].memory_stats() if hasattr(local[0], "memory_stats") else None  # an addressable device's
  if stats and stats.get("bytes_limit"):
    return 0.8 * stats["bytes_limit"] * len(devices)
  hosts = len({d.process_index for d in devices})  # CPU devices share their host's memory
  return 0.8 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") * hosts


def _split(exp: Any, plan: Any, b: Bucket, budget: float) -> list[Bucket]:
  """A bucket over the budget cut into the fewest contiguous parts that fit (a single point always fits alone)."""
  parts, start = [], 0
  pts = list(b.points)
  while start < len(pts):
    end = start + 1
    while end < len(pts):
      trial = Bucket(exp.pack(plan, pts[start:end + 1]), tuple(pts[start:end + 1]))
      if bucket_bytes(exp, plan, trial) > budget:
        break
      end += 1
    sub = pts[start:end]
    parts.append(Bucket(sub[0].spec if len(sub) == 1 else exp.pack(plan, sub), tuple(sub)))
    start = end
  return parts


def one_program(exp: Any, plan: Any, budget: float,
                bs: Sequence[Bucket] | None = None) -> tuple[list[Program], dict[str, float]]:
  """The plan's points (or those of buckets `bs`) as few programs as fit `budget` bytes, and a summary (buckets,
  efficiency, memory)."""
  bs = buckets(exp, plan, plan.efficiency) if bs is None else list(bs)
  useful = useful_cost(exp, plan, [p for b in bs for p in b.points])
  executed = sum(executed_cost(exp, plan, b) for b in bs)
  total = sum(bucket_bytes(exp, plan, b) for b in bs)
  items: list[Bucket] = []
  for b in bs:
    items += _split(exp, plan, b, budget) if bucket_bytes(exp, plan, b) > budget and len(b.points) > 1 else [b]
  bins: list[list[Bucket]] = []  # first fit, largest first; a program's buckets run the same number of steps
  for b in sorted(items, key=lambda b: -bucket_bytes(exp, plan, b)):
    for bin_ in bins:
      fits = sum(bucket_bytes(exp, plan, x) for x in bin_) + bucket_bytes(exp, plan, b) <= budget
      if fits and bin_[0].steps == b.steps:
        bin_.append(b)
        break
    else:
      bins.append([b])
  order = {p.name: i for i, p in enumerate(plan.points)}
  bins = sorted((sorted(bin_, key=lambda b: order[b.points[0].name]) for bin_ in bins),
                key=lambda bin_: order[bin_[0].points[0].name])
  names = ["program"] if len(bins) == 1 else [f"program{i}of{len(bins)}" for i in range(len(bins))]
  summary = {"buckets": len(bs), "efficiency": useful / executed if executed else 1.0, "bytes": total,
             "budget": budget, "programs": len(bins)}
  return [Program(n, tuple(bin_)) for n, bin_ in zip(names, bins)], summary


def units(exp: Any, plan: Any) -> list[Bucket]:
  """The sweep's indivisible units of work for a fan-out over jobs: its points (per shape) or its buckets (one
  program, before any memory split). A job that runs whole units compiles the same buckets as the single run, so
  its arrays equal that run's bitwise where it is deterministic."""
  if not plan.one_program:
    return [Bucket(p.spec, (p,)) for p in plan.points]
  return buckets(exp, plan, plan.efficiency)


def assign(exp: Any, plan: Any, us: Sequence[Bucket], n_tasks: int) -> list[tuple[str, ...]]:
  """Units dealt to at most `n_tasks` tasks, largest executed cost first to the least loaded task (LPT); each task
  is the tuple of its points' names, in plan order. No task is empty."""
  load = [0.0] * min(n_tasks, len(us))
  names: list[list[str]] = [[] for _ in load]
  for u in sorted(us, key=lambda u: -executed_cost(exp, plan, u)):
    t = min(range(len(load)), key=load.__getitem__)
    load[t] += executed_cost(exp, plan, u)
    names[t] += [p.name for p in u.points]
  order = {p.name: i for i, p in enumerate(plan.points)}
  return [tuple(sorted(n, key=order.__getitem__)) for n in names]


def _only(us: Sequence[Bucket], only: Sequence[str]) -> list[Bucket]:
  """The units inside `only` (point names); ValueError if `only` names an unknown point or cuts a unit."""
  want, known = set(only), {p.name for u in us for p in u.points}
  if want - known:
    raise ValueError(f"points {sorted(want - known)} are not in the sweep (its points: {sorted(known)})")
  keep = []
  for u in us:
    inside = {p.name for p in u.points} & want
    if inside and len(inside) < len(u.points):
      rest = sorted(p.name for p in u.points if p.name not in want)
      raise ValueError(f"points {sorted(inside)} share a bucket with {rest}: a task runs whole units "
                       "(`programs.units`)")
    if inside:
      keep.append(u)
  return keep


def check_only(exp: Any, plan: Any, only: Sequence[str]) -> None:
  """ValueError unless `only` is a non-empty set of whole units of the plan."""
  if not only:
    raise ValueError("a task must name at least one point")
  _only(units(exp, plan), only)


def plan_programs(exp: Any, plan: Any, devices: Sequence[jax.Device],
                  only: Sequence[str] | None = None) -> tuple[list[Program], dict[str, float]]:
  """The programs of a plan in its mode (per shape, or one program split only as memory requires); `only`: the
  point names of one task of a fan-out (whole units)."""
  if not plan.one_program:
    pts = plan.points if only is None else [u.points[0] for u in _only(units(exp, plan), only)]
    return per_shape(pts), {"programs": len(pts)}
  return one_program(exp, plan, memory_budget(plan, devices),
                     None if only is None else _only(units(exp, plan), only))
