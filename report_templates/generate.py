"""The report generator: analysis results -> one self-contained HTML file.

:func:`build_report` asks the figure modules (:mod:`.charts`, :mod:`.maps`, :mod:`.layout_view`) for the named
figure roots, gathers the page text (findings, provenance, quality tables) and hands both to :func:`_embed`,
the one function in the package that calls Bokeh's embedding API. Bokeh's JavaScript and CSS are inlined
(``INLINE`` resources), so the file opens offline and requests nothing from any host. The jinja2 template
``report.html`` extends Bokeh's file template with autoescape on; Bokeh escapes its embedded JSON itself.
:func:`build_comparison` writes the page of two or more runs side by side the same way, with the roots and text of
:mod:`.compare` in ``compare.html``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path

import jinja2
import markupsafe
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.layouts import row
from bokeh.models import Div
from bokeh.models.layouts import LayoutDOM
from bokeh.resources import INLINE

from topotrace.analysis.findings import RULE, Finding, run_findings
from topotrace.analysis.results import AnalysisResults

from . import charts, compare, findings_view, layout_view, maps
from .words import CLAIM_SHORT, divergence_sentence, finding_sentence, interval, nonfinite_sentences, number

_HERE = Path(__file__).resolve().parent
CITATIONS = (
    "Krug, V., Ratul, R. K., Olson, C., & Stober, S. (2023). Visualizing Deep Neural Networks with Topographic "
    "Activation Maps. In HHAI 2023: Augmenting Human Intellect (Frontiers in Artificial Intelligence and "
    "Applications, vol. 368, pp. 138–152). IOS Press.",
    "Krug, V., Olson, C., & Stober, S. (2023). Relation of Activity and Confidence when Training Deep Neural "
    "Networks.",
)


def _text(value: object, limit: int = 400) -> str:
    """A short display string for a metadata value (JSON for containers)."""
    if isinstance(value, (dict, list, tuple)):
        out = json.dumps(value, default=str, ensure_ascii=False)
    else:
        out = str(value)
    return out if len(out) <= limit else out[: limit - 1] + "…"


def _flatten(prefix: str, value: object, out: list[tuple[str, str]]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out.append((prefix, _text(value)))


def _run_context(results: AnalysisResults, now: _dt.datetime) -> dict[str, object]:
    """Provenance shown in the summary section (plain strings; the template escapes them)."""
    meta = dict(results.meta or {})
    name = meta.get("run_name") or Path(str(results.store_path)).parent.name or "run"
    steps = [int(s) for s in results.steps]
    facts = [
        ("run", _text(name)),
        ("seed", _text(meta.get("seed", "not recorded"))),
        ("data", _text(meta.get("data", "not recorded"))),
        ("classes", _text(", ".join(str(c) for c in results.class_names) or "none")),
        ("layers", _text(", ".join(f"{la.name} ({la.n_neurons})" for la in results.layers.values()) or "none")),
        ("snapshots", f"{results.n_snapshots}" + (f" (steps {steps[0]:,} to {steps[-1]:,})" if steps else "")),
        ("probe set", _text(results.probe_set)),
        ("confidence measure", _text(results.primary_measure)),
        ("store", _text(results.store_path)),
    ]
    for key in ("created", "start_time", "device"):
        if key in meta:
            facts.append((key, _text(meta[key])))
    config: list[tuple[str, str]] = []
    cfg = meta.get("config")
    if isinstance(cfg, Mapping):
        _flatten("", cfg, config)
    elif cfg is not None:
        config.append(("config", _text(cfg, 4000)))
    params: list[tuple[str, str]] = []
    _flatten("", dict(results.params or {}), params)
    versions = meta.get("versions")
    try:
        own = metadata.version("topotrace")
    except metadata.PackageNotFoundError:
        own = "unknown"
    return {
        "name": _text(name, 120),
        "facts": facts,
        "sha256": results.store_sha256 or "not recorded",
        "versions": [(str(k), _text(v)) for k, v in versions.items()] if isinstance(versions, Mapping) else [],
        "model_summary": _text(meta["model_summary"], 20000) if meta.get("model_summary") else "",
        "config": config,
        "params": params,
        "n_snapshots": results.n_snapshots,
        "probe_set": results.probe_set,
        "measure": results.primary_measure,
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
        "store_path": str(results.store_path),
        "topotrace_version": own,
    }


def _fmt(value: float, digits: int = 3) -> str:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "–"
    return "–" if v != v else f"{v:.{digits}f}"


def _findings_context(found: list[Finding], measure: str) -> dict[str, object]:
    rows = [{"layer": f.layer, "claim": CLAIM_SHORT[f.claim], "measure": f.measure or "–", "effect": number(f.effect),
             "interval": interval(f), "runs": f.n_runs, "verdict": f.verdict,
             "per_run": ", ".join(f"{r.run}: {number(r.effect)}" for r in f.runs),
             "primary": f.measure in ("", measure)} for f in found]
    sentences = [finding_sentence(f) for f in found if f.measure in ("", measure)]
    return {"rows": rows, "sentences": sentences, "rule": RULE, "n_runs": found[0].n_runs if found else 0}


def _page_context(results: AnalysisResults, now: _dt.datetime, found: list[Finding],
                  runs: list[tuple[str, str]]) -> dict[str, object]:
    tables = [(layer.name, [(m, _fmt(la.trustworthiness), _fmt(la.shepard), _fmt(la.smoothness), _fmt(la.seconds, 2))
                            for m, la in layer.layouts.items()])
              for layer in results.layers.values() if layer.layouts]
    steps = [int(x) for x in results.steps]
    return {"run": _run_context(results, now), "findings": _findings_context(found, results.primary_measure),
            "runs": runs, "layout_tables": tables,
            "citations": CITATIONS, "significance": charts.significance_table(results),
            "measures": charts.correlation_measures(results), "last_step": f"{steps[-1]:,}" if steps else "",
            "log_time": charts.step_axis_type(results.steps) == "log",
            "divergence": divergence_sentence(results.divergence) if results.divergence is not None else "",
            "nonfinite": nonfinite_sentences(results)}


def report_roots(results: AnalysisResults, found: list[Finding] | None = None) -> dict[str, LayoutDOM]:
    """Every available named figure root of the report (missing data leaves its name out)."""
    roots: dict[str, LayoutDOM] = {}
    measure = charts.measure_select(results)  # shared by the correlation maps and curves
    for name, model in (("findings_charts", findings_view.findings_charts(found or [], results.primary_measure)),
                        ("training_curves", charts.training_curves(results)),
                        ("corr_summary", charts.correlation_summary(results, measure)),
                        ("strength_distinctness", charts.strength_distinctness(results)),
                        ("layout_comparison", layout_view.layout_comparison(results))):
        if model is not None:
            roots[name] = model
    sections = maps.map_sections(results, measure, charts.time_markers(list(roots.values())))
    roots.update(sections)
    if measure is not None and ("corr_maps" in sections or "corr_summary" in roots):
        roots["corr_view"] = row(measure, name="corr_view")  # the widget itself is also a callback argument
    if not roots:  # Bokeh needs one root to write a page; this one shows nothing
        roots["placeholder"] = Div(text="", visible=False, name="placeholder")
    return roots


def _template(name: str = "report.html") -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_HERE)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    return env.get_template(name)


def _embed(roots: dict[str, LayoutDOM], title: str, context: dict[str, object],
           template: str = "report.html") -> str:
    """The one call of Bokeh's embedding API: roots placed by name into ``template``, resources inline."""
    variables = dict(context, available=sorted(roots), css=markupsafe.Markup((_HERE / "report.css").read_text()))
    doc = Document()
    with doc.models.freeze():  # one recomputation of the model graph instead of one per root
        for root in roots.values():
            doc.add_root(root)
    return file_html(doc, INLINE, title, template=_template(template), template_variables=variables)


