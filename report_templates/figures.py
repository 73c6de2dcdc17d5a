"""Figures for papers (matplotlib): grids of topographic maps and the findings' curves, as PDF, SVG or PNG.

Two steps, as everywhere in the report: a *plan* checks the request against the analysis and gathers the numbers
(:func:`plan_map_grid`, numpy only, so bad input is refused before matplotlib is imported or anything is written);
a pure *builder* turns a plan into a :class:`matplotlib.figure.Figure` (:func:`draw_map_grid`,
:func:`findings_figure`); :func:`save_figure` writes it. matplotlib is optional (``pip install
'topotrace[figures]'``); :func:`require_matplotlib` says so in one line.

A map grid has one row per snapshot (labelled with its step) and one column per group (labelled in full:
"class 3", "confidence 0–20 %, n = 60", "correct"); every map shares one colour scale with a labelled colour bar.
The maps are the report's maps exactly: the layout's interpolation operator renders each group's NAPs (shape (N,))
into an H x W image, binned into the report's palettes as its colour mapper bins them
(:func:`.style.activation_scale`, :func:`.style.color_index`) and drawn as vector shapes, one compound path per
colour (:func:`level_paths`; the colour bar is vector quads too, so a PDF or SVG embeds no raster), unless the
shapes would make a large file: then each map is one embedded raster at the figure's dpi, clipped to the vector
outline, with the text and outlines still vector (:func:`rasterize_maps`: the README example's SVG is 19 MB as
vector). The grid is
the analysis's (128 x 128, :data:`topotrace.analysis.pipeline.GRID`). The map is clipped to the layout's region
and the region's outline is drawn (:attr:`InterpOperator.outline`), so the edge is smooth, not the cells'
staircase: the cells just off the map take a neighbour's value first (:func:`topotrace.analysis.maps.halo`, as the
report does) and the clip cuts them at the outline. Off the map the light grey background shows (:data:`OFF_MAP`),
unlike zero (white). Analyses without an outline (before version 9) draw the cells on the map only. A group without
samples at a snapshot is a labelled blank ("no samples"). Neuron dots are optional (``dots``). Text is DejaVu Sans
(shipped with matplotlib, so every character renders) and stays text: SVG with ``svg.fonttype = 'none'``, PDF with
embedded TrueType fonts.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..analysis.maps import halo
from ..analysis.naps import contrast_normalise
from ..analysis.results import AnalysisResults, LayerResult
from .outputs import atomic_output
from .style import OFF_MAP, activation_scale, color_index, contrast_limit, diverging_palette

FORMATS = ("pdf", "svg", "png")
MAP_RENDERS = ("auto", "vector", "raster")
# Bytes one map rectangle (a run of grid cells of one colour) costs in a file, measured on the README example
# (181,522 rectangles in 30 maps: SVG 19.0 MB, PDF 2.6 MB), and the most the maps may take as vector shapes
# (SVG: the figure stays under 3 MB; PDF compresses its shapes, so it stays vector for twice the README example).
RECT_BYTES = {"svg": 105, "pdf": 15}
VECTOR_BUDGET = {"svg": 2_500_000, "pdf": 5_500_000}
KINDS = ("naps", "corr", "findings")
CELL_IN = 1.6  # inches per map cell
OUTLINE = "#4d4d4d"  # the map region's outline
FONT = "DejaVu Sans"
RC = {"font.family": FONT, "font.size": 8.0, "svg.fonttype": "none", "pdf.fonttype": 42, "ps.fonttype": 42,
      "axes.titlesize": 8.0, "axes.labelsize": 8.0}
EMPTY_TEXT = "no samples"


def require_matplotlib() -> None:
    """Raise a one-line error when matplotlib is not installed.

    Raises:
        ValueError: matplotlib is missing (with the command that installs it).
    """
    if importlib.util.find_spec("matplotlib") is None:
        raise ValueError("Figures need matplotlib, which is not installed: pip install 'topotrace[figures]'.")


@dataclass
class MapGrid:
    """A checked request for a grid of maps, with the numbers to draw.

    Attributes:
        title: the figure's title (layer and what the maps show).
        row_labels: R labels, e.g. ``"step 1,000"``.
        col_labels: C labels, e.g. ``"class 3, n = 60"``.
        values: array of shape (R, C, N), float32: the neuron values of each map (NaN rows for blank cells).
        images: array of shape (R, C, H, W), float32: the rendered maps, row 0 at the bottom, NaN off the map.
        counts: array of shape (R, C), int64: samples behind each map (-1 where a count does not apply).
        empty: array of shape (R, C), bool: cells drawn as a labelled blank.
        extent: (x0, x1, y0, y1) of the image grid in layout coordinates.
        xy: array of shape (N, 2): neuron positions (NaN rows for unplaced neurons), for the dots.
        palette: hex colours of the colour scale.
        low, high: the colour scale's limits.
        bar_label: the colour bar's label, e.g. ``"mean activation"``.
        snapshots: R snapshot indices (non-negative).
        steps: R steps.
        cell_notes: (R, C) per-cell notes (e.g. ``"n = 12"`` when the count changes between rows).
        outline: array of shape (M, 2): the map region's outline (rings separated by NaN rows, see
            :class:`topotrace.analysis.results.InterpOperator`); shape (0, 2) when the analysis has none.
        halo: array of shape (2, Q), int: the cells just off the map and the cell on the map that lends each its
            value (:func:`topotrace.analysis.maps.halo`), filled before the map is clipped to the outline.
    """

    title: str
    row_labels: list[str]
    col_labels: list[str]
    values: np.ndarray
    images: np.ndarray
    counts: np.ndarray
    empty: np.ndarray
    extent: tuple[float, float, float, float]
    xy: np.ndarray
    palette: list[str]
    low: float
    high: float
    bar_label: str
    snapshots: list[int]
    steps: list[int]
    cell_notes: list[list[str]] = field(default_factory=list)
    outline: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    halo: np.ndarray = field(default_factory=lambda: np.zeros((2, 0), np.int64))

    def empty_cells(self) -> list[tuple[str, str]]:
        """(row label, column label) of every blank cell, for a note to the user."""
        return [(self.row_labels[r], self.col_labels[c]) for r, c in zip(*np.nonzero(self.empty))]


# --- checking a request -----------------------------------------------------------------------------------------

def resolve_layer(results: AnalysisResults, layer: str, need_map: bool = True) -> LayerResult:
    """The layer's results; with ``need_map`` it must have a layout to draw maps on.

    Raises:
        ValueError: unknown layer (listing the layers) or a layer without a map.
    """
    if layer not in results.layers:
        raise ValueError(f"Unknown layer {layer!r}. Available: {list(results.layers)}.")
    la = results.layers[layer]
    if need_map and (not la.layouts or la.default_layout not in la.layouts):
        with_maps = [n for n, v in results.layers.items() if v.layouts and v.default_layout in v.layouts]
        raise ValueError(f"Layer {layer!r} has no layout to draw maps on (fewer than 3 neurons). Layers with maps: "
                         f"{with_maps}.")
    return la


def resolve_snapshots(results: AnalysisResults, snapshots: Sequence[int]) -> list[int]:
    """Snapshot indices (negative ones count from the end) -> non-negative indices, in the order given.

    Raises:
        ValueError: no snapshot, or an index out of range (naming the range and the steps).
    """
    s_total = int(results.n_snapshots)
    if not snapshots:
        raise ValueError("The 'snapshots' parameter must name at least one snapshot, e.g. 0,-1.")
    out = []
    for s in snapshots:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"The 'snapshots' parameter must hold ints. Got {type(s).__name__} ({s!r}).")
        if not -s_total <= s < s_total:
            raise ValueError(f"Snapshot index {s} is out of range: the analysis has {s_total} snapshots, so an index "
                             f"must be in [{-s_total}, {s_total - 1}] (-1 is the last; steps "
                             f"{_steps_text(results.steps)}).")
        out.append(int(s) % s_total)
    return out


def _steps_text(steps: np.ndarray) -> str:
    steps = [int(v) for v in steps]
    return ", ".join(map(str, steps)) if len(steps) <= 8 else f"{steps[0]}, {steps[1]}, ..., {steps[-1]}"


def resolve_groups(names: Sequence[str], groups: Sequence[str | int] | None, grouping: str) -> list[int]:
    """Group names or indices -> indices into ``names`` (all groups when ``groups`` is None); a name wins.

    Raises:
        ValueError: an unknown group (listing the allowed names).
    """
    names = list(names)
    if groups is None:
        return list(range(len(names)))
    if not groups:
        raise ValueError(f"The 'groups' parameter must name at least one group of {grouping!r}: {names}.")
    out = []
    for g in groups:
        if isinstance(g, str) and g in names:
            out.append(names.index(g))
            continue
        try:
            i = int(g)
        except (TypeError, ValueError):
            i = None
        if i is None or isinstance(g, bool) or not -len(names) <= i < len(names):
            raise ValueError(f"Unknown group {g!r} of grouping {grouping!r}. Available: {names} (or an index in "
                             f"[0, {len(names)})).")
        out.append(i % len(names))
    return out


def group_label(grouping: str, name: str) -> str:
    """A group's full label: ``"class 3"``, ``"predicted class 3"``, ``"confidence 0–20 %"``, ``"correct"``."""
    def cls(n: str) -> str:
        return n if n.lower().startswith("class") else f"class {n}"

    if grouping == "class":
        return cls(name)
    if grouping == "pred":
        return f"predicted {cls(name)}"
    if grouping == "confbin":
        return f"confidence {name}"
    if grouping == "class_confbin" and " | " in name:
        c, b = name.split(" | ", 1)
        return f"{cls(c)}, confidence {b}"
    return name


