"""Replicate runs of one setup (seeds) and the findings across them.

A study is a set of comparable runs, however they were recorded. It lives in one folder, ``<out_dir>/<name>/``::

    study.json           what the study is: its name and either its seeds and configuration (a config study)
                         or its runs, as paths relative to the study folder (a study of existing runs)
    seed-<k>/            a config study only: one normal run per seed (store.h5, config.toml, analysis.h5, ...)
    findings.json        the findings across the runs (docs/analysis.md)
    report.html          the study's report: findings across the runs, then the maps of the first run

A config study trains its seeds (:func:`run_study`); an interrupted one continues where it stopped: a seed whose
store reached its last training step and whose analysis is cached is not redone; a seed folder left half-written
by the interrupted study is trained again. A study of existing runs (:func:`study`) trains nothing: it
checks that the runs can be compared (:func:`check_comparable`), analyses those without a current cached
analysis, and never copies, moves or changes them. While a command works on a study it holds the study's lock
(:func:`locked`); a second command on the same study is refused, so it can never remove a seed that the first
is recording. Only folders the study itself made are ever replaced.
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .analysis.findings import MIN_CHANGE, MIN_R
from .analysis.params import AnalysisParams
from .analysis.pipeline import SnapshotCluster, analyze, cached_results
from .analysis.results import AnalysisResults
from .instrument.store import Store, writer_state
from .runfolder import FINDINGS_FILE, STUDY_FILE, RunFolder, require_run, seed_name

FORMAT = "topotrace-study"


@dataclass
class Study:
    """A study folder and what it holds.

    Attributes:
        path: the study folder.
        name: the study's name.
        seeds: a config study's seeds (empty for a study of existing runs).
        config: a config study's configuration (empty for a study of existing runs).
        run_paths: a study of existing runs: its runs as written in ``study.json``, relative to ``path``.
    """

    path: Path
    name: str
    seeds: list[int]
    config: dict
    run_paths: list[str] = field(default_factory=list)

    @property
    def of_runs(self) -> bool:
        """True for a study of existing runs (``topotrace study RUN RUN ...``), False for a config study."""
        return bool(self.run_paths)

    def seed_dir(self, seed: int) -> Path:
        return RunFolder(self.path).seed(seed).path

    @property
    def runs(self) -> list[Path]:
        """The run folders, in the study's order."""
        if self.of_runs:
            return [Path(os.path.normpath(self.path / p)) for p in self.run_paths]
        return [self.seed_dir(s) for s in self.seeds]

    @property
    def labels(self) -> list[str]:
        """One display name per run: ``seed <k>`` for a config study, the run's path for a study of runs."""
        if self.of_runs:
            return run_labels(self.runs)
        return [f"seed {s}" for s in self.seeds]


def run_labels(runs: Sequence[Path]) -> list[str]:
    """Short distinct names for run folders: their folder names, or their paths where two names collide."""
    names = [Path(r).name for r in runs]
    if len(set(names)) == len(names):
        return names
    return [os.path.relpath(r) for r in runs]


def is_study(path: str | Path) -> bool:
    """True when ``path`` is a study folder (it holds ``study.json``)."""
    return RunFolder(Path(path)).is_study


