"""Archive bundles: one self-describing zip of a run or a study, and the check that a bundle is whole.

:func:`write_archive` copies a run's store, analyses, config and findings (a study's, and each seed's under
``seed-K/``) into a staging folder, rebuilds the report there from the bundled analysis (dated by the archive's
epoch, so it can be rebuilt byte for byte), adds ``environment.json``, ``CITATION.cff``, ``README.txt``, an
RO-Crate (``ro-crate-metadata.json``, written by the ``rocrate`` library) and ``MANIFEST.sha256``, and zips the
folder with sorted entries, the epoch as every timestamp and fixed permissions, through a temporary file renamed
into place. With ``SOURCE_DATE_EPOCH`` set the zip is the same bytes every time.

:func:`topotrace.verify.verify_archive` checks a bundle. The layout of a bundle is documented in
``docs/archive.md``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import platform
import shutil
import stat
import time
import zipfile
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path, PurePosixPath

from .authors import UNNAMED, Author, meta_authors, parse_author
from .instrument.store import STORE_FILE, Store, StoreError
from .instrument.store.repair import flock
from .report_templates.outputs import ARCHIVE_FORMAT, atomic_output, written_by_topotrace
from .runfolder import (
    ANALYSIS_FILE,
    CONFIG_FILE,
    FINDINGS_FILE,
    REPORT_FILE,
    SEED_PREFIX,
    SHARD_GLOB,
    STUDY_FILE,
    TRAIN_ANALYSIS_FILE,
    TRAIN_PROBE_SET,
    RunFolder,
    analyses_train,
    run_or_study,
    seed_name,
)
from .studies import load_study

FORMAT = ARCHIVE_FORMAT  # "topotrace-archive"
FORMAT_VERSION = 1
ENVIRONMENT_FILE = "environment.json"
CITATION_FILE = "CITATION.cff"
CRATE_FILE = "ro-crate-metadata.json"
MANIFEST_FILE = "MANIFEST.sha256"
README_FILE = "README.txt"
ZIP_EPOCH_MIN = 315532800  # 1980-01-01: the earliest time a zip entry can hold

FORMATS = {".h5": "application/x-hdf5", ".html": "text/html", ".json": "application/json", ".toml": "application/toml",
           ".cff": "application/yaml", ".txt": "text/plain", ".sha256": "text/plain"}
_DESCRIBE = {
    STORE_FILE: "the recorded activations, outputs and run metadata (HDF5 store)",
    ANALYSIS_FILE: "the cached analysis of the store (NAPs, layouts, maps, statistics) the report is built from",
    TRAIN_ANALYSIS_FILE: "the cached analysis of the store's train probe set (the report's overfitting section)",
    CONFIG_FILE: "the training configuration of the run",
    FINDINGS_FILE: "the findings (claims, effects, intervals, verdicts) as JSON",
    REPORT_FILE: "the self-contained HTML report, rebuilt from the bundled analysis",
    STUDY_FILE: "the study's description: its name, seeds and configuration",
    ENVIRONMENT_FILE: "the Python version, platform and every installed distribution with its version",
    CITATION_FILE: "how to cite this bundle, the methods it applies and topotrace (Citation File Format 1.2)",
    README_FILE: "what each file is and how to rebuild and check the report",
    CRATE_FILE: "the RO-Crate metadata: every file with its checksum, format and description",
    MANIFEST_FILE: "SHA-256 checksums of every other file (sha256sum format)",
}
CITATION_REFERENCES = (
    {"type": "conference-paper", "title": "Visualizing Deep Neural Networks with Topographic Activation Maps",
     "authors": [("Krug", "V."), ("Ratul", "R. K."), ("Olson", "C."), ("Stober", "S.")],
     "year": 2023, "collection-title": "HHAI 2023: Augmenting Human Intellect",
     "collection-type": "proceedings", "volume": 368, "start": 138, "end": 152,
     "notes": "Frontiers in Artificial Intelligence and Applications, vol. 368",
     "publisher": "IOS Press"},
    {"type": "article", "title": "Relation of Activity and Confidence when Training Deep Neural Networks",
     "authors": [("Krug", "V."), ("Olson", "C."), ("Stober", "S.")], "year": 2023},
)


def describe_file(name: str) -> str:
    """The one-line description of a bundled file (``name`` relative to the bundle, with ``/``)."""
    path = PurePosixPath(name)
    first = path.parts[0]
    where = f" of seed {first.removeprefix(SEED_PREFIX)}" if first.startswith(SEED_PREFIX) else ""
    if len(path.parts) > 1 and path.parts[-2].endswith("_layers"):
        return f"a page of the report{where} with the maps of one or more layers"
    if PurePosixPath(path.name).match(SHARD_GLOB):
        return f"one DDP rank's shard of the store (its share of the probe samples), read through {STORE_FILE}{where}"
    return _DESCRIBE.get(path.name, "a file of the run") + where


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def archive_epoch() -> int:
    """``SOURCE_DATE_EPOCH`` when set (reproducible bytes), else now; seconds since 1970-01-01 UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return int(time.time())
    try:
        return int(epoch)
    except ValueError:
        raise ValueError(f"The SOURCE_DATE_EPOCH environment variable must be a whole number of seconds since "
                         f"1970-01-01 UTC. Got {epoch!r}.") from None


