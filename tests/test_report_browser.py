"""The report in a real browser (Debian chromium via Playwright), opened from disk with the network cut off."""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pytest

from bench.browser import CHROMIUM, open_offline, slider_frames

SECTIONS = {"summary": "Run summary and provenance", "training-curves": "Training curves",
            "maps": "Topographic activation maps", "confidence-maps": "Maps per confidence bin",
            "correlation": "Activity–confidence correlation",
            "strength": "Activity strength and class distinctness", "layouts": "Layout comparison"}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium not found at {CHROMIUM}"),
]
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(report path, the analysis results it shows)."""
    from topotrace.report_templates.generate import build_report

    from .test_report import synthetic_results

    d = tmp_path_factory.mktemp("browser")
    res = synthetic_results(d / "store.h5", n_snapshots=8, layer_sizes=(48, 24), n_classes=5, per_class=12)
    # Class names with TeX delimiters and markup: drawn as plain text, and nothing is fetched to typeset them.
    # Weak correlations with the primary measure (|r| <= 0.3, as in real runs), so fitting the scale matters.
    m = res.primary_measure
    weak = {k: dataclasses.replace(la.corr[m], pearson=0.3 * la.corr[m].pearson,
                                   pearson_within=0.3 * la.corr[m].pearson_within) for k, la in res.layers.items()}
    layers = {k: dataclasses.replace(la, naps={**la.naps, "class": dataclasses.replace(
        la.naps["class"], group_names=[f"$$c{i}$$ <b>x</b>" for i in range(5)])}, corr={**la.corr, m: weak[k]})
        for k, la in res.layers.items()}
    res = dataclasses.replace(res, layers=layers)
    return build_report(res, d / "report.html"), res


@pytest.fixture(scope="module")
def report(built) -> Path:
    return built[0]


@pytest.fixture(scope="module")
def page_and_log(report, chromium):
    page, blocked, errors = open_offline(chromium, report)
    yield page, blocked, errors
    page.close()


def _map_png(page) -> np.ndarray:
    """Pixels of the first map grid (the class maps of the shown layer), as an (H, W, 3) array."""
    from PIL import Image

    canvas = page.locator("section#maps canvas").first
    canvas.evaluate("e => e.scrollIntoView({block: 'center'})")
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=np.int16)


def test_no_requests_no_errors_all_sections(page_and_log):
    """Offline load: no request to any host, no console error, every section and its figures present."""
    page, blocked, errors = page_and_log
    assert blocked == []
    assert errors == []
    for sid, title in SECTIONS.items():
        assert page.locator(f"section#{sid} h2").inner_text() == title
        assert page.locator(f"section#{sid} .tt-note").count() == 0
    assert page.locator("section#maps canvas").count() >= 1
    names = page.evaluate("Bokeh.documents[0].roots().map(r => r.name)")
    assert {"tam_maps", "confbin_maps", "corr_maps", "map_controls", "layout_comparison"} <= set(names)


def test_slider_changes_map_pixels_and_frame_time(page_and_log, tmp_path):
    """Moving the slider (keyboard on its handle) re-renders the maps; frame time is measured and reported."""
    page, blocked, errors = page_and_log
    before = _map_png(page)
    handle = page.locator(".noUi-handle").first
    handle.focus()
    handle.press("Home")  # to the first snapshot
    page.wait_for_function("window.topotraceSnapshot === 0", timeout=20_000)  # a busy machine draws late
    page.wait_for_timeout(300)
    after = _map_png(page)
    assert before.shape == after.shape
    changed = np.abs(before - after).sum(axis=2) > 30
    assert changed.mean() > 0.02, f"only {changed.mean():.3%} of the map's pixels changed"
    label = page.locator(".tt-steplabel").first.inner_text()
    assert label.startswith("step ") and label.endswith("snapshot 1 of 8")
    end = int(page.evaluate("Bokeh.documents[0].get_model_by_name('time_slider').end"))
    ms = slider_frames(page, list(range(1, end + 1)))
    fill = float(np.median([m[0] for m in ms]))
    painted = float(np.median([m[1] for m in ms]))
    print(f"\nframe: fill {fill:.2f} ms, to paint {painted:.1f} ms (median over {len(ms)} moves)")
    assert fill > 0 and painted > 0  # measured (times are for `make bench`, not for a test on a shared machine)
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
    assert blocked == [] and errors == []


# A tile's hover values are its own column of the layer's shared points source, named in its hover tooltip.
TILE_COLUMN_JS = """const tileColumn = (fig) => {
  const hover = fig.toolbar.tools.find(t => t.tooltips !== undefined);
  return /@(\\w+)/.exec(hover.tooltips[1][1])[1];
};"""
NEURON_XY_JS = """(i) => {
  // Page position of neuron i's dot on the first class map, from the plot's own scales.
  """ + TILE_COLUMN_JS + """
  const doc = Bokeh.documents[0];
  const grid = doc.get_model_by_name('tam_maps').children[0].children.find(c => c.type === 'GridPlot');
  const fig = grid.children[0][0];
  const data = fig.renderers[1].data_source.data;
  let view = null;
  for (const root of Object.values(Bokeh.index)) { view = root.owner.find_one(fig); if (view) break; }
  const rect = view.el.getBoundingClientRect();
  return [rect.left + view.frame.x_scale.compute(data.x[i]), rect.top + view.frame.y_scale.compute(data.y[i]),
          data.neuron[i], data[tileColumn(fig)][i]];
}"""


def test_hover_shows_neuron_tooltip(page_and_log, built):
    """Hovering a neuron's dot on a map shows its id and current value, to the precision shipped (with ±)."""
    import re

    from topotrace.report_templates.quantize import precision_text, value_format

    page, _, errors = page_and_log
    page.locator("section#maps canvas").first.evaluate("e => e.scrollIntoView({block: 'center'})")
    x, y, neuron, value = page.evaluate(NEURON_XY_JS, 7)
    page.mouse.move(x, y)
    content = page.locator(".bk-tooltip-content")
    content.first.wait_for(state="visible", timeout=3000)
    text = " ".join(content.first.inner_text().split())
    assert f"neuron: {neuron} " in text
    # The values are shipped as 8-bit codes (design change, issue 15): the tooltip gives the value to the digit of
    # the shipped precision, step / 2 of the layer's colour range, and states it.
    layer = next(iter(built[1].layers.values()))
    bound = 2 * layer.color_limit / 254 / 2  # a signed layer: range [-L, L]
    decimals = len(value_format(bound).partition(".")[2])
    assert f"mean activation: {value:.{decimals}f} \u00b1 {precision_text(bound)}" in text, text
    assert re.search(r"mean activation: -?\d+\.\d+ \u00b1 0\.0\d", text)
    page.mouse.move(0, 0)
    assert errors == []


