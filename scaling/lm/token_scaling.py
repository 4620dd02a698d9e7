"""Per-token loss scaling across a model family: the quantization paper's Fig 3, 4 and 12 (spec `quanta.md` §3).

Inputs are per-token cross-entropies in **nats**, `losses_MxT` [model, token], for M models of one family sorted by
size (the same T token predictions for every model), with their non-embedding parameter counts.

- Fig 3 (left): the mean loss (reported in bits) against non-embedding N, with an OLS log-log fit L ∝ N^-α_N over
  `fit_models` (the paper fits the first 6 of the 7 Pythia models, α_N ≈ 0.083, and plots the 6.4b point grey).
- Fig 3 (centre, right): the per-token loss density p(L) and the integrand L·p(L): histograms of 3000 bins on
  [0, 30] bits, normalised by the number of **all** tokens (tokens above 30 bits are counted in
  `frac_out_of_range`, not squeezed in), so Σ p·ΔL = 1 - frac_out_of_range and Σ L·p·ΔL is the in-range mean.
- Monogenic tokens (Fig 4/12): loss > 5.0 nats for every model with index < j and < 0.3 nats for every model with
  index >= j, 1 <= j <= M-1 (a single sharp drop, one quantum); `monogenic_index` holds j or -1.
- Polygenic tokens: among the first 1e5 tokens, an OLS fit of loss (nats) on ln N has slope < -0.3 and R² > 0.98
  (smooth improvement, many quanta). With fewer than 3 models R² is trivially 1, so it is left nan and no token is
  polygenic.
- "Stay below": of the tokens whose loss first falls below 0.3 nats at size index j, the fraction that stays below
  0.3 for every larger model. The paper's notebook reports 88.9% (19m), 70.4% (125m), 62.9% (350m), 53.3% (800m),
  56.0% (1.3b) and 66.8% (2.7b) for Pythia; the largest model has no larger one, so its fraction is nan.

Everything is numpy (and matplotlib for `figures`); no jax.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Sequence

import numpy as np

from scaling.fit.loglog import LN2, Fit, fit_loglog

N_BINS = 3000
MAX_BITS = 30.0


@dataclasses.dataclass(frozen=True)
class TokenScaling:
  """The per-token scaling analysis of one model family (losses in nats unless a name says bits).

  `fit` is None (with the reason in `fit_note`) when fewer than 3 models are fitted. `stay_first_counts[j]` is the
  number of tokens whose loss first falls below `stay_threshold` at size j, `stay_counts[j]` how many of those stay
  below for every larger model, `stay_below[j]` their ratio (nan where undefined: no such token, or j = M-1).
  """

  names: tuple[str, ...]
  n_nonemb: np.ndarray  # [M]
  mean_loss_nats: np.ndarray  # [M]
  mean_loss_bits: np.ndarray  # [M]
  near_zero_frac: np.ndarray  # [M] fraction of tokens with loss < near_zero (nats): the spike at zero
  fit: Fit | None
  fit_mask: np.ndarray  # [M] bool: models in the α_N fit
  fit_note: str
  monogenic_index: np.ndarray  # [T] int: size index j of the single drop, or -1
  polygenic_mask: np.ndarray  # [T'] bool, T' = min(first, T)
  polygenic_slope: np.ndarray  # [T'] d loss (nats) / d ln N
  polygenic_r2: np.ndarray  # [T'] R² of that fit (nan for a flat token or M < 3)
  stay_below: np.ndarray  # [M] fraction, nan where undefined
  stay_first_counts: np.ndarray  # [M] int
  stay_counts: np.ndarray  # [M] int
  bin_edges_bits: np.ndarray  # [n_bins + 1]
  density: np.ndarray  # [M, n_bins] p(L), L in bits
  integrand: np.ndarray  # [M, n_bins] L·p(L) at the bin centres
  frac_out_of_range: np.ndarray  # [M] fraction of tokens above the last bin edge
  thresholds: dict[str, float]

  @property
  def n_models(self) -> int:
    return len(self.names)

  @property
  def n_tokens(self) -> int:
    return int(self.monogenic_index.shape[0])

  @property
  def bin_centres_bits(self) -> np.ndarray:
    e = self.bin_edges_bits
    return 0.5 * (e[:-1] + e[1:])


# --------------------------------------------------------------------------- validation


def _validate(losses_MxT: np.ndarray, n_nonemb_M: np.ndarray, names: Sequence[str]
              ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
  losses = np.asarray(losses_MxT)
  if losses.ndim != 2:
    raise ValueError(f"losses_MxT must be 2-D [model, token], got shape {losses.shape}")
  if losses.dtype == bool or not np.issubdtype(losses.dtype, np.number) or np.iscomplexobj(losses):
    raise ValueError(f"losses_MxT must be real numbers, got dtype {losses.dtype}")
  if not np.issubdtype(losses.dtype, np.floating):
    losses = losses.astype(np.float64)
  M, T = losses.shape
  if M < 2 or T < 1:
    raise ValueError(f"need >= 2 models and >= 1 token, got losses of shape {losses.shape}")
  if not np.isfinite(losses).all():
    raise ValueError(f"losses_MxT has {int((~np.isfinite(losses)).sum())} non-finite entries")
  if (losses < 0).any():
    raise ValueError(f"losses_MxT has {int((losses < 0).sum())} negative entries (cross-entropies are >= 0)")
  n = np.asarray(n_nonemb_M, np.float64)
  if n.ndim != 1 or n.shape[0] != M:
    raise ValueError(f"n_nonemb_M must be 1-D with one entry per model ({M}), got shape {n.shape}")
  names = tuple(str(s) for s in names)
  if len(names) != M:
    raise ValueError(f"got {len(names)} names for {M} models")
  if not (np.isfinite(n).all() and (n > 0).all()):
    raise ValueError(f"n_nonemb_M must be finite and positive, got {n.tolist()}")
  if not (np.diff(n) > 0).all():
    raise ValueError(f"n_nonemb_M must be strictly increasing (models sorted by size), got {n.tolist()}")
  return losses, n, names


def _fit_mask(fit_models: slice | np.ndarray | Sequence[int] | None, M: int) -> np.ndarray:
  mask = np.zeros(M, bool)
  if fit_models is None:
    mask[:] = True
  elif isinstance(fit_models, slice):
    mask[fit_models] = True
  else:
    sel = np.asarray(fit_models)
    if sel.dtype == bool:
      if sel.shape != (M,):
        raise ValueError(f"a boolean fit_models must have shape ({M},), got {sel.shape}")
      mask = sel.copy()
    elif np.issubdtype(sel.dtype, np.integer) and sel.ndim == 1:
      if sel.size and (sel.min() < -M or sel.max() >= M):
        raise ValueError(f"fit_models indices {sel.tolist()} out of range for {M} models")
      mask[sel] = True
    else:
      raise ValueError(f"fit_models must be a slice, integer indices or a boolean mask, got {fit_models!r}")
  return mask


# --------------------------------------------------------------------------- the per-token quantities


def monogenic_index(losses_MxT: np.ndarray, high: float = 5.0, low: float = 0.3) -> np.ndarray:
  """Per token, the size index j (1 <= j <= M-1) with loss > high for all models < j and < low for all >= j; else -1."""
  above = np.logical_and.accumulate(np.asarray(losses_MxT) > high, axis=0)  # [j]: all models <= j above
  below = np.logical_and.accumulate((np.asarray(losses_MxT) < low)[::-1], axis=0)[::-1]  # [j]: all >= j below
  step = above[:-1] & below[1:]  # [j-1, T]: the drop happens at j
  return np.where(step.any(axis=0), np.argmax(step, axis=0) + 1, -1).astype(np.int64)


def loglinear_fits(losses_MxT: np.ndarray, n_nonemb_M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Closed-form OLS of loss on ln N for every token at once: (slope [T], R² [T]); R² is nan for a flat token."""
  x = np.log(np.asarray(n_nonemb_M, np.float64))
  xc = x - x.mean()
  sxx = xc @ xc
  y = np.asarray(losses_MxT, np.float64)
  yc = y - y.mean(axis=0, keepdims=True)
  sxy = xc @ yc
  syy = np.einsum("mt,mt->t", yc, yc)
  slope = sxy / sxx
  with np.errstate(invalid="ignore", divide="ignore"):
    r2 = np.where(syy > 0, sxy ** 2 / (sxx * syy), np.nan)
  return slope, r2


