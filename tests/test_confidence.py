"""Confidence measures and per-sample outcomes against plain per-sample numpy references."""

import math

import numpy as np
import pytest

from topotrace.instrument import confidence


def _reference(logits, labels):
    """Per-sample loops with math.exp/log: an implementation independent of the vectorised one."""
    out = {k: [] for k in ("max_prob", "margin", "entropy", "true_prob", "logit_margin", "loss", "pred")}
    for z, y in zip(logits.astype(float), labels):
        m = max(z)
        e = [math.exp(v - m) for v in z]
        s = sum(e)
        p = [v / s for v in e]
        ranked = sorted(p, reverse=True)
        out["max_prob"].append(ranked[0])
        out["margin"].append(ranked[0] - ranked[1])
        out["entropy"].append(-sum(q * math.log(q) for q in p if q > 0) / math.log(len(p)))
        out["true_prob"].append(p[y])
        out["logit_margin"].append(sorted(z)[-1] - sorted(z)[-2])
        out["loss"].append(-(z[y] - m - math.log(s)))
        out["pred"].append(int(np.argmax(z)))
    return {k: np.array(v) for k, v in out.items()}


@pytest.fixture
def logits_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (200, 7)).astype(np.float32)
    logits[:5] *= 30  # near one-hot rows: entropy ~ 0, probabilities that underflow
    labels = rng.integers(0, 7, 200)
    return logits, labels


@pytest.mark.parametrize("name", confidence.DEFAULT_MEASURES)
def test_each_measure_equals_reference(logits_labels, name):
    """Every default measure equals the per-sample reference."""
    logits, labels = logits_labels
    _, _, _, conf = confidence.outcomes(logits, labels, [name])
    np.testing.assert_allclose(conf[name], _reference(logits, labels)[name], rtol=1e-5, atol=1e-6)
    assert conf[name].dtype == np.float32


def test_pred_correct_loss_equal_reference(logits_labels):
    """Predicted class, correctness and per-sample cross-entropy equal the reference."""
    logits, labels = logits_labels
    pred, correct, loss, _ = confidence.outcomes(logits, labels, confidence.DEFAULT_MEASURES)
    ref = _reference(logits, labels)
    np.testing.assert_array_equal(pred, ref["pred"])
    np.testing.assert_array_equal(correct, ref["pred"] == labels)
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5, atol=1e-5)
    assert np.isfinite(loss).all()


def test_planted_extremes():
    """Uniform logits: max_prob 1/C, margin 0, entropy 1; a dominant logit: entropy 0, margin 1."""
    labels = np.array([0, 2])
    logits = np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 500.0, 0.0]])
    _, correct, loss, conf = confidence.outcomes(logits, labels, confidence.DEFAULT_MEASURES)
    np.testing.assert_allclose(conf["max_prob"], [0.25, 1.0], atol=1e-7)
    np.testing.assert_allclose(conf["margin"], [0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(conf["entropy"], [1.0, 0.0], atol=1e-7)
    np.testing.assert_allclose(conf["true_prob"], [0.25, 1.0], atol=1e-7)
    np.testing.assert_allclose(conf["logit_margin"], [0.0, 500.0], atol=1e-4)
    np.testing.assert_allclose(loss, [math.log(4), 0.0], atol=1e-6)
    assert correct[1]


def test_softmax_rows_sum_to_one(logits_labels):
    p = confidence.softmax(logits_labels[0])
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-12)
    assert (p >= 0).all()


def test_register_measure_and_select(logits_labels):
    """A registered measure is computed by name; unknown names list the available ones."""
    logits, labels = logits_labels
    confidence.register_measure("gini_test", lambda p, y: 1.0 - (p**2).sum(axis=1))
    try:
        assert confidence.check_measures(["gini_test", "margin"]) == ("gini_test", "margin")
        _, _, _, conf = confidence.outcomes(logits, labels, ["gini_test"])
        z = logits.astype(float) - logits.max(axis=1, keepdims=True)
        p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
        np.testing.assert_allclose(conf["gini_test"], 1 - (p**2).sum(axis=1), rtol=1e-5)
    finally:
        confidence._REGISTRY.pop("gini_test")
    with pytest.raises(ValueError, match=r"Unknown confidence measure 'gini_test'. Available: \['max_prob'"):
        confidence.check_measures(["gini_test"])


def test_check_measures_arguments():
    assert confidence.check_measures(None) == confidence.DEFAULT_MEASURES
    with pytest.raises(TypeError, match="'measures'"):
        confidence.check_measures("margin")
    with pytest.raises(ValueError, match="twice"):
        confidence.check_measures(["margin", "margin"])
    with pytest.raises(ValueError, match="'name'"):
        confidence.register_measure("a/b", lambda p, y: p[:, 0])
    with pytest.raises(TypeError, match="'fn'"):
        confidence.register_measure("x", 3)


def test_measure_with_wrong_shape_is_refused(logits_labels):
    confidence.register_measure("bad_test", lambda p, y: p)
    try:
        with pytest.raises(ValueError, match="'bad_test' returned shape"):
            confidence.outcomes(*logits_labels, ["bad_test"])
    finally:
        confidence._REGISTRY.pop("bad_test")


def test_module_does_not_import_torch():
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(confidence))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in getattr(n, "names", [])} | {n.module.split(".")[0] for n in ast.walk(tree)
                                                    if isinstance(n, ast.ImportFrom) and n.module}
    assert "torch" not in imported
