"""The findings charts: each claim's statistic over training time with its interval as a band, runs as lines.

One row per layer, one small chart per claim (the confidence claims for the primary measure); with more than
:data:`.charts.MAX_STACKED_LAYERS` layers, one row for the layer chosen with a selector (each chart's data swapped
in the browser), so that the page's figure count does not grow with the layers. The band is the
95 % interval of :class:`topotrace.analysis.findings.Finding` (across runs; a bootstrap over probe samples for
one run); every run's own curve is a thin line, the mean a thick one. Charts over confidence carry a zero line:
the claim holds where the band lies above it. A time claim whose course rises then falls back or dips then
recovers marks its peak or trough with a ring. Each chart's title names what is drawn against what ("strength vs
time", "distinctness vs logit_margin"); the verdict is a second title line of its own in its colour
(``words.VERDICT_COLOR``: one run's verdicts never in the study's green), so that neither is cut in the chart's
width (:data:`CHART_PX` at :data:`FONT_PX`: at most :data:`MAX_TITLE_CHARS` characters a line).
"""

from __future__ import annotations

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, CustomJS, HoverTool, Line, MultiLine, Scatter, Span, Title, VArea
from bokeh.models.layouts import LayoutDOM
from bokeh.plotting import figure

from ..analysis.findings import Finding
from .charts import MAX_STACKED_LAYERS, _time_figure, layer_select, step_axis_type, time_x
from .glyphs import draw
from .style import esc, html_div
from .words import VERDICT_COLOR

CHART_PX = (250, 220)  # width, height of one claim's chart
FONT_PX = 11  # its titles' and axis labels' font size
# A conservative width of one character of the sans-serif font: 0.6 of the font size (digits and most lower-case
# letters are narrower). A title line holds at most this many characters in the chart's width less its borders.
CHAR_PX = 0.6 * FONT_PX
MAX_TITLE_CHARS = int((CHART_PX[0] - 20) / CHAR_PX)
Y_LABEL = {"strength": "mean strength", "distinctness": "mean distinctness"}
CONFIDENCE_Y_LABEL = "partial Spearman ρ"


def chart_title(f: Finding) -> str:
    """What a claim's chart draws against what: "strength vs time", "distinctness vs logit_margin".

    A measure name too long for the title line gives "... vs confidence".
    """
    title = f"{f.quantity} vs {f.measure if f.versus == 'confidence' else 'time'}"
    return title if len(title) <= MAX_TITLE_CHARS else f"{f.quantity} vs confidence"


def _y_label(f: Finding) -> str:
    return Y_LABEL[f.quantity] if f.versus == "time" else CONFIDENCE_Y_LABEL


def _claim_figure(f: Finding, verdict: str) -> tuple[figure, Title]:
    """An empty claim chart: its title, the verdict as a second title line in its colour, small axis labels."""
    fig = _time_figure(chart_title(f), _y_label(f), f.steps, step_axis_type(f.steps), width=CHART_PX[0],
                       height=CHART_PX[1])
    fig.title.text_font_size = f"{FONT_PX}px"
    # Titles added "above" stack away from the plot: the verdict right above it, the chart's title on top.
    sub = Title(text=verdict, text_font_size=f"{FONT_PX}px", text_font_style="bold",
                text_color=VERDICT_COLOR.get(verdict, "#24292f"))
    fig.add_layout(sub, "above")
    fig.yaxis.axis_label_text_font_size = f"{FONT_PX}px"
    fig.xaxis.axis_label_text_font_size = f"{FONT_PX}px"
    return fig, sub


def draw_band(fig: figure, x: np.ndarray, band: np.ndarray, color: str, alpha: float) -> None:
    """A finding's 95 % band (``band`` of shape (S, 2), at ``x`` of shape (S,)) where both its ends are finite."""
    ok = np.isfinite(band).all(axis=1)
    if ok.any():
        draw(fig, VArea(x="x", y1="y1", y2="y2", fill_color=color, fill_alpha=alpha),
             {"x": x[ok], "y1": band[ok, 0], "y2": band[ok, 1]})


def _curve(fig: figure, source: ColumnDataSource) -> None:
    """A finding's curve (columns ``x``, ``y``; ``step``, ``lo``, ``hi`` for its tooltip) and its hover tool."""
    main = draw(fig, Line(x="x", y="y", line_color="#1f3b73", line_width=2.2), source)
    fig.add_tools(HoverTool(renderers=[main], tooltips=[("step", "@step"), ("value", "@y{0.000}"),
                                                        ("95 % interval", "@lo{0.000} to @hi{0.000}")]))


