"""Emergence analysis and the quantization paper's exponent fits, on the arrays a workdir holds.

Conventions (spec `quanta.md` §2): losses are stored in nats; a subtask has *converged* at the first logged step
where its loss is < 0.1 **bit** (Fig 8); a subtask is *learned* for Fig 9 when its minimum-over-training loss is
< 0.1 **nats** (as the original's notebooks compared stored values); data-scaling losses are the minimum over logged
test losses (an oracle early stop). Fits are OLS on log-log data and carry a standard error
(`scaling.fit.loglog`).
"""

from __future__ import annotations

import numpy as np

from scaling.fit.loglog import LN2, Fit, fit_loglog

CONVERGED_BITS = 0.1
LEARNED_NATS = 0.1
FLAT_BITS = 0.95  # α_D fits start at the first D whose min-over-training loss is below 0.95 bit


def to_bits(nats: np.ndarray) -> np.ndarray:
  return np.asarray(nats, np.float64) / LN2


# --------------------------------------------------------------------------- per-subtask quantities


def convergence_steps(loss_task_nats: np.ndarray, log_steps: np.ndarray, threshold_bits: float = CONVERGED_BITS
                      ) -> np.ndarray:
  """First logged step with loss < threshold (bits), per subtask; inf where never. Input [..., log_step, task]."""
  below = to_bits(loss_task_nats) < threshold_bits
  first = np.argmax(below, axis=-2)
  steps = np.asarray(log_steps, np.float64)[first]
  return np.where(below.any(axis=-2), steps, np.inf)


def n_learned(loss_task_nats: np.ndarray, threshold_nats: float = LEARNED_NATS) -> np.ndarray:
  """Number of subtasks whose minimum-over-training loss is < threshold (nats). Input [..., log_step, task]."""
  return (np.nanmin(loss_task_nats, axis=-2) < threshold_nats).sum(axis=-1)


def n_learned_final(loss_task_nats: np.ndarray, threshold_bits: float = CONVERGED_BITS) -> np.ndarray:
  """Number of subtasks below threshold (bits) at the last log. Input [..., log_step, task]."""
  return (to_bits(loss_task_nats[..., -1, :]) < threshold_bits).sum(axis=-1)


def min_over_training(loss: np.ndarray) -> np.ndarray:
  """The data-scaling metric: the minimum over logged test losses. Input [..., log_step]."""
  return np.nanmin(loss, axis=-1)


def argmin_step(loss: np.ndarray, log_steps: np.ndarray) -> np.ndarray:
  return np.asarray(log_steps)[np.nanargmin(loss, axis=-1)]


# --------------------------------------------------------------------------- the paper's fits


def fit_alpha_N(N: np.ndarray, final_loss_bits: np.ndarray) -> Fit:
  """α_N: every (N, final loss) point, seeds pooled, all widths. `final_loss_bits` is [width, seed]."""
  final_loss_bits = np.asarray(final_loss_bits, np.float64).reshape(len(N), -1)
  x = np.repeat(np.asarray(N, np.float64), final_loss_bits.shape[1])
  return fit_loglog(x, final_loss_bits.ravel(), sign=-1.0)


def fit_alpha_S(log_steps: np.ndarray, loss_bits: np.ndarray, window: tuple[float, float] = (500, 15_000)) -> Fit:
  """α_S: mean loss vs steps inside the open `window` (paper: width-300 runs, 500 < S < 15,000), seeds pooled.

  `loss_bits` is [seed, log_step] or [log_step].
  """
  loss_bits = np.asarray(loss_bits, np.float64).reshape(-1, len(log_steps))
  s = np.asarray(log_steps, np.float64)
  inside = (s > window[0]) & (s < window[1])
  x = np.broadcast_to(s[inside], loss_bits[:, inside].shape)
  return fit_loglog(x, loss_bits[:, inside], sign=-1.0)


def data_scaling_start(Ds: np.ndarray, min_loss_bits: np.ndarray, flat_bits: float = FLAT_BITS) -> int:
  """Index of the first D (ascending) whose (seed-mean) min-over-training loss is below `flat_bits`."""
  m = np.asarray(min_loss_bits, np.float64).reshape(len(Ds), -1).mean(axis=1)
  below = np.nonzero(m < flat_bits)[0]
  if not below.size:
    raise ValueError(f"no D reaches a min loss below {flat_bits} bit: nothing generalises, α_D is undefined")
  return int(below[0])


def fit_alpha_D(Ds: np.ndarray, min_loss_bits: np.ndarray, flat_bits: float = FLAT_BITS) -> Fit:
  """α_D: min-over-training loss vs D, from the first D below `flat_bits` through the largest D (seeds pooled)."""
  order = np.argsort(Ds)
  Ds = np.asarray(Ds, np.float64)[order]
  m = np.asarray(min_loss_bits, np.float64).reshape(len(Ds), -1)[order]
  i = data_scaling_start(Ds, m, flat_bits)
  return fit_loglog(np.repeat(Ds[i:], m.shape[1]), m[i:].ravel(), sign=-1.0)


def fit_n_learned_D(Ds: np.ndarray, n: np.ndarray) -> Fit:
  """Fig 9: exponent of n_learned(D), fitted from the first D with n > 0 (seeds pooled). `n` is [D, seed]."""
  order = np.argsort(Ds)
  Ds = np.asarray(Ds, np.float64)[order]
  n = np.asarray(n, np.float64).reshape(len(Ds), -1)[order]
  pos = np.nonzero(n.mean(axis=1) > 0)[0]
  if not pos.size:
    raise ValueError("no D learns any subtask: the n_learned(D) exponent is undefined")
  i = int(pos[0])
  return fit_loglog(np.repeat(Ds[i:], n.shape[1]), n[i:].ravel(), sign=1.0)


def fit_convergence_time(probs: np.ndarray, steps: np.ndarray) -> Fit:
  """Fig 8: log(steps to converge) on log(p_i) over the subtasks that converged (and after step 0); slope ≈ -1."""
  probs, steps = np.asarray(probs, np.float64), np.asarray(steps, np.float64)
  ok = np.isfinite(steps) & (steps > 0)
  return fit_loglog(np.broadcast_to(probs, steps.shape)[ok], steps[ok], sign=1.0)
