"""topotrace report: write the self-contained HTML report of a run or a study, analysing it first if needed.

Writes report.html and findings.json next to the store (for a study folder, runs/NAME/: the findings across its
seeds, then the maps of its first seed).

Without analysis options the cached analysis of the store is used whatever parameters made it (they are
printed); with any of them (the same as for topotrace analyze) the analysis is made with those.

Also exports chosen maps as PNG files with --png LAYER:GROUPING:GROUP:SNAPSHOT (repeatable), e.g.
--png hidden1:class:3:-1 for class 3's map of layer hidden1 at the last snapshot; --contrast draws them as
contrast to the other groups of the grouping. This is a shortcut to ``topotrace figure`` (one map, PNG; needs
matplotlib), which draws grids of maps as PDF, SVG or PNG from the cached analysis without the HTML.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

from .runfolder import MAPS_DIR


def parse_png_spec(spec: str) -> tuple[str, str, str, int]:
    """``"LAYER:GROUPING:GROUP:SNAPSHOT"`` -> (layer, grouping, group, snapshot); the layer may contain ':'."""
    parts = spec.rsplit(":", 3)
    if len(parts) != 4 or not all(parts[:3]):
        raise ValueError(f"The '--png' option must look like LAYER:GROUPING:GROUP:SNAPSHOT (e.g. hidden1:class:3:-1). "
                         f"Got {spec!r}.")
    try:
        snapshot = int(parts[3])
    except ValueError:
        raise ValueError(f"The SNAPSHOT part of '--png' must be an integer (e.g. -1 for the last). "
                         f"Got {parts[3]!r} in {spec!r}.") from None
    return parts[0], parts[1], parts[2], snapshot


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def configure(parser: argparse.ArgumentParser) -> None:
    from .cmd_analyze import add_analysis_options, add_verdict_options
    from .cmd_info import add_until_good_option

    parser.add_argument("run", help="run folder (runs/NAME, meaning runs/NAME/store.h5) or store file")
    parser.add_argument("--out", default=None, help="HTML file to write (default: report.html next to the store)")
    parser.add_argument("--png", action="append", default=[], metavar="LAYER:GROUPING:GROUP:SNAPSHOT",
                        help="also export this map as PNG (repeatable), e.g. hidden1:class:3:-1; written to "
                             "maps/ next to the report. A shortcut to `topotrace figure ... --format png` (needs "
                             "matplotlib: pip install 'topotrace[figures]'), which makes grids, PDF and SVG without "
                             "rebuilding the HTML")
    parser.add_argument("--scale", type=int, default=4,
                        help="PNG resolution: about this many pixels per map grid cell (default: 4)")
    parser.add_argument("--contrast", action="store_true",
                        help="draw the PNG maps as contrast to the other groups (group mean subtracted per neuron)")
    parser.add_argument("--page-budget", type=float, default=10.0, metavar="MB",
                        help="largest HTML page in MB (default: 10; at least 2): a report that does not fit one "
                             "page becomes a summary page plus one page per layer, and a layer page that does not "
                             "fit shows a log-spaced subset of the snapshots; 'inf' always writes one page")
    add_analysis_options(parser)
    add_verdict_options(parser)
    add_until_good_option(parser)


def run(args: argparse.Namespace) -> int:
    from .cli import visible
    from .cmd_analyze import verdict_kwargs
    from .reports import check_page_budget, check_report_output, report_analyses, write_run_report
    from .runfolder import locate, open_store
    from .site import site_index_for

    thresholds = verdict_kwargs(args)  # bad values: one line before any work
    folder = locate(args.run)
    if folder.is_study:
        out = check_report_output(Path(args.out)) if args.out else None
        given = {k: v for k, v in thresholds.items() if getattr(args, k) is not None}
        return write_study_report(folder.path, out=out, **given)
    path = folder.store
    with open_store(path, until_good=args.until_good) as st:  # no readable store: one clear line before any work
        layers = sorted(st.layers)
    pngs = [parse_png_spec(s) for s in args.png]
    for layer, *_ in pngs:
        if layer not in layers:
            raise ValueError(f"The layer of '--png' must be one of the store's layers {layers}. Got {layer!r}.")
    if not 1 <= args.scale <= 15:  # 15 px per cell of the 128-cell grid: 1200 dpi, figures.MAX_DPI
        raise ValueError(f"The '--scale' option must be an int from 1 to 15 (PNG pixels per map grid cell). Got "
                         f"{args.scale}.")
    if pngs:
        from .report_templates.figures import require_matplotlib

        require_matplotlib()
    check_page_budget(args.page_budget)
    out = Path(args.out) if args.out else folder.report
    check_report_output(out, maps=bool(pngs))
    from .cmd_analyze import analysis_kwargs, analysis_options_given, describe_params

    t0 = time.perf_counter()
    given = analysis_options_given(args)
    params = {k: v for k, v in analysis_kwargs(args).items() if k != "refresh"} if given else None
    analyses = report_analyses(folder, params, refresh=args.refresh, until_good=args.until_good)
    if analyses.cached:
        print(f"using the cached analysis ({visible(describe_params(analyses.results.params))}); give analysis "
              "options or --refresh to recompute", file=sys.stderr)
    t1 = time.perf_counter()
    maps = [_png_map(analyses.results, spec, args.contrast) for spec in pngs]  # checked before anything is written
    write_run_report(analyses, out, index=None if args.out else site_index_for(out), page_budget=args.page_budget,
                     **thresholds)
    t2 = time.perf_counter()
    for (layer, grouping, group, snapshot), grid in zip(pngs, maps):
        target = out.parent / MAPS_DIR / f"{_safe(layer)}_{_safe(grouping)}_{_safe(group)}_{snapshot}.png"
        write_png_map(grid, target, args.scale)
        print(f"map: {visible(target)}", file=sys.stderr)
    print(f"analysis {t1 - t0:.1f} s, report {t2 - t1:.1f} s, {pages_summary(out)}", file=sys.stderr)
    print(visible(out))
    return 0


def _png_map(results, spec: tuple[str, str, str, int], contrast: bool):
    """The checked one-cell map grid of a ``--png`` spec (``topotrace figure``'s plan); errors name the spec."""
    from .report_templates.figures import plan_map_grid

    layer, grouping, group, snapshot = spec
    try:
        return plan_map_grid(results, layer, [snapshot], grouping, [group], contrast=contrast)
    except (ValueError, TypeError) as err:
        raise ValueError(f"PNG {layer}:{grouping}:{group}:{snapshot} not written: {err}") from err


def write_png_map(grid, target: Path, scale: int) -> Path:
    """Draw a one-cell map grid (``topotrace figure``'s builder) as a PNG with about ``scale`` px per grid cell."""
    from .report_templates.figures import CELL_IN, draw_map_grid, save_figure

    target.parent.mkdir(parents=True, exist_ok=True)
    dpi = max(20.0, scale * grid.images.shape[-1] / CELL_IN)
    return save_figure(draw_map_grid(grid), target, "png", dpi=dpi)


def pages_summary(out: Path) -> str:
    """``"4.2 MB"`` for a one-page report; else the summary page, the layer pages, the largest and the total."""
    from .cli import visible
    from .report_templates.generate import report_pages

    files = report_pages(out)
    sizes = [f.stat().st_size / 1e6 for f in files]
    if len(files) == 1:
        return f"{sizes[0]:.1f} MB"
    return (f"{sizes[0]:.1f} MB summary page + {len(files) - 1} layer pages in {visible(files[1].parent.name)}/ "
            f"(largest {max(sizes[1:]):.1f} MB; {sum(sizes):.1f} MB in all)")


def write_study_report(path: Path, out: Path | None = None, **thresholds: float) -> int:
    """Findings across a study's runs -> ``findings.json`` and ``report.html`` (in the study folder); exit code.

    ``thresholds``: ``min_change`` and/or ``min_r`` when given (:func:`topotrace.analysis.findings.findings`).
    """
    from .cli import visible
    from .reports import write_study_report as write
    from .runfolder import RunFolder

    print(visible(write(RunFolder(path), out, **thresholds).path))
    return 0
