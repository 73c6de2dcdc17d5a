"""topotrace archive: write one self-describing zip bundle of a run or a study (see ``docs/archive.md``).

The bundle holds the store, the analyses, the config, the findings and the report rebuilt from the bundled
analysis, with ``environment.json``, ``CITATION.cff``, an RO-Crate, ``MANIFEST.sha256`` and ``README.txt``.
With ``SOURCE_DATE_EPOCH`` set, the same run gives the same bytes. ``--author`` (repeatable) names the bundle's
authors with their ORCIDs.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN_OR_STUDY", help="run folder (runs/NAME) or study folder")
    parser.add_argument("--out", default=None, metavar="PATH[.zip]",
                        help="zip file to write (default: runs/NAME.zip next to the folder; the site links it); an "
                             "existing file is replaced only when it is a topotrace archive")
    parser.add_argument("--author", action="append", default=None, metavar="'NAME <ORCID>'",
                        help="an author of the bundle for CITATION.cff and the RO-Crate, e.g. 'Josiah Carberry "
                             "<0000-0002-1825-0097>' ('Family, Given' when the family name has several words; the "
                             "ORCID is optional); repeat for each author, in order. Default: the authors the run "
                             "names (Recorder meta 'authors')")


def run(args: argparse.Namespace) -> int:
    from .archive import write_archive
    from .cli import visible

    out = None
    if args.out is not None:
        out = Path(args.out)
        if out.suffix.lower() != ".zip" and not out.is_dir():
            out = out.with_name(out.name + ".zip")
    path = write_archive(args.run, out, authors=args.author)
    print(f"{visible(path)} ({path.stat().st_size / 1e6:.1f} MB)")
    return 0
