"""Durability (#23 item 7): the store is fsynced at every per-epoch checkpoint (Recorder.sync) and at close."""

import os
import threading
import time

import pytest
import torch
from torch import nn

from topotrace import train as train_mod
from topotrace.cli import main
from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import every
from topotrace.instrument.store import Store
from topotrace.instrument.store import writer as writer_mod

CLASSES = ["a", "b", "c"]


def _recorder(path, **kw):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 6, generator=g), torch.arange(12) % 3
    return Recorder(model, path, layers="0", probes=[ProbeSet("heldout", x, y)], class_names=CLASSES,
                    schedule=every(1), **kw)


@pytest.fixture
def events(monkeypatch):
    """Every fsync (with the inode of what it synced) and every committed append, in the order they happen."""
    log = []
    lock = threading.Lock()
    real_fsync, real_append = os.fsync, writer_mod.StoreWriter.append

    def fsync(fd):
        st = os.fstat(fd)
        with lock:
            log.append(("fsync", st.st_ino))
        return real_fsync(fd)

    def append(self, snap):
        time.sleep(0.02)  # a slow disk: the queue holds snapshots when sync is asked for
        n = real_append(self, snap)
        with lock:
            log.append(("append", snap.step))
        return n

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(writer_mod.StoreWriter, "append", append)
    return log


def test_sync_waits_for_the_queued_snapshots_then_fsyncs_the_store(tmp_path, events):
    path = tmp_path / "s.h5"
    rec = _recorder(path, queue_size=8)
    for s in range(4):
        rec.step(s)
    assert rec.sync() is True
    ino = os.stat(path).st_ino
    appends = [e for e in events if e[0] == "append"]
    assert appends == [("append", s) for s in range(4)]  # all four written before sync returned
    assert events[-1] == ("fsync", ino)  # ... and the store fsynced after the last of them
    with Store(path) as st:
        assert st.n_snapshots == 4
    before = len(events)
    rec.step(4)
    rec.close()
    assert events[before:] == [("append", 4), ("fsync", ino)]  # close syncs the store once more


def test_writer_fsyncs_at_sync_and_close_and_the_folder_at_create(tmp_path, events):
    path = tmp_path / "s.h5"
    rec = _recorder(path)
    folder = os.stat(tmp_path).st_ino
    assert ("fsync", folder) in events  # the new store's name is on the disk
    rec.step(0)
    n = sum(e == ("fsync", os.stat(path).st_ino) for e in events)
    assert rec.sync() and rec.sync()
    rec.close()
    assert sum(e == ("fsync", os.stat(path).st_ino) for e in events) == n + 3


def test_sync_after_a_failure_or_close_returns_false(tmp_path, monkeypatch):
    rec = _recorder(tmp_path / "s.h5")
    rec.step(0)
    assert rec.sync()  # step 0 is written before the disk fills

    def broken(self, snap):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer_mod.StoreWriter, "append", broken)
    with pytest.warns(RuntimeWarning, match="stopped"):
        rec.step(1)
        while rec.recording:
            time.sleep(0.001)
        assert rec.sync() is False
        rec.close()
    assert rec.sync() is False
    with Store(tmp_path / "s.h5") as st:
        assert st.n_snapshots == 1


@pytest.mark.slow
def test_train_syncs_the_store_before_every_checkpoint(tmp_path, monkeypatch, capsys):
    """topotrace train: a Recorder.sync right before each of the two per-epoch checkpoints."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text('[data]\nheldout_per_class = 2\ntrain_probe_per_class = 2\n[model]\n'
                                     'hidden = [12, 8]\n[train]\nepochs = 2\nbatch_size = 128\n[record]\n'
                                     'schedule = "every"\nevery = 4\n')
    order = []
    real_sync, real_save = Recorder.sync, train_mod.save_checkpoint

    def sync(self, timeout=None):
        ok = real_sync(self, timeout)
        with Store(self.path) as st:  # what the store holds when the sync returns
            order.append(("sync", ok, int(st.steps[-1])))
        return ok

    def save(path, state):
        order.append(("checkpoint", state["step"]))
        return real_save(path, state)

    monkeypatch.setattr(Recorder, "sync", sync)
    monkeypatch.setattr(train_mod, "save_checkpoint", save)
    assert main(["train", "--config", "c.toml"]) == 0
    # 11 steps per epoch, a snapshot every 4: the store reaches step 8 by the first checkpoint, 20 by the second
    assert order == [("sync", True, 8), ("checkpoint", 11), ("sync", True, 20), ("checkpoint", 22)]
