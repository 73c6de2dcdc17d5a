"""Damaged stores through the command line: one line, exit 2, in seconds, nothing written, or a documented success.

The store-level checks (which damage is found how) are in ``test_store_damage.py``; here every damaged file goes
through ``topotrace info`` (and a selection through ``analyze`` and ``report``) the way a user meets it.
Documented successes: a flipped byte the store never reads (free space, padding) leaves a store that reads
exactly as before, so ``info`` succeeds; so does one in an activation chunk (``info`` reads no activations),
which every read of that chunk then refuses by its checksum; ``--until-good`` on a store with a damaged
snapshot uses the ones before.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest

from topotrace.analysis.results import load_results
from topotrace.cli import main
from topotrace.instrument.store import Store, StoreError
from topotrace.instrument.synthetic import write_synthetic_store

from .test_cli_errors import assert_one_error_line, tree

SECONDS = 20  # every case must end within this


@contextmanager
def deadline(seconds: int = SECONDS):
    """Fail (instead of hanging the suite) when the block runs longer than ``seconds``."""
    def expired(*_):
        raise TimeoutError(f"hung for more than {seconds} s")

    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    t0 = time.monotonic()
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert time.monotonic() - t0 < seconds


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """A small store's bytes, what it reads as, and where its chunks lie (start, end, dataset, snapshot)."""
    path = write_synthetic_store(tmp_path_factory.mktemp("clean") / "store.h5", n_snapshots=6, layer_sizes=(8,),
                                 n_classes=3, per_class=4)
    spans = []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.chunks:
                obj.id.chunk_iter(lambda i: spans.append((i.byte_offset, i.byte_offset + i.size, name,
                                                          i.chunk_offset[0])))
        f.visititems(visit)
    return path.read_bytes(), spans, _everything(path)


def _everything(path):
    """Every array a user can read from the store."""
    with Store(path) as st:
        out = {"steps": st.steps, "epochs": st.epochs, "times": st.times}
        for p in st.probes:
            out |= {(p, "logits"): st.logits(p), (p, "pred"): st.pred(p), (p, "correct"): st.correct(p),
                    (p, "loss"): st.loss(p)}
            out |= {(p, m): st.conf(p, m) for m in st.measures}
            out |= {(p, la, s): st.acts(p, la, s) for la in st.layers for s in range(st.n_snapshots)}
    return out


def _damaged(tmp: Path, data: bytes, edit) -> Path:
    run = tmp / "run"
    run.mkdir()
    path = run / "store.h5"
    path.write_bytes(data)
    edit(path)
    return path


def _truncate(fraction):
    return lambda p: os.truncate(p, int(p.stat().st_size * fraction))


def _flip(fraction):
    def edit(p):
        b = bytearray(p.read_bytes())
        b[int(fraction * len(b))] ^= 0x5A
        p.write_bytes(bytes(b))
    return edit


def _h5(fn):
    def edit(p):
        with h5py.File(p, "r+") as f:
            fn(f)
    return edit


def _text(content: bytes):
    return lambda p: p.write_bytes(content)


def _plain_hdf5(p):
    p.unlink()
    with h5py.File(p, "w") as f:
        f["x"] = np.arange(3)


def _set_committed(n):
    return _h5(lambda f: f["committed"].__setitem__(0, n))


def _attr(name, value):
    return _h5(lambda f: f.attrs.__setitem__(name, value))


def _labels_out_of_range(f):
    f["probes/heldout/label"][0] = 99


def _steps_backwards(f):
    # Rewriting a chunk also rewrites its checksum: the steps are wrong but intact, and must still be refused.
    f["step"][2] = f["step"][1]


rng = np.random.default_rng(8)
FLIPS = sorted(rng.uniform(0, 1, 20).round(4).tolist())
TRUNCATIONS = [0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 0.999]

CASES = (
    [pytest.param(_truncate(f), id=f"truncated-{f}") for f in TRUNCATIONS]
    + [pytest.param(_flip(f), id=f"flip-{f}") for f in FLIPS]
    + [
        pytest.param(_set_committed(99), id="committed-too-large"),
        pytest.param(_set_committed(-1), id="committed-negative"),
        pytest.param(_h5(_steps_backwards), id="steps-not-increasing"),
        pytest.param(_attr("layers", "[not json"), id="json-attribute-broken"),
        pytest.param(_attr("class_names", '["a", "b"]'), id="class-names-edited"),
        pytest.param(_h5(_labels_out_of_range), id="labels-out-of-range"),
        pytest.param(_text(b""), id="empty-file"),
        pytest.param(_text(b"step,loss\n1,0.5\n"), id="text-file"),
        pytest.param(_plain_hdf5, id="plain-hdf5-file"),
    ]
)


