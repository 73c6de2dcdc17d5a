"""The comparison page (``topotrace compare``): two or more runs side by side, its figures and its page text.

Every public function takes the runs as a list of ``(label, AnalysisResults)`` (the label is shown as given and
escaped wherever it is drawn) and, for the findings, each run's own findings
(:func:`topotrace.analysis.findings.run_findings`); figure builders return named Bokeh roots or ``None`` when
the data they need is missing, and touch no file. :func:`topotrace.report_templates.generate.build_comparison`
places them into ``compare.html``.

* Findings side by side (:func:`findings_rows`): per layer and claim, each run's effect, 95 % interval and
  verdict (the confidence claims for each run's primary measure); sentences from :mod:`.words`.
* Curves overlaid (:func:`training_curves`, :func:`findings_charts`): one colour per run (:func:`run_colors`).
* Maps in columns (:func:`map_columns`): per layer that every run has, one column per run with that run's class
  and correct/wrong maps on its own layout, drawn by :func:`topotrace.report_templates.maps.map_sections`
  (``render_maps.js``) exactly as in the one-run report, on one colour scale per layer across runs.

**One time control for every run.** Runs may record different steps. The page's slider walks through the union
of all runs' steps; at step ``u`` each run shows its last snapshot at or before ``u`` (its first snapshot while
``u`` lies before it), see :func:`snapshot_index`. Each run's maps keep their own (hidden) slider and render
callback; the page's slider sets each of them to its run's snapshot (:data:`TIME_JS`), and each column's step
label tells which snapshot it shows.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    HoverTool,
    InlineStyleSheet,
    Legend,
    Line,
    RadioButtonGroup,
    Slider,
    Span,
    Toggle,
)
from bokeh.models.layouts import LayoutDOM
from bokeh.palettes import Category10_10

from ..analysis.findings import CLAIMS, RULE, Finding
from ..analysis.results import AnalysisResults, LayerResult
from . import maps
from .charts import CURVE_NAMES, _time_figure, step_axis_type, time_markers, time_x
from .findings_view import Y_LABEL, draw_band
from .glyphs import draw
from .style import esc, html_div, plain
from .words import CLAIM_SHORT, comparison_sentence, interval, missing_finding, number

Run = tuple[str, AnalysisResults]
HEAD_CSS = """
.tt-runhead { margin: 0; font-size: 15px; font-weight: 650; }
.tt-dot { display: inline-block; width: 11px; height: 11px; border-radius: 50%; margin-right: 6px; }
"""  # the run's name above its map column
PROBE_DASH = {"heldout": "solid", "train": "dashed"}  # any other probe set: dotted

# Body of the CustomJS callback of the page's time control, its Play button and its contrast switch.
TIME_JS = """
// Args: slider (the page's time slider over the union of the runs' steps), play (Toggle), label (Div),
// mode (RadioButtonGroup or null: mean activation / contrast), modes (every map column's own switch),
// sliders (every map column's own snapshot slider), snap (per column, the snapshot index at each position of
// slider), steps (the union of steps), markers (the charts' current-step Spans), marker_x (x of each step).
const w = window;
if (cb_obj === play) {
  if (play.active) {
    play.label = "\\u275a\\u275a Pause";
    if (slider.value >= slider.end) slider.value = slider.start;
    w.topotraceComparePlay = setInterval(function () {
      if (slider.value >= slider.end) { play.active = false; return; }
      slider.value = slider.value + 1;
    }, 300);
  } else {
    play.label = "\\u25b6 Play";
    clearInterval(w.topotraceComparePlay);
  }
} else if (mode !== null && cb_obj === mode) {
  for (const m of modes) m.active = mode.active;
} else {
  const i = Math.min(slider.value, steps.length - 1);
  for (let k = 0; k < sliders.length; k++) {
    const s = snap[k][i];
    if (sliders[k].value !== s) sliders[k].value = s;  // that column's render_maps.js callback draws it
  }
  label.text = "<span class='tt-steplabel'>step " + steps[i].toLocaleString("en-US") + " \\u00b7 position " +
               (i + 1) + " of " + steps.length + "</span>";
  for (const span of markers) span.location = marker_x[i];
  w.topotraceCompareStep = steps[i];
}
"""


def run_colors(n: int) -> list[str]:
    """One colour per run (Category10, repeating after ten runs)."""
    return [Category10_10[i % len(Category10_10)] for i in range(n)]


def union_steps(runs: Sequence[Run]) -> np.ndarray:
    """Every step at which any run has a snapshot, sorted, shape (U,)."""
    parts = [np.asarray(res.steps, np.int64) for _, res in runs]
    return np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)


def snapshot_index(steps: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The page's time rule: at each step of the union, the snapshot each run shows.

    Args:
        steps: per run, its snapshots' steps, ascending, each of shape (S_r,).

    Returns:
        ``(union, index)``: the union of the steps, shape (U,), and an int array of shape (R, U) holding, per run
        and union step ``u``, the position of the run's last snapshot with step <= ``u``, or 0 (its first
        snapshot) where the run has none yet.
    """
    arrays = [np.asarray(s, np.int64) for s in steps]
    union = np.unique(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)
    index = np.array([np.clip(np.searchsorted(s, union, side="right") - 1, 0, None) for s in arrays], np.int64)
    return union, index.reshape(len(arrays), len(union))


