"""Calibration of the model's confidence: reliability bins and the expected calibration error (ECE).

Owns the equal-width confidence bins over [0, 1], the per-bin counts, mean confidence and accuracy (the data
of a reliability diagram), and the expected calibration error computed from them, for one snapshot or a
stack of snapshots at once.

Definitions (Guo, Pleiss, Sun & Weinberger 2017, "On Calibration of Modern Neural Networks", ICML, Sec. 2;
Naeini, Cooper & Hauskrecht 2015, "Obtaining Well Calibrated Probabilities Using Bayesian Binning"):

* ``conf`` is the probability the model gives its predicted class, ``correct`` whether that prediction is right.
* With B bins of equal width, bin b holds the samples with ``b / B < conf <= (b + 1) / B`` (edges
  ``numpy.linspace(0, 1, B + 1)``); a confidence of exactly 0 goes into bin 0.
* ``ECE = sum_b (n_b / n) |acc_b - conf_b|``, where n_b, acc_b and conf_b are the bin's sample count,
  accuracy and mean confidence, and n the number of samples binned.

Non-finite confidences (NaN, inf) are in no bin: they count neither in n_b nor in n.

It also owns temperature scaling fitted where it can calibrate (:func:`cross_fitted_temperature`, the measure
``temp_prob_cv``): T fitted on one half of a probe set and applied to the other, so that the ECE is measured on
samples the fit has not seen (the recorded ``temp_prob`` fits T on the train probe set; see ``docs/analysis.md``).
"""

from __future__ import annotations

import numpy as np

from ..instrument.confidence import fit_temperature, temperature_softmax

ECE_BINS = 15  # equal-width bins, as in Guo et al. 2017
_CONF_TOL = 1e-9  # confidences this far outside [0, 1] are float error and are clipped; farther is an error


def _check_n_bins(n_bins: object) -> int:
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, (bool, np.bool_)):
        raise TypeError(f"The 'n_bins' parameter must be an int. Got {type(n_bins).__name__} instead.")
    if n_bins < 1:
        raise ValueError(f"The 'n_bins' parameter must be an int >= 1. Got {n_bins} instead.")
    return int(n_bins)


def _check_inputs(conf: np.ndarray, correct: np.ndarray, n_bins: object) -> tuple[np.ndarray, np.ndarray, int, bool]:
    """Validated ``(conf, correct, n_bins, stacked)``; conf float64 and correct bool, both of shape (S, n)."""
    n_bins = _check_n_bins(n_bins)
    conf = np.asarray(conf)
    correct = np.asarray(correct)
    if conf.dtype.kind not in "biuf":
        raise TypeError(f"The 'conf' parameter must be an array of real numbers. Got dtype {conf.dtype} instead.")
    if correct.dtype.kind not in "biuf":
        raise TypeError(f"The 'correct' parameter must be an array of bool. Got dtype {correct.dtype} instead.")
    if conf.ndim not in (1, 2):
        raise ValueError(f"The 'conf' parameter must have shape (n,) or (S, n). Got shape {conf.shape} instead.")
    if conf.shape != correct.shape:
        raise ValueError(
            f"The 'conf' and 'correct' parameters must have the same shape. Got {conf.shape} and {correct.shape}."
        )
    if correct.dtype != bool:
        if not np.isin(correct, (0, 1)).all():
            raise ValueError("The 'correct' parameter must hold bool values (or only 0 and 1). Got other values.")
        correct = correct.astype(bool)
    stacked = conf.ndim == 2
    conf = np.atleast_2d(conf.astype(np.float64, copy=False))
    correct = np.atleast_2d(correct)
    finite = np.isfinite(conf)
    if finite.any():
        lo, hi = conf[finite].min(), conf[finite].max()
        if lo < -_CONF_TOL or hi > 1.0 + _CONF_TOL:
            raise ValueError(
                f"The 'conf' parameter must lie within [0, 1] (probabilities). Got values in [{lo:g}, {hi:g}] instead."
            )
        if lo < 0.0 or hi > 1.0:
            conf = np.clip(conf, 0.0, 1.0)  # NaN stays NaN
    return conf, correct, n_bins, stacked


