"""A recording that fails (disk full) never loses committed snapshots, never ends looking like success, and
``--resume`` either completes the missing snapshots or refuses in one line.

The disk fills in two places: the store's writer (``StoreWriter.append`` raising ENOSPC after k snapshots) and the
per-epoch checkpoint (``save_checkpoint`` raising ENOSPC). Every case runs ``topotrace train`` in-process on a
tiny digits run: 1347 training images in batches of 128 = 11 steps per epoch, 2 epochs = 22 steps, a snapshot
every 4 steps (0, 4, 8, 12, 16, 20: six snapshots), checkpoints at steps 11 and 22.
"""

import errno
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from topotrace import train as train_mod
from topotrace.cli import main
from topotrace.instrument.store import Store
from topotrace.instrument.store import writer as writer_mod
from topotrace.train import load_checkpoint

CONFIG = ('[data]\nheldout_per_class = 2\ntrain_probe_per_class = 2\n[model]\nhidden = [12, 8]\n'
          '[train]\nepochs = 2\nbatch_size = 128\n[record]\nschedule = "every"\nevery = 4\n')
ALL_STEPS = [0, 4, 8, 12, 16, 20]


def error_lines(err: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.startswith("topotrace: error: ")]
    assert "Traceback" not in err
    return lines


def fill_disk_after(monkeypatch, k: int) -> list[int]:
    """The store's writer commits ``k`` snapshots, then every append fails as on a full disk."""
    real, calls = writer_mod.StoreWriter.append, []

    def append(self, snap):
        calls.append(snap.step)
        if len(calls) > k:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, snap)

    monkeypatch.setattr(writer_mod.StoreWriter, "append", append)
    return calls


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs recorded the same snapshots (steps, logits, activations) and end with the same weights."""
    with Store(a / "store.h5") as sa, Store(b / "store.h5") as sb:
        assert sa.steps.tolist() == sb.steps.tolist() == ALL_STEPS
        for probe in sa.probes:
            assert np.array_equal(sa.logits(probe), sb.logits(probe))
            for s in range(sa.n_snapshots):
                for layer in sa.layers:
                    assert np.array_equal(sa.acts(probe, layer, s), sb.acts(probe, layer, s))
    ca, cb = load_checkpoint(a / "checkpoint.npz"), load_checkpoint(b / "checkpoint.npz")
    assert ca["step"] == cb["step"] == 22
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])


def reference_run(tmp_path: Path) -> Path:
    assert main(["train", "--config", "c.toml", "--out-dir", "ref"]) == 0
    return tmp_path / "ref" / "digits"


@pytest.mark.slow
def test_disk_full_before_the_first_checkpoint_keeps_the_store_and_resume_completes_it(tmp_path, monkeypatch, capsys):
    """Two snapshots committed, the third fails in epoch 1: the run folder and its 2 snapshots stay, exit 1."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(CONFIG)
    with monkeypatch.context() as mp:
        calls = fill_disk_after(mp, 2)
        assert main(["train", "--config", "c.toml"]) == 1
    assert calls == [0, 4, 8]  # training stopped: no snapshot was taken after the failure was seen
    run = tmp_path / "runs" / "digits"
    with Store(run / "store.h5") as st:
        assert st.steps.tolist() == [0, 4]
    assert not (run / "checkpoint.npz").exists()
    out = capsys.readouterr()
    (line,) = error_lines(out.err)
    assert "Recording stopped early (OSError: [Errno 28] No space left on device)" in line
    assert "keeps 2 committed snapshots of the 6 due" in line and "--resume" in line and "from step 0" in line
    assert "accuracy" not in out.out  # no table: an early snapshot is not the run's result

    assert main(["train", "--config", "c.toml", "--resume"]) == 0
    capsys.readouterr()
    assert_same_run(reference_run(tmp_path), run)


