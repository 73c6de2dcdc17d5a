"""topotrace study: replicate runs of one configuration (one per seed), their analyses, findings and report.

Writes runs/NAME/seed-K/ (each a normal run), runs/NAME/findings.json and runs/NAME/report.html. Run the same
command again to continue an interrupted study: finished seeds are not redone.
"""

from __future__ import annotations

import argparse
import shutil
import warnings
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from .config import check_run_name, load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config (default: built-in digits run)")
    parser.add_argument("--seeds", default=None, help="seeds, e.g. 0,1,2 or 0-4 (default: 0,1,2)")
    parser.add_argument("--name", default=None, help="study name: runs/NAME/ (default: the config's run.name "
                        "followed by -study)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--out-dir", default=None, help="override run.out_dir (default runs)")
    from .cmd_analyze import add_scheduler_options

    add_scheduler_options(parser)


def run(args: argparse.Namespace) -> int:
    from .cli import CommandFailed, visible
    from .study import create_or_resume, is_study, load_study, parse_seeds

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

    from .cmd_analyze import scheduler_cluster
    from .study import run_study, trained
    from .train import check_creatable, check_run_config, topmost_missing, train_run  # imports torch

    check_run_config(cfg)  # layers and data, before the study folder is made
    if not path.exists():
        check_creatable(path)
    made = topmost_missing(path)
    try:
        if is_study(path) and args.config is None and args.seeds is None and args.epochs is None:
            study = load_study(path)  # continue with the settings it was started with
        else:
            study = create_or_resume(path, name, seeds, cfg)
        console.print(Text.assemble("study ", (visible(study.name), "bold"), f": seeds {study.seeds} in ",
                                    visible(study.path)))
        with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=console, transient=True) as bar:
            seeds_task = bar.add_task("seeds", total=len(study.seeds))
            steps_task = bar.add_task("training", total=None, visible=False)

            def train(cfg: dict) -> None:
                bar.update(steps_task, description=f"training {escape(visible(cfg['run']['name']))}", completed=0,
                           visible=True)
                with warnings.catch_warnings():  # a stopped recording is logged at once, then ends the study
                    warnings.filterwarnings("ignore", message="Recording to ", category=RuntimeWarning)
                    summary = train_run(cfg, progress=lambda step, total: bar.update(steps_task, completed=step,
                                                                                     total=total))
                bar.update(steps_task, visible=False)
                if summary.error is not None:
                    raise CommandFailed(f"recording of {cfg['run']['name']} stopped: {summary.error!r}. Run the "
                                        "same command again to continue the study.")

            def on_seed(seed: int, state: str) -> None:
                if state == "trained":
                    console.print(f"seed {seed}: already trained")
                if state == "done":
                    bar.advance(seeds_task)

            with scheduler_cluster(args) as cluster:
                results = run_study(study, train, on_seed, cluster)
    except BaseException:
        if made is not None and not any(trained(d) for d in path.glob("seed-*")):
            shutil.rmtree(made, ignore_errors=True)  # this command made the study and finished no seed: undo it
        raise
    from .cmd_report import write_study_report

    return write_study_report(study.path, results=results)

