"""topotrace analyze: run (or load from cache) the offline analysis of a store and answer the study's question.

For each layer it prints the study's four claims (stronger / more class-distinct, with training time / with
confidence) with effect, 95 % interval, verdict and time course, and where the cached results are. The verdicts
are made from the cached numbers with the smallest effects of interest given here (--min-change, --min-r), so
changing them never needs a new analysis.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
from collections.abc import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from topotrace.analysis.collapse import DORMANT_TAU
from topotrace.analysis.findings import MIN_CHANGE, MIN_R, check_thresholds, run_findings, trend_findings
from topotrace.analysis.layouts import METHODS
from topotrace.analysis.pipeline import analyze
from topotrace.report_templates.words import (
    CLAIM_SHORT,
    VERDICT_STYLE,
    interval,
    interval_kind,
    number,
    percent,
    scope_note,
)

# None: the pipeline's own default (for the measure: logit_margin when the store has it)
ANALYSIS_DEFAULTS = {"probe_set": "heldout", "measure": None, "layouts": None, "n_bins": 5,
                     "dormant_tau": DORMANT_TAU}


def add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose what the analysis computes (shared by ``analyze`` and ``report``)."""
    parser.add_argument("--probe-set", default=None,
                        help="probe set the layer results describe (default: heldout)")
    parser.add_argument("--measure", default=None,
                        help="confidence measure that defines the confidence bins and leads the findings "
                             "(default: logit_margin when recorded, else the store's first measure)")
    parser.add_argument("--layouts", default=None, help=f"comma-separated layout methods among {', '.join(METHODS)} "
                        "(default: the fast ones for each layer's size)")
    parser.add_argument("--bins", type=int, default=None, dest="n_bins", metavar="N",
                        help="number of confidence bins (default: 5)")
    parser.add_argument("--dormant-tau", type=float, default=None, dest="dormant_tau", metavar="TAU",
                        help="a unit is dormant when its mean |activation| is at most TAU times the layer's mean "
                             f"(default: {DORMANT_TAU:g}, Sokar et al. 2023)")
    parser.add_argument("--refresh", action="store_true", help="recompute even if the cache is up to date")


def add_verdict_options(parser: argparse.ArgumentParser) -> None:
    """The smallest effects of interest of the verdicts (shared by ``analyze``, ``report`` and ``study``).

    They never change the analysis (no recomputation, no cache key): the verdicts are made from its numbers.
    """
    parser.add_argument("--min-change", type=float, default=None, dest="min_change", metavar="FRACTION",
                        help="smallest change of interest of the claims with training time, as a fraction of the "
                             f"first snapshot's mean: a change whose 95 %% interval lies inside ±FRACTION is "
                             f"negligible (default: {MIN_CHANGE:g}, i.e. {100 * MIN_CHANGE:g} %%; 0 turns it off)")
    parser.add_argument("--min-r", type=float, default=None, dest="min_r", metavar="R",
                        help="smallest correlation of interest of the claims with confidence: a partial Spearman "
                             f"correlation whose 95 %% interval lies inside ±R is negligible (default: {MIN_R:g}; "
                             "0 turns it off)")


def verdict_kwargs(args: argparse.Namespace) -> dict[str, float]:
    """``{"min_change", "min_r"}`` from the options of :func:`add_verdict_options` (defaults where not given).

    Raises:
        ValueError: a value that is not a number >= 0 (for --min-r also < 1), in one line.
    """
    min_change = MIN_CHANGE if getattr(args, "min_change", None) is None else args.min_change
    min_r = MIN_R if getattr(args, "min_r", None) is None else args.min_r
    if not (math.isfinite(min_change) and min_change >= 0):  # also NaN
        raise ValueError("The '--min-change' option must be a fraction >= 0 of the first snapshot's mean, e.g. 0.1 "
                         f"for 10 % (0 turns the smallest change of interest off). Got {min_change:g}.")
    if not (math.isfinite(min_r) and 0 <= min_r < 1):
        raise ValueError("The '--min-r' option must be a correlation >= 0 and < 1, e.g. 0.1 (0 turns the smallest "
                         f"correlation of interest off). Got {min_r:g}.")
    check_thresholds(min_change, min_r)
    return {"min_change": min_change, "min_r": min_r}


def add_scheduler_options(parser: argparse.ArgumentParser) -> None:
    """Where the per-snapshot work runs (shared by ``analyze`` and ``study``)."""
    parser.add_argument("--scheduler", choices=("threads", "dask"), default="threads",
                        help="threads: in this process (default); dask: tasks on a dask.distributed cluster "
                             "(pip install 'topotrace[dask]')")
    parser.add_argument("--address", default=None, metavar="tcp://HOST:PORT",
                        help="with --scheduler dask: a running Dask scheduler (default: a local cluster)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="with --scheduler dask and no --address: worker processes of the local cluster "
                             "(default: up to 4)")


@contextlib.contextmanager
def scheduler_cluster(args: argparse.Namespace) -> Iterator[object | None]:
    """The Dask cluster the options of :func:`add_scheduler_options` ask for (``None``: in process), closed on exit.

    Raises:
        ValueError: --address or --workers without --scheduler dask, or the cluster cannot be made.
    """
    if args.scheduler != "dask":
        if args.address is not None or args.workers is not None:
            raise ValueError("The '--address' and '--workers' options need '--scheduler dask'. "
                             f"Got --scheduler {args.scheduler}.")
        yield None
        return
    from topotrace.analysis.distributed import dask_cluster

    with dask_cluster(args.address, args.workers) as cluster:
        yield cluster


def analysis_options_given(args: argparse.Namespace) -> bool:
    """True when any option of :func:`add_analysis_options` other than --refresh was given."""
    return any(getattr(args, k) is not None for k in ANALYSIS_DEFAULTS)


