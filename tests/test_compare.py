"""topotrace compare: two runs side by side in one self-contained page; bad input refused before anything is written."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import gzip
import html
import io
import os
import re
from pathlib import Path

import markupsafe
import numpy as np
import pytest

from bench.browser import CHROMIUM, open_offline
from topotrace.analysis.findings import run_findings
from topotrace.analysis.pipeline import analyze
from topotrace.cli import main
from topotrace.instrument.synthetic import write_synthetic_store
from topotrace.report_templates.compare import findings_rows, snapshot_index
from topotrace.report_templates.words import interval, number

from .test_report import _docs_json, _models, _outside_scripts

pytestmark = pytest.mark.slow  # tests/conftest.py; make test-fast leaves these out

EVIL = "lr-0.01<script>alert(1)&\"'[b]"  # a run folder name (no slash: it is one path part; [b] is rich markup)


def _run(root: Path, name: str, n_snapshots: int, seed: int) -> Path:
    d = root / name
    d.mkdir()
    write_synthetic_store(d / "store.h5", n_snapshots=n_snapshots, layer_sizes=(12,), n_classes=3, per_class=6,
                          seed=seed)
    return d


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two analysed runs side by side in one folder: ``(root, [(folder, results), ...])``."""
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, n, seed in (("lr-0.1", 4, 0), (EVIL, 6, 1)):
        d = _run(root, name, n, seed)
        out.append((d, analyze(d, layout_methods=["pca"])))  # cached: compare uses it
    return root, out


@pytest.fixture(scope="module")
def page(runs) -> str:
    """The page written by ``topotrace compare A B`` to its default place, the runs' common folder."""
    root, pairs = runs
    buf, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(err):
        assert main(["compare", *(str(d) for d, _ in pairs)]) == 0
    assert buf.getvalue().strip().splitlines()[-1] == str(root / "compare.html")
    assert f"{EVIL}: using the cached analysis" in err.getvalue()  # rich markup in the label stays text
    return (root / "compare.html").read_text("utf-8")


def _array(node: dict) -> np.ndarray:
    """A numpy array from Bokeh's serialized ndarray (base64, possibly gzipped)."""
    raw = base64.b64decode(node["array"]["data"])
    raw = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return np.frombuffer(raw, dtype=node["dtype"]).reshape(node["shape"])


def _sources(doc: dict) -> dict[str, dict[str, object]]:
    """Named ColumnDataSources of the document: name -> column -> values."""
    out = {}
    for m in _models(doc, "ColumnDataSource"):
        name = m["attributes"].get("name")
        if name:
            entries = m["attributes"]["data"]["entries"]
            out[name] = {k: _array(v) if isinstance(v, dict) else v for k, v in entries}
    return out


def test_page_is_self_contained_and_names_both_runs(page):
    """No element loads anything from a host; both run labels appear; the hostile one only escaped."""
    markup = _outside_scripts(page)
    assert not re.search(r"""\b(?:src|href|action|poster)\s*=\s*["']?\s*(?:[a-z]+:)?//""", markup, re.I)
    assert not re.search(r"""url\(\s*["']?\s*(?:https?:)?//""", markup, re.I)
    assert not re.search(r"<(?:link|img|iframe|embed|object|source|video|audio)\b", markup, re.I)
    assert all("src=" not in s for s in re.findall(r"<script\b[^>]*>", page, re.I))
    assert "<script>alert" not in page
    assert len(re.findall(r"<script\b", page)) == len(re.findall(r"</script>", page))
    assert "<th>" in page and "lr-0.1" in markup
    assert "lr-0.01&lt;script&gt;alert(1)&amp;&#34;&#39;" in markup  # jinja2 autoescape of page text
    doc = _docs_json(page)
    divs = [d["attributes"].get("text", "") for d in _models(doc, "Div")]
    assert any("lr-0.01&lt;script&gt;alert(1)&amp;&quot;&#x27;" in d for d in divs)  # the map column's heading
    assert all("<script" not in d for d in divs)
    for section in ("Runs", "Findings side by side", "Training curves", "Topographic activation maps"):
        assert f"<h2>{section}</h2>" in page
    assert 'class="tt-note"' not in page.split('id="runs"')[1].split("</section>")[1]  # findings onwards: no gaps


