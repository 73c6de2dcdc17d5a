"""``topotrace train``: a built-in model (topotrace.models) trained on a data set while a :class:`Recorder` records it.

This is also a worked example of instrumenting a plain PyTorch loop: build the model, pick probe sets, create
the recorder, call ``rec.step(step, epoch)`` after each optimiser step, close the recorder.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .config import check_data_path, to_toml
from .data import INPUT_SHAPES, load_dataset, stratified_indices, train_subset
from .instrument.layers import resolve_layers
from .instrument.recorder import ProbeSet, Recorder
from .instrument.schedules import every, log_spaced, per_epoch
from .instrument.store import STORE_FILE, Store, is_store, writer_state
from .models import MLP, build_model, describe_model, layer_reductions
from .runfolder import CONFIG_FILE, RunFolder

__all__ = ["MLP", "RunFailed", "RunSummary", "check_run_config", "final_metrics", "train_run"]  # MLP: models.py




class RunFailed(OSError):
    """Training stopped on an I/O failure (disk full, ...); the run folder is kept and ``--resume`` continues it."""


@dataclass
class RunSummary:
    """What :func:`train_run` did.

    Attributes:
        run_dir: the run folder.
        store_path: its store.
        n_snapshots: snapshots the store holds (committed).
        steps: the training step reached (less than ``total_steps`` when the recording stopped early).
        seconds: wall time of training and recording.
        error: the exception that stopped the recording, if any (training then stops too).
        resumed_from: the checkpoint's step when the run was resumed.
        expected_snapshots: the snapshots the schedule asks for over the whole run.
        total_steps: the run's last training step.
        checkpoint_step: the step of the last checkpoint on disk (``None``: none yet).
        probe_seconds: of ``seconds``, the time the training loop spent in probe passes (the recording).
    """

    run_dir: Path
    store_path: Path
    n_snapshots: int
    steps: int
    seconds: float
    error: BaseException | None
    resumed_from: int | None = None
    expected_snapshots: int = 0
    total_steps: int = 0
    checkpoint_step: int | None = None
    probe_seconds: float = 0.0


def how_to_continue(checkpoint_step: int | None) -> str:
    """The words that say how a stopped run goes on (``--resume``) from where."""
    where = (f"from its checkpoint at step {checkpoint_step}" if checkpoint_step is not None
             else "from step 0 (no checkpoint was written yet)")
    return f"run the same command with --resume: it continues {where} and records the missing snapshots"


def make_schedule(cfg: dict, total_steps: int, steps_per_epoch: int) -> Callable[[int], bool]:
    """The snapshot schedule a config asks for."""
    rec = cfg["record"]
    if rec["schedule"] == "log":
        return log_spaced(total_steps, rec["snapshots"])
    if rec["schedule"] == "every":
        return every(rec["every"])
    return per_epoch(steps_per_epoch)


def meta_model(cfg: dict) -> nn.Module:
    """The model a config builds, on the meta device (no storage, no random numbers drawn): for its structure."""
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return build_model(cfg["model"], INPUT_SHAPES[cfg["data"]["source"]], 10)


def check_run_config(cfg: dict) -> None:
    """What a config asks of the model and the data, checked before anything is written.

    ``record.layers`` must name layers of the configured model of any kind (checked on a model without storage,
    built for the data source's input shape, leaving the RNG as it was); an idx data folder must exist and
    MNIST-1D needs its package.

    Raises:
        ValueError: an unknown layer (the message lists the available ones).
        FileNotFoundError: the data folder does not exist.
        MissingPackage: the mnist1d package is missing (a ValueError).
    """
    check_data_path(cfg)
    m, shape = cfg["model"], INPUT_SHAPES[cfg["data"]["source"]]
    model = meta_model(cfg)
    try:
        resolve_layers(model, cfg["record"]["layers"])
    except (ValueError, TypeError) as err:
        raise ValueError(f"The 'record.layers' setting does not fit the model ({describe_model(m, shape)}): "
                         f"{err}. Fix record.layers in the config.") from err


def is_run(run_dir: Path) -> bool:
    """True when ``run_dir`` is a folder (not a link) holding a topotrace store (the rule of Recorder's overwrite).

    See :func:`topotrace.instrument.store.is_store`: a store that opens, or a damaged one whose format HDF5 reads.
    """
    return not run_dir.is_symlink() and run_dir.is_dir() and is_store(run_dir / STORE_FILE)


def check_creatable(path: Path, what: str = "--out-dir") -> None:
    """The folder ``path`` can be made (or replaced) here: its nearest existing folder is a writable folder.

    Raises:
        NotADirectoryError: a file is in the way.
        PermissionError: the folder is not writable.
    """
    anchor = next(p for p in (path.parent, *path.parent.parents) if p.exists() or p.is_symlink())
    if not anchor.is_dir():
        raise NotADirectoryError(f"Cannot make {path}: {anchor} is a file, not a folder. Choose another {what}.")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot make {path}: the folder {anchor} is not writable. Choose another {what}.")


def check_not_live(store: Path, run_dir: Path) -> None:
    """Refuse a store that a live writer holds (it keeps a shared ``flock`` on the file while recording).

    Raises:
        BlockingIOError: the lock cannot be taken.
    """
    if store.is_file() and writer_state(store) == "live":
        raise BlockingIOError(f"The run {run_dir} is being recorded by a running process (its store.h5 is "
                              "locked); wait for it to finish or stop it, then try again.")


def check_replaceable(run_dir: Path) -> None:
    """What ``--overwrite`` may remove: a topotrace run folder that no process records into, not the cwd.

    Raises:
        FileExistsError: ``run_dir`` is not a run (no store.h5 this version reads), a link, or holds the cwd.
        BlockingIOError: the run is being recorded.
    """
    if run_dir.is_symlink() or not run_dir.is_dir():
        raise FileExistsError(f"{run_dir} exists and is not a topotrace run folder (a link or a file); --overwrite "
                              "only replaces run folders. Choose another run.name or --out-dir.")
    cwd = Path.cwd().resolve()
    if run_dir.resolve() == cwd or run_dir.resolve() in cwd.parents:
        raise FileExistsError(f"{run_dir} holds the current folder; --overwrite never removes it. Run from another "
                              "folder or choose another run.name or --out-dir.")
    check_not_live(run_dir / STORE_FILE, run_dir)
    if not is_run(run_dir):
        raise FileExistsError(f"{run_dir} exists and is not a topotrace run (no store.h5 that this version of "
                              "topotrace reads); --overwrite only replaces runs. Choose another run.name, or remove "
                              "the folder yourself if you mean to.")


def topmost_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` (itself included) that does not exist yet; ``None`` if it exists."""
    top = None
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            break
        top = p
    return top


def save_checkpoint(path: Path, state: dict) -> None:
    """Write a checkpoint atomically (temp file, then rename) as a NumPy ``.npz`` without pickle.

    ``state`` is a tree of dicts, lists, tensors, numbers, strings and ``None`` (model and optimizer state
    dicts, RNG states). Every tensor becomes one array of the archive (bits kept: float32 weights and uint8 RNG
    states round-trip exactly); the tree itself, with tensors replaced by their array names, is the JSON text
    ``"tree"``. :func:`load_checkpoint` reads it with ``allow_pickle=False``: nothing but numbers and text is
    ever decoded.
    """
    arrays: dict[str, np.ndarray] = {}

    def flatten(obj: object) -> object:
        if isinstance(obj, torch.Tensor):
            name = f"t{len(arrays)}"
            arrays[name] = obj.detach().cpu().contiguous().numpy()
            return {"__tensor__": name}
        if isinstance(obj, dict):
            return {"__dict__": [[flatten(k), flatten(v)] for k, v in obj.items()]}  # keys may be ints
        if isinstance(obj, (list, tuple)):
            return [flatten(v) for v in obj]
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"A checkpoint holds tensors, numbers and text; got {type(obj).__name__}.")

    tree = json.dumps(flatten(state))
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, tree=np.array(tree), **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` (``allow_pickle=False``: no object is unpickled).

    Raises:
        ValueError: it is unreadable or not a topotrace checkpoint.
    """
    if Path(path).is_symlink() or not Path(path).is_file() or not zipfile.is_zipfile(path):  # never a FIFO opened
        raise ValueError(f"The checkpoint {path} is not a topotrace checkpoint (a NumPy .npz archive, which "
                         "`topotrace train` writes). Remove it to restart the run from step 0 with --resume, or start "
                         "a new run.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}

        def unflatten(obj: object) -> object:
            if isinstance(obj, dict) and "__tensor__" in obj:
                return torch.from_numpy(arrays[obj["__tensor__"]].copy())
            if isinstance(obj, dict) and "__dict__" in obj:
                return {unflatten(k): unflatten(v) for k, v in obj["__dict__"]}
            if isinstance(obj, list):
                return [unflatten(v) for v in obj]
            return obj

        state = unflatten(json.loads(str(arrays.pop("tree"))))
        if not isinstance(state, dict) or state.get("format") != "topotrace-checkpoint":
            raise ValueError("not a topotrace checkpoint")
        return state
    except Exception as err:  # numpy raises OSError, ValueError, KeyError, BadZipFile, ... for a damaged file
        raise ValueError(f"The checkpoint {path} cannot be read ({type(err).__name__}: {err}). Remove it to "
                         "restart the run from step 0 with --resume, or start a new run.") from None


def _check_resumable(run_dir: Path, cfg: dict) -> None:
    from .config import load_config

    if not run_dir.is_dir() or run_dir.is_symlink():
        raise FileNotFoundError(f"No run at {run_dir} to resume. Start it without --resume (same run.name and "
                                "--out-dir), or give the name of an existing run.")
    config = RunFolder(run_dir).config
    if not config.is_file():
        raise ValueError(f"{run_dir} is not a topotrace run (no {CONFIG_FILE}); --resume continues runs that "
                         "topotrace train started. Choose another run.name.")
    store = run_dir / STORE_FILE
    check_not_live(store, run_dir)
    if store.exists() and not is_run(run_dir):
        raise ValueError(f"{run_dir} holds a {STORE_FILE} that this version of topotrace cannot read, so it cannot be "
                         "resumed. Start a new run (another run.name).")
    try:
        old = load_config(config)
    except (ValueError, TypeError, OSError) as err:
        raise ValueError(f"{run_dir}/{CONFIG_FILE} cannot be read ({err}); the run cannot be resumed.") from None
    diff = [f"{s}.{k} = {old[s][k]!r} there vs {cfg[s][k]!r} now" for s in cfg for k in cfg[s]
            if old.get(s, {}).get(k) != cfg[s][k] and (s, k) != ("run", "out_dir")]  # the same folder, named anew
    if diff:
        raise ValueError(f"Cannot resume {run_dir}: it was started with another config ({'; '.join(diff)}). Resume "
                         "with the same --config and options, or start a new run (another run.name).")


def _scheduled(cfg: dict, n_train: int) -> tuple[Callable[[int], bool], list[int], int, int]:
    """The run's schedule, the steps it records (0 .. total_steps), the total steps and the steps per epoch."""
    steps_per_epoch = -(-n_train // cfg["train"]["batch_size"])
    total_steps = steps_per_epoch * cfg["train"]["epochs"]
    schedule = make_schedule(cfg, total_steps, steps_per_epoch)
    return schedule, [s for s in range(total_steps + 1) if schedule(s)], total_steps, steps_per_epoch


def _check_store_reaches(due: list[int], store_path: Path, ckpt_path: Path, ckpt_step: int) -> None:
    """Refuse to resume from a checkpoint that is ahead of the store (snapshots before it were never committed).

    A checkpoint is written only once every snapshot up to it is committed; a checkpoint from a run whose
    recording stopped earlier (an older topotrace kept checkpointing) would resume past the missing snapshots.

    Raises:
        ValueError: the store lacks a scheduled snapshot at or before the checkpoint's step.
    """
    due = [s for s in due if s <= ckpt_step]
    with Store(store_path) as st:
        have = [int(s) for s in st.steps if s <= ckpt_step]
    if have != due:
        missing = sorted(set(due) - set(have))
        first = f" (the first missing at step {missing[0]})" if missing else ""
        raise ValueError(f"Cannot resume {store_path.parent}: its store holds {len(have)} of the {len(due)} snapshots "
                         f"due up to the checkpoint at step {ckpt_step}{first}, so the recording stopped before the "
                         f"checkpoint. Remove {ckpt_path} to record the run again from step 0 with --resume, or start "
                         "a new run (another run.name or --overwrite).")


def _settings(cfg: dict) -> str:
    """The config a checkpoint belongs to, as text: every setting but the runs folder (it may be named anew)."""
    return to_toml({**cfg, "run": {k: v for k, v in cfg["run"].items() if k != "out_dir"}})


def train_run(cfg: dict, overwrite: bool = False, progress: Callable[[int, int], None] | None = None,
              resume: bool = False) -> RunSummary:
    """Train the configured MLP and record it into ``<out_dir>/<name>/store.h5``.

    Everything is checked before anything is written (config, layers, data, the run folder). A checkpoint
    (:data:`topotrace.runfolder.CHECKPOINT_FILE`) is written after each epoch, once every snapshot up to it is
    committed, and never after the recording stopped. If the recording stops (disk full, ...), training stops too
    and the run is kept (``summary.error``); ``resume=True`` continues it from its last checkpoint (or from step 0
    without one) and records the missing snapshots. If the command fails before the first checkpoint with no snapshot
    committed (or is stopped with Ctrl-C while its recording is healthy), the folders it created are removed
    again; a store with committed snapshots is never removed.

    Args:
        cfg: a config from :func:`topotrace.config.load_config`.
        overwrite: replace an existing run folder of the same name (only a topotrace run no process records).
        progress: called as ``progress(step, total_steps)`` after each step.
        resume: continue the run of the same name from its last checkpoint (it must have the same config);
            snapshots committed after the checkpoint are cut and recorded again. A checkpoint ahead of the
            store (snapshots missing before it) is refused.

    Raises:
        FileExistsError: the run exists (without ``overwrite`` or ``resume``), or is not a run.
        FileNotFoundError: ``resume`` and there is no such run; or the data folder is missing.
        BlockingIOError: the run is being recorded by another process.
        ValueError, TypeError: a setting the model or the data refuse; ``resume`` with another config.
        RunFailed: an I/O failure (disk full) stopped training after the run folder had committed snapshots or a
            checkpoint; the run is kept and the message says how to continue.
    """
    if overwrite and resume:
        raise ValueError("--overwrite and --resume exclude each other: replace the run, or continue it.")
    check_run_config(cfg)
    run_dir = Path(cfg["run"]["out_dir"]) / cfg["run"]["name"]
    folder = RunFolder(run_dir)
    store_path, ckpt_path = folder.store, folder.checkpoint
    ckpt = None
    if resume:
        _check_resumable(run_dir, cfg)
        if os.path.lexists(ckpt_path):  # a folder or link there is refused, not skipped
            ckpt = load_checkpoint(ckpt_path)
            if ckpt.get("config") != _settings(cfg):
                raise ValueError(f"The checkpoint {ckpt_path} belongs to another config than {folder.config}; "
                                 "remove it to restart the run from step 0 with --resume.")
            if not store_path.is_file():
                raise ValueError(f"{run_dir} has a checkpoint but no {STORE_FILE}, so the snapshots before it are "
                                 "lost; start a new run (another run.name or --overwrite).")
    else:
        if run_dir.exists() or run_dir.is_symlink():
            if not overwrite:
                raise FileExistsError(f"{run_dir} exists already. Choose another run.name, pass --overwrite to "
                                      "replace it (make train OVERWRITE=1), or --resume to continue it.")
            check_replaceable(run_dir)
        check_creatable(run_dir)
    seed = int(cfg["run"]["seed"])
    torch.manual_seed(seed)
    d = cfg["data"]
    data = load_dataset(d["source"], d["path"], d["test_fraction"], seed)
    trained = train_subset(data.y_train, d["train_per_class"], seed + 2)  # indices into the training split
    x_train, y_train = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    description = data.description
    if d["train_per_class"] > 0:
        x_train, y_train = x_train[trained], y_train[trained]  # [n_trained, n_features], [n_trained]
        description += f"; trained on {d['train_per_class']} per class ({len(trained)} images)"
    m = cfg["model"]
    model = build_model(m, data.input_shape, len(data.class_names))  # the MLP draws its weights first, as ever

    probes = []
    held = stratified_indices(data.y_test, d["heldout_per_class"], seed)
    probes.append(ProbeSet("heldout", torch.from_numpy(data.x_test[held]), torch.from_numpy(data.y_test[held]), held))
    if d["train_probe_per_class"] > 0:
        tr = trained[stratified_indices(data.y_train[trained], d["train_probe_per_class"], seed + 1)]  # trained on
        probes.append(ProbeSet("train", torch.from_numpy(data.x_train[tr]), torch.from_numpy(data.y_train[tr]), tr))

    t = cfg["train"]
    schedule, due, total_steps, steps_per_epoch = _scheduled(cfg, len(x_train))
    if ckpt is not None:
        _check_store_reaches(due, store_path, ckpt_path, int(ckpt.get("step", 0)))
    r = cfg["record"]
    meta = {
        "run_name": cfg["run"]["name"],
        "seed": seed,
        "config": cfg,
        "data": description,
        "model_kind": m["kind"],  # the architecture, for reports and atlases: mlp, cnn, resnet or transformer
        "model_description": describe_model(m, data.input_shape),
        "host": platform.node(),
        "total_steps": total_steps,
    }
    optimizer = torch.optim.SGD(model.parameters(), lr=t["lr"], momentum=t["momentum"],
                                weight_decay=t["weight_decay"])
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    step, first_epoch = 0, 0
    if ckpt is not None:
        try:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            generator.set_state(ckpt["generator"])
            step, first_epoch = int(ckpt["step"]), int(ckpt["epochs_done"])
            rng = ckpt["rng"]
        except (KeyError, RuntimeError, ValueError, TypeError) as err:
            raise ValueError(f"The checkpoint {ckpt_path} does not fit this run ({err}). Remove it to restart the "
                             "run from step 0 with --resume.") from None
        torch.set_rng_state(rng)
    resumed_from = step if resume else None
    ckpt_step = step if ckpt is not None else None

    reductions = layer_reductions(m, data.input_shape, len(data.class_names), list(resolve_layers(model, r["layers"])))

    # Everything is checked; from here on the disk changes. Undo what this command made if it fails before the
    # first checkpoint (a failed start leaves nothing behind, and the corrected command is not refused).
    if overwrite and (run_dir.exists() or run_dir.is_symlink()):
        check_replaceable(run_dir)  # again: it may have changed while the data loaded
        shutil.rmtree(run_dir)
    made = None if resume else topmost_missing(run_dir)
    recorder = None
    t0 = time.perf_counter()
    try:
        if not resume:
            run_dir.mkdir(parents=True)
            folder.config.write_text(to_toml(cfg))
        else:
            store_path.with_name(store_path.name + ".creating").unlink(missing_ok=True)  # left by a kill
        recorder = Recorder(
            model, store_path, layers=r["layers"], probes=probes, class_names=data.class_names,
            schedule=schedule, meta=meta, act_dtype=r["act_dtype"], reductions=reductions,
            compression=None if r["compression"] == "none" else r["compression"], batch_size=r["batch_size"],
            mc_dropout=r["mc_dropout"], resume=resume,
            resume_step=step if resume and ckpt is not None else (-1 if resume else None),
        )
        with recorder:
            last_scheduled = recorder.last_step
            if recorder.last_step is None and recorder.step(step, epoch=0):  # the untrained model
                last_scheduled = step
            for epoch in range(first_epoch, t["epochs"]):
                order = torch.randperm(len(x_train), generator=generator)
                for start in range(0, len(order), t["batch_size"]):
                    batch = order[start : start + t["batch_size"]]
                    model.train()
                    optimizer.zero_grad()
                    loss = loss_fn(model(x_train[batch]), y_train[batch])
                    loss.backward()
                    optimizer.step()
                    step += 1
                    if recorder.step(step, epoch=epoch):
                        last_scheduled = step
                    if progress is not None:
                        progress(step, total_steps)
                    if recorder.error is not None:
                        break  # training on unrecorded would be lost work: stop, --resume continues from the checkpoint
                # Every snapshot up to here must be committed before the checkpoint says training got here.
                while recorder.recording and last_scheduled is not None and (
                        recorder.last_step is None or recorder.last_step < last_scheduled):
                    time.sleep(0.001)
                recorder.sync()  # the snapshots the checkpoint counts on are on the disk (fsync), not only in its cache
                if recorder.error is not None:  # never a checkpoint past a snapshot that was not committed
                    break
                save_checkpoint(ckpt_path, {
                    "format": "topotrace-checkpoint", "config": _settings(cfg), "step": step, "epochs_done": epoch + 1,
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(), "rng": torch.get_rng_state(),
                })
                ckpt_step = step
    except BaseException as err:
        # The store's committed snapshots are never deleted: the folder goes only when this command made it and
        # nothing is worth keeping (no snapshot committed, or the user stopped a healthy start with Ctrl-C).
        committed = recorder is not None and recorder.n_snapshots > 0
        failed = recorder is not None and recorder.error is not None
        user_stop = isinstance(err, KeyboardInterrupt) and not failed
        if made is not None and ckpt_step is None and (not committed or user_stop):
            shutil.rmtree(made, ignore_errors=True)
            raise
        kept = f"the store keeps its {recorder.n_snapshots} committed snapshots" if recorder is not None else ""
        if isinstance(err, KeyboardInterrupt):
            raise KeyboardInterrupt(f"training of {run_dir} stopped at step {step}; {kept + '; ' if kept else ''}"
                                    f"{how_to_continue(ckpt_step)}") from err
        if isinstance(err, OSError):
            reason = " ".join(str(err).split()).rstrip(".")
            raise RunFailed(f"Training of {run_dir} stopped at step {step}: {type(err).__name__}: {reason}. "
                            f"{kept[:1].upper() + kept[1:] + '. ' if kept else ''}Fix the cause (e.g. free disk "
                            f"space), then {how_to_continue(ckpt_step)}.") from err
        raise
    return RunSummary(run_dir, store_path, recorder.n_snapshots, step, time.perf_counter() - t0, recorder.error,
                      resumed_from, len(due), total_steps, ckpt_step, recorder.probe_seconds)


def final_metrics(store_path: Path) -> dict[str, dict[str, float]]:
    """Accuracy, loss and mean confidence (max_prob where recorded) at the last snapshot, per probe set."""
    out = {}
    with Store(store_path) as st:
        measure = "max_prob" if "max_prob" in st.measures else st.measures[0]
        for name in st.probes:
            out[name] = {
                "accuracy": float(np.mean(st.correct(name)[-1])),
                "loss": float(np.mean(st.loss(name)[-1])),
                "confidence": float(np.mean(st.conf(name, measure)[-1])),
                "n": len(st.labels(name)),
            }
    return out
