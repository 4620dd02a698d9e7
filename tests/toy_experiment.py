"""The README's worked example: a toy regression plugged into the engine and swept over seeds and lr.

Each member fits w ∈ R^dim to y = x·w* by SGD on fresh Gaussian batches; w* and the batches come from the member's
seed. `nan_at_step` (>= 0) makes the training loss NaN from that step on for members with lr >= nan_lr: the NaN-stop
contract test uses it.
"""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from scaling.engine import config as C
from scaling.engine import experiment as E
from scaling.engine.members import Grid


class Toy(E.Experiment):
  name = "toy"
  finite_names = {"test_loss": "test loss"}

  def default_config(self):
    return ml_collections.ConfigDict(dict(
        seed=0, dim=8, batch=16, steps=60, log_every=10, checkpoint_every=1, max_to_keep=2, nan_at_step=-1,
        nan_lr=1.0, sweep=dict(seeds=2, lr=(0.01, 0.05, 0.1))))

  def plan(self, cfg):
    spec = (C.integer(cfg, "dim", 1), C.integer(cfg, "batch", 1), C.integer(cfg, "nan_at_step", -1),
            C.number(cfg, "nan_lr"))
    steps, every = C.integer(cfg, "steps", 1), C.integer(cfg, "log_every", 1)
    C.multiple(cfg, "steps", "log_every")
    grid = Grid.of(seed=range(C.integer(cfg, "sweep.seeds", 1)), lr=C.axis(cfg, "sweep.lr", lo=0, lo_open=True))
    return E.Plan(cfg, {}, (E.Point("toy", (), spec, steps),), grid, every, C.integer(cfg, "checkpoint_every", 1),
                  C.integer(cfg, "max_to_keep", 1))

  def inputs(self, plan, point, spec):
    with jax.transfer_guard("allow"):
      keys = jax.random.split(jax.random.key(plan.config["seed"]), plan.grid.shape[0])
    return (keys[plan.grid.index("seed")], plan.grid.column("lr").astype(np.float32)), None

  def init(self, inputs, shared, *, spec):
    key, lr = inputs
    k_true, k_loop = jax.random.split(key)
    return jnp.zeros(spec[0]), (jax.random.normal(k_true, (spec[0],)), k_loop, lr)

  def evaluate(self, w, consts, shared, step, *, spec):
    return {"test_loss": jnp.sum((w - consts[0]) ** 2)}

  def chunk(self, w, consts, shared, start, *, spec, n_steps):
    w_true, k_loop, lr = consts
    dim, batch, nan_at, nan_lr = spec

    def body(w, step):
      x_BxD = jax.random.normal(jax.random.fold_in(k_loop, step), (batch, dim))
      loss, g = jax.value_and_grad(lambda w: jnp.mean((x_BxD @ w - x_BxD @ w_true) ** 2))(w)
      poison = (nan_at >= 0) & (step >= nan_at) & (lr >= nan_lr)
      return w - lr * g, {"loss": jnp.where(poison, jnp.nan, loss)}

    ev = self.evaluate(w, consts, shared, start, spec=spec)
    w, per_step = jax.lax.scan(body, w, start + jnp.arange(n_steps))
    return w, ev, per_step

  def progress(self, rec):
    return f"test loss {rec['test_loss']:.4f}"


TOY = Toy()
