"""Hostile input on the command line: one line `topotrace: error: ...`, exit 2, nothing on disk touched.

Every case runs in-process through topotrace.cli.main in an empty temporary folder (the current folder) and
checks the exit code, that stderr is exactly one line starting with `topotrace: error:` without a traceback,
and that no file or folder in the temporary folder was created, changed or deleted. One case runs the real
command in a subprocess. Also: --debug, bugs, Ctrl-C, cleanup after a failed start, --resume, escaping.
"""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from topotrace.cli import main
from topotrace.instrument.store import Store, StoreWriter
from topotrace.instrument.synthetic import write_synthetic_store

ROOT = Path(__file__).parent.parent
TINY = '[data]\nheldout_per_class = 2\ntrain_probe_per_class = 0\n[model]\nhidden = [8]\n[record]\nlayers = "hidden1"\n'


def tree(root: Path, dir_mtimes: bool = True) -> dict[str, tuple]:
    """Every path below ``root`` with its kind, size and modification time (folders: their mtime if asked)."""
    out = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(folder) / name
            st = p.lstat()
            is_dir = p.is_dir() and not p.is_symlink()
            out[str(p.relative_to(root))] = (is_dir, None if is_dir else st.st_size,
                                             st.st_mtime_ns if dir_mtimes or not is_dir else None)
    return out


def assert_one_error_line(err: str, expected: str | tuple[str, ...] = "") -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("topotrace: error: "), err
    assert "Traceback" not in err and "\x1b" not in err
    alternatives = (expected,) if isinstance(expected, str) else expected
    assert any(a in lines[0] for a in alternatives), (expected, lines[0])
    return lines[0]


# --- setups: what exists before the command runs (paths relative to the temporary folder) ------------------

def _config(text: str | bytes):
    def setup(tmp: Path):
        data = text.encode() if isinstance(text, str) else text
        (tmp / "c.toml").write_bytes(data)
    return setup


def _store(path: str, n_snapshots: int = 2):
    def setup(tmp: Path):
        write_synthetic_store(tmp / path, n_snapshots=n_snapshots, layer_sizes=(4,), n_classes=3, per_class=2,
                              with_train_probe=False)
    return setup


def _run(name: str = "runs/digits"):
    def setup(tmp: Path):
        _store(f"{name}/store.h5")(tmp)
        (tmp / name / "config.toml").write_text("[run]\n")
    return setup


def _live_run(tmp: Path):
    _run()(tmp)
    path = tmp / "runs/digits/store.h5"
    with Store(path) as st:
        spec = st.spec
    writer = StoreWriter.resume(path, spec)  # holds the writer's shared lock, as a recording process does
    return writer.close


def _files(files: dict[str, str]):
    """Files (text) and folders (names ending in '/') to create."""
    def setup(tmp: Path):
        for rel, text in files.items():
            p = tmp / rel
            if rel.endswith("/"):
                p.mkdir(parents=True)
            else:
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_text(text)
    return setup


def _two_runs_and_dir(tmp: Path):
    _store("a/store.h5")(tmp)
    _store("b/store.h5")(tmp)
    (tmp / "outdir").mkdir()


def _run_and_dir(tmp: Path):
    _store("run/store.h5")(tmp)
    (tmp / "outdir").mkdir()


def _run_and_file(tmp: Path):
    _store("run/store.h5")(tmp)
    (tmp / "afile").write_text("x")


def _cfg_case(id_: str, text: str | bytes, expected: str):
    return pytest.param(["train", "--config", "c.toml", "--epochs", "1"], _config(text), expected, id=id_)


def _name_case(id_: str, name: str):
    return pytest.param(["train", "--name", name, "--epochs", "1", "--overwrite"], None, "plain folder name", id=id_)


def _store_as(kind: str):
    """``run/store.h5`` as something that is no store file: a folder, a FIFO, a link loop, a dangling link."""
    def setup(tmp: Path):
        store = tmp / "run" / "store.h5"
        store.parent.mkdir()
        if kind == "folder":
            store.mkdir()
        elif kind == "fifo":
            os.mkfifo(store)  # reading it would wait for a writer forever
        elif kind == "loop":
            store.symlink_to("store.h5")
        else:
            store.symlink_to("nowhere.h5")
    return setup


