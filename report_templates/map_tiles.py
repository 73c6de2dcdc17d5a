"""One layer's grid of map tiles and the data it ships: the tiles, colour bars, sources and their registry.

:func:`_layer_grid` builds the tiles of one layer for value arrays of shape (S, G, N) and registers every source
the map callback needs in a :class:`_MapRegistry`; the contract with ``render_maps.js`` (which columns, which
lists, in which order) is described in :mod:`.maps`, which assembles the grids into the page's map sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from bokeh.layouts import gridplot
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    HoverTool,
    Image,
    Line,
    LinearColorMapper,
    Patch,
    Range1d,
    Scatter,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.plotting import figure

from ..analysis.results import InterpOperator, LayerResult
from .glyphs import draw
from .quantize import delta_encode, precision_text, quantize, value_format
from .style import (
    OFF_MAP,
    activation_scale,
    corr_fit_limit,
    plain,
)

TILE_PX = 190  # width of one map tile in CSS pixels (the "small" map size, the default)
TILE_PX_LARGE = 320  # the "large" map size
OUTLINE_COLOR = "#4d4d4d"  # the map region's outline
DOTS_MAX_NEURONS = 400  # the neuron dots start shown on the layers of at most this many neurons
MAP_GROUPINGS = (("class", "by true class"), ("correct", "correct vs wrong"))

TAM, PLAIN, CORR = 0, 1, 2  # tile kinds: activation maps that can show contrast, other activation maps, correlations


@dataclass
class _MapRegistry:
    """Sources of all map tiles on the page (parallel ``tile_*`` lists indexed by tile), shared by one callback."""

    imgs: list = field(default_factory=list)
    pts: list = field(default_factory=list)
    tile_col: list = field(default_factory=list)
    pts_by_layer: dict = field(default_factory=dict)
    ranges_by_layer: dict = field(default_factory=dict)
    tile_vals: list = field(default_factory=list)
    tile_group: list = field(default_factory=list)
    tile_op: list = field(default_factory=list)
    tile_layer: list = field(default_factory=list)
    tile_kind: list = field(default_factory=list)
    tile_title: list = field(default_factory=list)
    tile_name: list = field(default_factory=list)
    tile_counts: list = field(default_factory=list)
    vsrc: list = field(default_factory=list)
    osrc: list = field(default_factory=list)
    csrc: list = field(default_factory=list)
    tam_mappers: list = field(default_factory=list)
    tam_scale: list = field(default_factory=list)
    tam_bars: list = field(default_factory=list)
    tam_hovers: list = field(default_factory=list)
    corr_bars: list = field(default_factory=list)
    corr_mappers: list = field(default_factory=list)
    corr_fit: list = field(default_factory=list)
    corr_heads: list = field(default_factory=list)
    corr_head_texts: list = field(default_factory=list)
    vq: list = field(default_factory=list)
    tam_tips: list = field(default_factory=list)
    dormant_by_layer: dict = field(default_factory=dict)  # layer position -> (marker source, mask source)
    region_by_layer: dict = field(default_factory=dict)  # layer position -> (off-map mask source, outline source)
    op_outlined: list = field(default_factory=list)  # per operator source: 1 when its layer has an outline
    grids: list = field(default_factory=list)  # per grid of tiles: its GridPlot
    grid_tiles: list = field(default_factory=list)  # per grid: its tile figures, in order
    grid_shape: list = field(default_factory=list)  # per grid: [ncols at the small size, height / width of a map]
    grid_bars: list = field(default_factory=list)  # per grid: [colour-bar figure, colour bar]
    dot_glyphs: list = field(default_factory=list)  # per tile: the glyph of its neuron dots
    dot_alpha: list = field(default_factory=list)  # per tile: the dots' line alpha when they are shown


def _index_dtype(limit: int) -> type:
    """The smallest unsigned integer type that holds indices below ``limit`` (uint16 or int32)."""
    return np.uint16 if limit <= np.iinfo(np.uint16).max + 1 else np.int32


def _region_sources(op: InterpOperator) -> tuple[ColumnDataSource, ColumnDataSource] | None:
    """The layer's off-map mask and region outline (columns ``x``, ``y``, float32, NaN between rings).

    The mask is one patch: a rectangle a little larger than the map's extent, clockwise, then the outline's rings
    (outer rings counter-clockwise, holes clockwise, see :class:`InterpOperator`), so that with either fill rule
    it covers exactly what is not on the map. None when the operator has no outline (analyses before version 9).
    """
    ring = np.asarray(op.outline, np.float64).reshape(-1, 2)
    if not np.isfinite(ring).any():
        return None
    x0, x1, y0, y1 = (float(v) for v in op.extent)
    mx, my = 0.02 * (x1 - x0), 0.02 * (y1 - y0)
    frame = np.array([[x0 - mx, y0 - my], [x0 - mx, y1 + my], [x1 + mx, y1 + my], [x1 + mx, y0 - my],
                      [x0 - mx, y0 - my], [np.nan, np.nan]])  # clockwise
    mask = np.concatenate([frame, ring]).astype(np.float32)
    ring = ring.astype(np.float32)
    return (ColumnDataSource({"x": mask[:, 0], "y": mask[:, 1]}, name="off_map"),
            ColumnDataSource({"x": ring[:, 0], "y": ring[:, 1]}, name="outline"))


def _tile_height(width: int, op: InterpOperator) -> int:
    """A tile's height in CSS pixels for a tile ``width`` wide: the map's aspect plus the title."""
    x0, x1, y0, y1 = (float(v) for v in op.extent)
    return max(120, int(width * (y1 - y0) / max(x1 - x0, 1e-9)) + 24)


def _op_source(op: InterpOperator, name: str, n_neurons: int) -> ColumnDataSource:
    h, w = op.grid_shape
    return ColumnDataSource({
        "pixel": np.asarray(op.pixel, dtype=_index_dtype(int(h) * int(w))),
        "neurons": np.ascontiguousarray(op.neurons, dtype=_index_dtype(int(n_neurons))),
        "weights": np.ascontiguousarray(op.weights, dtype=np.float32),
    }, name=name)


def _tooltips(value_label: str, bound: float | None, col: str = "value") -> list[tuple[str, str]]:
    """Hover text: the neuron and its value (column ``col``), to the digit of the shipped precision ``bound``."""
    if bound is None:  # float32 values: as exact as the analysis
        return [("neuron", "@neuron"), (value_label, f"@{col}{{0.000}}")]
    return [("neuron", "@neuron"),
            (value_label, f"@{col}{{{value_format(bound)}}} \u00b1 {precision_text(bound)}")]


def _points_source(reg: _MapRegistry, li: int, xy: np.ndarray) -> ColumnDataSource:
    """The layer's neuron positions, shared by its tiles; each tile adds its own value column (see _map_tile)."""
    if li not in reg.pts_by_layer:
        reg.pts_by_layer[li] = ColumnDataSource({
            "x": np.asarray(xy[:, 0], np.float32), "y": np.asarray(xy[:, 1], np.float32),
            "neuron": np.arange(len(xy), dtype=np.int32)})
    return reg.pts_by_layer[li]


