"""The train-test gap of a model-family run (`scaling.lm.family`) under a data regime: the dynamical-model paper's
Fig 1(c, d) (spec `dmft.md` §5.1: Wikitext one pass vs 5M tokens reused) with our transformer family.

Per width (mean over seeds): the final train-window loss (`train_eval_loss`, fixed windows of the training data the
regime uses), the final held-out loss (`eval_loss`) and their gap, the gap at a few log steps, whether it grows, and
whether the held-out loss is monotone in width at the last step and at each width's best (early-stopped) step. The
comparison with the DMFT is qualitative (spec §2.4 and §3 "Train–test gap"): the gap starts at 0 and builds up as
O(t / P) with data reuse, larger P (data) delays overfitting, and N near P makes width non-monotonic late in training.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

TRAIN_TEST = "train_test.png"
# A gap "grows" when it rises by more than this from the first mark after step 0 to the last step: a wide margin over
# the noise of the one-pass quick run (no reuse, 128 windows per set), whose |gap| stayed <= 0.03 nats at every mark
# (0.2 nats with 32 windows per set: the sets then differ by more than sampling noise of single windows).
MIN_GROWTH = 0.2
DMFT = ("DMFT (spec dmft.md §2.4, §3): the train-test gap is 0 at t = 0 and builds up as O(t/P) with data reuse, "
        "larger P delays overfitting, and N near P gives a test loss non-monotonic in width at late times; in the "
        "one-pass limit (P = ∞) there is no gap.")


@dataclasses.dataclass(frozen=True)
class GapTable:
  """The train-test gap per width; arrays over sizes [Z] (sorted by non-embedding parameters) and marks [K]."""

  regime: str
  names: tuple[str, ...]
  n_nonemb: tuple[int, ...]
  mark_steps: tuple[int, ...]  # the log steps of `gap_ZxK`
  train_Z: np.ndarray  # final train-window loss (nats)
  test_Z: np.ndarray  # final held-out loss (nats)
  gap_ZxK: np.ndarray  # held-out minus train-window loss at the mark steps
  best_test_Z: np.ndarray  # the lowest held-out loss over the log steps
  best_step_Z: np.ndarray  # its log step

  @property
  def gap_Z(self) -> np.ndarray:
    return self.test_Z - self.train_Z

  @property
  def growth_Z(self) -> np.ndarray:
    """The gap at the last step minus the gap at the first mark after step 0."""
    return self.gap_ZxK[:, -1] - self.gap_ZxK[:, 1]

  @property
  def grows_Z(self) -> np.ndarray:
    """True where the gap grows by more than `MIN_GROWTH` nats from the first mark after step 0 to the last step."""
    return self.growth_Z > MIN_GROWTH

  def order(self, loss_Z: np.ndarray) -> str:
    """The sizes from the lowest loss to the highest, e.g. "d48_L2 < d32_L2 < d16_L1"."""
    return " < ".join(self.names[i] for i in np.argsort(loss_Z, kind="stable"))

  @staticmethod
  def monotone(loss_Z: np.ndarray) -> bool:
    """True when the loss falls strictly with width (sizes are sorted by parameters)."""
    return bool(np.all(np.diff(loss_Z) < 0))

  def to_dict(self) -> dict[str, Any]:
    return {"regime": self.regime, "names": list(self.names), "mark_steps": list(self.mark_steps),
            "train": self.train_Z.tolist(), "test": self.test_Z.tolist(), "gap": self.gap_Z.tolist(),
            "gap_at_marks": self.gap_ZxK.tolist(), "growth": self.growth_Z.tolist(),
            "grows": self.grows_Z.tolist(),
            "best_test": self.best_test_Z.tolist(), "best_step": self.best_step_Z.tolist(),
            "monotone_final": self.monotone(self.test_Z), "monotone_best": self.monotone(self.best_test_Z),
            "order_final": self.order(self.test_Z), "order_best": self.order(self.best_test_Z)}


def mark_indices(n_logs: int, n_marks: int) -> np.ndarray:
  """`n_marks` (>= 3) log-step indices evenly spaced from 0 to the last (fewer if there are fewer log steps)."""
  if n_logs < 3 or n_marks < 3:
    raise ValueError(f"the gap over time needs >= 3 log steps and marks, got {n_logs} and {n_marks}")
  return np.unique(np.linspace(0, n_logs - 1, n_marks).round().astype(int))


def gap_table(regime: str, names: Sequence[str], n_nonemb: Sequence[int], log_steps: np.ndarray,
              test_ZxSxL: np.ndarray, train_ZxSxL: np.ndarray, n_marks: int = 5) -> GapTable:
  """The table of held-out (`eval_loss`) and train-window (`train_eval_loss`) curves [size, seed, log_step]."""
  if test_ZxSxL.shape != train_ZxSxL.shape or test_ZxSxL.shape[::2] != (len(names), len(log_steps)):
    raise ValueError(f"curves of shape {test_ZxSxL.shape} and {train_ZxSxL.shape} do not match {len(names)} sizes x "
                     f"{len(log_steps)} log steps")
  test_ZxL, train_ZxL = test_ZxSxL.mean(axis=1), train_ZxSxL.mean(axis=1)
  marks = mark_indices(len(log_steps), n_marks)
  best = np.argmin(test_ZxL, axis=1)
  return GapTable(regime, tuple(names), tuple(int(n) for n in n_nonemb), tuple(int(log_steps[k]) for k in marks),
                  train_ZxL[:, -1], test_ZxL[:, -1], (test_ZxL - train_ZxL)[:, marks],
                  test_ZxL[np.arange(len(names)), best], np.asarray(log_steps)[best])


def from_curves(plan: Any, curves: Any, n_marks: int = 5) -> GapTable:
  """The table of a family run: `plan` of `scaling.lm.family`, `curves` of its workdir."""
  return gap_table(plan.config["data"]["regime"], [p.name for p in plan.points], plan.extra.n_nonemb,
                   plan.log_steps, curves["eval_loss"], curves["train_eval_loss"], n_marks)


def caption(t: GapTable) -> str:
  """What the run shows, measured, next to the DMFT's qualitative prediction."""
  widest = len(t.names) - 1
  gaps = " -> ".join(f"{g:+.3f}" for g in t.gap_ZxK[widest])
  mono = {True: "monotone", False: "not monotone"}
  return (f"{DMFT} Measured ({t.regime}): the widest model's gap goes {gaps} nats at steps "
          f"{', '.join(map(str, t.mark_steps))}; it grows by > {MIN_GROWTH} nats after step {t.mark_steps[1]} in "
          f"{int(t.grows_Z.sum())} of {len(t.names)} widths; the "
          f"held-out loss is {mono[t.monotone(t.test_Z)]} in width at the last step ({t.order(t.test_Z)}) and "
          f"{mono[t.monotone(t.best_test_Z)]} at each width's best step ({t.order(t.best_test_Z)}).")


