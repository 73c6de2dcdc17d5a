"""What the analysis hands to the report: plain dataclasses of numpy arrays, cached in HDF5.

This module is the contract between ``analysis`` and ``report_templates``: the report reads only these
objects (through :func:`load_results`), never the store's activations. Shapes use S = snapshots,
N = neurons of a layer, G = groups of a grouping, B = confidence bins, P = grid pixels inside the map region,
K = neurons per pixel in the interpolation operator (3 for barycentric).

:func:`save_results` / :func:`load_results` write and read the versioned HDF5 cache (``docs/analysis.md``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np


@dataclass
class GroupedNaps:
    """Neuron activation profiles of one grouping.

    Attributes:
        grouping: ``"class"``, ``"pred"``, ``"correct"``, ``"confbin"`` or ``"class_confbin"``.
        group_names: G display names, e.g. ``["0", "1", ...]`` or ``["wrong", "correct"]``.
        naps: array of shape (S, G, N), float32: mean activation of each neuron over the group's probe samples
            (NaN where a group is empty at a snapshot).
        counts: array of shape (S, G), int64: samples per group.
    """

    grouping: str
    group_names: list[str]
    naps: np.ndarray
    counts: np.ndarray


@dataclass
class InterpOperator:
    """Sparse linear map from neuron values to map pixels: ``img.flat[pixel] = (values[neurons] * weights).sum(1)``.

    Attributes:
        grid_shape: (H, W) of the image; pixels not in ``pixel`` lie outside the layout's region (NaN, drawn as
            the off-map background).
        extent: (x0, x1, y0, y1) of the grid in layout coordinates.
        pixel: array of shape (P,), int32 flat (row-major, row 0 at the bottom) indices into the H x W grid.
        neurons: array of shape (P, K), int32 neuron indices.
        weights: array of shape (P, K), float32, rows summing to 1.
        outline: array of shape (M, 2), float32: the region's boundary in layout coordinates, as closed rings
            (first vertex repeated at the end) separated by NaN rows; outer rings run counter-clockwise, holes
            clockwise (so even-odd and non-zero filling agree). Empty (shape (0, 2)) when not known (analyses
            before version 9): maps are then drawn without it.
    """

    grid_shape: tuple[int, int]
    extent: tuple[float, float, float, float]
    pixel: np.ndarray
    neurons: np.ndarray
    weights: np.ndarray
    outline: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Render one map: ``values`` of shape (N,) -> image of shape (H, W), NaN outside the region."""
        img = np.full(self.grid_shape[0] * self.grid_shape[1], np.nan, dtype=np.float32)
        img[self.pixel] = (np.asarray(values, np.float32)[self.neurons] * self.weights).sum(axis=1)
        return img.reshape(self.grid_shape)


@dataclass
class LayoutResult:
    """One 2-D layout of a layer's neurons and its quality scores.

    Attributes:
        method: ``"pca"``, ``"tsne"``, ``"mds"``, ``"som"``, ``"force"`` (each may carry ``"+declutter"``).
        xy: array of shape (N, 2), float32, positions scaled into [0, 1]^2; NaN rows for neurons placed nowhere
            (no finite profile to place them by, see :attr:`unplaced`). The scores and ``interp`` cover the
            placed neurons; ``interp.neurons`` holds indices into all N.
        trustworthiness: sklearn-style trustworthiness with k = 7, in [0, 1].
        shepard: Spearman rank correlation between feature-space and layout distances.
        smoothness: smoothness score of the rendered map (higher is smoother; defined in topotrace.analysis.layouts).
        seconds: wall time to compute the layout.
        interp: the interpolation operator for maps drawn on this layout.
    """

    method: str
    xy: np.ndarray
    trustworthiness: float
    shepard: float
    smoothness: float
    seconds: float
    interp: InterpOperator

    @property
    def unplaced(self) -> np.ndarray:
        """Indices of the neurons placed nowhere (NaN rows of ``xy``): array of shape (U,), int64."""
        return np.flatnonzero(~np.isfinite(np.asarray(self.xy)).all(axis=1))


