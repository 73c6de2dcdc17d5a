"""The atlas page (``topotrace atlas``): the matrix of verdicts and the effects plotted against relative depth.

Input is the contents of ``atlas.json`` (:mod:`topotrace.atlas`): numbers only; words come from :mod:`.words`.
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path

from bokeh.layouts import gridplot
from bokeh.models import ColumnDataSource, HoverTool, Legend, Segment, Span
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from .glyphs import draw, line_with_dots
from .words import CLAIM_SHORT, VERDICT_COLOR, number

Y_LABEL = {"time": "change, % of the first snapshot", "confidence": "partial Spearman r given the class"}


def plotted(cell: dict, versus: str) -> tuple[float, float, float]:
    """``(effect, low, high)`` as the depth charts draw them: time claims relative to the first snapshot's mean.

    Layers and architectures differ in the scale of their activity, so a time claim's change is drawn as a
    percentage of the first snapshot's mean (the finding's ``relative``; its interval scaled by the same
    1 / |first|), comparable across rows; correlations are drawn as they are.
    """
    effect, low, high = _num(cell.get("effect")), _num(cell.get("ci_low")), _num(cell.get("ci_high"))
    if versus != "time":
        return effect, low, high
    relative = _num(cell.get("relative"))
    scale = relative / effect if effect != 0 and effect == effect else float("nan")  # = 1 / |first snapshot|
    return 100 * relative, 100 * low * scale, 100 * high * scale


def _cell_text(c: dict | None) -> dict[str, str]:
    if not c:
        return {"effect": "n/a", "interval": "", "verdict": "no finding", "course": "", "color": "#57606a"}
    low, high = c.get("ci_low"), c.get("ci_high")
    ok = isinstance(low, (int, float)) and isinstance(high, (int, float)) and math.isfinite(low) and math.isfinite(high)
    return {"effect": number(c.get("effect")), "interval": f"{number(low)} to {number(high)}" if ok else "n/a",
            "verdict": str(c.get("verdict", "")), "course": str(c.get("course", "") or ""),
            "measure": str(c.get("measure", "") or ""),
            "color": VERDICT_COLOR.get(str(c.get("verdict", "")), "#57606a")}


def page_context(atlas: dict) -> dict[str, object]:
    """The template's rows (architecture and layer by relative depth) and columns (the four claims)."""
    rows = []
    for entry in atlas["entries"]:
        for k, row in enumerate(entry["layers"]):
            rows.append({"study": entry["study"], "report": entry["report"], "architecture": entry["architecture"],
                         "data": entry["data"], "first": k == 0, "span": len(entry["layers"]),
                         "accuracy": f"{100 * entry['heldout_accuracy']['mean']:.1f} %",
                         "layer": row["layer"], "depth": f"{row['relative_depth']:.2f}",
                         "cells": [_cell_text(row["claims"].get(c)) for c in atlas["claims"]]})
    return {"name": atlas["name"], "seeds": atlas["seeds"], "rows": rows, "rule": atlas["rule"],
            "depth_rule": atlas["depth_rule"], "claims": [CLAIM_SHORT[c] for c in atlas["claims"]],
            "entries": [{"study": e["study"], "report": e["report"], "config": e["config"],
                         "architecture": e["architecture"], "data": e["data"],
                         "accuracy": f"{100 * e['heldout_accuracy']['mean']:.1f} %",
                         "seconds": e["seconds"]} for e in atlas["entries"]]}


def depth_figures(atlas: dict) -> gridplot:
    """One chart per claim: each study's per-layer effect (with its 95 % interval) against relative depth."""
    figs = []
    for claim in atlas["claims"]:
        versus = "time" if claim.endswith("time") else "confidence"
        fig = figure(title=CLAIM_SHORT[claim], width=380, height=290, x_range=(0, 1.05), toolbar_location=None,
                     x_axis_label="relative depth", y_axis_label=Y_LABEL[versus])
        fig.title.text_font_size = "12px"
        fig.add_layout(Span(location=0, dimension="width", line_color="#8c959f", line_dash="dashed"))
        items = []
        for k, entry in enumerate(atlas["entries"]):
            cells = [(row["relative_depth"], row["layer"], row["claims"].get(claim)) for row in entry["layers"]]
            cells = [(d, layer, c) for d, layer, c in cells if c]
            color = Category10_10[k % 10]
            ys = [plotted(c, versus) for _, _, c in cells]
            src = ColumnDataSource({
                "x": [d for d, _, _ in cells], "y": [y for y, _, _ in ys],
                "low": [lo for _, lo, _ in ys], "high": [hi for _, _, hi in ys],
                "study": [entry["study"]] * len(cells), "layer": [layer for _, layer, _ in cells],
                "verdict": [str(c["verdict"]) for _, _, c in cells],
            })
            line, dots = line_with_dots(fig, src, color, width=1.5, size=7)
            draw(fig, Segment(x0="x", y0="low", x1="x", y1="high", line_color=color, line_width=2, line_alpha=0.6),
                 src)
            items.append((entry["study"], [line, dots]))
        unit = " %" if versus == "time" else ""
        fig.add_tools(HoverTool(tooltips=[("study", "@study"), ("layer", "@layer"), ("effect", "@y{0.000}" + unit),
                                          ("95 % interval", "@low{0.000} to @high{0.000}"), ("verdict", "@verdict")]))
        fig.add_layout(Legend(items=items, label_text_font_size="10px", spacing=0, padding=2), "right")
        figs.append(fig)
    return gridplot(figs, ncols=2, toolbar_location=None)


def _num(v: object) -> float:
    return float(v) if isinstance(v, (int, float)) and v is not None else float("nan")


def build_atlas(atlas: dict, out_path: str | os.PathLike) -> Path:
    """Write the atlas page (self-contained, offline) to ``out_path`` and return its path."""
    from .generate import _embed, _write_page

    roots = {"atlas_depth": depth_figures(atlas)}
    roots["atlas_depth"].name = "atlas_depth"
    now = _dt.datetime.now(_dt.timezone.utc)
    context = page_context(atlas) | {"date": now.strftime("%Y-%m-%d %H:%M UTC")}
    page = _embed(roots, f"topotrace atlas: {atlas['name']}", context, template="atlas.html")
    return _write_page(page, out_path)