def _bin_sums(conf: np.ndarray, correct: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-snapshot bin counts, sums of confidence and numbers correct, each of shape (S, B).

    Args:
        conf: array of shape (S, n), float64 in [0, 1] or non-finite.
        correct: array of shape (S, n), bool.
        n_bins: B.

    All snapshots are binned by one ``bincount`` over the flat index ``s * B + b``.
    """
    n_snap = conf.shape[0]
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # searchsorted(side="left") - 1 puts edges[b] < c <= edges[b + 1] into bin b; c == 0 gives -1, moved to bin 0.
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    flat = b + (np.arange(n_snap, dtype=np.int64) * n_bins)[:, None]  # [S, n]
    keep = np.isfinite(conf)
    flat, c, ok = flat[keep], conf[keep], correct[keep]
    size = n_snap * n_bins
    counts = np.bincount(flat, minlength=size).reshape(n_snap, n_bins)
    sum_conf = np.bincount(flat, weights=c, minlength=size).reshape(n_snap, n_bins)
    n_correct = np.bincount(flat, weights=ok.astype(np.float64), minlength=size).reshape(n_snap, n_bins)
    return counts.astype(np.int64), sum_conf, n_correct


def reliability(
    conf: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability-diagram data: sample count, mean confidence and accuracy of every equal-width confidence bin.

    Args:
        conf: array of shape (n,) or (S, n), float in [0, 1]: the probability of the predicted class of every
            sample (of every snapshot). Non-finite entries are in no bin.
        correct: array of the same shape, bool: whether the prediction is right.
        n_bins: B >= 1, the number of bins of width 1 / B over [0, 1] (bin b holds ``b/B < conf <= (b+1)/B``,
            a confidence of exactly 0 is in bin 0).

    Returns:
        ``(counts, mean_conf, accuracy)``: arrays of shape (B,), or (S, B) for stacked input; counts int64,
        mean_conf and accuracy float64 and NaN where a bin is empty.

    Raises:
        TypeError: ``n_bins`` is not an int, or ``conf``/``correct`` are not numeric.
        ValueError: the shapes differ or are not 1-D/2-D, ``n_bins`` < 1, ``conf`` lies outside [0, 1]
            (beyond 1e-9), or ``correct`` holds values other than 0/1.
    """
    conf, correct, n_bins, stacked = _check_inputs(conf, correct, n_bins)
    counts, sum_conf, n_correct = _bin_sums(conf, correct, n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(counts > 0, sum_conf / counts, np.nan)
        accuracy = np.where(counts > 0, n_correct / counts, np.nan)
    if not stacked:
        return counts[0], mean_conf[0], accuracy[0]
    return counts, mean_conf, accuracy


def ece(conf: np.ndarray, correct: np.ndarray, n_bins: int = ECE_BINS) -> float | np.ndarray:
    """Expected calibration error ``sum_b (n_b / n) |acc_b - conf_b|`` over equal-width confidence bins.

    Guo et al. 2017, Eq. (3). Since ``n_b |acc_b - conf_b| = |#correct_b - sum of conf in b|``, the sum is
    taken in that form (no division per bin).

    Args:
        conf: array of shape (n,) or (S, n), float in [0, 1], the probability of the predicted class.
            Non-finite entries (NaN, inf) are excluded: they are in no bin and do not count in n.
        correct: array of the same shape, bool.
        n_bins: B >= 1 (default :data:`ECE_BINS` = 15, as in Guo et al.); bins as in :func:`reliability`.

    Returns:
        A float in [0, 1] for input of shape (n,), an array of shape (S,) for input of shape (S, n); NaN for a
        snapshot without any finite confidence.

    Raises:
        TypeError: ``n_bins`` is not an int, or ``conf``/``correct`` are not numeric.
        ValueError: as in :func:`reliability`.
    """
    conf, correct, n_bins, stacked = _check_inputs(conf, correct, n_bins)
    counts, sum_conf, n_correct = _bin_sums(conf, correct, n_bins)
    n = counts.sum(axis=1)
    gap = np.abs(n_correct - sum_conf).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(n > 0, gap / np.maximum(n, 1), np.nan)
    return out if stacked else float(out[0])


# ------------------------------------------------------------------------------ cross-fitted temperature scaling
TEMP_PROB_CV = "temp_prob_cv"  # the analysis's calibrated measure (temperature cross-fitted on the probe set)
CV_SEED = 0  # the seed of the split into halves


def cross_fit_halves(labels: np.ndarray, seed: int = CV_SEED) -> np.ndarray:
    """A seeded split of the probe samples into two halves, balanced within every class.

    The samples of each class are put in a seeded random order and dealt alternately to half 0 and half 1
    (starting with half 0 for even classes, half 1 for odd ones), so every class is split as evenly as its count
    allows (sizes differ by at most one per class).

    Args:
        labels: array of shape (n,), int classes.
        seed: the split's seed.

    Returns:
        Array of shape (n,), int8: 0 or 1, the half of every sample.
    """
    labels = np.asarray(labels, np.int64)
    keys = np.random.default_rng(seed).random(len(labels))
    order = np.lexsort((keys, labels))  # by class, then in seeded random order
    rank = np.empty(len(labels), np.int64)
    rank[order] = np.arange(len(labels))
    first = np.zeros(len(labels), np.int64)  # index of each sample's class's first member in `order`
    if len(labels):
        starts = np.flatnonzero(np.r_[True, np.diff(labels[order]) != 0])
        first[order] = np.repeat(starts, np.diff(np.r_[starts, len(labels)]))
    return ((rank - first + labels) % 2).astype(np.int8)  # odd classes start with half 1: halves within one


def cross_fitted_temperature(logits: np.ndarray, labels: np.ndarray,
                             halves: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Temperature scaling fitted where it can calibrate: on one half of the probe set, applied to the other.

    At each snapshot, T_0 is fitted (:func:`topotrace.instrument.confidence.fit_temperature`, minimum NLL) on
    the samples of half 0 and applied to half 1, T_1 on half 1 and applied to half 0. Every sample's scaled
    confidence ``max softmax(z / T)`` therefore comes from a temperature fitted without it, and an ECE over all
    samples measures calibration on data the fit has not seen. (The recorder's ``temp_prob`` fits T on the
    ``train`` probe set, which a network fits perfectly late in training: its T then runs to the lower bound and
    makes held-out confidences *more* extreme.) Scaling keeps the argmax, so the predicted class and the
    correctness are those of the logits.

    Args:
        logits: array of shape (S, n, C) (or (n, C) for one snapshot).
        labels: array of shape (n,), int true classes.
        halves: array of shape (n,), 0 or 1 (default :func:`cross_fit_halves` of ``labels``).

    Returns:
        ``(conf, temperatures)``: conf of shape (S, n) (or (n,)), float64, NaN for rows with a non-finite logit
        or whose other half has no finite row; temperatures of shape (S, 2) (or (2,)): T fitted on half 0 and
        on half 1 (NaN where a half has no finite row).
    """
    z_all = np.asarray(logits)
    single = z_all.ndim == 2
    z_all = z_all[None] if single else z_all
    labels = np.asarray(labels, np.int64)
    halves = cross_fit_halves(labels) if halves is None else np.asarray(halves)
    n_s, n = z_all.shape[:2]
    conf = np.full((n_s, n), np.nan)
    temps = np.full((n_s, 2), np.nan)
    for s in range(n_s):
        z = np.asarray(z_all[s], np.float64)
        for h in (0, 1):
            fit, apply = halves == h, halves != h
            if not fit.any():
                continue
            t = fit_temperature(z[fit], labels[fit])
            temps[s, h] = t
            if apply.any() and np.isfinite(t):
                with np.errstate(invalid="ignore"):
                    conf[s, apply] = temperature_softmax(z[apply], t).max(axis=1)
    return (conf[0], temps[0]) if single else (conf, temps)
