"""Damaged stores are refused in one line, quickly, without a write; checksums find flipped data; a full disk
stops the writer cleanly and leaves a store that reads and resumes."""

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from topotrace.instrument.store import (
    LayerSpec,
    ProbeRecord,
    ProbeSpec,
    Snapshot,
    Store,
    StoreError,
    StoreSpec,
    StoreWriter,
    integrity,
)
from topotrace.instrument.synthetic import write_synthetic_store

sys.path.insert(0, str(Path(__file__).parent))
import _record_child as child  # noqa: E402

ROOT = Path(__file__).parent.parent
N_SNAPSHOTS = 6


def _small(path):
    """A small synthetic store: 6 snapshots, one layer of 8 neurons, 12 held-out samples of 3 classes (27 kB)."""
    return write_synthetic_store(path, n_snapshots=N_SNAPSHOTS, layer_sizes=(8,), n_classes=3, per_class=4,
                                 with_train_probe=False)


def _read_all(path, until_good=False):
    """Open the store and read everything a user can read; returns name -> value."""
    out = {}
    with Store(path, until_good=until_good) as st:
        out["n"] = st.n_snapshots
        out["damaged_at"] = st.damaged_at
        out["meta"] = st.meta
        out["class_names"] = st.class_names
        out["steps"], out["epochs"], out["times"] = st.steps, st.epochs, st.times
        for p in st.probes:
            out[p, "labels"] = st.labels(p)
            out[p, "index"] = st.probes[p].index
            out[p, "logits"], out[p, "pred"] = st.logits(p), st.pred(p)
            out[p, "correct"], out[p, "loss"] = st.correct(p), st.loss(p)
            for m in st.measures:
                out[p, m] = st.conf(p, m)
            out[p, "nonfinite"] = st.nonfinite(p)
            for layer in st.layers:
                out[p, layer] = np.stack([a for _, a in st.iter_acts(p, layer)]) if st.n_snapshots else None
    return out


def _assert_same(got, want, n=None):
    """``got`` equals ``want`` (``n``: only the first n snapshots of ``want``)."""
    assert got.keys() == want.keys()
    for k, v in want.items():
        if k in ("n", "damaged_at"):
            continue
        if isinstance(v, dict) and all(isinstance(a, np.ndarray) for a in v.values()):  # nonfinite counts
            assert v.keys() == got[k].keys()
            for c in v:
                np.testing.assert_array_equal(got[k][c], v[c][:n])
        elif isinstance(v, np.ndarray) and k not in ("class_names",) and not (isinstance(k, tuple)
                                                                               and k[1] in ("labels", "index")):
            np.testing.assert_array_equal(got[k], v[:n])
        elif isinstance(v, np.ndarray):
            np.testing.assert_array_equal(got[k], v)
        else:
            assert got[k] == v, k


def _refused(path, until_good=False):
    """Opening and reading ``path`` raises one StoreError line that starts with the path, within 20 s, and
    the file is unchanged. Returns the message."""
    before = path.read_bytes() if path.is_file() else None
    t0 = time.monotonic()
    with pytest.raises(StoreError) as info:
        _read_all(path, until_good)
    assert time.monotonic() - t0 < 20
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    if before is not None:
        assert path.read_bytes() == before  # readers never write
    return msg


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The small store's bytes and everything read from it."""
    path = _small(tmp_path_factory.mktemp("clean") / "store.h5")
    return path.read_bytes(), _read_all(path)


@pytest.fixture(scope="module")
def killed(tmp_path_factory):
    """The bytes of a store whose writer is still open (what kill -9 leaves: the write flag is set), and what the
    store reads once closed."""
    d = tmp_path_factory.mktemp("killed")
    spec = StoreSpec((LayerSpec("fc", 8, "flatten", (8,)),), (ProbeSpec("heldout", np.arange(12), np.arange(12) % 3),),
                     ("a", "b", "c"), ("max_prob",))
    rng = np.random.default_rng(0)
    with StoreWriter.create(d / "live.h5", spec, {"run_name": "killed"}) as w:
        for s in range(N_SNAPSHOTS):
            rec = ProbeRecord({"fc": rng.normal(size=(12, 8))}, rng.normal(size=(12, 3)).astype(np.float32),
                              rng.integers(0, 3, 12), rng.random(12) > 0.5, rng.random(12).astype(np.float32),
                              {"max_prob": rng.random(12).astype(np.float32)})
            w.append(Snapshot(step=10 * s, epoch=0, time=1e9 + s, probes={"heldout": rec}))
        shutil.copyfile(d / "live.h5", d / "copy.h5")
    data = (d / "copy.h5").read_bytes()
    assert data[11] & 0x04  # SWMR write flag set, as a killed writer leaves it
    return data, _read_all(d / "copy.h5")