def _layer_order(runs: Sequence[Run]) -> list[str]:
    """Every layer of any run: the first run's order, then the others' new layers."""
    out: list[str] = []
    for _, res in runs:
        out += [name for name in res.layers if name not in out]
    return out


def shared_layers(runs: Sequence[Run]) -> list[str]:
    """Layers that every run has, with maps (a layout) in every run, in the first run's order."""
    def drawable(res: AnalysisResults, name: str) -> bool:
        layer = res.layers.get(name)
        return layer is not None and layer.default_layout in layer.layouts and res.n_snapshots > 0

    return [name for name in runs[0][1].layers if all(drawable(res, name) for _, res in runs)]


def _primary(res: AnalysisResults, found: Sequence[Finding]) -> dict[tuple[str, str], Finding]:
    """A run's findings for the time claims and the confidence claims of its primary measure, by (layer, claim)."""
    return {(f.layer, f.claim): f for f in found if f.measure in ("", res.primary_measure)}


def _raw(value: float) -> str:
    """A float at full precision for the page's data attributes ("nan" when undefined)."""
    return repr(float(value)) if value is not None and math.isfinite(value) else "nan"


def _missing(res: AnalysisResults, layer: str) -> str:
    """Why a run has no finding for a layer, in a few words."""
    return missing_finding(layer in res.layers)


def findings_rows(runs: Sequence[Run], found: Sequence[Sequence[Finding]]) -> list[dict[str, object]]:
    """The findings side by side: one row per layer and claim, one cell per run.

    Args:
        runs: ``(label, results)`` per run.
        found: per run, its findings (:func:`topotrace.analysis.findings.run_findings`).

    Returns:
        Rows ``{"layer", "claim" (key), "claim_text", "measure" (the confidence measure when every run uses the
        same one, else ""), "sentence", "differs" (verdicts differ or a run has none), "cells"}``; a cell is
        ``{"effect", "interval", "verdict", "measure", "raw_effect", "raw_low", "raw_high", "missing": ""}``
        (text from :mod:`.words`; raw values at full precision), or ``{"missing": why}`` where the run has no
        finding (no such layer, or no per-sample evidence).
    """
    primary = [_primary(res, fs) for (_, res), fs in zip(runs, found)]
    rows = []
    for layer in _layer_order(runs):
        for claim in CLAIMS:
            entries = [p.get((layer, claim)) for p in primary]
            if all(f is None for f in entries):
                continue
            measures = {f.measure for f in entries if f is not None}
            missing = [_missing(res, layer) for _, res in runs]
            cells = [{"missing": why} if f is None else {
                "effect": number(f.effect), "interval": interval(f), "verdict": f.verdict, "measure": f.measure,
                "raw_effect": _raw(f.effect), "raw_low": _raw(f.ci_low), "raw_high": _raw(f.ci_high), "missing": "",
            } for f, why in zip(entries, missing)]
            said = [(label, why if f is None else f) for (label, _), f, why in zip(runs, entries, missing)]
            rows.append({
                "layer": layer, "claim": claim, "claim_text": CLAIM_SHORT[claim],
                "measure": next(iter(measures)) if len(measures) == 1 else "",
                "sentence": comparison_sentence(layer, claim, said),
                "differs": len({f.verdict for f in entries if f is not None}) > 1 or None in entries,
                "cells": cells,
            })
    return rows


