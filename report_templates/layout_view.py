"""The layout comparison: every layout method of every layer side by side, with its quality scores.

:func:`layout_comparison` takes an :class:`~topotrace.analysis.results.AnalysisResults`, returns the Bokeh model
named ``layout_comparison`` (or ``None`` when no layer has layouts) and touches no file.
"""

from __future__ import annotations

import numpy as np
from bokeh.layouts import column, gridplot
from bokeh.models import ColumnDataSource, HoverTool, Title
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from topotrace.analysis.results import AnalysisResults

from .style import esc, html_div, plain
from .words import unplaced_sentence

LAYOUT_PX = 212  # width of one layout-comparison tile: five fit in the page's column
LAYOUT_COLS = 5
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
        unplaced = unplaced_sentence(next(iter(layer.layouts.values())).unplaced)  # the same for every method
        unplaced = f" &middot; {esc(unplaced)}" if unplaced else ""
        rows.append(html_div(text=f"<p class='tt-layer'>Layer <b>{esc(layer.name)}</b> &middot; "
                              f"{int(layer.n_neurons)} neurons{key}{unplaced}</p>"))
        rows.append(gridplot(figs, ncols=LAYOUT_COLS, toolbar_location=None))
    if not rows:
        return None
    return column(*rows, name="layout_comparison")
