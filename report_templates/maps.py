"""Topographic maps: the map tiles, colour bars and layer grids, and their contract with ``render_maps.js``.

Maps are rendered in the browser: the page ships each layer's neuron values per snapshot and its interpolation
operator, and ``render_maps.js`` (the body of one Bokeh ``CustomJS`` callback, beside this module) fills the map
images when the page is ready and whenever the time slider, the play button, the layer selector, the measure
selector or a view switch changes (see :func:`map_sections`, the module's one public builder). Python computes
no map frame. A second callback, ``map_size.js``, switches the tiles between small and large and shows or hides
the neuron dots (:func:`_map_view`).

The data the script expects (its header comment lists every callback argument):

* Per map tile, an image source (column ``image``: one H x W float32 image, row 0 at the bottom, NaN outside the
  layout's region; shipped all NaN) and a value column in its layer's points source (columns ``x``, ``y``,
  ``neuron``, shared by the layer's tiles, and ``value<k>``, float32, one per tile, for the hover tooltip).
* Value sources (column ``v`` of shape (S, G, N): shown snapshots, groups, neurons), one per grid, or for
  correlation grids one per confidence measure, consecutive, in the order of the measure selector: 8-bit codes
  stored as differences from the previous snapshot, with ``vq = [low, step, 1]`` to decode them
  (:mod:`.quantize`), or float32 values with ``vq = [0, 0, 0]``.
* Per layer, one operator source (columns ``pixel`` (P,), ``neurons`` (P, K), uint16 where the indices fit, else
  int32, ``weights`` (P, K) float32), named ``op_<layer position>``. A frame is
  ``img[pixel[p]] = sum_k u[neurons[p, k]] * weights[p, k]`` with ``u[n] = v[s, g, n] - c[n]``, where ``c = 0``,
  or in the contrast view of the activation maps the mean of ``v[s, :, n]`` over the groups that are not empty;
  every other pixel is NaN, except, where the layer has an outline (``op_outlined``), the halo of
  :func:`topotrace.analysis.maps.halo` (same rule), which takes its neighbour's value.
* Per layer with an outline (analysis version 9 on), the region sources the tiles draw over the image: the
  off-map mask (``off_map``, a light grey patch: a frame around the tile, clockwise, then the outline's rings)
  and the outline (``outline``, a line with NaN between rings). Maps are 128 x 128
  (:data:`topotrace.analysis.pipeline.GRID`); the grey (:data:`.style.OFF_MAP`) is never a palette colour, so
  off the map never reads as zero (white).
* Count sources (column ``c``, int32 of shape (S, G)), only for grids whose group sizes change over time; the
  script writes the count of the shown snapshot into the tile title.
* The parallel ``tile_*`` lists of :class:`_MapRegistry`, indexed by tile: value source, group, operator, layer
  position, kind (:data:`TAM`, :data:`PLAIN`, :data:`CORR`), title model, group name, count source (or -1),
  value column; and per grid or layer the colour mappers, colour bars, scales, hover texts and headings the
  view switches change.
* ``steps``, ``epochs`` and ``snap_no`` per shown snapshot for the step label (the same text as
  :func:`_step_text`), the palettes ``pal_div`` and ``pal_seq`` of :mod:`.style`, and the current-snapshot
  markers of the charts with each shown snapshot's x position on them
  (:func:`topotrace.report_templates.charts.time_x`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJS,
    Div,
    HoverTool,
    LinearColorMapper,
    RadioButtonGroup,
    Range1d,
    Select,
    Slider,
    Span,
    Toggle,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.plotting import figure

from topotrace.analysis.results import AnalysisResults, InterpOperator, LayerResult

from .charts import correlation_measures, default_measure, measure_notes, step_axis_type, time_x
from .quantize import delta_encode, precision_text, quantize, value_format
from .style import (
    OFF_MAP,
    activation_scale,
    contrast_limit,
    corr_fit_limit,
    diverging_palette,
    esc,
    html_div,
    plain,
    sequential_palette,
)
from .words import bin_note, dormant_glyph_note

_HERE = Path(__file__).resolve().parent
TILE_PX = 190  # width of one map tile in CSS pixels (the "small" map size, the default)
TILE_PX_LARGE = 320  # the "large" map size
MAPS_WIDTH = 1070  # CSS pixels a grid of tiles may take (the page's column): large tiles wrap into fewer columns
SIZE_LABELS = ["small", "large"]
OUTLINE_COLOR = "#4d4d4d"  # the map region's outline
SIZE_NAME = "map_view_switch"  # the name of the callback of the map size and dots switches
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
    img = fig.image("image", source=img_src, x=x0, y=y0, dw=x1 - x0, dh=y1 - y0, color_mapper=mapper, level="image")
    n = len(pts_src.data["x"])
    pts_src.data[col] = np.zeros(n, np.float32)  # filled by render_maps.js
    # Dots mark neurons for hovering; with many neurons they would hide the map, so they fade (still hoverable).
    r = fig.scatter("x", "y", source=pts_src, size=4, fill_alpha=0.0, line_color="#333333",
                    line_alpha=dots_alpha(n) if dots else 0.0,
                    hover_line_color="black", hover_line_alpha=1.0, hover_fill_color="black", hover_fill_alpha=0.6)
    renderers = [img, r]  # renderers[0] the image, [1] the dots (the browser tests rely on it)
    if dormant is not None:
        renderers.append(fig.scatter("x", "y", source=dormant, size=5, fill_color="white", fill_alpha=1.0,
                                     line_color="#1f2328", line_width=1.2))
    if region is not None:  # a smooth edge over the pixels' staircase: grey off the map, then the outline
        # drawn after the image and before the dots (level "underlay" lies between the levels "image" and "glyph")
        renderers.append(fig.patch("x", "y", source=region[0], fill_color=OFF_MAP, line_color=None,
                                   level="underlay"))
        renderers.append(fig.line("x", "y", source=region[1], line_color=OUTLINE_COLOR, line_width=1.2,
                                  level="underlay"))
    for renderer in renderers:  # nothing is selected or muted here: no glyph copies for those states to ship
        renderer.nonselection_glyph = None
        renderer.muted_glyph = None
    hover = HoverTool(renderers=[r], tooltips=tooltips, point_policy="snap_to_data")
    fig.add_tools(hover)
    return fig, img_src, hover, r.glyph


def _color_bar(mapper: LinearColorMapper, title: str, width: int) -> tuple[figure, ColorBar]:
    """A horizontal colour bar as a figure of its own (below a grid of tiles)."""
    fig = figure(width=width, height=70, toolbar_location=None, tools="", min_border=0, outline_line_color=None,
                 x_range=(0, 1), y_range=(0, 1), x_axis_type=None, y_axis_type=None)
    fig.scatter([0.5], [0.5], visible=False)  # a renderer, so the figure validates; draws nothing
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


def map_layers(results: AnalysisResults) -> list[str]:
    """Names of the layers that have maps (a layout to draw them on), in the analysis's order."""
    return [name for name, la in results.layers.items() if _has_maps(results, la)]


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


