"""The whole offline analysis of one store, cached next to it: :func:`analyze`.

One streaming pass per layer reads the probe set's activations snapshot by snapshot (plus the final snapshot
once more, the reference for CKA) and computes at each snapshot the NAPs of every grouping, the correlations
with every confidence measure, activity strength and class distinctness (overall and per confidence bin) and
CKA, and each probe sample's activity strength and class distinctness; then layouts, maps and the bootstrap
evidence for the study's claims (:mod:`.evidence`) are computed from those small results. Memory is bounded
by one snapshot's activations plus the results (which grow with snapshots x neurons or samples).

Cache. The results are written to ``analysis.h5`` next to the store together with the store's fingerprint
(committed snapshots, last step, file size and modification time in ns) and the analysis parameters (JSON,
with :data:`ANALYSIS_VERSION`). A later call with the same fingerprint and parameters loads the cache without
touching the activations. The fingerprint is O(1) to check, changes whenever a snapshot is appended (count,
step, size) or the file is rewritten (mtime), and avoids hashing gigabytes on every call; the store's SHA-256
is still computed once per analysis, for provenance, on a thread in parallel with the computation.

Non-finite values are data, not poison (``docs/analysis.md``, "Non-finite values"). Each statistic leaves out
the non-finite values of its own unit: a neuron's NAPs and correlations its NaN/inf values (and, for the
correlations, samples with non-finite outputs), the per-sample statistics the samples with any non-finite
activation in the layer or non-finite outputs; the counts are kept per layer and snapshot. The per-sample sums
of |a| that the pass computes anyway are non-finite exactly where a row holds NaN or inf, so an all-finite
snapshot costs no extra pass and takes the unchanged fast path. A run that diverged (:data:`DIVERGED_SHARE`)
is analysed up to the snapshot before its diverged tail, which is found by walking back from the last snapshot.

Incremental analysis (``docs/analysis.md``, "Incremental analysis"). A store that gained k snapshots since its
cached analysis (same parameters and analysis version, the cached snapshots unchanged: :func:`_incremental_base`)
is analysed by computing the per-snapshot quantities of the k new snapshots only (:func:`process_snapshot`,
the rows of :func:`_nap_gap` and :func:`_calibration`), and redoing everything that spans snapshots from the
full per-snapshot arrays by the code of a fresh analysis (correlation summaries, colour limits, evidence, trends,
curves, calibration trend, loss minimum). Two results have a reference snapshot, the last one: the layouts
(fitted on its class NAPs) and CKA (of every snapshot to it). An analysis moves the reference to the last
snapshot (layouts fitted again, every snapshot's CKA scored again: one more read of each snapshot's activations,
:func:`cka_row`), so the result equals a fresh analysis number for number; except while a writer records into
the store (or with ``provisional_layouts=True``): then the cached reference is kept until the snapshot count
reaches :data:`LAYOUT_REFIT_GROWTH` times the count at the reference (the layouts kept, the new snapshots' CKA
scored against that reference), and the results name it (``reference_snapshot``, provisional). An analysis of a
store whose writer has closed (or was killed) moves it to the last snapshot, so the final analysis equals a fresh
one everywhere. The per-sample arrays that the cache lacks are kept next to it (:mod:`.incremental`).
"""

from __future__ import annotations

import json
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from threadpoolctl import threadpool_limits

from topotrace.instrument.store import Store, resolve_store_path, writer_state

from . import calibration, collapse, evidence, incremental, maps, naps, stats
from . import params as analysis_params
from .layouts import NeuronLayout, shepard_score, trustworthiness_score
from .params import ANALYSIS_VERSION, AnalysisParams  # noqa: F401 (ANALYSIS_VERSION: importable from here)
from .results import (
    AnalysisResults,
    Calibration,
    CorrResult,
    Divergence,
    GroupedNaps,
    LayerResult,
    LayoutResult,
    load_results,
    read_cache_attrs,
    save_results,
)

ALPHA = AnalysisParams.alpha  # the defaults of the parameters (analysis/params.py), by their old names
GRID = AnalysisParams.grid  # map side in pixels (issue 10): a map tile is ~170 CSS px wide, a pixel ~1.3 CSS px
RANDOM_STATE = AnalysisParams.random_state
CKA_MAX_SAMPLES = AnalysisParams.cka_max_samples  # CKA uses a fixed, seeded subset of at most this many samples
MIN_MAP_FILL = AnalysisParams.min_map_fill  # see pick_default_layout; a round body fills about 0.6-0.8 of its square
N_BOOT_TRENDS = AnalysisParams.n_boot_trends  # bootstrap resamples of the probe samples behind the trends
ECE_BINS = AnalysisParams.ece_bins
MAX_TSNE_NEURONS = 2048
MAX_MDS_NEURONS = 256
MAX_WORKERS = 4  # threads computing snapshots in parallel (capped by the CPU count)
# A snapshot is diverged when more than this share of the probe samples has non-finite outputs (loss or a
# confidence measure) or more than this share of some layer's activation values (samples x neurons) is non-finite
# (a share of values, so one NaN neuron is not a divergence: it is left out and placed nowhere); the run diverged
# at the first snapshot of its tail of diverged snapshots, and the analysis stops before it.
DIVERGED_SHARE = 0.5
# While the store is recorded, an incremental analysis keeps the cache's reference snapshot (its layouts, CKA to it)
# until the analysed snapshot count reaches this multiple of the count at it: O(log S) moves over a live run.
LAYOUT_REFIT_GROWTH = 1.5
TRAIN_PROBE = "train"  # the probe set drawn from the training data (overfitting view)
HELDOUT_PROBE = "heldout"
# Recorded probabilities of the predicted class (argmax of the logits); the analysis adds temp_prob_cv.
CALIBRATED_MEASURES = ("max_prob", "temp_prob")

Progress = Callable[[str, int, int], None]


class SnapshotCluster(Protocol):
    """Computes the snapshots of a layer elsewhere (:class:`topotrace.analysis.distributed.DaskCluster`)."""

    def map_snapshots(self, task: dict, n_s: int) -> Iterator[dict]:
        """The :meth:`_LayerPass.row` of snapshots 0 .. n_s - 1 of ``task["name"]``, in order."""
        ...


