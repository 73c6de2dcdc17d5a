"""topotrace watch: a report that follows a run recorded in another process, and its end (closed, killed, stalled).

The training is tests/_watch_child.py (a tiny MLP, one snapshot per step), started as a subprocess and paced by
a gate file: it records a snapshot, or closes its store, only when the test lets it, so a test moves the training
on as soon as it has seen what it waits for, never after a fixed pause. `topotrace watch` runs as another
subprocess. The test polls the report as a reader would and parses every version it reads.
"""

from __future__ import annotations

import html.parser
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from topotrace.live import LIVE_CACHE, StoreState, expected_snapshots, live_context, read_state

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # tests/conftest.py; make test-fast leaves these out

ROOT = Path(__file__).parent.parent
CHILD = ROOT / "tests" / "_watch_child.py"
EPOCH = "1700000000"  # SOURCE_DATE_EPOCH: the final report's bytes do not depend on when it was written
LIVE = re.compile(r'id="tt-live" class="tt-note tt-live-(\w+)"')
SNAPSHOT = re.compile(r"snapshot (\d+) of (\d+)")


def _env():
    return dict(os.environ, SOURCE_DATE_EPOCH=EPOCH, OMP_NUM_THREADS="1", TOPOTRACE_DEBUG="")


def _open_gate(gate: Path, n: int) -> Path:
    """Let the child record its snapshots 0..n-1 (and close its store once n > STEPS + 1): see tests/_watch_child.py.

    Written to a temporary file and renamed, so the child reads the old number or the new one, never a part.
    """
    part = gate.with_name(gate.name + ".part")
    part.write_text(str(n), encoding="ascii")
    os.replace(part, gate)
    return gate


def _child(store: Path, steps: int, gate: Path) -> subprocess.Popen:
    """The training of steps 0..``steps``, paced by ``gate`` (kept outside the run folder)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, str(CHILD), str(store), str(steps), str(gate)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _watch(run: Path, *options: str) -> subprocess.Popen:
    # --nice 0: these tests are about what watch writes and when it ends, not its priority; a niced watch beside
    # the suite's other worker would wait for that worker's tests instead of the child's snapshots
    return subprocess.Popen([sys.executable, "-m", "topotrace", "watch", str(run), "--poll", "0.05", "--nice", "0",
                             *options],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(*procs: subprocess.Popen) -> None:
    """Kill what still runs, reap it and close its pipes (none is left open for the garbage collector)."""
    for proc in procs:
        proc.kill()
        with proc:  # closes stdout and stderr, then waits
            pass


class _Strict(html.parser.HTMLParser):
    """Counts the elements that must open and close once in a whole page."""

    def __init__(self):
        super().__init__()
        self.opened, self.closed = [], []

    def handle_starttag(self, tag, attrs):
        self.opened.append(tag)

    def handle_endtag(self, tag):
        self.closed.append(tag)


def _check_whole(text: str) -> str:
    """``text``, asserting it is a whole topotrace page (a half-written file fails here)."""
    assert '<meta name="generator" content="topotrace">' in text[:8192]
    assert text.rstrip().endswith("</html>"), text[-200:]
    parser = _Strict()
    parser.feed(text)
    parser.close()
    for tag in ("html", "head", "body", "footer"):
        assert parser.opened.count(tag) == 1 and parser.closed.count(tag) == 1, tag
    assert parser.opened.count("script") == parser.closed.count("script")
    return text


def _read_whole(path: Path) -> str:
    """The page's text, asserting it is a whole topotrace page."""
    return _check_whole(path.read_text("utf-8"))


def _poll(report: Path, watcher: subprocess.Popen, child: subprocess.Popen, until, timeout: float = 240.0):
    """Read the report every 50 ms until ``until(seen)`` or watch's exit (then once more, for the version it wrote
    last). ``seen``: (child running, banner state, k, of) per new version of the file; the last three ``None``
    on a page without the live banner (``of``: the schedule's snapshot count the banner gives)."""
    seen, last = [], None

    def look():
        nonlocal last
        try:
            fh = open(report, "rb")
        except FileNotFoundError:
            return
        with fh:  # the version this descriptor reads: a replacement written meanwhile is the next version
            stat = os.fstat(fh.fileno())
            if (stat.st_ino, stat.st_mtime_ns) == last:
                return
            last = stat.st_ino, stat.st_mtime_ns
            running = child.poll() is None
            text = _check_whole(fh.read().decode("utf-8"))
        live = LIVE.search(text)
        k = SNAPSHOT.search(text[live.end():live.end() + 2000]) if live else None
        seen.append((running, live[1] if live else None, int(k[1]) if k else None, int(k[2]) if k else None))

    t0 = time.monotonic()
    while not until(seen) and time.monotonic() - t0 < timeout:
        if watcher.poll() is not None:
            look()
            break
        look()
        time.sleep(0.05)
    return seen


