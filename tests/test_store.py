"""The store: commit protocol, crash recovery, resume, validation, live reading, stock HDF5 tools."""

import shutil
import subprocess
import sys
import textwrap
import time

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
    clear_writer_flag,
    open_writer,
)

N, C = 6, 3


def make_spec(d=5, act_dtype="float16", labels=(0, 1, 2, 0, 1, 2)):
    return StoreSpec(
        layers=(LayerSpec("fc1", d, "flatten", (d,)), LayerSpec("conv.0", 2, "channel_mean", (2, 4, 4))),
        probes=(ProbeSpec("heldout", np.arange(N), np.array(labels)),),
        class_names=("a", "b", "c"),
        measures=("max_prob",),
        act_dtype=act_dtype,
    )


def make_snapshot(step, seed, d=5):
    rng = np.random.default_rng(seed)
    rec = ProbeRecord(
        acts={"fc1": rng.normal(size=(N, d)).astype(np.float32), "conv.0": rng.normal(size=(N, 2)).astype(np.float32)},
        logits=rng.normal(size=(N, C)).astype(np.float32),
        pred=rng.integers(0, C, N),
        correct=rng.random(N) > 0.5,
        loss=rng.random(N).astype(np.float32),
        conf={"max_prob": rng.random(N).astype(np.float32)},
    )
    return Snapshot(step=step, epoch=step // 10, time=1e9 + step, probes={"heldout": rec})


def test_roundtrip(tmp_path):
    """Appended snapshots read back exactly (float16 activations within float16 precision)."""
    path = tmp_path / "s.h5"
    snaps = [make_snapshot(s, s) for s in (0, 3, 7)]
    with StoreWriter.create(path, make_spec(), {"run_name": "r", "seed": 3, "config": {"a": [1, 2]}}) as w:
        assert [w.append(s) for s in snaps] == [1, 2, 3]
    with Store(path) as st:
        assert st.n_snapshots == 3
        np.testing.assert_array_equal(st.steps, [0, 3, 7])
        np.testing.assert_array_equal(st.epochs, [0, 0, 0])
        assert st.meta == {"run_name": "r", "seed": 3, "config": {"a": [1, 2]}}
        assert list(st.layers) == ["fc1", "conv.0"]
        assert st.layers["conv.0"].output_shape == (2, 4, 4)
        for i, snap in enumerate(snaps):
            rec = snap.probes["heldout"]
            np.testing.assert_allclose(st.acts("heldout", "fc1", i), rec.acts["fc1"], rtol=1e-3, atol=1e-3)
            np.testing.assert_array_equal(st.logits("heldout")[i], rec.logits)
            np.testing.assert_array_equal(st.pred("heldout")[i], rec.pred)
            np.testing.assert_array_equal(st.correct("heldout")[i], rec.correct)
            np.testing.assert_array_equal(st.conf("heldout", "max_prob")[i], rec.conf["max_prob"])
        assert [i for i, _ in st.iter_acts("heldout", "conv.0")] == [0, 1, 2]
        assert st.acts("heldout", "fc1", -1).dtype == np.float32
        with pytest.raises(KeyError, match="Available: \\['fc1', 'conv.0'\\]"):
            st.acts("heldout", "fc9", 0)
        with pytest.raises(IndexError, match="3 committed"):
            st.acts("heldout", "fc1", 3)


def test_two_stores_on_one_file_read_the_same_values(tmp_path):
    """Two Stores of one file in one process, each refreshing, read what was written (HDF5 2.0 reads zeros when a
    dataset open through two ids is refreshed; the Stores of a file share one id per dataset)."""
    path = tmp_path / "s.h5"
    snaps = [make_snapshot(s, s) for s in (0, 3, 7)]
    with StoreWriter.create(path, make_spec(), {}) as w:
        for s in snaps:
            w.append(s)
    a, b = Store(path), Store(path)
    try:
        for st in (a, b, a):
            assert st.refresh() == 3
            np.testing.assert_array_equal(st.steps, [0, 3, 7])
            for i, snap in enumerate(snaps):
                np.testing.assert_array_equal(st.logits("heldout")[i], snap.probes["heldout"].logits)
        a.close()
        np.testing.assert_array_equal(b.steps, [0, 3, 7])  # the other Store still reads after one closes
    finally:
        a.close()
        b.close()
    with Store(path) as c:
        np.testing.assert_array_equal(c.steps, [0, 3, 7])


def test_float32_is_exact(tmp_path):
    """With act_dtype float32 activations round-trip bit for bit."""
    path = tmp_path / "s.h5"
    snap = make_snapshot(1, 0)
    with StoreWriter.create(path, make_spec(act_dtype="float32"), {}) as w:
        w.append(snap)
    with Store(path) as st:
        np.testing.assert_array_equal(st.acts("heldout", "fc1", 0), snap.probes["heldout"].acts["fc1"])


def test_steps_must_increase_and_shapes_match(tmp_path):
    """A bad snapshot is refused with both sides named, and nothing of it is written."""
    with StoreWriter.create(tmp_path / "s.h5", make_spec(), {}) as w:
        w.append(make_snapshot(5, 0))
        with pytest.raises(StoreError, match="step 5 after step 5"):
            w.append(make_snapshot(5, 1))
        bad = make_snapshot(6, 1, d=4)
        with pytest.raises(StoreError, match=r"existing \(6, 5\) vs new \(6, 4\)"):
            w.append(bad)
        assert w.n_snapshots == 1
    with Store(tmp_path / "s.h5") as st:
        assert st.n_snapshots == 1 and st._f["probes/heldout/acts/fc1"].shape[0] == 1


def test_create_refuses_existing_and_bad_spec(tmp_path):
    """Creating over an existing file, or with bad names/dtypes, fails before anything is written."""
    path = tmp_path / "s.h5"
    StoreWriter.create(path, make_spec(), {}).close()
    with pytest.raises(FileExistsError):
        StoreWriter.create(path, make_spec(), {})
    with pytest.raises(ValueError, match="act_dtype.*'float64'"):
        make_spec(act_dtype="float64")
    with pytest.raises(ValueError, match="no '/'"):
        StoreSpec((LayerSpec("a/b", 1, "flatten", (1,)),), make_spec().probes, ("a",), ())


def test_resume_appends(tmp_path):
    """Resume keeps earlier snapshots unchanged and appends after them."""
    path = tmp_path / "s.h5"
    with open_writer(path, make_spec(), {"run_name": "r"}, resume=True) as w:
        w.append(make_snapshot(1, 1))
        w.append(make_snapshot(2, 2))
    with Store(path) as st:
        before = st.acts("heldout", "fc1", 1)
    with open_writer(path, make_spec(), {}, resume=True) as w:
        assert w.n_snapshots == 2 and w.last_step == 2
        with pytest.raises(StoreError, match="increase strictly"):
            w.append(make_snapshot(2, 9))
        w.append(make_snapshot(3, 3))
    with Store(path) as st:
        np.testing.assert_array_equal(st.steps, [1, 2, 3])
        np.testing.assert_array_equal(st.acts("heldout", "fc1", 1), before)
        assert st.meta["run_name"] == "r"


@pytest.mark.parametrize(
    "other, message",
    [
        (dict(d=7), r"layers: existing \[\('fc1', 5, 'flatten'\), .*\] vs new \[\('fc1', 7, 'flatten'\)"),
        (dict(labels=(0, 0, 0, 1, 1, 1)), "probe sets"),
        (dict(act_dtype="float32"), "act_dtype: existing 'float16' vs new 'float32'"),
    ],
)
def test_mismatched_resume_refused(tmp_path, other, message):
    """Resuming with another model, other probe samples or another dtype is refused, naming both sides."""
    path = tmp_path / "s.h5"
    with StoreWriter.create(path, make_spec(), {}) as w:
        w.append(make_snapshot(1, 1))
    with pytest.raises(StoreError, match=message):
        StoreWriter.resume(path, make_spec(**other))
    with Store(path) as st:  # the refused resume left the store as it was
        assert st.n_snapshots == 1


def test_not_a_store(tmp_path):
    """Opening an HDF5 file that is not a store, or of another schema version, says so."""
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = 1
    with pytest.raises(StoreError, match="not a topotrace store"):
        Store(tmp_path / "x.h5")
    path = tmp_path / "s.h5"
    StoreWriter.create(path, make_spec(), {}).close()
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path)


