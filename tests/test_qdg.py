"""QDG on a language model: batched per-token gradients equal single-token `jax.grad`, the paper's parameter
subset, and the pipeline (selection, features, clusters, reports, resume, bad input) on a tiny checkpoint."""

import json
import os

import helpers
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import qdg as qdg_config
from scaling.lm import corpus as corpus_lib
from scaling.lm import qdg
from scaling.nn import transformer as lm


def _perturbed(cfg, seed=0):
  """Random parameters with non-trivial norms and biases (so every leaf's gradient is exercised)."""
  p = lm.init(jax.random.key(seed), cfg)
  leaves, tree = jax.tree.flatten(p)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  return jax.tree.unflatten(tree, [x + 0.05 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)])


@pytest.mark.parametrize("cfg", [lm.llama(40, 32, 3, 4, 48, n_kv_heads=2, max_len=32),
                                 lm.gpt_neox(40, 32, 3, 4, max_len=32)], ids=["llama", "gpt_neox"])
@pytest.mark.parametrize("last_blocks", [None, 1])
def test_batched_token_grads_equal_single_token_grads(cfg, last_blocks):
  params = _perturbed(cfg)
  tokens = jax.random.randint(jax.random.key(5), (1, 17), 0, 40)
  positions = jnp.array([0, 4, 9, 15])
  g, losses = qdg.document_grads(params, tokens, positions, cfg, last_blocks)
  np.testing.assert_allclose(losses, lm.token_losses(params, tokens, cfg)[0, positions], rtol=1e-5)
  assert sum(x[0].size for x in jax.tree.leaves(g)) == qdg.subset_size(cfg, last_blocks)
  for j, p in enumerate(positions.tolist()):
    ref = qdg.token_grad(params, tokens, p, cfg, last_blocks)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(ref)):
      np.testing.assert_allclose(a[j], b, atol=2e-6, rtol=1e-4, err_msg=f"position {p}")
  # the subset: no embeddings, no per-block norms, the final norm included
  diff, _ = qdg.split_params(params, cfg, last_blocks)
  assert set(diff) == {"blocks", "final_norm"} and not set(diff["blocks"]) & {"norm1", "norm2"}
  assert diff["blocks"]["wq"].shape[0] == (3 if last_blocks is None else last_blocks)


def test_pythia_70m_subset_size():
  """Spec §4.3: parameters named neither *layernorm* nor *embed*: 18,915,328 non-embedding minus 6 x 2 x 1024."""
  assert qdg.subset_size(lm.gpt_neox(50304, 512, 6, 8)) == 18_915_328 - 12 * 1024


def _tiny_run_config(model_dir, similarity):
  c = qdg_config.get_config("tiny")
  c.model = "hf:" + model_dir
  c.corpus.max_docs, c.corpus.context = 6, 64
  c.select.threshold, c.select.every, c.select.first = 50.0, 3, 40  # a random model: every loss is below 50 nats
  c.gradients.similarity, c.gradients.grad_batch = similarity, 4
  return c


@pytest.mark.parametrize("similarity", ["exact", "jl"])
def test_pipeline_on_a_tiny_checkpoint(tmp_path, similarity):
  docs = corpus_lib.read_documents("pydoc_data", max_docs=6)
  tok = corpus_lib.train_bpe(docs, 300)
  helpers.hf_llama_dir(str(tmp_path / "m"), tok, 16, 2, 0)
  c = _tiny_run_config(str(tmp_path / "m"), similarity)
  wd = str(tmp_path / "wd")
  s = qdg.run(c, wd)
  assert s["n_selected"] == 40 and s["feature_dim"] == (1024 if similarity == "jl" else qdg.subset_size(
      lm.llama(300, 16, 2, 2, 32), 1))
  C = np.load(os.path.join(wd, "similarity.npy"))
  np.testing.assert_allclose(C, C.T, atol=1e-6)
  np.testing.assert_allclose(np.diag(C), 1.0, atol=1e-5)
  sel = np.load(os.path.join(wd, "selection.npz"))
  assert np.all(np.diff(sel["flat_idx"]) > 0) and sel["flat_idx"].size == 40
  report = open(os.path.join(wd, "clusters_K6.md")).read()
  assert "Cluster rank 1" in report and os.path.exists(os.path.join(wd, "rank_frequency.png"))
  labels = dict(np.load(os.path.join(wd, "clusters.npz")))
  assert set(labels) == {"K3", "K4", "K6", "K8"} and all(len(np.unique(v)) == int(k[1:]) for k, v in labels.items())
  mtime = os.path.getmtime(os.path.join(wd, "features.npz"))
  s2 = qdg.run(c, wd)  # resumes: nothing recomputed, same result
  assert os.path.getmtime(os.path.join(wd, "features.npz")) == mtime and s2 == s
  assert json.load(open(os.path.join(wd, "summary.json")))["n_selected"] == 40


def test_config_errors_before_anything_is_written(tmp_path):
  c = qdg_config.get_config("tiny")
  c.select.units = "bytes"
  c.cluster.report_k = 7
  with pytest.raises(ValueError, match="units='bytes'.*report_k=7"):
    qdg.run(c, str(tmp_path / "wd"))
  assert not os.path.exists(tmp_path / "wd")
  with pytest.raises(ValueError, match="unknown qdg variant"):
    qdg_config.get_config("huge")
  with pytest.raises(ValueError, match="last_blocks"):
    qdg.split_params(lm.init(jax.random.key(0), lm.llama(10, 8, 2, 2, 8)), lm.llama(10, 8, 2, 2, 8), 3)