def _dormant_sources(reg: _MapRegistry, li: int, layer: LayerResult,
                     shown: np.ndarray) -> ColumnDataSource | None:
    """The layer's dormant-unit markers and its mask of the tau-dormant units at the shown snapshots.

    The markers (columns ``x``, ``y``) are filled by ``render_maps.js`` at each snapshot from the mask (column
    ``m``, uint8 of shape (K, N)). None when the analysis holds no mask (results before analysis version 8).
    """
    mask = np.asarray(layer.dormant_mask)
    if mask.ndim != 2 or mask.shape[1] != int(layer.n_neurons) or len(mask) <= int(np.max(shown, initial=0)):
        return None
    if li not in reg.dormant_by_layer:
        marks = ColumnDataSource({"x": np.zeros(0, np.float32), "y": np.zeros(0, np.float32)})
        reg.dormant_by_layer[li] = (marks, ColumnDataSource({"m": np.ascontiguousarray(mask[shown], np.uint8)}))
    return reg.dormant_by_layer[li][0]


def dots_alpha(n_neurons: int) -> float:
    """The line alpha of a layer's neuron dots when they are shown: fainter the more neurons there are."""
    return 0.3 if n_neurons <= 100 else (0.12 if n_neurons <= 400 else 0.06)


def _map_tile(title: str, op: InterpOperator, pts_src: ColumnDataSource, col: str, mapper: LinearColorMapper,
              tooltips: list[tuple[str, str]], ranges: tuple[Range1d, Range1d],
              dormant: ColumnDataSource | None = None,
              region: tuple[ColumnDataSource, ColumnDataSource] | None = None,
              dots: bool = True) -> tuple[figure, ColumnDataSource, HoverTool, object]:
    """One map tile: an empty image on the layout (``render_maps.js`` fills it) plus hoverable neuron positions.

    The positions come from the layer's shared ``pts_src``; the tile adds its hover values as column ``col``. The
    layer's tiles share their ``ranges`` (the operator's extent) too, ``region`` (the off-map mask, light grey
    over everything not on the map, and the region's outline, from :func:`_region_sources`) and ``dormant``, the
    positions of the tau-dormant units at the shown snapshot, drawn as hollow circles. ``dots`` shows the neuron
    dots (else they are transparent, still hoverable). Returns the figure, its image source, its hover tool and
    the dots' glyph.
    """
    x0, x1, y0, y1 = (float(v) for v in op.extent)
    fig = figure(title=plain(title), width=TILE_PX, height=_tile_height(TILE_PX, op),
                 x_range=ranges[0], y_range=ranges[1], toolbar_location=None, tools="", match_aspect=True,
                 min_border=2, x_axis_type=None, y_axis_type=None)  # no axes or grids: fewer models to ship
    fig.outline_line_color = None
    if region is None:  # no outline to draw: the off-map pixels (NaN, transparent) show this background
        fig.background_fill_color = OFF_MAP
    fig.title.text_font_size = "12px"
    fig.title.align = "center"
    # No frame is computed here: the page opens blank (NaN) and the browser draws the shown snapshot at load.
    img_src = ColumnDataSource({"image": [np.full(tuple(op.grid_shape), np.nan, dtype=np.float32)]})
    draw(fig, Image(image="image", x=x0, y=y0, dw=x1 - x0, dh=y1 - y0, color_mapper=mapper), img_src, level="image")
    n = len(pts_src.data["x"])
    pts_src.data[col] = np.zeros(n, np.float32)  # filled by render_maps.js
    # Dots mark neurons for hovering; with many neurons they would hide the map, so they fade (still hoverable).
    r = draw(fig, Scatter(x="x", y="y", size=4, fill_alpha=0.0, line_color="#333333",
                          line_alpha=dots_alpha(n) if dots else 0.0), pts_src,
             hover={"line_color": "black", "line_alpha": 1.0, "fill_color": "black", "fill_alpha": 0.6})
    # fig.renderers[0] is the image, [1] the dots (the browser tests rely on it)
    if dormant is not None:
        draw(fig, Scatter(x="x", y="y", size=5, fill_color="white", fill_alpha=1.0, line_color="#1f2328",
                          line_width=1.2), dormant)
    if region is not None:  # a smooth edge over the pixels' staircase: grey off the map, then the outline
        # drawn after the image and before the dots (level "underlay" lies between the levels "image" and "glyph")
        draw(fig, Patch(x="x", y="y", fill_color=OFF_MAP, line_color=None), region[0], level="underlay")
        draw(fig, Line(x="x", y="y", line_color=OUTLINE_COLOR, line_width=1.2), region[1], level="underlay")
    hover = HoverTool(renderers=[r], tooltips=tooltips, point_policy="snap_to_data")
    fig.add_tools(hover)
    return fig, img_src, hover, r.glyph


