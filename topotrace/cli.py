"""The topotrace command line: train, info, analyze, report, figure, study, compare, site, archive, verify.

Each subcommand lives in its own module ``topotrace.cmd_<name>`` with ``configure(parser)`` and
``run(args) -> int``; modules are imported only when their command runs, so ``topotrace info`` never
imports torch.

One error path: a command raises (ValueError, TypeError, KeyError, OSError, StoreError, ...) with a message that
says what was wrong, what is allowed and what to do, and :func:`main` prints it as the one line
``topotrace: error: <message>`` on stderr (exit code 2; 1 for a bug or :class:`CommandFailed`, 130 for
Ctrl-C). Commands print nothing red of their own. Text from stores, runs and configs goes to the terminal
through :func:`visible` (control characters shown as escapes) and as rich ``Text`` (no markup).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
import traceback
import warnings
from typing import NoReturn

EXAMPLES = """examples (the default run):
  topotrace train                          train the MLP on digits, record runs/digits/store.h5
  topotrace info runs/digits               what the store holds
  topotrace analyze runs/digits            the analysis, cached in runs/digits/analysis.h5
  topotrace report runs/digits             runs/digits/report.html
  topotrace report runs/digits --png hidden1:class:3:-1
                                           also class 3's map of layer hidden1 at the last snapshot as PNG
  topotrace study --seeds 0,1,2            three seeds of the default run, runs/digits-study/
  topotrace study runs/a runs/b runs/c      a study of runs you already have (recorded in your own loop)
  topotrace atlas configs/digits.toml configs/digits_cnn.toml --seeds 0,1,2
                                           the claims across architectures, runs/atlas/index.html
  topotrace compare runs/lr-0.1 runs/lr-0.01
                                           two runs side by side in runs/compare.html
  topotrace figure runs/digits --layer hidden1 --snapshots 0,10,-1 --out fig.pdf
                                           a grid of maps for a paper (vector PDF)
  topotrace site                           runs/index.html over every run and study in runs/
  topotrace archive runs/digits            runs/digits.zip, a self-describing bundle; topotrace verify checks it
  topotrace COMMAND --help                 the options of one command
