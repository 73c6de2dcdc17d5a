"""The report generator: analysis results -> one self-contained HTML file.

:func:`build_report` asks the figure modules (:mod:`.charts`, :mod:`.maps`, :mod:`.layout_view`,
:mod:`.beyond_view`) for the named figure roots, gathers the page text (findings, provenance, quality tables) and
hands both to :func:`_embed`, the one function in the package that calls Bokeh's embedding API. Bokeh's JavaScript
and CSS are inlined (``INLINE`` resources), so the file opens offline and requests nothing from any host. The
jinja2 template ``report.html`` extends Bokeh's file template with autoescape on; Bokeh escapes its embedded JSON
itself.
:func:`build_comparison` writes the page of two or more runs side by side the same way, with the roots and text of
:mod:`.compare` in ``compare.html``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import itertools
import json
import math
import os
import types
import urllib.parse
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from importlib import metadata
from pathlib import Path

import bokeh.util.serialization as bokeh_serialization
import jinja2
import markupsafe
import numpy as np
from bokeh.core.types import ID
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.events import DocumentReady
from bokeh.layouts import row
from bokeh.model.util import collect_models
from bokeh.models import CustomJS, Div
from bokeh.models.layouts import LayoutDOM
from bokeh.resources import INLINE

from ..analysis.findings import RULE, Finding, run_findings
from ..analysis.results import AnalysisResults
from . import beyond_page, beyond_view, charts, compare, findings_view, layout_view, loss_marker, maps, pages
from .links import escape_bidi_page, relative_href
from .outputs import atomic_output
from .words import (
    CLAIM_SHORT,
    divergence_sentence,
    finding_sentence,
    interval,
    nonfinite_sentences,
    number,
    scope_note,
    trend_effect,
    trend_name,
)

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


# The distributions whose versions shape an analysis and its report (umap-learn only where installed).
RESULT_LIBRARIES = ("numpy", "scipy", "scikit-learn", "h5py", "bokeh", "topotrace", "umap-learn")


def analysis_versions() -> dict[str, str]:
    """The installed versions of :data:`RESULT_LIBRARIES` (importlib.metadata); those not installed are left out."""
    out = {}
    for name in RESULT_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def report_now() -> _dt.datetime:
    """The report's date: ``SOURCE_DATE_EPOCH`` (seconds, UTC) when set, for reproducible bytes; else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not epoch:
        return _dt.datetime.now(_dt.timezone.utc)
    try:
        return _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise ValueError(f"The SOURCE_DATE_EPOCH environment variable must be a whole number of seconds since "
                         f"1970-01-01 UTC. Got {epoch!r}.") from None


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
    recorded = [(f"{k} (recording)", _text(v)) for k, v in versions.items()] if isinstance(versions, Mapping) else []
    analysis = analysis_versions()
    own = analysis.get("topotrace", "unknown")
    return {
        "name": _text(name, 120),
        "facts": facts,
        "sha256": results.store_sha256 or "not recorded",
        "versions": recorded + [(f"{k} (analysis)", v) for k, v in analysis.items()],
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
    return {"rows": rows, "sentences": sentences, "rule": found[0].rule if found else RULE,
            "scope": scope_note(found), "n_runs": found[0].n_runs if found else 0}


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
            "nonfinite": nonfinite_sentences(results), "beyond": beyond_page.page_context(results)}



def _side_by_side(found: list[Finding], found_train: list[Finding] | None, measure: str) -> list[dict[str, str]]:
    """Rows of the study's claims on the analysed probe set next to the same claims on the train probe set."""
    if not found_train:
        return []
    train = {(f.layer, f.claim, f.measure): f for f in found_train}
    rows = []
    for f in found:
        t = train.get((f.layer, f.claim, f.measure))
        if t is None or f.measure not in ("", measure):
            continue
        rows.append({"layer": f.layer, "claim": CLAIM_SHORT[f.claim],
                     "probe": f"{number(f.effect)} [{interval(f)}]", "probe_verdict": f.verdict,
                     "train": f"{number(t.effect)} [{interval(t)}]", "train_verdict": t.verdict})
    return rows