def _scale_text(layer: LayerResult) -> str:
    _, low, high = activation_scale(layer)
    if low == 0:
        return f"mean activation 0 (white) to {high:.3g} (dark red)"
    return f"mean activation \u00b1{high:.3g}"


def _heading_text(layer: LayerResult, scale: str, precision: str = "") -> str:
    more = f" &middot; {esc(precision)}" if precision else ""
    return (f"<p class='tt-layer'>Layer <b>{esc(layer.name)}</b> &middot; {int(layer.n_neurons)} neurons "
            f"&middot; layout {esc(layer.default_layout)} &middot; {esc(scale)}, the same for every snapshot{more}</p>")


def _layer_heading(layer: LayerResult, scale: str) -> Div:
    return html_div(text=_heading_text(layer, scale))


def _precision(bound: float | None, what: str = "values", contrast: float | None = None) -> str:
    """Heading text on the shipped precision (empty for float32 values)."""
    if bound is None:
        return ""
    text = f"{what} shipped as 8-bit codes, to \u00b1{precision_text(bound)}"
    if contrast is not None:
        text += f" (contrast \u00b1{precision_text(contrast)})"
    return text


CORR_SCALE_LABELS = ["scale \u00b11", "fit to data"]


def _corr_scale_text(limit: float | None, measure: str) -> str:
    if limit is None:
        return "Pearson r, colour scale \u00b11"
    return f"Pearson r, colour scale \u00b1{limit:.2f} (fit: largest |r| with {measure})"


def _has_maps(results: AnalysisResults, layer: LayerResult) -> bool:
    return bool(layer.layouts) and layer.default_layout in layer.layouts and results.n_snapshots > 0


