"""Words a reader cannot misread (#23 item 4): terminal tables at 80 columns, chart titles in their card width,
definitions on the page where a measure or glyph appears, no library warning on the terminal."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
from bokeh.model import collect_models
from bokeh.models import CustomJS, Plot, Title
from rich.console import Console

from topotrace.analysis.findings import Finding, RunEffect
from topotrace.cli import main
from topotrace.cmd_analyze import beyond_table, findings_tables
from topotrace.cmd_atlas import atlas_table
from topotrace.cmd_compare import side_by_side_table
from topotrace.cmd_info import layers_table
from topotrace.cmd_study import print_study_findings
from topotrace.instrument.store import LayerSpec
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates.findings_view import chart_title, findings_charts

# Layer names as real models have them: short, dotted, and long (25 characters).
LAYERS = ("hidden1", "conv2", "encoder.layers.11.mlp.fc2")
CLAIMS = ("stronger_with_time", "more_distinct_with_time", "stronger_with_confidence",
          "more_distinct_with_confidence")
VERDICTS = ("does not hold in this run", "negligible in this run", "holds in this run", "not supported")


def _finding(layer: str, claim: str, k: int, n_runs: int = 1) -> Finding:
    """A finding with the widest numbers the tables show (tiny effects in e-notation, a long verdict)."""
    steps = np.array([0, 98, 1000])
    curve = np.array([0.259, 0.131, 0.262])
    measure = "" if claim.endswith("time") else "logit_margin"
    runs = [RunEffect(f"seed {i}", -1.234e-4, -2.345e-4, 9.87e-5) for i in range(n_runs)]
    return Finding(layer, claim, measure, -1.234e-4, -2.345e-4, 9.87e-5, n_runs, VERDICTS[k % len(VERDICTS)], "",
                   runs, steps, curve, np.zeros((3, 2)), np.zeros((n_runs, 3)),
                   course="dips then recovers" if measure == "" else "", extreme_step=98 if measure == "" else -1,
                   extreme_value=0.131, relative=0.0116)


def _render(renderable, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    console.print(renderable)
    return console.export_text()


def _check(text: str, names, width: int = 80) -> None:
    """No truncation mark, no line wider than the terminal, every name whole on one line."""
    assert "…" not in text
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= width
    for line in lines:  # a table wider than the terminal is cropped at its right: its rows lose their last border
        if line and line[0] in "┏┃┡│└├":
            assert line.rstrip()[-1] in "┓┃┩│┘┤", f"cropped at {width} columns:\n{text}"
    for name in names:
        assert any(name in line for line in lines), f"{name!r} is not printed whole:\n{text}"


def _print(parts, width: int = 80) -> str:
    console = Console(width=width, file=io.StringIO(), record=True)
    for part in parts:
        console.print(part)
    return console.export_text()


@pytest.mark.parametrize("width", [80, 100])
def test_findings_tables_fit_80_columns(width):
    """The findings of `analyze` and `study`: one table per claim (layer, effect, interval, verdict), every layer
    name whole, no "…"; each time claim's course under its table, with its trough."""
    found = [_finding(layer, claim, k) for k, (layer, claim) in enumerate(
        (la, c) for la in LAYERS for c in CLAIMS)]
    text = _print(findings_tables(found, "logit_margin"), width)
    _check(text, LAYERS, width)
    for title in ("stronger with time (change)", "more distinct with confidence (partial ρ with logit_margin)"):
        assert title in text
    assert text.count("−1.23e−04") == text.count("−2.35e−04") == text.count("9.87e−05") == len(found)
    short = _print(findings_tables([f for f in found if len(f.layer) < 8], "logit_margin"), width)
    for v in VERDICTS:  # beside short layer names every verdict and interval is on one line
        assert v in short
    assert short.count("−2.35e−04 to 9.87e−05") == 2 * len(CLAIMS)
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Course of the mean per-sample strength"))
    assert "  hidden1: dips then recovers (trough 0.131 at step 98), change +1.16 %" in lines[at + 1: at + 3]
    assert sum(line.startswith("Course of the mean per-sample") for line in lines) == 2


