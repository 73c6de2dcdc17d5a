"""Statistics of activity and confidence over training time, vectorised across neurons.

Owns: column-wise ranks with average ties, Pearson and Spearman correlation of every neuron with confidence
(overall and within class), their p-values, the Benjamini–Hochberg adjustment, per-snapshot summaries, activity
strength, class distinctness, linear CKA and the trend tests that say whether a quantity rises.

Definitions (also in ``docs/analysis.md``):

* Within-class correlation: the class means of both variables are subtracted and the residuals correlated,
  pooled over classes; its p-value uses ``n - C - 1`` degrees of freedom (C = classes present). Within-class
  Spearman correlates ranks computed inside each class, centred per class.
* A neuron without variation (e.g. a dead ReLU unit, or one that encodes only the class when looking within
  class) has no measurable association: r = 0, p = 1.
* Class distinctness is Fisher's trace ratio: the between-class variance of the class means summed over
  neurons divided by the within-class variance summed over neurons (the two add up to the total variance).
  Summing before dividing keeps neurons with almost no within-class variance from dominating.
"""

from __future__ import annotations

import numpy as np
from scipy import stats as sps

from .results import Trend

_TINY = 1e-12
_BLOCK_ELEMENTS = 1 << 20  # samples x neurons per block in snapshot_correlations


def _as2d(y: np.ndarray) -> tuple[np.ndarray, bool]:
    y = np.asarray(y)
    return (y[:, None], True) if y.ndim == 1 else (y, False)


def _sort_key(x: np.ndarray) -> np.ndarray:
    """Keys that sort like ``x`` (rows = what to sort along); float16 maps to uint16 for numpy's radix sort."""
    if x.dtype == np.float16:
        b = x.view(np.uint16)
        # negative: flip all bits; positive: set the sign bit -> unsigned order equals float order
        key = b ^ ((b >> 15) * np.uint16(0x7FFF) + np.uint16(0x8000))
        key[key == 0x7FFF] = 0x8000  # -0.0 ties with +0.0
        return key
    return x


def _transpose(x: np.ndarray, tile: int = 64) -> np.ndarray:
    """Contiguous transpose of a 2-D array, copied in square tiles (about 3x faster than a plain copy of ``x.T``)."""
    out = np.empty(x.shape[::-1], x.dtype)
    for i in range(0, x.shape[0], tile):
        for j in range(0, x.shape[1], tile):
            out[j : j + tile, i : i + tile] = x[i : i + tile, j : j + tile].T
    return out


def _rank_rows(keys: np.ndarray) -> np.ndarray:
    """Average ranks (1-based) along each row of ``keys`` (shape (R, m)): array of shape (R, m), float64."""
    n_rows, m = keys.shape
    order = np.argsort(keys, axis=1, kind="stable")
    sk = np.take_along_axis(keys, order, axis=1)
    new = np.ones(sk.shape, bool)
    new[:, 1:] = sk[:, 1:] != sk[:, :-1]
    run = np.cumsum(new.ravel()) - 1  # run id of every sorted element, unique across rows
    length = np.bincount(run).astype(np.float64)
    first = np.flatnonzero(new.ravel()) % m  # position in its row where each run starts
    avg = first + (length + 1.0) / 2.0  # average 1-based rank of each run
    out = np.empty(sk.shape, np.float64)
    np.put_along_axis(out, order, avg[run].reshape(n_rows, m), axis=1)
    return out


def rankdata_columns(x: np.ndarray) -> np.ndarray:
    """Ranks (1 .. n, ties get their average rank) of every column, like ``scipy.stats.rankdata(x, axis=0)``.

    Args:
        x: array of shape (n, N) without NaNs; float16 input is ranked with a fast radix sort.

    Returns:
        Array of shape (n, N), float64.
    """
    return _rank_rows(_sort_key(_transpose(np.asarray(x)))).T


