"""The per-layer numbers a callback hands to the trainer's loggers at each snapshot, computed as the analysis does.

At each committed snapshot the Recorder calls :meth:`SnapshotMetrics.__call__` on its writer thread (never the
training thread); it computes, for the analysed probe set (``"heldout"`` when the run has it, else the first
probe set, as :func:`topotrace.analysis.pipeline.analyze` would be told):

* ``topotrace/<layer>/strength``: mean per-sample strength (``mean_j |a_ij|``, averaged over the samples),
* ``topotrace/<layer>/distinctness``: mean per-sample class distinctness,
* ``topotrace/<layer>/strength_partial_rho`` and ``topotrace/<layer>/distinctness_partial_rho``: their partial
  Spearman correlation given the class with the default confidence measure (``logit_margin`` when recorded,
  else the first measure: the analysis' default),
* ``topotrace/<probe>/accuracy``: the accuracy of every probe set,

with the analysis' own functions (:func:`topotrace.analysis.evidence.class_distinctness`,
:func:`topotrace.analysis.evidence.weighted_spearman`) and its rules for non-finite values (a sample with a
non-finite activation in the layer, or a non-finite loss or confidence, is left out), so each value equals the
analysis' value for the same snapshot (``results.layers[layer].evidence.mean`` and ``.rho_partial``,
``results.curves[probe]["accuracy"]``). The values wait in a thread-safe queue until the training thread hands
them to the loggers (:meth:`SnapshotMetrics.drain`), because the trainers' loggers are not made to be called
from another thread (Lightning's ``CSVLogger`` appends to and clears one list).
"""

from __future__ import annotations

import collections
from collections.abc import Sequence

import numpy as np

from ..analysis import evidence
from ..instrument.store import Snapshot, StoreSpec

PREFIX = "topotrace"
HELDOUT = "heldout"
DEFAULT_MEASURE = "logit_margin"  # the analysis' default measure when the store has it


def analysed_probe(probes: Sequence[str]) -> str:
    """The probe set the logged layer numbers describe: ``"heldout"`` if recorded, else the first."""
    return HELDOUT if HELDOUT in probes else probes[0]


def default_measure(measures: Sequence[str]) -> str:
    """The confidence measure of the partial correlations: the analysis' default (``analyze(measure=None)``)."""
    return DEFAULT_MEASURE if DEFAULT_MEASURE in measures else measures[0]


def layer_numbers(acts: np.ndarray, labels: np.ndarray, n_classes: int, conf: np.ndarray, out_ok: np.ndarray,
                  measure_index: int) -> dict[str, float]:
    """The four numbers of one layer at one snapshot, as the analysis computes them.

    Args:
        acts: array of shape (n, N), the stored activations (float16 or float32).
        labels: array of shape (n,), int classes.
        n_classes: C.
        conf: array of shape (n, M), float64, every recorded confidence measure.
        out_ok: array of shape (n,), bool: samples whose loss and confidence measures are finite.
        measure_index: the column of ``conf`` the partial correlations use.

    Returns:
        ``strength``, ``distinctness``, ``strength_partial_rho``, ``distinctness_partial_rho`` (NaN where
        undefined, e.g. no variation).
    """
    a = np.asarray(acts, np.float32)  # exact for float16 values
    n, n_neurons = a.shape
    abs_rows = np.abs(a).sum(axis=1).astype(np.float64)  # [n], the analysis' per-row sums
    keep = np.isfinite(a).all(axis=1) & out_ok  # [n]
    kept = np.flatnonzero(keep)
    per_sample = np.full((2, n), np.nan)  # [2, n]: strength, distinctness
    if len(kept):
        per_sample[0, kept] = abs_rows[kept] / n_neurons
        per_sample[1, kept] = evidence.class_distinctness(a[kept], labels[kept], n_classes)[0]
    finite = np.isfinite(per_sample)
    with np.errstate(invalid="ignore", divide="ignore"):  # the mean over the finite samples (NaN: none)
        means = np.where(finite, per_sample, 0.0).sum(axis=1) / finite.sum(axis=1)
    _, partial = evidence.weighted_spearman(per_sample, conf, labels, n_classes, np.ones((1, n)))  # [1, 2, M]
    return {"strength": float(means[0]), "distinctness": float(means[1]),
            "strength_partial_rho": float(partial[0, 0, measure_index]),
            "distinctness_partial_rho": float(partial[0, 1, measure_index])}


class SnapshotMetrics:
    """A Recorder commit hook: the numbers of each committed snapshot, queued for the training thread.

    Args:
        spec: the store's spec (``Recorder.spec``): layers, probe sets and their labels, classes, measures.
    """

    def __init__(self, spec: StoreSpec):
        self.layers = [la.name for la in spec.layers]
        self.labels = {p.name: np.asarray(p.label, np.int64) for p in spec.probes}
        self.probe = analysed_probe([p.name for p in spec.probes])
        self.n_classes = len(spec.class_names)
        self.measures = list(spec.measures)
        self.measure = default_measure(self.measures)
        self._queue: collections.deque[tuple[int, dict[str, float]]] = collections.deque()  # thread-safe ends

    def numbers(self, snap: Snapshot) -> dict[str, float]:
        """Every logged value of ``snap``, named ``topotrace/<layer>/<quantity>`` and ``topotrace/<probe>/accuracy``."""
        out: dict[str, float] = {}
        for name, rec in snap.probes.items():
            ok = np.isfinite(rec.loss)
            for m in self.measures:
                ok &= np.isfinite(rec.conf[m])
            with np.errstate(invalid="ignore", divide="ignore"):
                out[f"{PREFIX}/{name}/accuracy"] = float(np.where(ok, rec.correct, 0).sum(dtype=np.float64) / ok.sum())
            if name != self.probe:
                continue
            conf = np.stack([rec.conf[m] for m in self.measures], axis=1).astype(np.float64)  # [n, M]
            for layer in self.layers:
                vals = layer_numbers(rec.acts[layer], self.labels[name], self.n_classes, conf, ok,
                                     self.measures.index(self.measure))
                out.update({f"{PREFIX}/{layer}/{k}": v for k, v in vals.items()})
        return out

    def __call__(self, snap: Snapshot) -> None:
        """The writer thread's hook: compute the snapshot's numbers and queue them with its step."""
        self._queue.append((snap.step, self.numbers(snap)))

    def drain(self) -> list[tuple[int, dict[str, float]]]:
        """The queued ``(step, values)`` pairs, oldest first, taken off the queue (call on the training thread)."""
        out = []
        while True:
            try:
                out.append(self._queue.popleft())
            except IndexError:
                return out

    def __repr__(self) -> str:
        return f"SnapshotMetrics(probe={self.probe!r}, measure={self.measure!r}, layers={self.layers})"
