"""Run configuration: TOML files in ``configs/``, checked against defaults before any work starts."""

from __future__ import annotations

import copy
import math
import re
import tomllib
from pathlib import Path

# The built-in models (topotrace.models.BUILDERS): each kind's parameters in [model] with their defaults.
MODEL_KINDS: dict[str, dict[str, object]] = {
    "mlp": {"hidden": [128, 64], "dropout": 0.0, "batchnorm": False},
    "cnn": {"channels": [16, 32], "kernel_size": 3, "dropout": 0.0, "batchnorm": False},
    "resnet": {"channels": [16, 32], "blocks": 1, "dropout": 0.0},
    "transformer": {"d_model": 32, "heads": 4, "blocks": 2, "ff": 64, "kernel_size": 1, "dropout": 0.0},
}
# Every [model] setting of any kind, for the type check (a setting has one type whatever the kind).
MODEL_SETTINGS: dict[str, object] = {"kind": "mlp"} | {k: v for ps in MODEL_KINDS.values() for k, v in ps.items()}

DEFAULTS: dict[str, dict[str, object]] = {
    "run": {"name": "digits", "seed": 0, "out_dir": "runs", "authors": []},
    "data": {"source": "digits", "path": "", "test_fraction": 0.25, "heldout_per_class": 40,
             "train_probe_per_class": 40, "train_per_class": 0},
    "model": {"kind": "mlp", **MODEL_KINDS["mlp"]},
    "train": {"epochs": 30, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0},
    "record": {"layers": ["hidden1", "hidden2"], "schedule": "log", "snapshots": 60, "every": 50,
               "act_dtype": "float16", "compression": "none", "batch_size": 512, "mc_dropout": 0},
}
SCHEDULES = ("log", "every", "epoch")
ACT_DTYPES = ("float16", "float32")  # as topotrace.instrument.store (imported lazily there: h5py)
COMPRESSIONS = ("none", "gzip")


def default_layers(model: dict) -> list[str]:
    """The layers a run records when the config does not set ``record.layers``: those of its model kind.

    mlp: ``hidden1``, ``hidden2`` (the first two hidden layers); cnn: ``conv1`` .. ``convN`` (every conv block);
    resnet and transformer: ``block1`` .. ``blockN`` (every residual or encoder block).
    """
    kind = model["kind"]
    if kind == "mlp":
        return [f"hidden{i + 1}" for i in range(min(2, len(model["hidden"])))]
    if kind == "cnn":
        return [f"conv{i + 1}" for i in range(len(model["channels"]))]
    n = len(model["channels"]) * model["blocks"] if kind == "resnet" else model["blocks"]
    return [f"block{i + 1}" for i in range(n)]


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
        elif key == "layers" and section == "record":  # a name, a glob, or a list of them
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


def _check_path_text(value: str, what: str) -> None:
    if "\x00" in value or not value.isprintable():
        raise ValueError(f"The {what} must be a path without control characters. Got {value!r}.")


def check_out_dir(value: object, what: str = "'run.out_dir' setting") -> str:
    """The runs folder: any folder path (created when missing); not an existing file, no control characters.

    Raises:
        TypeError, ValueError: anything else, naming what is allowed.
    """
    if not isinstance(value, str):
        raise TypeError(f"The {what} must be a folder path (str). Got {value!r} ({type(value).__name__}) instead.")
    if not value:
        raise ValueError(f"The {what} must be a folder path; got an empty one. Give '.' for the current folder.")
    _check_path_text(value, what)
    if Path(value).exists() and not Path(value).is_dir():
        raise ValueError(f"The {what} must be a folder (the runs folder). Got {value!r}, which is a file; "
                         "choose another folder.")
    return value


def _check_range(cfg: dict, section: str, key: str, low: float, high: float = math.inf, low_open: bool = False,
                 high_open: bool = True) -> None:
    value = cfg[section][key]
    ok = math.isfinite(value) and (value > low if low_open else value >= low) and (
        value < high if high_open else value <= high)
    if not ok:
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        hi = "inf" if high == math.inf else repr(high)
        raise ValueError(f"The '{section}.{key}' setting must be a finite number in {left}{low!r}, {hi}{right}. "
                         f"Got {value!r} instead.")


