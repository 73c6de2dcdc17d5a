"""One layer over the snapshots: its streamed rows, correlation summaries, layouts, evidence and trends.

:func:`analyze_layer` streams the layer (:mod:`.stream`, or a Dask cluster), takes the rows of an incremental
analysis's cached snapshots from the cache, and computes what spans snapshots: the correlation summaries, the
layouts (fitted on the class NAPs of the reference snapshot, :func:`fit_layouts`) and the default layout, the
colour limits, the bootstrap evidence and the trends.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from ..instrument.store import Store
from . import incremental, maps, naps, stats
from .layouts import NeuronLayout, shepard_score, trustworthiness_score
from .outcomes import TRAIN_PROBE, trend_interval
from .params import AnalysisParams
from .results import CorrResult, GroupedNaps, LayerResult, LayoutResult
from .snapshot import LayerRows, layer_context
from .stream import nap_gap, stream_layer

MAX_TSNE_NEURONS = 2048
MAX_MDS_NEURONS = 256
MIN_MAP_FILL = AnalysisParams.min_map_fill  # see pick_default_layout; a round body fills about 0.6-0.8 of its square

Progress = Callable[[str, int, int], None]


class SnapshotCluster(Protocol):
    """Computes the snapshots of a layer elsewhere (:class:`topotrace.analysis.distributed.DaskCluster`)."""

    def map_snapshots(self, task: dict, n_s: int) -> Iterator[dict]:
        """The :meth:`.snapshot.LayerRows.row` of snapshots 0 .. n_s - 1 of ``task["name"]``, in order."""
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


@dataclass
class LayerRun:
    """What the analysis of every layer of one store shares (:func:`analyze_layer`).

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


def analyze_layer(run: LayerRun, name: str, base: tuple[LayerResult, incremental.LayerState, int, int] | None = None
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
    lp = LayerRows(n_s, n_neurons, measures, params.n_bins, ctx.sizes, ctx.n, params.n_boot_trends)
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
        stream_layer(store, ctx, lp, lambda done: report(stage, done, n_s), start, rescore)
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
        fit_layouts(grouped["class"].naps[-1], params, name, report)
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
    gap = nap_gap(store, name, probe, lp.naps["class"], n_s, start, None if base is None else base[0].nap_gap) \
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


def _fill_from_cache(lp: LayerRows, lr: LayerResult, ls: incremental.LayerState, n_old: int) -> None:
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


def fit_layouts(class_naps: np.ndarray, params: AnalysisParams, layer: str,
                report: Progress) -> dict[str, LayoutResult]:
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