def test_layer_selector_switches_layer(page_and_log):
    """Choosing another layer shows its maps and hides the first layer's."""
    page, _, errors = page_and_log
    names = page.evaluate("Bokeh.documents[0].get_model_by_name('layer_select').options")
    assert len(names) == 2
    vis = page.evaluate("""async (name) => {
        const d = Bokeh.documents[0];
        d.get_model_by_name('layer_select').value = name;
        await new Promise(r => setTimeout(r, 100));  // BokehJS runs CustomJS callbacks asynchronously
        return d.get_model_by_name('tam_maps').children.filter(c => c.name !== 'map_note').map(c => c.visible);
    }""", names[1])
    assert vis == [False, True]
    heading = page.locator("section#maps .tt-layer").nth(1)  # the second layer's heading, now shown
    assert heading.is_visible() and "Layer layer1" in heading.inner_text()
    assert not page.locator("section#maps .tt-layer").nth(0).is_visible()
    assert errors == []


SHOW_JS = """async ([s, layer]) => {
  const d = Bokeh.documents[0];
  const sel = d.get_model_by_name('layer_select');
  sel.value = sel.options[layer];
  d.get_model_by_name('time_slider').value = s;
  await new Promise(r => setTimeout(r, 150));
}"""
TILE_JS = """([root, g]) => {
  // Hover values (the neuron values drawn) and colour range of tile g of the first grid of the first layer.
  """ + TILE_COLUMN_JS + """
  const d = Bokeh.documents[0];
  const grid = d.get_model_by_name(root).children[0].children.find(c => c.type === 'GridPlot');
  const fig = grid.children[g][0];
  const mapper = fig.renderers[0].glyph.color_mapper;
  return [Array.from(fig.renderers[1].data_source.data[tileColumn(fig)]), mapper.low, mapper.high, fig.title.text];
}"""