def _write(path, data):
    path.write_bytes(data)
    return path


FRACTIONS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.4, 0.6, 0.8, 0.95, 0.999]


@pytest.mark.parametrize("frac", FRACTIONS)
def test_truncated_store_is_refused(tmp_path, clean, frac):
    """A closed store cut short anywhere is refused at once, naming it truncated."""
    data, _ = clean
    path = _write(tmp_path / "s.h5", data[: int(len(data) * frac)])
    assert "damaged or truncated" in _refused(path)


@pytest.mark.slow
@pytest.mark.parametrize("frac", FRACTIONS)
def test_truncated_killed_store_is_refused_or_intact(tmp_path, killed, frac):
    """A killed writer's store cut short: refused in seconds (its end-of-file address cannot be trusted, the chunk
    check and the bounded open decide), or, if only unused bytes were cut, read exactly as before."""
    data, want = killed
    path = _write(tmp_path / "s.h5", data[: int(len(data) * frac)])
    before = path.read_bytes()
    t0 = time.monotonic()
    try:
        got = _read_all(path)
    except StoreError as err:
        assert "\n" not in str(err) and str(err).startswith(str(path))
    else:
        _assert_same(got, want)
    assert time.monotonic() - t0 < 20 and path.read_bytes() == before


@pytest.mark.slow
def test_truncated_killed_store_until_good(tmp_path, killed):
    """Cutting a killed store inside its last snapshots: the message names the first lost snapshot, and
    until_good gives exactly the snapshots before it."""
    data, want = killed
    with h5py.File(_write(tmp_path / "k.h5", data), "r", swmr=True) as f:
        info = f["probes/heldout/acts/fc"].id.get_chunk_info_by_coord((3, 0, 0))
    path = _write(tmp_path / "s.h5", data[: info.byte_offset + 1])
    msg = _refused(path)
    assert "snapshot 3 (step 30) is truncated" in msg or "snapshot" in msg and "until_good=True" in msg
    got = _read_all(path, until_good=True)
    first = got["damaged_at"]
    assert first is not None and first <= 3 and got["n"] == first
    _assert_same(got, want, first)


def _chunk_spans(data, tmp_path):
    """(start, end, dataset, first row) of every chunk of the store ``data``."""
    spans = []
    with h5py.File(_write(tmp_path / "spans.h5", data), "r", swmr=True) as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.chunks:
                obj.id.chunk_iter(lambda i: spans.append((i.byte_offset, i.byte_offset + i.size, name,
                                                          i.chunk_offset[0])))
        f.visititems(visit)
    return spans


POSITIONS = np.random.default_rng(20240601).random(20)


@pytest.mark.slow
@pytest.mark.parametrize("which", ["clean", "killed"])
@pytest.mark.parametrize("u", POSITIONS)
def test_flipped_byte_is_found_or_harmless(tmp_path, request, which, u):
    """A byte flipped anywhere (seeded positions, metadata and data): a StoreError in seconds, or the store reads
    exactly as before (the byte was unused). A flip inside a chunk is found by its Fletcher-32 checksum."""
    data, want = request.getfixturevalue(which)
    pos = int(u * len(data))
    bad = bytearray(data)
    bad[pos] ^= 0x5A
    path = _write(tmp_path / "s.h5", bytes(bad))
    in_chunk = [s for s in _chunk_spans(data, tmp_path) if s[0] <= pos < s[1]]
    before = path.read_bytes()
    t0 = time.monotonic()
    try:
        got = _read_all(path)
    except StoreError as err:
        msg = str(err)
        assert "\n" not in msg and msg.startswith(str(path))
        if in_chunk:
            assert "checksum mismatch" in msg, msg
    else:
        assert not in_chunk, f"flipped byte {pos} in chunk {in_chunk} went unnoticed"
        _assert_same(got, want)
    assert time.monotonic() - t0 < 20 and path.read_bytes() == before


