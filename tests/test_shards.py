"""Sharded stores without torchrun: shards written in one process, the combined file, and how Store reads them."""

import os

import h5py
import numpy as np
import pytest

from topotrace.instrument.shard import shard_bounds
from topotrace.instrument.store import (
    LayerSpec,
    ProbeRecord,
    ProbeSpec,
    Snapshot,
    Store,
    StoreError,
    StoreSpec,
    StoreWriter,
)
from topotrace.instrument.store.shards import shard_file, shard_spec, write_combined

N, C, D = 7, 3, 4


def full_spec():
    return StoreSpec(layers=(LayerSpec("fc", D, "flatten", (D,)),),
                     probes=(ProbeSpec("heldout", np.arange(10, 10 + N), np.arange(N) % C),),
                     class_names=("a", "b", "c"), measures=("max_prob",))


def full_snapshot(step):
    """The whole probe set's record at ``step`` (values that tell samples and steps apart)."""
    rng = np.random.default_rng(step)
    rec = ProbeRecord(acts={"fc": rng.normal(size=(N, D)).astype(np.float32)},
                      logits=rng.normal(size=(N, C)).astype(np.float32), pred=rng.integers(0, C, N),
                      correct=rng.random(N) > 0.5, loss=rng.random(N).astype(np.float32),
                      conf={"max_prob": rng.random(N).astype(np.float32)})
    return Snapshot(step=step, epoch=0, time=1e9 + step, probes={"heldout": rec})


def part(snap, lo, hi, step=None):
    r = snap.probes["heldout"]
    rec = ProbeRecord({"fc": r.acts["fc"][lo:hi]}, r.logits[lo:hi], r.pred[lo:hi], r.correct[lo:hi], r.loss[lo:hi],
                      {"max_prob": r.conf["max_prob"][lo:hi]})
    return Snapshot(step=snap.step if step is None else step, epoch=0, time=snap.time, probes={"heldout": rec})


def write_sharded(path, counts, bounds=((0, 3), (3, N)), steps=(0, 5, 9)):
    """Shards with ``counts[r]`` committed snapshots each, and the combined store; returns the full snapshots."""
    spec, snaps = full_spec(), [full_snapshot(s) for s in steps]
    shares = [{"heldout": b} for b in bounds]
    for r, share in enumerate(shares):
        with StoreWriter.create(shard_file(path, r, len(shares)), shard_spec(spec, share), {}) as w:
            for snap in snaps[: counts[r]]:
                w.append(part(snap, *share["heldout"]))
    write_combined(path, spec, {"run_name": "sharded"}, shares, len(shares))
    return snaps


