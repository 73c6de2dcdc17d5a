"""NAPs, groupings and confidence bins (topotrace.analysis.naps) against direct references."""

import numpy as np
import pytest

from topotrace.analysis import naps
from topotrace.instrument.store import Store
from topotrace.instrument.synthetic import write_synthetic_store

from . import reference as ref_impl


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("naps") / "store.h5", n_snapshots=4, layer_sizes=(12,),
                                 n_classes=3, per_class=10)


def test_confbin_edges_are_pooled_quantiles():
    rng = np.random.default_rng(1)
    conf = rng.random((6, 50))
    edges = naps.confbin_edges(conf, 4)
    np.testing.assert_allclose(edges, np.quantile(conf.ravel(), [0, 0.25, 0.5, 0.75, 1]))
    b = naps.assign_bins(conf, edges)
    assert b.shape == conf.shape and b.min() == 0 and b.max() == 3
    assert np.bincount(b.ravel()).tolist() == [75, 75, 75, 75]  # equal occupancy over all snapshots pooled
    probe = np.array([edges[0] - 1, edges[1], edges[-1], edges[-1] + 1])
    assert naps.assign_bins(probe, edges).tolist() == [0, 1, 3, 3]
    with pytest.raises(ValueError, match="'n_bins'"):
        naps.confbin_edges(conf, 0)
    with pytest.raises(TypeError, match="'n_bins'"):
        naps.confbin_edges(conf, 2.5)


def test_group_index_and_names():
    labels = np.array([0, 1, 2, 1])
    pred = np.array([0, 2, 2, 1])
    correct = labels == pred
    cb = np.array([1, 0, 1, 0])
    idx, g = naps.group_index("class_confbin", labels, pred, correct, cb, 3, 2)
    assert g == 6 and idx.tolist() == [1, 2, 5, 2]
    assert naps.group_index("correct", labels, pred, correct, cb, 3, 2)[0].tolist() == [1, 0, 1, 1]
    assert naps.group_names("class_confbin", ["a", "b"], ["lo", "hi"]) == ["a | lo", "a | hi", "b | lo", "b | hi"]
    with pytest.raises(ValueError, match="'grouping' parameter must be a str among"):
        naps.group_index("klass", labels, pred, correct, cb, 3, 2)


def test_contrast_normalise_subtracts_group_mean():
    x = np.array([[[1.0, 2.0], [3.0, np.nan], [5.0, 8.0]]])  # (S=1, G=3, N=2)
    out = naps.contrast_normalise(x)
    np.testing.assert_allclose(out[0, :, 0], [-2, 0, 2])
    np.testing.assert_allclose(out[0, [0, 2], 1], [-3, 3])
    assert np.isnan(out[0, 1, 1])


@pytest.fixture(scope="module")
def analysed(store_path, tmp_path_factory):
    from topotrace.analysis.pipeline import analyze

    return analyze(store_path, tmp_path_factory.mktemp("naps_cache") / "analysis.h5", layout_methods=["pca"],
                   n_bins=3, measure="max_prob", bins="pooled")


def test_every_grouping_matches_direct_computation(store_path, analysed):
    """The pipeline's NAPs of every grouping (pooled confidence bins) equal group means computed directly."""
    lr = analysed.layers["layer0"]
    with Store(store_path) as st:
        labels, pred, correct = st.labels("heldout"), st.pred("heldout"), st.correct("heldout")
        conf = st.conf("heldout", "max_prob")
        edges = np.quantile(conf.ravel().astype(np.float64), np.linspace(0, 1, 4))
        for s in range(st.n_snapshots):
            a = st.acts("heldout", "layer0", s).astype(np.float64)
            cb = np.clip(np.searchsorted(edges, conf[s], side="right") - 1, 0, 2)
            keys = {"class": labels, "pred": pred[s], "correct": correct[s].astype(int), "confbin": cb,
                    "class_confbin": labels * 3 + cb}
            for g, key in keys.items():
                gn = lr.naps[g]
                means, counts = ref_impl.group_means(a, key, gn.naps.shape[1])
                np.testing.assert_array_equal(gn.counts[s], counts)
                np.testing.assert_allclose(gn.naps[s], means, rtol=1e-5, atol=1e-6)  # NaN where empty, both
                # the count-weighted group means are the overall mean
                w = gn.counts[s][:, None]
                np.testing.assert_allclose(np.nansum(gn.naps[s] * w, axis=0) / w.sum(), a.mean(0), rtol=1e-5,
                                           atol=1e-6)
    assert lr.naps["class"].group_names == ["class 0", "class 1", "class 2"]
    assert lr.naps["correct"].group_names == ["wrong", "correct"]


def test_bin_names_tell_neighbouring_edges_apart():
    """Bin names get enough decimals to distinguish distinct edges (a saturated measure is not '1.00–1.00')."""
    from topotrace.analysis.naps import bin_names

    assert bin_names(np.array([0.1, 0.42, 0.77, 1.0])) == ["0.10–0.42", "0.42–0.77", "0.77–1.00"]
    names = bin_names(np.array([0.2, 0.95, 0.9996, 1.0]))
    assert names == ["0.2000–0.9500", "0.9500–0.9996", "0.9996–1.0000"]
    assert len(set(names)) == 3


def test_snapshot_bins_hold_equal_shares_at_every_snapshot(store_path, tmp_path):
    """Per-snapshot ("relative") bins: bin b of snapshot s holds the samples ranked b/B .. (b+1)/B there."""
    from topotrace.analysis.pipeline import analyze

    res = analyze(store_path, tmp_path / "a.h5", layout_methods=["pca"], n_bins=4, measure="logit_margin")
    gn = res.layers["layer0"].naps["confbin"]
    assert gn.group_names == ["0–25 %", "25–50 %", "50–75 %", "75–100 %"]
    with Store(store_path) as st:
        conf = st.conf("heldout", "logit_margin")
        n = conf.shape[1]
        for s in range(st.n_snapshots):
            assert gn.counts[s].tolist() == np.bincount(np.arange(n) * 4 // n).tolist()  # 30 samples: 8, 7, 8, 7
            a = st.acts("heldout", "layer0", s).astype(np.float64)
            order = np.argsort(conf[s], kind="stable")
            for b in range(4):
                members = order[np.arange(n) * 4 // n == b]
                np.testing.assert_allclose(gn.naps[s, b], a[members].mean(0), rtol=1e-5, atol=1e-6)
    assert naps.snapshot_bins(np.array([[3.0, 1.0, 2.0, 2.0]]), 2).tolist() == [[1, 0, 0, 1]]
