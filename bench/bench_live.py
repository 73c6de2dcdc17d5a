"""``topotrace watch`` beside the default run (``make train WATCH=1``), against the training alone (same run).

1. The training's wall time with ``topotrace watch`` beside it / the training alone, alternating (alone, with
   watch, alone, with watch, ...; ``REPEATS`` of each), each a subprocess
   ``topotrace train --config configs/digits.toml --name NAME --out-dir TMP``; with watch as ``make train WATCH=1``
   runs it: ``topotrace site TMP`` first (so the live report links to the index and watch refreshes it), then
   ``topotrace watch TMP/NAME`` started just before the training. Target: <= 1.2 on the 2-core machine.
2. The delay from a snapshot to the report that shows it. A thread polls ``report.html`` (every 50 ms) and, each
   time the file was replaced, reads the live banner's "snapshot k of N" (:func:`topotrace.live.live_context`)
   from the new page (the final report, without a banner, shows every snapshot). The snapshot's time is the
   store's ``time`` of it (:attr:`topotrace.instrument.store.Store.times`: the probe pass, taken just before the
   snapshot is written and committed, so the delays are upper bounds by the writing time), the report's time its
   file's modification time. Two figures, median and 90th percentile of each:

   * per rebuild: a live report that shows k snapshots, from snapshot k's time;
   * per snapshot: every snapshot, until the first report that shows it (snapshots committed during a rebuild
     wait for the next one, which shows the newest; the last ones are shown by the final report).

   Target: median <= 15 s. Also: the rebuilds' count and durations (watch's own lines), and the time from the
   end of the training to the final report.

The figures of docs/live.md use the default config. For a quick check, ``TOPOTRACE_BENCH_LIVE_EPOCHS=3`` trains
fewer epochs (the same 60 snapshots, log-spaced over fewer steps) and ``TOPOTRACE_BENCH_LIVE_REPEATS=1`` runs
each side once: ``TOPOTRACE_BENCH_LIVE_EPOCHS=3 python -m bench bench_live``; ``TOPOTRACE_BENCH_LIVE_WATCH_ARGS``
adds options to ``topotrace watch`` (``"--nice 0"``).
"""

from __future__ import annotations

import html
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from topotrace.instrument.store import Store

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "configs/digits.toml"
REPEATS = int(os.environ.get("TOPOTRACE_BENCH_LIVE_REPEATS", "2"))
EPOCHS = os.environ.get("TOPOTRACE_BENCH_LIVE_EPOCHS", "")  # "": the config's
WATCH_ARGS = os.environ.get("TOPOTRACE_BENCH_LIVE_WATCH_ARGS", "").split()  # e.g. "--nice 0"
POLL_S = 0.05
WATCH_END_S = 600.0  # the longest wait for watch's final report after the training ended
BANNER = re.compile(r'<div id="tt-live"[^>]*>(.*?)</div>', re.S)
SNAPSHOT = re.compile(r"snapshot (\d+)(?: of (\d+))?")
REBUILD = re.compile(r": snapshot (\d+)(?: of \d+)? \(step -?\d+\) -> .* \((\d+(?:\.\d+)?) s(?:\)|: )")
PHASES = re.compile(r"analysis (\d+(?:\.\d+)?) s, page (\d+(?:\.\d+)?) s, site index (\d+(?:\.\d+)?) s\)$")


def _topotrace(*args: str) -> list[str]:
    return [sys.executable, "-m", "topotrace", *args]


def _train_args(out_dir: Path, name: str) -> list[str]:
    args = ["train", "--config", CONFIG, "--name", name, "--out-dir", str(out_dir)]
    return _topotrace(*args, *(["--epochs", EPOCHS] if EPOCHS else []))