def _legend(fig, items: list[tuple[str, list]]) -> None:
    fig.add_layout(Legend(items=items, location="center", orientation="horizontal" if len(items) <= 3 else "vertical",
                          label_text_font_size="11px", padding=2, spacing=8, border_line_alpha=0), "below")


def training_curves(runs: Sequence[Run]) -> LayoutDOM | None:
    """Accuracy, loss and mean confidence of every run over training steps, overlaid (name ``compare_curves``).

    One colour per run; the held-out probe set solid, the train probe set dashed, any other dotted. The
    confidence is the first run's primary measure (runs without that curve are left out of that chart). Each
    line's source is named ``curve:<key>:<run position>:<probe set>``.
    """
    union = union_steps(runs)
    if len(union) == 0 or not any(res.curves for _, res in runs):
        return None
    axis = step_axis_type(union)
    measure = runs[0][1].primary_measure
    colors = run_colors(len(runs))
    figs = []
    for key, title in list(CURVE_NAMES) + [(f"conf_{measure}", f"Mean confidence ({measure})")]:
        fig = _time_figure(title, title.split(" (")[0], union, axis, width=380, height=280)
        items, hover = [], []
        for i, (label, res) in enumerate(runs):
            steps = np.asarray(res.steps)
            mine = []
            for probe, named in (res.curves or {}).items():
                if key not in named:
                    continue
                y = np.asarray(named[key], np.float64)
                s = steps[: len(y)]
                src = ColumnDataSource({"x": time_x(s, axis), "step": s, "y": y, "run": [plain(label)] * len(y),
                                        "probe": [plain(probe)] * len(y)}, name=f"curve:{key}:{i}:{probe}")
                r = draw(fig, Line(x="x", y="y", line_width=2, line_color=colors[i],
                                   line_dash=PROBE_DASH.get(str(probe), "dotted")), src)
                mine.append(r)
            if mine:
                items.append((plain(label), mine))
                hover += mine
        if not items:
            continue
        fig.add_tools(HoverTool(tooltips=[("run", "@run"), ("probe set", "@probe"), ("step", "@step"),
                                          ("value", "@y{0.0000}")], renderers=hover))
        _legend(fig, items)
        figs.append(fig)
    return row(*figs, name="compare_curves") if figs else None


def findings_charts(runs: Sequence[Run], found: Sequence[Sequence[Finding]]) -> LayoutDOM | None:
    """Each claim's statistic over training time, every run overlaid with its band (``compare_findings_charts``).

    One row per layer, one chart per claim (confidence claims for each run's primary measure); per run a line in
    its colour and its 95 % interval (bootstrap over probe samples) as a light band.
    """
    primary = [_primary(res, fs) for (_, res), fs in zip(runs, found)]
    if not any(primary):
        return None
    union = union_steps(runs)
    axis = step_axis_type(union)
    colors = run_colors(len(runs))
    parts: list[LayoutDOM] = []
    for layer in _layer_order(runs):
        figs = []
        for claim, (quantity, versus) in CLAIMS.items():
            entries = [(i, label, p.get((layer, claim))) for i, ((label, _), p) in enumerate(zip(runs, primary))]
            entries = [e for e in entries if e[2] is not None]
            if not entries:
                continue
            measures = {f.measure for _, _, f in entries}
            y_label = (Y_LABEL[quantity] if versus == "time" else
                       "partial Spearman ρ" + (f" ({next(iter(measures))})" if len(measures) == 1 else ""))
            fig = _time_figure(CLAIM_SHORT[claim], y_label, union, axis, width=270, height=240)
            fig.title.text_font_size = "11.5px"
            fig.yaxis.axis_label_text_font_size = "11px"
            fig.xaxis.axis_label_text_font_size = "11px"
            lines = []
            for i, label, f in entries:
                x = time_x(f.steps, axis)
                band = np.asarray(f.band, np.float64)
                draw_band(fig, x, band, colors[i], 0.15)
                src = ColumnDataSource({"x": x, "step": np.asarray(f.steps), "y": np.asarray(f.curve, np.float64),
                                        "lo": band[:, 0], "hi": band[:, 1], "run": [plain(label)] * len(x)},
                                       name=f"finding:{layer}:{claim}:{i}")
                lines.append(draw(fig, Line(x="x", y="y", line_color=colors[i], line_width=2), src))
            fig.add_tools(HoverTool(renderers=lines, tooltips=[("run", "@run"), ("step", "@step"),
                                                               ("value", "@y{0.000}"),
                                                               ("95 % interval", "@lo{0.000} to @hi{0.000}")]))
            if versus == "confidence":
                fig.add_layout(Span(location=0, dimension="width", line_color="#24292f", line_width=1))
            figs.append(fig)
        if figs:
            parts.append(html_div(f"<h3>layer {esc(layer)}</h3>", styles={"margin": "6px 0 0 0"}))
            parts.append(row(*figs))
    return column(*parts, name="compare_findings_charts") if parts else None