def _color_bar(mapper: LinearColorMapper, title: str, width: int) -> tuple[figure, ColorBar]:
    """A horizontal colour bar as a figure of its own (below a grid of tiles)."""
    fig = figure(width=width, height=70, toolbar_location=None, tools="", min_border=0, outline_line_color=None,
                 x_range=(0, 1), y_range=(0, 1), x_axis_type=None, y_axis_type=None)
    draw(fig, Scatter(x="x", y="y"), {"x": [0.5], "y": [0.5]}, visible=False)  # so the figure validates; draws nothing
    bar = ColorBar(color_mapper=mapper, orientation="horizontal", title=plain(title), location=(0, 0), height=12,
                   width=max(width - 40, 100), title_text_font_size="11px", title_text_font_style="normal",
                   major_label_text_font_size="11px", padding=6)
    fig.add_layout(bar, "center")
    return fig, bar


def _counts_vary(counts: np.ndarray | None) -> bool:
    c = np.asarray(counts) if counts is not None else np.zeros((0, 0))
    return c.ndim == 2 and c.shape[0] > 1 and bool((c != c[:1]).any())


def _tile_title(name: str, counts: np.ndarray | None, s: int) -> str:
    return f"{name} (n = {int(counts[s])})" if counts is not None else name


def _encoded(values: np.ndarray, span: tuple[float, float] | None) -> tuple[np.ndarray, list, float | None]:
    """One value source of shape (S, G, N) as shipped: (column ``v``, its ``vq`` entry, precision or None).

    With ``span`` = (low, high), 8-bit codes on that range stored as differences from the previous snapshot
    (:mod:`.quantize`; ``vq`` = ``[low, step, 1]``); without, float32 values (``vq`` = ``[0, 0, 0]``).
    """
    if span is None:
        return np.ascontiguousarray(values, dtype=np.float32), [0.0, 0.0, 0], None
    q = quantize(values, *span)
    return delta_encode(q.codes), [q.low, q.step, 1], q.bound


