"""`topotrace atlas`: a study per config, atlas.json and index.html; relative depth; resumable."""

import json
from pathlib import Path

import h5py
import pytest

from topotrace.cli import main

TINY = "[data]\nheldout_per_class = 6\ntrain_probe_per_class = 0\n[record]\nsnapshots = 4\n"


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    """A two-config atlas of seeds 0 and 1, interrupted (Ctrl-C) while the first config's seed 1 trains, then
    continued by the same command. Returns (root, args, seeds trained by the second run, seed 0's store mtime)."""
    from topotrace import train as train_mod

    root = tmp_path_factory.mktemp("atlas")
    (root / "mlp_tiny.toml").write_text(TINY + "[model]\nhidden = [8, 6]\n")
    # the CNN records its second layer only (relative depth 2/3 alone; the MLP's two layers show the order)
    (root / "cnn_tiny.toml").write_text(TINY.replace("snapshots = 4\n", "snapshots = 4\nlayers = [\"conv2\"]\n")
                                        + "[model]\nkind = \"cnn\"\nchannels = [4, 4]\n")
    args = ["atlas", str(root / "mlp_tiny.toml"), str(root / "cnn_tiny.toml"), "--seeds", "0,1", "--epochs", "1",
            "--layouts", "pca",  # the analysis options reach every seed (the layouts are not what is tested here)
            "--name", "a", "--out-dir", str(root)]
    real, trained = train_mod.train_run, []

    def interrupted(cfg, **kw):
        if cfg["run"]["seed"] == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C during the first config's second seed
        return real(cfg, **kw)

    def counting(cfg, **kw):
        trained.append(f"{Path(cfg['run']['out_dir']).name}/{cfg['run']['name']}")
        return real(cfg, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_mod, "train_run", interrupted)
        assert main(args) == 130  # "topotrace: error: interrupted", the atlas kept for the rerun
        assert "entries" not in json.loads((root / "a" / "atlas.json").read_text("utf-8"))  # its numbers come last
        mtime = (root / "a" / "mlp_tiny" / "seed-0" / "store.h5").stat().st_mtime_ns
        mp.setattr(train_mod, "train_run", counting)
        assert main(args) == 0
    return root, args, trained, mtime


@pytest.mark.slow
def test_atlas_json_holds_each_study_by_relative_depth(atlas):
    """One entry per config in order; layers by relative depth (weight layers up to the layer / all of them)."""
    root = atlas[0]
    data = json.loads((root / "a" / "atlas.json").read_text("utf-8"))
    assert data["format"] == "topotrace-atlas" and data["seeds"] == [0, 1]
    assert [e["study"] for e in data["entries"]] == ["mlp_tiny", "cnn_tiny"]
    assert [e["architecture"] for e in data["entries"]] == ["mlp", "cnn"]
    # MLP: Linear(64,8), Linear(8,6), Linear(6,10): hidden1 = 1/3, hidden2 = 2/3; the CNN's conv1, conv2, out too
    for entry, names, depths in zip(data["entries"], (["hidden1", "hidden2"], ["conv2"]), ([1 / 3, 2 / 3], [2 / 3])):
        assert [row["layer"] for row in entry["layers"]] == names
        assert [row["relative_depth"] for row in entry["layers"]] == pytest.approx(depths)
        assert 0 <= entry["heldout_accuracy"]["mean"] <= 1 and len(entry["heldout_accuracy"]["seeds"]) == 2
        assert entry["seconds"]["training"] > 0 and entry["seconds"]["analysis"] > 0
        for seed in (0, 1):  # the atlas's analysis options reached every seed's analysis
            with h5py.File(root / "a" / entry["study"] / f"seed-{seed}" / "analysis.h5", "r") as f:
                assert json.loads(f.attrs["params"])["layout_methods"] == ["pca"]


@pytest.mark.slow
def test_atlas_cells_equal_each_study_findings(atlas):
    """Every cell is the study's own finding (primary measure for the confidence claims), number for number."""
    root = atlas[0]
    data = json.loads((root / "a" / "atlas.json").read_text("utf-8"))
    for entry in data["entries"]:
        found = json.loads((root / "a" / entry["study"] / "findings.json").read_text("utf-8"))
        for row in entry["layers"]:
            assert list(row["claims"]) == data["claims"]
            for claim, cell in row["claims"].items():
                ref = next(f for f in found if f["layer"] == row["layer"] and f["claim"] == claim)
                assert (cell["effect"], cell["ci_low"], cell["ci_high"], cell["verdict"], cell["n_runs"]) == (
                    ref["effect"], ref["ci_low"], ref["ci_high"], ref["verdict"], 2)


@pytest.mark.slow
def test_atlas_page_links_each_study_and_shows_every_verdict(atlas):
    root = atlas[0]
    page = (root / "a" / "index.html").read_text("utf-8")
    data = json.loads((root / "a" / "atlas.json").read_text("utf-8"))
    assert 'href="./mlp_tiny/report.html"' in page and 'href="./cnn_tiny/report.html"' in page
    assert (root / "a" / "mlp_tiny" / "report.html").is_file()
    for entry in data["entries"]:
        for row in entry["layers"]:
            for cell in row["claims"].values():
                assert cell["verdict"] in page
    assert "relative depth" in page and "<link " not in page  # styles inline


@pytest.mark.slow
def test_atlas_continues_without_retraining(atlas, capsys):
    """The interrupted atlas, run again, trains only what was not finished (seed 0 of the first config is kept);
    another seed list is refused in one line."""
    root, args, trained, mtime = atlas
    assert trained == ["mlp_tiny/seed-1", "cnn_tiny/seed-0", "cnn_tiny/seed-1"]
    assert (root / "a" / "mlp_tiny" / "seed-0" / "store.h5").stat().st_mtime_ns == mtime
    capsys.readouterr()
    other = [a if a != "0,1" else "0,1,2" for a in args]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds an atlas of other configs or seeds" in err


def test_depth_charts_draw_time_claims_relative_to_the_first_snapshot():
    """A change of 0.2 from a first-snapshot mean of 0.4 is drawn as 50 %, its interval 0.1..0.3 as 25..75 %."""
    from topotrace.report_templates.atlas import plotted

    cell = {"effect": 0.2, "relative": 0.5, "ci_low": 0.1, "ci_high": 0.3}
    assert plotted(cell, "time") == pytest.approx((50.0, 25.0, 75.0))
    assert plotted(cell, "confidence") == (0.2, 0.1, 0.3)  # correlations as they are
