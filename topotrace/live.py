"""Following runs while they record (``topotrace watch``): a report and site index that follow the store.

:func:`watch` polls each followed store (its committed snapshot count and whether its writer is live, closed
or killed; :func:`topotrace.instrument.store.writer_state`) and, whenever snapshots were committed since the last
report, rebuilds the run's analysis and report and the site index. Rules:

* **One rebuild at a time, the newest state wins**: the loop rebuilds one run at a time; a rebuild describes the
  store as it is when the rebuild starts, and snapshots committed meanwhile are shown by the next one (the
  snapshots in between are never shown one by one).
* **Never a half-written file**: every file is written to a temporary file and renamed over the old one
  (:func:`topotrace.report_templates.outputs.atomic_output` for the pages, the analysis cache's ``.writing``
  file), so a reader sees the previous file or the next, never a part.
* **The live page** (``build_report(..., live=...)``, :func:`live_context`) says that it is live: snapshot k of
  the schedule's count (when the store's metadata tells it, :func:`expected_snapshots`) and the time of the last
  snapshot; it reloads itself every ``reload_s`` seconds over ``file://`` (no server), keeping the reader's
  place (scroll position, open details, the layer, the snapshot slider unless it was at the newest snapshot).
* **The end**: when the writer closes the store, the final report is written by the code of ``topotrace report``
  (:func:`final_report`), so it equals what ``topotrace report`` gives on the finished run (no live banner, no
  reload). A writer that was killed, or a store without a new snapshot for ``stall_s`` seconds, gets a last
  report that says so (no reload) and ends the watch of that run with one line.

* **Light while live**: a live rebuild extends the cached live analysis by the new snapshots
  (:func:`analyse_live`, the incremental :func:`topotrace.analysis.pipeline.analyze`) with the fast layouts only,
  and renders the page without bokeh's document validation (:func:`_unvalidated`; it only checks the figures and
  logs, the page is the same); the heavy modules are imported while the store does not exist yet
  (:func:`_warm`), so the first rebuild does not pay for them. Watch runs at a lower CPU priority (``--nice``, default
  :data:`NICE`) and a live rebuild's numerical libraries use :data:`LIVE_THREADS` thread (:func:`_one_thread`),
  so that the training keeps the processor. Its line per rebuild says where the time went (analysis, page, site
  index); docs/live.md has the measured figures (bench/bench_live.py).
* **Closing**: a store closed while the live page shows fewer snapshots first gets a quick page of every snapshot
  (banner "Recording closed.", still reloading), then the final report.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .instrument.store import STORE_FILE, Store, StoreError, writer_state
from .runfolder import INDEX_FILE, LIVE_ANALYSIS_FILE, REPORT_FILE

STALL_S = 120.0  # seconds without a new snapshot after which a live run counts as stalled
POLL_S = 1.0  # seconds between two looks at the stores
RELOAD_S = 10  # seconds after which a live page reloads itself
# While live, the layouts are the fast ones (t-SNE alone took 7 of the 8 s of a 2-layer store's analysis); the
# final report computes every default layout. Live analyses are cached apart, so analysis.h5 is always a final one.
LIVE_LAYOUTS = ("force", "pca")
LIVE_CACHE = LIVE_ANALYSIS_FILE
LIVE_THREADS = 1  # threads of a live rebuild's numerical libraries (the final report uses the defaults)
NICE = 19  # watch's default CPU priority decrease (topotrace watch --nice): the training keeps the processor

Say = Callable[[str], None]


@dataclass(frozen=True)
class StoreState:
    """What a store says now.

    Attributes:
        writer: ``"live"``, ``"closed"`` or ``"killed"`` (:func:`topotrace.instrument.store.writer_state`).
        n_snapshots: committed snapshots k.
        last_step: the step of the last committed snapshot (``None`` without one).
        last_time: when it was recorded, seconds since the Unix epoch (``None`` without one).
        expected: the snapshots the schedule asks for over the whole run, when the metadata tells it.
    """

    writer: str
    n_snapshots: int
    last_step: int | None
    last_time: float | None
    expected: int | None


def expected_snapshots(meta: dict[str, object]) -> int | None:
    """The snapshot count a run's schedule asks for, from the store's metadata; ``None`` when it does not say.

    Read from the schedule's ``repr`` (``meta["schedule"]``): ``log_spaced(T, n)`` by itself; ``every(n)``,
    ``every(n, start=s)`` and ``per_epoch(E)``, ``per_epoch(E, every=k)`` with ``meta["total_steps"]`` (written by
    ``topotrace train``); ``at_steps([...])`` when every step is listed.
    """
    text = str(meta.get("schedule", ""))
    total = meta.get("total_steps")
    total = int(total) if isinstance(total, (int, float)) and not isinstance(total, bool) and total >= 0 else None
    if m := re.fullmatch(r"log_spaced\((\d+), (\d+)\)", text):
        from .instrument.schedules import log_spaced

        return len(log_spaced(int(m[1]), int(m[2])).steps)
    if m := re.fullmatch(r"every\((\d+)(?:, start=(\d+))?\)", text):
        n, start = int(m[1]), int(m[2] or 0)
        return len(range(start, total + 1, n)) if total is not None and n > 0 else None
    if m := re.fullmatch(r"per_epoch\((\d+)(?:, every=(\d+))?\)", text):
        n = int(m[1]) * int(m[2] or 1)
        return len(range(0, total + 1, n)) if total is not None and n > 0 else None
    if (m := re.fullmatch(r"at_steps\(\[([\d, ]*)\]\)", text)) and "..." not in text:
        return len([s for s in m[1].split(",") if s.strip()])
    return None


def read_state(store: Path) -> StoreState | None:
    """The store's state now; ``None`` while it is not (yet) a readable store (being created, or missing)."""
    try:
        writer = writer_state(store)
        with Store(store) as st:
            n = st.n_snapshots
            return StoreState(writer, n, int(st.steps[-1]) if n else None, float(st.times[-1]) if n else None,
                              expected_snapshots(st.meta))
    except (OSError, StoreError):
        return None


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(t))