def test_findings_side_by_side_equal_each_runs_findings(runs, page):
    """Each run's cell of each layer and claim holds that run's own effect, interval and verdict."""
    rows = re.findall(r'<tr class="tt-finding[^"]*" data-layer="([^"]*)" data-claim="([^"]*)">(.*?)</tr>', page, re.S)
    assert len(rows) == 4  # one layer, four claims
    got = {(html.unescape(layer), claim): body for layer, claim, body in rows}
    for i, (_, res) in enumerate(runs[1]):
        found = [f for f in run_findings(res) if f.measure in ("", res.primary_measure)]
        assert len(found) == 4
        for f in found:
            cell = re.search(rf'<td class="num tt-first" data-run="{i}" data-effect="([^"]+)" data-low="([^"]+)" '
                             rf'data-high="([^"]+)">(.*?)</td><td class="num">(.*?)</td><td[^>]*>(.*?)</td>',
                             got[(f.layer, f.claim)], re.S)
            assert cell, (i, f.claim)
            assert [float(v) for v in cell.groups()[:3]] == [f.effect, f.ci_low, f.ci_high]
            assert cell.group(4).startswith(number(f.effect))
            assert cell.group(5) == interval(f) and cell.group(6) == f.verdict
    labelled = [(d.name, res) for d, res in runs[1]]
    for row in findings_rows(labelled, [run_findings(res) for _, res in labelled]):
        assert str(markupsafe.escape(row["sentence"])) in page


def test_missing_layer_or_evidence_is_named(runs):
    """A run without a layer, or analysed without per-sample evidence, gets a reason instead of numbers."""
    (_, a), (_, b) = runs[1]
    bare = dataclasses.replace(b, layers={k: dataclasses.replace(la, evidence=None) for k, la in b.layers.items()})
    extra = dataclasses.replace(a, layers={**a.layers, "extra": dataclasses.replace(a.layers["layer0"], name="extra")})
    pairs = [("a", extra), ("b", bare)]
    rows = findings_rows(pairs, [run_findings(res) for _, res in pairs])
    assert [r["cells"][1]["missing"] for r in rows] == ["no per-sample evidence (analyse it again)"] * 4 + [
        "no such layer"] * 4
    assert rows[-1]["layer"] == "extra" and rows[-1]["differs"] and not rows[-1]["cells"][0]["missing"]
    assert "b: no per-sample evidence" in rows[0]["sentence"]


def test_curves_carry_each_runs_data(runs, page):
    """The overlaid training curves and findings curves hold every run's own values, one colour per run."""
    src = _sources(_docs_json(page))
    for i, (_, res) in enumerate(runs[1]):
        for probe in ("heldout", "train"):
            for key in ("accuracy", "loss", f"conf_{runs[1][0][1].primary_measure}"):
                data = src[f"curve:{key}:{i}:{probe}"]
                np.testing.assert_array_equal(data["y"], res.curves[probe][key])
                np.testing.assert_array_equal(data["step"], res.steps)
        for f in run_findings(res):
            if f.measure in ("", res.primary_measure):
                np.testing.assert_array_equal(src[f"finding:{f.layer}:{f.claim}:{i}"]["y"], f.curve)
    colors = {m["attributes"]["line_color"] for m in _models(_docs_json(page), "Line")
              if isinstance(m["attributes"].get("line_color"), str)}
    assert {"#1f77b4", "#ff7f0e"} <= colors


def test_time_rule_and_one_control_for_both_columns(runs, page):
    """Each run shows its last snapshot at or before the chosen step; one slider drives every map column."""
    union, index = snapshot_index([np.array([0, 10, 100]), np.array([5, 10, 50, 200])])
    np.testing.assert_array_equal(union, [0, 5, 10, 50, 100, 200])
    np.testing.assert_array_equal(index, [[0, 0, 1, 1, 2, 2], [0, 0, 1, 2, 2, 3]])  # step 0: run 2's first
    doc = _docs_json(page)
    cb = [m for m in _models(doc, "CustomJS")
          if any(k == "snap" for k, _ in m["attributes"]["args"]["entries"])]
    assert len(cb) == 1
    args = dict(cb[0]["attributes"]["args"]["entries"])
    steps = [np.asarray(res.steps) for _, res in runs[1]]
    union, index = snapshot_index(steps)
    assert args["steps"] == union.tolist() and args["snap"] == index.tolist()
    assert len(args["sliders"]) == 2
    roots = {r["attributes"].get("name") for r in next(iter(doc.values()))["roots"]}
    assert {"maps_0_0", "maps_0_1", "compare_controls", "compare_curves", "compare_findings_charts"} <= roots
    sliders = [m for m in _models(doc, "Slider") if m["attributes"].get("name") == "time_slider"]
    assert len(sliders) == 1 and sliders[0]["attributes"]["end"] == len(union) - 1