def _check_values(cfg: dict) -> None:
    """Every setting's value, after the types: ranges, choices, list items, paths (see DEFAULTS)."""
    from .data import IDX_SOURCES, SOURCES

    check_run_name(cfg["run"]["name"], "run.name")
    check_out_dir(cfg["run"]["out_dir"])
    _check_range(cfg, "run", "seed", 0, 2**32)
    authors = cfg["run"]["authors"]
    if authors:
        from .authors import parse_author  # "Given Family <ORCID>", as the archive names authors

        for text in authors:
            parse_author(text, "The 'run.authors' setting's entry")
    for section, key in (("train", "epochs"), ("train", "batch_size"), ("record", "snapshots"), ("record", "every"),
                         ("record", "batch_size"), ("data", "heldout_per_class")):
        if cfg[section][key] < 1:
            raise ValueError(f"The '{section}.{key}' setting must be >= 1. Got {cfg[section][key]!r} instead.")
    _check_range(cfg, "data", "train_probe_per_class", 0)
    if cfg["data"]["train_per_class"] < 0:  # the upper bound depends on the data: checked by data.train_subset
        raise ValueError(f"The 'data.train_per_class' setting must be an int >= 0 (0 = all training images, N = N "
                         f"per class). Got {cfg['data']['train_per_class']!r} instead.")
    _check_range(cfg, "data", "test_fraction", 0.0, 1.0, low_open=True)
    _check_range(cfg, "train", "lr", 0.0, low_open=True)
    _check_range(cfg, "train", "momentum", 0.0, 1.0)
    _check_range(cfg, "train", "weight_decay", 0.0)
    if cfg["record"]["mc_dropout"] < 0:
        raise ValueError(f"The 'record.mc_dropout' setting must be an int >= 0 (Monte-Carlo dropout passes per probe "
                         f"set at each snapshot; 0 = off). Got {cfg['record']['mc_dropout']!r} instead.")
    if cfg["record"]["mc_dropout"] > 0 and cfg["model"]["dropout"] <= 0:
        raise ValueError(f"The 'record.mc_dropout' setting ({cfg['record']['mc_dropout']}) needs dropout in the model: "
                         f"set model.dropout > 0 (e.g. 0.1) or record.mc_dropout = 0. Got model.dropout = "
                         f"{cfg['model']['dropout']!r}.")
    layers = cfg["record"]["layers"]
    if not layers or (isinstance(layers, list) and not all(layers)):
        raise ValueError(f"The 'record.layers' setting must name at least one layer (a name or glob, or a list of "
                         f"non-empty ones, e.g. [\"hidden1\", \"hidden2\"]). Got {layers!r} instead.")
    for key, allowed in (("schedule", SCHEDULES), ("act_dtype", ACT_DTYPES), ("compression", COMPRESSIONS)):
        if cfg["record"][key] not in allowed:
            raise ValueError(f"The 'record.{key}' setting must be one of {allowed}. "
                             f"Got {cfg['record'][key]!r} instead.")
    d = cfg["data"]
    if d["source"] not in SOURCES:
        raise ValueError(f"The 'data.source' setting must be one of {SOURCES}. Got {d['source']!r} instead.")
    _check_path_text(d["path"], "'data.path' setting")
    if d["source"] in IDX_SOURCES and not d["path"]:
        raise ValueError(f"data.source = {d['source']!r} needs data.path, the folder holding its idx files "
                         "(train-images-idx3-ubyte etc.; nothing is downloaded). Set data.path in the config.")


def _check_model(m: dict) -> None:
    """The [model] settings of the configured kind: widths and counts >= 1, heads dividing d_model, dropout."""

    def count_list(key: str, example: str) -> None:
        v = m[key]
        if not v or not all(isinstance(h, int) and not isinstance(h, bool) and h >= 1 for h in v):
            raise ValueError(f"The 'model.{key}' setting must be a non-empty list of ints >= 1 (e.g. {example}). "
                             f"Got {v!r} instead.")

    for key, example in (("hidden", "[128, 64]"), ("channels", "[16, 32]")):
        if key in m:
            count_list(key, example)
    for key in ("kernel_size", "blocks", "d_model", "heads", "ff"):
        if key in m and m[key] < 1:
            raise ValueError(f"The 'model.{key}' setting must be an int >= 1 (model.kind = {m['kind']!r}). "
                             f"Got {m[key]!r} instead.")
    if m["kind"] == "transformer" and m["d_model"] % m["heads"]:
        raise ValueError(f"The 'model.d_model' setting ({m['d_model']}) must be a multiple of model.heads "
                         f"({m['heads']}): each head gets d_model / heads features. Change one of them.")
    if not (math.isfinite(m["dropout"]) and 0.0 <= m["dropout"] < 1.0):
        raise ValueError(f"The 'model.dropout' setting must be a finite number in [0.0, 1.0). Got {m['dropout']!r} "
                         "instead.")


