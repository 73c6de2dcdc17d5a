"""The report site: one offline ``index.html`` over every run and study below a runs folder.

:func:`collect` walks the folder and reads only what the index shows: each store's attributes and its last
snapshot's per-sample outcomes (accuracy, loss; never the activations), whether a writer still holds the store,
the run's ``findings.json`` and which files exist beside it. :func:`write_site` renders the page through
:mod:`topotrace.report_templates.site`. The layout of a site is documented in ``docs/report.md``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis.vocabulary import HOLDS
from .instrument.store import STORE_FILE, Store, StoreError, writer_state
from .report_templates.outputs import atomic_output, check_output, written_by_topotrace
from .runfolder import CONFIG_FILE, INDEX_FILE, STUDY_FILE, RunFolder
from .studies import load_study

PROBES = ("train", "heldout")  # the probe sets with columns of their own (others are left out of the index)


@dataclass
class SiteRow:
    """One run, or one study, of the index.

    Attributes:
        path: the run's folder relative to the site root, with ``/`` (``digits``, ``digits-study/seed-0``).
        kind: ``"run"``, ``"study"`` or ``"seed"`` (a run of a study; listed under it).
        status: ``"done"`` (the store is closed), ``"recording"`` (a live writer holds it), ``"stopped"`` (its
            writer was killed: resumable), ``"damaged"``, ``"no store"`` (a run folder without a store yet) or,
            for a study, ``"study"``.
        reason: why a store is damaged (one line), else ``""``.
        date: when the first snapshot was recorded, ``YYYY-MM-DD HH:MM`` UTC (``""`` if unknown).
        model: the model class and its parameter count, in a few words.
        data: the data description the run recorded.
        seed: the run's seed (``None`` if unknown); for a study, its seeds.
        snapshots: committed snapshots (a study: its seeds' total).
        last_step: the last committed step (``None`` without snapshots).
        metrics: ``{probe set: {"accuracy": a, "loss": l}}`` at the last snapshot, for :data:`PROBES`.
        verdicts: claim -> ``(supported layers, layers)`` for the primary confidence measure (from
            ``findings.json``; empty when the run has none).
        store_bytes: the store's size on disk (a study: its seeds' total).
        links: ``{"report" | "store" | "findings" | "archive": path relative to the site root}`` of files that
            exist.
    """

    path: str
    kind: str
    status: str
    reason: str = ""
    date: str = ""
    model: str = ""
    data: str = ""
    seed: object = None
    snapshots: int = 0
    last_step: int | None = None
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    verdicts: dict[str, tuple[int, int]] = field(default_factory=dict)
    store_bytes: int = 0
    links: dict[str, str] = field(default_factory=dict)
    seeds: list[SiteRow] = field(default_factory=list)


def _model_words(meta: dict[str, object]) -> str:
    summary = str(meta.get("model_summary", ""))
    name = summary.split("(", 1)[0].strip().splitlines()[0] if summary.strip() else ""
    n = meta.get("n_parameters")
    if n is None and "parameters:" in summary:
        n = summary.rsplit("parameters:", 1)[1].strip().split()[0]
    try:
        return f"{name}, {int(n):,} parameters" if name else f"{int(n):,} parameters"
    except (TypeError, ValueError):
        return name


def _verdicts(path: Path) -> dict[str, tuple[int, int]]:
    """Per claim, how many layers' findings are supported (a study) or hold (one run), for the first measure listed."""
    try:
        found = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(found, list):
        return {}
    primary = next((f.get("measure") for f in found if isinstance(f, dict) and f.get("measure")), "")
    out: dict[str, list[int]] = {}
    for f in found:
        if not isinstance(f, dict) or f.get("measure", "") not in ("", primary):
            continue
        tally = out.setdefault(str(f.get("claim", "")), [0, 0])
        tally[0] += f.get("verdict") in HOLDS
        tally[1] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def _links(run_dir: Path, root: Path) -> dict[str, str]:
    rel = lambda p: p.relative_to(root).as_posix()  # noqa: E731
    folder = RunFolder(run_dir)
    links = {}
    for key, p in (("report", folder.report), ("store", folder.store), ("findings", folder.findings),
                   ("archive", folder.archive)):
        if p.is_file():
            links[key] = rel(p)
    return links