def _finite_max(values: Sequence[float]) -> float:
    good = [float(v) for v in values if math.isfinite(v) and v > 0]
    return max(good) if good else float("nan")


def common_scale(layers: Sequence[LayerResult]) -> list[LayerResult]:
    """The same layer of several runs on one colour scale: the largest of their limits, sequential if all are."""
    limit = _finite_max([la.color_limit for la in layers])
    contrast = _finite_max([la.color_limit_contrast for la in layers])
    nonneg = all(la.nonnegative for la in layers)
    return [dataclasses.replace(la, color_limit=limit, color_limit_contrast=contrast, nonnegative=nonneg)
            for la in layers]


def _tile_columns(n_runs: int) -> int:
    """Map tiles per row in each run's column: three for two runs, two for more."""
    return 3 if n_runs <= 2 else 2


def _step_text(step: int, i: int, n: int) -> str:
    """The page's step label; :data:`TIME_JS` writes the same text when the slider moves."""
    return f"<span class='tt-steplabel'>step {step:,} \u00b7 position {i + 1} of {n}</span>"


def map_columns(runs: Sequence[Run], markers: Sequence[Span] = ()) -> dict[str, LayoutDOM]:
    """The map columns of every shared layer and the one time control that moves them all.

    Args:
        runs: ``(label, results)`` per run.
        markers: current-step markers of the page's charts (from
            :func:`topotrace.report_templates.charts.time_markers`); the time control moves them.

    Returns:
        Named roots (only the available ones): ``maps_<layer position>_<run position>`` (a run's column for one
        layer of :func:`shared_layers`: its label, its step label and its class and correct/wrong maps),
        ``compare_controls`` (Play, the time slider named ``time_slider`` over :func:`union_steps`, the step
        label) and ``compare_mode`` (the mean activation / contrast switch).
    """
    layers = shared_layers(runs)
    if not layers:
        return {}
    union, index = snapshot_index([res.steps for _, res in runs])
    colors = run_colors(len(runs))
    out: dict[str, LayoutDOM] = {}
    sliders, snap, modes = [], [], []
    for li, name in enumerate(layers):
        scaled = common_scale([res.layers[name] for _, res in runs])
        for r, ((label, res), layer) in enumerate(zip(runs, scaled)):
            layer = dataclasses.replace(layer, corr={}, naps={k: v for k, v in layer.naps.items()
                                                              if k in dict(maps.MAP_GROUPINGS)})
            parts = maps.map_sections(dataclasses.replace(res, layers={name: layer}), None, [],
                                      ncols=_tile_columns(len(runs)))
            if "tam_maps" not in parts:
                continue
            controls = parts["map_controls"]
            slider = controls.select_one({"name": "time_slider"})
            step_label = controls.select_one({"name": "step_label"})
            slider.name, step_label.name = f"time_slider_{li}_{r}", f"step_label_{li}_{r}"
            sliders.append(slider)
            snap.append([int(v) for v in index[r]])
            if "tam_view" in parts:
                mode = parts["tam_view"].children[0]
                mode.name = f"tam_mode_{li}_{r}"
                modes.append(mode)
            head = html_div(f"<p class='tt-runhead'><span class='tt-dot' style='background:{colors[r]}'></span>"
                            f"{esc(label)}</p>")
            head.stylesheets = [*head.stylesheets, InlineStyleSheet(css=HEAD_CSS)]
            block = parts["tam_maps"].children[0]  # the layer's block: heading, captions, grids, colour bars
            block.children[0].width = _tile_columns(len(runs)) * maps.TILE_PX  # the heading wraps in its column
            out[f"maps_{li}_{r}"] = column(head, step_label, block, name=f"maps_{li}_{r}")
    if not sliders:
        return {}
    n = len(union)
    axis = step_axis_type(union)
    slider = Slider(start=0, end=max(n - 1, 1), value=n - 1, step=1, title="", show_value=False, width=420,
                    disabled=n < 2, name="time_slider")
    play = Toggle(label="\u25b6 Play", button_type="primary", width=90, disabled=n < 2, name="play")
    label = html_div(text=_step_text(int(union[-1]), n - 1, n), name="step_label")
    mode = RadioButtonGroup(labels=maps.MODE_LABELS, active=0, name="tam_mode") if modes else None
    cb = CustomJS(args=dict(slider=slider, play=play, label=label, mode=mode, modes=modes, sliders=sliders,
                            snap=snap, steps=[int(s) for s in union], markers=list(markers),
                            marker_x=[float(x) for x in time_x(union, axis)]), code=TIME_JS)
    slider.js_on_change("value", cb)
    play.js_on_change("active", cb)
    out["compare_controls"] = row(play, html_div(text="<span class='tt-ctl'>Training step</span>"), slider, label,
                                  name="compare_controls")
    if mode is not None:
        mode.js_on_change("active", cb)
        out["compare_mode"] = row(mode, name="compare_mode")
    return out