def _chart(f: Finding) -> LayoutDOM:
    x = time_x(f.steps, step_axis_type(f.steps))
    fig, _ = _claim_figure(f, f.verdict)
    band = np.asarray(f.band, np.float64)
    draw_band(fig, x, band, "#4c72b0", 0.22)
    for curve in np.atleast_2d(f.run_curves) if f.n_runs > 1 else []:
        draw(fig, Line(x="x", y="y", line_color="#4c72b0", line_alpha=0.45, line_width=1), {"x": x, "y": curve})
    _curve(fig, ColumnDataSource({"x": x, "step": np.asarray(f.steps), "y": f.curve, "lo": band[:, 0],
                                  "hi": band[:, 1]}))
    if f.versus == "confidence":
        fig.add_layout(Span(location=0, dimension="width", line_color="#24292f", line_width=1))
    if f.extreme_step >= 0 and np.isfinite(f.extreme_value):  # the peak or trough that names the course
        at = int(np.flatnonzero(np.asarray(f.steps) == f.extreme_step)[0])
        draw(fig, Scatter(x="x", y="y", size=8, marker="circle", fill_color="white", line_color="#1f3b73",
                          line_width=2), {"x": [x[at]], "y": [f.extreme_value]})
    return fig


def findings_charts(findings: list[Finding], measure: str) -> LayoutDOM | None:
    """Rows of claim charts per layer (confidence claims for ``measure``); ``None`` without findings.

    Args:
        findings: from :func:`topotrace.analysis.findings.findings`.
        measure: the confidence measure whose claims are drawn (the primary measure).
    """
    layers: dict[str, list[Finding]] = {}
    for f in findings:
        if f.versus == "time" or f.measure == measure:
            layers.setdefault(f.layer, []).append(f)
    if not layers:
        return None
    if len(layers) > MAX_STACKED_LAYERS:
        return _one_layer(layers)
    rows = []
    for layer, items in layers.items():
        rows.append(html_div(f"<h3>layer {esc(layer)}</h3>", styles={"margin": "6px 0 0 0"}))
        rows.append(row(*[_chart(f) for f in items]))
    return column(*rows, name="findings_charts")


SWAP_JS = """
const k = Math.max(0, sel.options.indexOf(sel.value));
for (let c = 0; c < views.length; c++) {
  const src = per_layer[k][c];
  if (src === null) continue;
  views[c].data = Object.assign({}, src.data);
  runs[c].data = Object.assign({}, run_srcs[k][c].data);
  titles[c].text = texts[k][c];
  titles[c].text_color = colors[k][c];
}
"""


def _sources(f: Finding) -> tuple[ColumnDataSource, ColumnDataSource]:
    """The data of one claim's chart: (curve with its band, every run's own curve when there are several)."""
    x = time_x(f.steps, step_axis_type(f.steps))
    band = np.asarray(f.band, np.float64)
    main = ColumnDataSource({"x": x, "step": np.asarray(f.steps), "y": np.asarray(f.curve, np.float64),
                             "lo": band[:, 0], "hi": band[:, 1]})
    curves = list(np.atleast_2d(f.run_curves)) if f.n_runs > 1 else []
    return main, ColumnDataSource({"xs": [x] * len(curves), "ys": [np.asarray(c, np.float64) for c in curves]})


def _one_layer(layers: dict[str, list[Finding]]) -> LayoutDOM:
    """One row of claim charts for the layer picked in ``findings_layer_select``; every layer's data shipped once."""
    names = list(layers)
    first = layers[names[0]]
    per_layer, run_srcs, texts, colors = [], [], [], []
    for name in names:
        by_claim = {f.claim: f for f in layers[name]}
        row_srcs, row_runs, row_texts, row_colors = [], [], [], []
        for f0 in first:
            f = by_claim.get(f0.claim)
            main, runs = _sources(f) if f is not None else (None, ColumnDataSource({"xs": [], "ys": []}))
            row_srcs.append(main)
            row_runs.append(runs)
            row_texts.append(f.verdict if f is not None else "n/a")
            row_colors.append(VERDICT_COLOR.get(f.verdict, "#24292f") if f is not None else "#24292f")
        per_layer.append(row_srcs)
        run_srcs.append(row_runs)
        texts.append(row_texts)
        colors.append(row_colors)
    figs, views, runs, titles = [], [], [], []
    for c, f in enumerate(first):
        fig, sub = _claim_figure(f, texts[0][c])
        view = ColumnDataSource(dict(per_layer[0][c].data))
        run_view = ColumnDataSource(dict(run_srcs[0][c].data))
        draw(fig, VArea(x="x", y1="lo", y2="hi", fill_color="#4c72b0", fill_alpha=0.22), view)
        draw(fig, MultiLine(xs="xs", ys="ys", line_color="#4c72b0", line_alpha=0.45, line_width=1), run_view)
        _curve(fig, view)
        if f.versus == "confidence":
            fig.add_layout(Span(location=0, dimension="width", line_color="#24292f", line_width=1))
        figs.append(fig)
        views.append(view)
        runs.append(run_view)
        titles.append(sub)
    sel = layer_select(names, "findings_layer_select")
    sel.js_on_change("value", CustomJS(args=dict(sel=sel, views=views, runs=runs, per_layer=per_layer,
                                                 run_srcs=run_srcs, titles=titles, texts=texts, colors=colors),
                                       code=SWAP_JS))
    return column(sel, row(*figs), name="findings_charts")
