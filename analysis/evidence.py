"""Per-sample evidence for the study's claims: per-sample quantities, bootstrap intervals, effects, verdicts.

The study's claim is about samples: *the more confident the network is about a sample, the stronger and the
more class-distinct that sample's activity*, and activity becomes stronger and more distinct *with training
time*. This module owns the numbers behind those claims (definitions also in ``docs/analysis.md``):

* **Per-sample strength** of sample i at one snapshot: ``mean_j |a_ij|`` over the layer's N neurons.
* **Per-sample class distinctness**: with ``d_own`` the Euclidean distance of the sample's activation pattern
  to the mean pattern of its own class computed *without the sample* (so it does not vote for its own class)
  and ``d_other`` the distance to the nearest other class's mean pattern,
  ``(d_other - d_own) / (d_other + d_own)`` in [-1, 1]: positive when the sample lies closer to its own class.
  It is scale-free, so "more distinct" does not merely repeat "stronger". 0 when both distances are 0, NaN
  for a sample whose class has no other member.
* **Relation to confidence** at one snapshot: Spearman's rank correlation across probe samples between a
  per-sample quantity and a confidence measure, overall and partial given the class (ranks over all samples,
  class means of the ranks removed, residuals correlated; the same partial Spearman as the neuron maps).

Uncertainty. Within a run the probe samples are the unit: a seeded bootstrap draws ``n_boot`` resamples of
the n samples (multinomial counts, the same resamples for every snapshot, so differences between snapshots
are paired) and every statistic is recomputed on each; intervals are percentile intervals. Ranks are taken
once over all samples and the resamples reweight them (the rank-based Pearson under bootstrap weights), which
keeps every resample one matrix product. Snapshots are a time series of one run, never samples: nothing here
computes a p-value over snapshots. Across runs (seeds) see :mod:`.findings`.
"""

from __future__ import annotations

import warnings

import numpy as np

from .results import SampleEvidence
from .stats import rankdata_columns

N_BOOT = 1000
LEVEL = 0.95


def sample_strength(acts: np.ndarray) -> np.ndarray:
    """Per-sample activity strength: array of shape (n,), ``mean_j |a_ij|`` of ``acts`` of shape (n, N)."""
    return np.abs(np.asarray(acts, np.float32)).mean(axis=1, dtype=np.float64)


