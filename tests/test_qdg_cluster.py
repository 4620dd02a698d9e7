"""QDG token selection and projection (`scaling.lm.qdg_inputs`), similarity / clustering / reporting
(`scaling.lm.qdg_cluster`) on hand-made and planted data."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from scaling.lm import qdg_cluster as qc
from scaling.lm import qdg_inputs as qi

LN2 = math.log(2.0)


# --------------------------------------------------------------------------- token selection


def test_induction_mask_trigram_and_bigram():
  toks = np.array([5, 6, 7, 1, 5, 6, 7])
  tri = qi.induction_mask(toks)
  assert tri.shape == (6,) and tri.dtype == bool
  np.testing.assert_array_equal(np.nonzero(tri)[0], [5])  # prediction 5 predicts the last 7
  np.testing.assert_array_equal(np.nonzero(qi.induction_mask(toks, "bigram"))[0], [4, 5])  # (5,6) and (6,7) again
  # overlapping repeats: (1,1,1) ends at positions 2 and 3 -> prediction 2; bigram (1,1) repeats from prediction 1
  np.testing.assert_array_equal(qi.induction_mask(np.array([1, 1, 1, 1])), [False, False, True])
  np.testing.assert_array_equal(qi.induction_mask(np.array([1, 1, 1, 1]), "bigram"), [False, True, True])
  # a repeated token alone is never induction; prediction 0 never is
  np.testing.assert_array_equal(qi.induction_mask(np.array([3, 4, 3, 9])), [False, False, False])
  assert not qi.induction_mask(np.array([2, 2]))[0] and qi.induction_mask(np.array([2, 2, 2]), "bigram")[1]
  assert qi.induction_mask(np.array([4])).shape == (0,) and qi.induction_mask(np.array([], int)).shape == (0,)
  with pytest.raises(ValueError, match="kind"):
    qi.induction_mask(toks, "unigram")


def _docs():
  # lengths 0, 1, 5, 8 -> predictions 0, 0, 4, 7 -> flat 0..3 are doc 2, flat 4..10 are doc 3
  tokens = np.zeros((4, 8), np.int64)
  tokens[1, :1] = [9]
  tokens[2, :5] = [1, 2, 3, 1, 2]  # bigram (1,2) repeats at prediction 3 (flat 3); no trigram repeats
  tokens[3, :8] = [5, 6, 7, 1, 5, 6, 7, 9]  # trigram repeat at prediction 5 (flat 9); bigram at 4, 5 (flat 8, 9)
  lengths = np.array([0, 1, 5, 8])
  losses = np.array([0.05, 0.5, 0.08, 0.01, 0.09, 0.06, 2.0, 0.01, 0.02, 0.03, 0.0])
  return losses, tokens, lengths


def test_select_tokens_hand_made():
  losses, tokens, lengths = _docs()
  below = [0, 2, 3, 4, 5, 7, 8, 9, 10]  # < 0.1 nats
  np.testing.assert_array_equal(qi.select_tokens(losses, tokens, lengths, 0.1, exclude_induction=None, every=1),
                                below)
  got = qi.select_tokens(losses, tokens, lengths, 0.1, every=1)
  np.testing.assert_array_equal(got, [0, 2, 3, 4, 5, 7, 8, 10])  # trigram filter drops flat 9
  got = qi.select_tokens(losses, tokens, lengths, 0.1, exclude_induction="bigram", every=1)
  np.testing.assert_array_equal(got, [0, 2, 4, 5, 7, 10])  # bigram filter drops 3, 8, 9
  # 0.1 bit = 0.0693 nats: 0.08 and 0.09 drop out
  bits = qi.select_tokens(losses, tokens, lengths, 0.1, units="bits", every=1)
  np.testing.assert_array_equal(bits, [0, 3, 5, 7, 8, 10])
  np.testing.assert_array_equal(qi.select_tokens(losses, tokens, lengths, 0.1 / LN2, units="bits", every=1),
                                [0, 2, 3, 4, 5, 7, 8, 10])
  # every / first applied after the filter, and the defaults are the paper's (every 50 keeps only the first)
  np.testing.assert_array_equal(qi.select_tokens(losses, tokens, lengths, 0.1, every=3), [0, 4, 8])
  np.testing.assert_array_equal(qi.select_tokens(losses, tokens, lengths, 0.1, every=3, first=2), [0, 4])
  np.testing.assert_array_equal(qi.select_tokens(losses, tokens, lengths), [0])


def test_select_tokens_validates():
  losses, tokens, lengths = _docs()
  for kw, msg in [({"units": "bytes"}, "units"), ({"every": 0}, "every"), ({"first": 0}, "first"),
                  ({"exclude_induction": "4gram"}, "exclude_induction")]:
    with pytest.raises(ValueError, match=msg):
      qi.select_tokens(losses, tokens, lengths, **kw)
  with pytest.raises(ValueError, match="losses_flat"):
    qi.select_tokens(losses[:-1], tokens, lengths)
  with pytest.raises(ValueError, match="lengths_D"):
    qi.select_tokens(losses, tokens, np.array([0, 1, 5, 9]))
  with pytest.raises(ValueError, match="tokens_DxT"):
    qi.select_tokens(losses, tokens[0], lengths)


# --------------------------------------------------------------------------- projection


N_VEC, DIM = 50, 3000


@pytest.fixture(scope="module")
def unit_vectors():
  x = np.random.default_rng(0).normal(size=(N_VEC, 20_000)).astype(np.float32)
  x[1] = -x[0] + 0.3 * x[1]  # some strongly (anti-)correlated pairs, not only near-orthogonal ones
  x[3] = x[2] + 0.5 * x[3]
  x /= np.linalg.norm(x, axis=1, keepdims=True)
  tree = {"b": x[:, 12_000:].reshape(N_VEC, 8, 1000), "w": x[:, :12_000].reshape(N_VEC, 100, 120)}
  return x, tree


def _max_ip_error(x_NxP, y_NxD):
  iu = np.triu_indices(x_NxP.shape[0], 1)
  true, proj = x_NxP @ x_NxP.T, np.asarray(y_NxD, np.float64) @ np.asarray(y_NxD, np.float64).T
  return float(np.abs(true - proj)[iu].max()), float(np.abs(np.diag(proj) - 1).max())


def test_sparse_projection_preserves_inner_products(unit_vectors):
  """JL bound: with dim >= jl_dim(n, eps) = 8 ln(n)/eps², every pairwise inner product of n unit vectors moves by
  at most eps (here eps = sqrt(8 ln 50 / 3000) = 0.102; the estimator's std is ~sqrt(1/3000) = 0.018)."""
  x, tree = unit_vectors
  eps = math.sqrt(8 * math.log(N_VEC) / DIM)
  assert qi.jl_dim(N_VEC, eps) <= DIM + 1
  key = jax.random.key(0)
  proj = jax.jit(qi.sparse_projection, static_argnames=("dim", "nnz_per_column", "sparsity", "chunk"))
  y_tree = proj(tree, key, dim=DIM, chunk=4096)  # paper sparsity 0.999 -> 3 nonzeros per column; 4096 leaves a tail
  assert y_tree.shape == (N_VEC, DIM) and y_tree.dtype == jnp.float32
  err, norm_err = _max_ip_error(x, y_tree)
  assert err < eps and norm_err < eps, (err, norm_err, eps)
  assert err > 1e-3  # it is a random projection, not an isometry
  # the same vectors as one array: a different (but equally valid) map
  y_arr = qi.sparse_projection(x, key, dim=DIM, chunk=4096)
  err_arr, norm_err_arr = _max_ip_error(x, y_arr)
  assert err_arr < eps and norm_err_arr < eps
  gram_t, gram_a = (np.asarray(y, np.float64) @ np.asarray(y, np.float64).T for y in (y_tree, y_arr))
  assert np.abs(gram_t - gram_a).max() < 2 * eps and not np.allclose(gram_t, gram_a)
  # deterministic for a key (jit == eager), different for another key; a one-leaf tree is the array
  np.testing.assert_allclose(qi.sparse_projection(tree, key, dim=DIM, chunk=4096), y_tree, atol=1e-6)
  np.testing.assert_array_equal(qi.sparse_projection({"a": x}, key, dim=DIM, chunk=4096), y_arr)
  y_other = qi.sparse_projection(tree, jax.random.key(1), dim=DIM, chunk=4096)
  assert np.abs(np.asarray(y_other) - np.asarray(y_tree)).max() > 0.01
  assert _max_ip_error(x, y_other)[0] < eps


def test_sparse_projection_structure():
  key = jax.random.key(3)
  eye = jnp.eye(40, 9000, k=0, dtype=jnp.float32)[:, ::-1]  # 40 basis vectors, in the last chunk
  y = np.asarray(qi.sparse_projection(eye, key, dim=5000, chunk=1000))  # sparsity 0.999 -> s = 5
  nnz = (y != 0).sum(axis=1)
  assert nnz.max() <= 5 and nnz.min() >= 3  # up to 5 rows, repeats merge
  np.testing.assert_allclose(np.round(y * math.sqrt(5)), y * math.sqrt(5), atol=1e-5)  # entries are ±m/sqrt(s)
  y1 = np.asarray(qi.sparse_projection(eye, key, dim=5000, nnz_per_column=1, chunk=1000))
  np.testing.assert_array_equal(np.abs(y1).sum(axis=1), 1.0)
  # linear, and bf16 inputs are accumulated in float32
  rng = np.random.default_rng(1)
  a, b = (jnp.asarray(rng.normal(size=(3, 2500)), jnp.float32) for _ in range(2))
  pa, pb, pab = (qi.sparse_projection(v, key, dim=64, chunk=1000) for v in (a, b, 2 * a - b))
  np.testing.assert_allclose(pab, 2 * pa - pb, atol=1e-4)
  assert qi.sparse_projection(a.astype(jnp.bfloat16), key, dim=64, chunk=1000).dtype == jnp.float32
  with pytest.raises(ValueError, match="batch size"):
    qi.sparse_projection({"a": a, "b": b[:2]}, key, dim=64)
  with pytest.raises(ValueError, match="sparsity"):
    qi.sparse_projection(a, key, dim=64, sparsity=1.0)
  assert qi.jl_dim(50, 0.1) == math.ceil(800 * math.log(50))
  with pytest.raises(ValueError):
    qi.jl_dim(1, 0.1)


# --------------------------------------------------------------------------- similarity and affinity


def test_normalize_cosine_affinity():
  rng = np.random.default_rng(2)
  g = qc.l2_normalize(rng.normal(size=(37, 50)).astype(np.float32))
  assert g.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(g, axis=1), 1, rtol=1e-6)
  exact = g.astype(np.float64) @ g.astype(np.float64).T
  for block in (1, 5, 10, 36, 37, 250):
    c = qc.cosine_blockwise(g, block=block)
    assert c.dtype == np.float32
    np.testing.assert_allclose(c, exact, atol=1e-6)
    np.testing.assert_array_equal(c, c.T)
  c64 = qc.cosine_blockwise(g, block=8, accumulate="float64")
  assert c64.dtype == np.float64
  np.testing.assert_allclose(c64, exact, atol=1e-12)
  with pytest.raises(ValueError, match="row 2"):
    qc.l2_normalize(np.array([[1.0, 0], [0, 1], [0, 0]]))
  with pytest.raises(ValueError, match="accumulate"):
    qc.cosine_blockwise(g, accumulate="float16")
  a = qc.affinity(c)
  np.testing.assert_array_equal(a, a.T)
  np.testing.assert_array_equal(np.diag(a), 1.0)
  assert a.min() >= 0 and a.max() <= 1
  v = np.array([[1.0, 0, 0], [0, 1, 0], [-1, 0, 0], [math.sqrt(0.5), math.sqrt(0.5), 0]])
  av = qc.affinity(qc.cosine_blockwise(v, block=2, accumulate="float64") * 1.0000001)  # slightly out of [-1, 1]
  np.testing.assert_allclose(av[0, 1], 0.5, atol=1e-7)  # orthogonal
  np.testing.assert_allclose(av[0, 2], 0.0, atol=1e-3)  # opposite (clipped, not NaN)
  np.testing.assert_allclose(av[0, 3], 0.75, atol=1e-6)  # 45 degrees; (C+1)/2 would give 0.854
  assert np.isfinite(av).all()


