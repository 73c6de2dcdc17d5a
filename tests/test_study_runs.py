"""A study of runs you already have: `topotrace study RUN RUN ...` and `tt.study`, refusals, the study's lock."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

import topotrace as tt
from topotrace.cli import main
from topotrace.instrument.confidence import DEFAULT_MEASURES, outcomes
from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec, StoreWriter


def _record(run_dir: Path, seed: int) -> Path:
    """A tiny run recorded with the Python API in a plain loop (the README's way), 6 snapshots."""
    d = load_digits()
    x = torch.tensor(d.data[:500] / 16.0, dtype=torch.float32)
    y = torch.tensor(d.target[:500])
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    probes = [tt.ProbeSet("heldout", x[400:500], y[400:500], np.arange(400, 500))]
    with tt.Recorder(model, run_dir / "store.h5", layers=["1"], probes=probes,
                     class_names=[str(c) for c in range(10)], schedule=tt.every(5), meta={"seed": seed}) as rec:
        rec.step(0)
        for step in range(1, 26):
            i = (step * 40) % 400
            loss = nn.functional.cross_entropy(model(x[i:i + 40]), y[i:i + 40])
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec.step(step, 0)
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return root, [_record(root / f"mine-s{s}", s) for s in range(3)]


@pytest.fixture(scope="module")
def mine_study(runs):
    """``tt.study`` of the three runs into mine-study (its findings); read by the tests that follow."""
    root, dirs = runs
    stores = {d: _digest(d / "store.h5") for d in dirs}
    found = tt.study(dirs, root / "mine-study")
    return found, stores


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _numbers(findings_json: Path) -> list[tuple]:
    """Every finding's numbers (not the runs' display names), in order."""
    out = []
    for f in json.loads(findings_json.read_text("utf-8")):
        out.append((f["layer"], f["claim"], f["measure"], f["effect"], f["ci_low"], f["ci_high"], f["n_runs"],
                    f["verdict"], [(r["effect"], r["ci_low"], r["ci_high"]) for r in f["runs"]]))
    return out


@pytest.mark.slow
def test_study_of_python_api_runs(runs, mine_study, monkeypatch, capsys):
    """tt.study writes study.json (relative paths), findings.json and report.html; the runs stay as they were."""
    root, dirs = runs
    found, stores = mine_study
    study = root / "mine-study"
    desc = json.loads((study / "study.json").read_text("utf-8"))
    assert desc["runs"] == ["../mine-s0", "../mine-s1", "../mine-s2"]
    assert (study / "report.html").is_file() and (study / "findings.json").is_file()
    assert {d: _digest(d / "store.h5") for d in dirs} == stores  # not copied, moved or changed
    assert all(not (d / "report.html").exists() for d in dirs)  # nothing written into the runs but their cache
    assert found and all(f.n_runs == 3 and [r.run for r in f.runs] == ["mine-s0", "mine-s1", "mine-s2"]
                         for f in found)
    # across runs: the mean of the runs' effects (Fisher z for correlations), as findings.json says
    time_claim = next(f for f in found if f.claim == "stronger_with_time")
    assert time_claim.effect == pytest.approx(np.mean([r.effect for r in time_claim.runs]), rel=1e-6)

    # the same from the command line (default name from the runs' common name), with no re-analysis
    import topotrace.studies as studies

    monkeypatch.setattr(studies, "analyze", lambda *a, **k: pytest.fail("a cached run was analysed again"))
    monkeypatch.chdir(root)
    assert main(["study", "mine-s0", "mine-s1", "mine-s2", "--out-dir", "."]) == 0
    out = capsys.readouterr().out
    assert "mine-study" in out and "stronger" in out
    assert _numbers(root / "mine-study" / "findings.json") == _numbers(study / "findings.json")


@pytest.mark.parametrize("change, first_difference", [
    ({"layers": (("a", 4), ("c", 4))}, "layers differ"),
    ({"layers": (("a", 4), ("b", 5))}, "neurons of layer 'b' differ"),
    ({"probes": ("heldout", "train")}, "probe sets differ"),
    ({"labels": [0, 1, 2, 0, 1, 2, 0, 1, 2, 1]}, "samples per class (labels) of probe set 'heldout' differ"),
    ({"classes": ("cat", "dog", "eel")}, "class names differ"),
    ({"steps": (0, 10, 25)}, "snapshot steps differ"),
])
def test_incomparable_runs_are_refused_in_one_line(tmp_path, capsys, change, first_difference):
    """Each kind of difference: one line naming it, exit 2, no study folder written."""
    _store(tmp_path / "a")
    _store(tmp_path / "b", **change)
    code = main(["study", str(tmp_path / "a"), str(tmp_path / "b"), "--name", "s", "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("topotrace: error: ") and first_difference in err
    assert not (tmp_path / "s").exists()


def test_study_of_runs_refuses_bad_arguments(tmp_path, capsys):
    """One run, a run named twice, a folder that is no run, --seeds with runs: one line each, nothing written."""
    _store(tmp_path / "a")
    (tmp_path / "empty").mkdir()
    a, empty = str(tmp_path / "a"), str(tmp_path / "empty")
    for args, words in (([a], "at least two run folders"), ([a, a], "named twice"),
                        ([a, empty], "holds no store.h5"), ([a, a, "--seeds", "0,1"], "'--seeds' option")):
        code = main(["study", *args, "--name", "s", "--out-dir", str(tmp_path)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and words in err, err
        assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def made_study(tmp_path_factory):
    """A study ``s`` of two tiny stores a and b, made by ``topotrace study``; returns (folder, its arguments)."""
    root = tmp_path_factory.mktemp("made")
    _store(root / "a")
    _store(root / "b")
    args = ["study", str(root / "a"), str(root / "b"), "--name", "s", "--out-dir", str(root)]
    assert main(args) == 0
    return root, args


@pytest.mark.slow
def test_a_study_in_use_is_refused_and_nothing_is_removed(made_study, capsys):
    """While one command holds a study, a second one on it is refused in one line and removes nothing."""
    from topotrace.studies import locked

    root, args = made_study
    before = {p: _digest(p) for p in sorted((root / "s").iterdir())}
    capsys.readouterr()
    with locked(root / "s"):  # as if another process were working on the study
        assert main(args) == 2
        assert main(["study", "--name", "s", "--out-dir", str(root), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("in use by another topotrace process") == 1 and "holds a study of existing runs" in err
    assert {p: _digest(p) for p in sorted((root / "s").iterdir())} == before


def test_a_config_study_twice_never_removes_a_seed_being_recorded(tmp_path, monkeypatch, capsys):
    """The same `study --name` started while the first is recording: refused by the lock, seed-0 untouched."""
    from topotrace.studies import locked

    cfg = tmp_path / "tiny.toml"
    cfg.write_text("[data]\nheldout_per_class = 4\ntrain_probe_per_class = 0\n[model]\nhidden = [8]\n"
                   "[record]\nsnapshots = 3\nlayers = [\"hidden1\"]\n")
    args = ["study", "--config", str(cfg), "--seeds", "0,1", "--epochs", "1", "--out-dir", str(tmp_path),
            "--name", "s"]
    (tmp_path / "s").mkdir()
    from topotrace.studies import FORMAT

    cfg_dict = tt_config(cfg)
    (tmp_path / "s" / "study.json").write_text(json.dumps({"format": FORMAT, "name": "s", "seeds": [0, 1],
                                                           "config": cfg_dict}))
    seed0 = tmp_path / "s" / "seed-0"
    seed0.mkdir()
    (seed0 / "store.h5").write_bytes(b"being written")  # a half-recorded seed another process works on
    with locked(tmp_path / "s"):
        assert main(args) == 2
    assert (seed0 / "store.h5").read_bytes() == b"being written"
    assert "in use by another topotrace process" in capsys.readouterr().err


def tt_config(path: Path) -> dict:
    """The config a study stores in study.json (its seed left out), as `topotrace study` writes it."""
    from topotrace.config import load_config

    cfg = load_config(path, {"run": {"out_dir": str(path.parent)}, "train": {"epochs": 1}})
    cfg["run"].pop("seed")
    return json.loads(json.dumps(cfg))


def _store(run_dir: Path, layers=(("a", 4), ("b", 4)), probes=("heldout",), labels=(0, 1, 2) * 3 + (0,),
           classes=("x", "y", "z"), steps=(0, 10, 20)) -> Path:
    """A tiny store with exactly the given layers, probe sets, labels, class names and steps."""
    run_dir.mkdir(parents=True)
    labels = np.asarray(labels, dtype=np.int64)
    n, rng = len(labels), np.random.default_rng(0)
    spec = StoreSpec(tuple(LayerSpec(name, d, "flatten", (d,)) for name, d in layers),
                     tuple(ProbeSpec(p, np.arange(n), labels) for p in probes), tuple(classes), DEFAULT_MEASURES,
                     "float32")
    writer = StoreWriter.create(run_dir / "store.h5", spec, {"run_name": run_dir.name, "seed": 0})
    try:
        for i, step in enumerate(steps):
            recs = {}
            for p in probes:
                logits = rng.normal(0, 1, (n, len(classes))).astype(np.float32) + 2.0 * i * np.eye(
                    len(classes), dtype=np.float32)[labels]
                pred, correct, loss, conf = outcomes(logits, labels, DEFAULT_MEASURES)
                acts = {name: rng.normal(0, 1, (n, d)).astype(np.float32) for name, d in layers}
                recs[p] = ProbeRecord(acts, logits, pred, correct, loss, conf)
            writer.append(Snapshot(step=step, epoch=0, time=float(i), probes=recs))
    finally:
        writer.close()
    return run_dir


@pytest.mark.slow
def test_site_lists_a_study_of_runs_once_with_its_runs_numbers(runs, mine_study):
    """The site index: the study's row averages its runs' final accuracy; each run keeps its own row, once."""
    from topotrace.instrument.store import Store
    from topotrace.site import collect

    root, dirs = runs
    rows = {r.path: r for r in collect(root)}
    study = rows["mine-study"]
    assert study.kind == "study" and study.seed == "mine-s0, mine-s1, mine-s2" and not study.seeds
    accuracy = []
    for d in dirs:
        with Store(d / "store.h5") as st:
            accuracy.append(np.mean(st.correct("heldout")[-1]))
    assert len(set(accuracy)) > 1  # the runs differ, so the mean is a real average
    assert study.metrics["heldout"]["accuracy"] == pytest.approx(np.mean(accuracy))
    assert [p for p in rows if p.startswith("mine-s") and p[-1].isdigit()] == ["mine-s0", "mine-s1", "mine-s2"]


@pytest.mark.slow
def test_archive_refuses_a_study_of_runs_in_one_line(made_study, capsys):
    """A study of existing runs cannot be bundled yet: one line saying what to do, nothing written."""
    root, _ = made_study
    capsys.readouterr()
    assert main(["archive", str(root / "s"), "--out", str(root / "s.zip")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study of existing runs" in err and not (root / "s.zip").exists()


@pytest.mark.slow
def test_study_of_runs_analyses_them_with_the_analysis_options(runs, tmp_path, capsys):
    """`topotrace study RUN RUN --bins N --layouts pca`: every run analysed with those parameters, also over a cache
    made with others (as `topotrace analyze RUN --bins N` would); a bad value: one line, nothing written."""
    import shutil

    from topotrace.analysis.results import load_results

    _, dirs = runs
    copies = []
    for d in dirs[:2]:
        (tmp_path / d.name).mkdir()
        shutil.copy2(d / "store.h5", tmp_path / d.name / "store.h5")
        copies.append(str(tmp_path / d.name))
    for bins in (3, 4):
        assert main(["study", *copies, "--name", "s", "--out-dir", str(tmp_path), "--bins", str(bins),
                     "--layouts", "pca"]) == 0
        for c in copies:
            res = load_results(Path(c) / "analysis.h5")
            assert res.params["n_bins"] == bins and list(res.params["layout_methods"]) == ["pca"]
            for lr in res.layers.values():
                assert len(lr.bin_names) == bins and lr.layouts and all(k.split("+")[0] == "pca" for k in lr.layouts)
    assert (tmp_path / "s" / "findings.json").is_file()
    capsys.readouterr()
    assert main(["study", *copies, "--name", "t", "--out-dir", str(tmp_path), "--bins", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("topotrace: error: ") and "'n_bins' parameter" in err, err
    assert not (tmp_path / "t").exists()
