"""Topographic maps: the map tiles, colour bars and layer grids, and their contract with ``render_maps.js``.

Maps are rendered in the browser: the page ships each layer's neuron values per snapshot and its interpolation
operator, and ``render_maps.js`` (the body of one Bokeh ``CustomJS`` callback, beside this module) fills the map
images when the time slider, the play button, the layer selector, the measure selector or a view switch changes
(see :func:`map_sections`, the module's one public builder).

The data the script expects (its header comment lists every callback argument):

* Per map tile, an image source (column ``image``: one H x W float32 image, row 0 at the bottom, NaN outside the
  layout's region) and a points source (neuron positions; column ``value``, float32, feeds the hover tooltip).
* Value sources (column ``v``, float32 of shape (S, G, N): snapshots, groups, neurons), one per grid, or for
  correlation grids one per confidence measure, consecutive, in the order of the measure selector.
* Per layer, one operator source (columns ``pixel`` (P,) int32, ``neurons`` (P, K) int32, ``weights`` (P, K)
  float32), named ``op_<layer position>``. A frame is ``img[pixel[p]] = sum_k u[neurons[p, k]] * weights[p, k]``
  with ``u[n] = v[s, g, n] - c[n]``, where ``c = 0``, or in the contrast view of the activation maps the mean of
  ``v[s, :, n]`` over the groups that are not empty; every other pixel is NaN.
* Count sources (column ``c``, int32 of shape (S, G)), only for grids whose group sizes change over time; the
  script writes the count of the shown snapshot into the tile title.
* The parallel ``tile_*`` lists of :class:`_MapRegistry`, indexed by tile: value source, group, operator, layer
  position, kind (:data:`TAM`, :data:`PLAIN`, :data:`CORR`), title model, group name, count source (or -1); and
  per grid or layer the colour mappers, colour bars, scales and headings the view switches change.
* ``steps`` and ``epochs`` per snapshot for the step label (the same text as :func:`_step_text`), the palettes
  ``pal_div`` and ``pal_seq`` of :mod:`.style`, and the current-snapshot markers of the charts with each
  snapshot's x position on them (:func:`topotrace.report_templates.charts.time_x`).
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
    Select,
    Slider,
    Span,
    Toggle,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.plotting import figure

from topotrace.analysis.results import AnalysisResults, InterpOperator, LayerResult

from .charts import correlation_measures, default_measure, step_axis_type, time_x
from .style import (
    activation_scale,
    contrast_limit,
    corr_fit_limit,
    diverging_palette,
    esc,
    html_div,
    plain,
    sequential_palette,
)

_HERE = Path(__file__).resolve().parent
TILE_PX = 190  # width of one map tile in CSS pixels
MAP_GROUPINGS = (("class", "by true class"), ("correct", "correct vs wrong"))

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
    return html_div(text=_heading_text(layer, scale))



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



MODE_LABELS = ["mean activation", "contrast to the other groups"]


def map_sections(results: AnalysisResults, measure: Select | None = None,
                 markers: list[Span] | None = None, ncols: int = 5) -> dict[str, LayoutDOM]:
    """All map sections with their shared time slider, play button, layer selector and view switches.

    Args:
        results: the analysis of one run.
        measure: the confidence-measure selector from :func:`measure_select` (shared with the correlation
            curves), or None to show correlations with the default measure only.
        markers: current-snapshot markers of the charts over training time (from :func:`time_markers`); the
            slider moves them to its snapshot's step.
        ncols: tiles per row of the class and correct/wrong grids (the comparison page, with a column of maps
            per run, asks for fewer).

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
        measures = [default_measure(results, available)] if available else []
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
            parts.append(html_div(text=f"<h4 class='tt-sub'>{esc(caption)}</h4>"))
            grid, bar, mapper = _layer_grid(layer, li, reg, TAM, [gn.naps], gn.group_names, scale,
                                            "mean activation", "mean activation", ncols, gn.counts)
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
    label = html_div(text=_step_text(steps, epochs, last), name="step_label")
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
    for key, blocks in sections.items():
        if blocks:
            out[key] = column(*blocks, name=key)
    return out

