"""Neural collapse (NC1) and dormant units of topotrace.analysis.collapse against naive numpy references."""

import numpy as np
import pytest

from topotrace.analysis import collapse


def _naive_nc1(h, y, centre="class_means"):
    """Reference: N x N covariances built sample by sample, np.linalg.pinv, over the classes present."""
    classes = sorted(set(y.tolist()))
    c = len(classes)
    n, d = h.shape
    means = {k: h[y == k].mean(axis=0) for k in classes}
    mu_g = np.mean([means[k] for k in classes], axis=0) if centre == "class_means" else h.mean(axis=0)
    sw = np.zeros((d, d))
    for i in range(n):
        r = h[i] - means[y[i]]
        sw += np.outer(r, r)
    sw /= n
    sb = np.zeros((d, d))
    for k in classes:
        r = means[k] - mu_g
        sb += np.outer(r, r)
    sb /= c
    # Σ_B has rank <= C - 1; its rounding-level eigenvalues must not be inverted.
    return np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / c


def _data(seed, n, n_neurons, n_classes, spread=2.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    y[:n_classes] = np.arange(n_classes)  # every class present
    centres = spread * rng.normal(size=(n_classes, n_neurons))
    h = centres[y] + rng.normal(size=(n, n_neurons)) + 5.0  # a common offset, which NC1 ignores
    return h, y


@pytest.mark.parametrize(("n_neurons", "n_classes"), [(4, 9), (8, 9), (30, 6), (2, 2)])
def test_nc1_equals_naive_pinv_formula(n_neurons, n_classes):
    """NC1 on random imbalanced data equals tr(Σ_W pinv(Σ_B)) / C from N x N matrices, for N < C and N > C."""
    h, y = _data(0, 150, n_neurons, n_classes)
    got = collapse.nc1(h, y, n_classes)
    assert got == pytest.approx(_naive_nc1(h, y), rel=1e-8)


def test_nc1_with_balanced_classes_equals_paper_global_mean():
    """With balanced classes the centre of the class means is the paper's global mean over all samples."""
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(5), 20)
    h = rng.normal(size=(100, 12)) + rng.normal(size=(5, 12))[y]
    assert collapse.nc1(h, y, 5) == pytest.approx(_naive_nc1(h, y, centre="samples"), rel=1e-8)


def test_nc1_scales_with_within_class_variance():
    """Class means fixed, within-class noise of scale σ: NC1 scales like σ² (ratios of 100 within 1 %) towards 0."""
    rng = np.random.default_rng(2)
    n_classes, n_neurons = 5, 20
    y = np.repeat(np.arange(n_classes), 40)
    centres = rng.normal(size=(n_classes, n_neurons))
    z = rng.normal(size=(y.size, n_neurons))
    for k in range(n_classes):
        z[y == k] -= z[y == k].mean(axis=0)  # the class means of the data are exactly `centres`
    values = [collapse.nc1(centres[y] + sigma * z, y, n_classes) for sigma in (1.0, 0.1, 0.01)]
    assert values[0] / values[1] == pytest.approx(100, rel=0.01)
    assert values[1] / values[2] == pytest.approx(100, rel=0.01)
    assert values[2] < 1e-3 * values[0]


@pytest.mark.slow
def test_nc1_on_a_wide_layer_matches_gram_form():
    """A layer of N = 4096 units (no N x N matrix is formed) agrees with the formula through the C x C Gram matrix."""
    h, y = _data(3, 1000, 4096, 10)
    got = collapse.nc1(h, y, 10)
    # Reference without N x N matrices: Σ_B^+ restricted to span(M) via the C x C Gram matrix of M.
    means = np.stack([h[y == k].mean(axis=0) for k in range(10)])
    m = (means - means.mean(axis=0)).T  # [N, C]
    resid = h - means[y]
    g_inv = np.linalg.pinv(m.T @ m, rcond=1e-10, hermitian=True)  # C x C
    a = resid @ m  # [n, C]
    ref = np.trace(a.T @ a @ g_inv @ g_inv) / len(y)  # tr(Σ_W M G^+ G^+ M^T) with Σ_B^+ = C M G^+ G^+ M^T
    assert got == pytest.approx(ref, rel=1e-8)


def test_nc1_leaves_out_absent_classes():
    """Classes without samples are left out: the result equals NC1 with the present classes relabelled."""
    h, y = _data(4, 90, 10, 3)
    relabel = np.array([0, 2, 5])
    assert collapse.nc1(h, relabel[y], 7) == pytest.approx(collapse.nc1(h, y, 3), rel=1e-12)


def test_nc1_with_fewer_than_two_classes_is_nan():
    """One class present (or no samples) gives NaN, as does a layer whose class means coincide."""
    h, _ = _data(5, 30, 4, 2)
    assert np.isnan(collapse.nc1(h, np.zeros(30, int), 4))
    assert np.isnan(collapse.nc1(np.zeros((0, 4)), np.zeros(0, int), 4))
    assert np.isnan(collapse.nc1(np.ones((6, 4)), np.array([0, 1] * 3), 2))


def test_nc1_excludes_non_finite_rows():
    """Samples with any non-finite activation are excluded; the rest give the same NC1."""
    h, y = _data(6, 80, 6, 4)
    bad = h.copy()
    bad[[4, 9], 2] = [np.nan, np.inf]
    keep = np.isfinite(bad).all(axis=1)
    assert collapse.nc1(bad, y, 4) == pytest.approx(collapse.nc1(h[keep], y[keep], 4), rel=1e-12)


