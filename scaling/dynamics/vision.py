"""One-pass training of 1-D ResNets of several widths on MNIST-1D (even vs odd digit), as an experiment of the engine:
the dynamical-model paper's Fig 1(a, b) (spec `dmft.md` §5.1) on a real network, measured as a surface L(t, N).

Model: `scaling.nn.cnn` (a small 1-D ResNet, channel-width multiplier `width`, one logit, no normalisation). Data:
`scaling.dynamics.vision_data` (a pool of train.steps x train.batch_size fresh samples, each used once, and a fixed
disjoint held-out set of data.n_test samples; `data.order` says whether seeds share the stream). Points are the widths
(shape axis `width`, one compiled program each: widths are not packed into one program); members are the seeds
(vmapped), seed key j = split(key(seed), sweep.seeds)[j], split once into (init, data) keys, the same for every width
(common random numbers across widths). The pool and held-out set are shared inputs on every device; step s of a
member gathers its batch inside the jitted chunk (`vision_data.batch_rows`), no host pipeline.

Optimiser: Adam (b1, b2, eps) with a linear warmup over train.warmup_steps, then a CONSTANT learning rate, the same
for every width. Constant, because the measured curve is then a clean function of the step: any prefix of a run is a
run of that many steps (a decaying schedule would make the loss at step t depend on the horizon, which the 2-D law
L(t, N) has no term for); Adam, because its normalised steps let one learning rate train every width of this
standard-parametrised family (at 2e-3 every width of the quick and cpu variants learns, the final loss falling
with width up to seed noise). The price of the constant rate: jagged late curves (configs/vision.py measures them).

Per step the engine's "loss" is the batch training BCE of the parameters before the step (each batch is fresh, so it
is an unbiased estimate of the population loss). Every `log_every` steps: `test_loss` (mean BCE over the held-out
set, nats) and `test_error` (fraction misclassified).

Workdir: config.json, data.npz (pool and held-out set, written once: a resumed run reads them back), metrics.jsonl,
points/w<width>.npz, checkpoints/w<width>/ (orbax: {"params", "opt"} of every seed), curves.npz: test_loss and
test_error [width, seed, log_step] (coords width = the multipliers, seed, log_step), n_params [width],
flops_per_example [width] (`cnn.flops_per_example`: training FLOPs, 6 x forward multiply-adds).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from scaling.dynamics import vision_data
from scaling.engine import checkpoints
from scaling.engine import config as C
from scaling.engine import experiment as E
from scaling.engine import io as wd
from scaling.engine import members
from scaling.engine.members import Grid
from scaling.nn import cnn

AXES = ("width", "seed", "log_step")
ORDERS = ("per_seed", "shared")
MNIST1D_LENGTH = 40


def vision_config() -> ml_collections.ConfigDict:
  """The base config (configs/vision.py derives its variants from it)."""
  c = ml_collections.ConfigDict()
  c.seed = 0  # root key; seed j of the sweep is split(key(seed), sweep.seeds)[j]
  c.data = ml_collections.ConfigDict(dict(
      source="mnist1d",  # or the name of a tfds dataset prepared (array_record) in data_dir; never downloaded
      data_dir="",  # tfds data_dir ("": $TFDS_DATA_DIR or ~/tensorflow_datasets)
      seed=0,  # MNIST-1D generator seed
      n_test=1000,  # fixed held-out samples
      order="per_seed",  # "per_seed": each seed its own permutation of the pool; "shared": all take pool order
  ))
  c.model = ml_collections.ConfigDict(dict(channels=(8, 16), blocks=1, kernel=3))  # cnn.CNNConfig at width 1
  c.train = ml_collections.ConfigDict(dict(
      batch_size=32, steps=1000, lr=2e-3, warmup_steps=50, b1=0.9, b2=0.999, eps=1e-8,
      log_every=20,  # steps per chunk: one evaluation and one metrics line per width
      checkpoint_every=10,  # in chunks
      max_to_keep=2,
  ))
  c.sweep = ml_collections.ConfigDict(dict(widths=(1, 1.5, 2, 3, 4, 6), seeds=2))
  c.fig1 = ml_collections.ConfigDict(dict(  # the analysis after the run (`scaling.dynamics.vision_report`)
      t_min=100,  # first step of the fitted surface (after warmup and the first transient)
      n_times=20,  # log-spaced bins of logged steps
      n_boot=1000,  # bootstrap resamples of the 2-D law (0: no intervals)
      ntk_points=1000,  # held-out points of the NTK spectra (at most data.n_test are used)
      k_range=(5, 100),  # ranks of the spectral and task exponent fits (spectra.task_exponent: k_max <~ n/10)
      after_kernel=True,  # also the NTK at the trained parameters of the widest width, seed 0
  ))
  return c


@dataclasses.dataclass(frozen=True)
class Spec:
  """One compiled program: a width and everything static about its training."""

  width: float
  model: cnn.CNNConfig
  batch_size: int
  lr: float
  warmup_steps: int
  b1: float
  b2: float
  eps: float
  order: str


@dataclasses.dataclass(frozen=True)
class Extra:
  n_params: tuple[int, ...]
  data: vision_data.Data | None = None  # set by `prepare`


def point_name(width: float) -> str:
  return f"w{width:g}"


def _model(cfg: dict[str, Any], length: int) -> cnn.CNNConfig:
  channels = C.as_tuple(cfg["model"]["channels"])
  if not channels or not all(C.is_int(c) and c >= 1 for c in channels):
    raise ValueError(f"model.channels must be a non-empty tuple of positive integers, got {channels!r}")
  return cnn.CNNConfig(tuple(int(c) for c in channels), C.integer(cfg, "model.blocks", 1),
                       C.integer(cfg, "model.kernel", 1), length)


def _check(cfg: dict[str, Any]) -> tuple[cnn.CNNConfig, tuple[float, ...], tuple[int, ...]]:
  """Checks every field (ValueError naming it); returns the model, the widths and their parameter counts."""
  C.integer(cfg, "seed", 0)
  d = cfg["data"]
  for name in ("source", "data_dir"):
    if not isinstance(d[name], str) or (name == "source" and not d[name]):
      raise ValueError(f"data.{name} must be a {'non-empty ' if name == 'source' else ''}string, got {d[name]!r}")
  C.integer(cfg, "data.seed", 0)
  C.integer(cfg, "data.n_test", 1)
  C.choice(cfg, "data.order", ORDERS)
  model = _model(cfg, MNIST1D_LENGTH)
  for name in ("batch_size", "steps", "log_every", "checkpoint_every", "max_to_keep"):
    C.integer(cfg, f"train.{name}", 1)
  C.multiple(cfg, "train.steps", "train.log_every")
  C.integer(cfg, "train.warmup_steps", 0, cfg["train"]["steps"] - 1)
  for name in ("lr", "eps"):
    C.number(cfg, f"train.{name}", 0, lo_open=True)
  for name in ("b1", "b2"):
    C.number(cfg, f"train.{name}", 0, 1, hi_open=True)
  _check_fig1(cfg)
  widths = tuple(float(w) for w in C.axis(cfg, "sweep.widths", lo=0, lo_open=True))
  C.integer(cfg, "sweep.seeds", 1)
  counts = tuple(cnn.param_count(w, model) for w in widths)
  if any(b <= a for a, b in itertools.pairwise(counts)):
    raise ValueError(f"sweep.widths must be increasing with strictly increasing parameter counts (channels "
                     f"round(width x model.channels)); got counts {dict(zip(widths, counts))}")
  return model, widths, counts


def _check_fig1(cfg: dict[str, Any]) -> None:
  C.integer(cfg, "fig1.t_min", 1, cfg["train"]["steps"] - 1)
  C.integer(cfg, "fig1.n_times", 3)
  n_boot = C.integer(cfg, "fig1.n_boot", 0)
  if n_boot == 1:
    raise ValueError("fig1.n_boot must be 0 (no intervals) or >= 2")
  n = min(C.integer(cfg, "fig1.ntk_points", 10), cfg["data"]["n_test"])
  k = C.as_tuple(cfg["fig1"]["k_range"])
  if len(k) != 2 or not all(C.is_int(v) for v in k) or not 1 <= k[0] < k[1] <= n:
    raise ValueError(f"fig1.k_range must be two integer ranks 1 <= k_min < k_max <= min(fig1.ntk_points, "
                     f"data.n_test) = {n}, got {k!r}")
  if not isinstance(cfg["fig1"]["after_kernel"], bool):
    raise ValueError(f"fig1.after_kernel must be true or false, got {cfg['fig1']['after_kernel']!r}")


class Vision(E.Experiment):
  """1-D ResNets of several widths trained one pass: points are the widths, members the seeds."""

  name = "vision"
  unit = "seeds"
  finite_names = {"test_loss": "test loss"}

  def default_config(self) -> ml_collections.ConfigDict:
    return vision_config()

  def plan(self, cfg: dict[str, Any]) -> E.Plan:
    model, widths, counts = _check(cfg)
    tr = cfg["train"]
    points = tuple(
        E.Point(point_name(w), (i,), Spec(w, model, int(tr["batch_size"]), float(tr["lr"]), int(tr["warmup_steps"]),
                                          float(tr["b1"]), float(tr["b2"]), float(tr["eps"]), cfg["data"]["order"]),
                tr["steps"], {"width": w, "n_params": n}) for i, (w, n) in enumerate(zip(widths, counts)))
    return E.Plan(cfg, {"width": np.asarray(widths)}, points, Grid.of(seed=range(cfg["sweep"]["seeds"])),
                  tr["log_every"], tr["checkpoint_every"], tr["max_to_keep"], extra=Extra(counts))

  def prepare(self, plan: E.Plan, workdir: str) -> E.Plan:
    """Reads the workdir's data.npz (a resumed run) or makes the data (nothing is written here)."""
    n_train, n_test = n_rows(plan.config)
    data = vision_data.load(workdir, n_train, n_test) or _make(plan.config)
    length = data.x_pool_NxL.shape[1]
    points = tuple(dataclasses.replace(p, spec=dataclasses.replace(
        p.spec, model=dataclasses.replace(p.spec.model, length=length))) for p in plan.points)
    return dataclasses.replace(plan, points=points, extra=dataclasses.replace(plan.extra, data=data))

  def write(self, plan: E.Plan, workdir: str) -> None:
    if not os.path.exists(os.path.join(workdir, vision_data.FILE)):
      vision_data.save(workdir, plan.extra.data)

  # -- device work (one seed) ----------------------------------------------------------------------------------
  def inputs(self, plan: E.Plan, point: E.Point, spec: Spec):
    init_S, data_S = members.seed_keys(plan.config["seed"], plan.grid.size, 2)
    d = plan.extra.data
    return (init_S, data_S), (d.x_pool_NxL, d.s_pool_N, d.x_test_MxL, d.s_test_M)

  def init(self, inputs, shared, *, spec: Spec):
    init_key, data_key = inputs
    n = shared[0].shape[0]
    order_N = (jax.random.permutation(data_key, n) if spec.order == "per_seed" else jnp.arange(n)).astype(jnp.int32)
    return init_state(init_key, spec), order_N

  def chunk(self, state, order_N, shared, start, *, spec: Spec, n_steps: int):
    x_pool, s_pool, x_test, s_test = shared
    evals = test_metrics(state["params"], x_test, s_test)

    def body(st, i):
      rows_B = vision_data.batch_rows(order_N, start + i, spec.batch_size)
      return train_step(st, x_pool[rows_B], s_pool[rows_B], spec)

    state, loss_T = jax.lax.scan(body, state, jnp.arange(n_steps, dtype=jnp.int32))
    return state, evals, {"loss": loss_T}

  def evaluate(self, state, order_N, shared, step, *, spec: Spec):
    return test_metrics(state["params"], shared[2], shared[3])

  # -- host outputs --------------------------------------------------------------------------------------------
  def record(self, plan: E.Plan, point: E.Point, step: int, ev: dict[str, np.ndarray]) -> dict[str, Any]:
    return {"test_loss": float(np.mean(ev["test_loss"])), "test_loss_min": float(np.min(ev["test_loss"])),
            "test_loss_max": float(np.max(ev["test_loss"])), "test_error": float(np.mean(ev["test_error"]))}

  def progress(self, rec: dict[str, Any]) -> str:
    return f"test loss {rec['test_loss']:.4f} nats, test error {rec['test_error']:.4f}"

  def units_per_step(self, plan: E.Plan, point: E.Point) -> dict[str, float]:
    return {"examples": plan.config["train"]["batch_size"] * plan.grid.size}

  def arrays(self, plan: E.Plan, arrays) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
    flops = [cnn.flops_per_example(p.spec.width, p.spec.model) for p in plan.points]
    return {"n_params": (np.asarray(plan.extra.n_params, np.int64), ("width",)),
            "flops_per_example": (np.asarray(flops, np.int64), ("width",))}


