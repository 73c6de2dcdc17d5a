"""Per-sample evidence and findings (analysis.evidence, analysis.findings): references and calibration."""

import numpy as np
import pytest
from scipy import stats as sps

from topotrace.analysis import evidence as ev
from topotrace.analysis.findings import combine, interval_across_runs, verdict

from . import reference as ref_impl


def _acts(seed=0, n=88, n_neurons=12, n_classes=4):
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n // n_classes)
    rng.shuffle(labels)
    acts = rng.normal(size=(n, n_neurons)) + 0.8 * rng.normal(size=(n_classes, n_neurons))[labels]
    return acts, labels


def test_per_sample_strength_and_distinctness_match_loops():
    """Strength is mean |a|; distinctness compares the leave-one-out own-class mean with the nearest other mean."""
    acts, labels = _acts()
    np.testing.assert_allclose(ev.sample_strength(acts), [np.mean(np.abs(row)) for row in acts], rtol=1e-6)
    got = ev.sample_distinctness(acts, labels, 4)
    expected = []
    for i, a in enumerate(acts):
        others = [j for j in range(len(acts)) if labels[j] == labels[i] and j != i]
        d_own = np.linalg.norm(a - acts[others].mean(axis=0))
        d_other = min(np.linalg.norm(a - acts[labels == c].mean(axis=0)) for c in range(4) if c != labels[i])
        expected.append((d_other - d_own) / (d_other + d_own))
    np.testing.assert_allclose(got, expected, atol=1e-10)


def test_distinctness_edge_cases():
    """A lone member of its class has no own-class mean (NaN); well-separated classes give values near 1."""
    acts = np.array([[0.0, 0.0], [0.1, 0.0], [10.0, 10.0], [10.1, 10.0], [50.0, 0.0]])
    labels = np.array([0, 0, 1, 1, 2])
    d = ev.sample_distinctness(acts, labels, 4)  # class 3 has no samples
    assert np.isnan(d[4]) and (d[:4] > 0.95).all()


def test_spearman_overall_and_partial_match_scipy_and_residual_ranks():
    """The plain (weight-one) statistics equal scipy's Spearman and the partial Spearman given the class."""
    acts, labels = _acts(1)
    rng = np.random.default_rng(2)
    x = np.stack([ev.sample_strength(acts), ev.sample_distinctness(acts, labels, 4)])  # [2, n]
    y = np.column_stack([x[0] + rng.normal(size=len(labels)), rng.random(len(labels))])  # [n, 2]
    overall, partial = ev.weighted_spearman(x, y, labels, 4, np.ones((1, len(labels))))
    for k in range(2):
        for m in range(2):
            assert overall[0, k, m] == pytest.approx(sps.spearmanr(x[k], y[:, m]).statistic, abs=1e-10)
    expected = ref_impl.pearson_within(sps.rankdata(x.T, axis=0), sps.rankdata(y, axis=0), labels)
    np.testing.assert_allclose(partial[0], expected, atol=1e-10)


def test_bootstrap_weights_reproduce_resampling():
    """Weighted statistics under multinomial counts equal the statistics of the resampled data (fixed ranks)."""
    rng = np.random.default_rng(3)
    n = 50
    x, y, labels = rng.normal(size=n), rng.normal(size=(n, 1)), rng.integers(0, 3, n)
    w = ev.bootstrap_weights(n, 5, seed=4)
    assert (w.sum(axis=1) == n).all()
    overall, _ = ev.weighted_spearman(x[None], y, labels, 3, w)
    rx, ry = sps.rankdata(x), sps.rankdata(y[:, 0])
    for b in range(5):
        idx = np.repeat(np.arange(n), w[b].astype(int))
        assert overall[b, 0, 0] == pytest.approx(np.corrcoef(rx[idx], ry[idx])[0, 1], abs=1e-10)