# --------------------------------------------------------------------------- clustering


def test_spectral_clusters_recover_planted():
  rng = np.random.default_rng(4)
  centres = rng.normal(size=(4, 200))
  truth = np.repeat(np.arange(4), 30)
  perm = rng.permutation(truth.size)
  g = centres[truth[perm]] + 0.8 * rng.normal(size=(truth.size, 200))
  a = qc.affinity(qc.cosine_blockwise(qc.l2_normalize(g), block=50, accumulate="float64"))
  out = qc.spectral_clusters(a, ks=[4, 2, 120, 500], n_init=10)
  assert sorted(out) == [2, 4]  # K >= N skipped
  assert adjusted_rand_score(truth[perm], out[4]) == 1.0
  assert out[4].shape == (120,) and len(np.unique(out[2])) == 2
  with pytest.raises(ValueError, match="symmetric"):
    qc.spectral_clusters(a + np.triu(np.full_like(a, 0.01), 1) * (a < 0.9), ks=[4])
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    qc.spectral_clusters(2 * a, ks=[4])
  with pytest.raises(ValueError, match="square"):
    qc.spectral_clusters(a[:10], ks=[4])


def test_paper_ks():
  ks = qc.PAPER_KS
  assert len(ks) == 30 and ks[0] == 10 and ks[-1] == 1500 and list(ks) == sorted(set(ks))
  assert {90, 100, 125, 300, 350, 400, 500, 1200, 1400}.issubset(ks) and not {450, 1300}.intersection(ks)