def test_shard_bounds_are_contiguous_whole_batches_when_they_can_be():
    for n in (2, 7, 30, 100, 1000, 1001):
        for world in (1, 2, 3, 4):
            for bs in (1, 5, 64, 512):
                if n < world:
                    continue
                b = shard_bounds(n, world, bs)
                assert b[0][0] == 0 and b[-1][1] == n and all(x[1] == y[0] for x, y in zip(b, b[1:]))
                assert all(hi > lo for lo, hi in b)  # every rank has work
                if -(-n // bs) >= world:  # enough batches: each share starts at a batch boundary
                    assert all(lo % bs == 0 for lo, _ in b)
                    sizes = [-(-(hi - lo) // bs) for lo, hi in b]
                    assert max(sizes) - min(sizes) <= 1
    assert shard_bounds(30, 2, 5) == [(0, 15), (15, 30)]
    assert shard_bounds(21, 2, 5) == [(0, 10), (10, 21)]
    assert shard_bounds(30, 4, 512) == [(0, 7), (7, 15), (15, 22), (22, 30)]


def test_store_reads_the_shards_as_one_store(tmp_path):
    path = tmp_path / "store.h5"
    snaps = write_sharded(path, counts=(3, 3))
    with Store(path) as st:
        assert st.shards == (shard_file(path, 0, 2), shard_file(path, 1, 2))
        assert st.shards[1].name == "store.shard-01-of-02.h5"
        assert st.n_snapshots == 3 and st.meta["run_name"] == "sharded"
        np.testing.assert_array_equal(st.steps, [0, 5, 9])
        np.testing.assert_array_equal(st.labels("heldout"), np.arange(N) % C)
        for i, snap in enumerate(snaps):
            rec = snap.probes["heldout"]
            np.testing.assert_array_equal(st.acts("heldout", "fc", i, dtype=None), rec.acts["fc"].astype(np.float16))
            np.testing.assert_array_equal(st.logits("heldout")[i], rec.logits)
            np.testing.assert_array_equal(st.pred("heldout")[i], rec.pred)
            np.testing.assert_array_equal(st.conf("heldout", "max_prob")[i], rec.conf["max_prob"])
        assert [i for i, _ in st.iter_acts("heldout", "fc")] == [0, 1, 2]
        np.testing.assert_array_equal(st.nonfinite("heldout")["fc"], [0, 0, 0])
        assert st.nbytes() == 3 * N * D * 2
    cwd = os.getcwd()
    os.chdir("/")  # h5py follows the virtual datasets to the shards next to the store
    try:
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["probes/heldout/logits"][2], snaps[2].probes["heldout"].logits)
            np.testing.assert_array_equal(f["step"][()], [0, 5, 9])
            np.testing.assert_array_equal(f["committed"][()], [3, 3])
    finally:
        os.chdir(cwd)


def test_the_store_sees_what_every_shard_committed(tmp_path):
    """A shard behind the others (its rank was killed) bounds what readers see; h5py sees fill values there."""
    path = tmp_path / "store.h5"
    snaps = write_sharded(path, counts=(3, 1))
    with Store(path) as st:
        assert st.n_snapshots == 1
        np.testing.assert_array_equal(st.steps, [0])
        np.testing.assert_array_equal(st.loss("heldout"), [snaps[0].probes["heldout"].loss])
    with h5py.File(path, "r") as f:
        assert f["probes/heldout/loss"].shape == (3, N)  # the longest shard's extent
        assert np.isnan(f["probes/heldout/loss"][2, 3:]).all()


def test_shards_with_other_steps_are_refused(tmp_path):
    path = tmp_path / "store.h5"
    spec = full_spec()
    shares = [{"heldout": (0, 3)}, {"heldout": (3, N)}]
    for r, steps in enumerate(((0, 5), (0, 6))):
        with StoreWriter.create(shard_file(path, r, 2), shard_spec(spec, shares[r]), {}) as w:
            for s in steps:
                w.append(part(full_snapshot(s), *shares[r]["heldout"]))
    write_combined(path, spec, {}, shares, 2)
    with pytest.raises(StoreError, match=r"shards hold different steps \(snapshot 1: step 5 in "
                                         r"store.shard-00-of-02.h5, step 6 in store.shard-01-of-02.h5\)"):
        Store(path)


def test_missing_or_mismatched_shard_is_one_clear_error(tmp_path):
    path = tmp_path / "store.h5"
    write_sharded(path, counts=(2, 2))
    os.replace(shard_file(path, 1, 2), tmp_path / "elsewhere.h5")
    with pytest.raises(StoreError, match=r"sharded across 2 ranks, but its shard store.shard-01-of-02.h5 is "
                                         r"missing\. Keep the shard files next to the store"):
        Store(path)
    os.replace(tmp_path / "elsewhere.h5", shard_file(path, 1, 2))
    write_combined(path, full_spec(), {}, [{"heldout": (0, 4)}, {"heldout": (4, N)}], 2)  # not what the shards hold
    with pytest.raises(StoreError, match="its shard store.shard-00-of-02.h5 does not hold the layers, classes, "
                                         "measures and probe samples"):
        Store(path)
    with pytest.raises(ValueError, match="must cover its 7 samples in order"):
        write_combined(path, full_spec(), {}, [{"heldout": (0, 3)}, {"heldout": (4, N)}], 2)


def test_archive_and_site_take_the_shards_along(tmp_path):
    from topotrace.archive import _copy_run_files, describe_file
    from topotrace.site import read_run

    run = tmp_path / "runs" / "ddp"
    run.mkdir(parents=True)
    write_sharded(run / "store.h5", counts=(3, 3))
    _copy_run_files(run, tmp_path / "bundle")
    assert sorted(p.name for p in (tmp_path / "bundle").iterdir()) == [
        "store.h5", "store.shard-00-of-02.h5", "store.shard-01-of-02.h5"]
    with Store(tmp_path / "bundle" / "store.h5") as st:
        assert st.n_snapshots == 3
    assert describe_file("store.shard-01-of-02.h5").startswith("one DDP rank's shard of the store")
    row = read_run(run, tmp_path / "runs")
    assert row.status == "done" and row.snapshots == 3
    assert row.store_bytes == sum(p.stat().st_size for p in run.glob("store*.h5"))


def test_info_names_the_shards_and_counts_their_bytes(tmp_path, capsys):
    from topotrace.cli import main

    write_sharded(tmp_path / "store.h5", counts=(3, 2))
    assert main(["info", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "2 shards: store.shard-00-of-02.h5 .. store.shard-01-of-02.h5" in out
    assert "snapshots: 2 steps 0 .. 5" in out