@dataclass
class CorrResult:
    """Per-neuron correlation of activation with one confidence measure across probe samples.

    Attributes:
        measure: confidence measure name (as in the store).
        pearson, spearman: arrays of shape (S, N): correlation over all probe samples.
        pearson_within, spearman_within: arrays of shape (S, N): within-class correlation (class means removed
            from both variables before correlating; pooled over classes).
        q_pearson, q_pearson_within: arrays of shape (S, N): Benjamini–Hochberg adjusted p-values per snapshot
            (over the layer's neurons).
        summary: name -> array of shape (S,): at least ``mean_r``, ``frac_sig_pos``, ``frac_sig_neg`` and the
            same with suffix ``_within`` (significance at q < ``alpha``).
        alpha: FDR level used in ``summary``.
    """

    measure: str
    pearson: np.ndarray
    spearman: np.ndarray
    pearson_within: np.ndarray
    spearman_within: np.ndarray
    q_pearson: np.ndarray
    q_pearson_within: np.ndarray
    summary: dict[str, np.ndarray]
    alpha: float = 0.05


@dataclass
class SampleEvidence:
    """Per-snapshot evidence of one layer (one run, one probe set), with bootstrap intervals.

    Attributes:
        quantities: ``("strength", "distinctness")``.
        measures: M confidence measure names.
        mean: array of shape (2, S): mean per-sample quantity at each snapshot.
        mean_ci: array of shape (2, S, 2): its bootstrap interval.
        rho: array of shape (2, S, M): Spearman of the quantity with each measure, overall.
        rho_ci: array of shape (2, S, M, 2).
        rho_partial: array of shape (2, S, M): partial Spearman given the class.
        rho_partial_ci: array of shape (2, S, M, 2).
        change: array of shape (2,): mean at the last snapshot minus mean at the first.
        change_ci: array of shape (2, 2): its (paired) bootstrap interval.
        peak: array of shape (2,), int: snapshot index where the mean is largest.
        peak_change: array of shape (2,): mean at the peak minus mean at the first snapshot.
        peak_change_ci: array of shape (2, 2).
        n_samples: probe samples n.
        n_boot: bootstrap resamples.
    """

    quantities: tuple[str, ...]
    measures: list[str]
    mean: np.ndarray
    mean_ci: np.ndarray
    rho: np.ndarray
    rho_ci: np.ndarray
    rho_partial: np.ndarray
    rho_partial_ci: np.ndarray
    change: np.ndarray
    change_ci: np.ndarray
    peak: np.ndarray
    peak_change: np.ndarray
    peak_change_ci: np.ndarray
    n_samples: int
    n_boot: int


