"""Replicate runs of one configuration (seeds): train, record and analyse each, then the findings across them.

A study lives in one folder, ``<out_dir>/<name>/``::

    study.json           what the study is: its name, seeds and the configuration (written first)
    seed-<k>/            one normal run per seed (store.h5, config.toml, analysis.h5, report.html)
    findings.json        the findings across seeds (docs/analysis.md)
    report.html          the study's report: findings across seeds, then the maps of one seed

An interrupted study continues where it stopped: a seed whose store reached its last training step and whose
analysis is cached is not redone; a seed folder left half-written by the interrupted study is trained again.
Only folders the study itself made are ever replaced.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from topotrace.analysis.pipeline import SnapshotCluster, analyze, cached_results
from topotrace.analysis.results import AnalysisResults
from topotrace.instrument.store import STORE_FILE, Store

STUDY_FILE = "study.json"
FORMAT = "topotrace-study"


@dataclass
class Study:
    """A study folder and what it holds."""

    path: Path
    name: str
    seeds: list[int]
    config: dict

    def seed_dir(self, seed: int) -> Path:
        return self.path / f"seed-{seed}"


def is_study(path: str | Path) -> bool:
    """True when ``path`` is a study folder (it holds ``study.json``)."""
    return (Path(path) / STUDY_FILE).is_file()


def load_study(path: str | Path) -> Study:
    """Read a study folder's ``study.json``.

    Raises:
        ValueError: the file is not a topotrace study description.
    """
    path = Path(path)
    try:
        data = json.loads((path / STUDY_FILE).read_text("utf-8"))
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}")
        return Study(path, str(data["name"]), [int(s) for s in data["seeds"]], dict(data["config"]))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path / STUDY_FILE} is not a topotrace study description ({err}).") from None


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


def create_or_resume(path: Path, name: str, seeds: Sequence[int], cfg: dict) -> Study:
    """The study at ``path``: created when the folder does not exist, resumed when it is this study.

    Raises:
        FileExistsError: ``path`` exists but is not a study, or a study of another configuration or seeds.
    """
    cfg = copy.deepcopy(cfg)
    cfg["run"].pop("seed", None)  # each seed sets its own
    if path.exists():
        if not is_study(path):
            raise FileExistsError(f"{path} exists and is not a topotrace study; choose another --name.")
        old = load_study(path)
        if old.config != json.loads(json.dumps(cfg)) or old.seeds != list(seeds):
            raise FileExistsError(f"{path} holds a study with other settings (seeds {old.seeds}); choose another "
                                  "--name, or run it with the same config and seeds to continue it.")
        return old
    path.mkdir(parents=True)
    data = {"format": FORMAT, "name": name, "seeds": list(seeds), "config": cfg}
    (path / STUDY_FILE).write_text(json.dumps(data, indent=2), "utf-8")
    return Study(path, name, list(seeds), json.loads(json.dumps(cfg)))


def seed_config(study: Study, seed: int) -> dict:
    """The run configuration of one seed: the study's, with its own seed, name and folder."""
    cfg = copy.deepcopy(study.config)
    cfg["run"].update({"seed": seed, "name": f"seed-{seed}", "out_dir": str(study.path)})
    return cfg


def trained(run_dir: Path) -> bool:
    """True when the run's store reached its last training step (``total_steps`` in its metadata)."""
    store = run_dir / STORE_FILE
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
              cluster: SnapshotCluster | None = None) -> list[AnalysisResults]:
    """Train and analyse every seed that is not done yet; returns the analyses in seed order.

    Without a cluster each seed is analysed right after its training; with one, every seed is trained first and
    then all are analysed in parallel on the cluster.

    Args:
        study: the study.
        train: trains one run from its configuration (``topotrace.train.train_run`` with progress).
        on_seed: called as ``on_seed(seed, state)`` with state ``"trained"`` (was already), ``"training"``,
            ``"analysing"`` or ``"done"``.
        cluster: compute the analyses' snapshots on this Dask cluster
            (:func:`topotrace.analysis.distributed.dask_cluster`).
    """
    note = on_seed or (lambda seed, state: None)
    results = []
    if cluster is not None:
        for seed in study.seeds:
            _train_seed(study, seed, train, note)
        for seed in study.seeds:
            note(seed, "analysing")
        for seed, res in zip(study.seeds, _analyses([study.seed_dir(s) for s in study.seeds], cluster)):
            note(seed, "done")
            results.append(res)
        return results
    for seed in study.seeds:
        _train_seed(study, seed, train, note)
        note(seed, "analysing")
        res = _analysis(study.seed_dir(seed))
        note(seed, "done")
        results.append(res)
    return results


def study_results(study: Study, cluster: SnapshotCluster | None = None) -> list[AnalysisResults]:
    """The analyses of a study's finished seeds (analysed now where no current cache exists).

    With ``cluster``, the seeds without a current cache are analysed in parallel on that Dask cluster.

    Raises:
        ValueError: a seed has not finished training.
    """
    missing = [s for s in study.seeds if not trained(study.seed_dir(s))]
    if missing:
        raise ValueError(f"Study {study.name!r}: seeds {missing} have not finished training. Continue the study "
                         f"with: topotrace study --name {study.name} (same config and seeds).")
    return _analyses([study.seed_dir(s) for s in study.seeds], cluster)


def _train_seed(study: Study, seed: int, train: Callable[[dict], object], note: Callable[[int, str], None]) -> None:
    run_dir = study.seed_dir(seed)
    if trained(run_dir):
        note(seed, "trained")
        return
    if run_dir.exists():  # left half-written by this study when it was interrupted
        shutil.rmtree(run_dir)
    note(seed, "training")
    train(seed_config(study, seed))


def _analysis(run_dir: Path, cluster: SnapshotCluster | None = None) -> AnalysisResults:
    return cached_results(run_dir) or analyze(run_dir, cluster=cluster)


def _analyses(run_dirs: list[Path], cluster: SnapshotCluster | None) -> list[AnalysisResults]:
    """The analyses of several runs, in order; on a cluster, all runs at once (one thread each submits tasks)."""
    if cluster is None or len(run_dirs) < 2:
        return [_analysis(d, cluster) for d in run_dirs]
    with ThreadPoolExecutor(len(run_dirs)) as pool:
        return list(pool.map(lambda d: _analysis(d, cluster), run_dirs))