@contextlib.contextmanager
def _source_date(epoch: int) -> Iterator[None]:
    """``SOURCE_DATE_EPOCH`` set to ``epoch`` inside the block (the report's date and ids), restored after it."""
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = str(epoch)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved


def _iso(epoch: int) -> str:
    return _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def is_archive(path: Path) -> bool:
    """True when ``path`` is a zip that topotrace wrote (its ``environment.json`` names the archive format)."""
    return written_by_topotrace(path, "archive")  # a regular file (never a link or FIFO) holding FORMAT


def default_out(run: Path) -> Path:
    """``runs/NAME.zip`` next to the run folder ``runs/NAME`` (the site links it)."""
    return RunFolder(run.resolve()).archive


def check_archive_input(run: Path, out: Path) -> str:
    """Refuse bad input before anything is written; returns the kind of bundle, ``"run"`` or ``"study"``.

    Raises:
        FileNotFoundError: no run folder at ``run``, or the folder of ``out`` does not exist.
        ValueError: ``run`` is not a run or study folder, or is a study of existing runs.
        FileExistsError: ``out`` exists and is not a topotrace archive (it is never overwritten then).
    """
    kind = run_or_study(run)
    if kind == "study" and load_study(run).of_runs:  # its runs lie outside it: a bundle of it is not built yet
        raise ValueError(f"{run} is a study of existing runs (topotrace study RUN RUN ...); a bundle holds a config "
                         "study's seeds only. Archive each of its runs (topotrace archive runs/NAME), or make the "
                         "study with --config and --seeds.")
    if out.is_dir():
        example = out / (run.name + ".zip")
        raise IsADirectoryError(f"--out {out} is a folder; give the zip file to write, e.g. {example}.")
    if not out.parent.is_dir():
        raise FileNotFoundError(f"--out {out}: the folder {out.parent} does not exist. Create it first, or give a zip "
                                "file in an existing folder.")
    if os.path.lexists(out) and not is_archive(out):
        raise FileExistsError(f"--out {out} exists and was not written by topotrace (it is not a topotrace archive); "
                              "choose another path or remove it yourself.")
    try:
        if out.resolve().is_relative_to(run.resolve()):
            raise ValueError(f"--out {out} lies inside the folder being archived; write the zip next to it (the "
                             f"default {default_out(run)}).")
    except OSError:
        pass
    return kind