def analysis_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """Keyword arguments of :func:`topotrace.analysis.pipeline.analyze` from the parsed options."""
    value = {k: getattr(args, k) if getattr(args, k) is not None else d for k, d in ANALYSIS_DEFAULTS.items()}
    layouts = value.pop("layouts")
    value["layout_methods"] = [m.strip() for m in layouts.split(",") if m.strip()] if layouts else None
    return value | {"refresh": args.refresh}


def describe_params(params: dict[str, object]) -> str:
    """The parameters a cached analysis was made with, in one line."""
    layouts = params.get("layout_methods") or "default"
    if isinstance(layouts, list):
        layouts = ",".join(layouts)
    return (f"probe set {params.get('probe_set')}, measure {params.get('measure')}, {params.get('n_bins')} "
            f"confidence bins, layouts {layouts}")


def configure(parser: argparse.ArgumentParser) -> None:
    from .cmd_info import add_until_good_option

    parser.add_argument("run", help="run folder (runs/NAME, meaning runs/NAME/store.h5) or store file")
    add_analysis_options(parser)
    add_verdict_options(parser)
    add_scheduler_options(parser)
    add_until_good_option(parser)


def run(args: argparse.Namespace) -> int:
    from .cli import visible
    from .cmd_info import find_store, open_store

    console = Console()
    thresholds = verdict_kwargs(args)  # bad values: one line before any work
    path = find_store(args.run)
    open_store(path, args).close()  # a file that is no readable store: one clear line before any work
    kwargs = analysis_kwargs(args) | {"until_good": args.until_good}
    cache = path.parent / "analysis.h5"
    t0 = time.perf_counter()
    with scheduler_cluster(args) as cluster, Progress(TextColumn("{task.description:<28}"), BarColumn(),
                                                      MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                                      transient=True) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(escape(visible(stage)), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        res = analyze(path, cache, progress=progress, cluster=cluster, **kwargs)
    seconds = time.perf_counter() - t0
    state = "computed" if tasks else "loaded from cache"
    console.print(Text.assemble((visible(path), "bold"), f": {res.n_snapshots} snapshots (steps {res.steps[0]} .. "
                                f"{res.steps[-1]}), probe set ", visible(repr(res.probe_set)), ", confidence ",
                                visible(repr(res.primary_measure)), f" — {state} in {seconds:.1f} s"))
    found = run_findings(res, **thresholds)
    table = Table(title=Text("Does a sample's activity become stronger and more class-distinct with training time "
                             f"and with confidence ({visible(res.primary_measure)})?"))
    for col in ("layer", "claim", "effect", "95 % interval", "verdict", "course"):
        table.add_column(col, no_wrap=col == "claim", min_width=min(12, max(len(f.layer) for f in found))
                         if col == "layer" and found else None)
    for f in found:
        if f.measure in ("", res.primary_measure):
            shape = ""
            if f.versus == "time":  # the shape, its peak or trough, and the change as a share of the first value
                at = f" at step {f.extreme_step:,}: {number(f.extreme_value)}" if f.extreme_step >= 0 else ""
                shape = f"{f.course}{at} ({percent(f.relative)})"
            table.add_row(Text(visible(f.layer)), Text(CLAIM_SHORT[f.claim]), Text(number(f.effect)),
                          Text(interval(f)), Text(f.verdict, style=VERDICT_STYLE.get(f.verdict, "")), Text(shape))
    console.print(table)
    if found:
        console.print(Text(f"{interval_kind(found[0])}. Effects: change of the mean from the first snapshot to the "
                           "last (time; in the course, as a share of the first snapshot's mean); partial Spearman "
                           "correlation given the class at the last snapshot (confidence). The report lists every "
                           f"confidence measure. Rule: {found[0].rule}"))
        note = scope_note(found)
        if note:
            console.print(Text(note, style="bold"))
    trends = trend_findings([res], [str(res.meta.get("run_name", "run"))])
    if trends:
        beyond = Table(title="Beyond the study: trends over training (bootstrap over probe samples, same rule "
                             "with no smallest effect of interest)")
        for col in ("layer", "trend", "effect", "95 % interval", "verdict"):
            beyond.add_column(col, no_wrap=col != "layer")
        for f in trends:
            what = {"dormant_share_grows": "dormant share grows", "nc1_falls": "NC1 falls (log first/last)",
                    "ece_rises_after_loss_minimum": f"ECE rises after the held-out loss minimum ({f.measure})"}
            beyond.add_row(Text(visible(f.layer or "(run)")), Text(visible(what.get(f.claim, f.claim))),
                           Text(number(f.effect)), Text(interval(f)),
                           Text(f.verdict, style=VERDICT_STYLE.get(f.verdict, "")))
        console.print(beyond)
        if res.loss_min >= 0:
            console.print(Text(f"held-out loss minimum at step {int(res.steps[res.loss_min])} (snapshot "
                               f"{res.loss_min + 1} of {res.n_snapshots})"))
    lay = Table(title="Layouts (default marked *)")
    for col in ("layer", "layout", "trustworthiness", "Shepard", "smoothness", "seconds"):
        lay.add_column(col)
    for name, lr in res.layers.items():
        for key, lo in lr.layouts.items():
            mark = " *" if key == lr.default_layout else ""
            lay.add_row(Text(visible(name)), Text(visible(key) + mark), f"{lo.trustworthiness:.3f}",
                        f"{lo.shepard:.3f}", f"{lo.smoothness:.3f}", f"{lo.seconds:.2f}")
    console.print(lay)
    console.print(Text(f"cache: {visible(cache)}"))
    return 0
