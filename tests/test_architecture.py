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


def installed_package(path: Path) -> list[str]:
    """The installed package of a module file: analysis/x.py -> ["topotrace", "analysis"]."""
    parts = list(path.relative_to(ROOT).parent.parts)
    return parts if parts[0] == "topotrace" else ["topotrace", *parts]


def imported_modules(path: Path):
    """The absolute name of each module an import of ``path`` reaches (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = installed_package(path)
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            if base in ("topotrace", *(f"topotrace.{p}" for p in SUBPACKAGES)) and node.module != base.split(".")[-1]:
                yield from (f"{base}.{alias.name}" for alias in node.names)  # from . import stats
            else:
                yield base


def imported_roots(path):
    """The package each import of ``path`` reaches (``topotrace.analysis.stats`` counts as ``analysis``)."""
    yield from (_root(m) for m in imported_modules(path))


@pytest.mark.slow
def test_bare_package_names_are_not_imported():
    """Every module imports the subpackages through the installed name (topotrace.instrument, ...)."""
    for package in (*SUBPACKAGES, "topotrace", "bench", "tests"):
        for p in (ROOT / package).rglob("*.py"):
            tree = ast.parse(p.read_text())
            names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
            names += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module]
            assert not [m for m in names if m.split(".")[0] in SUBPACKAGES], p


def test_imports_inside_the_package_are_relative():
    """Inside the installed package, modules import each other relatively (``from ..instrument import ...``), so
    editors and structure tools resolve them to the repository's folders; the installed names stay topotrace.*."""
    for package in (*SUBPACKAGES, "topotrace"):
        for p in (ROOT / package).rglob("*.py"):
            tree = ast.parse(p.read_text())
            absolute = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0
                        and n.module and n.module.split(".")[0] == "topotrace"]
            absolute += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Import)
                         and any(a.name.split(".")[0] == "topotrace" for a in n.names)]
            assert absolute == [], f"{p.relative_to(ROOT)}: absolute topotrace imports at lines {absolute}"


def test_relative_imports_resolve_to_the_folders():
    """The resolution the direction checks rely on: analysis/x.py's ``..instrument.store`` is topotrace.instrument."""
    assert installed_package(ROOT / "analysis" / "x.py") == ["topotrace", "analysis"]
    assert installed_package(ROOT / "topotrace" / "integrations" / "x.py") == ["topotrace", "integrations"]
    roots = list(imported_roots(ROOT / "analysis" / "pipeline.py"))
    assert "instrument" in roots and "analysis" in roots and "topotrace" not in roots


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
