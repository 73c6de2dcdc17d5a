"""Run configuration: TOML files in ``configs/``, checked against defaults before any work starts."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path

DEFAULTS: dict[str, dict[str, object]] = {
    "run": {"name": "digits", "seed": 0, "out_dir": "runs"},
    "data": {"source": "digits", "path": "", "test_fraction": 0.25, "heldout_per_class": 40,
             "train_probe_per_class": 40},
    "model": {"hidden": [128, 64], "dropout": 0.0, "batchnorm": False},
    "train": {"epochs": 30, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
    "record": {"layers": ["hidden1", "hidden2"], "schedule": "log", "snapshots": 60, "every": 50,
               "act_dtype": "float16", "compression": "none", "batch_size": 512},
}
SCHEDULES = ("log", "every", "epoch")


def _check_types(section: str, given: dict[str, object], default: dict[str, object]) -> None:
    for key, value in given.items():
        if key not in default:
            raise ValueError(f"Unknown setting '{section}.{key}'. Allowed in [{section}]: {sorted(default)}")
        want = default[key]
        if isinstance(want, bool):
            ok = isinstance(value, bool)
        elif isinstance(want, (int, float)):
            kinds = (int, float) if isinstance(want, float) else (int,)
            ok = isinstance(value, kinds) and not isinstance(value, bool)
        elif key == "layers":  # a name, a glob, or a list of them
            ok = isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))
        else:
            ok = isinstance(value, type(want))
        if not ok:
            raise TypeError(f"Setting '{section}.{key}' must be of type {type(want).__name__}. "
                            f"Got {value!r} ({type(value).__name__}) instead.")


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def check_run_name(name: object, what: str = "run name") -> str:
    """A run or study name is one plain folder name inside the runs folder: letters, digits, ``.``, ``_``, ``-``.

    Raises:
        ValueError: anything else (``..``, ``.``, a path, an empty name), naming what is allowed.
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise ValueError(f"The {what} must be a plain folder name: 1-100 letters, digits, '.', '_' or '-', starting "
                         f"with a letter or digit (it becomes a folder inside the runs folder). Got {name!r}.")
    return name


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, object]] | None = None) -> dict:
    """Read a TOML config over the defaults; unknown sections or keys are errors.

    Returns:
        A nested dict ``{section: {key: value}}`` with every setting present.
    """
    cfg = copy.deepcopy(DEFAULTS)
    given: dict = {}
    if path is not None:
        with open(path, "rb") as fh:
            try:
                given = tomllib.load(fh)
            except tomllib.TOMLDecodeError as err:
                raise ValueError(f"{path} is not valid TOML: {err}") from err
    for layer in (given, overrides or {}):
        for section, values in layer.items():
            if section not in cfg:
                raise ValueError(f"Unknown config section [{section}]. Allowed: {sorted(cfg)}")
            if not isinstance(values, dict):
                raise TypeError(f"Config section [{section}] must be a table. Got {values!r} instead.")
            _check_types(section, values, DEFAULTS[section])
            cfg[section].update(values)
    if cfg["record"]["schedule"] not in SCHEDULES:
        raise ValueError(f"The 'record.schedule' setting must be one of {SCHEDULES}. "
                         f"Got {cfg['record']['schedule']!r} instead.")
    check_run_name(cfg["run"]["name"], "run.name")
    for section, key in (("train", "epochs"), ("train", "batch_size"), ("record", "snapshots"), ("record", "every"),
                         ("data", "heldout_per_class")):
        if cfg[section][key] < 1:
            raise ValueError(f"The '{section}.{key}' setting must be >= 1. Got {cfg[section][key]!r} instead.")
    return cfg


def to_toml(cfg: dict) -> str:
    """Write a config (as returned by :func:`load_config`) back as TOML text."""

    def value(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return repr(v)

    lines = []
    for section, values in cfg.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)
