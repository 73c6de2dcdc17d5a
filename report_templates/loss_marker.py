"""The held-out loss minimum drawn on every chart over training time of a page, and legends fitted to their chart.

:func:`mark_loss_minimum` finds the charts over training time among a page's roots (those with the maps' current-
snapshot marker, :data:`.charts.MARKER_NAME`, or the tag :data:`STEP_AXIS_TAG` of the charts of
:mod:`.beyond_view`) and marks the minimum on each, with a legend entry; :func:`fit_legends` wraps a one-row
legend that would not fit its chart's width.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from bokeh.model.util import collect_models
from bokeh.models import Legend, LegendItem, Line, LogScale, Plot, Span
from bokeh.models.layouts import LayoutDOM

from ..analysis.results import AnalysisResults
from .charts import MARKER_NAME, time_x
from .glyphs import draw
from .words.beyond import loss_minimum_label

STEP_AXIS_TAG = "step_axis"  # tags the charts of beyond_view over training time
LOSS_MIN_NAME = "loss_min_marker"
LOSS_MIN_LEGEND = "loss_min_legend"  # the (empty) line that gives the marker its legend entry
LOSS_MIN_COLOR = "#bc4c00"  # amber: apart from the grey current-snapshot marker
LEGEND_ITEM_PX, LEGEND_CHAR_PX = 44, 6  # rough width of a legend item (sample, spacing) and of a character


def _loss_min(results: AnalysisResults) -> int | None:
    """The snapshot index of the held-out loss minimum, or None when there is none (or it is out of range)."""
    i = int(getattr(results, "loss_min", -1))
    return i if 0 <= i < len(np.asarray(results.steps)) else None


def _is_time_chart(fig: Plot) -> bool:
    return STEP_AXIS_TAG in (fig.tags or []) or any(isinstance(m, Span) and m.name == MARKER_NAME
                                                    for m in fig.center)


def _label_text(label: object) -> str:
    value = label.get("value") if isinstance(label, dict) else getattr(label, "value", label)
    return value if isinstance(value, str) else ""


def _fit_legend(fig: Plot, legend: Legend) -> None:
    """Wrap a one-row legend into two columns (or one) when its items would not fit the chart's width."""
    if legend.orientation != "horizontal" or legend.ncols != "auto" or legend.nrows != "auto":
        return
    widths = [LEGEND_ITEM_PX + LEGEND_CHAR_PX * len(_label_text(it.label)) for it in legend.items]
    if sum(widths) > (fig.width or 0):
        legend.ncols = 2 if 2 * max(widths) <= (fig.width or 0) else 1
        legend.glyph_height, legend.spacing = 12, 2  # rows close together: the chart keeps its height


def fit_legends(fig: Plot) -> None:
    for legend in fig.select({"type": Legend}):
        _fit_legend(fig, legend)


def _legend_entry(fig: Plot, label: str, x: float) -> None:
    """A legend entry for the marker, added to the chart's legend (or a new one below the chart).

    The entry's line is one point at (``x``, NaN): it draws nothing and leaves the ranges alone, but the legend
    draws its sample (a legend skips the sample of a renderer without data).
    """
    r = draw(fig, Line(x="x", y="y", line_color=LOSS_MIN_COLOR, line_width=2, line_dash="dotdash"),
             {"x": [x], "y": [math.nan]}, name=LOSS_MIN_LEGEND)
    item = LegendItem(label=label, renderers=[r])
    legends = [m for m in (*fig.below, *fig.center, *fig.above, *fig.left, *fig.right) if isinstance(m, Legend)]
    if legends:
        legends[0].items = [*legends[0].items, item]
    else:
        legends = [Legend(items=[item], location="center", orientation="horizontal", label_text_font_size="11px",
                          padding=2, spacing=8, border_line_alpha=0)]
        fig.add_layout(legends[0], "below")
    _fit_legend(fig, legends[0])


def mark_loss_minimum(roots: Mapping[str, LayoutDOM] | Iterable[LayoutDOM], results: AnalysisResults) -> list[Span]:
    """Mark the held-out loss minimum on every chart over training time in ``roots``; returns the new markers.

    A chart over training time has a current-snapshot marker (:data:`.charts.MARKER_NAME`) or the tag
    :data:`STEP_AXIS_TAG`. Each gets a dashed grey vertical Span named :data:`LOSS_MIN_NAME` at
    :func:`.charts.time_x` of the minimum's step on its own axis (step + 1 on a log axis) and the legend entry
    "held-out loss minimum (step N)". Charts already marked are left alone; nothing is drawn without a minimum.
    """
    i = _loss_min(results)
    if i is None:
        return []
    step = int(np.asarray(results.steps)[i])
    label = loss_minimum_label(step)
    out = []
    for fig in collect_models(*(roots.values() if isinstance(roots, Mapping) else roots)):  # one walk, each once
        if not isinstance(fig, Plot) or not _is_time_chart(fig):
            continue
        if any(isinstance(m, Span) and m.name == LOSS_MIN_NAME for m in fig.center):
            continue
        axis = "log" if isinstance(fig.x_scale, LogScale) else "linear"
        span = Span(location=float(time_x(np.array([step]), axis)[0]), dimension="height",
                    line_color=LOSS_MIN_COLOR, line_width=2, line_alpha=0.9, line_dash="dotdash",
                    name=LOSS_MIN_NAME)
        fig.add_layout(span)
        _legend_entry(fig, label, span.location)
        out.append(span)
    return out
