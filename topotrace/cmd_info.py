"""``topotrace info``: a readable summary of a store (works while the run is still recording)."""

from __future__ import annotations

import argparse
import datetime as dt

import numpy as np
from rich.console import Console
from rich.table import Table
from rich.text import Text

from topotrace.instrument.store import SCHEMA_VERSION, Store, StoreError, resolve_store_path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="run folder (runs/NAME) or store file")


def run(args: argparse.Namespace) -> int:
    console = Console()
    path = resolve_store_path(args.run)
    if not path.is_file():
        console.print(Text(f"No store at {path}. Give a run folder (runs/NAME) or a store file; "
                           "`topotrace train` makes one.", style="red"))
        return 2
    try:
        st = Store(path)
    except (StoreError, OSError) as err:
        console.print(Text(f"Cannot read {path}: {err}", style="red"))
        return 2
    with st:
        meta = st.meta
        steps = st.steps
        console.print(f"[bold]{path}[/]  ({path.stat().st_size / 1e6:.1f} MB, schema {SCHEMA_VERSION})")
        console.print(f"run: {meta.get('run_name', '?')}   seed: {meta.get('seed', '?')}   "
                      f"data: {meta.get('data', '?')}")
        if st.n_snapshots:
            t = st.times
            console.print(f"snapshots: {st.n_snapshots}  steps {steps[0]} .. {steps[-1]}  "
                          f"epochs {st.epochs[0]} .. {st.epochs[-1]}  "
                          f"recorded {dt.datetime.fromtimestamp(t[0]):%Y-%m-%d %H:%M} .. "
                          f"{dt.datetime.fromtimestamp(t[-1]):%H:%M}")
        else:
            console.print("snapshots: 0 (nothing committed yet)")
        console.print(f"classes ({len(st.class_names)}): {', '.join(st.class_names)}")
        console.print(f"confidence measures: {', '.join(st.measures)}   activations: {st.spec.act_dtype}")
        layers = Table(title="layers")
        for col in ("name", "neurons", "reduction", "output shape"):
            layers.add_column(col)
        for la in st.spec.layers:
            layers.add_row(la.name, str(la.n_neurons), la.reduction, str(tuple(la.output_shape)))
        console.print(layers)
        probes = Table(title="probe sets (last snapshot)")
        for col in ("name", "samples", "accuracy", "mean loss", f"mean {st.measures[0]}"):
            probes.add_column(col)
        for name, p in st.probes.items():
            if st.n_snapshots:
                probes.add_row(name, str(len(p.index)), f"{np.mean(st.correct(name)[-1]):.3f}",
                               f"{np.mean(st.loss(name)[-1]):.3f}", f"{np.mean(st.conf(name, st.measures[0])[-1]):.3f}")
            else:
                probes.add_row(name, str(len(p.index)), "-", "-", "-")
        console.print(probes)
    return 0
