"""Checking a store before trusting it: file check, bounded SWMR open, one-line errors, chunk extents.

What is checked before HDF5 sees the file, how long HDF5 may retry, how its failures become one-line
:class:`StoreError` messages, and whether every committed chunk lies inside the file.

:class:`~.reader.Store` runs these at open, in this order (docs/store.md, "Damaged stores"):

1. :func:`check_file` (pure Python, reads the first bytes): a directory, an empty file, a file without the HDF5
   signature, a superblock whose checksum fails, or a cleanly closed file shorter than the end-of-file address
   its superblock gives.
2. :func:`open_swmr`: HDF5's SWMR reader retries a metadata read whose checksum fails, with a delay that
   doubles from 1 ns, 100 times by default (hours on a damaged file). It is bounded here to
   :data:`READ_ATTEMPTS`, so a damaged file fails in about 0.3 s.
3. the reader's structure checks, then :func:`first_bad_chunk` for every per-snapshot dataset: each committed
   snapshot has its chunk, and the chunk lies inside the file.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import h5py
import h5py.h5
import h5py.h5d

from .format import LIBVER, StoreError
from .repair import _lookup3

SIGNATURE = b"\x89HDF\r\n\x1a\n"
# SWMR metadata read attempts. HDF5 waits 1, 2, 4, ... ns between attempts, so n attempts take about 2**n ns at
# most: 28 gives up after ~0.3 s (a writer rewrites a metadata block in microseconds); 40 would take 18 minutes.
READ_ATTEMPTS = 28
ADVICE = "Restore it from a copy or record the run again."
# HDF5 superblock status flags (byte 11 of a version 2/3 superblock): open for writing, open for SWMR writing.
_WRITE_FLAGS = 0x01 | 0x04
_HAS_CHUNK_ITER = hasattr(h5py.h5d.DatasetID, "chunk_iter")  # HDF5 >= 1.12.3
_LIBVER = {"earliest": h5py.h5f.LIBVER_EARLIEST, "v108": h5py.h5f.LIBVER_V18, "v110": h5py.h5f.LIBVER_V110,
           "latest": h5py.h5f.LIBVER_LATEST}


def one_line(text: object) -> str:
    """``text`` with every run of whitespace (HDF5's messages contain newlines) replaced by one space."""
    return " ".join(str(text).split())


def damaged(path: Path, reason: object) -> StoreError:
    """The one-line error for a damaged file: ``<path> is damaged or truncated: <reason>. <advice>``."""
    return StoreError(f"{path} is damaged or truncated: {one_line(reason).rstrip('.')}. {ADVICE}")


def _not_hdf5(path: Path, why: str) -> StoreError:
    return StoreError(f"{path} is not an HDF5 file ({why}); a store is the store.h5 file of a run folder "
                      "(runs/NAME/store.h5).")


def _superblock_problem(head: bytes, size: int) -> str | None:
    """What is wrong with a superblock at offset 0 (``head``: its first bytes), or None."""
    version = head[8] if len(head) > 8 else None
    if version is None:
        return f"the file holds only {size} bytes, less than an HDF5 superblock"
    if version in (2, 3):
        o = head[9] if len(head) > 9 else 0
        if o not in (2, 4, 8, 16, 32):
            return f"the superblock gives an invalid address size ({o})"
        n = 12 + 4 * o
        if len(head) < n + 4:
            return f"the file holds only {size} bytes, less than its superblock"
        if _lookup3(head[:n]) != int.from_bytes(head[n : n + 4], "little"):
            return "the superblock's checksum does not match"
        eoa_at, flags = 12 + 2 * o, head[11]
    elif version in (0, 1):
        o = head[13] if len(head) > 13 else 0
        if o not in (2, 4, 8, 16, 32):
            return f"the superblock gives an invalid address size ({o})"
        base = 24 if version == 0 else 28
        if len(head) < base + 4 * o:
            return f"the file holds only {size} bytes, less than its superblock"
        eoa_at, flags = base + 2 * o, 0
    else:
        return None  # a newer format: HDF5 decides
    eoa = int.from_bytes(head[eoa_at : eoa_at + o], "little")
    # A writer that is alive (or died) has the write flags set; its superblock's end-of-file address can run
    # ahead of the bytes on disk (a flush that failed half way), so the chunk check decides for such files.
    if not flags & _WRITE_FLAGS and size < eoa:
        return f"the file has {size} bytes but its superblock says it ends at byte {eoa}"
    return None


def check_file(path: Path) -> None:
    """Refuse what cannot be a complete HDF5 file, without HDF5 (which can hang on such files).

    Raises:
        StoreError: ``path`` is a directory or not a regular file, is empty, lacks the HDF5 signature, or its
            superblock is damaged, or a cleanly closed file is shorter than its superblock says.
        FileNotFoundError, PermissionError: as ``open`` raises them.
    """
    if path.is_dir():
        raise _not_hdf5(path, "it is a directory")
    with open(path, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not (st.st_mode & 0o170000) == 0o100000:
            raise _not_hdf5(path, "it is not a regular file")
        size = st.st_size
        if size == 0:
            raise damaged(path, "the file is empty (0 bytes)")
        for attempt in range(3):  # a writer closing the file rewrites the superblock: re-read a bad checksum
            fh.seek(0)
            head = fh.read(12 + 4 * 32 + 4)
            if head[:8] != SIGNATURE:
                if size < 8 and SIGNATURE.startswith(head):
                    raise damaged(path, f"the file holds only {size} bytes")
                offset = 512  # HDF5 also looks for its signature after a user block of 512, 1024, 2048, ... bytes
                while offset + 8 <= size:
                    fh.seek(offset)
                    if fh.read(8) == SIGNATURE:
                        return  # a file with a user block is no store; HDF5 and the format check say the rest
                    offset *= 2
                raise _not_hdf5(path, "it does not start with the HDF5 signature")
            problem = _superblock_problem(head, size)
            if problem is None:
                return
            if "checksum" not in problem or attempt == 2:
                raise damaged(path, problem)
            time.sleep(0.01)


@functools.cache
def _read_attempts_setter() -> ctypes._CFuncPtr | None:
    """HDF5's ``H5Pset_metadata_read_attempts`` from the library h5py uses, or None where it cannot be found.

    h5py does not wrap it. ``dlsym`` on one of h5py's extension modules also searches the libraries that module
    links, so this finds the very libhdf5 h5py calls (bundled in a wheel or Debian's libhdf5_serial).
    """
    try:
        fn = ctypes.CDLL(h5py.h5.__file__).H5Pset_metadata_read_attempts
    except (OSError, AttributeError):
        return None
    fn.argtypes = (ctypes.c_int64, ctypes.c_uint)  # hid_t is int64_t since HDF5 1.10
    fn.restype = ctypes.c_int
    return fn


def open_swmr(path: Path) -> h5py.File:
    """Open ``path`` read-only for SWMR reading, with metadata read attempts bounded to :data:`READ_ATTEMPTS`.

    Without the setter (a build where the symbol cannot be found) the open is HDF5's default one: the file
    check before it still catches truncation and a damaged superblock, but damaged metadata deeper in the file
    can then make the open retry for minutes.
    """
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(_LIBVER[LIBVER[0]], _LIBVER[LIBVER[1]])
    setter = _read_attempts_setter()
    if setter is not None:
        setter(fapl.id, READ_ATTEMPTS)
    flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
    return h5py.File(h5py.h5f.open(os.fsencode(path), flags, fapl=fapl))


# What h5py raises when HDF5 fails: OSError/RuntimeError for I/O and checksums, KeyError for an object whose
# header cannot be read, ValueError/TypeError for what it finds in place of the expected object.
HDF5_ERRORS = (OSError, RuntimeError, KeyError, ValueError, TypeError)


@contextmanager
def hdf5_errors(path: Path) -> Iterator[None]:
    """Turn an HDF5 failure inside the block into :func:`damaged` (a :class:`StoreError` passes unchanged)."""
    try:
        yield
    except StoreError:
        raise
    except (FileNotFoundError, PermissionError):
        raise
    except HDF5_ERRORS as err:
        raise damaged(path, _reason(err)) from err


def _reason(err: BaseException) -> str:
    text = one_line(err.args[0] if isinstance(err, KeyError) and err.args else err)
    text = text.replace("Unable to synchronously ", "unable to ").replace("Can't synchronously ", "can't ")
    # the Fletcher-32 filter is the only one that fails on reading an intact file
    return f"checksum mismatch ({text})" if "filter returned failure" in text else text


def reason_of(err: BaseException) -> str:
    """A short reason for a failed chunk read: ``checksum mismatch`` for a Fletcher-32 failure, else HDF5's."""
    text = _reason(err)
    return "checksum mismatch" if text.startswith("checksum mismatch") else text


def first_bad_chunk(ds: h5py.Dataset, n: int, size: int) -> tuple[int, str] | None:
    """The first of the snapshots ``0 .. n - 1`` of ``ds`` whose chunk is missing, lost or past byte ``size``.

    Lost: the chunk index cannot be read where it points to the chunk.

    Returns:
        ``(snapshot, what)`` for the first such snapshot (the first row of its chunk), or None if every chunk is
        present and inside the file. Uses ``H5Dchunk_iter`` (HDF5 >= 1.12.3, one pass over the chunk index);
        where that fails (a damaged index: the blocks of later snapshots can lie past a cut) it looks the chunks
        up one by one (``H5Dget_chunk_info_by_coord``, HDF5 >= 1.10.5). With older HDF5 it looks up the last
        committed chunk and bisects, which assumes chunks are placed in snapshot order (they are appended). A
        chunk the iteration misses is looked up again by its coordinate before it is called missing.
    """
    rows = ds.chunks[0] if ds.chunks else 0
    if n <= 0 or not rows:
        return None
    need = -(-n // rows)  # chunks that hold rows 0 .. n-1
    dsid = ds.id
    zeros = (0,) * (len(ds.shape) - 1)

    def bad(k: int) -> str | None:
        try:
            info = dsid.get_chunk_info_by_coord((k * rows, *zeros))
        except HDF5_ERRORS as err:
            return f"cannot be found: its chunk index is damaged ({_reason(err)})"
        if info.byte_offset is None:
            return "has no data"
        return f"lies past the end of the file ({size} bytes)" if info.byte_offset + info.size > size else None

    if _HAS_CHUNK_ITER:
        ends = [-1] * need  # end byte of each needed chunk; -1: missing

        def visit(info: h5py.h5d.StoreInfo) -> None:
            k = info.chunk_offset[0] // rows
            if k < need:
                ends[k] = info.byte_offset + info.size

        try:
            dsid.chunk_iter(visit)
        except HDF5_ERRORS:
            for k in range(need):
                what = bad(k)
                if what is not None:
                    return k * rows, what
            return None
        for k, end in enumerate(ends):
            # A chunk the iteration did not report (or reported past the end) is looked up again on its own
            # before the store is called damaged: a verdict on someone's run rests on two independent lookups.
            if (end < 0 or end > size) and (what := bad(k)) is not None:
                return k * rows, what
        return None
    if not hasattr(dsid, "get_chunk_info_by_coord"):
        return None
    if bad(need - 1) is None:
        return None
    lo, hi = 0, need - 1  # the last chunk is bad: find the first bad one
    while lo < hi:
        mid = (lo + hi) // 2
        if bad(mid) is None:
            lo = mid + 1
        else:
            hi = mid
    return lo * rows, bad(lo) or "is damaged"


def recorded_measures(path: str | os.PathLike) -> tuple[str, ...] | None:
    """The confidence measures the store at ``path`` records, or None where they cannot be read.

    For a recorder resuming an older store (one recorded before a measure became automatic); a store that cannot
    be read is reported by the writer's own open, with its reason.
    """
    try:
        check_file(Path(path))
        with open_swmr(Path(path)) as f:
            return tuple(str(m) for m in json.loads(f.attrs["measures"]))
    except (StoreError, *HDF5_ERRORS):
        return None
