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
import fcntl
import hashlib
import io
import json
import os
import platform
import re
import shutil
import stat
import struct
import sys
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

from topotrace.instrument.store import STORE_FILE, Store, StoreError
from topotrace.instrument.store.repair import flock
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
    from topotrace.analysis.pipeline import cached_results

    runs = [load_study(run).seed_dir(s) for s in load_study(run).seeds] if kind == "study" else [run]
    for folder in runs:
        if not (folder / STORE_FILE).is_file():
            raise ValueError(f"{folder} holds no {STORE_FILE}: the study is not finished. Continue it with "
                             "`topotrace study`, then archive it.")
        check_intact(folder / STORE_FILE)
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


ORCID_URL = "https://orcid.org/"
AUTHOR_FORM = ("'Given Family <ORCID>' (e.g. 'Josiah Carberry <0000-0002-1825-0097>'; 'Family, Given' when the "
               "family name has several words; the ORCID is optional)")
_AUTHOR = re.compile(r"^(?P<name>[^<>]*?)\s*(?:<(?P<orcid>[^<>]*)>)?$")
_ORCID = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
UNNAMED = "The topotrace authors"  # the bundle's author when none is named


@dataclass(frozen=True)
class Author:
    """One author of a bundle: a person with a given and a family name and an optional ORCID (as its URL)."""

    given: str
    family: str
    orcid: str | None = None

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}".strip()


def orcid_checksum_ok(orcid: str) -> bool:
    """The ISO 7064 MOD 11-2 check character of an ORCID ``0000-0002-1825-0097`` matches its 15 digits."""
    digits = orcid.replace("-", "")
    total = 0
    for d in digits[:-1]:
        total = (total + int(d)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


def parse_author(text: object, where: str = "--author") -> Author:
    """An author from ``'Given Family <ORCID>'`` (or ``'Family, Given <ORCID>'``); the ORCID is optional.

    Args:
        text: the author as written.
        where: what gave it, for the error (``--author``, or a store's meta).

    Raises:
        ValueError: one line naming ``where``, the value and the form allowed (an ORCID must be 16 digits in four
            groups whose check character matches, e.g. 0000-0002-1825-0097).
    """
    m = _AUTHOR.match(text) if isinstance(text, str) else None
    name = " ".join(m.group("name").split()) if m else ""
    if m is None or not name or any(ord(c) < 32 for c in name):
        raise ValueError(f"{where} {text!r} is not an author: write {AUTHOR_FORM}.")
    orcid = None
    if m.group("orcid") is not None:
        o = _ORCID.match(m.group("orcid").strip().upper().replace("HTTPS://ORCID.ORG/", ""))
        if o is None or not orcid_checksum_ok(o.group(1)):
            why = "its check character does not match its digits" if o else "an ORCID is 16 digits in four groups"
            raise ValueError(f"{where} {text!r}: {m.group('orcid')!r} is not a valid ORCID ({why}, e.g. "
                             f"0000-0002-1825-0097); write {AUTHOR_FORM}.")
        orcid = ORCID_URL + o.group(1)
    if "," in name:
        family, _, given = (" ".join(part.split()) for part in name.partition(","))
    else:
        given, _, family = name.rpartition(" ")
    if not family:
        raise ValueError(f"{where} {text!r} has no family name after the comma: write {AUTHOR_FORM}.")
    return Author(given, family, orcid)


def meta_authors(stores: list[Path]) -> list[Author]:
    """The authors the runs name, in order, each once.

    Per store: ``meta["authors"]`` (``Recorder(meta={"authors": [...]})``), else the ``[run] authors`` setting of
    the config it was trained with (``meta["config"]``), each a list of :data:`AUTHOR_FORM` strings.

    Raises:
        ValueError: an entry that is not an author (:func:`parse_author`), naming the store.
    """
    out: list[Author] = []
    for path in stores:
        with Store(path) as st:
            meta = st.meta
        names = meta.get("authors")
        config = meta.get("config")
        if names is None and isinstance(config, dict) and isinstance(config.get("run"), dict):
            names = config["run"].get("authors")
        if names is None:
            continue
        if isinstance(names, str) or not isinstance(names, list):
            raise ValueError(f"The authors of {path} (meta 'authors') must be a list of {AUTHOR_FORM}. Got "
                             f"{names!r}.")
        for text in names:
            author = parse_author(text, f"The author in {path} (meta 'authors')")
            if author not in out:
                out.append(author)
    return out


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
        authors: the bundle's authors for ``CITATION.cff`` and the RO-Crate, each :data:`AUTHOR_FORM`; ``None``:
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
    stores = ([load_study(run).seed_dir(s) / STORE_FILE for s in load_study(run).seeds] if kind == "study"
              else [run / STORE_FILE])
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
                _copy_run_files(study.seed_dir(seed), root / f"seed-{seed}")
            if (run / "config.toml").is_file():
                shutil.copyfile(run / "config.toml", root / "config.toml")
        else:
            _copy_run_files(run, root)
        with _source_date(epoch):
            build_reports(root, kind)
        (root / ENVIRONMENT_FILE).write_text(json.dumps(environment(epoch, kind, name), indent=1) + "\n", "utf-8")
        (root / CITATION_FILE).write_text(citation_cff(name, epoch, people), "utf-8")
        files = _bundle_files(root)
        listed = sorted([*files, README_FILE, CRATE_FILE, MANIFEST_FILE])
        first = root if kind == "run" else root / f"seed-{load_study(root).seeds[0]}"
        options = analysis_options(bundled_analysis(first).params)
        (root / README_FILE).write_text(readme_text(name, kind, epoch, listed, options), "utf-8")
        write_crate(root, sorted([*files, README_FILE, MANIFEST_FILE]), name, epoch, people)
        write_manifest(root)
        _zip_folder(root, out, epoch)
    return out


# verify


ZIP_LOCAL = b"PK\x03\x04"  # the signature of a zip member's local header (and so of a zip's first bytes)
_LOCAL_HEADER = struct.Struct("<4sHHHHHIIIHH")  # signature .. extra length: 30 bytes
# What zipfile and zlib raise on a member whose bytes are damaged (CRC-32, deflate stream, cut data, header).
_MEMBER_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, struct.error, NotImplementedError)