def _ship(reg: _MapRegistry, values: np.ndarray, span: tuple[float, float] | None) -> float | None:
    """Add one value source of shape (S, G, N) to ``reg``; returns the shipped precision (None: float32)."""
    column_v, vq, bound = _encoded(values, span)
    reg.vsrc.append(ColumnDataSource({"v": column_v}))
    reg.vq.append(vq)
    return bound


def _corr_values(layer: LayerResult, measures: list[str], shown: np.ndarray) -> list[np.ndarray] | None:
    """Per measure, r overall and within class at the shown snapshots, shape (K, 2, N) (NaN drawn as 0)."""
    crs = [layer.corr.get(m) for m in measures] if layer.corr else []
    if not crs or not all(cr is not None for cr in crs):
        return None
    return [np.nan_to_num(np.stack([np.asarray(cr.pearson, np.float32),
                                    np.asarray(cr.pearson_within, np.float32)], axis=1))[shown] for cr in crs]


def shipped_values(layer: LayerResult, measures: list[str], snapshots: np.ndarray,
                   quantized: bool = True) -> list[np.ndarray]:
    """The value columns a page ships for ``layer``'s maps at ``snapshots`` (the page rule sizes them)."""
    shown = np.asarray(snapshots, dtype=np.int64)
    out = []
    for grouping in [g for g, _ in MAP_GROUPINGS] + ["confbin"]:
        gn = layer.naps.get(grouping)
        if gn is not None:
            out.append(_encoded(np.asarray(gn.naps)[shown], activation_span(layer) if quantized else None)[0])
    vals = _corr_values(layer, measures, shown)
    for m, v in zip(measures, vals or []):
        out.append(_encoded(v, corr_span(layer, m) if quantized else None)[0])
    return out