def default_layout_methods(n_neurons: int) -> list[str]:
    """The layout methods computed by default for a layer of ``n_neurons`` neurons (the fast ones)."""
    out = ["force", "pca", "som"]
    if n_neurons <= MAX_TSNE_NEURONS:
        out.append("tsne")
    if n_neurons <= MAX_MDS_NEURONS:
        out.append("mds")
    return out


def map_fill(layout: LayoutResult) -> float:
    """Share of the map's square image that its region covers (a thin or fragmented layout covers little)."""
    h, w = layout.interp.grid_shape
    return len(layout.interp.pixel) / float(h * w)


def pick_default_layout(layouts: dict[str, LayoutResult], min_fill: float = MIN_MAP_FILL) -> str:
    """The layout the report draws maps on: the most trustworthy among those whose map fills its square.

    Among layouts with :func:`map_fill` >= ``min_fill`` (the ``min_map_fill`` parameter), the highest
    trustworthiness wins (ties: ``force+declutter``); if no layout fills that much, the one with the largest fill.
    Trustworthiness alone would pick a layout whose map is a thin strip or scattered islands, which shows little.
    """
    full = [k for k in layouts if map_fill(layouts[k]) >= min_fill]
    if not full:
        return max(layouts, key=lambda k: map_fill(layouts[k]))
    return max(full, key=lambda k: (layouts[k].trustworthiness, k == "force+declutter"))


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


def _sha256_async(store: Store) -> tuple[threading.Thread, list[str]]:
    out: list[str] = []
    t = threading.Thread(target=lambda: out.append(store.sha256()), daemon=True)
    t.start()
    return t, out


def _outcome_ok(store: Store, probe: str) -> np.ndarray:
    """Samples whose outputs are finite: array of shape (S, n), bool: the loss and every confidence measure.

    They are computed from the logits, so a NaN or +inf logit makes them non-finite (a -inf logit of a wrong
    class only means probability 0); reading them costs S x n values per measure instead of S x n x C logits.
    """
    ok = np.isfinite(store.loss(probe))
    for m in store.measures:
        ok &= np.isfinite(store.conf(probe, m))
    return ok


