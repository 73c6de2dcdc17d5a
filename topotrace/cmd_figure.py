"""topotrace figure: a figure for a paper (PDF, SVG or PNG) from a run's cached analysis, with matplotlib.

``--kind naps`` (default): a grid of maps, one row per snapshot (labelled with its step) and one column per group
of a grouping (labelled in full, e.g. "class 3, n = 60"), on one shared colour scale with a labelled colour bar.
``--kind corr``: the maps of each neuron's Pearson r with a confidence measure (overall and within class, scale
±1). ``--kind findings``: each claim's statistic over training with its 95 % band.

Reads the cached analysis (analysing the store first when there is none, as ``topotrace report`` does); never
builds the HTML report. PDF and SVG are vector, except the maps of a grid whose vector shapes would make a large
file: each is then one embedded raster at ``--dpi``, clipped to its vector outline (``--maps``). Needs matplotlib:
``pip install 'topotrace[figures]'``. Builders: :mod:`topotrace.report_templates.figures`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

FORMATS = ("pdf", "svg", "png")  # as topotrace.report_templates.figures.FORMATS (not imported: it pulls in bokeh)
MAP_RENDERS = ("auto", "vector", "raster")  # as figures.MAP_RENDERS
MAX_DPI = 1200  # as figures.MAX_DPI
KINDS = ("naps", "corr", "findings")


def configure(parser: argparse.ArgumentParser) -> None:
    from .cmd_info import add_until_good_option

    parser.add_argument("run", help="run folder (runs/NAME, meaning runs/NAME/store.h5) or store file")
    parser.add_argument("--kind", default="naps", help="naps (default): group maps; corr: correlation maps with "
                        "--measure; findings: each claim's statistic over training")
    parser.add_argument("--layer", default=None, help="layer to draw (required for naps and corr; for findings, "
                        "only that layer's claims)")
    parser.add_argument("--grouping", default="class",
                        help="grouping of the maps: class (default), pred, correct, confbin or class_confbin")
    parser.add_argument("--snapshots", default="0,-1", metavar="I,J,...",
                        help="snapshot indices, one row each; negative ones count from the end (default: 0,-1)")
    parser.add_argument("--groups", default=None, metavar="G,H,...",
                        help="groups (names or indices), one column each (default: every group); for --kind corr "
                             "among 'overall' and 'within class'")
    parser.add_argument("--measure", default=None,
                        help="confidence measure of --kind corr (default: the analysis's primary measure)")
    parser.add_argument("--contrast", action="store_true",
                        help="draw each group's map minus the neuron's mean over the groups (the report's contrast "
                             "view)")
    parser.add_argument("--format", default=None, dest="fmt",
                        help="pdf, svg or png (default: the suffix of --out, else pdf)")
    parser.add_argument("--dpi", type=float, default=300.0,
                        help=f"resolution of PNG output and of maps drawn as rasters, 1 to {MAX_DPI} (default: 300)")
    parser.add_argument("--maps", default="auto", metavar="auto|vector|raster",
                        help="maps of a grid as vector shapes or one embedded raster each (clipped to the vector "
                             "outline; text stays text); auto (default): raster only where vector shapes would make "
                             "a large file (an SVG over ~3 MB)")
    parser.add_argument("--dots", action="store_true", help="mark each neuron's position with a dot")
    parser.add_argument("--no-title", action="store_true", help="leave out the figure's title")
    parser.add_argument("--out", default=None, help="file to write (default: figures/LAYER_GROUPING.FORMAT next to "
                        "the store)")
    add_until_good_option(parser)


def parse_int_list(text: str, option: str) -> list[int]:
    """``"0,10,-1"`` -> ``[0, 10, -1]``.

    Raises:
        ValueError: an empty list or an item that is not an integer (naming the option).
    """
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        out = [int(t) for t in items]
    except ValueError:
        raise ValueError(f"The '{option}' option must be comma-separated integers (e.g. 0,10,-1). Got {text!r}.") \
            from None
    if not out:
        raise ValueError(f"The '{option}' option must name at least one index (e.g. 0,-1). Got {text!r}.")
    return out


def output_format(fmt: str | None, out: str | None) -> str:
    """The format from ``--format``, else from the suffix of ``--out``, else ``"pdf"``.

    Raises:
        ValueError: an unknown format, or one that disagrees with the suffix of --out.
    """
    suffix = Path(out).suffix.lower().lstrip(".") if out else ""
    if fmt is None:
        fmt = suffix if suffix in FORMATS else "pdf"
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise ValueError(f"Unknown format {fmt!r} for '--format'. Available: {list(FORMATS)}.")
    if suffix in FORMATS and suffix != fmt:
        raise ValueError(f"The '--format' {fmt} disagrees with the suffix of '--out' {out}. Give the same (e.g. "
                         f"--out {Path(out).with_suffix('.' + fmt)}).")
    return fmt


def load_or_analyze(path: Path, until_good: bool = False):
    """The cached analysis of the store (made with the default parameters if there is none) and a note on it.

    Returns:
        (:class:`topotrace.analysis.results.AnalysisResults`, a line saying which analysis it is).
    """
    from .analysis.pipeline import analyze, cached_results
    from .cli import visible
    from .cmd_analyze import describe_params
    from .runfolder import RunFolder

    cache = RunFolder.of_store(path).analysis
    results = cached_results(path, cache, until_good=until_good)
    if results is not None:
        return results, f"using the cached analysis ({visible(describe_params(results.params))})"
    results = analyze(path, cache, until_good=until_good)
    return results, f"analysed the store ({visible(describe_params(results.params))}) into {visible(cache)}"


def run(args: argparse.Namespace) -> int:
    from .cli import visible
    from .cmd_info import find_store, open_store
    from .cmd_report import _safe
    from .report_templates.outputs import check_output

    if args.kind not in KINDS:
        raise ValueError(f"Unknown kind {args.kind!r} for '--kind'. Available: {list(KINDS)}.")
    fmt = output_format(args.fmt, args.out)
    if not 1 <= args.dpi <= MAX_DPI:
        raise ValueError(f"The '--dpi' option must be a number from 1 to {MAX_DPI} (dots per inch; 300 is print "
                         f"quality). Got {args.dpi:g}.")
    if args.maps not in MAP_RENDERS:
        raise ValueError(f"Unknown map rendering {args.maps!r} for '--maps'. Available: {list(MAP_RENDERS)}.")
    snapshots = parse_int_list(args.snapshots, "--snapshots")
    groups = [g.strip() for g in args.groups.split(",") if g.strip()] if args.groups is not None else None
    if args.kind != "findings" and args.layer is None:
        raise ValueError(f"The '--layer' option is required for --kind {args.kind}.")
    from .report_templates.figures import require_matplotlib

    require_matplotlib()
    path = find_store(args.run)
    with open_store(path, args) as st:  # a file that is no readable store: one clear line before any work
        layers = list(st.layers)
    if args.layer is not None and args.layer not in layers:
        raise ValueError(f"Unknown layer {args.layer!r}. Available: {layers}.")
    if args.out:  # an existing file is replaced only when it is a figure topotrace wrote
        out = check_output(Path(args.out), "figure", example=f"figure.{fmt}")
    else:
        what = args.kind if args.kind != "naps" else args.grouping
        out = path.parent / "figures" / f"{_safe(args.layer or 'all')}_{_safe(what)}.{fmt}"
        if os.path.lexists(out.parent):
            check_output(out, "figure", option="", example=f"figure.{fmt}")
        elif not os.access(out.parent.parent, os.W_OK):
            check_output(out.parent, "figure", option="", example="figures")

    results, note = load_or_analyze(path, until_good=args.until_good)
    from .report_templates import figures

    if args.kind == "findings":
        from .analysis.findings import run_findings

        fig = figures.findings_figure(run_findings(results), layer=args.layer)
        print(note, file=sys.stderr)  # after the request is checked: a bad one gets its error line alone
    else:
        grid = figures.plan_map_grid(results, args.layer, snapshots, grouping=args.grouping, groups=groups,
                                     kind=args.kind, measure=args.measure, contrast=args.contrast)
        print(note, file=sys.stderr)
        for row, col in grid.empty_cells():
            print(f"note: {visible(col)} at {visible(row)} has no samples; drawn as a labelled blank", file=sys.stderr)
        fig = figures.draw_map_grid(grid, dots=args.dots, title=not args.no_title)
    out.parent.mkdir(parents=True, exist_ok=True)
    figures.save_figure(fig, out, fmt, dpi=args.dpi, maps=args.maps)  # atomic; checked again at the rename
    print(f"{fmt.upper()} {out.stat().st_size / 1e3:.0f} kB", file=sys.stderr)
    print(visible(out))
    return 0