def live_context(state: StoreState, status: str = "live", reload_s: int = RELOAD_S,
                 stall_s: float = STALL_S) -> dict[str, object]:
    """The ``live`` context of :func:`topotrace.report_templates.generate.build_report` for a run not yet done.

    Args:
        state: the store's state the report shows.
        status: ``"live"`` (the page reloads itself every ``reload_s`` s), ``"closing"`` (the writer closed the
            store; the page shows every snapshot until the final report replaces it, and reloads), ``"stalled"``
            (no snapshot for ``stall_s`` s) or ``"stopped"`` (the writer was killed); the last two do not reload.
        reload_s: seconds between reloads of a live page.
        stall_s: the stall time, for the words.
    """
    of = f" of {state.expected}" if state.expected else ""
    where = (f"snapshot {state.n_snapshots}{of} (step {state.last_step:,}), recorded {_utc(state.last_time)}"
             if state.n_snapshots else "no snapshot yet")
    if status == "live":
        return {"state": "live", "title": "Live.", "reload_s": int(reload_s),
                "text": f"The run is recording: {where}. This page reloads itself every {int(reload_s)} s while "
                        "`topotrace watch` follows the run; the final report replaces it when recording ends. "
                        f"Layouts while live: {' and '.join(LIVE_LAYOUTS)} only (provisional; the final report "
                        "computes every layout method)."}
    if status == "closing":
        return {"state": "closing", "title": "Recording closed.", "reload_s": int(reload_s),
                "text": f"The run finished recording: {where}. This page shows every snapshot with the fast layouts "
                        f"({' and '.join(LIVE_LAYOUTS)}); the final report, with every layout method, replaces it "
                        f"in a moment (this page reloads itself every {int(reload_s)} s until then)."}
    if status == "stalled":
        return {"state": "stalled", "title": "Stalled.", "reload_s": 0,
                "text": f"No snapshot for {stall_s:g} s: the last is {where}. `topotrace watch` stopped following "
                        "the run; `topotrace report` (or `topotrace watch` again) shows later snapshots."}
    if status == "stopped":
        return {"state": "stopped", "title": "Stopped.", "reload_s": 0,
                "text": f"The recording ended without closing its store (the training process was killed): the "
                        f"last is {where}. This report shows those snapshots; resuming the run records the rest."}
    raise ValueError(f"The 'status' parameter must be 'live', 'closing', 'stalled' or 'stopped'. Got {status!r} "
                     "instead.")


@contextlib.contextmanager
def _unvalidated():
    """Render without bokeh's document validation (checks that log warnings; the written page is the same).

    About a fifth of the rendering time of a live page; the final report is rendered as ``topotrace report`` does.
    """
    from bokeh.settings import settings

    setting = settings.perform_document_validation
    was = setting() if setting.is_set else None  # a value someone set stays set afterwards
    setting.set_value(False)
    try:
        yield
    finally:
        if was is None:
            setting.unset_value()
        else:
            setting.set_value(was)


def _warm() -> None:
    """Import what a rebuild needs (analysis, findings, page rendering), once, before the first snapshot."""
    from .analysis import (
        findings,  # noqa: F401
        pipeline,  # noqa: F401
    )
    from .report_templates import generate  # noqa: F401


