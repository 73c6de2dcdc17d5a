"""Confidence measures and per-sample outcomes computed from logits (numpy only; runs on the writer thread).

A confidence measure is a function ``fn(probs, labels) -> values`` with ``probs`` of shape (n, C) (softmax
probabilities, float64, rows sum to 1) and ``labels`` of shape (n,) (int64 true classes), returning an array
of shape (n,). The built-in measures are registered under the names in :data:`DEFAULT_MEASURES`; add more
with :func:`register_measure` and select them with ``Recorder(measures=[...])``::

    from topotrace.instrument.confidence import register_measure

    register_measure("gini", lambda p, y: 1.0 - (p**2).sum(axis=1))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Measure = Callable[[np.ndarray, np.ndarray], np.ndarray]

DEFAULT_MEASURES = ("max_prob", "margin", "entropy", "true_prob", "logit_margin")
# Measures whose higher values mean *less* confidence; the findings turn their sign around so that "with
# confidence" means the same for every measure. A registered measure counts as higher = more confident.
UNCERTAINTY_MEASURES = frozenset({"entropy"})


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
