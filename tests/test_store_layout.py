"""The store's layout table: pinned per schema version, followed by the writer, and older versions keep reading."""

import dataclasses

import h5py
import numpy as np
import pytest

from topotrace.instrument.store import Store, StoreError, StoreWriter, format, reader, writer
from topotrace.instrument.store.format import (
    DATASETS,
    ROOT,
    ROOT_ATTRS,
    SCHEMA_VERSION,
    DatasetSpec,
    LayerSpec,
    ProbeRecord,
    ProbeSpec,
    Snapshot,
    StoreSpec,
    layout_fingerprint,
    plan,
)

# The fingerprint of the layout table of every schema version (docs/store.md, "Schema version"). A change of the
# table (DATASETS, ROOT_ATTRS, PRESENCE) is a new version: raise SCHEMA_VERSION, add its fingerprint here, and keep
# stores of the earlier versions reading (a row new in version V gets required_from=V).
FINGERPRINTS = {
    1: "b18711c5b7215fffb1e6b88301c64ded1a78a43b0e9a6c381d294c5f0cfdbf73",
}


def test_layout_fingerprint_is_pinned_for_the_schema_version():
    """The table is the one pinned for SCHEMA_VERSION: changing it without a new version fails here."""
    assert max(FINGERPRINTS) == SCHEMA_VERSION, "add the fingerprint of the new schema version to FINGERPRINTS"
    assert len(set(FINGERPRINTS.values())) == len(FINGERPRINTS), "a new schema version needs a changed table"
    assert layout_fingerprint() == FINGERPRINTS[SCHEMA_VERSION], (
        f"The store's layout table changed but SCHEMA_VERSION is still {SCHEMA_VERSION}: raise it to "
        f"{SCHEMA_VERSION + 1}, give new rows required_from={SCHEMA_VERSION + 1}, pin the new fingerprint "
        f"{layout_fingerprint()} in FINGERPRINTS and document the version in docs/store.md.")


def test_fingerprint_sees_every_field_of_a_row():
    """Changing any field of any row (or dropping a row) changes the fingerprint."""
    before = layout_fingerprint()
    changed = {"name": "x", "group": ROOT, "shape": ("n", 2), "dtype": "float32", "per_snapshot": False,
               "source": "x", "when": "temp_prob", "attrs": ("x",), "compressed": True, "checksum": True,
               "shards": "own", "required_from": 9}
    for i, row in enumerate(DATASETS):
        for name in changed:
            value = changed[name] if getattr(row, name) != changed[name] else "other"
            table = DATASETS[:i] + (dataclasses.replace(row, **{name: value}),) + DATASETS[i + 1:]
            with pytest.MonkeyPatch.context() as mp:
                mp.setattr(format, "DATASETS", table)
                assert layout_fingerprint() != before, (row.name, name)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(format, "DATASETS", DATASETS[:-1])
        assert layout_fingerprint() != before
        mp.setattr(format, "DATASETS", DATASETS)
        mp.setattr(format, "ROOT_ATTRS", ROOT_ATTRS[:-1])
        assert layout_fingerprint() != before


def _spec(measures=("max_prob", "temp_prob"), compression="gzip"):
    return StoreSpec(
        layers=(LayerSpec("fc1", 5, "flatten", (5,)), LayerSpec("conv.0", 2, "channel_mean", (2, 4, 4))),
        probes=(ProbeSpec("heldout", np.arange(6) * 2, np.arange(6) % 3),
                ProbeSpec("train", np.arange(4), np.arange(4) % 3)),
        class_names=("a", "b", "c"), measures=measures, compression=compression)


def _snapshot(spec, step, extra=None):
    rng = np.random.default_rng(step)
    recs = {}
    for p in spec.probes:
        n = len(p.index)
        logits = rng.normal(size=(n, 3)).astype(np.float32)
        recs[p.name] = ProbeRecord({la.name: rng.normal(size=(n, la.n_neurons)) for la in spec.layers}, logits,
                                   logits.argmax(1), logits.argmax(1) == p.label, rng.random(n),
                                   {m: rng.random(n) for m in spec.measures})
    temperature = 1.25 if "temp_prob" in spec.measures else None
    return Snapshot(step=step, epoch=0, time=1e9 + step, probes=recs, temperature=temperature)


def test_plan_resolves_the_version_1_rows():
    """The shape symbols resolve to the spec's numbers (n samples, C classes, d neurons, L + 1 columns)."""
    got = {ds.path: (ds.shape, ds.dtype, ds.row.per_snapshot) for ds in plan(_spec())}
    want = {"committed": ((1,), "int64", False), "step": ((), "int64", True), "epoch": ((), "int64", True),
            "time": ((), "float64", True), "temperature": ((), "float64", True)}
    for p, n in (("heldout", 6), ("train", 4)):
        g = f"probes/{p}/"
        want |= {g + "index": ((n,), "int64", False), g + "label": ((n,), "int64", False),
                 g + "logits": ((n, 3), "float32", True), g + "pred": ((n,), "int64", True),
                 g + "correct": ((n,), "bool", True), g + "loss": ((n,), "float32", True),
                 g + "acts/fc1": ((n, 5), "float16", True), g + "acts/conv.0": ((n, 2), "float16", True),
                 g + "conf/max_prob": ((n,), "float32", True), g + "conf/temp_prob": ((n,), "float32", True),
                 g + "nonfinite": ((3,), "int64", True)}
    assert {k: got[k] for k in want} == want
    assert "temperature" not in {ds.path for ds in plan(_spec(measures=("max_prob",)))}


