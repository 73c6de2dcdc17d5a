"""The whole offline analysis of one store, cached next to it: :func:`analyze`.

One streaming pass per layer reads the probe set's activations snapshot by snapshot (plus the final snapshot
once more, the reference for CKA) and computes at each snapshot the NAPs of every grouping, the correlations
with every confidence measure, activity strength and class distinctness (overall and per confidence bin) and
CKA, and each probe sample's activity strength and class distinctness (:mod:`.snapshot`, :mod:`.stream`); then
layouts, maps and the bootstrap evidence for the study's claims (:mod:`.evidence`) are computed from those small
results (:mod:`.layer`), and the training outcomes (curves, divergence, calibration) from the stored outputs
(:mod:`.outcomes`). Memory is bounded by one snapshot's activations plus the results (which grow with snapshots x
neurons or samples). Every parameter is a field of :class:`.params.AnalysisParams`.

Cache (:mod:`.cache`). The results are written to ``analysis.h5`` next to the store (:mod:`.results`) together
with the store's fingerprint and the parameters' key; a later call with the same fingerprint and parameters loads
the cache without touching the activations.

Non-finite values are data, not poison (``docs/analysis.md``, "Non-finite values"). Each statistic leaves out
the non-finite values of its own unit; the counts are kept per layer and snapshot. A run that diverged
(:data:`.outcomes.DIVERGED_SHARE`) is analysed up to the snapshot before its diverged tail.

Incremental analysis (``docs/analysis.md``, "Incremental analysis"). A store that gained k snapshots since its
cached analysis (same parameters and analysis version, the cached snapshots unchanged:
:func:`.cache.incremental_base`) is analysed by computing the per-snapshot quantities of the k new snapshots only,
and redoing everything that spans snapshots from the full per-snapshot arrays by the code of a fresh analysis. Two
results have a reference snapshot, the last one: the layouts and CKA. An analysis moves the reference to the last
snapshot (layouts fitted again, every snapshot's CKA scored again, :func:`.snapshot.cka_row`), so the result equals
a fresh analysis number for number; except while a writer records into the store (or with
``provisional_layouts=True``): then the cached reference is kept until the snapshot count reaches
:data:`LAYOUT_REFIT_GROWTH` times the count at the reference, and the results name it (``reference_snapshot``,
provisional). The per-sample arrays that the cache lacks are kept next to it (:mod:`.incremental`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from ..instrument.store import Store, resolve_store_path
from . import incremental
from .cache import (  # noqa: F401 (cached_results, store_fingerprint: importable from here)
    CACHE_FILE,
    cached_results,
    incremental_base,
    load_cache,
    provisional_allowed,
    sha256_async,
    store_fingerprint,
)
from .layer import (  # noqa: F401 (the layout defaults: importable from here)
    MAX_MDS_NEURONS,
    MAX_TSNE_NEURONS,
    MIN_MAP_FILL,
    LayerRun,
    Progress,
    SnapshotCluster,
    default_layout_methods,
    map_fill,
    pick_default_layout,
)
from .layer import analyze_layer as _analyze_layer
from .outcomes import (  # noqa: F401 (DIVERGED_SHARE, trend_interval: importable from here)
    DIVERGED_SHARE,
    HELDOUT_PROBE,
    TRAIN_PROBE,
    calibrations,
    ece_trend,
    find_divergence,
    finite_outcomes,
    loss_minimum,
    training_curves,
    trend_interval,
)
from .params import ANALYSIS_VERSION, AnalysisParams  # noqa: F401 (ANALYSIS_VERSION: importable from here)
from .results import AnalysisResults, save_results
from .snapshot import LayerContext, layer_context, process_snapshot, snapshot_row, task_context  # noqa: F401

ALPHA = AnalysisParams.alpha  # the defaults of the parameters (analysis/params.py), by their old names
GRID = AnalysisParams.grid  # map side in pixels (issue 10): a map tile is ~170 CSS px wide, a pixel ~1.3 CSS px
N_BOOT_TRENDS = AnalysisParams.n_boot_trends  # bootstrap resamples of the probe samples behind the trends
# While the store is recorded, an incremental analysis keeps the cache's reference snapshot (its layouts, CKA to it)
# until the analysed snapshot count reaches this multiple of the count at it: O(log S) moves over a live run.
LAYOUT_REFIT_GROWTH = 1.5


def analyze(
    store_path: str | os.PathLike,
    cache_path: str | os.PathLike | None = None,
    params: AnalysisParams | None = None,
    *,
    refresh: bool = False,
    progress: Progress | None = None,
    until_good: bool = False,
    cluster: SnapshotCluster | None = None,
    provisional_layouts: bool | None = None,
    **overrides: object,
) -> AnalysisResults:
    """Analyse a store (or load the cached analysis if the store and parameters are unchanged).

    A store that gained snapshots since its cached analysis is analysed incrementally (the module docstring,
    ``docs/analysis.md``): only the new snapshots' per-snapshot quantities are computed, and the result equals a
    fresh analysis except for a provisional reference snapshot (``results.reference_snapshot >= 0``: layouts
    and CKA) while the store is recorded.

    Args:
        store_path: the store file, or a run folder holding ``store.h5``.
        cache_path: the cache file; default ``analysis.h5`` in the store's folder.
        params: the analysis parameters (:class:`.params.AnalysisParams`); default: the defaults.
        refresh: recompute even if the cache matches.
        progress: called as ``progress(stage, done, total)`` while computing.
        until_good: for a store with a damaged snapshot, analyse the snapshots before it (see
            :class:`topotrace.instrument.store.Store`); otherwise reading the damaged snapshot raises.
        cluster: compute the snapshots on a Dask cluster
            (:func:`topotrace.analysis.distributed.dask_cluster`); its workers open the store by its path.
            Default: in this process, with a thread pool. The results are the same either way.
        provisional_layouts: whether an incremental analysis may keep the cached reference snapshot (the
            layouts fitted on it and the CKA to it, :data:`LAYOUT_REFIT_GROWTH`); default: while a writer records
            into the store (:func:`topotrace.instrument.store.writer_state` is ``"live"``). ``False``: the
            reference is always the last snapshot, as in a fresh analysis. Not part of the cache key.
        **overrides: parameters by name, over ``params`` (e.g. ``probe_set="train"``, ``n_bins=3``,
            ``layout_methods=["pca"]``, ``dormant_tau=0.1``; ``None`` keeps the default): among them
            ``probe_set`` (whose activations the layer results describe; the curves cover every probe set),
            ``measure`` (the primary confidence measure: it defines the confidence bins and leads the findings;
            default ``logit_margin`` when the store has it, else the store's first measure), ``bins``
            (``"snapshot"``: quantile bins of each snapshot; ``"pooled"``: edges from all snapshots pooled),
            ``layout_methods`` (default :func:`default_layout_methods` per layer) and ``default_layout`` (default
            :func:`pick_default_layout`).

    Returns:
        :class:`AnalysisResults`; for a run that diverged (:data:`DIVERGED_SHARE`), of the snapshots before
        its diverged tail, with ``divergence`` saying where it diverged.

    Raises:
        TypeError: an unknown parameter name, or a parameter of the wrong kind.
        ValueError: invalid parameters, a store without snapshots, or one diverged from its first snapshot on.
    """
    t_start = time.perf_counter()
    params = AnalysisParams.make(params, **overrides)  # every check of a parameter, before any work
    path = resolve_store_path(store_path)
    cache = Path(cache_path) if cache_path is not None else path.parent / CACHE_FILE
    cache.parent.mkdir(parents=True, exist_ok=True)  # fail here, not after the work, if it cannot be made
    if provisional_layouts is not None and not isinstance(provisional_layouts, bool):
        raise TypeError(f"The 'provisional_layouts' parameter must be None, True or False. Got "
                        f"{provisional_layouts!r} instead.")
    report = progress or (lambda stage, done, total: None)
    keep_provisional = provisional_allowed(path, provisional_layouts)  # before this process opens the store
    probe_set = params.probe_set
    with Store(path, until_good=until_good) as store:
        if store.n_snapshots == 0:
            raise ValueError(f"{path} has no committed snapshots yet; nothing to analyse.")
        if probe_set not in store.probes:
            raise ValueError(f"The 'probe_set' parameter must be one of {sorted(store.probes)}. "
                             f"Got {probe_set!r} instead.")
        if params.measure is None:
            params = replace(params, measure="logit_margin" if "logit_margin" in store.measures
                             else store.measures[0])
        if params.measure not in store.measures:
            raise ValueError(f"The 'measure' parameter must be one of {list(store.measures)}. "
                             f"Got {params.measure!r} instead.")
        fingerprint = json.dumps(store_fingerprint(store), sort_keys=True)
        key = {"fingerprint": fingerprint, "params_key": params.key_json()}
        if not refresh:
            cached = load_cache(cache, fingerprint, key["params_key"])
            if cached is not None and (cached.reference_snapshot < 0 or keep_provisional):
                return cached  # (a provisional reference no longer allowed: extended by 0 snapshots below, moved)
        outcome_ok = finite_outcomes(store, probe_set)  # [S, n]
        divergence = find_divergence(store, probe_set, outcome_ok)
        n_s = store.n_snapshots if divergence is None else divergence.snapshot
        if n_s == 0:
            what = " and ".join([f"layer {la!r}" for la in divergence.layers] + ["the outputs"] * divergence.outputs)
            raise ValueError(f"{path} diverged from its first snapshot (step {divergence.step}) on: {what} hold more "
                             f"than {DIVERGED_SHARE:.0%} non-finite values for the {probe_set!r} probe set at every "
                             "snapshot; nothing finite to analyse.")
        base = None if refresh or params.bins != "snapshot" else incremental_base(cache, store, params, n_s)
        n_old = base.state.n_snapshots if base is not None else 0
        ref_at = -1  # the provisional reference snapshot (layouts, CKA); -1: the last one
        cached_ref = -1 if base is None else \
            base.results.reference_snapshot if base.results.reference_snapshot >= 0 else n_old - 1
        if base is not None and keep_provisional and n_s < LAYOUT_REFIT_GROWTH * (cached_ref + 1):
            ref_at = cached_ref
        sha_thread, sha = sha256_async(store)
        task = {"path": str(path), "until_good": bool(until_good), "n_s": int(n_s), "fingerprint": fingerprint,
                "params": params.to_dict()}
        report("training curves", 0, 1)
        curves = training_curves(store, n_s)
        report("training curves", 1, 1)
        run = LayerRun(store, params, n_s, outcome_ok[:n_s], report, cluster, task, ref_at)
        layers, states = {}, {}
        # One BLAS thread throughout: every product here is small or already runs on a worker per core, and
        # OpenBLAS's threads spin while they wait, which on a busy machine made small layouts up to 40x slower.
        with threadpool_limits(1, user_api="blas"):
            for name in store.layers:
                layers[name], states[name] = _analyze_layer(
                    run, name, None if base is None else (base.results.layers[name], base.state.layers[name], n_old,
                                                          cached_ref))
        sha_thread.join()
        ref_probe = next((p for p in (HELDOUT_PROBE, probe_set) if p in store.probes and p != TRAIN_PROBE), None)
        loss_min = loss_minimum(curves, ref_probe) if ref_probe else -1
        res = AnalysisResults(
            store_path=str(path), store_sha256=sha[0] if sha else "", n_snapshots=n_s,
            steps=store.steps[:n_s], epochs=store.epochs[:n_s], probe_set=probe_set, primary_measure=params.measure,
            measures=list(store.measures), class_names=list(store.class_names), curves=curves, layers=layers,
            params=params.key() | {"seconds": round(time.perf_counter() - t_start, 3)}, meta=store.meta,
            nonfinite_outputs=(~outcome_ok[:n_s]).sum(axis=1).astype(np.int64), divergence=divergence,
            calibration=calibrations(store, n_s, params.ece_bins, n_old,
                                     None if base is None else base.results.calibration),
            temperature=(np.asarray(store.temperature[:n_s], np.float64) if store.temperature is not None
                         else np.zeros(0)),
            loss_min=loss_min, ece_trend=ece_trend(store, ref_probe, n_s, loss_min, params) if ref_probe else {},
            reference_snapshot=ref_at,
        )
        prefix = incremental.prefix_digest(store, n_s)
    report("saving", 0, 1)
    writing = Path(cache).with_name(Path(cache).name + ".writing")  # save_results' own temporary file
    try:
        save_results(res, cache, extra_attrs=key)
    except BaseException:  # a full disk, Ctrl-C: no half-written cache is left behind
        writing.unlink(missing_ok=True)
        raise
    # The per-sample arrays the cache lacks, for the next incremental analysis; tied to this cache by its SHA-256.
    incremental.save_state(incremental.state_path(cache), incremental.State(
        fingerprint, key["params_key"], n_s, prefix, incremental.file_sha256(cache), states))
    report("saving", 1, 1)
    return res