@pytest.mark.slow
@pytest.mark.parametrize("edit", CASES)
def test_info_on_a_damaged_store(tmp_path, clean, edit, capsys, monkeypatch):
    """`topotrace info`: exit 2 with one line naming the store, or (a byte nobody reads) the store as before."""
    data, spans, want = clean
    monkeypatch.chdir(tmp_path)
    path = _damaged(tmp_path, data, edit)
    before = tree(tmp_path)
    with deadline():
        code = main(["info", "run"])
    out, err = capsys.readouterr()
    assert tree(tmp_path) == before  # reading writes nothing, not even to the damaged file
    if code == 0:  # a documented success: what info reads is intact (it reads no activations)
        assert not err
        try:
            got = _everything(path)
        except StoreError as damage:  # in a chunk info does not read: found, with its snapshot, when read
            assert "checksum mismatch" in str(damage) and "\n" not in str(damage)
        else:  # in bytes the store never reads
            assert got.keys() == want.keys() and all(np.array_equal(got[k], want[k]) for k in want)
    else:
        assert code == 2
        assert_one_error_line(err, "store.h5")
        assert "Traceback" not in out


def _flip_chunk(dataset, snapshot):
    """Flip one byte in the middle of a chunk (found by its checksum when read)."""
    def edit(p, spans):
        start, end = _chunk_of(spans, dataset, snapshot)
        b = bytearray(p.read_bytes())
        b[(start + end) // 2] ^= 0x01
        p.write_bytes(bytes(b))
    return edit


ANALYZE_CASES = [
    pytest.param(lambda p, spans: _truncate(0.5)(p), id="truncated-0.5"),
    pytest.param(lambda p, spans: _truncate(0.99)(p), id="truncated-0.99"),
    pytest.param(lambda p, spans: _set_committed(99)(p), id="committed-too-large"),
    pytest.param(lambda p, spans: _h5(_steps_backwards)(p), id="steps-not-increasing"),
    pytest.param(lambda p, spans: _h5(_labels_out_of_range)(p), id="labels-out-of-range"),
    pytest.param(_flip_chunk("probes/heldout/acts/layer0", 5), id="flip-in-activations"),
    pytest.param(_flip_chunk("probes/heldout/conf/max_prob", 2), id="flip-in-confidence"),
    pytest.param(_flip_chunk("probes/train/loss", 3), id="flip-in-train-loss"),
]


@pytest.mark.parametrize("edit", ANALYZE_CASES)
def test_analyze_on_a_damaged_store(tmp_path, clean, edit, capsys, monkeypatch):
    """`topotrace analyze`: the same one line and exit 2; no cache or temporary file is left behind."""
    data, spans, *_ = clean
    monkeypatch.chdir(tmp_path)
    _damaged(tmp_path, data, lambda p: edit(p, spans))
    before = tree(tmp_path)
    with deadline():
        code = main(["analyze", "run"])
    _, err = capsys.readouterr()
    assert code == 2
    assert_one_error_line(err, "store.h5")
    assert set(tree(tmp_path)) == set(before)  # no analysis.h5, no .tmp


def _chunk_of(spans, dataset, snapshot):
    return next((s, e) for s, e, d, i in spans if d == dataset and i == snapshot)


@pytest.mark.slow
def test_until_good_uses_the_snapshots_before_the_damage(tmp_path, clean, capsys, monkeypatch):
    """A torn write in snapshot 4: `report` refuses naming it and --until-good; with --until-good the analysis
    covers snapshots 0-3 exactly."""
    data, spans, _ = clean
    start, end = _chunk_of(spans, "probes/heldout/acts/layer0", 4)
    bad = bytearray(data)
    bad[(start + end) // 2] ^= 0x01
    monkeypatch.chdir(tmp_path)
    _damaged(tmp_path, bytes(bad), lambda p: None)
    before = set(tree(tmp_path))
    with deadline(60):
        assert main(["report", "run"]) == 2
    line = assert_one_error_line(capsys.readouterr().err, "snapshot 4")
    assert "--until-good" in line and set(tree(tmp_path)) == before
    with deadline(60):
        assert main(["analyze", "run", "--until-good"]) == 0
    capsys.readouterr()
    results = load_results(tmp_path / "run" / "analysis.h5")
    with Store(tmp_path / "run" / "store.h5", until_good=True) as st:
        assert st.n_snapshots == 4 and st.damaged_at == 4
        assert results.n_snapshots == 4 and results.steps.tolist() == st.steps.tolist()


def test_a_killed_run_truncated_is_refused_not_read_as_zeros(tmp_path, clean, capsys, monkeypatch):
    """The last chunk cut off a store: its rows must not be read as zeros (the silently wrong case)."""
    data, spans, *_ = clean
    last = max(e for s, e, d, i in spans)
    monkeypatch.chdir(tmp_path)
    _damaged(tmp_path, data, lambda p: os.truncate(p, last - 3))
    with deadline():
        assert main(["info", "run"]) == 2
    assert_one_error_line(capsys.readouterr().err, ("damaged or truncated", "truncated"))


def test_damage_is_named_in_a_study_site_and_copy_is_untouched(tmp_path, clean, capsys, monkeypatch):
    """`topotrace site` lists a damaged store with its reason and builds the rest of the page."""
    data, *_ = clean
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(_damaged(tmp_path, data, _truncate(0.5)).parent, runs / "cut")
    (runs / "good").mkdir()
    (runs / "good" / "store.h5").write_bytes(data)
    with deadline():
        assert main(["site", "runs"]) == 0
    page = (runs / "index.html").read_text("utf-8")
    assert "damaged or truncated" in page and 'data-path="good"' in page
    assert sorted(p.name for p in runs.iterdir()) == ["cut", "good", "index.html"]


def test_a_full_disk_during_analyze_leaves_no_half_written_cache(tmp_path, clean, capsys, monkeypatch):
    """ENOSPC while analysis.h5 is written: one error line, no analysis.h5 and no analysis.h5.writing left."""
    import errno

    import topotrace.analysis.results as results_module

    data, *_ = clean
    monkeypatch.chdir(tmp_path)
    _damaged(tmp_path, data, lambda p: None)  # an intact copy in run/
    real_put, calls = results_module._put, []

    def put(*args, **kwargs):  # the disk fills after a few datasets are written
        calls.append(1)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", "run/analysis.h5.writing")
        return real_put(*args, **kwargs)

    monkeypatch.setattr(results_module, "_put", put)
    with deadline(60):
        assert main(["analyze", "run", "--layouts", "pca"]) == 2
    assert_one_error_line(capsys.readouterr().err, "No space left on device")
    assert len(calls) > 3 and sorted(p.name for p in (tmp_path / "run").iterdir()) == ["store.h5"]


@pytest.mark.slow
def test_report_archive_and_figure_check_the_checksums_before_using_a_cached_analysis(tmp_path, clean, capsys,
                                                                                       monkeypatch):
    """A chunk damaged after the run was analysed (its file date kept, so the cache still matches): report,
    archive and figure refuse it in one line naming the first damaged snapshot, where they used to exit 0 from
    the cache and leave `verify` to reject the bundle; nothing is written."""
    data, spans, _ = clean
    monkeypatch.chdir(tmp_path)
    path = _damaged(tmp_path, data, lambda p: None)
    with deadline(60):
        assert main(["analyze", "run", "--layouts", "pca"]) == 0
    stamp = path.stat()
    start, end = _chunk_of(spans, "probes/heldout/acts/layer0", 2)
    raw = bytearray(path.read_bytes())
    raw[(start + end) // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # as a bit flip on the disk leaves it
    capsys.readouterr()
    before = tree(tmp_path)
    for argv in (["report", "run"], ["archive", "run"], ["figure", "run", "--layer", "layer0"],
                 ["analyze", "run", "--layouts", "pca"]):
        with deadline(60):
            assert main(argv) == 2, argv
        line = assert_one_error_line(capsys.readouterr().err, "snapshot 2")
        assert "acts/layer0" in line and "checksum mismatch" in line, line
        assert tree(tmp_path) == before, argv
    with deadline(60):  # --until-good still uses the two snapshots before it
        assert main(["report", "run", "--until-good", "--layouts", "pca", "--out", "r.html"]) == 0
    capsys.readouterr()
    assert (tmp_path / "r.html").is_file()


def test_until_good_on_damage_at_snapshot_0_says_so(tmp_path, clean, capsys, monkeypatch):
    """Snapshot 0 damaged: --until-good says that snapshot 0 is damaged and nothing before it is usable (not "no
    committed snapshots yet"), for info, analyze and report."""
    data, spans, _ = clean
    start, end = _chunk_of(spans, "probes/heldout/loss", 0)
    bad = bytearray(data)
    bad[(start + end) // 2] ^= 0x01
    monkeypatch.chdir(tmp_path)
    _damaged(tmp_path, bytes(bad), lambda p: None)
    before = tree(tmp_path)
    for argv in (["info", "run", "--until-good"], ["analyze", "run", "--until-good"],
                 ["report", "run", "--until-good"]):
        with deadline(60):
            assert main(argv) == 2, argv
        line = assert_one_error_line(capsys.readouterr().err, "snapshot 0 (step")
        assert "nothing before it is usable" in line and "no committed snapshots" not in line, line
        assert "probe set 'heldout', dataset loss" in line
    assert tree(tmp_path) == before