def _loop_dormant(h, tau):
    """Reference: per-unit mean |h| by loops, normalised by the layer average, compared with τ."""
    n, d = h.shape
    score = [sum(abs(h[i, j]) for i in range(n)) / n for j in range(d)]
    avg = sum(score) / d
    mask = np.array([(s / avg if avg else 0.0) <= tau for s in score])
    return mask.mean(), mask


def test_dormant_finds_planted_units():
    """3 of 20 units scaled by 1e-3 are exactly the τ-dormant ones at the default τ = 0.025."""
    rng = np.random.default_rng(7)
    h = np.abs(rng.normal(size=(200, 20)))
    h[:, [2, 11, 17]] *= 1e-3
    share, mask = collapse.dormant_share(h)
    assert collapse.DORMANT_TAU == 0.025
    np.testing.assert_array_equal(np.flatnonzero(mask), [2, 11, 17])
    assert share == pytest.approx(3 / 20)


@pytest.mark.parametrize("seed", range(5))
def test_dormant_equals_loop_reference(seed):
    """Share and mask equal a loop reference for random activations and a random τ."""
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(30, 25)) * rng.exponential(size=25)
    tau = float(rng.uniform(0.0, 1.0))
    share, mask = collapse.dormant_share(h, tau)
    ref_share, ref_mask = _loop_dormant(h, tau)
    np.testing.assert_array_equal(mask, ref_mask)
    assert share == pytest.approx(ref_share)


def test_dormant_all_silent_layer_is_all_dormant():
    """A layer that is 0 everywhere has every unit dormant (share 1), even at τ = 0."""
    for tau in (0.0, collapse.DORMANT_TAU):
        share, mask = collapse.dormant_share(np.zeros((8, 5)), tau)
        assert share == 1.0 and mask.all()


def test_dormant_tau_zero_counts_only_silent_units():
    """With τ = 0 only units that are exactly 0 on every sample are dormant, however small the others."""
    h = np.ones((10, 4))
    h[:, 1] = 0.0
    h[:, 2] = np.where(np.arange(10) == 3, 1e-300, 0.0)
    _, mask = collapse.dormant_share(h, 0.0)
    np.testing.assert_array_equal(mask, [False, True, False, False])


def test_dormant_excludes_non_finite_units():
    """A unit with a non-finite value is neither dormant nor counted, and leaves the others' scores unchanged."""
    rng = np.random.default_rng(8)
    h = np.abs(rng.normal(size=(50, 10)))
    h[:, 4] *= 1e-4
    bad = np.concatenate([h, np.full((50, 2), 1e-4)], axis=1)
    bad[7, 10] = np.nan
    bad[0, 11] = np.inf
    share, mask = collapse.dormant_share(bad)
    ref_share, ref_mask = collapse.dormant_share(h)
    np.testing.assert_array_equal(mask[:10], ref_mask)
    assert not mask[10:].any()
    assert share == ref_share == pytest.approx(1 / 10)
    share, mask = collapse.dormant_share(np.full((3, 2), np.nan))
    assert np.isnan(share) and not mask.any()


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda: collapse.nc1(np.zeros(5), np.zeros(5, int), 2), ValueError, "'acts'.*shape"),
        (lambda: collapse.nc1(np.zeros((5, 2)), np.zeros(4, int), 2), ValueError, "'labels'.*\\(5,\\).*\\(4,\\)"),
        (lambda: collapse.nc1(np.zeros((3, 2)), np.array([0, 1, 3]), 3), ValueError, "'labels'.*\\[0, 3\\).*3\\]"),
        (lambda: collapse.nc1(np.zeros((3, 2)), np.array([0, -1, 1]), 3), ValueError, "'labels'.*\\[-1, 1\\]"),
        (lambda: collapse.nc1(np.zeros((3, 2)), np.zeros(3), 2), TypeError, "'labels'.*int.*float64"),
        (lambda: collapse.nc1(np.zeros((3, 2)), np.zeros(3, int), 2.0), TypeError, "'n_classes'.*int.*float"),
        (lambda: collapse.nc1(np.zeros((3, 2)), np.zeros(3, int), 0), ValueError, "'n_classes'.*>= 1.*Got 0"),
        (lambda: collapse.nc1(np.array([["a"]]), np.zeros(1, int), 2), TypeError, "'acts'.*real numbers"),
        (lambda: collapse.dormant_share(np.zeros((2, 2, 2))), ValueError, "'acts'.*shape.*\\(2, 2, 2\\)"),
        (lambda: collapse.dormant_share(np.zeros((2, 2)), -0.1), ValueError, "'tau'.*>= 0.*-0.1"),
        (lambda: collapse.dormant_share(np.zeros((2, 2)), float("nan")), ValueError, "'tau'.*finite"),
        (lambda: collapse.dormant_share(np.zeros((2, 2)), "0.1"), TypeError, "'tau'.*real number.*str"),
    ],
)
def test_bad_inputs_raise_naming_the_parameter(call, error, match):
    """Wrong shapes, values or types raise an error that names the parameter and what was given."""
    with pytest.raises(error, match=match):
        call()
