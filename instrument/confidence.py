"""Confidence measures and per-sample outcomes computed from logits (numpy only; runs on the writer thread).

A confidence measure is a function ``fn(probs, labels) -> values`` with ``probs`` of shape (n, C) (softmax
probabilities, float64, rows sum to 1) and ``labels`` of shape (n,) (int64 true classes), returning an array
of shape (n,). The built-in measures are registered under the names in :data:`DEFAULT_MEASURES`; add more
with :func:`register_measure` and select them with ``Recorder(measures=[...])``::

    from .confidence import register_measure

    register_measure("gini", lambda p, y: 1.0 - (p**2).sum(axis=1))

Measures that need more than one softmax per sample are recorded by the recorder itself, not selected with
``measures=``; their names are reserved (:data:`DERIVED_MEASURES`):

- ``temp_prob`` (:func:`fit_temperature`, :func:`temperature_softmax`): the largest probability after
  temperature scaling (Guo et al. 2017) with a temperature fitted at every snapshot on the probe set named
  ``"train"`` (:data:`TEMPERATURE_PROBE`) and applied to every probe set. Recorded whenever the recorder has a
  probe set of that name; without one it is not recorded (no error). The train probe set is fitted ever more
  closely during training, so late in training this T sharpens held-out confidences: ``temp_prob`` shows how
  sharp the training fit is, not a calibration. The analysis adds ``temp_prob_cv``, T cross-fitted on halves of
  each probe set (:func:`topotrace.analysis.calibration.cross_fitted_temperature`), which calibrates.
- ``mc_prob`` and ``mc_mutual_info`` (:func:`mc_dropout_measures`): Monte-Carlo dropout (Gal & Ghahramani
  2016) over ``Recorder(mc_dropout=K)`` stochastic passes: the largest probability of the mean softmax, and the
  mutual information between the prediction and the dropout masks (BALD, Houlsby et al. 2011), an epistemic
  uncertainty. Recorded only with ``mc_dropout > 0``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Measure = Callable[[np.ndarray, np.ndarray], np.ndarray]

DEFAULT_MEASURES = ("max_prob", "margin", "entropy", "true_prob", "logit_margin")
TEMP_PROB = "temp_prob"
MC_PROB = "mc_prob"
MC_MUTUAL_INFO = "mc_mutual_info"
MC_MEASURES = (MC_PROB, MC_MUTUAL_INFO)
# Recorded by the recorder from more than one softmax per sample; reserved names, not selectable in measures=.
DERIVED_MEASURES = (TEMP_PROB, *MC_MEASURES)
TEMPERATURE_PROBE = "train"  # the probe set the temperature of temp_prob is fitted on
# Temperature search: minimise the mean NLL over T in [0.05, 20] (Newton in 1/T) to a relative 1e-6 in T.
TEMPERATURE_BOUNDS = (0.05, 20.0)
TEMPERATURE_RTOL = 1e-6
# Measures whose higher values mean *less* confidence; the findings turn their sign around so that "with
# confidence" means the same for every measure. A registered measure counts as higher = more confident.
UNCERTAINTY_MEASURES = frozenset({"entropy", MC_MUTUAL_INFO})


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64.

    Args:
        logits: array of shape (n, C).

    Returns:
        Array of shape (n, C), float64; each row sums to 1.
    """
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def max_prob(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The largest softmax probability of each sample; shape (n,)."""
    return probs.max(axis=1)


def margin(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The gap between the largest and the second-largest probability of each sample; shape (n,)."""
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def entropy(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Shannon entropy of each sample's probabilities divided by ``log C``, so it lies in [0, 1]; shape (n,).

    High values mean low confidence (1 is the uniform distribution).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -plogp.sum(axis=1) / np.log(probs.shape[1])


def logit_margin(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 logit (= log p1 - log p2) of each sample; shape (n,).

    Unlike the probability-based measures it does not saturate once the softmax is peaked, so it still
    separates samples late in training, when max_prob is 1.00 for nearly all of them.
    """
    top2 = np.partition(probs, probs.shape[1] - 2, axis=1)[:, -2:]
    tiny = np.finfo(np.float64).tiny
    return np.log(top2[:, 1]) - np.log(np.maximum(top2[:, 0], tiny))


def true_prob(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The probability given to each sample's true class; shape (n,)."""
    return probs[np.arange(len(labels)), labels]


_REGISTRY: dict[str, Measure] = {
    "max_prob": max_prob,
    "margin": margin,
    "entropy": entropy,
    "true_prob": true_prob,
    "logit_margin": logit_margin,
}


def register_measure(name: str, fn: Measure) -> None:
    """Make a confidence measure available by name to every recorder created afterwards.

    Args:
        name: the measure's name in the store (no ``/``); an existing name is replaced.
        fn: ``fn(probs (n, C) float64, labels (n,) int64) -> (n,)`` values.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"The 'name' parameter must be a non-empty str without '/'. Got {name!r} instead.")
    if name in DERIVED_MEASURES:
        raise ValueError(f"The 'name' parameter must not be one of the recorder's own measures "
                         f"{list(DERIVED_MEASURES)}. Got {name!r} instead.")
    if not callable(fn):
        raise TypeError(f"The 'fn' parameter must be callable (probs, labels) -> values. Got {type(fn).__name__}.")
    _REGISTRY[name] = fn


def check_measures(measures: Sequence[str] | None) -> tuple[str, ...]:
    """Validate measure names; ``None`` means :data:`DEFAULT_MEASURES`. Returns them as a tuple."""
    if measures is None:
        return DEFAULT_MEASURES
    if isinstance(measures, str) or not isinstance(measures, Sequence):
        raise TypeError(f"The 'measures' parameter must be a sequence of measure names or None. "
                        f"Got {measures!r} instead.")
    out = tuple(measures)
    for m in out:
        if m == TEMP_PROB:
            raise ValueError(f"The 'measures' parameter lists {m!r}: it is not selected there but recorded "
                             f"whenever a probe set is named {TEMPERATURE_PROBE!r}. Remove it from 'measures'.")
        if m in MC_MEASURES:
            raise ValueError(f"The 'measures' parameter lists {m!r}: it is not selected there but recorded with "
                             "Recorder(mc_dropout=K), K > 0. Remove it from 'measures'.")
        if m not in _REGISTRY:
            raise ValueError(f"Unknown confidence measure {m!r}. Available: {list(_REGISTRY)}")
    if len(set(out)) != len(out):
        raise ValueError(f"The 'measures' parameter lists a measure twice: {list(out)}")
    return out


def outcomes(
    logits: np.ndarray, labels: np.ndarray, measures: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """Everything recorded per sample besides activations.

    Args:
        logits: array of shape (n, C).
        labels: array of shape (n,), int64 true classes.
        measures: registered measure names.

    Returns:
        ``(pred, correct, loss, conf)``: predicted class (n,) int64 (argmax of the logits), correctness (n,)
        bool, per-sample cross-entropy (n,) float32, and measure name -> values (n,) float32.
    """
    z = np.asarray(logits, np.float64)
    labels = np.asarray(labels, np.int64)
    pred = z.argmax(axis=1).astype(np.int64)
    zmax = z.max(axis=1, keepdims=True)
    logsumexp = np.log(np.exp(z - zmax).sum(axis=1)) + zmax[:, 0]
    loss = (logsumexp - z[np.arange(len(labels)), labels]).astype(np.float32)
    probs = softmax(z)
    conf = {}
    for m in measures:
        values = np.asarray(_REGISTRY[m](probs, labels))
        if values.shape != labels.shape:
            raise ValueError(f"Confidence measure {m!r} returned shape {values.shape}; expected {labels.shape}.")
        conf[m] = values.astype(np.float32)
    return pred, pred == labels, loss, conf


def _entr_sum(probs: np.ndarray) -> np.ndarray:
    """Shannon entropy (natural log) of each row of ``probs`` (n, C), with 0 log 0 = 0; shape (n,)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(probs > 0, probs * np.log(probs), 0.0)
    return -plogp.sum(axis=1)


def mc_dropout_measures(prob_sum: np.ndarray, entropy_sum: np.ndarray, n_passes: int) -> dict[str, np.ndarray]:
    """Monte-Carlo dropout measures from running sums over ``n_passes`` stochastic passes.

    Args:
        prob_sum: array of shape (n, C): the sum over the passes of each pass's softmax probabilities.
        entropy_sum: array of shape (n,): the sum over the passes of each pass's entropy (natural log).
        n_passes: K, the number of passes summed.

    Returns:
        ``{"mc_prob": (n,), "mc_mutual_info": (n,)}``, float32: the largest probability of the mean softmax
        p̄ = prob_sum / K, and the mutual information H[p̄] − mean_k H[p_k] in nats (BALD), which lies in
        [0, log C]; it is clipped at 0 from below, where rounding leaves it a few ulps negative. Higher
        ``mc_mutual_info`` means *less* confidence (it is in :data:`UNCERTAINTY_MEASURES`).
    """
    mean = np.asarray(prob_sum, np.float64) / n_passes  # [n, C]
    mi = _entr_sum(mean) - np.asarray(entropy_sum, np.float64).reshape(-1) / n_passes
    return {MC_PROB: mean.max(axis=1).astype(np.float32), MC_MUTUAL_INFO: np.maximum(mi, 0.0).astype(np.float32)}


def temperature_softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float64.

    Args:
        logits: array of shape (n, C).
        temperature: T > 0 (NaN gives NaN rows).

    Returns:
        Array of shape (n, C), float64.
    """
    return softmax(np.asarray(logits, np.float64) / temperature)


def _nll_slope(z: np.ndarray, zy: np.ndarray, beta: float) -> tuple[float, float]:
    """First and second derivative in beta of the mean NLL of ``softmax(beta * z)``.

    ``z`` (n, C) float64 logits, ``zy`` (n,) the true class's logit. With p = softmax(beta z), the NLL's slope is
    mean(E_p[z] - z_y) = mean(sum_c p_c (z_c - z_y)) and its curvature mean(Var_p[z]) >= 0: the NLL is convex
    in beta = 1/T. The slope is summed from the differences ``z_c - z_y`` (not as ``E_p[z] - z_y``, which cancels
    to rounding noise once ``p_y`` is 1 to float64 precision); where every ``p_c`` of another class has
    underflowed and the sum is exactly 0, its sign comes from the log-domain sum (:func:`_slope_sign`).
    """
    d = z - zy[:, None]  # [n, C]
    s = d * beta
    e = np.exp(s - s.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)  # [n, C]
    ed = (p * d).sum(axis=1)  # [n]: E_p[z] - z_y
    dz = d - ed[:, None]
    slope = float(np.mean(ed))
    if slope == 0.0:
        slope = _slope_sign(d, beta) * np.finfo(np.float64).tiny
    return slope, float(np.mean((p * dz * dz).sum(axis=1)))


def _slope_sign(d: np.ndarray, beta: float) -> float:
    """Sign of ``sum_i sum_c p_ic d_ic`` (``d = z - z_y``, ``p = softmax(beta z)``), summed in the log domain.

    The positive terms (classes above the true one) and the negative terms are summed apart as
    ``log sum exp(log p + log |d|)``, which underflows nowhere; 0 when no logit differs from the true one.
    """
    s = d * beta
    smax = s.max(axis=1, keepdims=True)
    logp = s - smax - np.log(np.exp(s - smax).sum(axis=1, keepdims=True))  # [n, C]
    with np.errstate(divide="ignore"):
        logd = np.log(np.abs(d))
    sides = []
    for part in (d > 0, d < 0):
        v = (logp + logd)[part]
        sides.append(-np.inf if v.size == 0 else float(v.max() + np.log(np.exp(v - v.max()).sum())))
    if sides[0] == sides[1]:
        return 0.0
    return 1.0 if sides[0] > sides[1] else -1.0


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T that minimises the mean negative log-likelihood of ``softmax(logits / T)`` (Guo et al. 2017).

    The NLL is convex in beta = 1/T, so its minimum is where its slope in beta is zero. The slope at T = 1 points
    at one bound; the slope at that bound tells whether the minimum lies beyond it (then the bound is returned).
    Otherwise Newton's method in beta runs inside the bracket between T = 1 and that bound, which shrinks with
    the slope's sign; a step that leaves the bracket or did not halve it is followed by a bisection in log beta.
    T is searched in [0.05, 20]
    (:data:`TEMPERATURE_BOUNDS`) and the search stops when a step changes 1/T by less than a relative 1e-6
    (:data:`TEMPERATURE_RTOL`; after a Newton step the error left is far smaller). Where the minimum lies beyond
    a bound (every sample right, with growing margins: T -> 0; logits no better than chance: T -> inf), that
    bound is returned: the slope keeps its sign where the NLL has become flat to float64 precision (a training
    loss that rounds to 0 gives T = 0.05, the lower bound; see :func:`_nll_slope`). Each
    step is one pass over the logits; 5 to 10 steps are typical. Rows with a non-finite logit are left out.

    Args:
        logits: array of shape (n, C).
        labels: array of shape (n,), int64 true classes.

    Returns:
        T, a float in [0.05, 20]; NaN when no row has only finite logits.
    """
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.int64)
    if z.ndim != 2 or y.shape != (z.shape[0],):
        raise ValueError(f"fit_temperature needs logits of shape (n, C) and labels of shape (n,). "
                         f"Got logits {z.shape} and labels {y.shape}.")
    ok = np.isfinite(z).all(axis=1)
    if not ok.all():
        z, y = z[ok], y[ok]
    if len(y) == 0:
        return float("nan")
    zy = z[np.arange(len(y)), y]
    a, b = 1.0 / TEMPERATURE_BOUNDS[1], 1.0 / TEMPERATURE_BOUNDS[0]  # the bounds of beta = 1/T
    beta = 1.0
    slope, curv = _nll_slope(z, zy, beta)
    if slope == 0.0:
        return 1.0
    # The bound the slope points at first: beyond it, the minimum is at the bound (convexity).
    end_slope = _nll_slope(z, zy, b if slope < 0 else a)[0]
    if slope < 0 and end_slope <= 0:
        return TEMPERATURE_BOUNDS[0]
    if slope > 0 and end_slope >= 0:
        return TEMPERATURE_BOUNDS[1]
    lo, hi = (beta, b) if slope < 0 else (a, beta)  # the minimum lies in (lo, hi)
    bisect = False
    for _ in range(200):
        width = hi - lo
        new = beta - slope / curv if curv > 0 and not bisect else math.nan
        if not lo < new < hi:  # outside the bracket, no curvature, or Newton too slow: bisect (in log beta)
            new = math.sqrt(lo * hi)
        done = abs(new - beta) <= TEMPERATURE_RTOL * beta
        beta = new
        if done:
            break
        slope, curv = _nll_slope(z, zy, beta)
        if slope > 0:
            hi = beta
        elif slope < 0:
            lo = beta
        else:
            break
        if hi - lo <= TEMPERATURE_RTOL * lo:
            break
        # Newton's steps are short where the slope decays exponentially (margins far above 1/beta): a step
        # that did not halve the bracket is followed by a bisection, so the search never crawls.
        bisect = not bisect and hi - lo > 0.5 * width
    return float(1.0 / beta)
