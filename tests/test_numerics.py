"""Numerics (issue 23, item 1): distinctness without cancellation, paired trend intervals, the temperature bound.

Each quantity is checked against a float64 numpy recomputation written here, on inputs chosen so that the old
computation fails: a common offset of 30 or 1000 on float32 activations, every snapshot identical (a learning
rate of 0), logits whose training loss rounds to 0.
"""

import numpy as np
import pytest

from topotrace.analysis import evidence as ev
from topotrace.analysis.pipeline import analyze
from topotrace.instrument.confidence import DEFAULT_MEASURES, TEMPERATURE_BOUNDS, fit_temperature, outcomes
from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter


def _acts(n=300, n_neurons=40, n_classes=5, seed=0):
    """Float32 activations on a grid of 1/64, so that adding 30 or 1000 is exact in float32 (24-bit mantissa)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    x = rng.normal(0, 1, (n, n_neurons)) + 0.5 * rng.normal(0, 1, (n_classes, n_neurons))[labels]
    return (np.round(x * 64) / 64).astype(np.float32), labels


def _reference(acts, labels, n_classes):
    """Per-sample distinctness by explicit float64 differences (no expansion), leave-one-out own class."""
    a = acts.astype(np.float64)
    out = np.full(len(a), np.nan)
    means = {c: a[labels == c].mean(0) for c in range(n_classes) if (labels == c).any()}
    for i in range(len(a)):
        own = (labels == labels[i]) & (np.arange(len(a)) != i)
        others = [c for c in means if c != labels[i]]
        if not own.any() or not others:
            continue
        d_own = np.sqrt(((a[i] - a[own].mean(0)) ** 2).sum())
        d_other = min(np.sqrt(((a[i] - means[c]) ** 2).sum()) for c in others)
        out[i] = (d_other - d_own) / (d_other + d_own)
    return out


def _fisher_reference(acts, labels):
    """Between-class over within-class sum of squares, by explicit float64 differences."""
    a = acts.astype(np.float64)
    grand = a.mean(0)
    between = within = 0.0
    for c in np.unique(labels):
        rows = a[labels == c]
        between += len(rows) * ((rows.mean(0) - grand) ** 2).sum()
        within += ((rows - rows.mean(0)) ** 2).sum()
    return between / within


@pytest.mark.parametrize("offset", [30.0, 1000.0])
def test_distinctness_does_not_change_with_a_common_offset(offset):
    """Offsets of 30 and 1000 give the float64 reference's per-sample and Fisher distinctness, as without them."""
    acts, labels = _acts()
    shifted = acts + np.float32(offset)
    assert np.array_equal(shifted.astype(np.float64), acts.astype(np.float64) + offset)  # the shift is exact
    ref = _reference(acts, labels, 5)
    for a in (acts, shifted):
        per_sample, fisher, _ = ev.class_distinctness(a, labels, 5)
        np.testing.assert_allclose(per_sample, ref, rtol=0, atol=1e-6)
        assert fisher == pytest.approx(_fisher_reference(acts, labels), rel=1e-6)
        np.testing.assert_allclose(ev.sample_distinctness(a, labels, 5), ref, rtol=0, atol=1e-6)


def test_the_float32_expansion_fails_this_test():
    """The test can fail: |a|^2 - 2 a.m + |m|^2 in float32 with an offset of 30 misses the reference by far more."""
    acts, labels = _acts()
    a = acts + np.float32(30)
    means = np.stack([a[labels == c].mean(0) for c in range(5)]).astype(np.float32)
    d2 = (np.einsum("ij,ij->i", a, a)[:, None] - 2 * a @ means.T + np.einsum("ij,ij->i", means, means)[None])
    exact = ((acts.astype(np.float64)[:, None] - (means.astype(np.float64) - 30)[None]) ** 2).sum(-1)
    assert np.abs(d2 - exact).max() > 1e-3 * np.abs(exact).min()


def test_fisher_distinctness_per_bin_matches_the_reference_with_an_offset():
    """Per confidence bin: the Fisher ratio of the classes within the bin, offset 1000 included."""
    acts, labels = _acts(seed=1)
    bins = np.random.default_rng(2).integers(0, 3, len(labels))
    for a in (acts, acts + np.float32(1000)):
        _, _, by_bin = ev.class_distinctness(a, labels, 5, bins, 3)
        for b in range(3):
            assert by_bin[b] == pytest.approx(_fisher_reference(acts[bins == b], labels[bins == b]), rel=1e-6)


