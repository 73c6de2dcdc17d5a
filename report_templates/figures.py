"""Figure builders of the report: pure functions from topotrace.analysis results to named Bokeh models.

Every public builder takes an :class:`~topotrace.analysis.results.AnalysisResults` (and nothing mutable), returns a
Bokeh model whose ``name`` the template uses to place it (or ``None`` when the data it needs is missing), and
touches no file. Text from the run reaches Bokeh only as titles, axis labels, legend labels and tooltips
(rendered as text by BokehJS) or through :func:`html.escape` before it becomes ``Div`` HTML.

Maps are rendered in the browser: the page ships each layer's neuron values per snapshot and its
interpolation operator, and ``render_maps.js`` fills the map images when the time slider or the layer
selector moves (see :func:`map_sections`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJS,
    CustomJSTickFormatter,
    Div,
    FixedTicker,
    HoverTool,
    InlineStyleSheet,
    Legend,
    LinearColorMapper,
    RadioButtonGroup,
    Select,
    Slider,
    Span,
    Title,
    Toggle,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10, RdBu11, Reds9
from bokeh.plotting import figure

from topotrace.analysis.results import AnalysisResults, InterpOperator, LayerResult

_HERE = Path(__file__).resolve().parent
TILE_PX = 190  # width of one map tile in CSS pixels
LAYOUT_PX = 212  # width of one layout-comparison tile: five fit in the page's column
LAYOUT_COLS = 5
MAP_GROUPINGS = (("class", "by true class"), ("correct", "correct vs wrong"))
CURVE_NAMES = (("accuracy", "Accuracy"), ("loss", "Loss (cross-entropy)"))
PROBE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")


def diverging_palette(n: int = 256) -> list[str]:
    """Blue (negative) - white (zero) - red (positive) palette of ``n`` hex colours, interpolated from RdBu11."""
    base = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in RdBu11], dtype=np.float64)
    if base[0, 0] > base[0, 2]:  # make it run from blue to red whichever way the palette module lists it
        base = base[::-1]
    pos = np.linspace(0.0, len(base) - 1, n)
    lo = np.floor(pos).astype(int).clip(0, len(base) - 2)
    frac = (pos - lo)[:, None]
    rgb = np.rint(base[lo] * (1 - frac) + base[lo + 1] * frac).astype(int)
    return ["#%02x%02x%02x" % tuple(c) for c in rgb]


def sequential_palette(n: int = 256) -> list[str]:
    """White (zero) to dark red (the limit) palette of ``n`` hex colours, interpolated from white and Reds9."""
    reds = np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in Reds9], dtype=np.float64)
    reds = reds[np.argsort(-reds.sum(axis=1))]  # light to dark, whichever way the palette module lists it
    base = np.concatenate([[[255.0, 255.0, 255.0]], reds[1:]])  # pure white instead of Reds9's near-white end
    pos = np.linspace(0.0, len(base) - 1, n)
    lo = np.floor(pos).astype(int).clip(0, len(base) - 2)
    frac = (pos - lo)[:, None]
    rgb = np.rint(base[lo] * (1 - frac) + base[lo + 1] * frac).astype(int)
    return ["#%02x%02x%02x" % tuple(c) for c in rgb]


def layer_is_nonnegative(layer: LayerResult) -> bool:
    """True when every finite NAP value of the layer (all groupings, snapshots and groups) is >= 0.

    Such layers (e.g. after ReLU) get a sequential colour scale over [0, color_limit] instead of a symmetric one.
    """
    seen = False
    for gn in (layer.naps or {}).values():
        v = np.asarray(gn.naps)
        if v.size == 0 or not np.isfinite(v).any():
            continue
        seen = True
        if np.nanmin(v) < 0:
            return False
    return seen


def _usable(limit: float) -> float:
    """A colour limit that draws: a dead layer (limit 0 or NaN) still gets the scale 1.0."""
    return float(limit) if np.isfinite(limit) and limit > 0 else 1.0


def activation_scale(layer: LayerResult) -> tuple[list[str], float, float]:
    """Palette and (low, high) of the layer's raw-activation maps, the same for every snapshot and group.

    Non-negative layers: white -> dark red over [0, color_limit]; others: blue - white - red over
    [-color_limit, +color_limit]. The PNG export uses exactly this mapping.
    """
    limit = _usable(layer.color_limit)
    if layer_is_nonnegative(layer):
        return sequential_palette(), 0.0, limit
    return diverging_palette(), -limit, limit


def contrast_limit(layer: LayerResult) -> float:
    """Symmetric colour limit of contrast-normalised maps (each neuron's mean over the groups subtracted)."""
    return _usable(layer.color_limit_contrast)


def esc(value: object) -> str:
    """Text from a run, made safe for Div HTML."""
    return html.escape(str(value), quote=True)


def plain(value: object) -> str:
    """Run text for a Bokeh title, axis label or colour-bar title, kept from being read as TeX.

    BokehJS typesets strings delimited by double dollars, backslash-bracket or backslash-parenthesis with
    MathJax, which it would fetch over the network; a zero-width space between the delimiter's characters keeps the
    text plain.
    """
    text = str(value)
    for pair in ("$$", "\\[", "\\]", "\\(", "\\)"):
        text = text.replace(pair, pair[0] + "\u200b" + pair[1])
    return text


# Divs render in their own shadow DOM, so the page's stylesheet does not reach inside; each Div gets this sheet.
_DIV_CSS = """
:host { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, "Noto Sans",
        "Liberation Sans", sans-serif; color: #1f2328; }
.tt-layer { margin: 12px 0 2px; color: #444c56; font-size: 13.5px; }
.tt-sub { margin: 10px 0 0; font-size: 14px; font-weight: 600; }
.tt-ctl { display: inline-block; padding-top: 7px; color: #57606a; font-size: 13px; }
.tt-steplabel { display: inline-block; padding-top: 6px; font-size: 14px; font-variant-numeric: tabular-nums;
                min-width: 270px; }
.tt-key { white-space: nowrap; margin-right: 6px; }
.tt-key span { display: inline-block; width: 10px; height: 10px; border-radius: 50%; margin-right: 3px;
               vertical-align: -1px; }
"""


def _div(text: str, **kw) -> Div:
    """A Div of trusted HTML (callers escape run text with :func:`esc`); TeX typesetting off."""
    return Div(text=text, disable_math=True, stylesheets=[InlineStyleSheet(css=_DIV_CSS)], **kw)


def step_axis_type(steps: np.ndarray) -> str:
    """``"log"`` when the steps span two decades or more (counting step 0 as 1, see :func:`time_x`), else linear."""
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) > 1 and steps.min() >= 0 and (steps.max() + 1) / (steps.min() + 1) >= 100:
        return "log"
    return "linear"