def test_study_findings_fit_80_columns():
    """`topotrace study`'s findings across seeds, printed as `analyze` prints one run's."""
    found = [_finding(layer, claim, k, n_runs=3) for k, (layer, claim) in enumerate(
        (la, c) for la in LAYERS for c in CLAIMS)]
    console = Console(width=80, file=io.StringIO(), record=True)
    print_study_findings(console, found)
    text = console.export_text()
    _check(text, LAYERS)
    assert "Findings across 3 runs (confidence: logit_margin)" in text and text.count("−1.23e−04") == len(found)


def test_beyond_table_keeps_its_layer_column():
    """The "Beyond the study" table lost its layer column even at 100 columns: now whole at 80, each trend in the
    unit of the report's collapse section (dormant share in pp, NC1 as the ratio last / first)."""
    def trend(layer, claim, measure, effect, lo, hi):
        return Finding(layer, claim, measure, effect, lo, hi, 1, "does not hold in this run", "", [], np.zeros(3),
                       np.zeros(3), np.full((3, 2), np.nan), np.zeros((1, 3)))

    trends = [t for layer in LAYERS for t in (trend(layer, "dormant_share_grows", "", 0.015, 0.005, 0.025),
                                              trend(layer, "nc1_falls", "", 2.87, 2.41, 3.17))]
    trends.append(trend("", "ece_rises_after_loss_minimum", "temp_prob_cv", 0.01, -0.02, 0.04))
    for width in (80, 100):
        text = _render(beyond_table(trends), width)
        _check(text, (*LAYERS, "(run)"), width)
        assert text.count("+1.5 pp") == text.count("+0.5 pp") == text.count("+2.5 pp") == len(LAYERS)
        ratio, low, high = (f"{np.exp(-v):.3g}×" for v in (2.87, 3.17, 2.41))  # last / first = exp(-log(first/last))
        assert ratio == "0.0567×" and text.count(ratio) == text.count(low) == text.count(high) == len(LAYERS)
        assert "2.87" not in text and "0.015" not in text


def test_atlas_compare_info_tables_fit_80_columns():
    """`atlas`, `compare` and `info`: layer and study names whole, no "…"."""
    cell = {"effect": 0.0123, "verdict": "not supported"}
    atlas = {"name": "default", "seeds": [0, 1, 2], "claims": list(CLAIMS), "entries": [
        {"study": "mnist1d_transformer", "layers": [
            {"layer": name, "relative_depth": 0.5, "claims": {c: cell for c in CLAIMS}} for name in LAYERS]},
        {"study": "digits_cnn", "layers": [{"layer": "conv1", "relative_depth": 1 / 3, "claims": {}}]}]}
    text = _render(atlas_table(atlas))
    _check(text, (*LAYERS, "mnist1d_transformer", "digits_cnn", "conv1"))
    assert text.count("0.0123") == 4 * len(LAYERS)

    labels = ["lr-0.1", "lr-0.01", "lr-0.001"]
    rows = [{"layer": name, "claim_text": "more distinct with confidence", "cells": [
        {"missing": "", "effect": "−0.356", "interval": "−0.591 to −0.0887", "verdict": "does not hold in this run"},
        {"missing": "no such layer", "effect": "", "interval": "", "verdict": ""},
        {"missing": "", "effect": "0.48", "interval": "0.461 to 0.498", "verdict": "holds in this run"}]}
        for name in LAYERS]
    _check(_render(side_by_side_table(rows, labels)), (*LAYERS, *labels))

    specs = [LayerSpec(name, 4096, "token_mean", (4096, 7, 7)) for name in LAYERS]
    _check(_render(layers_table(specs)), LAYERS)


