"""Representation collapse of a layer: neural collapse (NC1) and the share of dormant units.

Owns two per-snapshot summaries of one layer's activations on the probe samples:

* :func:`nc1`, the within-class variability collapse of Papyan, Han & Donoho 2020 ("Prevalence of neural
  collapse during the terminal phase of deep learning training", PNAS 117(40)): ``tr(Σ_W Σ_B^+) / C``, which goes
  to 0 as the samples of every class collapse onto their class mean.
* :func:`dormant_share`, the τ-dormant units of Sokar, Agarwal, Castro & Evci 2023 ("The Dormant Neuron
  Phenomenon in Deep Reinforcement Learning", ICML): units whose mean absolute activation is a small fraction
  of the layer's average.

Both exclude non-finite data instead of letting it poison the result (rows for NC1, units for dormancy).
"""

from __future__ import annotations

import numbers

import numpy as np

# Sokar et al. 2023 recycle τ-dormant units with τ = 0.025 in their default setting (and τ = 0.1 at high replay
# ratios); τ = 0 counts only units that are exactly silent on every sample.
DORMANT_TAU = 0.025


def _check_acts(acts: object) -> np.ndarray:
    a = np.asarray(acts)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"The 'acts' parameter must be an array of real numbers. Got dtype {a.dtype} instead.")
    if a.ndim != 2:
        raise ValueError(f"The 'acts' parameter must have shape (n_samples, n_neurons). Got shape {a.shape} instead.")
    return a