def _copy_run_files(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for path in RunFolder(src).run_files():  # store (and its shards), analyses, config, findings
        shutil.copy2(path, dest / path.name)  # with its date: the analysis cache is keyed on it


def build_reports(root: Path, kind: str) -> None:
    """Rebuild the report(s) in a bundle folder from its stores' bundled analyses, as ``topotrace report`` does.

    A run: ``report.html`` (and its layer pages) from ``analysis.h5``, with the train probe set's claims when
    ``analysis_train.h5`` is there. A study: each seed's ``report.html``, then the study's ``report.html`` and
    ``findings.json`` across the seeds. The analyses are read as they are (checked against the store's SHA-256,
    not its file date, which unzipping changes). The page's date and ids come from ``SOURCE_DATE_EPOCH`` (set by
    the caller) so the same bundle gives the same bytes.

    Raises:
        ValueError: an analysis is missing, unreadable or was made from other store content.
    """
    from .analysis.findings import run_findings
    from .report_templates.generate import build_report
    from .studies import write_study_report

    if kind == "study":
        study = load_study(root)
        results = [bundled_analysis(study.seed_dir(seed)) for seed in study.seeds]
        for seed in study.seeds:
            RunFolder(study.seed_dir(seed)).report.unlink(missing_ok=True)  # rebuilt, not taken as it is
        write_study_report(study, results)
        return
    folder = RunFolder(root)
    results = bundled_analysis(root)
    found_train = None
    if analyses_train(results) and folder.train_analysis.is_file():
        train = bundled_analysis(root, TRAIN_ANALYSIS_FILE)
        if train.probe_set == TRAIN_PROBE_SET:
            found_train = run_findings(train)
    build_report(results, folder.report, run_findings(results), found_train=found_train)


def bundled_analysis(run: Path, name: str = ANALYSIS_FILE):  # -> AnalysisResults (imported lazily)
    """The analysis ``name`` in the run folder ``run``, checked against the SHA-256 of the store next to it.

    Raises:
        ValueError: it is missing, unreadable, or was made from other store content.
    """
    from .analysis.results import load_results

    path = run / name
    store = RunFolder(run).store
    if not path.is_file():
        raise ValueError(f"{path} is missing: there is no analysis to build the report from.")
    try:
        results = load_results(path)
    except (OSError, KeyError) as err:
        raise ValueError(f"{path} is not a readable analysis: {err}") from err
    digest = sha256_file(store)
    if results.store_sha256 and results.store_sha256 != digest:
        raise ValueError(f"{path} was made from other content than {store} (SHA-256 "
                         f"{results.store_sha256[:12]}... vs {digest[:12]}...).")
    return results


def check_intact(store: Path) -> None:
    """Refuse a store with a damaged chunk before it is bundled, as ``topotrace verify`` would.

    Every committed chunk is read and its checksum verified (one plain read of the store).

    Raises:
        StoreError: naming the first damaged snapshot (its dataset, step and what is wrong).
    """
    with Store(store, until_good=True) as st:
        if st.damaged_at is not None:
            raise StoreError(f"{store}: {st.damage}; an archive bundles whole stores only (verify would reject it). "
                             "Restore the store from a copy or record the run again.")


def check_analysed(run: Path, kind: str) -> None:
    """Refuse a run (or a study's seed) without a current analysis next to its store, before anything is written.

    Raises:
        ValueError: naming the run and the command that analyses it.
    """
    from .analysis.pipeline import cached_results

    runs = [load_study(run).seed_dir(s) for s in load_study(run).seeds] if kind == "study" else [run]
    for folder in map(RunFolder, runs):
        if not folder.store.is_file():
            raise ValueError(f"{folder.path} holds no {STORE_FILE}: the study is not finished. Continue it with "
                             "`topotrace study`, then archive it.")
        check_intact(folder.store)
        if cached_results(folder.store, folder.analysis) is None:
            raise ValueError(f"{folder.store} has no current analysis in {folder.analysis}. Run "
                             f"`topotrace analyze {folder.path}` (or `topotrace report {run}`) first, then archive "
                             "it.")


def environment(epoch: int, kind: str, name: str) -> dict[str, object]:
    """The contents of ``environment.json``: what made the bundle, and every installed distribution (sorted)."""
    dists: dict[str, str] = {}
    for dist in metadata.distributions():
        dist_name = dist.metadata["Name"]
        if dist_name and dist_name.lower() not in {k.lower() for k in dists}:
            dists[dist_name] = dist.version
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind, "name": name,
            "source_date_epoch": epoch, "created": _iso(epoch),
            "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
            "platform": platform.platform(),
            "distributions": [{"name": k, "version": dists[k]} for k in sorted(dists, key=str.lower)]}