def test_analyze_and_info_print_readable_at_80_columns(tmp_path, monkeypatch, capsys):
    """The commands themselves with COLUMNS=80: no "…" anywhere, every layer name whole."""
    store = write_synthetic_store(tmp_path / "run" / "store.h5", n_snapshots=4, layer_sizes=(12, 8), n_classes=3,
                                  per_class=8)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["analyze", str(store.parent), "--layouts", "pca"]) == 0
    assert main(["info", str(store.parent)]) == 0
    _check(capsys.readouterr().out, ("layer0", "layer1"))


# ---------------------------------------------------------------------------------------------- chart titles
def _px(size: str) -> float:
    return float(str(size).removesuffix("px"))


def _titles(fig) -> list:
    """Every title line of a figure: its own title and the ones added above it."""
    return [t for t in [fig.title, *fig.above] if isinstance(t, Title) and t.text]


def _cut(fig) -> list[str]:
    """The titles and axis labels of ``fig`` that would not fit its size: a conservative 0.6 font size per
    character (wider than digits and most letters of a sans-serif font), less 20 px of border for a title, the
    y axis's width for the x label and the titles' and x axis's height for the y label."""
    cut = []
    titles = _titles(fig)
    for t in titles:
        if len(t.text) * 0.6 * _px(t.text_font_size) > fig.width - 20:
            cut.append(t.text)
    for axis, room in ((fig.below, fig.width - 60), (fig.left, fig.height - 25 * len(titles) - 50)):
        for a in axis:
            label = getattr(a, "axis_label", None)
            if label and len(label) * 0.6 * _px(a.axis_label_text_font_size) > room:
                cut.append(label)
    return cut


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    from topotrace.analysis.pipeline import analyze

    root = tmp_path_factory.mktemp("readable")
    store = write_synthetic_store(root / "store.h5", n_snapshots=5, layer_sizes=(16, 12), n_classes=3, per_class=10)
    return analyze(store, root / "analysis.h5", layout_methods=["pca"])


@pytest.mark.slow
def test_report_chart_titles_and_labels_fit_their_width(analysed):
    """Every chart of the report (findings, training curves, correlations, strength and distinctness, the
    calibration, overfitting and collapse sections, the maps) has titles and axis labels that fit its size; the
    findings charts show each claim's verdict as a title line of its own, in the verdict's colour."""
    from topotrace.analysis.findings import run_findings
    from topotrace.report_templates.generate import report_roots
    from topotrace.report_templates.words import VERDICT_COLOR

    found = run_findings(analysed)
    roots = report_roots(analysed, found)
    assert {"findings_charts", "training_curves", "strength_distinctness"} <= set(roots)
    plots = {name: [m for m in collect_models(root) if isinstance(m, Plot)] for name, root in roots.items()
             if name != "layout_comparison"}  # the layout tiles' titles: see the report of #23 item 4
    assert sum(len(p) for p in plots.values()) > 20
    cut = {name: c for name, figs in plots.items() for c in [sum((_cut(f) for f in figs), [])] if c}
    assert not cut
    shown = [[t.text for t in _titles(f)] for f in plots["findings_charts"]]
    primary = [f for f in found if f.measure in ("", analysed.primary_measure)]
    assert sorted(map(tuple, shown)) == sorted((chart_title(f), f.verdict) for f in primary)
    for fig in plots["findings_charts"]:
        title, verdict = _titles(fig)
        assert verdict.text_color == VERDICT_COLOR[verdict.text] and verdict.text_font_style == "bold"