# ------------------------------------------------------------------------------------------------------------------
# Training of one seed (pure)


def make_optimizer(spec: Spec) -> optax.GradientTransformation:
  """Adam; learning rate linear from 0 to `lr` over `warmup_steps`, then constant."""
  def lr(step):
    return spec.lr * jnp.minimum(1.0, (step + 1) / max(spec.warmup_steps, 1)) if spec.warmup_steps else spec.lr
  return optax.adam(lr, b1=spec.b1, b2=spec.b2, eps=spec.eps)


def init_state(key: jax.Array, spec: Spec) -> dict[str, Any]:
  params = cnn.init(key, spec.width, spec.model)
  return {"params": params, "opt": make_optimizer(spec).init(params)}


def batch_loss(params: cnn.Params, x_BxL: jax.Array, s_B: jax.Array) -> jax.Array:
  return jnp.mean(cnn.bce(cnn.apply(params, x_BxL), s_B))


def train_step(state: dict[str, Any], x_BxL: jax.Array, s_B: jax.Array, spec: Spec):
  """One Adam step; returns (state, the batch loss of the parameters before the step)."""
  loss, grads = jax.value_and_grad(batch_loss)(state["params"], x_BxL, s_B)
  updates, opt = make_optimizer(spec).update(grads, state["opt"], state["params"])
  return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, loss