@pytest.mark.parametrize("dataset, snapshot", [("probes/heldout/acts/layer0", 4), ("probes/heldout/logits", 2),
                                               ("step", 3), ("probes/heldout/nonfinite", 5)])
def test_damaged_chunk_names_snapshot_and_until_good_keeps_the_rest(tmp_path, clean, dataset, snapshot):
    """A flipped data byte: the error names the dataset, the snapshot and its step; until_good shows exactly the
    snapshots before it, equal to the original, and says which one was damaged."""
    data, want = clean
    start, end, _, _ = next(s for s in _chunk_spans(data, tmp_path) if s[2] == dataset and s[3] == snapshot)
    bad = bytearray(data)
    bad[(start + end) // 2] ^= 0x01
    path = _write(tmp_path / "s.h5", bytes(bad))
    msg = _refused(path)
    step = "unknown" if dataset == "step" else want["steps"][snapshot]  # the damaged chunk holds the step
    name = dataset.split("/")[-1]
    assert name in msg and f"snapshot {snapshot} (step {step}) is damaged (checksum mismatch)" in msg, msg
    assert f"the first {snapshot} snapshots are intact" in msg and "until_good=True" in msg
    got = _read_all(path, until_good=True)
    assert got["n"] == snapshot and got["damaged_at"] == snapshot
    _assert_same(got, want, snapshot)
    with Store(path, until_good=True) as st:  # what the commands name before any work (#23): the same damage
        assert str(st.damage_error) == msg
        assert st.damage in msg and f"snapshot {snapshot} (step {step})" in st.damage
    assert path.read_bytes() == bytes(bad)


def test_damage_at_snapshot_0_says_nothing_before_it_is_usable(tmp_path, clean):
    """A damaged first snapshot: no "first 0 snapshots are intact"; until_good shows none and says why."""
    data, want = clean
    start, end, _, _ = next(s for s in _chunk_spans(data, tmp_path)
                            if s[2] == "probes/heldout/loss" and s[3] == 0)
    bad = bytearray(data)
    bad[(start + end) // 2] ^= 0x01
    path = _write(tmp_path / "s.h5", bytes(bad))
    msg = _refused(path)
    assert f"snapshot 0 (step {want['steps'][0]}) is damaged (checksum mismatch)" in msg
    assert "nothing before it is usable" in msg and "first 0" not in msg
    with Store(path, until_good=True) as st:
        assert st.n_snapshots == 0 and st.damaged_at == 0 and str(st.damage_error) == msg


@pytest.mark.parametrize(("edit", "words"), [
    (lambda f: f.__delitem__("probes/heldout"), "probe set 'heldout' (listed in attribute 'probe_sets') has no "
                                                "group probes/heldout"),
    (lambda f: f.__delitem__("probes/heldout/label"), "has no dataset probes/heldout/label"),
    (lambda f: f.attrs.__setitem__("schema_version", "1"), "schema version that is not a whole number"),
    (lambda f: f.attrs.__setitem__("schema_version", True), "schema version that is not a whole number"),
    (lambda f: f.attrs.__delitem__("schema_version"), "has no schema version (attribute 'schema_version' is missing)"),
    (lambda f: f.attrs.__setitem__("schema_version", 7), "has store schema version 7; this topotrace reads version 1"),
])
def test_a_deleted_probe_set_or_a_bad_schema_version_is_named(tmp_path, clean, edit, words):
    assert words in _refused(_edited(tmp_path, clean, edit))


def test_until_good_on_an_intact_store_changes_nothing(tmp_path, clean):
    """until_good on an intact store: every snapshot, damaged_at None."""
    data, want = clean
    got = _read_all(_write(tmp_path / "s.h5", data), until_good=True)
    assert got["damaged_at"] is None and got["n"] == N_SNAPSHOTS
    _assert_same(got, want)


def _edited(tmp_path, clean, edit):
    path = _write(tmp_path / "s.h5", clean[0])
    with h5py.File(path, "r+") as f:
        edit(f)
    return path


@pytest.mark.parametrize("committed", [N_SNAPSHOTS + 1, 99, -1, -(2**40)])
def test_committed_outside_the_data_is_refused(tmp_path, clean, committed):
    """/committed larger than any per-snapshot dataset, or negative."""
    path = _edited(tmp_path, clean, lambda f: f["committed"].__setitem__(0, committed))
    assert f"it says {committed} snapshots are committed" in _refused(path)


def test_committed_larger_than_one_dataset_is_refused(tmp_path, clean):
    """/committed is checked against every per-snapshot dataset, not only step."""
    path = _edited(tmp_path, clean, lambda f: f["probes/heldout/conf/margin"].resize(N_SNAPSHOTS - 2, axis=0))
    assert "conf/margin" in _refused(path)


def test_steps_not_increasing_are_refused(tmp_path, clean):
    """Steps that do not increase strictly."""
    def edit(f):
        f["step"][4] = f["step"][3]
    assert "steps do not increase strictly (snapshot 4" in _refused(_edited(tmp_path, clean, edit))


@pytest.mark.parametrize("attr", ["layers", "probe_sets", "class_names", "measures"])
def test_broken_json_attribute_is_named(tmp_path, clean, attr):
    """An attribute that is not valid JSON is named."""
    path = _edited(tmp_path, clean, lambda f: f.attrs.__setitem__(attr, '["a", '))
    msg = _refused(path)
    assert f"attribute {attr!r}" in msg and "JSON" in msg


def test_changed_attribute_text_is_refused(tmp_path, clean):
    """Attribute text that still parses but differs from what was written fails the attributes' checksum."""
    path = _edited(tmp_path, clean, lambda f: f.attrs.__setitem__("meta_run_name", "another"))
    assert "attrs_sha256" in _refused(path)


def test_labels_out_of_range_are_refused(tmp_path, clean):
    """A label outside 0 .. n_classes - 1."""
    def edit(f):
        f["probes/heldout/label"][0] = 3
    assert "labels 0..3 outside 0..2" in _refused(_edited(tmp_path, clean, edit))


def test_labels_of_another_length_are_refused(tmp_path, clean):
    """Labels whose length differs from the indices (and the datasets' width)."""
    def edit(f):
        del f["probes/heldout/label"]
        f["probes/heldout/label"] = np.zeros(5, np.int64)
    assert "labels of shape (5,)" in _refused(_edited(tmp_path, clean, edit))


def test_dataset_width_must_match_the_spec(tmp_path, clean):
    """A per-snapshot dataset whose rows do not have the shape the attributes give."""
    def edit(f):
        del f["probes/heldout/loss"]
        f.create_dataset("probes/heldout/loss", shape=(N_SNAPSHOTS, 7), maxshape=(None, 7), dtype="float32")
    assert "dataset probes/heldout/loss has shape (6, 7), expected (n_snapshots, 12)" in _refused(
        _edited(tmp_path, clean, edit))


def test_not_a_store(tmp_path):
    """An empty file, a text file, a directory and a plain HDF5 file: one line each, saying what they are."""
    empty = _write(tmp_path / "empty.h5", b"")
    assert "is damaged or truncated: the file is empty" in _refused(empty)
    text = _write(tmp_path / "notes.h5", b"step,loss\n0,2.3\n" * 100)
    assert "is not an HDF5 file (it does not start with the HDF5 signature)" in _refused(text)
    (tmp_path / "run").mkdir()
    assert "is not an HDF5 file (it is a directory)" in _refused(tmp_path / "run")
    with h5py.File(tmp_path / "plain.h5", "w") as f:
        f["x"] = np.arange(3)
    assert "is not a topotrace store" in _refused(tmp_path / "plain.h5")


def test_superblock_checksum(tmp_path, clean):
    """A flipped byte in the end-of-file address of the superblock fails its checksum (found without HDF5)."""
    bad = bytearray(clean[0])
    bad[12 + 2 * 8] ^= 0x01
    assert "superblock's checksum does not match" in _refused(_write(tmp_path / "s.h5", bytes(bad)))


@pytest.mark.slow
def test_chunk_check_without_chunk_iter(tmp_path, killed, monkeypatch):
    """With HDF5 < 1.12.3 (no H5Dchunk_iter) the chunk check bisects on the chunk index and still names the first
    snapshot past the end of the file."""
    monkeypatch.setattr(integrity, "_HAS_CHUNK_ITER", False)
    data, want = killed
    with h5py.File(_write(tmp_path / "k.h5", data), "r", swmr=True) as f:
        cut = f["probes/heldout/acts/fc"].id.get_chunk_info_by_coord((4, 0, 0)).byte_offset + 1
    path = _write(tmp_path / "s.h5", data[:cut])
    got = _read_all(path, until_good=True)
    assert got["damaged_at"] is not None and got["damaged_at"] <= 4
    _assert_same(got, want, got["damaged_at"])


def _strip_checks(src, dst):
    """Copy a store as topotrace wrote it before checksums: no Fletcher-32, scalars in chunks of 256, no
    non-finite counts, no attribute checksum."""
    with h5py.File(src, "r") as a, h5py.File(dst, "w", libver=("v110", "v110")) as b:
        for k, v in a.attrs.items():
            if k != "attrs_sha256":
                b.attrs[k] = v
        b.attrs["schema_version"] = 1  # the version of those stores, whatever the version of the writer

        def copy(name, obj):
            if not isinstance(obj, h5py.Dataset) or name.endswith("nonfinite"):
                return
            if obj.maxshape[0] is None:
                chunks = (256,) if obj.ndim == 1 else (1, *obj.shape[1:])
                d = b.create_dataset(name, data=obj[()], maxshape=obj.maxshape, chunks=chunks)
            else:
                d = b.create_dataset(name, data=obj[()])
            for k, v in obj.attrs.items():
                d.attrs[k] = v
        a.visititems(copy)


def test_store_without_checksums_still_reads_and_resumes(tmp_path, clean):
    """A store written before checksums and non-finite counts reads as before (nonfinite: None) and resumes."""
    _strip_checks(_write(tmp_path / "new.h5", clean[0]), tmp_path / "old.h5")
    got = _read_all(tmp_path / "old.h5")
    assert got["heldout", "nonfinite"] is None
    want = {**clean[1], ("heldout", "nonfinite"): None}
    _assert_same(got, want)
    assert _read_all(tmp_path / "old.h5", until_good=True)["n"] == N_SNAPSHOTS
    with Store(tmp_path / "old.h5") as st:
        spec = st.spec
    snap = Snapshot(step=10**6, epoch=9, time=2e9, probes={"heldout": ProbeRecord(
        {"layer0": np.ones((12, 8))}, np.zeros((12, 3), np.float32), np.zeros(12, np.int64), np.ones(12, bool),
        np.zeros(12, np.float32), {m: np.zeros(12, np.float32) for m in spec.measures})})
    with StoreWriter.resume(tmp_path / "old.h5", spec) as w:
        assert w.append(snap) == N_SNAPSHOTS + 1
    with Store(tmp_path / "old.h5") as st:
        assert st.steps[-1] == 10**6 and st.nonfinite("heldout") is None


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
def test_nonfinite_counts_match_numpy(tmp_path):
    """The writer's non-finite counts per layer and for the logits equal numpy's count on the stored values (a
    float32 value beyond float16's range is stored, and counted, as inf)."""
    n, d = 12, 8
    spec = StoreSpec((LayerSpec("a", d, "flatten", (d,)), LayerSpec("b", 3, "flatten", (3,))),
                     (ProbeSpec("heldout", np.arange(n), np.arange(n) % 3),), ("x", "y", "z"), ("max_prob",))
    rng = np.random.default_rng(1)
    snaps = []
    for s in range(5):
        a = rng.normal(size=(n, d)).astype(np.float32)
        b = rng.normal(size=(n, 3)).astype(np.float32)
        logits = rng.normal(size=(n, 3)).astype(np.float32)
        for arr in (a, b, logits):
            k = rng.integers(0, 4)
            idx = rng.choice(arr.size, k, replace=False)
            arr.flat[idx] = rng.choice([np.nan, np.inf, -np.inf, 1e6], k)  # 1e6: inf in float16, finite in float32
        snaps.append(Snapshot(step=s, epoch=0, time=1e9, probes={"heldout": ProbeRecord(
            {"a": a, "b": b}, logits, np.zeros(n, np.int64), np.zeros(n, bool), np.zeros(n, np.float32),
            {"max_prob": np.zeros(n, np.float32)})}))
    with StoreWriter.create(tmp_path / "s.h5", spec, {}) as w:
        for snap in snaps:
            w.append(snap)
    with Store(tmp_path / "s.h5") as st:
        counts = st.nonfinite("heldout")
        assert list(counts) == ["a", "b", "logits"]
        for layer in ("a", "b"):
            ref = [np.count_nonzero(~np.isfinite(st.acts("heldout", layer, i, dtype=None))) for i in range(5)]
            np.testing.assert_array_equal(counts[layer], ref)
            assert counts[layer].dtype == np.int64
        np.testing.assert_array_equal(counts["logits"], [np.count_nonzero(~np.isfinite(s.probes["heldout"].logits))
                                                         for s in snaps])
        assert counts["a"].sum() > 0 and counts["logits"].sum() > 0


def test_reader_open_is_bounded_on_damaged_metadata(tmp_path, killed):
    """Damaged metadata in a store whose write flag is set (no end-of-file check): HDF5's SWMR retries are
    bounded, so the open fails in about a second instead of retrying for minutes."""
    data, _ = killed
    bad = bytearray(data)
    for pos in range(200, 2000, 97):
        bad[pos] ^= 0xFF
    assert integrity._read_attempts_setter() is not None
    t0 = time.monotonic()
    _refused(_write(tmp_path / "s.h5", bytes(bad)))
    assert time.monotonic() - t0 < 5


DISK_FULL_CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    sys.path.insert(0, {tests!r})
    import _record_child as child
    model, probe, data = child.build()
    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))  # the file may not grow beyond this
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write beyond it fails with EFBIG instead of killing us
    rec = child.recorder(model, probe, {path!r})
    child.train(model, rec, data, 0, 60)
    rec.close()
    print("recorded", rec.n_snapshots, rec.recording, type(rec.error).__name__)
    """
)


@pytest.mark.slow
def test_full_disk_stops_the_writer_cleanly(tmp_path):
    """A file size limit reached while recording: training ends normally (exit code 0, no crash at exit), one
    one-line warning and no traceback, the committed snapshots read back, and the store resumes."""
    path = tmp_path / "store.h5"
    code = DISK_FULL_CHILD.format(tests=str(Path(__file__).parent), limit=90_000, path=str(path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert "recorded" in proc.stdout and "False OSError" in proc.stdout
    assert "Traceback" not in proc.stderr and "Fatal Python error" not in proc.stderr
    warned = [line for line in proc.stderr.splitlines() if "RuntimeWarning: Recording to" in line]
    assert len(warned) == 1 and "File too large (errno 27)" in warned[0], proc.stderr
    n = int(proc.stdout.split()[1])
    assert 2 <= n < 60
    with Store(path) as st:
        assert st.n_snapshots >= n  # the failed snapshot's commit may have reached the disk
        n = st.n_snapshots
        np.testing.assert_array_equal(st.steps, np.arange(n))
        logits = st.logits("heldout")
        assert np.isfinite(logits).all()
        np.testing.assert_array_equal(st.pred("heldout"), logits.argmax(axis=2))
        for layer in st.layers:
            assert all(np.isfinite(a).all() for _, a in st.iter_acts("heldout", layer))
    assert _read_all(path, until_good=True)["damaged_at"] is None
    model, probe, data = child.build()
    with child.recorder(model, probe, path, resume=True) as rec:  # the limit is lifted
        assert rec.last_step == n - 1
        child.train(model, rec, data, n, n + 3)
    with Store(path) as st:
        assert st.n_snapshots == n + 3
        np.testing.assert_array_equal(st.steps, np.arange(n + 3))
        np.testing.assert_array_equal(st.logits("heldout")[:n], logits)
