"""``--out`` never replaces a file topotrace did not write (issue 23, overwrites).

Each case puts something at the output path (a user's file, a file that only looks like an output, a link, a
FIFO, a folder), runs the command and checks: exit code 2, one ``topotrace: error:`` line naming the path, and
every file left byte for byte as it was. A file that topotrace wrote itself at that path is replaced.
"""

import os
import shutil
import stat
import threading
from pathlib import Path

import pytest

from topotrace.analysis.pipeline import analyze
from topotrace.cli import main
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates.outputs import atomic_output, check_output, written_by_topotrace

MSG = "exists and was not written by topotrace; choose another path or remove it yourself"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two tiny analysed runs a/ and b/ in one folder (analysed once: every command uses the cache)."""
    root = tmp_path_factory.mktemp("runs")
    for seed, name in enumerate("ab"):
        write_synthetic_store(root / name / "store.h5", n_snapshots=3, layer_sizes=(8,), n_classes=3, per_class=4,
                              with_train_probe=False, seed=seed)
        analyze(root / name / "store.h5", root / name / "analysis.h5", layout_methods=["pca"])
    return root


def snapshot(root: Path) -> dict[str, bytes | str]:
    """Every entry below ``root``: a file's bytes, a link's target, a folder or FIFO by kind."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            mode = os.lstat(p).st_mode
            out[str(p.relative_to(root))] = (f"link:{os.readlink(p)}" if stat.S_ISLNK(mode) else
                                             "dir" if stat.S_ISDIR(mode) else "fifo" if stat.S_ISFIFO(mode) else
                                             p.read_bytes())
    return out


def refused(argv, capsys, path_text: str, expected: str = MSG) -> str:
    """Run ``argv``: exit 2 and one error line holding ``path_text`` and ``expected``."""
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("topotrace: error: "), err
    assert path_text in lines[0] and expected in lines[0], lines[0]
    return lines[0]


USER_FILES = {
    "notes.html": b"<html><body>my own notes, hours of work</body></html>\n",
    "thesis.pdf": b"%PDF-1.7\n% my thesis\n1 0 obj << /Creator (LaTeX) >> endobj\nstartxref\n9\n%%EOF\n",
    "data.json": b'{"important": [1, 2, 3]}\n',
    "empty.html": b"",
    "lookalike.html": b"<html><head><title>my page</title></head><body>&lt;meta name=\"generator\" "
                      b"content=\"topotrace\"&gt; only quoted in the body</body></html>\n" + b"x" * 9000,
}


@pytest.mark.parametrize("name", ["notes.html", "empty.html", "lookalike.html"])
def test_compare_out_keeps_a_users_file(runs, tmp_path, capsys, name):
    """compare --out on a file topotrace did not write: exit 2, one line, the file byte-identical."""
    target = tmp_path / name
    target.write_bytes(USER_FILES[name])
    before = snapshot(tmp_path)
    refused(["compare", str(runs / "a"), str(runs / "b"), "--out", str(target)], capsys, str(target))
    assert snapshot(tmp_path) == before


def test_report_out_keeps_a_users_file_and_findings(runs, tmp_path, capsys):
    """report --out on a user's page, and on a free path with a user's findings.json beside it: both refused."""
    page = tmp_path / "r.html"
    page.write_bytes(USER_FILES["notes.html"])
    before = snapshot(tmp_path)
    refused(["report", str(runs / "a"), "--out", str(page)], capsys, str(page))
    assert snapshot(tmp_path) == before

    page.unlink()
    (tmp_path / "findings.json").write_bytes(USER_FILES["data.json"])  # valid JSON, but not findings
    before = snapshot(tmp_path)
    refused(["report", str(runs / "a"), "--out", str(page)], capsys, "findings.json")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("fmt,name", [("pdf", "thesis.pdf"), ("svg", "notes.svg"), ("png", "photo.png")])