def test_findings_chart_titles_with_many_layers_and_long_measure_names():
    """With more layers than are stacked, one row whose verdict lines the layer selector swaps: every layer's
    verdict is shipped and fits; a measure name too long for the title line gives "... vs confidence"."""
    layers = [f"encoder.layers.{i}.mlp.fc2" for i in range(6)]
    found = [_finding(layer, claim, k) for k, (layer, claim) in enumerate((la, c) for la in layers for c in CLAIMS)]
    for f in found:
        if f.measure:
            f.measure = "a_custom_confidence_measure_with_a_long_name"
    root = findings_charts(found, found[2].measure)
    figs = [m for m in collect_models(root) if isinstance(m, Plot)]
    assert len(figs) == len(CLAIMS) and not sum((_cut(f) for f in figs), [])
    assert [t.text for t in _titles(figs[2])] == ["strength vs confidence", VERDICTS[2]]
    swap = next(m for m in collect_models(root) if isinstance(m, CustomJS))
    texts = swap.args["texts"]
    assert [row[c] for row in texts for c in range(len(CLAIMS))] == [f.verdict for f in found]
    assert max(len(t) for row in texts for t in row) * 0.6 * 11 <= 250 - 20
    assert swap.args["titles"] == [_titles(f)[1] for f in figs]


