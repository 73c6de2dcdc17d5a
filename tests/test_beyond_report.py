"""The report beyond the study (issue #12): calibration, overfitting, dormant units and class collapse."""

from __future__ import annotations

import dataclasses
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from bokeh.models import GlyphRenderer, Legend, LogScale, Plot, Slider, Span

from topotrace.analysis.findings import run_findings
from topotrace.analysis.pipeline import analyze
from topotrace.analysis.results import AnalysisResults, Calibration
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates import loss_marker
from topotrace.report_templates.beyond_page import trend_verdict
from topotrace.report_templates.beyond_view import (
    RELIABILITY_SLIDER,
    RELIABILITY_VIEW,
    calibration_view,
    collapse_view,
    overfitting_view,
)
from topotrace.report_templates.charts import MARKER_NAME
from topotrace.report_templates.generate import build_report, report_roots
from topotrace.report_templates.loss_marker import LOSS_MIN_NAME, STEP_AXIS_TAG, mark_loss_minimum

EVIL_LAYER = "<b>x</b>"
N_BINS = 5
LOSS_MIN = 2
LOG_STEPS = np.array([0, 1, 3, 10, 30, 100], dtype=np.int64)
# [effect, low, high] of the dormant share's change and of log(NC1 last / first); the verdicts are those of the claims
# "dormant share grows" (interval above 0) and "NC1 falls" (the log ratio's interval below 0)
TRENDS = {"layer0": {"dormant_change": [0.10, 0.05, 0.15], "nc1_log_ratio": [-0.5, -0.9, -0.2]},
          EVIL_LAYER: {"dormant_change": [0.0, -0.02, 0.02], "nc1_log_ratio": [0.3, 0.1, 0.5]}}
ECE_TREND = {"max_prob": [0.02, 0.01, 0.03], "temp_prob": [0.001, -0.004, 0.006]}


def _calibration(rng: np.random.Generator, n_s: int) -> Calibration:
    """Planted reliability bins of two measures, with empty bins (NaN) as the analysis leaves them."""
    shape = (2, n_s, N_BINS)
    counts = rng.integers(0, 5, shape)
    conf = np.where(counts > 0, rng.uniform(0.3, 1.0, shape), np.nan)
    acc = np.where(counts > 0, rng.uniform(0.0, 1.0, shape), np.nan)
    return Calibration(["max_prob", "temp_prob"], rng.uniform(0.0, 0.3, (2, n_s)), counts, conf, acc, N_BINS)


def _plant(res: AnalysisResults) -> AnalysisResults:
    """``res`` with every new field planted: two calibrated measures, T, a loss minimum, trends; layer1 renamed."""
    rng = np.random.default_rng(7)
    n_s = res.n_snapshots
    layers = {}
    for i, (key, la) in enumerate(res.layers.items()):
        name = key if i == 0 else EVIL_LAYER
        layers[name] = dataclasses.replace(
            la, name=name, dormant=np.linspace(0.0, 0.25 * (i + 1), n_s), nc1=np.geomspace(1.0, 0.01 / (i + 1), n_s),
            nap_gap=rng.uniform(0.1, 0.5, n_s), trends={k: np.array(v) for k, v in TRENDS[name].items()})
    calibration = {p: _calibration(rng, n_s) for p in ("heldout", "train")}
    return dataclasses.replace(res, layers=layers, calibration=calibration,
                               temperature=np.linspace(1.0, 2.0, n_s), loss_min=LOSS_MIN,
                               ece_trend={k: np.array(v) for k, v in ECE_TREND.items()})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> AnalysisResults:
    """The analysis of a small synthetic store, as it comes."""
    d = tmp_path_factory.mktemp("beyond")
    store = write_synthetic_store(d / "store.h5", n_snapshots=6, layer_sizes=(12, 8), n_classes=3, per_class=8)
    return analyze(store, layout_methods=["pca"])


@pytest.fixture(scope="module")
def results(synthetic) -> AnalysisResults:
    return _plant(synthetic)


@pytest.fixture(scope="module")
def page(results, tmp_path_factory) -> Path:
    """The report of the planted results (built once: a build takes seconds)."""
    return build_report(results, tmp_path_factory.mktemp("page") / "report.html")


def _outside_scripts(text: str) -> str:
    return re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", text, flags=re.S | re.I)


def _section(text: str, sid: str) -> str:
    m = re.search(rf'<section id="{sid}">(.*?)</section>', text, re.S)
    assert m, sid
    return m.group(1)