def test_watch_follows_the_run_and_ends_with_the_report_of_topotrace_report(tmp_path, monkeypatch):
    """The live report appears while training runs, is rebuilt as snapshots arrive and never read half-written;
    when the store closes, watch writes the final report, equal byte for byte to topotrace report's, and exits.

    The training (2 snapshots) takes its next step, and at the end closes its store, only once the page shows
    every snapshot recorded so far: the pages of 1 and then 2 snapshots are each seen while it runs."""
    run = tmp_path / "runs" / "w"
    gate = _open_gate(tmp_path / "gate", 1)  # snapshot 0 only
    child = _child(run / "store.h5", steps=1, gate=gate)
    watcher = _watch(run, "--reload", "5")
    allowed = 1

    def pace(seen) -> bool:  # the page shows every snapshot recorded so far: the training goes on (or closes)
        nonlocal allowed
        if seen and seen[-1][1] == "live" and seen[-1][2] == allowed:
            allowed += 1
            _open_gate(gate, allowed)
        return False  # follow to the end

    try:
        seen = _poll(run / "report.html", watcher, child, until=pace)
        out, err = watcher.communicate(timeout=240)
        child_code = child.wait(timeout=30)  # before _stop, which kills what still runs
    finally:
        _stop(child, watcher)
    assert watcher.returncode == 0, err
    assert out.splitlines() == [str(run / "report.html")]
    live = [(running, k, of) for running, state, k, of in seen if state == "live"]
    assert live and live[0][0], seen  # a live report while the training still ran
    assert all(running for running, _, _ in live), seen  # every live page: the training had not closed its store
    ks = [k for _, k, _ in live]
    assert len(set(ks)) >= 2 and ks == sorted(ks), seen  # rebuilt as snapshots arrived, never going back
    assert ks == [1, 2] and all(of == 2 for _, _, of in live), seen  # of the schedule's 2 snapshots, one page each
    assert [state for _, state, _, _ in seen] == ["live", "live", None], seen  # no other page in between
    assert seen[-1][1] is None  # the final report has no live banner
    final = (run / "report.html").read_bytes()
    assert b'id="tt-live"' not in final and b"location.reload" not in final
    assert not (run / LIVE_CACHE).exists()
    assert child_code == 0  # the training closed its store and ended normally
    from topotrace.cli import main

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    assert main(["report", str(run)]) == 0  # the command's own code, in this process
    assert (run / "report.html").read_bytes() == final


def test_killed_training_ends_watch_with_one_line_and_a_valid_report(tmp_path):
    """SIGKILL of the training: watch exits 1 with one error line; the last report says stopped and stays whole.

    The training records its first snapshot and waits at its gate, where the test kills it."""
    run = tmp_path / "w"
    child = _child(run / "store.h5", steps=1000, gate=_open_gate(tmp_path / "gate", 1))
    watcher = _watch(run, "--stall", "60")
    try:
        seen = _poll(run / "report.html", watcher, child, until=lambda s: any(st == "live" for _, st, _, _ in s))
        assert seen and seen[-1][1] == "live", seen
        assert seen[-1][2:] == (1, 1001), seen  # snapshot 1 of the schedule's 1001
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        out, err = watcher.communicate(timeout=120)
    finally:
        _stop(child, watcher)
    assert watcher.returncode == 1
    assert out == ""
    lines = err.strip().splitlines()
    assert [line for line in lines if line.startswith("topotrace:")] == [lines[-1]]
    assert lines[-1].startswith(f"topotrace: error: {run}: the recording stopped without closing its store (killed)")
    assert lines[-1] == (f"topotrace: error: {run}: the recording stopped without closing its store (killed) after 1 "
                         "snapshots (last step 0); the report shows them, and resuming the run records the rest.")
    text = _read_whole(run / "report.html")
    assert LIVE.search(text)[1] == "stopped" and "location.reload" not in text
    assert "snapshot 1 of 1001 (step 0)" in text


