"""topotrace verify: check an archive bundle (a zip from ``topotrace archive`` or its unpacked folder).

Checks every checksum of ``MANIFEST.sha256`` (no listed file missing, no unlisted file present), that each store
opens and its committed snapshots read, and that the bundled report equals the one rebuilt from the bundled
analysis. Exit 0 when all holds; exit 1 with one line per problem otherwise. A damaged zip is such a problem, named
by member: a CRC-32 or deflate failure, a zip cut short (the member it ends in), a damaged member list, a member
missing from the manifest. A path that is neither a zip nor a folder (a FIFO is never opened) is an error (exit 2).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="the zip written by topotrace archive, or its unpacked folder")


def run(args: argparse.Namespace) -> int:
    from .cli import visible
    from .verify import print_problems, verify_archive

    problems = verify_archive(args.path)
    if problems:
        print_problems(problems)
        return 1
    print(f"{visible(args.path)}: every checksum, store and report page holds")
    return 0
