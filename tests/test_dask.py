"""The analysis on a Dask LocalCluster (2 worker processes on 127.0.0.1) equals the in-process analysis."""

import json

import h5py
import numpy as np
import pytest

from topotrace.analysis.distributed import dask_cluster
from topotrace.analysis.pipeline import analyze
from topotrace.instrument.synthetic import write_synthetic_store

pytest.importorskip("distributed")

FAST = ["pca", "force"]
VOLATILE = {"params"}  # params holds the wall-clock seconds (compared below without them)
SECONDS = "seconds"  # layout timing attribute


def _walk(path):
    """Every dataset (name -> array) and every attribute ((name, key) -> value) of an HDF5 file."""
    data, attrs = {}, {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            for k, v in obj.attrs.items():
                attrs[(name, k)] = v
            if isinstance(obj, h5py.Dataset):
                data[name] = obj[()]
        f.visititems(visit)
        for k, v in f.attrs.items():
            attrs[("/", k)] = v
    return data, attrs


def assert_same_analysis(a, b):
    """Every dataset within 1e-6 (NaN where NaN), integer datasets exact; attributes equal but timings."""
    da, aa = _walk(a)
    db, ab = _walk(b)
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


def test_study_seeds_analysed_on_one_cluster(cluster, tmp_path):
    """A study's seeds are analysed together on the cluster, each equal to its in-process analysis, in seed order."""
    from topotrace.study import Study, study_results

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
