"""Statistics of activity and confidence over training time, vectorised across neurons.

Owns: float16 conversion by table, column-wise ranks with average ties (one packed-key sort per neuron),
Pearson and Spearman correlation of every neuron with confidence (overall and within class), their p-values,
the Benjamini–Hochberg adjustment, per-snapshot summaries, class distinctness from sufficient statistics,
and linear CKA to a fixed reference. (Activity strength,
mean |a|, is summed inside the pipeline's pass.) The textbook forms these are tested against live in
``tests/reference.py``.

Definitions (also in ``docs/analysis.md``):

* Within-class correlation: the class means of both variables are subtracted and the residuals correlated,
  pooled over classes; its p-value uses ``n - C - 1`` degrees of freedom (C = classes present). Within-class
  Spearman is the partial Spearman correlation given the class: ranks over all samples, class means of the
  ranks subtracted, residuals correlated (the within-class Pearson statistic on the overall Spearman's ranks).
* A neuron without variation (e.g. a dead ReLU unit, or one that encodes only the class when looking within
  class) has no measurable association: r = 0, p = 1.
* Non-finite values are data, not poison (:func:`masked_correlations`): each neuron is correlated over the
  samples where its activation and the confidence are finite; fewer than :data:`MIN_SAMPLES` such samples
  give r = NaN (no data, which is not "no association"), and p-values use each neuron's own degrees of freedom.
* Class distinctness is Fisher's trace ratio: the between-class variance of the class means summed over
  neurons divided by the within-class variance summed over neurons (the two add up to the total variance).
  Summing before dividing keeps neurons with almost no within-class variance from dominating.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

_TINY = 1e-12
_BLOCK_ELEMENTS = 1 << 20  # samples x neurons per block in snapshot_correlations
MIN_SAMPLES = 3  # a correlation over fewer usable samples is NaN
CORRELATIONS = ("pearson", "pearson_within", "spearman", "spearman_within")


class Workspace:
    """Reusable scratch arrays for the per-snapshot passes (one per thread; never shared between threads).

    Large temporaries allocated afresh at every snapshot cost page faults (about as much as the arithmetic);
    a workspace hands back the same array for the same name, shape and dtype.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: npt.DTypeLike) -> np.ndarray:
        """An uninitialised array of ``shape`` and ``dtype``, reused across calls with the same name."""
        a = self._arrays.get(name)
        dtype = np.dtype(dtype)
        if a is None or a.shape != tuple(shape) or a.dtype != dtype:
            a = self._arrays[name] = np.empty(shape, dtype)
        return a


def _f16_table(dtype: type) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.arange(1 << 16, dtype=np.uint16).view(np.float16).astype(dtype)


_F16_TO = {np.dtype(np.float32): _f16_table(np.float32), np.dtype(np.float64): _f16_table(np.float64)}


def as_float(x: np.ndarray, dtype: npt.DTypeLike = np.float32, out: np.ndarray | None = None) -> np.ndarray:
    """``x`` converted to ``dtype`` (float32 or float64), exactly; float16 goes through a 65536-entry table.

    numpy's own float16 conversion is scalar code (about 4 ns per value); a table lookup is several times faster
    and gives the identical values.

    Args:
        x: array of any shape.
        dtype: float32 or float64.
        out: optional array of the result's shape and dtype to write into.
    """
    x = np.asarray(x)
    dtype = np.dtype(dtype)
    if x.dtype == np.float16 and dtype in _F16_TO:
        return np.take(_F16_TO[dtype], x.view(np.uint16), out=out)
    if out is None:
        return x.astype(dtype)
    np.copyto(out, x, casting="unsafe")
    return out


