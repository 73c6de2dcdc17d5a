"""The report's view beyond the study (issue #12): calibration, overfitting, dormant units and class collapse.

Owns three named roots built by pure functions from an :class:`~topotrace.analysis.results.AnalysisResults`
(each ``None`` when its data is missing, e.g. for results of an older analysis): :func:`calibration_view`
(``calibration``), :func:`overfitting_view` (``overfitting``) and :func:`collapse_view` (``collapse``). The text
of their sections is :mod:`.beyond_page`'s; the held-out loss minimum on every chart over training time is
:mod:`.loss_marker`'s.

The charts here carry no current-snapshot marker of the maps' time slider (:data:`.charts.MARKER_NAME`); they
are tagged :data:`STEP_AXIS_TAG` instead, so :func:`.loss_marker.mark_loss_minimum` finds them. The reliability
diagram has its own snapshot slider (name :data:`RELIABILITY_SLIDER`): every snapshot's bins are shipped once,
flattened from shape (S, B), and a small CustomJS callback copies the chosen snapshot's into the source the
diagram draws.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    CustomJSTickFormatter,
    HoverTool,
    Line,
    Range1d,
    Slider,
    Span,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from ..analysis.calibration import TEMP_PROB_CV
from ..analysis.results import AnalysisResults, Calibration
from .charts import (
    PROBE_COLORS,
    TIME_LABEL,
    _add_legend,
    _add_time_marker,
    _line_figure,
    _style_time_axis,
    step_axis_type,
    time_x,
)
from .glyphs import draw, line_with_dots
from .loss_marker import LOSS_MIN_NAME, STEP_AXIS_TAG, fit_legends  # noqa: F401 (LOSS_MIN_NAME: for callers)
from .style import plain
from .words import number

HELDOUT, TRAIN = "heldout", "train"
DIAGONAL_COLOR = "#8c959f"
RELIABILITY_SLIDER = "reliability_slider"
RELIABILITY_VIEW = "reliability_view"  # the source the diagram draws: columns conf<k>, acc<k>, n<k> per measure k
RELIABILITY_MARKER = "reliability_marker"  # on the ECE chart: the snapshot the reliability diagram shows
MEASURE_COLORS = Category10_10  # one colour per calibrated measure, in the order of the calibration
GAP_CHARTS = (("loss", "Loss (cross-entropy)", "loss"), ("accuracy", "Accuracy", "accuracy"),
              ("conf_max_prob", "Mean confidence (max_prob)", "mean confidence"))

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
def _finite(value: object) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


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
        r = draw(fig, Line(x="x", y="y", line_width=2, line_color=color, line_dash=_dash(probe)),
                 _series(steps, y, xtype, label))
        items.append((label, [r]))
    if not items:
        return None
    _hover(fig, [r for _, (r,) in items], "@y{0.0000}")
    _add_legend(fig, items)
    fit_legends(fig)
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
    diag = draw(fig, Line(x="x", y="y", line_color=DIAGONAL_COLOR, line_dash="dashed", line_width=1),
                {"x": [0, 1], "y": [0, 1]})
    items = [("perfect calibration", [diag])]
    for k, m in enumerate(cal.measures[: len(keys) // 3]):
        color = MEASURE_COLORS[_measures(results.calibration).index(m) % 10]
        r, dots = line_with_dots(fig, view, color, x=f"conf{k}", y=f"acc{k}", width=1.5, size=7)
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
        items.append((label, [draw(fig, Line(x="x", y="y", line_width=2, line_color=color, line_dash=dash),
                                   _series(steps, y, xtype, label))]))
    _hover(fig, [r for _, (r,) in items])
    _add_legend(fig, items)
    fit_legends(fig)
    return fig


def calibration_view(results: AnalysisResults) -> LayoutDOM | None:
    """ECE over training, the reliability diagram with its slider, and the temperature (name ``calibration``).

    ECE: one line per probe set and calibrated measure (held-out solid, train dashed, one colour per measure).
    Reliability: accuracy against mean confidence per bin of the held-out probe set, each measure, with the
    diagonal; the slider (name :data:`RELIABILITY_SLIDER`) picks the snapshot and moves a marker on the ECE chart.
    Temperature: T over training, the recorded one (train probe set) and the two cross-fitted ones of
    ``temp_prob_cv``, when the analysis holds them. None without calibration data. Caption:
    :func:`.beyond_page.calibration_note`.
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
    marked afterwards, on every chart over training time, by :func:`.loss_marker.mark_loss_minimum`.
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
        r = draw(fig, Line(x="x", y="y", line_width=2, line_color=Category10_10[i % 10]), src)
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
