"""NAPs, groupings and confidence bins (topotrace.analysis.naps) against direct references."""

import numpy as np
import pytest

from topotrace.analysis import naps
from topotrace.instrument.store import Store
from topotrace.instrument.synthetic import write_synthetic_store


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return write_synthetic_store(tmp_path_factory.mktemp("naps") / "store.h5", n_snapshots=4, layer_sizes=(12,),
                                 n_classes=3, per_class=10)


def test_group_means_reference():
    rng = np.random.default_rng(0)
    acts = rng.normal(size=(30, 5)).astype(np.float32)
    idx = rng.integers(0, 4, 30)
    idx[idx == 2] = 3  # group 2 empty
    m, counts = naps.group_means(acts, idx, 5)
    for g in range(5):
        assert counts[g] == (idx == g).sum()
        if counts[g]:
            np.testing.assert_allclose(m[g], acts[idx == g].mean(axis=0), rtol=1e-6)
        else:
            assert np.isnan(m[g]).all()


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


def test_compute_naps_matches_direct_computation(store_path):
    with Store(store_path) as st:
        res = naps.compute_naps(st, "heldout", "layer0", n_bins=3)
        labels, pred, correct = st.labels("heldout"), st.pred("heldout"), st.correct("heldout")
        conf = st.conf("heldout", "max_prob")
        edges = np.quantile(conf.ravel().astype(np.float64), np.linspace(0, 1, 4))
        for s in range(st.n_snapshots):
            a = st.acts("heldout", "layer0", s)
            cb = np.clip(np.searchsorted(edges, conf[s], side="right") - 1, 0, 2)
            keys = {"class": labels, "pred": pred[s], "correct": correct[s].astype(int), "confbin": cb,
                    "class_confbin": labels * 3 + cb}
            for g, key in keys.items():
                gn = res[g]
                for k in range(gn.naps.shape[1]):
                    assert gn.counts[s, k] == (key == k).sum()
                    if gn.counts[s, k]:
                        np.testing.assert_allclose(gn.naps[s, k], a[key == k].mean(0), rtol=1e-5, atol=1e-6)
    assert res["class"].group_names == ["class 0", "class 1", "class 2"]
    assert res["correct"].group_names == ["wrong", "correct"]


def test_count_weighted_class_naps_equal_overall_mean(store_path):
    with Store(store_path) as st:
        res = naps.compute_naps(st, "heldout", "layer0", groupings=["class", "confbin", "class_confbin"])
        for g in ("class", "confbin", "class_confbin"):
            gn = res[g]
            for s in range(st.n_snapshots):
                w = gn.counts[s][:, None]
                mean = np.nansum(gn.naps[s] * w, axis=0) / w.sum()
                np.testing.assert_allclose(mean, st.acts("heldout", "layer0", s).mean(0), rtol=1e-5, atol=1e-6)


def test_compute_naps_streams_snapshots(store_path, monkeypatch):
    """NAPs come from iter_acts (one snapshot in memory), never from a whole-store read."""
    calls = []
    orig = Store.iter_acts

    def spy(self, probe, layer):
        for s, a in orig(self, probe, layer):
            calls.append(s)
            yield s, a

    monkeypatch.setattr(Store, "iter_acts", spy)
    with Store(store_path) as st:
        res = naps.compute_naps(st, "heldout", "layer0", contrast=True)
    assert calls == [0, 1, 2, 3]
    np.testing.assert_allclose(np.nanmean(res["class"].naps, axis=1), 0, atol=1e-6)


def test_bin_names_tell_neighbouring_edges_apart():
    """Bin names get enough decimals to distinguish distinct edges (a saturated measure is not '1.00–1.00')."""
    from topotrace.analysis.naps import bin_names

    assert bin_names(np.array([0.1, 0.42, 0.77, 1.0])) == ["0.10–0.42", "0.42–0.77", "0.77–1.00"]
    names = bin_names(np.array([0.2, 0.95, 0.9996, 1.0]))
    assert names == ["0.2000–0.9500", "0.9500–0.9996", "0.9996–1.0000"]
    assert len(set(names)) == 3
