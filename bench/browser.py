"""Headless Debian Chromium for the report's browser checks: the browser test and the report bench share it."""

from __future__ import annotations

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium tries to reach Google's hosts at start; the report itself
# must load with every request to a host refused.
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# Two animation frames, as a JS function returning a promise; rejected after 10 s, so that a page that stops drawing
# fails its caller with that message instead of hanging it (Playwright's evaluate waits without a time limit).
TWO_FRAMES_JS = ("() => Promise.race([new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r))), "
                 "new Promise((_, no) => setTimeout(() => no(new Error('no animation frame within 10 s')), 10000))])")


def slider_frames(page, values: list[int]) -> list[list[float | None]]:
    """Move the report's time slider to each of ``values``; per move [fill ms, ms to the second animation frame,
    ms until the page is idle again].

    The fill time is what the report's render callback measured itself (``window.topotraceFrameMs``); the
    second figure includes the browser painting the new maps; the third also the work deferred after the frame
    (the charts' time markers follow in an idle callback): up to the next idle period (at most 2 s), then two more
    frames. The page is brought to the front first (a page in the background gets no animation frames).
    """
    page.bring_to_front()
    return page.evaluate("""async (values) => {
        const s = Bokeh.documents[0].get_model_by_name('time_slider');
        const two = """ + TWO_FRAMES_JS + """;
        const out = [];
        for (const i of values) {
            const t0 = performance.now();
            s.value = i;
            await two();
            const t1 = performance.now();
            await new Promise(r => requestIdleCallback(r, {timeout: 2000}));
            await two();
            out.push([window.topotraceFrameMs, t1 - t0, performance.now() - t0]);
        }
        return out;
    }""", values)


def open_offline(browser, path, width: int = 1280, height: int = 1000, wait_idle: bool = True):
    """Open a local page with every request to a host refused; returns ``(page, blocked, errors)``.

    ``blocked`` collects the URLs that were refused, ``errors`` console errors and page errors. With
    ``wait_idle`` it waits up to 20 s for Bokeh's "document idle" console message and asserts it came.
    """
    import time

    blocked: list[str] = []
    errors: list[str] = []
    idle: list[str] = []
    page = browser.new_page(viewport={"width": width, "height": height})
    page.route("**/*", lambda r: r.continue_() if r.request.url.startswith("file://")
               else (blocked.append(r.request.url), r.abort()))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else
            (idle.append(m.text) if "document idle" in m.text else None))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    if wait_idle:
        t0 = time.perf_counter()
        while not idle and time.perf_counter() - t0 < 20:
            page.wait_for_timeout(100)
        assert idle, "Bokeh never reported the document idle"
    return page, blocked, errors
