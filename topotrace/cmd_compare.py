"""topotrace compare: one self-contained HTML page with two or more runs side by side (e.g. two learning rates).

Takes run folders (runs/NAME, meaning runs/NAME/store.h5) or store files; a study folder is refused (compare
its seed folders instead). Each run's cached analysis is used when it is current, whatever parameters made it;
otherwise the run is analysed with the default parameters (cached next to its store, as topotrace analyze
does). The page is written to --out, by default compare.html in the folder that holds the run folders (their
deepest common folder; the current folder when that is the filesystem root), and its path is printed. Runs are
labelled by their folder names. Bad input (fewer than two runs, a missing store, a study folder, the same run
twice) is reported in one line on stderr with exit code 2 before anything is written.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

USAGE_HINT = "Give two or more run folders (runs/NAME) or store files, e.g. topotrace compare runs/lr-0.1 runs/lr-0.01."


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN",
                        help="two or more run folders (runs/NAME, meaning runs/NAME/store.h5) or store files")
    parser.add_argument("--out", default=None, help="HTML file to write (default: compare.html in the folder that "
                        "holds the run folders, e.g. runs/compare.html)")


def _run_dir(store: Path) -> Path:
    return store.parent


def run_labels(stores: list[Path]) -> list[str]:
    """Each run's folder name; where two runs share one, their last two path parts (then a position)."""
    labels = [_run_dir(s).name or str(_run_dir(s)) for s in stores]
    if len(set(labels)) < len(labels):
        labels = ["/".join(_run_dir(s).absolute().parts[-2:]) for s in stores]
    if len(set(labels)) < len(labels):
        labels = [f"{label} ({i + 1})" for i, label in enumerate(labels)]
    return labels


def default_out(stores: list[Path]) -> Path:
    """``compare.html`` in the deepest folder holding every run folder (the current folder if that is ``/``)."""
    common = Path(os.path.commonpath([str(_run_dir(s).absolute().parent) for s in stores]))
    if common == Path(common.anchor):
        return Path("compare.html")
    try:
        return common.relative_to(Path.cwd().absolute()) / "compare.html"  # runs/compare.html, as given
    except ValueError:  # not under the current folder: the absolute path
        return common / "compare.html"


def check_runs(paths: list[str]) -> tuple[list[Path], str]:
    """The runs' store paths, or an empty list and the one-line reason they are not usable."""
    from .instrument.store import resolve_store_path
    from .studies import is_study

    if len(paths) < 2:
        got = f"got {len(paths)}" + (f": {paths[0]}" if paths else "")
        return [], f"topotrace compare needs two or more runs ({got}). {USAGE_HINT}"
    stores: list[Path] = []
    for p in paths:
        if is_study(p):
            return [], (f"{p} is a study folder (several seeds); compare takes single runs: give its seed folders "
                        f"instead, e.g. topotrace compare {Path(p) / 'seed-0'} {Path(p) / 'seed-1'}.")
        store = resolve_store_path(p)
        if not store.is_file():
            where = f"No store in {p} (no {store})" if Path(p).is_dir() else f"{p} is neither a run folder nor a store"
            return [], f"{where}. {USAGE_HINT} Train that run first (topotrace train) or fix the path."
        for q, other in zip(paths, stores):
            if os.path.samefile(store, other):
                return [], (f"{q} and {p} are the same run; give each run once (two or more different run "
                            "folders or store files).")
        stores.append(store)
    return stores, ""


def run(args: argparse.Namespace) -> int:
    from .cli import describe, visible
    from .cmd_info import open_store
    from .report_templates.outputs import check_output

    stores, problem = check_runs(list(args.runs))
    if problem:
        raise ValueError(problem)
    out = check_output(Path(args.out) if args.out else default_out(stores), "page", example="compare.html")
    for store in stores:
        open_store(store, args).close()  # a file that is no readable store: one clear line before any work
    from .analysis.findings import run_findings
    from .analysis.pipeline import analyze, cached_results
    from .report_templates.compare import findings_rows
    from .report_templates.generate import build_comparison

    console = Console(stderr=True, highlight=False)
    labels = run_labels(stores)
    runs = []
    for label, store in zip(labels, stores):
        try:
            res = cached_results(store)
            if res is None:
                console.print(Text(f"{visible(label)}: analysing {visible(store)} (default parameters)"))
                res = analyze(store)
            else:
                console.print(Text(f"{visible(label)}: using the cached analysis"))
        except (ValueError, KeyError) as err:
            raise ValueError(f"Analysis of {store} failed: {describe(err)}") from err
        runs.append((label, res))
    found = [run_findings(res) for _, res in runs]
    out = build_comparison(runs, out, found)
    rows = findings_rows(runs, found)
    if rows:
        console.print(side_by_side_table(rows, labels))
    print(visible(out))
    return 0


def side_by_side_table(rows: list[dict], labels: list[str]) -> Table:
    """The runs' findings side by side: one row per layer and claim, one column per run (readable at 80 columns).

    Args:
        rows: :func:`topotrace.report_templates.compare.findings_rows`.
        labels: the runs' labels, in the order of each row's cells.
    """
    from .cli import visible
    from .cmd_analyze import layer_column
    from .report_templates.words import VERDICT_STYLE
    from .report_templates.words import terminal as say

    table = Table(title=say.SIDE_BY_SIDE_TITLE)
    layer_column(table, [visible(r["layer"]) for r in rows])
    table.add_column("claim", overflow="fold")
    for label in labels:
        table.add_column(Text(visible(label)), overflow="fold")
    for r in rows:
        cells = [Text(c["missing"]) if c["missing"] else
                 Text(f"{c['effect']} ({c['interval']}) ")
                 + Text(c["verdict"], style=VERDICT_STYLE.get(c["verdict"], "")) for c in r["cells"]]
        table.add_row(Text(visible(r["layer"])), Text(r["claim_text"]), *cells)
    return table