def _step_text(steps: list[int], epochs: list[int], numbers: list[int], total: int, i: int) -> str:
    """The step label's HTML at slider position ``i``; ``render_maps.js`` writes the same text when it moves.

    ``numbers`` are the shown snapshots' 1-based numbers among the run's ``total`` snapshots.
    """
    return (f"<span class='tt-steplabel'>step {steps[i]:,} \u00b7 epoch {epochs[i]} \u00b7 snapshot {numbers[i]} "
            f"of {total}</span>")


MODE_LABELS = ["mean activation", "contrast to the other groups"]
RENDER_NAME = "render_maps"  # the name of every map callback; the page also runs it once when the document is ready


def activation_span(layer: LayerResult) -> tuple[float, float]:
    """The range a layer's activation maps are quantised on: their colour range (:func:`activation_scale`)."""
    _, low, high = activation_scale(layer)
    return low, high


def corr_span(layer: LayerResult, measure: str) -> tuple[float, float]:
    """The range a layer's correlation maps with ``measure`` are quantised on: \u00b1 the fit limit (largest |r|)."""
    fit = corr_fit_limit(layer, measure)
    return -fit, fit


def map_sections(results: AnalysisResults, measure: Select | None = None,
                 markers: list[Span] | None = None, ncols: int = 5, snapshots: np.ndarray | None = None,
                 quantized: bool = True, keep_step: bool = False) -> dict[str, LayoutDOM]:
    """All map sections with their shared time slider, play button, layer selector and view switches.

    Args:
        results: the analysis of one run.
        measure: the confidence-measure selector from :func:`measure_select` (shared with the correlation
            curves), or None to show correlations with the default measure only.
        markers: current-snapshot markers of the charts over training time (from :func:`time_markers`); the
            slider moves them to its snapshot's step.
        ncols: tiles per row of the class and correct/wrong grids (the comparison page, with a column of maps
            per run, asks for fewer).
        snapshots: indices of the snapshots the maps show, shape (K,), increasing; default every snapshot. The
            step label keeps the run's numbering ("snapshot 17 of 100").
        quantized: ship the map values as 8-bit codes (:mod:`.quantize`); False ships float32 (as before the
            codes, for comparisons and benchmarks).
        keep_step: the page takes the step to open at from its address (``#step=1234``: the nearest shown
            snapshot) and writes the shown step into the links of class ``tt-keepstep`` (the other layer pages),
            so that the time carries over from page to page.

    Returns:
        A dict of named models (only the available ones): ``map_controls`` (slider, play, layer selector and
        step label), ``map_view`` (the ``map_size`` switch, small or large tiles, and the ``map_dots`` toggle),
        ``tam_view`` (the ``tam_mode`` switch: mean activation vs contrast to the other groups),
        ``corr_scale_view`` (the ``corr_scale`` switch of the correlation maps: \u00b11 or fit to the data, see
        :func:`corr_fit_limit`),
        ``tam_maps`` (one map per class and per correct/wrong group), ``confbin_maps`` (one map per confidence
        bin) and ``corr_maps`` (per-neuron correlation with the selected confidence measure, overall and within
        class). One CustomJS callback (named :data:`RENDER_NAME`) renders the tiles of the selected layer at the
        chosen snapshot.
    """
    layers = [la for la in results.layers.values() if _has_maps(results, la)]
    if not layers:
        return {}
    shown = (np.arange(results.n_snapshots) if snapshots is None else np.asarray(snapshots, dtype=np.int64))
    reg = _MapRegistry()
    panels: list[list[LayoutDOM]] = []
    sections: dict[str, list[LayoutDOM]] = {"tam_maps": [], "confbin_maps": [], "corr_maps": []}
    if measure is not None:
        measures = list(measure.options)
    else:
        available = correlation_measures(results)
        measures = [default_measure(results, available)] if available else []
    primary = results.primary_measure
    pal_div = diverging_palette()

    def counts_of(gn):
        return None if gn.counts is None else np.asarray(gn.counts)[shown]

    for li, layer in enumerate(layers):
        show = li == 0  # the first layer is shown until the reader picks another
        mine: list[LayoutDOM] = []
        scale = activation_scale(layer)
        clim = contrast_limit(layer)
        span = [activation_span(layer)] if quantized else None
        # maps per class and correct vs wrong
        head = _layer_heading(layer, "")
        parts: list[LayoutDOM] = [head]
        bounds, contrast_bounds = [], []
        for grouping, caption in MAP_GROUPINGS:
            gn = layer.naps.get(grouping)
            if gn is None:
                continue
            parts.append(html_div(text=f"<h4 class='tt-sub'>{esc(caption)}</h4>"))
            grid, bar, mapper, bound = _layer_grid(layer, li, reg, TAM, [np.asarray(gn.naps)[shown]], span,
                                                   gn.group_names, scale, "mean activation", "mean activation",
                                                   ncols, counts_of(gn), shown)
            parts += grid
            reg.tam_mappers.append(mapper)
            reg.tam_scale.append([scale[1], scale[2], clim, scale[1] == 0])
            reg.tam_bars.append(bar)
            if bound is not None:
                bounds.append(bound)
                contrast_bounds.append(2 * bound * (1 - 1 / max(len(gn.group_names), 1)))
        head.text = _heading_text(layer, f"{_scale_text(layer)}; contrast \u00b1{clim:.3g}",
                                  _precision(max(bounds), contrast=max(contrast_bounds)) if bounds else "")
        if len(parts) > 1:
            block = column(*parts, visible=show)
            sections["tam_maps"].append(block)
            mine.append(block)
        # maps per confidence bin
        gn = layer.naps.get("confbin")
        if gn is not None:
            grid, _, _, bound = _layer_grid(layer, li, reg, PLAIN, [np.asarray(gn.naps)[shown]], span,
                                            gn.group_names, scale, "mean activation",
                                            f"mean activation per {primary} bin", 6, counts_of(gn))
            block = column(html_div(text=_heading_text(layer, _scale_text(layer), _precision(bound))), *grid,
                           visible=show)
            sections["confbin_maps"].append(block)
            mine.append(block)
        # correlation maps, one value source per measure (the selector picks one)
        vals = _corr_values(layer, measures, shown)
        if vals is not None:
            spans = [corr_span(layer, m) for m in measures] if quantized else None
            default = measure.value if measure is not None else measures[0]
            grid, bar, mapper, bound = _layer_grid(layer, li, reg, CORR, vals, spans,
                                                   ["r overall", "r within class"], (pal_div, -1.0, 1.0), "r",
                                                   f"Pearson r of activation with {default}", 2)
            fits = [corr_fit_limit(layer, m) for m in measures]
            precision = _precision(bound, "r")
            head = html_div(text=_heading_text(layer, _corr_scale_text(None, default), precision))
            reg.corr_bars.append(bar)
            reg.corr_mappers.append(mapper)
            reg.corr_fit.append(fits)
            reg.corr_heads.append(head)
            reg.corr_head_texts.append([head.text] + [_heading_text(layer, _corr_scale_text(f, m), precision)
                                                      for f, m in zip(fits, measures)])
            block = column(head, *grid, visible=show)
            sections["corr_maps"].append(block)
            mine.append(block)
        panels.append(mine)
    if not reg.imgs:
        return {}
    steps = [int(results.steps[i]) for i in shown]
    epochs = [int(results.epochs[i]) for i in shown]
    numbers = [int(i) + 1 for i in shown]
    last = len(steps) - 1
    slider = Slider(start=0, end=max(last, 1), value=last, step=1, title="snapshot", show_value=False,
                    width=420, disabled=last < 1, name="time_slider")
    play = Toggle(label="\u25b6 Play", button_type="primary", width=90, disabled=last < 1, name="play")
    label = html_div(text=_step_text(steps, epochs, numbers, results.n_snapshots, last), name="step_label")
    select = None
    if len(layers) > 1:
        select = Select(title="", options=[la.name for la in layers], value=layers[0].name, width=160,
                        name="layer_select")
    mode = RadioButtonGroup(labels=MODE_LABELS, active=0, name="tam_mode") if reg.tam_mappers else None
    corr_scale = (RadioButtonGroup(labels=CORR_SCALE_LABELS, active=0, name="corr_scale") if reg.corr_mappers
                  else None)
    code = (_HERE / "render_maps.js").read_text()
    all_x = time_x(results.steps, step_axis_type(results.steps))  # the charts' axis: every snapshot's steps
    cb = CustomJS(args=dict(
        slider=slider, layer_select=select, label=label, play=play, mode=mode, measure_select=measure,
        steps=steps, epochs=epochs, snap_no=numbers, n_total=int(results.n_snapshots), keep_step=keep_step,
        imgs=reg.imgs, pts=reg.pts, tile_col=reg.tile_col, vsrc=reg.vsrc, vq=reg.vq, tile_vals=reg.tile_vals,
        tile_group=reg.tile_group, osrc=reg.osrc, tile_op=reg.tile_op, tile_layer=reg.tile_layer,
        tile_kind=reg.tile_kind, tile_title=reg.tile_title, tile_name=reg.tile_name, tile_counts=reg.tile_counts,
        csrc=reg.csrc, panels=panels, tam_mappers=reg.tam_mappers, tam_scale=reg.tam_scale, tam_bars=reg.tam_bars,
        tam_hovers=reg.tam_hovers, tam_tips=[[[list(t) for t in tips] for tips in pair] for pair in reg.tam_tips],
        corr_bars=reg.corr_bars, pal_div=pal_div, pal_seq=sequential_palette(),
        corr_bar_texts=[plain(f"Pearson r of activation with {m}") for m in measures],
        corr_scale=corr_scale, corr_mappers=reg.corr_mappers, corr_fit=reg.corr_fit, corr_heads=reg.corr_heads,
        corr_head_texts=reg.corr_head_texts, markers=list(markers or []),
        dormant=[list(reg.dormant_by_layer[li]) if li in reg.dormant_by_layer else None
                 for li in range(len(layers))], op_outlined=reg.op_outlined,
        marker_x=[float(all_x[i]) for i in shown]), code=code, name=RENDER_NAME)
    slider.js_on_change("value", cb)
    play.js_on_change("active", cb)
    widgets: list[LayoutDOM] = []
    if select is not None:
        select.js_on_change("value", cb)
        widgets.append(html_div(text="<span class='tt-ctl'>Layer</span>"))
        widgets.append(select)
    if measure is not None:
        measure.js_on_change("value", cb)
    widgets += [play, html_div(text="<span class='tt-ctl'>Training time</span>"), slider, label]
    out: dict[str, LayoutDOM] = {"map_controls": row(*widgets, name="map_controls")}
    if mode is not None:
        mode.js_on_change("active", cb)
        out["tam_view"] = row(mode, name="tam_view")  # a root of its own: the widget is also a callback argument
    if corr_scale is not None:
        corr_scale.js_on_change("active", cb)
        out["corr_scale_view"] = row(corr_scale, name="corr_scale_view")
    out["map_view"] = _map_view(reg, any(int(la.n_neurons) <= DOTS_MAX_NEURONS for la in layers))
    # Under each section's maps (its first children stay the layers' blocks), what its glyphs, bins and
    # measures are: the sentences of .words.
    tau = (results.params or {}).get("dormant_tau")
    notes = {"tam_maps": _note(dormant_glyph_note(float(tau) if tau is not None else None,
                                                  bool(reg.dormant_by_layer))),
             "confbin_maps": _note(bin_note(primary, str((results.params or {}).get("bins", "snapshot")),
                                            list(layers[0].bin_names or []))),
             "corr_maps": measure_notes(results, measures)}
    for key, blocks in sections.items():
        if blocks:
            out[key] = column(*blocks, notes[key], name=key)
    return out


