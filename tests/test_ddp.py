"""Recording under torchrun DDP: rank 0 records through the inner module; training is unchanged."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from topotrace.instrument.store import Store

CHILD = Path(__file__).with_name("_ddp_child.py")


def run_ddp(out, record):
    out.mkdir()
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not found next to the Python interpreter")
    # Loopback only: no dependence on the machine's hostname resolving (torchrun --standalone needs it).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(CHILD.parent.parent), "GLOO_SOCKET_IFNAME": "lo"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(torchrun), "--nnodes=1", "--nproc_per_node=2", "--master-addr=127.0.0.1", f"--master-port={port}",
           str(CHILD), str(out), str(int(record))]
    done = subprocess.run(cmd, env=env, timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, f"torchrun exited {done.returncode}:\n{done.stderr[-4000:]}"
    return [dict(np.load(out / f"params_rank{r}.npz", allow_pickle=False)) for r in (0, 1)]


def test_ddp_rank0_records_and_training_is_unchanged(tmp_path):
    """Two gloo ranks: no deadlock, the store holds every scheduled snapshot, weights match an unrecorded run."""
    plain = run_ddp(tmp_path / "plain", record=False)
    recorded = run_ddp(tmp_path / "recorded", record=True)
    for name in plain[0]:
        if name.endswith(("weight", "bias")):  # parameters are synchronised; BatchNorm statistics are per rank
            np.testing.assert_array_equal(plain[0][name], plain[1][name])
        np.testing.assert_array_equal(recorded[0][name], plain[0][name])  # recording changed nothing
        np.testing.assert_array_equal(recorded[1][name], plain[1][name])
    with Store(tmp_path / "recorded" / "store.h5") as st:
        np.testing.assert_array_equal(st.steps, np.arange(0, 13, 2))
        assert list(st.layers) == ["1", "2"]
        assert np.isfinite(st.acts("heldout", "2", -1)).all()
