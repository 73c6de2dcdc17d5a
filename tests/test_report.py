"""The HTML report: sections, escaping of run text, no network loads, notes for missing data."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import bokeh
import markupsafe
import numpy as np
import pytest

from topotrace.analysis.findings import run_findings
from topotrace.analysis.pipeline import analyze
from topotrace.analysis.results import AnalysisResults
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates.generate import build_report
from topotrace.report_templates.words import finding_sentence

SECTION_TITLES = (
    "Findings", "Run summary and provenance", "Training curves", "Topographic activation maps",
    "Maps per confidence bin", "Activity&ndash;confidence correlation", "Activity strength and class distinctness",
    "Layout comparison",
)
EVIL = "<script>alert(1)</script>\"'&"
MATH = "$$x$$ \\(y\\) \\[z\\]"  # TeX delimiters: BokehJS would fetch MathJax from a CDN to typeset these


def synthetic_results(path: Path, n_snapshots: int = 6, layer_sizes=(40, 24), n_classes: int = 4,
                      per_class: int = 12, seed: int = 0) -> AnalysisResults:
    """Analyse a freshly written synthetic store (plus the provenance a real training run records)."""
    store = write_synthetic_store(path, n_snapshots=n_snapshots, layer_sizes=layer_sizes, n_classes=n_classes,
                                 per_class=per_class, seed=seed)
    res = analyze(store, Path(path).with_name(Path(path).stem + "_analysis.h5"))
    meta = dict(res.meta, versions={"numpy": np.__version__, "bokeh": bokeh.__version__},
                model_summary="Sequential(\n  (fc1): Linear(in_features=64, out_features=40)\n  (act): ReLU()\n)")
    return dataclasses.replace(res, meta=meta)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> AnalysisResults:
    return synthetic_results(tmp_path_factory.mktemp("rep") / "store.h5")


@pytest.fixture(scope="module")
def html_text(results, tmp_path_factory) -> str:
    out = build_report(results, tmp_path_factory.mktemp("out") / "report.html")
    return out.read_text(encoding="utf-8")


LOG_STEPS = np.array([0, 1, 3, 10, 30, 100], dtype=np.int64)  # snapshots spanning decades


@pytest.fixture(scope="module")
def log_html_text(results, tmp_path_factory) -> str:
    """The report of ``results`` with log-spaced steps (built once: a report build takes seconds)."""
    res = dataclasses.replace(results, steps=LOG_STEPS)
    return build_report(res, tmp_path_factory.mktemp("log") / "log.html").read_text("utf-8")


def _docs_json(page: str) -> dict:
    """The Bokeh document JSON embedded in the page (Bokeh HTML-escapes it inside its script tag)."""
    m = re.search(r'<script type="application/json" id="[^"]+">\s*(.*?)\s*</script>', page, re.S)
    assert m, "no embedded Bokeh document"
    import html as _html
    return json.loads(_html.unescape(m.group(1)))


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_every_section_title_present(html_text):
    """Each of the seven sections has its heading, and no section fell back to its missing-data note."""
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in html_text
    assert 'class="tt-note"' not in html_text


@pytest.mark.slow
def test_roots_are_placed_by_name(html_text):
    """Every named root the page needs is in the Bokeh document and has a placeholder div."""
    doc = next(iter(_docs_json(html_text).values()))
    names = {r["attributes"].get("name") for r in doc["roots"]}
    assert {"training_curves", "map_controls", "tam_maps", "confbin_maps", "corr_maps", "corr_summary",
            "strength_distinctness", "layout_comparison"} <= names
    assert html_text.count('data-root-id="') == len(doc["roots"])


@pytest.mark.slow
def test_ships_values_and_operator_not_images(results, html_text):
    """Neuron values per snapshot and the operator are embedded; the page is far smaller than all frames."""
    doc = json.dumps(_docs_json(html_text))
    layer = next(iter(results.layers.values()))
    s, g, n = layer.naps["class"].naps.shape
    assert f'"shape": [{s}, {g}, {n}]' in doc
    op = layer.layouts[layer.default_layout].interp
    assert f'"shape": [{len(op.pixel)}, 3]' in doc


@pytest.mark.slow
def test_provenance_and_citations(results, html_text):
    assert results.store_sha256 in html_text
    assert "Visualizing Deep Neural Networks with Topographic Activation Maps" in html_text
    assert "Relation of Activity and Confidence when Training Deep Neural Networks" in html_text
    found = run_findings(results)
    assert found
    for f in found:
        if f.measure in ("", results.primary_measure):
            assert str(markupsafe.escape(finding_sentence(f))) in html_text


def _outside_scripts(page: str) -> str:
    """The page's markup with the bodies of script elements removed (BokehJS code holds URL strings)."""
    return re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S | re.I)