def sample_distinctness(acts: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample class distinctness (see the module docstring).

    Args:
        acts: array of shape (n, N).
        labels: array of shape (n,), int in 0 .. n_classes - 1.
        n_classes: C.

    Returns:
        Array of shape (n,), float64 in [-1, 1]; NaN for a sample that is the only one of its class, or when
        no other class has samples.
    """
    a = np.asarray(acts, np.float64)
    labels = np.asarray(labels, np.int64)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    onehot = np.zeros((n_classes, len(labels)))
    onehot[labels, np.arange(len(labels))] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (onehot @ a) / counts[:, None]  # [C, N]; NaN rows for empty classes
    sq = np.einsum("ij,ij->i", a, a)  # [n]
    present = counts > 0
    m = np.where(present[:, None], means, 0.0)
    d2 = sq[:, None] - 2.0 * a @ m.T + np.einsum("ij,ij->i", m, m)[None, :]  # [n, C] squared distances
    d2 = np.maximum(d2, 0.0)
    d2[:, ~present] = np.inf
    own_count = counts[labels]
    with np.errstate(invalid="ignore", divide="ignore"):
        # a_i - mean without i = n_c / (n_c - 1) * (a_i - mean of the class)
        d_own = own_count / (own_count - 1.0) * np.sqrt(d2[np.arange(len(labels)), labels])
    d2[np.arange(len(labels)), labels] = np.inf
    d_other = np.sqrt(d2.min(axis=1))
    total = d_other + d_own
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, (d_other - d_own) / total, 0.0)
    out[(own_count < 2) | ~np.isfinite(d_other)] = np.nan
    return out


def bootstrap_weights(n: int, n_boot: int = N_BOOT, seed: int = 0) -> np.ndarray:
    """Resampling counts: array of shape (n_boot, n), float64, each row summing to n.

    Row b counts how often each of the n samples is drawn in resample b (n draws with replacement, seeded).
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


def _interval(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval over the first axis (NaN resamples ignored; all-NaN columns give NaN)."""
    alpha = (1.0 - LEVEL) / 2.0
    values = np.asarray(values)
    if not np.isnan(values).any():
        lo, hi = np.quantile(values, [alpha, 1.0 - alpha], axis=0)
        return lo, hi
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo, hi = np.nanquantile(values, [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def weighted_spearman(x: np.ndarray, y: np.ndarray, labels: np.ndarray, n_classes: int,
                      weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation of every row of ``x`` with every column of ``y``, overall and partial given the class.

    Args:
        x: array of shape (K, n), per-sample quantities; samples where any row is NaN are left out.
        y: array of shape (n, M), confidence measures.
        labels: array of shape (n,), int classes.
        n_classes: C.
        weights: array of shape (R, n): one row of sample weights per evaluation (a row of ones gives the
            plain statistic; bootstrap counts give the resampled ones).

    Returns:
        ``(overall, partial)``, arrays of shape (R, K, M); NaN where a variable has no variation.
    """
    x = np.atleast_2d(np.asarray(x, np.float64))
    k, n = x.shape
    m = np.shape(y)[1]
    c = n_classes
    ok = np.isfinite(x).all(axis=0)
    if ok.sum() < 3:
        nan = np.full((np.shape(weights)[0], k, m), np.nan)
        return nan, nan.copy()
    rx = np.zeros((n, k))
    ry = np.zeros((n, m))
    centre = (ok.sum() + 1) / 2.0  # centred ranks keep the sums below free of cancellation
    rx[ok] = rankdata_columns(x[:, ok].T) - centre
    ry[ok] = rankdata_columns(np.asarray(y, np.float64)[ok]) - centre
    onehot = np.zeros((n, c))
    onehot[np.arange(n), labels] = ok
    # Every weighted sum the statistics need, in one product [R, n] @ [n, cols]:
    # class counts | x | x^2 | x per class | y | y^2 | y per class | x * y
    cols = [onehot, rx, rx * rx, (onehot[:, :, None] * rx[:, None, :]).reshape(n, c * k), ry, ry * ry,
            (onehot[:, :, None] * ry[:, None, :]).reshape(n, c * m),
            (rx[:, :, None] * ry[:, None, :]).reshape(n, k * m)]
    sums = np.asarray(weights, np.float64) @ np.hstack(cols)
    r = sums.shape[0]
    swc, sx, sxx, sxc, sy, syy, syc, sxy = np.split(sums, np.cumsum([c, k, k, c * k, m, m, c * m]), axis=1)
    sxc, syc, sxy = sxc.reshape(r, c, k), syc.reshape(r, c, m), sxy.reshape(r, k, m)
    sw = swc.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        inv = np.where(swc > 0, 1.0 / swc, 0.0)  # [R, C]
        cov = sxy - sx[:, :, None] * sy[:, None, :] / sw[:, None, None]
        vx = sxx - sx * sx / sw[:, None]  # [R, K]
        vy = syy - sy * sy / sw[:, None]  # [R, M]
        overall = cov / np.sqrt(vx[:, :, None] * vy[:, None, :])
        cov_w = sxy - np.einsum("rck,rcm,rc->rkm", sxc, syc, inv)
        vx_w = sxx - np.einsum("rck,rck,rc->rk", sxc, sxc, inv)
        vy_w = syy - np.einsum("rcm,rcm,rc->rm", syc, syc, inv)
        partial = cov_w / np.sqrt(vx_w[:, :, None] * vy_w[:, None, :])
    tiny = 1e-9 * float(n) ** 3  # ranks that do not vary (all tied) leave only rounding
    overall[(vx[:, :, None] <= tiny) | (vy[:, None, :] <= tiny)] = np.nan
    partial[(vx_w[:, :, None] <= tiny) | (vy_w[:, None, :] <= tiny)] = np.nan
    return np.clip(overall, -1, 1), np.clip(partial, -1, 1)


QUANTITIES = ("strength", "distinctness")


def sample_evidence(per_sample: np.ndarray, conf: np.ndarray, labels: np.ndarray, n_classes: int,
                    measures: list[str], n_boot: int = N_BOOT, seed: int = 0) -> SampleEvidence:
    """Bootstrap evidence from the per-sample quantities of every snapshot.

    Args:
        per_sample: array of shape (2, S, n): per-sample strength and distinctness at every snapshot.
        conf: array of shape (S, n, M): confidence measures.
        labels: array of shape (n,), int classes.
        n_classes: C.
        measures: the M measure names.
        n_boot: bootstrap resamples (the same resamples for every snapshot and quantity).
        seed: the bootstrap's seed.
    """
    q, n_s, n = per_sample.shape
    m = conf.shape[2]
    weights = np.vstack([np.ones((1, n)), bootstrap_weights(n, n_boot, seed)])  # row 0: the plain statistic
    mean = np.full((q, n_s), np.nan)
    mean_ci = np.full((q, n_s, 2), np.nan)
    rho = np.full((q, n_s, m), np.nan)
    rho_ci = np.full((q, n_s, m, 2), np.nan)
    rho_p = np.full((q, n_s, m), np.nan)
    rho_p_ci = np.full((q, n_s, m, 2), np.nan)
    boot_means = np.full((q, n_boot, n_s), np.nan)
    for k in range(q):
        x = per_sample[k]  # [S, n]
        ok = np.isfinite(x)
        wx = weights @ np.where(ok, x, 0.0).T  # [1 + B, S]
        wn = weights @ ok.T.astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = wx / wn
        mean[k] = means[0]
        boot_means[k] = means[1:]
        lo, hi = _interval(means[1:])
        mean_ci[k, :, 0], mean_ci[k, :, 1] = lo, hi
    for s in range(n_s):
        overall, partial = weighted_spearman(per_sample[:, s], conf[s], labels, n_classes, weights)  # [1+B, q, M]
        rho[:, s], rho_p[:, s] = overall[0], partial[0]
        for ci, vals in ((rho_ci, overall), (rho_p_ci, partial)):
            lo, hi = _interval(vals[1:])
            ci[:, s, :, 0], ci[:, s, :, 1] = lo, hi
    change = mean[:, -1] - mean[:, 0]
    boot_change = boot_means[:, :, -1] - boot_means[:, :, 0]  # paired: the same resample at both snapshots
    lo, hi = _interval(boot_change.T)
    peak = np.array([int(np.nanargmax(v)) if np.isfinite(v).any() else n_s - 1 for v in mean])
    peak_change = np.array([mean[k, peak[k]] - mean[k, 0] for k in range(q)])
    plo, phi = _interval(np.stack([boot_means[k, :, peak[k]] - boot_means[k, :, 0] for k in range(q)], axis=1))
    return SampleEvidence(QUANTITIES[:q], list(measures), mean, mean_ci, rho, rho_ci, rho_p, rho_p_ci, change,
                          np.stack([lo, hi], axis=1), peak, peak_change, np.stack([plo, phi], axis=1), n, n_boot)