def plan_map_grid(results: AnalysisResults, layer: str, snapshots: Sequence[int], grouping: str = "class",
                  groups: Sequence[str | int] | None = None, kind: str = "naps", measure: str | None = None,
                  contrast: bool = False) -> MapGrid:
    """Check a request for a grid of maps and gather what to draw (numpy only).

    Args:
        results: the analysis of a run.
        layer: layer name.
        snapshots: snapshot indices, one row each (negative ones count from the end).
        grouping: with ``kind="naps"``, a key of the layer's NAPs (``"class"``, ``"pred"``, ``"correct"``,
            ``"confbin"``, ``"class_confbin"``).
        groups: group names or indices, one column each (default: every group of the grouping). With
            ``kind="corr"`` the columns are ``"overall"`` and ``"within class"``; ``groups`` picks among those.
        kind: ``"naps"`` (mean activation of each group) or ``"corr"`` (Pearson r of each neuron's activation with
            ``measure`` across probe samples, on the scale [-1, 1]).
        measure: with ``kind="corr"``, the confidence measure (default: the analysis's primary measure).
        contrast: with ``kind="naps"``, draw each map minus the neuron's mean over all groups of the grouping, on
            the diverging scale of the layer's contrast limit (the report's contrast view).

    Returns:
        The checked :class:`MapGrid`.

    Raises:
        ValueError: unknown kind, layer, grouping, group or measure, or a snapshot out of range (each naming
            what is allowed).
    """
    if not isinstance(results, AnalysisResults):
        raise TypeError(f"The 'results' parameter must be an AnalysisResults. Got {type(results).__name__}.")
    if kind not in ("naps", "corr"):
        raise ValueError(f"The 'kind' parameter of a map grid must be 'naps' or 'corr'. Got {kind!r}.")
    la = resolve_layer(results, layer)
    rows = resolve_snapshots(results, snapshots)
    lay = la.layouts[la.default_layout]
    op = lay.interp
    steps = [int(results.steps[s]) for s in rows]
    if kind == "naps":
        if grouping not in la.naps:
            raise ValueError(f"Unknown grouping {grouping!r} of layer {layer!r}. Available: {list(la.naps)}.")
        gn = la.naps[grouping]
        cols = resolve_groups(gn.group_names, groups, grouping)
        naps = np.asarray(gn.naps, np.float32)  # (S, G, N)
        if contrast:
            values = np.stack([contrast_normalise(naps[s])[cols] for s in rows])  # (R, C, N)
            palette, low, high = diverging_palette(), -contrast_limit(la), contrast_limit(la)
            bar_label = "mean activation − mean over the groups"
        else:
            values = naps[np.ix_(rows, cols)]  # (R, C, N)
            palette, low, high = activation_scale(la)
            bar_label = "mean activation"
        counts = np.asarray(gn.counts, np.int64)[np.ix_(rows, cols)]  # (R, C)
        names = [group_label(grouping, gn.group_names[g]) for g in cols]
        what = f"{grouping} NAPs" + (" (contrast)" if contrast else "")
    else:
        measure = results.primary_measure if measure is None else measure
        if measure not in la.corr:
            raise ValueError(f"Unknown measure {measure!r} for the correlation maps of layer {layer!r}. Available: "
                             f"{list(la.corr)}.")
        cr = la.corr[measure]
        options = ["overall", "within class"]
        cols = resolve_groups(options, groups, "corr")
        arrays = [np.asarray(cr.pearson, np.float32), np.asarray(cr.pearson_within, np.float32)]  # each (S, N)
        values = np.stack([np.stack([arrays[c][s] for c in cols]) for s in rows])  # (R, C, N)
        palette, low, high = diverging_palette(), -1.0, 1.0
        bar_label = f"Pearson r with {measure}"
        counts = np.full((len(rows), len(cols)), -1, np.int64)
        names = [options[c] for c in cols]
        what = f"correlation with {measure}"
    values = np.array(values, np.float32)
    empty = (counts == 0) | ~np.isfinite(values).any(axis=2)  # (R, C)
    values[empty] = np.nan
    images = np.stack([np.stack([op.apply(v) for v in row]) for row in values])  # (R, C, H, W)
    col_labels, notes = [], [["" for _ in cols] for _ in rows]
    for c, name in enumerate(names):
        n = counts[:, c]
        if (n < 0).all():
            col_labels.append(name)
        elif (n == n[0]).all():
            col_labels.append(f"{name}, n = {int(n[0]):,}")
        else:
            col_labels.append(name)
            for r in range(len(rows)):
                notes[r][c] = f"n = {int(n[r]):,}"
    return MapGrid(title=f"{layer}: {what}", row_labels=[f"step {s:,}" for s in steps], col_labels=col_labels,
                   values=values, images=images, counts=counts, empty=empty,
                   extent=tuple(float(v) for v in op.extent), xy=np.asarray(lay.xy, np.float64), palette=palette,
                   low=float(low), high=float(high), bar_label=bar_label, snapshots=rows, steps=steps,
                   cell_notes=notes, outline=np.asarray(op.outline, np.float64).reshape(-1, 2),
                   halo=halo(op) if np.isfinite(op.outline).any() else np.zeros((2, 0), np.int64))