@pytest.mark.slow
def test_no_network_loads(html_text):
    """No element loads anything from a host: no src/href/url() to http(s) or protocol-relative URLs."""
    markup = _outside_scripts(html_text)
    assert len(markup) < 60_000 < len(html_text)  # the scripts (inline BokehJS and the document) were removed
    assert not re.search(r"""\b(?:src|href|action|poster)\s*=\s*["']?\s*(?:[a-z]+:)?//""", markup, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", markup, re.I)
    assert "@import" not in markup
    assert not re.search(r"<(?:link|img|iframe|embed|object|source|video|audio)\b", markup, re.I)
    scripts = re.findall(r"<script\b[^>]*>", html_text, re.I)
    assert scripts and all("src=" not in s for s in scripts)


def _evil_results(results: AnalysisResults) -> AnalysisResults:
    layers = {}
    for key, la in results.layers.items():
        naps = {k: dataclasses.replace(g, group_names=[f"{EVIL}{x}" for x in g.group_names])
                for k, g in la.naps.items()}
        evil_name = f"{EVIL}{MATH}{key}"
        layers[evil_name] = dataclasses.replace(la, name=evil_name, naps=naps,
                                                bin_names=[f"{EVIL}{b}" for b in la.bin_names])
    meta = dict(results.meta, run_name=EVIL, data=EVIL, model_summary=EVIL, seed=EVIL,
                config={"opt": {EVIL: EVIL, "lr": EVIL}}, versions={EVIL: EVIL})
    return dataclasses.replace(results, layers=layers, meta=meta,
                               class_names=[EVIL + MATH + c for c in results.class_names],
                               curves={EVIL: c for c in results.curves.values()}, store_path=EVIL)


@pytest.mark.slow
def test_run_text_is_escaped(results, tmp_path):
    """Run name, class, layer, probe-set names and config values holding <script> and quotes are escaped."""
    page = build_report(_evil_results(results), tmp_path / "evil.html").read_text(encoding="utf-8")
    assert "<script>alert" not in page
    assert "alert(1)</script>" not in page
    # The markup around the page text stays intact: only Bokeh's own script tags exist.
    assert len(re.findall(r"<script\b", page)) == len(re.findall(r"</script>", page))
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;" in page  # jinja2 escaping of page text
    # Inside the Bokeh document the strings survive exactly (they are drawn as text, not parsed as HTML) ...
    doc = json.dumps(_docs_json(page), ensure_ascii=False)
    assert EVIL.replace('"', '\\"') + "class 0" in doc
    # ... except in Div HTML, where they are escaped before Bokeh sees them.
    doc_obj = _docs_json(page)
    divs = []

    def walk(node):
        if isinstance(node, dict):
            if node.get("name") == "Div":
                divs.append(node["attributes"].get("text", ""))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(doc_obj)
    assert divs and all("<script" not in d for d in divs)
    assert all(d.get("attributes", {}).get("disable_math") for d in _models(doc_obj, "Div"))
    # No title, axis label or colour-bar title keeps a TeX delimiter (MathJax would be fetched from a CDN).
    for kind, attr in (("Title", "text"), ("LinearAxis", "axis_label"), ("ColorBar", "title")):
        texts = [m.get("attributes", {}).get(attr) or "" for m in _models(doc_obj, kind)]
        assert texts and not any(d in t for t in texts for d in ("$$", "\\(", "\\[")), kind
    assert any("x$\u200b$" in t.get("attributes", {}).get("text", "") for t in _models(doc_obj, "Title"))
    assert any("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#x27;&amp;" in d for d in divs)


def _models(node, kind: str) -> list[dict]:
    """Every serialized Bokeh model of type ``kind`` in a document JSON tree."""
    found = []
    if isinstance(node, dict):
        if node.get("type") == "object" and node.get("name") == kind:
            found.append(node)
        for v in node.values():
            found += _models(v, kind)
    elif isinstance(node, list):
        for v in node:
            found += _models(v, kind)
    return found


@pytest.mark.slow
def test_missing_sections_give_notes(results, tmp_path):
    """A run with no layers, curves, correlations or findings still builds, with a visible note per section."""
    bare = dataclasses.replace(results, layers={}, curves={}, meta={})
    page = build_report(bare, tmp_path / "bare.html").read_text(encoding="utf-8")
    for title in SECTION_TITLES:
        assert f"<h2>{title}</h2>" in page
    notes = re.findall(r'<p class="tt-note">(.*?)</p>', page, re.S)
    assert len(notes) >= 9
    assert any("No training curves" in n for n in notes)
    assert any("No activation maps" in n for n in notes)
    assert any("No layouts" in n for n in notes)


@pytest.mark.slow
def test_partial_layer_data_gives_notes(results, tmp_path):
    """Layers without confidence bins and correlations keep the class maps and note the rest."""
    layers = {k: dataclasses.replace(la, corr={}, naps={"class": la.naps["class"]}, evidence=None,
                                     strength_by_bin=np.zeros((0, 0)), bin_names=[], color_limit=float("nan"))
              for k, la in results.layers.items()}
    page = build_report(dataclasses.replace(results, layers=layers), tmp_path / "p.html").read_text("utf-8")
    mappers = _models(_docs_json(page), "LinearColorMapper")
    assert mappers and all(m["attributes"]["high"] == 1.0 == -m["attributes"]["low"] for m in mappers)
    assert "No confidence-bin maps" in page and "No correlation maps" in page
    assert "No findings" in page
    assert "No activation maps" not in page


@pytest.mark.slow
def test_single_snapshot_single_layer(tmp_path):
    """One snapshot and one layer: no layer selector, the slider is disabled, the page still builds."""
    res = synthetic_results(tmp_path / "one.h5", n_snapshots=1, layer_sizes=(16,), n_classes=3, per_class=8)
    page = build_report(res, tmp_path / "one.html").read_text("utf-8")
    doc = _docs_json(page)
    text = json.dumps(doc)
    assert '"name": "layer_select"' not in text
    assert '"name": "time_slider"' in text


def test_rejects_wrong_type(tmp_path):
    with pytest.raises(TypeError, match="results"):
        build_report({"layers": {}}, tmp_path / "x.html")


@pytest.mark.slow
def test_cli_report_writes_html_and_png(tmp_path, capsys):
    """`topotrace report <run dir> --png ...` analyses, writes report.html next to the store, prints its path."""
    from PIL import Image

    from topotrace.cli import main

    write_synthetic_store(tmp_path / "store.h5", n_snapshots=3, layer_sizes=(16,), n_classes=3, per_class=6)
    assert main(["report", str(tmp_path), "--png", "layer0:class:class 1:-1", "--scale", "2"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [str(tmp_path / "report.html")]
    assert "<h2>Topographic activation maps</h2>" in (tmp_path / "report.html").read_text("utf-8")
    assert (tmp_path / "analysis.h5").exists()
    png = tmp_path / "maps" / "layer0_class_class_1_-1.png"
    assert Image.open(png).size[0] > 64
    assert main(["report", str(tmp_path), "--png", "layer0:class:1"]) == 2
    assert "LAYER:GROUPING:GROUP:SNAPSHOT" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "nothing")]) == 2


