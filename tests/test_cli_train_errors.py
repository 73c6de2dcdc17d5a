"""Hostile input on the command line, continued: a failed start of `train`, --resume, warnings, checkpoints.

The same rules as tests/test_cli_errors.py (one line `topotrace: error: ...`, nothing left behind), for the
cases that train or fail mid-command.
"""

from pathlib import Path

import numpy as np
import pytest

from tests.test_cli_errors import TINY, _run_and_dir, assert_one_error_line, tree
from topotrace.cli import main
from topotrace.instrument.store import Store
from topotrace.train import load_checkpoint

# --- train: nothing is left by a failed start; --resume ----------------------------------------------------

@pytest.mark.slow
def test_failed_start_removes_what_it_created(tmp_path, monkeypatch, capsys):
    """An error or Ctrl-C after runs/NAME/ was made, before the first checkpoint: the folders are removed."""
    from topotrace import train as train_mod

    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(TINY)
    before = tree(tmp_path, dir_mtimes=False)

    class Broken:
        def __init__(self, *args, **kwargs):
            raise ValueError("The 'layers' parameter is broken (a planted failure).")

    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "Recorder", Broken)
        assert main(["train", "--config", "c.toml", "--epochs", "1", "--out-dir", "new/runs"]) == 2
    assert_one_error_line(capsys.readouterr().err, "planted failure")
    assert tree(tmp_path, dir_mtimes=False) == before  # no new/, no runs/, no .creating, no .tmp

    real = train_mod.train_run

    def ctrl_c_at_step_3(cfg, **kw):
        def progress(step, total):
            if step == 3:
                raise KeyboardInterrupt
        return real(cfg, **{**kw, "progress": progress})

    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "train_run", ctrl_c_at_step_3)
        assert main(["train", "--config", "c.toml", "--epochs", "1"]) == 130
    assert_one_error_line(capsys.readouterr().err, "interrupted")
    assert tree(tmp_path, dir_mtimes=False) == before
    assert main(["train", "--config", "c.toml", "--epochs", "1"]) == 0  # the corrected rerun is not refused


RESUME = ('[data]\nheldout_per_class = 3\ntrain_probe_per_class = 2\n[model]\nhidden = [16, 8]\ndropout = 0.2\n'
          '[train]\nepochs = 3\nbatch_size = 128\n[record]\nschedule = "every"\nevery = 4\n')


@pytest.mark.slow
def test_resume_after_a_kill_equals_the_uninterrupted_run(tmp_path, monkeypatch, capsys):
    """Killed in epoch 2 (after the epoch-1 checkpoint), then --resume: weights and store equal an uninterrupted run.

    1347 training samples in batches of 128: 11 steps per epoch, 33 in all, a snapshot every 4 steps. The kill
    comes at step 14: the killed run committed the snapshot at step 12, after the checkpoint at step 11;
    --resume cuts it and records it again from the restored state. Dropout makes the RNG state matter.
    """
    import torch

    from topotrace import train as train_mod

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.toml").write_text(RESUME)
    assert main(["train", "--config", "r.toml", "--out-dir", "a"]) == 0
    real = train_mod.train_run

    def killed_at_step_14(cfg, **kw):
        def progress(step, total):
            if step == 14:
                raise KeyboardInterrupt
        return real(cfg, **{**kw, "progress": progress})

    with monkeypatch.context() as mp:
        mp.setattr(train_mod, "train_run", killed_at_step_14)
        assert main(["train", "--config", "r.toml", "--out-dir", "b"]) == 130
    assert_one_error_line(capsys.readouterr().err, "--resume")
    with Store("b/digits/store.h5") as st:
        assert st.steps.tolist() == [0, 4, 8, 12]
    assert load_checkpoint(Path("b/digits/checkpoint.npz"))["step"] == 11

    before = tree(tmp_path)
    assert main(["train", "--config", "r.toml", "--out-dir", "b", "--resume", "--epochs", "4"]) == 2
    assert_one_error_line(capsys.readouterr().err, "train.epochs = 3 there vs 4 now")
    assert tree(tmp_path) == before

    assert main(["train", "--config", "r.toml", "--out-dir", str(tmp_path / "b"), "--resume"]) == 0  # named anew
    assert "resumed from step 11" in capsys.readouterr().out.replace("\n", " ")
    ca, cb = (load_checkpoint(Path(f"{d}/digits/checkpoint.npz")) for d in "ab")
    assert ca["step"] == cb["step"] == 33
    for key in ("model", "generator", "rng"):
        a, b = (ca[key], cb[key]) if key != "model" else (ca["model"], cb["model"])
        if isinstance(a, dict):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        else:
            assert torch.equal(a, b)
    for ka, kb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert torch.equal(ka["momentum_buffer"], kb["momentum_buffer"])
    with Store("a/digits/store.h5") as sa, Store("b/digits/store.h5") as sb:
        assert sa.steps.tolist() == sb.steps.tolist() == list(range(0, 33, 4))
        assert np.array_equal(sa.epochs, sb.epochs)
        for probe in sa.probes:
            assert np.array_equal(sa.logits(probe), sb.logits(probe))
            for s in range(sa.n_snapshots):
                for layer in sa.layers:
                    assert np.array_equal(sa.acts(probe, layer, s), sb.acts(probe, layer, s))


