"""Summary charts of runs with many layers: one layer at a time, chosen with a layer selector, above a threshold."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.models import GridPlot, Plot, Select

from bench.browser import TWO_FRAMES_JS
from topotrace.analysis.pipeline import analyze
from topotrace.analysis.results import AnalysisResults
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates.charts import (
    MAX_STACKED_LAYERS,
    SUMMARY_KEYS,
    correlation_measures,
    correlation_summary,
    measure_select,
    strength_distinctness,
)
from topotrace.report_templates.generate import build_report, report_roots
from topotrace.report_templates.layout_view import layout_comparison

SECTIONS = {"corr_summary": "corr_layer_select", "strength_distinctness": "bins_layer_select",
            "layout_comparison": "layout_layer_select"}
ODD = "layer2"  # its bin names differ from the others' and it alone has a second layout method
EXTRA = "tsne"
CHROMIUM_OK = os.path.exists("/usr/bin/chromium")


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> AnalysisResults:
    """A synthetic run with six layers of 12 neurons; :data:`ODD` has its own bin names and an extra layout."""
    d = tmp_path_factory.mktemp("layers_run")
    store = write_synthetic_store(d / "store.h5", n_snapshots=6, layer_sizes=(12,) * 6, n_classes=3, per_class=6)
    res = analyze(store, layout_methods=["pca"])
    odd = res.layers[ODD]
    lay = next(iter(odd.layouts.values()))
    flipped = dataclasses.replace(lay, method=EXTRA, xy=np.ascontiguousarray(lay.xy[:, ::-1]))
    odd = dataclasses.replace(odd, bin_names=[f"bin {i}" for i in range(len(odd.bin_names))],
                              layouts={**odd.layouts, EXTRA: flipped})
    return dataclasses.replace(res, layers={**res.layers, ODD: odd})


def _some(res: AnalysisResults, n: int) -> AnalysisResults:
    """``res`` with its first ``n`` layers, or with its layers repeated under new names up to ``n``."""
    old = list(res.layers.values())
    layers = {f"layer{i}": dataclasses.replace(old[i % len(old)], name=f"layer{i}") for i in range(n)}
    return dataclasses.replace(res, layers=layers)


def _roots(res: AnalysisResults) -> dict[str, object]:
    measure = measure_select(res)
    return {"corr_summary": correlation_summary(res, measure), "strength_distinctness": strength_distinctness(res),
            "layout_comparison": layout_comparison(res)}


def _figures(root) -> list[Plot]:
    return list(root.select({"type": Plot}))


def _callback_args(root, name: str) -> dict[str, object]:
    """The arguments of the layer selector's callback (the selector named ``name`` inside ``root``)."""
    select = root.select_one({"name": name})
    (callback,) = select.js_property_callbacks["change:value"]
    return callback.args