def _layer_grid(layer: LayerResult, li: int, reg: _MapRegistry, kind: int, values: list[np.ndarray],
                spans: list[tuple[float, float]] | None, names: list[str], scale: tuple[list[str], float, float],
                value_label: str, bar_title: str, ncols: int, counts: np.ndarray | None = None,
                shown: np.ndarray | None = None,
                ) -> tuple[list[LayoutDOM], ColorBar, LinearColorMapper, float | None]:
    """Tiles of one layer for value arrays of shape (S, G, N) (the shown snapshots); registers their sources.

    ``values`` holds one array, or for correlation tiles one per confidence measure (the callback picks the
    selected one); ``spans`` the range each is quantised on (None: shipped as float32). ``counts`` (S, G) puts
    each group's sample count in its tile title when it changes over time. ``shown`` (the shown snapshots'
    indices) adds the layer's tau-dormant units as hollow circles (activation maps only).
    Returns the grid of tiles and its colour bar (placed one after the other in a flat column: BokehJS 3.9
    never finishes laying out a grid plot nested three columns deep), the bar, the colour mapper and the
    precision the values are shipped to (the largest over ``values``; None for float32).
    """
    lay = layer.layouts[layer.default_layout]
    if li not in reg.region_by_layer:
        reg.region_by_layer[li] = _region_sources(lay.interp)
    region = reg.region_by_layer[li]
    if len(reg.osrc) == 0 or reg.osrc[-1].name != f"op_{li}":
        reg.osrc.append(_op_source(lay.interp, f"op_{li}", int(layer.n_neurons)))
        reg.op_outlined.append(0 if region is None else 1)
    first = len(reg.vsrc)
    bounds = [_ship(reg, v, spans[i] if spans is not None else None) for i, v in enumerate(values)]
    bound = None if spans is None else max(bounds)
    count_idx = -1
    if _counts_vary(counts):
        reg.csrc.append(ColumnDataSource({"c": np.ascontiguousarray(counts, dtype=np.int32)}))
        count_idx = len(reg.csrc) - 1
    palette, low, high = scale
    mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=(0, 0, 0, 0))
    last = values[0].shape[0] - 1
    pts_src = _points_source(reg, li, np.asarray(lay.xy))
    x0, x1, y0, y1 = (float(v) for v in lay.interp.extent)
    ranges = reg.ranges_by_layer.setdefault(li, (Range1d(x0, x1), Range1d(y0, y1)))
    tiles = []
    for g, name in enumerate(names):
        gc = np.asarray(counts)[:, g] if count_idx >= 0 else None
        col = f"value{len(pts_src.data) - 3}"
        tips = _tooltips(value_label, bound, col)
        fig, img_src, hover, glyph = _map_tile(
            _tile_title(str(name), gc, last), lay.interp, pts_src, col, mapper, tips, ranges,
            None if shown is None else _dormant_sources(reg, li, layer, shown), region,
            dots=int(layer.n_neurons) <= DOTS_MAX_NEURONS)
        tiles.append(fig)
        reg.dot_glyphs.append(glyph)
        reg.dot_alpha.append(dots_alpha(int(layer.n_neurons)))
        reg.imgs.append(img_src)
        reg.pts.append(pts_src)
        reg.tile_col.append(col)
        reg.tile_vals.append(first)
        reg.tile_group.append(g)
        reg.tile_op.append(len(reg.osrc) - 1)
        reg.tile_layer.append(li)
        reg.tile_kind.append(kind)
        reg.tile_title.append(fig.title)
        reg.tile_name.append(plain(name))
        reg.tile_counts.append(count_idx)
        if kind == TAM:
            reg.tam_hovers.append(hover)
            contrast_bound = None if bound is None else 2 * bound * (1 - 1 / max(len(names), 1))
            reg.tam_tips.append([tips, _tooltips("contrast", contrast_bound, col)])
    ncols = min(ncols, len(tiles))
    grid = gridplot(tiles, ncols=ncols, toolbar_location=None)
    bar_fig, bar = _color_bar(mapper, bar_title, ncols * TILE_PX)
    x0, x1, y0, y1 = (float(v) for v in lay.interp.extent)
    reg.grids.append(grid)
    reg.grid_tiles.append(tiles)
    reg.grid_shape.append([ncols, (y1 - y0) / max(x1 - x0, 1e-9)])
    reg.grid_bars.append([bar_fig, bar])
    return [grid, bar_fig], bar, mapper, bound


def activation_span(layer: LayerResult) -> tuple[float, float]:
    """The range a layer's activation maps are quantised on: their colour range (:func:`activation_scale`)."""
    _, low, high = activation_scale(layer)
    return low, high


def corr_span(layer: LayerResult, measure: str) -> tuple[float, float]:
    """The range a layer's correlation maps with ``measure`` are quantised on: \u00b1 the fit limit (largest |r|)."""
    fit = corr_fit_limit(layer, measure)
    return -fit, fit