def test_parse_png_spec():
    from topotrace.cmd_report import parse_png_spec

    assert parse_png_spec("fc1:class:3:-1") == ("fc1", "class", "3", -1)
    assert parse_png_spec("enc:0.fc:confbin:0.1–0.3:5") == ("enc:0.fc", "confbin", "0.1–0.3", 5)
    with pytest.raises(ValueError, match="SNAPSHOT"):
        parse_png_spec("fc1:class:3:last")


# --------------------------------------------------------------------------------- colour scales and views
def _nonneg_results(results: AnalysisResults) -> AnalysisResults:
    """The first layer made non-negative (|NAPs|, as after a ReLU); the second layer stays signed."""
    first = next(iter(results.layers))
    la = results.layers[first]
    naps = {k: dataclasses.replace(g, naps=np.abs(g.naps)) for k, g in la.naps.items()}
    return dataclasses.replace(results, layers={**results.layers,
                                                first: dataclasses.replace(la, naps=naps, nonnegative=True)})


def _mappers_by_low(doc: dict) -> list[tuple[float, float, list]]:
    out = []
    for m in _models(doc, "LinearColorMapper"):
        a = m["attributes"]
        out.append((a["low"], a["high"], a["palette"]))
    return out


@pytest.mark.slow
def test_nonnegative_layer_gets_sequential_scale(results, tmp_path):
    """A layer with NAPs >= 0 maps [0, color_limit] white to dark red; a signed one keeps -L..L; r stays -1..1."""
    res = _nonneg_results(results)
    doc = _docs_json(build_report(res, tmp_path / "seq.html").read_text("utf-8"))
    mappers = _mappers_by_low(doc)
    nonneg, signed = res.layers.values()
    seq = [m for m in mappers if m[0] == 0.0]
    assert seq and all(m[1] == pytest.approx(nonneg.color_limit) for m in seq)
    assert all(m[2][0] == "#ffffff" for m in seq)
    r, g, b = (int(seq[0][2][-1][i:i + 2], 16) for i in (1, 3, 5))
    assert r > 80 and g < 20 and b < 30  # dark red at the limit
    assert any(m[0] == pytest.approx(-signed.color_limit) and m[1] == pytest.approx(signed.color_limit)
               for m in mappers)
    assert any(m[0] == -1.0 and m[1] == 1.0 for m in mappers)  # correlation maps
    assert not any(m[0] == 0.0 and m[1] == pytest.approx(signed.color_limit) for m in mappers)