def _store_bytes(data: bytes):
    def setup(tmp: Path):
        (tmp / "run").mkdir()
        (tmp / "run" / "store.h5").write_bytes(data)
    return setup


def _edited_store(edit):
    """A store whose HDF5 content was edited (a probe set deleted, an attribute changed) by ``edit(h5py.File)``."""
    def setup(tmp: Path):
        import h5py

        _store("run/store.h5")(tmp)
        with h5py.File(tmp / "run" / "store.h5", "r+") as f:
            edit(f)
    return setup


def _set_attr(name, value):
    return lambda f: f.attrs.__setitem__(name, value)


def NOT_A_STORE(name: str) -> tuple[str, ...]:  # noqa: N802 - the store's own message, or the command's
    return f"Cannot read {name} as a topotrace store", f"{name} is not", f"{name} is damaged"


CASES = [
    # argparse's own errors, as one line
    pytest.param(["train", "--bogus"], None, "unrecognized arguments: --bogus", id="unknown-flag"),
    pytest.param(["train", "--epochs", "x"], None, "invalid int value: 'x'", id="flag-not-an-int"),
    pytest.param(["trian"], None, "invalid choice: 'trian'", id="unknown-command"),
    pytest.param(["info"], None, "the following arguments are required: run", id="missing-argument"),
    pytest.param(["train", "--overwrite", "--resume"], None, "not allowed with", id="overwrite-and-resume"),
    # settings given as options
    pytest.param(["train", "--epochs", "0"], None, "'train.epochs' setting must be >= 1", id="epochs-zero"),
    pytest.param(["train", "--seed", "-1", "--epochs", "1"], None, "'run.seed' setting", id="seed-negative"),
    # the config file
    pytest.param(["train", "--config", "nope.toml"], None, "config file nope.toml does not exist", id="config-missing"),
    pytest.param(["train", "--config", "adir"], _files({"adir/": ""}), "does not exist or is not a file",
                 id="config-dir"),
    _cfg_case("config-not-toml", "this is [not toml", "is not valid TOML"),
    _cfg_case("config-binary", b"\xff\xfe\x00\x01", "is not valid TOML"),
    _cfg_case("unknown-section", "[trian]\nepochs = 1\n", "Unknown config section [trian]"),
    _cfg_case("unknown-key", "[train]\nepochz = 1\n", "Unknown setting 'train.epochz'"),
    _cfg_case("section-not-a-table", "train = 3\n", "must be a table"),
    _cfg_case("wrong-type", '[train]\nepochs = "3"\n', "'train.epochs' must be of type int"),
    _cfg_case("bool-for-int", "[train]\nbatch_size = true\n", "'train.batch_size' must be of type int"),
    _cfg_case("lr-nan", "[train]\nlr = nan\n", "'train.lr' setting must be a finite number in (0.0, inf)"),
    _cfg_case("lr-inf", "[train]\nlr = inf\n", "'train.lr' setting"),
    _cfg_case("lr-negative", "[train]\nlr = -0.1\n", "'train.lr' setting"),
    _cfg_case("lr-zero", "[train]\nlr = 0.0\n", "'train.lr' setting"),
    _cfg_case("momentum-negative", "[train]\nmomentum = -1.0\n", "'train.momentum' setting"),
    _cfg_case("test-fraction-one", "[data]\ntest_fraction = 1.0\n", "'data.test_fraction' setting"),
    _cfg_case("test-fraction-zero", "[data]\ntest_fraction = 0\n", "'data.test_fraction' setting"),
    _cfg_case("authors-bad-orcid", "[run]\nauthors = [\"Ada Lovelace <1234>\"]\n", "'run.authors' setting"),
    _cfg_case("test-fraction-no-train", "[data]\ntest_fraction = 0.999\n", "'data.test_fraction' setting (0.999)"),
    _cfg_case("test-fraction-no-test", "[data]\ntest_fraction = 0.0001\n", "at least one image per class"),
    _cfg_case("dropout-one", "[model]\ndropout = 1.0\n", "'model.dropout' setting"),
    _cfg_case("hidden-zero", "[model]\nhidden = [8, 0]\n", "'model.hidden' setting"),
    _cfg_case("hidden-not-ints", '[model]\nhidden = ["a"]\n', "'model.hidden' setting"),
    _cfg_case("hidden-empty", "[model]\nhidden = []\n", "'model.hidden' setting"),
    _cfg_case("batch-size-zero", "[train]\nbatch_size = 0\n", "'train.batch_size' setting must be >= 1"),
    _cfg_case("record-batch-size-zero", "[record]\nbatch_size = 0\n", "'record.batch_size' setting must be >= 1"),
    _cfg_case("unknown-layer", '[record]\nlayers = ["hidden1", "fc9"]\n', "Unknown layer 'fc9'"),
    _cfg_case("layer-glob-matches-nothing", '[record]\nlayers = "conv*"\n', "matches no layer"),
    _cfg_case("layers-empty", "[record]\nlayers = []\n", "'record.layers' setting"),
    _cfg_case("layers-not-names", '[record]\nlayers = ["hidden1", 3]\n', "'record.layers' must be of type"),
    _cfg_case("act-dtype", '[record]\nact_dtype = "float64"\n', "'record.act_dtype' setting must be one of"),
    _cfg_case("schedule", '[record]\nschedule = "sometimes"\n', "'record.schedule' setting must be one of"),
    _cfg_case("data-source", '[data]\nsource = "cifar"\n', "'data.source' setting must be one of"),
    _cfg_case("data-path-missing", '[data]\nsource = "mnist"\npath = "nowhere"\n', "which does not exist"),
    _cfg_case("data-path-empty", '[data]\nsource = "mnist"\n', "needs data.path"),
    _cfg_case("name-in-config", '[run]\nname = "../up"\n', "plain folder name"),
    # run names, the runs folder
    _name_case("name-dotdot", ".."),
    _name_case("name-dot", "."),
    _name_case("name-up", "../x"),
    _name_case("name-absolute", "/abs"),
    _name_case("name-path", "a/b"),
    _name_case("name-empty", ""),
    _name_case("name-control-character", "a\x1b[31mb"),
    _name_case("name-markup", "x[/]"),
    _name_case("name-red", "[red]x"),
    pytest.param(["study", "--name", "..", "--epochs", "1"], None, "study name (--name)", id="study-name-dotdot"),
    pytest.param(["study", "--name", "a/b", "--epochs", "1"], None, "study name (--name)", id="study-name-path"),
    pytest.param(["study", "--seeds", "1,1", "--epochs", "1"], None, "'--seeds' option", id="study-seeds"),
    pytest.param(["study", "--out-dir", "afile", "--epochs", "1"], _files({"afile": "x"}), "is a file",
                 id="study-out-file"),
    pytest.param(["train", "--out-dir", "afile", "--epochs", "1"], _files({"afile": "x"}), "is a file",
                 id="out-dir-file"),
    pytest.param(["train", "--out-dir", "afile/runs", "--epochs", "1"], _files({"afile": "x"}),
                 "afile is a file, not a folder", id="out-dir-below-a-file"),
    pytest.param(["study", "--out-dir", "afile/runs", "--epochs", "1"], _files({"afile": "x"}),
                 "afile is a file, not a folder", id="study-out-dir-below-a-file"),
    pytest.param(["train", "--out-dir", "r\x07uns", "--epochs", "1"], None, "control characters",
                 id="out-dir-control-character"),
    pytest.param(["train", "--out-dir", "", "--epochs", "1"], None, "Give '.' for the current folder",
                 id="out-dir-empty"),
    # existing runs: --overwrite replaces only a run that nobody records, --resume needs a run
    pytest.param(["train", "--epochs", "1"], _run(), "pass --overwrite", id="existing-run"),
    pytest.param(["train", "--epochs", "1", "--overwrite"], _files({"runs/digits/thesis.tex": "mine"}),
                 "not a topotrace run", id="overwrite-not-a-run"),
    pytest.param(["train", "--epochs", "1", "--overwrite"], _files({"runs/digits/config.toml": "[run]\n"}),
                 "not a topotrace run", id="overwrite-config-only"),
    pytest.param(["train", "--epochs", "1", "--overwrite"], _files({"runs/digits/store.h5": "text"}),
                 "not a topotrace run", id="overwrite-fake-store"),
    pytest.param(["train", "--epochs", "1", "--overwrite"], _live_run, "being recorded by a running process",
                 id="overwrite-live-run"),
    pytest.param(["train", "--epochs", "1", "--overwrite", "--out-dir", "..", "--name", "{cwdname}"], _run("."),
                 "holds the current folder", id="overwrite-cwd"),
    pytest.param(["train", "--epochs", "1", "--resume"], None, "No run at runs/digits to resume", id="resume-missing"),
    pytest.param(["train", "--epochs", "1", "--resume"], _files({"runs/digits/notes.txt": "x"}), "no config.toml",
                 id="resume-not-a-run"),
    pytest.param(["train", "--epochs", "1", "--resume"], _live_run, "being recorded", id="resume-live-run"),
    # report, analyze, compare outputs and inputs
    pytest.param(["report", "run", "--out", "outdir"], _run_and_dir, "--out outdir is a folder",
                 id="report-out-existing-dir"),
    pytest.param(["report", "run", "--out", "missing/r.html"], _run_and_dir, "the folder missing does not exist",
                 id="report-out-missing-folder"),
    pytest.param(["report", "run", "--out", "afile/r.html"], _run_and_file, "afile is a file",
                 id="report-out-below-a-file"),
    pytest.param(["report", "run", "--png", "layer0:class:1"], _run_and_dir, "LAYER:GROUPING:GROUP:SNAPSHOT",
                 id="report-png-spec"),
    pytest.param(["report", "run", "--png", "nope:class:1:-1"], _run_and_dir, "The layer of '--png' must be one of",
                 id="report-png-layer"),
    pytest.param(["report", "run", "--scale", "0"], _run_and_dir, "'--scale' option", id="report-scale"),
    pytest.param(["compare", "a", "b", "--out", "outdir"], _two_runs_and_dir, "--out outdir is a folder",
                 id="compare-out-existing-dir"),
    pytest.param(["compare", "a"], _two_runs_and_dir, "two or more runs", id="compare-one-run"),
    pytest.param(["analyze", "run", "--bins", "0"], _run_and_dir, "'n_bins' parameter", id="analyze-bins"),
    pytest.param(["analyze", "run", "--probe-set", "nope"], _run_and_dir, "'probe_set' parameter must be one of",
                 id="analyze-probe-set"),
    pytest.param(["analyze", "run"], _store("run/store.h5", n_snapshots=0), "no committed snapshots",
                 id="analyze-empty-store"),
    pytest.param(["analyze", "t.txt"], _files({"t.txt": "hello"}), NOT_A_STORE("t.txt"),
                 id="analyze-text-file"),
    # info on things that are not stores
    pytest.param(["info", "t.txt"], _files({"t.txt": "hello"}), NOT_A_STORE("t.txt"),
                 id="info-text-file"),
    pytest.param(["info", "e.h5"], _files({"e.h5": ""}), NOT_A_STORE("e.h5"),
                 id="info-empty-file"),
    pytest.param(["info", "d"], _files({"d/": ""}), "d is a folder without store.h5", id="info-dir-without-store"),
    pytest.param(["info", "nothing"], None, "No store at nothing", id="info-missing"),
    pytest.param(["info", "no\x1bpe[/]"], None, "No store at no\\x1bpe[/]", id="info-hostile-path"),
    pytest.param(["info", "t.txt", "--until-good"], _files({"t.txt": "hello"}),
                 NOT_A_STORE("t.txt"), id="info-until-good-text-file"),
    # store.h5 that is no store file (#23): named with what it is, a FIFO never opened (no hang)
    pytest.param(["info", "run"], _store_as("folder"), "run/store.h5 is a folder, not a store file",
                 id="store-is-a-folder"),
    pytest.param(["report", "run"], _store_as("fifo"), "run/store.h5 is a FIFO (named pipe), not a store file",
                 id="store-is-a-fifo"),
    pytest.param(["analyze", "run/store.h5"], _store_as("fifo"), "run/store.h5 is a FIFO (named pipe)",
                 id="store-path-is-a-fifo"),
    pytest.param(["analyze", "run"], _store_as("loop"), "run/store.h5 is a symbolic link that loops back on itself",
                 id="store-is-a-link-loop"),
    pytest.param(["figure", "run", "--layer", "layer0"], _store_as("dangling"),
                 "run/store.h5 is a symbolic link to 'nowhere.h5', which does not exist",
                 id="store-is-a-dangling-link"),
    pytest.param(["info", "run"], _store_bytes(b"\x89HDF\r\n\x1a\n"), "the file holds only 8 bytes",
                 id="store-of-8-bytes"),
    pytest.param(["info", "run"], _edited_store(lambda f: f.__delitem__("probes/heldout")),
                 "probe set 'heldout' (listed in attribute 'probe_sets') has no group probes/heldout",
                 id="store-probe-set-deleted"),
    pytest.param(["info", "run"], _edited_store(_set_attr("schema_version", "one")),
                 "schema version that is not a whole number (attribute 'schema_version' is 'one')",
                 id="store-schema-version-text"),
    pytest.param(["info", "run"], _edited_store(_set_attr("schema_version", 1.5)),
                 "schema version that is not a whole number (attribute 'schema_version' is 1.5)",
                 id="store-schema-version-float"),
    pytest.param(["info", "run"], _edited_store(lambda f: f.attrs.__delitem__("schema_version")),
                 "has no schema version (attribute 'schema_version' is missing)", id="store-schema-version-missing"),
    # huge numbers: bounded, the range named
    pytest.param(["report", "run", "--scale", "100000"], _run_and_dir,
                 "The '--scale' option must be an int from 1 to 15", id="report-scale-huge"),
    pytest.param(["figure", "run", "--layer", "layer0", "--dpi", "1e9"], _run_and_dir,
                 "The '--dpi' option must be a number from 1 to 1200", id="figure-dpi-huge"),
    # layout methods: unknown or none, before any work
    pytest.param(["analyze", "run", "--layouts", "foo"], _run_and_dir, "Unknown layout method 'foo' for '--layouts'. "
                 "Available: ['pca', 'tsne', 'mds', 'som', 'force', 'umap']", id="analyze-layouts-unknown"),
    pytest.param(["report", "run", "--layouts", ","], _run_and_dir,
                 "The '--layouts' option must name at least one layout method", id="report-layouts-empty"),
]


