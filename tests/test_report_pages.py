"""Reports at the size of real models (issue 15): 8-bit map values, one page per layer over a budget, thinning."""

from __future__ import annotations

import dataclasses
import html
import math
import os
import re

import numpy as np
import pytest

from topotrace.analysis.pipeline import analyze
from topotrace.analysis.results import AnalysisResults
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates import pages
from topotrace.report_templates.charts import correlation_measures
from topotrace.report_templates.generate import build_report, report_pages
from topotrace.report_templates.maps import activation_span, corr_span
from topotrace.report_templates.quantize import (
    NAN_CODE,
    delta_decode,
    delta_encode,
    precision_text,
    quantize,
    value_format,
)
from topotrace.report_templates.style import activation_scale, color_index, contrast_limit

BUDGET_MB = 3.3  # small, to force the split on a small run (BokehJS alone takes about 1.7 MB of a page)
BIG = "layer5"  # the one layer whose maps do not fit BUDGET_MB at every snapshot


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> AnalysisResults:
    """A synthetic run with a small (96) and a big (1024) layer, 80 snapshots, 4 classes."""
    d = tmp_path_factory.mktemp("pages_run")
    store = write_synthetic_store(d / "store.h5", n_snapshots=80, layer_sizes=(96, 1024), n_classes=4, per_class=10)
    return analyze(store, layout_methods=["pca"])


# ------------------------------------------------------------------------------------------------ quantisation
def _value_sources(res: AnalysisResults):
    """(name, values of shape (S, G, N), span) of every value source a page ships."""
    measures = correlation_measures(res)
    for layer in res.layers.values():
        for grouping in ("class", "correct", "confbin"):
            yield f"{layer.name}/{grouping}", np.asarray(layer.naps[grouping].naps, np.float64), activation_span(layer)
        for m in measures:
            cr = layer.corr[m]
            r = np.nan_to_num(np.stack([cr.pearson, cr.pearson_within], axis=1).astype(np.float64))
            yield f"{layer.name}/r {m}", r, corr_span(layer, m)


@pytest.mark.slow
def test_quantize_round_trip_within_bound(results):
    """Decoded codes lie within step / 2 (the documented bound) of the analysis values; NaN stays NaN."""
    for name, values, (low, high) in _value_sources(results):
        q = quantize(values, low, high)
        assert q.codes.dtype == np.uint8 and q.codes.shape == values.shape
        assert q.low == low and q.step == pytest.approx((high - low) / 254), name  # the colour range, not widened
        assert q.bound < (high - low) / 256, name  # less than one colour level
        decoded = q.decode()
        np.testing.assert_array_equal(np.isnan(decoded), np.isnan(values), err_msg=name)
        err = np.abs(decoded - values)[np.isfinite(values)]
        assert err.max() <= q.bound * (1 + 1e-9), name
        np.testing.assert_array_equal(delta_decode(delta_encode(q.codes)), q.codes)  # the shipped form is lossless


def test_quantize_nan_and_outliers():
    """Empty groups (NaN, inf) get the no-value code; values outside the colour range widen it (bound kept)."""
    values = np.array([[-1.0, 0.0, 0.5, np.nan, np.inf, 3.0]])
    q = quantize(values, -1.0, 1.0)
    assert list(q.codes[0, 3:5]) == [NAN_CODE, NAN_CODE]
    assert q.low == -1.0 and q.step == pytest.approx(4.0 / 254)  # widened to 3.0
    dec = q.decode()
    finite = np.isfinite(values)
    assert np.isnan(dec[~finite]).all()
    assert np.abs(dec[finite] - values[finite]).max() <= q.bound
    assert quantize(np.full((2, 2), 5.0), 5.0, 5.0).step > 0  # a constant source still decodes


def test_precision_text_and_tooltip_format():
    """The stated precision is the bound rounded up to one digit; values are shown to that digit."""
    assert precision_text(0.00486) == "0.005"
    assert precision_text(0.0157) == "0.02"
    assert precision_text(0.0099999) == "0.01"
    assert precision_text(0.3) == "0.3"
    assert value_format(0.00486) == "0.000" and value_format(0.0157) == "0.00" and value_format(2.0) == "0"


