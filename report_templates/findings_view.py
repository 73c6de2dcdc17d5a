"""The findings charts: each claim's statistic over training time with its interval as a band, runs as lines.

One row per layer, one small chart per claim (the confidence claims for the primary measure). The band is the
95 % interval of :class:`topotrace.analysis.findings.Finding` (across runs; a bootstrap over probe samples for
one run); every run's own curve is a thin line, the mean a thick one. Charts over confidence carry a zero line:
the claim holds where the band lies above it.
"""

from __future__ import annotations

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import ColumnDataSource, HoverTool, Span
from bokeh.models.layouts import LayoutDOM

from topotrace.analysis.findings import Finding

from .charts import _time_figure, step_axis_type, time_x
from .style import esc, html_div

VERDICT_COLOR = {"supported": "#1a7f37", "mixed": "#9a6700", "not supported": "#57606a"}
CHART_TITLE = {"stronger_with_time": "strength vs time", "more_distinct_with_time": "distinctness vs time",
               "stronger_with_confidence": "strength vs confidence",
               "more_distinct_with_confidence": "distinctness vs confidence"}
Y_LABEL = {"strength": "mean per-sample strength", "distinctness": "mean per-sample distinctness"}


def _chart(f: Finding) -> LayoutDOM:
    axis = step_axis_type(f.steps)
    x = time_x(f.steps, axis)
    title = f"{CHART_TITLE[f.claim]}: {f.verdict}"
    y_label = Y_LABEL[f.quantity] if f.versus == "time" else f"partial Spearman ρ ({f.measure})"
    fig = _time_figure(title, y_label, f.steps, axis, width=250, height=220)
    fig.title.text_color = VERDICT_COLOR.get(f.verdict, "#24292f")
    fig.title.text_font_size = "11px"
    fig.yaxis.axis_label_text_font_size = "11px"
    fig.xaxis.axis_label_text_font_size = "11px"
    band = np.asarray(f.band, np.float64)
    ok = np.isfinite(band).all(axis=1)
    if ok.any():
        fig.varea(x=x[ok], y1=band[ok, 0], y2=band[ok, 1], fill_color="#4c72b0", fill_alpha=0.22)
    for curve in np.atleast_2d(f.run_curves) if f.n_runs > 1 else []:
        fig.line(x, curve, line_color="#4c72b0", line_alpha=0.45, line_width=1)
    src = ColumnDataSource({"x": x, "step": np.asarray(f.steps), "y": f.curve, "lo": band[:, 0], "hi": band[:, 1]})
    main = fig.line("x", "y", source=src, line_color="#1f3b73", line_width=2.2)
    fig.add_tools(HoverTool(renderers=[main], tooltips=[("step", "@step"), ("value", "@y{0.000}"),
                                                        ("95 % interval", "@lo{0.000} to @hi{0.000}")]))
    if f.versus == "confidence":
        fig.add_layout(Span(location=0, dimension="width", line_color="#24292f", line_width=1))
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
    rows = []
    for layer, items in layers.items():
        rows.append(html_div(f"<h3>layer {esc(layer)}</h3>", styles={"margin": "6px 0 0 0"}))
        rows.append(row(*[_chart(f) for f in items]))
    return column(*rows, name="findings_charts")
