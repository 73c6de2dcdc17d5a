"""Recording mistakes the README warns about: no step 0, a schedule whose last step is never reached, a store
recorded twice (resume or overwrite), a step that is not an int."""

import fcntl
import os
import warnings

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from topotrace.instrument.recorder import ProbeSet, Recorder
from topotrace.instrument.schedules import at_steps, every, log_spaced, per_epoch
from topotrace.instrument.store import Store, check_replaceable, is_store

CLASSES = ["a", "b", "c"]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))


def _recorder(path, schedule, model=None, **kw):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, 6, generator=g), torch.arange(12) % 3
    kw.setdefault("layers", "0")
    return Recorder(model or _model(), path, probes=[ProbeSet("heldout", x, y)], class_names=CLASSES,
                    schedule=schedule, **kw)


def _run(rec, steps):
    for s in steps:
        rec.step(s)


def _closed_warnings(rec):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec.close()
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_schedules_say_their_last_step():
    assert log_spaced(100, 10).last_step == 100
    assert at_steps([3, 0, 17]).last_step == 17
    assert every(5).last_step is None and per_epoch(10).last_step is None


def test_a_complete_run_closes_without_warning(tmp_path):
    rec = _recorder(tmp_path / "s.h5", log_spaced(20, 6))
    _run(rec, range(21))
    assert _closed_warnings(rec) == []
    with Store(tmp_path / "s.h5") as st:
        assert st.steps[0] == 0 and st.steps[-1] == 20


def test_run_without_step_0_warns_at_close(tmp_path):
    rec = _recorder(tmp_path / "s.h5", every(5))
    _run(rec, range(1, 21))  # the loop forgot rec.step(0)
    (msg,) = _closed_warnings(rec)
    assert "without a snapshot at step 0" in msg and "first is at step 5" in msg and "rec.step(0)" in msg
    assert "\n" not in msg


def test_schedule_whose_last_step_is_never_reached_warns_at_close(tmp_path):
    schedule = log_spaced(100, 8)  # made for 100 steps, the loop runs 30
    rec = _recorder(tmp_path / "s.h5", schedule)
    _run(rec, range(31))
    (msg,) = _closed_warnings(rec)
    recorded = max(s for s in range(31) if schedule(s))  # the last scheduled step the loop reached, by hand
    assert f"at step {recorded}, before the last step 100" in msg and "log_spaced(100, 8)" in msg


def test_empty_run_warns_once(tmp_path):
    rec = _recorder(tmp_path / "s.h5", log_spaced(10, 4))
    (msg,) = _closed_warnings(rec)
    assert "without any snapshot" in msg


def test_a_plain_callable_is_checked_for_step_0_only(tmp_path):
    rec = _recorder(tmp_path / "s.h5", lambda s: s % 4 == 0)
    _run(rec, range(0, 9))  # no last step known: stopping anywhere is fine
    assert _closed_warnings(rec) == []
    rec = _recorder(tmp_path / "t.h5", lambda s: s >= 3)  # the schedule never wants step 0: no warning
    _run(rec, range(0, 5))
    assert _closed_warnings(rec) == []


def test_with_block_left_by_an_exception_does_not_add_warnings(tmp_path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KeyboardInterrupt), _recorder(tmp_path / "s.h5", log_spaced(50, 5)) as rec:
            _run(rec, range(3))
            raise KeyboardInterrupt
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []


def test_resumed_store_with_step_0_does_not_warn(tmp_path):
    path = tmp_path / "s.h5"
    rec = _recorder(path, log_spaced(20, 6))
    _run(rec, range(11))
    rec._close(check=False)
    rec = _recorder(path, log_spaced(20, 6), resume=True)
    _run(rec, range(rec.last_step + 1, 21))
    assert _closed_warnings(rec) == []


