"""Words for numbers: the one place where analysis results become sentences, for the HTML and the terminal.

Every sentence a user reads about a result (the report's pages, the terminal's tables and lines, the study's
and the atlas's verdicts) comes from this package; templates hold only the static prose of their sections.
The one exception is the vocabulary the analysis has to write itself (verdict and direction words, the rule and
the effect descriptions in ``findings.json``): it lives in :mod:`topotrace.analysis.vocabulary`, since the
analysis may not import the report layer, and is re-exported here. Error messages stay with the checks that
raise them.

Modules: :mod:`.numbers` (numbers, percentages, ratios), :mod:`.claims` (findings, verdict colours, courses,
trends), :mod:`.notes` (a run's other sentences: divergence, non-finite values, definitions, the atlas's depth
rule), :mod:`.beyond` (the calibration, overfitting and collapse sections), :mod:`.terminal` (the commands'
titles and lines about results). The returned text is plain: callers escape it for their medium (HTML, rich).
Chart titles, axis labels and the map headings stay with the figures they label; progress lines stay with the
commands that report progress.
"""

from ...analysis.vocabulary import (
    COURSES,
    EXTREME,
    FALLS,
    FLAT,
    HOLDS,
    IN_THIS_RUN,
    MIXED,
    NEGLIGIBLE,
    NOT_SUPPORTED,
    PEAK,
    RISES,
    RUN_VERDICTS,
    STUDY_COMMAND,
    STUDY_VERDICTS,
    SUPPORTED,
    TROUGH,
    VERDICTS,
)
from .claims import (
    CLAIM_SHORT,
    CLAIM_TEXT,
    ONE_RUN_NOTE,
    TREND_TABLE_NOTE,
    TREND_TEXT,
    VERDICT_COLOR,
    VERDICT_STYLE,
    comparison_sentence,
    course_sentence,
    effect_text,
    finding_sentence,
    interval,
    interval_kind,
    missing_finding,
    scope_note,
    trend_effect,
    trend_name,
)
from .notes import (
    DEPTH_RULE,
    MEASURE_TEXT,
    bin_note,
    divergence_sentence,
    dormant_glyph_note,
    measure_definitions,
    nonfinite_sentences,
    uncertainty_note,
    unplaced_sentence,
)
from .numbers import number, percent, percentage_points, ratio

__all__ = [
    "CLAIM_SHORT", "CLAIM_TEXT", "COURSES", "DEPTH_RULE", "EXTREME", "FALLS", "FLAT", "HOLDS", "IN_THIS_RUN",
    "MEASURE_TEXT", "MIXED", "NEGLIGIBLE", "NOT_SUPPORTED", "ONE_RUN_NOTE", "PEAK", "RISES", "RUN_VERDICTS",
    "STUDY_COMMAND", "STUDY_VERDICTS", "SUPPORTED", "TREND_TABLE_NOTE", "TREND_TEXT", "TROUGH", "VERDICTS",
    "VERDICT_COLOR", "VERDICT_STYLE", "bin_note", "comparison_sentence", "course_sentence", "divergence_sentence",
    "dormant_glyph_note", "effect_text", "finding_sentence", "interval", "interval_kind", "measure_definitions",
    "missing_finding", "nonfinite_sentences", "number", "percent", "percentage_points", "ratio", "scope_note",
    "trend_effect", "trend_name", "uncertainty_note", "unplaced_sentence",
]