def time_x(steps: np.ndarray, axis_type: str) -> np.ndarray:
    """Positions of steps on a time axis: ``step + 1`` on a log axis (so step 0 has a place), else ``step``."""
    steps = np.asarray(steps, dtype=np.float64)
    return steps + 1.0 if axis_type == "log" else steps


TIME_LABEL = {"log": "training step (log scale)", "linear": "training step"}


def _style_time_axis(fig: figure, steps: np.ndarray, axis_type: str) -> None:
    """On a log step axis, ticks sit at steps 0, 1, 10, 100, ... (drawn at step + 1) and are labelled in steps."""
    if axis_type != "log":
        return
    top = int(np.ceil(np.log10(max(float(np.max(steps)), 1.0) + 1)))
    major = [1.0] + [10.0 ** k + 1 for k in range(top + 1)]  # steps 0, 1, 10, 100, ...
    minor = [m * 10.0 ** k + 1 for k in range(top + 1) for m in range(2, 10)]
    fig.xaxis.ticker = FixedTicker(ticks=major, minor_ticks=minor)
    fig.xaxis.formatter = CustomJSTickFormatter(code="return Math.round(tick - 1).toLocaleString('en-US');")


MARKER_NAME = "time_marker"  # every current-snapshot marker carries this name; render_maps.js moves them all


def _add_time_marker(fig: figure, steps: np.ndarray, axis_type: str) -> Span:
    """A thin vertical line at the last snapshot (where the time slider starts), named :data:`MARKER_NAME`.

    The map callback moves it to the snapshot the slider is on (drawn at :func:`time_x` of that step).
    """
    x = float(time_x(np.asarray(steps)[-1:], axis_type)[0]) if len(steps) else 0.0
    span = Span(location=x, dimension="height", line_color="#57606a", line_width=1, line_alpha=0.8,
                line_dash="dashed", name=MARKER_NAME)
    fig.add_layout(span)
    return span


def time_markers(roots: list[LayoutDOM]) -> list[Span]:
    """The current-snapshot markers inside ``roots`` (for the map callback to move)."""
    return [m for root in roots for m in root.select({"name": MARKER_NAME}) if isinstance(m, Span)]


def _line_figure(title: str, x_label: str, y_label: str, x_axis_type: str = "linear", **kw) -> figure:
    fig = figure(title=plain(title), width=kw.pop("width", 360), height=kw.pop("height", 260), x_axis_type=x_axis_type,
                 toolbar_location=None, tools="", **kw)
    fig.xaxis.axis_label = plain(x_label)
    fig.yaxis.axis_label = plain(y_label)
    fig.title.text_font_size = "13px"
    fig.min_border_right = 12
    return fig


def _time_figure(title: str, y_label: str, steps: np.ndarray, axis_type: str, **kw) -> figure:
    """A line chart over training time with a current-snapshot marker (see :func:`_add_time_marker`).

    The step axis is logarithmic when the snapshots span two decades or more.
    """
    fig = _line_figure(title, TIME_LABEL[axis_type], y_label, axis_type, **kw)
    _style_time_axis(fig, steps, axis_type)
    _add_time_marker(fig, steps, axis_type)
    return fig


def _add_legend(fig: figure, items: list[tuple[str, list]]) -> None:
    if len(items) > 1:
        fig.add_layout(Legend(items=items, location="center", orientation="horizontal", label_text_font_size="11px",
                              padding=2, spacing=8, border_line_alpha=0), "below")