def test_uncommitted_rows_are_ignored_and_cut_on_resume(tmp_path):
    """Rows written past /committed (a snapshot interrupted mid-write) are invisible and removed on resume."""
    path = tmp_path / "s.h5"
    with StoreWriter.create(path, make_spec(), {}) as w:
        w.append(make_snapshot(1, 1))
    with h5py.File(path, "r+") as f:  # simulate a crash after resize + partial write, before the commit
        for name in ("step", "probes/heldout/acts/fc1", "probes/heldout/logits"):
            f[name].resize(2, axis=0)
        f["step"][1] = 99
    with Store(path) as st:
        assert st.n_snapshots == 1
        np.testing.assert_array_equal(st.steps, [1])
    with StoreWriter.resume(path, make_spec()) as w:
        assert w.last_step == 1
        w.append(make_snapshot(2, 2))
    with Store(path) as st:
        np.testing.assert_array_equal(st.steps, [1, 2])


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    sys.path.insert(0, {tests!r})
    from test_store import make_spec, make_snapshot
    from topotrace.instrument.store import StoreWriter
    w = StoreWriter.create({path!r}, make_spec(), {{"run_name": "killed"}})
    step = 0
    while True:
        w.append(make_snapshot(step, step))
        step += 1
    """
)


def _committed(path):
    try:
        with Store(path) as st:
            return st.n_snapshots
    except (OSError, FileNotFoundError):
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [1, 17, 60])
def test_sigkill_leaves_committed_snapshots(tmp_path, kill_at):
    """kill -9 while appending: the store opens, holds every committed snapshot, and can be resumed."""
    path = tmp_path / "s.h5"
    code = WRITER.format(tests=str(__import__("pathlib").Path(__file__).parent), path=str(path))
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 60
        while _committed(path) < kill_at:  # also: a reader opens the store while the writer appends
            assert proc.poll() is None, "writer died"
            assert time.monotonic() < deadline
            time.sleep(0.005)
    finally:
        proc.kill()
        proc.wait()
    with Store(path) as st:
        n = st.n_snapshots
        assert n >= kill_at
        np.testing.assert_array_equal(st.steps, np.arange(n))
        for i in (0, n - 1):
            expected = make_snapshot(i, i).probes["heldout"]
            np.testing.assert_allclose(st.acts("heldout", "fc1", i), expected.acts["fc1"], rtol=1e-3, atol=1e-3)
            np.testing.assert_array_equal(st.logits("heldout")[i], expected.logits)
    with StoreWriter.resume(path, make_spec()) as w:  # clears the dead writer's flag itself
        w.append(make_snapshot(n, n))
    with Store(path) as st:
        assert st.n_snapshots == n + 1


@pytest.mark.slow
def test_clear_flag_refuses_live_writer(tmp_path):
    """The crash-flag repair never touches a store whose writer is alive."""
    path = tmp_path / "s.h5"
    with StoreWriter.create(path, make_spec(), {}) as w:
        w.append(make_snapshot(1, 1))
        with pytest.raises(StoreError, match="open for writing"):
            clear_writer_flag(path)
    assert clear_writer_flag(path) is False  # closed cleanly: no flag left


@pytest.mark.skipif(shutil.which("h5dump") is None, reason="h5dump (Debian hdf5-tools) not installed")
def test_h5dump_reads_store(tmp_path):
    """Debian's HDF5 1.10 h5dump reads the structure and the data."""
    path = tmp_path / "s.h5"
    with StoreWriter.create(path, make_spec(), {"run_name": "dumped"}) as w:
        for s in (4, 8):
            w.append(make_snapshot(s, s))
    out = subprocess.run(["h5dump", "-d", "/step", str(path)], capture_output=True, text=True, check=True).stdout
    assert "(0): 4, 8" in out
    out = subprocess.run(["h5dump", "-A", str(path)], capture_output=True, text=True, check=True).stdout
    assert "topotrace-store" in out and "dumped" in out
    out = subprocess.run(["h5dump", "-d", "/probes/heldout/acts/fc1", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert "H5T_IEEE_F16" in out or "16-bit" in out or "DATASPACE  SIMPLE { ( 2, 6, 5 )" in out


def test_reader_opening_a_new_store_at_once_does_not_stop_the_writer(tmp_path, monkeypatch):
    """A reader that opens the store the moment it appears (before the first append) cannot stop the writer."""
    import os

    from topotrace.instrument.store import writer as writer_mod

    readers = []
    real_replace = os.replace

    def replace_then_read(src, dst):
        real_replace(src, dst)
        readers.append(Store(dst))  # e.g. `topotrace info` on a run that is just starting; kept open

    monkeypatch.setattr(writer_mod.os, "replace", replace_then_read)
    with StoreWriter.create(tmp_path / "s.h5", make_spec(), {}) as w:
        assert w.path == tmp_path / "s.h5"
        w.append(make_snapshot(0, 0))
    assert readers and readers[0].refresh() == 1
    readers[0].close()


@pytest.mark.parametrize("committed", [-1, 99])
def test_committed_count_outside_the_data_is_refused(tmp_path, committed):
    """A /committed count below 0 or beyond the rows the store holds is a damaged store: one clear StoreError."""
    path = tmp_path / "s.h5"
    with StoreWriter.create(path, make_spec(), {}) as w:
        for i in range(3):
            w.append(make_snapshot(i, i))
    with h5py.File(path, "r+") as f:
        f["committed"][0] = committed
    with pytest.raises(StoreError, match=rf"damaged: it says {committed} snapshots are committed but holds 3"):
        Store(path)