def _still_store(path, n_snapshots=4, n=60, classes=3, neurons=8):
    """A store whose every snapshot is the same (as with learning rate 0): activations, logits and outputs."""
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    spec = StoreSpec((LayerSpec("a", neurons, "flatten", (neurons,)),), (ProbeSpec("heldout", np.arange(n), labels),),
                     tuple(f"c{i}" for i in range(classes)), DEFAULT_MEASURES, "float32")
    acts = np.maximum(rng.normal(0, 1, (n, neurons)) + rng.normal(0, 1, (classes, neurons))[labels], 0)
    acts[:, 0] = 0.0  # one dormant unit, so the dormant share is not 0 throughout
    acts[: n // 2, 1] = 0.001  # and one that is dormant in some resamples only
    acts = acts.astype(np.float32)
    logits = (rng.normal(0, 1, (n, classes)) + 2 * np.eye(classes)[labels]).astype(np.float32)
    pred, correct, loss, conf = outcomes(logits, labels, DEFAULT_MEASURES)
    writer = StoreWriter.create(path, spec, {"run_name": "still", "seed": 0})
    try:
        for s in range(n_snapshots):
            rec = ProbeRecord({"a": acts}, logits, pred, correct, loss, conf)
            writer.append(Snapshot(step=10 * s, epoch=0, time=float(s), probes={"heldout": rec}))
    finally:
        writer.close()
    return path


def test_trend_intervals_are_paired_every_snapshot_identical_gives_zero(tmp_path):
    """With every snapshot identical, the NC1 log ratio and the dormant change are 0 with interval exactly [0, 0]."""
    res = analyze(_still_store(tmp_path / "store.h5"), layout_methods=["pca"])
    lr = res.layers["a"]
    assert lr.nc1[0] > 0 and np.all(lr.nc1 == lr.nc1[0])
    assert lr.dormant[0] > 0
    np.testing.assert_array_equal(lr.trends["nc1_log_ratio"], [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(lr.trends["dormant_change"], [0.0, 0.0, 0.0])


def test_temperature_reaches_its_lower_bound_when_the_loss_rounds_to_zero():
    """Every sample right with a margin of 20 or more (mean loss 0.000): T is the documented bound 0.05, not 0.27."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 500)
    for margin in (20.0, 40.0, 400.0):
        logits = rng.normal(0, 1, (500, 10)) + margin * np.eye(10)[labels]
        loss = outcomes(logits, labels, ["max_prob"])[2]
        assert loss.mean() < 1e-6  # the training loss rounds to 0
        assert fit_temperature(logits, labels) == TEMPERATURE_BOUNDS[0] == 0.05


def test_temperature_reaches_the_upper_bound_and_matches_a_grid_inside():
    """Logits that carry no information: T = 20; margins of 8 (a few errors): the NLL grid minimum."""
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 500)
    assert fit_temperature(rng.normal(0, 1, (500, 10)), labels) == TEMPERATURE_BOUNDS[1]
    logits = 2 * rng.normal(0, 1, (500, 10)) + 8 * np.eye(10)[labels]
    assert (logits.argmax(1) != labels).any()

    def nll(t):
        z = logits / t
        z = z - z.max(1, keepdims=True)
        return np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(500), labels])

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 4001))
    best = grid[np.argmin([nll(t) for t in grid])]
    t = fit_temperature(logits, labels)
    assert abs(np.log(t / best)) <= np.log(grid[1] / grid[0]) and nll(t) <= nll(best) + 1e-12


def test_interval_of_all_nan_columns_warns_nothing_on_threads():
    """An all-NaN column gives a NaN interval with no numpy warning, on 4 threads, leaving the filters as they were."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from topotrace.analysis.evidence import _interval

    values = np.random.default_rng(0).normal(size=(200, 3))
    values[:, 1] = np.nan
    values[::7, 2] = np.nan
    before = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda _: _interval(values), range(200)))
    lo, hi = results[0]
    assert np.isnan(lo[1]) and np.isnan(hi[1])
    ref = np.quantile(values[~np.isnan(values[:, 2]), 2], [0.025, 0.975])
    assert (lo[2], hi[2]) == pytest.approx(tuple(ref))
    assert all(np.array_equal(r[0], lo, equal_nan=True) for r in results)
    assert warnings.filters == before