def _write_page(page: str, out_path: str | os.PathLike) -> Path:
    """Write ``page`` to ``out_path`` (parent folders created) through a temporary file renamed into place."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, out)
    return out


def build_report(results: AnalysisResults, out_path: str | os.PathLike, found: list[Finding] | None = None,
                 runs: list[tuple[str, str]] | None = None, title: str | None = None,
                 index: str | None = None) -> Path:
    """Write the self-contained HTML report of ``results`` and return its path.

    Args:
        results: the analysis of one store (its maps and charts are shown).
        out_path: file to write (parent folders are created).
        found: the findings to open the report with; default: those of ``results`` alone. A study passes the
            findings across its seeds.
        runs: ``(label, relative link)`` of other reports to list in the header (a study's seeds).
        title: the page's heading; default the run's name.
        index: relative link to the site's ``index.html`` (``topotrace site``), shown in the header; ``None``
            for a report that stands alone.

    Returns:
        The path written.
    """
    if not isinstance(results, AnalysisResults):
        raise TypeError(f"The 'results' parameter must be an AnalysisResults. Got {type(results).__name__} instead.")
    found = run_findings(results) if found is None else found
    now = _dt.datetime.now(_dt.timezone.utc)
    context = _page_context(results, now, found, list(runs or []))
    if title is not None:
        context["run"] = dict(context["run"], name=title)
    context["site_index"] = index
    page = _embed(report_roots(results, found), f"topotrace report: {context['run']['name']}", context)
    return _write_page(page, out_path)


def build_comparison(runs: Sequence[tuple[str, AnalysisResults]], out_path: str | os.PathLike,
                     found: Sequence[list[Finding]] | None = None) -> Path:
    """Write one self-contained HTML page with two or more runs side by side and return its path.

    The figures and the page text come from :mod:`.compare` (findings, curves and maps per run, one time control
    for every run's maps); the page is ``compare.html``.

    Args:
        runs: ``(label, results)`` per run, in the order of the columns; labels are shown as given (escaped).
        out_path: file to write (parent folders are created).
        found: per run, its findings; default :func:`topotrace.analysis.findings.run_findings` of each.

    Returns:
        The path written.
    """
    runs = list(runs)
    if len(runs) < 2:
        raise ValueError(f"The 'runs' parameter must hold two or more (label, results) pairs. Got {len(runs)}.")
    for label, res in runs:
        if not isinstance(res, AnalysisResults):
            raise TypeError(f"The results of run {label!r} must be an AnalysisResults. Got {type(res).__name__} "
                            "instead.")
    found = [run_findings(res) for _, res in runs] if found is None else list(found)
    now = _dt.datetime.now(_dt.timezone.utc)
    context = compare.page_context(runs, found) | {"date": now.strftime("%Y-%m-%d %H:%M UTC"),
                                                   "citations": CITATIONS}
    title = "topotrace comparison: " + " vs ".join(label for label, _ in runs)
    page = _embed(compare.comparison_roots(runs, found), title, context, template="compare.html")
    return _write_page(page, out_path)
