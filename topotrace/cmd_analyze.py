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

from .analysis import params as analysis_params
from .analysis.findings import MIN_CHANGE, MIN_R, check_thresholds, run_findings, trend_findings
from .analysis.pipeline import analyze
from .report_templates.words import (
    CLAIM_SHORT,
    VERDICT_STYLE,
    effect_text,
    interval,
    number,
    scope_note,
    trend_effect,
    trend_name,
)
from .report_templates.words import terminal as say

# The terminal tables below stay readable at 80 columns: every column may wrap at spaces and folds a word longer
# than its width (never "…"), and the layer column is as wide as the longest layer name (up to LAYER_WIDTH), so
# a layer name is printed whole on one line.
LAYER_WIDTH = 28


def add_analysis_options(parser: argparse.ArgumentParser) -> None:
    """The options that choose what the analysis computes (shared by ``analyze`` and ``report``).

    One per parameter of :class:`topotrace.analysis.params.AnalysisParams` that has an option, plus --refresh.
    """
    analysis_params.add_options(parser)
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
    from .analysis.distributed import dask_cluster

    with dask_cluster(args.address, args.workers) as cluster:
        yield cluster


def analysis_options_given(args: argparse.Namespace) -> bool:
    """True when any option of :func:`add_analysis_options` other than --refresh was given."""
    return analysis_params.options_given(args)


def analysis_kwargs(args: argparse.Namespace) -> dict[str, object]:
    """Keyword arguments of :func:`topotrace.analysis.pipeline.analyze` from the parsed options (checked).

    Raises:
        ValueError: one line: a bad value of an option (e.g. an unknown layout method, listing the methods).
    """
    return {"params": analysis_params.from_args(args), "refresh": args.refresh}


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
    from .runfolder import RunFolder

    console = Console()
    thresholds = verdict_kwargs(args)  # bad values: one line before any work
    path = find_store(args.run)
    open_store(path, args).close()  # a file that is no readable store: one clear line before any work
    kwargs = analysis_kwargs(args) | {"until_good": args.until_good}
    cache = RunFolder.of_store(path).analysis
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
    console.print(Text(say.question(visible(res.primary_measure)), style="bold"))
    for part in findings_tables(found, res.primary_measure):
        console.print(part)
    if found:
        console.print(Text(say.effects_note(found)))
        note = scope_note(found)
        if note:
            console.print(Text(note, style="bold"))
    trends = trend_findings([res], [str(res.meta.get("run_name", "run"))])
    if trends:
        console.print(beyond_table(trends))
        if res.loss_min >= 0:
            console.print(Text(say.loss_minimum_line(int(res.steps[res.loss_min]), res.loss_min, res.n_snapshots)))
    console.print(layouts_table(res))
    console.print(Text(f"cache: {visible(cache)}"))
    return 0




def layer_column(table: Table, names: list[str], header: str = "layer") -> None:
    """Add the layer column: as wide as the longest name (at most :data:`LAYER_WIDTH`), longer names folded."""
    longest = max((len(n) for n in names), default=len(header))
    table.add_column(header, overflow="fold", width=min(LAYER_WIDTH, max(longest, len(header))))


def findings_tables(found: list, measure: str) -> list[Table | Text]:
    """The study's claims, one small table per claim (confidence claims for ``measure``), readable at 80 columns.

    Each table is titled with the claim and what its effect is and lists every layer's effect, 95 % interval
    and verdict; under a time claim's table, one line per layer gives its course (:func:`course_lines`).

    Args:
        found: :class:`topotrace.analysis.findings.Finding` list (one run's or a study's).
        measure: the confidence measure whose claims are listed (the primary measure).

    Returns:
        Tables and lines to print in order.
    """
    from .cli import visible

    out: list[Table | Text] = []
    for claim in dict.fromkeys(f.claim for f in found):
        rows = [f for f in found if f.claim == claim and f.measure in ("", measure)]
        if not rows:
            continue
        table = Table(title=Text(visible(f"{CLAIM_SHORT[claim]} ({effect_text(rows[0])})")), title_justify="left")
        layer_column(table, [visible(f.layer) for f in rows])
        for col in ("effect", "95 % interval", "verdict"):
            table.add_column(col, overflow="fold")
        for f in rows:
            table.add_row(Text(visible(f.layer)), Text(number(f.effect)), Text(interval(f)),
                          Text(f.verdict, style=VERDICT_STYLE.get(f.verdict, "")))
        out.append(table)
        out.extend(course_lines(rows))
    return out


def course_lines(found: list) -> list[Text]:
    """One line per time claim: its course, the peak or trough that names it, and the change as a share.

    E.g. "hidden1: dips then recovers (trough 0.131 at step 98), change +1.2 %" (of the first snapshot's mean).
    """
    from .cli import visible

    lines = []
    for f in found:
        if f.versus == "time" and f.course:
            lines.append(Text.assemble("  ", (visible(f.layer), "bold"), f": {say.course_text(f)}"))
    if lines:
        lines.insert(0, Text(say.course_header(found[0].quantity)))
    return lines


def beyond_table(trends: list) -> Table:
    """The trends beyond the study (dormant share, NC1, ECE after the loss minimum) as a table.

    Each in the unit of the report's collapse section (:func:`topotrace.report_templates.words.trend_effect`):
    the dormant share's change in percentage points, NC1 as the ratio last / first.
    """
    from .cli import visible

    table = Table(title=say.BEYOND_TITLE)
    layer_column(table, [visible(f.layer or "(run)") for f in trends])
    for col in ("trend", "effect", "95 % interval", "verdict"):
        table.add_column(col, overflow="fold")
    for f in trends:
        what = trend_name(f)
        effect, span = trend_effect(f)
        table.add_row(Text(visible(f.layer or "(run)")), Text(visible(what)), Text(effect), Text(span),
                      Text(f.verdict, style=VERDICT_STYLE.get(f.verdict, "")))
    return table


def layouts_table(res) -> Table:
    """Each layer's layouts with their quality scores (the default marked *)."""
    from .cli import visible

    table = Table(title=say.LAYOUTS_TITLE)
    layer_column(table, [visible(name) for name in res.layers])
    table.add_column("layout", overflow="fold")
    for col in ("trust", "Shepard", "smooth", "s"):
        table.add_column(col, overflow="fold", justify="right")
    for name, lr in res.layers.items():
        for key, lo in lr.layouts.items():
            mark = " *" if key == lr.default_layout else ""
            table.add_row(Text(visible(name)), Text(visible(key) + mark), f"{lo.trustworthiness:.3f}",
                          f"{lo.shepard:.3f}", f"{lo.smoothness:.3f}", f"{lo.seconds:.2f}")
    return table
