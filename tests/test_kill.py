"""SIGKILL of a process recording with the Recorder: the store opens with every committed snapshot, reads
while the writer appends, and resumes."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from topotrace.instrument.store import Store

sys.path.insert(0, str(Path(__file__).parent))
import _record_child as child  # noqa: E402

pytestmark = pytest.mark.subprocess  # tests/conftest.py; make test-fast leaves these out

CHILD = Path(__file__).parent / "_record_child.py"
ROOT = Path(__file__).parent.parent


def _open(path):
    """A reader on the live store, or None while the file does not exist or is being created."""
    try:
        return Store(path)
    except (OSError, FileNotFoundError):
        return None


def _run_and_kill(path, kill_at=None, delay=None):
    """Start the child, wait until ``kill_at`` snapshots are committed (or ``delay`` s after the store appears),
    SIGKILL it. Returns the committed count the live reader saw last."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, str(CHILD), str(path)], env=env)
    seen = 0
    try:
        deadline = time.monotonic() + 90
        st = None
        while st is None:
            assert proc.poll() is None, "the recording process died"
            assert time.monotonic() < deadline
            st = _open(path)
            time.sleep(0.005)
        with st:  # a reader opened while the writer appends
            t0 = time.monotonic()
            while True:
                assert proc.poll() is None, "the recording process died"
                assert time.monotonic() < deadline
                seen = st.refresh()
                if (kill_at is not None and seen >= kill_at) or (delay is not None and time.monotonic() - t0 >= delay):
                    break
                time.sleep(0.002)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return seen


def _check_committed(st, seen):
    """Committed rows are complete and self-consistent: finite, steps 0..n-1, pred/correct/loss match logits."""
    n = st.n_snapshots
    assert n >= seen
    np.testing.assert_array_equal(st.steps, np.arange(n))
    labels = st.labels("heldout")
    logits = st.logits("heldout")
    assert logits.shape == (n, 48, 3) and np.isfinite(logits).all()
    np.testing.assert_array_equal(st.pred("heldout"), logits.argmax(axis=2))
    np.testing.assert_array_equal(st.correct("heldout"), logits.argmax(axis=2) == labels)
    z = logits.astype(np.float64)
    ref_loss = np.log(np.exp(z).sum(axis=2)) - np.take_along_axis(z, labels[None, :, None], 2)[..., 0]
    np.testing.assert_allclose(st.loss("heldout"), ref_loss, rtol=1e-4, atol=1e-5)
    for m in st.measures:
        assert np.isfinite(st.conf("heldout", m)).all()
    for layer in st.layers:
        for _, a in st.iter_acts("heldout", layer):
            assert np.isfinite(a).all()
    return n


@pytest.mark.parametrize(("kill_at", "delay"), [(2, None), (5, None), (9, None),
                                                (None, float(np.random.default_rng(7).uniform(0.0, 0.3)))])
def test_sigkill_then_open_and_resume(tmp_path, kill_at, delay):
    path = tmp_path / "store.h5"
    seen = _run_and_kill(path, kill_at, delay)
    with Store(path) as st:
        n = _check_committed(st, seen)
        before = st.logits("heldout")
        first_acts = st.acts("heldout", "2", 0) if n else None
    # resume the killed store (the crashed writer's flag is cleared) and append more steps
    model, probe, data = child.build()
    rec = child.recorder(model, probe, path, resume=True)
    with rec:
        assert rec.n_snapshots == n and rec.last_step == (n - 1 if n else None)
        start = 0 if rec.last_step is None else rec.last_step + 1
        child.train(model, rec, data, start, start + 3)
    with Store(path) as st:
        assert _check_committed(st, n) == n + 3
        np.testing.assert_array_equal(st.logits("heldout")[:n], before)
        if n:
            np.testing.assert_array_equal(st.acts("heldout", "2", 0), first_acts)
