"""Neuron activation profiles (NAPs): each neuron's mean activation per group of probe samples.

Owns the groupings (true class, predicted class, correct vs wrong, confidence bin, class x confidence bin),
the confidence bins and the optional contrast normalisation of the reference study (subtract the
across-group mean). :mod:`topotrace.analysis.pipeline` computes the group means of every grouping in its
single streamed pass over the activations (one matrix product per snapshot).

Confidence bins are quantile bins of one confidence measure, by default per snapshot ("relative
confidence", :func:`snapshot_bins`: every bin holds the same share of samples at every snapshot, so no bin
is empty when a measure saturates), or with edges computed once from the values of all snapshots pooled
(:func:`confbin_edges`: a bin means the same confidence range at every snapshot; early snapshots put most
samples in low bins, late ones in high bins).

Non-finite values. A sample whose confidence is NaN or infinite belongs to no confidence bin (bin -1) and a
sample whose outputs are non-finite to no predicted-class or correct/wrong group; :func:`group_index` passes -1
through ("in no group"), and the pipeline leaves such samples out of those groupings. The class grouping uses
the true label only, so it keeps every sample; each neuron's NAP averages that neuron's finite values only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

GROUPINGS = ("class", "pred", "correct", "confbin", "class_confbin")


def confbin_edges(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Quantile edges of confidence bins, computed from all values pooled.

    Args:
        values: array of any shape, the confidence values of every snapshot and sample (NaNs ignored).
        n_bins: B >= 1.

    Returns:
        Array of shape (B + 1,), float64, non-decreasing; the first edge is the minimum, the last the maximum.
    """
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool):
        raise TypeError(f"The 'n_bins' parameter must be an int. Got {type(n_bins).__name__} instead.")
    if n_bins < 1:
        raise ValueError(f"The 'n_bins' parameter must be >= 1. Got {n_bins} instead.")
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("Cannot compute confidence bins: no finite confidence values.")
    return np.quantile(v, np.linspace(0.0, 1.0, n_bins + 1))


