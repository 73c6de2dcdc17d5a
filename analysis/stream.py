"""Streaming one layer over the snapshots: each snapshot read once, in order, computed by a small thread pool.

Memory stays bounded by a few snapshots' activations in flight. :func:`nap_gap` streams the training probe set's
activations of a layer the same way (the class NAPs on it against those on the analysed probe set).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import threadpool_limits

from ..instrument.store import Store
from . import stats
from .outcomes import TRAIN_PROBE
from .snapshot import LayerContext, LayerRows, cka_row, process_snapshot

MAX_WORKERS = 4  # threads computing snapshots in parallel (capped by the CPU count)


def stream_layer(store: Store, ctx: LayerContext, lp: LayerRows, done_cb: Callable[[int], None],
                  start: int = 0, rescore: bool = True) -> None:
    """The in-process pass: snapshots read in order by this thread, computed by a small thread pool.

    Snapshots from ``start`` on get every per-snapshot result; those before it (an incremental analysis, their
    other rows taken from the cache) only their CKA to the reference (:func:`cka_row`), or, without ``rescore``,
    nothing (they are not read).
    """
    local = threading.local()  # one set of scratch arrays per worker thread

    def process(s: int, stored: np.ndarray) -> None:
        ws = getattr(local, "ws", None)
        if ws is None:
            ws = local.ws = stats.Workspace()
        if s < start:
            lp.cka[s] = cka_row(ctx, s, stored, ws)
        else:
            process_snapshot(ctx, s, stored, ws, lp, s)

    n_s = len(ctx.conf_all)
    # Snapshots are read in order by this thread and computed by a small pool (numpy releases the GIL in
    # sorting and BLAS); at most `workers` snapshots are in flight, so memory stays bounded.
    # One BLAS thread per worker: the products here are small, and a multi-threaded BLAS called from several
    # threads at once (or on a busy machine) spends its time spinning, up to 10x slower.
    workers = max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    done = start if not rescore else 0
    snapshots = store.iter_acts(ctx.probe, ctx.name, dtype=None) if done == 0 else \
        ((s, store.acts(ctx.probe, ctx.name, s, dtype=None)) for s in range(start, n_s))
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for s, a in snapshots:
            if s >= n_s:  # the diverged tail
                break
            pending.append(pool.submit(process, s, a))
            while len(pending) >= workers + (workers > 1):
                pending.popleft().result()
                done += 1
                done_cb(done)
        while pending:
            pending.popleft().result()
            done += 1
            done_cb(done)


def nap_gap(store: Store, name: str, probe: str, class_naps: np.ndarray, n_s: int, start: int = 0,
             prev: np.ndarray | None = None) -> np.ndarray:
    """How far the class NAPs on the training probe set lie from those on ``probe``, at each snapshot.

    ``||NAP_train - NAP_probe||_F / ||NAP_probe||_F`` over the classes present in both (finite values of each
    neuron), shape (S,); empty when the store has no ``"train"`` probe set (``docs/analysis.md``).

    Args:
        store: the open store.
        name: the layer.
        probe: the analysed probe set.
        class_naps: array of shape (S, C, N), the class NAPs on ``probe``.
        n_s: the snapshots analysed.
        start: snapshots 0 .. start - 1 are taken from ``prev``, the others computed.
        prev: with ``start`` > 0, an array of shape (start,) at least: the cached values.
    """
    if TRAIN_PROBE not in store.probes:
        return np.zeros(0)
    labels = store.labels(TRAIN_PROBE)
    n_classes = class_naps.shape[1]
    onehot = np.zeros((n_classes, len(labels)))
    onehot[labels, np.arange(len(labels))] = 1.0
    out = np.full(n_s, np.nan)
    snapshots = store.iter_acts(TRAIN_PROBE, name, dtype=None)
    if start:
        out[:start] = prev[:start]
        snapshots = ((s, store.acts(TRAIN_PROBE, name, s, dtype=None)) for s in range(start, n_s))
    for s, a in snapshots:
        if s >= n_s:
            break
        a = np.asarray(a, np.float64)
        fin = np.isfinite(a)
        with np.errstate(invalid="ignore", divide="ignore"):
            train = (onehot @ np.where(fin, a, 0.0)) / (onehot @ fin)  # [C, N]
        ref = np.asarray(class_naps[s], np.float64)
        both = np.isfinite(train) & np.isfinite(ref)
        norm = np.sqrt(np.sum(np.where(both, ref, 0.0) ** 2))
        if both.any() and norm > 0:
            out[s] = np.sqrt(np.sum(np.where(both, train - ref, 0.0) ** 2)) / norm
    return out
