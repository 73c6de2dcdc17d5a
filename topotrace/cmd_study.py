"""topotrace study: replicate runs (seeds) and the findings across them.

Two ways to make one:

* ``topotrace study RUN RUN [...] --name NAME``: a study of runs you already have (recorded with the Recorder,
  a callback or ``topotrace train``); nothing is trained, the runs stay where they are.
* ``topotrace study --config FILE --seeds 0,1,2 --name NAME``: trains one run per seed into runs/NAME/seed-K/
  (each a normal run). Run the same command again to continue an interrupted study: finished seeds are not redone.

Both write runs/NAME/study.json, findings.json and report.html.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from .config import check_out_dir, check_run_name, load_config
from .runfolder import SEED_PREFIX, RunFolder


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("runs", nargs="*", metavar="RUN", help="run folders to make a study of (at least 2; "
                        "nothing is trained); leave out to train seeds of --config")
    parser.add_argument("--config", default=None, help="TOML config (default: built-in digits run)")
    parser.add_argument("--seeds", default=None, help="seeds, e.g. 0,1,2 or 0-4 (default: 0,1,2)")
    parser.add_argument("--name", default=None, help="study name: runs/NAME/ (default: the config's run.name, or "
                        "the runs' common name, followed by -study)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--out-dir", default=None, help="the folder the study folder goes in (default runs)")
    from .cmd_analyze import add_analysis_options, add_scheduler_options, add_verdict_options

    add_analysis_options(parser)  # without any: each run's cached analysis, else the defaults
    add_scheduler_options(parser)
    add_verdict_options(parser)


def default_name(runs: list[str]) -> str:
    """The default study name of a study of runs: their names' common first words, then ``-study``.

    ``mine-s0, mine-s1`` -> ``mine-study``; with nothing in common, the first run's name.
    """
    names = [Path(os.path.normpath(r)).name for r in runs]
    common = os.path.commonprefix(names)
    if any(len(n) > len(common) and n[len(common)] not in "-_." for n in names):  # cut inside a word: to its start
        common = common[:max(common.rfind(c) for c in "-_.") + 1]
    return f"{common.rstrip('-_.') or names[0]}-study"


class Reporter:
    """Progress of a study: a live bar on a terminal, plain lines (one per event) anywhere else."""

    def __init__(self, console: Console):
        self.console = console
        self.bar = None
        if console.is_terminal:
            self.bar = Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(),
                                TimeRemainingColumn(), console=console, transient=True)

    def __enter__(self) -> Reporter:
        if self.bar is not None:
            self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def line(self, text: str) -> None:
        self.console.print(Text(text))


def run(args: argparse.Namespace) -> int:
    from .cmd_analyze import analysis_kwargs, analysis_options_given, verdict_kwargs

    args.thresholds = verdict_kwargs(args)  # bad values: one line before any work
    args.analysis = analysis_kwargs(args) if args.refresh or analysis_options_given(args) else {}
    if args.runs:
        return _run_of_runs(args)
    return _run_config(args)


def _run_of_runs(args: argparse.Namespace) -> int:
    from .cli import visible
    from .studies import study

    for option, value in (("--config", args.config), ("--seeds", args.seeds), ("--epochs", args.epochs)):
        if value is not None:
            raise ValueError(f"The '{option}' option trains seeds of a config; a study of existing runs (RUN "
                             f"arguments) trains nothing. Leave out {option}, or the runs.")
    out_dir = check_out_dir(args.out_dir if args.out_dir is not None else "runs", "'--out-dir' option")
    name = check_run_name(args.name if args.name is not None else default_name(args.runs), "study name (--name)")
    path = Path(out_dir) / name
    console = Console()
    console.print(Text.assemble("study ", (visible(name), "bold"), f" of {len(args.runs)} runs in ", visible(path)))
    from .cmd_analyze import scheduler_cluster

    with scheduler_cluster(args) as cluster:
        found = study(args.runs, path, cluster, **args.thresholds, **args.analysis)
    print_study_findings(console, found)
    print(visible(RunFolder(path).report))
    return 0


def _run_config(args: argparse.Namespace) -> int:
    from .cli import visible
    from .studies import create_or_resume, is_study, load_study, parse_seeds

    console = Console()
    overrides: dict = {"run": {}, "train": {}}
    if args.out_dir is not None:
        overrides["run"]["out_dir"] = args.out_dir
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    seeds = parse_seeds(args.seeds) if args.seeds is not None else [0, 1, 2]
    cfg = load_config(args.config, overrides)  # bad settings fail here, before anything is trained
    name = check_run_name(args.name if args.name is not None else f"{cfg['run']['name']}-study",
                          "study name (--name)")
    path = Path(cfg["run"]["out_dir"]) / name
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path} exists and is not a topotrace study folder; choose another --name.")
    if path.exists() and is_study(path) and load_study(path).of_runs:
        raise FileExistsError(f"{path} holds a study of existing runs; give its runs to make it again "
                              "(topotrace study RUN RUN ...), or choose another --name for a config study.")

    from .train import check_creatable, check_run_config  # imports torch

    check_run_config(cfg)  # layers and data, before the study folder is made
    if not path.exists():
        check_creatable(path)
    if is_study(path) and args.config is None and args.seeds is None and args.epochs is None:
        st, made = load_study(path), False  # continue with the settings it was started with
    else:
        st, made = create_or_resume(path, name, seeds, cfg)
    found = config_study(st, made, console, args)
    print_study_findings(console, found)
    print(visible(RunFolder(st.path).report))
    return 0


def config_study(study, made: bool, console: Console, args: argparse.Namespace,
                 timings: dict[str, float] | None = None) -> list:
    """Train, analyse and report a config study under its lock; its findings across the seeds.

    Args:
        study: the study (:func:`topotrace.studies.create_or_resume`).
        made: whether the caller made its folder (it is removed again if this fails before a seed is trained).
        console: where progress goes.
        args: the command's options (the analysis scheduler).
        timings: if given, seconds spent are added under ``"training"`` (recording included), ``"recording"``
            (the probe passes on the training thread), ``"analysis"`` and ``"reports"``.
    """
    from .studies import locked, trained

    try:
        with locked(study.path):
            return _train_and_report(study, console, args, timings if timings is not None else {})
    except BaseException:
        if made and not any(trained(d) for d in study.path.glob(f"{SEED_PREFIX}*")):
            import shutil

            shutil.rmtree(study.path, ignore_errors=True)  # this command made the study, finished no seed: undo
        raise


def _train_and_report(study, console: Console, args: argparse.Namespace, timings: dict[str, float]) -> list:
    """Train the seeds not trained yet, analyse them, write the study's findings and report; the findings."""
    from .cli import CommandFailed, visible
    from .cmd_analyze import scheduler_cluster
    from .studies import run_study, write_study_report
    from .train import train_run

    console.print(Text.assemble("study ", (visible(study.name), "bold"), f": seeds {study.seeds} in ",
                                visible(study.path)))
    with Reporter(console) as rep:
        bar = rep.bar
        if bar is not None:
            seeds_task = bar.add_task("seeds", total=len(study.seeds))
            steps_task = bar.add_task("training", total=None, visible=False)
        last_tenth = -1  # plain lines: one every 10 % of a seed's steps
        analysing_since: dict[int, float] = {}

        def add(stage: str, seconds: float) -> None:
            timings[stage] = timings.get(stage, 0.0) + seconds

        def progress(step: int, total: int) -> None:
            nonlocal last_tenth
            if bar is not None:
                bar.update(steps_task, completed=step, total=total)
            elif total and step * 10 // total > last_tenth:
                last_tenth = step * 10 // total
                rep.line(f"  step {step} of {total}")

        def train(cfg: dict) -> None:
            nonlocal last_tenth
            last_tenth = -1
            if bar is not None:
                bar.update(steps_task, description=f"training {escape(visible(cfg['run']['name']))}", completed=0,
                           visible=True)
            else:
                rep.line(f"seed {cfg['run']['seed']}: training")
            t0 = time.perf_counter()
            with warnings.catch_warnings():  # a stopped recording is logged at once, then ends the study
                warnings.filterwarnings("ignore", message="Recording to ", category=RuntimeWarning)
                summary = train_run(cfg, progress=progress)
            add("training", time.perf_counter() - t0)
            add("recording", summary.probe_seconds)
            if bar is not None:
                bar.update(steps_task, visible=False)
            if summary.error is not None:
                raise CommandFailed(f"recording of {cfg['run']['name']} stopped: {summary.error!r}. Run the "
                                    "same command again to continue the study.")

        def on_seed(seed: int, state: str) -> None:
            if state == "analysing":
                analysing_since[seed] = time.perf_counter()
            elif state == "done" and seed in analysing_since:
                add("analysis", time.perf_counter() - analysing_since.pop(seed))
            if state == "trained":
                rep.line(f"seed {seed}: already trained")
            elif state == "analysing" and bar is None:
                rep.line(f"seed {seed}: analysing")
            elif state == "done":
                if bar is not None:
                    bar.advance(seeds_task)
                else:
                    rep.line(f"seed {seed}: done")

        with scheduler_cluster(args) as cluster:
            results = run_study(study, train, on_seed, cluster, **args.analysis)
    if not console.is_terminal:
        rep.line("findings across the seeds")
    t0 = time.perf_counter()
    found = write_study_report(study, results, **args.thresholds)
    timings["reports"] = timings.get("reports", 0.0) + time.perf_counter() - t0
    return found


def print_study_findings(console: Console, found: list) -> None:
    """The findings across the runs as a table, as ``topotrace analyze`` prints one run's (readable at 80 columns)."""
    from .cli import visible
    from .cmd_analyze import findings_tables
    from .report_templates.words import terminal as say

    if not found:
        return
    measure = next((f.measure for f in found if f.measure), "")
    console.print(Text(say.study_title(found[0].n_runs, visible(measure)), style="bold"))
    for part in findings_tables(found, measure):
        console.print(part)
    console.print(Text(say.study_note(found)))
    sys.stdout.flush()
