"""Science check of spec quanta.md §8: the small CI config (10/30/3, α=0.4, width 128, batch 2048, 10k steps).

Bands are the spec's suggested CPU acceptance test, applied to quantities averaged over the config's 3 seeds.
"""

import numpy as np
import pytest

from configs import msp as msp_configs
from scaling.quanta import msp

LN2 = np.log(2)


def _first_below(curve_bits: np.ndarray, steps: np.ndarray, threshold: float = 0.1) -> float:
  below = np.nonzero(curve_bits < threshold)[0]
  return float(steps[below[0]]) if below.size else np.inf


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
  c = msp_configs.get_config("small")
  assert (c.task.n_tasks, c.task.n, c.task.k, c.sweep.width, c.train.batch_size, c.train.steps,
          c.sweep.alpha, c.sweep.seeds) == (10, 30, 3, (128,), 2048, 10_000, (0.4,), 3)
  return msp.run(c, str(tmp_path_factory.mktemp("small")))


def test_chance_at_init_then_emergence_order_and_mean_loss(small_run):
  # one test on the 10k-step run (under xdist two tests of this module could build it on both workers)
  np.testing.assert_allclose(small_run["test_loss"][..., 0] / LN2, 1.0, atol=0.05)  # chance level at init
  steps = small_run.coords["log_step"]
  task_bits = small_run["test_loss_task"][0, 0, :, 0, 0, 0] / LN2  # [seed, log_step, task]
  mean_bits = small_run["test_loss"][0, 0, :, 0, 0, 0] / LN2  # [seed, log_step]
  conv = np.array([[_first_below(task_bits[s, :, t], steps) for t in range(10)] for s in range(3)])
  mean_conv = conv.mean(axis=0)
  print("convergence steps per seed:\n", conv, "\nmean loss [bit] at 3k, 10k:",
        mean_bits[:, steps == 3000].mean(), mean_bits[:, -1].mean())
  assert mean_conv[0] <= 1000, f"task 0 learned at {conv[:, 0]} (spec: 700 in all seeds)"
  assert mean_conv[1] <= 2500, f"task 1 learned at {conv[:, 1]} (spec: 1500-1900)"
  assert mean_conv[2] <= 3500, f"task 2 learned at {conv[:, 2]} (spec: 2200-3100)"
  assert mean_conv[0] < mean_conv[1] < mean_conv[2], "the three most frequent tasks are learned in frequency order"
  at_3k = mean_bits[:, steps == 3000].mean()
  assert 0.12 <= at_3k <= 0.25, f"mean loss at 3000 steps {at_3k:.3f} bit (spec band 0.12-0.25)"
  assert mean_bits[:, -1].mean() < 0.1, f"mean loss at 10k steps {mean_bits[:, -1].mean():.3f} bit (spec < 0.1)"
  learned = (task_bits[:, -1] < 0.1).sum(axis=1)
  assert learned.mean() >= 5, f"learned by 10k: {learned} (spec: 5-9 of 10)"