@dataclass
class LayerResult:
    """All results of one layer (for the analysed probe set).

    Attributes:
        name: layer name as in the store.
        n_neurons: N.
        reduction: as in the store.
        naps: grouping -> :class:`GroupedNaps`.
        layouts: method -> :class:`LayoutResult`.
        default_layout: key of ``layouts`` used for maps in the report (``""`` and no layouts for layers with
            fewer than 3 neurons).
        color_limit: symmetric colour limit for maps of this layer, the same for every snapshot and group
            (maps run from -color_limit to +color_limit).
        corr: measure -> :class:`CorrResult`.
        strength: array of shape (S,): activity strength (mean |a| over samples and neurons).
        distinctness: array of shape (S,): class distinctness (between-class / within-class variance).
        bin_names: B confidence-bin names (of the primary measure).
        strength_by_bin: array of shape (S, B).
        distinctness_by_bin: array of shape (S, B).
        cka: array of shape (S,): linear CKA of each snapshot's activations to the final snapshot's.
        evidence: per-sample evidence for the study's claims with bootstrap intervals
            (:class:`topotrace.analysis.evidence.SampleEvidence`); ``None`` for results built without it.
        color_limit_contrast: like ``color_limit`` for contrast-normalised NAPs (each neuron's mean over the
            groups of a grouping subtracted), for reports that show those.
        nonnegative: every finite NAP value of the layer is >= 0 (e.g. after ReLU): its maps can use a
            sequential scale over [0, color_limit].
        excluded_values: array of shape (S,), int64: non-finite activation values (NaN, inf) at each snapshot;
            each is left out of its neuron's NAPs and correlations (``docs/analysis.md``, "Non-finite values").
        excluded_samples: array of shape (S,), int64: probe samples left out of the per-sample statistics at
            each snapshot (strength, distinctness, CKA, evidence): a non-finite activation in this layer or
            non-finite outputs (loss or confidence).
        dormant: array of shape (S,): share of the tau-dormant units (``params["dormant_tau"]``).
        dormant_mask: array of shape (S, N), bool: the tau-dormant units at each snapshot.
        nc1: array of shape (S,): neural-collapse NC1 of the layer's activations (NaN with fewer than 2 classes).
        nap_gap: array of shape (S,): relative distance of the class NAPs on the ``"train"`` probe set from those
            on the analysed probe set; empty without a train probe set (or when it is the analysed one).
        trends: ``"dormant_change"`` (last minus first snapshot) and ``"nc1_log_ratio"`` (log of last over
            first) -> array ``[effect, low, high]``, 95 % bootstrap interval over probe samples.
    """

    name: str
    n_neurons: int
    reduction: str
    naps: dict[str, GroupedNaps]
    layouts: dict[str, LayoutResult]
    default_layout: str
    color_limit: float
    corr: dict[str, CorrResult]
    strength: np.ndarray
    distinctness: np.ndarray
    bin_names: list[str]
    strength_by_bin: np.ndarray
    distinctness_by_bin: np.ndarray
    cka: np.ndarray
    evidence: SampleEvidence | None = None
    color_limit_contrast: float = float("nan")
    nonnegative: bool = False
    excluded_values: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    excluded_samples: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    dormant: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dormant_mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    nc1: np.ndarray = field(default_factory=lambda: np.zeros(0))
    nap_gap: np.ndarray = field(default_factory=lambda: np.zeros(0))
    trends: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class Calibration:
    """Calibration of one probe set over training (``docs/analysis.md``, "Calibration").

    Attributes:
        measures: M measures of the predicted class's probability, in order: ``max_prob`` and the recorded
            ``temp_prob`` where the store has them, and ``temp_prob_cv`` (temperature cross-fitted on the two
            halves of this probe set by the analysis, :func:`.calibration.cross_fitted_temperature`).
        ece: array of shape (M, S): expected calibration error, equal-width bins.
        counts: array of shape (M, S, B), int64: samples per confidence bin.
        conf: array of shape (M, S, B): mean confidence per bin (NaN where empty).
        accuracy: array of shape (M, S, B): accuracy per bin (NaN where empty).
        n_bins: B.
        temperature_cv: array of shape (S, 2): the temperatures of ``temp_prob_cv``, fitted on half 0 and on
            half 1 of the probe set at each snapshot (empty for results of an older analysis).
    """

    measures: list[str]
    ece: np.ndarray
    counts: np.ndarray
    conf: np.ndarray
    accuracy: np.ndarray
    n_bins: int
    temperature_cv: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))


@dataclass
class Divergence:
    """Where a run diverged: from ``snapshot`` on, its snapshots are not analysed (``docs/analysis.md``).

    Attributes:
        snapshot: index in the store of the first snapshot of the diverged tail (0-based); the analysis holds
            the snapshots before it.
        step: its step.
        last_step: the step of the last analysed snapshot (``snapshot - 1``).
        layers: the layers with more than half of their activation values (samples x neurons) non-finite at
            ``snapshot``.
        outputs: the outputs (loss or a confidence measure, all computed from the logits) are non-finite for
            more than half of the probe samples at ``snapshot``.
        n_snapshots: committed snapshots in the store.
    """

    snapshot: int
    step: int
    last_step: int
    layers: list[str]
    outputs: bool
    n_snapshots: int


