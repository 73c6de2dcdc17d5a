"""The command line and the embedded default run, end to end on a short training."""

import numpy as np
import pytest

from topotrace.cli import main
from topotrace.instrument.store import Store


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    assert main(["train", "--config", "configs/digits.toml", "--epochs", "2", "--out-dir", str(out)]) == 0
    return out / "digits"


@pytest.mark.slow
def test_train_writes_store_and_config(short_run, capsys):
    """`topotrace train` writes the store and a copy of the config; the store describes the run."""
    assert (short_run / "config.toml").read_text().startswith("[run]")
    with Store(short_run / "store.h5") as st:
        assert list(st.layers) == ["hidden1", "hidden2"]
        assert [st.layers[n].n_neurons for n in st.layers] == [128, 64]
        assert sorted(st.probes) == ["heldout", "train"]
        assert np.bincount(st.labels("heldout")).tolist() == [40] * 10
        steps = st.steps
        assert steps[0] == 0 and steps[-1] == 2 * 43 and np.all(np.diff(steps) > 0)
        assert st.meta["run_name"] == "digits" and st.meta["config"]["train"]["epochs"] == 2
        assert "torch" in st.meta["versions"]
        acc = st.correct("heldout").mean(axis=1)
        assert acc[-1] > 0.5 > acc[0]  # it learned (2 epochs only)


@pytest.mark.slow
def test_info(short_run, capsys, tmp_path):
    """`topotrace info` summarises a run folder; a missing one gets one line and exit 2."""
    assert main(["info", str(short_run)]) == 0
    out = capsys.readouterr().out
    assert "hidden1" in out and "heldout" in out and "snapshots:" in out
    assert main(["info", str(tmp_path / "none")]) == 2
    assert "No store at" in capsys.readouterr().err


@pytest.mark.slow
def test_train_refuses_existing_run(short_run, capsys):
    """A second run of the same name does not overwrite the first without --overwrite."""
    out = str(short_run.parent)
    assert main(["train", "--config", "configs/digits.toml", "--epochs", "1", "--out-dir", out]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with Store(short_run / "store.h5") as st:
        assert st.steps[-1] == 86


def test_bad_config_fails_before_training(tmp_path, capsys):
    """A config error is reported (one line, exit 2) before any run folder is made."""
    (tmp_path / "bad.toml").write_text('[record]\nlayers = ["hidden1", "fc9"]\n[run]\nout_dir = "%s"\n' % tmp_path)
    assert main(["train", "--config", str(tmp_path / "bad.toml"), "--epochs", "1"]) == 2
    assert "Unknown layer 'fc9'" in capsys.readouterr().err
    assert not (tmp_path / "digits").exists()


@pytest.mark.slow
def test_report_reuses_the_cached_analysis_whatever_made_it(tmp_path, capsys, monkeypatch):
    """After `analyze --measure margin`, `report` uses that cache (and says so); options recompute it."""
    from topotrace.analysis import pipeline
    from topotrace.instrument.synthetic import write_synthetic_store

    write_synthetic_store(tmp_path / "store.h5", n_snapshots=3, layer_sizes=(16,), n_classes=3, per_class=6)
    assert main(["analyze", str(tmp_path), "--measure", "margin", "--layouts", "pca", "--bins", "3"]) == 0
    capsys.readouterr()
    calls = []
    real = pipeline._analyze_layer
    # the analysed probe set's layers (the report also analyses the train probe set once, for the overfitting view)
    monkeypatch.setattr(pipeline, "_analyze_layer",
                        lambda *a, **k: (calls.append(a[1]) if a[0].params.probe_set == "heldout" else None)
                        or real(*a, **k))
    assert main(["report", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "using the cached analysis (probe set heldout, measure margin, 3 confidence bins, layouts pca)" in err
    assert calls == []
    assert main(["report", str(tmp_path), "--measure", "max_prob", "--layouts", "pca"]) == 0
    assert calls == ["layer0"]
    from topotrace.analysis.results import load_results

    assert load_results(tmp_path / "analysis.h5").primary_measure == "max_prob"
    assert main(["report", str(tmp_path), "--refresh", "--layouts", "pca"]) == 0  # the default measure again
    assert load_results(tmp_path / "analysis.h5").primary_measure == "logit_margin"


@pytest.mark.slow
def test_train_seed_and_name_options(tmp_path):
    """--seed and --name reach the run: the store's metadata holds them, and two seeds differ."""
    for seed in (3, 4):
        assert main(["train", "--epochs", "1", "--out-dir", str(tmp_path), "--name", f"s{seed}",
                     "--seed", str(seed)]) == 0
    with Store(tmp_path / "s3" / "store.h5") as a, Store(tmp_path / "s4" / "store.h5") as b:
        assert (a.meta["seed"], b.meta["seed"]) == (3, 4) and a.meta["run_name"] == "s3"
        assert not np.array_equal(a.logits("heldout")[0], b.logits("heldout")[0])


def test_help_is_plain_text_with_working_examples(capsys):
    """`topotrace --help` has no reST markup, and its --png example names a layer of the default run."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "``" not in out and ":func:" not in out
    assert "--png hidden1:class:3:-1" in out


@pytest.mark.parametrize("name", ["..", ".", "../x", "/tmp/x", "a/b", ""])
def test_run_names_that_leave_the_runs_folder_are_refused(tmp_path, capsys, name):
    """--name must be a plain folder name: '..', '.', paths and empty names get one line and exit 2, nothing written."""
    (tmp_path / "keep.txt").write_text("mine")
    assert main(["train", "--name", name, "--epochs", "1", "--out-dir", str(tmp_path / "runs"), "--overwrite"]) == 2
    assert "plain folder name" in capsys.readouterr().err
    assert (tmp_path / "keep.txt").read_text() == "mine" and not (tmp_path / "runs").exists()


def test_overwrite_replaces_only_a_run(tmp_path, capsys):
    """--overwrite refuses a folder of the same name that is not a topotrace run, and leaves it as it was."""
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "thesis.tex").write_text("mine")
    assert main(["train", "--epochs", "1", "--out-dir", str(tmp_path), "--overwrite"]) == 2
    assert "not a topotrace run" in capsys.readouterr().err
    assert (tmp_path / "digits" / "thesis.tex").read_text() == "mine"