def _sort_key(x: np.ndarray) -> np.ndarray:
    """Unsigned integer keys that sort like ``x`` (float16 -> uint16, float32 -> uint32); other dtypes as given.

    The sign bit is flipped for positive values and all bits for negative ones, so unsigned order equals float
    order; -0.0 gets the key of +0.0 so the two tie.
    """
    if x.dtype not in (np.float16, np.float32):
        return x
    ut, bits = (np.uint16, 16) if x.dtype == np.float16 else (np.uint32, 32)
    b = x.view(ut)
    sign = ut(1 << (bits - 1))
    key = b ^ ((b >> ut(bits - 1)) * ut(sign - 1) + sign)
    key[key == sign - 1] = sign  # -0.0 ties with +0.0
    return key


def _transpose(x: np.ndarray, tile: int = 32) -> np.ndarray:
    """Contiguous transpose of a 2-D array, copied in square tiles (several times faster than copying ``x.T``)."""
    out = np.empty(x.shape[::-1], x.dtype)
    for i in range(0, x.shape[0], tile):
        for j in range(0, x.shape[1], tile):
            out[j : j + tile, i : i + tile] = x[i : i + tile, j : j + tile].T
    return out


def _sorted_rows(x: np.ndarray, ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """Sort every row of ``x`` (shape (R, m)): ``(keys in sorted order, order)``, both of shape (R, m).

    float16 and float32 values become unsigned integer keys (:func:`_sort_key`) packed
    with the column index into one wider integer (key in the high bits) and sorted by value, which numpy does
    with SIMD quicksort; this is several times faster than an argsort and gives the sort order and the sorted
    keys at once. Other dtypes use a stable argsort.
    """
    n_rows, m = x.shape
    for dt, wide, shift in ((np.float16, np.uint32, 16), (np.float32, np.uint64, 32)):
        if x.dtype == dt and m <= (1 << shift):
            comp = ws.get("packed", x.shape, wide)
            np.left_shift(_sort_key(x), shift, out=comp, dtype=wide)
            np.bitwise_or(comp, np.arange(m, dtype=wide), out=comp)
            comp.sort(axis=1)
            order = ws.get("order", x.shape, np.int64)
            np.bitwise_and(comp, (1 << shift) - 1, out=order, casting="unsafe")
            np.right_shift(comp, shift, out=comp)
            return comp, order
    order = np.argsort(x, axis=1, kind="stable")
    return np.take_along_axis(x, order, axis=1), order


def _doubled_ranks_rows(x: np.ndarray, ws: Workspace, out: np.ndarray) -> np.ndarray:
    """Twice the average ranks (1-based; ties share the mean of their ranks) along each row of ``x``.

    Args:
        x: array of shape (R, m) without NaNs, the values to rank.
        ws: scratch arrays.
        out: array of shape (R, m), float64, written with ``2 * rank`` (integers, so exact in any float type).

    One sort per row, then the tie runs of all rows at once: run k starting at flat sorted position s_k with
    length L_k has the doubled mean rank ``2 s_k + L_k + 1`` (counted from the start of row 0), so consecutive
    runs differ by ``L_{k-1} + L_k``; a cumulative sum of those steps (integers, exact) spreads the ranks over
    the sorted positions, the row offsets are removed, and the result is scattered back to the original positions.
    """
    n_rows, m = x.shape
    total = n_rows * m
    sk, order = _sorted_rows(x, ws)
    new = ws.get("new", (n_rows, m), bool)
    new[:, 0] = True
    np.not_equal(sk[:, 1:], sk[:, :-1], out=new[:, 1:])
    starts = np.flatnonzero(new)  # flat positions where a run of equal keys starts (every row start included)
    length = np.empty_like(starts)
    np.subtract(starts[1:], starts[:-1], out=length[:-1])
    length[-1] = total - starts[-1]
    jump = length.copy()
    jump[1:] += length[:-1]
    jump[0] += 1
    step = ws.get("step", (n_rows, m), np.int64)
    step.fill(0)
    step.reshape(-1)[starts] = jump
    np.cumsum(step.reshape(-1), out=step.reshape(-1))
    row_start = np.arange(n_rows, dtype=np.int64) * m
    ranks = ws.get("sorted_ranks", (n_rows, m), np.float64)
    np.subtract(step, 2 * row_start[:, None], out=ranks, casting="unsafe")  # doubled 1-based rank in the row
    np.add(order, row_start[:, None], out=order)
    out.reshape(-1)[order.reshape(-1)] = ranks.reshape(-1)  # same dtype on both sides: a plain scatter
    return out


def rankdata_columns(x: np.ndarray) -> np.ndarray:
    """Ranks (1 .. n, ties get their average rank) of every column, like ``scipy.stats.rankdata(x, axis=0)``.

    Args:
        x: array of shape (n, N) without NaNs; float16 and float32 input is ranked through integer keys.

    Returns:
        Array of shape (n, N), float64.
    """
    xt = _transpose(np.asarray(x))
    out = _doubled_ranks_rows(xt, Workspace(), np.empty(xt.shape))
    return (out * 0.5).T


def _moments_corr(num: np.ndarray, ssx: np.ndarray, raw_x: np.ndarray, ssy: np.ndarray,
                  raw_y: np.ndarray) -> np.ndarray:
    ok = np.outer((ssx > 0) & (ssx > _TINY * raw_x), (ssy > 0) & (ssy > _TINY * raw_y))
    den = np.sqrt(np.outer(np.maximum(ssx, 0), np.maximum(ssy, 0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def _y_moments(y: np.ndarray, onehot: np.ndarray, counts: np.ndarray, lab: np.ndarray) -> tuple[np.ndarray, ...]:
    """Centred and class-centred copies of ``y`` (n, M) with their sums of squares and raw sums of squares."""
    yc = y - y.mean(axis=0)
    yw = y - ((onehot @ y) / counts[:, None])[lab]
    return (yc, yw, np.einsum("ij,ij->j", yc, yc), np.einsum("ij,ij->j", yw, yw), np.einsum("ij,ij->j", y, y))


def snapshot_correlations(
    acts: np.ndarray,
    conf: np.ndarray,
    labels: np.ndarray,
    rank_source: np.ndarray | None = None,
    workspace: Workspace | None = None,
) -> dict[str, np.ndarray]:
    """Pearson and Spearman r of every neuron with every confidence measure, overall and within class.

    Everything comes from moments: per block of neurons, one product of the values (float64) with
    ``[1, class one-hot, centred conf, class-centred conf]`` and one product of the doubled ranks with
    ``[class one-hot, centred conf ranks, class-centred conf ranks]``, plus sums of squares. The ranks of each
    neuron are computed once (one sort) and serve both Spearman forms; no residual matrix is formed. Equal to
    :func:`corr_columns` / :func:`corr_within` applied to the values and to the ranks over all samples.

    Args:
        acts: array of shape (n, N), one snapshot's activations (float16 as stored is fastest).
        conf: array of shape (n, M), the confidence measures of the same samples.
        labels: array of shape (n,), true classes.
        rank_source: what to rank instead of ``acts`` (same order and shape); default ``acts``.
        workspace: scratch arrays reused across calls (one per thread); default a fresh one.

    Returns:
        ``{"pearson", "pearson_within", "spearman", "spearman_within"}`` -> array of shape (N, M), float64; all
        NaN with fewer than :data:`MIN_SAMPLES` samples, the within-class forms NaN when ``n - C - 1 < 1``
        (no degree of freedom once the C class means are removed).
    """
    ws = workspace if workspace is not None else Workspace()
    lab = np.unique(labels, return_inverse=True)[1]
    counts = np.bincount(lab).astype(np.float64)
    n_classes = len(counts)
    onehot = np.zeros((n_classes, len(lab)))
    onehot[lab, np.arange(len(lab))] = 1.0
    y = np.asarray(conf, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    m = y.shape[1]
    yc, yw, ss_y, ssw_y, raw_y = _y_moments(y, onehot, counts, lab)
    y_ranks = rankdata_columns(y)
    yrc, yrw, ss_yr, ssw_yr, raw_yr = _y_moments(y_ranks, onehot, counts, lab)
    z_val = np.vstack([np.ones((1, len(lab))), onehot, yc.T, yw.T])  # [1 + C + 2M, n]
    z_rank = np.ascontiguousarray(np.vstack([onehot, yrc.T, yrw.T]).T)  # [n, C + 2M]
    acts = np.asarray(acts)
    src = acts if rank_source is None else np.asarray(rank_source)
    n, n_neurons = acts.shape
    out = {k: np.empty((n_neurons, m)) for k in ("pearson", "pearson_within", "spearman", "spearman_within")}
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))  # neurons per block: temporaries stay ~8 MB per array
    sum_r = float(n * (n + 1))  # sum of doubled ranks, whatever the ties
    for j0 in range(0, n_neurons, step):
        cols = slice(j0, min(j0 + step, n_neurons))
        b = cols.stop - cols.start
        v = as_float(acts[:, cols], np.float64, out=ws.get("values", (n, b), np.float64))  # [n, b]
        p = z_val @ v  # [1 + C + 2M, b]
        raw = np.einsum("ij,ij->j", v, v)
        ss = raw - p[0] * p[0] / n
        ssw = raw - (p[1 : 1 + n_classes] ** 2 / counts[:, None]).sum(axis=0)
        num = p[1 + n_classes :].T  # [b, 2M]
        out["pearson"][cols] = _moments_corr(num[:, :m], ss, raw, ss_y, raw_y)
        out["pearson_within"][cols] = _moments_corr(num[:, m:], ssw, raw, ssw_y, raw_y)
        ranks = _doubled_ranks_rows(_transpose(src[:, cols]), ws, ws.get("ranks", (b, n), np.float64))
        q = ranks @ z_rank  # [b, C + 2M]
        raw_r = np.einsum("ij,ij->i", ranks, ranks)
        ss_r = raw_r - sum_r * sum_r / n
        ssw_r = raw_r - (q[:, :n_classes] ** 2 / counts[None, :]).sum(axis=1)
        out["spearman"][cols] = _moments_corr(q[:, n_classes : n_classes + m], ss_r, raw_r, ss_yr, raw_yr)
        out["spearman_within"][cols] = _moments_corr(q[:, n_classes + m :], ssw_r, raw_r, ssw_yr, raw_yr)
    # Too few samples to correlate: one or two samples give r = 0 or +-1 by construction, not by association.
    if n < MIN_SAMPLES:
        for v in out.values():
            v[:] = np.nan
    elif n - n_classes - 1 < 1:  # within class: no degree of freedom left once the class means are removed
        out["pearson_within"][:] = np.nan
        out["spearman_within"][:] = np.nan
    return out


def corr_pvalues(r: np.ndarray, df: int | np.ndarray) -> np.ndarray:
    """Two-sided p-values of correlations from the t-distribution with ``df`` degrees of freedom.

    Args:
        r: array of correlations, any shape (NaN gives NaN).
        df: degrees of freedom (``n - 2`` overall, ``n - C - 1`` within class): an int, or an array that
            broadcasts against ``r`` (e.g. shape (N,) for ``r`` of shape (M, N): each neuron's own count).

    Returns:
        Array of the same shape as ``r``; NaN where ``df < 1``.
    """
    r = np.asarray(r, np.float64)
    if np.ndim(df) == 0:
        if df < 1:
            return np.full(r.shape, np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = r * np.sqrt(df / np.maximum(1.0 - r * r, 0.0))
        return 2.0 * special.stdtr(df, -np.abs(t))  # the t-distribution's tail, as scipy.stats.t.sf
    dfa = np.asarray(df, np.float64)
    ok = dfa >= 1
    d = np.where(ok, dfa, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(d / np.maximum(1.0 - r * r, 0.0))
        p = 2.0 * special.stdtr(d, -np.abs(t))
    return np.where(ok, p, np.nan)


def masked_correlations(
    acts: np.ndarray,
    conf: np.ndarray,
    labels: np.ndarray,
    usable: np.ndarray,
    rank_source: np.ndarray | None = None,
    workspace: Workspace | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """:func:`snapshot_correlations` where each neuron uses only its own usable samples (non-finite values left out).

    Neurons with the same usable samples are computed together: one :func:`snapshot_correlations` call per
    distinct set (a few bad sample rows cost one call; a NaN in one neuron one more, for that neuron), so the
    statistics of every neuron equal those computed on its usable samples alone.

    Args:
        acts: array of shape (n, N); values where ``usable`` is False are ignored (they may be NaN or inf).
        conf: array of shape (n, M); must be finite wherever a sample is usable for some neuron.
        labels: array of shape (n,), true classes.
        usable: bool array of shape (n, N): sample i counts for neuron j (typically both finite).
        rank_source: what to rank instead of ``acts`` (same order and shape); default ``acts``.
        workspace: scratch arrays reused across calls (one per thread); default a fresh one.

    Returns:
        ``(r, n_used, n_classes)``: ``r`` as :func:`snapshot_correlations` (each array of shape (N, M), NaN for
        a neuron with fewer than :data:`MIN_SAMPLES` usable samples); ``n_used``, array of shape (N,), int64, the
        samples behind each neuron; ``n_classes``, array of shape (N,), int64, the classes among them (for the
        degrees of freedom ``n_used - 2`` and ``n_used - n_classes - 1``).
    """
    usable = np.asarray(usable, bool)
    labels = np.asarray(labels)
    y = np.asarray(conf, np.float64)
    y = y[:, None] if y.ndim == 1 else y
    n, n_neurons = usable.shape
    src = np.asarray(acts if rank_source is None else rank_source)
    acts = np.asarray(acts)
    out = {k: np.full((n_neurons, y.shape[1]), np.nan) for k in CORRELATIONS}
    n_used = usable.sum(axis=0).astype(np.int64)
    n_classes = np.zeros(n_neurons, np.int64)
    # One key per neuron: its usable samples packed into bits; neurons with equal keys share one call.
    keys = np.ascontiguousarray(np.packbits(usable, axis=0).T)  # [N, ceil(n / 8)]
    _, inverse = np.unique(keys.view(np.dtype((np.void, keys.shape[1]))).ravel(), return_inverse=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    bounds = np.flatnonzero(np.diff(inverse.ravel()[order])) + 1
    for cols in np.split(order, bounds):
        rows = np.flatnonzero(usable[:, cols[0]])
        n_classes[cols] = len(np.unique(labels[rows]))
        if len(rows) < MIN_SAMPLES:
            continue
        r = snapshot_correlations(acts[np.ix_(rows, cols)], y[rows], labels[rows], src[np.ix_(rows, cols)],
                                  workspace)
        for k in CORRELATIONS:
            out[k][cols] = r[k]
    return out, n_used, n_classes


def bh_fdr(p: np.ndarray) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (q-values) along the last axis; NaNs are left out and stay NaN.

    Args:
        p: array of shape (..., m).

    Returns:
        Array of the same shape: ``q_(i) = min_{j >= i} p_(j) * m / j`` over the sorted finite p-values, at most 1.
    """
    p = np.asarray(p, np.float64)
    flat = p.reshape(-1, p.shape[-1])
    out = np.full(flat.shape, np.nan)
    for row, (pr, qr) in enumerate(zip(flat, out)):
        ok = np.flatnonzero(np.isfinite(pr))
        m = len(ok)
        if m == 0:
            continue
        order = ok[np.argsort(pr[ok], kind="stable")]
        scaled = pr[order] * m / np.arange(1, m + 1)
        qr[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        out[row] = qr
    return out.reshape(p.shape)


def corr_summary(r: np.ndarray, q: np.ndarray, alpha: float) -> dict[str, float]:
    """Mean r and the shares of neurons significantly positive / negative at FDR ``alpha``.

    Args:
        r: array of shape (N,), correlations.
        q: array of shape (N,), their BH q-values.
        alpha: FDR level.
    """
    sig = np.nan_to_num(q, nan=1.0) < alpha
    return {
        "mean_r": float(np.nanmean(r)) if np.isfinite(r).any() else float("nan"),
        "frac_sig_pos": float(np.mean(sig & (r > 0))),
        "frac_sig_neg": float(np.mean(sig & (r < 0))),
    }


def distinctness_from_sums(class_sums: np.ndarray, class_counts: np.ndarray, sum_sq: float) -> float:
    """Class distinctness from sufficient statistics (what the streaming pass accumulates anyway).

    Args:
        class_sums: array of shape (C, N), sum of each neuron's activation over each class's samples.
        class_counts: array of shape (C,), samples per class (empty classes are ignored).
        sum_sq: sum of squared activations over all samples and neurons.

    Returns:
        ``sum_j sum_c n_c (m_cj - m_j)^2 / sum_j sum_i (a_ij - m_{c(i) j})^2`` (Fisher trace ratio: between-class
        over within-class sum of squares, summed over neurons); NaN with fewer than two classes or no
        within-class variation.
    """
    counts = np.asarray(class_counts, np.float64)
    keep = counts > 0
    if keep.sum() < 2:
        return float("nan")
    sums = np.asarray(class_sums, np.float64)[keep]
    counts = counts[keep]
    total_n = counts.sum()
    grand = sums.sum(axis=0)  # [N]
    between = float((sums * sums / counts[:, None]).sum() - (grand * grand).sum() / total_n)
    total = float(sum_sq - (grand * grand).sum() / total_n)
    within = total - between
    if within <= 1e-9 * max(total, _TINY):
        return float("nan")
    return max(between, 0.0) / within


class CkaReference:
    """Linear CKA of activation matrices to one fixed reference (the final snapshot), computed cheaply.

    ``CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred X, Y (Kornblith et al.
    2019). The Gram matrices are formed in sample space when there are fewer samples than neurons.

    Args:
        y: array of shape (n, N_y), the reference activations.
        dtype: precision of the Gram products (float32 is about twice as fast; centring is always float64).
    """

    def __init__(self, y: np.ndarray, dtype: type = np.float64):
        self._dtype = dtype
        yc = self._centre(y)
        self._sample_space = yc.shape[0] <= yc.shape[1]
        self._yc = yc
        self._ky = yc @ yc.T if self._sample_space else None
        self._norm_y = float(np.linalg.norm(self._ky if self._sample_space else yc.T @ yc))

    def _centre(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        return (x - x.mean(axis=0, dtype=np.float64)).astype(self._dtype, copy=False)

    def score(self, x: np.ndarray) -> float:
        """CKA of ``x`` (shape (n, N_x), same samples) to the reference, in [0, 1]; NaN without variation."""
        xc = self._centre(x)
        if self._sample_space or xc.shape[0] <= xc.shape[1]:
            kx = xc @ xc.T
            ky = self._ky if self._ky is not None else self._yc @ self._yc.T
            num = float(np.einsum("ij,ij->", kx, ky, dtype=np.float64))
            norm_x = float(np.linalg.norm(kx.astype(np.float64)))
        else:
            num = float(np.linalg.norm((self._yc.T @ xc).astype(np.float64)) ** 2)
            norm_x = float(np.linalg.norm((xc.T @ xc).astype(np.float64)))
        den = norm_x * self._norm_y
        return num / den if den > 0 else float("nan")
