"""topotrace report: write the self-contained HTML report of a run or a study, analysing it first if needed.

Writes report.html and findings.json next to the store (for a study folder, runs/NAME/: the findings across its
seeds, then the maps of its first seed).

Without analysis options the cached analysis of the store is used whatever parameters made it (they are
printed); with any of them (the same as for topotrace analyze) the analysis is made with those.

Also exports chosen maps as PNG files for papers with --png LAYER:GROUPING:GROUP:SNAPSHOT (repeatable),
e.g. --png hidden1:class:3:-1 for class 3's map of layer hidden1 at the last snapshot; --contrast draws them
as contrast to the other groups of the grouping.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path


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
    from .cmd_analyze import add_analysis_options

    parser.add_argument("run", help="run folder (runs/NAME, meaning runs/NAME/store.h5) or store file")
    parser.add_argument("--out", default=None, help="HTML file to write (default: report.html next to the store)")
    parser.add_argument("--png", action="append", default=[], metavar="LAYER:GROUPING:GROUP:SNAPSHOT",
                        help="also export this map as PNG (repeatable), e.g. hidden1:class:3:-1; written to "
                             "maps/ next to the report")
    parser.add_argument("--scale", type=int, default=4, help="PNG pixels per map grid cell (default: 4)")
    parser.add_argument("--contrast", action="store_true",
                        help="draw the PNG maps as contrast to the other groups (group mean subtracted per neuron)")
    add_analysis_options(parser)


def run(args: argparse.Namespace) -> int:
    from topotrace.analysis.findings import run_findings, write_findings_json
    from topotrace.analysis.pipeline import analyze, cached_results
    from topotrace.instrument.store import resolve_store_path
    from topotrace.report_templates.export import export_map_png
    from topotrace.report_templates.generate import build_report

    from .study import is_study

    if is_study(args.run):
        return write_study_report(Path(args.run), out=Path(args.out) if args.out else None)
    path = resolve_store_path(args.run)
    if not path.exists():
        print(f"No store at {path}. Train first (make train) or give a store file.", file=sys.stderr)
        return 2
    try:
        pngs = [parse_png_spec(s) for s in args.png]
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    from .cmd_analyze import analysis_kwargs, analysis_options_given, describe_params

    cache = path.parent / "analysis.h5"
    try:
        results = None if args.refresh or analysis_options_given(args) else cached_results(path, cache)
        if results is not None:
            print(f"using the cached analysis ({describe_params(results.params)}); give analysis options or "
                  "--refresh to recompute", file=sys.stderr)
        else:
            results = analyze(path, cache, **analysis_kwargs(args))
    except (ValueError, KeyError) as err:
        print(f"Analysis failed: {err}", file=sys.stderr)
        return 2
    t1 = time.perf_counter()
    out = Path(args.out) if args.out else path.parent / "report.html"
    found = run_findings(results)
    build_report(results, out, found)
    if found:
        write_findings_json(found, out.with_name("findings.json"))
    t2 = time.perf_counter()
    for layer, grouping, group, snapshot in pngs:
        target = out.parent / "maps" / f"{_safe(layer)}_{_safe(grouping)}_{_safe(group)}_{snapshot}.png"
        try:
            export_map_png(results, layer, grouping, group, snapshot, target, scale=args.scale,
                           contrast=args.contrast)
        except (ValueError, TypeError) as err:
            print(f"PNG {layer}:{grouping}:{group}:{snapshot} not written: {err}", file=sys.stderr)
            return 2
        print(f"map: {target}", file=sys.stderr)
    size = out.stat().st_size / 1e6
    print(f"analysis {t1 - t0:.1f} s, report {t2 - t1:.1f} s, {size:.1f} MB", file=sys.stderr)
    print(out)
    return 0


def write_study_report(path: Path, out: Path | None = None, results: list | None = None) -> int:
    """Findings across a study's seeds -> ``findings.json`` and ``report.html`` in the study folder; exit code.

    ``results``: the seeds' analyses when the caller has them (``topotrace study``); else they are loaded.
    """
    from topotrace.analysis.findings import findings, write_findings_json
    from topotrace.report_templates.generate import build_report

    from .study import load_study, study_results

    try:
        study = load_study(path)
        results = results if results is not None else study_results(study)
        names = [f"seed {s}" for s in study.seeds]
        found = findings(results, names)
    except ValueError as err:
        print(err, file=sys.stderr)
        return 2
    out = out or study.path / "report.html"
    links = [(name, os.path.relpath(study.seed_dir(s) / "report.html", out.parent))
             for name, s in zip(names, study.seeds)]
    for s, res in zip(study.seeds, results):  # each seed's own report, linked from the study's
        seed_report = study.seed_dir(s) / "report.html"
        if not seed_report.exists():
            build_report(res, seed_report)
    build_report(results[0], out, found, runs=links, title=f"study {study.name} ({len(study.seeds)} seeds)")
    write_findings_json(found, out.with_name("findings.json"))
    print(out)
    return 0