def rankdata_within(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Ranks of every column computed separately inside each class: array of shape (n, N), float64."""
    x = np.asarray(x)
    out = np.empty(x.shape, np.float64)
    for c in np.unique(labels):
        rows = np.flatnonzero(labels == c)
        out[rows] = rankdata_columns(x[rows])
    return out


def centre_within(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Subtract the class mean from every row: ``x - mean(x[labels == c])``; shape as ``x``, float64."""
    x = np.asarray(x, np.float64)
    lab = np.unique(labels, return_inverse=True)[1]
    counts = np.bincount(lab).astype(np.float64)
    onehot = np.zeros((len(counts), len(lab)))
    onehot[lab, np.arange(len(lab))] = 1.0
    flat = x.reshape(len(lab), -1)
    means = (onehot @ flat) / counts[:, None]
    return (flat - means[lab]).reshape(x.shape)


def _corr(xc: np.ndarray, yc: np.ndarray, raw_x: np.ndarray, raw_y: np.ndarray) -> np.ndarray:
    ssx = np.einsum("ij,ij->j", xc, xc)
    ssy = np.einsum("ij,ij->j", yc, yc)
    num = xc.T @ yc  # [N, M]
    # Variation at the level of float rounding of the raw values counts as none.
    ok = np.outer((ssx > 0) & (ssx > _TINY * raw_x), (ssy > 0) & (ssy > _TINY * raw_y))
    den = np.sqrt(np.outer(ssx, ssy))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def corr_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Pearson correlation of every column of ``x`` with every column of ``y``.

    Args:
        x: array of shape (n, N).
        y: array of shape (n,) or (n, M).

    Returns:
        Array of shape (N,) (or (N, M)), float64; 0 where either variable has no variation.
    """
    x = np.asarray(x, np.float64)
    y2, flat = _as2d(np.asarray(y, np.float64))
    r = _corr(x - x.mean(axis=0), y2 - y2.mean(axis=0), np.einsum("ij,ij->j", x, x), np.einsum("ij,ij->j", y2, y2))
    return r[:, 0] if flat else r


def corr_within(x: np.ndarray, y: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Within-class Pearson correlation: class means of both variables removed, residuals pooled over classes.

    Args:
        x: array of shape (n, N).
        y: array of shape (n,) or (n, M).
        labels: array of shape (n,), class of each sample.

    Returns:
        Array of shape (N,) (or (N, M)), float64; 0 where either variable does not vary within classes.
    """
    x = np.asarray(x, np.float64)
    y2, flat = _as2d(np.asarray(y, np.float64))
    raw_x = np.einsum("ij,ij->j", x, x)
    raw_y = np.einsum("ij,ij->j", y2, y2)
    r = _corr(centre_within(x, labels), centre_within(y2, labels), raw_x, raw_y)
    return r[:, 0] if flat else r


def _moments_corr(num: np.ndarray, ssx: np.ndarray, raw_x: np.ndarray, ssy: np.ndarray,
                  raw_y: np.ndarray) -> np.ndarray:
    ok = np.outer((ssx > 0) & (ssx > _TINY * raw_x), (ssy > 0) & (ssy > _TINY * raw_y))
    den = np.sqrt(np.outer(np.maximum(ssx, 0), np.maximum(ssy, 0)))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, num / np.where(ok, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def _pair_t(
    xt: np.ndarray, y: np.ndarray, onehot: np.ndarray, counts: np.ndarray, lab: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Overall and within-class Pearson r of the rows of ``xt`` (N, n) with the columns of ``y`` (n, M).

    Computed from moments only (sums, sums of squares, class sums, cross-products); returns two (N, M) arrays.
    """
    n = xt.shape[1]
    yc = y - y.mean(axis=0)
    yw = y - ((onehot @ y) / counts[:, None])[lab]  # within-class residuals of y (small)
    xs = xt.sum(axis=1)
    raw_x = np.einsum("ij,ij->i", xt, xt)
    x_class = xt @ onehot.T  # [N, C]
    ss_x = raw_x - xs * xs / n
    ssw_x = raw_x - (x_class * x_class / counts[None, :]).sum(axis=1)
    raw_y = np.einsum("ij,ij->j", y, y)
    ss_y = np.einsum("ij,ij->j", yc, yc)
    ssw_y = np.einsum("ij,ij->j", yw, yw)
    both = xt @ np.concatenate([yc, yw], axis=1)  # [N, 2M]: sum x*(y - mean) and sum x*(y - class mean)
    m = y.shape[1]
    return (_moments_corr(both[:, :m], ss_x, raw_x, ss_y, raw_y),
            _moments_corr(both[:, m:], ssw_x, raw_x, ssw_y, raw_y))


def snapshot_correlations(
    acts: np.ndarray, conf: np.ndarray, labels: np.ndarray, rank_source: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Pearson and Spearman r of every neuron with every confidence measure, overall and within class.

    Computed from moments (sums, class sums, cross-products) on a neuron-major copy with the samples sorted by
    class, so no residual matrix is formed and within-class ranks come from contiguous blocks; equal to
    :func:`corr_columns` / :func:`corr_within` on the values and on the (within-class) ranks.

    Args:
        acts: array of shape (n, N), one snapshot's activations.
        conf: array of shape (n, M), the confidence measures of the same samples.
        labels: array of shape (n,), true classes.
        rank_source: what to rank instead of ``acts`` (same order), e.g. the float16 values for a fast radix
            sort; default ``acts``.

    Returns:
        ``{"pearson", "pearson_within", "spearman", "spearman_within"}`` -> array of shape (N, M), float64.
    """
    lab = np.unique(labels, return_inverse=True)[1]
    perm = np.argsort(lab, kind="stable")
    if np.array_equal(perm, np.arange(len(lab))):
        perm = slice(None)
    lab = lab[perm]
    counts_i = np.bincount(lab)
    counts = counts_i.astype(np.float64)
    bounds = np.concatenate([[0], np.cumsum(counts_i)])
    onehot = np.zeros((len(counts), len(lab)))
    onehot[lab, np.arange(len(lab))] = 1.0
    y = np.asarray(conf, np.float64)
    y = (y[:, None] if y.ndim == 1 else y)[perm]
    ykeys = np.ascontiguousarray(y.T)  # [M, n]
    y_ranks = _rank_rows(ykeys).T
    y_ranks_w = np.empty(ykeys.shape)
    for b0, b1 in zip(bounds[:-1], bounds[1:]):
        y_ranks_w[:, b0:b1] = _rank_rows(np.ascontiguousarray(ykeys[:, b0:b1]))
    y_ranks_w = y_ranks_w.T
    acts = np.asarray(acts)
    src = acts if rank_source is None else np.asarray(rank_source)
    n, n_neurons = acts.shape
    out = {k: np.empty((n_neurons, y.shape[1])) for k in ("pearson", "pearson_within", "spearman", "spearman_within")}
    step = max(1, _BLOCK_ELEMENTS // max(n, 1))  # neurons per block: temporaries stay ~8 MB per array
    for j0 in range(0, n_neurons, step):
        cols = slice(j0, min(j0 + step, n_neurons))
        xt = _transpose(acts[perm, cols]).astype(np.float64)  # [b, n]
        out["pearson"][cols], out["pearson_within"][cols] = _pair_t(xt, y, onehot, counts, lab)
        keys = _sort_key(_transpose(src[perm, cols]))  # [b, n]
        out["spearman"][cols] = _pair_t(_rank_rows(keys), y_ranks, onehot, counts, lab)[0]
        for b0, b1 in zip(bounds[:-1], bounds[1:]):
            xt[:, b0:b1] = _rank_rows(np.ascontiguousarray(keys[:, b0:b1]))  # reuse: within-class ranks
        out["spearman_within"][cols] = _pair_t(xt, y_ranks_w, onehot, counts, lab)[1]
    return out


def corr_pvalues(r: np.ndarray, df: int) -> np.ndarray:
    """Two-sided p-values of correlations from the t-distribution with ``df`` degrees of freedom.

    Args:
        r: array of correlations, any shape.
        df: degrees of freedom (``n - 2`` overall, ``n - C - 1`` within class).

    Returns:
        Array of the same shape; NaN where ``df < 1``.
    """
    r = np.asarray(r, np.float64)
    if df < 1:
        return np.full(r.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = r * np.sqrt(df / np.maximum(1.0 - r * r, 0.0))
    return 2.0 * sps.t.sf(np.abs(t), df)


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


def activity_strength(acts: np.ndarray) -> float:
    """Activity strength: mean absolute activation over samples and neurons (NaN for no samples)."""
    acts = np.asarray(acts)
    return float(np.abs(acts).mean(dtype=np.float64)) if acts.size else float("nan")


def class_distinctness(acts: np.ndarray, labels: np.ndarray) -> float:
    """Class distinctness: between-class over within-class variance, summed over neurons (Fisher trace ratio).

    Args:
        acts: array of shape (n, N).
        labels: array of shape (n,), class of each sample.

    Returns:
        ``sum_j sum_c n_c (m_cj - m_j)^2 / sum_j sum_i (a_ij - m_{c(i) j})^2``; NaN with fewer than two classes
        or no within-class variation.
    """
    acts = np.asarray(acts, np.float64)
    labels = np.asarray(labels)
    if acts.shape[0] == 0:
        return float("nan")
    lab = np.unique(labels, return_inverse=True)[1]
    counts = np.bincount(lab)
    onehot = np.zeros((len(counts), len(lab)))
    onehot[lab, np.arange(len(lab))] = 1.0
    return distinctness_from_sums(onehot @ acts, counts, float(np.einsum("ij,ij->", acts, acts)))


def distinctness_from_sums(class_sums: np.ndarray, class_counts: np.ndarray, sum_sq: float) -> float:
    """Class distinctness from sufficient statistics (what the streaming pass accumulates anyway).

    Args:
        class_sums: array of shape (C, N), sum of each neuron's activation over each class's samples.
        class_counts: array of shape (C,), samples per class (empty classes are ignored).
        sum_sq: sum of squared activations over all samples and neurons.

    Returns:
        Between-class over within-class sum of squares (see :func:`class_distinctness`).
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


def linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA between two activation matrices of shape (n, N_x) and (n, N_y) over the same samples."""
    return CkaReference(y).score(x)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return float("nan"), float("nan")
    res = sps.spearmanr(x[ok], y[ok])
    return float(res.statistic), float(res.pvalue)


def _sentence(quantity: str, versus: str, rho: float, p: float, rises: bool, detail: str) -> str:
    what = {"time": "with training time", "confidence": "with confidence"}[versus]
    if not np.isfinite(rho):
        return f"Not enough data to tell whether {quantity} changes {what}."
    if rises:
        verdict = f"{quantity.capitalize()} rises {what}"
    elif p < 0.05 and rho < 0:
        verdict = f"{quantity.capitalize()} falls {what}"
    else:
        verdict = f"{quantity.capitalize()} shows no significant trend {what}"
    return f"{verdict} (Spearman rho = {rho:.2f}, p = {p:.2g}, {detail})."


def trend_over_time(values: np.ndarray, quantity: str) -> Trend:
    """Does ``values`` (shape (S,), one per snapshot in step order) rise over training? Spearman vs step."""
    v = np.asarray(values, np.float64)
    rho, p = _spearman(np.arange(len(v), dtype=np.float64), v)
    rises = bool(np.isfinite(rho) and p < 0.05 and rho > 0)
    n = int(np.isfinite(v).sum())
    return Trend(quantity, "time", "spearman_rho", rho, p, rises,
                 _sentence(quantity, "time", rho, p, rises, f"over {n} snapshots"))


def trend_over_bins(values: np.ndarray, quantity: str) -> Trend:
    """Does ``values`` (shape (S, B), per snapshot and confidence bin) rise with confidence?

    Each snapshot's values are centred on their mean over bins, which removes the change with training time
    (late snapshots fill the high bins); the statistic is Spearman's rho between bin index and the centred
    value over all (snapshot, bin) cells with data.
    """
    v = np.asarray(values, np.float64)
    ok_rows = np.isfinite(v).sum(axis=1) >= 2  # a snapshot with one filled bin says nothing about confidence
    v = v[ok_rows]
    with np.errstate(invalid="ignore"):
        centred = v - np.nanmean(v, axis=1, keepdims=True) if len(v) else v
    b = np.broadcast_to(np.arange(v.shape[1], dtype=np.float64), v.shape)
    rho, p = _spearman(b.ravel(), centred.ravel())
    rises = bool(np.isfinite(rho) and p < 0.05 and rho > 0)
    n = int(np.isfinite(centred).sum())
    return Trend(quantity, "confidence", "spearman_rho", rho, p, rises,
                 _sentence(quantity, "confidence", rho, p, rises,
                           f"bin index vs value centred per snapshot, {n} cells"))
