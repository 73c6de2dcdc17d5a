"""The store's format: constants, the spec dataclasses, and the spec's HDF5 attributes (written and checked)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

FORMAT = "topotrace-store"
SCHEMA_VERSION = 1
LIBVER = ("v110", "v110")  # readable by HDF5 1.10 tools (Debian's h5dump), required for SWMR
REDUCTIONS = ("flatten", "channel_mean", "token_mean")
ACT_DTYPES = ("float16", "float32")
COMPRESSIONS = (None, "gzip")


STORE_FILE = "store.h5"  # a run folder runs/<name>/ holds its store under this name
NONFINITE = "nonfinite"  # probes/<set>/nonfinite: (S, n_layers + 1) int64 non-finite counts (layers, then logits)
# /temperature: (S,) float64, the temperature fitted at each snapshot for the measure TEMPERATURE_MEASURE
# (topotrace.instrument.confidence.TEMP_PROB); a store has it exactly when its measures include that measure.
TEMPERATURE = "temperature"
TEMPERATURE_MEASURE = "temp_prob"


def has_temperature(spec: StoreSpec) -> bool:
    """Whether a store of ``spec`` holds the per-snapshot dataset ``/temperature``."""
    return TEMPERATURE_MEASURE in spec.measures


def resolve_store_path(path: str | os.PathLike) -> Path:
    """A run folder ``runs/<name>`` means ``runs/<name>/store.h5``; a file path is used as given."""
    p = Path(path)
    return p / STORE_FILE if p.is_dir() else p


class StoreError(ValueError):
    """A store does not match what was asked of it (schema, model, probe sets, steps), or it is damaged.

    Messages are one line that starts with the store's path.
    """


@dataclass(frozen=True)
class LayerSpec:
    """One recorded layer.

    Attributes:
        name: the module's dotted name from ``model.named_modules()``, used verbatim everywhere.
        n_neurons: values recorded per sample after reduction.
        reduction: ``"flatten"`` (every output unit is a neuron), ``"channel_mean"`` (conv outputs: the
            spatial mean of each channel is one neuron) or ``"token_mean"`` (sequence outputs [T, D]: the mean
            over tokens of each feature is one neuron).
        output_shape: the layer's output shape for one sample, before reduction.
    """

    name: str
    n_neurons: int
    reduction: str
    output_shape: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class ProbeSpec:
    """A fixed probe set, run through the model at every snapshot.

    Attributes:
        name: ``"heldout"`` or ``"train"`` by convention; any name without ``/``.
        index: array of shape (n_samples,), int64, indices of the samples in their source dataset.
        label: array of shape (n_samples,), int64, the samples' true classes.
    """

    name: str
    index: np.ndarray
    label: np.ndarray

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ProbeSpec)
            and self.name == other.name
            and np.array_equal(self.index, other.index)
            and np.array_equal(self.label, other.label)
        )


@dataclass(frozen=True)
class StoreSpec:
    """What a store holds; fixed when the store is created and checked again on resume.

    Attributes:
        layers: the recorded layers, in recording order.
        probes: the probe sets.
        class_names: one name per class; ``len(class_names)`` is the number of logits.
        measures: names of the per-sample confidence measures, e.g. ``("max_prob", "margin")``.
        act_dtype: ``"float16"`` (default) or ``"float32"`` for activations.
        compression: ``None`` (default; see ``make bench``) or ``"gzip"``.
    """

    layers: tuple[LayerSpec, ...]
    probes: tuple[ProbeSpec, ...]
    class_names: tuple[str, ...]
    measures: tuple[str, ...]
    act_dtype: str = "float16"
    compression: str | None = None

    def __post_init__(self) -> None:
        if self.act_dtype not in ACT_DTYPES:
            raise ValueError(f"The 'act_dtype' parameter must be one of {ACT_DTYPES}. Got {self.act_dtype!r} instead.")
        if self.compression not in COMPRESSIONS:
            raise ValueError(
                f"The 'compression' parameter must be one of {COMPRESSIONS}. Got {self.compression!r} instead."
            )
        if not self.layers:
            raise ValueError("A store needs at least one layer.")
        if not self.probes:
            raise ValueError("A store needs at least one probe set.")
        for kind, names in (("layer", [la.name for la in self.layers]), ("probe set", [p.name for p in self.probes]),
                            ("measure", list(self.measures))):
            for name in names:
                if not name or "/" in name or name in (".", ".."):
                    raise ValueError(f"Invalid {kind} name {name!r}: it must be non-empty and contain no '/'.")
            if len(set(names)) != len(names):
                raise ValueError(f"Duplicate {kind} names: {names}")
        for la in self.layers:
            if la.reduction not in REDUCTIONS:
                raise ValueError(f"Layer {la.name!r}: reduction must be one of {REDUCTIONS}. Got {la.reduction!r}.")

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass
class ProbeRecord:
    """One probe set's results at one snapshot (n = samples in the probe set, C = classes).

    Attributes:
        acts: layer name -> array of shape (n, n_neurons).
        logits: array of shape (n, C).
        pred: array of shape (n,), predicted class (argmax of the logits).
        correct: array of shape (n,), bool.
        loss: array of shape (n,), per-sample cross-entropy.
        conf: measure name -> array of shape (n,).
    """

    acts: dict[str, np.ndarray]
    logits: np.ndarray
    pred: np.ndarray
    correct: np.ndarray
    loss: np.ndarray
    conf: dict[str, np.ndarray]


@dataclass
class Snapshot:
    """Everything recorded at one training step.

    ``temperature`` is the temperature of the measure ``temp_prob`` fitted at this step (NaN if it could not be
    fitted); it is given exactly when the store's measures include ``temp_prob`` (:func:`has_temperature`).
    """

    step: int
    epoch: int
    time: float  # seconds since the Unix epoch when the probe pass ran
    probes: dict[str, ProbeRecord] = field(default_factory=dict)
    temperature: float | None = None  # the fitted temperature; a float exactly when the store has /temperature


def _json(obj: object) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


def _spec_to_attrs(spec: StoreSpec) -> dict[str, str]:
    return {
        "layers": _json([[la.name, la.n_neurons, la.reduction, list(la.output_shape)] for la in spec.layers]),
        "class_names": _json(list(spec.class_names)),
        "measures": _json(list(spec.measures)),
        "act_dtype": spec.act_dtype,
        "compression": spec.compression or "none",
    }


ATTRS_DIGEST = "attrs_sha256"  # root attribute: SHA-256 of the other root attributes (their text is unchecked)


def _write_root_attrs(f: h5py.File, spec: StoreSpec, meta: Mapping[str, object]) -> None:
    """The root attributes of a new store: format, schema version, the spec, the probe-set names and ``meta_*``."""
    f.attrs["format"] = FORMAT
    f.attrs["schema_version"] = SCHEMA_VERSION
    for k, v in _spec_to_attrs(spec).items():
        f.attrs[k] = v
    f.attrs["probe_sets"] = _json([p.name for p in spec.probes])
    for k, v in meta.items():
        f.attrs[f"meta_{k}"] = v if isinstance(v, str) else _json(v)


def _plain(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _attrs_digest(attrs: h5py.AttributeManager) -> str:
    """SHA-256 of every root attribute but the digest itself (names and values, as canonical JSON).

    HDF5 checksums object headers, but variable-length strings (our JSON text) live in a global heap that has
    no checksum; this digest makes a damaged attribute text detectable.
    """
    items = {k: _plain(attrs[k]) for k in attrs if k != ATTRS_DIGEST}
    return hashlib.sha256(json.dumps(items, sort_keys=True, default=str).encode()).hexdigest()


def _json_attr(f: h5py.File, name: str, path: object) -> object:
    if name not in f.attrs:
        raise StoreError(f"{path} is damaged or not a complete store: the attribute {name!r} is missing. "
                         "Restore it from a copy or record the run again.")
    try:
        return json.loads(_plain(f.attrs[name]))
    except (TypeError, ValueError) as err:
        raise StoreError(f"{path} is damaged: the attribute {name!r} is not valid JSON "
                         f"({' '.join(str(err).split())}). Restore it from a copy or record the run again.") from err


def _read_spec(f: h5py.File, path: object = None) -> StoreSpec:
    """The spec a store was created with; a missing or malformed attribute is a :class:`StoreError` naming it."""
    path = path if path is not None else f.filename
    a = f.attrs
    attr = "layers"
    try:
        layers = tuple(LayerSpec(str(n), int(k), str(r), tuple(int(x) for x in s))
                       for n, k, r, s in _json_attr(f, "layers", path))
        attr = "probe_sets"
        names = _json_attr(f, "probe_sets", path)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise TypeError("expected a list of names")
        attr = "class_names"
        class_names = tuple(str(c) for c in _json_attr(f, "class_names", path))
        attr = "measures"
        measures = tuple(str(m) for m in _json_attr(f, "measures", path))
        attr = "act_dtype/compression"
        comp = _plain(a["compression"])
        act_dtype = _plain(a["act_dtype"])
    except StoreError:
        raise
    except (TypeError, ValueError, KeyError) as err:
        raise StoreError(f"{path} is damaged: the attribute {attr!r} does not describe a store "
                         f"({' '.join(str(err).split())}). Restore it from a copy or record the run again.") from err
    # HDF5 failures reading the probe sets propagate (the reader turns them into a StoreError)
    for name in names:
        for part in (f"probes/{name}", f"probes/{name}/index", f"probes/{name}/label"):
            if part not in f:
                raise StoreError(f"{path} is damaged: probe set {name!r} (listed in attribute 'probe_sets') has no "
                                 f"{'group' if part.count('/') == 1 else 'dataset'} {part}. Restore the store from a "
                                 "copy or record the run again.")
    probes = tuple(ProbeSpec(name, f[f"probes/{name}/index"][()], f[f"probes/{name}/label"][()]) for name in names)
    try:
        return StoreSpec(layers=layers, probes=probes, class_names=class_names, measures=measures,
                         act_dtype=act_dtype, compression=None if comp == "none" else comp)
    except ValueError as err:
        raise StoreError(f"{path} is damaged: its attributes do not describe a valid store "
                         f"({' '.join(str(err).split())}). Restore it from a copy or record the run again.") from err


def _check_format(f: h5py.File, path: Path) -> None:
    a = f.attrs  # read with [] (not .get, which turns an unreadable attribute into None): damage must surface
    fmt = _plain(a["format"]) if "format" in a else None
    if fmt != FORMAT:
        raise StoreError(f"{path} is not a topotrace store (attribute 'format' is {fmt!r}).")
    if "schema_version" not in a:
        raise StoreError(f"{path} has no schema version (attribute 'schema_version' is missing): it is damaged or was "
                         f"not written by topotrace; this topotrace reads stores of schema version {SCHEMA_VERSION}. "
                         "Restore it from a copy or record the run again.")
    raw = _plain(a["schema_version"])
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise StoreError(f"{path} has a schema version that is not a whole number (attribute 'schema_version' is "
                         f"{raw!r}): it is damaged; this topotrace reads stores of schema version {SCHEMA_VERSION}. "
                         "Restore it from a copy or record the run again.")
    if raw != SCHEMA_VERSION:
        raise StoreError(
            f"{path} has store schema version {raw}; this topotrace reads version {SCHEMA_VERSION}."
        )


def _describe_mismatch(old: StoreSpec, new: StoreSpec) -> str:
    lines = []
    for name in ("class_names", "measures", "act_dtype", "compression"):
        if getattr(old, name) != getattr(new, name):
            lines.append(f"{name}: existing {getattr(old, name)!r} vs new {getattr(new, name)!r}")
    if old.layers != new.layers:
        fmt = lambda ls: [(la.name, la.n_neurons, la.reduction) for la in ls]  # noqa: E731
        lines.append(f"layers: existing {fmt(old.layers)} vs new {fmt(new.layers)}")
    if old.probes != new.probes:
        fmt = lambda ps: [(p.name, len(p.index)) for p in ps]  # noqa: E731
        lines.append(f"probe sets: existing {fmt(old.probes)} vs new {fmt(new.probes)} (or different samples)")
    return "; ".join(lines)
