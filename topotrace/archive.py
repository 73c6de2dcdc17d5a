"""Archive bundles: one self-describing zip of a run or a study, and the check that a bundle is whole.

:func:`write_archive` copies a run's store, analyses, config and findings (a study's, and each seed's under
``seed-K/``) into a staging folder, rebuilds the report there from the bundled analysis (dated by the archive's
epoch, so it can be rebuilt byte for byte), adds ``environment.json``, ``CITATION.cff``, ``README.txt``, an
RO-Crate (``ro-crate-metadata.json``, written by the ``rocrate`` library) and ``MANIFEST.sha256``, and zips the
folder with sorted entries, the epoch as every timestamp and fixed permissions, through a temporary file renamed
into place. With ``SOURCE_DATE_EPOCH`` set the zip is the same bytes every time.

:func:`verify_archive` checks a bundle (zip or unpacked folder): the manifest's checksums, no missing or unlisted
file, the stores open and every committed snapshot reads, and the bundled report equals the one rebuilt from the
bundled analysis. It returns one line per problem. The layout of a bundle is documented in ``docs/archive.md``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path, PurePosixPath

from topotrace.instrument.store import STORE_FILE, Store, StoreError
from topotrace.report_templates.outputs import ARCHIVE_FORMAT, atomic_output, written_by_topotrace

from .studies import STUDY_FILE, is_study, load_study

FORMAT = ARCHIVE_FORMAT  # "topotrace-archive"
FORMAT_VERSION = 1
ENVIRONMENT_FILE = "environment.json"
CITATION_FILE = "CITATION.cff"
CRATE_FILE = "ro-crate-metadata.json"
MANIFEST_FILE = "MANIFEST.sha256"
README_FILE = "README.txt"
REPORT_FILE = "report.html"
ANALYSIS_FILE = "analysis.h5"
TRAIN_ANALYSIS_FILE = "analysis_train.h5"
SHARD_GLOB = "store.shard-*-of-*.h5"  # the shard files of a store recorded with Recorder(shard="ddp")
RUN_FILES = (STORE_FILE, ANALYSIS_FILE, TRAIN_ANALYSIS_FILE, "config.toml", "findings.json")  # copied when present
ZIP_EPOCH_MIN = 315532800  # 1980-01-01: the earliest time a zip entry can hold

FORMATS = {".h5": "application/x-hdf5", ".html": "text/html", ".json": "application/json", ".toml": "application/toml",
           ".cff": "application/yaml", ".txt": "text/plain", ".sha256": "text/plain"}
_DESCRIBE = {
    STORE_FILE: "the recorded activations, outputs and run metadata (HDF5 store)",
    ANALYSIS_FILE: "the cached analysis of the store (NAPs, layouts, maps, statistics) the report is built from",
    TRAIN_ANALYSIS_FILE: "the cached analysis of the store's train probe set (the report's overfitting section)",
    "config.toml": "the training configuration of the run",
    "findings.json": "the findings (claims, effects, intervals, verdicts) as JSON",
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
    where = f" of seed {path.parts[0].removeprefix('seed-')}" if path.parts[0].startswith("seed-") else ""
    if len(path.parts) > 1 and path.parts[-2].endswith("_layers"):
        return f"a page of the report{where} with the maps of one or more layers"
    if PurePosixPath(path.name).match(SHARD_GLOB):
        return "one DDP rank's shard of the store (its share of the probe samples), read through store.h5" + where
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
    run = run.resolve()
    return run.with_name(run.name + ".zip")


def check_archive_input(run: Path, out: Path) -> str:
    """Refuse bad input before anything is written; returns the kind of bundle, ``"run"`` or ``"study"``.

    Raises:
        FileNotFoundError: no run folder at ``run``, or the folder of ``out`` does not exist.
        ValueError: ``run`` is not a run or study folder.
        FileExistsError: ``out`` exists and is not a topotrace archive (it is never overwritten then).
    """
    if not run.exists():
        raise FileNotFoundError(f"No run folder at {run}. Give a run folder (runs/NAME, holding store.h5) or a study "
                                "folder (holding study.json).")
    if not run.is_dir():
        raise ValueError(f"{run} is not a run folder. Give the folder of a run (runs/NAME, holding store.h5) or of a "
                         "study (holding study.json), not a file.")
    kind = "study" if is_study(run) else "run"
    if kind == "run" and not (run / STORE_FILE).is_file():
        raise ValueError(f"{run} is not a run folder: it holds no {STORE_FILE} and no {STUDY_FILE}. Give runs/NAME "
                         "of a trained run or study.")
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
    shards = sorted(p.name for p in src.glob(SHARD_GLOB) if p.is_file())  # a store recorded with shard="ddp"
    for name in (*RUN_FILES, *shards):
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)  # with its date: the analysis cache is keyed on it


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
    from topotrace.analysis.findings import run_findings
    from topotrace.report_templates.generate import build_report

    if kind == "study":
        from .cmd_report import write_study_report

        study = load_study(root)
        results = [bundled_analysis(study.seed_dir(seed)) for seed in study.seeds]
        for seed in study.seeds:
            (study.seed_dir(seed) / REPORT_FILE).unlink(missing_ok=True)  # rebuilt, not taken as it is
        with contextlib.redirect_stdout(io.StringIO()):
            write_study_report(root, results=results)
        return
    results = bundled_analysis(root)
    found_train = None
    if results.probe_set != "train" and "train" in results.curves and (root / TRAIN_ANALYSIS_FILE).is_file():
        train = bundled_analysis(root, TRAIN_ANALYSIS_FILE)
        if train.probe_set == "train":
            found_train = run_findings(train)
    build_report(results, root / REPORT_FILE, run_findings(results), found_train=found_train)


def bundled_analysis(run: Path, name: str = ANALYSIS_FILE):  # -> AnalysisResults (imported lazily)
    """The analysis ``name`` in the run folder ``run``, checked against the SHA-256 of the store next to it.

    Raises:
        ValueError: it is missing, unreadable, or was made from other store content.
    """
    from topotrace.analysis.results import load_results

    path = run / name
    if not path.is_file():
        raise ValueError(f"{path} is missing: there is no analysis to build the report from.")
    try:
        results = load_results(path)
    except (OSError, KeyError) as err:
        raise ValueError(f"{path} is not a readable analysis: {err}") from err
    digest = sha256_file(run / STORE_FILE)
    if results.store_sha256 and results.store_sha256 != digest:
        raise ValueError(f"{path} was made from other content than {run / STORE_FILE} (SHA-256 "
                         f"{results.store_sha256[:12]}... vs {digest[:12]}...).")
    return results


def check_analysed(run: Path, kind: str) -> None:
    """Refuse a run (or a study's seed) without a current analysis next to its store, before anything is written.

    Raises:
        ValueError: naming the run and the command that analyses it.
    """
    from topotrace.analysis.pipeline import cached_results

    runs = [load_study(run).seed_dir(s) for s in load_study(run).seeds] if kind == "study" else [run]
    for folder in runs:
        if not (folder / STORE_FILE).is_file():
            raise ValueError(f"{folder} holds no {STORE_FILE}: the study is not finished. Continue it with "
                             "`topotrace study`, then archive it.")
        if cached_results(folder / STORE_FILE, folder / ANALYSIS_FILE) is None:
            raise ValueError(f"{folder / STORE_FILE} has no current analysis in {folder / ANALYSIS_FILE}. Run "
                             f"`topotrace analyze {folder}` (or `topotrace report {run}`) first, then archive it.")


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


def citation_cff(name: str, epoch: int) -> str:
    """The ``CITATION.cff`` of a bundle (CFF 1.2.0): the bundle, the methods it applies and topotrace."""
    version = _own_version()
    lines = ["cff-version: 1.2.0",
             "message: " + _yaml("If you use this bundle, please cite it, the methods it applies and topotrace as "
                                 "below."),
             "type: dataset",
             "title: " + _yaml(f"topotrace archive of {name}"),
             "authors:", "  - name: " + _yaml("The topotrace authors"),
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
    opts = []
    for key, option in (("probe_set", "--probe-set"), ("measure", "--measure"), ("n_bins", "--bins"),
                        ("dormant_tau", "--dormant-tau")):
        if params.get(key) is not None:
            opts.append(f"{option} {params[key]}")
    layouts = params.get("layout_methods")
    if isinstance(layouts, list) and layouts:
        opts.append("--layouts " + ",".join(map(str, layouts)))
    return " ".join(opts)


def readme_text(name: str, kind: str, epoch: int, files: list[str], options: str = "") -> str:
    """``README.txt``: what each file is, and the commands that check the bundle and rebuild its report."""
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
    return "\n".join(out)


def write_crate(root: Path, files: list[str], name: str, epoch: int) -> None:
    """Write ``ro-crate-metadata.json`` into ``root``: every file of ``files`` with its checksum, format and words.

    Made with the ``rocrate`` library (ro-crate-py). ``MANIFEST.sha256`` is listed without a checksum: it holds the
    checksum of this file, so this file cannot hold its checksum.
    """
    from rocrate.rocrate import ROCrate

    crate = ROCrate(version="1.1")
    crate.name = f"topotrace archive of {name}"
    crate.description = (f"Activations recorded during training, their analysis and the report of {name}, made by "
                         f"topotrace {_own_version()}.")
    crate.datePublished = _iso(epoch)
    crate.root_dataset["license"] = {"@id": "https://spdx.org/licenses/CC-BY-4.0"}
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


def write_archive(run: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the zip bundle of a run or study folder and return its path.

    Args:
        run: the run folder (``runs/NAME``, holding ``store.h5`` and a current ``analysis.h5``) or study folder.
        out: the zip to write; default ``runs/NAME.zip`` next to the folder. An existing file is replaced only
            when it is a topotrace archive.

    Raises:
        FileNotFoundError, ValueError, FileExistsError: bad input, before anything is written.
    """
    run = Path(run)
    out = Path(out) if out is not None else default_out(run)
    kind = check_archive_input(run, out)
    check_analysed(run, kind)
    epoch = archive_epoch()
    name = run.resolve().name
    with tempfile.TemporaryDirectory(prefix="topotrace-archive-") as tmp:
        root = Path(tmp) / name
        root.mkdir()
        if kind == "study":
            study = load_study(run)
            shutil.copyfile(run / STUDY_FILE, root / STUDY_FILE)
            for seed in study.seeds:
                _copy_run_files(study.seed_dir(seed), root / f"seed-{seed}")
            if (run / "config.toml").is_file():
                shutil.copyfile(run / "config.toml", root / "config.toml")
        else:
            _copy_run_files(run, root)
        with _source_date(epoch):
            build_reports(root, kind)
        (root / ENVIRONMENT_FILE).write_text(json.dumps(environment(epoch, kind, name), indent=1) + "\n", "utf-8")
        (root / CITATION_FILE).write_text(citation_cff(name, epoch), "utf-8")
        files = _bundle_files(root)
        listed = sorted([*files, README_FILE, CRATE_FILE, MANIFEST_FILE])
        first = root if kind == "run" else root / f"seed-{load_study(root).seeds[0]}"
        options = analysis_options(bundled_analysis(first).params)
        (root / README_FILE).write_text(readme_text(name, kind, epoch, listed, options), "utf-8")
        write_crate(root, sorted([*files, README_FILE, MANIFEST_FILE]), name, epoch)
        write_manifest(root)
        _zip_folder(root, out, epoch)
    return out


# verify


def _safe_extract(zip_path: Path, dest: Path) -> None:
    """Extract a zip into ``dest``, refusing absolute names, ``..`` parts and links before writing anything."""
    with zipfile.ZipFile(zip_path) as zf:
        infos = zf.infolist()
        for info in infos:
            name = info.filename
            parts = PurePosixPath(name.replace("\\", "/")).parts
            if name.startswith(("/", "\\")) or (parts and parts[0].endswith(":")) or ".." in parts:
                raise ValueError(f"{zip_path} holds the unsafe entry {name!r} (an absolute path or '..'); it is not "
                                 "extracted. Is it a topotrace archive?")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise ValueError(f"{zip_path} holds the link {name!r}; a topotrace archive holds plain files only.")
        for info in infos:
            if not info.is_dir():
                zf.extract(info, dest)


def _check_manifest(root: Path) -> list[str]:
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        return [f"{MANIFEST_FILE} is missing: the checksums cannot be checked"]
    problems, listed = [], set()
    for k, line in enumerate(manifest.read_text("utf-8", errors="replace").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            problems.append(f"{MANIFEST_FILE} line {k} is not '<sha256>  <file>': {line[:80]!r}")
            continue
        listed.add(rel)
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in {MANIFEST_FILE} but missing")
        elif sha256_file(path) != digest.lower():
            problems.append(f"{rel}: checksum differs from {MANIFEST_FILE} (the file changed)")
    for rel in _bundle_files(root):
        if rel != MANIFEST_FILE and rel not in listed:
            problems.append(f"{rel}: present but not listed in {MANIFEST_FILE}")
    return problems


def _check_stores(root: Path, runs: list[str]) -> list[str]:
    problems = []
    for rel in runs:
        path = root / rel / STORE_FILE if rel else root / STORE_FILE
        shown = path.relative_to(root).as_posix()
        if not path.is_file():
            continue  # said by the manifest check
        try:
            with Store(path, until_good=True) as st:  # reads every committed chunk once
                if st.damaged_at is not None:
                    problems.append(f"{shown}: snapshot {st.damaged_at} is damaged (only the {st.n_snapshots} "
                                    "before it read)")
        except (StoreError, OSError, ValueError, KeyError) as err:
            problems.append(f"{shown}: does not open: {' '.join(str(err).split())}")
    return problems


def _check_report(root: Path, kind: str, epoch: int) -> list[str]:
    """Rebuild the report(s) from the bundled analysis in a temporary folder and compare them with the bundled."""
    with tempfile.TemporaryDirectory(prefix="topotrace-verify-") as tmp:
        build = Path(tmp) / root.name
        build.mkdir()
        try:
            if kind == "study":
                shutil.copyfile(root / STUDY_FILE, build / STUDY_FILE)
                for seed in load_study(root).seeds:
                    _copy_run_files(root / f"seed-{seed}", build / f"seed-{seed}")
            else:
                _copy_run_files(root, build)
            inputs = set(_bundle_files(build))
            with _source_date(epoch):
                build_reports(build, kind)
        except Exception as err:  # noqa: BLE001 - any failure to rebuild is a finding of verify, not a crash
            return [f"{REPORT_FILE}: could not be rebuilt from the bundled analysis: {' '.join(str(err).split())}"]
        problems = []
        for rel in _bundle_files(build):
            if rel in inputs:
                continue
            mine = root / rel
            if not mine.is_file():
                problems.append(f"{rel}: missing (the rebuilt report has it)")
            elif mine.read_bytes() != (build / rel).read_bytes():
                problems.append(f"{rel}: differs from the one rebuilt from the bundled analysis")
        return problems


def verify_archive(path: str | os.PathLike) -> list[str]:
    """Check a bundle (zip or unpacked folder); returns one line per problem (empty when all holds).

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``path`` is neither a zip nor a folder, or the zip holds unsafe entries.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No archive at {path}. Give a zip written by `topotrace archive` or its unpacked "
                                "folder.")
    if path.is_dir():
        return _verify_folder(path)
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is neither a zip nor a folder. Give a zip written by `topotrace archive` or its "
                         "unpacked folder.")
    with tempfile.TemporaryDirectory(prefix="topotrace-verify-") as tmp:
        root = Path(tmp) / path.stem
        _safe_extract(path, root)
        return _verify_folder(root)


def _verify_folder(root: Path) -> list[str]:
    problems = _check_manifest(root)
    try:
        env = json.loads((root / ENVIRONMENT_FILE).read_text("utf-8"))
        epoch, kind = int(env["source_date_epoch"]), str(env["kind"])
        if env.get("format") != FORMAT or kind not in ("run", "study"):
            raise ValueError(f"format {env.get('format')!r}, kind {kind!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        return [*problems, f"{ENVIRONMENT_FILE}: unreadable, so the report cannot be rebuilt ({err})"]
    if kind == "study":
        try:
            runs = [f"seed-{s}" for s in load_study(root).seeds]
        except ValueError as err:
            return [*problems, f"{STUDY_FILE}: {' '.join(str(err).split())}"]
    else:
        runs = [""]
    problems += _check_stores(root, runs)
    problems += _check_report(root, kind, epoch)
    return problems


def print_problems(problems: list[str]) -> None:
    """One line per problem on stdout (control characters shown as escapes)."""
    from .cli import visible

    for line in problems:
        print(visible(line), file=sys.stdout)
