"""The command line's sentences about results: titles and lines of ``analyze``, ``study``, ``compare`` and ``atlas``.

Plain text: the commands pass every string read from a run through ``topotrace.cli.visible`` before it reaches
these functions, and style the returned text themselves (rich), so the words and the escaping stay apart.
"""

from __future__ import annotations

from ...analysis.findings import Finding
from ...analysis.vocabulary import EXTREME
from .claims import interval_kind
from .numbers import number, percent

BEYOND_TITLE = ("Beyond the study: trends over training (bootstrap over probe samples, same rule with no smallest "
                "effect of interest)")
LAYOUTS_TITLE = "Layouts (default marked *)"
SIDE_BY_SIDE_TITLE = "Findings side by side (each run's own 95 % bootstrap interval)"


def question(measure: str) -> str:
    """The study's question, asked above one run's findings (``measure``: the primary confidence measure)."""
    return ("Does a sample's activity become stronger and more class-distinct with training time and with "
            f"confidence ({measure})?")


def effects_note(found: list[Finding]) -> str:
    """Under one run's findings: what the interval and the effects are, and the verdict rule."""
    return (f"{interval_kind(found[0])}. Effects: change of the mean from the first snapshot to the last (time; in "
            "the course, as a share of the first snapshot's mean); partial Spearman correlation given the class at "
            f"the last snapshot (confidence). The report lists every confidence measure. Rule: {found[0].rule}")


def course_header(quantity: str) -> str:
    """Above the course lines of a time claim's table."""
    return f"Course of the mean per-sample {quantity} over training (change as a share of the first snapshot's):"


def course_text(f: Finding) -> str:
    """A time claim's course in a few words: ``"dips then recovers (trough 0.131 at step 98), change +1.2 %"``."""
    at = (f" ({EXTREME[f.course]} {number(f.extreme_value)} at step {f.extreme_step:,})"
          if f.extreme_step >= 0 and f.course in EXTREME else "")
    return f"{f.course}{at}, change {percent(f.relative)}"


def loss_minimum_line(step: int, snapshot: int, n_snapshots: int) -> str:
    """Where the held-out loss is lowest (``snapshot`` counted from 0)."""
    return f"held-out loss minimum at step {step} (snapshot {snapshot + 1} of {n_snapshots})"


def study_title(n_runs: int, measure: str) -> str:
    """Above a study's findings."""
    return f"Findings across {n_runs} runs (confidence: {measure})"


def study_note(found: list[Finding]) -> str:
    """Under a study's findings: what the interval is, the rule, and where the rest is."""
    return (f"{interval_kind(found[0])}. {found[0].rule} Every run's value and every confidence measure: "
            "findings.json and the report.")


def atlas_title(name: str, seeds: object) -> str:
    """Above the atlas's matrix of verdicts."""
    return f"Atlas {name}: verdicts across seeds {seeds}"


def atlas_cell(effect: float, verdict: str) -> str:
    """One cell of the atlas's matrix: the effect across seeds and its verdict."""
    return f"{number(effect)} {verdict}"
