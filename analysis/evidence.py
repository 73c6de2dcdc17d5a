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

Non-finite values. A sample with a non-finite activation anywhere in the layer, or a non-finite confidence,
has no per-sample quantity at that snapshot: the pipeline sets both to NaN there, and every statistic here
leaves NaN samples out (means over the remaining samples, ranks among them; a bootstrap resample weighs only
them). The pipeline computes the class means for distinctness from the remaining samples too.

Uncertainty. Within a run the probe samples are the unit: a seeded bootstrap draws ``n_boot`` resamples of
the n samples (multinomial counts, the same resamples for every snapshot, so differences between snapshots
are paired) and every statistic is recomputed on each; intervals are percentile intervals. Ranks are taken
once over all samples and the resamples reweight them (the rank-based Pearson under bootstrap weights), which
keeps every resample one matrix product. Snapshots are a time series of one run, never samples: nothing here
computes a p-value over snapshots. Across runs (seeds) see :mod:`.findings`.
"""

from __future__ import annotations

import numpy as np

from .results import SampleEvidence
from .stats import distinctness_from_sums, rankdata_columns

N_BOOT = 1000
LEVEL = 0.95


def sample_strength(acts: np.ndarray) -> np.ndarray:
    """Per-sample activity strength: array of shape (n,), ``mean_j |a_ij|`` of ``acts`` of shape (n, N)."""
    return np.abs(np.asarray(acts, np.float32)).mean(axis=1, dtype=np.float64)


def _group_sums(x: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Row sums of ``x`` per group in float64: one product ``[group one-hots] @ x``.

    Args:
        x: array of shape (n, N), float64.
        groups: array of shape (n,), int in 0 .. n_groups - 1.
        n_groups: G.

    Returns:
        ``(sums, counts)``: sums of shape (G, N) (0 for an empty group) and counts of shape (G,).
    """
    onehot = np.zeros((n_groups, len(groups)))
    onehot[groups, np.arange(len(groups))] = 1.0
    return onehot @ x, np.bincount(groups, minlength=n_groups)


def class_distinctness(acts: np.ndarray, labels: np.ndarray, n_classes: int, bins: np.ndarray | None = None,
                       n_bins: int = 0) -> tuple[np.ndarray, float, np.ndarray]:
    """Per-sample distinctness and the layer's Fisher distinctness (overall and per bin), free of cancellation.

    The activations are converted to float64 and centred on their mean over the samples first: every distance
    and sum of squares below is then taken from values of the size of the spread between samples, not of their
    common offset. (Expanding ``|a - m|^2 = |a|^2 - 2 a.m + |m|^2`` in float32 lost about 3 digits per sample
    on a trained model and most of them with a common offset of 30.) Distances to the class means are
    computed from each sample's residual to its own class mean, ``r = a - m_y``:
    ``|a - m_c|^2 = |r|^2 + 2 r.(m_y - m_c) + |m_y - m_c|^2``, so the own-class distance is ``|r|^2`` itself.
    Class (and class x bin) sums are float64 products with group one-hots.

    Args:
        acts: array of shape (n, N), finite.
        labels: array of shape (n,), int in 0 .. n_classes - 1.
        n_classes: C.
        bins: optional array of shape (n,), int confidence bin of every sample (-1: in no bin).
        n_bins: B, with ``bins``.

    Returns:
        ``(per_sample, fisher, fisher_by_bin)``: per-sample distinctness of shape (n,) (see the module
        docstring), the Fisher trace ratio of the classes (:func:`.stats.distinctness_from_sums`) and of the
        classes within each bin, shape (B,) (NaN with fewer than 2 classes in the bin).
    """
    x = np.array(acts, np.float64)  # [n, N], a copy
    labels = np.asarray(labels, np.int64)
    n = len(labels)
    by_bin = np.full(n_bins, np.nan)
    if n == 0:
        return np.zeros(0), float("nan"), by_bin
    x -= x.mean(axis=0)
    sq = np.einsum("ij,ij->i", x, x)  # [n]
    sums, counts = _group_sums(x, labels, n_classes)  # [C, N], [C]
    fisher = distinctness_from_sums(sums, counts, float(sq.sum()))
    if bins is not None and n_bins:
        bins = np.asarray(bins, np.int64)
        inbin = bins >= 0
        xb = x if inbin.all() else x[inbin]
        gsums, gcounts = _group_sums(xb, labels[inbin] * n_bins + bins[inbin], n_classes * n_bins)
        gsums, gcounts = gsums.reshape(n_classes, n_bins, -1), gcounts.reshape(n_classes, n_bins)
        sq_bin = np.bincount(bins[inbin], sq[inbin], minlength=n_bins)
        by_bin = np.array([distinctness_from_sums(gsums[:, b], gcounts[:, b], float(sq_bin[b]))
                           for b in range(n_bins)])
    present = counts > 0
    means = np.zeros_like(sums)
    means[present] = sums[present] / counts[present, None]  # [C, N]
    idx = np.arange(n)
    r = x - means[labels]  # [n, N]: residuals to the own class mean
    sq_r = np.einsum("ij,ij->i", r, r)  # [n]: the own class's squared distance, exactly
    proj = r @ means.T  # [n, C]
    gram = means @ means.T  # [C, C]
    sq_m = np.diag(gram)
    apart = sq_m[:, None] + sq_m[None, :] - 2.0 * gram  # [C, C]: |m_y - m_c|^2 (centred means: no cancellation)
    # |a - m_c|^2 = |r|^2 + 2 r.(m_y - m_c) + |m_y - m_c|^2
    d2 = sq_r[:, None] + 2.0 * (proj[idx, labels][:, None] - proj) + apart[labels]  # [n, C]
    d2[:, ~present] = np.inf
    d2[idx, labels] = sq_r
    d2 = np.maximum(d2, 0.0)
    own_count = counts[labels].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        # a_i - mean without i = n_c / (n_c - 1) * (a_i - mean of the class)
        d_own = own_count / (own_count - 1.0) * np.sqrt(d2[idx, labels])
    d2[idx, labels] = np.inf
    d_other = np.sqrt(d2.min(axis=1))
    total = d_other + d_own
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(total > 0, (d_other - d_own) / total, 0.0)
    out[(own_count < 2) | ~np.isfinite(d_other)] = np.nan
    return out, fisher, by_bin