@pytest.mark.slow
def test_contrast_switch_and_measure_selector(results, html_text):
    """The TAM section has the mean/contrast switch; the measure selector lists every measure, primary first."""
    from topotrace.report_templates.charts import correlation_measures

    doc = _docs_json(html_text)
    radios = [m for m in _models(doc, "RadioButtonGroup") if m["attributes"].get("name") == "tam_mode"]
    assert len(radios) == 1 and radios[0]["attributes"]["active"] == 0
    assert "contrast to the other groups" in radios[0]["attributes"]["labels"]
    selects = [m for m in _models(doc, "Select") if m["attributes"].get("name") == "corr_measure"]
    assert len(selects) == 1
    measures = correlation_measures(results)
    assert selects[0]["attributes"]["options"] == measures == [m for m in results.measures if m in measures]
    assert set(measures) == set(next(iter(results.layers.values())).corr)
    assert selects[0]["attributes"]["value"] == results.primary_measure


@pytest.mark.slow
def test_summary_ships_every_measure(results, html_text):
    """The correlation curves carry each measure's summary (the selector swaps them in the browser)."""
    import base64
    import gzip

    doc = json.dumps(_docs_json(html_text))
    layer = next(iter(results.layers.values()))
    for m, cr in layer.corr.items():
        assert f'"{m}|frac_sig_pos"' in doc and f'"{m}|mean_r_within"' in doc
    # The summary columns are float64 buffers; the primary measure's mean r is among them bit for bit.
    want = np.asarray(layer.corr[results.primary_measure].summary["mean_r"], np.float64).tobytes()
    blobs = [base64.b64decode(b) for b in re.findall(r'"data": "([A-Za-z0-9+/=]+)"', doc)]
    blobs = [gzip.decompress(b) if b[:2] == b"\x1f\x8b" else b for b in blobs]  # Bokeh may gzip buffers
    assert want in blobs


@pytest.mark.slow
def test_significance_table_matches_summaries(results, html_text):
    """The last-snapshot shares in the correlation section equal the analysis summaries."""
    for layer in results.layers.values():
        for m, cr in layer.corr.items():
            pos, neg = cr.summary["frac_sig_pos"][-1], cr.summary["frac_sig_neg"][-1]
            assert f"{100 * pos:.0f} % / {100 * neg:.0f} %" in html_text
    assert "saturate near 1.00" in html_text


@pytest.mark.slow
def test_log_step_axis_for_log_spaced_snapshots(html_text, log_html_text):
    """Snapshots spanning decades get a log step axis with points at step + 1; short spans stay linear."""
    from topotrace.report_templates.charts import step_axis_type, time_x

    assert step_axis_type(np.array([0, 1, 3, 10, 30, 100])) == "log"
    assert step_axis_type(np.array([10, 20, 40, 80, 120])) == "linear"
    assert step_axis_type(np.array([5])) == "linear"
    np.testing.assert_array_equal(time_x(np.array([0, 9, 99]), "log"), [1.0, 10.0, 100.0])
    np.testing.assert_array_equal(time_x(np.array([0, 9, 99]), "linear"), [0.0, 9.0, 99.0])
    page = log_html_text
    doc = _docs_json(page)
    assert _models(doc, "LogAxis") and "log scale" in page and "step + 1" in page
    labels = [m["attributes"].get("axis_label") for m in _models(doc, "LogAxis")]
    assert labels and all(lab == "training step (log scale)" for lab in labels)
    tickers = [m["attributes"] for m in _models(doc, "FixedTicker")]
    assert tickers and all(t["ticks"][:3] == [1.0, 2.0, 11.0] for t in tickers)  # steps 0, 1, 10
    lin = _docs_json(html_text)
    assert not _models(lin, "LogAxis")