def nc1(acts: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Neural-collapse NC1 of Papyan, Han & Donoho 2020: ``tr(Σ_W Σ_B^+) / C``.

    Within-class variability measured against the spread of the class means; it goes to 0 as every class
    collapses onto its mean. With h_i the activations of sample i, μ_c the mean of class c and μ_G the centre
    of the class means:

    * ``Σ_W = (1/n) Σ_i (h_i - μ_{y_i})(h_i - μ_{y_i})^T`` (within-class covariance),
    * ``Σ_B = (1/C) Σ_c (μ_c - μ_G)(μ_c - μ_G)^T`` (between-class covariance),
    * ``Σ_B^+`` the Moore–Penrose pseudo-inverse.

    Choice of μ_G: the paper's global mean over all samples, which on its balanced data sets equals the mean of
    the class means. Here μ_G is the (unweighted) mean of the class means, so Σ_B is the covariance of the class
    means whatever the class frequencies, and its rank is at most C - 1; on balanced classes both agree.

    Computation: Σ_B = M M^T / C with M (N × C) the centred class means, so with the thin SVD M = U S V^T,
    ``Σ_B^+ = C Σ_k u_k u_k^T / s_k^2`` over the directions kept and
    ``NC1 = (1/n) Σ_k ||(H - μ_y) u_k||^2 / s_k^2``. No N × N matrix is formed: the cost is the SVD of M
    (N C^2) and one (n × N)(N × C) product; the only n × N temporary is the float64 residual H - μ_y, filled
    class by class. The residuals are formed sample by sample, so a large common offset of the activations
    does not cancel away the within-class variation.

    Tolerance: direction k is kept when it is among the C - 1 largest (M's columns sum to zero, so its rank is
    at most C - 1; this drops the rounding-level last singular value) and ``s_k > max(N, C) * eps * s_max``
    with eps of float64 (the tolerance of :func:`numpy.linalg.matrix_rank`; on Σ_B a relative cut-off of
    its square on the eigenvalues).

    Args:
        acts: array of shape (n_samples, n_neurons), the activations H of one layer.
        labels: array of shape (n_samples,), int in [0, n_classes), the true classes.
        n_classes: C >= 1, the number of classes.

    Returns:
        NC1 as a float >= 0. Classes with no sample are left out (C is then the number of classes present),
        samples with any non-finite activation are excluded. Fewer than 2 classes present give NaN, and so do
        class means that all coincide (Σ_B = 0: the pseudo-inverse would give a meaningless 0).

    Raises:
        TypeError: ``acts`` is not numeric, ``labels`` not integers, or ``n_classes`` not an int.
        ValueError: wrong shapes, ``n_classes`` < 1, or labels outside [0, n_classes).
    """
    h = _check_acts(acts)
    y = np.asarray(labels)
    if not isinstance(n_classes, (int, np.integer)) or isinstance(n_classes, (bool, np.bool_)):
        raise TypeError(f"The 'n_classes' parameter must be an int. Got {type(n_classes).__name__} instead.")
    if n_classes < 1:
        raise ValueError(f"The 'n_classes' parameter must be an int >= 1. Got {n_classes} instead.")
    if y.dtype.kind not in "iu":
        raise TypeError(f"The 'labels' parameter must be an array of int. Got dtype {y.dtype} instead.")
    if y.shape != (h.shape[0],):
        raise ValueError(
            f"The 'labels' parameter must have shape (n_samples,) = ({h.shape[0]},) to match 'acts'. "
            f"Got shape {y.shape} instead."
        )
    if y.size and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"The 'labels' parameter must hold classes in [0, {n_classes}) (n_classes={n_classes}). "
            f"Got values in [{y.min()}, {y.max()}] instead."
        )

    finite = np.isfinite(h).all(axis=1)
    rows = np.flatnonzero(finite)
    counts = np.bincount(y[rows], minlength=n_classes)
    present = np.flatnonzero(counts)
    n_present = present.size
    if n_present < 2:
        return float("nan")
    n, n_neurons = rows.size, h.shape[1]

    # Rows sorted by class, in float64; each class block becomes its residuals h_i - μ_{y_i} in place.
    order = rows[np.argsort(y[rows], kind="stable")]
    ends = np.cumsum(counts[present])
    resid = np.empty((n, n_neurons), np.float64)  # [n, N]
    means = np.empty((n_present, n_neurons), np.float64)  # [C, N]
    for c, (start, end) in enumerate(zip(ends - counts[present], ends)):
        block = resid[start:end]
        block[...] = h[order[start:end]]
        means[c] = block.mean(axis=0)
        block -= means[c]
    m = (means - means.mean(axis=0)).T  # [N, C], centred class means

    u, s, _ = np.linalg.svd(m, full_matrices=False)
    k = min(n_present - 1, s.size)
    tol = max(n_neurons, n_present) * np.finfo(np.float64).eps * (s[0] if s.size else 0.0)
    keep = np.flatnonzero(s[:k] > tol)
    if keep.size == 0:
        return float("nan")  # all class means coincide: Σ_B = 0 and NC1 is undefined
    proj = resid @ u[:, keep]  # [n, r]
    return float(np.einsum("ij,ij->j", proj, proj) @ (1.0 / s[keep] ** 2) / n)


def dormant_share(acts: np.ndarray, tau: float = DORMANT_TAU) -> tuple[float, np.ndarray]:
    """Share of τ-dormant units in a layer (Sokar et al. 2023, Definition 3.1).

    Unit i's score is its mean absolute activation over the samples divided by the average of that over the
    layer's units, ``s_i = E_x|h_i(x)| / ((1/N) Σ_k E_x|h_k(x)|)``; unit i is τ-dormant when ``s_i <= τ``.
    With ``tau=0`` only units that are exactly 0 on every sample count. If every unit is silent (the
    denominator is 0), every unit is dormant.

    The default τ = :data:`DORMANT_TAU` = 0.025 is the threshold of the paper's ReDo experiments in the default
    setting (they use 0.1 at high replay ratios).

    Non-finite values: a unit with any non-finite activation (NaN, inf) is excluded from the numerator and the
    denominator of the share and from the layer average in the score, and is never dormant. With no usable unit
    (or no samples) the share is NaN.

    Args:
        acts: array of shape (n_samples, n_neurons), the activations of one layer.
        tau: τ >= 0, the dormancy threshold on the normalised score.

    Returns:
        ``(share, mask)``: the fraction of usable units that are dormant (float in [0, 1]) and an array of shape
        (n_neurons,), bool, True for the dormant units.

    Raises:
        TypeError: ``acts`` is not numeric or ``tau`` is not a real number.
        ValueError: ``acts`` is not 2-D, or ``tau`` is negative or not finite.
    """
    h = _check_acts(acts)
    if not isinstance(tau, numbers.Real) or isinstance(tau, (bool, np.bool_)):
        raise TypeError(f"The 'tau' parameter must be a real number. Got {type(tau).__name__} instead.")
    if not np.isfinite(tau) or tau < 0:
        raise ValueError(f"The 'tau' parameter must be a finite number >= 0. Got {tau} instead.")
    n_samples, n_neurons = h.shape
    mask = np.zeros(n_neurons, bool)
    if n_samples == 0:
        return float("nan"), mask
    usable = np.isfinite(h).all(axis=0)  # [N]
    if not usable.any():
        return float("nan"), mask
    mean_abs = np.abs(h).mean(axis=0, dtype=np.float64)[usable]  # [N_usable], E_x|h_i(x)|
    layer_mean = mean_abs.mean()
    if layer_mean == 0:
        mask[usable] = True
    else:
        mask[usable] = mean_abs / layer_mean <= tau
    return float(mask.sum() / usable.sum()), mask
