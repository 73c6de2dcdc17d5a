"""Neuron layouts (topotrace.analysis.layouts): planted clusters, determinism, estimator contract, quality scores."""

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial.distance import pdist
from sklearn.exceptions import NotFittedError
from sklearn.manifold import trustworthiness
from sklearn.neighbors import KNeighborsClassifier

from topotrace.analysis import layouts
from topotrace.analysis.layouts import NeuronLayout


def _two_clusters(n=60, d=10, seed=0):
    """Half the neurons prefer classes 0-4, half classes 5-9 (planted clusters in cosine space)."""
    rng = np.random.default_rng(seed)
    lab = np.repeat([0, 1], n // 2)
    base = np.zeros((2, d))
    base[0, : d // 2] = 1.0
    base[1, d // 2 :] = 1.0
    x = base[lab] + 0.15 * rng.random((n, d))
    return x, lab


def _one_nn_accuracy(xy, lab):
    acc = []
    for i in range(len(xy)):
        d = np.linalg.norm(xy - xy[i], axis=1)
        d[i] = np.inf
        acc.append(lab[np.argmin(d)] == lab[i])
    return np.mean(acc)


@pytest.mark.parametrize("method", ["pca", "force", "som", "mds", "tsne"])
def test_planted_clusters_separate(method):
    x, lab = _two_clusters()
    xy = NeuronLayout(method=method).fit(x).embedding_
    assert xy.shape == (60, 2) and xy.dtype == np.float32
    assert xy.min() >= 0 and xy.max() <= 1
    assert _one_nn_accuracy(xy, lab) >= 0.95
    knn = KNeighborsClassifier(5).fit(xy, lab)
    assert knn.score(xy, lab) >= 0.95


@pytest.mark.parametrize("method", ["force", "som", "pca"])
def test_same_seed_same_layout(method):
    x, _ = _two_clusters(seed=1)
    a = NeuronLayout(method=method, random_state=3).fit(x).embedding_
    b = NeuronLayout(method=method, random_state=3).fit(x).embedding_
    np.testing.assert_array_equal(a, b)


def test_different_seed_changes_force_layout():
    x, _ = _two_clusters(seed=1)
    a = NeuronLayout(method="force", random_state=0).fit(x).embedding_
    b = NeuronLayout(method="force", random_state=1).fit(x).embedding_
    assert not np.array_equal(a, b)


def test_estimator_contract_and_errors():
    x, _ = _two_clusters()
    est = NeuronLayout(method="pca")
    assert est.get_params()["method"] == "pca"  # __init__ only stores
    with pytest.raises(NotFittedError, match="not fitted"):
        est.score(x)
    assert est.fit(x) is est
    assert 0.5 < est.score(x) <= 1.0
    with pytest.raises(ValueError, match=r"The 'method' parameter of NeuronLayout must be a str among .*Got 'tnse'"):
        NeuronLayout(method="tnse").fit(x)
    with pytest.raises(TypeError, match="'method' parameter"):
        NeuronLayout(method=3).fit(x)
    with pytest.raises(ValueError, match="'metric' parameter"):
        NeuronLayout(metric="manhattan").fit(x)
    with pytest.raises(ValueError, match="max_mds_neurons=10"):
        NeuronLayout(method="mds", max_mds_neurons=10).fit(x)
    with pytest.raises(ValueError, match="NaN"):
        NeuronLayout().fit(np.full((5, 3), np.nan))
    with pytest.raises(ValueError, match="shape"):
        NeuronLayout().fit(np.zeros(5))
    assert NeuronLayout(method="som", declutter=False).name == "som"
    assert NeuronLayout(method="som").name == "som+declutter"


@pytest.mark.skipif(layouts.HAS_UMAP, reason="umap-learn is installed")
def test_umap_without_package_is_refused():
    with pytest.raises(ValueError, match="umap-learn"):
        NeuronLayout(method="umap").fit(_two_clusters()[0])


def test_declutter_spreads_overlaps_and_keeps_neighbourhoods():
    rng = np.random.default_rng(2)
    centres = np.stack(np.meshgrid([0, 0.5, 1.0], [0, 0.5, 1.0]), -1).reshape(-1, 2)[:8]
    xy = np.repeat(centres, 25, axis=0) + rng.normal(0, 1e-3, (200, 2))
    xy[:10] = xy[0]  # exact duplicates
    out = layouts.declutter(xy)
    nn_before = np.sort(np.linalg.norm(xy[:, None] - xy[None], axis=-1), axis=1)[:, 1]
    nn_after = np.sort(np.linalg.norm(out[:, None] - out[None], axis=-1), axis=1)[:, 1]
    assert nn_before.min() == 0 and nn_after.min() > 0.02
    assert np.median(nn_after) > 10 * np.median(nn_before)
    # every neuron stays closest to its own group: neighbourhoods are kept
    group = np.repeat(np.arange(8), 25)
    assert _one_nn_accuracy(out, group) == 1.0
    assert trustworthiness(xy, out, n_neighbors=7) > 0.9
    np.testing.assert_array_equal(out, layouts.declutter(xy))


def test_trustworthiness_matches_sklearn_and_handles_silent_neurons():
    x, _ = _two_clusters(seed=3)
    xy = NeuronLayout(method="pca", declutter=False).fit(x).embedding_
    ref = trustworthiness(x, xy, n_neighbors=7, metric="cosine")
    assert layouts.trustworthiness_score(x, xy) == pytest.approx(ref)
    d = layouts.feature_distances(np.array([[1.0, 0], [0, 0], [0, 0], [0, 2.0]]))
    np.testing.assert_allclose(d, [[0, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 0]])


def test_shepard_matches_direct_spearman():
    x, _ = _two_clusters(seed=4)
    xy = NeuronLayout(method="pca").fit(x).embedding_
    ref = sps.spearmanr(pdist(x, "cosine"), pdist(xy)).statistic
    assert layouts.shepard_score(x, xy) == pytest.approx(ref)
    sub = layouts.shepard_score(x, xy, max_pairs=500)
    assert sub == layouts.shepard_score(x, xy, max_pairs=500) and abs(sub - ref) < 0.1


def _body_with_far_group(seed=0):
    """A round body of 120 neurons and a group of 6 neurons 40 body radii away."""
    rng = np.random.default_rng(seed)
    ang, rad = rng.uniform(0, 2 * np.pi, 120), np.sqrt(rng.uniform(0, 1, 120))
    body = np.column_stack([rad * np.cos(ang), rad * np.sin(ang)])
    far = np.array([40.0, 3.0]) + 0.2 * rng.normal(size=(6, 2))
    return np.vstack([body, far])


def test_far_outlier_group_does_not_squeeze_the_body():
    """Scaled by its body, the layout's body spans most of [0, 1]^2 on both axes; the far group stays outside."""
    xy = _body_with_far_group()
    naive = layouts.declutter(xy)  # min-max scaling alone: the body shrinks to a few percent of the square
    assert np.ptp(naive[:120], axis=0).min() < 0.2
    out = layouts.declutter(layouts.robust_scale(xy))
    span = np.ptp(out[:120], axis=0)
    assert span.min() > 0.55, span
    centre = np.median(out[:120], axis=0)
    r_body = np.linalg.norm(out[:120] - centre, axis=1)
    r_far = np.linalg.norm(out[120:] - centre, axis=1)
    assert r_far.min() > np.quantile(r_body, 0.95)  # still the outermost neurons, on the same side
    assert (out[120:, 0] > centre[0]).all()
    np.testing.assert_array_equal(out, layouts.declutter(layouts.robust_scale(xy)))


@pytest.mark.parametrize("method", ["pca", "mds"])
def test_layout_of_planted_outlier_neurons_fills_its_map(method):
    """End to end: features with 5 neurons orthogonal to all others give a body that fills most of the map."""
    from topotrace.analysis.maps import interp_operator

    rng = np.random.default_rng(5)
    ang, el = rng.uniform(0.1, np.pi / 2 - 0.1, (2, 80))
    x = np.zeros((80, 6))
    x[:, :3] = np.column_stack([np.cos(ang) * np.sin(el), np.sin(ang) * np.sin(el), np.cos(el)])  # a 2-D body
    x[:5] = 0.0
    x[:5, 5] = 1.0 + 0.01 * rng.random(5)  # cosine distance 1 from every body neuron
    xy = NeuronLayout(method=method).fit(x).embedding_
    assert np.ptp(xy[5:], axis=0).min() > 0.5  # min-max scaling alone gives 0.29 (pca) and 0.42 (mds)
    op = interp_operator(xy, grid=32)
    assert len(op.pixel) / 32**2 > 0.2  # min-max scaling alone: 0.14 and 0.17 (robust: 0.22 and 0.36)


def test_layout_registry_is_the_one_list_of_methods():
    """METHODS is the registry's names; a name without a fit function cannot be registered; unknown names refused."""
    assert layouts.METHODS == tuple(layouts.REGISTRY) == ("pca", "tsne", "mds", "som", "force", "umap")
    assert all(callable(m.fit) and m.name == k for k, m in layouts.REGISTRY.items())
    with pytest.raises(TypeError, match="needs a name and a fit function"):
        layouts.LayoutMethod("spiral", None)
    with pytest.raises(ValueError, match="registered twice"):
        layouts._registry(layouts.REGISTRY["pca"], layouts.REGISTRY["pca"])
    with pytest.raises(ValueError, match="must be a str among .*Got 'spiral' instead: choose one of pca, tsne, mds"):
        layouts.check_method("spiral")
    with pytest.raises(ValueError, match="Got 'spiral'"):
        NeuronLayout(method="spiral").fit(_two_clusters()[0])


def test_a_registered_method_runs_its_own_fit(monkeypatch):
    """NeuronLayout calls the registered fit function of its method (no fallback to another method)."""
    x, _ = _two_clusters()
    seen = []

    planted = np.random.default_rng(5).normal(size=(len(x), 2))

    def diagonal(raw, prepared, est):
        seen.append((raw.shape, est.method))
        return planted

    monkeypatch.setitem(layouts.REGISTRY, "diag", layouts.LayoutMethod("diag", diagonal))
    xy = NeuronLayout(method="diag", declutter=False).fit(x).embedding_
    assert seen == [(x.shape, "diag")]
    assert np.allclose(xy, layouts._to_unit_square(layouts.robust_scale(planted)), atol=1e-6)  # the planted layout
    missing = layouts.LayoutMethod("needs", diagonal, package="not-a-package", available=lambda: False)
    monkeypatch.setitem(layouts.REGISTRY, "needs", missing)
    with pytest.raises(ValueError, match="needs the optional package not-a-package.*pip install not-a-package"):
        NeuronLayout(method="needs").fit(x)
