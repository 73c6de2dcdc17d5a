"""Topographic maps: the page's map sections (grids of tiles per layer) and their contract with ``render_maps.js``.

Maps are rendered in the browser: the page ships each layer's neuron values per snapshot and its interpolation
operator, and ``render_maps.js`` (the body of one Bokeh ``CustomJS`` callback, beside this module) fills the map
images when the page is ready and whenever the time slider, the play button, the layer selector, the measure
selector or a view switch changes (see :func:`map_sections`, the module's one public builder). Python computes
no map frame. A second callback, ``map_size.js``, switches the tiles between small and large and shows or hides
the neuron dots (:func:`_size_callback`). The switches placed in roots of their own (contrast, colour scale,
measure, map size and dots) reach these callbacks through ``map_relay.js``, by name: a root holding a map callback
would reach every map model, and Bokeh walks each root's models when it writes a page.

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
* The parallel ``tile_*`` lists of :class:`.map_tiles._MapRegistry`, indexed by tile: value source, group, operator,
  layer position, kind (:data:`TAM`, :data:`PLAIN`, :data:`CORR`), title model, group name, count source
  (or -1), value column; and per grid or layer the colour mappers, colour bars, scales, hover texts and headings the
  view switches change.
* ``steps``, ``epochs`` and ``snap_no`` per shown snapshot for the step label (the same text as
  :func:`_step_text`), the palettes ``pal_div`` and ``pal_seq`` of :mod:`.style`, and the current-snapshot
  markers of the charts with each shown snapshot's x position on them
  (:func:`topotrace.report_templates.charts.time_x`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (
    CustomJS,
    Div,
    RadioButtonGroup,
    Select,
    Slider,
    Span,
    Toggle,
)
from bokeh.models.layouts import LayoutDOM

from ..analysis.results import AnalysisResults, LayerResult
from .charts import correlation_measures, default_measure, measure_notes, step_axis_type, time_x
from .map_tiles import (  # noqa: F401 (re-exported: the maps' sizes, spans and shipped values, as callers know them)
    CORR,
    DOTS_MAX_NEURONS,
    MAP_GROUPINGS,
    PLAIN,
    TAM,
    TILE_PX,
    TILE_PX_LARGE,
    _corr_values,
    _layer_grid,
    _MapRegistry,
    activation_span,
    corr_span,
    dots_alpha,
    shipped_values,
)
from .quantize import precision_text
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
from .words import bin_note, dormant_glyph_note

_HERE = Path(__file__).resolve().parent
MAPS_WIDTH = 1070  # CSS pixels a grid of tiles may take (the page's column): large tiles wrap into fewer columns
SIZE_LABELS = ["small", "large"]
SIZE_NAME = "map_view_switch"  # the name of the callback of the map size and dots switches




def map_layers(results: AnalysisResults) -> list[str]:
    """Names of the layers that have maps (a layout to draw them on), in the analysis's order."""
    return [name for name, la in results.layers.items() if _has_maps(results, la)]




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
    size_cb = _size_callback(reg, any(int(la.n_neurons) <= DOTS_MAX_NEURONS for la in layers))
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
        marker_x=[float(all_x[i]) for i in shown],
        view_switch=size_cb), code=code, name=RENDER_NAME)  # held here: see map_relay.js
    slider.js_on_change("value", cb)
    play.js_on_change("active", cb)
    widgets: list[LayoutDOM] = []
    if select is not None:
        select.js_on_change("value", cb)
        widgets.append(html_div(text="<span class='tt-ctl'>Layer</span>"))
        widgets.append(select)
    relay = _relay(RENDER_NAME)  # one for every switch in a root of its own: each runs it as itself (cb_obj)
    if measure is not None:
        measure.js_on_change("value", relay)
    widgets += [play, html_div(text="<span class='tt-ctl'>Training time</span>"), slider, label]
    out: dict[str, LayoutDOM] = {"map_controls": row(*widgets, name="map_controls")}
    if mode is not None:
        mode.js_on_change("active", relay)
        out["tam_view"] = row(mode, name="tam_view")  # a root of its own: the widget is also a callback argument
    if corr_scale is not None:
        corr_scale.js_on_change("active", relay)
        out["corr_scale_view"] = row(corr_scale, name="corr_scale_view")
    out["map_view"] = _map_view(size_cb)
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


def _relay(target: str) -> CustomJS:
    """The callback of a widget in a root of its own: it runs the map callback named ``target`` holding the widget.

    See ``map_relay.js``: the widget's root then does not reach every map model.
    """
    return CustomJS(args=dict(target=target), code=(_HERE / "map_relay.js").read_text())


def _size_callback(reg: _MapRegistry, dots: bool) -> CustomJS:
    """The callback of the map size and neuron-dots switches (named :data:`SIZE_NAME`; ``map_size.js``).

    It resizes every tile, its colour bar and the columns of its grid (large tiles wrap into as many columns as fit
    :data:`MAPS_WIDTH`), or shows and hides the dots (a hidden dot stays hoverable). Its switches are made here
    (``dots``: whether the dots start shown; the tiles were built to match) and placed by :func:`_map_view`; the
    render callback holds it (see ``map_relay.js``).
    """
    size = RadioButtonGroup(labels=SIZE_LABELS, active=0, name="map_size")
    toggle = Toggle(label="neuron dots", active=dots, width=110, name="map_dots")
    return CustomJS(args=dict(
        size=size, dots=toggle, px=[TILE_PX, TILE_PX_LARGE], max_width=MAPS_WIDTH, grids=reg.grids,
        grid_tiles=reg.grid_tiles, grid_shape=reg.grid_shape, grid_bars=reg.grid_bars, dot_glyphs=reg.dot_glyphs,
        dot_alpha=reg.dot_alpha), code=(_HERE / "map_size.js").read_text(), name=SIZE_NAME)


def _map_view(cb: CustomJS) -> LayoutDOM:
    """The map size switch (small or large tiles) and the neuron-dots switch of the size callback ``cb``."""
    size, toggle, relay = cb.args["size"], cb.args["dots"], _relay(SIZE_NAME)
    size.js_on_change("active", relay)
    toggle.js_on_change("active", relay)
    return row(html_div(text="<span class='tt-ctl'>Map size</span>"), size, toggle, name="map_view")
