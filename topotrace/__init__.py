"""topotrace: record what happens inside a PyTorch model while it trains, and see it in one offline report.

The front door, loaded lazily (importing ``topotrace`` imports neither torch nor Bokeh; each name loads its
module the first time it is used)::

    import topotrace as tt

    probes = [tt.ProbeSet("heldout", x_test, y_test)]
    with tt.Recorder(model, "runs/mine/store.h5", layers="fc*", probes=probes, class_names=classes,
                     schedule=tt.log_spaced(total_steps, 60), meta={"seed": 0}) as rec:
        ...                                   # rec.step(step) once per optimiser update
    results = tt.analyze("runs/mine")         # cached in runs/mine/analysis.h5
    tt.build_report(results, "runs/mine/report.html")
    tt.report("runs/mine")                    # as `topotrace report runs/mine`: report.html and findings.json
    found = tt.study(["runs/a", "runs/b", "runs/c"], "runs/mine-study")  # replicate runs -> findings across them

The installed package holds the repository's folders as subpackages: :mod:`topotrace.instrument` (recording
and the store format; torch), :mod:`topotrace.analysis` (offline computation; never torch) and
:mod:`topotrace.report_templates` (Bokeh figures and the HTML report), plus the command line
(``topotrace.cli``) and the training-framework callbacks (``topotrace.integrations``).
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("topotrace")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> module that defines it
_EXPORTS = {
    "Recorder": "topotrace.instrument.recorder",
    "ProbeSet": "topotrace.instrument.recorder",
    "every": "topotrace.instrument.schedules",
    "at_steps": "topotrace.instrument.schedules",
    "log_spaced": "topotrace.instrument.schedules",
    "per_epoch": "topotrace.instrument.schedules",
    "Store": "topotrace.instrument.store",
    "StoreError": "topotrace.instrument.store",
    "analyze": "topotrace.analysis.pipeline",
    "load_results": "topotrace.analysis.results",
    "build_report": "topotrace.report_templates.generate",
    "report": "topotrace.reports",
    "study": "topotrace.studies",
    "export_map_png": "topotrace.report_templates.export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'topotrace' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
