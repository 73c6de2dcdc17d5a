"""The analysis's per-snapshot work on a ``dask.distributed`` cluster: :func:`dask_cluster`.

``analyze(store, cluster=c)`` with ``c`` from :func:`dask_cluster` sends one task per (layer, snapshot). A task
carries plain parameters only (the store's path, the analysis parameters, the layer, the snapshot): each worker
opens the store itself (:class:`topotrace.instrument.store.Store`), builds the layer's context from it once (kept
per worker process for the layer in progress), reads its snapshot's activations and returns the small
per-snapshot results (dicts of numpy arrays), which :func:`topotrace.analysis.pipeline.analyze` merges in
snapshot order; layouts, evidence and the cache are computed and written by the calling process as without a
cluster, so the results are the same. Workers need topotrace installed and the store at the same path (a shared
file system on a cluster). ``dask[distributed]`` is optional (``pip install 'topotrace[dask]'``) and imported
only when a cluster is made.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

import numpy as np
from threadpoolctl import threadpool_limits

from ..instrument.store import Store
from . import stats
from .snapshot import LayerContext, snapshot_row, task_context

CONNECT_TIMEOUT = 5.0  # seconds to reach a scheduler at an address
CLOSE_TIMEOUT = 10.0  # seconds to stop the client and a local cluster
MAX_LOCAL_WORKERS = 4  # default worker processes of a local cluster (capped by the CPU count)
# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which also fixes glibc's mmap threshold at
# 128 kB: every large temporary array is then a fresh mmap, page-faulted and zeroed again, and the first and last
# snapshots' trend bootstraps (200 resamples of the layer's activations) took twice the CPU time (half of it in
# the kernel; bench/bench_dask.py). A local cluster's workers keep glibc's defaults (None unsets the variable);
# for workers started with `dask worker`, see docs/analysis.md.
LOCAL_NANNY_ENV = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}

_local = threading.local()  # per worker thread: its scratch arrays (stats.Workspace)


def _open(task: dict) -> Store:
    """The store of a task, opened on a worker.

    The calling process has checked the whole store before sending tasks, and :func:`task_context` checks that
    it is still that store (its fingerprint), so a worker opens it with a quick open: no walk over every
    dataset's chunk index for each task; every chunk read still verifies its checksum. With ``until_good`` the
    full open is needed, to see the same snapshots as the calling process.
    """
    until_good = bool(task["until_good"])
    return Store(task["path"], until_good=until_good, quick=not until_good)


@lru_cache(maxsize=2)
def _context(task_json: str) -> LayerContext:
    """The layer context of a task, built once per worker process (the layer in progress and the one before)."""
    task = json.loads(task_json)
    with _open(task) as store:
        return task_context(store, task)


def compute_snapshot(task: dict, s: int) -> dict:
    """On a worker: the results of snapshot ``s`` of the layer ``task["name"]`` (see the module docstring)."""
    ctx = _context(json.dumps(task, sort_keys=True))
    ws = getattr(_local, "ws", None)
    if ws is None:
        ws = _local.ws = stats.Workspace()
    with _open(task) as store:
        stored = store.acts(ctx.params.probe_set, task["name"], s, dtype=None)  # [n, N], stored dtype
    with threadpool_limits(1, user_api="blas"):
        return snapshot_row(ctx, s, stored, ws)


class DaskCluster:
    """The per-snapshot work of :func:`topotrace.analysis.pipeline.analyze` on a ``distributed.Client``.

    Args:
        client: a connected ``distributed.Client`` (see :func:`dask_cluster`).
    """

    def __init__(self, client: object):
        self.client = client

    def map_snapshots(self, task: dict, n_s: int) -> Iterator[dict]:
        """The results of snapshots 0 .. n_s - 1 of ``task["name"]``, in order (one task each)."""
        futures = self.client.map(compute_snapshot, [task] * n_s, range(n_s), pure=False)
        try:
            for fut in futures:
                yield fut.result()
                fut.release()
        finally:
            self.client.cancel(futures)

    def __repr__(self) -> str:
        return f"DaskCluster({self.client!r})"


@contextmanager
def dask_cluster(address: str | None = None, workers: int | None = None) -> Iterator[DaskCluster]:
    """A Dask cluster for :func:`topotrace.analysis.pipeline.analyze`, closed (or disconnected) on exit.

    Args:
        address: a running scheduler (``tcp://HOST:PORT``); default: a ``LocalCluster`` on 127.0.0.1.
        workers: worker processes of the local cluster (one thread each); default up to
            :data:`MAX_LOCAL_WORKERS`, capped by the CPU count. Not with ``address``.

    Raises:
        ValueError: dask.distributed is not installed, both or bad arguments, or no scheduler answers at
            ``address`` within :data:`CONNECT_TIMEOUT` seconds.
    """
    if address is not None and workers is not None:
        raise ValueError("The 'workers' parameter is for a local cluster; give either 'address' or 'workers'. "
                         f"Got address={address!r} and workers={workers!r}.")
    if workers is not None and (not isinstance(workers, (int, np.integer)) or isinstance(workers, bool)
                                or workers < 1):
        raise ValueError(f"The 'workers' parameter must be an int >= 1. Got {workers!r} instead.")
    if address is not None and (not isinstance(address, str) or not address):
        raise ValueError(f"The 'address' parameter must be a scheduler address such as tcp://HOST:8786. "
                         f"Got {address!r} instead.")
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ValueError("The 'dask' scheduler needs dask.distributed, which is not installed: "
                         "pip install 'topotrace[dask]'.") from None
    cluster = None
    try:
        if address is None:
            n = int(workers) if workers is not None else max(1, min(MAX_LOCAL_WORKERS, os.cpu_count() or 1))
            # No dashboard; the scheduler's HTTP routes on a free port of 127.0.0.1 (its default is 8787). Worker
            # processes run under nannies, which restart a worker that dies; its tasks are rerun elsewhere (a task
            # only reads the store, so a rerun gives the same result). The nannies keep glibc's own malloc
            # thresholds (see LOCAL_NANNY_ENV), also for a worker they restart.
            import dask

            with dask.config.set(LOCAL_NANNY_ENV):
                cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                       dashboard_address=None, silence_logs=logging.ERROR,
                                       scheduler_kwargs={"dashboard_address": "127.0.0.1:0"})
            client = Client(cluster)
        else:
            try:
                client = Client(address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as err:
                raise ValueError(f"Could not reach a Dask scheduler at {address!r} within {CONNECT_TIMEOUT:g} s "
                                 f"({type(err).__name__}: {err}).") from None
        try:
            yield DaskCluster(client)
        finally:
            client.close(timeout=CLOSE_TIMEOUT)
    finally:
        if cluster is not None:
            cluster.close(timeout=CLOSE_TIMEOUT)
