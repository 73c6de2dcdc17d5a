"""Charts over training time and confidence, with their time axis, snapshot markers and measure selector.

The charts: training curves, the correlation summary and significance table, strength and distinctness (over
training time and per confidence bin). Every public builder takes an
:class:`~topotrace.analysis.results.AnalysisResults` (and nothing mutable), returns a Bokeh model whose ``name``
the template uses to place it (or ``None`` when the data it needs is missing), and touches no file.

Each chart over training time carries a current-snapshot marker named :data:`MARKER_NAME`; :func:`time_markers`
collects them for the map callback (:func:`topotrace.report_templates.maps.map_sections`), which moves them with
the time slider. The selector of :func:`measure_select` is shared by the correlation curves and the correlation
maps.
"""

from __future__ import annotations

import numpy as np
from bokeh.layouts import column, row
from bokeh.model.util import collect_models
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    CustomJSTickFormatter,
    FixedTicker,
    HoverTool,
    Legend,
    Line,
    Select,
    Span,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from ..analysis.results import AnalysisResults, LayerResult
from .glyphs import draw, line_with_dots
from .style import esc, html_div, plain
from .words import measure_definitions, uncertainty_note

CURVE_NAMES = (("accuracy", "Accuracy"), ("loss", "Loss (cross-entropy)"))
PROBE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b")


# ------------------------------------------------------------------------------------------ time axis
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
    # level "overlay": moving the marker repaints only the chart's overlay canvas, not its lines, axes and labels
    span = Span(location=x, dimension="height", line_color="#57606a", line_width=1, line_alpha=0.8,
                line_dash="dashed", name=MARKER_NAME, level="overlay")
    fig.add_layout(span)
    return span


def time_markers(roots: list[LayoutDOM]) -> list[Span]:
    """The current-snapshot markers inside ``roots`` (for the map callback to move)."""
    return [m for m in collect_models(*roots) if isinstance(m, Span) and m.name == MARKER_NAME]  # in page order


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


# ---------------------------------------------------------------------------------- confidence measures
def correlation_measures(results: AnalysisResults) -> list[str]:
    """Confidence measures with correlations in every layer that has any, in the analysis's order."""
    sets = [set(la.corr) for la in results.layers.values() if la.corr]
    if not sets:
        return []
    common = set.intersection(*sets)
    order = list(results.measures or []) + sorted(common - set(results.measures or []))
    return [m for m in order if m in common]


def default_measure(results: AnalysisResults, measures: list[str]) -> str:
    """The measure shown first: the analysis's primary measure when it is among ``measures``, else the first."""
    return results.primary_measure if results.primary_measure in measures else measures[0]


def measure_select(results: AnalysisResults) -> Select | None:
    """Selector of the confidence measure for the correlation maps and curves (name ``corr_measure``).

    None when fewer than two measures have correlations. The default is the analysis's primary measure.
    """
    measures = correlation_measures(results)
    if len(measures) < 2:
        return None
    return Select(title="", options=measures, value=default_measure(results, measures), width=170,
                  name="corr_measure")


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
            r, _ = line_with_dots(fig, src, color, size=4)
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


# ------------------------------------------------------------------------------ one layer at a time
# A per-layer section (correlation summary, charts per confidence bin, layout comparison) of more layers than this
# shows one layer at a time, chosen with a layer selector: BokehJS builds every figure of a page before it paints.
MAX_STACKED_LAYERS = 4


def layer_select(names: list[str], name: str) -> Select:
    """Selector of the layer a section shows: title "Layer", options ``names`` in order, the first selected."""
    return Select(title="Layer", options=list(names), value=names[0], width=170, name=name)


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
# One layer at a time: the curves shown are those of the selected layer (layer_sel) and measure (measure_sel, or
# the one measure shipped when there is no measure selector).
SUMMARY_LAYER_JS = """
const li = Math.max(0, layer_sel.options.indexOf(layer_sel.value));
const k = measure_sel === null ? 0 : Math.max(0, measures.indexOf(measure_sel.value));
const all = alls[li].data, v = view.data;
const nd = {x: v.x, step: v.step};
for (const key of keys) nd[key] = all[measures[k] + "|" + key];
view.data = nd;
titles[0].text = r_texts[li][k];
titles[1].text = s_texts[li][k];
"""