def test_stalled_run_is_shown_and_ends_watch(tmp_path):
    """A training that stops committing snapshots (held at its gate after its first, then SIGSTOP) counts as
    stalled after --stall seconds."""
    run = tmp_path / "s"
    child = _child(run / "store.h5", steps=1000, gate=_open_gate(tmp_path / "gate", 1))
    t0 = time.monotonic()
    # the stall clock starts at the store's first snapshot: watch starts once it is committed
    while ((state := read_state(run / "store.h5")) is None or state.n_snapshots < 1) and time.monotonic() - t0 < 60:
        time.sleep(0.05)
    assert state is not None and (state.writer, state.n_snapshots) == ("live", 1), state
    watcher = _watch(run, "--stall", "2")
    try:
        seen = _poll(run / "report.html", watcher, child, until=lambda s: any(st == "live" for _, st, _, _ in s))
        assert seen and seen[-1][1] == "live", seen
        child.send_signal(signal.SIGSTOP)
        out, err = watcher.communicate(timeout=120)
    finally:
        _stop(child, watcher)
    assert watcher.returncode == 1 and out == ""
    assert re.fullmatch(rf"topotrace: error: {re.escape(str(run))}: stalled: no snapshot for 2 s after \d+ snapshots "
                        r"\(last step \d+\); stopped following it\.", err.strip().splitlines()[-1])
    assert err.strip().splitlines()[-1].endswith(": stalled: no snapshot for 2 s after 1 snapshots (last step 0); "
                                                 "stopped following it.")
    text = _read_whole(run / "report.html")
    assert LIVE.search(text)[1] == "stalled" and "location.reload" not in text
    assert "No snapshot for 2 s: the last is snapshot 1 of 1001 (step 0)" in text


def test_expected_snapshots_from_the_schedule():
    """The schedule's snapshot count, from its repr and total_steps, or None when the metadata cannot tell."""
    from topotrace.instrument.schedules import at_steps, every, log_spaced, per_epoch

    for schedule, total in ((every(5), 23), (every(4, start=2), 20), (per_epoch(7), 35), (per_epoch(3, every=2), 30),
                            (log_spaced(1000, 60), None), (at_steps([0, 3, 9]), None)):
        want = sum(bool(schedule(s)) for s in range(int(total or 1000) + 1))
        assert expected_snapshots({"schedule": repr(schedule), "total_steps": total}) == want, schedule
    assert expected_snapshots({"schedule": repr(every(5))}) is None  # no total_steps
    assert expected_snapshots({"schedule": repr(at_steps(range(0, 100, 5)))}) is None  # the repr elides steps
    assert expected_snapshots({"schedule": "my_schedule"}) is None


def test_live_context_words():
    state = StoreState("live", 3, 20, 1700000000.0, 7)
    live = live_context(state, "live", reload_s=7)
    assert live["reload_s"] == 7 and "snapshot 3 of 7 (step 20), recorded 2023-11-14 22:13:20 UTC" in live["text"]
    assert live_context(state, "stopped")["reload_s"] == 0 and live_context(state, "stalled")["reload_s"] == 0
    closing = live_context(state, "closing", reload_s=4)
    assert closing["reload_s"] == 4 and "finished recording: snapshot 3 of 7" in closing["text"]
    with pytest.raises(ValueError, match="'status' parameter"):
        live_context(state, "paused")


@pytest.mark.parametrize(("option", "value"), [("--stall", "0"), ("--poll", "nan"), ("--reload", "0"),
                                               ("--nice", "20"), ("--nice", "-1")])
def test_bad_options_one_line(tmp_path, option, value, capsys):
    from topotrace.cli import main

    assert main(["watch", str(tmp_path / "r"), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"topotrace: error: The '{option}' option must be")


def _recorded_store(path: Path) -> Path:
    """A tiny store of 6 snapshots recorded in this process (the same model as the child's, no pauses)."""
    import torch
    from torch import nn

    from topotrace.instrument.recorder import ProbeSet, Recorder
    from topotrace.instrument.schedules import every

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 3))
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with Recorder(model, path, layers=["0", "2"], probes=[ProbeSet("heldout", x[:60], y[:60])],
                  class_names=["a", "b", "c"], schedule=every(1), meta={"total_steps": 9}) as rec:
        for step in range(6):
            if step:
                loss = nn.functional.cross_entropy(model(x[60:]), y[60:])
                opt.zero_grad()
                loss.backward()
                opt.step()
            rec.step(step)
    return path