def test_metrics(params: cnn.Params, x_MxL: jax.Array, s_M: jax.Array) -> dict[str, jax.Array]:
  logits_M = cnn.apply(params, x_MxL)
  return {"test_loss": jnp.mean(cnn.bce(logits_M, s_M)), "test_error": jnp.mean(cnn.error(logits_M, s_M))}


# ------------------------------------------------------------------------------------------------------------------
# Public entry points


EXPERIMENT = Vision()


def n_rows(cfg: dict[str, Any]) -> tuple[int, int]:
  """(pool rows = train.steps x train.batch_size, held-out rows = data.n_test)."""
  return cfg["train"]["steps"] * cfg["train"]["batch_size"], cfg["data"]["n_test"]


def _make(cfg: dict[str, Any]) -> vision_data.Data:
  d = cfg["data"]
  return vision_data.make(d["source"], *n_rows(cfg), d["seed"], d["data_dir"])


def plan(config: ml_collections.ConfigDict | dict[str, Any]) -> E.Plan:
  """Checks a config (ValueError naming the field) and builds the plan. Makes no data, writes nothing."""
  return E.check(EXPERIMENT, config)


def run(config: ml_collections.ConfigDict | dict[str, Any], workdir: str,
        devices: Sequence[jax.Device] | None = None) -> wd.Curves:
  """Runs (or resumes, or skips) the sweep in `workdir`; returns the curves (also in `workdir/curves.npz`).
  `devices`: where the seeds are sharded (default: all local devices)."""
  return E.run(EXPERIMENT, config, os.path.abspath(workdir), devices)


