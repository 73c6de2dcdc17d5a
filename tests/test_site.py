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
    assert "alpha/report.html" in table.hrefs and "beta/report.html" not in table.hrefs


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


def test_index_in_a_browser(runs):
    """Offline in headless Chromium: no request, no console error; sorting a column reorders the rows."""
    from playwright import sync_api as playwright

    from bench.browser import ARGS, CHROMIUM, open_offline

    index = write_site(runs)
    with playwright.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
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
        finally:
            browser.close()
