"""Crash repair: clear the "open for writing" flag a killed SWMR writer leaves, so the store can be resumed."""

from __future__ import annotations

import fcntl
import os

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
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            raise StoreError(f"{path} is open for writing by another process.") from err
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
            # The superblock's end-of-file address is only brought up to date when the writer closes the file;
            # data committed since then lies beyond it. Extend it to the real end of the file.
            eoa_at = 12 + 2 * size_of_offsets
            eoa = int.from_bytes(block[eoa_at : eoa_at + size_of_offsets], "little")
            size = os.fstat(fh.fileno()).st_size
            block[eoa_at : eoa_at + size_of_offsets] = max(eoa, size).to_bytes(size_of_offsets, "little")
            block[n : n + 4] = _lookup3(bytes(block[:n])).to_bytes(4, "little")
            fh.seek(0)
            fh.write(block)
            fh.flush()
            os.fsync(fh.fileno())
            return True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
