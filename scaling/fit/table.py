"""A user's scaling data from a table -- a CSV file or JSON lines (`.jsonl`) -- for `launch.fit`'s "csv" source.

:func:`load` reads the file named by `source.path` and returns a :class:`Dataset`: one :class:`Group` of points per
combination of the `source.group` columns, each point with x (one column: 1-D; N and D: 2-D, D possibly derived
from a compute column as D = C / (k N)), y, whether it is held out, and the line of the file it came from.

Rows are located by their *line in the file* (1-based; a CSV's header is line 1, its first data row line 2; a
`.jsonl` file's first record is line 1), the number every error message and `source.drop_lines` use. The order of
work: drop lines, drop rows where the `source.drop` expression is true, read the numbers (x, y, compute) of the rows
left (an empty or non-numeric cell, or a value <= 0 where a log is taken, is an error), keep `source.x_min` <=
x <= `source.x_max` (the first x column; 0 = no bound), then hold out points by `source.holdout`:

- "largest": in each group, the points at the `source.n_test` largest distinct x (2-D: the `source.isoflop` budget
  when given, so no compute budget is split between fitting and held-out points; else the compute column, or
  C = k N D); 0 = a fifth of the distinct values, at least one;
- "column": the rows whose `source.test_column` is true (true/false, 1/0, yes/no; JSON booleans);
- "none": nothing held out (no held-out error is reported).

The `source.drop` expression is Python syntax over the columns: names (`lr > 0.01 and seed == 2`), `col("a b")`
for a column whose name is not an identifier, numbers, strings, True/False, comparisons, + - * / **, and/or/not,
and `missing(name)` (or `missing("a b")`): true where the cell is empty, 'nan' or null -- `source.drop="missing(loss)"`
drops the rows without a loss (a dropped row's cells are never read as numbers). A column reads as booleans when
every present cell is one (JSON true/false; true/false in any case in a CSV: `bad`, `not bad`, `bad == True`), as
numbers when every present cell is one (missing cells are NaN: every comparison with them is false but !=), else as
text, which may only be compared with strings (a number or boolean compared with text is refused, naming the column
and its first non-numeric cell).
Nothing here writes anything.
"""

from __future__ import annotations

import ast
import csv
import dataclasses
import json
import math
import operator
from typing import Any

import numpy as np

HOLDOUTS = ("largest", "column", "none")
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq,
        ast.NotEq: operator.ne}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
        ast.Pow: operator.pow, ast.BitAnd: np.logical_and, ast.BitOr: np.logical_or}
_TRUE, _FALSE = ("true", "1", "yes", "1.0"), ("false", "0", "no", "0.0")


@dataclasses.dataclass(frozen=True)
class Table:
  """The cells of a file by column (strings for a CSV, JSON values for `.jsonl`; None = absent), and the file
  line of each row."""

  path: str
  columns: dict[str, list[Any]]
  lines: np.ndarray

  def where(self, i: int, column: str) -> str:
    return f"{self.path}: line {int(self.lines[i])}, column {column!r}"

  def column(self, name: str, field: str) -> list[Any]:
    if name not in self.columns:
      raise ValueError(f"{self.path}: no column {name!r} (named by {field}); the columns are {list(self.columns)}")
    return self.columns[name]

  def numbers(self, name: str, field: str, rows: np.ndarray, positive: bool = False) -> np.ndarray:
    """float64 values of column `name` at `rows`; ValueError naming file, line and column at the first cell that is
    not a finite number (or not > 0 with `positive`: the fits take its log)."""
    cells = self.column(name, field)
    out = np.empty(len(rows))
    for j, i in enumerate(rows):
      v = cells[i]
      try:
        if isinstance(v, bool) or v is None:
          raise ValueError
        out[j] = float(v)
      except (TypeError, ValueError):
        raise ValueError(f"{self.where(i, name)}: {v!r} is not a number ({field})") from None
      if not math.isfinite(out[j]):
        raise ValueError(f"{self.where(i, name)}: {v!r} is not finite ({field})")
      if positive and out[j] <= 0:
        raise ValueError(f"{self.where(i, name)}: {v!r} must be > 0 ({field}: the fits take its log)")
    return out