def test_rank_frequency_envelope_hand_made():
  lab3 = np.array([0] * 5 + [7] * 2 + [3] * 3)  # sizes 5, 3, 2
  lab4 = np.array([1] * 4 + [2] * 4 + [0, 3])  # sizes 4, 4, 1, 1
  np.testing.assert_array_equal(qc.rank_frequency(lab3), [5, 3, 2])
  np.testing.assert_array_equal(qc.rank_frequency(lab4), [4, 4, 1, 1])
  np.testing.assert_array_equal(qc.envelope({3: lab3, 4: lab4}), [5, 4, 2, 1])
  exact = np.round(1000 * np.arange(1, 11, dtype=float) ** -1.5)
  fit = qc.envelope_slope(exact, ranks=(2, 1000))  # clipped to ranks 2..10
  assert fit.n_points == 9 and fit.x_range == (2.0, 10.0)
  assert abs(fit.slope + 1.5) < 0.01
  with pytest.raises(ValueError, match="need >= 3"):
    qc.envelope_slope(exact, ranks=(9, 1000))
  assert qc.implied_alpha(-1.237) == pytest.approx(0.237)
  assert qc.implied_alpha(-1.083) == pytest.approx(0.083)


def test_envelope_slope_recovers_planted_zipf():
  """Planted sizes 2e5·r^-1.24 (lognormal noise 5%) at K = 1500 and smaller Ks below it: the envelope over ranks
  100-1000 gives the slope within 0.02 (the rounding of sizes ~40-660 and the noise bias it by < 0.01)."""
  rng = np.random.default_rng(5)
  slope = -1.24

  def labels(k, c):
    sizes = np.maximum(np.round(c * np.arange(1, k + 1) ** slope * np.exp(rng.normal(0, 0.05, k))), 1).astype(int)
    return np.repeat(rng.permutation(k), sizes)

  by_k = {1500: labels(1500, 2e5), 400: labels(400, 1.2e5), 1000: labels(1000, 1.5e5)}
  env = qc.envelope(by_k)
  assert env.size == 1500
  fit = qc.envelope_slope(env)
  assert fit.n_points == 901
  assert abs(fit.slope - slope) < 0.02, str(fit)
  assert abs(qc.implied_alpha(fit.slope) - 0.24) < 0.02