def test_a_new_store_holds_exactly_the_table(tmp_path):
    """Every dataset of a new store, with its shape, dtype, chunks, filters and attributes, is one of the table's."""
    spec = _spec()
    path = tmp_path / "s.h5"
    with StoreWriter.create(path, spec, {"run_name": "x"}) as w:
        w.append(_snapshot(spec, 0))
    planned = {ds.path: ds for ds in plan(spec)}
    found = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: found.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert sorted(found) == sorted(planned)
        for name, ds in planned.items():
            d = f[name]
            assert d.dtype == np.dtype(ds.dtype), name
            if ds.row.per_snapshot:
                assert d.shape == (1, *ds.shape) and d.maxshape == (None, *ds.shape), name
                assert d.chunks == (1, *ds.shape) and d.fletcher32, name
                assert d.compression == ("gzip" if ds.row.compressed else None), name
            else:
                assert d.shape == ds.shape and d.maxshape == ds.shape, name
                assert d.fletcher32 == ds.row.checksum, name
            assert sorted(d.attrs) == sorted(ds.row.attrs), name
        assert f["probes/train/acts/conv.0"].attrs["reduction"] == "channel_mean"
        assert list(f["probes/train/acts/conv.0"].attrs["output_shape"]) == [2, 4, 4]
        assert sorted(k for k in f.attrs if not k.startswith("meta_")) == sorted([*ROOT_ATTRS, "attrs_sha256"])
        assert f.attrs["schema_version"] == SCHEMA_VERSION
        np.testing.assert_array_equal(f["probes/heldout/index"][()], np.arange(6) * 2)


def test_a_store_of_a_newer_or_no_version_is_refused(tmp_path):
    """A store of a newer schema version says to upgrade; version 0 is damage."""
    path = tmp_path / "s.h5"
    StoreWriter.create(path, _spec(), {}).close()
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(StoreError, match=f"has store schema version {SCHEMA_VERSION + 1}; this topotrace reads "
                                         f"version .*upgrade topotrace"):
        Store(path)
    with h5py.File(path, "r+") as f:
        f.attrs["schema_version"] = 0
    with pytest.raises(StoreError, match="has store schema version 0; .*Restore it from a copy"):
        Store(path)


def _next_version(monkeypatch):
    """Make this code one schema version newer, whose table adds the root row ``time2`` (a copy of ``time``)."""
    new = SCHEMA_VERSION + 1
    row = DatasetSpec("time2", ROOT, (), "float64", per_snapshot=True, source="time", shards="first",
                      required_from=new)
    table = (*DATASETS[:5], row, *DATASETS[5:])
    for module in (format, writer, reader):
        monkeypatch.setattr(module, "DATASETS", table)
    monkeypatch.setattr(format, "SCHEMA_VERSION", new)
    return new


def test_older_stores_read_and_resume_after_a_version_bump(tmp_path, monkeypatch):
    """After a new row (and version), a store of the older version reads without it and resumes in its layout."""
    spec = _spec()
    old = tmp_path / "old.h5"
    with StoreWriter.create(old, spec, {}) as w:
        for s in (0, 1):
            w.append(_snapshot(spec, s))
    new_version = _next_version(monkeypatch)
    with Store(old) as st:
        assert st.version == new_version - 1 and st.series("time2") is None and st.n_snapshots == 2
        np.testing.assert_array_equal(st.series("time"), [1e9, 1e9 + 1])
        np.testing.assert_array_equal(st.temperature, [1.25, 1.25])
    with StoreWriter.resume(old, spec) as w:
        w.append(_snapshot(spec, 2))
    with Store(old) as st, h5py.File(old, "r") as f:
        assert st.n_snapshots == 3 and st.series("time2") is None and "time2" not in f
        assert f.attrs["schema_version"] == new_version - 1
    fresh = tmp_path / "new.h5"
    with StoreWriter.create(fresh, spec, {}) as w:
        w.append(_snapshot(spec, 5))
    with Store(fresh) as st:
        assert st.version == new_version
        np.testing.assert_array_equal(st.series("time2"), [1e9 + 5])
    with h5py.File(fresh, "r+") as f:
        del f["time2"]
    with pytest.raises(StoreError, match="dataset time2 is missing"):
        Store(fresh)


def test_series_refuses_an_unknown_name(tmp_path):
    """``Store.series`` names the per-snapshot root datasets it knows."""
    path = tmp_path / "s.h5"
    StoreWriter.create(path, _spec(measures=("max_prob",)), {}).close()
    with Store(path) as st:
        assert st.series("temperature") is None and st.series("step").shape == (0,)
        with pytest.raises(KeyError, match=r"Unknown per-snapshot dataset 'acts'. Available: \['step', 'epoch'"):
            st.series("acts")


def test_a_damaged_dataset_attribute_is_refused(tmp_path):
    """The table's dataset attributes are checked at open (a layer's reduction, the nonfinite columns)."""
    path = tmp_path / "s.h5"
    StoreWriter.create(path, _spec(), {}).close()
    with h5py.File(path, "r+") as f:
        f["probes/train/acts/fc1"].attrs["reduction"] = "channel_mean"
    with pytest.raises(StoreError, match="dataset probes/train/acts/fc1 has attribute 'reduction' = 'channel_mean', "
                                         "expected 'flatten'"):
        Store(path)
    StoreWriter.create(path, _spec(), {}, replace=True).close()
    with h5py.File(path, "r+") as f:
        f["probes/heldout/nonfinite"].attrs["columns"] = '["fc1", "logits"]'
    with pytest.raises(StoreError, match="dataset probes/heldout/nonfinite has attribute 'columns'"):
        Store(path)
