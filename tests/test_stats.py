"""Statistics of topotrace.analysis.stats against independent numpy/scipy references."""

import numpy as np
import pytest
from scipy import stats as sps

from topotrace.analysis import stats

from . import reference as ref_impl


def _data(seed=0, n=60, n_neurons=7, n_classes=3):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n // n_classes)
    x = rng.normal(size=(n, n_neurons)) + labels[:, None] * rng.normal(size=n_neurons)
    x[:, 0] = np.round(x[:, 0])  # ties
    x[:, 1] = np.maximum(x[:, 1], 0)  # many ties at zero, like ReLU
    y = rng.random((n, 2))
    return x, y, labels


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_spearman_ranks_ties_like_scipy(dtype):
    """Spearman with ties (average ranks) equals scipy's, also on the packed-key paths (float16/32, signed zeros)."""
    x, y, labels = _data()
    x = x.astype(dtype)
    x[3, 2] = -0.0  # signed zero ties with +0.0
    x[4, 2] = 0.0
    r = stats.snapshot_correlations(x, y, labels)
    xf = x.astype(np.float64)
    ref = ref_impl.pearson(sps.rankdata(xf, axis=0), sps.rankdata(y, axis=0))
    np.testing.assert_allclose(r["spearman"], ref, atol=1e-10)


def test_as_float_is_exact_for_every_float16():
    """The table conversion of float16 gives numpy's own conversion for all 65536 bit patterns (NaN stays NaN)."""
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16).reshape(256, 256)
    for dtype in (np.float32, np.float64):
        got = stats.as_float(every, dtype)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, every.astype(dtype))
        out = np.empty(every.shape, dtype)
        assert stats.as_float(every[:, 3:9], dtype, out=out[:, :6]) is not None
        np.testing.assert_array_equal(out[:, :6], every[:, 3:9].astype(dtype))


def test_partial_spearman_is_regression_on_global_ranks():
    """Within-class Spearman = partial correlation of the all-sample ranks given class (dummy regression)."""
    x, y, labels = _data(1)
    x = x.astype(np.float16)
    r = stats.snapshot_correlations(x, y, labels)
    rx, ry = sps.rankdata(x.astype(np.float64), axis=0), sps.rankdata(y, axis=0)
    dummies = (labels[:, None] == np.unique(labels)[None, :]).astype(float)
    res_x = rx - dummies @ np.linalg.lstsq(dummies, rx, rcond=None)[0]
    res_y = ry - dummies @ np.linalg.lstsq(dummies, ry, rcond=None)[0]
    ref = np.array([[sps.pearsonr(res_x[:, j], res_y[:, m]).statistic for m in range(2)] for j in range(x.shape[1])])
    np.testing.assert_allclose(r["spearman_within"], ref, atol=1e-10)


def test_pearson_and_within_class_pearson_match_scipy():
    """Overall Pearson equals scipy's pearsonr; within-class Pearson equals the correlation of class residuals."""
    x, y, labels = _data(2)
    r = stats.snapshot_correlations(x.astype(np.float32), y, labels)
    xf = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(r["pearson"], ref_impl.pearson(xf, y), atol=1e-10)
    np.testing.assert_allclose(r["pearson_within"], ref_impl.pearson_within(xf, y, labels), atol=1e-10)


def test_constant_neuron_has_zero_correlation():
    """A neuron without variation (dead unit; class-only neuron within class) gets r = 0, not NaN."""
    x, y, labels = _data(4)
    x[:, 0] = 0.0
    x[:, 1] = labels * 0.1  # varies only between classes
    r = stats.snapshot_correlations(x.astype(np.float32), y, labels)
    assert r["pearson"][0, 0] == 0.0 and r["spearman"][0, 0] == 0.0
    assert abs(r["pearson"][1, 0]) > 0  # overall it does vary
    assert r["pearson_within"][1, 0] == 0.0 and r["spearman_within"][1, 0] == 0.0


def test_planted_confidence_neuron():
    """A neuron equal to confidence correlates 1 overall and within class (Pearson and Spearman)."""
    x, y, labels = _data(5)
    x[:, 2] = y[:, 0]
    r = stats.snapshot_correlations(x, y, labels)
    for k in ("pearson", "spearman", "pearson_within", "spearman_within"):
        assert r[k][2, 0] == pytest.approx(1.0)


def test_pvalues_match_pearsonr_and_within_dof():
    x, y, labels = _data(6)
    r = ref_impl.pearson(x, y[:, :1])[:, 0]
    p = stats.corr_pvalues(r, len(x) - 2)
    ref = [sps.pearsonr(x[:, j], y[:, 0]).pvalue for j in range(x.shape[1])]
    np.testing.assert_allclose(p, ref, rtol=1e-8)
    # within class: t-test with n - C - 1 degrees of freedom (C class means were estimated)
    rw = ref_impl.pearson_within(x, y[:, :1], labels)[:, 0]
    df = len(x) - 3 - 1
    t = rw * np.sqrt(df / (1 - rw**2))
    np.testing.assert_allclose(stats.corr_pvalues(rw, df), 2 * sps.t.sf(np.abs(t), df), rtol=1e-10)
    assert stats.corr_pvalues(np.array([1.0, -1.0]), 10).tolist() == [0.0, 0.0]