def _damage_reason(err: BaseException) -> str:
    text = " ".join(str(err).split())
    if "CRC" in text:
        return "its CRC-32 does not match its bytes (a changed byte)"
    if isinstance(err, zlib.error):
        return f"its compressed data is damaged ({text})"
    if isinstance(err, EOFError):
        return "its data ends early (the zip is cut)"
    return text or type(err).__name__


def _safe_extract(zip_path: Path, dest: Path) -> list[str]:
    """Extract a zip into ``dest``, refusing absolute names, ``..`` parts and links before writing anything.

    Returns one line per member that cannot be extracted (a CRC-32 mismatch, damaged compressed data, a damaged
    header), naming it; such a member is not left in ``dest``. A zip whose member list cannot be read is one line.

    Raises:
        ValueError: an unsafe entry (absolute path, ``..``, a link): not a topotrace archive.
    """
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, *_MEMBER_DAMAGE) as err:
        return [f"{zip_path.name}: its member list (central directory) is damaged, so no member can be read "
                f"({' '.join(str(err).split())})"]
    problems = []
    with zf:
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
            if info.is_dir():
                continue
            try:
                zf.extract(info, dest)
            except _MEMBER_DAMAGE as err:
                (dest / info.filename).unlink(missing_ok=True)
                problems.append(f"{info.filename}: damaged in the zip: {_damage_reason(err)}")
    return problems


def _truncated_zip(zip_path: Path) -> list[str]:
    """The lines for a zip cut short (it starts as a zip but its member list at the end is gone).

    Walks the members' local headers from the start to name the member the zip ends in (or the last whole one).
    """
    size = zip_path.stat().st_size
    last, pos = None, 0
    with open(zip_path, "rb") as fh:
        while True:
            fh.seek(pos)
            head = fh.read(_LOCAL_HEADER.size)
            if len(head) < _LOCAL_HEADER.size or head[:4] != ZIP_LOCAL:
                break
            _, _, flags, _, _, _, _, csize, _, nlen, elen = _LOCAL_HEADER.unpack(head)
            name = fh.read(nlen).decode("utf-8", errors="replace")
            extra = fh.read(elen)
            if csize == 0xFFFFFFFF:  # zip64: the sizes are in the extra field 0x0001 (uncompressed, compressed)
                k = 0
                while k + 4 <= len(extra):
                    tag, n = struct.unpack_from("<HH", extra, k)
                    if tag == 1 and n >= 16:
                        csize = struct.unpack_from("<Q", extra, k + 12)[0]
                    k += 4 + n
            end = pos + _LOCAL_HEADER.size + nlen + elen + csize
            if flags & 0x08 or len(name.encode()) < nlen or end > size:  # sizes unknown here, or cut inside
                return [f"{name}: cut off: the zip ends inside it ({size} bytes); it is truncated, and its member "
                        "list (central directory) and every later member are missing"]
            last, pos = name, end
    after = f"after {last}" if last else "before its first member"
    return [f"{zip_path.name}: truncated: the zip ends {after} ({size} bytes); its member list (central directory) "
            "and every later member are missing"]