@pytest.fixture(scope="module")
def live_page(tmp_path_factory):
    """The live page (reloading every 8 s) of a store of 6 snapshots recorded in this process, written by
    live_report with bokeh's document validation at bokeh's default, for the two tests below.

    Attributes of the namespace: ``store``, ``context`` (the banner), ``page`` (its path) and ``text`` (its bytes as
    written), ``took`` (the rebuild's timings), and bokeh's validation setting as (is set, value) ``before`` and
    ``after`` the rebuild and its value ``during`` each page build."""
    from types import SimpleNamespace

    from bokeh.settings import settings

    from topotrace.live import live_report
    from topotrace.report_templates import generate

    store = _recorded_store(tmp_path_factory.mktemp("live") / "run" / "store.h5")
    context = live_context(read_state(store), "live", reload_s=8)
    validation = settings.perform_document_validation
    build_report = generate.build_report
    during: list[bool] = []

    def recording(*args, **kwargs):  # the setting while live_report builds its page
        during.append(validation())
        return build_report(*args, **kwargs)

    took: dict[str, float] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", EPOCH)
        mp.delenv("BOKEH_VALIDATE_DOC", raising=False)  # bokeh's default here (the suite turns it off)
        mp.setattr(generate, "build_report", recording)
        before = (validation.is_set, validation())
        page = live_report(store, context, took)
        after = (validation.is_set, validation())
    return SimpleNamespace(store=store, context=context, page=page, text=page.read_bytes(), took=took,
                           before=before, during=during, after=after)


def test_live_page_without_bokeh_validation_is_the_same_page(live_page, tmp_path, monkeypatch):
    """A live rebuild skips bokeh's document validation: the page is byte for byte the validated one, the
    rebuild's timings are given, and the setting is the caller's again afterwards (unset, or the value the caller
    set: those two rebuilds record the setting while the page would be built, and build no page)."""
    from bokeh.settings import settings

    from topotrace.analysis.findings import run_findings
    from topotrace.live import analyse_live, live_report
    from topotrace.report_templates import generate

    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)
    monkeypatch.delenv("BOKEH_VALIDATE_DOC", raising=False)  # bokeh's default here (the suite turns it off)
    store, context = live_page.store, live_page.context
    validation = settings.perform_document_validation
    assert live_page.before == (False, True)  # unset: validation on
    assert live_page.during == [False]  # the page was built without validation ...
    assert live_page.after == (False, True)  # ... and the setting unset again: validation on as before
    took = live_page.took
    assert set(took) == {"analysis", "page"} and all(t > 0 for t in took.values())
    results = analyse_live(store)
    assert not validation.is_set and validation()
    validated = generate.build_report(results, tmp_path / "validated.html", run_findings(results), index=None,
                                      live=context)
    assert validated.read_bytes() == live_page.text
    during: list[bool] = []

    def not_built(results, out, *args, **kwargs):  # the page itself was compared above
        during.append(validation())
        return out

    monkeypatch.setattr(generate, "build_report", not_built)
    for value in (False, True):  # a value the caller set is kept
        validation.set_value(value)
        try:
            live_report(store, context)
            assert validation() is value and (value or validation.is_set)  # bokeh: True, its default, is not "set"
        finally:
            validation.unset_value()
    assert during == [False, False]


