"""The check that an archive bundle is whole (``topotrace verify``).

:func:`verify_archive` checks a bundle (zip or unpacked folder): every zip member reads (a changed byte, a cut or a
damaged member list is a problem naming the member), the manifest's checksums, no missing or unlisted file, the
stores open and every committed snapshot reads, and the bundled report equals the one rebuilt from the bundled
analysis (:mod:`topotrace.archive` writes bundles). It returns one line per problem.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import struct
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from .archive import (
    ENVIRONMENT_FILE,
    FORMAT,
    MANIFEST_FILE,
    _bundle_files,
    _copy_run_files,
    _source_date,
    build_reports,
    sha256_file,
)
from .instrument.store import STORE_FILE, Store, StoreError
from .runfolder import ANALYSIS_FILE, REPORT_FILE, STUDY_FILE, seed_name
from .studies import load_study

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
                    _copy_run_files(root / seed_name(seed), build / seed_name(seed))
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
            runs = [seed_name(s) for s in load_study(root).seeds]
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