# --------------------------------------------------------------------------------------------- curves
def training_curves(results: AnalysisResults) -> LayoutDOM | None:
    """Accuracy, loss and mean confidence of every probe set over training steps (name ``training_curves``)."""
    curves = results.curves or {}
    steps = np.asarray(results.steps)
    if not curves or len(steps) == 0:
        return None
    xtype = step_axis_type(steps)
    measure = results.primary_measure
    specs = list(CURVE_NAMES) + [(f"conf_{measure}", f"Mean confidence ({measure})")]
    figs = []
    for key, title in specs:
        fig = _time_figure(title, title.split(" (")[0], steps, xtype)
        items = []
        for i, (probe, named) in enumerate(curves.items()):
            if key not in named:
                continue
            y = np.asarray(named[key], dtype=np.float64)
            src = ColumnDataSource({"x": time_x(steps[: len(y)], xtype), "step": steps[: len(y)], "y": y})
            color = PROBE_COLORS[i % len(PROBE_COLORS)]
            r = fig.line("x", "y", source=src, line_width=2, color=color)
            fig.scatter("x", "y", source=src, size=4, color=color)
            items.append((str(probe), [r]))
        if not items:
            continue
        fig.add_tools(HoverTool(tooltips=[("step", "@step"), ("value", "@y{0.0000}")], mode="vline",
                                renderers=[it[1][0] for it in items]))
        _add_legend(fig, items)
        figs.append(fig)
    if not figs:
        return None
    return row(*figs, name="training_curves")


# ----------------------------------------------------------------------------------------------- maps
TAM, PLAIN, CORR = 0, 1, 2  # tile kinds: activation maps that can show contrast, other activation maps, correlations


@dataclass
class _MapRegistry:
    """Sources of all map tiles on the page (parallel ``tile_*`` lists indexed by tile), shared by one callback."""

    imgs: list = field(default_factory=list)
    pts: list = field(default_factory=list)
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


def _op_source(op: InterpOperator, name: str) -> ColumnDataSource:
    return ColumnDataSource({
        "pixel": np.asarray(op.pixel, dtype=np.int32),
        "neurons": np.ascontiguousarray(op.neurons, dtype=np.int32),
        "weights": np.ascontiguousarray(op.weights, dtype=np.float32),
    }, name=name)


def _map_tile(title: str, op: InterpOperator, xy: np.ndarray, values: np.ndarray, mapper: LinearColorMapper,
              value_label: str) -> tuple[figure, ColumnDataSource, ColumnDataSource, HoverTool]:
    """One map: image of the interpolated ``values`` (N,) on the layout plus hoverable neuron positions."""
    x0, x1, y0, y1 = (float(v) for v in op.extent)
    fig = figure(title=plain(title), width=TILE_PX, height=max(120, int(TILE_PX * (y1 - y0) / max(x1 - x0, 1e-9)) + 24),
                 x_range=(x0, x1), y_range=(y0, y1), toolbar_location=None, tools="", match_aspect=True,
                 min_border=2)
    fig.axis.visible = False
    fig.grid.visible = False
    fig.outline_line_color = None
    fig.title.text_font_size = "12px"
    fig.title.align = "center"
    img_src = ColumnDataSource({"image": [op.apply(values).astype(np.float32)]})
    fig.image("image", source=img_src, x=x0, y=y0, dw=x1 - x0, dh=y1 - y0, color_mapper=mapper)
    pts_src = ColumnDataSource({
        "x": np.asarray(xy[:, 0], np.float32), "y": np.asarray(xy[:, 1], np.float32),
        "neuron": np.arange(len(xy), dtype=np.int32), "value": np.asarray(values, np.float32).copy(),
    })
    # Dots mark neurons for hovering; with many neurons they would hide the map, so they fade (still hoverable).
    n = len(xy)
    alpha = 0.3 if n <= 100 else (0.12 if n <= 400 else 0.0)
    r = fig.scatter("x", "y", source=pts_src, size=4, fill_alpha=0.0, line_color="#333333", line_alpha=alpha,
                    hover_line_color="black", hover_line_alpha=1.0, hover_fill_color="black", hover_fill_alpha=0.6)
    hover = HoverTool(renderers=[r], tooltips=[("neuron", "@neuron"), (value_label, "@value{0.000}")],
                      point_policy="snap_to_data")
    fig.add_tools(hover)
    return fig, img_src, pts_src, hover


def _color_bar(mapper: LinearColorMapper, title: str, width: int) -> tuple[figure, ColorBar]:
    """A horizontal colour bar as a figure of its own (below a grid of tiles)."""
    fig = figure(width=width, height=70, toolbar_location=None, tools="", min_border=0, outline_line_color=None,
                 x_range=(0, 1), y_range=(0, 1))
    fig.axis.visible = False
    fig.grid.visible = False
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