def markdown(t: GapTable) -> str:
  """The table as a markdown section, with its caption."""
  marks = " | ".join(f"gap @ {s}" for s in t.mark_steps)
  lines = [f"## Train-test gap ({t.regime})", "",
           f"| model | non-embedding | final train-window loss | final held-out loss | gap | {marks} | "
           "growth (grows) | "
           "best held-out loss (step) |",
           "|---|---|---|---|---|" + "---|" * len(t.mark_steps) + "---|---|"]
  for i, name in enumerate(t.names):
    at = " | ".join(f"{g:+.3f}" for g in t.gap_ZxK[i])
    lines.append(f"| {name} | {t.n_nonemb[i]:,} | {t.train_Z[i]:.3f} | {t.test_Z[i]:.3f} | {t.gap_Z[i]:+.3f} | "
                 f"{at} | {t.growth_Z[i]:+.3f} ({'yes' if t.grows_Z[i] else 'no'}) | "
                 f"{t.best_test_Z[i]:.3f} ({t.best_step_Z[i]}) |")
  return "\n".join(lines + ["", caption(t)]) + "\n"


def figure(plan: Any, curves: Any, path: str) -> str:
  """Train-window (dashed) and held-out (solid) loss against step, one colour per width (mean over seeds)."""
  from scaling import plotting  # pylint: disable=import-outside-toplevel  (matplotlib only for figures)

  plt = plotting.plt
  fig, ax = plt.subplots(figsize=(6, 4.2))
  cmap = plt.get_cmap("viridis")
  n = len(plan.points)
  for i, point in enumerate(plan.points):
    color = cmap(i / max(1, n - 1))
    ax.plot(plan.log_steps, curves["eval_loss"][i].mean(axis=0), color=color, label=f"{point.name} held-out")
    ax.plot(plan.log_steps, curves["train_eval_loss"][i].mean(axis=0), color=color, linestyle="--")
  ax.plot([], [], color="gray", linestyle="--", label="train windows (dashed)")
  ax.set(yscale="log", xlabel="step", ylabel="loss (nats)", title=f"train (dashed) and held-out (solid) loss: "
         f"{plan.config['data']['regime']}")
  ax.legend(fontsize=7)
  fig.tight_layout()
  plotting.save(fig, [path])
  return path
