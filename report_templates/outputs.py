"""Output files: topotrace replaces only files it wrote itself, and writes each one atomically.

Every command that writes a named file (``report --out``, the ``findings.json`` beside it, ``compare --out``,
``figure --out``, the site's ``index.html``, ``archive --out``) calls :func:`check_output` before any work. It
refuses, in one line, a path that is a folder, a symbolic link, a FIFO or another non-regular file, a file in a
missing or read-only folder, and an existing file that topotrace did not write. Which files topotrace wrote is
read from their content (:data:`KINDS`):

- ``page``: an HTML page of topotrace (report, layer page, comparison, site index): the marker
  ``<meta name="generator" content="topotrace...">`` in its first 8 KiB (:data:`PAGE_MARK`; pages of earlier
  versions, without it, by their title ``<title>topotrace report: ...``, ``comparison: ...`` or ``runs: ...``);
- ``site``: the site index only (``<meta name="generator" content="topotrace site">``);
- ``findings``: ``findings.json``, a JSON list of objects that each hold ``claim`` and ``verdict``;
- ``figure``: a PDF whose document information names ``/Creator (topotrace)``, an SVG whose metadata names the
  creator ``topotrace``, or a PNG with the text chunk ``Software: topotrace`` (what
  :func:`topotrace.report_templates.figures.save_figure` and the PNG export write);
- ``archive``: a zip whose ``environment.json`` names the archive format :data:`ARCHIVE_FORMAT`
  (``topotrace archive``).

The module sits in ``report_templates`` (the writers of pages and figures) so that both they and the command line
can import it.

Nothing is opened before ``lstat`` says it is a regular file, so a FIFO at the path never blocks.
:func:`atomic_output` writes through a hidden temporary file in the same folder (``.NAME.XXXX.partial``),
renamed over the target only when the write succeeded and removed otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

PAGE_MARK = '<meta name="generator" content="topotrace">'
SITE_MARK = '<meta name="generator" content="topotrace site">'
_ANY_PAGE_MARK = '<meta name="generator" content="topotrace'
_LEGACY_TITLES = ("<title>topotrace report: ", "<title>topotrace comparison: ", "<title>topotrace runs: ")
HEAD_BYTES = 8192
MAX_FINDINGS_BYTES = 64 << 20
ARCHIVE_FORMAT = "topotrace-archive"  # the "format" of an archive's environment.json (topotrace.archive.FORMAT)
ARCHIVE_ENVIRONMENT = "environment.json"
KINDS = ("page", "site", "findings", "figure", "archive")


def _head(path: Path, n: int = HEAD_BYTES) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(n)


def _is_page(path: Path, mark: str) -> bool:
    head = _head(path).decode("utf-8", errors="replace")
    if mark in head:
        return True
    return mark == _ANY_PAGE_MARK and any(t in head for t in _LEGACY_TITLES) and "<meta name=\"generator\"" not in head


def _is_findings(path: Path) -> bool:
    if path.stat().st_size > MAX_FINDINGS_BYTES:
        return False
    try:
        found = json.loads(path.read_text("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return False
    return isinstance(found, list) and all(isinstance(f, dict) and "claim" in f and "verdict" in f for f in found)


def _pdf_creator(path: Path) -> bool:
    """The document information dictionary (written by matplotlib just before the xref table) names topotrace."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        if fh.read(5) != b"%PDF-":
            return False
        fh.seek(max(0, size - 1024))
        tail = fh.read()
        at = tail.rfind(b"startxref")
        if at < 0:
            return False
        try:
            xref = int(tail[at + len(b"startxref"):].split()[0])
        except (IndexError, ValueError):
            return False
        if not 0 < xref <= size:
            return False
        fh.seek(max(0, xref - 4096))
        before = fh.read(xref - max(0, xref - 4096))
    info = before[before.rfind(b" obj"):] if b" obj" in before else b""
    return b"/Creator (topotrace)" in info


def _png_software(path: Path) -> bool:
    """A ``tEXt`` chunk ``Software`` (NUL) ``topotrace`` before the image data."""
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return False
        for _ in range(64):
            header = fh.read(8)
            if len(header) < 8:
                return False
            length, ctype = int.from_bytes(header[:4], "big"), header[4:]
            if ctype in (b"IDAT", b"IEND") or length > 1 << 20:
                return False
            data = fh.read(length)
            fh.read(4)  # CRC
            if ctype == b"tEXt" and data == b"Software\x00topotrace":
                return True
    return False


