"""What the analysis hands to the report: plain dataclasses of numpy arrays, cached in HDF5.

This module is the contract between ``analysis`` and ``report_templates``: the report reads only these
objects (through :func:`load_results`), never the store's activations. Shapes use S = snapshots,
N = neurons of a layer, G = groups of a grouping, B = confidence bins, P = grid pixels inside the map region,
K = neurons per pixel in the interpolation operator (3 for barycentric).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        grid_shape: (H, W) of the image; pixels not in ``pixel`` lie outside the layout's region (drawn blank).
        extent: (x0, x1, y0, y1) of the grid in layout coordinates.
        pixel: array of shape (P,), int32 flat (row-major, row 0 at the bottom) indices into the H x W grid.
        neurons: array of shape (P, K), int32 neuron indices.
        weights: array of shape (P, K), float32, rows summing to 1.
    """

    grid_shape: tuple[int, int]
    extent: tuple[float, float, float, float]
    pixel: np.ndarray
    neurons: np.ndarray
    weights: np.ndarray

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
        xy: array of shape (N, 2), float32, positions scaled into [0, 1]^2.
        trustworthiness: sklearn-style trustworthiness with k = 7, in [0, 1].
        shepard: Spearman rank correlation between feature-space and layout distances.
        smoothness: smoothness score of the rendered map (higher is smoother; defined in analysis.layouts).
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
class Trend:
    """Does a quantity rise? One answer with the statistic behind it.

    Attributes:
        quantity: e.g. ``"strength"`` or ``"distinctness"``.
        versus: ``"time"`` or ``"confidence"``.
        statistic: name of the test, e.g. ``"spearman_rho"``.
        value: the statistic's value.
        p_value: its p-value.
        rises: True when the quantity rises significantly (p < 0.05 and value > 0).
        text: one plain-English sentence for the report.
    """

    quantity: str
    versus: str
    statistic: str
    value: float
    p_value: float
    rises: bool
    text: str


@dataclass
class LayerResult:
    """All results of one layer (for the analysed probe set).

    Attributes:
        name: layer name as in the store.
        n_neurons: N.
        reduction: as in the store.
        naps: grouping -> :class:`GroupedNaps`.
        layouts: method -> :class:`LayoutResult`.
        default_layout: key of ``layouts`` used for maps in the report.
        color_limit: symmetric colour limit for maps of this layer, the same for every snapshot and group
            (maps run from -color_limit to +color_limit).
        corr: measure -> :class:`CorrResult`.
        strength: array of shape (S,): activity strength (mean |a| over samples and neurons).
        distinctness: array of shape (S,): class distinctness (between-class / within-class variance).
        bin_names: B confidence-bin names (of the primary measure).
        strength_by_bin: array of shape (S, B).
        distinctness_by_bin: array of shape (S, B).
        cka: array of shape (S,): linear CKA of each snapshot's activations to the final snapshot's.
        trends: list of :class:`Trend` (strength and distinctness vs time and vs confidence).
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
    trends: list[Trend] = field(default_factory=list)


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
