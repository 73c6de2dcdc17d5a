"""A run's (or a study's) report as ``topotrace report`` writes it, for the command line and ``tt.report`` alike.

:func:`report_analyses` gives the analysis a run's report is built from (the cached one whatever parameters made
it, or a new one with the given parameters) and, by the rule :func:`topotrace.runfolder.analyses_train`, the train
probe set's; :func:`write_run_report` writes ``report.html`` (and its layer pages when it is split) and
``findings.json``. ``topotrace report RUN`` runs the two (checking its ``--png`` maps in between); :func:`report`
(``tt.report``) runs the same checks and the same two steps, so both write the same files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .analysis.findings import MIN_CHANGE, MIN_R
from .runfolder import FINDINGS_FILE, MAPS_DIR, REPORT_FILE, TRAIN_PROBE_SET, RunFolder, analyses_train, locate

DEFAULT_PAGE_BUDGET = 10.0  # MB: the largest page (topotrace report --page-budget)


@dataclass(frozen=True)
class Analyses:
    """The analyses a run's report is built from.

    Attributes:
        results: the analysis the report shows (:class:`topotrace.analysis.results.AnalysisResults`).
        train: the train probe set's analysis for the overfitting section, or ``None`` (not wanted or not recorded).
        cached: ``results`` came from the cache as it was (no analysis ran for it).
    """

    results: object
    train: object | None
    cached: bool


@dataclass(frozen=True)
class RunReport:
    """What :func:`report` wrote; usable as a path (``os.fspath`` gives the report page's).

    Attributes:
        path: the report page (``report.html``; its summary page when it is split).
        pages: every page written: ``path``, then its layer pages.
        findings_path: ``findings.json`` next to it (``None`` when there were no findings to write).
        found: the findings (claims per layer; for a study, across its runs), as in ``findings.json``.
        cached: a run's analysis came from the cache as it was (``None`` for a study).
    """

    path: Path
    pages: list[Path] = field(default_factory=list)
    findings_path: Path | None = None
    found: list = field(default_factory=list)
    cached: bool | None = None

    def __fspath__(self) -> str:
        return os.fspath(self.path)


def check_page_budget(budget: float) -> None:
    """Refuse a page budget below :data:`topotrace.report_templates.pages.MIN_BUDGET_MB` (or NaN) in one line."""
    from .report_templates.pages import MIN_BUDGET_MB

    if not budget >= MIN_BUDGET_MB:  # also NaN
        raise ValueError(f"The '--page-budget' option must be a number of MB >= {MIN_BUDGET_MB} (every page carries "
                         f"BokehJS, about 1.7 MB), or inf for one page. Got {budget:g}.")


def check_report_output(out: Path, option: str = "--out", example: str = REPORT_FILE, maps: bool = False) -> Path:
    """Refuse a report page before any work (:func:`topotrace.report_templates.outputs.check_output`).

    A folder, a link, a missing or read-only folder, or an existing file (or ``findings.json`` next to it, or a
    ``maps`` that is no folder when ``maps``) that topotrace did not write is refused in one line; nothing is
    replaced that topotrace did not write.
    """
    from .report_templates.outputs import check_output

    return check_output(out, "page", option=option, example=example,
                        siblings=(FINDINGS_FILE,) + ((MAPS_DIR,) if maps else ()))


def report_analyses(folder: RunFolder, params: Mapping[str, object] | None = None, refresh: bool = False,
                    until_good: bool = False) -> Analyses:
    """The analyses of a run's report: cached in ``analysis.h5`` (and ``analysis_train.h5``) next to its store.

    Args:
        folder: the run (:class:`topotrace.runfolder.RunFolder`).
        params: keyword arguments of :func:`topotrace.analysis.pipeline.analyze` (``probe_set``, ``measure``,
            ``layout_methods``, ``n_bins``, ``dormant_tau``): the analysis is made with these (its cache is used
            when it was made with the same); ``None``: the cached analysis whatever parameters made it, else one
            with the default parameters.
        refresh: recompute both analyses even when their caches are current.
        until_good: read a damaged store up to its last intact snapshot.
    """
    from .analysis.pipeline import analyze, cached_results

    results = None
    if not (refresh or params is not None):
        results = cached_results(folder.store, folder.analysis, until_good=until_good)
    cached = results is not None
    if results is None:
        results = analyze(folder.store, folder.analysis, **dict(params or {}), refresh=refresh, until_good=until_good)
    train = None
    if analyses_train(results):  # the claims on the train probe set, too
        train = cached_results(folder.store, folder.train_analysis, until_good=until_good) if not refresh else None
        if train is None or train.probe_set != TRAIN_PROBE_SET:
            train = analyze(folder.store, folder.train_analysis, probe_set=TRAIN_PROBE_SET, layout_methods=["pca"],
                            until_good=until_good, refresh=refresh)
    return Analyses(results, train, cached)


def write_run_report(analyses: Analyses, out: Path, index: str | None = None, min_change: float = MIN_CHANGE,
                     min_r: float = MIN_R, page_budget: float = DEFAULT_PAGE_BUDGET) -> RunReport:
    """Write a run's ``report.html`` (its layer pages when split) and ``findings.json`` next to it.

    Args:
        analyses: :func:`report_analyses`.
        out: the report page.
        index: relative link to the site's ``index.html`` (:func:`topotrace.site.site_index_for`), or ``None``.
        min_change: the time claims' smallest change of interest (:func:`topotrace.analysis.findings.findings`).
        min_r: the confidence claims' smallest correlation of interest.
        page_budget: the largest page in MB.

    Returns:
        What was written.
    """
    from .analysis.findings import run_findings, trend_findings, write_findings_json
    from .report_templates.generate import build_report, report_pages

    results = analyses.results
    found_train = run_findings(analyses.train, min_change=min_change, min_r=min_r) if analyses.train else None
    found = run_findings(results, min_change=min_change, min_r=min_r)
    build_report(results, out, found, index=index, page_budget=page_budget,
                 found_train=found_train)  # pages and findings.json: atomic writes
    trends = trend_findings([results], [str(results.meta.get("run_name", "run"))])
    findings_path = None
    if found or trends:
        findings_path = write_findings_json([*found, *trends], out.with_name(FINDINGS_FILE))
    return RunReport(out, report_pages(out), findings_path, [*found, *trends], analyses.cached)


def write_study_report(folder: RunFolder, out: Path | None = None, **thresholds: float) -> RunReport:
    """A study's findings across its runs -> ``findings.json`` and ``report.html`` (default: in the study folder).

    Holds the study's lock while it works. ``thresholds``: ``min_change`` and/or ``min_r`` when given.
    """
    from .report_templates.generate import report_pages
    from .studies import load_study, locked, study_results
    from .studies import write_study_report as write

    study = load_study(folder.path)
    with locked(study.path):
        found = write(study, study_results(study), out, **thresholds)
    page = out or RunFolder(study.path).report
    findings = page.with_name(FINDINGS_FILE)
    return RunReport(page, report_pages(page), findings if findings.is_file() else None, found)


def report(run: str | os.PathLike, out: str | os.PathLike | None = None, *, refresh: bool = False,
           until_good: bool = False, page_budget: float = DEFAULT_PAGE_BUDGET, min_change: float | None = None,
           min_r: float | None = None, **params: object) -> RunReport:
    """Write the report of a run or a study as ``topotrace report RUN`` does; the Python front door ``tt.report``.

    A run: its analysis (the cached one, whatever parameters made it, unless ``params`` or ``refresh`` are given),
    the train probe set's too when the store records it, then ``report.html`` (with its layer pages when it does
    not fit ``page_budget``) and ``findings.json`` next to the store. A study folder: the findings across its runs
    (:func:`topotrace.studies.write_study_report`). Everything is checked before anything is written; a file in
    the way that topotrace did not write is never replaced.

    Args:
        run: a run folder (``runs/NAME``), a store file, or a study folder.
        out: the report page to write (default ``report.html`` in the folder; ``findings.json`` goes next to it).
        refresh: recompute the analysis even when the cache is current.
        until_good: read a damaged store up to its last intact snapshot instead of refusing it.
        page_budget: the largest page in MB (at least 2; ``float("inf")``: always one page).
        min_change: the time claims' smallest change of interest, a fraction of the first snapshot's mean
            (default :data:`topotrace.analysis.findings.MIN_CHANGE`).
        min_r: the confidence claims' smallest correlation of interest (default ``MIN_R``).
        **params: analysis parameters (``probe_set``, ``measure``, ``layout_methods``, ``n_bins``,
            ``dormant_tau``; :func:`topotrace.analysis.pipeline.analyze`), as the command's analysis options.

    Returns:
        A :class:`RunReport`: the page (``os.fspath`` of it is its path), every page, ``findings.json``, the findings.

    Raises:
        FileNotFoundError, ValueError: no run or study at ``run``, a store that cannot be read, a bad value.
        FileExistsError, IsADirectoryError: a file at ``out`` (or its ``findings.json``) that topotrace did not write.
    """
    from .analysis.findings import check_thresholds
    from .runfolder import open_store
    from .site import site_index_for

    given = {k: v for k, v in (("min_change", min_change), ("min_r", min_r)) if v is not None}
    thresholds = {"min_change": MIN_CHANGE, "min_r": MIN_R} | given
    check_thresholds(**thresholds)
    folder = locate(run)
    if folder.is_study:
        return write_study_report(folder, check_report_output(Path(out)) if out is not None else None, **given)
    open_store(folder.store, until_good=until_good).close()  # no readable store: one clear line before any work
    check_page_budget(page_budget)
    page = Path(out) if out is not None else folder.report
    check_report_output(page)
    analyses = report_analyses(folder, params or None, refresh=refresh, until_good=until_good)
    return write_run_report(analyses, page, index=None if out is not None else site_index_for(page),
                            page_budget=page_budget, **thresholds)