def _lines(root) -> dict[tuple[str, str], dict]:
    """(chart title, line label) -> the columns of each labelled line in ``root``."""
    out = {}
    for fig in root.select({"type": Plot}):
        for r in fig.renderers:
            if isinstance(r, GlyphRenderer) and "what" in r.data_source.data:
                out[(fig.title.text, r.data_source.data["what"][0])] = r.data_source.data
    return out


def _label(label) -> str:
    """The text of a legend item's label (a value spec)."""
    return label.get("value") if isinstance(label, dict) else getattr(label, "value", label)


def _time_charts(roots) -> list[Plot]:
    figs = {f.id: f for root in roots.values() for f in root.select({"type": Plot})}
    return [f for f in figs.values() if loss_marker._is_time_chart(f)]


# ------------------------------------------------------------------------------------------------------ data
@pytest.mark.slow
def test_synthetic_store_has_train_and_max_prob(synthetic):
    """The synthetic store gives both probe sets and max_prob calibration (the planted fields extend it)."""
    assert {"heldout", "train"} <= set(synthetic.curves)
    assert synthetic.calibration["heldout"].measures == ["max_prob", "temp_prob_cv"]


@pytest.mark.slow
def test_ece_lines_equal_results(results):
    """The ECE chart draws every probe set and measure, the values equal to the calibration's."""
    lines = _lines(calibration_view(results))
    for probe, cal in results.calibration.items():
        for k, m in enumerate(cal.measures):
            data = lines[("Expected calibration error (ECE)", f"{probe}, {m}")]
            np.testing.assert_array_equal(data["y"], cal.ece[k])
            np.testing.assert_array_equal(data["step"], results.steps)


@pytest.mark.slow
def test_ece_line_styles(results):
    """Held-out lines are solid, train lines dashed; one colour per measure."""
    fig = next(f for f in calibration_view(results).select({"type": Plot})
               if f.title.text.startswith("Expected calibration"))
    styles = {r.data_source.data["what"][0]: (r.glyph.line_dash, r.glyph.line_color) for r in fig.renderers
              if isinstance(r, GlyphRenderer) and "what" in r.data_source.data}
    assert styles["heldout, max_prob"][0] == [] and styles["train, max_prob"][0] == [6]  # solid, dashed
    assert styles["heldout, max_prob"][1] == styles["train, max_prob"][1] != styles["heldout, temp_prob"][1]


@pytest.mark.slow
def test_reliability_ships_every_snapshot(results):
    """The slider's callback carries each snapshot's bins, flattened from (S, B); the diagram opens on the last."""
    root = calibration_view(results)
    slider = root.select_one({"name": RELIABILITY_SLIDER})
    assert isinstance(slider, Slider) and slider.value == results.n_snapshots - 1
    cb = slider.js_property_callbacks["change:value"][0]
    cal = results.calibration["heldout"]
    shipped, view = cb.args["all"].data, cb.args["view"]
    assert view.name == RELIABILITY_VIEW and cb.args["n_bins"] == N_BINS
    for k in range(2):
        for col, arr in (("conf", cal.conf), ("acc", cal.accuracy), ("n", cal.counts)):
            np.testing.assert_array_equal(shipped[f"{col}{k}"], arr[k].reshape(-1))
            np.testing.assert_array_equal(view.data[f"{col}{k}"], arr[k, -1])


@pytest.mark.slow
def test_temperature_chart(results, synthetic):
    """T over training is drawn when the analysis holds it, and left out when it is empty."""
    data = _lines(calibration_view(results))[("Fitted temperature T", "train probe set (temp_prob)")]
    np.testing.assert_array_equal(data["y"], results.temperature)
    assert ("Fitted temperature T", "train probe set (temp_prob)") not in _lines(calibration_view(synthetic))


@pytest.mark.slow
def test_overfitting_curves_equal_results(results):
    """The four gap charts draw the train and held-out curves and ECE as the analysis holds them."""
    lines = _lines(overfitting_view(results))
    for probe in ("heldout", "train"):
        for key, title in (("loss", "Loss (cross-entropy)"), ("accuracy", "Accuracy"),
                           ("conf_max_prob", "Mean confidence (max_prob)")):
            np.testing.assert_array_equal(lines[(title, probe)]["y"], results.curves[probe][key])
        np.testing.assert_array_equal(lines[("ECE (max_prob)", probe)]["y"], results.calibration[probe].ece[0])


@pytest.mark.slow
def test_nap_gap_one_line_per_layer(results):
    """The NAP gap chart has one line per layer with the layer's values."""
    lines = _lines(overfitting_view(results))
    for name, la in results.layers.items():
        np.testing.assert_array_equal(lines[("NAP gap (train vs held-out class NAPs)", name)]["y"], la.nap_gap)