def read_table(path: str) -> Table:
  """A CSV (header row first) or, for a `.jsonl` path, one JSON object per line (blank lines skipped)."""
  columns: dict[str, list[Any]] = {}
  lines: list[int] = []
  if path.endswith(".jsonl"):
    with open(path, encoding="utf-8-sig") as f:
      for line_no, text in enumerate(f, start=1):
        if not text.strip():
          continue
        try:
          rec = json.loads(text)
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}: line {line_no} is not valid JSON ({e})") from None
        if not isinstance(rec, dict):
          raise ValueError(f"{path}: line {line_no} is not a JSON object (got {type(rec).__name__})")
        for k in rec:
          columns.setdefault(k, [None] * len(lines))
        for k, cells in columns.items():
          cells.append(rec.get(k))
        lines.append(line_no)
  else:
    with open(path, newline="", encoding="utf-8-sig") as f:  # utf-8-sig: Excel writes a BOM
      reader = csv.reader(f)
      header = next(reader, None)
      if not header:
        raise ValueError(f"{path}: empty file (a CSV needs a header line naming its columns)")
      header = [h.strip() for h in header]
      if len(set(header)) != len(header):
        raise ValueError(f"{path}: line 1 (header) repeats a column name: {header}")
      columns = {h: [] for h in header}
      for row in reader:
        if not row:
          continue
        if len(row) != len(header):
          raise ValueError(f"{path}: line {reader.line_num} has {len(row)} cells, the header {len(header)}")
        for h, v in zip(header, row):
          columns[h].append(v.strip())
        lines.append(reader.line_num)
  if not lines:
    raise ValueError(f"{path}: no data rows")
  return Table(path, columns, np.array(lines))


# --------------------------------------------------------------------------- the `source.drop` expression


_MISSING = ("", "nan")  # a cell that reads as missing (besides None / JSON null): NaN in a number column
_BOOL = {"true": True, "false": False}  # CSV spellings of a boolean column (any case); JSON true/false


@dataclasses.dataclass(frozen=True)
class _Text:
  """A column that is neither numbers nor booleans: its cells as strings, for == / != against strings only."""

  values: np.ndarray
  name: str
  first: str  # where its first non-numeric cell is (file, line, column) and what it holds


def _missing(v: Any) -> bool:
  return v is None or (isinstance(v, str) and v.strip().lower() in _MISSING) or (isinstance(v, float) and
                                                                                  math.isnan(v))


def _values(table: Table, name: str, field: str) -> np.ndarray | _Text:
  """A column for the drop expression: bool when every present cell is a boolean (JSON true/false, or true/false in
  any case), float64 when every present cell is a number (missing cells -- empty, 'nan', null -- are NaN; in a
  boolean column they are False), else :class:`_Text`."""
  cells = table.column(name, field)
  present = [(i, v) for i, v in enumerate(cells) if not _missing(v)]
  if present and all(isinstance(v, bool) or (isinstance(v, str) and v.strip().lower() in _BOOL) for _, v in present):
    return np.array([False if _missing(v) else v if isinstance(v, bool) else _BOOL[v.strip().lower()]
                     for v in cells])
  out = np.full(len(cells), math.nan)
  for i, v in present:
    try:
      if isinstance(v, bool):
        raise ValueError
      out[i] = float(v)
    except (TypeError, ValueError):
      return _Text(np.array(["" if u is None else str(u) for u in cells]), name, f"{table.where(i, name)}: {v!r}")
  return out


def _missing_mask(table: Table, name: str, field: str) -> np.ndarray:
  """Rows whose cell in column `name` is empty, 'nan' (any case) or null: `missing(name)` in the expression."""
  return np.array([_missing(v) for v in table.column(name, field)])


def _plain(v: Any, field: str, use: str) -> Any:
  if isinstance(v, _Text):
    raise ValueError(f"{field}: column {v.name!r} holds text ({v.first}), which {use}")
  return v


def _column_arg(node: ast.Call) -> str | None:
  """The column named by f(name) or f("a b") (f = col or missing), else None."""
  if node.keywords or len(node.args) != 1:
    return None
  a = node.args[0]
  if isinstance(a, ast.Name):
    return a.id
  return a.value if isinstance(a, ast.Constant) and isinstance(a.value, str) else None


