"""topotrace archive and verify: a whole, self-describing, reproducible bundle, and the check that finds damage."""

import hashlib
import json
import os
import shutil
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from topotrace.cli import main
from topotrace.instrument.synthetic import write_synthetic_store

pytestmark = pytest.mark.slow  # tests/conftest.py; make test-fast leaves these out

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


# --- a damaged zip is a verification failure naming the member ----------------------------------------------------

def _member_data_offset(zip_path: Path, name: str) -> tuple[int, int]:
    """(offset of the member's compressed bytes, their length), read from its local header by hand."""
    with zipfile.ZipFile(zip_path) as zf:
        info = zf.getinfo(name)
    raw = zip_path.read_bytes()
    head = raw[info.header_offset : info.header_offset + 30]
    assert head[:4] == b"PK\x03\x04"
    nlen, elen = int.from_bytes(head[26:28], "little"), int.from_bytes(head[28:30], "little")
    return info.header_offset + 30 + nlen + elen, info.compress_size


def _verify_lines(path, capsys) -> tuple[int, list[str], str]:
    capsys.readouterr()
    code = main(["verify", str(path)])
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err


@pytest.mark.parametrize("member", ["store.h5", "report.html", "MANIFEST.sha256"])
def test_flipped_byte_in_a_zip_member_fails_verify_naming_it(bundle, tmp_path, capsys, member):
    """One byte of a member's compressed data flipped in the zip itself (its CRC-32 or deflate stream fails):
    exit 1, a line naming the member, never 'a bug in topotrace'."""
    start, length = _member_data_offset(bundle, member)
    raw = bytearray(bundle.read_bytes())
    raw[start + length // 2] ^= 0x01
    bad = tmp_path / "flipped.zip"
    bad.write_bytes(bytes(raw))
    code, out, err = _verify_lines(bad, capsys)
    assert code == 1 and err == ""
    assert any(line.startswith(f"{member}: damaged in the zip") for line in out), out
    assert not any("bug in topotrace" in line or "/tmp" in line for line in out), out
    assert not any(line.startswith(f"{member}: listed in") for line in out)  # said once


def test_truncated_zip_fails_verify_naming_the_member_it_ends_in(bundle, tmp_path, capsys):
    """A zip cut inside store.h5: exit 1, a line naming store.h5 as cut off."""
    start, length = _member_data_offset(bundle, "store.h5")
    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[: start + length // 3])
    code, out, err = _verify_lines(cut, capsys)
    assert code == 1 and err == ""
    assert len(out) == 1 and out[0].startswith("store.h5: cut off: the zip ends inside it"), out
    # cut in the member list at the end: every member is whole, the list is gone
    with zipfile.ZipFile(bundle) as zf:
        last = max(zf.infolist(), key=lambda i: i.header_offset).filename
    cut.write_bytes(bundle.read_bytes()[:-30])
    code, out, _ = _verify_lines(cut, capsys)
    assert code == 1 and out == [f"cut.zip: truncated: the zip ends after {last} ({cut.stat().st_size} bytes); its "
                                 "member list (central directory) and every later member are missing"]


def test_zip_missing_a_member_fails_verify_naming_it(bundle, tmp_path, capsys):
    """A zip without analysis.h5 (rewritten whole, so the zip itself is sound): the manifest names it."""
    bad = tmp_path / "missing.zip"
    with zipfile.ZipFile(bundle) as src, zipfile.ZipFile(bad, "w") as dest:
        for info in src.infolist():
            if info.filename != "analysis.h5":
                dest.writestr(info, src.read(info))
    code, out, _ = _verify_lines(bad, capsys)
    assert code == 1
    assert "analysis.h5: listed in MANIFEST.sha256 but missing" in out
    assert any(line.startswith("report.html: not checked") and "analysis.h5" in line for line in out), out


def test_zip_with_a_damaged_member_list_fails_verify(bundle, tmp_path, capsys):
    """The central directory's first entry signature destroyed: one line saying the member list is damaged."""
    raw = bytearray(bundle.read_bytes())
    with zipfile.ZipFile(bundle) as zf:
        first = min(i.header_offset for i in zf.infolist())
    assert first == 0
    cd = raw.rfind(b"PK\x01\x02", 0, len(raw))  # the last central directory entry
    raw[cd : cd + 4] = b"XXXX"
    bad = tmp_path / "list.zip"
    bad.write_bytes(bytes(raw))
    code, out, err = _verify_lines(bad, capsys)
    assert code == 1 and err == "" and len(out) == 1
    assert out[0].startswith("list.zip: its member list (central directory) is damaged, so no member can be read")


def test_verify_of_a_fifo_is_refused_without_opening_it(tmp_path, capsys):
    """A FIFO named like a zip: one line (exit 2), never a read that waits for a writer."""
    fifo = tmp_path / "x.zip"
    os.mkfifo(fifo)
    assert "not a regular file" in _refused(["verify", str(fifo)], capsys)


# --- authors ----------------------------------------------------------------------------------------------------------

def test_orcid_check_character_by_hand():
    """ISO 7064 MOD 11-2 on the ORCID documentation's examples, and one digit changed."""
    from topotrace.authors import orcid_checksum_ok

    assert orcid_checksum_ok("0000-0002-1825-0097") and orcid_checksum_ok("0000-0001-5109-3700")
    assert orcid_checksum_ok("0000-0002-1694-233X")
    assert not orcid_checksum_ok("0000-0002-1825-0098") and not orcid_checksum_ok("0000-0002-1694-2339")


def test_authors_go_into_citation_and_crate(run_dir, tmp_path, capsys, monkeypatch):
    """--author twice: CITATION.cff (valid CFF, cffconvert) and the RO-Crate name both, in order, with the ORCID."""
    import cffconvert
    from rocrate.rocrate import ROCrate

    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    out = tmp_path / "named.zip"
    assert main(["archive", str(run_dir), "--out", str(out), "--author", "Josiah Carberry <0000-0002-1825-0097>",
                 "--author", "van Beethoven, Ludwig"]) == 0
    with zipfile.ZipFile(out) as zf:
        zf.extractall(tmp_path / "named")
    text = (tmp_path / "named" / "CITATION.cff").read_text("utf-8")
    cffconvert.Citation(cffstr=text).validate()
    head = text.split("references:")[0]
    assert head.index('family-names: "Carberry"') < head.index('family-names: "van Beethoven"')
    assert 'given-names: "Josiah"' in head and 'orcid: "https://orcid.org/0000-0002-1825-0097"' in head
    assert 'given-names: "Ludwig"' in head and "The topotrace authors" not in head
    crate = ROCrate(tmp_path / "named")
    authors = crate.root_dataset["author"]
    assert [a.id for a in authors] == ["https://orcid.org/0000-0002-1825-0097", "#author-2"]
    assert [a["name"] for a in authors] == ["Josiah Carberry", "Ludwig van Beethoven"]
    capsys.readouterr()
    assert main(["verify", str(out)]) == 0


def test_authors_from_the_store_meta(tmp_path, capsys, monkeypatch):
    """Recorder meta {'authors': [...]} names the bundle's authors when no --author is given."""
    run = tmp_path / "runs" / "m"
    run.mkdir(parents=True)
    write_synthetic_store(run / "store.h5", n_snapshots=3, layer_sizes=(8,), n_classes=2, per_class=4,
                          meta={"authors": ["Ada Lovelace <0000-0001-5109-3700>"]})
    assert main(["analyze", str(run), "--layouts", "pca"]) == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    assert main(["archive", str(run)]) == 0
    with zipfile.ZipFile(run.with_name("m.zip")) as zf:
        text = zf.read("CITATION.cff").decode()
    assert 'family-names: "Lovelace"' in text and "https://orcid.org/0000-0001-5109-3700" in text


@pytest.mark.parametrize(("author", "words"), [
    ("Josiah Carberry <0000-0002-1825-0098>", "check character does not match"),
    ("Josiah Carberry <1234>", "16 digits in four groups"),
    ("<0000-0002-1825-0097>", "is not an author"),
])
def test_bad_author_is_refused_in_one_line(run_dir, tmp_path, capsys, author, words):
    out = tmp_path / "x.zip"
    line = _refused(["archive", str(run_dir), "--out", str(out), "--author", author], capsys)
    assert "--author" in line and words in line and "0000-0002-1825-0097" in line
    assert not out.exists() and list(tmp_path.iterdir()) == []


# --- staging next to the output, never in the temp folder ------------------------------------------------------------

def test_archive_stages_next_to_its_zip_and_leaves_nothing(run_dir, tmp_path, capsys, monkeypatch):
    """Nothing in the temp folder during an archive; nothing but the zip next to it afterwards."""
    import tempfile

    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    seen = []
    import topotrace.archive as archive

    real = archive.build_reports

    def spy(root, kind):
        seen.append(root)
        return real(root, kind)

    monkeypatch.setattr(archive, "build_reports", spy)
    assert main(["archive", str(run_dir), "--out", str(out_dir / "a.zip")]) == 0
    assert seen and seen[0].parent == out_dir / ".a.zip.topotrace-staging"
    assert [p.name for p in out_dir.iterdir()] == ["a.zip"]
    assert list(temp.iterdir()) == []


def test_stale_staging_from_a_kill_is_removed_only_when_topotrace_made_it(run_dir, tmp_path, capsys):
    """A staging folder a killed archive left (marked, unlocked) goes; a user's folder of that name stays."""
    from topotrace.archive import STAGING_MARK, STAGING_TEXT

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stale = out_dir / ".old.zip.topotrace-staging"
    (stale / "old").mkdir(parents=True)
    (stale / "old" / "store.h5").write_bytes(b"x" * 100)
    (stale / STAGING_MARK).write_text(STAGING_TEXT, "utf-8")
    users = out_dir / ".b.zip.topotrace-staging"
    users.mkdir()
    (users / "notes.txt").write_text("mine", "utf-8")
    assert main(["archive", str(run_dir), "--out", str(out_dir / "a.zip")]) == 0
    assert not stale.exists()
    assert (users / "notes.txt").read_text("utf-8") == "mine"
    # the user's folder holds the name the archive of b.zip would stage in: refused in one line, left alone
    assert "was not made by topotrace" in _refused(["archive", str(run_dir), "--out", str(out_dir / "b.zip")],
                                                   capsys)
    assert (users / "notes.txt").read_text("utf-8") == "mine" and not (out_dir / "b.zip").exists()


def test_config_study_archives_with_its_reports_rebuilt(tmp_path, capsys, monkeypatch):
    """A config study (study.json with seeds, seed-K/ runs): bundled with each seed's report and the study's
    findings.json rebuilt from the bundled analyses (the seeds' stores are not re-checked for training)."""
    study = tmp_path / "runs" / "st"
    for seed in (0, 1):
        write_synthetic_store(study / f"seed-{seed}" / "store.h5", n_snapshots=3, layer_sizes=(8,), n_classes=3,
                              per_class=4, seed=seed, with_train_probe=False)
        assert main(["analyze", str(study / f"seed-{seed}"), "--layouts", "pca"]) == 0
    (study / "study.json").write_text(json.dumps({"format": "topotrace-study", "name": "st", "seeds": [0, 1],
                                                  "config": {}}), "utf-8")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", str(EPOCH))
    capsys.readouterr()
    assert main(["archive", str(study)]) == 0, capsys.readouterr().err
    with zipfile.ZipFile(study.with_name("st.zip")) as zf:
        names = set(zf.namelist())
        found = json.loads(zf.read("findings.json"))
    assert {"study.json", "report.html", "findings.json"} <= names
    assert {f"seed-{s}/{n}" for s in (0, 1) for n in ("store.h5", "analysis.h5", "report.html")} <= names
    assert {f["layer"] for f in found if f.get("layer")} == {"layer0"} and {f["n_runs"] for f in found} == {2}
