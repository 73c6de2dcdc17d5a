"""Two-rank ``torchrun`` jobs on this machine, for the DDP benchmark and the DDP tests (gloo on the CPU)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

TORCHRUN = Path(sys.executable).with_name("torchrun")
ROOT = Path(__file__).resolve().parent.parent  # the repository: the scripts import topotrace from here


def torchrun(script: Path, *args: str, timeout: float) -> subprocess.CompletedProcess:
    """Run ``script args`` on 2 ranks (one CPU thread each) and wait at most ``timeout`` s; output captured.

    Loopback only: the rendezvous listens on a free port of 127.0.0.1 and gloo talks over ``lo`` (no dependence
    on the machine's hostname resolving, which ``torchrun --standalone`` needs).
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "GLOO_SOCKET_IFNAME": "lo"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(TORCHRUN), "--nnodes=1", "--nproc_per_node=2", "--master-addr=127.0.0.1", f"--master-port={port}",
           str(script), *args]
    return subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, text=True)
