"""Crash repair: clear the "open for writing" flag a killed SWMR writer leaves, so the store can be resumed."""

from __future__ import annotations

import fcntl
import os
import time

from .format import StoreError


def _lookup3(data: bytes) -> int:
    """Bob Jenkins' lookup3 ``hashlittle`` with initval 0: the checksum HDF5 puts on its superblock."""
    mask = 0xFFFFFFFF

    def rot(x: int, k: int) -> int:
        return ((x << k) | (x >> (32 - k))) & mask

    n = len(data)
    a = b = c = (0xDEADBEEF + n) & mask
    i = 0
    while n > 12:
        a = (a + int.from_bytes(data[i : i + 4], "little")) & mask
        b = (b + int.from_bytes(data[i + 4 : i + 8], "little")) & mask
        c = (c + int.from_bytes(data[i + 8 : i + 12], "little")) & mask
        a = (a - c) & mask; a ^= rot(c, 4); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= rot(a, 6); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= rot(b, 8); b = (b + a) & mask  # noqa: E702
        a = (a - c) & mask; a ^= rot(c, 16); c = (c + b) & mask  # noqa: E702
        b = (b - a) & mask; b ^= rot(a, 19); a = (a + c) & mask  # noqa: E702
        c = (c - b) & mask; c ^= rot(b, 4); b = (b + a) & mask  # noqa: E702
        n -= 12
        i += 12
    if n == 0:
        return c
    tail = data[i:] + bytes(12 - n)
    a = (a + int.from_bytes(tail[0:4], "little")) & mask
    b = (b + int.from_bytes(tail[4:8], "little")) & mask
    c = (c + int.from_bytes(tail[8:12], "little")) & mask
    c ^= b; c = (c - rot(b, 14)) & mask  # noqa: E702
    a ^= c; a = (a - rot(c, 11)) & mask  # noqa: E702
    b ^= a; b = (b - rot(a, 25)) & mask  # noqa: E702
    c ^= b; c = (c - rot(b, 16)) & mask  # noqa: E702
    a ^= c; a = (a - rot(c, 4)) & mask  # noqa: E702
    b ^= a; b = (b - rot(a, 14)) & mask  # noqa: E702
    c ^= b; c = (c - rot(b, 24)) & mask  # noqa: E702
    return c


def clear_writer_flag(path: str | os.PathLike) -> bool:
    """Clear the "open for writing" flag a killed writer leaves in the superblock (what ``h5clear -s`` does).

    HDF5 marks a file open for SWMR writing in its superblock; a writer killed before closing leaves the mark,
    and the file then refuses to open for writing (reading works). This clears it only when no live process
    holds the file's lock, so it never touches a store that is really being written.

    Returns:
        True if a flag was cleared, False if there was none.

    Raises:
        StoreError: another process has the file open for writing.
    """
    with open(path, "r+b") as fh:
        if not flock(fh.fileno(), fcntl.LOCK_EX, wait_s=0.5):
            raise StoreError(f"{path} is open for writing by another process; wait for it to finish or stop it.")
        try:
            head = bytearray(fh.read(12))
            if head[:8] != b"\x89HDF\r\n\x1a\n" or head[8] not in (2, 3):
                return False
            size_of_offsets = head[9]
            fh.seek(0)
            n = 12 + 4 * size_of_offsets
            block = bytearray(fh.read(n + 4))
            if block[11] == 0:
                return False
            block[11] = 0
            # The superblock's end-of-file address can lag behind the file (data written since the last flush
            # lies beyond it): extend it to the real end of the file. It can also run ahead of the file (a flush
            # that failed half way, e.g. on a full disk, wrote the superblock but not all the blocks HDF5 had
            # placed after the end): extend the file with zeros up to it, so that HDF5 opens the file for
            # writing (it refuses a file shorter than its superblock says) and never places new data where it
            # believes older blocks are.
            eoa_at = 12 + 2 * size_of_offsets
            eoa = int.from_bytes(block[eoa_at : eoa_at + size_of_offsets], "little")
            size = os.fstat(fh.fileno()).st_size
            if eoa > size:
                os.ftruncate(fh.fileno(), eoa)
            block[eoa_at : eoa_at + size_of_offsets] = max(eoa, size).to_bytes(size_of_offsets, "little")
            block[n : n + 4] = _lookup3(bytes(block[:n])).to_bytes(4, "little")
            fh.seek(0)
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
            return True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def flock(fd: int, mode: int, wait_s: float = 0.0) -> bool:
    """Take ``fcntl.flock`` lock ``mode`` on ``fd`` without blocking, retrying for up to ``wait_s`` seconds.

    The retries ride out another process's momentary probe (:func:`writer_state` holds its exclusive lock for
    microseconds). Returns False when the lock could not be had.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except OSError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)


def writer_state(path: str | os.PathLike) -> str:
    """Whether a writer has the store open: ``"live"``, ``"killed"`` or ``"closed"``. Never blocks.

    A live writer holds a shared lock on the file for as long as it records, so an exclusive lock cannot be had
    (it is released at once when it can). A killed writer leaves no lock but the superblock's "open for writing"
    flag (cleared when the store is resumed: :func:`clear_writer_flag`).
    """
    with open(path, "rb") as fh:
        if not flock(fh.fileno(), fcntl.LOCK_EX):
            return "live"
        try:
            head = fh.read(12)
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    flagged = head[:8] == b"\x89HDF\r\n\x1a\n" and head[8] in (2, 3) and head[11] != 0
    return "killed" if flagged else "closed"
