"""An analysed MSP workdir (`Run`): its config and curves sliced to what the quantization paper's analysis uses, plus
the fits and values `scaling.quanta.report.analyze` records. Shared by `scaling.quanta.report` and
`scaling.quanta.figures`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from scaling.engine import io
from scaling.fit import loglog
from scaling.quanta import analysis

PAPER_TASK = (500, 100, 3)


@dataclasses.dataclass
class Run:
  """One workdir's curves sliced to what the analysis uses, plus what could be fitted."""

  workdir: str
  config: dict[str, Any]
  curves: io.Curves
  fits: dict[str, dict[float, loglog.Fit]] = dataclasses.field(default_factory=dict)  # quantity -> α -> fit
  values: dict[str, Any] = dataclasses.field(default_factory=dict)
  skipped: list[str] = dataclasses.field(default_factory=list)

  @property
  def task(self) -> tuple[int, int, int]:
    t = self.config["task"]
    return t["n_tasks"], t["n"], t["k"]

  @property
  def alphas(self) -> np.ndarray:
    return self.curves.coords["alpha"]

  @property
  def steps(self) -> np.ndarray:
    return self.curves.coords["log_step"]

  def online(self) -> int | None:
    D = list(self.curves.coords["D"])
    return D.index(-1) if -1 in D else None

  def done(self, iw: int, jd: int) -> bool:
    """Whether shape point (width iw, D jd) has finished (a partial sweep holds NaN for the others)."""
    return bool(np.isfinite(self.curves["test_loss"][iw, jd, :, :, 0, 0, -1]).all())

  def widest(self) -> int:
    return int(np.argmax(self.curves.coords["width"]))

  def online_widths(self) -> list[int]:
    """Indices of the finished online widths, by increasing width."""
    on = self.online()
    order = np.argsort(self.curves.coords["width"])
    return [] if on is None else [int(i) for i in order if self.done(i, on)]

  def fixed_D(self) -> np.ndarray:
    """Indices of the finished fixed-D points at the widest width, by increasing D."""
    D = self.curves.coords["D"]
    idx = np.asarray([j for j in np.nonzero(D >= 1)[0] if self.done(self.widest(), j)], int)
    return idx[np.argsort(D[idx])]

  def loss_bits(self, iw: int, jd: int, a: int) -> np.ndarray:
    """Mean test loss in bits [seed, log_step] (first lr / weight decay)."""
    return analysis.to_bits(self.curves["test_loss"][iw, jd, :, a, 0, 0])

  def task_nats(self, iw: int, jd: int, a: int) -> np.ndarray:
    """Per-subtask test loss in nats [seed, log_step, task]."""
    return self.curves["test_loss_task"][iw, jd, :, a, 0, 0]

  def is_paper_setup(self) -> bool:
    tr = self.config["train"]
    return self.task == PAPER_TASK and tr["batch_size"] == 20000 and self.config["task"]["distribution"] == "zipf"


def load_run(workdir: str) -> Run:
  with open(os.path.join(workdir, io.CONFIG)) as f:
    config = json.load(f)
  return Run(os.path.abspath(workdir), config, io.load_workdir(workdir))
