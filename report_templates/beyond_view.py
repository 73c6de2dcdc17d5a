"""The report's view beyond the study (issue #12): calibration, overfitting, dormant units and class collapse.

Owns three named roots built by pure functions from an :class:`~topotrace.analysis.results.AnalysisResults`
(each ``None`` when its data is missing, e.g. for results of an older analysis): :func:`calibration_view`
(``calibration``), :func:`overfitting_view` (``overfitting``) and :func:`collapse_view` (``collapse``); the text
of their sections (:func:`page_context`: plain strings, the template escapes them), with the verdict words of the
trends (:func:`trend_verdict`); and :func:`mark_loss_minimum`, which draws the held-out loss minimum on every
chart over training time among a page's roots.

The charts here carry no current-snapshot marker of the maps' time slider (:data:`.charts.MARKER_NAME`); they
are tagged :data:`STEP_AXIS_TAG` instead, so :func:`mark_loss_minimum` finds them. The reliability diagram has its
own snapshot slider (name :data:`RELIABILITY_SLIDER`): every snapshot's bins are shipped once, flattened from
shape (S, B), and a small CustomJS callback copies the chosen snapshot's into the source the diagram draws.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np
from bokeh.layouts import column, row
from bokeh.model.util import collect_models
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    CustomJSTickFormatter,
    HoverTool,
    Legend,
    LegendItem,
    LogScale,
    Plot,
    Range1d,
    Slider,
    Span,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from topotrace.analysis.calibration import TEMP_PROB_CV
from topotrace.analysis.results import AnalysisResults, Calibration

from .charts import (
    MARKER_NAME,
    PROBE_COLORS,
    TIME_LABEL,
    _add_legend,
    _add_time_marker,
    _line_figure,
    _style_time_axis,
    step_axis_type,
    time_x,
)
from .style import plain
from .words import number

HELDOUT, TRAIN = "heldout", "train"
STEP_AXIS_TAG = "step_axis"  # tags the charts of this module over training time
LOSS_MIN_NAME = "loss_min_marker"
LOSS_MIN_LEGEND = "loss_min_legend"  # the (empty) line that gives the marker its legend entry
LOSS_MIN_COLOR = "#bc4c00"  # amber: apart from the grey current-snapshot marker
DIAGONAL_COLOR = "#8c959f"
RELIABILITY_SLIDER = "reliability_slider"
RELIABILITY_VIEW = "reliability_view"  # the source the diagram draws: columns conf<k>, acc<k>, n<k> per measure k
RELIABILITY_MARKER = "reliability_marker"  # on the ECE chart: the snapshot the reliability diagram shows
MEASURE_COLORS = Category10_10  # one colour per calibrated measure, in the order of the calibration
GAP_CHARTS = (("loss", "Loss (cross-entropy)", "loss"), ("accuracy", "Accuracy", "accuracy"),
              ("conf_max_prob", "Mean confidence (max_prob)", "mean confidence"))
LEGEND_ITEM_PX, LEGEND_CHAR_PX = 44, 6  # rough width of a legend item (sample, spacing) and of a character

RELIABILITY_JS = """
const i = Math.max(0, Math.min(Math.round(slider.value), titles.length - 1));
const nd = {};
for (const key of keys) nd[key] = all.data[key].slice(i * n_bins, (i + 1) * n_bins);
view.data = nd;
title.text = titles[i];
if (snapshot_marker !== null) snapshot_marker.location = snapshot_x[i];
"""
LOG10_TICKS_JS = """
const v = Math.pow(10, tick);
return (v >= 0.01 && v < 1000) ? String(Number(v.toPrecision(2))) : v.toExponential(0);
"""


# ------------------------------------------------------------------------------------------------- helpers
def _dash(probe: str) -> str:
    """Held-out lines are solid, train lines dashed, any other probe set dotted."""
    return {HELDOUT: "solid", TRAIN: "dashed"}.get(probe, "dotted")


def _step_figure(title: str, y_label: str, steps: np.ndarray, axis_type: str, **kw) -> figure:
    """A line chart over training time (log step axis as in :mod:`.charts`), tagged :data:`STEP_AXIS_TAG`."""
    fig = _line_figure(title, TIME_LABEL[axis_type], y_label, axis_type, tags=[STEP_AXIS_TAG], **kw)
    _style_time_axis(fig, steps, axis_type)
    _add_time_marker(fig, steps, axis_type)  # the maps' time slider moves it, as on the other charts over time
    return fig


def _series(steps: np.ndarray, y: object, axis_type: str, what: str = "") -> ColumnDataSource:
    """Columns ``x`` (:func:`.charts.time_x`), ``step``, ``y`` and ``what`` (the line's label) of one curve."""
    y = np.asarray(y, np.float64).ravel()[: len(steps)]
    return ColumnDataSource({"x": time_x(steps[: len(y)], axis_type), "step": np.asarray(steps[: len(y)]), "y": y,
                             "what": [what] * len(y)})


def _hover(fig: figure, renderers: list, value: str = "@y{0.000}") -> None:
    fig.add_tools(HoverTool(tooltips=[("", "@what"), ("step", "@step"), ("value", value)], mode="vline",
                            renderers=renderers))


def _measures(calibration: Mapping[str, Calibration]) -> list[str]:
    """Every calibrated measure, in the order the probe sets list them."""
    out: list[str] = []
    for cal in calibration.values():
        out += [m for m in cal.measures if m not in out]
    return out


def _reliability_probe(results: AnalysisResults) -> str | None:
    """The probe set of the reliability diagram: held-out, else the analysed one, else the first calibrated."""
    cal = results.calibration or {}
    for probe in (HELDOUT, results.probe_set, *cal):
        if probe in cal and np.asarray(cal[probe].conf).ndim == 3 and np.asarray(cal[probe].conf).shape[1] > 0:
            return probe
    return None


def _ece(results: AnalysisResults, probe: str, measure: str) -> np.ndarray:
    """ECE of ``probe`` and ``measure`` over the snapshots, shape (S,); empty when not computed."""
    cal = (results.calibration or {}).get(probe)
    if cal is None or measure not in cal.measures:
        return np.zeros(0)
    ece = np.asarray(cal.ece, np.float64)
    k = cal.measures.index(measure)
    return ece[k] if ece.ndim == 2 and k < ece.shape[0] else np.zeros(0)


def _loss_min(results: AnalysisResults) -> int | None:
    """The snapshot index of the held-out loss minimum, or None when there is none (or it is out of range)."""
    i = int(getattr(results, "loss_min", -1))
    return i if 0 <= i < len(np.asarray(results.steps)) else None


# --------------------------------------------------------------------------------------------- calibration
def _probe_lines(fig: figure, lines: list[tuple[str, str, str, np.ndarray]], steps: np.ndarray,
                 xtype: str) -> figure | None:
    """Draw ``(label, probe, colour, y)`` curves on ``fig`` (held-out solid, train dashed), hover and legend.

    Returns ``fig``, or None when every curve is empty.
    """
    items = []
    for label, probe, color, y in lines:
        if y.size == 0:
            continue
        r = fig.line("x", "y", source=_series(steps, y, xtype, label), line_width=2, color=color,
                     line_dash=_dash(probe))
        items.append((label, [r]))
    if not items:
        return None
    _hover(fig, [r for _, (r,) in items], "@y{0.0000}")
    _add_legend(fig, items)
    _fit_legends(fig)
    return fig


def _ece_figure(results: AnalysisResults, steps: np.ndarray, xtype: str) -> figure | None:
    """ECE over training: one colour per measure, held-out solid, train dashed."""
    cal = results.calibration
    colors = {m: MEASURE_COLORS[i % 10] for i, m in enumerate(_measures(cal))}
    fig = _step_figure("Expected calibration error (ECE)", "ECE", steps, xtype)
    lines = [(plain(f"{probe}, {m}"), probe, colors[m], _ece(results, probe, m))
             for probe in cal for m in cal[probe].measures]
    return _probe_lines(fig, lines, steps, xtype)


def _reliability(results: AnalysisResults, steps: np.ndarray, marker: Span | None,
                 marker_x: np.ndarray) -> LayoutDOM | None:
    """The reliability diagram of the held-out probe set at one snapshot, with its slider (see the module doc)."""
    probe = _reliability_probe(results)
    if probe is None:
        return None
    cal = results.calibration[probe]
    conf, acc = np.asarray(cal.conf, np.float64), np.asarray(cal.accuracy, np.float64)  # [M, S, B]
    counts = np.asarray(cal.counts, np.float64)  # [M, S, B]
    n_s = min(conf.shape[1], len(steps))
    n_bins = conf.shape[2]
    if n_s == 0 or n_bins == 0:
        return None
    keys, shipped = [], {}
    for k in range(min(len(cal.measures), conf.shape[0])):
        for name, arr in (("conf", conf), ("acc", acc), ("n", counts)):
            keys.append(f"{name}{k}")
            shipped[f"{name}{k}"] = arr[k, :n_s].reshape(-1)  # (S * B,), snapshot-major
    last = n_s - 1
    view = ColumnDataSource({key: shipped[key][last * n_bins:(last + 1) * n_bins] for key in keys},
                            name=RELIABILITY_VIEW)
    titles = [plain(f"Reliability, {probe} probe set, step {int(s):,}") for s in steps[:n_s]]
    fig = _line_figure(titles[last], "mean confidence in bin", "accuracy in bin", x_range=Range1d(0, 1),
                       y_range=Range1d(0, 1.02), width=340, height=300)
    diag = fig.line([0, 1], [0, 1], line_color=DIAGONAL_COLOR, line_dash="dashed", line_width=1)
    items = [("perfect calibration", [diag])]
    for k, m in enumerate(cal.measures[: len(keys) // 3]):
        color = MEASURE_COLORS[_measures(results.calibration).index(m) % 10]
        r = fig.line(f"conf{k}", f"acc{k}", source=view, line_width=1.5, color=color)
        dots = fig.scatter(f"conf{k}", f"acc{k}", source=view, size=7, color=color)
        fig.add_tools(HoverTool(renderers=[dots], tooltips=[("mean confidence", f"@conf{k}{{0.000}}"),
                                                            ("accuracy", f"@acc{k}{{0.000}}"),
                                                            ("samples", f"@n{k}{{0}}")]))
        items.append((plain(m), [r, dots]))
    _add_legend(fig, items)
    slider = Slider(start=0, end=max(last, 1), value=last, step=1, title="snapshot", show_value=False, width=320,
                    disabled=last < 1, name=RELIABILITY_SLIDER)
    # The source of every snapshot draws nothing: as a callback argument it reaches the page.
    slider.js_on_change("value", CustomJS(args=dict(slider=slider, all=ColumnDataSource(shipped), view=view,
                                                    keys=keys, n_bins=n_bins, title=fig.title, titles=titles,
                                                    snapshot_marker=marker, snapshot_x=list(marker_x[:n_s])),
                                          code=RELIABILITY_JS))
    return column(fig, slider)


TEMPERATURE_TITLE = "Fitted temperature T"
TRAIN_T_LABEL = "train probe set (temp_prob)"


def _temperature_figure(results: AnalysisResults, steps: np.ndarray, xtype: str) -> figure | None:
    """T over training, or None when the analysis holds none.

    Lines: the recorded T (train probe set, grey) and the two cross-fitted ones of the reliability probe set
    (``temp_prob_cv``, fitted on each half, in that measure's colour, solid and dashed).
    """
    lines: list[tuple[str, str, np.ndarray, str]] = []  # label, colour, T per snapshot, dash
    temperature = np.asarray(getattr(results, "temperature", np.zeros(0)), np.float64).ravel()
    if temperature.size:
        lines.append((TRAIN_T_LABEL, "#444444", temperature, "solid"))
    probe = _reliability_probe(results)
    cal = results.calibration.get(probe) if probe else None
    t_cv = np.asarray(getattr(cal, "temperature_cv", np.zeros((0, 2))), np.float64)
    if cal is not None and t_cv.ndim == 2 and t_cv.shape[0] and TEMP_PROB_CV in _measures(results.calibration):
        color = MEASURE_COLORS[_measures(results.calibration).index(TEMP_PROB_CV) % 10]
        lines += [(plain(f"{probe}, fitted on half {h + 1} (temp_prob_cv)"), color, t_cv[:, h], dash)
                  for h, dash in ((0, "solid"), (1, "dashed"))]
    if not lines:
        return None
    fig = _step_figure(TEMPERATURE_TITLE, "T", steps, xtype)
    items = []
    for label, color, y, dash in lines:
        items.append((label, [fig.line("x", "y", source=_series(steps, y, xtype, label), line_width=2, color=color,
                                       line_dash=dash)]))
    _hover(fig, [r for _, (r,) in items])
    _add_legend(fig, items)
    _fit_legends(fig)
    return fig


def calibration_note(results: AnalysisResults) -> str:
    """The calibration chart's caption: which temperature calibrates, and the held-out ECE at the last snapshot.

    Plain text (the template escapes it); empty without calibration data. States that ``temp_prob_cv`` is the
    temperature scaling that calibrates (cross-fitted on halves of the probe set) and what the recorded
    ``temp_prob`` (T fitted on the train probe set) is, so neither the ECE lines nor T read the wrong way.
    """
    cal = results.calibration or {}
    if not cal:
        return ""
    measures = _measures(cal)
    text = []
    if TEMP_PROB_CV in measures:
        text.append("temp_prob_cv is temperature scaling fitted where it can calibrate: each probe set is split into "
                    "two halves (balanced per class, seeded), T is fitted on one half (lowest NLL) and applied to the "
                    "other, so every sample's scaled confidence comes from a T fitted without it and its ECE is "
                    "measured on samples the fit has not seen.")
    if "temp_prob" in measures:
        text.append("temp_prob, recorded during training, uses a T fitted on the train probe set, which the network "
                    "fits ever more closely: late in training that T falls towards its lower bound and makes "
                    "held-out confidences more extreme, so temp_prob shows how sharp the training fit is, not a "
                    "calibration.")
    probe = _reliability_probe(results)
    if probe is not None:
        last = [(m, _ece(results, probe, m)) for m in measures]
        last = [f"{m} {number(float(e[-1]))}" for m, e in last if e.size and np.isfinite(e[-1])]
        if last:
            step = int(np.asarray(results.steps)[-1])
            text.append(f"ECE of the {probe} probe set at the last snapshot (step {step:,}): {', '.join(last)}.")
    return " ".join(text)


def calibration_view(results: AnalysisResults) -> LayoutDOM | None:
    """ECE over training, the reliability diagram with its slider, and the temperature (name ``calibration``).

    ECE: one line per probe set and calibrated measure (held-out solid, train dashed, one colour per measure).
    Reliability: accuracy against mean confidence per bin of the held-out probe set, each measure, with the
    diagonal; the slider (name :data:`RELIABILITY_SLIDER`) picks the snapshot and moves a marker on the ECE chart.
    Temperature: T over training, the recorded one (train probe set) and the two cross-fitted ones of
    ``temp_prob_cv``, when the analysis holds them. None without calibration data. Caption: :func:`calibration_note`.
    """
    steps = np.asarray(results.steps)
    if not (results.calibration or {}) or len(steps) == 0:
        return None
    xtype = step_axis_type(steps)
    ece_fig = _ece_figure(results, steps, xtype)
    marker, marker_x = None, time_x(steps, xtype)
    if ece_fig is not None:
        marker = Span(location=float(marker_x[-1]), dimension="height", line_color="#24292f", line_width=1,
                      line_dash="dotted", name=RELIABILITY_MARKER, level="overlay")  # moves: overlay canvas only
        ece_fig.add_layout(marker)
    parts = [p for p in (ece_fig, _reliability(results, steps, marker, marker_x), _temperature_figure(results, steps,
                                                                                                    xtype))
             if p is not None]
    if not parts:
        return None
    return row(*parts, name="calibration")


# ------------------------------------------------------------------------------------------------ overfitting
def _gap_figure(title: str, y_label: str, lines: list[tuple[str, np.ndarray]], steps: np.ndarray,
                xtype: str, colors: Mapping[str, str]) -> figure | None:
    """One generalisation-gap chart: each probe set's curve (held-out solid, train dashed)."""
    fig = _step_figure(title, y_label, steps, xtype, width=265, height=270)
    return _probe_lines(fig, [(plain(probe), probe, colors[probe], y) for probe, y in lines], steps, xtype)


def overfitting_view(results: AnalysisResults) -> LayoutDOM | None:
    """Train vs held-out loss, accuracy, mean confidence and ECE, and the per-layer NAP gap (name ``overfitting``).

    None unless the curves hold both a ``"train"`` and a ``"heldout"`` probe set. The held-out loss minimum is
    marked afterwards, on every chart over training time, by :func:`mark_loss_minimum`.
    """
    curves = results.curves or {}
    steps = np.asarray(results.steps)
    if HELDOUT not in curves or TRAIN not in curves or len(steps) == 0:
        return None
    xtype = step_axis_type(steps)
    colors = {p: PROBE_COLORS[i % len(PROBE_COLORS)] for i, p in enumerate(curves)}  # as the training curves
    probes = (HELDOUT, TRAIN)
    specs = [(title, y_label, [(p, np.asarray(curves[p].get(key, []), np.float64)) for p in probes])
             for key, title, y_label in GAP_CHARTS]
    specs.append(("ECE (max_prob)", "ECE", [(p, _ece(results, p, "max_prob")) for p in probes]))
    figs = [f for f in (_gap_figure(*spec, steps, xtype, colors) for spec in specs) if f is not None]
    gap = _layer_figure(results, "nap_gap", "NAP gap (train vs held-out class NAPs)", "relative distance",
                        steps, xtype)
    if not figs and gap is None:
        return None
    parts = [row(*figs)] if figs else []
    if gap is not None:
        parts.append(gap)
    return column(*parts, name="overfitting")


# --------------------------------------------------------------------------------------------------- collapse
def _layer_figure(results: AnalysisResults, attr: str, title: str, y_label: str, steps: np.ndarray, xtype: str,
                  log_y: bool = False) -> figure | None:
    """One line per layer of the per-snapshot array ``attr`` (Category10 by layer position, as the other charts).

    ``log_y`` draws log10 of the values on a linear axis whose ticks read as the values themselves (so a LogAxis
    in the report always is a step axis); the columns keep the values as ``value``.
    """
    fig = _step_figure(title, y_label, steps, xtype, width=440)
    items = []
    for i, layer in enumerate(results.layers.values()):
        y = np.asarray(getattr(layer, attr, np.zeros(0)), np.float64).ravel()
        if y.size == 0:
            continue
        src = _series(steps, y, xtype, plain(layer.name))
        src.data["value"] = src.data["y"]
        if log_y:
            with np.errstate(divide="ignore", invalid="ignore"):
                src.data["y"] = np.where(src.data["value"] > 0, np.log10(src.data["value"]), np.nan)
        r = fig.line("x", "y", source=src, line_width=2, color=Category10_10[i % 10])
        items.append((plain(layer.name), [r]))
    if not items:
        return None
    if log_y:
        fig.yaxis.formatter = CustomJSTickFormatter(code=LOG10_TICKS_JS)
    _hover(fig, [r for _, (r,) in items], "@value{0.0000}")
    _add_legend(fig, items)
    return fig


def collapse_view(results: AnalysisResults) -> LayoutDOM | None:
    """Share of τ-dormant units and NC1 over training, one line per layer (name ``collapse``).

    NC1 is drawn on a logarithmic value scale (see :func:`_layer_figure`). None when no layer holds either.
    """
    steps = np.asarray(results.steps)
    if not results.layers or len(steps) == 0:
        return None
    xtype = step_axis_type(steps)
    tau = (results.params or {}).get("dormant_tau")
    title = "Dormant units" + (f" (\u03c4 = {number(float(tau))})" if _finite(tau) else "")
    figs = [f for f in (_layer_figure(results, "dormant", title, "share of units", steps, xtype),
                        _layer_figure(results, "nc1", "Within-class variability NC1 (log scale)", "NC1", steps,
                                      xtype, log_y=True)) if f is not None]
    return row(*figs, name="collapse") if figs else None


# ------------------------------------------------------------------------------------------ loss-minimum marker
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


def _fit_legends(fig: Plot) -> None:
    for legend in fig.select({"type": Legend}):
        _fit_legend(fig, legend)


def _legend_entry(fig: Plot, label: str, x: float) -> None:
    """A legend entry for the marker, added to the chart's legend (or a new one below the chart).

    The entry's line is one point at (``x``, NaN): it draws nothing and leaves the ranges alone, but the legend
    draws its sample (a legend skips the sample of a renderer without data).
    """
    r = fig.line(x=[x], y=[math.nan], line_color=LOSS_MIN_COLOR, line_width=2, line_dash="dotdash",
                 name=LOSS_MIN_LEGEND)
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
    label = f"held-out loss minimum (step {step:,})"
    out = []
    for fig in collect_models(*(roots.values() if isinstance(roots, Mapping) else roots)):  # one walk, each once
        if isinstance(fig, Plot) and _is_time_chart(fig):
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


# ------------------------------------------------------------------------------------------------- page text
def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def trend_verdict(low: float, high: float) -> str:
    """``"rises"`` when the interval lies above 0, ``"falls"`` when below, else ``"not supported"``."""
    if _finite(low) and _finite(high):
        if low > 0:
            return "rises"
        if high < 0:
            return "falls"
    return "not supported"


def _trend(values: object) -> tuple[float, float, float]:
    v = np.asarray(values, np.float64).ravel()
    return tuple(float(x) for x in v[:3]) if v.size >= 3 else (math.nan,) * 3


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %" if _finite(value) else "n/a"


def _pp(value: float) -> str:
    """A change of a share in percentage points, signed: "+1.5 pp", "−0.3 pp"."""
    return f"{100 * value:+.1f} pp".replace("-", "\u2212") if _finite(value) else "n/a"


def _exp(value: float) -> str:
    """A ratio from its log: exp(value) as a number, "n/a" when undefined."""
    return number(math.exp(value)) if _finite(value) else "n/a"


def _span_text(low: str, high: str) -> str:
    return "n/a" if "n/a" in (low, high) else f"{low} to {high}"


def _ends(values: object) -> tuple[float, float]:
    v = np.asarray(values, np.float64).ravel()
    return (float(v[0]), float(v[-1])) if v.size else (math.nan, math.nan)


def _trend_rows(results: AnalysisResults) -> list[dict[str, str]]:
    """Per layer with trends: dormant share first -> last, its change and interval; NC1 first -> last, the ratio."""
    rows = []
    for layer in results.layers.values():
        trends = getattr(layer, "trends", None) or {}
        if not trends:
            continue
        d_first, d_last = _ends(layer.dormant)
        d_eff, d_lo, d_hi = _trend(trends.get("dormant_change", []))
        n_first, n_last = _ends(layer.nc1)
        n_eff, n_lo, n_hi = _trend(trends.get("nc1_log_ratio", []))
        rows.append({"layer": layer.name, "dormant_first": _pct(d_first), "dormant_last": _pct(d_last),
                     "dormant_change": _pp(d_eff), "dormant_interval": _span_text(_pp(d_lo), _pp(d_hi)),
                     "dormant_verdict": trend_verdict(d_lo, d_hi),
                     "nc1_first": number(n_first), "nc1_last": number(n_last),
                     "nc1_ratio": _exp(n_eff) + ("\u00d7" if _finite(n_eff) else ""),
                     "nc1_interval": _span_text(_exp(n_lo), _exp(n_hi)), "nc1_verdict": trend_verdict(n_lo, n_hi)})
    return rows


def _ece_rows(results: AnalysisResults) -> list[dict[str, str]]:
    """Per measure: ECE (held-out) at the loss minimum and at the last snapshot, the change, interval, verdict."""
    i = _loss_min(results)
    rows = []
    for m, values in (getattr(results, "ece_trend", None) or {}).items():
        eff, lo, hi = _trend(values)
        ece = _ece(results, HELDOUT, m)
        at_min = number(ece[i]) if i is not None and i < ece.size else "n/a"
        rows.append({"measure": m, "at_min": at_min, "last": number(ece[-1]) if ece.size else "n/a",
                     "change": number(eff), "interval": _span_text(number(lo), number(hi)),
                     "verdict": trend_verdict(lo, hi)})
    return rows


def _loss_sentence(results: AnalysisResults) -> str:
    """Where the held-out loss is lowest, with the train and held-out loss there and at the end; "" without one."""
    i = _loss_min(results)
    curves = results.curves or {}
    if i is None or HELDOUT not in curves:
        return ""
    steps = np.asarray(results.steps)
    n = len(steps)

    def loss(probe: str, s: int) -> str:
        y = np.asarray(curves.get(probe, {}).get("loss", []), np.float64).ravel()
        return number(y[s]) if s < y.size else "n/a"

    head = (f"The held-out loss is lowest at step {int(steps[i]):,} (snapshot {i + 1} of {n}): held-out loss "
            f"{loss(HELDOUT, i)}, train loss {loss(TRAIN, i)}")
    if i == n - 1:
        return head + "; that is the last snapshot, so the held-out loss had not turned up by the end of training."
    return (head + f"; at the last snapshot (step {int(steps[-1]):,}) they are {loss(HELDOUT, n - 1)} and "
            f"{loss(TRAIN, n - 1)}.")


def _ece_text(results: AnalysisResults) -> str:
    """What the ECE rows are, or why there are none."""
    i = _loss_min(results)
    steps = np.asarray(results.steps)
    if getattr(results, "ece_trend", None):
        return (f"ECE of the held-out probe set at the held-out loss minimum (step {int(steps[i]):,}) and at the "
                f"last snapshot (step {int(steps[-1]):,}); the change is the last minus the minimum."
                if i is not None else "Change of the held-out ECE from the held-out loss minimum to the last snapshot.")
    if i is None:
        return "No ECE change after the held-out loss minimum: the analysis holds no held-out loss minimum."
    if i == len(steps) - 1:
        return ("No ECE change after the held-out loss minimum: the held-out loss is lowest at the last snapshot, so "
                "there is no time after it.")
    return "No ECE change after the held-out loss minimum: the analysis holds none (analyse the run again)."


def page_context(results: AnalysisResults) -> dict[str, object]:
    """The text of the calibration, overfitting and collapse sections (plain strings; the template escapes them).

    Keys: ``measures`` (calibrated measures, joined), ``n_bins``, ``reliability_probe``, ``temperature`` (bool:
    a T chart is drawn), ``calibration_note`` (the calibration chart's caption, :func:`calibration_note`),
    ``loss_sentence``, ``nap_gap`` (bool: some layer has one), ``tau``, ``n_boot``, ``trend_rows``,
    ``ece_rows``, ``ece_text``.
    """
    cal = results.calibration or {}
    params = results.params or {}
    tau = params.get("dormant_tau")
    n_boot = params.get("n_boot_trends")
    return {
        "measures": ", ".join(_measures(cal)),
        "n_bins": str(next(iter(cal.values())).n_bins) if cal else "",
        "reliability_probe": _reliability_probe(results) or "",
        "temperature": bool(np.asarray(getattr(results, "temperature", np.zeros(0))).size) or any(
            np.asarray(getattr(c, "temperature_cv", np.zeros((0, 2)))).size for c in cal.values()),
        "calibration_note": calibration_note(results),
        "loss_sentence": _loss_sentence(results),
        "nap_gap": any(np.asarray(getattr(la, "nap_gap", np.zeros(0))).size for la in results.layers.values()),
        "tau": number(float(tau)) if _finite(tau) else "",
        "n_boot": str(int(n_boot)) if _finite(n_boot) else "",
        "trend_rows": _trend_rows(results),
        "ece_rows": _ece_rows(results),
        "ece_text": _ece_text(results),
    }