@pytest.mark.slow
def test_overfitting_needs_both_probe_sets(results):
    """Without a train probe set there is no overfitting root."""
    assert overfitting_view(dataclasses.replace(results, curves={"heldout": results.curves["heldout"]})) is None


@pytest.mark.slow
def test_collapse_lines_equal_results(results):
    """Dormant share and NC1 per layer equal the analysis; NC1 is drawn as log10 with the values kept."""
    lines = _lines(collapse_view(results))
    tau = results.params["dormant_tau"]
    for name, la in results.layers.items():
        np.testing.assert_array_equal(lines[(f"Dormant units (\u03c4 = {tau:g})", name)]["y"], la.dormant)
        nc1 = lines[("Within-class variability NC1 (log scale)", name)]
        np.testing.assert_array_equal(nc1["value"], la.nc1)
        np.testing.assert_allclose(nc1["y"], np.log10(la.nc1))


@pytest.mark.slow
def test_new_figures_are_few(results):
    """The three roots hold at most ten figures, whatever the number of layers."""
    many = dataclasses.replace(results, layers={f"l{i}": dataclasses.replace(la, name=f"l{i}")
                                                for i, la in enumerate(list(results.layers.values()) * 6)})
    n = sum(len(list(root.select({"type": Plot}))) for root in (calibration_view(many), overfitting_view(many),
                                                          collapse_view(many)))
    assert n <= 10


# ------------------------------------------------------------------------------------------ loss minimum
@pytest.mark.slow
@pytest.mark.parametrize("log_steps", [False, True])
def test_loss_min_marker_on_every_time_chart(results, log_steps):
    """Each chart over training time, the old and the new, gets one dashed marker at the minimum's x."""
    res = dataclasses.replace(results, steps=LOG_STEPS) if log_steps else results
    roots = report_roots(res, run_findings(res), with_maps=False)
    charts = _time_charts(roots)
    new = [f for f in charts if STEP_AXIS_TAG in (f.tags or [])]
    old = [f for f in charts if f not in new]
    assert old and new  # the time charts of charts.py and findings_view, and the new ones
    assert all(any(isinstance(m, Span) and m.name == MARKER_NAME for m in f.center) for f in charts)
    step = int(res.steps[LOSS_MIN])
    for fig in charts:
        spans = [m for m in fig.center if isinstance(m, Span) and m.name == LOSS_MIN_NAME]
        assert len(spans) == 1 and spans[0].line_dash == [2, 4, 6, 4] and spans[0].dimension == "height"
        assert isinstance(fig.x_scale, LogScale) == log_steps
        assert spans[0].location == (step + 1.0 if log_steps else float(step))
        labels = [_label(it.label) for lg in fig.select({"type": Legend}) for it in lg.items]
        assert f"held-out loss minimum (step {step:,})" in labels


@pytest.mark.slow
def test_loss_min_marker_is_added_once(results):
    """Marking the same roots twice adds nothing the second time."""
    roots = {"overfitting": overfitting_view(results)}
    assert len(mark_loss_minimum(roots, results)) == 5
    assert mark_loss_minimum(roots, results) == []


@pytest.mark.slow
def test_no_marker_without_minimum(results):
    """Results without a held-out loss minimum (-1) get no marker."""
    res = dataclasses.replace(results, loss_min=-1)
    assert mark_loss_minimum({"overfitting": overfitting_view(res)}, res) == []


# --------------------------------------------------------------------------------------------- the page
@pytest.mark.slow
def test_roots_placed_in_sections(page):
    """The three sections hold their roots, with no missing-data note."""
    text = page.read_text("utf-8")
    for sid, title in (("calibration", "Calibration"), ("overfitting", "Overfitting"),
                       ("collapse", "Dormant units and class collapse")):
        body = _section(text, sid)
        assert f"<h2>{title}</h2>" in body and "data-root-id=" in body and "tt-note" not in body
        assert "docs/analysis.md" in body


@pytest.mark.slow
def test_loss_minimum_sentence(results, page):
    """The overfitting section states the minimum's step and the train and held-out loss there and at the end."""
    body = _section(page.read_text("utf-8"), "overfitting")
    c = results.curves
    step = int(results.steps[LOSS_MIN])
    assert f"lowest at step {step:,} (snapshot {LOSS_MIN + 1} of 6)" in body
    for s in (LOSS_MIN, -1):
        assert f"{c['heldout']['loss'][s]:.3g}" in body and f"{c['train']['loss'][s]:.3g}" in body


def _row_cells(body: str, first: str) -> list[str]:
    m = re.search(rf"<tr><td>{re.escape(first)}</td>(.*?)</tr>", body, re.S)
    assert m, first
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", m.group(1), re.S)]