def _model_section(given: dict[str, object]) -> dict[str, object]:
    """The [model] section: ``kind`` (default mlp) and that kind's parameters, defaults filled in.

    Raises:
        ValueError: an unknown kind (listing the known ones), or a parameter of another kind.
    """
    kind = given.get("kind", "mlp")
    if kind not in MODEL_KINDS:
        raise ValueError(f"The 'model.kind' setting must be one of {list(MODEL_KINDS)}. Got {kind!r} instead.")
    params = MODEL_KINDS[kind]
    for key in given:
        if key != "kind" and key not in params:
            owners = " or ".join(repr(k) for k, p in MODEL_KINDS.items() if key in p)
            raise ValueError(f"The 'model.{key}' setting is a parameter of model.kind = {owners}, not of {kind!r}. "
                             f"Parameters of {kind!r}: {list(params)}. Remove it or set model.kind.")
    return {"kind": kind, **copy.deepcopy(params), **{k: v for k, v in given.items() if k != "kind"}}


def check_data_path(cfg: dict) -> None:
    """The data a run reads exists (checked before a run starts, not when a config is only read).

    Raises:
        FileNotFoundError: ``data.path`` of an idx data source is not a folder.
        MissingPackage: ``data.source = "mnist1d"`` without the mnist1d package (a ModuleNotFoundError and a
            ValueError).
    """
    from .data import IDX_SOURCES, check_mnist1d

    d = cfg["data"]
    if d["source"] == "mnist1d":
        check_mnist1d()
    if d["source"] in IDX_SOURCES and not Path(d["path"]).is_dir():
        raise FileNotFoundError(f"data.source = {d['source']!r} reads its idx files from the folder data.path = "
                                f"{d['path']!r}, which does not exist. Set data.path to the folder holding "
                                "train-images-idx3-ubyte etc. (nothing is downloaded).")


def load_config(path: str | Path | None = None, overrides: dict[str, dict[str, object]] | None = None) -> dict:
    """Read a TOML config over the defaults; unknown sections or keys and bad values are errors.

    Returns:
        A nested dict ``{section: {key: value}}`` with every setting present.

    Raises:
        FileNotFoundError: ``path`` is not a file.
        ValueError, TypeError: the file is not TOML, or a section, key, type or value is not allowed; the message
            names the setting, what is allowed and what was given.
    """
    cfg = copy.deepcopy(DEFAULTS)
    model: dict[str, object] = {}  # the [model] settings given (file, then overrides)
    layers_given = False
    given: dict = {}
    if path is not None:
        if not Path(path).is_file():
            raise FileNotFoundError(f"The config file {path} does not exist or is not a file. Give a TOML file such "
                                    "as configs/digits.toml, or leave out --config for the built-in digits run.")
        with open(path, "rb") as fh:
            try:
                given = tomllib.load(fh)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
                raise ValueError(f"{path} is not valid TOML ({err}). Fix the file; configs/digits.toml shows "
                                 "the format.") from err
    for layer in (given, overrides or {}):
        for section, values in layer.items():
            if section not in cfg:
                raise ValueError(f"Unknown config section [{section}]. Allowed: {sorted(cfg)}")
            if not isinstance(values, dict):
                raise TypeError(f"Config section [{section}] must be a table. Got {values!r} instead.")
            _check_types(section, values, MODEL_SETTINGS if section == "model" else DEFAULTS[section])
            if section == "model":
                model.update(values)
            else:
                cfg[section].update(values)
            layers_given = layers_given or (section == "record" and "layers" in values)
    cfg["model"] = _model_section(model)
    _check_model(cfg["model"])  # before its default layers are counted
    if not layers_given:
        cfg["record"]["layers"] = default_layers(cfg["model"])
    _check_values(cfg)
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