def _summary_columns(crs: dict[str, object], n: int) -> dict[str, np.ndarray]:
    """Every summary curve of one layer: ``"<measure>|<key>"`` -> array of shape (n,), NaN where missing."""
    out = {}
    for m, cr in crs.items():
        for key in SUMMARY_KEYS:
            y = np.full(n, np.nan)
            got = cr.summary.get(key)
            if got is not None:
                got = np.asarray(got, float)[:n]
                y[: len(got)] = got
            out[f"{m}|{key}"] = y
    return out


def _summary_figures(view: ColumnDataSource, r_title: str, s_title: str, steps: np.ndarray,
                     xtype: str) -> tuple[figure, figure]:
    """The mean-r chart and the share-of-significant-neurons chart, drawing the columns of ``view``."""
    f_r = _time_figure(r_title, "mean Pearson r", steps, xtype, width=440)
    f_s = _time_figure(s_title, "share of neurons", steps, xtype, width=520)
    items_r, items_s = [], []
    for suffix, what, dash in (("", "overall", "solid"), ("_within", "within class", "dashed")):
        r = draw(f_r, Line(x="x", y=f"mean_r{suffix}", line_width=2, line_color="#444444", line_dash=dash), view)
        items_r.append((what, [r]))
        for sign, color in (("pos", "#b2182b"), ("neg", "#2166ac")):
            r = draw(f_s, Line(x="x", y=f"frac_sig_{sign}{suffix}", line_width=2, line_color=color, line_dash=dash),
                     view)
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
    return f_r, f_s


def correlation_summary(results: AnalysisResults, measure: Select | None = None) -> LayoutDOM | None:
    """Mean r and the share of significantly positive / negative neurons over time (name ``corr_summary``).

    With a measure selector (from :func:`measure_select`), the curves of every measure are shipped and a small
    CustomJS callback shows those of the selected measure. Up to :data:`MAX_STACKED_LAYERS` layers with
    correlations get a pair of charts each; with more, one pair shows the layer chosen with a layer selector
    (name ``corr_layer_select``), every layer's curves shipped in a source of its own.
    """
    measures = list(measure.options) if measure is not None else []
    if not measures:
        available = correlation_measures(results)
        measures = [default_measure(results, available)] if available else []
    if not measures:
        return None
    shown = measure.value if measure is not None else measures[0]
    steps = np.asarray(results.steps)
    xtype = step_axis_type(steps)
    n = len(steps)
    layers, columns, alphas = [], [], []  # per layer with correlations of every measure
    for layer in results.layers.values():
        crs = {m: layer.corr.get(m) for m in measures} if layer.corr else {}
        if not crs or any(cr is None or not cr.summary for cr in crs.values()):
            continue
        layers.append(layer.name)
        columns.append(_summary_columns(crs, n))
        alphas.append({m: cr.alpha for m, cr in crs.items()})
    if not layers:
        return None
    k = measures.index(shown)
    r_texts = [[plain(f"{name}: mean r with {m}") for m in measures] for name in layers]
    if len(layers) > MAX_STACKED_LAYERS:
        s_texts = [[plain(f"{name}: share of neurons with q < {alpha[m]:g}") for m in measures]
                   for name, alpha in zip(layers, alphas)]
        view = ColumnDataSource({"x": time_x(steps, xtype), "step": steps,
                                 **{key: columns[0][f"{shown}|{key}"] for key in SUMMARY_KEYS}})
        f_r, f_s = _summary_figures(view, r_texts[0][k], s_texts[0][k], steps, xtype)
        select = layer_select(layers, "corr_layer_select")
        # The layers' sources draw nothing: as callback arguments they reach the page.
        callback = CustomJS(args=dict(layer_sel=select, measure_sel=measure, measures=measures, view=view,
                                      alls=[ColumnDataSource(c) for c in columns], keys=list(SUMMARY_KEYS),
                                      titles=[f_r.title, f_s.title], r_texts=r_texts, s_texts=s_texts),
                            code=SUMMARY_LAYER_JS)
        select.js_on_change("value", callback)
        if measure is not None:
            measure.js_on_change("value", callback)
        return column(select, row(f_r, f_s), name="corr_summary")
    rows, views, alls, titles = [], [], [], []
    for i, (name, all_data, alpha) in enumerate(zip(layers, columns, alphas)):
        view = ColumnDataSource({"x": time_x(steps, xtype), "step": steps,
                                 **{key: all_data[f"{shown}|{key}"] for key in SUMMARY_KEYS}})
        views.append(view)
        alls.append(ColumnDataSource(all_data))
        f_r, f_s = _summary_figures(view, r_texts[i][k], f"{name}: share of neurons with q < {alpha[shown]:g}",
                                    steps, xtype)
        titles.append(f_r.title)
        rows.append(row(f_r, f_s))
    if measure is not None:
        measure.js_on_change("value", CustomJS(args=dict(sel=measure, views=views, alls=alls, keys=list(SUMMARY_KEYS),
                                                         titles=titles, title_texts=r_texts), code=SUMMARY_JS))
    return column(*rows, name="corr_summary")