@pytest.mark.parametrize("argv, setup, expected", CASES)
def test_hostile_input_one_line_exit_2_nothing_touched(tmp_path, monkeypatch, capsys, argv, setup, expected):
    """Bad flags, settings, names, paths and files: exit 2, one line on stderr, the folder as it was."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOPOTRACE_DEBUG", raising=False)
    cleanup = setup(tmp_path) if setup else None
    argv = [a.replace("{cwdname}", tmp_path.name) for a in argv]
    before = tree(tmp_path)
    try:
        code = main(argv)
        after = tree(tmp_path)  # before the cleanup: closing a held writer touches its store
    finally:
        if callable(cleanup):
            cleanup()
        if (tmp_path / "ro").exists():
            (tmp_path / "ro").chmod(0o755)
    captured = capsys.readouterr()
    assert code == 2, captured.err
    line = assert_one_error_line(captured.err, expected)
    if any("\x1b" in a for a in argv):
        assert "\\x1b" in line  # shown, not sent to the terminal
    assert after == before


@pytest.mark.subprocess
def test_subprocess_exit_code_and_stderr_end_to_end(tmp_path):
    """The installed command: exit status 2, one error line on stderr, nothing on stdout, nothing written."""
    env = {k: v for k, v in os.environ.items() if k != "TOPOTRACE_DEBUG"}
    (tmp_path / "t.txt").write_text("hello")
    before = tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "topotrace", "train", "--name", "../x", "--epochs", "1"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error_line(proc.stderr, "plain folder name")
    proc = subprocess.run([sys.executable, "-m", "topotrace", "info", "t.txt"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert_one_error_line(proc.stderr, NOT_A_STORE("t.txt"))
    assert tree(tmp_path) == before


@pytest.mark.parametrize("where", ["before", "after", "env"])
def test_debug_adds_the_traceback(tmp_path, monkeypatch, capsys, where):
    """--debug before or after the command, or TOPOTRACE_DEBUG=1: the traceback, then the same one line."""
    monkeypatch.chdir(tmp_path)
    argv = {"before": ["--debug", "info", "nothing"], "after": ["info", "nothing", "--debug"],
            "env": ["info", "nothing"]}[where]
    if where == "env":
        monkeypatch.setenv("TOPOTRACE_DEBUG", "1")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "FileNotFoundError" in err
    assert err.splitlines()[-1].startswith("topotrace: error: No store at nothing")


def test_a_bug_is_one_line_exit_1_and_ctrl_c_exit_130(monkeypatch, capsys):
    """An unexpected exception: one line naming it and --debug, exit 1; KeyboardInterrupt: one line, exit 130."""
    import topotrace.cmd_info as cmd_info

    monkeypatch.delenv("TOPOTRACE_DEBUG", raising=False)

    def boom(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cmd_info, "run", boom)
    assert main(["info", "x"]) == 1
    line = assert_one_error_line(capsys.readouterr().err, "unexpected RuntimeError: boom second line")
    assert "run with --debug for the traceback" in line

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cmd_info, "run", interrupted)
    assert main(["info", "x"]) == 130
    assert_one_error_line(capsys.readouterr().err, "interrupted")


def test_terminal_output_is_escaped(tmp_path, capsys, monkeypatch):
    """info prints names and metadata from a store literally: markup stays text, control characters are shown."""
    from topotrace.instrument.confidence import DEFAULT_MEASURES, outcomes
    from topotrace.instrument.store import LayerSpec, ProbeRecord, ProbeSpec, Snapshot, StoreSpec

    labels = np.array([0, 1, 0, 1])
    layer, probe = "[red]L\x1b[31m", "[bold]p\x07"
    spec = StoreSpec((LayerSpec(layer, 3, "flatten", (3,)),), (ProbeSpec(probe, np.arange(4), labels),),
                     ("[bold]a\x1b[2J", "b[/]"), DEFAULT_MEASURES)
    monkeypatch.chdir(tmp_path)  # a short relative path: the terminal's 80 columns wrap a long temporary one
    folder = Path("[red]run[/]")
    meta = {"run_name": "[/]evil\x1b]0;title\x07", "data": "[red]data[/red]", "seed": "\x1b[1m"}
    with StoreWriter.create(folder / "store.h5", spec, meta) as w:
        logits = np.eye(2, dtype=np.float32)[labels]
        pred, correct, loss, conf = outcomes(logits, labels, DEFAULT_MEASURES)
        acts = {layer: np.ones((4, 3), np.float16)}
        w.append(Snapshot(0, 0, 0.0, {probe: ProbeRecord(acts, logits, pred, correct, loss, conf)}))
    assert main(["info", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    for text in ("[red]run[/]", "[/]evil\\x1b]0;title\\x07", "[red]data[/red]", "[bold]a\\x1b[2J", "b[/]",
                 "\\x1b[1m", "[bold]p\\x07"):
        assert text in out, text
    assert "L\\x1b[31m" in out  # the layer name, in the layers table
