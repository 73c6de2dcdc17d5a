"""topotrace train: train the configured model and record it (the default run: an MLP on digits)."""

from __future__ import annotations

import argparse

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from .config import load_config


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, help="TOML config (default: built-in digits run)")
    parser.add_argument("--name", default=None, help="run name (overrides run.name)")
    parser.add_argument("--seed", type=int, default=None, help="override run.seed (model init, data split, "
                        "probe samples and batch order)")
    parser.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    parser.add_argument("--out-dir", default=None, help="override run.out_dir (default runs)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run of the same name")


def run(args: argparse.Namespace) -> int:
    overrides: dict = {"run": {}, "train": {}}
    if args.name is not None:
        overrides["run"]["name"] = args.name
    if args.seed is not None:
        overrides["run"]["seed"] = args.seed
    if args.out_dir:
        overrides["run"]["out_dir"] = args.out_dir
    if args.epochs is not None:
        overrides["train"]["epochs"] = args.epochs
    console = Console()
    try:
        cfg = load_config(args.config, overrides)  # bad settings fail here, before anything is trained
    except (ValueError, TypeError, OSError) as err:
        console.print(Text(str(err), style="red"))
        return 2

    from .train import final_metrics, train_run  # imports torch

    with Progress(TextColumn("[bold]training[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(cfg["run"]["name"], total=None)

        def progress(step: int, total: int) -> None:
            bar.update(task, completed=step, total=total)

        try:
            summary = train_run(cfg, overwrite=args.overwrite, progress=progress)
        except FileExistsError as err:
            console.print(Text(str(err), style="red"))
            return 2
    if summary.error is not None:
        console.print(f"[red]Recording stopped early: {summary.error!r}. The store keeps "
                      f"{summary.n_snapshots} committed snapshots.[/]")
    table = Table(title=f"run {cfg['run']['name']}: {summary.steps} steps in {summary.seconds:.1f} s, "
                        f"{summary.n_snapshots} snapshots")
    for col in ("probe set", "samples", "accuracy", "loss", "mean confidence"):
        table.add_column(col, justify="right" if col != "probe set" else "left")
    if summary.n_snapshots:
        for name, m in final_metrics(summary.store_path).items():
            table.add_row(name, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['loss']:.3f}", f"{m['confidence']:.3f}")
    console.print(table)
    console.print(f"store: [bold]{summary.store_path}[/]")
    return 0 if summary.error is None else 1