@pytest.mark.slow
def test_a_failing_checkpoint_write_keeps_the_committed_snapshots(tmp_path, monkeypatch, capsys):
    """The disk fills while the first checkpoint is written (the store still writes): nothing is deleted."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(CONFIG)

    def full(path, state):
        raise OSError(errno.ENOSPC, "No space left on device", str(path) + ".tmp")

    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "save_checkpoint", full)
        assert main(["train", "--config", "c.toml"]) == 1
    run = tmp_path / "runs" / "digits"
    with Store(run / "store.h5") as st:
        assert st.steps.tolist() == [0, 4, 8]  # every snapshot of epoch 1 is committed before the checkpoint
    (line,) = error_lines(capsys.readouterr().err)
    assert "stopped at step 11" in line and "No space left on device" in line
    assert "keeps its 3 committed snapshots" in line and "--resume" in line and "from step 0" in line

    assert main(["train", "--config", "c.toml", "--resume"]) == 0
    capsys.readouterr()
    assert_same_run(reference_run(tmp_path), run)


@pytest.mark.slow
def test_disk_full_after_a_checkpoint_stops_training_and_resume_records_the_rest(tmp_path, monkeypatch, capsys):
    """The fifth snapshot (step 16, epoch 2) fails: no checkpoint after it; --resume from step 11 completes the run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(CONFIG)
    with monkeypatch.context() as mp:
        fill_disk_after(mp, 4)
        assert main(["train", "--config", "c.toml"]) == 1
    run = tmp_path / "runs" / "digits"
    assert load_checkpoint(run / "checkpoint.npz")["step"] == 11  # not 22: training did not go on unrecorded
    (line,) = error_lines(capsys.readouterr().err)
    assert "keeps 4 committed snapshots of the 6 due" in line and "from its checkpoint at step 11" in line

    assert main(["train", "--config", "c.toml", "--resume"]) == 0
    assert "resumed from step 11" in capsys.readouterr().out.replace("\n", " ")
    assert_same_run(reference_run(tmp_path), run)


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_ahead_of_the_store(tmp_path, monkeypatch, capsys):
    """A checkpoint at step 22 beside a store of 2 snapshots (an older topotrace kept checkpointing after the
    recording stopped): --resume refuses in one line, exit 2, and changes nothing; it never exits 0 with 2 of 6."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(CONFIG)
    ref = reference_run(tmp_path)
    with monkeypatch.context() as mp:
        fill_disk_after(mp, 2)
        assert main(["train", "--config", "c.toml"]) == 1
    run = tmp_path / "runs" / "digits"
    shutil.copy(ref / "checkpoint.npz", run / "checkpoint.npz")
    capsys.readouterr()
    before = {p: p.read_bytes() for p in run.iterdir()}
    assert main(["train", "--config", "c.toml", "--resume"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert "holds 2 of the 6 snapshots due up to the checkpoint at step 22 (the first missing at step 8)" in line
    assert "checkpoint.npz" in line
    assert {p: p.read_bytes() for p in run.iterdir()} == before

    (run / "checkpoint.npz").unlink()  # as the line says: record the run again from step 0
    assert main(["train", "--config", "c.toml", "--resume"]) == 0
    assert_same_run(ref, run)


@pytest.mark.slow
def test_the_python_api_returns_a_stopped_run(tmp_path, monkeypatch):
    """train_run: the summary says the recording stopped (error, steps short of the total, snapshots short)."""
    from topotrace.config import load_config

    (tmp_path / "c.toml").write_text(CONFIG)
    cfg = load_config(tmp_path / "c.toml", {"run": {"out_dir": str(tmp_path / "runs")}})
    fill_disk_after(monkeypatch, 1)
    with pytest.warns(RuntimeWarning, match="stopped: OSError"):
        summary = train_mod.train_run(cfg)
    assert isinstance(summary.error, OSError) and summary.error.errno == errno.ENOSPC
    assert summary.n_snapshots == 1 and summary.expected_snapshots == 6 and summary.total_steps == 22
    # the writer fails at step 4 on its own thread: training stops when it learns of it, at the latest at the
    # epoch's end (step 11), where it waits for every snapshot before a checkpoint, and writes none
    assert 4 <= summary.steps <= 11 and summary.checkpoint_step is None
    assert (tmp_path / "runs" / "digits" / "store.h5").is_file()