@contextlib.contextmanager
def _one_thread():
    """Live rebuilds compute on one thread (numpy's BLAS, OpenMP), leaving the other cores to the training."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=LIVE_THREADS):
        yield


def analyse_live(store: Path):
    """The analysis a live report shows: the store as it is, with the fast layouts (:data:`LIVE_LAYOUTS`).

    Cached in :data:`LIVE_CACHE` next to the store (``analysis.h5`` stays the final analysis's); each call
    extends the cached analysis by the snapshots committed since (the incremental analysis of
    :func:`topotrace.analysis.pipeline.analyze`).
    """
    from .analysis.pipeline import analyze

    return analyze(store, store.parent / LIVE_CACHE, layout_methods=list(LIVE_LAYOUTS))


def live_report(store: Path, context: dict[str, object], timings: dict[str, float] | None = None) -> Path:
    """Analyse ``store`` and write its report with the ``live`` banner (atomically); returns the report's path.

    Args:
        store: the store file.
        context: the banner (:func:`live_context`).
        timings: when given, gets the seconds of ``"analysis"`` and ``"page"`` (findings and rendering).
    """
    from .analysis.findings import run_findings
    from .report_templates.generate import build_report
    from .site import site_index_for

    t0 = time.perf_counter()
    with _one_thread():
        results = analyse_live(store)
        t1 = time.perf_counter()
        out = store.parent / REPORT_FILE
        with _unvalidated():
            path = build_report(results, out, run_findings(results), index=site_index_for(out), live=context)
    if timings is not None:
        timings.update(analysis=t1 - t0, page=time.perf_counter() - t1)
    return path


def final_report(store: Path) -> Path:
    """Write the finished run's report as ``topotrace report STORE`` does (the same code, its defaults)."""
    from .reports import report

    return Path(report(store))


def site_root(store: Path, folder: Path | None) -> Path | None:
    """The runs folder whose site index follows the run: the watched folder, or an index above the run folder."""
    if folder is not None:
        return folder
    from .site import site_index_for

    link = site_index_for(store.parent / REPORT_FILE)
    return None if link is None else (store.parent / link).parent.resolve()


@dataclass
class _Run:
    store: Path
    since: float = field(default_factory=time.monotonic)  # when the current committed count was first seen
    count: int = -1  # the committed count seen last
    shown: int = 0  # the committed count the last live report shows
    end: str | None = None  # "done", "stopped" or "stalled"
    line: str = ""
    old: tuple[int, int] | None = None  # with new_only: the file that was there at the start, not followed


def _identity(store: Path) -> tuple[int, int] | None:
    """The store file's inode and modification time (None: no file): a replaced store has another."""
    try:
        st = store.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _stores_below(folder: Path) -> list[Path]:
    return sorted({*folder.glob(f"*/{STORE_FILE}"), *folder.glob(f"*/*/{STORE_FILE}")})


def is_runs_folder(target: Path) -> bool:
    """A folder of runs (watch every live run in it) rather than one run's folder."""
    if not target.is_dir() or (target / STORE_FILE).exists():
        return False
    return (target / INDEX_FILE).is_file() or bool(_stores_below(target))


class Watcher:
    """Follows one run (a run folder or store file) or every live run in a runs folder (see the module docstring).

    Args:
        target: the run folder, the store file, or the runs folder.
        stall_s: seconds without a new snapshot (or, before the store exists, without a store) after which a
            run counts as stalled.
        poll_s: seconds between two looks at the stores.
        reload_s: seconds after which a live page reloads itself.
        say: where progress lines go (one line each).
        new_only: a run's store that is there when watching starts and is not being recorded is an old one about
            to be replaced (``train --overwrite``): wait for the new one instead of reporting the old one.
    """

    def __init__(self, target: str | os.PathLike, stall_s: float = STALL_S, poll_s: float = POLL_S,
                 reload_s: int = RELOAD_S, say: Say | None = None, new_only: bool = False):
        self.target = Path(target)
        self.folder = self.target if is_runs_folder(self.target) else None
        self.stall_s, self.poll_s, self.reload_s = float(stall_s), float(poll_s), int(reload_s)
        self.say = say or (lambda line: print(line, file=sys.stderr))
        self.runs: dict[Path, _Run] = {}
        if self.folder is None:
            store = self.target if self.target.suffix == ".h5" or self.target.is_file() else self.target / STORE_FILE
            self.runs[store] = _Run(store)
            if new_only:
                with contextlib.suppress(OSError):
                    if store.is_file() and writer_state(store) != "live":
                        self.runs[store].old = _identity(store)
        self._started = time.monotonic()
        self._warmed = False

    def _discover(self) -> None:
        for store in _stores_below(self.folder):
            if store not in self.runs:
                with contextlib.suppress(OSError):
                    if writer_state(store) == "live":
                        self.runs[store] = _Run(store)
                        self.say(f"watch: following {store.parent}")

    def _site(self, store: Path) -> None:
        root = site_root(store, self.folder)
        if root is not None:
            from .site import write_site

            try:
                write_site(root)
            except (OSError, ValueError) as err:
                self.say(f"watch: the site index of {root} was not written: {err}")

    def _end(self, run: _Run, status: str, state: StoreState | None) -> None:

        try:
            self._last_report(run, status, state)
        finally:  # watch's own cache: the run folder is left as topotrace report leaves it
            (run.store.parent / LIVE_CACHE).unlink(missing_ok=True)

    def _last_report(self, run: _Run, status: str, state: StoreState | None) -> None:
        from .cli import visible

        run.end = status
        name = visible(run.store.parent)
        if status == "done":
            if state.n_snapshots > run.shown:  # first every snapshot, quickly; then the final report's layouts
                self._rebuild(run, state, "closing")
            out = final_report(run.store)
            self._site(run.store)
            run.line = f"{name}: recording closed after {state.n_snapshots} snapshots; final report {visible(out)}"
            return
        if state is not None and state.n_snapshots:
            with contextlib.suppress(Exception):  # the last report stays what it was if this one cannot be made
                live_report(run.store, live_context(state, status, self.reload_s, self.stall_s))
                self._site(run.store)
        where = (f"after {state.n_snapshots} snapshots (last step {state.last_step})" if state and state.n_snapshots
                 else "before its first snapshot")
        if status == "stopped":
            run.line = (f"{name}: the recording stopped without closing its store (killed) {where}; the report "
                        "shows them, and resuming the run records the rest.")
        elif state is None:
            run.line = (f"{name}: no store appeared at {visible(run.store)} for {self.stall_s:g} s; start the training "
                        "first, or give the run folder it records into.")
        else:
            run.line = f"{name}: stalled: no snapshot for {self.stall_s:g} s {where}; stopped following it."

    def _look(self, run: _Run) -> bool:
        """One look at ``run``'s store: rebuild or end it as its state says. Returns whether anything was written."""
        if run.old is not None and _identity(run.store) != run.old:
            run.old = None  # the old store of a run being replaced is gone: follow the new one
        state = read_state(run.store) if run.old is None else None
        now = time.monotonic()
        if state is None or state.n_snapshots != run.count:
            if state is not None:
                run.count = state.n_snapshots
            run.since = now if state is not None else run.since
        if state is None:
            if not self._warmed:  # while the training starts: the imports of the first rebuild, once
                self._warmed = True
                _warm()
            if now - run.since > self.stall_s:
                self._end(run, "stalled", None)
            return False
        if state.writer == "closed":
            self._end(run, "done", state)
            return True
        if state.writer == "killed":
            self._end(run, "stopped", state)
            return True
        if now - run.since > self.stall_s:
            self._end(run, "stalled", state)
            return True
        if state.n_snapshots > run.shown:
            return self._rebuild(run, state, "live")
        return False

    def _rebuild(self, run: _Run, state: StoreState, status: str) -> bool:
        """A live report of ``state`` (banner ``status``) and the site index; returns whether it was written."""
        from .cli import visible

        t0 = time.perf_counter()
        took: dict[str, float] = {}
        try:
            if run.shown == 0:
                self._site(run.store)  # first, so that the report links back to the index
            out = live_report(run.store, live_context(state, status, self.reload_s, self.stall_s), took)
        except (ValueError, OSError, StoreError) as err:
            self.say(f"watch: {visible(run.store.parent)}: snapshot {state.n_snapshots} not shown: "
                     f"{visible(' '.join(str(err).split()))}")
            run.shown = state.n_snapshots  # tried: wait for the next snapshot
            return False
        run.shown = state.n_snapshots
        t1 = time.perf_counter()
        self._site(run.store)
        t2 = time.perf_counter()
        of = f" of {state.expected}" if state.expected else ""
        self.say(f"watch: {visible(run.store.parent)}: snapshot {state.n_snapshots}{of} (step {state.last_step}) "
                 f"-> {visible(out)} ({t2 - t0:.1f} s: analysis {took['analysis']:.1f} s, page "
                 f"{took['page']:.1f} s, site index {t2 - t1:.1f} s)")
        return True

    def run(self) -> list[_Run]:
        """Follow until every followed run has ended; returns the runs with their ``end`` and ``line``."""
        while True:
            if self.folder is not None:
                self._discover()
                if not self.runs and time.monotonic() - self._started > self.stall_s:
                    return []
            wrote = False
            for run in [r for r in self.runs.values() if r.end is None]:
                wrote |= self._look(run)
            if self.runs and all(r.end is not None for r in self.runs.values()):
                return list(self.runs.values())
            if not wrote:
                time.sleep(self.poll_s)