def _note(text: str) -> LayoutDOM:
    """A section's explanation of its maps (a sentence of :mod:`.words`, escaped) above them."""
    return html_div(text=f"<p style='margin:2px 0 6px;color:#444c56;font-size:13px;max-width:900px'>{esc(text)}</p>",
                    name="map_note")


def _map_view(reg: _MapRegistry, dots: bool) -> LayoutDOM:
    """The map size switch (small or large tiles) and the neuron-dots switch, with their callback.

    The callback (named :data:`SIZE_NAME`; ``map_size.js``) resizes every tile, its colour bar and the columns of
    its grid (large tiles wrap into as many columns as fit :data:`MAPS_WIDTH`), or shows and hides the dots (a
    hidden dot stays hoverable). ``dots``: whether the dots start shown (the tiles were built to match).
    """
    size = RadioButtonGroup(labels=SIZE_LABELS, active=0, name="map_size")
    toggle = Toggle(label="neuron dots", active=dots, width=110, name="map_dots")
    cb = CustomJS(args=dict(
        size=size, dots=toggle, px=[TILE_PX, TILE_PX_LARGE], max_width=MAPS_WIDTH, grids=reg.grids,
        grid_tiles=reg.grid_tiles, grid_shape=reg.grid_shape, grid_bars=reg.grid_bars, dot_glyphs=reg.dot_glyphs,
        dot_alpha=reg.dot_alpha), code=(_HERE / "map_size.js").read_text(), name=SIZE_NAME)
    size.js_on_change("active", cb)
    toggle.js_on_change("active", cb)
    return row(html_div(text="<span class='tt-ctl'>Map size</span>"), size, toggle, name="map_view")