def sample_distinctness(acts: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-sample class distinctness (see the module docstring; computed as in :func:`class_distinctness`).

    Args:
        acts: array of shape (n, N).
        labels: array of shape (n,), int in 0 .. n_classes - 1.
        n_classes: C.

    Returns:
        Array of shape (n,), float64 in [-1, 1]; NaN for a sample that is the only one of its class, or when
        no other class has samples.
    """
    return class_distinctness(acts, labels, n_classes)[0]


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
    # All-NaN columns give NaN explicitly: no numpy warning to filter (catch_warnings is not thread-safe, and the
    # analysis computes layers on threads).
    some = ~np.isnan(values).all(axis=0)
    if values.ndim == 1:
        return tuple(np.nanquantile(values, [alpha, 1.0 - alpha])) if some else (np.nan, np.nan)
    lo, hi = np.full(values.shape[1:], np.nan), np.full(values.shape[1:], np.nan)
    if some.any():
        lo[some], hi[some] = np.nanquantile(values[:, some], [alpha, 1.0 - alpha], axis=0)
    return lo, hi


def weighted_spearman(x: np.ndarray, y: np.ndarray, labels: np.ndarray, n_classes: int,
                      weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Spearman correlation of every row of ``x`` with every column of ``y``, overall and partial given the class.

    Args:
        x: array of shape (K, n), per-sample quantities; samples where any row is NaN are left out.
        y: array of shape (n, M), confidence measures; samples where any measure is non-finite are left out.
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
    ok = np.isfinite(x).all(axis=0) & np.isfinite(y).all(axis=1)
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
    weights = np.asarray(weights)
    dtype = np.float32 if weights.dtype == np.float32 else np.float64  # float32: the resamples (see Bootstrap)
    sums = (weights @ np.hstack(cols).astype(dtype)).astype(np.float64)
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
        sxc_inv = sxc * inv[:, :, None]  # [R, C, K]
        cov_w = sxy - np.matmul(sxc_inv.transpose(0, 2, 1), syc)  # [R, K, M], batched over resamples
        vx_w = sxx - (sxc_inv * sxc).sum(axis=1)
        vy_w = syy - (syc * syc * inv[:, :, None]).sum(axis=1)
        partial = cov_w / np.sqrt(vx_w[:, :, None] * vy_w[:, None, :])
    tiny = 1e-9 * float(n) ** 3  # ranks that do not vary (all tied) leave only rounding
    overall[(vx[:, :, None] <= tiny) | (vy[:, None, :] <= tiny)] = np.nan
    partial[(vx_w[:, :, None] <= tiny) | (vy_w[:, None, :] <= tiny)] = np.nan
    return np.clip(overall, -1, 1), np.clip(partial, -1, 1)


QUANTITIES = ("strength", "distinctness")


class Bootstrap:
    """Seeded bootstrap over the probe samples of one run, shared by every snapshot, quantity and measure.

    The pipeline calls :meth:`correlations` for each snapshot inside its streamed pass (in its worker threads)
    and :meth:`evidence` once at the end. The plain statistics are computed in float64; the resamples in
    float32 (their sums of centred ranks keep about 5 significant digits, far below the width of any interval).

    Args:
        labels: array of shape (n,), int classes of the probe samples.
        n_classes: C.
        n_boot: resamples.
        seed: the resamples' seed.
    """

    def __init__(self, labels: np.ndarray, n_classes: int, n_boot: int = N_BOOT, seed: int = 0):
        self.labels = np.asarray(labels, np.int64)
        self.n_classes = n_classes
        self.n_boot = n_boot
        n = len(self.labels)
        self._ones = np.ones((1, n))
        self._counts = bootstrap_weights(n, n_boot, seed)  # [B, n] float64
        self._counts32 = self._counts.astype(np.float32)

    def correlations(self, x: np.ndarray, conf: np.ndarray) -> dict[str, np.ndarray]:
        """Spearman of each per-sample quantity with each measure at one snapshot, with bootstrap intervals.

        Args:
            x: array of shape (K, n), per-sample quantities.
            conf: array of shape (n, M), confidence measures.

        Returns:
            ``rho``, ``rho_partial`` of shape (K, M) and ``rho_ci``, ``rho_partial_ci`` of shape (K, M, 2).
        """
        overall, partial = weighted_spearman(x, conf, self.labels, self.n_classes, self._ones)
        b_overall, b_partial = weighted_spearman(x, conf, self.labels, self.n_classes, self._counts32)
        out = {"rho": overall[0], "rho_partial": partial[0]}
        for key, vals in (("rho_ci", b_overall), ("rho_partial_ci", b_partial)):
            lo, hi = _interval(vals)
            out[key] = np.stack([lo, hi], axis=-1)
        return out

    def evidence(self, per_sample: np.ndarray, correlations: list[dict[str, np.ndarray]],
                 measures: list[str]) -> SampleEvidence:
        """Assemble the layer's evidence: means over snapshots, the change first -> last and the peak.

        Args:
            per_sample: array of shape (K, S, n).
            correlations: :meth:`correlations` of every snapshot, in order.
            measures: the M measure names.
        """
        q, n_s, _ = per_sample.shape
        mean = np.full((q, n_s), np.nan)
        mean_ci = np.full((q, n_s, 2), np.nan)
        boot_means = np.full((q, self.n_boot, n_s), np.nan)
        for k in range(q):
            x = per_sample[k]  # [S, n]
            ok = np.isfinite(x)
            xz, okf = np.where(ok, x, 0.0).T, ok.T.astype(np.float64)  # [n, S]
            with np.errstate(invalid="ignore", divide="ignore"):
                mean[k] = (self._ones @ xz)[0] / (self._ones @ okf)[0]
                boot_means[k] = (self._counts @ xz) / (self._counts @ okf)
            lo, hi = _interval(boot_means[k])
            mean_ci[k, :, 0], mean_ci[k, :, 1] = lo, hi
        stacked = {key: np.stack([c[key] for c in correlations], axis=1) for key in correlations[0]}  # [K, S, ...]
        change = mean[:, -1] - mean[:, 0]
        lo, hi = _interval((boot_means[:, :, -1] - boot_means[:, :, 0]).T)  # paired: one resample, both snapshots
        peak = np.array([int(np.nanargmax(v)) if np.isfinite(v).any() else n_s - 1 for v in mean])
        peak_change = np.array([mean[k, peak[k]] - mean[k, 0] for k in range(q)])
        plo, phi = _interval(np.stack([boot_means[k, :, peak[k]] - boot_means[k, :, 0] for k in range(q)], axis=1))
        return SampleEvidence(QUANTITIES[:q], list(measures), mean, mean_ci, stacked["rho"], stacked["rho_ci"],
                              stacked["rho_partial"], stacked["rho_partial_ci"], change, np.stack([lo, hi], axis=1),
                              peak, peak_change, np.stack([plo, phi], axis=1), len(self.labels), self.n_boot)


def sample_evidence(per_sample: np.ndarray, conf: np.ndarray, labels: np.ndarray, n_classes: int,
                    measures: list[str], n_boot: int = N_BOOT, seed: int = 0) -> SampleEvidence:
    """Bootstrap evidence from the per-sample quantities of every snapshot (all at once; see :class:`Bootstrap`).

    Args:
        per_sample: array of shape (2, S, n): per-sample strength and distinctness at every snapshot.
        conf: array of shape (S, n, M): confidence measures.
        labels: array of shape (n,), int classes.
        n_classes: C.
        measures: the M measure names.
        n_boot: bootstrap resamples (the same resamples for every snapshot and quantity).
        seed: the bootstrap's seed.
    """
    boot = Bootstrap(labels, n_classes, n_boot, seed)
    corr = [boot.correlations(per_sample[:, s], conf[s]) for s in range(per_sample.shape[1])]
    return boot.evidence(per_sample, corr, measures)