def _layer_grid(layer: LayerResult, li: int, reg: _MapRegistry, kind: int, values: list[np.ndarray],
                names: list[str], scale: tuple[list[str], float, float], value_label: str, bar_title: str,
                ncols: int, counts: np.ndarray | None = None) -> tuple[list[LayoutDOM], ColorBar, LinearColorMapper]:
    """Tiles of one layer for value arrays of shape (S, G, N); registers their sources in ``reg``.

    ``values`` holds one array, or for correlation tiles one per confidence measure (the callback picks the
    selected one). ``counts`` (S, G) puts each group's sample count in its tile title when it changes over time.
    Returns the grid of tiles and its colour bar (placed one after the other in a flat column: BokehJS 3.9
    never finishes laying out a grid plot nested three columns deep), the bar and the colour mapper.
    """
    lay = layer.layouts[layer.default_layout]
    if len(reg.osrc) == 0 or reg.osrc[-1].name != f"op_{li}":
        reg.osrc.append(_op_source(lay.interp, f"op_{li}"))
    first = len(reg.vsrc)
    for v in values:
        reg.vsrc.append(ColumnDataSource({"v": np.ascontiguousarray(v, dtype=np.float32)}))
    count_idx = -1
    if _counts_vary(counts):
        reg.csrc.append(ColumnDataSource({"c": np.ascontiguousarray(counts, dtype=np.int32)}))
        count_idx = len(reg.csrc) - 1
    palette, low, high = scale
    mapper = LinearColorMapper(palette=palette, low=low, high=high, nan_color=(0, 0, 0, 0))
    last = values[0].shape[0] - 1
    tiles = []
    for g, name in enumerate(names):
        gc = np.asarray(counts)[:, g] if count_idx >= 0 else None
        fig, img_src, pts_src, hover = _map_tile(_tile_title(str(name), gc, last), lay.interp, np.asarray(lay.xy),
                                                 values[0][last, g], mapper, value_label)
        tiles.append(fig)
        reg.imgs.append(img_src)
        reg.pts.append(pts_src)
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
    ncols = min(ncols, len(tiles))
    grid = gridplot(tiles, ncols=ncols, toolbar_location=None)
    bar_fig, bar = _color_bar(mapper, bar_title, ncols * TILE_PX)
    return [grid, bar_fig], bar, mapper


def _scale_text(layer: LayerResult) -> str:
    _, low, high = activation_scale(layer)
    if low == 0:
        return f"mean activation 0 (white) to {high:.3g} (dark red)"
    return f"mean activation \u00b1{high:.3g}"


def _heading_text(layer: LayerResult, scale: str) -> str:
    return (f"<p class='tt-layer'>Layer <b>{esc(layer.name)}</b> &middot; {int(layer.n_neurons)} neurons "
            f"&middot; layout {esc(layer.default_layout)} &middot; {esc(scale)}, the same for every snapshot</p>")


def _layer_heading(layer: LayerResult, scale: str) -> Div:
    return _div(text=_heading_text(layer, scale))


def corr_fit_limit(layer: LayerResult, measure: str) -> float:
    """Symmetric colour limit of the layer's correlation maps with ``measure`` in the "fit to data" view.

    The largest finite |r| over all snapshots, neurons and both maps (overall and within class), so one scale
    serves every snapshot; 1.0 when there is none (or it is 0).
    """
    cr = (layer.corr or {}).get(measure)
    if cr is None:
        return 1.0
    top = 0.0
    for r in (cr.pearson, cr.pearson_within):
        a = np.abs(np.asarray(r, np.float64))
        a = a[np.isfinite(a)]
        if a.size:
            top = max(top, float(a.max()))
    return _usable(min(top, 1.0))


CORR_SCALE_LABELS = ["scale \u00b11", "fit to data"]


def _corr_scale_text(limit: float | None, measure: str) -> str:
    if limit is None:
        return "Pearson r, colour scale \u00b11"
    return f"Pearson r, colour scale \u00b1{limit:.2f} (fit: largest |r| with {measure})"


def _has_maps(results: AnalysisResults, layer: LayerResult) -> bool:
    return bool(layer.layouts) and layer.default_layout in layer.layouts and results.n_snapshots > 0


def _step_text(steps: list[int], epochs: list[int], s: int) -> str:
    """The step label's HTML; ``render_maps.js`` writes the same text when the slider moves."""
    return (f"<span class='tt-steplabel'>step {steps[s]:,} \u00b7 epoch {epochs[s]} \u00b7 snapshot {s + 1} "
            f"of {len(steps)}</span>")


def correlation_measures(results: AnalysisResults) -> list[str]:
    """Confidence measures with correlations in every layer that has any, in the analysis's order."""
    sets = [set(la.corr) for la in results.layers.values() if la.corr]
    if not sets:
        return []
    common = set.intersection(*sets)
    order = list(results.measures or []) + sorted(common - set(results.measures or []))
    return [m for m in order if m in common]


def _default_measure(results: AnalysisResults, measures: list[str]) -> str:
    return results.primary_measure if results.primary_measure in measures else measures[0]


