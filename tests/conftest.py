"""What the whole suite shares: markers, the grouping for parallel workers, one Chromium, trained runs.

Markers (declared in pyproject.toml): ``slow`` (a real training run or seconds of setup), ``browser`` (opens
pages in Chromium), ``subprocess`` (starts Python, torchrun or pip in a child process). ``make test-fast``
leaves all three out; ``make test`` runs everything on parallel workers (pytest-xdist, ``--dist loadgroup``).

Parallel workers: a test that uses a module-scoped fixture is put in its module's xdist group, so the module's
setup runs once, on one worker; every other test is scheduled on its own. Setups that several modules read (a
trained run) are built once per test session, whichever worker asks first, under a file lock
(:func:`shared_folder`); a test that changes such a folder copies it first.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... on an xdist worker; None in a plain run


def _uses_module_setup(item: pytest.Item) -> bool:
    """Whether ``item`` uses a fixture that lives longer than one test but not a whole session."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in ("module", "class", "package") for defs in info.name2fixturedefs.values())


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests that share a module's setup (one xdist work unit each); on a worker, slow groups first.

    The slow groups (marked ``slow``) go to the front so that the two workers finish together instead of one
    training a run while the other waits; the order within a module stays as written.
    """
    groups: dict[str, list[pytest.Item]] = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is None and _uses_module_setup(item):
            name = item.module.__name__ if item.module is not None else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(name))
            mark = item.get_closest_marker("xdist_group")
        key = (mark.args[0] if mark.args else mark.kwargs.get("name", "")) if mark else item.nodeid
        groups.setdefault(key, []).append(item)
    if WORKER is None:
        return  # a plain run keeps the written order
    slow = [g for g in groups.values() if any(i.get_closest_marker("slow") for i in g)]
    rest = [g for g in groups.values() if not any(i.get_closest_marker("slow") for i in g)]
    items[:] = [i for g in slow + rest for i in g]


# ---------------------------------------------------------------------------------------------- shared setups
def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder that every worker of this session sees (the base temp folder's parent on an xdist worker)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if WORKER else base) / "shared"


def shared_folder(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder built once per test session by ``build(folder)``, whichever worker asks first; read-only by contract.

    The other workers wait on a file lock and then find it done. A test that writes into it copies it first
    (:func:`copy_of`).
    """
    from filelock import FileLock  # a dependency of torch

    root = _shared_root(tmp_path_factory)
    root.mkdir(parents=True, exist_ok=True)
    folder = root / name
    with FileLock(str(root / f"{name}.lock")):
        if not (root / f"{name}.done").exists():
            if folder.exists():
                shutil.rmtree(folder)  # a build that failed half-way in this session
            folder.mkdir()
            build(folder)
            (root / f"{name}.done").touch()
    return folder


def copy_of(folder: Path, dest: Path) -> Path:
    """A private copy of a shared folder at ``dest`` (for a test that writes into it)."""
    shutil.copytree(folder, dest)
    return dest


# ------------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="session")
def chromium():
    """One headless Debian Chromium for the whole session (one per worker), closed at the end."""
    from playwright.sync_api import sync_playwright

    from bench.browser import ARGS, CHROMIUM

    if not os.path.exists(CHROMIUM):
        pytest.fail(f"Debian chromium is needed at {CHROMIUM} (apt-get install chromium)")
    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield browser
    browser.close()
    pw.stop()


@pytest.fixture
def browser(chromium):
    """The session's Chromium; every page (and its context) a test opened is closed after it."""
    before = set(chromium.contexts)
    yield chromium
    for context in chromium.contexts:
        if context not in before:
            context.close()