def test_bh_fdr_hand_computed():
    """Sorted p 0.005, 0.01, 0.03, 0.04 (m = 4) -> 0.02, 0.02, 0.04, 0.04, mapped back; NaN stays out."""
    q = stats.bh_fdr(np.array([0.01, 0.04, 0.03, 0.005, np.nan]))
    np.testing.assert_allclose(q[:4], [0.02, 0.04, 0.04, 0.02])
    assert np.isnan(q[4])
    np.testing.assert_allclose(stats.bh_fdr(np.array([0.5, 0.9])), [0.9, 0.9])


def test_bh_fdr_brute_force_reference():
    rng = np.random.default_rng(7)
    p = rng.random((3, 40)) ** 3
    m = p.shape[1]
    ref = np.empty_like(p)
    for r in range(3):
        rank = sps.rankdata(p[r], method="ordinal")
        for i in range(m):
            ref[r, i] = min(1.0, min(p[r, j] * m / rank[j] for j in range(m) if p[r, j] >= p[r, i]))
    np.testing.assert_allclose(stats.bh_fdr(p), ref)


def test_corr_summary():
    r = np.array([0.5, -0.4, 0.2, 0.0])
    q = np.array([0.01, 0.02, 0.2, 1.0])
    s = stats.corr_summary(r, q, 0.05)
    assert s == {"mean_r": pytest.approx(0.075), "frac_sig_pos": 0.25, "frac_sig_neg": 0.25}


def _distinctness(x, labels):
    """The production form: from class sums, class counts and the sum of squares."""
    onehot = (labels[None, :] == np.arange(labels.max() + 1)[:, None]).astype(float)
    return stats.distinctness_from_sums(onehot @ x, onehot.sum(1), float((x * x).sum()))


def test_distinctness_from_sums_equals_the_fisher_ratio():
    """Sufficient statistics give the between/within sum-of-squares ratio; one class gives NaN."""
    x, _, labels = _data(8)
    assert _distinctness(x, labels) == pytest.approx(ref_impl.distinctness(x, labels))
    assert np.isnan(_distinctness(x[labels == 0], labels[labels == 0]))


def test_distinctness_grows_with_class_separation():
    rng = np.random.default_rng(9)
    labels = np.repeat(np.arange(4), 25)
    noise = rng.normal(size=(100, 8))
    centres = rng.normal(size=(4, 8))
    d = [_distinctness(noise + k * centres[labels], labels) for k in (0.5, 1.0, 2.0)]
    assert d[0] < d[1] < d[2]


@pytest.mark.parametrize("n", [12, 40])  # sample-space (n <= N) and feature-space Gram paths
def test_cka_reference(n):
    """CkaReference equals the definition; invariant to rotation, scale and shift."""
    rng = np.random.default_rng(n)
    x, y = rng.normal(size=(n, 20)), rng.normal(size=(n, 15))
    assert stats.CkaReference(y).score(x) == pytest.approx(ref_impl.linear_cka(x, y))
    assert stats.CkaReference(x).score(x) == pytest.approx(1.0)
    q = np.linalg.qr(rng.normal(size=(20, 20)))[0]
    assert stats.CkaReference(x).score(3 * x @ q + 1) == pytest.approx(1.0)


def test_snapshot_correlations_equal_the_direct_forms():
    """The moment-based pass equals Pearson / within-class Pearson on values and on (within-class) ranks."""
    x, y, labels = _data(11)
    x = x.astype(np.float16)
    x[:, 3] = (labels * 0.3).astype(np.float16)  # class-only neuron
    x[:, 4] = y[:, 0].astype(np.float16)  # confidence neuron
    r = stats.snapshot_correlations(x.astype(np.float32), y, labels, rank_source=x)
    xf = x.astype(np.float64)
    np.testing.assert_allclose(r["pearson"], ref_impl.pearson(xf, y), atol=1e-10)
    np.testing.assert_allclose(r["pearson_within"], ref_impl.pearson_within(xf, y, labels), atol=1e-10)
    ref_s = [[sps.spearmanr(xf[:, j], y[:, m]).statistic for m in range(2)] for j in range(x.shape[1])]
    np.testing.assert_allclose(r["spearman"], ref_s, atol=1e-10)
    rw = ref_impl.pearson_within(sps.rankdata(xf, axis=0), sps.rankdata(y, axis=0), labels)
    np.testing.assert_allclose(r["spearman_within"], rw, atol=1e-10)
    # float16 values ranked directly (no rank_source), float32 store values through their 32-bit keys
    for acts in (x, xf.astype(np.float32)):
        again = stats.snapshot_correlations(acts, y, labels)
        for k, v in r.items():
            np.testing.assert_allclose(again[k], v, atol=1e-12)
    assert r["pearson_within"][3, 0] == 0.0 and r["spearman_within"][3, 0] == 0.0
    assert r["pearson"][4, 0] > 0.999 and r["pearson_within"][4, 0] > 0.999