def test_interval_across_runs_is_a_t_interval():
    mean, lo, hi = interval_across_runs(np.array([0.2, 0.3, 0.4]))
    half = sps.t.ppf(0.975, 2) * np.std([0.2, 0.3, 0.4], ddof=1) / np.sqrt(3)
    assert (mean, lo, hi) == (pytest.approx(0.3), pytest.approx(0.3 - half), pytest.approx(0.3 + half))
    assert np.isnan(interval_across_runs(np.array([0.5]))[1])
    r = np.array([0.9, 0.95, 0.99])
    z_mean, z_lo, z_hi = interval_across_runs(np.arctanh(r))
    assert interval_across_runs(r, correlation=True) == (pytest.approx(np.tanh(z_mean)), pytest.approx(np.tanh(z_lo)),
                                                         pytest.approx(np.tanh(z_hi)))
    assert interval_across_runs(r, correlation=True)[2] < 1


def _study(rng, rho, shift, n=200, n_classes=4, seeds=3):
    """Per-sample evidence of `seeds` synthetic runs: confidence relates to strength with Pearson `rho` (Gaussian
    copula), and the mean strength rises by `shift` from the first snapshot to the last."""
    evs = []
    for _ in range(seeds):
        labels = rng.integers(0, n_classes, n)
        z = rng.normal(size=n)
        first = rng.normal(size=n)
        last = first + shift + rng.normal(scale=0.5, size=n)
        conf = rho * last + np.sqrt(1 - rho**2) * z  # relates to the last snapshot's strength
        per_sample = np.stack([np.stack([first, last]), np.stack([first, last])])  # [2, S=2, n]
        conf_all = np.stack([rng.normal(size=n), conf])[:, :, None]  # [S, n, M=1]
        evs.append(ev.sample_evidence(per_sample, conf_all, labels, n_classes, ["c"], n_boot=1000,
                                      seed=int(rng.integers(1 << 30))))
    return evs


def _findings(evs):
    names, steps = [f"seed {i}" for i in range(len(evs))], np.array([0, 100])
    return (combine("l", "stronger_with_confidence", "c", evs, names, steps),
            combine("l", "stronger_with_time", "", evs, names, steps))


@pytest.mark.slow
def test_no_relation_is_not_supported_in_95_of_100_studies():
    """With no relation to confidence and no change over time, neither claim is supported nor mixed in >= 95 of 100
    (it is 'not supported', or 'negligible' where the interval lies inside the smallest effect of interest)."""
    rng = np.random.default_rng(20)
    verdicts = [tuple(f.verdict for f in _findings(_study(rng, 0.0, 0.0))) for _ in range(100)]
    assert sum(v[0] in ("not supported", "negligible") for v in verdicts) >= 95
    assert sum(v[1] in ("not supported", "negligible") for v in verdicts) >= 95


@pytest.mark.slow
def test_planted_relation_is_covered_and_supported():
    """A planted relation of known size: the 95 % interval covers the truth in >= 90 of 100 studies and the
    verdict is 'supported'."""
    rng = np.random.default_rng(21)
    rho, shift = 0.4, 0.3
    truth = 6 / np.pi * np.arcsin(rho / 2)  # Spearman correlation of a bivariate normal with Pearson rho
    covered_conf = covered_time = supported = 0
    for _ in range(100):
        conf_finding, time_finding = _findings(_study(rng, rho, shift))
        covered_conf += conf_finding.ci_low <= truth <= conf_finding.ci_high
        covered_time += time_finding.ci_low <= shift <= time_finding.ci_high
        supported += conf_finding.verdict == "supported" and time_finding.verdict == "supported"
    assert covered_conf >= 90 and covered_time >= 90
    assert supported >= 95


def test_verdict_rule():
    """Supported: across-run interval and every run's interval above 0; mixed: only the former; else not (with no
    smallest effect of interest; tests/test_verdicts.py has the rule with one). One run: its own words."""
    from topotrace.analysis.findings import RunEffect

    good, weak = RunEffect("a", 0.3, 0.1, 0.5), RunEffect("b", 0.1, -0.1, 0.3)
    assert verdict(0.05, [good, good]) == "supported"
    assert verdict(0.05, [good, weak]) == "mixed"
    assert verdict(-0.01, [good, good]) == "not supported"
    assert verdict(float("nan"), [good]) == "does not hold in this run"
    assert verdict(0.1, [good]) == "holds in this run"
