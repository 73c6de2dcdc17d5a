"""``topotrace info``: a readable summary of a store (works while the run is still recording).

Everything read from the store (run name, metadata, class, layer and probe set names) is printed as plain text
with control characters shown as escapes (:func:`topotrace.cli.visible`), never as rich markup.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import runfolder
from .cli import visible
from .instrument.store import SCHEMA_VERSION, Store


def add_until_good_option(parser: argparse.ArgumentParser) -> None:
    """``--until-good`` (shared by ``info``, ``analyze`` and ``report``)."""
    parser.add_argument("--until-good", action="store_true",
                        help="read a damaged or truncated store up to its last intact snapshot instead of refusing it")


def find_store(run: str) -> Path:
    """The store file of a run folder or store path given on the command line (:func:`topotrace.runfolder.find_store`).

    Raises:
        FileNotFoundError: there is no store there.
    """
    return runfolder.find_store(run)


def open_store(path: Path, args: argparse.Namespace, check: bool = True) -> Store:
    """Open a store for reading with the command's ``--until-good`` (:func:`topotrace.runfolder.open_store`).

    Raises:
        StoreError: not a topotrace store, another schema version, or damaged.
        ValueError: HDF5 cannot read the file at all.
    """
    return runfolder.open_store(path, until_good=bool(getattr(args, "until_good", False)), check=check)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (runs/NAME) or store file")
    add_until_good_option(parser)


def _t(value: object, style: str = "") -> Text:
    return Text(visible(value), style=style)


def run(args: argparse.Namespace) -> int:
    console = Console()
    path = find_store(args.run)
    with open_store(path, args, check=False) as st:  # a glance: the chunks it reads are checked as read
        meta = st.meta
        steps = st.steps
        size = sum(p.stat().st_size for p in (path, *st.shards)) / 1e6
        shards = f", {len(st.shards)} shards: {st.shards[0].name} .. {st.shards[-1].name}" if st.shards else ""
        console.print(Text.assemble(_t(path, "bold"), f"  ({size:.1f} MB, schema {SCHEMA_VERSION}", _t(shards), ")"))
        console.print(Text.assemble("run: ", _t(meta.get("run_name", "?")), "   seed: ", _t(meta.get("seed", "?")),
                                    "   data: ", _t(meta.get("data", "?"))))
        if st.n_snapshots:
            t = st.times
            console.print(f"snapshots: {st.n_snapshots}  steps {steps[0]} .. {steps[-1]}  "
                          f"epochs {st.epochs[0]} .. {st.epochs[-1]}  "
                          f"recorded {dt.datetime.fromtimestamp(t[0]):%Y-%m-%d %H:%M} .. "
                          f"{dt.datetime.fromtimestamp(t[-1]):%H:%M}", highlight=False)
        else:
            console.print("snapshots: 0 (nothing committed yet)")
        console.print(Text.assemble(f"classes ({len(st.class_names)}): ", _t(", ".join(st.class_names))))
        console.print(Text.assemble("confidence measures: ", _t(", ".join(st.measures)), "   activations: ",
                                    _t(st.spec.act_dtype)))
        console.print(layers_table(st.spec.layers))
        probes = Table(title="probe sets (last snapshot)")
        for col in ("name", "samples", "accuracy", "mean loss"):
            probes.add_column(col, overflow="fold")
        probes.add_column(_t(f"mean {st.measures[0]}"), overflow="fold")
        for name, p in st.probes.items():
            if st.n_snapshots:
                probes.add_row(_t(name), str(len(p.index)), f"{np.mean(st.correct(name)[-1]):.3f}",
                               f"{np.mean(st.loss(name)[-1]):.3f}", f"{np.mean(st.conf(name, st.measures[0])[-1]):.3f}")
            else:
                probes.add_row(_t(name), str(len(p.index)), "-", "-", "-")
        console.print(probes)
    return 0


def layers_table(layers: Sequence) -> Table:
    """The recorded layers (name, neurons, reduction, output shape), readable at 80 columns: names whole."""
    from .cmd_analyze import layer_column

    table = Table(title="layers")
    layer_column(table, [visible(la.name) for la in layers], "name")
    for col in ("neurons", "reduction", "output shape"):
        table.add_column(col, overflow="fold")
    for la in layers:
        table.add_row(_t(la.name), str(la.n_neurons), _t(la.reduction), str(tuple(la.output_shape)))
    return table