def _bin_picks(n: int) -> list[int]:
    return sorted({0, n // 2, n - 1})


# ------------------------------------------------------------------------------------------------ structure
def test_many_layers_one_set_of_figures_and_a_layer_select(results):
    """With six layers each section has one set of figures and a "Layer" selector of the six names, first."""
    names = list(results.layers)
    assert len(names) > MAX_STACKED_LAYERS
    roots = _roots(results)
    methods = {m for la in results.layers.values() for m in la.layouts}
    want = {"corr_summary": 2, "strength_distinctness": 4, "layout_comparison": len(methods)}
    for section, select_name in SECTIONS.items():
        root = roots[section]
        assert root.name == section
        assert len(_figures(root)) == want[section], section
        selects = [s for s in root.select({"type": Select}) if s.name == select_name]
        assert len(selects) == 1 and selects[0].options == names and selects[0].title == "Layer"
        assert selects[0].value == names[0]
    assert roots["corr_summary"].children[0].name == "corr_layer_select"
    assert roots["layout_comparison"].children[0].name == "layout_layer_select"
    assert len(list(roots["layout_comparison"].select({"type": GridPlot}))) == 1


@pytest.mark.slow
def test_figure_count_does_not_grow_with_layers(results):
    """report_roots without maps has as many figures for 12 layers as for 6; the charts above, at most 12."""
    counts = []
    for n in (6, 12):
        roots = report_roots(_some(results, n), with_maps=False)
        counts.append(sum(len(_figures(r)) for r in roots.values()))
        assert sum(len(_figures(roots[k])) for k in ("training_curves", *SECTIONS)) <= 12
    assert counts[0] == counts[1]


@pytest.mark.slow
def test_threshold_stacks_up_to_max_layers(results):
    """MAX_STACKED_LAYERS layers are stacked without a selector; one more layer gets the selectors."""
    for n, stacked in ((MAX_STACKED_LAYERS, True), (MAX_STACKED_LAYERS + 1, False)):
        roots = _roots(_some(results, n))
        assert len(_figures(roots["corr_summary"])) == (2 * n if stacked else 2)
        assert bool(list(roots["corr_summary"].select({"type": Select}))) is not stacked


def test_two_layers_as_before(results):
    """Two layers: a figure pair per layer in each section, one layout row per layer, and no selector."""
    res = _some(results, 2)
    roots = _roots(res)
    assert len(_figures(roots["corr_summary"])) == 4
    assert len(_figures(roots["strength_distinctness"])) == 2 + 4
    assert len(list(roots["layout_comparison"].select({"type": GridPlot}))) == 2
    assert len(_figures(roots["layout_comparison"])) == sum(len(la.layouts) for la in res.layers.values())
    for root in roots.values():
        assert not list(root.select({"type": Select}))
    titles = [r.children[0].title.text for r in roots["corr_summary"].children]
    assert titles == [f"layer{i}: mean r with {res.primary_measure}" for i in range(2)]


def test_corr_layer_select_without_measure_select(results):
    """Without a measure selector the layer selector alone switches the curves of the one measure shipped."""
    root = correlation_summary(results, None)
    args = _callback_args(root, "corr_layer_select")
    assert args["measure_sel"] is None and args["measures"] == [results.primary_measure]
    doc = Document()
    doc.add_root(root)
    doc.to_json()  # a None argument serialises


# ------------------------------------------------------------------------------------------- shipped values
def test_corr_sources_hold_each_layers_curves(results):
    """Each layer's correlation source holds its summary curves of every measure, as the analysis has them."""
    args = _callback_args(_roots(results)["corr_summary"], "corr_layer_select")
    measures = correlation_measures(results)
    assert args["measures"] == measures
    assert len(args["alls"]) == len(results.layers)
    for src, layer in zip(args["alls"], results.layers.values()):
        assert set(src.data) == {f"{m}|{k}" for m in measures for k in SUMMARY_KEYS}
        for m in measures:
            for k in SUMMARY_KEYS:
                np.testing.assert_array_equal(src.data[f"{m}|{k}"], layer.corr[m].summary[k])
    view = args["view"].data
    first = next(iter(results.layers.values()))
    np.testing.assert_array_equal(view["mean_r"], first.corr[results.primary_measure].summary["mean_r"])


@pytest.mark.slow
def test_bin_sources_hold_each_layers_rows(results):
    """Each layer's per-bin source holds its bin names and its rows at the first, middle and last snapshot."""
    args = _callback_args(_roots(results)["strength_distinctness"], "bins_layer_select")
    for f, attr in enumerate(("strength_by_bin", "distinctness_by_bin")):
        assert len(args["layers"][f]) == len(results.layers)
        for src, layer in zip(args["layers"][f], results.layers.values()):
            y = np.asarray(getattr(layer, attr))
            picks = _bin_picks(y.shape[0])
            assert list(src.data["x"]) == list(layer.bin_names)
            assert set(src.data) == {"x"} | {f"y{j}" for j in range(len(picks))}
            for j, s in enumerate(picks):
                np.testing.assert_array_equal(src.data[f"y{j}"], y[s])
        assert ODD in args["title_texts"][f][2]
        assert list(args["ranges"][f].factors) == list(args["layers"][f][0].data["x"])  # the first layer's bins


def test_layout_sources_hold_each_layers_positions(results):
    """Each layer's layout sources hold its positions per method; a method it lacks ships none."""
    root = _roots(results)["layout_comparison"]
    args = _callback_args(root, "layout_layer_select")
    methods = list(dict.fromkeys(m for la in results.layers.values() for m in la.layouts))
    first = next(iter(results.layers.values()))
    assert [f.title.text for f in args["figs"]] == [m if m in first.layouts else f"{m}: not computed" for m in methods]
    for row, layer in zip(args["layers"], results.layers.values()):
        for src, m in zip(row, methods):
            if m not in layer.layouts:
                assert src is None
                continue
            xy = np.asarray(layer.layouts[m].xy, float)
            np.testing.assert_array_equal(src.data["x"], xy[:, 0])
            np.testing.assert_array_equal(src.data["y"], xy[:, 1])
            np.testing.assert_array_equal(src.data["neuron"], np.arange(len(xy)))
            assert set(src.data) == set(args["views"][0].data)  # the tooltips' columns in every layer
    assert [ODD in h for h in args["headings"]] == [name == ODD for name in results.layers]


# ----------------------------------------------------------------------------------------------- in a browser
SELECT_JS = """async ([name, value]) => {
    Bokeh.documents[0].get_model_by_name(name).value = value;
    await (""" + TWO_FRAMES_JS + """)();
}"""
# What each section's first figure draws: [title, x of its first renderer, y of its first renderer].
SHOWN_JS = """(section) => {
    const root = Bokeh.documents[0].get_model_by_name(section);
    const plots = [];
    const walk = (m) => {
        if (m.renderers !== undefined && m.title !== undefined && m.title !== null) { plots.push(m); return; }
        for (const c of (m.children || [])) walk(Array.isArray(c) ? c[0] : c);
    };
    walk(root);
    const out = plots.map(p => {
        const d = p.renderers[0].data_source.data;
        const col = (k) => d[k] === undefined ? null
            : Array.from(d[k], v => typeof v === "number" && isNaN(v) ? null : v);
        return {title: p.title.text, x: col("x"), y: col(p.renderers[0].glyph.y.field),
                factors: p.x_range.factors === undefined ? null : Array.from(p.x_range.factors)};
    });
    const divs = root.children.filter(c => c.text !== undefined).map(c => c.text);
    return {plots: out, divs: divs};
}"""


# The first findings chart: its title and the y of its main line (the Line renderer).
FINDINGS_JS = """() => {
    const root = Bokeh.documents[0].get_model_by_name("findings_charts");
    const plot = root.children[1].children[0];
    const line = plot.renderers.find(r => r.glyph.type === "Line");
    return {title: plot.above[0].text, y: Array.from(line.data_source.data.y, v => isNaN(v) ? null : v)};
}"""


def _nan(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], float)


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM_OK, reason="Debian chromium not found at /usr/bin/chromium")
def test_layer_selects_swap_the_shown_layer(results, tmp_path, browser):
    """In chromium the page opens offline without errors, and each layer selector shows the chosen layer."""
    from bench.browser import open_offline
    from topotrace.analysis.findings import run_findings

    out = build_report(results, tmp_path / "report.html", page_budget=float("inf"))
    layer = results.layers[ODD]
    measure = results.primary_measure
    other = next(m for m in correlation_measures(results) if m != measure)
    page, blocked, errors = open_offline(browser, out)
    assert blocked == [] and errors == []

    page.evaluate(SELECT_JS, ["corr_layer_select", ODD])
    mean_r = page.evaluate(SHOWN_JS, "corr_summary")["plots"][0]
    assert mean_r["title"] == f"{ODD}: mean r with {measure}"
    np.testing.assert_array_equal(_nan(mean_r["y"]), layer.corr[measure].summary["mean_r"])
    page.evaluate(SELECT_JS, ["corr_measure", other])  # the measure selector and the layer selector combine
    mean_r = page.evaluate(SHOWN_JS, "corr_summary")["plots"][0]
    assert mean_r["title"] == f"{ODD}: mean r with {other}"
    np.testing.assert_array_equal(_nan(mean_r["y"]), layer.corr[other].summary["mean_r"])

    page.evaluate(SELECT_JS, ["bins_layer_select", ODD])
    by_bin = page.evaluate(SHOWN_JS, "strength_distinctness")["plots"][2]
    assert ODD in by_bin["title"]
    assert by_bin["x"] == by_bin["factors"] == list(layer.bin_names)  # this layer's own bin names
    np.testing.assert_array_equal(_nan(by_bin["y"]), np.asarray(layer.strength_by_bin)[0])

    page.evaluate(SELECT_JS, ["layout_layer_select", ODD])
    shown = page.evaluate(SHOWN_JS, "layout_comparison")
    assert any(f"<b>{ODD}</b>" in d for d in shown["divs"])
    assert [p["title"] for p in shown["plots"]] == list(layer.layouts)
    for p, lay in zip(shown["plots"], layer.layouts.values()):
        np.testing.assert_array_equal(_nan(p["x"]), np.asarray(lay.xy, float)[:, 0])
    page.evaluate(SELECT_JS, ["layout_layer_select", "layer0"])
    lacking = page.evaluate(SHOWN_JS, "layout_comparison")["plots"][-1]
    assert lacking["title"] == f"{EXTRA}: not computed" and lacking["x"] == []

    page.evaluate(SELECT_JS, ["findings_layer_select", ODD])
    line = page.evaluate(FINDINGS_JS)
    want = next(f for f in run_findings(results) if f.layer == ODD and f.claim == "stronger_with_time")
    np.testing.assert_allclose(_nan(line["y"]), want.curve)
    assert line["title"].endswith(want.verdict)
    assert errors == []
    page.close()


def test_findings_charts_one_layer_at_a_time(results):
    """With six layers the findings charts are one row of four with a layer select; each layer's data is shipped."""
    from topotrace.analysis.findings import run_findings
    from topotrace.report_templates.findings_view import findings_charts

    found = run_findings(results)
    root = findings_charts(found, results.primary_measure)
    assert len(_figures(root)) == 4 and root.children[0].name == "findings_layer_select"
    args = _callback_args(root, "findings_layer_select")
    names = list(results.layers)
    assert args["sel"].options == names
    for k, name in enumerate(names):
        mine = [f for f in found if f.layer == name and (f.versus == "time" or f.measure == results.primary_measure)]
        for c, f in enumerate(mine):
            src = args["per_layer"][k][c].data
            np.testing.assert_array_equal(src["y"], f.curve)
            np.testing.assert_array_equal(src["lo"], np.asarray(f.band)[:, 0])
            assert args["texts"][k][c].endswith(f.verdict)
    np.testing.assert_array_equal(args["views"][0].data["y"], args["per_layer"][0][0].data["y"])
    small = findings_charts([f for f in found if f.layer in names[:2]], results.primary_measure)
    assert len(_figures(small)) == 8  # two layers: stacked as before
