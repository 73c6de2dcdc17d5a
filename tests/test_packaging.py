"""The installed package: one top-level name, everything inside it, usable from outside the repository."""

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.subprocess]  # tests/conftest.py; make test-fast leaves these out

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
                   check=True, cwd=out)
    (path,) = out.glob("topotrace-*.whl")
    return path


def test_wheel_holds_only_topotrace(wheel):
    """Every file of the wheel lies under topotrace/ or the dist-info folder, templates and scripts included."""
    names = zipfile.ZipFile(wheel).namelist()
    dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
    assert [n for n in names if not n.startswith(("topotrace/", dist_info + "/"))] == []
    for needed in ("topotrace/__init__.py", "topotrace/cli.py", "topotrace/integrations/lightning.py",
                   "topotrace/instrument/recorder.py", "topotrace/instrument/store/writer.py",
                   "topotrace/analysis/pipeline.py", "topotrace/report_templates/generate.py",
                   "topotrace/report_templates/report.html", "topotrace/report_templates/render_maps.js"):
        assert needed in names
    folders = {"topotrace": "topotrace", "instrument": "topotrace/instrument", "analysis": "topotrace/analysis",
               "report_templates": "topotrace/report_templates"}
    for folder, installed in folders.items():  # every subpackage (pyproject lists them one by one)
        for init in (ROOT / folder).rglob("__init__.py"):
            assert f"{installed}/{init.relative_to(ROOT / folder).as_posix()}" in names, init


def test_installed_wheel_works_outside_the_repository(wheel, tmp_path):
    """In a fresh environment (the dev environment's dependencies visible), `import topotrace as tt` works from
    outside the repository, the command runs, and the generic names instrument/analysis do not exist."""
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dev environment's packages as a plain path entry: its .pth files (the editable install's import
    # finder) are not processed, so only the wheel can provide topotrace.
    (site / "dev_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--quiet",
                    str(wheel)], check=True)
    code = ("import topotrace as tt, pathlib, sys\n"
            f"assert pathlib.Path(tt.__file__).is_relative_to({str(site)!r}), tt.__file__\n"
            "assert tt.Recorder.__module__ == 'topotrace.instrument.recorder'\n"
            "import topotrace.analysis.pipeline, topotrace.report_templates.generate\n"
            "for name in ('instrument', 'analysis', 'report_templates'):\n"
            "    try:\n"
            "        __import__(name)\n"
            "    except ModuleNotFoundError:\n"
            "        continue\n"
            "    sys.exit(f'{name} is importable')\n")
    subprocess.run([str(py), "-c", code], check=True, cwd=tmp_path)
    out = subprocess.run([str(env / "bin" / "topotrace"), "--help"], check=True, capture_output=True, text=True,
                         cwd=tmp_path).stdout
    assert "topotrace train" in out