def measure_select(results: AnalysisResults) -> Select | None:
    """Selector of the confidence measure for the correlation maps and curves (name ``corr_measure``).

    None when fewer than two measures have correlations. The default is the analysis's primary measure.
    """
    measures = correlation_measures(results)
    if len(measures) < 2:
        return None
    return Select(title="", options=measures, value=_default_measure(results, measures), width=170,
                  name="corr_measure")


MODE_LABELS = ["mean activation", "contrast to the other groups"]


def map_sections(results: AnalysisResults, measure: Select | None = None,
                 markers: list[Span] | None = None) -> dict[str, LayoutDOM]:
    """All map sections with their shared time slider, play button, layer selector and view switches.

    Args:
        results: the analysis of one run.
        measure: the confidence-measure selector from :func:`measure_select` (shared with the correlation
            curves), or None to show correlations with the default measure only.
        markers: current-snapshot markers of the charts over training time (from :func:`time_markers`); the
            slider moves them to its snapshot's step.

    Returns:
        A dict of named models (only the available ones): ``map_controls`` (slider, play, layer selector and
        step label), ``tam_view`` (the ``tam_mode`` switch: mean activation vs contrast to the other groups),
        ``corr_scale_view`` (the ``corr_scale`` switch of the correlation maps: \u00b11 or fit to the data, see
        :func:`corr_fit_limit`),
        ``tam_maps`` (one map per class and per correct/wrong group), ``confbin_maps`` (one map per confidence
        bin) and ``corr_maps`` (per-neuron correlation with the selected confidence measure, overall and within
        class). One CustomJS callback renders the tiles of the selected layer at the chosen snapshot.
    """
    layers = [la for la in results.layers.values() if _has_maps(results, la)]
    if not layers:
        return {}
    reg = _MapRegistry()
    panels: list[list[LayoutDOM]] = []
    sections: dict[str, list[LayoutDOM]] = {"tam_maps": [], "confbin_maps": [], "corr_maps": []}
    if measure is not None:
        measures = list(measure.options)
    else:
        available = correlation_measures(results)
        measures = [_default_measure(results, available)] if available else []
    primary = results.primary_measure
    pal_div = diverging_palette()
    for li, layer in enumerate(layers):
        show = li == 0  # the first layer is shown until the reader picks another
        mine: list[LayoutDOM] = []
        scale = activation_scale(layer)
        clim = contrast_limit(layer)
        # maps per class and correct vs wrong
        parts: list[LayoutDOM] = [_layer_heading(layer, f"{_scale_text(layer)}; contrast \u00b1{clim:.3g}")]
        for grouping, caption in MAP_GROUPINGS:
            gn = layer.naps.get(grouping)
            if gn is None:
                continue
            parts.append(_div(text=f"<h4 class='tt-sub'>{esc(caption)}</h4>"))
            grid, bar, mapper = _layer_grid(layer, li, reg, TAM, [gn.naps], gn.group_names, scale,
                                            "mean activation", "mean activation", 5, gn.counts)
            parts += grid
            reg.tam_mappers.append(mapper)
            reg.tam_scale.append([scale[1], scale[2], clim, scale[1] == 0])
            reg.tam_bars.append(bar)
        if len(parts) > 1:
            block = column(*parts, visible=show)
            sections["tam_maps"].append(block)
            mine.append(block)
        # maps per confidence bin
        gn = layer.naps.get("confbin")
        if gn is not None:
            grid, _, _ = _layer_grid(layer, li, reg, PLAIN, [gn.naps], gn.group_names, scale, "mean activation",
                                     f"mean activation per {primary} bin", 6, gn.counts)
            block = column(_layer_heading(layer, _scale_text(layer)), *grid, visible=show)
            sections["confbin_maps"].append(block)
            mine.append(block)
        # correlation maps, one value source per measure (the selector picks one)
        crs = [layer.corr.get(m) for m in measures] if layer.corr else []
        if crs and all(cr is not None for cr in crs):
            vals = [np.nan_to_num(np.stack([np.asarray(cr.pearson, np.float32),
                                            np.asarray(cr.pearson_within, np.float32)], axis=1)) for cr in crs]
            default = measure.value if measure is not None else measures[0]
            grid, bar, mapper = _layer_grid(layer, li, reg, CORR, vals, ["r overall", "r within class"],
                                            (pal_div, -1.0, 1.0), "r", f"Pearson r of activation with {default}", 2)
            fits = [corr_fit_limit(layer, m) for m in measures]
            head = _layer_heading(layer, _corr_scale_text(None, default))
            reg.corr_bars.append(bar)
            reg.corr_mappers.append(mapper)
            reg.corr_fit.append(fits)
            reg.corr_heads.append(head)
            reg.corr_head_texts.append([head.text] + [_heading_text(layer, _corr_scale_text(f, m))
                                                      for f, m in zip(fits, measures)])
            block = column(head, *grid, visible=show)
            sections["corr_maps"].append(block)
            mine.append(block)
        panels.append(mine)
    if not reg.imgs:
        return {}
    steps = [int(s) for s in results.steps]
    epochs = [int(e) for e in results.epochs]
    last = len(steps) - 1
    slider = Slider(start=0, end=max(last, 1), value=last, step=1, title="snapshot", show_value=False,
                    width=420, disabled=last < 1, name="time_slider")
    play = Toggle(label="\u25b6 Play", button_type="primary", width=90, disabled=last < 1, name="play")
    label = _div(text=_step_text(steps, epochs, last), name="step_label")
    select = None
    if len(layers) > 1:
        select = Select(title="", options=[la.name for la in layers], value=layers[0].name, width=160,
                        name="layer_select")
    mode = RadioButtonGroup(labels=MODE_LABELS, active=0, name="tam_mode") if reg.tam_mappers else None
    corr_scale = (RadioButtonGroup(labels=CORR_SCALE_LABELS, active=0, name="corr_scale") if reg.corr_mappers
                  else None)
    code = (_HERE / "render_maps.js").read_text()
    cb = CustomJS(args=dict(
        slider=slider, layer_select=select, label=label, play=play, mode=mode, measure_select=measure,
        steps=steps, epochs=epochs, imgs=reg.imgs, pts=reg.pts, vsrc=reg.vsrc, tile_vals=reg.tile_vals,
        tile_group=reg.tile_group, osrc=reg.osrc, tile_op=reg.tile_op, tile_layer=reg.tile_layer,
        tile_kind=reg.tile_kind, tile_title=reg.tile_title, tile_name=reg.tile_name, tile_counts=reg.tile_counts,
        csrc=reg.csrc, panels=panels, tam_mappers=reg.tam_mappers, tam_scale=reg.tam_scale, tam_bars=reg.tam_bars,
        tam_hovers=reg.tam_hovers, corr_bars=reg.corr_bars, pal_div=pal_div, pal_seq=sequential_palette(),
        corr_bar_texts=[plain(f"Pearson r of activation with {m}") for m in measures],
        corr_scale=corr_scale, corr_mappers=reg.corr_mappers, corr_fit=reg.corr_fit, corr_heads=reg.corr_heads,
        corr_head_texts=reg.corr_head_texts, markers=list(markers or []),
        marker_x=[float(x) for x in time_x(results.steps, step_axis_type(results.steps))]), code=code)
    slider.js_on_change("value", cb)
    play.js_on_change("active", cb)
    widgets: list[LayoutDOM] = []
    if select is not None:
        select.js_on_change("value", cb)
        widgets.append(_div(text="<span class='tt-ctl'>Layer</span>"))
        widgets.append(select)
    if measure is not None:
        measure.js_on_change("value", cb)
    widgets += [play, _div(text="<span class='tt-ctl'>Training time</span>"), slider, label]
    out: dict[str, LayoutDOM] = {"map_controls": row(*widgets, name="map_controls")}
    if mode is not None:
        mode.js_on_change("active", cb)
        out["tam_view"] = row(mode, name="tam_view")  # a root of its own: the widget is also a callback argument
    if corr_scale is not None:
        corr_scale.js_on_change("active", cb)
        out["corr_scale_view"] = row(corr_scale, name="corr_scale_view")
    for key, blocks in sections.items():
        if blocks:
            out[key] = column(*blocks, name=key)
    return out


