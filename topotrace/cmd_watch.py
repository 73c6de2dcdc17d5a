"""topotrace watch: follow a run while it records; its report and the site index follow the store.

``topotrace watch runs/NAME`` (or a store file) rebuilds the run's analysis and report.html, and the site index
above it when there is one, as snapshots are committed; the page says it is live and reloads itself (over
file://, no server), keeping the reader's place. When the recording closes the store, the final report (what
``topotrace report`` writes) replaces it and watch exits, printing the report's path. ``topotrace watch runs``
follows every run in the folder that is recording (and the site index of the folder). A run whose training was
killed, or that committed no snapshot for --stall seconds, gets a last report that says so and watch exits with
one line (exit code 1). --nice N lowers watch's CPU priority. The rules are in :mod:`topotrace.live` and
docs/live.md.
"""

from __future__ import annotations

import argparse
import math
import os

from .live import NICE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (runs/NAME: the store runs/NAME/store.h5, which may not exist yet), "
                                    "store file, or a runs folder (every run in it that records)")
    parser.add_argument("--stall", type=float, default=120.0, metavar="SECONDS",
                        help="a run without a new snapshot for this long counts as stalled (default: 120)")
    parser.add_argument("--poll", type=float, default=1.0, metavar="SECONDS",
                        help="seconds between two looks at the store (default: 1)")
    parser.add_argument("--new", action="store_true",
                        help="the run's store there now is being replaced (train --overwrite): follow the new one")
    parser.add_argument("--reload", type=int, default=10, metavar="SECONDS",
                        help="a live page reloads itself after this many seconds (default: 10)")
    parser.add_argument("--nice", type=int, default=NICE, metavar="N",
                        help=f"lower watch's CPU priority by N (0 to 19; default: {NICE}): the training "
                             "keeps the processor; the live report lags further behind on a machine busy with "
                             "other work (0: watch competes with the training)")


def run(args: argparse.Namespace) -> int:
    from .cli import CommandFailed, visible
    from .live import Watcher
    from .runfolder import REPORT_FILE

    for name, value, low in (("--stall", args.stall, 0.0), ("--poll", args.poll, 0.0)):
        if not (math.isfinite(value) and value > low):
            raise ValueError(f"The '{name}' option must be a number of seconds > 0. Got {value:g}.")
    if args.reload < 1:
        raise ValueError(f"The '--reload' option must be a whole number of seconds >= 1. Got {args.reload}.")
    if not 0 <= args.nice <= 19:
        raise ValueError(f"The '--nice' option must be a whole number from 0 to 19. Got {args.nice}.")
    if args.nice and hasattr(os, "nice"):
        os.nice(args.nice)
    watcher = Watcher(args.run, stall_s=args.stall, poll_s=args.poll, reload_s=args.reload, new_only=args.new)
    runs = watcher.run()
    if not runs:
        raise CommandFailed(f"No run in {visible(args.run)} recorded for {args.stall:g} s; start the training first "
                            "(or give one run's folder: topotrace watch runs/NAME).")
    failed = [r for r in runs if r.end != "done"]
    for r in runs:  # the report of every run that closed; with several runs, each failure's line too
        if r.end == "done":
            print(visible(r.store.parent / REPORT_FILE))
        elif len(runs) > 1:
            print(r.line)
    if len(failed) == 1 and len(runs) == 1:
        raise CommandFailed(failed[0].line)
    if failed:
        raise CommandFailed(f"{len(failed)} of {len(runs)} runs did not close their store (listed above).")
    return 0