def measure_notes(results: AnalysisResults, measures: list[str]) -> LayoutDOM:
    """What each confidence measure of the page is, and what the sign of r means for the uncertainty measures.

    Placed under the correlation maps (:func:`.maps.map_sections`).

    Args:
        results: the analysis (its meta gives the Monte-Carlo dropout passes).
        measures: the measures with correlations on the page (the selector's options).
    """
    items = "".join(f"<li><b>{esc(m)}</b>: {esc(text)}</li>" for m, text in measure_definitions(measures,
                                                                                               results.meta))
    note = uncertainty_note(measures)
    sign = f"<p style='margin:4px 0'>{esc(note)}</p>" if note else ""
    return html_div(text=f"<div style='font-size:13px;color:#444c56;max-width:900px'><p style='margin:4px 0'>"
                         f"Confidence measures:</p><ul style='margin:2px 0 6px;padding-left:20px'>{items}</ul>"
                         f"{sign}</div>", name="map_note")


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
BIN_CHARTS = (("strength_by_bin", "Strength"), ("distinctness_by_bin", "Distinctness"))
BINS_LAYER_JS = """
const li = Math.max(0, layer_sel.options.indexOf(layer_sel.value));
for (let f = 0; f < views.length; f++) {
  const d = layers[f][li].data;
  ranges[f].factors = Array.from(d.x);
  views[f].data = Object.assign({}, d);
  titles[f].text = title_texts[f][li];
  for (let j = 0; j < items[f].length; j++) items[f][j].label = {value: labels[f][li][j]};
}
"""


def _bin_rows(y: object, names: list[str]) -> np.ndarray | None:
    """``y`` as an array of shape (S, B) for B = ``len(names)`` bins, or None when it is not one."""
    if y is None or np.asarray(y).ndim != 2 or not names or np.asarray(y).shape[1] != len(names):
        return None
    return np.asarray(y, float)


