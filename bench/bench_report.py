"""Report: build time, HTML size and in-browser frame time, against embedding every interpolated image.

Runs on the default run (runs/digits/store.h5, skipped when absent) and on a synthetic run with one
1024-neuron layer, 100 snapshots and 10 classes. The baseline is the naive report that ships every map frame as
an image: its data payload is computed the way Bokeh would embed it (float32 images, gzip at Bokeh's level,
base64) and compared with what the report ships (neuron values per snapshot plus the interpolation operator).
Frame time is measured in headless Debian chromium: ``fill`` is the CustomJS render of all maps of a layer
(``window.topotraceFrameMs``), ``paint`` runs from the slider move to the second animation frame after it.
A screenshot of each report goes to bench/out/.
"""

from __future__ import annotations

import base64
import gzip
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bokeh.settings import settings

from topotrace.analysis.pipeline import analyze
from topotrace.analysis.results import AnalysisResults
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates.charts import correlation_measures
from topotrace.report_templates.generate import build_report
from topotrace.report_templates.maps import MAP_GROUPINGS

from .browser import ARGS, CHROMIUM, open_offline, slider_frames

OUT = Path(__file__).resolve().parent / "out"


def _embedded(arr: np.ndarray) -> int:
    """Bytes one array takes in a Bokeh standalone page (gzip at Bokeh's level, then base64)."""
    raw = np.ascontiguousarray(arr).tobytes()
    return len(base64.b64encode(gzip.compress(raw, mtime=1, compresslevel=settings.compression_level())))


def _map_arrays(res: AnalysisResults) -> list[tuple[object, np.ndarray]]:
    """(operator, values of shape (S, G, N)) for every map grid the report draws."""
    out = []
    for la in res.layers.values():
        if not la.layouts or la.default_layout not in la.layouts:
            continue
        op = la.layouts[la.default_layout].interp
        for grouping in [g for g, _ in MAP_GROUPINGS] + ["confbin"]:
            if grouping in la.naps:
                out.append((op, np.asarray(la.naps[grouping].naps, np.float32)))
        for measure in correlation_measures(res):  # the page ships every measure; a selector picks one
            cr = la.corr.get(measure) if la.corr else None
            if cr is not None:
                out.append((op, np.stack([cr.pearson, cr.pearson_within], axis=1).astype(np.float32)))
    return out


def payloads(res: AnalysisResults) -> dict[str, float]:
    """Data bytes of the shipped approach and of the naive one (every frame as an image), and naive render time."""
    shipped = naive = frames = 0
    t_render = 0.0
    ops_seen: set[int] = set()
    for op, vals in _map_arrays(res):
        shipped += _embedded(vals)
        if id(op) not in ops_seen:
            ops_seen.add(id(op))
            shipped += _embedded(op.pixel) + _embedded(op.neurons) + _embedded(op.weights)
        t0 = time.perf_counter()
        for g in range(vals.shape[1]):
            stack = np.stack([op.apply(vals[s, g]) for s in range(vals.shape[0])])  # (S, H, W)
            frames += stack.shape[0]
            t_render += time.perf_counter() - t0
            naive += _embedded(stack)
            t0 = time.perf_counter()
    return {"shipped": shipped, "naive": naive, "frames": frames, "naive_render_s": t_render}


def frame_times(html: Path, shot: Path) -> dict[str, float] | None:
    """Median fill and paint time of slider moves over all snapshots in headless chromium (None if unavailable)."""
    if not os.path.exists(CHROMIUM):
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        t0 = time.perf_counter()
        page, blocked, _ = open_offline(browser, html, wait_idle=False)
        page.wait_for_function("window.Bokeh && Bokeh.documents.length > 0 && "
                               "Bokeh.documents[0].get_model_by_name('time_slider') !== null", timeout=120_000)
        page.wait_for_timeout(500)
        load = time.perf_counter() - t0
        end = int(page.evaluate("Bokeh.documents[0].get_model_by_name('time_slider').end"))
        ms = slider_frames(page, [(k * 7) % (end + 1) for k in range(min(end, 40) + 1)])
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    ms = [m for m in ms if m[0] is not None]
    return {"load_s": load, "fill_ms": float(np.median([m[0] for m in ms])),
            "paint_ms": float(np.median([m[1] for m in ms])), "moves": len(ms), "blocked": len(blocked)}


def bench_one(label: str, res: AnalysisResults, out_html: Path) -> None:
    t0 = time.perf_counter()
    build_report(res, out_html)
    build_s = time.perf_counter() - t0
    size = out_html.stat().st_size
    pay = payloads(res)
    n_neurons = sum(la.n_neurons for la in res.layers.values())
    print(f"[{label}] {len(res.layers)} layer(s), {n_neurons} neurons, {res.n_snapshots} snapshots, "
          f"{pay['frames']} map frames")
    print(f"  build_report: {build_s:.2f} s   HTML: {size / 1e6:.2f} MB")
    print(f"  map data shipped (values + operator): {pay['shipped'] / 1e6:.2f} MB")
    print(f"  baseline, every interpolated frame embedded: {pay['naive'] / 1e6:.2f} MB data "
          f"(+{pay['naive_render_s']:.2f} s to render the frames in Python)")
    print(f"  ratio naive/shipped data: {pay['naive'] / max(pay['shipped'], 1):.1f}x;  "
          f"naive page would be ~{(size - pay['shipped'] + pay['naive']) / 1e6:.1f} MB "
          f"({(size - pay['shipped'] + pay['naive']) / size:.1f}x this page)")
    OUT.mkdir(exist_ok=True)
    ft = frame_times(out_html, OUT / f"report_{label}.png")
    if ft is None:
        print("  frame time: skipped (no /usr/bin/chromium or playwright)")
    else:
        print(f"  browser: load {ft['load_s']:.1f} s; frame fill {ft['fill_ms']:.1f} ms, to paint "
              f"{ft['paint_ms']:.1f} ms (median of {ft['moves']} slider moves; target 100 ms: "
              f"{'met' if ft['paint_ms'] <= 100 else 'MISSED'}); blocked requests {ft['blocked']}")
        print(f"  screenshot: {OUT / f'report_{label}.png'}")


def main() -> None:
    default = Path("runs/digits/store.h5")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if default.exists():
            t0 = time.perf_counter()
            res = analyze(default)
            print(f"(default run analysis, cached or computed: {time.perf_counter() - t0:.1f} s)")
            bench_one("digits", res, tmp / "digits.html")
        else:
            print("[digits] skipped: runs/digits/store.h5 not found (run `make train` first)")
        store = write_synthetic_store(tmp / "synthetic.h5", n_snapshots=100, layer_sizes=(1024,), n_classes=10,
                                      per_class=20, seed=0)
        t0 = time.perf_counter()
        res = analyze(store, tmp / "synthetic_analysis.h5")
        print(f"(synthetic analysis: {time.perf_counter() - t0:.1f} s)")
        bench_one("synthetic1024", res, tmp / "synthetic1024.html")


if __name__ == "__main__":
    main()
