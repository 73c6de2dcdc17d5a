"""topotrace archive and verify: a whole, self-describing, reproducible bundle, and the check that finds damage."""

import hashlib
import json
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from topotrace.cli import main
from topotrace.instrument.synthetic import write_synthetic_store

EPOCH = 1700000000  # 2023-11-14 22:13:20 UTC
META_FILES = {"environment.json", "CITATION.cff", "ro-crate-metadata.json", "MANIFEST.sha256", "README.txt"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny analysed run in runs/tiny (with a config and findings beside the store)."""
    run = tmp_path_factory.mktemp("arch") / "runs" / "tiny"
    run.mkdir(parents=True)
    write_synthetic_store(run / "store.h5", n_snapshots=4, layer_sizes=(16,), n_classes=3, per_class=6,
                          meta={"versions": {"torch": "9.9.9", "python": "3.11"}})
    assert main(["analyze", str(run), "--layouts", "pca"]) == 0
    (run / "config.toml").write_text('[train]\nsteps = 15\n', "utf-8")
    (run / "findings.json").write_text("[]\n", "utf-8")
    return run


@pytest.fixture(scope="module")
def bundle(run_dir) -> Path:
    """The run's archive at the default place (runs/tiny.zip), written with a fixed SOURCE_DATE_EPOCH."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
        assert main(["archive", str(run_dir)]) == 0
    return run_dir.with_name("tiny.zip")


@pytest.fixture
def unpacked(bundle, tmp_path) -> Path:
    """A fresh unpacked copy of the bundle."""
    with zipfile.ZipFile(bundle) as zf:
        zf.extractall(tmp_path / "tiny")
    return tmp_path / "tiny"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_archive_then_verify_passes(bundle, capsys):
    """A fresh archive verifies: exit 0, one line saying so."""
    capsys.readouterr()
    assert main(["verify", str(bundle)]) == 0
    assert "holds" in capsys.readouterr().out


def test_bundle_holds_the_run_and_its_description(bundle):
    """The zip holds the store, analysis, config, findings, report and the five describing files, sorted."""
    with zipfile.ZipFile(bundle) as zf:
        names = zf.namelist()
        infos = zf.infolist()
    assert names == sorted(names)
    assert set(names) == {"store.h5", "analysis.h5", "config.toml", "findings.json", "report.html"} | META_FILES
    assert {i.date_time for i in infos} == {(2023, 11, 14, 22, 13, 20)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}


def test_manifest_lists_every_other_file_in_sha256sum_format(unpacked):
    """MANIFEST.sha256: '<sha256>  <file>' for every other file, sorted, each checksum right."""
    lines = (unpacked / "MANIFEST.sha256").read_text("utf-8").splitlines()
    names = [line.split("  ", 1)[1] for line in lines]
    files = sorted(p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file())
    assert names == sorted(names) == [f for f in files if f != "MANIFEST.sha256"]
    for line in lines:
        digest, name = line.split("  ", 1)
        assert digest == _sha((unpacked / name).read_bytes())


def test_ro_crate_describes_every_file_with_its_checksum(unpacked):
    """The RO-Crate loads with ro-crate-py and lists every file with sha256, format and description."""
    from rocrate.rocrate import ROCrate

    raw = json.loads((unpacked / "ro-crate-metadata.json").read_text("utf-8"))
    assert raw["@context"] == "https://w3id.org/ro/crate/1.1/context"
    crate = ROCrate(unpacked)  # the library's own parsing and checks of the metadata
    assert crate.datePublished.isoformat() == "2023-11-14T22:13:20+00:00"
    entities = {e.id: e for e in crate.data_entities}
    files = {p.relative_to(unpacked).as_posix() for p in unpacked.rglob("*") if p.is_file()}
    assert set(entities) == files - {"ro-crate-metadata.json"}
    for name, e in entities.items():
        assert e["encodingFormat"] and e["description"], name
        if name != "MANIFEST.sha256":  # it holds the crate's checksum, so the crate cannot hold its own
            assert e["sha256"] == _sha((unpacked / name).read_bytes()), name
            assert int(e["contentSize"]) == (unpacked / name).stat().st_size
    assert entities["store.h5"]["encodingFormat"] == "application/x-hdf5"


def test_citation_cff_validates_and_cites_the_methods_and_topotrace(unpacked):
    """CITATION.cff is valid CFF 1.2.0 (cffconvert's validator) and cites both papers and topotrace's version."""
    cffconvert = pytest.importorskip("cffconvert")
    text = (unpacked / "CITATION.cff").read_text("utf-8")
    cffconvert.Citation(cffstr=text).validate()
    assert "cff-version: 1.2.0" in text
    assert "Visualizing Deep Neural Networks with Topographic Activation Maps" in text
    assert "Relation of Activity and Confidence when Training Deep Neural Networks" in text
    assert f'version: "{metadata.version("topotrace")}"' in text


def test_environment_lists_every_distribution_sorted(unpacked):
    """environment.json: the format, the epoch, the Python version and every distribution, sorted by name."""
    env = json.loads((unpacked / "environment.json").read_text("utf-8"))
    assert env["format"] == "topotrace-archive" and env["source_date_epoch"] == EPOCH and env["kind"] == "run"
    names = [d["name"] for d in env["distributions"]]
    assert names == sorted(names, key=str.lower)
    versions = {d["name"].lower(): d["version"] for d in env["distributions"]}
    assert versions["rocrate"] == metadata.version("rocrate") and versions["numpy"] == metadata.version("numpy")
    assert env["python"]["version"].count(".") == 2


def test_readme_names_every_file_and_the_rebuild_command(unpacked):
    """README.txt describes each file and gives the commands that verify and rebuild the report."""
    text = (unpacked / "README.txt").read_text("utf-8")
    for p in unpacked.rglob("*"):
        if p.is_file():
            assert p.name in text
    assert "topotrace verify tiny.zip" in text
    assert f"SOURCE_DATE_EPOCH={EPOCH} topotrace report store.h5" in text


def test_report_has_the_epoch_date_and_every_library_version(unpacked):
    """The bundled report is dated by the epoch and lists the recording's and the analysis' library versions."""
    html = (unpacked / "report.html").read_text("utf-8")
    assert "2023-11-14 22:13 UTC" in html
    assert "torch (recording)" in html and "9.9.9" in html
    for name in ("numpy", "scipy", "scikit-learn", "h5py", "bokeh", "topotrace"):
        assert f"{name} (analysis)" in html, name


def test_archive_twice_gives_the_same_bytes(bundle, run_dir, monkeypatch, capsys):
    """With SOURCE_DATE_EPOCH set, archiving again replaces the old archive with the very same bytes."""
    first = bundle.read_bytes()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    assert main(["archive", str(run_dir), "--out", str(bundle)]) == 0
    assert bundle.read_bytes() == first
    assert str(bundle) in capsys.readouterr().out


def test_report_twice_gives_the_same_bytes(run_dir, tmp_path, monkeypatch):
    """With SOURCE_DATE_EPOCH set, `topotrace report` writes the same bytes twice (no random ids, fixed date)."""
    run = tmp_path / "tiny"
    shutil.copytree(run_dir, run)  # a copy: the report also analyses the train probe set next to the store
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        assert main(["report", str(run), "--out", str(tmp_path / name / "report.html")]) == 0
    assert (tmp_path / "a" / "report.html").read_bytes() == (tmp_path / "b" / "report.html").read_bytes()


def test_flipped_byte_in_the_store_fails_verify(bundle, tmp_path, capsys):
    """One byte changed in the bundled store: exit 1 and a line naming store.h5."""
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(bad, "w") as dest:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "store.h5":
                data = data[:-100] + bytes([data[-100] ^ 0xFF]) + data[-99:]
            dest.writestr(info, data)
    capsys.readouterr()
    assert main(["verify", str(bad)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("store.h5: checksum differs") for line in out), out


def test_missing_and_unlisted_files_fail_verify(unpacked, capsys):
    """A removed file and an added one: exit 1, each named on its own line."""
    (unpacked / "analysis.h5").unlink()
    (unpacked / "extra.txt").write_text("hello", "utf-8")
    capsys.readouterr()
    assert main(["verify", str(unpacked)]) == 1
    out = capsys.readouterr().out
    assert "analysis.h5: listed in MANIFEST.sha256 but missing" in out
    assert "extra.txt: present but not listed in MANIFEST.sha256" in out


def test_report_that_differs_from_the_rebuilt_one_fails_verify(unpacked, capsys):
    """A report edited (and its checksum updated to match): exit 1, report.html differs from the rebuilt one."""
    report = unpacked / "report.html"
    report.write_text(report.read_text("utf-8").replace("2023-11-14 22:13 UTC", "2024-01-01 00:00 UTC"), "utf-8")
    manifest = unpacked / "MANIFEST.sha256"
    lines = [f"{_sha(report.read_bytes())}  report.html" if line.endswith("  report.html") else line
             for line in manifest.read_text("utf-8").splitlines()]
    manifest.write_text("\n".join(lines) + "\n", "utf-8")
    capsys.readouterr()
    assert main(["verify", str(unpacked)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == ["report.html: differs from the one rebuilt from the bundled analysis"]


def _refused(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("topotrace: error: ")
    return err[0]


def test_not_a_run_folder_is_refused_before_writing(tmp_path, capsys):
    """A folder without store.h5 or study.json: one line, no zip written."""
    (tmp_path / "empty").mkdir()
    assert "is not a run folder" in _refused(["archive", str(tmp_path / "empty")], capsys)
    assert not (tmp_path / "empty.zip").exists()
    assert "No run folder" in _refused(["archive", str(tmp_path / "nothing")], capsys)


def test_out_that_is_not_an_archive_is_never_overwritten(run_dir, tmp_path, capsys):
    """--out naming a file topotrace did not write: one line, the file untouched."""
    other = tmp_path / "thesis.zip"
    other.write_bytes(b"my thesis")
    assert "is not a topotrace archive" in _refused(["archive", str(run_dir), "--out", str(other)], capsys)
    assert other.read_bytes() == b"my thesis"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thesis.zip"]


def test_out_in_a_missing_folder_is_refused(run_dir, tmp_path, capsys):
    """--out in a folder that does not exist: one line, nothing created."""
    line = _refused(["archive", str(run_dir), "--out", str(tmp_path / "no" / "x.zip")], capsys)
    assert "does not exist" in line and not (tmp_path / "no").exists()


def test_run_without_analysis_is_refused(tmp_path, capsys):
    """A run not analysed yet: one line naming `topotrace analyze`, no zip."""
    run = tmp_path / "raw"
    run.mkdir()
    write_synthetic_store(run / "store.h5", n_snapshots=2, layer_sizes=(8,), n_classes=2, per_class=3)
    assert "topotrace analyze" in _refused(["archive", str(run)], capsys)
    assert not (tmp_path / "raw.zip").exists()


def test_verify_bad_input_is_an_error(tmp_path, capsys):
    """verify of a missing path or a non-zip file: the usual one-line error (exit 2)."""
    assert "No archive at" in _refused(["verify", str(tmp_path / "missing.zip")], capsys)
    (tmp_path / "x.txt").write_text("x", "utf-8")
    assert "neither a zip nor a folder" in _refused(["verify", str(tmp_path / "x.txt")], capsys)


def test_verify_refuses_unsafe_zip_entries(tmp_path, capsys):
    """A zip with a '..' or absolute entry: refused before anything is extracted."""
    for k, name in enumerate(("../evil.txt", "/abs/evil.txt")):
        z = tmp_path / f"evil{k}.zip"
        with zipfile.ZipFile(z, "w") as zf:
            zf.writestr("MANIFEST.sha256", "")
            zf.writestr(name, "boo")
        assert "unsafe entry" in _refused(["verify", str(z)], capsys)
    assert not (tmp_path.parent / "evil.txt").exists()