def test_contrast_view_subtracts_group_mean(page_and_log, built):
    """The contrast switch draws each class NAP minus the neuron's mean over classes, on a symmetric scale."""
    from topotrace.report_templates.maps import activation_span
    from topotrace.report_templates.quantize import quantize

    page, _, errors = page_and_log
    res = built[1]
    layer = next(iter(res.layers.values()))
    s, g = 3, 2
    page.evaluate(SHOW_JS, [s, 0])
    raw, low, high, _ = page.evaluate(TILE_JS, ["tam_maps", g])
    naps = np.asarray(layer.naps["class"].naps[s], np.float64)  # (G, N)
    # The page ships 8-bit codes (issue 15): the values drawn are the decoded codes, within step / 2 of the NAPs.
    q = quantize(layer.naps["class"].naps, *activation_span(layer))
    shipped = q.decode()[s]
    np.testing.assert_allclose(raw, shipped[g], rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(raw) - naps[g]).max() <= q.bound * (1 + 1e-6)
    assert (low, high) == pytest.approx((-layer.color_limit, layer.color_limit))  # signed synthetic layer
    before = _map_png(page)
    page.evaluate("async () => { Bokeh.documents[0].get_model_by_name('tam_mode').active = 1;"
                  " await new Promise(r => setTimeout(r, 150)); }")
    con, low, high, _ = page.evaluate(TILE_JS, ["tam_maps", g])
    np.testing.assert_allclose(con, shipped[g] - np.nanmean(shipped, axis=0), rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(con) - (naps[g] - np.nanmean(naps, axis=0))).max() <= q.step  # the contrast bound
    assert (low, high) == pytest.approx((-layer.color_limit_contrast, layer.color_limit_contrast))
    after = _map_png(page)
    assert (np.abs(before - after).sum(axis=2) > 30).mean() > 0.02
    page.evaluate("async () => { Bokeh.documents[0].get_model_by_name('tam_mode').active = 0;"
                  " await new Promise(r => setTimeout(r, 150)); }")
    back, low, _, _ = page.evaluate(TILE_JS, ["tam_maps", g])
    np.testing.assert_allclose(back, raw)
    assert low == pytest.approx(-layer.color_limit)
    assert errors == []


def test_measure_selector_switches_maps_and_curves(page_and_log, built):
    """Choosing another confidence measure redraws the correlation maps and swaps the summary curves."""
    from topotrace.report_templates.style import corr_fit_limit

    page, _, errors = page_and_log
    res = built[1]
    layer = next(iter(res.layers.values()))
    s = 5
    page.evaluate(SHOW_JS, [s, 0])
    options = page.evaluate("Bokeh.documents[0].get_model_by_name('corr_measure').options")
    assert page.evaluate("Bokeh.documents[0].get_model_by_name('corr_measure').value") == res.primary_measure
    other = [m for m in options if m != res.primary_measure][-1]
    vals, *_ = page.evaluate(TILE_JS, ["corr_maps", 0])
    # r is shipped as 8-bit codes on +-(largest |r|) of the layer and measure (issue 15): within step / 2 = fit / 254.
    bound = corr_fit_limit(layer, res.primary_measure) / 254
    np.testing.assert_allclose(vals, np.nan_to_num(layer.corr[res.primary_measure].pearson[s]), atol=bound * 1.0001)
    got = page.evaluate("""async (m) => {
        const d = Bokeh.documents[0];
        d.get_model_by_name('corr_measure').value = m;
        await new Promise(r => setTimeout(r, 150));
        const fig = d.get_model_by_name('corr_summary').children[0].children[1];
        return [Array.from(fig.renderers[0].data_source.data.frac_sig_pos), fig.title.text];
    }""", other)
    vals, *_ = page.evaluate(TILE_JS, ["corr_maps", 1])
    bound = corr_fit_limit(layer, other) / 254
    np.testing.assert_allclose(vals, np.nan_to_num(layer.corr[other].pearson_within[s]), atol=bound * 1.0001)
    np.testing.assert_allclose(got[0], layer.corr[other].summary["frac_sig_pos"])
    title = page.evaluate("Bokeh.documents[0].get_model_by_name('corr_summary').children[0].children[0].title.text")
    assert title.endswith(f"mean r with {other}")
    page.evaluate("(m) => { Bokeh.documents[0].get_model_by_name('corr_measure').value = m; }", res.primary_measure)
    assert errors == []


