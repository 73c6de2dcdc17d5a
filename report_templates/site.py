"""The site index page: a sortable, filterable table of every run and study (plain HTML and a little JavaScript).

No Bokeh: the page is a table, so it stays small (about 2 kB per run) and opens at once from the file system.
Rendered by jinja2 with autoescape, so every string from a run is escaped.
"""

from __future__ import annotations

import datetime as _dt
import os
from collections.abc import Sequence
from pathlib import Path

import jinja2

from .links import escape_bidi_page, relative_href
from .words import CLAIM_SHORT

_HERE = Path(__file__).parent

CLAIM_COLUMNS = tuple(CLAIM_SHORT.items())  # findings.json claim -> column heading
STATUS_WORDS = {
    "done": "done",
    "recording": "recording",
    "stopped": "stopped (writer killed; resumable)",
    "damaged": "damaged",
    "no store": "no store",
    "study": "study",
}


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n else ""


def _row(r: object, prefix: str) -> dict[str, object]:
    """The cells of one row (text shown, value sorted by)."""
    m = r.metrics
    cells = {
        "acc_train": m.get("train", {}).get("accuracy"),
        "loss_train": m.get("train", {}).get("loss"),
        "acc_heldout": m.get("heldout", {}).get("accuracy"),
        "loss_heldout": m.get("heldout", {}).get("loss"),
    }
    verdicts = []
    for claim, _ in CLAIM_COLUMNS:
        if claim in r.verdicts:
            k, n = r.verdicts[claim]
            verdicts.append((f"{k}/{n}", k / n if n else 0.0, "all" if k == n else ("none" if k == 0 else "some")))
        else:
            verdicts.append(("", -1.0, ""))
    seed = r.seed
    if isinstance(seed, list):
        seed = ", ".join(str(s) for s in seed)
    return {
        "path": r.path, "kind": r.kind, "status": r.status, "status_words": STATUS_WORDS.get(r.status, r.status),
        "reason": r.reason, "date": r.date, "model": r.model, "data": r.data,
        "seed": "" if seed is None else str(seed), "snapshots": r.snapshots,
        "last_step": "" if r.last_step is None else r.last_step,
        "cells": cells, "verdicts": verdicts, "size": _mb(r.store_bytes), "bytes": r.store_bytes,
        "links": {k: prefix + v for k, v in r.links.items()},  # raw paths: the template's href filter encodes them
    }


def render_index(rows: Sequence[object], root_label: str, link_prefix: str = "") -> str:
    """The page's HTML.

    Args:
        rows: :class:`topotrace.site.SiteRow` objects (a study's seeds in its ``seeds``).
        root_label: the runs folder as the user named it (shown, and used in the compare command).
        link_prefix: prepended to every link (the runs folder relative to the page's folder, ``""`` when the
            page lies in it).
    """
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_HERE)), autoescape=True,
                             undefined=jinja2.StrictUndefined)
    env.filters["href"] = relative_href  # every link: a checked, percent-encoded relative path (links.py)
    groups = [[_row(r, link_prefix)] + [_row(s, link_prefix) for s in r.seeds] for r in rows]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    now = _dt.datetime.fromtimestamp(int(epoch), _dt.timezone.utc) if epoch else _dt.datetime.now(_dt.timezone.utc)
    n_runs = sum(1 for g in groups for r in g if r["kind"] != "study")
    page = env.get_template("site.html").render(
        groups=groups, claims=[c for _, c in CLAIM_COLUMNS], root=root_label.rstrip("/") or ".",
        n_runs=n_runs, n_studies=sum(1 for g in groups if g[0]["kind"] == "study"),
        n_seeds=sum(1 for g in groups for r in g if r["kind"] == "seed"),
        date=now.strftime("%Y-%m-%d %H:%M UTC"), css=(_HERE / "site.css").read_text(),
        js=(_HERE / "site.js").read_text(),
    )
    return escape_bidi_page(page)  # bidi controls in run names shown as visible escapes (links.py)