def report_roots(results: AnalysisResults, found: list[Finding] | None = None, with_maps: bool = True,
                 quantized: bool = True) -> dict[str, LayoutDOM]:
    """Every available named figure root of the report (missing data leaves its name out).

    ``with_maps=False`` leaves the map sections out (the summary page of a report split into layer pages);
    ``quantized`` is passed to :func:`.maps.map_sections`.
    """
    roots: dict[str, LayoutDOM] = {}
    measure = charts.measure_select(results)  # shared by the correlation maps and curves
    for name, model in (("findings_charts", findings_view.findings_charts(found or [], results.primary_measure)),
                        ("training_curves", charts.training_curves(results)),
                        ("corr_summary", charts.correlation_summary(results, measure)),
                        ("strength_distinctness", charts.strength_distinctness(results)),
                        ("layout_comparison", layout_view.layout_comparison(results)),
                        ("calibration", beyond_view.calibration_view(results)),
                        ("overfitting", beyond_view.overfitting_view(results)),
                        ("collapse", beyond_view.collapse_view(results))):
        if model is not None:
            roots[name] = model
    # on every chart over training time; before the maps are added, which hold none (a walk of the charts only)
    loss_marker.mark_loss_minimum(roots, results)
    sections = (maps.map_sections(results, measure, charts.time_markers(list(roots.values())), quantized=quantized)
                if with_maps else {})
    roots.update(sections)
    if measure is not None and ("corr_maps" in sections or "corr_summary" in roots):
        roots["corr_view"] = row(measure, name="corr_view")  # the widget itself is also a callback argument
    if not roots:  # Bokeh needs one root to write a page; this one shows nothing
        roots["placeholder"] = Div(text="", visible=False, name="placeholder")
    return roots


def layer_roots(results: AnalysisResults, layers: list[str], snapshots: np.ndarray,
                quantized: bool = True) -> dict[str, LayoutDOM]:
    """The named roots of one layer page: the map sections of ``layers`` at ``snapshots`` and their controls."""
    measure = charts.measure_select(results)  # the run's measures, as on the summary page
    some = dataclasses.replace(results, layers={name: results.layers[name] for name in layers})
    roots = maps.map_sections(some, measure, [], snapshots=snapshots, quantized=quantized, keep_step=True)
    if measure is not None and "corr_maps" in roots:
        roots["corr_view"] = row(measure, name="corr_view")
    if not roots:
        roots["placeholder"] = Div(text="", visible=False, name="placeholder")
    return roots


def _template(name: str = "report.html") -> jinja2.Template:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_HERE)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["href"] = relative_href  # every link of a page: a checked, percent-encoded relative path
    return env.get_template(name)


def _embed(roots: dict[str, LayoutDOM], title: str, context: dict[str, object],
           template: str = "report.html") -> str:
    """The one call of Bokeh's embedding API: roots placed by name into ``template``, resources inline."""
    variables = dict(context, available=sorted(roots), css=markupsafe.Markup((_HERE / "report.css").read_text()))
    with _fixed_ids(roots) if os.environ.get("SOURCE_DATE_EPOCH", "").strip() else contextlib.nullcontext():
        doc = Document()
        with doc.models.freeze():  # one recomputation of the model graph instead of one per root
            for root in roots.values():
                doc.add_root(root)
        renders = [m for m in doc.select({"name": maps.RENDER_NAME}) if isinstance(m, CustomJS)]  # by the name index
        for cb in sorted(renders, key=lambda m: m.id):  # a fixed order: the same page gets the same bytes
            doc.js_on_event(DocumentReady, cb)  # the maps are drawn in the browser, first when the page is ready
        page = file_html(doc, INLINE, title, template=_template(template), template_variables=variables)
    return escape_bidi_page(page)  # bidi controls in run text shown as visible escapes (links.py)


@contextlib.contextmanager
def _fixed_ids(roots: dict[str, LayoutDOM]) -> Iterator[None]:
    """Reproducible ids while a page is written (with ``SOURCE_DATE_EPOCH``): the same page gets the same bytes.

    Bokeh numbers models with a counter that runs for the whole process and gives documents and elements random
    uuids. Here the page's models are renumbered ``p1``, ``p2``, ... in the order of a walk from the roots (before
    they join a document), the models made while writing continue from there, and the uuids come from a counter.
    The process-wide counter goes on from where it was afterwards.
    """
    order = collect_models(*roots.values())  # breadth first from the roots in order: the same for the same page
    for k, model in enumerate(order, 1):
        model._id = ID(f"p{k}")
    count = itertools.count(1)
    saved_uuid, saved_count = bokeh_serialization.uuid, bokeh_serialization._simple_id
    bokeh_serialization.uuid = types.SimpleNamespace(uuid4=lambda: uuid.UUID(int=(0xA << 124) | next(count)))
    bokeh_serialization._simple_id = len(order)
    try:
        yield
    finally:
        bokeh_serialization.uuid = saved_uuid
        bokeh_serialization._simple_id = max(saved_count, bokeh_serialization._simple_id)


def _write_page(page: str, out_path: str | os.PathLike) -> Path:
    """Write ``page`` to ``out_path`` (parent folders created) through a temporary file renamed into place.

    Raises:
        FileExistsError: ``out_path`` exists and is not a page topotrace wrote (:mod:`.outputs`).
    """
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, "page") as tmp:  # an existing file that is no topotrace page is never replaced
        tmp.write_text(page, encoding="utf-8")
    return out