def snapshot_bins(values: np.ndarray, n_bins: int) -> np.ndarray:
    """Per-snapshot quantile bins ("relative confidence"): every bin holds the same share of each snapshot's samples.

    Args:
        values: array of shape (S, n), a confidence measure per snapshot and sample.
        n_bins: B >= 1.

    Returns:
        Array of shape (S, n), int64 in -1 .. B - 1: sample i of snapshot s is in bin ``floor(B * r / n_s)``
        where r is its rank (0 .. n_s - 1) among the n_s samples of that snapshot with a finite value, ties broken
        by sample order, so bin sizes differ by at most 1; a non-finite value (NaN, inf) is in no bin (-1).
    """
    if not isinstance(n_bins, (int, np.integer)) or isinstance(n_bins, bool):
        raise TypeError(f"The 'n_bins' parameter must be an int. Got {type(n_bins).__name__} instead.")
    if n_bins < 1:
        raise ValueError(f"The 'n_bins' parameter must be >= 1. Got {n_bins} instead.")
    v = np.atleast_2d(np.asarray(values, np.float64))
    n = v.shape[1]
    finite = np.isfinite(v)
    all_finite = bool(finite.all())
    if not all_finite:
        v = np.where(finite, v, np.inf)  # non-finite values rank after every finite one
    rank = np.empty(v.shape, np.int64)
    order = np.argsort(v, axis=1, kind="stable")
    np.put_along_axis(rank, order, np.arange(n)[None, :], axis=1)
    if all_finite:
        return (rank * n_bins // n).astype(np.int64)
    n_finite = np.maximum(finite.sum(axis=1, keepdims=True), 1)
    return np.where(finite, rank * n_bins // n_finite, -1).astype(np.int64)


def relative_bin_names(n_bins: int) -> list[str]:
    """Names of per-snapshot quantile bins, e.g. ``["0–20 %", "20–40 %", ...]`` (share of the snapshot's samples)."""
    edges = [round(100 * b / n_bins) for b in range(n_bins + 1)]
    return [f"{lo}–{hi} %" for lo, hi in zip(edges[:-1], edges[1:])]


def assign_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value: array of the same shape as ``values``, int64 in -1 .. B - 1.

    Bin b holds ``edges[b] <= v < edges[b + 1]``; the last bin also holds its upper edge, and finite values
    outside the edges fall into the first or last bin. A non-finite value (NaN, inf) is in no bin (-1).
    """
    values = np.asarray(values)
    out = np.searchsorted(np.asarray(edges)[1:-1], values, side="right").astype(np.int64)
    finite = np.isfinite(values)
    if not finite.all():
        out[~finite] = -1
    return out


def bin_names(edges: np.ndarray) -> list[str]:
    """Display names of the bins, e.g. ``["0.10–0.42", "0.42–0.77", ...]``.

    Edges get as many decimals (2 to 6) as it takes to tell neighbouring edges apart, so bins of a saturated
    measure read ``0.9950–0.9999``, not ``1.00–1.00``.
    """
    edges = np.asarray(edges, np.float64)
    for digits in range(2, 7):
        text = [f"{e:.{digits}f}" for e in edges]
        if all(a != b for a, b, lo, hi in zip(text[:-1], text[1:], edges[:-1], edges[1:]) if lo != hi):
            break
    return [f"{lo}–{hi}" for lo, hi in zip(text[:-1], text[1:])]


def group_index(
    grouping: str,
    labels: np.ndarray,
    pred: np.ndarray,
    correct: np.ndarray,
    conf_bin: np.ndarray,
    n_classes: int,
    n_bins: int,
) -> tuple[np.ndarray, int]:
    """Group of every probe sample under one grouping.

    Args:
        grouping: one of :data:`GROUPINGS`.
        labels: array of shape (n,), int, true classes.
        pred: array of shape (n,), int, predicted classes.
        correct: array of shape (n,), bool.
        conf_bin: array of shape (n,), int, confidence bin (from :func:`assign_bins`).
        n_classes: C.
        n_bins: B.

    ``pred``, ``correct`` and ``conf_bin`` may hold -1 for a sample in no group (non-finite outputs or
    confidence); it stays -1 in the index.

    Returns:
        ``(index, G)``: index array of shape (n,), int64 in -1 .. G - 1 (-1: in no group), and the number of
        groups G.
    """
    if grouping == "class":
        return np.asarray(labels, np.int64), n_classes
    if grouping == "pred":
        return np.asarray(pred, np.int64), n_classes
    if grouping == "correct":
        return np.asarray(correct, np.int64), 2
    if grouping == "confbin":
        return np.asarray(conf_bin, np.int64), n_bins
    if grouping == "class_confbin":
        b = np.asarray(conf_bin, np.int64)
        return np.where(b >= 0, np.asarray(labels, np.int64) * n_bins + b, -1), n_classes * n_bins
    raise ValueError(f"The 'grouping' parameter must be a str among {set(GROUPINGS)}. Got {grouping!r} instead.")


def group_names(grouping: str, class_names: Sequence[str], names_of_bins: Sequence[str]) -> list[str]:
    """G display names of one grouping's groups, in group-index order."""
    if grouping in ("class", "pred"):
        return [str(c) for c in class_names]
    if grouping == "correct":
        return ["wrong", "correct"]
    if grouping == "confbin":
        return list(names_of_bins)
    if grouping == "class_confbin":
        return [f"{c} | {b}" for c in class_names for b in names_of_bins]
    raise ValueError(f"The 'grouping' parameter must be a str among {set(GROUPINGS)}. Got {grouping!r} instead.")


def contrast_normalise(naps: np.ndarray) -> np.ndarray:
    """Subtract each neuron's mean over groups (the reference study's contrast normalisation).

    Args:
        naps: array of shape (..., G, N); empty groups are NaN and ignored in the mean.

    Returns:
        Array of the same shape: ``naps - nanmean(naps, axis=-2)``.
    """
    naps = np.asarray(naps)
    with np.errstate(invalid="ignore"):
        # nanmean warns on all-NaN columns; those stay NaN.
        finite = np.isfinite(naps)
        total = np.where(finite, naps, 0.0).sum(axis=-2, keepdims=True)
        n = finite.sum(axis=-2, keepdims=True)
        mean = np.where(n > 0, total / np.maximum(n, 1), np.nan)
    return (naps - mean).astype(naps.dtype)