@dataclass
class AnalysisResults:
    """Everything the report shows, for one store.

    Attributes:
        store_path: path of the analysed store.
        store_sha256: SHA-256 of the store file when analysed.
        n_snapshots: S.
        steps: array of shape (S,), int64.
        epochs: array of shape (S,), int64.
        probe_set: the probe set the layer results describe (``"heldout"`` by default).
        primary_measure: the confidence measure used for bins (``"max_prob"`` by default).
        measures: all confidence measures in the store.
        class_names: class names from the store.
        curves: probe set -> name -> array of shape (S,): at least ``accuracy``, ``loss`` and
            ``conf_<measure>`` (mean over samples) for every probe set in the store.
        layers: layer name -> :class:`LayerResult`, in recording order.
        params: the analysis parameters (JSON-able), for provenance and cache checks.
        meta: the store's run metadata (run_name, seed, config, versions, ...), for provenance.
        nonfinite_outputs: array of shape (S,), int64: probe samples of ``probe_set`` whose loss or some
            confidence measure is non-finite at each snapshot (left out of the correlations, the groupings by
            prediction and confidence, the per-sample statistics and the curves).
        divergence: where the run diverged (the analysis then stops before it), or ``None``.
        calibration: probe set -> :class:`Calibration`; empty for a store without ``max_prob``.
        temperature: array of shape (S,): the temperature fitted on the train probe set at each snapshot
            (empty when the store has none).
        loss_min: snapshot index of the lowest mean held-out loss (``-1`` without a held-out probe set).
        ece_trend: measure -> ``[effect, low, high]``: ECE at the last snapshot minus ECE at ``loss_min`` on the
            held-out probe set, 95 % bootstrap interval over its samples (empty when ``loss_min`` is the last).
        reference_snapshot: ``-1`` when the reference snapshot is the last one (always in a fresh analysis):
            the layouts are fitted on its class NAPs and ``LayerResult.cka`` is the CKA to it. Else it is
            provisional: an incremental analysis of a store still being recorded kept this snapshot index as the
            reference of both (``docs/analysis.md``, "Incremental analysis").
    """

    store_path: str
    store_sha256: str
    n_snapshots: int
    steps: np.ndarray
    epochs: np.ndarray
    probe_set: str
    primary_measure: str
    measures: list[str]
    class_names: list[str]
    curves: dict[str, dict[str, np.ndarray]]
    layers: dict[str, LayerResult]
    params: dict[str, object]
    meta: dict[str, object]
    nonfinite_outputs: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    divergence: Divergence | None = None
    calibration: dict[str, Calibration] = field(default_factory=dict)
    temperature: np.ndarray = field(default_factory=lambda: np.zeros(0))
    loss_min: int = -1
    ece_trend: dict[str, np.ndarray] = field(default_factory=dict)
    reference_snapshot: int = -1


# --- the cache file ---------------------------------------------------------------------------------------

CACHE_FORMAT = "topotrace-analysis"
CACHE_VERSION = 1


def _dumps(obj: object) -> str:
    return json.dumps(obj, default=_json_default)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _put(g: h5py.Group, name: str, arr: np.ndarray) -> None:
    g.create_dataset(name, data=np.asarray(arr))


