"""The analysis on a Dask LocalCluster (2 worker processes on 127.0.0.1) equals the in-process analysis."""

import json
import os

import numpy as np
import pytest

from topotrace.analysis.distributed import dask_cluster
from topotrace.analysis.pipeline import analyze
from topotrace.instrument.synthetic import write_synthetic_store

from .reference import hdf5_contents

# tests/conftest.py: make test-fast leaves these out; one xdist work unit, so Dask is imported on one worker only
pytestmark = [pytest.mark.slow, pytest.mark.subprocess, pytest.mark.xdist_group("dask")]

FAST = ["pca", "force"]
VOLATILE = {"params"}  # params holds the wall-clock seconds (compared below without them)
SECONDS = "seconds"  # layout timing attribute
TRIM = "MALLOC_TRIM_THRESHOLD_"
OWN_TRIM = os.environ.get(TRIM)  # this process's value before any cluster was made (None unless set by the user)


def assert_same_analysis(a, b):
    """Every dataset within 1e-6 (NaN where NaN), integer datasets exact; attributes equal but timings."""
    da, aa = hdf5_contents(a)
    db, ab = hdf5_contents(b)
    assert sorted(da) == sorted(db)
    assert any(k.endswith("/naps/class/counts") for k in da) and any("/corr/" in k for k in da)
    for name in da:
        x, y = da[name], db[name]
        assert x.shape == y.shape and x.dtype == y.dtype, name
        if np.issubdtype(x.dtype, np.integer) or x.dtype == bool:
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, equal_nan=True, err_msg=name)
    assert sorted(aa) == sorted(ab)
    for key in aa:
        if key[1] == SECONDS or (key[0] == "/" and key[1] in VOLATILE):
            continue
        x, y = aa[key], ab[key]
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=0, atol=1e-6, equal_nan=True, err_msg=str(key))
        else:
            assert np.array_equal(x, y) if isinstance(x, np.ndarray) else x == y, key
    pa = json.loads(aa[("/", "params")])
    pb = json.loads(ab[("/", "params")])
    pa.pop("seconds"), pb.pop("seconds")
    assert pa == pb


@pytest.fixture(scope="module", autouse=True)
def _distributed():
    """dask.distributed, imported when the first test runs (collecting the suite does not import it)."""
    pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "store.h5"
    write_synthetic_store(path, n_snapshots=6, layer_sizes=(24, 9), n_classes=3, per_class=12, seed=3)
    return path


@pytest.fixture(scope="module")
def cluster():
    with dask_cluster(workers=2) as c:
        yield c


def test_local_cluster_equals_in_process(store, cluster, tmp_path):
    """Two worker processes give every dataset of analysis.h5 within 1e-6 of the thread pool's, counts exact."""
    assert cluster.client.scheduler_info()["address"].startswith("tcp://127.0.0.1:")
    ref = analyze(store, tmp_path / "threads.h5", layout_methods=FAST)
    res = analyze(store, tmp_path / "dask.h5", layout_methods=FAST, cluster=cluster)
    assert res.n_snapshots == ref.n_snapshots == 6
    assert_same_analysis(tmp_path / "threads.h5", tmp_path / "dask.h5")


def test_local_workers_keep_glibc_malloc_defaults(cluster):
    """The local cluster's workers run without Dask's MALLOC_TRIM_THRESHOLD_ (it doubled the trend bootstrap's CPU
    time: every large temporary became a fresh mmap), and the calling process's environment does not get it."""
    assert set(cluster.client.run(os.environ.get, TRIM).values()) == {OWN_TRIM}
    assert os.environ.get(TRIM) == OWN_TRIM


def test_study_seeds_analysed_on_one_cluster(cluster, tmp_path):
    """A study's seeds are analysed together on the cluster, each equal to its in-process analysis, in seed order."""
    from topotrace.studies import Study, study_results

    n_s = 3
    study = Study(tmp_path / "st", "st", [0, 1], {})
    for seed in study.seeds:
        write_synthetic_store(study.seed_dir(seed) / "store.h5", n_snapshots=n_s, layer_sizes=(6,), n_classes=3,
                              per_class=8, seed=seed, meta={"total_steps": int(10 * 1.07 ** (n_s - 1)) + n_s - 1})
    results = study_results(study, cluster)
    assert [r.store_path for r in results] == [str(study.seed_dir(s) / "store.h5") for s in study.seeds]
    for seed in study.seeds:
        analyze(study.seed_dir(seed), tmp_path / f"ref-{seed}.h5")
        assert_same_analysis(tmp_path / f"ref-{seed}.h5", study.seed_dir(seed) / "analysis.h5")


