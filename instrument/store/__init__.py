"""The on-disk format of a topotrace run: one HDF5 file, owned by this package alone.

Everything that reads or writes a store goes through :class:`StoreWriter` (append snapshots while a model
trains) or :class:`Store` (read a store, also while it is still being written). The layout is documented in
``docs/store.md``; :data:`SCHEMA_VERSION` changes whenever that layout changes.

Commit protocol. The file is written in HDF5's single-writer/multiple-reader (SWMR) mode, with the file
format bounded to HDF5 1.10. Every per-snapshot dataset has the snapshot axis first and one snapshot per
chunk. Appending a snapshot resizes every dataset, writes and flushes its data, and only then advances the
one-element dataset ``/committed`` and flushes it. Readers trust ``/committed`` alone, so a process killed at
any instant leaves a file that opens and holds every committed snapshot intact; rows past ``/committed`` are
ignored by readers and cut away when the run resumes.

No pickle: metadata is stored as HDF5 attributes holding strings, numbers or JSON text.

Modules (import from this package, not from them; it needs only numpy and h5py, never torch):
    format: the format constants, the spec dataclasses and their HDF5 attributes.
    writer: :class:`StoreWriter`, the commit protocol; :func:`is_store` and :func:`check_replaceable` (what
        ``overwrite`` may replace: a topotrace store that no process records).
    reader: :class:`Store`.
    repair: :func:`clear_writer_flag`, the crash repair a resumed store needs after its writer was killed, and
        :func:`writer_state` (is a writer recording into a store, or was it killed?).
    integrity: the checks a store passes before it is read (file check, bounded SWMR open, chunk extents).

Checksums. Every per-snapshot dataset carries HDF5's Fletcher-32 filter; :class:`Store` checks a store at open
and names a damaged snapshot when its chunk is read (``Store(path, until_good=True)`` keeps the snapshots before
it). A failed write (disk full) stops the writer, which closes its file without writing more to it.
"""

from .format import (
    ACT_DTYPES,
    COMPRESSIONS,
    FORMAT,
    LIBVER,
    REDUCTIONS,
    SCHEMA_VERSION,
    STORE_FILE,
    LayerSpec,
    ProbeRecord,
    ProbeSpec,
    Snapshot,
    StoreError,
    StoreSpec,
    resolve_store_path,
)
from .integrity import recorded_measures
from .reader import Store
from .repair import clear_writer_flag, writer_state
from .writer import StoreWriter, check_replaceable, is_store, open_writer

__all__ = [
    "ACT_DTYPES",
    "COMPRESSIONS",
    "FORMAT",
    "LIBVER",
    "REDUCTIONS",
    "SCHEMA_VERSION",
    "STORE_FILE",
    "LayerSpec",
    "ProbeRecord",
    "ProbeSpec",
    "Snapshot",
    "Store",
    "StoreError",
    "StoreSpec",
    "StoreWriter",
    "check_replaceable",
    "clear_writer_flag",
    "is_store",
    "open_writer",
    "recorded_measures",
    "resolve_store_path",
    "writer_state",
]
