"""Tiny configs shared by the tests."""

from configs import quanta_msp


def tiny_config(**sections):
  """A CPU-second-sized sweep: 5 tasks, n=12, widths (8, 16), 2 seeds x 2 alphas, 200 steps."""
  c = quanta_msp.get_config("quick")
  c.task.update(n_tasks=5, n=12, k=3)
  c.train.update(batch_size=128, steps=200, log_every=50, eval_per_task=64, checkpoint_every=1)
  c.sweep.update(width=(8, 16), seeds=2, alpha=(0.4, 0.8))
  for name, values in sections.items():
    c[name].update(values)
  return c