def _eval(node: ast.AST, table: Table, field: str) -> Any:
  ev = lambda n: _eval(n, table, field)  # noqa: E731
  if isinstance(node, ast.Expression):
    return ev(node.body)
  if isinstance(node, ast.BoolOp):
    op = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
    return op.reduce([np.broadcast_to(_plain(ev(v), field, "and / or cannot use"), (len(table.lines),))
                      for v in node.values])
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
    v = _plain(ev(node.operand), field, "not / - cannot use")
    return np.logical_not(v) if isinstance(node.op, ast.Not) else -v
  if isinstance(node, ast.Compare):
    left, out = ev(node.left), True
    for op, right in zip(node.ops, node.comparators):
      if type(op) not in _CMP:
        raise ValueError(f"{field}: comparison {type(op).__name__} is not supported")
      r = ev(right)
      texts = [u for u in (left, r) if isinstance(u, _Text)]
      others = [u for u in (left, r) if not isinstance(u, (_Text, str))]
      if texts and others:
        raise ValueError(f"{field}: column {texts[0].name!r} holds text ({texts[0].first}) and is compared with a "
                         "number or boolean; compare it with a string ('...'), or drop that row")
      if any(isinstance(u, str) for u in (left, r)) and others:
        num = next(u for u in others)
        what = "booleans" if np.asarray(num).dtype == bool else "numbers"
        raise ValueError(f"{field}: a column of {what} is compared with a string; compare it with a "
                         f"{'boolean' if what == 'booleans' else 'number'}")
      lv, rv = (u.values if isinstance(u, _Text) else u for u in (left, r))
      out = np.logical_and(out, _CMP[type(op)](lv, rv))
      left = r
    return out
  if isinstance(node, ast.BinOp) and type(node.op) in _BIN:
    use = "arithmetic cannot use"
    return _BIN[type(node.op)](_plain(ev(node.left), field, use), _plain(ev(node.right), field, use))
  if isinstance(node, ast.Name):
    return _values(table, node.id, field)
  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("col", "missing"):
    name = _column_arg(node)
    if name is not None:
      return (_values if node.func.id == "col" else _missing_mask)(table, name, field)
  if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
    return node.value
  raise ValueError(f"{field}: {ast.unparse(node)!r} is not supported (use column names, col('name'), "
                   "missing(name), numbers, strings, True / False, comparisons, + - * / **, and / or / not)")


def drop_mask(table: Table, expression: str, field: str = "source.drop") -> np.ndarray:
  """Rows where `expression` is true (bool per row); ValueError naming the field on a bad expression."""
  try:
    tree = ast.parse(expression, mode="eval")
  except SyntaxError as e:
    raise ValueError(f"{field}: {expression!r} is not an expression ({e.msg})") from None
  try:
    with np.errstate(all="ignore"):
      out = _eval(tree, table, f"{field} {expression!r}")
      out = out if isinstance(out, _Text) else np.asarray(out)
  except TypeError as e:  # e.g. a string column compared with a number
    raise ValueError(f"{field} {expression!r} on {table.path}: {e}") from None
  if isinstance(out, _Text) or out.dtype != bool:
    got = f"text ({out.first})" if isinstance(out, _Text) else f"{out.dtype} values"
    raise ValueError(f"{field} {expression!r} must be true or false per row (a comparison), got {got}")
  return np.broadcast_to(out, (len(table.lines),))


# --------------------------------------------------------------------------- groups of points


@dataclasses.dataclass(frozen=True)
class Group:
  """One curve (1-D) or one set of (N, D) runs (2-D), sorted by x (2-D: by compute). x is (P,) or (P, 2);
  compute: C per point (2-D: the compute column, else k N D; None in 1-D); isoflop: each point's compute group
  (`source.isoflop`, else the compute column; None when neither is given); lines: the file line of each point."""

  label: str
  x: np.ndarray
  y: np.ndarray
  test: np.ndarray
  lines: np.ndarray
  compute: np.ndarray | None = None
  isoflop: np.ndarray | None = None

  @property
  def n_fit(self) -> int:
    return int((~self.test).sum())


@dataclasses.dataclass(frozen=True)
class Dataset:
  path: str
  x_names: tuple[str, ...]
  y_name: str
  two_d: bool
  compute_given: bool
  groups: list[Group]


def _bools(table: Table, name: str, field: str, rows: np.ndarray) -> np.ndarray:
  cells = table.column(name, field)
  out = np.empty(len(rows), bool)
  for j, i in enumerate(rows):
    v = cells[i]
    s = str(v).strip().lower() if not isinstance(v, bool) else ("true" if v else "false")
    if s not in _TRUE + _FALSE:
      raise ValueError(f"{table.where(i, name)}: {v!r} is not true/false ({field})")
    out[j] = s in _TRUE
  return out