@pytest.mark.slow
def test_pixel_colours_within_one_level(results):
    """Every pixel of every map of a layer has the float path's colour or its palette neighbour (most: the same)."""
    layer = results.layers["layer1"]
    op = layer.layouts[layer.default_layout].interp
    _, low, high = activation_scale(layer)
    same = total = 0
    for grouping in ("class", "correct", "confbin"):
        naps = np.asarray(layer.naps[grouping].naps, np.float64)
        q = quantize(naps, *activation_span(layer))
        dec = q.decode()
        for s in range(naps.shape[0]):
            for g in range(naps.shape[1]):
                a, b = color_index(op.apply(naps[s, g]), low, high), color_index(op.apply(dec[s, g]), low, high)
                np.testing.assert_array_equal(a < 0, b < 0)
                assert np.abs(a - b).max() <= 1, (grouping, s, g)
                same += int((a == b).sum())
                total += a.size
    assert same / total > 0.95
    # Correlation maps, on the +-1 scale and on the fit-to-data scale (the range they are quantised on).
    for m, cr in layer.corr.items():
        r = np.nan_to_num(np.stack([cr.pearson, cr.pearson_within], axis=1).astype(np.float64))
        lo, hi = corr_span(layer, m)
        dec = quantize(r, lo, hi).decode()
        for s in range(r.shape[0]):
            for g in range(2):
                for scale in ((-1.0, 1.0), (lo, hi)):
                    a, b = color_index(op.apply(r[s, g]), *scale), color_index(op.apply(dec[s, g]), *scale)
                    assert np.abs(a - b).max() <= 1, (m, s, g, scale)


@pytest.mark.slow
def test_contrast_view_error_bound(results):
    """In the contrast view (group mean subtracted from decoded values) the error is at most step * (1 - 1/G)."""
    for layer in results.layers.values():
        for grouping in ("class", "correct"):
            naps = np.asarray(layer.naps[grouping].naps, np.float64)
            q = quantize(naps, *activation_span(layer))
            dec = q.decode()
            with np.errstate(invalid="ignore"):
                err = np.abs((dec - np.nanmean(dec, axis=1, keepdims=True))
                             - (naps - np.nanmean(naps, axis=1, keepdims=True)))
            g = naps.shape[1]
            assert np.nanmax(err) <= q.step * (1 - 1 / g) * (1 + 1e-9)
            # in colour levels of the contrast scale, as docs/report.md states for this run
            levels = np.nanmax(err) / (2 * contrast_limit(layer) / 256)
            assert levels <= 1.5


# -------------------------------------------------------------------------------------------------- page rule
def test_thin_snapshots_log_spaced_first_and_last():
    """k snapshots, first and last kept, evenly spaced in log(step - first + 1)."""
    log_steps = np.unique(np.round(np.logspace(0, 4, 100)).astype(int)) - 1  # a log-spaced schedule from step 0
    idx = pages.thin_snapshots(log_steps, 20)
    assert len(idx) == 20 and idx[0] == 0 and idx[-1] == len(log_steps) - 1 and (np.diff(idx) > 0).all()
    x = np.log1p(log_steps[idx])
    assert np.diff(x).max() < 3 * np.diff(x).mean()  # about evenly spaced on the log axis
    linear = np.arange(0, 10_000, 100)
    idx = pages.thin_snapshots(linear, 10)
    assert idx[0] == 0 and idx[-1] == 99 and (idx < 50).sum() >= 5  # denser early, where training changes fastest
    assert list(pages.thin_snapshots(linear[:5], 10)) == [0, 1, 2, 3, 4]
    assert list(pages.thin_snapshots(linear, 1)) == [0, 99]


def test_fit_count_and_budget_checks():
    """The snapshots that fit follow from one measured page; budgets below a page's fixed part are refused."""
    # a 12 MB page showing 100 snapshots whose values take 10 MB: 2 MB fixed + 0.1 MB per snapshot
    assert pages.fit_count(12_000_000, 10_000_000, 100, 10_000_000) == 78
    assert pages.fit_count(12_000_000, 10_000_000, 100, 2_100_000) == 2
    assert pages.check_budget(10) == 10_000_000 and pages.check_budget(math.inf) == math.inf
    with pytest.raises(ValueError, match="page_budget"):
        pages.check_budget(1.0)
    with pytest.raises(TypeError, match="page_budget"):
        pages.check_budget("10")


def test_cli_refuses_small_page_budget(tmp_path, capsys):
    """`topotrace report --page-budget 1` fails in one line, before any analysis."""
    from topotrace.cli import main

    write_synthetic_store(tmp_path / "store.h5", n_snapshots=2, layer_sizes=(8,), n_classes=2, per_class=4)
    assert main(["report", str(tmp_path), "--page-budget", "1"]) == 2
    assert "--page-budget" in capsys.readouterr().err
    assert not (tmp_path / "analysis.h5").exists()


