"""Report at scale (issue 15): page sizes, build time, first paint and slider frame time, against today's page.

Each case builds two reports from the same analysis with the same code: **before** is today's report, one page with
float32 map values (``build_report(..., page_budget=float("inf"), quantized=False)``); **after** is the default, 8-bit
map values and pages of at most 10 MB (a summary page plus one page per layer when one page does not fit). Ratios are
after / before, measured in the same run.

Cases: the default run (``runs/digits``, when it exists: its report must be no larger than before), and synthetic
runs of 12 layers x 768 neurons and 1 layer x 1024 neurons, 100 snapshots, 10 classes, 200 held-out probe samples
(``write_synthetic_store``), analysed with PCA layouts only (the default methods take about ten minutes on 12 x 768
here; a layer's maps and their size do not depend on the method, only the summary's layout comparison is smaller).

Browser (headless Debian chromium, every request to a host refused): **first paint** is the time from navigation to
the maps drawn (the render callback's first frame, two animation frames later), or on a page without maps to Bokeh's
"document idle"; **frame** the median time from a slider move to the second animation frame after it (``fill``: the
render callback alone; ``until idle``: with the deferred work, the charts' time markers, until the page is idle),
over up to 30 moves; **heap** the JS heap after load. Targets (issue 15): largest page
<= 10 MB, all pages <= 40 MB, first paint <= 5 s on the largest page, slider frame <= 100 ms.

Issue 10 (maps on a 128 x 128 grid with the region's outline): each case prints its grid and the map pixels P per
layer, which a frame's fill grows with; the before / after of that change (64 x 64 vs 128 x 128) is in the issue's
closing note, measured with this bench's functions on the default run.
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from topotrace.analysis.pipeline import analyze
from topotrace.analysis.results import AnalysisResults
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates.generate import build_report, report_pages

from .browser import ARGS, CHROMIUM, TWO_FRAMES_JS, open_offline, slider_frames

OUT = Path(__file__).resolve().parent / "out"
MB = 1e6
TARGETS = {"largest_mb": 10.0, "total_mb": 40.0, "paint_s": 5.0, "frame_ms": 100.0}

PAINTED_JS = """() => {
  if (window.topotraceSnapshot !== undefined) return true;              // the maps are drawn
  const d = window.Bokeh && Bokeh.documents.length > 0 ? Bokeh.documents[0] : null;
  return d !== null && d.is_idle && d.get_model_by_name('time_slider') === null;  // a page without maps
}"""


def open_page(browser, path: Path) -> tuple[object, dict[str, float | None]]:
    """Open one page offline; (the page, its first paint in s, JS heap in MB, refused requests, console errors)."""
    page, blocked, errors = open_offline(browser, path, wait_idle=False)
    page.wait_for_function(PAINTED_JS, timeout=600_000, polling=50)
    paint = page.evaluate(f"({TWO_FRAMES_JS})().then(() => performance.now())") / 1000
    heap = page.evaluate("performance.memory ? performance.memory.usedJSHeapSize : null")
    return page, {"paint_s": paint, "heap_mb": heap / MB if heap else None, "blocked": blocked, "errors": errors}


def paired_frames(pages: list, rounds: int = 3, moves: int = 10) -> list[tuple[float | None, ...]]:
    """Median (to paint, fill, until idle) ms of slider moves per page, the pages taking turns in blocks of
    ``moves``, so that both see the same machine load (this machine is shared)."""
    got: list[list[list[float]]] = [[] for _ in pages]
    for r in range(rounds):
        for i, page in enumerate(pages):
            end = page.evaluate("(() => { const s = Bokeh.documents[0].get_model_by_name('time_slider');"
                                " return s === null ? 0 : s.end; })()")
            if not end:
                continue
            page.bring_to_front()
            values = [(r * moves + k) * 7 % (int(end) + 1) for k in range(1, moves + 1)]
            got[i] += [m for m in slider_frames(page, values) if m[0] is not None]
    return [tuple(float(np.median([m[k] for m in g])) for k in (1, 0, 2)) if g else (None, None, None)
            for g in got]


def build(res: AnalysisResults, out: Path, **kw) -> dict[str, object]:
    """Build one report; its build time, pages and sizes."""
    t0 = time.perf_counter()
    build_report(res, out, **kw)
    seconds = time.perf_counter() - t0
    files = report_pages(out)
    sizes = [f.stat().st_size / MB for f in files]
    return {"build_s": seconds, "files": files, "pages": len(files), "largest_mb": max(sizes),
            "total_mb": sum(sizes), "largest": files[int(np.argmax(sizes))], "summary_mb": sizes[0]}


def _fmt(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "–" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def bench_case(label: str, res: AnalysisResults, tmp: Path, browser) -> None:
    """Before / after for one analysis: sizes, build time, browser times, and the targets."""
    n_neurons = [int(la.n_neurons) for la in res.layers.values()]
    print(f"\n[{label}] {len(n_neurons)} layer(s) of {sorted(set(n_neurons))} neurons, {res.n_snapshots} snapshots")
    ops = [la.layouts[la.default_layout].interp for la in res.layers.values() if la.layouts]
    if ops:  # a frame's cost grows with the map pixels P (issue 10: maps on a finer grid)
        grids = sorted({"x".join(map(str, op.grid_shape)) for op in ops})
        print(f"  maps: {', '.join(grids)} grid, P = {min(len(op.pixel) for op in ops):,} to "
              f"{max(len(op.pixel) for op in ops):,} pixels on the map per layer")
    before = build(res, tmp / label / "before" / "report.html", page_budget=math.inf, quantized=False)
    after = build(res, tmp / label / "after" / "report.html")
    layer_pages = after["files"][1:]
    maps_page = max(layer_pages, key=lambda f: f.stat().st_size) if layer_pages else after["files"][0]
    OUT.mkdir(exist_ok=True)
    if browser is not None:
        opened = []
        for info, path, shot in ((before, before["files"][0], "before"), (after, after["largest"], "after")):
            page, got = open_page(browser, path)
            page.screenshot(path=str(OUT / f"report_{label}_{shot}.png"))
            info.update(got)
            opened.append(page)
        if maps_page != after["largest"]:  # the largest page is the summary: frames on the largest layer page
            page, got = open_page(browser, maps_page)
            page.screenshot(path=str(OUT / f"report_{label}_layer.png"))
            after["layer_paint_s"] = got["paint_s"]
            opened[1].close()
            opened[1] = page
        if after["pages"] > 1 and after["largest"] != after["files"][0]:
            page, got = open_page(browser, after["files"][0])
            after["summary_paint_s"] = got["paint_s"]
            page.close()
        for info, (frame, fill, busy) in zip((before, after), paired_frames(opened)):
            info.update(frame_ms=frame, fill_ms=fill, busy_ms=busy)
        for page in opened:
            page.close()
    rows = [("pages", "pages", 0), ("largest page, MB", "largest_mb", 1), ("all pages, MB", "total_mb", 1),
            ("build, s", "build_s", 1), ("first paint (largest page), s", "paint_s", 1),
            ("slider frame, ms (to paint)", "frame_ms", 1), ("slider frame, ms (fill)", "fill_ms", 1),
            ("slider move, ms until idle", "busy_ms", 1),
            ("JS heap after load, MB", "heap_mb", 0)]
    print(f"  {'':32s} {'before':>10s} {'after':>10s} {'after/before':>13s}")
    for name, key, digits in rows:
        b, a = before.get(key), after.get(key)
        print(f"  {name:32s} {_fmt(b, digits):>10s} {_fmt(a, digits):>10s} {_ratio(a, b):>13s}")
    if after["pages"] > 1:
        summary_paint = after.get("summary_paint_s", after.get("paint_s"))
        layer_paint = after.get("layer_paint_s", after.get("paint_s"))
        print(f"  after: summary page {after['summary_mb']:.1f} MB (first paint {_fmt(summary_paint)} s); largest "
              f"layer page {maps_page.stat().st_size / MB:.1f} MB (first paint {_fmt(layer_paint)} s; its slider "
              "frames above)")
    if browser is not None:
        print(f"  refused requests / console errors: before {len(before['blocked'])}/{len(before['errors'])}, "
              f"after {len(after['blocked'])}/{len(after['errors'])}")
    met = {k: after.get(k) is not None and after[k] <= v for k, v in TARGETS.items()}
    print("  targets: " + ", ".join(f"{k} <= {v:g}: {'met' if met[k] else 'MISSED'}" for k, v in TARGETS.items()))


def main() -> None:
    sync_playwright = None
    if os.path.exists(CHROMIUM):
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            pass
    if sync_playwright is None:
        print("browser measurements skipped (no /usr/bin/chromium or playwright)")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cases: list[tuple[str, AnalysisResults]] = []
        default = Path("runs/digits/store.h5")
        if default.exists():
            cases.append(("digits", analyze(default)))
        else:
            print("[digits] skipped: runs/digits/store.h5 not found (run `make train` first)")
        for label, sizes in (("12x768x100", (768,) * 12), ("1x1024x100", (1024,))):
            t0 = time.perf_counter()
            store = write_synthetic_store(tmp / f"{label}.h5", n_snapshots=100, layer_sizes=sizes, n_classes=10,
                                          per_class=20, seed=0)
            t1 = time.perf_counter()
            res = analyze(store, tmp / f"{label}_analysis.h5", layout_methods=["pca"])
            print(f"({label}: store written in {t1 - t0:.0f} s, analysed in {time.perf_counter() - t1:.0f} s)")
            cases.append((label, res))
        if sync_playwright is None:
            for label, res in cases:
                bench_case(label, res, tmp, None)
            return
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for label, res in cases:
                bench_case(label, res, tmp, browser)
            browser.close()


if __name__ == "__main__":
    main()