# --- drawing ----------------------------------------------------------------------------------------------------

def _colormap(palette: Sequence[str]):
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(list(palette), name="topotrace")
    return cmap.with_extremes(bad=(0.0, 0.0, 0.0, 0.0))  # NaN (off the map): transparent, the grey shows


def level_paths(image: np.ndarray, extent: tuple[float, float, float, float], cmap, norm):
    """One map as vector shapes: per palette colour, one compound path of the grid cells that take it.

    The cells are binned into the palette as the report's colour mapper bins them (:func:`.style.color_index`);
    horizontal runs of cells of one colour are one rectangle; cells off the map (NaN) are not drawn.

    Args:
        image: array of shape (H, W): the rendered map, row 0 at the bottom, NaN off the map.
        extent: (x0, x1, y0, y1) of the grid in data coordinates.
        cmap: a ``ListedColormap`` of the palette (n colours).
        norm: ``Normalize(low, high)``.

    Returns:
        A ``PathCollection`` in data coordinates; its array holds each path's colour as the centre value of its
        palette bin (so ``cmap(norm(array))`` are the colours drawn).
    """
    from matplotlib.collections import PathCollection
    from matplotlib.path import Path as MplPath

    h, w = image.shape
    x0, x1, y0, y1 = extent
    dx, dy = (x1 - x0) / w, (y1 - y0) / h
    n = cmap.N
    idx = color_index(image, norm.vmin, norm.vmax, n)  # (H, W), -1 off the map
    start = np.ones((h, w), bool)
    start[:, 1:] = idx[:, 1:] != idx[:, :-1]  # a run of one colour starts here
    row, a = np.nonzero(start)  # (R,) each, row-major: a run ends where the next one starts (or its row ends)
    b = np.minimum(np.r_[row[1:] * w + a[1:], h * w] - row * w, w)
    level = idx[row, a]
    keep = level >= 0
    row, a, b, level = row[keep], a[keep], b[keep], level[keep]
    xa, xb, ya, yb = x0 + a * dx, x0 + b * dx, y0 + row * dy, y0 + (row + 1) * dy
    rects = np.stack([np.stack([xa, ya], 1), np.stack([xb, ya], 1), np.stack([xb, yb], 1), np.stack([xa, yb], 1),
                      np.stack([xa, ya], 1)], axis=1)  # (R, 5, 2)
    order = np.argsort(level, kind="stable")
    levels, first = np.unique(level[order], return_index=True)
    code = np.array([MplPath.MOVETO, MplPath.LINETO, MplPath.LINETO, MplPath.LINETO, MplPath.CLOSEPOLY], np.uint8)
    paths = [MplPath(part.reshape(-1, 2), np.tile(code, len(part)))
             for part in np.split(rects[order], first[1:])]
    coll = PathCollection(paths, cmap=cmap, norm=norm, edgecolors="face", linewidths=0.2)
    coll.set_array(norm.vmin + (np.asarray(levels, np.float64) + 0.5) * (norm.vmax - norm.vmin) / n)
    return coll