def _yaml(value: object) -> str:
    """A YAML scalar: strings as JSON strings (valid YAML), numbers as they are."""
    return str(value) if isinstance(value, int) else json.dumps(str(value))


def _cff_author(author: Author, indent: str) -> list[str]:
    lines = [f"{indent}- family-names: " + _yaml(author.family)]
    if author.given:
        lines.append(f"{indent}  given-names: " + _yaml(author.given))
    if author.orcid:
        lines.append(f"{indent}  orcid: " + _yaml(author.orcid))
    return lines


def citation_cff(name: str, epoch: int, authors: Sequence[Author] = ()) -> str:
    """The ``CITATION.cff`` of a bundle (CFF 1.2.0): the bundle, the methods it applies and topotrace.

    ``authors``: the bundle's authors (with their ORCIDs); none: "The topotrace authors".
    """
    version = _own_version()
    people = [line for a in authors for line in _cff_author(a, "  ")] or ["  - name: " + _yaml(UNNAMED)]
    lines = ["cff-version: 1.2.0",
             "message: " + _yaml("If you use this bundle, please cite it, the methods it applies and topotrace as "
                                 "below."),
             "type: dataset",
             "title: " + _yaml(f"topotrace archive of {name}"),
             "authors:", *people,
             "date-released: " + _dt.datetime.fromtimestamp(epoch, _dt.timezone.utc).strftime("%Y-%m-%d"),
             "references:"]
    for ref in CITATION_REFERENCES:
        lines += [f"  - type: {ref['type']}", "    title: " + _yaml(ref["title"]), "    authors:"]
        for family, given in ref["authors"]:
            lines += ["      - family-names: " + _yaml(family), "        given-names: " + _yaml(given)]
        lines.append(f"    year: {ref['year']}")
        for key in ("collection-title", "collection-type", "volume", "start", "end", "notes"):
            if key in ref:
                lines.append(f"    {key}: {_yaml(ref[key])}")
        if "publisher" in ref:
            lines += ["    publisher:", "      name: " + _yaml(ref["publisher"])]
    lines += ["  - type: software", "    title: topotrace", "    version: " + _yaml(version), "    authors:",
              "      - name: " + _yaml("The topotrace authors")]
    return "\n".join(lines) + "\n"


def _own_version() -> str:
    try:
        return metadata.version("topotrace")
    except metadata.PackageNotFoundError:
        return "unknown"


def analysis_options(params: dict[str, object]) -> str:
    """The ``topotrace analyze``/``report`` options that repeat an analysis made with ``params``."""
    from .analysis.params import cli_options

    return cli_options(params)


def readme_text(name: str, kind: str, epoch: int, files: list[str], options: str = "",
                parameters: Sequence[str] = ()) -> str:
    """``README.txt``: what each file is, the commands that check and rebuild, and the analysis's parameters.

    ``parameters``: lines of :func:`topotrace.analysis.params.describe`.
    """
    where = "." if kind == "study" else STORE_FILE
    again = f"topotrace report {where}" + (f" --refresh {options}" if options and kind == "run" else "")
    out = [f"topotrace archive of the {kind} {name}", "", f"Written by topotrace {_own_version()} "
           f"(SOURCE_DATE_EPOCH={epoch}, {_iso(epoch)}).", "", "Files:"]
    width = max(len(f) for f in files)
    out += [f"  {f.ljust(width)}  {describe_file(f)}" for f in files]
    out += ["", "Check the bundle: every checksum, every store, and the report against the one rebuilt from the",
            "bundled analysis byte for byte (with this SOURCE_DATE_EPOCH):",
            f"  topotrace verify {name}.zip", "",
            "Rebuild the report from the bundled store (after unzipping, in the unzipped folder). Unzipping changes",
            "the store's file date, which the analysis cache is keyed on, so this analyses the store again with the",
            "archived parameters and writes report.html and findings.json:",
            f"  unzip {name}.zip -d {name} && cd {name}", f"  SOURCE_DATE_EPOCH={epoch} {again}", ""]
    if parameters:
        out += ["Parameters of the bundled analysis" + (" (its first seed's)" if kind == "study" else "") + ":",
                *parameters, ""]
    return "\n".join(out)


