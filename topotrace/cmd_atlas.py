"""topotrace atlas: one study per configuration (architecture, data), and one page of their verdicts by depth.

Writes runs/NAME/atlas.json, runs/NAME/<config stem>/ (a config study each) and runs/NAME/index.html. Run the same
command again to continue an interrupted atlas: finished seeds and studies are not redone.
"""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from rich.text import Text


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="TOML configs, one study each")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of every study, e.g. 0,1,2 or 0-4 (default 0,1,2)")
    parser.add_argument("--name", default="atlas", help="atlas name: runs/NAME/ (default atlas)")
    parser.add_argument("--out-dir", default="runs", help="the folder the atlas folder goes in (default runs)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs of every config")
    from .cmd_analyze import add_analysis_options, add_scheduler_options, add_verdict_options

    add_analysis_options(parser)  # every seed of every study analysed with them (default: the defaults)
    add_scheduler_options(parser)
    add_verdict_options(parser)


def run(args: argparse.Namespace) -> int:
    from .atlas import INDEX_FILE, run_atlas
    from .cli import visible
    from .cmd_analyze import analysis_kwargs, analysis_options_given, verdict_kwargs
    from .cmd_study import config_study
    from .config import check_out_dir, check_run_name
    from .studies import parse_seeds

    args.thresholds = verdict_kwargs(args)  # the verdicts' smallest effects of interest, as for a study
    args.analysis = analysis_kwargs(args) if args.refresh or analysis_options_given(args) else {}  # checked first
    seeds = parse_seeds(args.seeds)
    name = check_run_name(args.name, "atlas name (--name)")
    out_dir = check_out_dir(args.out_dir, "'--out-dir' option")
    if args.epochs is not None and args.epochs < 1:
        raise ValueError(f"The '--epochs' option must be an int >= 1. Got {args.epochs}.")
    console = Console()
    atlas = run_atlas(args.configs, seeds, name, out_dir, args.epochs,
                      lambda study, made, timings: config_study(study, made, console, args, timings), console)
    console.print(atlas_table(atlas))
    console.print(Text(f"atlas.json and {INDEX_FILE} in {visible(out_dir + '/' + name)}"))
    print(visible(f"{out_dir}/{name}/{INDEX_FILE}"))
    return 0


def atlas_table(atlas: dict) -> Table:
    """The matrix of verdicts for the terminal: one row per architecture and layer, one column per claim.

    Each study has a row of its own (its name in bold) above its layers, so that the layer column is as wide as
    the longest layer name and a name is printed whole at 80 columns; cells wrap at spaces, never "…".
    """
    from .cli import visible
    from .cmd_analyze import layer_column
    from .report_templates.words import CLAIM_SHORT
    from .report_templates.words import terminal as say

    table = Table(title=say.atlas_title(visible(atlas["name"]), atlas["seeds"]))
    layer_column(table, ["  " + visible(row["layer"]) for e in atlas["entries"] for row in e["layers"]],
                 "study, layer")
    table.add_column("depth", justify="right", overflow="fold")
    for claim in atlas["claims"]:
        table.add_column(CLAIM_SHORT[claim], overflow="fold")
    for k, entry in enumerate(atlas["entries"]):
        if k:
            table.add_section()
        table.add_row(Text(visible(entry["study"]), style="bold"), *[""] * (1 + len(atlas["claims"])))
        for row in entry["layers"]:
            cells = []
            for claim in atlas["claims"]:
                c = row["claims"].get(claim)
                cells.append(Text(say.atlas_cell(c["effect"], c["verdict"]) if c else "-"))
            table.add_row(Text("  " + visible(row["layer"])), f"{row['relative_depth']:.2f}", *cells)
    return table