def _largest(key: np.ndarray, n_test: int) -> np.ndarray:
  distinct = np.unique(key)
  n = n_test if n_test else max(1, len(distinct) // 5)
  return key >= distinct[-n] if n <= len(distinct) else np.ones(len(key), bool)


def load(src: dict[str, Any]) -> Dataset:
  """The groups of points of `src` (the checked `source` section: see the module docstring)."""
  table = read_table(src["path"])
  xs, ycol, ccol = tuple(src["x"]), src["y"], src["compute"]
  for name, field in [(x, "source.x") for x in xs] + [(ycol, "source.y")] + [(g, "source.group") for g in
                                                                                  src["group"]]:
    table.column(name, field)
  keep = np.ones(len(table.lines), bool)
  line_to_row = {int(l): i for i, l in enumerate(table.lines)}
  for line in src["drop_lines"]:
    if line not in line_to_row:
      raise ValueError(f"source.drop_lines: line {line} of {table.path} is not a data row (data rows are on lines "
                       f"{int(table.lines[0])}..{int(table.lines[-1])})")
    keep[line_to_row[line]] = False
  if src["drop"]:
    keep &= ~drop_mask(table, src["drop"])
  rows = np.flatnonzero(keep)
  x0 = table.numbers(xs[0], "source.x", rows, positive=True)
  inside = (x0 >= src["x_min"]) & ((x0 <= src["x_max"]) | (src["x_max"] == 0))
  rows, x0 = rows[inside], x0[inside]
  if not len(rows):
    raise ValueError(f"{table.path}: no rows left after source.drop_lines, source.drop and the x range")
  y = table.numbers(ycol, "source.y", rows, positive=True)
  compute = None
  if ccol:
    compute = table.numbers(ccol, "source.compute", rows, positive=True)
    x = np.stack([x0, compute / (src["k"] * x0)], axis=1)
  elif len(xs) == 2:
    x = np.stack([x0, table.numbers(xs[1], "source.x", rows, positive=True)], axis=1)
    compute = src["k"] * x[:, 0] * x[:, 1]
  else:
    x = x0
  isoflop = None
  if src["isoflop"]:
    isoflop = table.numbers(src["isoflop"], "source.isoflop", rows, positive=True)
  elif ccol:
    isoflop = compute
  if src["holdout"] == "column":
    test = _bools(table, src["test_column"], "source.test_column", rows)
  else:
    test = np.zeros(len(rows), bool)
  keys = [tuple(str(table.columns[g][i]) for g in src["group"]) for i in rows]
  groups = []
  for key in dict.fromkeys(keys):
    idx = np.array([j for j, k in enumerate(keys) if k == key])
    label = ",".join(f"{g}={v}" for g, v in zip(src["group"], key)) or "all"
    keys_sort = (y[idx], x0[idx]) if compute is None else (y[idx], x0[idx], compute[idx])
    order = np.lexsort(keys_sort)  # by compute (2-D), then x, then y
    idx = idx[order]
    if len(idx) < 2:
      raise ValueError(f"{table.path}: group {label} has a single point (line {int(table.lines[rows[idx[0]]])}); "
                       "a curve needs at least 2 (drop it with source.drop or source.drop_lines)")
    t = test[idx]
    if src["holdout"] == "largest":
      rank = x0 if compute is None else compute if isoflop is None else isoflop  # a budget is never split
      t = _largest(rank[idx], src["n_test"])
    groups.append(Group(label, x[idx], y[idx], t, table.lines[rows[idx]],
                        None if compute is None else compute[idx], None if isoflop is None else isoflop[idx]))
  return Dataset(table.path, xs, ycol, x.ndim == 2, bool(ccol), groups)


def check_counts(data: Dataset, need: dict[str, int]) -> None:
  """ValueError when a group has fewer fitting points than a method needs (`need`: method -> points), naming the
  file, the group and the lines of its fitting points."""
  for g in data.groups:
    for method, n in need.items():
      if g.n_fit < n:
        lines = ", ".join(str(int(l)) for l in g.lines[~g.test])
        raise ValueError(f"{data.path}: group {g.label} has {g.n_fit} fitting points (lines {lines}) but {method} "
                         f"needs at least {n} (its parameters; held out: {int(g.test.sum())})")
