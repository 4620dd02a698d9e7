"""Per-token evaluation: batched, bucketed forwards equal a direct forward per document; checkpoints on disk go
through `launch.lm_eval`'s pipeline into losses.npz and the scaling report."""

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import helpers
from configs import lm_eval as lm_eval_config
from scaling.lm import corpus as corpus_lib
from scaling.lm import eval_models, evaluate
from scaling.nn import transformer as lm


def _corpus(max_len=40):
  rng = np.random.default_rng(0)
  docs = [list(rng.integers(2, 50, n)) for n in (1, 30, 40, 7, 0, 2, 55, 13, 9)]
  return corpus_lib.tokenize([" ".join(map(str, d)) for d in docs], lambda s: [int(x) for x in s.split()],
                             max_len=max_len)


def test_per_token_losses_equal_direct_forwards():
  cfg = lm.llama(50, 16, 2, 4, 32, n_kv_heads=2, max_len=64)
  params = lm.init(jax.random.key(0), cfg)
  c = _corpus()
  ev = evaluate.per_token_losses(params, cfg, c, batch_size=3, bucket=16)
  assert ev.losses.shape == (c.n_predictions,)
  want = []
  for d in range(c.n_docs):
    n = int(c.lengths[d])
    if n >= 2:
      want.append(np.asarray(lm.token_losses(params, jnp.asarray(c.tokens[d:d + 1, :n]), cfg))[0])
  np.testing.assert_allclose(ev.losses, np.concatenate(want), rtol=2e-5, atol=2e-5,
                             err_msg="bucketed batches must not change any per-token loss")
  with pytest.raises(ValueError, match="model takes"):
    evaluate.per_token_losses(params, lm.llama(50, 16, 2, 4, 32, max_len=8), c)


def test_evaluate_models_writes_report_and_resumes(tmp_path):
  docs = corpus_lib.read_documents("pydoc_data", max_docs=6)
  tok = corpus_lib.train_bpe(docs, 300)
  dirs = []
  for i, (d, n) in enumerate([(8, 1), (16, 1), (24, 2)]):
    helpers.hf_llama_dir(str(tmp_path / f"m{i}"), tok, d, n, i)
    dirs.append("hf:" + str(tmp_path / f"m{i}"))
  c = lm_eval_config.get_config("quick")
  c.models = ",".join(reversed(dirs))
  c.corpus.max_docs, c.corpus.context = 6, 64
  wd = str(tmp_path / "wd")
  text = eval_models.evaluate_models(c, wd)
  d = evaluate.load_losses(wd)
  assert d["losses_MxT"].shape[0] == 3 and np.all(np.isfinite(d["losses_MxT"]))
  assert "α_N" in text and "| m0 |" in text
  assert os.path.exists(os.path.join(wd, "report", "mean_loss_vs_params.png"))
  before = d["losses_MxT"].copy()
  eval_models.evaluate_models(c, wd)  # cached per model
  np.testing.assert_array_equal(evaluate.load_losses(wd)["losses_MxT"], before)
  text = evaluate.report(wd, fit_models=evaluate.parse_fit_models(":-1"))  # `launch.lm_report --fit_models=:-1`
  assert "α_N fit skipped" in text  # 2 of the 3 sizes are too few points for a fit with an error
  c2 = lm_eval_config.get_config("quick")
  c2.models = dirs[0]
  with pytest.raises(ValueError, match="config"):
    eval_models.evaluate_models(c2, wd)


def test_every_model_loads_before_anything_is_written(tmp_path):
  """A second spec that does not load (truncated weights, no tokenizer, another tokenizer) fails naming that spec
  before the first model's losses or the config are written: the workdir is never created."""
  docs = corpus_lib.read_documents("pydoc_data", max_docs=4)
  tok = corpus_lib.train_bpe(docs, 300)
  good, cut, no_tok, other_tok = (tmp_path / n for n in ("good", "cut", "no_tok", "other_tok"))
  for i, d in enumerate((good, cut, no_tok)):
    helpers.hf_llama_dir(str(d), tok, 8, 1, i)
  weights = cut / "model.safetensors"
  weights.write_bytes(weights.read_bytes()[:-64])
  os.remove(no_tok / "tokenizer.json")
  helpers.hf_llama_dir(str(other_tok), corpus_lib.train_bpe(docs, 260), 8, 1, 3)
  c = lm_eval_config.get_config("quick")
  c.corpus.max_docs, c.corpus.context = 4, 32
  wd = tmp_path / "wd"
  for second, match in [(cut, re.escape(f"model spec 'hf:{cut}' does not load: ") + ".*" + re.escape(str(weights))),
                         (no_tok, re.escape(f"model spec 'hf:{no_tok}' has no tokenizer")),
                         (other_tok, re.escape(f"hf:{other_tok} tokenises the corpus differently"))]:
    c.models = f"hf:{good},hf:{second}"
    with pytest.raises(ValueError, match=match):
      eval_models.evaluate_models(c, str(wd))
    assert not wd.exists(), second
  c.models = f"hf:{good},hf:{cut}"
  with pytest.raises(ValueError) as e:
    eval_models.evaluate_models(c, str(wd))
  assert isinstance(e.value.__cause__, ValueError) and str(weights) in str(e.value.__cause__)  # the loader's error


def test_eval_config_errors(tmp_path):
  c = lm_eval_config.get_config("pythia")
  with pytest.raises(ValueError, match="empty"):
    eval_models.evaluate_models(c, str(tmp_path / "x"))
  c.models = "torch:/x"
  with pytest.raises(ValueError, match="not 'smollm2'"):
    eval_models.evaluate_models(c, str(tmp_path / "x"))
  c.models = "hf:" + str(tmp_path / "no_such_checkpoint")
  with pytest.raises(FileNotFoundError, match="does not exist"):
    eval_models.evaluate_models(c, str(tmp_path / "x"))
  assert not os.path.exists(tmp_path / "x")
  with pytest.raises(ValueError, match="unknown"):
    lm_eval_config.get_config("nope")


def test_parse_fit_models():
  assert evaluate.parse_fit_models("") is None
  assert evaluate.parse_fit_models(":6") == slice(None, 6)
  assert evaluate.parse_fit_models("1:-1") == slice(1, -1)
  for bad in ("6", "a:b", "1:2:3"):
    with pytest.raises(ValueError, match="slice"):
      evaluate.parse_fit_models(bad)
