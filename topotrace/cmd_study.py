"""topotrace study: replicate runs of one configuration (one per seed), their analyses, findings and report.

Writes runs/NAME/seed-K/ (each a normal run), runs/NAME/findings.json and runs/NAME/report.html. Run the same
command again to continue an interrupted study: finished seeds are not redone.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from .config import check_run_name, load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config (default: built-in digits run)")
    parser.add_argument("--seeds", default=None, help="seeds, e.g. 0,1,2 or 0-4 (default: 0,1,2)")
    parser.add_argument("--name", default=None, help="study name: runs/NAME/ (default: the config's run.name "
                        "followed by -study)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--out-dir", default=None, help="override run.out_dir (default runs)")


def run(args: argparse.Namespace) -> int:
    from .study import create_or_resume, is_study, load_study, parse_seeds

    console = Console()
    overrides: dict = {"run": {}, "train": {}}
    if args.out_dir:
        overrides["run"]["out_dir"] = args.out_dir
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    try:
        seeds = parse_seeds(args.seeds) if args.seeds is not None else [0, 1, 2]
        cfg = load_config(args.config, overrides)  # bad settings fail here, before anything is trained
    except (ValueError, TypeError, OSError) as err:
        console.print(f"[red]{escape(str(err))}[/]")
        return 2
    name = args.name or f"{cfg['run']['name']}-study"
    try:
        check_run_name(name, "study name (--name)")
    except ValueError as err:
        console.print(f"[red]{escape(str(err))}[/]")
        return 2
    path = Path(cfg["run"]["out_dir"]) / name
    try:
        if is_study(path) and args.config is None and args.seeds is None and args.epochs is None:
            study = load_study(path)  # continue with the settings it was started with
        else:
            study = create_or_resume(path, name, seeds, cfg)
    except (FileExistsError, ValueError) as err:
        console.print(f"[red]{escape(str(err))}[/]")
        return 2

    from .study import run_study
    from .train import train_run  # imports torch

    console.print(f"study [bold]{escape(study.name)}[/]: seeds {study.seeds} in {escape(str(study.path))}")
    with Progress(TextColumn("{task.description:<22}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        seeds_task = bar.add_task("seeds", total=len(study.seeds))
        steps_task = bar.add_task("training", total=None, visible=False)

        def train(cfg: dict) -> None:
            bar.update(steps_task, description=f"training {cfg['run']['name']}", completed=0, visible=True)
            summary = train_run(cfg, progress=lambda step, total: bar.update(steps_task, completed=step, total=total))
            bar.update(steps_task, visible=False)
            if summary.error is not None:
                raise RuntimeError(f"recording of {cfg['run']['name']} stopped: {summary.error!r}")

        def on_seed(seed: int, state: str) -> None:
            if state == "trained":
                console.print(f"seed {seed}: already trained")
            if state == "done":
                bar.advance(seeds_task)

        try:
            results = run_study(study, train, on_seed)
        except (RuntimeError, ValueError) as err:
            console.print(f"[red]{escape(str(err))}[/] Run the same command again to continue.")
            return 1
    from .cmd_report import write_study_report

    return write_study_report(study.path, results=results)