@pytest.mark.browser
def test_live_page_reloads_and_keeps_the_readers_place(live_page, browser):
    """In Chromium, offline: a live page renders without console errors, reloads itself, and after the reload
    shows the same snapshot (slider and step label) at the same scroll position.

    The page runs on Playwright's clock (time flows as usual): once the reader is done, the test runs the clock
    past the page's own reload timer (8 s after the page was ready) instead of waiting for it."""
    from types import SimpleNamespace

    from bench.browser import open_offline

    state = read_state(live_page.store)
    assert (state.n_snapshots, state.expected) == (6, 10)
    assert live_page.context["reload_s"] == 8 and live_page.page.read_bytes() == live_page.text

    def clocked_page(**options):  # a page whose timers the test can run forward, installed before it loads
        page = browser.new_page(**options)
        page.clock.install()
        return page

    page, blocked, errors = open_offline(SimpleNamespace(new_page=clocked_page), live_page.page)
    page.wait_for_function("window.topotraceLiveRestored === true")
    assert "snapshot 6 of 10 (step 5)" in page.locator("#tt-live").inner_text()
    slider = "Bokeh.documents[0].get_model_by_name('time_slider')"
    label = "Bokeh.documents[0].get_model_by_name('step_label').text"
    assert page.evaluate(f"{slider}.value") == 5  # opens at the newest snapshot
    page.evaluate(f"{slider}.value = 2")  # the reader goes back to step 2 ...
    page.locator("section#maps").scroll_into_view_if_needed()
    page.evaluate("window.scrollBy(0, 137)")  # ... and somewhere into the maps
    before = (page.evaluate(label), page.evaluate("window.scrollY"))
    assert "step 2 " in before[0] and before[1] > 500
    page.evaluate("window.ttReaderWasHere = true")  # gone with the document when the page reloads
    with page.expect_event("load", timeout=30_000):  # the page's own reload, 8 s after it was ready
        page.clock.fast_forward(8_000)
    page.wait_for_function("window.topotraceLiveRestored === true")
    assert page.evaluate("window.ttReaderWasHere === undefined")  # a new document: the page did reload
    page.wait_for_function(f"Math.abs(window.scrollY - {before[1]}) <= 1", timeout=5_000)
    assert page.evaluate(f"{slider}.value") == 2
    assert page.evaluate(label) == before[0]
    assert blocked == [] and errors == []


def test_new_only_waits_for_the_store_that_replaces_the_old_one(tmp_path):
    """With new_only (make train WATCH=1 OVERWRITE=1), an old closed store is not reported; its replacement is."""
    import threading

    from topotrace.instrument.synthetic import write_synthetic_store
    from topotrace.live import Watcher

    run = tmp_path / "r"
    write_synthetic_store(run / "store.h5", n_snapshots=2, layer_sizes=(5,), n_classes=3, per_class=4)
    lines: list[str] = []
    watcher = Watcher(run, stall_s=60, poll_s=0.05, say=lines.append, new_only=True)

    def replace():
        time.sleep(0.5)
        (run / "store.h5").unlink()  # as train --overwrite removes the old run
        write_synthetic_store(run / "store.h5", n_snapshots=3, layer_sizes=(5,), n_classes=3, per_class=4)

    t = threading.Thread(target=replace)
    t.start()
    t0 = time.monotonic()
    (result,) = watcher.run()
    t.join()
    assert time.monotonic() - t0 >= 0.5  # the old store did not end the watch at once
    assert result.end == "done" and "after 3 snapshots" in result.line


def test_a_closed_store_gets_every_snapshot_first_then_the_final_report(tmp_path, monkeypatch):
    """When the writer has closed the store and the live page shows fewer snapshots, watch first writes a quick
    page of every snapshot ("Recording closed.", reloading, fast layouts, computed on one thread) and then the
    final report (the code of topotrace report, with the default threads)."""
    from threadpoolctl import threadpool_info, threadpool_limits

    from topotrace import live
    from topotrace.instrument.synthetic import write_synthetic_store

    run = tmp_path / "r"
    write_synthetic_store(run / "store.h5", n_snapshots=4, layer_sizes=(6,), n_classes=3, per_class=4)
    threads: list[int] = []
    analyse_live = live.analyse_live

    def counting(store):
        threads.extend(p["num_threads"] for p in threadpool_info())
        return analyse_live(store)

    pages: list[str] = []
    final_report = live.final_report

    def final(store):
        pages.append((run / "report.html").read_text(encoding="utf-8"))  # what the reader sees just before
        threads.append(-max(p["num_threads"] for p in threadpool_info()))
        return final_report(store)

    monkeypatch.setattr(live, "analyse_live", counting)
    monkeypatch.setattr(live, "final_report", final)
    lines: list[str] = []
    with threadpool_limits(limits=2):  # the caller's threads (one per xdist worker) are not the live ones
        (result,) = live.Watcher(run, stall_s=60, poll_s=0.05, say=lines.append).run()
    assert result.end == "done" and "after 4 snapshots" in result.line
    (page,) = pages
    assert 'class="tt-note tt-live-closing"' in page and "Recording closed." in page and "location.reload" in page
    assert "snapshot 4 (step" in page
    assert threads[:-1] and set(threads[:-1]) == {1}  # the live analysis on one thread
    assert -threads[-1] == 2  # the final one with the caller's threads, as topotrace report
    assert any(": snapshot 4 (step" in line for line in lines)
    final_page = (run / "report.html").read_text(encoding="utf-8")
    assert 'id="tt-live"' not in final_page and not (run / live.LIVE_CACHE).exists()
