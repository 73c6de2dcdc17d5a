"""Figure builders of the report: pure functions from analysis results to named Bokeh models.

Every public builder takes an :class:`~analysis.results.AnalysisResults` (and nothing mutable), returns a
Bokeh model whose ``name`` the template uses to place it (or ``None`` when the data it needs is missing), and
touches no file. Text from the run reaches Bokeh only as titles, axis labels, legend labels and tooltips
(rendered as text by BokehJS) or through :func:`html.escape` before it becomes ``Div`` HTML.

Maps are rendered in the browser: the page ships each layer's neuron values per snapshot and its
interpolation operator, and ``render_maps.js`` fills the map images when the time slider or the layer
selector moves (see :func:`map_sections`).
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from bokeh.layouts import column, gridplot, row
from bokeh.models import (
    ColorBar,
    ColumnDataSource,
    CustomJS,
    Div,
    HoverTool,
    InlineStyleSheet,
    Legend,
    LinearColorMapper,
    Select,
    Slider,
    Title,
    Toggle,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10, RdBu11
from bokeh.plotting import figure

from analysis.results import AnalysisResults, InterpOperator, LayerResult

_HERE = Path(__file__).resolve().parent
TILE_PX = 190  # width of one map tile in CSS pixels
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


def esc(value: object) -> str:
    """Text from a run, made safe for Div HTML."""
    return html.escape(str(value), quote=True)


def plain(value: object) -> str:
    """Run text for a Bokeh title, axis label or colour-bar title, kept from being read as TeX.

    BokehJS typesets strings delimited by double dollars, backslash-bracket or backslash-parenthesis with
    MathJax, which it would fetch from a CDN; a zero-width space between the delimiter's characters keeps the
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
"""


def _div(text: str, **kw) -> Div:
    """A Div of trusted HTML (callers escape run text with :func:`esc`); TeX typesetting off."""
    return Div(text=text, disable_math=True, stylesheets=[InlineStyleSheet(css=_DIV_CSS)], **kw)


def step_axis_type(steps: np.ndarray) -> str:
    """``"log"`` when the steps are positive and span two decades or more, else ``"linear"``."""
    steps = np.asarray(steps, dtype=np.float64)
    if len(steps) > 1 and steps.min() > 0 and steps.max() / steps.min() >= 100:
        return "log"
    return "linear"


def _line_figure(title: str, x_label: str, y_label: str, x_axis_type: str = "linear", **kw) -> figure:
    fig = figure(title=plain(title), width=kw.pop("width", 360), height=kw.pop("height", 260), x_axis_type=x_axis_type,
                 toolbar_location=None, tools="", **kw)
    fig.xaxis.axis_label = plain(x_label)
    fig.yaxis.axis_label = plain(y_label)
    fig.title.text_font_size = "13px"
    fig.min_border_right = 12
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
        fig = _line_figure(title, "training step", title.split(" (")[0], xtype)
        items = []
        for i, (probe, named) in enumerate(curves.items()):
            if key not in named:
                continue
            y = np.asarray(named[key], dtype=np.float64)
            src = ColumnDataSource({"step": steps[: len(y)], "y": y})
            color = PROBE_COLORS[i % len(PROBE_COLORS)]
            r = fig.line("step", "y", source=src, line_width=2, color=color)
            fig.scatter("step", "y", source=src, size=4, color=color)
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
@dataclass
class _MapRegistry:
    """Sources of all map tiles on the page (parallel lists indexed by tile), shared by one callback."""

    imgs: list
    pts: list
    tile_vals: list
    tile_group: list
    tile_op: list
    tile_layer: list
    vsrc: list
    osrc: list


def _op_source(op: InterpOperator, name: str) -> ColumnDataSource:
    return ColumnDataSource({
        "pixel": np.asarray(op.pixel, dtype=np.int32),
        "neurons": np.ascontiguousarray(op.neurons, dtype=np.int32),
        "weights": np.ascontiguousarray(op.weights, dtype=np.float32),
    }, name=name)


def _map_tile(title: str, op: InterpOperator, xy: np.ndarray, values: np.ndarray, mapper: LinearColorMapper,
              value_label: str) -> tuple[figure, ColumnDataSource, ColumnDataSource]:
    """One map: image of the interpolated ``values`` (N,) on the layout plus hoverable neuron positions."""
    x0, x1, y0, y1 = (float(v) for v in op.extent)
    h, w = op.grid_shape
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
    alpha = 0.35 if n <= 100 else (0.12 if n <= 400 else 0.0)
    r = fig.scatter("x", "y", source=pts_src, size=5, fill_alpha=0.0, line_color="#333333", line_alpha=alpha,
                    hover_line_color="black", hover_line_alpha=1.0, hover_fill_color="black", hover_fill_alpha=0.6)
    fig.add_tools(HoverTool(renderers=[r], tooltips=[("neuron", "@neuron"), (value_label, "@value{0.000}")],
                            point_policy="snap_to_data"))
    return fig, img_src, pts_src


def _color_bar(mapper: LinearColorMapper, title: str, width: int) -> figure:
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
    return fig


def _layer_grid(results: AnalysisResults, layer: LayerResult, li: int, reg: _MapRegistry, label: str,
                values: np.ndarray, names: list[str], limit: float, value_label: str, bar_title: str,
                ncols: int) -> list[LayoutDOM]:
    """Tiles of one layer for one value array of shape (S, G, N); registers their sources in ``reg``.

    Returns the grid of tiles and its colour bar (placed one after the other in a flat column: BokehJS 3.9
    never finishes laying out a grid plot nested three columns deep).
    """
    lay = layer.layouts[layer.default_layout]
    if len(reg.osrc) == 0 or reg.osrc[-1].name != f"op_{li}":
        reg.osrc.append(_op_source(lay.interp, f"op_{li}"))
    reg.vsrc.append(ColumnDataSource({"v": np.ascontiguousarray(values, dtype=np.float32)}, name=label))
    limit = float(limit) if np.isfinite(limit) and limit > 0 else 1.0  # a dead layer still gets a usable scale
    mapper = LinearColorMapper(palette=diverging_palette(), low=-limit, high=limit, nan_color=(0, 0, 0, 0))
    last = values.shape[0] - 1
    tiles = []
    for g, name in enumerate(names):
        fig, img_src, pts_src = _map_tile(str(name), lay.interp, np.asarray(lay.xy), values[last, g], mapper,
                                          value_label)
        tiles.append(fig)
        reg.imgs.append(img_src)
        reg.pts.append(pts_src)
        reg.tile_vals.append(len(reg.vsrc) - 1)
        reg.tile_group.append(g)
        reg.tile_op.append(len(reg.osrc) - 1)
        reg.tile_layer.append(li)
    ncols = min(ncols, len(tiles))
    grid = gridplot(tiles, ncols=ncols, toolbar_location=None)
    return [grid, _color_bar(mapper, bar_title, ncols * TILE_PX)]


def _layer_heading(layer: LayerResult, scale: str | None = None) -> Div:
    if scale is None:
        scale = f"colour scale \u00b1{float(layer.color_limit):.3g}, the same for every snapshot"
    text = (f"<p class='tt-layer'>Layer <b>{esc(layer.name)}</b> &middot; {int(layer.n_neurons)} neurons "
            f"&middot; layout {esc(layer.default_layout)} &middot; {esc(scale)}</p>")
    return _div(text=text)


def _has_maps(results: AnalysisResults, layer: LayerResult) -> bool:
    return bool(layer.layouts) and layer.default_layout in layer.layouts and results.n_snapshots > 0


def _step_text(steps: list[int], epochs: list[int], s: int) -> str:
    """The step label's HTML; ``render_maps.js`` writes the same text when the slider moves."""
    return (f"<span class='tt-steplabel'>step {steps[s]:,} \u00b7 epoch {epochs[s]} \u00b7 snapshot {s + 1} "
            f"of {len(steps)}</span>")