def _size(page: str) -> int:
    return len(page.encode("utf-8"))


def _mb(n: float) -> str:
    return f"{n / pages.MB:.1f} MB"


def _map_data_bytes(roots: dict[str, LayoutDOM]) -> int:
    """Bytes the map values and sample counts of a page's roots take in it (what grows with the snapshots)."""
    slider = roots["map_controls"].select_one({"name": "time_slider"}) if "map_controls" in roots else None
    if slider is None:
        return 0
    cb = slider.js_property_callbacks["change:value"][0]
    return sum(pages.embedded_bytes(col) for src in [*cb.args["vsrc"], *cb.args["csrc"]] for col in src.data.values())


def _layer_page(results: AnalysisResults, group: list[int], groups: list[list[int]], names: list[str],
                context: dict[str, object], budget: float, quantized: bool) -> tuple[str, np.ndarray]:
    """The page of the layers at positions ``group``, with as many snapshots as fit ``budget``.

    Thinned by :func:`.pages.thin_snapshots` when needed; returns (page, shown snapshot indices).
    """
    mine = [names[i] for i in group]
    steps = np.asarray(results.steps)
    n = results.n_snapshots
    shown = np.arange(n)
    index = context["site_index"]
    nav = [([names[i] for i in g], pages.layer_page_name(g[0], [names[i] for i in g]), g == group) for g in groups]
    neurons = sorted({int(results.layers[name].n_neurons) for name in mine})
    page = ""
    for _ in range(6):  # build, measure, correct the number of snapshots; one correction usually lands
        roots = layer_roots(results, mine, shown, quantized)
        thinned = len(shown) < n
        ctx = dict(context, summary_href="../" + str(context["summary_file"]),
                   site_index=None if index is None else "../" + str(index), nav=nav,
                   layer={"names": mine, "first": group[0] + 1, "last": group[-1] + 1, "count": len(names),
                          "neurons": " / ".join(map(str, neurons)), "thinned": thinned,
                          "layout": results.layers[mine[0]].default_layout if len(mine) == 1 else None,
                          "shown": f"{len(shown)} of {n} snapshots" if thinned else f"all {n} snapshots",
                          "steps": pages.shown_text(steps, shown)})
        title = f"layer {mine[0]}" if len(mine) == 1 else f"layers {mine[0]} to {mine[-1]}"
        page = _embed(roots, f"topotrace report: {context['run']['name']} · {title}", ctx, template="layer.html")
        size = _size(page)
        if size <= budget or len(shown) <= 2:
            break
        k = pages.fit_count(size, _map_data_bytes(roots), len(shown), budget)
        shown = pages.thin_snapshots(steps, min(k, len(shown) - 1))
    if _size(page) > budget:
        warnings.warn(f"The page of layers {mine} takes {_mb(_size(page))} with {len(shown)} snapshots, more than "
                      f"the page budget of {_mb(budget)}; it is written anyway.", stacklevel=3)
    return page, shown


PAGE_BYTES = 1_800_000  # BokehJS (about 1.7 MB) and a page's text
SUMMARY_BYTES = 100_000  # the summary's charts without layers
LAYER_BYTES = 80_000  # a layer's share of the summary's charts (findings, correlation summary, strength)
TILE_BYTES = 4_000  # the models of one map tile in the document, without its data


def _maps_bytes(results: AnalysisResults, name: str, quantized: bool) -> int:
    """A quick estimate of what one layer's maps with every snapshot take in a page (values, tiles, positions)."""
    layer = results.layers[name]
    measures = charts.correlation_measures(results)
    arrays = maps.shipped_values(layer, measures, np.arange(results.n_snapshots), quantized)
    tiles = sum(a.shape[1] for a in arrays[: len(arrays) - len(measures)]) + (2 if measures else 0)
    positions = 12 * int(layer.n_neurons) * (1 + len(layer.layouts))  # maps and layout comparison
    return tiles * TILE_BYTES + sum(pages.embedded_bytes(a) for a in arrays) + positions