@pytest.mark.slow
def test_trends_table_verdicts(page):
    """The verdicts follow the planted intervals by the findings' rule (d = 0), in one run's words.

    Dormant share grows: its change's interval above 0 holds, one straddling 0 does not; NC1 falls: a log ratio
    last / first whose interval lies below 0 holds, one above 0 does not; the ECE rises after the minimum likewise.
    """
    body = _section(page.read_text("utf-8"), "collapse")
    holds, fails = "holds in this run", "does not hold in this run"
    first = _row_cells(body, "layer0")
    assert first[1:4] == ["+10.0 pp", "+5.0 pp to +15.0 pp", holds]
    assert first[5:8] == [f"{math.exp(-0.5):.3g}\u00d7", f"{math.exp(-0.9):.3g} to {math.exp(-0.2):.3g}", holds]
    second = _row_cells(body, "&lt;b&gt;x&lt;/b&gt;")
    assert second[3] == fails and second[7] == fails
    assert _row_cells(body, "max_prob")[2:] == ["0.02", "0.01 to 0.03", holds]
    assert _row_cells(body, "temp_prob")[2:] == ["0.001", "\u22120.004 to 0.006", fails]
    assert "bootstrap interval over the probe" in body and "not independent samples" in body
    assert "rises</b>" not in body and "falls</b>" not in body  # direction words never stand in for a verdict


def test_trend_verdict_words():
    """One run's verdict of a trend: holds when the interval lies above 0; otherwise (holding 0, below, undefined)
    it does not, as trend_findings says for the same numbers."""
    from topotrace.analysis.vocabulary import RUN_VERDICTS

    assert trend_verdict(0.1, 0.01, 0.2) == "holds in this run"
    assert trend_verdict(-0.1, -0.2, -0.01) == "does not hold in this run"
    assert trend_verdict(0.0, -0.1, 0.1) == "does not hold in this run"
    assert trend_verdict(float("nan"), float("nan"), 0.1) == "does not hold in this run"
    assert {trend_verdict(e, e - 0.05, e + 0.05) for e in (-1, 0, 1)} <= set(RUN_VERDICTS)


@pytest.mark.slow
def test_layer_name_is_escaped(page):
    """A layer named <b>x</b> is escaped in the page's text and never reaches it as markup."""
    text = page.read_text("utf-8")
    assert EVIL_LAYER not in _outside_scripts(text)
    assert "<td>&lt;b&gt;x&lt;/b&gt;</td>" in _section(text, "collapse")


@pytest.mark.slow
def test_old_results_render_with_notes(results, tmp_path):
    """Results without the new fields (an older analysis) still build; each section says what is missing."""
    layers = {k: dataclasses.replace(la, dormant=np.zeros(0), dormant_mask=np.zeros((0, 0), bool), nc1=np.zeros(0),
                                     nap_gap=np.zeros(0), trends={}) for k, la in results.layers.items()}
    old = dataclasses.replace(results, layers=layers, calibration={}, temperature=np.zeros(0), loss_min=-1,
                              ece_trend={}, curves={"heldout": results.curves["heldout"]})
    assert calibration_view(old) is None and overfitting_view(old) is None and collapse_view(old) is None
    text = build_report(old, tmp_path / "old.html").read_text("utf-8")
    assert "No calibration data" in _section(text, "calibration")
    assert "No overfitting view" in _section(text, "overfitting")
    collapse = _section(text, "collapse")
    assert "No dormant-unit or NC1 data" in collapse and "No trends of dormant units" in collapse
    assert LOSS_MIN_NAME not in text


# ------------------------------------------------------------------------------------------------- browser
@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists("/usr/bin/chromium"), reason="Debian chromium not found at /usr/bin/chromium")
def test_reliability_slider_in_browser(results, page, browser):
    """The page opens offline without errors; moving the reliability slider shows that snapshot's bins."""
    from bench.browser import open_offline

    cal = results.calibration["heldout"]
    tab, blocked, errors = open_offline(browser, page)
    assert blocked == [] and errors == []
    for snap in (1, 3):
        got = tab.evaluate("""async (i) => {
            const d = Bokeh.documents[0];
            d.get_model_by_name('reliability_slider').value = i;
            await new Promise(r => setTimeout(r, 50));
            const v = d.get_model_by_name('reliability_view').data;
            return [0, 1].map(k => ['conf', 'acc', 'n'].map(c => Array.from(v[c + k], x =>
                Number.isNaN(x) ? null : x)));
        }""", snap)
        for k in range(2):
            for col, arr in zip(got[k], (cal.conf, cal.accuracy, cal.counts)):
                want = np.asarray(arr[k, snap], np.float64)
                np.testing.assert_array_equal(np.array([np.nan if x is None else x for x in col]), want)
    assert errors == []