def test_layout_comparison_in_one_row(page_and_log, built):
    """The layout methods of a layer sit side by side in one row inside the section."""
    page, _, errors = page_and_log
    n = len(next(iter(built[1].layers.values())).layouts)
    section = page.locator("section#layouts").bounding_box()
    boxes = [page.locator("section#layouts canvas").nth(i).bounding_box() for i in range(n)]
    assert len({round(b["y"]) for b in boxes}) == 1
    assert max(b["x"] + b["width"] for b in boxes) <= section["x"] + section["width"] - 10
    assert errors == []


def test_slider_moves_time_markers(page_and_log, built):
    """Every chart over training time marks the slider's snapshot: its Span sits at that step (+ 1 on a log axis)."""
    page, _, errors = page_and_log
    steps = np.asarray(built[1].steps, dtype=np.float64)
    log = len(steps) > 1 and (steps.max() + 1) / (steps.min() + 1) >= 100
    for s in (2, len(steps) - 1, 0):
        locs = page.evaluate("""async (s) => {
            const d = Bokeh.documents[0];
            d.get_model_by_name('time_slider').value = s;
            await new Promise(r => setTimeout(r, 400));  // markers move once the maps have painted
            const all = typeof d.all_models === 'function' ? d.all_models() : (d.all_models ?? d._all_models.values());
            return [...all].filter(m => m.name === 'time_marker').map(m => m.location);
        }""", s)
        assert len(locs) >= 5  # training curves (3) and strength / distinctness (2) at least
        assert locs == [steps[s] + (1.0 if log else 0.0)] * len(locs)
    assert errors == []


def _corr_png(page) -> np.ndarray:
    """Pixels of the first correlation map of the shown layer, as an (H, W, 3) array."""
    from PIL import Image

    canvas = page.locator("section#correlation canvas").first
    canvas.evaluate("e => e.scrollIntoView({block: 'center'})")
    page.wait_for_timeout(200)  # far down the page: let the plot paint after scrolling
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), dtype=np.int16)


def test_corr_scale_switch_fits_colours(page_and_log, built):
    """"Fit to data" sets the correlation maps' scale to ±max |r| of the layer and measure; the map changes."""
    page, _, errors = page_and_log
    res = built[1]
    layer = next(iter(res.layers.values()))
    cr = layer.corr[res.primary_measure]
    fit = float(np.nanmax(np.abs(np.concatenate([np.ravel(cr.pearson), np.ravel(cr.pearson_within)]))))
    assert fit < 0.5  # the fixture's weak correlations
    page.evaluate(SHOW_JS, [4, 0])
    _, low, high, _ = page.evaluate(TILE_JS, ["corr_maps", 0])
    assert (low, high) == (-1.0, 1.0)
    before = _corr_png(page)
    set_scale = """async (a) => { Bokeh.documents[0].get_model_by_name('corr_scale').active = a;
                                  await new Promise(r => setTimeout(r, 150)); }"""
    page.evaluate(set_scale, 1)
    _, low, high, _ = page.evaluate(TILE_JS, ["corr_maps", 0])
    assert (low, high) == pytest.approx((-fit, fit), rel=1e-6)
    assert f"\u00b1{fit:.2f} (fit" in page.locator("section#correlation .tt-layer").first.inner_text()
    after = _corr_png(page)
    assert before.shape == after.shape
    assert (np.abs(before - after).sum(axis=2) > 30).mean() > 0.02
    page.evaluate(set_scale, 0)
    _, low, high, _ = page.evaluate(TILE_JS, ["corr_maps", 0])
    assert (low, high) == (-1.0, 1.0)
    assert errors == []


FINER_JS = """async () => {
  // The first class map: its image's shape, how many of its pixels are drawn (finite), its canvas width, and the
  // grid's columns; then the same after the size switch goes to large and a slider move.
  const d = Bokeh.documents[0];
  const grid = d.get_model_by_name('tam_maps').children[0].children.find(c => c.type === 'GridPlot');
  const fig = grid.children[0][0];
  const img = fig.renderers[0].data_source.data.image[0];
  let finite = 0;
  for (let i = 0; i < img.length; i++) if (img[i] === img[i]) finite++;
  const cols = Math.max(...grid.children.map(c => c[2])) + 1;
  return [img.shape, finite, fig.width, cols, fig.renderers[1].glyph.line_alpha];
}"""