@pytest.mark.slow
def test_layout_comparison_fits_one_row(results, html_text):
    """All layout methods of a layer sit in one row, each tile narrow enough for five in the page column."""
    from topotrace.report_templates.layout_view import LAYOUT_COLS, LAYOUT_PX

    n_methods = max(len(la.layouts) for la in results.layers.values())
    page_column = 1180 - 2 * 28 - 2 * (22 + 1)  # report.css: page max-width and padding, section padding, border
    assert n_methods <= LAYOUT_COLS and LAYOUT_COLS * LAYOUT_PX <= page_column
    root = next(r for r in next(iter(_docs_json(html_text).values()))["roots"]
                if r["attributes"].get("name") == "layout_comparison")
    grids = _models(root, "GridPlot")
    assert len(grids) == len(results.layers)
    for grid, layer in zip(grids, results.layers.values()):
        cells = [(c[1], c[2]) for c in grid["attributes"]["children"]]
        assert cells == [(0, i) for i in range(len(layer.layouts))]  # one row, in method order


@pytest.mark.slow
def test_layout_comparison_greys_neurons_without_a_preferred_class(results):
    """A silent neuron (all-zero class means) has no preferred class: grey, "none", never class 0's colour."""
    from bokeh.models import ColumnDataSource
    from bokeh.palettes import Category10_10

    from topotrace.report_templates.layout_view import NO_PREFERENCE, NO_PREFERENCE_COLOR, layout_comparison

    name, layer = next(iter(results.layers.items()))
    naps = np.array(layer.naps["class"].naps, copy=True)  # (S, G, N)
    naps[-1, :, 3] = 0.0  # silent
    naps[-1, :, 5] = 0.7  # active, but alike for every class
    naps[-1, :, 7] = [0.1, 0.9, 0.2, 0.3]  # prefers class 1
    grouped = dataclasses.replace(layer.naps["class"], naps=naps)
    edited = dataclasses.replace(layer, naps={**layer.naps, "class": grouped})
    root = layout_comparison(dataclasses.replace(results, layers={name: edited}))
    sources = [s for s in root.select({"type": ColumnDataSource}) if "pref" in s.data]
    assert len(sources) == len(layer.layouts)
    data = sources[0].data
    assert [data["pref"][i] for i in (3, 5, 7)] == [NO_PREFERENCE, NO_PREFERENCE, layer.naps["class"].group_names[1]]
    assert [data["color"][i] for i in (3, 5, 7)] == [NO_PREFERENCE_COLOR, NO_PREFERENCE_COLOR, Category10_10[1]]


def _custom_js_arg(doc: dict, arg: str):
    """Value of argument ``arg`` of the one CustomJS callback that has it."""
    found = []
    for cb in _models(doc, "CustomJS"):
        args = cb["attributes"].get("args", {})
        entries = args.get("entries", []) if isinstance(args, dict) else []
        found += [v for k, v in entries if k == arg]
    assert len(found) == 1, f"{len(found)} CustomJS callbacks have the argument {arg!r}"
    return found[0]


@pytest.mark.slow
def test_renderers_ship_one_glyph_and_no_copies_for_states_never_shown(html_text):
    """Nothing on a page is selected or muted: no renderer ships a nonselection or muted glyph (nor an "auto" one
    for the browser to make); only the map tiles' neuron dots have a hover glyph, their own glyph with the hover
    look."""
    doc = _docs_json(html_text)
    renderers = _models(doc, "GlyphRenderer")
    assert len(renderers) > 100  # every chart and tile of the page
    for r in renderers:
        attrs = r["attributes"]
        assert attrs.get("nonselection_glyph", "missing") is None and attrs.get("muted_glyph", "missing") is None
    hovered = [r["attributes"]["hover_glyph"] for r in renderers if r["attributes"].get("hover_glyph")]
    n_images = len([r for r in renderers if r["attributes"]["glyph"]["name"] == "Image"])
    assert n_images > 0 and len(hovered) == n_images  # one per tile: its dots
    for g in hovered:  # Bokeh leaves out what equals the default (Scatter's line is black, alpha 1)
        attrs = g["attributes"]
        assert g["name"] == "Scatter" and attrs.get("line_color", {"value": "black"})["value"] == "black"
        assert attrs["fill_color"]["value"] == "black" and attrs["fill_alpha"]["value"] == 0.6