# ------------------------------------------------------------------------------------- a 12-layer run, split
@pytest.fixture(scope="module")
def split(results, tmp_path_factory):
    """A 12-layer run (11 copies of the small layer, the big one 6th) built with a 3.3 MB page budget.

    Returns (report path, results, pages). A site index exists above the run folder, so pages link back to it.
    """
    small, big = results.layers["layer0"], results.layers["layer1"]
    layers = {}
    for i in range(12):
        name = f"layer{i}"
        layers[name] = dataclasses.replace(big if name == BIG else small, name=name)
    res = dataclasses.replace(results, layers=layers)
    root = tmp_path_factory.mktemp("site")
    (root / "index.html").write_text('<meta name="generator" content="topotrace site">', encoding="utf-8")
    out = build_report(res, root / "run" / "report.html", index="../index.html", page_budget=BUDGET_MB)
    return out, res, report_pages(out)


def _links(page: str) -> list[str]:
    """Every href outside scripts."""
    markup = re.sub(r"(<script\b[^>]*>).*?(</script>)", r"\1\2", page, flags=re.S | re.I)
    return [html.unescape(h) for h in re.findall(r'href="([^"]*)"', markup)]


@pytest.mark.slow
def test_split_into_summary_and_layer_pages_under_budget(split):
    """A summary page and layer pages, each under the budget: small layers share pages in order, the big layer has
    a page of its own that shows fewer snapshots."""
    out, res, files = split
    assert files[0] == out and all(f.parent == out.parent / "report_layers" for f in files[1:])
    for f in files:
        assert f.stat().st_size <= BUDGET_MB * 1e6, f
    groups = [re.fullmatch(r"(\d\d)-(layer\d+)(?:--(layer\d+))?\.html", f.name).groups() for f in files[1:]]
    covered = []
    for first, a, b in groups:
        lo, hi = int(a[5:]), int((b or a)[5:])
        assert int(first) == lo + 1 and hi >= lo
        covered += list(range(lo, hi + 1))
    assert covered == list(range(12))  # every layer once, in order
    assert ("06", BIG, None) in groups  # the big layer alone
    assert len(files) - 1 < 12 and any(b is not None for _, _, b in groups)  # small layers share pages
    summary = out.read_text("utf-8")
    assert 'data-root-id' in summary and "time_slider" not in summary  # no maps on the summary page
    assert "page budget of 3.3 MB" in summary and "training_curves" in summary
    big = (out.parent / "report_layers" / f"06-{BIG}.html").read_text("utf-8")
    m = re.search(r"This page shows (\d+) of 80 snapshots", big)
    assert m and 2 < int(m.group(1)) < 80
    steps = [f"{int(s):,}" for s in res.steps]
    assert f"steps {steps[0]}, " in big and f" and {steps[-1]}. " in big  # first and last kept, listed
    assert f"{BIG}</a></td>" in summary and f">{m.group(1)} of 80<" in summary
    shared = next(f for f in files[1:] if "--" in f.name).read_text("utf-8")
    assert "all 80 snapshots" in shared and "This page shows" not in shared and "layer_select" in shared
    assert f'href="./report_layers/{files[1].name}#layer=layer1"' in summary or "--" not in files[1].name


def test_pack_keeps_order_and_budget():
    """Layers are packed in order while fixed + their sizes fit 90 % of the budget, at most max_layers per page;
    an oversize layer is alone."""
    assert pages.pack([1, 1, 1, 1], fixed=2, budget=10, max_layers=4) == [[0, 1, 2, 3]]
    assert pages.pack([1, 1, 1, 1, 1], fixed=2, budget=10) == [[0, 1], [2, 3], [4]]  # at most 2 per page
    assert pages.pack([3, 3, 3, 3], fixed=2, budget=10, max_layers=4) == [[0, 1], [2, 3]]
    assert pages.pack([3, 3, 3], fixed=1, budget=10, max_layers=4) == [[0, 1], [2]]
    assert pages.pack([1, 20, 1, 1], fixed=2, budget=10) == [[0], [1], [2, 3]]
    assert pages.pack([], fixed=2, budget=10) == []
    assert pages.layer_page_name(0, ["a"]) == "01-a.html"
    assert pages.layer_page_name(4, ["blocks.4.mlp", "blocks/7"]) == "05-blocks.4.mlp--blocks_7.html"


@pytest.mark.slow
def test_relative_links_resolve(split):
    """Every link of every page is relative and leads to a file that exists (summary, layers, site index)."""
    out, _, files = split
    for f in files:
        links = _links(f.read_text("utf-8"))
        assert links, f
        for href in links:
            assert "://" not in href and not href.startswith("/"), (f, href)
            target = (f.parent / href.split("#")[0]).resolve()
            assert target.is_file(), (f, href)
    layer_links = _links(files[3].read_text("utf-8"))
    assert "../report.html" in layer_links and "../../index.html" in layer_links
    assert "../index.html" in _links(out.read_text("utf-8"))  # the summary's "all runs" link


