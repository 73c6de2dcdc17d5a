"""``tt.report(run)``: the Python equivalent of ``topotrace report RUN`` (same files, same refusals)."""

import json
import os
import re
import shutil
from pathlib import Path

import pytest

import topotrace as tt
from topotrace.analysis.findings import findings, trend_findings
from topotrace.analysis.results import load_results
from topotrace.cli import main
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.reports import report_analyses
from topotrace.runfolder import RunFolder
from topotrace.studies import create_of_runs

pytestmark = pytest.mark.slow  # each test reports a run trained in this module (seconds of setup)

EPOCH = "1700000000"  # the pages' date and ids come from it: the same content gives the same bytes


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """One tiny run (held-out and train probe sets), as two identical copies api/run and cli/run."""
    root = tmp_path_factory.mktemp("tt_report")
    write_synthetic_store(root / "api" / "run" / "store.h5", n_snapshots=3, layer_sizes=(8,), n_classes=3,
                          per_class=5)
    shutil.copytree(root / "api", root / "cli")
    return root


@pytest.fixture(scope="module")
def both(stores):
    """``tt.report`` on api/run and ``topotrace report --layouts pca`` on cli/run (with SOURCE_DATE_EPOCH)."""
    saved = os.environ.get("SOURCE_DATE_EPOCH")
    os.environ["SOURCE_DATE_EPOCH"] = EPOCH
    try:
        result = tt.report(stores / "api" / "run", layout_methods=["pca"])
        assert main(["report", str(stores / "cli" / "run"), "--layouts", "pca"]) == 0
    finally:
        if saved is None:
            os.environ.pop("SOURCE_DATE_EPOCH", None)
        else:
            os.environ["SOURCE_DATE_EPOCH"] = saved
    return result, stores / "api" / "run", stores / "cli" / "run"


def _files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_same_files_as_the_command(both):
    """Both leave the same files in the run folder: the analyses (main and train probe set), pages, findings."""
    _, api, cli = both
    assert _files(api) == _files(cli)
    assert {"analysis.h5", "analysis_train.h5", "report.html", "findings.json"} <= set(_files(api))


def test_same_findings_json(both):
    """findings.json holds the same findings, number for number."""
    _, api, cli = both
    ours = json.loads((api / "findings.json").read_text("utf-8"))
    theirs = json.loads((cli / "findings.json").read_text("utf-8"))
    assert ours == theirs and len(ours) > 0
    assert {f["layer"] for f in ours if f.get("layer")} == {"layer0"}


def _content(page: Path, folder: Path) -> str:
    """A page's text without what differs between two analyses of copies: the store's path, the timings."""
    text = page.read_text("utf-8").replace(str(folder), "RUN")
    text = re.sub(r"(<code>seconds</code></th><td><code>)[0-9.e+-]+", r"\1S", text)  # the analysis' seconds
    return re.sub(r'(<td class="num">)[0-9.]+(</td></tr>)', r"\1S\2", text)  # each layout's seconds (last column)


def test_same_pages(both):
    """The same pages with the same content (dated by SOURCE_DATE_EPOCH), the train probe set's claims in both."""
    _, api, cli = both
    pages = [p.relative_to(api) for p in RunFolder(api).report_pages()]
    assert pages == [p.relative_to(cli) for p in RunFolder(cli).report_pages()]
    for rel in pages:
        assert _content(api / rel, api) == _content(cli / rel, cli), rel
    assert "train probe set" in (api / "report.html").read_text("utf-8")


def test_returns_what_it_wrote(both):
    """The result names the page (and is usable as its path), every page, findings.json and the findings."""
    result, api, _ = both
    assert result.path == api / "report.html" and os.fspath(result) == str(api / "report.html")
    assert result.pages == RunFolder(api).report_pages()
    assert result.findings_path == api / "findings.json"
    assert len(result.found) == len(json.loads(result.findings_path.read_text("utf-8")))
    assert result.cached is False  # analysed now: there was no analysis.h5
    again = report_analyses(RunFolder(api))  # without parameters: the cached analyses, whatever made them
    assert again.cached is True and again.results.params == result_params(api)
    assert again.train is not None and again.train.probe_set == "train"


def result_params(run: Path) -> dict:
    return load_results(run / "analysis.h5").params


def _cli_error(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("topotrace: error: "), lines
    return lines[0].removeprefix("topotrace: error: ")


def test_not_a_run_is_refused_as_the_command_does(tmp_path, capsys):
    """A folder without a store: the same one line as ``topotrace report``, nothing written."""
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        tt.report(tmp_path / "empty")
    assert str(err.value) == _cli_error(["report", str(tmp_path / "empty")], capsys)
    assert "folder without store.h5" in str(err.value)
    assert list((tmp_path / "empty").iterdir()) == []


@pytest.mark.parametrize("name", ["report.html", "findings.json"])
def test_a_users_file_is_refused_as_the_command_does(stores, tmp_path, capsys, name):
    """A user's report.html (or findings.json) in the way: the command's one line, the file kept, nothing written."""
    run = tmp_path / "run"
    shutil.copytree(stores / "api" / "run", run, ignore=shutil.ignore_patterns("report*", "findings.json"))
    mine = b"my own notes\n"
    (run / name).write_bytes(mine)
    before = _files(run)
    with pytest.raises(FileExistsError) as err:
        tt.report(run)
    assert str(err.value) == _cli_error(["report", str(run)], capsys)
    assert "was not written by topotrace" in str(err.value)
    assert (run / name).read_bytes() == mine and _files(run) == before


def test_bad_values_refused_before_any_work(stores, tmp_path):
    """A page budget below 2 MB or a negative smallest effect: one line, nothing written."""
    run = tmp_path / "run"
    shutil.copytree(stores / "api" / "run", run, ignore=shutil.ignore_patterns("report*", "findings.json", "ana*"))
    with pytest.raises(ValueError, match="page-budget"):
        tt.report(run, page_budget=1.0)
    with pytest.raises(ValueError, match="min_r"):
        tt.report(run, min_r=-0.1)
    assert _files(run) == ["store.h5"]


def test_study_report(tmp_path):
    """A study folder: the findings across its runs (claims and trends), computed here from the runs' analyses."""
    runs, results = [], []
    for seed in (0, 1):
        runs.append(write_synthetic_store(tmp_path / f"r{seed}" / "store.h5", n_snapshots=3, layer_sizes=(8,),
                                          n_classes=3, per_class=5, seed=seed, with_train_probe=False).parent)
        results.append(tt.analyze(runs[-1], layout_methods=["pca"]))  # the study uses the cached analyses
    create_of_runs(tmp_path / "s", "s", runs)
    result = tt.report(tmp_path / "s")
    assert result.path == tmp_path / "s" / "report.html" and result.findings_path == tmp_path / "s" / "findings.json"
    expected = [*findings(results, ["r0", "r1"]), *trend_findings(results, ["r0", "r1"])]
    written = json.loads(result.findings_path.read_text("utf-8"))
    assert written == json.loads(json.dumps([f.to_json() for f in expected]))
    assert result.cached is None and len(result.found) > 0