def map_sections(results: AnalysisResults) -> dict[str, LayoutDOM]:
    """All map sections with their shared time slider, play button and layer selector.

    Returns a dict of named models (only the available ones): ``map_controls`` (slider, play, layer selector
    and step label), ``tam_maps`` (one map per class and per correct/wrong group), ``confbin_maps`` (one map
    per confidence bin) and ``corr_maps`` (per-neuron correlation with the primary confidence measure, overall
    and within class). One CustomJS callback renders the tiles of the selected layer at the chosen snapshot.
    """
    layers = [la for la in results.layers.values() if _has_maps(results, la)]
    if not layers:
        return {}
    reg = _MapRegistry([], [], [], [], [], [], [], [])
    panels: list[list[LayoutDOM]] = []
    sections: dict[str, list[LayoutDOM]] = {"tam_maps": [], "confbin_maps": [], "corr_maps": []}
    measure = results.primary_measure
    for li, layer in enumerate(layers):
        show = li == 0  # the first layer is shown until the reader picks another
        mine: list[LayoutDOM] = []
        # maps per class and correct vs wrong
        parts: list[LayoutDOM] = [_layer_heading(layer)]
        for grouping, caption in MAP_GROUPINGS:
            gn = layer.naps.get(grouping)
            if gn is None:
                continue
            parts.append(_div(text=f"<h4 class='tt-sub'>Mean activation {esc(caption)}</h4>"))
            parts += _layer_grid(results, layer, li, reg, f"naps_{li}_{grouping}", gn.naps, gn.group_names,
                                 layer.color_limit, "mean activation", "mean activation", 5)
        if len(parts) > 1:
            block = column(*parts, visible=show)
            sections["tam_maps"].append(block)
            mine.append(block)
        # maps per confidence bin
        gn = layer.naps.get("confbin")
        if gn is not None:
            block = column(_layer_heading(layer),
                           *_layer_grid(results, layer, li, reg, f"naps_{li}_confbin", gn.naps, gn.group_names,
                                        layer.color_limit, "mean activation", f"mean activation per {measure} bin",
                                        6), visible=show)
            sections["confbin_maps"].append(block)
            mine.append(block)
        # correlation maps
        cr = layer.corr.get(measure) if layer.corr else None
        if cr is not None:
            vals = np.stack([np.asarray(cr.pearson, np.float32), np.asarray(cr.pearson_within, np.float32)], axis=1)
            block = column(_layer_heading(layer, "Pearson r, colour scale \u00b11"),
                           *_layer_grid(results, layer, li, reg, f"corr_{li}", np.nan_to_num(vals),
                                        ["r overall", "r within class"], 1.0, "r",
                                        f"Pearson r of activation with {measure}", 2), visible=show)
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
    code = (_HERE / "render_maps.js").read_text()
    cb = CustomJS(args=dict(slider=slider, layer_select=select, label=label, play=play, steps=steps,
                            epochs=epochs, imgs=reg.imgs, pts=reg.pts, vsrc=reg.vsrc, tile_vals=reg.tile_vals,
                            tile_group=reg.tile_group, osrc=reg.osrc, tile_op=reg.tile_op,
                            tile_layer=reg.tile_layer, panels=panels), code=code)
    slider.js_on_change("value", cb)
    play.js_on_change("active", cb)
    widgets: list[LayoutDOM] = []
    if select is not None:
        select.js_on_change("value", cb)
        widgets.append(_div(text="<span class='tt-ctl'>Layer</span>"))
        widgets.append(select)
    widgets += [play, _div(text="<span class='tt-ctl'>Training time</span>"), slider, label]
    out: dict[str, LayoutDOM] = {"map_controls": row(*widgets, name="map_controls")}
    for key, blocks in sections.items():
        if blocks:
            out[key] = column(*blocks, name=key)
    return out


