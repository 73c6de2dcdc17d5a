"""topotrace archive: write one self-describing zip bundle of a run or a study (see ``docs/archive.md``).

The bundle holds the store, the analyses, the config, the findings and the report rebuilt from the bundled
analysis, with ``environment.json``, ``CITATION.cff``, an RO-Crate, ``MANIFEST.sha256`` and ``README.txt``.
With ``SOURCE_DATE_EPOCH`` set, the same run gives the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_STUDY", help="run folder (runs/NAME) or study folder")
    parser.add_argument("--out", default=None, metavar="PATH[.zip]",
                        help="zip file to write (default: runs/NAME.zip next to the folder; the site links it); an "
                             "existing file is replaced only when it is a topotrace archive")


def run(args: argparse.Namespace) -> int:
    from .archive import write_archive
    from .cli import visible

    out = None
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() != ".zip" and not out.is_dir():
            out = out.with_name(out.name + ".zip")
    path = write_archive(args.run, out)
    print(f"{visible(path)} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
