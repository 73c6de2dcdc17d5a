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
"""

from __future__ import annotations

import numpy as np

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