@pytest.mark.slow
def test_small_run_stays_one_page_and_old_layer_pages_go(split, tmp_path):
    """A small run is one page at the default budget; writing it over a split report removes the layer pages."""
    out, res, _ = split
    small = dataclasses.replace(res, layers={"layer0": res.layers["layer0"]})
    target = tmp_path / "report.html"
    (tmp_path / "report_layers").mkdir()
    (tmp_path / "report_layers" / "01-old.html").write_text(  # a stale page topotrace wrote
        '<html><head><meta name="generator" content="topotrace"></head></html>')
    (tmp_path / "report_layers" / "notes.txt").write_text("the user's")
    build_report(small, target)
    assert report_pages(target) == [target]
    assert "time_slider" in target.read_text("utf-8")
    assert sorted(p.name for p in (tmp_path / "report_layers").iterdir()) == ["notes.txt"]


# --------------------------------------------------------------------------------------------------- browser
CHROMIUM_OK = os.path.exists("/usr/bin/chromium")

TILE_IMAGE_JS = """([g]) => {
  // The image the page drew for tile g of the class maps (NaN outside the layout's region as null).
  const d = Bokeh.documents[0];
  const grid = d.get_model_by_name('tam_maps').children[0].children.find(c => c.type === 'GridPlot');
  const fig = grid.children[g][0];
  return Array.from(fig.renderers[0].data_source.data.image[0], v => Number.isNaN(v) ? null : v);
}"""


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM_OK, reason="Debian chromium not found at /usr/bin/chromium")
def test_every_page_renders_offline(split, browser):
    """In one chromium session, every page loads offline with no request and no console error; layer pages draw
    their maps with colours within one level of the float path, and a layer link keeps the step."""
    from bench.browser import open_offline
    from topotrace.analysis.maps import halo

    out, res, files = split
    layer = res.layers[BIG]
    op = layer.layouts[layer.default_layout].interp
    _, low, high = activation_scale(layer)
    for f in files:
        page, blocked, errors = open_offline(browser, f)
        assert blocked == [] and errors == [], f
        assert page.locator("h1").first.inner_text().startswith("topotrace report")
        if f == out:
            assert page.locator("section#maps table a").count() == 12
        else:
            page.wait_for_function("window.topotraceSnapshot !== undefined", timeout=10_000)
            assert page.locator("section#maps canvas").count() > 0
        if f.name.endswith(f"-{BIG}.html"):
            for g in (0, 2):
                img = page.evaluate(TILE_IMAGE_JS, [g])
                label = page.locator(".tt-steplabel").first.inner_text()
                snap = int(re.search(r"snapshot (\d+) of 80", label).group(1)) - 1
                drawn = np.array([np.nan if v is None else v for v in img], np.float64).reshape(op.grid_shape)
                frame = op.apply(np.asarray(layer.naps["class"].naps[snap, g], np.float64))
                frame.flat[halo(op)[0]] = frame.flat[halo(op)[1]]  # the pixels under the grey off-map patch
                want = color_index(frame, low, high)
                got = color_index(drawn, low, high)
                np.testing.assert_array_equal(want < 0, got < 0)
                assert np.abs(want - got).max() <= 1 and (want == got).mean() > 0.9
            # the layer links carry the shown step; the next page opens at the nearest snapshot it shows
            page.evaluate("async () => { Bokeh.documents[0].get_model_by_name('time_slider').value = 1;"
                          " await new Promise(r => setTimeout(r, 200)); }")
            step = int(page.evaluate("window.topotraceStep"))
            href = page.locator("a.tt-keepstep").first.get_attribute("href")
            assert href.endswith(f"#step={step}")
            page.goto((f.parent / href.split("#")[0]).as_uri() + f"#step={step}")
            page.wait_for_function("window.topotraceSnapshot !== undefined", timeout=20_000)
            assert int(page.evaluate("window.topotraceStep")) == step  # the small layers show every snapshot
            # a page of several layers opens at the layer its address names
            if "--" in href:
                page.goto((f.parent / href.split("#")[0]).as_uri() + "#layer=layer1")
                page.wait_for_function("window.topotraceSnapshot !== undefined", timeout=20_000)
                assert page.evaluate("Bokeh.documents[0].get_model_by_name('layer_select').value") == "layer1"
            assert errors == []
        page.close()
