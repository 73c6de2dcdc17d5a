"""The report site: index.html over a runs folder with runs, a study, a live run and a damaged store."""

import html.parser
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from topotrace.cli import main
from topotrace.instrument.store import Store, StoreWriter
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.site import collect, site_index_for, write_site

XSS = '<img src=x onerror="window.__xss=1">'


class Table(html.parser.HTMLParser):
    """The index table's rows: data-path -> list of (data-v, text) per cell, and every href."""

    def __init__(self):
        super().__init__()
        self.rows, self.hrefs, self.order = {}, [], []
        self._row = self._cell = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-path" in a:
            self._row = self.rows.setdefault(a["data-path"], [])
            self.order.append(a["data-path"])
        elif tag == "td" and self._row is not None:
            self._cell = [a.get("data-v"), ""]
            self._row.append(self._cell)
        elif tag == "a":
            self.hrefs.append(a["href"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data


def parse(path):
    t = Table()
    t.feed(Path(path).read_text("utf-8"))
    return t


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    for k, name in enumerate(("alpha", "beta", "gamma")):
        write_synthetic_store(root / name / "store.h5", n_snapshots=4 + k, layer_sizes=(8,), per_class=3, seed=k,
                              meta={"run_name": name, "data": XSS if name == "beta" else "synthetic digits",
                                    "model_summary": "MLP(\n  ...\n)\nparameters: 1234"})
    (root / "alpha" / "report.html").write_text("<html></html>")
    study = root / "study-x"
    for seed in (0, 1):
        write_synthetic_store(study / f"seed-{seed}" / "store.h5", n_snapshots=3, layer_sizes=(8,), per_class=3,
                              seed=10 + seed, meta={"seed": seed})
    (study / "study.json").write_text(json.dumps({"format": "topotrace-study", "name": "study-x", "seeds": [0, 1],
                                                  "config": {}}))
    found = [{"layer": "layer0", "claim": c, "measure": m, "verdict": v}
             for c, m, v in (("stronger_with_time", "", "supported"), ("more_distinct_with_time", "", "mixed"),
                             ("stronger_with_confidence", "max_prob", "supported"),
                             ("stronger_with_confidence", "margin", "not supported"))]
    (study / "findings.json").write_text(json.dumps(found))
    write_synthetic_store(root / "broken" / "store.h5", n_snapshots=3, layer_sizes=(8,), per_class=3)
    p = root / "broken" / "store.h5"
    os.truncate(p, p.stat().st_size // 2)
    write_synthetic_store(root / "live" / "store.h5", n_snapshots=2, layer_sizes=(8,), per_class=3)
    with Store(root / "live" / "store.h5") as st:
        spec = st.spec
    writer = StoreWriter.resume(root / "live" / "store.h5", spec)  # a writer holding the store open
    yield root
    writer.close()


def test_index_lists_every_run_with_the_stores_numbers(runs):
    t0 = time.perf_counter()
    index = write_site(runs)
    assert time.perf_counter() - t0 < 20
    table = parse(index)
    assert sorted(table.rows) == ["alpha", "beta", "broken", "gamma", "live", "study-x", "study-x/seed-0",
                                  "study-x/seed-1"]
    assert table.order.index("study-x/seed-0") == table.order.index("study-x") + 1  # seeds under their study
    for name in ("alpha", "beta", "gamma", "study-x/seed-0", "study-x/seed-1", "live"):
        cells = table.rows[name]
        with Store(runs / name / "store.h5") as st:
            assert int(cells[6][0]) == st.n_snapshots
            for col, probe in ((7, "train"), (9, "heldout")):
                acc, loss = np.mean(st.correct(probe)[-1]), np.mean(st.loss(probe)[-1])
                assert float(cells[col][0]) == pytest.approx(acc, abs=1e-12)
                assert float(cells[col + 1][0]) == pytest.approx(loss, rel=1e-6)
                assert cells[col][1] == f"{acc:.3f}"
        assert "MLP, 1,234 parameters" in cells[4][1] or name.startswith("study") or name == "live"
    assert table.rows["live"][2][0] == "recording" and "(2 committed)" in table.rows["live"][2][1]
    assert table.rows["alpha"][2][0] == "done"
    broken = table.rows["broken"][2]
    assert broken[0] == "damaged" and "damaged or truncated" in broken[1]
    study = table.rows["study-x"]  # verdicts of the primary measure (the first listed): 1/1, 0/1, 1/1
    assert [c[1].strip() for c in study[11:15]] == ["1/1", "0/1", "1/1", ""]
    with Store(runs / "study-x/seed-0/store.h5") as a, Store(runs / "study-x/seed-1/store.h5") as b:
        mean_acc = np.mean([np.mean(a.correct("heldout")[-1]), np.mean(b.correct("heldout")[-1])])
    assert float(study[9][0]) == pytest.approx(mean_acc)


def test_links_are_relative_and_resolve(runs, tmp_path):
    write_site(runs)
    moved = tmp_path / "moved"
    shutil.copytree(runs, moved)  # the folder moved whole: every link still resolves
    table = parse(moved / "index.html")
    assert table.hrefs and all(not h.startswith(("/", "file:", "http")) for h in table.hrefs)
    for h in table.hrefs:
        assert (moved / h).is_file(), h
    assert "./alpha/report.html" in table.hrefs and "./beta/report.html" not in table.hrefs


def test_strings_from_runs_are_escaped(runs):
    page = write_site(runs).read_text("utf-8")
    assert XSS not in page and "&lt;img src=x onerror=" in page


def test_report_finds_the_index_above_it(runs):
    write_site(runs)
    assert site_index_for(runs / "alpha" / "report.html") == "../index.html"
    assert site_index_for(runs / "study-x" / "seed-0" / "report.html") == "../../index.html"
    assert site_index_for(runs / "report.html") is None


def test_site_reads_no_activations(runs, monkeypatch):
    """Building the index never reads an activation dataset."""
    def refuse(*a, **k):
        raise AssertionError("the index read activations")

    monkeypatch.setattr(Store, "acts", refuse)
    monkeypatch.setattr(Store, "iter_acts", refuse)
    rows = collect(runs)
    assert len(rows) == 6


def test_cli_site(runs, capsys, tmp_path):
    assert main(["site", str(runs), "--out", str(tmp_path / "web")]) == 0
    index = tmp_path / "web" / "index.html"
    assert str(index) in capsys.readouterr().out
    for h in parse(index).hrefs:
        assert (index.parent / h).is_file(), h


@pytest.mark.browser
def test_index_in_a_browser(runs, browser):
    """Offline in headless Chromium: no request, no console error; sorting a column reorders the rows."""
    from bench.browser import open_offline

    index = write_site(runs)
    page, blocked, errors = open_offline(browser, index, wait_idle=False)
    first = lambda: page.evaluate(  # noqa: E731
        "Array.from(document.querySelectorAll('tbody tr:first-child')).map(r => r.dataset.path)")
    assert first()[0] == "alpha"
    page.click("th[data-key='5']")  # snapshots, descending first
    order = first()
    snaps = {"alpha": 4, "beta": 5, "gamma": 6, "live": 2, "broken": 0, "study-x": 6}
    assert [snaps[p] for p in order] == sorted(snaps.values(), reverse=True)
    page.fill("#tt-filter", "seed-1")
    visible = page.evaluate("Array.from(document.querySelectorAll('tbody')).filter(b => !b.hidden).length")
    assert visible == 1
    page.fill("#tt-filter", "")
    page.check("tr[data-path='alpha'] input")
    page.check("tr[data-path='gamma'] input")
    cmd = page.inner_text("#tt-compare-cmd")
    assert cmd == f"topotrace compare {runs}/alpha {runs}/gamma"
    assert page.evaluate("window.__xss") is None
    assert not blocked and not errors


# --------------------------------------------------------------------------------- hostile names (issue 23)
HOSTILE = ("javascript:alert(document.domain)", "evil\u202egnp.html", "iso\u2066x\u2069 #1 ?q=%41")
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """A runs folder whose run folders have a javascript: name, a right-to-left override and '#', '?', '%'."""
    root = tmp_path_factory.mktemp("hostile")
    for k, name in enumerate(HOSTILE):
        write_synthetic_store(root / name / "store.h5", n_snapshots=2, layer_sizes=(4,), per_class=2, seed=k,
                              meta={"run_name": name, "data": f"data \u202e{name}"})
        (root / name / "report.html").write_text('<html><head><meta name="generator" content="topotrace">')
    return root


def test_hostile_names_give_checked_relative_links(hostile):
    """No javascript: (or any scheme) in any href, every href ./ or ../ and resolving, no raw bidi character."""
    from urllib.parse import unquote, urlsplit

    index = write_site(hostile)
    text = index.read_text("utf-8")
    assert not any(c in text for c in BIDI)
    assert "\\u202e" in text  # shown as a visible escape
    hrefs = parse(index).hrefs
    assert len(hrefs) == 3 * len(HOSTILE)  # the name link and the "report" and "store" file links per run
    for h in hrefs:
        assert h.startswith("./") and urlsplit(h).scheme == "" and "javascript:" not in h.lower(), h
        assert not urlsplit(h).fragment and not urlsplit(h).query, h  # '#' and '?' of a name are encoded
        assert (index.parent / unquote(h)).is_file(), h
    assert sorted({unquote(h).split("/")[1] for h in hrefs}) == sorted(HOSTILE)


def test_relative_href_refuses_absolute_and_encodes_schemes():
    """The one link builder: schemes encoded, absolute paths and URLs refused, checked output only."""
    from topotrace.report_templates.links import check_href, escape_bidi_page, relative_href

    assert relative_href("javascript:alert(1)/report.html") == "./javascript%3Aalert%281%29/report.html"
    assert relative_href("../../index.html") == "../../index.html"
    assert relative_href(("r_layers/01-a.html", "layer=a%20b")) == "./r_layers/01-a.html#layer=a%20b"
    for bad in ("/etc/passwd", "//evil.example/x", "", "\\\\host\\share"):
        with pytest.raises(ValueError, match="relative path"):
            relative_href(bad)
    json_doc = '<script type="application/json" id="p1">{"a": "x\\u202ey", "b": "\\\\u202e"}</script>'
    assert escape_bidi_page("<b>x\u202ey</b>" + json_doc) == (
        '<b>x\\u202ey</b><script type="application/json" id="p1">{"a": "x\\\\u202ey", "b": "\\\\u202e"}</script>')
    for bad in ("javascript:alert(1)", "https://x", "data:text/html,x", " ./x", "./a b"):
        with pytest.raises(ValueError, match="Refusing the link"):
            check_href(bad)


def test_every_href_of_the_templates_goes_through_the_filter():
    """Each href="{{ ... }}" in report_templates/*.html ends in | href; no literal scheme anywhere."""
    import re

    folder = Path(__file__).parent.parent / "report_templates"
    for page in folder.glob("*.html"):
        text = page.read_text("utf-8")
        for m in re.finditer(r'href="([^"]*)"', text):
            assert re.fullmatch(r"\{\{ .+ \| href \}\}", m.group(1)), (page.name, m.group(1))


def test_hostile_names_in_the_terminal(hostile, capsys):
    """topotrace info on the run with a right-to-left override prints the escape, never the raw character."""
    assert main(["info", str(hostile / HOSTILE[1])]) == 0
    out = capsys.readouterr()
    assert not any(c in out.out + out.err for c in BIDI)
    assert "\\u202e" in out.out


@pytest.mark.browser
def test_hostile_links_in_a_browser(hostile, browser):
    """In Chromium: clicking every link of the index fires no dialog (javascript: would alert)."""
    from bench.browser import open_offline

    index = write_site(hostile)
    dialogs = []
    page, blocked, errors = open_offline(browser, index, wait_idle=False)
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    n = page.evaluate("document.querySelectorAll('a').length")
    assert n == 3 * len(HOSTILE)
    for k in range(n):
        page.goto(index.as_uri())
        page.locator("a").nth(k).click()
        page.wait_for_timeout(100)
        assert page.url.startswith("file://") and "javascript" not in page.url.split("/")[-1].lower()
    assert dialogs == [] and not blocked


@pytest.mark.slow
def test_report_of_a_bidi_named_run_shows_escapes(tmp_path):
    """A report of a run named with U+202E: no raw bidi character in the page and none that Bokeh would decode."""
    import re

    from topotrace.analysis.pipeline import analyze
    from topotrace.report_templates.generate import build_report

    name = "evil\u202egnp.html"
    store = write_synthetic_store(tmp_path / "r" / "store.h5", n_snapshots=2, layer_sizes=(6,), n_classes=3,
                                  per_class=3, with_train_probe=False, meta={"run_name": name})
    results = analyze(store, tmp_path / "r" / "analysis.h5", layout_methods=["pca"])
    out = build_report(results, tmp_path / "r" / "report.html", runs=[(name, f"../{name}/report.html")],
                       index="../index.html")
    page = out.read_text("utf-8")
    assert not any(c in page for c in BIDI)
    # a JSON escape \u202e not itself escaped would decode to the raw character in the browser
    docs = re.findall(r'<script type="application/json"[^>]*>(.*?)</script>', page, re.S)
    assert docs
    assert not any(re.search(r"(?<!\\)(?:\\\\)*\\u(202[a-e]|206[6-9]|200[ef]|061c)", d, re.I) for d in docs)
    assert "<title>topotrace report: evil\\u202egnp.html</title>" in page
    assert 'href="../evil%E2%80%AEgnp.html/report.html"' in page and 'href="../index.html"' in page