def build_report(results: AnalysisResults, out_path: str | os.PathLike, found: list[Finding] | None = None,
                 runs: list[tuple[str, str]] | None = None, title: str | None = None,
                 index: str | None = None, page_budget: float = pages.DEFAULT_BUDGET_MB,
                 quantized: bool = True, found_train: list[Finding] | None = None,
                 trends: list[Finding] | None = None, live: dict[str, object] | None = None) -> Path:
    """Write the self-contained HTML report of ``results`` and return its path.

    The report is one page while that fits ``page_budget``; otherwise ``out_path`` holds the summary sections
    and links to one page per layer with that layer's maps, in the folder :func:`.pages.layer_dir` next to it
    (see :mod:`.pages` for the rule, and for the snapshots a layer page shows when all of them do not fit).

    Args:
        results: the analysis of one store (its maps and charts are shown).
        out_path: file to write (parent folders are created).
        found: the findings to open the report with; default: those of ``results`` alone. A study passes the
            findings across its seeds.
        runs: ``(label, relative link)`` of other reports to list in the header (a study's seeds).
        title: the page's heading; default the run's name.
        index: relative link to the site's ``index.html`` (``topotrace site``), shown in the header; ``None``
            for a report that stands alone.
        page_budget: the largest page in MB (decimal), at least :data:`.pages.MIN_BUDGET_MB`; ``float("inf")``
            always writes one page.
        quantized: ship map values as 8-bit codes (:mod:`.quantize`); False ships float32, as reports did
            before (for comparisons and benchmarks).
        found_train: the same claims on the train probe set (an analysis of it), shown next to ``found`` in
            the overfitting section; ``None``: not shown.
        trends: the trends across a study's seeds (:func:`topotrace.analysis.findings.trend_findings`), shown as
            a table under the first seed's; ``None``: not shown.
        live: the state of a run that still records (``topotrace watch``, :func:`topotrace.live.live_context`):
            ``state``, ``title`` and ``text`` of the banner, and ``reload_s``, the seconds after which the page
            reloads itself keeping the reader's place (0: no reload). ``None`` (default): a finished report.

    Returns:
        The path written (the summary page when the report is split; :func:`report_pages` lists every page).
    """
    if not isinstance(results, AnalysisResults):
        raise TypeError(f"The 'results' parameter must be an AnalysisResults. Got {type(results).__name__} instead.")
    budget = pages.check_budget(page_budget)
    out = Path(out_path)
    found = run_findings(results) if found is None else found
    now = report_now()
    context = _page_context(results, now, found, list(runs or []))
    if title is not None:
        context["run"] = dict(context["run"], name=title)
    context.update(site_index=index, layer_pages=[], thinned=False, budget_mb=f"{page_budget:g}",
                   summary_file=out.name, live=live,
                   side_by_side=_side_by_side(found, found_train, results.primary_measure),
                   trends_across=[{"layer": f.layer or "(run)", "trend": trend_name(f), "effect": trend_effect(f)[0],
                                   "interval": trend_effect(f)[1], "verdict": f.verdict, "n_runs": f.n_runs}
                                  for f in trends or [] if f.n_runs > 1])
    doc_title = f"topotrace report: {context['run']['name']}"
    names = maps.map_layers(results)
    folder = pages.layer_dir(out)
    sizes = [_maps_bytes(results, name, quantized) for name in names]
    one_page = PAGE_BYTES + SUMMARY_BYTES + sum(sizes) + LAYER_BYTES * len(names)
    if not names or budget == math.inf or one_page <= 1.2 * budget:
        page = _embed(report_roots(results, found, quantized=quantized), doc_title, context)
        if _size(page) <= budget or not names:
            pages.remove_stale_pages(folder)
            return _write_page(page, out)
    groups = pages.pack(sizes, PAGE_BYTES, budget)
    entries, written = [], []
    for group in groups:
        page, shown = _layer_page(results, group, groups, names, context, budget, quantized)
        file = pages.layer_page_name(group[0], [names[i] for i in group])
        _write_page(page, folder / file)
        written.append(file)
        for i in group:
            layer = results.layers[names[i]]
            href = (f"{folder.name}/{file}", "" if len(group) == 1 else f"layer={urllib.parse.quote(names[i])}")
            entries.append({"name": names[i], "href": href, "neurons": int(layer.n_neurons),
                            "layout": layer.default_layout, "page": file, "size": _mb(_size(page)),
                            "shown": f"{len(shown)} of {results.n_snapshots}",
                            "thinned": len(shown) < results.n_snapshots,
                            "steps": pages.shown_text(np.asarray(results.steps), shown)})
    context.update(layer_pages=entries, thinned=any(e["thinned"] for e in entries))
    page = _embed(report_roots(results, found, with_maps=False), doc_title, context)
    if _size(page) > budget:
        warnings.warn(f"The summary page takes {_mb(_size(page))}, more than the page budget of {_mb(budget)} (its "
                      "charts are not split further); it is written anyway.", stacklevel=2)
    pages.remove_stale_pages(folder, keep=written)
    return _write_page(page, out)


def report_pages(out_path: str | os.PathLike) -> list[Path]:
    """The pages of the report written to ``out_path``: the page itself, then its layer pages (if split)."""
    out = Path(out_path)
    folder = pages.layer_dir(out)
    layer_files = sorted(f for f in folder.iterdir() if pages.PAGE_FILE.match(f.name)) if folder.is_dir() else []
    return [out, *layer_files]


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