def region_path(outline: np.ndarray):
    """The map region as one compound matplotlib Path (a closed ring per run of rows between NaN rows), or None.

    Outer rings run counter-clockwise and holes clockwise, so the non-zero and even-odd rules fill alike.
    """
    from matplotlib.path import Path as MplPath

    pts = np.asarray(outline, np.float64).reshape(-1, 2)
    ok = np.isfinite(pts).all(axis=1)
    if not ok.any():
        return None
    verts, codes = [], []
    for part in np.split(pts, np.flatnonzero(~ok)):
        part = part[np.isfinite(part).all(axis=1)]
        if len(part) < 3:
            continue
        verts.append(part)
        codes.append(np.r_[MplPath.MOVETO, np.full(len(part) - 2, MplPath.LINETO), MplPath.CLOSEPOLY])
    return MplPath(np.concatenate(verts), np.concatenate(codes).astype(np.uint8)) if verts else None


def draw_map_grid(grid: MapGrid, dots: bool = False, title: bool = True):
    """Draw a :class:`MapGrid` as a matplotlib Figure (pure: no file is written, pyplot is not used).

    Each map is a :func:`level_paths` collection labelled ``"map r,c"`` (vector shapes, no raster), clipped to
    the region with its outline drawn (a line labelled ``"outline r,c"``) when the grid has an outline; the light
    grey background shows off the map. A blank cell says ``"no samples"``. One colour bar for all maps.

    Args:
        grid: from :func:`plan_map_grid`.
        dots: also mark each placed neuron with a small dot.
        title: put ``grid.title`` above the grid.

    Returns:
        matplotlib.figure.Figure.
    """
    import matplotlib as mpl
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    n_rows, n_cols = grid.empty.shape
    x0, x1, y0, y1 = grid.extent
    aspect = (y1 - y0) / (x1 - x0) if x1 > x0 else 1.0
    from matplotlib.patches import PathPatch

    cmap, norm = _colormap(grid.palette), Normalize(vmin=grid.low, vmax=grid.high)
    region = region_path(grid.outline)
    with mpl.rc_context(RC):
        fig = Figure(figsize=(0.9 + CELL_IN * n_cols + 0.9, 0.5 + CELL_IN * aspect * n_rows + (0.3 if title else 0)),
                     layout="constrained")
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        xy = grid.xy[np.isfinite(grid.xy).all(axis=1)]
        for r in range(n_rows):
            for c in range(n_cols):
                ax = axes[r, c]
                ax.set_xlim(x0, x1)
                ax.set_ylim(y0, y1)
                ax.set_aspect("equal")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(grid.col_labels[c])
                if c == 0:
                    ax.set_ylabel(grid.row_labels[r])
                if grid.empty[r, c]:
                    ax.set_label(f"blank {r},{c}")
                    ax.set_facecolor("white")
                    for spine in ax.spines.values():
                        spine.set_linestyle((0, (3, 2)))
                        spine.set_edgecolor("#999999")
                    ax.text(0.5, 0.5, EMPTY_TEXT, transform=ax.transAxes, ha="center", va="center", color="#555555")
                else:
                    ax.set_label(f"map {r},{c}")
                    ax.set_facecolor(OFF_MAP)
                    for spine in ax.spines.values():
                        spine.set_edgecolor("#bbbbbb")
                    image = grid.images[r, c]
                    if region is not None:  # the cells just off the map, cut at the outline by the clip
                        image = image.copy()
                        image.flat[grid.halo[0]] = image.flat[grid.halo[1]]
                    coll = level_paths(image, grid.extent, cmap, norm)
                    coll.set_label(f"map {r},{c}")
                    ax.add_collection(coll, autolim=False)
                    if region is not None:
                        coll.set_clip_path(PathPatch(region, transform=ax.transData))
                        (edge,) = ax.plot(grid.outline[:, 0], grid.outline[:, 1], color=OUTLINE, linewidth=0.6,
                                          solid_joinstyle="round")
                        edge.set_label(f"outline {r},{c}")
                    if dots and len(xy):
                        ax.scatter(xy[:, 0], xy[:, 1], s=1.5, c="#222222", linewidths=0)
                note = grid.cell_notes[r][c] if grid.cell_notes else ""
                if note:
                    ax.text(0.03, 0.03, note, transform=ax.transAxes, ha="left", va="bottom", fontsize=6.5,
                            color="#333333")
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes.ravel().tolist(), shrink=0.9,
                           aspect=25 * max(1, n_rows) ** 0.5, pad=0.02)
        bar.solids.set_rasterized(False)  # the colour bar, too, is vector quads
        bar.set_label(grid.bar_label)
        bar.outline.set_linewidth(0.5)
        if title:
            fig.suptitle(grid.title)
    return fig


