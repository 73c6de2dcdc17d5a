"""Reliability bins and ECE of topotrace.analysis.calibration against plain-loop references."""

import numpy as np
import pytest

from topotrace.analysis import calibration


def _loop_reliability(conf, correct, n_bins):
    """Reference: bin b holds b/B < c <= (b+1)/B (c == 0 in bin 0), one sample at a time; NaN confidences skipped."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.zeros(n_bins, np.int64)
    sum_conf = np.zeros(n_bins)
    n_ok = np.zeros(n_bins)
    for c, ok in zip(conf, correct):
        if not np.isfinite(c):
            continue
        b = 0
        for j in range(n_bins):
            if edges[j] < c <= edges[j + 1]:
                b = j
                break
        counts[b] += 1
        sum_conf[b] += c
        n_ok[b] += ok
    with np.errstate(invalid="ignore"):
        return counts, sum_conf / counts, n_ok / counts


def _loop_ece(conf, correct, n_bins):
    counts, mean_conf, acc = _loop_reliability(conf, correct, n_bins)
    n = counts.sum()
    return sum(counts[b] / n * abs(acc[b] - mean_conf[b]) for b in range(n_bins) if counts[b])


def _random(seed=0, n=500):
    rng = np.random.default_rng(seed)
    conf = rng.random(n)
    correct = rng.random(n) < conf
    return conf, correct


@pytest.mark.parametrize("n_bins", [1, 7, 15])
def test_random_data_equals_loop_reference(n_bins):
    """ECE and reliability bins on random data equal a per-sample loop to 1e-12."""
    conf, correct = _random()
    conf[:3] = [0.0, 1.0, 0.5]  # both ends of [0, 1] and a bin edge for even B
    counts, mean_conf, acc = calibration.reliability(conf, correct, n_bins)
    ref_counts, ref_conf, ref_acc = _loop_reliability(conf, correct, n_bins)
    np.testing.assert_array_equal(counts, ref_counts)
    np.testing.assert_allclose(mean_conf, ref_conf, atol=1e-12)
    np.testing.assert_allclose(acc, ref_acc, atol=1e-12)
    assert calibration.ece(conf, correct, n_bins) == pytest.approx(_loop_ece(conf, correct, n_bins), abs=1e-12)


def test_perfectly_calibrated_model_has_small_ece():
    """Correct ~ Bernoulli(conf) with conf ~ U(0.1, 1), n = 200000, gives ECE < 0.01."""
    rng = np.random.default_rng(1)
    conf = rng.uniform(0.1, 1.0, 200_000)
    correct = rng.random(conf.size) < conf
    assert calibration.ece(conf, correct) < 0.01


def test_overconfident_model_has_ece_of_its_gap():
    """Correct ~ Bernoulli(conf - 0.2) (conf ~ U(0.3, 1), so the clip never bites) gives ECE ≈ 0.2 within 0.01."""
    rng = np.random.default_rng(2)
    conf = rng.uniform(0.3, 1.0, 200_000)
    correct = rng.random(conf.size) < np.clip(conf - 0.2, 0.0, 1.0)
    assert calibration.ece(conf, correct) == pytest.approx(0.2, abs=0.01)


def test_stack_equals_rows():
    """A stack of shape (S, n) gives, row by row, the results of each snapshot alone."""
    rows = [_random(seed) for seed in range(4)]
    conf = np.stack([c for c, _ in rows])
    correct = np.stack([k for _, k in rows])
    conf[2, :5] = np.nan  # non-finite entries in one snapshot only
    counts, mean_conf, acc = calibration.reliability(conf, correct)
    e = calibration.ece(conf, correct)
    assert counts.shape == mean_conf.shape == acc.shape == (4, calibration.ECE_BINS)
    assert e.shape == (4,)
    for s in range(4):
        row = calibration.reliability(conf[s], correct[s])
        np.testing.assert_array_equal(counts[s], row[0])
        np.testing.assert_array_equal(mean_conf[s], row[1])
        np.testing.assert_array_equal(acc[s], row[2])
        assert e[s] == calibration.ece(conf[s], correct[s])


def test_empty_bins_are_nan_and_counts_sum_to_n():
    """Bins without samples have NaN mean confidence and accuracy; the counts add up to the samples binned."""
    conf = np.array([0.05, 0.07, 0.95, 0.99, 1.0])
    correct = np.array([False, True, True, True, False])
    counts, mean_conf, acc = calibration.reliability(conf, correct, 10)
    assert counts.dtype == np.int64 and counts.sum() == conf.size
    empty = counts == 0
    np.testing.assert_array_equal(empty, [False] + [True] * 8 + [False])
    assert np.isnan(mean_conf[empty]).all() and np.isnan(acc[empty]).all()
    assert not np.isnan(mean_conf[~empty]).any()


def test_non_finite_confidences_are_excluded():
    """NaN and inf confidences count in no bin and not in n: the ECE equals that of the finite samples alone."""
    conf, correct = _random(3)
    bad = conf.copy()
    bad[[0, 10, 20]] = [np.nan, np.inf, -np.inf]
    keep = np.isfinite(bad)
    counts, _, _ = calibration.reliability(bad, correct)
    assert counts.sum() == keep.sum()
    assert calibration.ece(bad, correct) == pytest.approx(calibration.ece(conf[keep], correct[keep]), abs=1e-15)
    assert np.isnan(calibration.ece(np.full(3, np.nan), np.ones(3, bool)))


def test_tiny_float_error_outside_unit_interval_is_accepted():
    """Confidences within 1e-9 outside [0, 1] (softmax rounding) are accepted and binned at the ends."""
    counts, _, _ = calibration.reliability(np.array([-1e-12, 1 + 1e-12]), np.array([True, False]), 4)
    np.testing.assert_array_equal(counts, [1, 0, 0, 1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"conf": np.full(3, 0.5), "correct": np.ones(4, bool)}, ValueError, "'conf' and 'correct'.*same shape"),
        ({"conf": np.array([0.5, 1.5]), "correct": np.ones(2, bool)}, ValueError, "'conf'.*within \\[0, 1\\]"),
        ({"conf": np.array([-0.1, 0.5]), "correct": np.ones(2, bool)}, ValueError, "'conf'.*within \\[0, 1\\]"),
        ({"conf": np.full((2, 2, 2), 0.5), "correct": np.ones((2, 2, 2), bool)}, ValueError, "'conf'.*shape"),
        ({"conf": np.array(["a"]), "correct": np.ones(1, bool)}, TypeError, "'conf'.*real numbers"),
        ({"conf": np.full(2, 0.5), "correct": np.array([0, 2])}, ValueError, "'correct'.*bool"),
        ({"conf": np.full(2, 0.5), "correct": np.ones(2, bool), "n_bins": 0}, ValueError, "'n_bins'.*>= 1.*Got 0"),
        ({"conf": np.full(2, 0.5), "correct": np.ones(2, bool), "n_bins": 2.0}, TypeError, "'n_bins'.*int.*float"),
        ({"conf": np.full(2, 0.5), "correct": np.ones(2, bool), "n_bins": True}, TypeError, "'n_bins'.*int.*bool"),
    ],
)
@pytest.mark.parametrize("func", [calibration.ece, calibration.reliability])
def test_bad_inputs_raise_naming_the_parameter(func, kwargs, error, match):
    """Wrong shapes, values or types raise an error that names the parameter and what was given."""
    with pytest.raises(error, match=match):
        func(**kwargs)