def load_study(path: str | Path) -> Study:
    """Read a study folder's ``study.json``.

    Raises:
        ValueError: the file is not a topotrace study description.
    """
    path = Path(path)
    try:
        data = json.loads((path / STUDY_FILE).read_text("utf-8"))
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format') if isinstance(data, dict) else None!r}")
        if "runs" in data:
            runs = [str(r) for r in data["runs"]]
            if len(runs) < 2 or not all(runs):
                raise ValueError("a study of runs names at least two runs")
            return Study(path, str(data["name"]), [], {}, runs)
        return Study(path, str(data["name"]), [int(s) for s in data["seeds"]], dict(data["config"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path / STUDY_FILE} is not a topotrace study description ({err}).") from None


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the study's lock (an exclusive ``flock`` on its ``study.json``) while the block runs.

    Raises:
        BlockingIOError: another process holds it (it is working on the same study).
    """
    with open(path / STUDY_FILE, "rb") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise BlockingIOError(f"The study {path} is in use by another topotrace process (it holds the study's "
                                  "lock); wait for it to finish or stop it, then run the command again.") from None
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def parse_seeds(text: str) -> list[int]:
    """``"0,1,2"`` or ``"0-4"`` -> distinct non-negative seeds in the given order.

    Raises:
        ValueError: anything else, naming what is allowed.
    """
    seeds: list[int] = []
    try:
        for part in (p.strip() for p in str(text).split(",")):
            if "-" in part[1:]:
                lo, hi = (int(v) for v in part.split("-", 1))
                seeds += list(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"The '--seeds' option must be distinct non-negative integers such as 0,1,2 or 0-4. "
                         f"Got {text!r}.")
    return seeds


def _create(path: Path, data: dict) -> bool:
    """Make the study folder and write its ``study.json``; False when another process made the folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        return False
    tmp = path / (STUDY_FILE + ".tmp")
    tmp.write_text(json.dumps(data, indent=2), "utf-8")
    os.replace(tmp, path / STUDY_FILE)
    return True


def create_or_resume(path: Path, name: str, seeds: Sequence[int], cfg: dict) -> tuple[Study, bool]:
    """The config study at ``path``: created when the folder does not exist, resumed when it is this study.

    Returns:
        The study, and whether this call made its folder.

    Raises:
        FileExistsError: ``path`` exists but is not a study, or a study of another configuration or seeds.
    """
    cfg = copy.deepcopy(cfg)
    cfg["run"].pop("seed", None)  # each seed sets its own
    data = {"format": FORMAT, "name": name, "seeds": list(seeds), "config": cfg}
    if not path.exists() and _create(path, data):
        return Study(path, name, list(seeds), json.loads(json.dumps(cfg))), True
    if not is_study(path):
        raise FileExistsError(f"{path} exists and is not a topotrace study; choose another --name.")
    old = load_study(path)
    if old.of_runs or _filled(old.config) != json.loads(json.dumps(cfg)) or old.seeds != list(seeds):
        what = "of existing runs" if old.of_runs else f"with other settings (seeds {old.seeds})"
        raise FileExistsError(f"{path} holds a study {what}; choose another --name, or run it with the same config "
                              "and seeds to continue it.")
    return old, False


def _filled(cfg: dict) -> dict | None:
    """A stored study config with the settings added since it was written at their defaults (None: unreadable)."""
    from .config import load_config

    try:
        full = load_config(None, {s: v for s, v in cfg.items() if isinstance(v, dict)})
    except (ValueError, TypeError):
        return None
    full["run"].pop("seed", None)
    return json.loads(json.dumps(full))


def seed_config(study: Study, seed: int) -> dict:
    """The run configuration of one seed: the study's, with its own seed, name and folder."""
    cfg = copy.deepcopy(study.config)
    cfg["run"].update({"seed": seed, "name": seed_name(seed), "out_dir": str(study.path)})
    return cfg


def trained(run_dir: Path) -> bool:
    """True when the run's store reached its last training step (``total_steps`` in its metadata)."""
    store = RunFolder(run_dir).store
    if not store.is_file():
        return False
    try:
        with Store(store) as st:
            total = st.meta.get("total_steps")
            return st.n_snapshots > 0 and total is not None and int(st.steps[-1]) == int(total)
    except (OSError, ValueError, KeyError):
        return False


def run_study(study: Study, train: Callable[[dict], object],
              on_seed: Callable[[int, str], None] | None = None,
              cluster: SnapshotCluster | None = None, params: AnalysisParams | None = None,
              refresh: bool = False) -> list[AnalysisResults]:
    """Train and analyse every seed that is not done yet; returns the analyses in seed order.

    Without a cluster each seed is analysed right after its training; with one, every seed is trained first and
    then all are analysed in parallel on the cluster. The caller holds the study's lock (:func:`locked`).

    Args:
        study: the study.
        train: trains one run from its configuration (``topotrace.train.train_run`` with progress).
        on_seed: called as ``on_seed(seed, state)`` with state ``"trained"`` (was already), ``"training"``,
            ``"analysing"`` or ``"done"``.
        cluster: compute the analyses' snapshots on this Dask cluster
            (:func:`topotrace.analysis.distributed.dask_cluster`).
        params: analyse every seed with these parameters (its cache reused when they match, as
            :func:`topotrace.analysis.pipeline.analyze`); default: a seed's cached analysis, whatever its
            parameters, else the default parameters.
        refresh: analyse every seed anew.
    """
    note = on_seed or (lambda seed, state: None)
    results = []
    if cluster is not None:
        for seed in study.seeds:
            _train_seed(study, seed, train, note)
        for seed in study.seeds:
            note(seed, "analysing")
        for seed, res in zip(study.seeds, _analyses([study.seed_dir(s) for s in study.seeds], cluster,
                                                               params, refresh)):
            note(seed, "done")
            results.append(res)
        return results
    for seed in study.seeds:
        _train_seed(study, seed, train, note)
        note(seed, "analysing")
        res = _analysis(study.seed_dir(seed), None, params, refresh)
        note(seed, "done")
        results.append(res)
    return results


def study_results(study: Study, cluster: SnapshotCluster | None = None, params: AnalysisParams | None = None,
                  refresh: bool = False) -> list[AnalysisResults]:
    """The analyses of a study's runs (analysed now where no current cache exists), in the study's order.

    With ``cluster``, the runs without a current cache are analysed in parallel on that Dask cluster. ``params``,
    ``refresh``: as in :func:`run_study`.

    Raises:
        ValueError: a seed has not finished training; a run of a study of runs is gone or no longer comparable.
    """
    if study.of_runs:
        check_comparable(study.runs)
        return _analyses(study.runs, cluster, params, refresh)
    missing = [s for s in study.seeds if not trained(study.seed_dir(s))]
    if missing:
        raise ValueError(f"Study {study.name!r}: seeds {missing} have not finished training. Continue the study "
                         f"with: topotrace study --name {study.name} (same config and seeds).")
    return _analyses([study.seed_dir(s) for s in study.seeds], cluster, params, refresh)


def _train_seed(study: Study, seed: int, train: Callable[[dict], object], note: Callable[[int, str], None]) -> None:
    run_dir = study.seed_dir(seed)
    if trained(run_dir):
        note(seed, "trained")
        return
    if run_dir.exists():  # left half-written by this study when it was interrupted (the caller holds the lock)
        store = RunFolder(run_dir).store
        if store.is_file() and writer_state(store) == "live":
            raise BlockingIOError(f"{run_dir} is being recorded by a running process; stop it or wait for it, then "
                                  "run the study again.")
        shutil.rmtree(run_dir)
    note(seed, "training")
    train(seed_config(study, seed))


def _analysis(run_dir: Path, cluster: SnapshotCluster | None = None, params: AnalysisParams | None = None,
              refresh: bool = False) -> AnalysisResults:
    if params is None and not refresh:
        return cached_results(run_dir) or analyze(run_dir, cluster=cluster)
    return analyze(run_dir, params=params, refresh=refresh, cluster=cluster)


def _analyses(run_dirs: list[Path], cluster: SnapshotCluster | None, params: AnalysisParams | None = None,
              refresh: bool = False) -> list[AnalysisResults]:
    """The analyses of several runs, in order; on a cluster, all runs at once (one thread each submits tasks)."""
    if cluster is None or len(run_dirs) < 2:
        return [_analysis(d, cluster, params, refresh) for d in run_dirs]
    with ThreadPoolExecutor(len(run_dirs)) as pool:
        return list(pool.map(lambda d: _analysis(d, cluster, params, refresh), run_dirs))


# --- a study of existing runs --------------------------------------------------------------------------------


def _describe(st: Store) -> list[tuple[str, object]]:
    """What must be equal for two runs to be replicates, in the order differences are reported."""
    out: list[tuple[str, object]] = [("layers", list(st.layers))]
    out += [(f"neurons of layer {name!r}", spec.n_neurons) for name, spec in st.layers.items()]
    out.append(("probe sets", list(st.probes)))
    for name, spec in st.probes.items():  # each seed may draw its own samples, of the same classes and counts
        out.append((f"samples of probe set {name!r}", len(spec.label)))
        counts = np.bincount(np.asarray(spec.label, dtype=np.int64), minlength=len(st.class_names))
        out.append((f"samples per class (labels) of probe set {name!r}", counts))
    out.append(("class names", list(st.class_names)))
    out.append(("confidence measures", list(st.measures)))
    out.append(("snapshot count", st.n_snapshots))
    out.append(("snapshot steps", np.asarray(st.steps)))
    return out


def _show(value: object) -> str:
    if isinstance(value, np.ndarray):
        if value.size <= 6:
            return str(value.tolist())
        return f"[{', '.join(str(v) for v in value[:3].tolist())}, ... {value.size} values]"
    return repr(value)


def _first_difference(a: np.ndarray | object, b: np.ndarray | object) -> str:
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape:
        i = int(np.flatnonzero(a != b)[0])
        return f" (first at position {i}: {a[i]!r} vs {b[i]!r})"
    return ""


def check_comparable(runs: Sequence[str | os.PathLike]) -> None:
    """Refuse runs that are not replicates of one setup, naming the first difference.

    Runs are comparable when they share layers and their neuron counts, probe sets (names, sizes and samples per
    class: each seed may draw its own samples, as a config study's seeds do), class names, confidence measures
    and snapshot steps. Each run must be a run folder holding a
    readable store that no process is recording into.

    Raises:
        ValueError: fewer than two runs, a run named twice, a folder without a readable store, a run being
            recorded, or the first difference between the first run and another.
    """
    from .instrument.store import StoreError

    paths = [Path(r) for r in runs]
    if len(paths) < 2:
        raise ValueError(f"A study of existing runs needs at least two run folders (replicate runs, e.g. seeds). "
                         f"Got {len(paths)}.")
    seen: dict[Path, Path] = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise ValueError(f"The run {p} is named twice (as {seen[key]} too); a study needs distinct runs.")
        seen[key] = p
    ref: list[tuple[str, object]] | None = None
    for p in paths:
        store = require_run(p)
        if writer_state(store) == "live":
            raise ValueError(f"The run {p} is still being recorded; make the study when its training has finished.")
        try:
            with Store(store) as st:
                desc = _describe(st)
        except (StoreError, OSError, ValueError, KeyError) as err:
            raise ValueError(f"The run {p} cannot be read: {' '.join(str(err).split())}") from None
        if ref is None:
            ref = desc
            continue
        for (what, a), (_, b) in zip(ref, desc):
            same = (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
                    and bool(np.all(a == b))) if isinstance(a, np.ndarray) else a == b
            if not same:
                raise ValueError(f"The runs cannot be compared: {what} differ ({paths[0]}: {_show(a)}; {p}: "
                                 f"{_show(b)}{_first_difference(a, b)}). A study needs replicate runs of one setup "
                                 "(same model, probe sets, classes and schedule; only the seed differs).")


def create_of_runs(path: Path, name: str, runs: Sequence[str | os.PathLike]) -> tuple[Study, bool]:
    """The study of existing ``runs`` at ``path``: created, or the same study again (its findings are redone).

    ``study.json`` names the runs by their paths relative to the study folder; the runs are not copied or moved.

    Returns:
        The study, and whether this call made its folder.

    Raises:
        FileExistsError: ``path`` exists but is not a study, or is a study of other runs or of a config.
    """
    rel = [os.path.relpath(Path(r).resolve(), path.resolve()) for r in runs]
    data = {"format": FORMAT, "name": name, "runs": rel}
    if not path.exists() and _create(path, data):
        return Study(path, name, [], {}, rel), True
    if not is_study(path):
        raise FileExistsError(f"{path} exists and is not a topotrace study; choose another --name or --out-dir.")
    old = load_study(path)
    if [p.resolve() for p in old.runs] != [Path(r).resolve() for r in runs]:
        what = f"of the runs {old.run_paths}" if old.of_runs else "made from a config (seeds)"
        raise FileExistsError(f"{path} holds a study {what}; choose another --name, or give the same runs in the "
                              "same order to make its findings again.")
    return old, False


def study(runs: Sequence[str | os.PathLike], path: str | os.PathLike, cluster: SnapshotCluster | None = None,
          min_change: float = MIN_CHANGE, min_r: float = MIN_R, params: AnalysisParams | None = None,
          refresh: bool = False) -> list:
    """Make a study of existing runs: ``path/study.json``, ``findings.json`` and ``report.html``; its findings.

    This is ``topotrace study RUN RUN ... --name NAME`` (and ``tt.study``). Nothing is trained; a run whose
    analysis is cached is not analysed again; the runs are not copied, moved or changed (a run without a cached
    analysis gets its ``analysis.h5``, as ``topotrace analyze`` would write it). Everything is checked before
    the study folder is made.

    Args:
        runs: two or more run folders (each holding a ``store.h5``), replicate runs of one setup.
        path: the study folder (made when missing; the same study again is made anew).
        cluster: analyse the runs without a cached analysis on this Dask cluster.
        min_change: the time claims' smallest change of interest, a fraction of the first snapshot's mean
            (default :data:`topotrace.analysis.findings.MIN_CHANGE`).
        min_r: the confidence claims' smallest correlation of interest (default ``MIN_R``).
        params: analyse every run with these parameters (:class:`topotrace.analysis.params.AnalysisParams`; a
            run's cache is reused when they match; the run gets the new ``analysis.h5`` otherwise, as
            ``topotrace analyze`` with the same options would write it). Default: each run's cached analysis,
            whatever its parameters, else the default parameters.
        refresh: analyse every run anew.

    Returns:
        The findings across the runs (:class:`topotrace.analysis.findings.Finding`), as in ``findings.json``.

    Raises:
        ValueError: runs that cannot be compared (the message names the first difference), or fewer than two.
        FileExistsError: ``path`` is something else than this study.
        BlockingIOError: another process works on this study.
    """
    from .config import check_run_name

    path = Path(path)
    check_run_name(path.name, "study name")
    check_comparable(runs)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise FileExistsError(f"{path} exists and is not a topotrace study folder; choose another --name.")
    if path.exists() and not is_study(path):
        raise FileExistsError(f"{path} exists and is not a topotrace study; choose another --name or --out-dir.")
    made_study, made = create_of_runs(path, path.name, runs)
    try:
        with locked(path):
            return write_study_report(made_study, study_results(made_study, cluster, params, refresh),
                                      min_change=min_change,
                                      min_r=min_r)
    except BaseException:
        if made:
            shutil.rmtree(path, ignore_errors=True)  # this call made the study and it failed: undo it
        raise


def write_study_report(study: Study, results: Sequence[AnalysisResults], out: Path | None = None,
                       min_change: float = MIN_CHANGE, min_r: float = MIN_R) -> list:
    """Findings across a study's runs -> ``findings.json`` and ``report.html`` (default: in the study folder).

    A config study's seeds get their own report where they have none; a study of existing runs writes nothing
    into its runs and links the reports they have. ``min_change`` and ``min_r``: the verdicts' smallest effects
    of interest (:func:`topotrace.analysis.findings.findings`; defaults there).

    Returns:
        The findings across the runs (the time trends of :func:`~topotrace.analysis.findings.trend_findings`
        are in ``findings.json`` too).
    """
    from .analysis.findings import findings, trend_findings, write_findings_json
    from .report_templates.generate import build_report
    from .site import site_index_for

    names = study.labels
    found = findings(results, names, min_change=min_change, min_r=min_r)
    out = out or RunFolder(study.path).report
    links = []
    for name, run_dir, res in zip(names, study.runs, results):  # each run's own report, linked from the study's
        run_report = RunFolder(run_dir).report
        if not study.of_runs and not run_report.exists():
            build_report(res, run_report, index=site_index_for(run_report))
        if run_report.exists():
            links.append((name, os.path.relpath(run_report, out.parent)))
    trends = trend_findings(results, names)
    title = f"study {study.name} ({len(names)} {'runs' if study.of_runs else 'seeds'})"
    build_report(results[0], out, found, runs=links, title=title,  # pages and findings.json: atomic writes
                 index=site_index_for(out) if out == RunFolder(study.path).report else None, trends=trends)
    write_findings_json([*found, *trends], out.with_name(FINDINGS_FILE))
    return found