# -------------------------------------------------------------------------------------- correlations
def correlation_summary(results: AnalysisResults) -> LayoutDOM | None:
    """Mean r and the share of significantly positive / negative neurons over time (name ``corr_summary``)."""
    measure = results.primary_measure
    steps = np.asarray(results.steps)
    xtype = step_axis_type(steps)
    rows = []
    for layer in results.layers.values():
        cr = layer.corr.get(measure) if layer.corr else None
        if cr is None or not cr.summary:
            continue
        f_r = _line_figure(f"{layer.name}: mean r with {measure}", "training step", "mean Pearson r", xtype,
                           width=420)
        f_s = _line_figure(f"{layer.name}: share of neurons with q < {cr.alpha:g}", "training step",
                           "share of neurons", xtype, width=420)
        items_r, items_s = [], []
        for suffix, what, dash in (("", "overall", "solid"), ("_within", "within class", "dashed")):
            y = cr.summary.get(f"mean_r{suffix}")
            if y is not None:
                r = f_r.line(steps[: len(y)], np.asarray(y, float), line_width=2, color="#444444", line_dash=dash)
                items_r.append((what, [r]))
            for sign, color in (("pos", "#b2182b"), ("neg", "#2166ac")):
                y = cr.summary.get(f"frac_sig_{sign}{suffix}")
                if y is not None:
                    r = f_s.line(steps[: len(y)], np.asarray(y, float), line_width=2, color=color, line_dash=dash)
                    items_s.append((f"{'positive' if sign == 'pos' else 'negative'} r, {what}", [r]))
        _add_legend(f_r, items_r)
        if len(items_s) > 1:
            f_s.add_layout(Legend(items=items_s, location="center", label_text_font_size="11px", ncols=2,
                                  padding=2, border_line_alpha=0), "below")
        rows.append(row(f_r, f_s))
    if not rows:
        return None
    return column(*rows, name="corr_summary")


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
        fig = _line_figure(title, "training step", attr, xtype)
        items = []
        for i, layer in enumerate(layers):
            y = np.asarray(getattr(layer, attr, None) if getattr(layer, attr, None) is not None else [], float)
            if y.size == 0:
                continue
            r = fig.line(steps[: len(y)], y, line_width=2, color=Category10_10[i % 10])
            items.append((layer.name, [r]))
        if items:
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
def layout_comparison(results: AnalysisResults) -> LayoutDOM | None:
    """Each layout method of each layer side by side, neurons coloured by preferred class (``layout_comparison``).

    The preferred class of a neuron is the class with the highest mean activation at the last snapshot.
    """
    rows = []
    for layer in results.layers.values():
        if not layer.layouts:
            continue
        gn = layer.naps.get("class")
        pref = None
        names = None
        if gn is not None and np.asarray(gn.naps).shape[0] > 0:
            last = np.nan_to_num(np.asarray(gn.naps[-1], float), nan=-np.inf)  # (G, N)
            pref = last.argmax(axis=0)
            names = [str(gn.group_names[int(p)]) for p in pref]
        figs = []
        for method, lay in layer.layouts.items():
            xy = np.asarray(lay.xy, float)
            title = method + ("  (used for the maps)" if method == layer.default_layout else "")
            fig = figure(title=plain(title), width=268, height=282, toolbar_location=None, tools="",
                         match_aspect=True, min_border=4)
            fig.add_layout(Title(text=f"trust. {lay.trustworthiness:.2f} \u00b7 Shepard {lay.shepard:.2f} "
                                      f"\u00b7 smooth. {lay.smoothness:.2f}", text_font_size="11px",
                                 text_font_style="normal", text_color="#57606a"), "above")
            fig.axis.visible = False
            fig.grid.visible = False
            fig.title.text_font_size = "12px"
            data = {"x": xy[:, 0], "y": xy[:, 1], "neuron": np.arange(len(xy))}
            tips = [("neuron", "@neuron")]
            if pref is not None and len(pref) == len(xy):
                data["color"] = [Category10_10[int(p) % 10] for p in pref]
                data["pref"] = names
                tips.append(("preferred class", "@pref"))
            else:
                data["color"] = ["#555555"] * len(xy)
            r = fig.scatter("x", "y", source=ColumnDataSource(data), color="color", size=5, alpha=0.8)
            fig.add_tools(HoverTool(renderers=[r], tooltips=tips))
            figs.append(fig)
        rows.append(_div(text=f"<p class='tt-layer'>Layer <b>{esc(layer.name)}</b> &middot; "
                              f"{int(layer.n_neurons)} neurons</p>"))
        rows.append(gridplot(figs, ncols=4, toolbar_location=None))
    if not rows:
        return None
    return column(*rows, name="layout_comparison")