def test_cli_scheduler_dask(store, tmp_path, capsys):
    """`topotrace analyze RUN --scheduler dask --workers 2` writes the same analysis.h5 as the thread pool."""
    from topotrace.cli import main

    ref = tmp_path / "threads.h5"
    analyze(store, ref, layout_methods=FAST)
    assert main(["analyze", str(store), "--scheduler", "dask", "--workers", "2", "--layouts", ",".join(FAST),
                 "--refresh"]) == 0
    assert "cache:" in capsys.readouterr().out
    assert_same_analysis(ref, store.parent / "analysis.h5")


def test_unreachable_address_is_one_clear_error():
    """An address where no scheduler answers fails within seconds with a ValueError naming it."""
    with pytest.raises(ValueError, match="Could not reach a Dask scheduler at 'tcp://127.0.0.1:9'"):
        with dask_cluster(address="tcp://127.0.0.1:9"):
            pass


def test_missing_dask_is_one_clear_error(monkeypatch):
    """Without dask.distributed installed, the dask scheduler is refused with the install line."""
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ValueError, match=r"pip install 'topotrace\[dask\]'"):
        with dask_cluster(workers=1):
            pass


PREFIX = "compute_snapshot"  # the scheduler's task prefix of the snapshot tasks


def _hold_tasks(gate: str) -> int:
    """On a worker: make every snapshot task but snapshot 0 mark that it started (a file ``PID-S`` in ``gate``) and
    wait (at most 30 s) for a file ``release`` there before computing; returns the worker's pid.

    Installed with ``client.run``: a task names its function by reference (module and name), so the worker resolves
    it to this wrapper. A restarted worker process starts without it and computes at once.
    """
    import os
    import time
    from pathlib import Path

    from topotrace.analysis import distributed

    real = distributed.compute_snapshot

    def held(task, s):
        if s > 0:
            (Path(gate) / f"{os.getpid()}-{s}").touch()
            deadline = time.monotonic() + 30.0
            while not (Path(gate) / "release").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        return real(task, s)

    distributed.compute_snapshot = held
    return os.getpid()


def _wait_for(cond, timeout, what):
    """Poll ``cond()`` every 10 ms until it is true; fail naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.01)


def test_worker_killed_mid_analysis_is_retried(store, tmp_path):
    """A worker killed (SIGKILL) while it runs a snapshot task is restarted by its nanny, the task is rerun
    elsewhere and analysis.h5 still equals the in-process analysis."""
    import os
    import signal
    import threading

    import psutil

    ref = tmp_path / "threads.h5"
    analyze(store, ref, layout_methods=FAST)
    gate = tmp_path / "gate"
    gate.mkdir()
    killed = {}

    with dask_cluster(workers=2) as cluster:
        client = cluster.client
        before = set(client.run(_hold_tasks, str(gate)).values())
        assert len(before) == 2

        class KillAfterFirst:
            """Yields the cluster's results; after snapshot 0 of the first layer, SIGKILLs a worker that is inside
            a held task, waits until it is dead, then releases the held tasks."""

            def map_snapshots(self, task, n_s):
                for s, row in enumerate(cluster.map_snapshots(task, n_s)):
                    if not killed:
                        assert s == 0
                        # both workers inside a held task: 1 result in, n_s - 1 to go, 2 of them in flight
                        _wait_for(lambda: len({f.name.split("-")[0] for f in gate.iterdir()}) == 2, 30,
                                  "both workers to start a held task")
                        victim = min(gate.iterdir(), key=lambda f: int(f.name.split("-")[1]))
                        pid, held = map(int, victim.name.split("-"))
                        assert pid in before
                        killed.update(pid=pid, snapshot=held, done=s + 1, of=n_s)
                        os.kill(pid, signal.SIGKILL)

                        def dead():
                            try:
                                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
                            except psutil.NoSuchProcess:
                                return True

                        _wait_for(dead, 10, f"worker {pid} to die")
                        (gate / "release").touch()
                    yield row

        out = {}

        def run():
            try:
                out["result"] = analyze(store, tmp_path / "dask.h5", layout_methods=FAST, cluster=KillAfterFirst())
            except BaseException as err:  # noqa: BLE001 - re-raised in the test's thread
                out["error"] = err

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout=90)
        if worker.is_alive():
            client.close()  # makes the pending result() raise, so the thread ends with the cluster
            pytest.fail("the analysis did not finish within 90 s after a worker was killed")
        if "error" in out:
            raise out["error"]
        client.wait_for_workers(2, timeout=30)  # the nanny restarted the killed worker
        after = set(client.run(os.getpid).values())
        # the scheduler saw a snapshot task lose its worker (and rescheduled it: the results below are complete)
        lost = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.task_prefixes[PREFIX].suspicious)

    assert killed["done"] == 1 and killed["of"] == 6, killed  # the kill landed mid-analysis
    assert killed["pid"] not in after and len(after) == 2 and len(after & before) == 1, (before, after, killed)
    assert lost >= 1
    assert out["result"].n_snapshots == 6
    assert_same_analysis(ref, tmp_path / "dask.h5")
