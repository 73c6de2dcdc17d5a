"""Recording under torchrun DDP (2 gloo ranks on the CPU): rank 0 alone, or every rank its share (shard="ddp")."""

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench.launch import TORCHRUN, torchrun
from topotrace.instrument.store import Store

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # tests/conftest.py; make test-fast leaves these out

CHILD = Path(__file__).with_name("_ddp_child.py")


def run_ddp(out, mode, check=True):
    out.mkdir()
    if not TORCHRUN.exists():
        pytest.skip("torchrun not found next to the Python interpreter")
    done = torchrun(CHILD, str(out), mode, timeout=120)
    if not check:
        return done
    assert done.returncode == 0, f"torchrun exited {done.returncode}:\n{done.stderr[-4000:]}"
    return [dict(np.load(out / f"params_rank{r}.npz", allow_pickle=False)) for r in (0, 1)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One torchrun each: unrecorded, and recorded (every rank its share, rank 0 also the whole probe sets)."""
    root = tmp_path_factory.mktemp("ddp")
    return {mode: (root / mode, run_ddp(root / mode, mode)) for mode in ("plain", "shard")}


def test_ddp_rank0_records_and_training_is_unchanged(runs):
    """Two gloo ranks: no deadlock, the store holds every scheduled snapshot, weights match an unrecorded run."""
    plain, recorded = runs["plain"][1], runs["shard"][1]
    for name in plain[0]:
        if name.endswith(("weight", "bias")):  # parameters are synchronised; BatchNorm statistics are per rank
            np.testing.assert_array_equal(plain[0][name], plain[1][name])
        np.testing.assert_array_equal(recorded[0][name], plain[0][name])  # recording changed nothing
        np.testing.assert_array_equal(recorded[1][name], plain[1][name])  # (rank 1's buffers were swapped back)
    with Store(runs["shard"][0] / "whole.h5") as st:
        np.testing.assert_array_equal(st.steps, np.arange(0, 13, 2))
        assert list(st.layers) == ["1", "2"]
        assert np.isfinite(st.acts("heldout", "2", -1)).all()


def test_sharded_store_equals_the_single_process_recording(runs):
    """shard="ddp": each rank wrote its share; the store readers open is rank 0's whole-set recording, bit for bit."""
    sharded = runs["shard"][0]
    assert sorted(p.name for p in sharded.glob("*.h5")) == [
        "store.h5", "store.shard-00-of-02.h5", "store.shard-01-of-02.h5", "whole.h5"]
    with Store(sharded / "whole.h5") as a, Store(sharded / "store.h5") as b:
        assert [p.name for p in b.shards] == ["store.shard-00-of-02.h5", "store.shard-01-of-02.h5"]
        with Store(b.shards[0]) as s0, Store(b.shards[1]) as s1:  # each shard is a store of its share
            assert (len(s0.labels("heldout")), len(s1.labels("heldout"))) == (15, 15)  # whole probe batches of 5
            assert (len(s0.labels("train")), len(s1.labels("train"))) == (10, 11)
        assert b.n_snapshots == a.n_snapshots == 7
        np.testing.assert_array_equal(b.steps, a.steps)
        for probe in ("heldout", "train"):
            np.testing.assert_array_equal(b.labels(probe), a.labels(probe))
            for layer in ("1", "2"):
                for i in range(a.n_snapshots):
                    np.testing.assert_array_equal(b.acts(probe, layer, i, dtype=None),
                                                  a.acts(probe, layer, i, dtype=None))
            for get in (Store.logits, Store.pred, Store.correct, Store.loss):
                np.testing.assert_array_equal(get(b, probe), get(a, probe))
            for m in a.measures:  # temp_prob too: the temperature is fitted on every rank's share of "train"
                np.testing.assert_array_equal(b.conf(probe, m), a.conf(probe, m))
            np.testing.assert_array_equal(b.nonfinite(probe)["2"], a.nonfinite(probe)["2"])
        np.testing.assert_array_equal(b.temperature, a.temperature)


def test_sharded_store_reads_with_h5py_and_h5dump(runs):
    """The combined file is plain HDF5 1.10 virtual datasets: h5py and h5dump see the samples in order."""
    import h5py

    path = runs["shard"][0] / "store.h5"
    with Store(runs["shard"][0] / "whole.h5") as a:
        want = a.acts("heldout", "1", 3, dtype=None)
    cwd = os.getcwd()
    os.chdir("/")  # the shard files are found next to the store, not in the working directory
    try:
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["probes/heldout/acts/1"][3], want)
            np.testing.assert_array_equal(f["committed"][()], [7, 7])
    finally:
        os.chdir(cwd)
    h5dump = shutil.which("h5dump")
    if h5dump is None:
        pytest.skip("h5dump is not installed")
    done = subprocess.run([h5dump, "-d", "/probes/heldout/pred", str(path)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert "( 7, 30 ) / ( H5S_UNLIMITED, 30 )" in done.stdout
    with Store(runs["shard"][0] / "whole.h5") as a:
        first = ", ".join(str(v) for v in a.pred("heldout")[0, :15])
    assert f"(0,0): {first}," in " ".join(done.stdout.split())


def test_killed_rank_leaves_the_snapshots_every_shard_committed(tmp_path, runs):
    """SIGKILL of rank 1 mid-run: the store opens with the snapshots both shards committed, equal to a full run's."""
    done = run_ddp(tmp_path / "kill", "kill", check=False)
    assert done.returncode != 0  # torchrun reports the killed rank
    with Store(tmp_path / "kill" / "store.h5") as st, Store(runs["shard"][0] / "store.h5") as full:
        counts = []
        for shard in st.shards:
            with Store(shard) as s:
                counts.append(s.n_snapshots)
        assert counts[1] >= 3 and st.n_snapshots == min(counts) < 7
        np.testing.assert_array_equal(st.steps, full.steps[: st.n_snapshots])
        for i in range(st.n_snapshots):
            np.testing.assert_array_equal(st.acts("heldout", "2", i, dtype=None),
                                          full.acts("heldout", "2", i, dtype=None))
