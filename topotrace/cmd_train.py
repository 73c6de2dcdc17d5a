"""topotrace train: train the configured model and record it (the default run: an MLP on digits).

Settings, the run name, the runs folder and the data are checked before anything is written. A checkpoint
(runs/NAME/checkpoint.npz, weights only) is kept after each epoch; ``--resume`` continues a killed or
interrupted run from it with the same config. ``--overwrite`` replaces only a topotrace run that no process is
recording. A start that fails before the first checkpoint with nothing committed removes the folders it made; a
store with committed snapshots is never removed. A recording that stops (disk full, ...) stops training, keeps the
run and ends the command with exit code 1 and one line saying what was lost and how ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import warnings

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .config import load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config (default: built-in digits run)")
    parser.add_argument("--name", default=None, help="run name (overrides run.name): a plain folder name of "
                        "letters, digits, '.', '_', '-'")
    parser.add_argument("--seed", type=int, default=None, help="override run.seed (model init, data split, "
                        "probe samples and batch order)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--out-dir", default=None, help="override run.out_dir, the runs folder (default runs)")
    again = parser.add_mutually_exclusive_group()
    again.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name (only a "
                       "topotrace run that no process is recording)")
    again.add_argument("--resume", action="store_true", help="continue a killed or interrupted run of the same "
                       "name from its last checkpoint (same config and options)")


def run(args: argparse.Namespace) -> int:
    from .cli import CommandFailed, visible

    overrides: dict = {"run": {}, "train": {}}
    if args.name is not None:
        overrides["run"]["name"] = args.name
    if args.seed is not None:
        overrides["run"]["seed"] = args.seed
    if args.out_dir is not None:
        overrides["run"]["out_dir"] = args.out_dir
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    cfg = load_config(args.config, overrides)  # bad settings fail here, before anything is trained
    console = Console()

    from .train import RunFailed, final_metrics, how_to_continue, train_run  # imports torch

    name = visible(cfg["run"]["name"])
    with Progress(TextColumn("[bold]training[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(escape(name), total=None)

        def progress(step: int, total: int) -> None:
            bar.update(task, completed=step, total=total)

        with warnings.catch_warnings():  # a stopped recording is logged at once and ends the command with an error
            warnings.filterwarnings("ignore", message="Recording to ", category=RuntimeWarning)
            try:
                summary = train_run(cfg, overwrite=args.overwrite, progress=progress, resume=args.resume)
            except RunFailed as err:  # the run is kept: exit 1 with what was lost and how to continue
                raise CommandFailed(str(err)) from err
    if summary.error is not None or summary.n_snapshots != summary.expected_snapshots:
        # No table: the last committed snapshot is an early one, not the result of the run.
        cause = ("" if summary.error is None else
                 f" ({type(summary.error).__name__}: {' '.join(str(summary.error).split()).rstrip('.')})")
        raise CommandFailed(f"Recording stopped early{cause}: the store {visible(summary.store_path)} keeps "
                            f"{summary.n_snapshots} committed snapshots of the {summary.expected_snapshots} due; "
                            f"training stopped at step {summary.steps} of {summary.total_steps}. Fix the cause (e.g. "
                            f"free disk space), then {how_to_continue(summary.checkpoint_step)}.")
    resumed = "" if summary.resumed_from is None else f", resumed from step {summary.resumed_from}"
    table = Table(title=Text(f"run {name}: {summary.steps} steps in {summary.seconds:.1f} s{resumed}, "
                             f"{summary.n_snapshots} snapshots"))
    for col in ("probe set", "samples", "accuracy", "loss", "mean confidence"):
        table.add_column(col, justify="right" if col != "probe set" else "left")
    if summary.n_snapshots:
        for probe, m in final_metrics(summary.store_path).items():
            table.add_row(Text(visible(probe)), str(m["n"]), f"{m['accuracy']:.3f}", f"{m['loss']:.3f}",
                          f"{m['confidence']:.3f}")
    console.print(table)
    console.print(Text.assemble("store: ", (visible(summary.store_path), "bold")))
    return 0
