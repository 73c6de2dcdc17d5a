"""The page rule: one page, or a summary page plus one page per layer; which snapshots a layer page shows.

A report is one page while that page fits the page budget (``topotrace report --page-budget``, default
:data:`DEFAULT_BUDGET_MB` MB). Otherwise the summary sections stay in the report's file and the layers' maps go to
layer pages (in the folder :func:`layer_dir` next to the report): consecutive layers share a page while their maps
with every snapshot fit the budget together (:func:`pack`), so a run of many small layers does not repeat BokehJS
(about 1.7 MB) on a page per layer; a page of several layers has its own layer selector. A layer whose page does
not fit the budget with every snapshot has a page of its own, showing an evenly log-spaced subset of the snapshots,
first and last always kept (:func:`thin_snapshots`), as many as fit. The charts over training time on the summary
page keep every snapshot.

Sizes are what the page really takes: a page is built, measured and, when it is over the budget, built again with
fewer snapshots (the map values take a share of the page that grows linearly with the snapshots shown, so one
correction usually lands). :func:`embedded_bytes` gives the bytes one array takes in a Bokeh page (gzip at Bokeh's
level, then base64), the same arithmetic Bokeh does.
"""

from __future__ import annotations

import base64
import gzip
import math
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from bokeh.settings import settings

MB = 1_000_000  # page sizes and budgets are in decimal megabytes, as printed
DEFAULT_BUDGET_MB = 10.0
MIN_BUDGET_MB = 2.0  # BokehJS alone takes about 1.7 MB of every page
MAX_LAYERS_PER_PAGE = 2  # a page of more layers opens too slowly (12 x 768 neurons: 4 layers took 11.7 s, bench)
PAGE_FILE = re.compile(r"^\d{2,}-.+\.html$")  # names of layer pages (layer_page_name)


def check_budget(budget_mb: float) -> float:
    """``budget_mb`` as bytes; a number >= :data:`MIN_BUDGET_MB` (``inf``: always one page)."""
    if isinstance(budget_mb, bool) or not isinstance(budget_mb, (int, float)):
        raise TypeError(f"The 'page_budget' parameter must be a number of MB. Got {type(budget_mb).__name__} instead.")
    if math.isnan(budget_mb) or budget_mb < MIN_BUDGET_MB:
        raise ValueError(f"The 'page_budget' parameter must be >= {MIN_BUDGET_MB} (MB; a page carries BokehJS, "
                         f"about 1.7 MB). Got {budget_mb!r} instead.")
    return float(budget_mb) * MB


def embedded_bytes(arr: np.ndarray) -> int:
    """Bytes one array takes in a Bokeh standalone page (gzip at Bokeh's level, then base64)."""
    raw = np.ascontiguousarray(arr).tobytes()
    return len(base64.b64encode(gzip.compress(raw, mtime=1, compresslevel=settings.compression_level())))


def thin_snapshots(steps: Sequence[int] | np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` snapshots evenly spaced in log(step - first step + 1), first and last always kept.

    Args:
        steps: the run's steps, shape (S,), increasing.
        k: how many to keep (at least 2, or S when S < 2).

    Returns:
        Increasing indices, shape (min(k, S),). Each target position on the log axis takes the nearest snapshot
        not yet taken, so a schedule that is already log-spaced keeps about every (S / k)-th snapshot, and an
        evenly spaced one keeps more snapshots early in training, where it changes fastest.
    """
    s = np.asarray(steps, dtype=np.float64)
    n = len(s)
    k = int(k)
    if k >= n or n <= 2:
        return np.arange(n)
    k = max(k, 2)
    x = np.log1p(np.maximum(s - s[0], 0.0))
    chosen = {0, n - 1}
    for t in np.linspace(x[0], x[-1], k)[1:-1]:
        order = np.argsort(np.abs(x - t), kind="stable")
        chosen.add(int(next(i for i in order if int(i) not in chosen)))
    return np.array(sorted(chosen), dtype=np.int64)


def fit_count(size: int, data: int, shown: int, budget: float) -> int:
    """Snapshots a page can show within ``budget`` bytes (at least 2).

    Args:
        size: bytes of the page built with ``shown`` snapshots.
        data: bytes of its map values, the part that grows linearly with the snapshots (the rest does not).
        shown: snapshots it shows.
        budget: the page budget in bytes.
    """
    per = max(data, 1) / max(shown, 1)
    fixed = size - data
    return max(2, int((0.98 * budget - fixed) // per))


def layer_dir(out: Path) -> Path:
    """The folder of a report's layer pages: ``<report name>_layers`` next to it."""
    return out.with_name(out.stem + "_layers")


def _safe(layer: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", layer).strip("._") or "layer"


def layer_page_name(position: int, layers: Sequence[str]) -> str:
    """File name of the page of ``layers`` whose first is at ``position`` (0-based), names made safe.

    ``01-<layer>.html`` for one layer, ``01-<first>--<last>.html`` for several.
    """
    if isinstance(layers, str):
        layers = [layers]
    last = f"--{_safe(layers[-1])}" if len(layers) > 1 else ""
    return f"{position + 1:02d}-{_safe(layers[0])}{last}.html"


def pack(sizes: Sequence[int], fixed: int, budget: float, max_layers: int = MAX_LAYERS_PER_PAGE) -> list[list[int]]:
    """Consecutive layers grouped into pages: each page takes the next layers while ``fixed`` plus their sizes fit.

    Args:
        sizes: each layer's share of a page (its maps with every snapshot), in bytes, shape (L,).
        fixed: what every page takes whatever it holds (BokehJS, the page's text), in bytes.
        budget: the page budget in bytes (a margin of 10 % is kept for the estimate's error).
        max_layers: at most this many layers per page: the browser builds every layer's map tiles when a page
            opens (the hidden ones too), so the time to first paint grows with the layers on a page.

    Returns:
        The layer positions of each page, in order; a layer that does not fit alone gets a page of its own.
    """
    groups: list[list[int]] = []
    room = 0.9 * budget - fixed
    used = math.inf
    for i, size in enumerate(sizes):
        if used + size > room or len(groups[-1]) >= max_layers:
            groups.append([])
            used = 0
        groups[-1].append(i)
        used += size
    return groups


def remove_stale_pages(folder: Path, keep: Sequence[str] = ()) -> None:
    """Remove the layer pages in ``folder`` that a new build did not write (then the folder, if left empty).

    Only pages that topotrace wrote (:func:`.outputs.written_by_topotrace`) named like
    :func:`layer_page_name` are touched, so nothing else a user keeps there is lost.
    """
    from .outputs import written_by_topotrace

    if folder.is_symlink() or not folder.is_dir():
        return
    for f in folder.iterdir():
        if PAGE_FILE.match(f.name) and f.name not in keep and written_by_topotrace(f, "page"):
            f.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


def shown_text(steps: Sequence[int] | np.ndarray, shown: np.ndarray, limit: int = 40) -> str:
    """``"steps 0, 1, 3, ... and 12,345"``: the steps of the shown snapshots (all of them up to ``limit``)."""
    vals = [f"{int(steps[i]):,}" for i in shown]
    if len(vals) > limit:
        vals = vals[: limit - 1] + ["…", vals[-1]]
    if len(vals) == 1:
        return f"step {vals[0]}"
    return "steps " + ", ".join(vals[:-1]) + " and " + vals[-1]