# ---------------------------------------------------------------------------------------------- no library warning
def test_smoothness_of_a_region_without_adjacent_pixels_is_nan_without_a_warning():
    """Four neurons whose triangles are all too thin to keep: no pixel in the region, smoothness NaN (documented),
    not numpy's 'Mean of empty slice'; a region of three pixels and a full one still get a finite score."""
    from topotrace.analysis import maps

    values = np.random.default_rng(0).normal(size=(3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = maps.interp_operator(np.array([[0, 0], [1, 0], [0.5, 0.02], [2, 0.01]], np.float32))
        assert empty.pixel.size == 0 and np.isnan(maps.smoothness(empty, values))
        for xy in ([[0, 0], [0.01, 0], [0, 0.01], [1, 1]], [[0, 0], [1, 0], [0.5, 0.01], [0.5, -0.01]]):
            op = maps.interp_operator(np.array(xy, np.float32))
            assert op.pixel.size > 0 and np.isfinite(maps.smoothness(op, values))


@pytest.mark.slow
def test_analysis_and_report_of_a_four_neuron_layer_raise_no_warning(tmp_path):
    """A store with a 4-neuron layer, analysed with every layout and reported, under warnings as errors."""
    from topotrace.analysis.findings import run_findings, trend_findings
    from topotrace.analysis.layouts import METHODS
    from topotrace.analysis.pipeline import analyze
    from topotrace.report_templates.generate import build_report

    store = write_synthetic_store(tmp_path / "store.h5", n_snapshots=3, layer_sizes=(4, 12), n_classes=3,
                                  per_class=6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = analyze(store, tmp_path / "analysis.h5", layout_methods=[m for m in METHODS if m != "umap"])
        assert res.layers["layer0"].n_neurons == 4
        assert run_findings(res) and trend_findings([res])
        build_report(res, tmp_path / "report.html")


# ---------------------------------------------------------------------------------- definitions on the page
@pytest.fixture(scope="module")
def mc_page(tmp_path_factory):
    """The report of a tiny recorded run with Monte-Carlo dropout (4 passes): its page text, unescaped."""
    import html

    import torch
    from torch import nn

    from topotrace.analysis.pipeline import analyze
    from topotrace.instrument.recorder import ProbeSet, Recorder
    from topotrace.instrument.schedules import every
    from topotrace.report_templates.generate import build_report

    from .test_report import _docs_json, _outside_scripts

    root = tmp_path_factory.mktemp("mc")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 12), nn.ReLU(),
                          nn.Dropout(0.3), nn.Linear(12, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(60, 10, generator=g), torch.arange(60) % 3
    x[:, :3] += 2.0 * nn.functional.one_hot(y, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, root / "store.h5", layers=["1", "4"], probes=[ProbeSet("heldout", x[:30], y[:30])],
                  class_names=["a", "b", "c"], schedule=every(2), mc_dropout=4) as rec:
        for step in range(9):
            rec.step(step)
            model.train()
            loss = nn.functional.cross_entropy(model(x[30:]), y[30:])
            opt.zero_grad()
            loss.backward()
            opt.step()
    res = analyze(root / "store.h5", root / "analysis.h5", layout_methods=["pca"])
    assert {"mc_prob", "mc_mutual_info", "entropy"} <= set(res.measures)
    page = build_report(res, root / "report.html").read_text("utf-8")
    texts = []  # the page outside its scripts, and every string of the Bokeh document (its Divs' HTML)

    def strings(node):
        if isinstance(node, str):
            texts.append(html.unescape(node))
        elif isinstance(node, dict):
            for v in node.values():
                strings(v)
        elif isinstance(node, list):
            for v in node:
                strings(v)

    strings(_docs_json(page))
    return html.unescape(_outside_scripts(page)) + "\n".join(texts), res


@pytest.mark.slow
def test_report_defines_every_confidence_measure(mc_page):
    """Every measure with correlations is defined with the correlation maps, the MC-dropout ones with the run's 4
    passes."""
    from topotrace.report_templates.words import MEASURE_TEXT

    page, res = mc_page
    for m in ("max_prob", "margin", "entropy", "true_prob", "logit_margin", "mc_prob", "mc_mutual_info"):
        assert f"<b>{m}</b>: " in page, m
    assert MEASURE_TEXT["mc_prob"].format(passes=4) in page
    assert "the mutual information between the prediction and the dropout masks" in page
    assert "averaged over 4 stochastic passes with dropout on" in page and "{passes}" not in page


@pytest.mark.slow
def test_uncertainty_measures_say_what_a_positive_r_means(mc_page):
    """entropy and mc_mutual_info: a positive r means activity rises with uncertainty, said with the correlation
    maps; a run without an uncertainty measure gets no such note."""
    from topotrace.report_templates.words import uncertainty_note

    page, _ = mc_page
    note = uncertainty_note(["max_prob", "entropy", "mc_mutual_info"])
    assert note.startswith("entropy and mc_mutual_info measure uncertainty (higher: less confident): for them a "
                           "positive r means activity rises as the network grows less confident")
    assert page.count(note) == 1  # with the correlation maps, under them
    assert uncertainty_note(["max_prob", "logit_margin"]) == ""
    assert uncertainty_note(["entropy"]).startswith("entropy measures uncertainty (higher: less confident): for it")


@pytest.mark.slow
def test_maps_explain_the_dormant_circles_and_the_quantile_bins(mc_page, analysed):
    """The maps section says what the white circles (tau-dormant units) and dots are; the confidence-bin maps say
    that the bins are quantiles of each snapshot (or pooled edges, for an analysis with pooled bins)."""
    from topotrace.report_templates.charts import measure_select
    from topotrace.report_templates.maps import map_sections
    from topotrace.report_templates.words import bin_note, dormant_glyph_note

    page, res = mc_page
    assert dormant_glyph_note(0.025) in page and "White circles with a dark ring mark the τ-dormant units (τ = " \
        "0.025) at the snapshot shown" in page
    bins = bin_note(res.primary_measure, "snapshot", list(res.layers["1"].bin_names))
    assert bins in page
    assert bins.startswith(f"The bins are quantile bins of {res.primary_measure} taken at each snapshot "
                           "separately: \"0–20 %\" holds the 20 % of the probe samples")
    sections = map_sections(analysed, measure_select(analysed))
    first = {key: sections[key].children[-1].text for key in ("tam_maps", "confbin_maps", "corr_maps")}
    assert "τ-dormant" in first["tam_maps"] and "quantile bins" in first["confbin_maps"]
    assert "entropy measures uncertainty" in first["corr_maps"]
    pooled = bin_note("margin", "pooled", ["0.00–0.20"])
    assert "over all snapshots pooled" in pooled and "same range of margin at every snapshot" in pooled
