"""The quantities of one snapshot of one layer: NAPs, correlations, strength, distinctness, CKA, collapse.

:func:`layer_context` gathers once per layer what every snapshot is computed against (labels, predictions,
confidence bins, the CKA reference, the bootstrap); :func:`process_snapshot` computes every per-snapshot result
of one snapshot into a row of :class:`LayerRows`, one small function per quantity. A Dask worker does the same
from plain parameters (:func:`task_context`, :func:`snapshot_row`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..instrument.store import Store
from . import collapse, evidence, naps, stats
from .cache import store_fingerprint
from .outcomes import finite_outcomes
from .params import AnalysisParams

N_BOOT_TRENDS = AnalysisParams.n_boot_trends


class LayerRows:
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


def _snapshot_stats(lp: LayerRows, s: int, a: np.ndarray, rank_source: np.ndarray, labels: np.ndarray,
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
        sub: the fixed subset of at most ``cka_max_samples`` samples (the parameter) (``slice(None)``: all of them).
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


def cka_row(ctx: LayerContext, s: int, stored: np.ndarray, ws: stats.Workspace) -> float:
    """The CKA of snapshot ``s`` (``stored``: array of shape (n, N)) to the reference, as :func:`process_snapshot`.

    The same samples are left out (a non-finite activation in the layer, or non-finite outputs) and the same
    float32 values scored, so the number is the one :func:`process_snapshot` writes.
    """
    a = stats.as_float(stored, np.float32, out=ws.get("acts", stored.shape, np.float32))  # [n, N]
    keep = np.isfinite(a).all(axis=1) & ctx.outcome_ok[s]
    return ctx.cka.score(a, None if keep.all() else keep)


def process_snapshot(ctx: LayerContext, s: int, stored: np.ndarray, ws: stats.Workspace, lp: LayerRows,
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
    try:
        a = stats.as_float(stored, np.float32, out=ws.get("acts", stored.shape, np.float32))  # [n, N]
        abs_rows = np.abs(a, out=ws.get("scratch", a.shape, np.float32)).sum(axis=1).astype(np.float64)  # [n]
        keep, finite = _left_out(ctx, s, a, abs_rows, lp, t)
        used = _group_means(ctx, s, a, keep, finite, lp, t)
        # Values for the moments (float32 is exact for float16 data), the stored values for the ranks.
        _snapshot_stats(lp, t, a, stored, ctx.labels, ctx.conf_all[s], ctx.df, ctx.df_within, ws,
                        None if keep is None else finite & ctx.outcome_ok[s][:, None])
        _per_sample(ctx, s, a, abs_rows, keep, used, lp, t)
        lp.cka[t] = ctx.cka.score(a, keep)
        _collapse(ctx, s, a, keep, lp, t)
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        raise ValueError(f"Analysis failed for layer {ctx.name!r} at snapshot {s} (step {ctx.steps[s]}, "
                         f"activations {stored.shape})") from err


def _left_out(ctx: LayerContext, s: int, a: np.ndarray, abs_rows: np.ndarray, lp: LayerRows,
              t: int) -> tuple[np.ndarray | None, np.ndarray | None]:
    """The samples behind the per-sample statistics and the finite values; the counts of those left out.

    A row holding NaN or inf sums (``abs_rows``, shape (n,): each sample's sum of |a|) to NaN or inf: the sums find
    non-finite values without a pass of their own, and an all-finite snapshot with finite outputs takes the fast
    path. Returns ``(keep, finite)``: arrays of shape (n,) and (n, N), bool, or ``(None, None)``: every sample.
    """
    out_ok = ctx.outcome_ok[s]
    if np.isfinite(abs_rows).all() and out_ok.all():
        return None, None
    finite = np.isfinite(a)
    keep = finite.all(axis=1) & out_ok
    lp.excluded_values[t] = finite.size - np.count_nonzero(finite)
    lp.excluded_samples[t] = ctx.n - np.count_nonzero(keep)
    if keep.all():  # only sums that overflowed: every value is finite after all
        return None, None
    return keep, finite


def _group_means(ctx: LayerContext, s: int, a: np.ndarray, keep: np.ndarray | None, finite: np.ndarray | None,
                 lp: LayerRows, t: int) -> np.ndarray:
    """The NAPs and counts of every group of every grouping (one product); returns the kept samples per group.

    Sums of every group of every grouping in one product: [G_total, n] @ [n, N]; each neuron's NAP averages its
    own finite values. Returns an array of shape (G_total,): the samples of each group behind the per-sample
    statistics.
    """
    idx = [naps.group_index(g, ctx.labels, ctx.preds[s], ctx.corrects[s], ctx.bins[s], ctx.n_classes, ctx.n_bins)[0]
           for g in naps.GROUPINGS]
    rows = np.concatenate([ctx.off[g] + i for g, i in zip(naps.GROUPINGS, idx)])
    onehot = np.zeros((ctx.g_total, ctx.n), np.float32)
    cols = ctx.cols
    if keep is None:
        onehot[rows, cols] = 1.0
        sums = (onehot @ a).astype(np.float64)  # [G_total, N]
        counts = np.bincount(rows, minlength=ctx.g_total)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts[:, None]
        used = counts
    else:
        valid = np.concatenate(idx) >= 0  # samples in no group (-1) stay out of that grouping
        onehot[rows[valid], cols[valid]] = 1.0
        counts = np.bincount(rows[valid], minlength=ctx.g_total)
        n_finite = (onehot @ finite.astype(np.float32)).astype(np.float64)  # [G_total, N]
        with np.errstate(invalid="ignore", divide="ignore"):
            means = (onehot @ np.where(finite, a, np.float32(0))).astype(np.float64) / n_finite
        used = np.count_nonzero(onehot[:, keep], axis=1)
    for g in naps.GROUPINGS:
        sl = slice(ctx.off[g], ctx.off[g] + ctx.sizes[g])
        lp.naps[g][t], lp.counts[g][t] = means[sl], counts[sl]
    return used


def _per_sample(ctx: LayerContext, s: int, a: np.ndarray, abs_rows: np.ndarray, keep: np.ndarray | None,
                used: np.ndarray, lp: LayerRows, t: int) -> None:
    """Activity strength and class distinctness: per sample, overall, per confidence bin; their correlations."""
    n, n_neurons, n_bins = ctx.n, ctx.n_neurons, ctx.n_bins
    kept = slice(None) if keep is None else np.flatnonzero(keep)
    n_kept = n if keep is None else len(kept)
    bins_kept = ctx.bins[s][kept]
    abs_sums = np.bincount(bins_kept, abs_rows[kept], minlength=n_bins)  # [B]
    n_bin = used[ctx.off["confbin"]: ctx.off["confbin"] + n_bins]
    if n_kept:
        lp.strength[t] = abs_sums.sum() / (n_kept * n_neurons)
        lp.per_sample[0, t, kept] = abs_rows[kept] / n_neurons
        # Distinctness from centred float64 values (no cancellation; evidence.class_distinctness).
        lp.per_sample[1, t, kept], lp.distinctness[t], by_bin = evidence.class_distinctness(
            a[kept], ctx.labels[kept], ctx.n_classes, bins_kept, n_bins)
        lp.distinctness_by_bin[t] = np.where(n_bin > 0, by_bin, np.nan)
    lp.sample_corr[t] = ctx.boot.correlations(lp.per_sample[:, t], ctx.conf_all[s])
    for b in range(n_bins):
        if n_bin[b]:
            lp.strength_by_bin[t, b] = abs_sums[b] / (n_bin[b] * n_neurons)


def _collapse(ctx: LayerContext, s: int, a: np.ndarray, keep: np.ndarray | None, lp: LayerRows, t: int) -> None:
    """The tau-dormant units and NC1; at the first and last snapshot, their bootstrap replicates (the trends)."""
    kept = slice(None) if keep is None else np.flatnonzero(keep)
    ak, lk = (a, ctx.labels) if keep is None else (a[kept], ctx.labels[kept])
    tau = ctx.params.dormant_tau
    lp.dormant[t], lp.dormant_mask[t] = collapse.dormant_share(ak, tau)
    lp.nc1[t] = collapse.nc1(ak, lk, ctx.n_classes)
    if s in (0, len(ctx.conf_all) - 1) and len(lk):  # the ends of the trends: replicates over probe samples
        for b, i in enumerate(trend_resamples(ctx.n, keep, ctx.params)):  # the same resamples at both ends: paired
            lp.boot_ends[t, 0, b] = collapse.dormant_share(ak[i], tau)[0]
            lp.boot_ends[t, 1, b] = collapse.nc1(ak[i], lk[i], ctx.n_classes)


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
    return layer_context(store, task["name"], params, n_s, finite_outcomes(store, params.probe_set)[:n_s])


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
    """The results of snapshot ``s`` alone (``stored``: array of shape (n, N)), as :meth:`LayerRows.row`."""
    lp = LayerRows(1, ctx.n_neurons, ctx.measures, ctx.n_bins, ctx.sizes, ctx.n, ctx.params.n_boot_trends)
    process_snapshot(ctx, s, stored, ws, lp, 0)
    return lp.row(0)