def read_run(run_dir: Path, root: Path, kind: str = "run") -> SiteRow:
    """The index row of one run folder (never raises for a damaged store: the row says why)."""
    row = SiteRow(run_dir.relative_to(root).as_posix(), kind, "done", links=_links(run_dir, root),
                  verdicts=_verdicts(RunFolder(run_dir).findings))
    store = RunFolder(run_dir).store
    if not store.is_file():
        row.status = "no store"
        return row
    row.store_bytes = store.stat().st_size
    try:
        status = {"closed": "done", "live": "recording", "killed": "stopped"}
        row.status = status[writer_state(store)]
        with Store(store, quick=True) as st:
            shards = st.shards
            meta = st.meta
            row.model, row.data, row.seed = _model_words(meta), str(meta.get("data", "")), meta.get("seed")
            row.snapshots = st.n_snapshots
            if st.n_snapshots:
                row.last_step = int(st.steps[-1])
                t = float(st.times[0])
                row.date = _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
                for probe in PROBES:
                    if probe in st.probes:
                        correct, loss = st.correct(probe)[-1], st.loss(probe)[-1]
                        row.metrics[probe] = {"accuracy": float(np.mean(correct)), "loss": float(np.mean(loss))}
        if shards:  # recorded with shard="ddp": the ranks write the shards (asked once no Store holds them open)
            states = {status[writer_state(p)] for p in shards}
            row.status = next(s for s in ("recording", "stopped", "done") if s in states)
            row.store_bytes += sum(p.stat().st_size for p in shards)
    except (StoreError, OSError, KeyError, ValueError) as err:
        row.status, row.reason = "damaged", " ".join(str(err).split())
    return row


def read_study(study_dir: Path, root: Path) -> SiteRow:
    """The index row of a study folder, with its seeds' rows under it."""
    row = SiteRow(study_dir.relative_to(root).as_posix(), "study", "study", links=_links(study_dir, root),
                  verdicts=_verdicts(RunFolder(study_dir).findings))
    try:
        study = load_study(study_dir)
    except ValueError as err:
        row.status, row.reason = "damaged", " ".join(str(err).split())
        return row
    members = []
    if study.of_runs:  # its runs are rows of their own where they lie in the runs folder: not listed twice
        row.seed = ", ".join(study.labels)
        for run_dir in study.runs:
            if run_dir.is_dir() and run_dir.resolve().is_relative_to(root.resolve()):
                members.append(read_run(run_dir.resolve(), root.resolve()))
    else:
        row.seed = study.seeds
        for seed in study.seeds:
            if study.seed_dir(seed).is_dir():
                row.seeds.append(read_run(study.seed_dir(seed), root, "seed"))
        members = row.seeds
    done = [r for r in members if r.snapshots]
    row.snapshots = sum(r.snapshots for r in members)
    row.store_bytes = sum(r.store_bytes for r in row.seeds)  # a study of runs holds no store of its own
    if done:
        first = done[0]
        row.model, row.data, row.date = first.model, first.data, min(r.date for r in done if r.date)
        for probe in PROBES:  # the mean over the seeds that have the probe set
            have = [r.metrics[probe] for r in done if probe in r.metrics]
            if have:
                row.metrics[probe] = {k: float(np.mean([m[k] for m in have])) for k in ("accuracy", "loss")}
    return row


def collect(root: str | os.PathLike) -> list[SiteRow]:
    """Every run and study below ``root`` (any depth; a study's seeds belong to it), sorted by path.

    A run is a folder holding ``store.h5`` or ``config.toml``; a study a folder holding ``study.json``.
    """
    root = Path(root)
    rows: list[SiteRow] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames.sort()
        if STUDY_FILE in filenames:
            rows.append(read_study(here, root))
            dirnames.clear()  # its seed folders are in its row
        elif STORE_FILE in filenames or CONFIG_FILE in filenames:
            rows.append(read_run(here, root))
            dirnames.clear()
    return sorted(rows, key=lambda r: r.path)


def write_site(root: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write ``index.html`` over every run and study below ``root``; returns its path.

    Args:
        root: the runs folder.
        out: the folder to write ``index.html`` into (default ``root``). Links are relative, so the page works
            wherever the folder is moved as a whole.
    """
    from .report_templates.site import render_index  # jinja2 only

    root = Path(root)
    out_dir = Path(out) if out is not None else root
    if out_dir.is_dir():
        check_output(out_dir / INDEX_FILE, "site", option="", example=INDEX_FILE)
    rows = collect(root)
    prefix = Path(os.path.relpath(root, out_dir)).as_posix()
    page = render_index(rows, root_label=str(root), link_prefix="" if prefix == "." else prefix + "/")
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / INDEX_FILE
    with atomic_output(path, "site") as tmp:  # an index.html that topotrace did not write is never replaced
        tmp.write_text(page, "utf-8")
    return path


def site_index_for(report: str | os.PathLike) -> str | None:
    """The relative link from a run's report (in its run folder) to the site's ``index.html`` above it, if any.

    The index is looked for in the run folder's parent and, for a study's seed, its grandparent.
    """
    run_dir = Path(report).parent
    for up, parent in ((1, run_dir.parent), (2, run_dir.parent.parent)):
        if _is_site_index(parent / INDEX_FILE):
            return "../" * up + INDEX_FILE
    return None


def _is_site_index(path: Path) -> bool:
    return written_by_topotrace(path, "site")
