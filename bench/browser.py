"""Headless Debian Chromium for the report's browser checks: the browser test and the report bench share it."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium tries to reach Google's hosts at start; the report itself
# must load with every request to a host refused.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def slider_frames(page, values: list[int]) -> list[list[float | None]]:
    """Move the report's time slider to each of ``values``; per move [fill ms, ms to the second animation frame].

    The fill time is what the report's render callback measured itself (``window.topotraceFrameMs``); the
    second figure includes the browser painting the new maps.
    """
    return page.evaluate("""async (values) => {
        const s = Bokeh.documents[0].get_model_by_name('time_slider');
        const out = [];
        for (const i of values) {
            const t0 = performance.now();
            s.value = i;
            await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
            out.push([window.topotraceFrameMs, performance.now() - t0]);
        }
        return out;
    }""", values)