def _is_figure(path: Path) -> bool:
    head = _head(path)
    if head.startswith(b"%PDF-"):
        return _pdf_creator(path)
    if head.startswith(b"\x89PNG"):
        return _png_software(path)
    text = head.decode("utf-8", errors="replace")
    return "<svg" in text and "<dc:title>topotrace</dc:title>" in text


def _is_archive(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as zf:
            env = json.loads(zf.read(ARCHIVE_ENVIRONMENT))
        return isinstance(env, dict) and env.get("format") == ARCHIVE_FORMAT
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError):
        return False


_RECOGNISE = {"page": lambda p: _is_page(p, _ANY_PAGE_MARK), "site": lambda p: _is_page(p, SITE_MARK),
              "findings": _is_findings, "figure": _is_figure, "archive": _is_archive}


def written_by_topotrace(path: str | os.PathLike, kind: str) -> bool:
    """True when ``path`` is a regular file (not a link) that topotrace wrote as an output of ``kind``.

    Args:
        path: the file.
        kind: one of :data:`KINDS`.

    Raises:
        ValueError: an unknown kind.
    """
    if kind not in _RECOGNISE:
        raise ValueError(f"The 'kind' parameter must be one of {list(KINDS)}. Got {kind!r}.")
    path = Path(path)
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        return bool(_RECOGNISE[kind](path))
    except OSError:
        return False


def check_output(out: str | os.PathLike, kind: str, option: str = "--out", example: str = "report.html",
                 siblings: tuple[str, ...] = ()) -> Path:
    """Refuse an output path before any work: nothing topotrace did not write is ever replaced.

    Args:
        out: the file to write.
        kind: what is written there (one of :data:`KINDS`); an existing file must be topotrace's of that kind.
        option: how the user gave the path, for the message (``""`` when it is a default path).
        example: a file name for the message.
        siblings: other names written next to ``out``: ``findings.json`` (kind ``findings``) and folders
            (``maps``), which must not be in the way.

    Returns:
        ``out`` as a Path.

    Raises:
        IsADirectoryError, FileExistsError, NotADirectoryError, FileNotFoundError, PermissionError: one line
            naming the path, what is wrong and what to do.
    """
    out = Path(out)
    said = f"{option} {out}" if option else str(out)
    try:
        st = os.lstat(out)
    except (FileNotFoundError, NotADirectoryError):  # the folder checks below say why
        st = None
    except OSError as err:  # e.g. a symlink loop further up, a name too long
        raise FileNotFoundError(f"{said} cannot be used: {err.strerror or err}. Give another path.") from None
    if st is not None and stat.S_ISLNK(st.st_mode):
        raise FileExistsError(f"{said} is a symbolic link (to {os.readlink(out)}); topotrace replaces only files it "
                              "wrote itself, never a link: give the real file's path or another path.")
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(f"{said} is a folder; give the file to write, e.g. {out / example}.")
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise FileExistsError(f"{said} exists and is not a regular file (a FIFO, socket or device); it is left "
                              "alone: give another file name.")
    folder = out.parent
    blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise NotADirectoryError(f"{said}: {blocking} is a file, not a folder. Give a file in a folder.")
    if not folder.is_dir():
        raise FileNotFoundError(f"{said}: the folder {folder} does not exist. Create it first, or give a file in an "
                                "existing folder.")
    if st is not None and not written_by_topotrace(out, kind):
        raise FileExistsError(f"{said} exists and was not written by topotrace; choose another path or remove it "
                              "yourself.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{said}: the folder {folder} is not writable. Give a file in a folder you may write "
                              "to.")
    for name in siblings:
        other = folder / name
        if name.endswith(".json"):
            check_output(other, "findings", option=f"{said}: {name}, written next to it, and" if option else "",
                         example=name)
        elif other.is_symlink() or (other.exists() and not other.is_dir()):
            raise FileExistsError(f"{said}: {other}, written next to it, must be a folder but is not; move it away "
                                  "or write into another folder.")
    return out


def _mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(out: str | os.PathLike, kind: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``out``; on success it is renamed over ``out``, on failure removed.

    Args:
        out: the file to write (its folder must exist).
        kind: when given, an existing ``out`` must be topotrace's output of this kind (checked at the rename too,
            so a file put there meanwhile is not replaced either).

    Raises:
        FileExistsError: ``out`` exists and is not topotrace's of ``kind``.
    """
    out = Path(out)
    if kind is not None and os.path.lexists(out):
        check_output(out, kind, option="")
    fd, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, _mode())
        if kind is not None and os.path.lexists(out):
            check_output(out, kind, option="")
        os.replace(tmp, out)
    finally:
        if os.path.lexists(tmp):
            tmp.unlink()