def write_crate(root: Path, files: list[str], name: str, epoch: int, authors: Sequence[Author] = ()) -> None:
    """Write ``ro-crate-metadata.json`` into ``root``: every file of ``files`` with its checksum, format and words.

    Made with the ``rocrate`` library (ro-crate-py). ``MANIFEST.sha256`` is listed without a checksum: it holds the
    checksum of this file, so this file cannot hold its checksum. ``authors`` become Person entities (their ORCID
    URL as their id, else ``#author-K``), the root dataset's ``author``.
    """
    from rocrate.model.person import Person
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version="1.1")
    crate.name = f"topotrace archive of {name}"
    crate.description = (f"Activations recorded during training, their analysis and the report of {name}, made by "
                         f"topotrace {_own_version()}.")
    crate.datePublished = _iso(epoch)
    crate.root_dataset["license"] = {"@id": "https://spdx.org/licenses/CC-BY-4.0"}
    if authors:
        people = [crate.add(Person(crate, a.orcid or f"#author-{k}", properties={
            "name": a.name, "givenName": a.given, "familyName": a.family})) for k, a in enumerate(authors, 1)]
        crate.root_dataset["author"] = people
    for rel in files:
        path = root / rel
        props = {"name": rel, "description": describe_file(rel),
                 "encodingFormat": FORMATS.get(path.suffix, "application/octet-stream")}
        if rel != MANIFEST_FILE:
            props |= {"sha256": sha256_file(path), "contentSize": str(path.stat().st_size)}
        crate.add_file(path, dest_path=rel, properties=props)
    crate.metadata.write(root)


def _bundle_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def write_manifest(root: Path) -> None:
    """``MANIFEST.sha256``: ``<sha256>  <file>`` for every other file of the bundle, sorted (``sha256sum -c``)."""
    lines = [f"{sha256_file(root / rel)}  {rel}\n" for rel in _bundle_files(root) if rel != MANIFEST_FILE]
    (root / MANIFEST_FILE).write_text("".join(lines), encoding="utf-8")