@pytest.mark.slow
@pytest.mark.parametrize("log_steps", [False, True])
def test_time_markers_on_every_time_chart(results, html_text, log_html_text, log_steps):
    """Each chart over training time has one marker at the last snapshot; the slider callback knows every step's x."""
    steps = LOG_STEPS if log_steps else np.asarray(results.steps)
    res = dataclasses.replace(results, steps=steps)
    doc = _docs_json(log_html_text if log_steps else html_text)
    want_x = steps.astype(float) + (1.0 if log_steps else 0.0)  # log axes draw step s at s + 1
    spans = [m for m in _models(doc, "Span") if m["attributes"].get("name") == "time_marker"]
    n_corr_layers = sum(1 for la in res.layers.values() if la.corr)
    n_findings_charts = 4 * sum(1 for la in res.layers.values() if la.evidence is not None)
    n_beyond = sum(1 for m in _models(doc, "Figure") if "step_axis" in (m["attributes"].get("tags") or []))
    # training curves, correlation summaries, strength/distinctness, the findings' claims, beyond the study
    assert n_beyond >= 5 and len(spans) == 3 + 2 * n_corr_layers + 2 + n_findings_charts + n_beyond
    assert all(s["attributes"]["location"] == want_x[-1] and s["attributes"]["dimension"] == "height" for s in spans)
    # on the overlay level: moving a marker repaints the chart's overlay canvas only, not its lines and axes
    assert all(s["attributes"].get("level") == "overlay" for s in spans)
    assert sorted(s["id"] for s in spans) == sorted(m["id"] for m in _custom_js_arg(doc, "markers"))
    np.testing.assert_array_equal(_custom_js_arg(doc, "marker_x"), want_x)


@pytest.mark.slow
def test_corr_fit_limit_matches_numpy(results, html_text):
    """The "fit to data" limit is max |r| over snapshots, neurons and both maps, per layer and measure."""
    from topotrace.report_templates.charts import correlation_measures
    from topotrace.report_templates.style import corr_fit_limit

    doc = _docs_json(html_text)
    measures = correlation_measures(results)
    want = []
    for layer in results.layers.values():
        row = []
        for m in measures:
            both = np.concatenate([np.ravel(layer.corr[m].pearson), np.ravel(layer.corr[m].pearson_within)])
            ref = float(np.nanmax(np.abs(both)))
            assert 0 < ref < 1
            assert corr_fit_limit(layer, m) == pytest.approx(ref, rel=1e-12)
            row.append(ref)
        want.append(row)
    np.testing.assert_allclose(_custom_js_arg(doc, "corr_fit"), want, rtol=1e-12)
    radios = [m for m in _models(doc, "RadioButtonGroup") if m["attributes"].get("name") == "corr_scale"]
    assert len(radios) == 1 and radios[0]["attributes"]["active"] == 0  # the page opens on the +-1 scale
    texts = _custom_js_arg(doc, "corr_head_texts")
    assert all("\u00b11," in t[0] and len(t) == 1 + len(measures) for t in texts)
    assert f"\u00b1{want[0][0]:.2f} (fit: largest |r| with {measures[0]})" in texts[0][1]
    layer = next(iter(results.layers.values()))
    dead = dataclasses.replace(layer.corr[measures[0]], pearson=np.zeros_like(layer.corr[measures[0]].pearson),
                               pearson_within=np.full_like(layer.corr[measures[0]].pearson_within, np.nan))
    assert corr_fit_limit(dataclasses.replace(layer, corr={measures[0]: dead}), measures[0]) == 1.0