def test_non_integer_step_is_refused_in_one_line(tmp_path):
    rec = _recorder(tmp_path / "s.h5", every(1))
    rec.step(0)
    for bad in (1.5, 2.0, "3", None, True):
        with pytest.raises(TypeError, match=r"'step' must be an int") as err:
            rec.step(bad)
        assert repr(bad) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(TypeError, match="'step' must be an int"):
        rec.snapshot(2.5)
    with pytest.raises(TypeError, match="'epoch' must be an int"):
        rec.step(1, epoch=0.5)
    rec.step(np.int64(1))  # numpy integers are ints
    rec.close()
    with Store(tmp_path / "s.h5") as st:
        np.testing.assert_array_equal(st.steps, [0, 1])


def test_store_that_exists_names_resume_and_overwrite(tmp_path):
    path = tmp_path / "s.h5"
    with _recorder(path, every(1)) as rec:
        rec.step(0)
    with pytest.raises(FileExistsError) as err:
        _recorder(path, every(1))
    text = str(err.value)
    assert "resume=True" in text and "overwrite=True" in text and str(path) in text and "\n" not in text


def test_overwrite_replaces_a_topotrace_store(tmp_path):
    path = tmp_path / "s.h5"
    with _recorder(path, every(1)) as rec:
        _run(rec, range(5))
    model = _model()
    with torch.no_grad():
        model[0].weight.mul_(2.0)  # another model: the new store's activations differ
    with _recorder(path, every(1), model=model, overwrite=True) as rec:
        _run(rec, range(3))
    with Store(path) as st:
        np.testing.assert_array_equal(st.steps, [0, 1, 2])
        x = torch.randn(12, 6, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            expected = model[0](x).numpy()
        np.testing.assert_allclose(st.acts("heldout", "0", 0), expected, rtol=2e-3, atol=2e-3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.h5"]  # no temporary file left


@pytest.mark.parametrize("kind", ["text", "h5", "folder", "link"])
def test_overwrite_refuses_what_topotrace_did_not_write(tmp_path, kind):
    path = tmp_path / "s.h5"
    if kind == "text":
        path.write_text("my notes")
    elif kind == "h5":
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(3)
    elif kind == "folder":
        path.mkdir()
    else:
        (tmp_path / "target.h5").write_text("x")
        path.symlink_to(tmp_path / "target.h5")
    before = path.read_bytes() if kind in ("text", "h5") else None
    with pytest.raises(FileExistsError, match="overwrite=True only replaces") as err:
        _recorder(path, every(1), overwrite=True)
    assert "\n" not in str(err.value)
    if before is not None:
        assert path.read_bytes() == before
    assert not is_store(path)


def test_overwrite_refuses_a_store_being_recorded(tmp_path):
    path = tmp_path / "s.h5"
    with _recorder(path, every(1)) as rec:
        rec.step(0)
    assert is_store(path)
    with open(path, "rb") as fh:  # what a live writer holds while it records
        fcntl.flock(fh.fileno(), fcntl.LOCK_SH)
        with pytest.raises(BlockingIOError, match="being recorded by a running process"):
            _recorder(path, every(1), overwrite=True)
        with pytest.raises(BlockingIOError):
            check_replaceable(path)
    with Store(path) as st:
        assert st.n_snapshots == 1


def test_fifo_is_refused_without_opening_it(tmp_path):
    path = tmp_path / "s.h5"
    os.mkfifo(path)
    assert not is_store(path)  # would block forever if it opened the FIFO for reading
    with pytest.raises(FileExistsError, match="not a regular file"):
        check_replaceable(path)


def test_resume_and_overwrite_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="choose one"):
        _recorder(tmp_path / "s.h5", every(1), resume=True, overwrite=True)


@pytest.mark.parametrize("layers", [[1], 1, [None], ["0", 2.5]])
def test_non_string_layer_names_are_refused_in_one_line(tmp_path, layers):
    with pytest.raises(TypeError) as err:
        _recorder(tmp_path / "s.h5", every(1), layers=layers)
    text = str(err.value)
    assert "'layers' parameter must be a module name, a glob, a list of them" in text and repr(layers) in text
    assert "\n" not in text and not (tmp_path / "s.h5").exists()