def _canvas_widths(page, section: str) -> list[int]:
    """The CSS widths of the drawn canvases of a report section."""
    loc = page.locator(f"section#{section} canvas")
    return [round(b["width"]) for b in (loc.nth(i).bounding_box() for i in range(loc.count())) if b is not None]


def _first_map_box(page):
    canvas = page.locator("section#maps canvas").first
    canvas.evaluate("e => e.scrollIntoView({block: 'center'})")
    return canvas.bounding_box()


def test_finer_maps_paint_a_frame_and_switch_size_and_dots(page_and_log, built):
    """The maps are 128 x 128 with a one-pixel halo under the grey off-map mask; a slider move paints a new frame
    (pixels change, grey stays off the map); the size switch makes the tiles large (fewer columns) and back; the
    dots switch hides the dots (still hoverable: alpha 0) and shows them again. No console errors."""
    import time

    from topotrace.analysis.maps import halo
    from topotrace.report_templates.maps import TILE_PX, TILE_PX_LARGE, dots_alpha
    from topotrace.report_templates.style import OFF_MAP

    page, _, errors = page_and_log
    layer = next(iter(built[1].layers.values()))
    op = layer.layouts[layer.default_layout].interp
    page.evaluate(SHOW_JS, [2, 0])
    shape, finite, width, cols, alpha = page.evaluate(FINER_JS)
    assert shape == [128, 128] and width == TILE_PX and cols == 5
    assert finite == len(op.pixel) + halo(op).shape[1]  # the map, its halo, NaN elsewhere
    assert alpha["value"] == pytest.approx(dots_alpha(int(layer.n_neurons)))
    before = _map_png(page)
    grey = np.array([int(OFF_MAP[i:i + 2], 16) for i in (1, 3, 5)])
    assert (np.abs(before - grey).sum(axis=2) < 6).mean() > 0.05  # off the map is grey
    t0 = time.perf_counter()
    page.evaluate(SHOW_JS, [6, 0])
    page.wait_for_function("window.topotraceSnapshot === 6", timeout=20_000)
    page.wait_for_timeout(300)
    assert time.perf_counter() - t0 < 5  # a sanity bound only: frame times belong to `make bench`
    after = _map_png(page)
    assert before.shape == after.shape
    assert (np.abs(before - after).sum(axis=2) > 30).mean() > 0.02  # the finer map painted a new frame
    assert (np.abs(after - grey).sum(axis=2) < 6).mean() > 0.05
    small = _first_map_box(page)["width"]
    corr_tiles = _canvas_widths(page, "correlation").count(TILE_PX)  # the correlation maps: grids of two tiles
    assert corr_tiles >= 2
    set_size = """async (a) => { Bokeh.documents[0].get_model_by_name('map_size').active = a;
                                 await new Promise(r => setTimeout(r, 300)); }"""
    page.evaluate(set_size, 1)
    _, _, width, cols, _ = page.evaluate(FINER_JS)
    assert width == TILE_PX_LARGE and cols == 3
    page.wait_for_timeout(300)
    large = _first_map_box(page)["width"]
    assert large > small * 1.4, (small, large)
    corr = _canvas_widths(page, "correlation")  # grids whose columns stay resize too (their colour bar lays them out)
    assert corr.count(TILE_PX_LARGE) == corr_tiles and TILE_PX not in corr, corr
    page.evaluate(SHOW_JS, [3, 0])  # a frame at the large size
    page.wait_for_function("window.topotraceSnapshot === 3", timeout=20_000)
    page.evaluate(set_size, 0)
    _, _, width, cols, _ = page.evaluate(FINER_JS)
    assert width == TILE_PX and cols == 5
    page.wait_for_timeout(300)
    assert _first_map_box(page)["width"] == pytest.approx(small, abs=2)
    assert _canvas_widths(page, "correlation").count(TILE_PX) == corr_tiles
    set_dots = """async (a) => { Bokeh.documents[0].get_model_by_name('map_dots').active = a;
                                 await new Promise(r => setTimeout(r, 200)); }"""
    page.evaluate(set_dots, False)
    assert page.evaluate(FINER_JS)[4]["value"] == 0
    page.evaluate(set_dots, True)
    assert page.evaluate(FINER_JS)[4]["value"] == pytest.approx(dots_alpha(int(layer.n_neurons)))
    assert errors == []