def findings_figure(found: Sequence, layer: str | None = None):
    """One panel per finding: the per-snapshot statistic over training with its 95 % band and the zero line.

    Args:
        found: findings (:class:`topotrace.analysis.findings.Finding`), e.g. from ``run_findings(results)``.
        layer: only the findings of this layer (default: all).

    Returns:
        matplotlib.figure.Figure.

    Raises:
        ValueError: no findings (for that layer).
    """
    import matplotlib as mpl
    from matplotlib.figure import Figure

    items = [f for f in found if layer is None or f.layer == layer]
    if not items:
        layers = sorted({f.layer for f in found})
        raise ValueError("There are no findings to draw" + (f" for layer {layer!r}. Layers with findings: {layers}."
                                                            if layer is not None else "."))
    n_cols = min(3, len(items))
    n_rows = -(-len(items) // n_cols)
    one_layer = len({f.layer for f in items}) == 1
    with mpl.rc_context(RC):
        fig = Figure(figsize=(3.0 * n_cols, 2.5 * n_rows), layout="constrained")
        if one_layer:
            fig.suptitle(f"{items[0].layer}: the findings over training (95 % bands)")
        axes = fig.subplots(n_rows, n_cols, squeeze=False)
        for ax in axes.ravel()[len(items):]:
            ax.set_visible(False)
        for ax, f in zip(axes.ravel(), items):
            steps = np.asarray(f.steps, np.float64)
            curve, band = np.asarray(f.curve, np.float64), np.asarray(f.band, np.float64)
            if band.ndim == 2 and band.shape == (len(steps), 2):
                ax.fill_between(steps, band[:, 0], band[:, 1], color="#9ecae1", alpha=0.6, linewidth=0,
                                label="95 % interval")
            ax.plot(steps, curve, color="#08519c", linewidth=1.2, label="statistic")
            if f.versus == "confidence" or np.nanmin(np.r_[curve, band.ravel()]) < 0:
                ax.axhline(0.0, color="#666666", linewidth=0.6, linestyle="--")
            name = ("" if one_layer else f"{f.layer}: ") + f.claim.replace("_", " ")
            ax.set_title(f"{name}{' (' + f.measure + ')' if f.measure else ''}\n{f.verdict}: {f.effect:+.2f} "
                         f"[{f.ci_low:+.2f}, {f.ci_high:+.2f}]", fontsize=7.5)
            ax.set_xlabel("step")
            ax.set_ylabel(f"partial ρ ({f.quantity})" if f.versus == "confidence" else f"mean {f.quantity}")
            ax.set_label(f"finding {f.layer} {f.claim} {f.measure}".strip())
    return fig


def map_collections(fig) -> list:
    """The map collections of a figure from :func:`draw_map_grid` (labelled ``"map r,c"``), in drawing order."""
    from matplotlib.collections import PathCollection

    return [a for ax in fig.axes for a in ax.collections
            if isinstance(a, PathCollection) and a.get_label().startswith("map ")]


def rasterize_maps(fig, fmt: str, render: str = "auto") -> bool:
    """Whether the maps of ``fig`` are written as one embedded raster each in format ``fmt``; sets it on them.

    ``"vector"``: every map stays vector shapes. ``"raster"``: each map is one raster image at the figure's dpi,
    clipped to the map's outline (the clip is applied to the pixels); the outline, the text, the colour bar and the
    neuron dots stay vector. ``"auto"``: raster only where the vector maps would take more than
    :data:`VECTOR_BUDGET` bytes (:data:`RECT_BYTES` per rectangle): an SVG of more than ~24,000 map rectangles
    (the README example's 30 maps hold 181,522: 19.0 MB as vector, 1.8 MB with rasters), a PDF of more than
    ~370,000. PNG is raster anyway.

    Raises:
        ValueError: an unknown ``render``.
    """
    if render not in MAP_RENDERS:
        raise ValueError(f"Unknown map rendering {render!r}. Available: {list(MAP_RENDERS)}.")
    maps = map_collections(fig)
    if fmt not in RECT_BYTES or render == "vector":
        raster = False
    elif render == "raster":
        raster = True
    else:
        rects = sum(len(p.vertices) for coll in maps for p in coll.get_paths()) // 5
        raster = rects * RECT_BYTES[fmt] > VECTOR_BUDGET[fmt]
    for coll in maps:
        coll.set_rasterized(raster)
    return raster and bool(maps)


def save_figure(fig, path: str | os.PathLike, fmt: str, dpi: float = 300, maps: str = "auto") -> Path:
    """Write a figure as PDF, SVG (text kept as text) or PNG; without a creation date, so reruns give equal bytes.

    The file is written through a temporary file renamed into place, and its metadata names topotrace as its
    creator: an existing file at ``path`` is replaced only when topotrace wrote it (:mod:`.outputs`). The maps of a
    map grid are vector shapes or, where those would be large, one embedded raster each at ``dpi``
    (:func:`rasterize_maps`; ``maps`` = ``"auto"``, ``"vector"`` or ``"raster"``).

    Raises:
        ValueError: an unknown format or map rendering, or a dpi outside 1 .. :data:`MAX_DPI`.
        FileExistsError: ``path`` exists and is not a figure topotrace wrote.
    """
    import matplotlib as mpl

    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r}. Available: {list(FORMATS)}.")
    check_dpi(dpi)
    metadata = {"pdf": {"CreationDate": None, "Creator": "topotrace"}, "svg": {"Date": None, "Creator": "topotrace"},
                "png": {"Software": "topotrace"}}[fmt]
    out = Path(path)
    rasterize_maps(fig, fmt, maps)
    with mpl.rc_context({**RC, "svg.hashsalt": "topotrace"}), atomic_output(out, "figure") as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
    return out


MAX_DPI = 1200  # a figure of a 10 x 10 grid at 1200 dpi is ~19,000 px wide (about 1.4 GB of RGBA while drawn)


def check_dpi(dpi: object, option: str = "dpi") -> float:
    """``dpi`` as a float in 1 .. :data:`MAX_DPI`.

    Raises:
        ValueError: one line naming ``option`` and the range allowed.
    """
    try:
        value = float(dpi)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        value = float("nan")
    if not 1 <= value <= MAX_DPI:
        raise ValueError(f"The {option!r} {'option' if option.startswith('--') else 'parameter'} must be a number "
                         f"from 1 to {MAX_DPI} (dots per inch; 300 is print quality). Got {dpi!r}.")
    return value
