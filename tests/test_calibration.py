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


# ------------------------------------------------------------------------- cross-fitted temperature (issue 23)
def _softmax(z):
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def _nll(z, y, t):
    z = z / t
    z = z - z.max(1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(len(y)), y]))


def _calibrated_sample(n, n_classes, scale, seed):
    """True logits z and labels drawn from softmax(z): max softmax(z) is calibrated by construction."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, scale, (n, n_classes))
    p = _softmax(z)
    labels = np.minimum((rng.random((n, 1)) > p.cumsum(1)).sum(1), n_classes - 1)  # inverse-CDF sampling
    return z, labels


def test_halves_are_balanced_within_every_class_and_seeded():
    """Each class splits into halves differing by at most one sample; the split is fixed by the seed."""
    labels = np.random.default_rng(0).integers(0, 7, 301)
    halves = calibration.cross_fit_halves(labels)
    assert set(np.unique(halves)) == {0, 1}
    for c in range(7):
        assert abs(int((halves[labels == c] == 0).sum()) - int((halves[labels == c] == 1).sum())) <= 1
    assert abs(int((halves == 0).sum()) - int((halves == 1).sum())) <= 7
    np.testing.assert_array_equal(halves, calibration.cross_fit_halves(labels))
    assert not np.array_equal(halves, calibration.cross_fit_halves(labels, seed=1))


@pytest.mark.slow
def test_cross_fitted_confidence_uses_the_other_halfs_temperature():
    """T of each half is its NLL's grid minimum; every sample's confidence is max softmax(z / T of the other half)."""
    z, labels = _calibrated_sample(400, 4, 2.0, seed=3)
    z = 2.5 * z
    halves = calibration.cross_fit_halves(labels)
    conf, temps = calibration.cross_fitted_temperature(z, labels, halves)
    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    for h in (0, 1):
        fit = halves == h
        best = grid[np.argmin([_nll(z[fit], labels[fit], t) for t in grid])]
        assert abs(np.log(temps[h] / best)) <= np.log(grid[1] / grid[0])
        np.testing.assert_allclose(conf[~fit], _softmax(z[~fit] / temps[h]).max(1), rtol=1e-12)
    stacked, stacked_t = calibration.cross_fitted_temperature(np.stack([z, z / 2.5]), labels, halves)
    np.testing.assert_array_equal(stacked[0], conf)
    np.testing.assert_array_equal(stacked_t[0], temps)


def test_planted_overconfident_model_is_calibrated_by_cross_fitting():
    """Logits 5x the calibrated ones: raw ECE is large; each half's T is about 5 and the scaled ECE falls."""
    z, labels = _calibrated_sample(6000, 5, 1.5, seed=4)
    logits = 5.0 * z
    correct = logits.argmax(1) == labels
    raw = _loop_ece(_softmax(logits).max(1), correct, 15)
    truth = _loop_ece(_softmax(z).max(1), correct, 15)  # the calibrated model itself, for scale
    conf, temps = calibration.cross_fitted_temperature(logits, labels)
    scaled = _loop_ece(conf, correct, 15)
    assert raw > 0.15
    np.testing.assert_allclose(temps, 5.0, rtol=0.1)
    assert scaled < 0.25 * raw and scaled < truth + 0.02
    assert calibration.ece(conf, correct) == pytest.approx(scaled, abs=1e-12)


@pytest.mark.slow
def test_synthetic_run_scaled_ece_does_not_exceed_raw(tmp_path):
    """On a synthetic run, at every snapshot: held-out ECE of temp_prob_cv <= ECE of max_prob, both recomputed."""
    from topotrace.analysis.pipeline import analyze
    from topotrace.instrument.store import Store
    from topotrace.instrument.synthetic import write_synthetic_store

    path = write_synthetic_store(tmp_path / "store.h5", n_snapshots=6, layer_sizes=(8,), per_class=20)
    res = analyze(path, layout_methods=["pca"])
    cal = res.calibration["heldout"]
    assert cal.measures == ["max_prob", "temp_prob_cv"] and cal.temperature_cv.shape == (6, 2)
    with Store(path) as st:
        logits, labels = st.logits("heldout").astype(np.float64), st.labels("heldout")
        correct = st.correct("heldout").astype(bool)
    halves = calibration.cross_fit_halves(labels)
    for s in range(6):
        conf = np.empty(len(labels))
        for h in (0, 1):
            conf[halves != h] = _softmax(logits[s, halves != h] / cal.temperature_cv[s, h]).max(1)
        raw = _loop_ece(_softmax(logits[s]).max(1), correct[s], 15)
        assert cal.ece[0, s] == pytest.approx(raw, abs=1e-6)
        assert cal.ece[1, s] == pytest.approx(_loop_ece(conf, correct[s], 15), abs=1e-9)
        assert cal.ece[1, s] <= cal.ece[0, s]


@pytest.mark.slow
def test_trained_run_cross_fitting_calibrates_where_the_train_temperature_does_not(tmp_path):
    """A small MLP trained on digits: over the run, temp_prob_cv lowers the held-out ECE of max_prob, and at
    the last snapshot the recorded T (train probe set) lies below both cross-fitted ones (it sharpens)."""
    from topotrace.analysis.pipeline import analyze
    from topotrace.config import load_config
    from topotrace.train import train_run

    cfg = load_config(None, {"run": {"out_dir": str(tmp_path)}, "train": {"epochs": 12},
                             "record": {"snapshots": 8, "layers": ["hidden2"]}, "model": {"hidden": [64, 32]}})
    summary = train_run(cfg)
    assert summary.error is None
    res = analyze(summary.store_path, layout_methods=["pca"])
    cal = res.calibration["heldout"]
    ece = dict(zip(cal.measures, cal.ece))
    assert ece["temp_prob_cv"].mean() < 0.75 * ece["max_prob"].mean()
    assert res.temperature[-1] < cal.temperature_cv[-1].min()
