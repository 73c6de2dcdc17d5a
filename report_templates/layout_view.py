"""The layout comparison: every layout method of every layer side by side, with its quality scores.

:func:`layout_comparison` takes an :class:`~topotrace.analysis.results.AnalysisResults`, returns the Bokeh model
named ``layout_comparison`` (or ``None`` when no layer has layouts) and touches no file. A run with more than
:data:`~.charts.MAX_STACKED_LAYERS` layers with layouts shows one layer at a time, chosen with a layer selector.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from bokeh.layouts import column, gridplot
from bokeh.models import ColumnDataSource, CustomJS, HoverTool, Scatter, Title
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from ..analysis.results import AnalysisResults, LayerResult
from .charts import MAX_STACKED_LAYERS, layer_select
from .glyphs import draw
from .style import esc, html_div, plain
from .words import unplaced_sentence

LAYOUT_PX = 212  # width of one layout-comparison tile: five fit in the page's column
LAYOUT_COLS = 5
NO_PREFERENCE = "none (same mean for every class)"
NO_PREFERENCE_COLOR = "#ffffff"  # hollow: Category10 already has a grey (class 7)
NO_PREFERENCE_LINE = "#57606a"
NOT_COMPUTED = "not computed"


@dataclass
class _Tile:
    """What one layout tile shows: its scatter columns and the texts and styles of its titles and outline."""

    title: str
    data: dict[str, object]
    tips: list[tuple[str, str]]
    smooth: str
    scores: str
    used: bool  # the layout the maps use: outlined and its smoothness in bold


def _tile_style(used: bool) -> dict[str, object]:
    """Outline and smoothness-title styles of a tile (emphasised for the layout the maps use)."""
    return {"outline_line_color": "#333333" if used else "#d0d7de", "outline_line_width": 2 if used else 1,
            "text_font_style": "bold" if used else "normal", "text_color": "#1f2328" if used else "#57606a"}


def _layer_tiles(layer: LayerResult) -> tuple[str, dict[str, _Tile]]:
    """The heading (HTML, run text escaped) and the tile of each layout method of ``layer``.

    The preferred class of a neuron is the class with the highest mean activation at the last snapshot; a neuron
    with the same mean for every class (e.g. a silent unit) has none and is drawn hollow.
    """
    gn = layer.naps.get("class")
    pref = None  # (N,) preferred group index, -1 for none
    names = None
    if gn is not None and np.asarray(gn.naps).shape[0] > 0:
        last = np.nan_to_num(np.asarray(gn.naps[-1], float), nan=-np.inf)  # (G, N)
        pref = np.where(last.max(axis=0) > last.min(axis=0), last.argmax(axis=0), -1)
        names = [str(gn.group_names[int(p)]) if p >= 0 else NO_PREFERENCE for p in pref]
    tiles = {}
    for method, lay in layer.layouts.items():
        xy = np.asarray(lay.xy, float)
        used = method == layer.default_layout
        data = {"x": xy[:, 0], "y": xy[:, 1], "neuron": np.arange(len(xy))}
        tips = [("neuron", "@neuron")]
        if pref is not None and len(pref) == len(xy):
            data["color"] = [Category10_10[int(p) % 10] if p >= 0 else NO_PREFERENCE_COLOR for p in pref]
            data["line"] = [Category10_10[int(p) % 10] if p >= 0 else NO_PREFERENCE_LINE for p in pref]
            data["pref"] = names
            tips.append(("preferred class", "@pref"))
        else:
            data["color"] = data["line"] = ["#555555"] * len(xy)
        tiles[method] = _Tile(title=plain(method), data=data, tips=tips,
                              smooth=f"smoothness {lay.smoothness:.2f}" + (" \u00b7 used for the maps" if used else ""),
                              scores=f"trust. {lay.trustworthiness:.2f} \u00b7 Shepard {lay.shepard:.2f}", used=used)
    key = ""
    if pref is not None:
        key = " &middot; preferred class: " + " ".join(
            f"<span class='tt-key'><span style='background:{Category10_10[g % 10]}'></span>{esc(name)}</span>"
            for g, name in enumerate(gn.group_names))
        if (pref < 0).any():
            key += (f" <span class='tt-key'><span style='background:{NO_PREFERENCE_COLOR}; "
                    f"box-shadow: inset 0 0 0 1px {NO_PREFERENCE_LINE}'></span>"
                    f"{esc(NO_PREFERENCE)}</span>")
    unplaced = unplaced_sentence(next(iter(layer.layouts.values())).unplaced)  # the same for every method
    unplaced = f" &middot; {esc(unplaced)}" if unplaced else ""
    heading = (f"<p class='tt-layer'>Layer <b>{esc(layer.name)}</b> &middot; "
               f"{int(layer.n_neurons)} neurons{key}{unplaced}</p>")
    return heading, tiles


def _tile_figure(tile: _Tile, source: ColumnDataSource) -> tuple[figure, Title, Title]:
    """One layout tile drawing ``source``; returns the figure, its smoothness title and its scores title."""
    style = _tile_style(tile.used)
    fig = figure(title=tile.title, width=LAYOUT_PX, height=LAYOUT_PX + 44, toolbar_location=None,
                 tools="", match_aspect=True, min_border=4, outline_line_color=style["outline_line_color"],
                 outline_line_width=style["outline_line_width"])
    # Titles added "above" stack away from the plot: smoothness right above it, then the scores, then the main
    # title on top.
    smooth = Title(text=tile.smooth, text_font_size="11px", text_font_style=style["text_font_style"],
                   text_color=style["text_color"])
    scores = Title(text=tile.scores, text_font_size="11px", text_font_style="normal", text_color="#57606a")
    fig.add_layout(smooth, "above")
    fig.add_layout(scores, "above")
    fig.axis.visible = False
    fig.grid.visible = False
    fig.title.text_font_size = "12px"
    r = draw(fig, Scatter(x="x", y="y", fill_color="color", line_color="line", size=5, fill_alpha=0.8,
                          line_alpha=0.8), source)
    fig.add_tools(HoverTool(renderers=[r], tooltips=tile.tips))
    return fig, smooth, scores


LAYOUT_LAYER_JS = """
const li = Math.max(0, layer_sel.options.indexOf(layer_sel.value));
heading.text = headings[li];
for (let m = 0; m < views.length; m++) {
  const src = layers[li][m], fig = figs[m], st = styles[li][m];
  views[m].data = Object.assign({}, src === null ? empty : src.data);
  fig.title.text = texts[li][m][0];
  smooths[m].text = texts[li][m][1];
  scores[m].text = texts[li][m][2];
  fig.outline_line_color = st.outline_line_color;
  fig.outline_line_width = st.outline_line_width;
  smooths[m].text_font_style = st.text_font_style;
  smooths[m].text_color = st.text_color;
}
"""


def _one_layer(layers: list[tuple[str, str, dict[str, _Tile]]]) -> LayoutDOM:
    """The layout comparison of one layer at a time, chosen with a selector (name ``layout_layer_select``).

    One row of tiles, one per layout method of any layer (in the order first met); every layer's scatter columns
    are shipped in a source of their own per method, and a small CustomJS callback copies the selected layer's
    into the sources the tiles draw, with its heading, titles and scores. A method the layer lacks shows an empty
    tile titled "<method>: not computed".
    """
    methods = list(dict.fromkeys(m for _, _, tiles in layers for m in tiles))
    columns = set().union(*(t.data for _, _, tiles in layers for t in tiles.values()))
    with_pref = "pref" in columns
    tips = [("neuron", "@neuron")] + ([("preferred class", "@pref")] if with_pref else [])
    empty = {c: [] for c in sorted(columns)}
    shipped, texts, styles = [], [], []
    for _, _, tiles in layers:
        row_src, row_texts, row_styles = [], [], []
        for m in methods:
            tile = tiles.get(m)
            if tile is None:
                row_src.append(None)
                row_texts.append([plain(f"{m}: {NOT_COMPUTED}"), "", ""])
                row_styles.append(_tile_style(False))
                continue
            data = dict(tile.data)
            if with_pref and "pref" not in data:  # the same columns in every layer's source
                data["pref"] = ["\u2013"] * len(data["x"])
            row_src.append(ColumnDataSource(data))  # drawn by nothing: shipped as a callback argument
            row_texts.append([tile.title, tile.smooth, tile.scores])
            row_styles.append(_tile_style(tile.used))
        shipped.append(row_src)
        texts.append(row_texts)
        styles.append(row_styles)
    figs, smooths, scores, views = [], [], [], []
    for i, m in enumerate(methods):  # the tiles start with the first layer
        tile = layers[0][2].get(m)
        tile = (replace(tile, tips=tips) if tile is not None else
                _Tile(title=texts[0][i][0], data=empty, tips=tips, smooth="", scores="", used=False))
        view = ColumnDataSource(dict(shipped[0][i].data) if shipped[0][i] is not None else dict(empty))
        fig, smooth, score = _tile_figure(tile, view)
        figs.append(fig)
        smooths.append(smooth)
        scores.append(score)
        views.append(view)
    names = [name for name, _, _ in layers]
    select = layer_select(names, "layout_layer_select")
    heading = html_div(text=layers[0][1])
    select.js_on_change("value", CustomJS(args=dict(
        layer_sel=select, heading=heading, headings=[h for _, h, _ in layers], views=views, layers=shipped,
        empty=empty, figs=figs, smooths=smooths, scores=scores, texts=texts, styles=styles), code=LAYOUT_LAYER_JS))
    return column(select, heading, gridplot(figs, ncols=LAYOUT_COLS, toolbar_location=None),
                  name="layout_comparison")


def layout_comparison(results: AnalysisResults) -> LayoutDOM | None:
    """Each layout method of each layer side by side, neurons coloured by preferred class (``layout_comparison``).

    The preferred class of a neuron is the class with the highest mean activation at the last snapshot; a neuron
    with the same mean for every class (e.g. a silent unit) has none and is drawn hollow. Up to
    :data:`~.charts.MAX_STACKED_LAYERS` layers with layouts get a row of tiles each; with more, one row shows the
    layer chosen with a layer selector (see :func:`_one_layer`).
    """
    layers = [(layer.name, *_layer_tiles(layer)) for layer in results.layers.values() if layer.layouts]
    if not layers:
        return None
    if len(layers) > MAX_STACKED_LAYERS:
        return _one_layer(layers)
    rows = []
    for _, heading, tiles in layers:
        figs = [_tile_figure(tile, ColumnDataSource(tile.data))[0] for tile in tiles.values()]
        rows.append(html_div(text=heading))
        rows.append(gridplot(figs, ncols=LAYOUT_COLS, toolbar_location=None))
    return column(*rows, name="layout_comparison")
