"""Imports point one way (instrument <- analysis <- report_templates <- the app); analysis never needs torch.

The repository's folders instrument/, analysis/ and report_templates/ are installed as topotrace.instrument,
topotrace.analysis and topotrace.report_templates; an import of ``topotrace.analysis.stats`` counts as one of
``analysis``, and an import of any other ``topotrace`` module (the command line, the front door, the
integrations) counts as one of ``topotrace``.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
SUBPACKAGES = ("instrument", "analysis", "report_templates")
FORBIDDEN = {
    "instrument": {"analysis", "report_templates", "topotrace", "bokeh", "jinja2"},
    "analysis": {"torch", "report_templates", "topotrace", "bokeh", "jinja2", "pickle"},
    "report_templates": {"torch", "topotrace", "pickle"},
}


def _root(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "topotrace":
        return parts[1] if len(parts) > 1 and parts[1] in SUBPACKAGES else "topotrace"
    return parts[0]


def imported_roots(path):
    """The package each import of ``path`` reaches (relative imports beyond the own package count as topotrace)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (_root(alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "topotrace":
                yield from (_root(f"topotrace.{alias.name}") for alias in node.names)
            else:
                yield _root(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 1:
            yield "topotrace"


@pytest.mark.slow
def test_bare_package_names_are_not_imported():
    """Every module imports the subpackages through the installed name (topotrace.instrument, ...)."""
    for package in (*SUBPACKAGES, "topotrace", "bench", "tests"):
        for p in (ROOT / package).rglob("*.py"):
            tree = ast.parse(p.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module]
            assert not [m for m in names if m.split(".")[0] in SUBPACKAGES], p


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    """No module imports a package it must not depend on."""
    bad = [(p.name, m) for p in (ROOT / package).rglob("*.py") for m in imported_roots(p) if m in FORBIDDEN[package]]
    assert bad == []


@pytest.mark.slow
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


@pytest.mark.subprocess
def test_analysis_and_report_run_without_torch():
    """Importing every analysis and report module leaves torch unimported."""
    mods = [f"topotrace.{pkg}.{p.stem}" for pkg in ("analysis", "report_templates") for p in (ROOT / pkg).glob("*.py")
            if p.stem != "__init__"] + ["topotrace.instrument.store", "topotrace.instrument.synthetic"]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in mods)
    code += "assert 'torch' not in sys.modules, 'torch was imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
