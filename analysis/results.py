"""What the analysis hands to the report: plain dataclasses of numpy arrays, cached in HDF5.

This module is the contract between ``analysis`` and ``report_templates``: the report reads only these
objects (through :func:`load_results`), never the store's activations. Shapes use S = snapshots,
N = neurons of a layer, G = groups of a grouping, B = confidence bins, P = grid pixels inside the map region,
K = neurons per pixel in the interpolation operator (3 for barycentric).

:func:`save_results` / :func:`load_results` write and read the versioned HDF5 cache (``docs/analysis.md``): each
field declares its storage in the file beside it (``attr``, ``dataset``, ... of :mod:`.codec`), and one codec walks
them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from . import codec
from .codec import _text, attr, dataset, datasets, group, groups, inline, key


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

    grouping: str = key()
    group_names: list[str] = attr("list")
    naps: np.ndarray = dataset()
    counts: np.ndarray = dataset()


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

    grid_shape: tuple[int, int] = attr("ints")
    extent: tuple[float, float, float, float] = attr("floats")
    pixel: np.ndarray = dataset()
    neurons: np.ndarray = dataset()
    weights: np.ndarray = dataset()
    outline: np.ndarray = dataset(default_factory=lambda: np.zeros((0, 2), np.float32))

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

    method: str = attr("str")
    xy: np.ndarray = dataset()
    trustworthiness: float = attr("number")
    shepard: float = attr("number")
    smoothness: float = attr("number")
    seconds: float = attr("number")
    interp: InterpOperator = inline(InterpOperator)  # its attributes and datasets in the layout's own group

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

    measure: str = key()
    pearson: np.ndarray = dataset()
    spearman: np.ndarray = dataset()
    pearson_within: np.ndarray = dataset()
    spearman_within: np.ndarray = dataset()
    q_pearson: np.ndarray = dataset()
    q_pearson_within: np.ndarray = dataset()
    summary: dict[str, np.ndarray] = datasets(order="summary_order")
    alpha: float = attr("float", default=0.05)


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

    quantities: tuple[str, ...] = attr("tuple")
    measures: list[str] = attr("list")
    mean: np.ndarray = dataset()
    mean_ci: np.ndarray = dataset()
    rho: np.ndarray = dataset()
    rho_ci: np.ndarray = dataset()
    rho_partial: np.ndarray = dataset()
    rho_partial_ci: np.ndarray = dataset()
    change: np.ndarray = dataset()
    change_ci: np.ndarray = dataset()
    peak: np.ndarray = dataset()
    peak_change: np.ndarray = dataset()
    peak_change_ci: np.ndarray = dataset()
    n_samples: int = attr("int")
    n_boot: int = attr("int")


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

    name: str = key()
    n_neurons: int = attr("int")
    reduction: str = attr("str")
    naps: dict[str, GroupedNaps] = groups(GroupedNaps, order="grouping_order", key="grouping")
    layouts: dict[str, LayoutResult] = groups(LayoutResult, order="layout_order")
    default_layout: str = attr("str")
    color_limit: float = attr("float")
    corr: dict[str, CorrResult] = groups(CorrResult, order="corr_order", key="measure")
    strength: np.ndarray = dataset()
    distinctness: np.ndarray = dataset()
    bin_names: list[str] = attr("list")
    strength_by_bin: np.ndarray = dataset()
    distinctness_by_bin: np.ndarray = dataset()
    cka: np.ndarray = dataset()
    evidence: SampleEvidence | None = group(SampleEvidence, default=None)
    color_limit_contrast: float = attr("float", default=float("nan"))
    nonnegative: bool = attr("bool", default=False)
    excluded_values: np.ndarray = dataset(np.int64, default_factory=lambda: np.zeros(0, np.int64))
    excluded_samples: np.ndarray = dataset(np.int64, default_factory=lambda: np.zeros(0, np.int64))
    dormant: np.ndarray = dataset(default_factory=lambda: np.zeros(0))
    dormant_mask: np.ndarray = dataset(default_factory=lambda: np.zeros((0, 0), bool))
    nc1: np.ndarray = dataset(default_factory=lambda: np.zeros(0))
    nap_gap: np.ndarray = dataset(default_factory=lambda: np.zeros(0))
    trends: dict[str, np.ndarray] = datasets(np.float64, default_factory=dict)


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

    measures: list[str] = attr("list")
    ece: np.ndarray = dataset()
    counts: np.ndarray = dataset()
    conf: np.ndarray = dataset()
    accuracy: np.ndarray = dataset()
    n_bins: int = attr("int")
    temperature_cv: np.ndarray = dataset(np.float64, default_factory=lambda: np.zeros((0, 2)))


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

    store_path: str = attr("str")
    store_sha256: str = attr("str")
    n_snapshots: int = attr("int")
    steps: np.ndarray = dataset(np.int64)
    epochs: np.ndarray = dataset(np.int64)
    probe_set: str = attr("str")
    primary_measure: str = attr("str")
    measures: list[str] = attr("list")
    class_names: list[str] = attr("list")
    curves: dict[str, dict[str, np.ndarray]] = datasets(order="curve_order", depth=2)
    layers: dict[str, LayerResult] = groups(LayerResult, order="layer_order", key="name")
    params: dict[str, object] = attr("json")
    meta: dict[str, object] = attr("json")
    nonfinite_outputs: np.ndarray = dataset(np.int64, default_factory=lambda: np.zeros(0, np.int64))
    divergence: Divergence | None = attr("json", record=Divergence, default=None)  # JSON text, "null" for None
    calibration: dict[str, Calibration] = groups(Calibration, default_factory=dict)
    temperature: np.ndarray = dataset(np.float64, default_factory=lambda: np.zeros(0))
    loss_min: int = attr("int", default=-1)
    ece_trend: dict[str, np.ndarray] = datasets(np.float64, default_factory=dict)
    reference_snapshot: int = attr("int", written=lambda v: v >= 0, default=-1)  # only a provisional one is written


# --- the cache file ---------------------------------------------------------------------------------------

CACHE_FORMAT = "topotrace-analysis"
CACHE_VERSION = 1


def _put(g: h5py.Group, name: str, arr: np.ndarray) -> None:
    """Write one dataset of the cache file (every dataset goes through here)."""
    g.create_dataset(name, data=np.asarray(arr))


def save_results(results: AnalysisResults, path: str | os.PathLike, extra_attrs: dict[str, str] | None = None) -> Path:
    """Write ``results`` to an HDF5 cache file (atomically: a temporary file renamed into place).

    The root holds the attributes ``format`` and ``version``, ``extra_attrs``, and :class:`AnalysisResults` as its
    fields declare (:mod:`.codec`): scalar and JSON attributes, datasets such as ``steps`` and
    ``curves/<probe>/<name>``, one group ``layers/<name>`` per layer with ``naps/<grouping>``, ``layouts/<method>``,
    ``corr/<measure>``, ``evidence`` and the per-snapshot arrays (``docs/analysis.md``, "Cache"). No pickle anywhere.

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
        f.attrs["format"] = CACHE_FORMAT
        f.attrs["version"] = CACHE_VERSION
        for k, v in (extra_attrs or {}).items():
            f.attrs[k] = v
        codec.write(f, results, put=_put)
    os.replace(tmp, path)
    return path


def read_cache_attrs(path: str | os.PathLike) -> dict[str, object]:
    """Root attributes of a cache file (text decoded), without reading any dataset."""
    with h5py.File(path, "r") as f:
        return {k: (_text(v) if isinstance(v, (bytes, str)) else v) for k, v in f.attrs.items()}


def load_results(path: str | os.PathLike) -> AnalysisResults:
    """Read an :class:`AnalysisResults` written by :func:`save_results`.

    Raises:
        ValueError: the file is not an analysis cache or has another cache version.
        KeyError: a result the file must hold is missing.
    """
    path = Path(path)
    with h5py.File(path, "r") as f:
        a = f.attrs
        if _text(a.get("format", "")) != CACHE_FORMAT:
            raise ValueError(f"{path} is not a topotrace analysis cache (format {a.get('format')!r}).")
        if int(a.get("version", -1)) != CACHE_VERSION:
            raise ValueError(f"{path} has analysis cache version {int(a.get('version', -1))}; "
                             f"this topotrace reads version {CACHE_VERSION}.")
        return codec.read(f, AnalysisResults)