# -------------------------------------------------------------------------------------- correlations
SUMMARY_KEYS = ("mean_r", "mean_r_within", "frac_sig_pos", "frac_sig_neg", "frac_sig_pos_within",
                "frac_sig_neg_within")
SUMMARY_JS = """
const k = Math.max(0, sel.options.indexOf(sel.value));
for (let i = 0; i < views.length; i++) {
  const all = alls[i].data, v = views[i].data;
  const nd = {x: v.x, step: v.step};
  for (const key of keys) nd[key] = all[sel.value + "|" + key];
  views[i].data = nd;
}
for (let i = 0; i < titles.length; i++) titles[i].text = title_texts[i][k];
"""


def correlation_summary(results: AnalysisResults, measure: Select | None = None) -> LayoutDOM | None:
    """Mean r and the share of significantly positive / negative neurons over time (name ``corr_summary``).

    With a measure selector (from :func:`measure_select`), the curves of every measure are shipped and a small
    CustomJS callback shows those of the selected measure.
    """
    measures = list(measure.options) if measure is not None else []
    if not measures:
        available = correlation_measures(results)
        measures = [_default_measure(results, available)] if available else []
    if not measures:
        return None
    shown = measure.value if measure is not None else measures[0]
    steps = np.asarray(results.steps)
    xtype = step_axis_type(steps)
    rows, views, alls, titles, title_texts = [], [], [], [], []
    for layer in results.layers.values():
        crs = {m: layer.corr.get(m) for m in measures} if layer.corr else {}
        if not crs or any(cr is None or not cr.summary for cr in crs.values()):
            continue
        n = len(steps)
        all_data = {}
        for m, cr in crs.items():
            for key in SUMMARY_KEYS:
                y = np.full(n, np.nan)
                got = cr.summary.get(key)
                if got is not None:
                    got = np.asarray(got, float)[:n]
                    y[: len(got)] = got
                all_data[f"{m}|{key}"] = y
        view = ColumnDataSource({"x": time_x(steps, xtype), "step": steps,
                                 **{k: all_data[f"{shown}|{k}"] for k in SUMMARY_KEYS}})
        views.append(view)
        alls.append(ColumnDataSource(all_data))
        alpha = crs[shown].alpha
        f_r = _time_figure(f"{layer.name}: mean r with {shown}", "mean Pearson r", steps, xtype, width=440)
        f_s = _time_figure(f"{layer.name}: share of neurons with q < {alpha:g}", "share of neurons", steps, xtype,
                           width=520)
        titles.append(f_r.title)
        title_texts.append([plain(f"{layer.name}: mean r with {m}") for m in measures])
        items_r, items_s = [], []
        for suffix, what, dash in (("", "overall", "solid"), ("_within", "within class", "dashed")):
            r = f_r.line("x", f"mean_r{suffix}", source=view, line_width=2, color="#444444", line_dash=dash)
            items_r.append((what, [r]))
            for sign, color in (("pos", "#b2182b"), ("neg", "#2166ac")):
                r = f_s.line("x", f"frac_sig_{sign}{suffix}", source=view, line_width=2, color=color,
                             line_dash=dash)
                items_s.append((f"{'positive' if sign == 'pos' else 'negative'} r, {what}", [r]))
        f_r.add_tools(HoverTool(tooltips=[("step", "@step"), ("mean r", "@mean_r{0.000}"),
                                          ("within class", "@mean_r_within{0.000}")], mode="vline",
                                renderers=[items_r[0][1][0]]))
        f_s.add_tools(HoverTool(tooltips=[("step", "@step"), ("positive", "@frac_sig_pos{0%}"),
                                          ("negative", "@frac_sig_neg{0%}"),
                                          ("positive within", "@frac_sig_pos_within{0%}"),
                                          ("negative within", "@frac_sig_neg_within{0%}")], mode="vline",
                                renderers=[items_s[0][1][0]]))
        _add_legend(f_r, items_r)
        f_s.add_layout(Legend(items=items_s, location="center", label_text_font_size="11px", ncols=2,
                              padding=2, spacing=4, border_line_alpha=0), "below")
        rows.append(row(f_r, f_s))
    if not rows:
        return None
    if measure is not None:
        measure.js_on_change("value", CustomJS(args=dict(sel=measure, views=views, alls=alls, keys=list(SUMMARY_KEYS),
                                                         titles=titles, title_texts=title_texts), code=SUMMARY_JS))
    return column(*rows, name="corr_summary")