def _bin_picks(n_snapshots: int) -> list[int]:
    """The snapshots a per-bin chart draws: the first, the middle and the last (fewer when they coincide)."""
    return sorted({0, n_snapshots // 2, n_snapshots - 1})


def _bin_layers(layers: list[LayerResult]) -> list[LayerResult]:
    """The layers with strength or distinctness per confidence bin (either chart has something to draw)."""
    return [la for la in layers
            if any(_bin_rows(getattr(la, attr, None), list(la.bin_names or [])) is not None for attr, _ in BIN_CHARTS)]


def _bins_one_layer(results: AnalysisResults, layers: list[LayerResult]) -> list[LayoutDOM]:
    """The per-bin charts of one layer at a time: a layer selector (``bins_layer_select``) above the two charts.

    Each layer's lines (its bin names as ``x``; ``y0``, ``y1``, ... at its first, middle and last snapshot, as
    the stacked charts draw them) are shipped in a source of their own per chart; a small CustomJS callback copies
    the selected layer's into the source the chart draws, with its bin names as the axis factors, its title and
    its legend labels. A layer without one of the two shows that chart empty, titled "not computed".
    """
    steps = np.asarray(results.steps)
    names = [la.name for la in layers]
    select = layer_select(names, "bins_layer_select")
    args: dict[str, list] = {key: [] for key in ("views", "layers", "ranges", "titles", "title_texts", "items",
                                                 "labels")}
    figs = []
    for attr, title in BIN_CHARTS:
        per_layer, texts, labels = [], [], []
        for la in layers:
            bins = list(la.bin_names)
            y = _bin_rows(getattr(la, attr, None), bins)
            picks = _bin_picks(y.shape[0]) if y is not None else []
            per_layer.append({"x": bins, **{f"y{j}": y[s] for j, s in enumerate(picks)}})
            labels.append([f"step {int(steps[s]):,}" for s in picks])
            texts.append(plain(f"{title} by {results.primary_measure} bin, {la.name}"
                               + ("" if y is not None else ": not computed")))
        n_lines = max(len(got) for got in labels)
        for data, got in zip(per_layer, labels):  # the same columns for every layer: NaN for lines it lacks
            data.update({f"y{j}": np.full(len(data["x"]), np.nan) for j in range(len(got), n_lines)})
            got += [""] * (n_lines - len(got))
        view = ColumnDataSource(dict(per_layer[0]))
        fig = _line_figure(texts[0], "confidence bin", title.lower(), "auto", x_range=list(per_layer[0]["x"]))
        items = []
        for j, color in enumerate(["#c6dbef", "#6baed6", "#08519c"][-n_lines:]):
            r, _ = line_with_dots(fig, view, color, y=f"y{j}")
            items.append((labels[0][j], [r]))
        fig.xaxis.major_label_orientation = 0.6
        _add_legend(fig, items)
        legend = fig.select_one({"type": Legend})
        figs.append(fig)
        args["views"].append(view)
        args["layers"].append([ColumnDataSource(data) for data in per_layer])  # drawn by nothing: shipped as args
        args["ranges"].append(fig.x_range)
        args["titles"].append(fig.title)
        args["title_texts"].append(texts)
        args["items"].append(list(legend.items) if legend is not None else [])
        args["labels"].append(labels)
    select.js_on_change("value", CustomJS(args=dict(layer_sel=select, **args), code=BINS_LAYER_JS))
    return [select, row(*figs)]


def strength_distinctness(results: AnalysisResults) -> LayoutDOM | None:
    """Strength and distinctness vs training time and vs confidence bin (name ``strength_distinctness``).

    The charts over time draw every layer. Up to :data:`MAX_STACKED_LAYERS` layers with per-bin data get their
    own per-bin charts; with more, one pair of per-bin charts shows the layer chosen with a layer selector (see
    :func:`_bins_one_layer`).
    """
    steps = np.asarray(results.steps)
    layers = list(results.layers.values())
    if not layers or len(steps) == 0:
        return None
    xtype = step_axis_type(steps)
    figs = []
    for attr, title in (("strength", "Activity strength (mean |a|)"),
                        ("distinctness", "Distinctness (between / within variance)")):
        fig = _time_figure(title, attr, steps, xtype)
        items = []
        for i, layer in enumerate(layers):
            y = np.asarray(getattr(layer, attr, None) if getattr(layer, attr, None) is not None else [], float)
            if y.size == 0:
                continue
            src = ColumnDataSource({"x": time_x(steps[: len(y)], xtype), "step": steps[: len(y)], "y": y})
            r = draw(fig, Line(x="x", y="y", line_width=2, line_color=Category10_10[i % 10]), src)
            items.append((layer.name, [r]))
        if items:
            fig.add_tools(HoverTool(tooltips=[("step", "@step"), (attr, "@y{0.000}")], mode="vline",
                                    renderers=[it[1][0] for it in items]))
            _add_legend(fig, items)
            figs.append(fig)
    bins = _bin_layers(layers)
    if not figs and not bins:
        return None
    parts = []
    if figs:
        parts.append(row(*figs))
    if len(bins) > MAX_STACKED_LAYERS:
        parts += _bins_one_layer(results, bins)
        return column(*parts, name="strength_distinctness")
    bin_rows = []
    for attr, title in BIN_CHARTS:
        for layer in layers:
            names = list(layer.bin_names or [])
            y = _bin_rows(getattr(layer, attr, None), names)
            if y is None:
                continue
            fig = _line_figure(f"{title} by {results.primary_measure} bin, {layer.name}", "confidence bin",
                               title.lower(), "auto", x_range=names)
            picks = _bin_picks(y.shape[0])
            shades = ["#c6dbef", "#6baed6", "#08519c"][-len(picks):]
            items = []
            for s, color in zip(picks, shades):
                r, _ = line_with_dots(fig, {"x": names, "y": y[s]}, color)
                items.append((f"step {int(steps[s]):,}", [r]))
            fig.xaxis.major_label_orientation = 0.6
            _add_legend(fig, items)
            bin_rows.append(fig)
    for i in range(0, len(bin_rows), 2):
        parts.append(row(*bin_rows[i:i + 2]))
    return column(*parts, name="strength_distinctness")