def save_results(results: AnalysisResults, path: str | os.PathLike, extra_attrs: dict[str, str] | None = None) -> Path:
    """Write ``results`` to an HDF5 cache file (atomically: a temporary file renamed into place).

    Layout: root attributes ``format``, ``version``, the scalar fields, and JSON text for ``params``, ``meta``,
    ``measures``, ``class_names``, ``layer_order``, ``divergence`` (``null`` when the run did not diverge);
    ``reference_snapshot`` only when it is provisional; datasets ``steps``, ``epochs``, ``nonfinite_outputs``,
    ``curves/<probe>/<name>``;
    one group ``layers/<name>`` per layer with ``naps/<grouping>/{naps,counts}``,
    ``layouts/<method>/{xy,pixel,neurons,weights,outline}``, ``corr/<measure>/{pearson,...,summary/<name>}`` and the
    per-snapshot arrays (with ``excluded_values``, ``excluded_samples``); the per-sample evidence is a group
    ``evidence`` of arrays. No pickle anywhere.

    Args:
        results: what to save.
        path: the cache file; its folder must exist.
        extra_attrs: more root attributes (text), e.g. the store fingerprint used for cache checks.

    Returns:
        The path written.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".writing")
    with h5py.File(tmp, "w") as f:
        a = f.attrs
        a["format"] = CACHE_FORMAT
        a["version"] = CACHE_VERSION
        a["store_path"] = results.store_path
        a["store_sha256"] = results.store_sha256
        a["n_snapshots"] = int(results.n_snapshots)
        a["probe_set"] = results.probe_set
        a["primary_measure"] = results.primary_measure
        a["measures"] = _dumps(list(results.measures))
        a["class_names"] = _dumps(list(results.class_names))
        a["params"] = _dumps(results.params)
        a["meta"] = _dumps(results.meta)
        a["layer_order"] = _dumps(list(results.layers))
        a["curve_order"] = _dumps({p: list(c) for p, c in results.curves.items()})
        div = results.divergence
        a["divergence"] = _dumps(None if div is None else {
            "snapshot": int(div.snapshot), "step": int(div.step), "last_step": int(div.last_step),
            "layers": list(div.layers), "outputs": bool(div.outputs), "n_snapshots": int(div.n_snapshots)})
        _put(f, "nonfinite_outputs", np.asarray(results.nonfinite_outputs, np.int64))
        for k, v in (extra_attrs or {}).items():
            a[k] = v
        _put(f, "steps", np.asarray(results.steps, np.int64))
        _put(f, "temperature", np.asarray(results.temperature, np.float64))
        a["loss_min"] = int(results.loss_min)
        if results.reference_snapshot >= 0:  # only a provisional reference is written (a final analysis has none)
            a["reference_snapshot"] = int(results.reference_snapshot)
        for m, v in results.ece_trend.items():
            _put(f, f"ece_trend/{m}", np.asarray(v, np.float64))
        for probe, cal in results.calibration.items():
            h = f.create_group(f"calibration/{probe}")
            h.attrs["measures"] = _dumps(list(cal.measures))
            h.attrs["n_bins"] = int(cal.n_bins)
            for k in ("ece", "counts", "conf", "accuracy"):
                _put(h, k, np.asarray(getattr(cal, k)))
            _put(h, "temperature_cv", np.asarray(cal.temperature_cv, np.float64))
        _put(f, "epochs", np.asarray(results.epochs, np.int64))
        for probe, curves in results.curves.items():
            for name, arr in curves.items():
                _put(f, f"curves/{probe}/{name}", arr)
        for name, lr in results.layers.items():
            g = f.create_group(f"layers/{name}")
            g.attrs["n_neurons"] = int(lr.n_neurons)
            g.attrs["reduction"] = lr.reduction
            g.attrs["default_layout"] = lr.default_layout
            g.attrs["color_limit"] = float(lr.color_limit)
            g.attrs["color_limit_contrast"] = float(lr.color_limit_contrast)
            g.attrs["nonnegative"] = bool(lr.nonnegative)
            g.attrs["bin_names"] = _dumps(list(lr.bin_names))
            if lr.evidence is not None:
                ev = lr.evidence
                h = g.create_group("evidence")
                h.attrs["quantities"] = _dumps(list(ev.quantities))
                h.attrs["measures"] = _dumps(list(ev.measures))
                h.attrs["n_samples"] = int(ev.n_samples)
                h.attrs["n_boot"] = int(ev.n_boot)
                for k in EVIDENCE_ARRAYS:
                    _put(h, k, getattr(ev, k))
            g.attrs["grouping_order"] = _dumps(list(lr.naps))
            g.attrs["layout_order"] = _dumps(list(lr.layouts))
            g.attrs["corr_order"] = _dumps(list(lr.corr))
            for k in ("strength", "distinctness", "strength_by_bin", "distinctness_by_bin", "cka"):
                _put(g, k, getattr(lr, k))
            for k in ("excluded_values", "excluded_samples"):
                _put(g, k, np.asarray(getattr(lr, k), np.int64))
            for k in LAYER_EXTRAS:
                _put(g, k, np.asarray(getattr(lr, k)))
            for k, v in lr.trends.items():
                _put(g, f"trends/{k}", np.asarray(v, np.float64))
            for gname, gn in lr.naps.items():
                h = g.create_group(f"naps/{gname}")
                h.attrs["group_names"] = _dumps(list(gn.group_names))
                _put(h, "naps", gn.naps)
                _put(h, "counts", gn.counts)
            for mname, lay in lr.layouts.items():
                h = g.create_group(f"layouts/{mname}")
                for k in ("method", "trustworthiness", "shepard", "smoothness", "seconds"):
                    h.attrs[k] = getattr(lay, k)
                h.attrs["grid_shape"] = np.asarray(lay.interp.grid_shape, np.int64)
                h.attrs["extent"] = np.asarray(lay.interp.extent, np.float64)
                _put(h, "xy", lay.xy)
                for k in ("pixel", "neurons", "weights", "outline"):
                    _put(h, k, getattr(lay.interp, k))
            for meas, cr in lr.corr.items():
                h = g.create_group(f"corr/{meas}")
                h.attrs["alpha"] = float(cr.alpha)
                h.attrs["summary_order"] = _dumps(list(cr.summary))
                for k in ("pearson", "spearman", "pearson_within", "spearman_within", "q_pearson", "q_pearson_within"):
                    _put(h, k, getattr(cr, k))
                for k, v in cr.summary.items():
                    _put(h, f"summary/{k}", v)
    os.replace(tmp, path)
    return path


def read_cache_attrs(path: str | os.PathLike) -> dict[str, object]:
    """Root attributes of a cache file (text decoded), without reading any dataset."""
    with h5py.File(path, "r") as f:
        return {k: (_text(v) if isinstance(v, (bytes, str)) else v) for k, v in f.attrs.items()}


LAYER_EXTRAS = ("dormant", "dormant_mask", "nc1", "nap_gap")  # per-layer arrays of analysis version 8
EVIDENCE_ARRAYS = ("mean", "mean_ci", "rho", "rho_ci", "rho_partial", "rho_partial_ci", "change", "change_ci",
                   "peak", "peak_change", "peak_change_ci")


def _load_evidence(h: h5py.Group) -> SampleEvidence:
    arrays = {k: h[k][()] for k in EVIDENCE_ARRAYS}
    return SampleEvidence(quantities=tuple(json.loads(_text(h.attrs["quantities"]))),
                          measures=json.loads(_text(h.attrs["measures"])), n_samples=int(h.attrs["n_samples"]),
                          n_boot=int(h.attrs["n_boot"]), **arrays)


def load_results(path: str | os.PathLike) -> AnalysisResults:
    """Read an :class:`AnalysisResults` written by :func:`save_results`.

    Raises:
        ValueError: the file is not an analysis cache or has another cache version.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        a = f.attrs
        if _text(a.get("format", "")) != CACHE_FORMAT:
            raise ValueError(f"{path} is not a topotrace analysis cache (format {a.get('format')!r}).")
        if int(a.get("version", -1)) != CACHE_VERSION:
            raise ValueError(f"{path} has analysis cache version {int(a.get('version', -1))}; "
                             f"this topotrace reads version {CACHE_VERSION}.")
        curves = {p: {n: f[f"curves/{p}/{n}"][()] for n in names}
                  for p, names in json.loads(_text(a["curve_order"])).items()}
        div = json.loads(_text(a.get("divergence", "null")))
        layers: dict[str, LayerResult] = {}
        for name in json.loads(_text(a["layer_order"])):
            g = f[f"layers/{name}"]
            ga = g.attrs
            naps = {}
            for gname in json.loads(_text(ga["grouping_order"])):
                h = g[f"naps/{gname}"]
                naps[gname] = GroupedNaps(gname, json.loads(_text(h.attrs["group_names"])), h["naps"][()],
                                          h["counts"][()])
            layouts = {}
            for mname in json.loads(_text(ga["layout_order"])):
                h = g[f"layouts/{mname}"]
                ha = h.attrs
                op = InterpOperator(tuple(int(v) for v in ha["grid_shape"]), tuple(float(v) for v in ha["extent"]),
                                    h["pixel"][()], h["neurons"][()], h["weights"][()],
                                    h["outline"][()] if "outline" in h else np.zeros((0, 2), np.float32))
                layouts[mname] = LayoutResult(_text(ha["method"]), h["xy"][()], float(ha["trustworthiness"]),
                                              float(ha["shepard"]), float(ha["smoothness"]), float(ha["seconds"]),
                                              op)
            corr = {}
            for meas in json.loads(_text(ga["corr_order"])):
                h = g[f"corr/{meas}"]
                summary = {k: h[f"summary/{k}"][()] for k in json.loads(_text(h.attrs["summary_order"]))}
                corr[meas] = CorrResult(meas, h["pearson"][()], h["spearman"][()], h["pearson_within"][()],
                                        h["spearman_within"][()], h["q_pearson"][()], h["q_pearson_within"][()],
                                        summary, float(h.attrs["alpha"]))
            layers[name] = LayerResult(
                name=name, n_neurons=int(ga["n_neurons"]), reduction=_text(ga["reduction"]), naps=naps,
                layouts=layouts, default_layout=_text(ga["default_layout"]), color_limit=float(ga["color_limit"]),
                corr=corr, strength=g["strength"][()], distinctness=g["distinctness"][()],
                bin_names=json.loads(_text(ga["bin_names"])), strength_by_bin=g["strength_by_bin"][()],
                distinctness_by_bin=g["distinctness_by_bin"][()], cka=g["cka"][()],
                evidence=_load_evidence(g["evidence"]) if "evidence" in g else None,
                color_limit_contrast=float(ga["color_limit_contrast"]), nonnegative=bool(ga["nonnegative"]),
                **{k: g[k][()] for k in ("excluded_values", "excluded_samples", *LAYER_EXTRAS) if k in g},
                trends={k: v[()] for k, v in g["trends"].items()} if "trends" in g else {},
            )
        return AnalysisResults(
            store_path=_text(a["store_path"]), store_sha256=_text(a["store_sha256"]),
            n_snapshots=int(a["n_snapshots"]), steps=f["steps"][()], epochs=f["epochs"][()],
            probe_set=_text(a["probe_set"]), primary_measure=_text(a["primary_measure"]),
            measures=json.loads(_text(a["measures"])), class_names=json.loads(_text(a["class_names"])),
            curves=curves, layers=layers, params=json.loads(_text(a["params"])), meta=json.loads(_text(a["meta"])),
            nonfinite_outputs=f["nonfinite_outputs"][()] if "nonfinite_outputs" in f else np.zeros(0, np.int64),
            divergence=Divergence(**div) if div else None,
            calibration={p: Calibration(json.loads(_text(h.attrs["measures"])), h["ece"][()], h["counts"][()],
                                        h["conf"][()], h["accuracy"][()], int(h.attrs["n_bins"]),
                                        h["temperature_cv"][()] if "temperature_cv" in h else np.zeros((0, 2)))
                         for p, h in (f["calibration"].items() if "calibration" in f else [])},
            temperature=f["temperature"][()] if "temperature" in f else np.zeros(0),
            loss_min=int(a.get("loss_min", -1)),
            ece_trend={m: v[()] for m, v in f["ece_trend"].items()} if "ece_trend" in f else {},
            reference_snapshot=int(a.get("reference_snapshot", -1)),
        )