def significance_table(results: AnalysisResults) -> list[tuple[str, list[tuple[str, str, str]]]]:
    """Share of neurons with a significant positive / negative r (overall) at the last snapshot.

    Returns:
        Per layer with correlations: (layer name, [(measure, positive share, negative share), ...]) with the
        shares as percent text, in the order of :func:`correlation_measures`.
    """
    out = []
    for layer in results.layers.values():
        rows = []
        for m in correlation_measures(results):
            cr = layer.corr.get(m) if layer.corr else None
            if cr is None:
                continue
            pos, neg = (np.asarray(cr.summary.get(k, []), float) for k in ("frac_sig_pos", "frac_sig_neg"))
            if pos.size == 0 or neg.size == 0:
                continue
            rows.append((m, f"{100 * pos[-1]:.0f} %", f"{100 * neg[-1]:.0f} %"))
        if rows:
            out.append((layer.name, rows))
    return out


# ------------------------------------------------------------------------------- strength / distinct
def strength_distinctness(results: AnalysisResults) -> LayoutDOM | None:
    """Strength and distinctness vs training time and vs confidence bin (name ``strength_distinctness``)."""
    steps = np.asarray(results.steps)
    layers = list(results.layers.values())
    if not layers or len(steps) == 0:
        return None
    xtype = step_axis_type(steps)
    figs = []
    for attr, title in (("strength", "Activity strength (mean |a|)"),
                        ("distinctness", "Class distinctness (between / within variance)")):
        fig = _time_figure(title, attr, steps, xtype)
        items = []
        for i, layer in enumerate(layers):
            y = np.asarray(getattr(layer, attr, None) if getattr(layer, attr, None) is not None else [], float)
            if y.size == 0:
                continue
            src = ColumnDataSource({"x": time_x(steps[: len(y)], xtype), "step": steps[: len(y)], "y": y})
            r = fig.line("x", "y", source=src, line_width=2, color=Category10_10[i % 10])
            items.append((layer.name, [r]))
        if items:
            fig.add_tools(HoverTool(tooltips=[("step", "@step"), (attr, "@y{0.000}")], mode="vline",
                                    renderers=[it[1][0] for it in items]))
            _add_legend(fig, items)
            figs.append(fig)
    bin_rows = []
    for attr, title in (("strength_by_bin", "Strength"), ("distinctness_by_bin", "Distinctness")):
        for layer in layers:
            y = getattr(layer, attr, None)
            names = list(layer.bin_names or [])
            if y is None or np.asarray(y).ndim != 2 or not names or np.asarray(y).shape[1] != len(names):
                continue
            y = np.asarray(y, float)
            fig = _line_figure(f"{title} by {results.primary_measure} bin, {layer.name}", "confidence bin",
                               title.lower(), "auto", x_range=names)
            picks = sorted({0, y.shape[0] // 2, y.shape[0] - 1})
            shades = ["#c6dbef", "#6baed6", "#08519c"][-len(picks):]
            items = []
            for s, color in zip(picks, shades):
                r = fig.line(names, y[s], line_width=2, color=color)
                fig.scatter(names, y[s], size=5, color=color)
                items.append((f"step {int(steps[s]):,}", [r]))
            fig.xaxis.major_label_orientation = 0.6
            _add_legend(fig, items)
            bin_rows.append(fig)
    if not figs and not bin_rows:
        return None
    parts = []
    if figs:
        parts.append(row(*figs))
    for i in range(0, len(bin_rows), 2):
        parts.append(row(*bin_rows[i:i + 2]))
    return column(*parts, name="strength_distinctness")


# ------------------------------------------------------------------------------------------ layouts
NO_PREFERENCE = "none (same mean for every class)"
NO_PREFERENCE_COLOR = "#ffffff"  # hollow: Category10 already has a grey (class 7)
NO_PREFERENCE_LINE = "#57606a"


def layout_comparison(results: AnalysisResults) -> LayoutDOM | None:
    """Each layout method of each layer side by side, neurons coloured by preferred class (``layout_comparison``).

    The preferred class of a neuron is the class with the highest mean activation at the last snapshot; a neuron
    with the same mean for every class (e.g. a silent unit) has none and is drawn hollow.
    """
    rows = []
    for layer in results.layers.values():
        if not layer.layouts:
            continue
        gn = layer.naps.get("class")
        pref = None  # (N,) preferred group index, -1 for none
        names = None
        if gn is not None and np.asarray(gn.naps).shape[0] > 0:
            last = np.nan_to_num(np.asarray(gn.naps[-1], float), nan=-np.inf)  # (G, N)
            pref = np.where(last.max(axis=0) > last.min(axis=0), last.argmax(axis=0), -1)
            names = [str(gn.group_names[int(p)]) if p >= 0 else NO_PREFERENCE for p in pref]
        figs = []
        for method, lay in layer.layouts.items():
            xy = np.asarray(lay.xy, float)
            used = method == layer.default_layout
            fig = figure(title=plain(method), width=LAYOUT_PX, height=LAYOUT_PX + 44, toolbar_location=None,
                         tools="", match_aspect=True, min_border=4, outline_line_color="#333333" if used else "#d0d7de",
                         outline_line_width=2 if used else 1)
            # Titles added "above" stack away from the plot: smoothness right above it, then the scores, then
            # the main title on top.
            smooth = f"smoothness {lay.smoothness:.2f}" + (" \u00b7 used for the maps" if used else "")
            fig.add_layout(Title(text=smooth, text_font_size="11px", text_font_style="bold" if used else "normal",
                                 text_color="#1f2328" if used else "#57606a"), "above")
            fig.add_layout(Title(text=f"trust. {lay.trustworthiness:.2f} \u00b7 Shepard {lay.shepard:.2f}",
                                 text_font_size="11px", text_font_style="normal", text_color="#57606a"), "above")
            fig.axis.visible = False
            fig.grid.visible = False
            fig.title.text_font_size = "12px"
            data = {"x": xy[:, 0], "y": xy[:, 1], "neuron": np.arange(len(xy))}
            tips = [("neuron", "@neuron")]
            if pref is not None and len(pref) == len(xy):
                data["color"] = [Category10_10[int(p) % 10] if p >= 0 else NO_PREFERENCE_COLOR for p in pref]
                data["line"] = [Category10_10[int(p) % 10] if p >= 0 else NO_PREFERENCE_LINE for p in pref]
                data["pref"] = names
                tips.append(("preferred class", "@pref"))
            else:
                data["color"] = data["line"] = ["#555555"] * len(xy)
            r = fig.scatter("x", "y", source=ColumnDataSource(data), fill_color="color", line_color="line", size=5,
                            alpha=0.8)
            fig.add_tools(HoverTool(renderers=[r], tooltips=tips))
            figs.append(fig)
        key = ""
        if pref is not None:
            key = " &middot; preferred class: " + " ".join(
                f"<span class='tt-key'><span style='background:{Category10_10[g % 10]}'></span>{esc(name)}</span>"
                for g, name in enumerate(gn.group_names))
            if (pref < 0).any():
                key += (f" <span class='tt-key'><span style='background:{NO_PREFERENCE_COLOR}; "
                        f"box-shadow: inset 0 0 0 1px {NO_PREFERENCE_LINE}'></span>"
                        f"{esc(NO_PREFERENCE)}</span>")
        rows.append(_div(text=f"<p class='tt-layer'>Layer <b>{esc(layer.name)}</b> &middot; "
                              f"{int(layer.n_neurons)} neurons{key}</p>"))
        rows.append(gridplot(figs, ncols=LAYOUT_COLS, toolbar_location=None))
    if not rows:
        return None
    return column(*rows, name="layout_comparison")