"""

COMMANDS = {
    "train": "train a model and record activations into runs/NAME/store.h5",
    "info": "print a readable summary of a store",
    "analyze": "compute NAPs, layouts, maps and statistics (cached next to the store)",
    "report": "write the self-contained HTML report (and findings.json) of a run or a study",
    "watch": "follow a run while it records: its report and the site index are rebuilt as snapshots arrive",
    "figure": "write a figure for a paper (PDF, SVG or PNG): a grid of maps or the findings' curves",
    "study": "train, record and analyse replicate runs (seeds) and report the findings across them",
    "atlas": "one study per configuration (architecture, data) and one page of their verdicts by layer depth",
    "compare": "write one self-contained HTML page with two or more runs side by side",
    "site": "write runs/index.html: one offline, sortable table over every run and study",
    "archive": "write one self-describing zip bundle of a run or study (store, analysis, report, citation, checksums)",
    "verify": "check an archive bundle: its checksums, stores, and report against one rebuilt from its analysis",
}


class UsageError(Exception):
    """A command line that argparse refused (unknown option, bad value, missing argument): exit code 2."""


class CommandFailed(Exception):
    """An expected failure that is not bad input (e.g. recording stopped early): one line, exit code 1."""


# The kinds of exception a command raises for bad input or an unusable file; main turns them into one line.
EXPECTED = (UsageError, ValueError, TypeError, KeyError, OSError)  # StoreError and TOMLDecodeError are ValueErrors


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse's usage errors: one line through main, not usage text
        raise UsageError(message)


def visible(text: object) -> str:
    r"""``str(text)`` with control and other invisible characters shown as Python escapes.

    The escape character (``chr(27)``) becomes the four characters ``\x1b``, so nothing read from a
    store, a run folder or a config can move the cursor, recolour or clear the terminal. Spaces stay.
    """
    s = str(text)
    if s.isprintable():
        return s
    out = []
    for ch in s:
        if ch.isprintable():
            out.append(ch)
        elif ch in "\t\n\r":
            out.append({"\t": "\\t", "\n": "\\n", "\r": "\\r"}[ch])
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def error_line(message: object) -> str:
    """The one line of an error: ``topotrace: error: <message>``, newlines folded and control characters shown."""
    parts = [p.strip() for p in re.split(r"\r\n|\r|\n", str(message))]
    return "topotrace: error: " + visible(" ".join(p for p in parts if p))


def describe(err: BaseException) -> str:
    """The text of an expected error: its message; for a bare OS error also what failed on which file."""
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) would be the repr of the message
    if isinstance(err, OSError) and err.strerror and str(err).startswith("[Errno"):
        where = "" if err.filename is None else f": {err.filename}"
        where += "" if err.filename2 is None else f" -> {err.filename2}"
        return f"{err.strerror}{where}. Check the path and its permissions, or choose another one."
    return str(err) or type(err).__name__


class _LogLine(logging.Handler):
    """Log records of topotrace (e.g. a recording that stopped) as one escaped line; the traceback with --debug."""

    def __init__(self, debug: bool):
        super().__init__(logging.WARNING)
        self.debug = debug

    def emit(self, record: logging.LogRecord) -> None:
        if self.debug and record.exc_info:
            traceback.print_exception(*record.exc_info, file=sys.stderr)
        parts = [p.strip() for p in re.split(r"\r\n|\r|\n", record.getMessage())]
        # "warning" whatever the level: the command goes on; if it fails in the end, its error line says so
        print("topotrace: warning: " + visible(" ".join(p for p in parts if p)), file=sys.stderr)


def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None,
                 line: str | None = None) -> None:
    """``warnings.showwarning`` while a command runs: one escaped line ``topotrace: warning: <message>`` on stderr.

    The category, file and source line of the warning are left out (``--debug`` keeps Python's own form); newlines
    are folded and control characters shown as escapes.
    """
    parts = [p.strip() for p in re.split(r"\r\n|\r|\n", str(message))]
    print("topotrace: warning: " + visible(" ".join(p for p in parts if p)), file=file or sys.stderr)


def _debug_wanted(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("TOPOTRACE_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``topotrace`` command; returns the exit code.

    Every expected failure (bad option, config value, run name, path, unreadable store) prints one line
    ``topotrace: error: ...`` on stderr and returns 2; a bug prints one line and returns 1; Ctrl-C returns 130.
    ``--debug`` (before or after the command) or ``TOPOTRACE_DEBUG=1`` adds the traceback.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_wanted(argv)
    first = next((a for a in argv if not a.startswith("-")), None)  # the command: top-level flags take no value
    log_line = _LogLine(debug)
    logging.getLogger("topotrace").addHandler(log_line)  # instead of logging's last resort (which adds tracebacks)
    saved_showwarning = warnings.showwarning
    if not debug:
        warnings.showwarning = show_warning  # every warning of the command as one topotrace: warning: line
    try:
        parser = _Parser(prog="topotrace", description=__doc__.splitlines()[0], epilog=EXAMPLES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
        sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
        for name, help_text in COMMANDS.items():
            p = sub.add_parser(name, help=help_text, description=help_text)
            p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                           help="print the traceback of an error")
            if name == first:  # configure only the command that runs (its module may import heavy packages)
                importlib.import_module(f"topotrace.cmd_{name}").configure(p)
        args = parser.parse_args(argv)
        debug = log_line.debug = debug or args.debug
        return int(importlib.import_module(f"topotrace.cmd_{args.command}").run(args) or 0)
    except KeyboardInterrupt as err:
        if debug:
            traceback.print_exc()
        detail = describe(err) if err.args else ""
        print(error_line(f"interrupted{': ' + detail if detail else ''}"), file=sys.stderr)
        return 130
    except CommandFailed as err:
        if debug:
            traceback.print_exc()
        print(error_line(describe(err)), file=sys.stderr)
        return 1
    except EXPECTED as err:
        if debug:
            traceback.print_exc()
        message = describe(err)
        if isinstance(err, UsageError):
            command = f"topotrace {first}" if first in COMMANDS else "topotrace"
            message = f"{message}. See `{command} --help` for the options."
        print(error_line(message), file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - a bug: one line, the traceback on request
        if debug:
            traceback.print_exc()
        hint = "" if debug else "; run with --debug for the traceback"
        print(error_line(f"unexpected {type(err).__name__}: {describe(err)} (a bug in topotrace{hint})"),
              file=sys.stderr)
        return 1
    finally:
        logging.getLogger("topotrace").removeHandler(log_line)
        warnings.showwarning = saved_showwarning


if __name__ == "__main__":
    raise SystemExit(main())
