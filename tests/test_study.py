"""`topotrace study`: replicate runs, resume after an interruption, findings.json and the study report."""

import json

import pytest

from topotrace.cli import main
from topotrace.instrument.store import Store


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A two-seed study of a small MLP, one epoch each; interrupted after the first seed, then continued. It records
    the second hidden layer only: nothing here depends on the layer count, and each of its three pages is smaller."""
    import topotrace.studies as study_mod
    from topotrace import train as train_mod

    out = tmp_path_factory.mktemp("runs")
    config = out / "tiny.toml"
    config.write_text("[data]\nheldout_per_class = 12\ntrain_probe_per_class = 0\n[model]\nhidden = [24, 12]\n"
                      "[record]\nsnapshots = 8\nlayers = [\"hidden2\"]\n")
    args = ["study", "--config", str(config), "--seeds", "0,1", "--epochs", "1", "--out-dir", str(out), "--name", "s"]
    trained = []
    real = train_mod.train_run

    def interrupted(cfg, **kw):
        trained.append(cfg["run"]["name"])
        if cfg["run"]["seed"] == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the second seed
        return real(cfg, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(train_mod, "train_run", interrupted)
    assert main(args) == 130  # one line "topotrace: error: interrupted", the study kept for the rerun
    mtime = (out / "s" / "seed-0" / "store.h5").stat().st_mtime_ns
    trained.clear()

    def counting(cfg, **kw):
        trained.append(cfg["run"]["name"])
        return real(cfg, **kw)

    mp.setattr(train_mod, "train_run", counting)
    assert main(args) == 0
    mp.undo()
    assert study_mod.is_study(out / "s")
    return out / "s", trained, mtime


@pytest.mark.slow
def test_resumed_study_does_not_retrain_finished_seeds(study):
    """After the interruption only seed 1 is trained again; seed 0's store is untouched."""
    path, trained, mtime = study
    assert trained == ["seed-1"]
    assert (path / "seed-0" / "store.h5").stat().st_mtime_ns == mtime
    for seed in (0, 1):
        with Store(path / f"seed-{seed}" / "store.h5") as st:
            assert st.meta["seed"] == seed and int(st.steps[-1]) == st.meta["total_steps"]


@pytest.mark.slow
def test_findings_json_lists_every_claim_with_intervals_across_seeds(study):
    """findings.json: the four claims of the layer (confidence claims per measure), 2 runs, each run's effect."""
    path, _, _ = study
    found = json.loads((path / "findings.json").read_text("utf-8"))
    keys = {"layer", "claim", "measure", "effect", "ci_low", "ci_high", "n_runs", "verdict", "rule", "runs"}
    assert all(keys <= set(f) for f in found)
    assert {f["layer"] for f in found} == {"hidden2"}
    time_claims = [f for f in found if f["claim"].endswith("_with_time")]
    assert len(time_claims) == 2 and all(f["measure"] == "" for f in time_claims)
    conf = [f for f in found if f["claim"].endswith("_with_confidence")]
    with Store(path / "seed-0" / "store.h5") as st:
        n_measures = len(st.measures)  # the five defaults, and temp_prob where a train probe set is recorded
    assert len(conf) == 2 * n_measures and conf[0]["measure"] == "logit_margin"  # the default measure leads
    trends = [f for f in found if f["claim"] in ("dormant_share_grows", "nc1_falls")]
    assert len(trends) == 2 and all(f["n_runs"] == 2 for f in trends)
    for f in found:
        assert f["n_runs"] == 2 and [r["run"] for r in f["runs"]] == ["seed 0", "seed 1"]
        assert f["verdict"] in ("supported", "mixed", "negligible", "not supported")
        mean = sum(r["effect"] for r in f["runs"]) / 2  # (for correlations: on Fisher's z scale)
        if f["claim"].endswith("_with_time"):
            assert f["effect"] == pytest.approx(mean)
            assert f["ci_low"] < f["effect"] < f["ci_high"]


@pytest.mark.slow
def test_study_report_opens_with_findings_and_links_seeds(study):
    """The study's report starts with the findings and links each seed's own report, which exists."""
    path, _, _ = study
    page = (path / "report.html").read_text("utf-8")
    assert page.index('id="findings"') < page.index('id="summary"') < page.index('id="maps"')
    assert 'href="./seed-0/report.html"' in page and 'href="./seed-1/report.html"' in page
    assert "t-interval across 2 runs" in page
    assert "Across the study&#39;s 2 seeds" in page or "Across the study's 2 seeds" in page
    assert (path / "seed-1" / "report.html").exists()


def test_study_refuses_a_folder_that_is_not_a_study(tmp_path, capsys):
    """An existing folder that topotrace did not make as a study is refused before anything is trained."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    assert main(["study", "--out-dir", str(tmp_path), "--name", "mine", "--epochs", "1"]) == 2
    assert "not a topotrace study" in capsys.readouterr().err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert main(["study", "--seeds", "1,1", "--out-dir", str(tmp_path)]) == 2


@pytest.mark.slow
def test_study_of_the_same_runs_equals_the_config_study(study, capsys):
    """`topotrace study RUN RUN` over a config study's seed folders gives its findings, number for number."""
    path, _, _ = study
    runs = [str(path / "seed-0"), str(path / "seed-1")]
    assert main(["study", *runs, "--name", "again", "--out-dir", str(path.parent)]) == 0
    capsys.readouterr()

    def numbers(p):
        return [(f["layer"], f["claim"], f["measure"], f["effect"], f["ci_low"], f["ci_high"], f["verdict"],
                 [(r["effect"], r["ci_low"], r["ci_high"]) for r in f["runs"]])
                for f in json.loads((p / "findings.json").read_text("utf-8"))]

    assert numbers(path.parent / "again") == numbers(path)
    assert json.loads((path.parent / "again" / "study.json").read_text("utf-8"))["runs"] == ["../s/seed-0",
                                                                                          "../s/seed-1"]
