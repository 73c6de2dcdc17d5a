"""The run folder and the study folder: the one place that names their files and holds the rules about them.

A run folder (``topotrace train`` makes one; the Recorder writes a store into any folder)::

    runs/NAME/
        store.h5                   the store (instrument.store.STORE_FILE); store.shard-*-of-*.h5 beside it when
                                   recorded with Recorder(shard="ddp")
        config.toml                the training configuration (topotrace train)
        checkpoint.npz             the weights a killed run resumes from (topotrace train --resume)
        analysis.h5                the cached analysis the report is built from; analysis.incremental.h5 beside it
                                   lets the next analysis extend it (its sidecar)
        analysis_train.h5          the train probe set's analysis (the report's overfitting section)
        analysis_live.h5           topotrace watch's analysis while the run records (analysis.h5 stays final)
        report.html                the report; report_layers/ holds its layer pages when it is split
        findings.json              the findings (claims, effects, intervals, verdicts)
        maps/                      maps exported as PNG (topotrace report --png)
    runs/NAME.zip                  the archive bundle (topotrace archive)
    runs/index.html                the site index over the runs folder (topotrace site)

A study folder holds ``study.json`` (its name and seeds and config, or its runs), ``findings.json`` and
``report.html``, and for a config study one run folder per seed, ``seed-K/``.

:class:`RunFolder` names these files; :func:`locate` tells a run from a study from neither with the one-line
errors the commands give; :func:`analyses_train` is the rule for analysing the train probe set too.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from .analysis.cache import CACHE_FILE
from .instrument.store import STORE_FILE, Store, StoreError, resolve_store_path

ANALYSIS_FILE = CACHE_FILE  # the analysis package names its cache
TRAIN_ANALYSIS_FILE = "analysis_train.h5"
LIVE_ANALYSIS_FILE = "analysis_live.h5"
REPORT_FILE = "report.html"
FINDINGS_FILE = "findings.json"
CONFIG_FILE = "config.toml"
CHECKPOINT_FILE = "checkpoint.npz"
STUDY_FILE = "study.json"
MAPS_DIR = "maps"
INDEX_FILE = "index.html"  # the site index of a runs folder (and the atlas's page in its folder)
ARCHIVE_SUFFIX = ".zip"
SEED_PREFIX = "seed-"  # a config study's seed K lives in seed-K/
SHARD_GLOB = f"{Path(STORE_FILE).stem}.shard-*-of-*{Path(STORE_FILE).suffix}"  # instrument.store.shards.shard_file
TRAIN_PROBE_SET = "train"


@dataclass(frozen=True)
class RunFolder:
    """A run folder or a study folder, and the paths of the files it holds (whether they exist or not).

    Attributes:
        path: the folder.
        store_name: the store's file name in it (``store.h5``; another name when a store file was given).
    """

    path: Path
    store_name: str = STORE_FILE

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def of_store(cls, store: str | os.PathLike) -> RunFolder:
        """The run folder of a store file (its analyses and report lie next to it)."""
        store = Path(store)
        return cls(store.parent, store.name)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def store(self) -> Path:
        return self.path / self.store_name

    def shards(self) -> list[Path]:
        """The store's shard files (a store recorded with ``Recorder(shard="ddp")``), sorted."""
        return sorted(p for p in self.path.glob(SHARD_GLOB) if p.is_file())

    @property
    def config(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def analysis(self) -> Path:
        return self.path / ANALYSIS_FILE

    @property
    def train_analysis(self) -> Path:
        return self.path / TRAIN_ANALYSIS_FILE

    @property
    def live_analysis(self) -> Path:
        return self.path / LIVE_ANALYSIS_FILE

    @staticmethod
    def sidecars(analysis: Path) -> list[Path]:
        """The files an analysis cache keeps beside it (the state that lets it be extended)."""
        from .analysis.incremental import state_path

        return [state_path(analysis)]

    @property
    def report(self) -> Path:
        return self.path / REPORT_FILE

    def report_pages(self, report: Path | None = None) -> list[Path]:
        """The pages of the report (default ``report.html``) as written: the page itself, then its layer pages."""
        from .report_templates.generate import report_pages

        return report_pages(report or self.report)

    @property
    def findings(self) -> Path:
        return self.path / FINDINGS_FILE

    @property
    def maps(self) -> Path:
        return self.path / MAPS_DIR

    @property
    def archive(self) -> Path:
        """The default archive bundle, ``runs/NAME.zip`` next to the folder."""
        return self.path.with_name(self.path.name + ARCHIVE_SUFFIX)

    @property
    def study_file(self) -> Path:
        return self.path / STUDY_FILE

    def seed(self, seed: int) -> RunFolder:
        """The run folder of a config study's seed."""
        return RunFolder(self.path / seed_name(seed))

    @property
    def is_study(self) -> bool:
        """A study folder: it holds ``study.json``."""
        return self.study_file.is_file()

    @property
    def is_run(self) -> bool:
        """A run folder: it holds its store (and is no study)."""
        return not self.is_study and self.store.is_file()

    @property
    def kind(self) -> str | None:
        """``"study"``, ``"run"`` or ``None`` (neither)."""
        return "study" if self.is_study else "run" if self.is_run else None

    def run_files(self) -> list[Path]:
        """The files of a run an archive bundles, those present: store (and shards), analyses, config, findings."""
        names = (self.store, self.analysis, self.train_analysis, self.config, self.findings)
        return [p for p in names if p.is_file()] + self.shards()


def seed_name(seed: int) -> str:
    """The folder (and run name) of a config study's seed: ``seed-K``."""
    return f"{SEED_PREFIX}{seed}"


def analyses_train(results) -> bool:
    """Whether a run's report also shows the claims on the train probe set (its overfitting section).

    It does when the report's analysis (``results``, an :class:`~topotrace.analysis.results.AnalysisResults`) is
    of another probe set and the store records the train probe set; that analysis is cached in
    ``analysis_train.h5`` (PCA layouts only: the claims need no other).
    """
    return results.probe_set != TRAIN_PROBE_SET and TRAIN_PROBE_SET in results.curves


def find_store(run: str | os.PathLike) -> Path:
    """The store file of a run folder or store path given on the command line.

    Raises:
        FileNotFoundError: there is no store there.
        ValueError: the path is something else than a regular file (a folder, a FIFO, a dangling link).
    """
    path = resolve_store_path(run)
    if not path.is_file():
        what = not_a_file(path)
        if what is not None:
            raise ValueError(f"{path} is {what}, not a store file. A store is the regular file {STORE_FILE} that "
                             f"`topotrace train` writes into a run folder (runs/NAME/{STORE_FILE}).")
        where = f"{run} is a folder without {path.name}" if Path(run).is_dir() else f"No store at {path}"
        raise FileNotFoundError(f"{where}. Give a run folder (runs/NAME, holding {STORE_FILE}) or a store file; "
                                "`topotrace train` makes one.")
    return path


def locate(run: str | os.PathLike) -> RunFolder:
    """The folder a command is given: a study folder (holding ``study.json``), else the run of its store.

    ``run`` is a study folder, a run folder (``runs/NAME``) or a store file.

    Raises:
        FileNotFoundError, ValueError: no store there (:func:`find_store`'s one line).
    """
    folder = RunFolder(Path(run))
    if folder.is_study:
        return folder
    return RunFolder.of_store(find_store(run))


def run_or_study(run: Path) -> str:
    """``"run"`` or ``"study"`` for a folder a bundle is made of (``topotrace archive``).

    Raises:
        FileNotFoundError: nothing at ``run``.
        ValueError: a file, or a folder holding neither ``store.h5`` nor ``study.json``.
    """
    if not run.exists():
        raise FileNotFoundError(f"No run folder at {run}. Give a run folder (runs/NAME, holding {STORE_FILE}) or a "
                                f"study folder (holding {STUDY_FILE}).")
    if not run.is_dir():
        raise ValueError(f"{run} is not a run folder. Give the folder of a run (runs/NAME, holding {STORE_FILE}) or "
                         f"of a study (holding {STUDY_FILE}), not a file.")
    kind = RunFolder(run).kind
    if kind is None:
        raise ValueError(f"{run} is not a run folder: it holds no {STORE_FILE} and no {STUDY_FILE}. Give runs/NAME "
                         "of a trained run or study.")
    return kind


def require_run(run: Path) -> Path:
    """The store of a run folder given to a study of existing runs.

    Raises:
        ValueError: ``run`` is no folder holding ``store.h5``.
    """
    store = RunFolder(run).store
    if not run.is_dir() or not store.is_file():
        raise ValueError(f"{run} is not a run folder (it holds no {STORE_FILE}); give the folders of recorded runs, "
                         "e.g. runs/a runs/b runs/c.")
    return store


def not_a_file(path: Path) -> str | None:
    """What ``path`` is when it exists but is no regular file (never opened: a FIFO would block), else None."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return None  # nothing there
    if stat.S_ISLNK(mode):
        try:
            path.resolve(strict=True)
        except (RuntimeError, OSError) as err:  # Python < 3.13 raises RuntimeError for a loop, later ELOOP
            if isinstance(err, RuntimeError) or err.errno == errno.ELOOP:
                return "a symbolic link that loops back on itself"
            return f"a symbolic link to {os.readlink(path)!r}, which does not exist"
        try:
            mode = path.stat().st_mode
        except OSError:
            return "a symbolic link that cannot be followed"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return None


def open_store(path: Path, until_good: bool = False, check: bool = True) -> Store:
    """Open a store for reading; a file that is not a readable store, or a damaged one, gets one clear error.

    With ``check`` (``report``, ``analyze``, ``figure``) every committed chunk is read once and its checksum
    verified before any work (one plain read of the store), so a damaged chunk is refused, naming the first damaged
    snapshot, even when the command would not read that chunk itself (a cached analysis). With ``until_good`` the
    snapshots before it are used instead; a store damaged at snapshot 0 leaves none and is refused.

    Raises:
        StoreError: not a topotrace store, another schema version, or damaged.
        ValueError: HDF5 cannot read the file at all.
    """
    try:
        st = Store(path, until_good=until_good or check)
    except OSError as err:  # h5py: not an HDF5 file, truncated, unreadable
        raise ValueError(f"Cannot read {path} as a topotrace store ({err}). Give a {STORE_FILE} written by topotrace "
                         "(or its run folder).") from None
    if st.damaged_at is not None and (not until_good or st.damaged_at == 0):
        error = st.damage_error or StoreError(f"{path}: snapshot {st.damaged_at} is damaged: {st.damage}.")
        st.close()
        raise error
    return st