@pytest.mark.slow
def test_a_stopped_recording_is_a_warning_and_one_error_line_exit_1(tmp_path, monkeypatch, capsys):
    """The store's disk fills up while training: a warning line when it happens, an error line at the end, exit 1."""
    from topotrace.instrument.store import writer

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOPOTRACE_DEBUG", raising=False)
    (tmp_path / "c.toml").write_text(TINY)
    real, calls = writer.StoreWriter.append, []

    def append(self, snap):
        calls.append(snap.step)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, snap)

    monkeypatch.setattr(writer.StoreWriter, "append", append)
    assert main(["train", "--config", "c.toml", "--epochs", "1"]) == 1
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "Traceback" not in "".join(lines)
    assert lines[0].startswith("topotrace: warning: Recording to runs/digits/store.h5 failed at step")
    assert lines[1].startswith("topotrace: error: Recording stopped early") and "keeps 1 committed" in lines[1]


@pytest.mark.parametrize("debug", [False, True])
def test_warnings_are_one_topotrace_line(monkeypatch, capsys, debug):
    """A library's warning (numpy's All-NaN slice) and topotrace's own: one 'topotrace: warning:' line each."""
    import warnings

    import topotrace.cmd_info

    def run(args):
        np.nanmax(np.array([np.nan, np.nan]))  # RuntimeWarning: All-NaN slice encountered
        warnings.warn("The page is larger than\nthe budget \x1b[31m.", UserWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(topotrace.cmd_info, "run", run)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        shown_before = warnings.showwarning
        assert main(["info", "x"] + (["--debug"] if debug else [])) == 0
        assert warnings.showwarning is shown_before  # restored after the command
    err = capsys.readouterr().err
    if debug:  # Python's own form (here recorded by pytest), not the one line
        assert "topotrace: warning:" not in err
        return
    assert err.splitlines() == ["topotrace: warning: All-NaN slice encountered",
                                "topotrace: warning: The page is larger than the budget \\x1b[31m."]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["text", "random-bytes", "folder"])
def test_a_checkpoint_that_is_no_npz_is_one_line(tmp_path, monkeypatch, capsys, kind):
    """runs/digits/checkpoint.npz that is text, noise or a folder: --resume refuses it in one line naming the file
    and what to do (numpy's words about pickles never reach the user), nothing touched."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.toml").write_text(TINY)
    assert main(["train", "--config", "c.toml", "--epochs", "1"]) == 0
    ckpt = tmp_path / "runs" / "digits" / "checkpoint.npz"
    ckpt.unlink()
    if kind == "text":
        ckpt.write_text("my notes\n")
    elif kind == "random-bytes":
        ckpt.write_bytes(np.random.default_rng(0).bytes(200))
    else:
        ckpt.mkdir()
    capsys.readouterr()
    before = tree(tmp_path)
    assert main(["train", "--config", "c.toml", "--epochs", "1", "--resume"]) == 2
    line = assert_one_error_line(capsys.readouterr().err, "runs/digits/checkpoint.npz is not a topotrace checkpoint")
    assert "pickle" not in line and "Remove it to restart the run from step 0 with --resume" in line
    assert tree(tmp_path) == before


def test_an_uninstalled_layout_method_names_its_package(tmp_path, monkeypatch, capsys):
    """--layouts umap without umap-learn: one line naming the package and the pip command, before any work."""
    import topotrace.analysis.layouts as layouts

    monkeypatch.setattr(layouts, "HAS_UMAP", False)
    monkeypatch.chdir(tmp_path)
    _run_and_dir(tmp_path)
    before = tree(tmp_path)
    for command in ("analyze", "report"):
        assert main([command, "run", "--layouts", "pca,umap"]) == 2
        line = assert_one_error_line(capsys.readouterr().err, "needs the package umap-learn, which is not installed")
        assert "pip install umap-learn" in line and "pca, tsne, mds, som, force" in line
    assert tree(tmp_path) == before