def test_run_labels_and_default_out(tmp_path, monkeypatch):
    """Labels are folder names (two parts where names clash); the page goes next to the run folders."""
    from topotrace.cmd_compare import default_out, run_labels

    stores = [tmp_path / "x" / "seed-0" / "store.h5", tmp_path / "y" / "seed-0" / "store.h5"]
    assert run_labels(stores) == ["x/seed-0", "y/seed-0"]
    assert run_labels([tmp_path / "a" / "store.h5", tmp_path / "b" / "store.h5"]) == ["a", "b"]
    monkeypatch.chdir(tmp_path)
    assert default_out([Path("runs/a/store.h5"), Path("runs/b/store.h5")]) == Path("runs/compare.html")
    assert default_out(stores) == Path("compare.html")  # the common folder is the current one


@pytest.mark.parametrize("case", ["none", "one", "missing", "twice", "study"])
def test_bad_input_exit_2_one_line_nothing_written(tmp_path, capsys, case):
    """Fewer than two runs, a missing store, the same run twice, a study folder: one line, exit 2, no file."""
    a = _run(tmp_path, "a", 2, 0)
    study = tmp_path / "s"
    study.mkdir()
    (study / "study.json").write_text("{}")
    argv = {"none": [], "one": [str(a)], "missing": [str(a), str(tmp_path / "nothing")],
            "twice": [str(a), str(a / "store.h5")], "study": [str(a), str(study)]}[case]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main(["compare", *argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert {"none": "two or more", "one": "two or more", "missing": "neither a run folder",
            "twice": "same run", "study": "seed folders"}[case] in captured.err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# --------------------------------------------------------------------------------------------------- browser
@pytest.mark.browser
@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"Debian chromium not found at {CHROMIUM}")
def test_browser_time_control_moves_both_columns(runs, page, browser):
    """In chromium, offline: moving the one time control repaints the maps of both run columns, without errors."""
    from PIL import Image

    path = runs[0] / "compare.html"
    tab, blocked, errors = open_offline(browser, path, width=1400)

    def tiles() -> list[np.ndarray]:
        shots = []
        for r in (0, 1):
            canvas = tab.locator(f'.tt-runcol[data-run="{r}"] canvas').first
            canvas.evaluate("e => e.scrollIntoView({block: 'center'})")
            shots.append(np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("RGB"), np.int16))
        return shots

    before = tiles()
    handle = tab.locator(".noUi-handle")  # the page's one slider (the columns' own sliders are not shown)
    assert handle.count() == 1
    handle.focus()
    handle.press("Home")  # to the first step
    tab.wait_for_timeout(400)
    steps = tab.evaluate("""() => {
        const d = Bokeh.documents[0];
        return [window.topotraceCompareStep,
                d.get_model_by_name('time_slider_0_0').value, d.get_model_by_name('time_slider_0_1').value];
    }""")
    after = tiles()
    labels = [tab.locator(f'.tt-runcol[data-run="{r}"] .tt-steplabel').first.inner_text() for r in (0, 1)]
    modes = tab.evaluate("""async () => {
        const d = Bokeh.documents[0];
        d.get_model_by_name('tam_mode').active = 1;  // the contrast switch reaches every column
        await new Promise(r => setTimeout(r, 200));
        return [d.get_model_by_name('tam_mode_0_0').active, d.get_model_by_name('tam_mode_0_1').active];
    }""")
    assert modes == [1, 1]
    assert steps == [int(min(res.steps[0] for _, res in runs[1])), 0, 0]
    for b, a in zip(before, after):
        assert b.shape == a.shape
        assert (np.abs(b - a).sum(axis=2) > 30).mean() > 0.02  # this column's maps were redrawn
    assert labels[0].endswith("snapshot 1 of 4") and labels[1].endswith("snapshot 1 of 6")
    assert blocked == [] and errors == []