@pytest.mark.slow
def test_maps_draw_outline_grey_off_map_and_size_switch(results, html_text):
    """Each map tile draws the off-map mask (light grey, one patch: a frame then the outline's rings) and the
    outline over its image; off-map pixels are NaN and transparent; the grey differs from the palettes' zero; the
    map size and dots switches share a callback over every tile and grid; the page places them."""
    from bokeh.models import CustomJS, GlyphRenderer, GridPlot, Image, Line, Patch, RadioButtonGroup, Toggle

    from topotrace.report_templates import maps
    from topotrace.report_templates.style import OFF_MAP, color_index, diverging_palette, sequential_palette

    roots = maps.map_sections(results)
    grids = [m for key in ("tam_maps", "confbin_maps", "corr_maps") for m in roots[key].select({"type": GridPlot})]
    tiles = [fig for grid in grids for fig, _, _ in grid.children]
    assert len(tiles) > 10
    for li, layer in enumerate(results.layers.values()):
        op = layer.layouts[layer.default_layout].interp
        assert op.grid_shape == (128, 128)
        xs = np.asarray(layer.layouts[layer.default_layout].xy[:, 0], np.float32)
        mine = [t for t in tiles if np.array_equal(t.renderers[1].data_source.data["x"], xs)]  # the layer's tiles
        assert len(mine) >= 5
        for fig in mine:
            kinds = {type(r.glyph): r for r in fig.renderers if isinstance(r, GlyphRenderer)}
            image, mask, line = kinds[Image], kinds[Patch], kinds[Line]
            assert fig.renderers[0] is image and image.level == "image"
            assert mask.level == line.level == "underlay"  # over the image, under the dots
            assert mask.glyph.fill_color == OFF_MAP and mask.glyph.line_color is None
            assert image.glyph.color_mapper.nan_color == "rgba(0, 0, 0, 0)"  # NaN (off the map): transparent
            assert np.isnan(image.data_source.data["image"][0]).all()  # the page opens blank, drawn in the browser
            ox, oy = line.data_source.data["x"], line.data_source.data["y"]
            np.testing.assert_array_equal(np.column_stack([ox, oy]), op.outline)
            mx, my = mask.data_source.data["x"], mask.data_source.data["y"]
            np.testing.assert_array_equal(np.column_stack([mx, my])[6:], op.outline)  # after the frame and a NaN
            frame = np.column_stack([mx, my])[:5]
            assert np.isnan(mx[5]) and (frame[0] == frame[4]).all()
            assert frame[:, 0].min() < op.extent[0] and frame[:, 0].max() > op.extent[1]  # covers the whole tile
            x, y = frame[:4, 0], frame[:4, 1]
            assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) < 0  # clockwise, against the outer rings
    for palette in (diverging_palette(), sequential_palette()):
        zero = palette[color_index(np.zeros(1), -1.0 if palette[0] != "#ffffff" else 0.0, 1.0, len(palette))[0]]
        assert zero.lower() != OFF_MAP.lower()
    # the switches
    view = roots["map_view"]
    size = view.select_one({"type": RadioButtonGroup, "name": "map_size"})
    dots = view.select_one({"type": Toggle, "name": "map_dots"})
    assert size.labels == ["small", "large"] and size.active == 0 and dots.active
    # the switches run the size callback through a relay found by name; the time slider's root holds the callback
    for switch in (size, dots):
        (relay,) = switch.js_property_callbacks["change:active"]
        assert isinstance(relay, CustomJS) and relay.args == {"target": maps.SIZE_NAME} and "execute" in relay.code
    slider = roots["map_controls"].select_one({"name": "time_slider"})
    (render,) = slider.js_property_callbacks["change:value"]
    cb = render.args["view_switch"]
    assert isinstance(cb, CustomJS) and cb.name == maps.SIZE_NAME
    assert cb.args["size"] is size and cb.args["dots"] is dots
    for name in ("tam_view", "corr_scale_view", "map_view"):  # a switch's root reaches no map model
        assert len(roots[name].references()) <= 7, name
    assert cb.args["px"] == [maps.TILE_PX, maps.TILE_PX_LARGE] and maps.TILE_PX_LARGE > maps.TILE_PX
    assert set(map(id, cb.args["grids"])) == set(map(id, grids))
    assert sum(len(t) for t in cb.args["grid_tiles"]) == len(tiles)
    assert {id(g) for g in cb.args["dot_glyphs"]} == {id(fig.renderers[1].glyph) for fig in tiles}
    assert "fig.setv({width: w, height: h}" in cb.code and "line_alpha" in cb.code
    assert 'id="' in html_text and '"map_size"' in html_text and '"map_dots"' in html_text
    assert "Light grey is off the map" in html_text