def _finite_mean(x: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Mean of each row of ``x`` (S, n) over the entries where ``ok`` (S, n) holds: array of shape (S,)."""
    if ok.all():
        return x.mean(axis=1, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, x, 0).sum(axis=1, dtype=np.float64) / ok.sum(axis=1)


def _curves(store: Store, n_s: int) -> dict[str, dict[str, np.ndarray]]:
    """Accuracy, loss and confidence of every probe set at the first ``n_s`` snapshots, over finite outputs."""
    curves = {}
    for p in store.probes:
        ok = _outcome_ok(store, p)[:n_s]
        c = {"accuracy": _finite_mean(store.correct(p)[:n_s], ok), "loss": _finite_mean(store.loss(p)[:n_s], ok)}
        for m in store.measures:
            c[f"conf_{m}"] = _finite_mean(store.conf(p, m)[:n_s], ok)
        curves[p] = c
    return curves


def _nonfinite_share(acts: np.ndarray) -> float:
    """Share of the non-finite values of ``acts`` (any shape)."""
    return 1.0 - np.count_nonzero(np.isfinite(acts)) / acts.size if acts.size else 0.0


def _find_divergence(store: Store, probe: str, outcome_ok: np.ndarray) -> Divergence | None:
    """The diverged tail of a run (:data:`DIVERGED_SHARE`), or ``None`` when its last snapshot is not diverged.

    Walks back from the last snapshot, one layer's activations of one snapshot at a time, to the first snapshot
    that is not diverged: a run that did not diverge costs one read of its last snapshot.

    Args:
        store: the open store.
        probe: the analysed probe set.
        outcome_ok: array of shape (S, n), bool, from :func:`_outcome_ok`.
    """
    n_s = store.n_snapshots
    out_bad = (~outcome_ok).mean(axis=1) > DIVERGED_SHARE  # [S]
    first: tuple[int, list[str], bool] | None = None  # the earliest diverged snapshot seen so far
    for s in range(n_s - 1, -1, -1):
        bad = [name for name in store.layers
               if _nonfinite_share(store.acts(probe, name, s, dtype=None)) > DIVERGED_SHARE]
        if not bad and not out_bad[s]:
            break
        first = (s, bad, bool(out_bad[s]))
    if first is None:
        return None
    k, layers, outputs = first
    steps = store.steps
    return Divergence(k, int(steps[k]), int(steps[k - 1]) if k else -1, layers, outputs, n_s)


class _LayerPass:
    """Accumulates the per-snapshot results of one layer during the streaming pass (row s: snapshot s)."""

    _ROWS = ("strength", "distinctness", "strength_by_bin", "distinctness_by_bin", "cka", "excluded_values",
             "excluded_samples", "dormant", "dormant_mask", "nc1", "boot_ends")

    def __init__(self, n_s: int, n_neurons: int, measures: Sequence[str], n_bins: int, group_sizes: dict[str, int],
                 n_samples: int, n_boot_trends: int = N_BOOT_TRENDS):
        m = len(measures)
        shape = (m, n_s, n_neurons)  # measure first: each measure's (S, N) block is contiguous
        self.measures = list(measures)
        self.r = {k: np.zeros(shape, np.float32) for k in ("pearson", "spearman", "pearson_within", "spearman_within")}
        self.q = {k: np.ones(shape, np.float32) for k in ("pearson", "pearson_within")}
        self.naps = {g: np.full((n_s, n_g, n_neurons), np.nan, np.float32) for g, n_g in group_sizes.items()}
        self.counts = {g: np.zeros((n_s, n_g), np.int64) for g, n_g in group_sizes.items()}
        self.strength = np.full(n_s, np.nan)
        self.distinctness = np.full(n_s, np.nan)
        self.strength_by_bin = np.full((n_s, n_bins), np.nan)
        self.distinctness_by_bin = np.full((n_s, n_bins), np.nan)
        self.cka = np.full(n_s, np.nan)
        self.excluded_values = np.zeros(n_s, np.int64)
        self.excluded_samples = np.zeros(n_s, np.int64)
        self.dormant = np.full(n_s, np.nan)
        self.dormant_mask = np.zeros((n_s, n_neurons), bool)
        self.nc1 = np.full(n_s, np.nan)
        # bootstrap replicates over probe samples of (dormant share, NC1); filled at the first and last snapshot
        self.boot_ends = np.full((n_s, 2, n_boot_trends), np.nan, np.float32)
        self.per_sample = np.full((2, n_s, n_samples), np.nan)  # strength and distinctness of every probe sample
        self.sample_corr: list[dict[str, np.ndarray]] = [{}] * n_s  # their correlations with confidence

    def row(self, t: int) -> dict:
        """Row ``t`` of every result: plain dicts of numpy arrays (what a Dask worker sends back)."""
        out = {k: getattr(self, k)[t].copy() for k in self._ROWS}
        return out | {"r": {k: v[:, t].copy() for k, v in self.r.items()},
                      "q": {k: v[:, t].copy() for k, v in self.q.items()},
                      "naps": {g: v[t].copy() for g, v in self.naps.items()},
                      "counts": {g: v[t].copy() for g, v in self.counts.items()},
                      "per_sample": self.per_sample[:, t].copy(), "sample_corr": self.sample_corr[t]}

    def set_row(self, s: int, row: dict) -> None:
        """Write a :meth:`row` into row ``s``."""
        for k in self._ROWS:
            getattr(self, k)[s] = row[k]
        for k in ("r", "q"):
            for key, v in row[k].items():
                getattr(self, k)[key][:, s] = v
        for k in ("naps", "counts"):
            for g, v in row[k].items():
                getattr(self, k)[g][s] = v
        self.per_sample[:, s] = row["per_sample"]
        self.sample_corr[s] = row["sample_corr"]


def _snapshot_stats(lp: _LayerPass, s: int, a: np.ndarray, rank_source: np.ndarray, labels: np.ndarray,
                    conf: np.ndarray, df: int, df_within: int, ws: stats.Workspace,
                    usable: np.ndarray | None = None) -> None:
    """Correlations of one snapshot: ``a`` (n, N), ``conf`` (n, M) -> rows ``s`` of the result arrays.

    ``usable`` (n, N), bool: the samples each neuron is correlated over (its finite values of samples with
    finite outputs), each neuron with its own degrees of freedom; ``None``: every sample, ``df`` and ``df_within``.
    """
    if usable is None:
        r = stats.snapshot_correlations(a, conf, labels, rank_source, workspace=ws)
        dofs: dict[str, int | np.ndarray] = {"pearson": df, "pearson_within": df_within}
    else:
        r, n_used, n_cls = stats.masked_correlations(a, conf, labels, usable, rank_source, workspace=ws)
        dofs = {"pearson": n_used - 2, "pearson_within": n_used - n_cls - 1}  # [N] each
    for k, v in r.items():
        lp.r[k][:, s] = v.T
    for key, dof in dofs.items():
        p = stats.corr_pvalues(r[key].T, dof)  # [M, N]
        lp.q[key][:, s] = stats.bh_fdr(p)


class _Cka:
    """Linear CKA of each snapshot to the reference snapshot, over the samples finite in both.

    Args:
        ref: array of shape (n, N), the reference activations (stored dtype; non-finite rows are left out).
        sub: the fixed subset of at most :data:`CKA_MAX_SAMPLES` samples (``slice(None)``: all of them).
    """

    def __init__(self, ref: np.ndarray, sub: slice | np.ndarray):
        idx = np.arange(len(ref))[sub]
        y = stats.as_float(ref[sub], np.float32)  # [n_sub, N]
        ok = np.isfinite(y).all(axis=1)
        self._sub, self._idx, self._ref = (sub, idx, y) if ok.all() else (idx[ok], idx[ok], y[ok])
        self._default = stats.CkaReference(self._ref, dtype=np.float32) if len(self._ref) >= 2 else None

    def score(self, a: np.ndarray, keep: np.ndarray | None = None) -> float:
        """CKA of ``a`` (n, N) to the reference over the samples where ``keep`` (n,), bool, holds (default all)."""
        if keep is None or keep[self._idx].all():
            return self._default.score(a[self._sub]) if self._default is not None else float("nan")
        k = keep[self._idx]
        if k.sum() < 2:
            return float("nan")
        return stats.CkaReference(self._ref[k], dtype=np.float32).score(a[self._idx[k]])


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
    cache = Path(cache_path) if cache_path is not None else path.parent / "analysis.h5"
    cache.parent.mkdir(parents=True, exist_ok=True)  # fail here, not after the work, if it cannot be made
    if provisional_layouts is not None and not isinstance(provisional_layouts, bool):
        raise TypeError(f"The 'provisional_layouts' parameter must be None, True or False. Got "
                        f"{provisional_layouts!r} instead.")
    report = progress or (lambda stage, done, total: None)
    keep_provisional = _provisional_allowed(path, provisional_layouts)  # before this process opens the store
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
            cached = _load_cache(cache, fingerprint, key["params_key"])
            if cached is not None and (cached.reference_snapshot < 0 or keep_provisional):
                return cached  # (a provisional reference no longer allowed: extended by 0 snapshots below, moved)
        outcome_ok = _outcome_ok(store, probe_set)  # [S, n]
        divergence = _find_divergence(store, probe_set, outcome_ok)
        n_s = store.n_snapshots if divergence is None else divergence.snapshot
        if n_s == 0:
            what = " and ".join([f"layer {la!r}" for la in divergence.layers] + ["the outputs"] * divergence.outputs)
            raise ValueError(f"{path} diverged from its first snapshot (step {divergence.step}) on: {what} hold more "
                             f"than {DIVERGED_SHARE:.0%} non-finite values for the {probe_set!r} probe set at every "
                             "snapshot; nothing finite to analyse.")
        base = None if refresh or params.bins != "snapshot" else _incremental_base(cache, store, params, n_s)
        n_old = base.state.n_snapshots if base is not None else 0
        ref_at = -1  # the provisional reference snapshot (layouts, CKA); -1: the last one
        cached_ref = -1 if base is None else \
            base.results.reference_snapshot if base.results.reference_snapshot >= 0 else n_old - 1
        if base is not None and keep_provisional and n_s < LAYOUT_REFIT_GROWTH * (cached_ref + 1):
            ref_at = cached_ref
        sha_thread, sha = _sha256_async(store)
        task = {"path": str(path), "until_good": bool(until_good), "n_s": int(n_s), "fingerprint": fingerprint,
                "params": params.to_dict()}
        report("training curves", 0, 1)
        curves = _curves(store, n_s)
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
            calibration=_calibration(store, n_s, params.ece_bins, n_old,
                                     None if base is None else base.results.calibration),
            temperature=(np.asarray(store.temperature[:n_s], np.float64) if store.temperature is not None
                         else np.zeros(0)),
            loss_min=loss_min, ece_trend=_ece_trend(store, ref_probe, n_s, loss_min, params) if ref_probe else {},
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


def _provisional_allowed(path: Path, provisional_layouts: bool | None) -> bool:
    """Whether an incremental analysis may keep a provisional reference (``analyze``'s ``provisional_layouts``)."""
    if provisional_layouts is not None:
        return provisional_layouts
    try:  # (a reader holds HDF5's shared lock too: this is asked before the analysis opens the store)
        return writer_state(path) == "live"
    except OSError:
        return False


@dataclass
class _Base:
    """A cached analysis that an incremental analysis extends: the cache's results and its sidecar."""

    results: AnalysisResults
    state: incremental.State


def _incremental_base(cache: Path, store: Store, params: AnalysisParams, n_s: int) -> _Base | None:
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
        return _Base(res, st)
    except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError):
        return None  # unreadable: start afresh


def _load_cache(cache: Path, fingerprint: str, params_key: str | None = None) -> AnalysisResults | None:
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
    return _load_cache(Path(cache_path) if cache_path is not None else path.parent / "analysis.h5", fingerprint)


@dataclass
class LayerContext:
    """What every snapshot of one layer is computed against, built from the store alone (:func:`layer_context`).

    A Dask worker builds the same context from its own handle on the store, so only plain parameters travel.
    """

    name: str
    probe: str
    n: int  # probe samples
    n_neurons: int
    n_classes: int
    n_bins: int
    measures: list[str]
    labels: np.ndarray  # (n,)
    preds: np.ndarray  # (S, n), -1 where the outputs are not finite
    corrects: np.ndarray  # (S, n), -1 where the outputs are not finite
    bins: np.ndarray  # (S, n), confidence bin of each sample
    names_b: list[str]
    conf_all: np.ndarray  # (S, n, M) float64
    outcome_ok: np.ndarray  # (S, n) bool
    sizes: dict[str, int]  # groups per grouping
    off: dict[str, int]  # first row of each grouping in the stacked one-hot
    g_total: int
    cols: np.ndarray  # (G_groupings * n,)
    df: int
    df_within: int
    boot: evidence.Bootstrap
    cka: _Cka
    steps: np.ndarray  # (S_total,)
    params: AnalysisParams


def layer_context(store: Store, name: str, params: AnalysisParams, n_s: int, outcome_ok: np.ndarray,
                  cka_ref: int | None = None) -> LayerContext:
    """The context of one layer over the first ``n_s`` snapshots (the last of them is the CKA reference).

    ``outcome_ok`` (n_s, n), bool: samples with finite outputs (the others are in no prediction or confidence
    group and out of the correlations and per-sample statistics). ``cka_ref``: another CKA reference snapshot
    (a provisional one, :func:`analyze`).
    """
    probe, measure, n_bins, seed = params.probe_set, params.measure, params.n_bins, params.random_state
    labels = store.labels(probe)
    preds, corrects = store.pred(probe)[:n_s], store.correct(probe)[:n_s]
    measures = list(store.measures)
    conf_all = np.stack([store.conf(probe, m)[:n_s] for m in measures], axis=-1).astype(np.float64)  # [S, n, M]
    primary = conf_all[..., measures.index(measure)]
    if not outcome_ok.all():  # samples with non-finite outputs: in no prediction or confidence group
        primary = np.where(outcome_ok, primary, np.nan)
        preds = np.where(outcome_ok, preds, -1)
        corrects = np.where(outcome_ok, corrects, -1)
    if params.bins == "pooled":
        edges = naps.confbin_edges(primary, n_bins)
        bins = naps.assign_bins(primary, edges)
        names_b = naps.bin_names(edges)
    else:
        bins = naps.snapshot_bins(primary, n_bins)
        names_b = naps.relative_bin_names(n_bins)
    n_classes = len(store.class_names)
    sizes = {g: naps.group_index(g, labels, labels, labels, labels, n_classes, n_bins)[1] for g in naps.GROUPINGS}
    n = len(labels)
    boot = evidence.Bootstrap(labels, n_classes, params.n_boot, seed=seed)
    n_present = len(np.unique(labels))
    df, df_within = n - 2, n - n_present - 1
    n_cka = params.cka_max_samples
    sub = np.sort(np.random.default_rng(seed).permutation(n)[:n_cka]) if n > n_cka else slice(None)
    cka = _Cka(store.acts(probe, name, n_s - 1 if cka_ref is None else cka_ref, dtype=None), sub)
    offsets = np.cumsum([0] + [sizes[g] for g in naps.GROUPINGS])
    off = dict(zip(naps.GROUPINGS, offsets[:-1]))
    g_total = int(offsets[-1])
    cols = np.tile(np.arange(n), len(naps.GROUPINGS))
    steps = store.steps
    return LayerContext(name, probe, n, store.layers[name].n_neurons, n_classes, n_bins, measures, labels, preds,
                        corrects, bins, names_b, conf_all, outcome_ok, sizes, off, g_total, cols, df, df_within, boot,
                        cka, steps, params)


def _stream_layer(store: Store, ctx: LayerContext, lp: _LayerPass, done_cb: Callable[[int], None],
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


def cka_row(ctx: LayerContext, s: int, stored: np.ndarray, ws: stats.Workspace) -> float:
    """The CKA of snapshot ``s`` (``stored``: array of shape (n, N)) to the reference, as :func:`process_snapshot`.

    The same samples are left out (a non-finite activation in the layer, or non-finite outputs) and the same
    float32 values scored, so the number is the one :func:`process_snapshot` writes.
    """
    a = stats.as_float(stored, np.float32, out=ws.get("acts", stored.shape, np.float32))  # [n, N]
    keep = np.isfinite(a).all(axis=1) & ctx.outcome_ok[s]
    return ctx.cka.score(a, None if keep.all() else keep)


def process_snapshot(ctx: LayerContext, s: int, stored: np.ndarray, ws: stats.Workspace, lp: _LayerPass,
                     t: int) -> None:
    """Every per-snapshot result of snapshot ``s`` of one layer, written into row ``t`` of ``lp``.

    Args:
        ctx: the layer's context (:func:`layer_context`).
        s: the snapshot.
        stored: array of shape (n, N), the snapshot's activations in the stored dtype.
        ws: scratch arrays of the calling thread.
        lp: the results; row ``t`` is written (``t = s`` in process, ``0`` on a Dask worker).
        t: the row of ``lp``.
    """
    name, n, n_neurons, n_classes, n_bins = ctx.name, ctx.n, ctx.n_neurons, ctx.n_classes, ctx.n_bins
    labels, preds, corrects, bins, conf_all = ctx.labels, ctx.preds, ctx.corrects, ctx.bins, ctx.conf_all
    outcome_ok, sizes, off, g_total, cols, boot, cka = (ctx.outcome_ok, ctx.sizes, ctx.off, ctx.g_total, ctx.cols,
                                                        ctx.boot, ctx.cka)
    df, df_within, steps = ctx.df, ctx.df_within, ctx.steps
    try:
        a = stats.as_float(stored, np.float32, out=ws.get("acts", stored.shape, np.float32))  # [n, N]
        scratch = ws.get("scratch", a.shape, np.float32)
        abs_rows = np.abs(a, out=scratch).sum(axis=1).astype(np.float64)  # [n] (pairwise sums per row)
        # A row holding NaN or inf sums to NaN or inf: the sums find non-finite values without a pass of their
        # own, and an all-finite snapshot with finite outputs takes the fast path (keep is None).
        keep = None  # [n], bool: the samples behind the per-sample statistics (None: every sample)
        finite = None  # [n, N], bool: the finite activations (computed only when some row is not finite)
        out_ok = outcome_ok[s]
        if not (np.isfinite(abs_rows).all() and out_ok.all()):
            finite = np.isfinite(a)
            keep = finite.all(axis=1) & out_ok
            lp.excluded_values[t] = finite.size - np.count_nonzero(finite)
            lp.excluded_samples[t] = n - np.count_nonzero(keep)
            if keep.all():  # only sums that overflowed: every value is finite after all
                keep = finite = None
        # Sums of every group of every grouping in one product: [G_total, n] @ [n, N].
        idx = [naps.group_index(g, labels, preds[s], corrects[s], bins[s], n_classes, n_bins)[0]
               for g in naps.GROUPINGS]
        rows = np.concatenate([off[g] + i for g, i in zip(naps.GROUPINGS, idx)])
        onehot = np.zeros((g_total, n), np.float32)
        if keep is None:
            onehot[rows, cols] = 1.0
            sums = (onehot @ a).astype(np.float64)  # [G_total, N]
            counts = np.bincount(rows, minlength=g_total)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = sums / counts[:, None]
            used = counts
        else:
            valid = np.concatenate(idx) >= 0  # samples in no group (-1) stay out of that grouping
            onehot[rows[valid], cols[valid]] = 1.0
            counts = np.bincount(rows[valid], minlength=g_total)
            # Each neuron's NAP averages its own finite values: [G_total, n] @ [n, N] twice.
            n_finite = (onehot @ finite.astype(np.float32)).astype(np.float64)  # [G_total, N]
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (onehot @ np.where(finite, a, np.float32(0))).astype(np.float64) / n_finite
            # Sums over the kept samples only, for the per-sample statistics and their aggregates.
            sums = (onehot[:, keep] @ a[keep]).astype(np.float64)  # [G_total, N]
            used = np.count_nonzero(onehot[:, keep], axis=1)
        for g in naps.GROUPINGS:
            sl = slice(off[g], off[g] + sizes[g])
            lp.naps[g][t], lp.counts[g][t] = means[sl], counts[sl]
        # Values for the moments (float32 is exact for float16 data), the stored values for the ranks.
        _snapshot_stats(lp, t, a, stored, labels, conf_all[s], df, df_within, ws,
                        None if keep is None else finite & out_ok[:, None])
        kept = slice(None) if keep is None else np.flatnonzero(keep)
        n_kept = n if keep is None else len(kept)
        bins_kept = bins[s][kept]
        abs_sums = np.bincount(bins_kept, abs_rows[kept], minlength=n_bins)  # [B]
        n_bin = used[off["confbin"]: off["confbin"] + n_bins]
        if n_kept:
            lp.strength[t] = abs_sums.sum() / (n_kept * n_neurons)
            lp.per_sample[0, t, kept] = abs_rows[kept] / n_neurons
            # Distinctness from centred float64 values (no cancellation; evidence.class_distinctness).
            lp.per_sample[1, t, kept], lp.distinctness[t], by_bin = evidence.class_distinctness(
                a[kept], labels[kept], n_classes, bins_kept, n_bins)
            lp.distinctness_by_bin[t] = np.where(n_bin > 0, by_bin, np.nan)
        lp.sample_corr[t] = boot.correlations(lp.per_sample[:, t], conf_all[s])
        for b in range(n_bins):
            if n_bin[b]:
                lp.strength_by_bin[t, b] = abs_sums[b] / (n_bin[b] * n_neurons)
        lp.cka[t] = cka.score(a, keep)
        ak, lk = (a, labels) if keep is None else (a[kept], labels[kept])
        lp.dormant[t], lp.dormant_mask[t] = collapse.dormant_share(ak, ctx.params.dormant_tau)
        lp.nc1[t] = collapse.nc1(ak, lk, n_classes)
        if s in (0, len(ctx.conf_all) - 1) and len(lk):  # the ends of the trends: replicates over probe samples
            for b, i in enumerate(trend_resamples(n, keep, ctx.params)):  # the same resamples at both ends: paired
                lp.boot_ends[t, 0, b] = collapse.dormant_share(ak[i], ctx.params.dormant_tau)[0]
                lp.boot_ends[t, 1, b] = collapse.nc1(ak[i], lk[i], n_classes)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        raise ValueError(f"Analysis failed for layer {name!r} at snapshot {s} (step {steps[s]}, "
                         f"activations {stored.shape})") from err



def task_context(store: Store, task: dict) -> LayerContext:
    """The context of the layer a Dask task describes (``task`` from :func:`analyze`, plus ``name``).

    Raises:
        ValueError: the store is no longer the one being analysed (its fingerprint changed).
    """
    now = json.dumps(store_fingerprint(store), sort_keys=True)
    if now != task["fingerprint"]:
        raise ValueError(f"{task['path']} changed while it was analysed (fingerprint {now} vs "
                         f"{task['fingerprint']} when the analysis started).")
    n_s, params = task["n_s"], AnalysisParams.from_dict(task["params"])
    return layer_context(store, task["name"], params, n_s, _outcome_ok(store, params.probe_set)[:n_s])


def trend_resamples(n: int, keep: np.ndarray | None = None,
                    params: AnalysisParams = AnalysisParams()) -> Iterator[np.ndarray]:
    """The ``params.n_boot_trends`` bootstrap resamples of the probe samples behind the trends, paired over snapshots.

    Drawn from one seed (``params.random_state``) over all n probe samples, so the first and the last snapshot see
    the same resamples and a change between them is a paired difference (with every snapshot identical, every
    replicate of the change is exactly 0). Where some samples are left out at a snapshot (``keep``, shape (n,),
    bool: the samples with finite activations and outputs), each resample keeps its draws of the remaining ones.

    Yields:
        Arrays of int indices into the kept samples (``np.flatnonzero(keep)``; into 0 .. n - 1 without ``keep``).
    """
    rng = np.random.default_rng(params.random_state)
    pos = None if keep is None else np.cumsum(keep) - 1  # sample -> its index among the kept samples
    for _ in range(params.n_boot_trends):
        i = rng.integers(0, n, n)
        yield i if keep is None else pos[i[keep[i]]]


def snapshot_row(ctx: LayerContext, s: int, stored: np.ndarray, ws: stats.Workspace) -> dict:
    """The results of snapshot ``s`` alone (``stored``: array of shape (n, N)), as :meth:`_LayerPass.row`."""
    lp = _LayerPass(1, ctx.n_neurons, ctx.measures, ctx.n_bins, ctx.sizes, ctx.n, ctx.params.n_boot_trends)
    process_snapshot(ctx, s, stored, ws, lp, 0)
    return lp.row(0)


@dataclass
class LayerRun:
    """What the analysis of every layer of one store shares (:func:`_analyze_layer`).

    Attributes:
        store: the open store.
        params: the analysis parameters (the measure resolved).
        n_s: the snapshots analysed (the last of them is the reference, unless ``reference`` >= 0).
        outcome_ok: array of shape (n_s, n), bool: samples with finite outputs (the others are in no prediction or
            confidence group and out of the correlations and per-sample statistics).
        report: the progress callback.
        cluster: computes the snapshots elsewhere from ``task`` (plain parameters: the store's path, the
            analysis parameters; the layer is added), or ``None``: in this process.
        task: the Dask task of the analysis.
        reference: >= 0: a provisional reference snapshot (the cache's own); -1: the last snapshot.
    """

    store: Store
    params: AnalysisParams
    n_s: int
    outcome_ok: np.ndarray
    report: Progress
    cluster: SnapshotCluster | None = None
    task: dict | None = None
    reference: int = -1


def _analyze_layer(run: LayerRun, name: str, base: tuple[LayerResult, incremental.LayerState, int, int] | None = None
                   ) -> tuple[LayerResult, incremental.LayerState]:
    """One layer over the first ``run.n_s`` snapshots (:class:`LayerRun`).

    With ``base`` (the cached layer result, its sidecar arrays, their snapshot count S_old and the cache's
    reference snapshot), the rows of snapshots 0 .. S_old - 1 are taken from it and snapshots S_old .. n_s - 1
    computed (in this process). ``run.reference`` >= 0 (provisional, the cache's own reference snapshot): the
    cached layouts and CKA are kept and the new snapshots' CKA is scored against that snapshot; else every
    snapshot's CKA is scored against the last one (unless the cache's reference already is the last) and the
    layouts are fitted there.

    Returns:
        The layer's results and the per-sample arrays an incremental analysis needs next time.
    """
    store, params, n_s, report, reference = run.store, run.params, run.n_s, run.report, run.reference
    probe, measures = params.probe_set, list(store.measures)
    spec = store.layers[name]
    n_neurons = spec.n_neurons
    ctx = layer_context(store, name, params, n_s, run.outcome_ok, None if reference < 0 else reference)
    names_b, boot = ctx.names_b, ctx.boot
    lp = _LayerPass(n_s, n_neurons, measures, params.n_bins, ctx.sizes, ctx.n, params.n_boot_trends)
    stage = f"{name}: snapshots"
    report(stage, 0, n_s)
    start, rescore = 0, False
    if base is not None:  # the cached rows; below, the new snapshots (and the old ones' CKA if the reference moved)
        start = base[2]
        _fill_from_cache(lp, base[0], base[1], start)
        rescore = base[3] != (reference if reference >= 0 else n_s - 1)  # the reference moved
        if not rescore:
            lp.cka[:start] = base[0].cka
        if start == n_s:  # no new snapshot: the last one's replicates (the trends' end) are the cached ones
            lp.boot_ends[n_s - 1] = base[1].boot_ends[1]
    if start == n_s and not rescore:
        report(stage, n_s, n_s)
    elif run.cluster is not None and base is None:  # one task per snapshot on a Dask cluster; merged in order
        for s, row in enumerate(run.cluster.map_snapshots(dict(run.task or {}, name=name), n_s)):
            lp.set_row(s, row)
            report(stage, s + 1, n_s)
    else:
        _stream_layer(store, ctx, lp, lambda done: report(stage, done, n_s), start, rescore)
    per_sample, sample_corr = lp.per_sample, lp.sample_corr
    grouped = {g: GroupedNaps(g, naps.group_names(g, store.class_names, names_b), lp.naps[g], lp.counts[g])
               for g in naps.GROUPINGS}
    corr = {}
    first = start if 0 < start < n_s else 0  # the summaries of each snapshot depend on that snapshot alone
    for j, m in enumerate(measures):
        summary: dict[str, np.ndarray] = {}
        for suffix, rk in (("", "pearson"), ("_within", "pearson_within")):
            rows = [stats.corr_summary(lp.r[rk][j, s], lp.q[rk][j, s], params.alpha) for s in range(first, n_s)]
            for k in rows[0]:
                summary[k + suffix] = np.array([r[k] for r in rows])
                if first:  # the cached snapshots' rows (float64, as these)
                    summary[k + suffix] = np.concatenate([base[0].corr[m].summary[k + suffix][:first],
                                                          summary[k + suffix]])
        corr[m] = CorrResult(m, *(lp.r[k][j] for k in ("pearson", "spearman", "pearson_within", "spearman_within")),
                             lp.q["pearson"][j], lp.q["pearson_within"][j], summary, params.alpha)
    present = np.flatnonzero(np.isfinite(lp.naps["class"][-1]).any(axis=1))  # classes with a finite class NAP
    if len(present) < 2:
        held = f"one class ({store.class_names[present[0]]!r})" if len(present) else "no class with finite values"
        warnings.warn(f"layer {name!r}: the probe set {probe!r} holds {held} at the last analysed snapshot; layouts "
                      "and maps (neurons placed by their responses to the classes) and distinctness (per sample "
                      "and per layer) need at least 2 classes: this layer has no layouts or maps and its "
                      "distinctness is NaN. Analyse a probe set with at least 2 classes for them.", UserWarning,
                      stacklevel=2)
    layouts = base[0].layouts if reference >= 0 and base is not None else \
        _layouts(grouped["class"].naps[-1], params, name, report)
    default_layout = params.default_layout
    if not layouts:
        default_layout = ""  # fewer than 3 neurons: no map
    elif default_layout is None:
        default_layout = pick_default_layout(layouts, params.min_map_fill)
    elif default_layout not in layouts:
        raise ValueError(f"The 'default_layout' parameter must be one of {sorted(layouts)}. "
                         f"Got {default_layout!r} instead.")
    ev = boot.evidence(per_sample, sample_corr, measures)
    trends = {}
    for k, key in enumerate(("dormant_change", "nc1_log_ratio")):
        first, last = lp.boot_ends[0, k].astype(np.float64), lp.boot_ends[n_s - 1, k].astype(np.float64)
        point = (lp.dormant if k == 0 else lp.nc1)[[0, n_s - 1]]
        with np.errstate(divide="ignore", invalid="ignore"):
            if k == 0:
                effect, reps = point[1] - point[0], last - first
            else:  # NC1 changes by orders of magnitude: its trend is the log of last / first
                effect, reps = np.log(point[1] / point[0]), np.log(last / first)
        trends[key] = trend_interval(effect, reps, params.n_boot_trends)
    gap = _nap_gap(store, name, probe, lp.naps["class"], n_s, start, None if base is None else base[0].nap_gap) \
        if probe != TRAIN_PROBE else np.zeros(0)
    state = incremental.LayerState(lp.per_sample, lp.boot_ends[[0, n_s - 1]], lp.sample_corr)
    return LayerResult(
        name=name, n_neurons=n_neurons, reduction=spec.reduction, naps=grouped, layouts=layouts,
        default_layout=default_layout,
        color_limit=maps.color_limit(gn.naps for gn in grouped.values()),
        color_limit_contrast=maps.color_limit(naps.contrast_normalise(gn.naps[s]) for gn in grouped.values()
                                              for s in range(n_s)),
        nonnegative=maps.all_nonnegative(gn.naps for gn in grouped.values()),
        corr=corr, strength=lp.strength, distinctness=lp.distinctness, bin_names=names_b,
        strength_by_bin=lp.strength_by_bin, distinctness_by_bin=lp.distinctness_by_bin, cka=lp.cka, evidence=ev,
        excluded_values=lp.excluded_values, excluded_samples=lp.excluded_samples,
        dormant=lp.dormant, dormant_mask=lp.dormant_mask, nc1=lp.nc1, nap_gap=gap, trends=trends,
    ), state


def _fill_from_cache(lp: _LayerPass, lr: LayerResult, ls: incremental.LayerState, n_old: int) -> None:
    """Rows 0 .. n_old - 1 of ``lp`` from a cached layer result and its sidecar arrays (all but the CKA)."""
    old = slice(0, n_old)
    for j, m in enumerate(lp.measures):
        cr = lr.corr[m]
        for k in ("pearson", "spearman", "pearson_within", "spearman_within"):
            lp.r[k][j, old] = getattr(cr, k)
        lp.q["pearson"][j, old] = cr.q_pearson
        lp.q["pearson_within"][j, old] = cr.q_pearson_within
    for g in lp.naps:
        lp.naps[g][old] = lr.naps[g].naps
        lp.counts[g][old] = lr.naps[g].counts
    for k in ("strength", "distinctness", "strength_by_bin", "distinctness_by_bin", "excluded_values",
              "excluded_samples", "dormant", "dormant_mask", "nc1"):
        getattr(lp, k)[old] = getattr(lr, k)
    lp.boot_ends[0] = ls.boot_ends[0]
    lp.per_sample[:, old] = ls.per_sample
    lp.sample_corr[:n_old] = ls.sample_corr


def trend_interval(effect: float, reps: np.ndarray, n_boot: int = N_BOOT_TRENDS) -> np.ndarray:
    """``[effect, low, high]``: the effect with the 95 % percentile interval of its bootstrap replicates.

    ``reps`` has shape (R,); non-finite replicates are left out; the bounds are NaN when fewer than half of the
    ``n_boot`` resamples gave a finite one.
    """
    reps = reps[np.isfinite(reps)]
    if not np.isfinite(effect) or len(reps) < n_boot // 2:
        return np.array([effect, np.nan, np.nan])
    lo, hi = np.percentile(reps, [2.5, 97.5])
    return np.array([effect, lo, hi])


def _nap_gap(store: Store, name: str, probe: str, class_naps: np.ndarray, n_s: int, start: int = 0,
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


def _calibrated_conf(store: Store, probe: str, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The calibrated measures of ``probe`` at the snapshots ``rows`` (int array of shape (R,)).

    Returns:
        ``(conf, temperature_cv)``: measure -> array of shape (R, n), float64, NaN where the outputs are
        non-finite: the recorded ``max_prob`` and ``temp_prob`` (where the store has them) and ``temp_prob_cv``,
        computed here from the stored logits (:func:`.calibration.cross_fitted_temperature`); and the
        cross-fitted temperatures, shape (R, 2).
    """
    ok = _outcome_ok(store, probe)[rows]  # [R, n]
    out = {m: np.where(ok, store.conf(probe, m)[rows].astype(np.float64), np.nan)
           for m in CALIBRATED_MEASURES if m in store.measures}
    cv, temps = calibration.cross_fitted_temperature(store.logits(probe)[rows], store.labels(probe))
    out[calibration.TEMP_PROB_CV] = np.where(ok, cv, np.nan)
    return out, temps


def _calibration(store: Store, n_s: int, ece_bins: int, start: int = 0,
                 prev: dict[str, Calibration] | None = None) -> dict[str, Calibration]:
    """Calibration of every probe set over the first ``n_s`` snapshots (:class:`.results.Calibration`).

    Every snapshot's calibration depends on that snapshot alone: with ``start`` > 0, snapshots 0 .. start - 1
    are taken from ``prev`` (the cached calibration of at least ``start`` snapshots) and the others computed.
    """
    out = {}
    for p in store.probes:
        if start and start == n_s:
            out[p] = prev[p]
            continue
        correct = store.correct(p)[start:n_s].astype(bool)  # [S, n]
        confs, temps = _calibrated_conf(store, p, np.arange(start, n_s))
        ece, counts, conf, acc = [], [], [], []
        for c in confs.values():
            k, mc, a = calibration.reliability(c, correct, ece_bins)
            counts.append(k), conf.append(mc), acc.append(a)
            ece.append(calibration.ece(c, correct, ece_bins))
        arrays = [np.array(ece), np.array(counts), np.array(conf), np.array(acc)]
        if start:
            old = prev[p]
            if old.measures != list(confs):
                raise ValueError(f"the cached calibration of {p!r} has measures {old.measures}, not {list(confs)}")
            arrays = [np.concatenate([o[:, :start], x], axis=1)
                      for o, x in zip((old.ece, old.counts, old.conf, old.accuracy), arrays)]
            temps = np.concatenate([old.temperature_cv[:start], temps])
        out[p] = Calibration(list(confs), *arrays, ece_bins, temps)
    return out


def loss_minimum(results_curves: dict[str, dict[str, np.ndarray]], probe: str) -> int:
    """Snapshot index of the lowest mean loss of ``probe`` (the first of equal minima), or -1 without one."""
    loss = np.asarray(results_curves.get(probe, {}).get("loss", []), np.float64)
    if loss.size == 0 or not np.isfinite(loss).any():
        return -1
    return int(np.nanargmin(loss))


def _ece_trend(store: Store, probe: str, n_s: int, s_min: int, params: AnalysisParams) -> dict[str, np.ndarray]:
    """Change of ECE from the held-out loss minimum (snapshot ``s_min``) to the last snapshot, per measure.

    ``[effect, low, high]`` per calibrated measure: bootstrap over the probe samples of ``probe`` (the same
    resample at both snapshots), ``params.n_boot_trends`` resamples, percentile interval.
    """
    out = {}
    if s_min < 0 or s_min >= n_s - 1:
        return out
    ends = np.array([s_min, n_s - 1])
    correct = store.correct(probe)[ends].astype(bool)  # [2, n]
    rng = np.random.default_rng(params.random_state)
    idx = rng.integers(0, correct.shape[1], (params.n_boot_trends, correct.shape[1]))  # [R, n]
    for m, c in _calibrated_conf(store, probe, ends)[0].items():  # c: [2, n]
        point = calibration.ece(c, correct, params.ece_bins)
        reps = np.array([np.diff(calibration.ece(c[:, i], correct[:, i], params.ece_bins))[0] for i in idx])
        out[m] = trend_interval(float(point[1] - point[0]), reps, params.n_boot_trends)
    return out


def _layouts(class_naps: np.ndarray, params: AnalysisParams, layer: str, report: Progress) -> dict[str, LayoutResult]:
    """Layouts of the neurons from their class NAPs (shape (C, N)) at the reference snapshot.

    Classes without a finite value for any neuron (absent from the probe set) are left out of the features; a
    neuron with a non-finite value among the rest (every value of one of its classes was NaN or inf) is placed
    nowhere: the methods see only the finite rows, its row of ``xy`` is NaN, and the maps interpolate between
    the placed neurons (``interp.neurons`` indexes all N).
    """
    x = class_naps.T.astype(np.float64)  # [N, C]
    x = x[:, np.isfinite(x).any(axis=0)]  # classes absent from the probe set
    placed = np.flatnonzero(np.isfinite(x).all(axis=1)) if x.shape[1] else np.zeros(0, np.int64)
    n_all, x = len(x), x[placed]  # [N_placed, C]
    methods = default_layout_methods(len(x)) if params.layout_methods is None else list(params.layout_methods)
    out: dict[str, LayoutResult] = {}
    if len(x) < 3 or x.shape[1] < 2:  # a 2-D map needs a triangle of neurons, and profiles over 2+ classes
        return out
    stage = f"{layer}: layouts"
    report(stage, 0, len(methods))
    for i, method in enumerate(methods):
        est = NeuronLayout(method=method, metric=params.metric, random_state=params.random_state,
                           max_mds_neurons=max(MAX_MDS_NEURONS, 1000))
        try:
            est.fit(x)
        except ValueError as err:
            raise ValueError(f"Layout {method!r} failed for layer {layer!r} ({x.shape[0]} neurons)") from err
        xy = est.embedding_  # [N_placed, 2]
        op = maps.interp_operator(xy, grid=params.grid)
        scores = {"trustworthiness": trustworthiness_score(x, xy), "shepard": shepard_score(x, xy),
                  "smoothness": maps.smoothness(op, x.T)}  # NaN without a warning where no pixels are adjacent
        if len(x) < n_all:  # back to all N neurons: NaN rows for those placed nowhere
            xy = np.full((n_all, 2), np.nan, np.float32)
            xy[placed] = est.embedding_
            op = replace(op, neurons=placed[op.neurons].astype(np.int32))
        out[est.name] = LayoutResult(method=est.name, xy=xy, seconds=float(est.seconds_), interp=op, **scores)
        report(stage, i + 1, len(methods))
    return out