def stay_below_stats(losses_MxT: np.ndarray, threshold: float = 0.3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(fraction [M], first-below counts [M], stay counts [M]) of the "stays below `threshold`" statistic."""
  below = np.asarray(losses_MxT) < threshold
  M, T = below.shape
  ever = below.any(axis=0)
  first = np.argmax(below, axis=0)
  suffix = np.logical_and.accumulate(below[::-1], axis=0)[::-1]  # [j, t]: below for every model >= j
  stays = np.take_along_axis(suffix, first[None], axis=0)[0] & ever
  n_first = np.bincount(first[ever], minlength=M)
  n_stay = np.bincount(first[stays], minlength=M)
  with np.errstate(invalid="ignore", divide="ignore"):
    frac = np.where(n_first > 0, n_stay / np.maximum(n_first, 1), np.nan)
  frac[M - 1] = np.nan  # no larger model to stay below for
  return frac, n_first, n_stay


def loss_histograms(losses_MxT: np.ndarray, n_bins: int = N_BINS, max_bits: float = MAX_BITS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """(edges in bits, density [M, n_bins], integrand L·p(L) [M, n_bins], fraction above max_bits [M]).

  The density is normalised by all T tokens, so it integrates to 1 when every loss is within [0, max_bits].
  """
  losses = np.asarray(losses_MxT)
  M, T = losses.shape
  edges = np.linspace(0.0, max_bits, n_bins + 1)
  width = max_bits / n_bins
  density = np.empty((M, n_bins))
  for m in range(M):  # one model at a time: at 1e7 tokens the bits array is the big allocation
    counts, _ = np.histogram(np.asarray(losses[m], np.float64) / LN2, bins=n_bins, range=(0.0, max_bits))
    density[m] = counts / (T * width)
  centres = 0.5 * (edges[:-1] + edges[1:])
  out = 1.0 - density.sum(axis=1) * width
  return edges, density, density * centres, np.clip(out, 0.0, 1.0)


# --------------------------------------------------------------------------- the analysis


def analyse(losses_MxT: np.ndarray, n_nonemb_M: np.ndarray, names: Sequence[str],
            fit_models: slice | np.ndarray | None = None, *, mono_high: float = 5.0, mono_low: float = 0.3,
            poly_slope: float = -0.3, poly_r2: float = 0.98, first: int = 100_000, stay_threshold: float = 0.3,
            near_zero: float = 0.1, n_bins: int = N_BINS, max_bits: float = MAX_BITS) -> TokenScaling:
  """Runs the whole analysis; thresholds are in nats and default to the paper's (see the module docstring).

  `fit_models` selects the models of the α_N fit (slice, integer indices or boolean mask; default all), e.g.
  `slice(0, 6)` for the paper's Pythia fit.
  """
  losses, n, names = _validate(losses_MxT, n_nonemb_M, names)
  M, T = losses.shape
  if int(first) < 1:
    raise ValueError(f"first must be >= 1, got {first}")
  mask = _fit_mask(fit_models, M)

  mean_nats = losses.mean(axis=1, dtype=np.float64)
  mean_bits = mean_nats / LN2
  fit, note = None, ""
  if mask.sum() < 3:
    note = f"no α_N fit: {int(mask.sum())} fitted model(s), a fit with an error needs >= 3"
  else:
    fit = fit_loglog(n[mask], mean_bits[mask], sign=-1.0)
    note = "OLS of log mean loss on log N over " + ", ".join(np.asarray(names)[mask])

  head = losses[:, :min(int(first), T)]
  slope, r2 = loglinear_fits(head, n)
  if M < 3:
    r2 = np.full_like(r2, np.nan)
  with np.errstate(invalid="ignore"):
    poly = (slope < poly_slope) & (r2 > poly_r2)

  stay, n_first, n_stay = stay_below_stats(losses, stay_threshold)
  edges, density, integrand, out = loss_histograms(losses, n_bins, max_bits)
  thresholds = dict(mono_high=mono_high, mono_low=mono_low, poly_slope=poly_slope, poly_r2=poly_r2,
                    first=int(first), stay_threshold=stay_threshold, near_zero=near_zero, max_bits=max_bits)
  return TokenScaling(
      names=names, n_nonemb=n, mean_loss_nats=mean_nats, mean_loss_bits=mean_bits,
      near_zero_frac=(losses < near_zero).mean(axis=1), fit=fit, fit_mask=mask, fit_note=note,
      monogenic_index=monogenic_index(losses, mono_high, mono_low), polygenic_mask=poly, polygenic_slope=slope,
      polygenic_r2=r2, stay_below=stay, stay_first_counts=n_first, stay_counts=n_stay, bin_edges_bits=edges,
      density=density, integrand=integrand, frac_out_of_range=out, thresholds=thresholds)


# --------------------------------------------------------------------------- figures


def _clean_context(s: str, max_chars: int = 48) -> str:
  """One line, at most `max_chars`, with matplotlib's mathtext `$` escaped."""
  s = " ".join(str(s).replace("\n", " ⏎ ").split())
  if len(s) > max_chars:
    s = "…" + s[-(max_chars - 1):]  # keep the end: the context right before the predicted token
  return s.replace("$", r"\$")


def _pick_monogenic(idx: np.ndarray, k: int) -> np.ndarray:
  """Up to k monogenic tokens, round-robin over their size indices (first tokens of each size first)."""
  groups = [np.nonzero(idx == j)[0] for j in np.unique(idx[idx > 0])]
  picked: list[int] = []
  r = 0
  while len(picked) < k and any(r < len(g) for g in groups):
    picked += [int(g[r]) for g in groups if r < len(g)][:k - len(picked)]
    r += 1
  return np.asarray(picked, np.int64)


def figures(ts: TokenScaling, losses_MxT: np.ndarray, out_dir: str, contexts: Callable[[int], str] | None = None,
            n_examples: int = 6) -> list[str]:
  """Writes Fig 3's three panels and the Fig 4/12 example curves as PNGs under `out_dir`; returns the paths.

  `contexts(t)` (optional) gives the text preceding token prediction t; it labels the example curves, truncated.
  """
  from scaling import plotting  # pylint: disable=g-import-not-at-top  (sets the Agg backend)
  plt = plotting.plt
  losses = np.asarray(losses_MxT)
  if losses.shape != (ts.n_models, ts.n_tokens):
    raise ValueError(f"losses_MxT has shape {losses.shape}, the analysis was of {(ts.n_models, ts.n_tokens)}")
  os.makedirs(out_dir, exist_ok=True)
  n = ts.n_nonemb
  cmap = plt.get_cmap("viridis")
  colors = [cmap(i / max(1, ts.n_models - 1)) for i in range(ts.n_models)]
  paths = []

  # Fig 3 left: mean loss vs N
  fig, ax = plt.subplots(figsize=(5.2, 4.2))
  m = ts.fit_mask
  ax.scatter(n[m], ts.mean_loss_bits[m], c=[colors[i] for i in np.nonzero(m)[0]], zorder=3, label="fitted")
  if (~m).any():
    ax.scatter(n[~m], ts.mean_loss_bits[~m], color="grey", zorder=3, label="not fitted")
  if ts.fit is not None:
    xs = np.geomspace(n.min(), n.max(), 50)
    ax.plot(xs, ts.fit.predict(xs), "k--", lw=1,
            label=rf"$L \propto N^{{-\alpha_N}}$, $\alpha_N$ = {ts.fit.exponent:.3f} ± {ts.fit.stderr:.3f}")
  else:
    ax.set_title(ts.fit_note, fontsize=8)
  ax.set(xscale="log", yscale="log", xlabel="non-embedding parameters N", ylabel="mean loss (bits)")
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths += plotting.save(fig, [os.path.join(out_dir, "mean_loss_vs_params.png")])

  # Fig 3 centre and right: p(L) and L·p(L)
  centres = ts.bin_centres_bits
  for fname, arr, ylabel in (("loss_density.png", ts.density, "p(L)"),
                             ("loss_integrand.png", ts.integrand, "L · p(L)")):
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for i in range(ts.n_models):
      ax.plot(centres, arr[i], color=colors[i], lw=0.8, label=ts.names[i])
    ax.set(xscale="log", xlabel="per-token loss L (bits)", ylabel=ylabel,
           title=f"{ts.n_tokens:,} tokens, {len(centres)} bins on [0, {ts.thresholds['max_bits']:g}] bits")
    ax.title.set_fontsize(8)
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths += plotting.save(fig, [os.path.join(out_dir, fname)])

  # Fig 4 / 12: example monogenic and polygenic tokens
  mono = _pick_monogenic(ts.monogenic_index, n_examples)
  poly = np.nonzero(ts.polygenic_mask)[0][:n_examples]
  fig, axes = plt.subplots(1, 2, figsize=(11, 4.4), sharey=True)
  for ax, toks, kind in ((axes[0], mono, "monogenic"), (axes[1], poly, "polygenic")):
    for k, t in enumerate(toks):
      label = f"token {t}" + (f" (j={ts.monogenic_index[t]})" if kind == "monogenic" else "")
      if contexts is not None:
        label = _clean_context(contexts(int(t)))
      ax.plot(n, losses[:, t] / LN2, "o-", ms=3, color=f"C{k % 10}", label=label)
    if not len(toks):
      ax.text(0.5, 0.5, f"no {kind} tokens", transform=ax.transAxes, ha="center", va="center")
    else:
      ax.legend(fontsize=6, loc="best")
    ax.set(xscale="log", xlabel="non-embedding parameters N", title=f"{kind} tokens")
  axes[0].set_ylabel("per-token loss (bits)")
  fig.tight_layout()
  paths += plotting.save(fig, [os.path.join(out_dir, "monogenic_polygenic.png")])
  return paths


# --------------------------------------------------------------------------- summary


def _pct(x: float) -> str:
  return "–" if not np.isfinite(x) else f"{100 * x:.1f}%"


def summary_markdown(ts: TokenScaling, source: str) -> str:
  """Markdown: per-model table, the α_N fit, monogenic / polygenic counts and the "stay below" statistic."""
  th = ts.thresholds
  lines = [f"## Per-token loss scaling ({source})", "",
           f"{ts.n_models} models, {ts.n_tokens:,} token predictions. Corpus: {source}.", "",
           f"| model | N (non-emb) | mean loss (bits) | mean loss (nats) | frac < {th['near_zero']:g} nats "
           f"| first < {th['stay_threshold']:g} nats here | stays below |",
           "|---|---|---|---|---|---|---|"]
  for i, name in enumerate(ts.names):
    lines.append(f"| {name} | {ts.n_nonemb[i]:,.0f} | {ts.mean_loss_bits[i]:.4f} | {ts.mean_loss_nats[i]:.4f} "
                 f"| {_pct(ts.near_zero_frac[i])} | {int(ts.stay_first_counts[i]):,} | {_pct(ts.stay_below[i])} |")
  lines.append("")
  if ts.fit is not None:
    lines.append(f"**α_N = {ts.fit.exponent:.4f} ± {ts.fit.stderr:.4f}** (L ∝ N^-α_N, mean loss in bits; "
                 f"{ts.fit_note}; {ts.fit.n_points} points).")
    excluded = [nm for nm, k in zip(ts.names, ts.fit_mask) if not k]
    if excluded:
      lines.append(f"Excluded from the fit (plotted grey): {', '.join(excluded)}.")
  else:
    lines.append(f"α_N fit skipped: {ts.fit_note}.")
  lines.append("")
  mono = ts.monogenic_index
  lines.append(f"**Monogenic tokens** (> {th['mono_high']:g} nats below size j, < {th['mono_low']:g} nats from j on): "
               f"{int((mono > 0).sum()):,} of {ts.n_tokens:,}.")
  lines += ["", "| size index j | model | monogenic tokens |", "|---|---|---|"]
  for j in range(1, ts.n_models):
    lines.append(f"| {j} | {ts.names[j]} | {int((mono == j).sum()):,} |")
  lines.append("")
  n_poly = int(ts.polygenic_mask.sum())
  extra = " (R² is undefined with < 3 models: none counted)" if ts.n_models < 3 else ""
  lines.append(f"**Polygenic tokens** (slope of loss vs ln N < {th['poly_slope']:g} nats, R² > {th['poly_r2']:g}): "
               f"{n_poly:,} of the first {ts.polygenic_mask.size:,} tokens considered{extra}.")
  lines.append("")
  lines.append(f"\"Stays below\": of the tokens whose loss first falls below {th['stay_threshold']:g} nats at a size, "
               "the fraction below it for every larger model (paper, Pythia: 88.9, 70.4, 62.9, 53.3, 56.0, 66.8%).")
  return "\n".join(lines) + "\n"
