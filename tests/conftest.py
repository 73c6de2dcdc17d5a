"""What the whole suite shares: markers, the grouping for parallel workers, one Chromium per worker.

Markers (declared in pyproject.toml): ``slow`` (a real training run or seconds of setup), ``browser`` (opens
pages in Chromium), ``subprocess`` (starts Python, torchrun or pip in a child process). ``make test-fast``
leaves all three out; ``make test`` runs everything on parallel workers (pytest-xdist, ``--dist loadgroup``).

Parallel workers: a test that uses a module-scoped fixture is put in its module's xdist group, so the module's
setup runs once, on one worker; every other test is scheduled on its own. A setup that several modules would
read belongs in a session-scoped fixture here (built once per worker; for once per session, a file lock in
``tmp_path_factory.getbasetemp().parent``); no trained run is read by more than one module today.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # "gw0", "gw1", ... on an xdist worker; None in a plain run

if WORKER is not None:
    # One compute thread per worker (and per child process it starts): with two workers on two cores, torch's and
    # BLAS's default of a thread per core makes the threads fight for the cores, and the tiny models of the tests
    # gain nothing from a second thread. Set before torch is imported; the tests compare within one process.
    os.environ.setdefault("OMP_NUM_THREADS", "1")


# Bokeh's document validation only logs what it finds (no test reads those logs; the browser tests check the
# pages render without console errors): off for the suite's many report builds, about a fifth of each page's
# rendering. tests/test_watch.py checks that a page is byte for byte the same with and without it.
os.environ.setdefault("BOKEH_VALIDATE_DOC", "false")

# Python's cyclic garbage collector runs after every 700 new container objects, and its oldest generation walks every
# object the process holds (torch, Bokeh, the fixtures' results). A page build makes hundreds of thousands of small
# objects (Bokeh models and their property dicts), so it paid for many collections: fewer young ones here, and the
# objects alive once the tests are collected are frozen out of every later walk (pytest_collection_finish). No test
# relies on when garbage is collected.
gc.set_threshold(50_000, 20, 20)


def pytest_collection_finish(session: pytest.Session) -> None:
    gc.collect()
    gc.freeze()


def _uses_module_setup(item: pytest.Item) -> bool:
    """Whether ``item`` uses a fixture that lives longer than one test but not a whole session."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope in ("module", "class", "package") for defs in info.name2fixturedefs.values())


GROUPS_ENV = "TOPOTRACE_TEST_GROUPS"  # a JSON file {nodeid: group}: the workers write it, the controller reads it


def pytest_configure(config: pytest.Config) -> None:
    """On the xdist controller: the file through which the workers hand over the groups (see :class:`_Groups`)."""
    if WORKER is None and config.getoption("dist", "no") == "loadgroup":
        import tempfile

        os.environ[GROUPS_ENV] = str(Path(tempfile.mkdtemp(prefix="topotrace-groups-")) / "groups.json")


def _heavy(item: pytest.Item) -> bool:
    return any(item.get_closest_marker(mark) for mark in ("slow", "browser", "subprocess"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the tests that share a module's setup (one xdist work unit each); on a worker, heavy groups first.

    A test in a module-scoped fixture's reach (or marked ``xdist_group``) belongs to its module's group; each
    other test is a work unit of its own. The heavy groups (any test marked ``slow``, ``browser`` or
    ``subprocess``) go to the front, those of the most tests first, so that the workers finish together instead
    of one running a long group while the others wait (a browser module's group last cost 35 s so); within a group
    the written order stays.
    """
    groups: dict[str, list[pytest.Item]] = {}
    named: dict[str, str] = {}
    for item in items:
        mark = item.get_closest_marker("xdist_group")
        if mark is not None:
            key = str(mark.args[0] if mark.args else mark.kwargs.get("name", "default"))
        elif _uses_module_setup(item):
            key = item.nodeid.split("::")[0]
        else:
            key = item.nodeid
        if key != item.nodeid:
            named[item.nodeid] = key
        groups.setdefault(key, []).append(item)
    if WORKER is None:
        return  # a plain run keeps the written order
    # stable: heavy before light, and among the heavy the shared setups with the most tests first (the longest units)
    ordered = sorted(groups.values(), key=lambda g: -len(g) if any(map(_heavy, g)) else 1)
    items[:] = [i for g in ordered for i in g]
    if os.environ.get(GROUPS_ENV):
        import json

        path = Path(os.environ[GROUPS_ENV])
        tmp = path.with_name(f"{WORKER}.json")
        tmp.write_text(json.dumps(named), "utf-8")
        os.replace(tmp, path)  # every worker writes the same mapping; whole files only


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` with the groups of :func:`pytest_collection_modifyitems` (see :class:`_Groups`)."""
    if config.getoption("dist", "no") != "loadgroup" or not os.environ.get(GROUPS_ENV):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class _Groups(LoadScopeScheduling):
        """xdist's load-by-scope scheduling with the groups the workers computed from their fixtures.

        (xdist's own loadgroup renames each test's nodeid, which pytest 9 no longer allows; the groups come
        through a file instead, written by the workers before the controller schedules.)
        """

        _named: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self._named is None:
                import json

                self._named = json.loads(Path(os.environ[GROUPS_ENV]).read_text("utf-8"))
            return self._named.get(nodeid, nodeid)

    return _Groups(config, log)


def _module_marks(path: Path) -> set[str]:
    """The marker names of a test file's module-level ``pytestmark`` (read from its source, without importing it)."""
    import ast

    try:
        tree = ast.parse(path.read_text("utf-8"))
    except (OSError, SyntaxError):
        return set()
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in node.targets):
            for sub in ast.walk(node.value):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Attribute) and sub.value.attr == "mark":
                    names.add(sub.attr)
    return names


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With ``-m`` deselecting what a whole module is marked with (``pytestmark``), the module is not even imported.

    ``make test-fast`` so skips the import of Lightning, transformers and friends. A module is left out only when
    the expression is false for its own marks and still false with every declared marker added (no test in it
    can be selected whatever it is marked with).
    """
    expr = config.getoption("markexpr", "")
    if not expr or collection_path.suffix != ".py" or not collection_path.name.startswith("test_"):
        return None
    marks = _module_marks(collection_path)
    if not marks:
        return None
    from _pytest.mark.expression import Expression

    declared = {line.split(":")[0].split("(")[0].strip() for line in config.getini("markers")}
    compiled = Expression.compile(expr)
    if not compiled.evaluate(lambda name, **kw: name in marks) and \
            not compiled.evaluate(lambda name, **kw: name in marks | declared):
        return True
    return None


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
