"""The analysis cache: whether ``analysis.h5`` answers for the store now, and what an incremental analysis extends.

See ``docs/analysis.md``, "Incremental analysis".

The cache holds the store's fingerprint (committed snapshots, last step, file size and modification time in ns:
O(1) to check, changed by every append or rewrite) and the parameters' key (:meth:`.params.AnalysisParams.key`,
with the analysis version). The store's SHA-256 is computed once per analysis for provenance, on a thread.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..instrument.store import Store, resolve_store_path, writer_state
from . import incremental, naps, stats
from . import params as analysis_params
from .outcomes import TRAIN_PROBE
from .params import AnalysisParams
from .results import AnalysisResults, load_results, read_cache_attrs

CACHE_FILE = "analysis.h5"  # the analysis cache next to the store (topotrace.runfolder.ANALYSIS_FILE)


def store_fingerprint(store: Store) -> dict[str, int]:
    """What identifies a store's committed content cheaply (see the module docstring)."""
    st = os.stat(store.path)
    steps = store.steps
    return {
        "n_snapshots": int(store.n_snapshots),
        "last_step": int(steps[-1]) if len(steps) else -1,
        "size": int(st.st_size),
        "mtime_ns": int(st.st_mtime_ns),
    }


def sha256_async(store: Store) -> tuple[threading.Thread, list[str]]:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(store.sha256()), daemon=True)
    t.start()
    return t, out


def provisional_allowed(path: Path, provisional_layouts: bool | None) -> bool:
    """Whether an incremental analysis may keep a provisional reference (``analyze``'s ``provisional_layouts``)."""
    if provisional_layouts is not None:
        return provisional_layouts
    try:  # (a reader holds HDF5's shared lock too: this is asked before the analysis opens the store)
        return writer_state(path) == "live"
    except OSError:
        return False


@dataclass
class Base:
    """A cached analysis that an incremental analysis extends: the cache's results and its sidecar."""

    results: AnalysisResults
    state: incremental.State


def incremental_base(cache: Path, store: Store, params: AnalysisParams, n_s: int) -> Base | None:
    """The cached analysis to extend to the first ``n_s`` snapshots of ``store``, or ``None`` (start afresh).

    It counts when the cache and its sidecar (:func:`.incremental.state_path`) belong together (the sidecar names
    the cache's fingerprint, parameters and SHA-256), were made with ``params`` (whose key holds
    :data:`ANALYSIS_VERSION`), hold S <= ``n_s`` snapshots of a run that had not diverged, and the store's first
    S snapshots are still the ones analysed (:func:`.incremental.prefix_digest`: not cut and re-recorded). A
    missing, unreadable, damaged or older cache or sidecar gives ``None``.
    """
    spath = incremental.state_path(cache)
    if not (cache.is_file() and spath.is_file()):
        return None
    params_key, probe = params.key_json(), params.probe_set
    try:
        st = incremental.load_state(spath)
        attrs = read_cache_attrs(cache)
        if not (st.params_key == params_key == attrs.get("params_key") and attrs.get("fingerprint") == st.fingerprint
                and 1 <= st.n_snapshots <= n_s):
            return None
        if incremental.file_sha256(cache) != st.cache_sha256:
            return None  # changed since it was written (damaged, or rewritten by other code)
        res = load_results(cache)
        n_old = st.n_snapshots
        if res.n_snapshots != n_old or res.divergence is not None or res.probe_set != probe \
                or list(res.layers) != list(store.layers) or list(st.layers) != list(store.layers) \
                or sorted(res.calibration) != sorted(store.probes):
            return None
        n = len(store.labels(probe))
        summary_keys = sorted(k + sfx for k in stats.corr_summary(np.zeros(1), np.ones(1), params.alpha)
                              for sfx in ("", "_within"))
        for name, lr in res.layers.items():
            ls, n_neurons = st.layers[name], store.layers[name].n_neurons
            if lr.n_neurons != n_neurons or ls.per_sample.shape != (2, n_old, n) \
                    or ls.boot_ends.shape != (2, 2, params.n_boot_trends) or lr.cka.shape != (n_old,) \
                    or sorted(lr.corr) != sorted(store.measures) \
                    or any(cr.pearson.shape != (n_old, n_neurons) or sorted(cr.summary) != summary_keys
                           or any(v.shape != (n_old,) for v in cr.summary.values()) for cr in lr.corr.values()) \
                    or any(gn.naps.shape[::2] != (n_old, n_neurons) for gn in lr.naps.values()) \
                    or sorted(lr.naps) != sorted(naps.GROUPINGS) or lr.dormant_mask.shape != (n_old, n_neurons) \
                    or (TRAIN_PROBE in store.probes and probe != TRAIN_PROBE and lr.nap_gap.shape != (n_old,)):
                return None
        if any(c.ece.shape[1:] != (n_old,) or c.temperature_cv.shape != (n_old, 2) for c in res.calibration.values()):
            return None
        if incremental.prefix_digest(store, n_old) != st.prefix:
            return None  # the store's earlier snapshots changed (e.g. cut by a resume and recorded again)
        return Base(res, st)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None  # unreadable: start afresh


def load_cache(cache: Path, fingerprint: str, params_key: str | None = None) -> AnalysisResults | None:
    """The cache, if it was made from the store's current content by this analysis version.

    With ``params_key`` it must also have been made with exactly these parameters. ``None`` when it is missing,
    stale or unreadable.
    """
    if not cache.exists():
        return None
    try:
        attrs = read_cache_attrs(cache)
        made_with = str(attrs.get("params_key", "{}"))
        if attrs.get("fingerprint") != fingerprint or json.loads(made_with).get("analysis_version") != \
                analysis_params.ANALYSIS_VERSION:
            return None
        if params_key is not None and made_with != params_key:
            return None
        return load_results(cache)
    except (OSError, ValueError, KeyError):
        return None  # unreadable or another version: recompute


def cached_results(store_path: str | os.PathLike, cache_path: str | os.PathLike | None = None,
                   until_good: bool = False) -> AnalysisResults | None:
    """The cached analysis of the store as it is now, whatever parameters made it; ``None`` if there is none.

    The cache counts when it was computed from the store's current content (its fingerprint) by this version
    of the analysis; its parameters are in ``results.params``. ``until_good``: the store's snapshots before a
    damaged one (as :func:`analyze`).
    """
    path = resolve_store_path(store_path)
    with Store(path, until_good=until_good) as store:
        fingerprint = json.dumps(store_fingerprint(store), sort_keys=True)
    return load_cache(Path(cache_path) if cache_path is not None else path.parent / CACHE_FILE, fingerprint)