# --------------------------------------------------------------------------- output


def test_figure_and_reports(tmp_path):
  rng = np.random.default_rng(6)
  by_k = {k: rng.integers(0, k, 3000) ** 2 % k for k in (20, 50, 200)}
  fit = qc.rank_frequency_figure(by_k, str(tmp_path / "rf.png"), ranks=(5, 100), alpha_n=0.083)
  assert (tmp_path / "rf.png").stat().st_size > 5000 and fit is not None and fit.slope < 0
  assert qc.rank_frequency_figure({3: np.array([0, 1, 2])}, str(tmp_path / "short.png")) is None  # no fit window
  assert (tmp_path / "short.png").exists()

  labels = np.array([2, 2, 2, 0, 1, 1, 2])  # cluster 2 is largest, then 1
  contexts = [("The cat sat on the", " mat"), ("line one\nand the", " mat"), ("a <tag> & *star*", " mat"),
              ("lonely", " token"), ("x = ", "1"), ("y = ", "2"), ("end of\n", "\n")]
  md = qc.cluster_report(labels, contexts, k=3, path=str(tmp_path / "rep.md"), n_clusters=2, title="T")
  assert (tmp_path / "rep.md").read_text(encoding="utf-8") == md
  assert md.startswith("# T") and "4 tokens" in md and "The cat sat on the **mat**" in md
  assert "line one⏎and the **mat**" in md and "\\*star\\*" in md and "**⏎**" in md
  assert md.index("rank 1") < md.index("**1**") and "lonely" not in md  # only the 2 largest clusters
  page = qc.cluster_report(labels, contexts, k=3, path=str(tmp_path / "rep.html"), n_examples=3)
  assert (tmp_path / "rep.html").read_text(encoding="utf-8") == page
  assert "the<b> mat</b>" in page and "&lt;tag&gt; &amp;" in page and "<tag>" not in page
  assert "lonely" in page and "end of" not in page  # n_examples=3: cluster 2 shows members 0-2, not 6
  with pytest.raises(ValueError, match=r"\.md or \.html"):
    qc.cluster_report(labels, contexts, k=3, path=str(tmp_path / "rep.txt"))
  with pytest.raises(ValueError, match="contexts"):
    qc.cluster_report(labels, contexts[:3], k=3, path=str(tmp_path / "rep.md"))