def _train(out_dir: Path, name: str) -> float:
    """Run the training; returns its wall time in seconds."""
    t0 = time.perf_counter()
    subprocess.run(_train_args(out_dir, name), cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def _span(store: Path) -> float:
    """Seconds from the first snapshot to the last (the recording, without start-up and close)."""
    with Store(store) as st:
        times = st.times
    return float(times[-1] - times[0])


def shown_count(page: str) -> int | None:
    """The snapshot count a report page shows by its live banner; ``None``: no banner (a final report)."""
    m = BANNER.search(page)
    if m is None:
        return None
    k = SNAPSHOT.search(html.unescape(m.group(1)))
    return int(k.group(1)) if k else 0


@dataclass
class _Poller:
    """Follows ``path``: (modification time, snapshots shown or ``None`` for a final page) of each new version."""

    path: Path
    seen: list[tuple[float, int | None]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        last = None
        while not self.stop.is_set():
            try:
                st = self.path.stat()
                ident = (st.st_ino, st.st_mtime_ns)
                if ident != last:
                    page = self.path.read_text(encoding="utf-8")
                    if os.stat(self.path).st_ino == st.st_ino:  # not replaced while being read
                        last = ident
                        self.seen.append((st.st_mtime_ns / 1e9, shown_count(page)))
            except OSError:
                pass
            time.sleep(POLL_S)


@dataclass
class _Watched:
    wall: float  # the training's wall time, s
    rebuild_delays: list[float]  # per live rebuild, s
    snapshot_delays: list[float]  # per snapshot, s
    rebuilds: list[float]  # watch's own durations of its live rebuilds, s
    final_after: float  # from the end of the training to watch's exit (the final report written), s
    n_snapshots: int
    span: float  # first to last snapshot, s
    phases: list[tuple[float, float, float]]  # per live rebuild: analysis, page, site index, s


def _with_watch(out_dir: Path, name: str) -> _Watched:
    out_dir.mkdir(parents=True)
    subprocess.run(_topotrace("site", str(out_dir)), cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    run_dir = out_dir / name
    poller = _Poller(run_dir / "report.html")
    thread = threading.Thread(target=poller.run, daemon=True)
    thread.start()
    log = out_dir / "watch.log"
    with open(log, "w") as err:
        watch = subprocess.Popen(_topotrace("watch", str(run_dir), *WATCH_ARGS), cwd=ROOT, stdout=subprocess.DEVNULL,
                                 stderr=err)
        try:
            wall = _train(out_dir, name)
            t_end = time.perf_counter()
            code = watch.wait(WATCH_END_S)
            final_after = time.perf_counter() - t_end
        finally:
            if watch.poll() is None:
                watch.kill()
                watch.wait()
    time.sleep(5 * POLL_S)
    poller.stop.set()
    thread.join()
    lines = log.read_text(encoding="utf-8").splitlines()
    if code != 0:
        raise RuntimeError(f"topotrace watch exited with {code}: {lines[-3:]}")
    with Store(run_dir / "store.h5") as st:
        times = np.asarray(st.times, dtype=np.float64)
    n = len(times)
    live = [(t, k) for t, k in poller.seen if k]
    final = [t for t, k in poller.seen if k is None]
    if not final:
        raise RuntimeError("the poller never saw the final report")
    rebuild_delays = [t - times[k - 1] for t, k in live]
    shows = sorted(live + [(final[-1], n)])
    snapshot_delays = [next(t for t, k in shows if k >= i) - times[i - 1] for i in range(1, n + 1)]
    rebuilds = [float(m.group(2)) for line in lines if (m := REBUILD.search(line))]
    phases = [tuple(float(x) for x in m.groups()) for line in lines if (m := PHASES.search(line))]
    return _Watched(wall, rebuild_delays, snapshot_delays, rebuilds, final_after, n, float(times[-1] - times[0]),
                    phases)


def _spread(values: list[float]) -> str:
    if not values:
        return "none"
    return (f"median {statistics.median(values):.1f} s, 90th percentile {np.percentile(values, 90):.1f} s, "
            f"max {max(values):.1f} s (n = {len(values)})")


def main() -> None:
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores; "
          f"config {CONFIG}" + (f" with --epochs {EPOCHS}" if EPOCHS else "")
          + (f"; watch {' '.join(WATCH_ARGS)}" if WATCH_ARGS else ""), flush=True)
    alone: list[float] = []
    watched: list[_Watched] = []
    with tempfile.TemporaryDirectory() as d:
        for i in range(REPEATS):
            alone.append(_train(Path(d) / f"alone{i}", "digits"))
            span = _span(Path(d) / f"alone{i}" / "digits" / "store.h5")
            print(f"  alone {i + 1}: {alone[-1]:.1f} s (first to last snapshot {span:.1f} s), load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
            w = _with_watch(Path(d) / f"watch{i}", "digits")
            watched.append(w)
            print(f"  with watch {i + 1}: {w.wall:.1f} s (first to last snapshot {w.span:.1f} s), "
                  f"{len(w.rebuilds)} live rebuilds ("
                  + ", ".join(f"{r:.1f} s" + (" = analysis {:.1f} + page {:.1f} + site {:.1f}".format(*p) if p else "")
                              for r, p in zip(w.rebuilds, w.phases + [()] * len(w.rebuilds)))
                  + f"), final report {w.final_after:.1f} s after the training, load average "
                  f"{os.getloadavg()[0]:.2f}", flush=True)
    a, b = statistics.median(alone), statistics.median([w.wall for w in watched])
    print(f"training with watch / alone: {b:.1f} s / {a:.1f} s = {b / a:.2f} (target <= 1.2; medians of {REPEATS}: "
          f"alone {', '.join(f'{x:.1f}' for x in alone)} s; with watch "
          f"{', '.join(f'{w.wall:.1f}' for w in watched)} s)")
    per_rebuild = [x for w in watched for x in w.rebuild_delays]
    per_snapshot = [x for w in watched for x in w.snapshot_delays]
    print(f"delay snapshot -> live report showing it, per rebuild: {_spread(per_rebuild)} (target median <= 15 s)")
    print(f"delay snapshot -> first report showing it, per snapshot: {_spread(per_snapshot)}")
    print(f"live rebuild duration (watch's lines): {_spread([x for w in watched for x in w.rebuilds])}")
    print(f"final report after the training ended: {', '.join(f'{w.final_after:.1f}' for w in watched)} s")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
