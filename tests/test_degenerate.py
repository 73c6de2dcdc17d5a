"""Degenerate probe sets (issue 23, item 3): one class, one or two samples.

A probe set holding one class gets one warning line per layer naming what is missing for which result (no
layout error); with fewer than 3 samples every correlation is NaN, as documented, and the within-class forms are
NaN where no degree of freedom is left. References are plain numpy.
"""

import warnings

import numpy as np
import pytest

from topotrace.analysis import stats
from topotrace.analysis.pipeline import analyze
from topotrace.instrument.confidence import DEFAULT_MEASURES, outcomes
from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter

CLASSES = ("x", "y", "z")


def _store(path, labels, layers=(("a", 6), ("b", 5)), steps=(0, 10, 20)):
    """A tiny float32 store of one probe set 'heldout' with exactly these labels."""
    labels = np.asarray(labels, np.int64)
    n, rng = len(labels), np.random.default_rng(0)
    spec = StoreSpec(tuple(LayerSpec(name, d, "flatten", (d,)) for name, d in layers),
                     (ProbeSpec("heldout", np.arange(n), labels),), CLASSES, DEFAULT_MEASURES, "float32")
    writer = StoreWriter.create(path, spec, {"run_name": "tiny", "seed": 0})
    try:
        for i, step in enumerate(steps):
            logits = rng.normal(0, 1, (n, len(CLASSES))).astype(np.float32)
            pred, correct, loss, conf = outcomes(logits, labels, DEFAULT_MEASURES)
            acts = {name: rng.normal(0, 1, (n, d)).astype(np.float32) for name, d in layers}
            writer.append(Snapshot(step=step, epoch=0, time=float(i),
                                   probes={"heldout": ProbeRecord(acts, logits, pred, correct, loss, conf)}))
    finally:
        writer.close()
    return path


def _analyze(path, **kw):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = analyze(path, **kw)
    return res, [str(w.message) for w in caught]


@pytest.mark.parametrize("labels", [[2] * 10, [0], [0, 0]])
def test_one_class_is_one_line_per_layer_not_a_layout_error(tmp_path, labels):
    """One class: one warning per layer naming the layer, the probe set, the class and what needs 2 classes."""
    res, caught = _analyze(_store(tmp_path / "store.h5", labels))
    assert not any("failed" in m for m in caught), caught
    messages = [m for m in caught if "holds one class" in m]
    assert len(messages) == 2, caught
    name = CLASSES[labels[0]]
    for layer, msg in zip(("a", "b"), messages):
        assert msg.startswith(f"layer '{layer}': the probe set 'heldout' holds one class ('{name}')")
        assert "need at least 2 classes" in msg and "layouts" in msg and "distinctness" in msg and "\n" not in msg
    for lr in res.layers.values():
        assert lr.layouts == {} and lr.default_layout == ""
        assert np.isnan(lr.distinctness).all() and np.isnan(lr.evidence.mean[1]).all()
        assert np.isfinite(lr.strength).all()  # what needs no second class is still there


def test_explicit_layout_methods_with_one_class_give_no_error(tmp_path):
    """Asking for t-SNE by name on a one-class probe set still gives the line, not 'Layout failed'."""
    res, caught = _analyze(_store(tmp_path / "store.h5", [1] * 8), layout_methods=["tsne", "pca"])
    assert len([m for m in caught if "holds one class" in m]) == 2 and not any("failed" in m for m in caught)
    assert all(lr.layouts == {} for lr in res.layers.values())


@pytest.mark.slow
@pytest.mark.parametrize("labels", [[0], [0, 1], [1, 1]])
def test_fewer_than_three_samples_give_nan_correlations(tmp_path, labels):
    """One or two samples: every r and q of every neuron and measure is NaN (before: 0 or +-1)."""
    res, _ = _analyze(_store(tmp_path / "store.h5", labels))
    for lr in res.layers.values():
        for c in lr.corr.values():
            for arr in (c.pearson, c.spearman, c.pearson_within, c.spearman_within, c.q_pearson, c.q_pearson_within):
                assert np.isnan(arr).all()
            assert np.isnan(c.summary["mean_r"]).all() and (c.summary["frac_sig_pos"] == 0).all()


def test_three_samples_of_two_classes_correlate_overall_but_not_within(tmp_path):
    """n = 3, C = 2: Pearson r equals numpy's; within class no degree of freedom is left (n - C - 1 = 0): NaN."""
    path = _store(tmp_path / "store.h5", [0, 1, 1], layers=(("a", 4),))
    res, _ = _analyze(path, layout_methods=["pca"])
    from topotrace.instrument.store import Store

    with Store(path) as st:
        for s in range(3):
            a = st.acts("heldout", "a", s).astype(np.float64)
            for m, c in res.layers["a"].corr.items():
                conf = st.conf("heldout", m)[s].astype(np.float64)
                want = [np.corrcoef(a[:, j], conf)[0, 1] if a[:, j].std() > 0 and conf.std() > 0 else 0.0
                        for j in range(4)]
                np.testing.assert_allclose(c.pearson[s], want, atol=1e-6)
                assert np.isnan(c.pearson_within[s]).all() and np.isnan(c.spearman_within[s]).all()


def test_snapshot_correlations_rule_directly():
    """The rule in stats: n < 3 all NaN; n - C - 1 < 1 within NaN; otherwise finite."""
    rng = np.random.default_rng(0)
    for n, labels in ((2, [0, 1]), (1, [0])):
        r = stats.snapshot_correlations(rng.normal(size=(n, 3)), rng.normal(size=(n, 2)), np.array(labels))
        assert all(np.isnan(v).all() for v in r.values())
    r = stats.snapshot_correlations(rng.normal(size=(4, 3)), rng.normal(size=(4, 2)), np.array([0, 1, 2, 2]))
    assert np.isfinite(r["pearson"]).all() and np.isnan(r["pearson_within"]).all()
    r = stats.snapshot_correlations(rng.normal(size=(5, 3)), rng.normal(size=(5, 2)), np.array([0, 1, 2, 2, 1]))
    assert np.isfinite(r["pearson_within"]).all()
