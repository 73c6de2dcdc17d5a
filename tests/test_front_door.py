"""The front door: ``import topotrace as tt`` is light, and each public name is the one implementation."""

import subprocess
import sys

import pytest

import topotrace as tt


@pytest.mark.subprocess
def test_import_topotrace_loads_neither_torch_nor_bokeh():
    """Importing the package and listing its names imports no heavy library."""
    code = ("import sys, topotrace as tt; dir(tt); tt.__version__\n"
            "heavy = {'torch', 'bokeh', 'sklearn', 'h5py'} & set(sys.modules)\n"
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.subprocess
def test_analysis_names_load_without_torch():
    """tt.analyze and tt.Store are reachable without importing torch (the analysis is torch-free)."""
    code = "import sys, topotrace as tt; tt.analyze; tt.Store; tt.build_report; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_names_are_the_implementations():
    """Each front-door name is the object its module defines (no wrappers, no second copy)."""
    from topotrace.analysis.pipeline import analyze
    from topotrace.instrument import schedules
    from topotrace.instrument.recorder import ProbeSet, Recorder
    from topotrace.instrument.store import Store
    from topotrace.report_templates.export import export_map_png
    from topotrace.report_templates.generate import build_report

    assert (tt.Recorder, tt.ProbeSet, tt.Store, tt.analyze) == (Recorder, ProbeSet, Store, analyze)
    assert (tt.build_report, tt.export_map_png) == (build_report, export_map_png)
    assert (tt.every, tt.at_steps, tt.log_spaced, tt.per_epoch) == (
        schedules.every, schedules.at_steps, schedules.log_spaced, schedules.per_epoch)
    assert set(tt.__all__) <= set(dir(tt))


def test_unknown_name_is_an_attribute_error():
    """A typo gets the usual AttributeError naming the attribute."""
    with pytest.raises(AttributeError, match="'Recoder'"):
        tt.Recoder  # noqa: B018
