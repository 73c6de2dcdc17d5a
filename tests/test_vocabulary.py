"""One vocabulary: verdicts and direction words are spelled in one place and every verdict a user reads is one.

The words live in ``analysis/vocabulary.py`` (the analysis writes them; it may not import the report layer) and
are re-exported by ``report_templates/words``; no other module or template spells them. A tiny run's terminal
output and report show verdicts from :data:`VERDICTS` only, never a direction word in a verdict's place.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from topotrace.analysis.vocabulary import COURSES, RUN_VERDICTS, STUDY_VERDICTS, VERDICTS
from topotrace.cli import main
from topotrace.instrument.synthetic import write_synthetic_store

ROOT = Path(__file__).parent.parent
HOMES = {ROOT / "analysis" / "vocabulary.py", *(ROOT / "report_templates" / "words").glob("*.py")}
WORDS = sorted(set(VERDICTS) | set(COURSES), key=len, reverse=True)
# Phrases only a verdict or a course uses, searched inside longer literals too (sentences built elsewhere).
PHRASES = [w for w in WORDS if " " in w and w != "not supported"] + ["\"supported\"", "\"not supported\""]


def _literals(path: Path) -> list[tuple[int, str]]:
    """Every string constant of ``path`` that is not a docstring, with its line."""
    tree = ast.parse(path.read_text("utf-8"))
    docs = {id(n.body[0].value) for n in ast.walk(tree)
            if isinstance(n, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.body
            and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
    return [(n.lineno, n.value) for n in ast.walk(tree)
            if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in docs]


def _sources() -> list[Path]:
    return [p for pkg in ("instrument", "analysis", "report_templates", "topotrace")
            for p in sorted((ROOT / pkg).rglob("*.py")) if p not in HOMES]


def test_the_vocabulary_is_two_disjoint_lists():
    """Verdicts (a study's, one run's) and direction words share no word; the words package re-exports both."""
    from topotrace.report_templates import words

    assert not set(VERDICTS) & set(COURSES)
    assert len(set(STUDY_VERDICTS)) == 4 and len(set(RUN_VERDICTS)) == 3
    assert words.VERDICTS == VERDICTS and words.COURSES == COURSES
    assert set(words.VERDICT_COLOR) == set(VERDICTS) == set(words.VERDICT_STYLE)


def test_no_module_outside_the_vocabulary_spells_a_verdict_or_a_direction():
    """No string literal outside analysis/vocabulary.py and report_templates/words/ is a verdict or direction word,
    nor holds a phrase only they use (docstrings aside)."""
    bad = []
    for p in _sources():
        for line, text in _literals(p):
            if text.strip() in WORDS or any(ph in text for ph in PHRASES):
                bad.append(f"{p.relative_to(ROOT)}:{line}: {text[:60]!r}")
    assert bad == []


def test_the_check_finds_a_planted_verdict(tmp_path):
    """The literal check above is not vacuous: a module with a verdict or course literal is caught."""
    planted = tmp_path / "m.py"
    planted.write_text('"""Doc: rises."""\nA = "mixed"\nB = f"x {1} dips then recovers"\nC = "fine"\n')
    hits = [t for _, t in _literals(planted) if t.strip() in WORDS or any(ph in t for ph in PHRASES)]
    assert hits == ["mixed", " dips then recovers"]


def test_no_template_hard_codes_a_verdict():
    """The templates show verdicts from their data (``{{ r.verdict }}``), never a verdict or direction written in."""
    cell = re.compile(r">\s*(" + "|".join(re.escape(w) for w in WORDS) + r")\s*<")
    for p in sorted((ROOT / "report_templates").glob("*.html")):
        assert not cell.findall(p.read_text("utf-8")), p.name


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vocab") / "run"
    d.mkdir()
    write_synthetic_store(d / "store.h5", n_snapshots=5, layer_sizes=(12, 8), n_classes=3, per_class=8)
    return d


def test_terminal_verdicts_are_from_the_vocabulary(tiny_run, capsys, monkeypatch):
    """Every verdict cell of ``topotrace analyze``'s tables (claims and trends) is one run's verdict."""
    monkeypatch.setenv("COLUMNS", "220")  # no cell wraps
    assert main(["analyze", str(tiny_run), "--layouts", "pca"]) == 0
    out = capsys.readouterr().out
    verdicts = []
    for table in re.split(r"\n(?=┏)", out)[1:]:
        head = next(line for line in table.splitlines() if line.startswith("┃"))
        cols = [c.strip() for c in head.strip("┃").split("┃")]
        if "verdict" not in cols:
            continue
        k = cols.index("verdict")
        rows = [line for line in table.splitlines() if line.startswith("│")]
        verdicts += [[c.strip() for c in r.strip("│").split("│")][k] for r in rows]
    assert len(verdicts) >= 4 * 2 + 2 * 2  # four claims and two trends per layer, two layers
    assert set(verdicts) <= set(RUN_VERDICTS), set(verdicts) - set(RUN_VERDICTS)
    assert not any(re.search(rf"│\s*{w}\s*│", out) for w in COURSES)


@pytest.mark.slow
def test_report_verdicts_are_from_the_vocabulary(tiny_run):
    """Every verdict cell and findings-chart verdict of the report is one run's verdict, with its own CSS class."""
    assert main(["report", str(tiny_run), "--layouts", "pca"]) == 0
    page = (tiny_run / "report.html").read_text("utf-8")
    cells = re.findall(r'<td class="tt-verdict tt-([a-z-]+)">([^<]*)</td>', page)
    assert len(cells) >= 4 * 2 + 2 * 2
    assert {text for _, text in cells} <= set(RUN_VERDICTS)
    assert all(cls == text.replace(" ", "-") for cls, text in cells)
    assert not re.search(r"<td[^>]*>\s*(rises|falls|flat)\s*</td>", page)