def comparison_roots(runs: Sequence[Run], found: Sequence[Sequence[Finding]]) -> dict[str, LayoutDOM]:
    """Every available named root of the comparison page (missing data leaves its name out)."""
    roots: dict[str, LayoutDOM] = {}
    for name, model in (("compare_findings_charts", findings_charts(runs, found)),
                        ("compare_curves", training_curves(runs))):
        if model is not None:
            roots[name] = model
    roots.update(map_columns(runs, time_markers(list(roots.values()))))
    if not roots:  # Bokeh needs one root to write a page; this one shows nothing
        roots["placeholder"] = html_div("", visible=False, name="placeholder")
    return roots


def _flat(prefix: str, value: object, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)


def _facts(res: AnalysisResults) -> dict[str, str]:
    meta = dict(res.meta or {})
    steps = [int(s) for s in res.steps]
    return {
        "snapshots": f"{res.n_snapshots}" + (f" (steps {steps[0]:,} to {steps[-1]:,})" if steps else ""),
        "seed": str(meta.get("seed", "not recorded")),
        "data": str(meta.get("data", "not recorded")),
        "layers": ", ".join(f"{la.name} ({la.n_neurons})" for la in res.layers.values()) or "none",
        "probe set": str(res.probe_set),
        "confidence measure": str(res.primary_measure),
        "store": str(res.store_path),
        "store SHA-256": res.store_sha256 or "not recorded",
    }


def page_context(runs: Sequence[Run], found: Sequence[Sequence[Finding]]) -> dict[str, object]:
    """The comparison page's text (plain strings; the template escapes them).

    Returns:
        ``runs`` (label and colour per run), ``facts`` (name, value per run), ``config`` (the configuration
        values that differ between runs: key, value per run, "–" where a run has none), ``n_config_same``,
        ``findings`` (:func:`findings_rows`, the verdict rule, whether any run has findings), ``layers``
        (per shared layer: its name and the names of its map roots, one per run), ``unshared`` (layers that
        not every run has with maps), ``log_time``, ``tile_note``.
    """
    colors = run_colors(len(runs))
    facts = [_facts(res) for _, res in runs]
    configs = []
    for _, res in runs:
        flat: dict[str, str] = {}
        _flat("", (res.meta or {}).get("config") or {}, flat)
        configs.append(flat)
    keys = list(dict.fromkeys(k for c in configs for k in c))
    differ = [(k, [c.get(k, "–") for c in configs]) for k in keys if len({c.get(k, "–") for c in configs}) > 1]
    shared = shared_layers(runs)
    return {
        "runs": [{"label": label, "color": c} for (label, _), c in zip(runs, colors)],
        "facts": [(key, [f[key] for f in facts]) for key in facts[0]],
        "config": differ,
        "n_config_same": len(keys) - len(differ),
        "findings": {"rows": findings_rows(runs, found), "rule": RULE, "any": any(found)},
        "layers": [{"name": name, "roots": [f"maps_{li}_{r}" for r in range(len(runs))]}
                   for li, name in enumerate(shared)],
        "unshared": [name for name in _layer_order(runs) if name not in shared],
        "log_time": step_axis_type(union_steps(runs)) == "log",
    }
