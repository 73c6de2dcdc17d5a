"""The topotrace command line: train, info, analyze, report, study, compare.

Each subcommand lives in its own module ``topotrace.cmd_<name>`` with ``configure(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``topotrace info`` never
imports torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys

EXAMPLES = """examples (the default run):
  topotrace train                          train the MLP on digits, record runs/digits/store.h5
  topotrace info runs/digits               what the store holds
  topotrace analyze runs/digits            the analysis, cached in runs/digits/analysis.h5
  topotrace report runs/digits             runs/digits/report.html
  topotrace report runs/digits --png hidden1:class:3:-1
                                           also class 3's map of layer hidden1 at the last snapshot as PNG
  topotrace study --seeds 0,1,2            three seeds of the default run, runs/digits-study/
  topotrace compare runs/lr-0.1 runs/lr-0.01
                                           two runs side by side in runs/compare.html
  topotrace COMMAND --help                 the options of one command
"""

COMMANDS = {
    "train": "train a model and record activations into runs/NAME/store.h5",
    "info": "print a readable summary of a store",
    "analyze": "compute NAPs, layouts, maps and statistics (cached next to the store)",
    "report": "write the self-contained HTML report (and findings.json) of a run or a study",
    "study": "train, record and analyse replicate runs (seeds) and report the findings across them",
    "compare": "write one self-contained HTML page with two or more runs side by side",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``topotrace`` command."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="topotrace", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    wanted = argv[0] if argv and argv[0] in COMMANDS else None
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # configure only the command that runs (its module may import heavy packages)
            importlib.import_module(f"topotrace.cmd_{name}").configure(p)
    args = parser.parse_args(argv)
    return int(importlib.import_module(f"topotrace.cmd_{args.command}").run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