def _check_manifest(root: Path, damaged: frozenset[str] = frozenset()) -> list[str]:
    """The manifest's checksums against the files; members in ``damaged`` (said already) are not said again."""
    manifest = root / MANIFEST_FILE
    if not manifest.is_file():
        if MANIFEST_FILE in damaged:
            return []
        return [f"{MANIFEST_FILE} is missing: the checksums cannot be checked"]
    problems, listed = [], set()
    for k, line in enumerate(manifest.read_text("utf-8", errors="replace").splitlines(), 1):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64:
            problems.append(f"{MANIFEST_FILE} line {k} is not '<sha256>  <file>': {line[:80]!r}")
            continue
        listed.add(rel)
        path = root / rel
        if rel in damaged:
            continue
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


def _check_report(root: Path, kind: str, epoch: int, runs: list[str],
                  damaged: frozenset[str] = frozenset()) -> list[str]:
    """Rebuild the report(s) from the bundled analysis in a temporary folder and compare them with the bundled.

    Not rebuilt (one line) when a store or analysis it is built from is damaged in the zip or missing.
    """
    sources = [f"{rel}/{name}" if rel else name for rel in runs for name in (STORE_FILE, ANALYSIS_FILE)]
    lost = [rel for rel in sources if rel in damaged or not (root / rel).is_file()]
    if lost:
        return [f"{REPORT_FILE}: not checked against a rebuilt one: it is rebuilt from {', '.join(lost)}, which "
                f"{'is' if len(lost) == 1 else 'are'} damaged or missing (said above)"]
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
            reason = " ".join(str(err).replace(f"{build}/", "").split())  # names inside the bundle, not the temp
            return [f"{REPORT_FILE}: could not be rebuilt from the bundled analysis: {reason}"]
        problems = []
        for rel in _bundle_files(build):
            if rel in inputs or rel in damaged:
                continue
            mine = root / rel
            if not mine.is_file():
                problems.append(f"{rel}: missing (the rebuilt report has it)")
            elif mine.read_bytes() != (build / rel).read_bytes():
                problems.append(f"{rel}: differs from the one rebuilt from the bundled analysis")
        return problems


def verify_archive(path: str | os.PathLike) -> list[str]:
    """Check a bundle (zip or unpacked folder); returns one line per problem (empty when all holds).

    A damaged zip is a problem, not an error: a member whose CRC-32 or compressed data fails, a zip cut short (the
    member it ends in is named), a damaged member list, a member missing from the manifest's list.

    Raises:
        FileNotFoundError: nothing at ``path``.
        ValueError: ``path`` is neither a zip nor a folder (a FIFO or device is never opened), or the zip holds
            unsafe entries.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No archive at {path}. Give a zip written by `topotrace archive` or its unpacked "
                                "folder.")
    if path.is_dir():
        return _verify_folder(path)
    if not path.is_file():
        raise ValueError(f"{path} is neither a zip nor a folder (it is not a regular file). Give a zip written by "
                         "`topotrace archive` or its unpacked folder.")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as fh:
            head = fh.read(4)
        if head == ZIP_LOCAL:  # it starts as a zip: a cut one
            return _truncated_zip(path)
        raise ValueError(f"{path} is neither a zip nor a folder. Give a zip written by `topotrace archive` or its "
                         "unpacked folder.")
    with tempfile.TemporaryDirectory(prefix="topotrace-verify-") as tmp:
        root = Path(tmp) / path.stem
        damaged = _safe_extract(path, root)
        if damaged and not root.is_dir():
            return damaged  # the member list is unreadable: nothing was extracted
        names = frozenset(line.partition(": ")[0] for line in damaged)
        return damaged + _verify_folder(root, names)


def _verify_folder(root: Path, damaged: frozenset[str] = frozenset()) -> list[str]:
    problems = _check_manifest(root, damaged)
    try:
        env = json.loads((root / ENVIRONMENT_FILE).read_text("utf-8"))
        epoch, kind = int(env["source_date_epoch"]), str(env["kind"])
        if env.get("format") != FORMAT or kind not in ("run", "study"):
            raise ValueError(f"format {env.get('format')!r}, kind {kind!r}")
    except (OSError, ValueError, KeyError, TypeError) as err:
        if ENVIRONMENT_FILE in damaged:
            return problems
        return [*problems, f"{ENVIRONMENT_FILE}: unreadable, so the report cannot be rebuilt ({err})"]
    if kind == "study":
        try:
            runs = [f"seed-{s}" for s in load_study(root).seeds]
        except ValueError as err:
            return [*problems, f"{STUDY_FILE}: {' '.join(str(err).split())}"]
    else:
        runs = [""]
    problems += _check_stores(root, runs)
    problems += _check_report(root, kind, epoch, runs, damaged)
    return problems


def print_problems(problems: list[str]) -> None:
    """One line per problem on stdout (control characters shown as escapes)."""
    from .cli import visible

    for line in problems:
        print(visible(line), file=sys.stdout)