def _stored_plan(workdir: str) -> E.Plan:
  path = os.path.join(workdir, wd.CONFIG)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{workdir} is not a vision workdir (no {wd.CONFIG})")
  with open(path) as f:
    return plan(json.load(f))


def heldout(config_or_workdir: ml_collections.ConfigDict | dict[str, Any] | str) -> tuple[np.ndarray, np.ndarray]:
  """The fixed held-out set (x [M, L] float32, ±1 targets [M] float32: +1 even digit) of a workdir (read from its
  data.npz) or of a config (made as a run would make it)."""
  if isinstance(config_or_workdir, str):
    p = _stored_plan(config_or_workdir)
    data = vision_data.load(config_or_workdir, *n_rows(p.config))
    if data is None:
      raise FileNotFoundError(f"{config_or_workdir} has no {vision_data.FILE}: has its run started?")
  else:
    data = _make(plan(config_or_workdir).config)
  return np.asarray(data.x_test_MxL), np.asarray(data.s_test_M)


def final_params(workdir: str, width_index: int, seed_index: int) -> cnn.Params:
  """Parameters (numpy) of seed `seed_index` of width `width_index` after the last step, from its checkpoint."""
  p = _stored_plan(workdir)
  point = p.points[width_index]
  state = checkpoints.final_member(os.path.join(os.path.abspath(workdir), "checkpoints", point.name), p.max_to_keep,
                                   point.steps, p.grid.size, lambda: init_state(jax.random.key(0), point.spec),
                                   seed_index)
  return state["params"]


def summary(curves: wd.Curves) -> str:
  """A table of the final held-out loss and error per width (mean over seeds, and the seeds' range)."""
  lines = [f"{'width':>6} {'params':>8} {'train FLOP/ex':>13} {'test loss (min..max)':>26} {'test error':>10}"]
  for i, w in enumerate(curves.coords["width"]):
    loss_S, err_S = curves["test_loss"][i, :, -1], curves["test_error"][i, :, -1]
    lines.append(f"{w:>6g} {int(curves['n_params'][i]):>8d} {int(curves['flops_per_example'][i]):>13.3g} "
                 f"{loss_S.mean():>8.4f} ({loss_S.min():.4f}..{loss_S.max():.4f}) {err_S.mean():>10.4f}")
  return "\n".join(lines)