def test_figure_out_keeps_a_users_file(runs, tmp_path, capsys, fmt, name):
    """figure --out on a user's PDF, SVG or PNG: exit 2, one line, the file byte-identical."""
    content = {"pdf": USER_FILES["thesis.pdf"],
               "svg": b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"><title>topotrace</title></svg>',
               "png": b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR" + bytes(17) + b"\x00\x00\x00\x00IEND\xaeB`\x82"}[fmt]
    target = tmp_path / name
    target.write_bytes(content)
    before = snapshot(tmp_path)
    refused(["figure", str(runs / "a"), "--layer", "layer0", "--out", str(target)], capsys, str(target))
    assert snapshot(tmp_path) == before


def test_site_keeps_a_users_index(runs, tmp_path, capsys):
    """topotrace site on a folder whose index.html is the user's: exit 2, one line, nothing written."""
    shutil.copytree(runs / "a", tmp_path / "a")
    (tmp_path / "index.html").write_bytes(USER_FILES["notes.html"])
    before = snapshot(tmp_path)
    refused(["site", str(tmp_path)], capsys, "index.html")
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_links_fifos_and_folders_are_refused(runs, tmp_path, capsys):
    """A link (even to a topotrace page), a dangling link, a FIFO (never opened: no hang) and a folder."""
    argv = ["compare", str(runs / "a"), str(runs / "b"), "--out"]
    own = tmp_path / "own.html"
    assert main([*argv, str(own)]) == 0 and written_by_topotrace(own, "page")
    (tmp_path / "link.html").symlink_to(own)
    (tmp_path / "dangling.html").symlink_to(tmp_path / "nowhere.html")
    os.mkfifo(tmp_path / "fifo.html")
    (tmp_path / "folder.html").mkdir()
    before = snapshot(tmp_path)
    result = {}

    def go():
        for name, expected in (("link.html", "is a symbolic link"), ("dangling.html", "is a symbolic link"),
                               ("fifo.html", "is not a regular file"), ("folder.html", "is a folder")):
            result[name] = refused([*argv, str(tmp_path / name)], capsys, name, expected)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(120)
    assert not worker.is_alive(), "a command hung on the FIFO"
    assert len(result) == 4
    assert snapshot(tmp_path) == before


@pytest.mark.slow
def test_own_outputs_are_replaced(runs, tmp_path, capsys):
    """compare, report (and its findings.json), figure (PDF, SVG, PNG) and site replace what topotrace wrote."""
    cmp_out, rep_out = tmp_path / "c.html", tmp_path / "r.html"
    for _ in range(2):  # the second run replaces the first one's files
        assert main(["compare", str(runs / "a"), str(runs / "b"), "--out", str(cmp_out)]) == 0
        assert main(["report", str(runs / "a"), "--out", str(rep_out)]) == 0
        for fmt in ("pdf", "svg", "png"):
            assert main(["figure", str(runs / "a"), "--layer", "layer0", "--dpi", "30",
                         "--out", str(tmp_path / f"f.{fmt}")]) == 0
    assert written_by_topotrace(cmp_out, "page") and written_by_topotrace(rep_out, "page")
    assert written_by_topotrace(tmp_path / "findings.json", "findings")
    for fmt in ("pdf", "svg", "png"):
        assert written_by_topotrace(tmp_path / f"f.{fmt}", "figure"), fmt
    assert not written_by_topotrace(cmp_out, "figure") and not written_by_topotrace(tmp_path / "f.pdf", "page")
    # no temporary file is left beside the outputs
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.html", "f.pdf", "f.png", "f.svg", "findings.json",
                                                          "r.html"]
    site = tmp_path / "site"
    shutil.copytree(runs / "a", site / "a")
    assert main(["site", str(site)]) == 0 and main(["site", str(site)]) == 0
    assert written_by_topotrace(site / "index.html", "site")
    capsys.readouterr()


@pytest.mark.slow
def test_a_users_tmp_file_is_not_touched(runs, tmp_path, capsys):
    """A file named like the old fixed temporary name (report.html.tmp) is neither overwritten nor removed."""
    keep = tmp_path / "r.html.tmp"
    keep.write_bytes(b"mine")
    assert main(["report", str(runs / "a"), "--out", str(tmp_path / "r.html")]) == 0
    assert keep.read_bytes() == b"mine"
    capsys.readouterr()


def test_atomic_output_removes_its_temporary_file_on_failure(tmp_path):
    """A failed write leaves the old output as it was and no temporary file."""
    out = tmp_path / "f.png"
    out.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert out.read_bytes() == b"old" and sorted(tmp_path.iterdir()) == [out]


def test_atomic_output_checks_again_at_the_rename(tmp_path):
    """A user's file put at the path while the output was being written is not replaced either."""
    out = tmp_path / "page.html"
    with pytest.raises(FileExistsError, match="was not written by topotrace"), atomic_output(out, "page") as tmp:
        tmp.write_text("<html></html>")
        out.write_bytes(b"written meanwhile")
    assert out.read_bytes() == b"written meanwhile" and sorted(tmp_path.iterdir()) == [out]


def test_findings_recognised_by_their_structure(tmp_path):
    """findings.json is topotrace's when it is a list of objects holding claim and verdict, nothing else."""
    cases = {b'[{"claim": "x", "verdict": "supported", "layer": "h"}]': True, b"[]": True,
             b'{"claim": "x", "verdict": "y"}': False, b'[{"claim": "x"}]': False, b"not json": False,
             b'[1, 2]': False}
    for k, (content, ours) in enumerate(cases.items()):
        p = tmp_path / f"f{k}.json"
        p.write_bytes(content)
        assert written_by_topotrace(p, "findings") is ours, content
    with pytest.raises(FileExistsError, match=MSG):
        check_output(tmp_path / "f2.json", "findings")


def test_stale_layer_pages_are_removed_only_when_topotrace_wrote_them(tmp_path):
    """remove_stale_pages deletes old layer pages of topotrace, never a user's file named like one."""
    from topotrace.report_templates.pages import remove_stale_pages

    folder = tmp_path / "report_layers"
    folder.mkdir()
    (folder / "01-old.html").write_text('<html><head><meta name="generator" content="topotrace"></head></html>')
    (folder / "02-mine.html").write_text("<html>the user's page</html>")
    (folder / "notes.txt").write_text("the user's")
    remove_stale_pages(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["02-mine.html", "notes.txt"]


def test_findings_json_leaves_a_users_tmp_file_and_no_partial_file(tmp_path):
    """write_findings_json writes through a temp file of its own: a user's findings.json.tmp stays, nothing is left."""
    from topotrace.analysis.findings import write_findings_json

    mine = tmp_path / "findings.json.tmp"
    mine.write_text("the user's notes")

    class Broken:
        def to_json(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_findings_json([Broken()], tmp_path / "findings.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.json.tmp"]
    assert mine.read_text() == "the user's notes"
    write_findings_json([], tmp_path / "findings.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["findings.json", "findings.json.tmp"]
