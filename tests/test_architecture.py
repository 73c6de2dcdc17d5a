"""Imports point one way (instrument <- analysis <- report_templates) and analysis never needs torch."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
FORBIDDEN = {
    "instrument": {"analysis", "report_templates", "topotrace", "bokeh", "jinja2"},
    "analysis": {"torch", "report_templates", "topotrace", "bokeh", "jinja2", "pickle"},
    "report_templates": {"torch", "topotrace", "pickle"},
}


def imported_roots(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    """No module imports a package it must not depend on."""
    bad = [(p.name, m) for p in (ROOT / package).rglob("*.py") for m in imported_roots(p) if m in FORBIDDEN[package]]
    assert bad == []


def test_no_pickle_anywhere():
    """No project module imports pickle, calls torch.load or allows pickled numpy arrays."""
    for package in ("instrument", "analysis", "report_templates", "topotrace", "bench", "tests"):
        for p in (ROOT / package).rglob("*.py"):
            assert not {"pickle", "dill", "cloudpickle", "joblib"} & set(imported_roots(p)), p
            for node in ast.walk(ast.parse(p.read_text())):
                if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                    assert (node.value.id, node.attr) != ("torch", "load"), p
                if isinstance(node, ast.keyword) and node.arg == "allow_pickle":
                    assert isinstance(node.value, ast.Constant) and node.value.value is False, p


def test_analysis_and_report_run_without_torch():
    """Importing every analysis and report module leaves torch unimported."""
    mods = [f"{pkg}.{p.stem}" for pkg in ("analysis", "report_templates") for p in (ROOT / pkg).glob("*.py")
            if p.stem != "__init__"] + ["instrument.store", "instrument.synthetic"]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods)
    code += "assert 'torch' not in sys.modules, 'torch was imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