def _zip_folder(root: Path, out: Path, epoch: int) -> None:
    """Zip ``root`` into ``out`` via a temporary file renamed into place: sorted, timestamps at epoch, mode 0644."""
    stamp = time.gmtime(max(epoch, ZIP_EPOCH_MIN))[:6]
    with atomic_output(out, "archive") as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in _bundle_files(root):
            info = zipfile.ZipInfo(rel, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = (stat.S_IFREG | 0o644) << 16
            info.create_system = 3  # unix, whatever the platform
            with open(root / rel, "rb") as src, zf.open(info, "w") as dest:
                shutil.copyfileobj(src, dest, 1 << 20)


STAGING_SUFFIX = ".topotrace-staging"  # .<zip name>.topotrace-staging: an archive being staged next to its zip
STAGING_MARK = ".topotrace-staging"  # the file in a staging folder that says topotrace made it (and holds its lock)
STAGING_TEXT = "made by topotrace archive; removed when it ends (or by the next archive after a kill)\n"


def staging_folder(out: Path) -> Path:
    """The hidden folder next to ``out`` where its bundle is staged: ``.<out name>.topotrace-staging``."""
    return out.with_name(f".{out.name}{STAGING_SUFFIX}")


def _made_by_archive(folder: Path) -> bool:
    """A staging folder topotrace made: a real folder whose mark file holds :data:`STAGING_TEXT`."""
    mark = folder / STAGING_MARK
    if folder.is_symlink() or not folder.is_dir() or mark.is_symlink() or not mark.is_file():
        return False
    try:
        return mark.read_text("utf-8") == STAGING_TEXT
    except (OSError, UnicodeDecodeError):
        return False


def remove_stale_staging(folder: Path) -> list[Path]:
    """Remove the staging folders a killed ``archive`` left in ``folder``; returns them.

    Only hidden folders named ``.*.topotrace-staging`` that hold topotrace's mark, and only when no running archive
    holds the mark's lock; anything else of that name is left alone.
    """
    removed = []
    for stage in sorted(folder.glob(f".*{STAGING_SUFFIX}")):
        if not _made_by_archive(stage):
            continue
        with open(stage / STAGING_MARK, "rb") as fh:
            if not flock(fh.fileno(), fcntl.LOCK_EX):
                continue  # a running archive stages there
            shutil.rmtree(stage, ignore_errors=True)
        removed.append(stage)
    return removed


@contextlib.contextmanager
def _staging(out: Path) -> Iterator[Path]:
    """A fresh staging folder next to ``out``, marked as topotrace's and locked while in use; removed at the end.

    Raises:
        FileExistsError: something topotrace did not make holds its name, or another archive of ``out`` runs.
    """
    remove_stale_staging(out.parent)
    stage = staging_folder(out)
    if os.path.lexists(stage):
        if _made_by_archive(stage):
            raise FileExistsError(f"Another topotrace archive is writing {out} (its staging folder {stage} is in use); "
                                  "wait for it to finish.")
        raise FileExistsError(f"{stage} exists and was not made by topotrace; remove it yourself or choose another "
                              "--out.")
    stage.mkdir()
    try:
        with open(stage / STAGING_MARK, "w", encoding="utf-8") as mark:
            fcntl.flock(mark.fileno(), fcntl.LOCK_SH)  # held while running: the next archive leaves this folder alone
            mark.write(STAGING_TEXT)
            mark.flush()
            yield stage
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_archive(run: str | os.PathLike, out: str | os.PathLike | None = None,
                  authors: Sequence[str] | None = None) -> Path:
    """Write the zip bundle of a run or study folder and return its path.

    The bundle is staged in a hidden folder next to ``out`` (``.<name>.zip.topotrace-staging``), removed when
    the call ends; one left by a killed archive is removed by the next archive in that folder.

    Args:
        run: the run folder (``runs/NAME``, holding ``store.h5`` and a current ``analysis.h5``) or study folder.
        out: the zip to write; default ``runs/NAME.zip`` next to the folder. An existing file is replaced only
            when it is a topotrace archive.
        authors: the bundle's authors for ``CITATION.cff`` and the RO-Crate, each as
            :data:`topotrace.authors.AUTHOR_FORM`; ``None``:
            the authors the stores' meta (or their config's ``[run] authors``) name; none at all: "The
            topotrace authors".

    Raises:
        FileNotFoundError, ValueError, FileExistsError: bad input, before anything is written.
    """
    run = Path(run)
    out = Path(out) if out is not None else default_out(run)
    kind = check_archive_input(run, out)
    named = [parse_author(a) for a in authors] if authors else None
    check_analysed(run, kind)
    stores = ([RunFolder(load_study(run).seed_dir(s)).store for s in load_study(run).seeds] if kind == "study"
              else [RunFolder(run).store])
    people = named if named is not None else meta_authors(stores)
    epoch = archive_epoch()
    name = run.resolve().name
    with _staging(out) as stage:
        root = stage / name
        root.mkdir()
        if kind == "study":
            study = load_study(run)
            shutil.copyfile(run / STUDY_FILE, root / STUDY_FILE)
            for seed in study.seeds:
                _copy_run_files(study.seed_dir(seed), root / seed_name(seed))
            if (run / CONFIG_FILE).is_file():
                shutil.copyfile(run / CONFIG_FILE, root / CONFIG_FILE)
        else:
            _copy_run_files(run, root)
        with _source_date(epoch):
            build_reports(root, kind)
        (root / ENVIRONMENT_FILE).write_text(json.dumps(environment(epoch, kind, name), indent=1) + "\n", "utf-8")
        (root / CITATION_FILE).write_text(citation_cff(name, epoch, people), "utf-8")
        files = _bundle_files(root)
        listed = sorted([*files, README_FILE, CRATE_FILE, MANIFEST_FILE])
        first = root if kind == "run" else root / seed_name(load_study(root).seeds[0])
        from .analysis.params import describe

        params = bundled_analysis(first).params
        (root / README_FILE).write_text(readme_text(name, kind, epoch, listed, analysis_options(params),
                                                    describe(params)), "utf-8")
        write_crate(root, sorted([*files, README_FILE, MANIFEST_FILE]), name, epoch, people)
        write_manifest(root)
        _zip_folder(root, out, epoch)
    return out
