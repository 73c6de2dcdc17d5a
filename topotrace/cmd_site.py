"""topotrace site: one offline index.html over every run and study below a runs folder.

Reads only store attributes, the last snapshot's outcomes and findings.json (never the activations), so it is
quick to rerun; `make report` and `make study` refresh it. Links are relative: the folder can be moved or
zipped whole. Runs still recording are listed with their committed snapshot count, damaged stores with the
reason.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs_dir", nargs="?", default="runs", metavar="RUNS_DIR",
                        help="the folder holding the runs and studies (default: runs)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="folder to write index.html into (default: RUNS_DIR)")


def run(args: argparse.Namespace) -> int:
    root = Path(args.runs_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"No runs folder at {root}. Give the folder that holds the runs (default runs); "
                                "`topotrace train` makes one.")
    if args.out is not None and Path(args.out).exists() and not Path(args.out).is_dir():
        raise FileExistsError(f"--out {args.out} is a file; give a folder to write index.html into.")
    from .cli import visible
    from .site import write_site

    path = write_site(root, args.out)
    print(visible(path))
    return 0
