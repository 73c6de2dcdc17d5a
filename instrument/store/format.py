"""The store's format: constants, the spec dataclasses, the layout table, and the spec's HDF5 attributes.

:data:`DATASETS` is the one table of the store's datasets (name, group, row shape, dtype, per-snapshot or fixed,
when present, how a sharded run combines it): :mod:`.writer` creates and appends from it, :mod:`.reader` checks
a store against it and :mod:`.shards` writes a sharded run's combined store from it. :data:`SCHEMA_VERSION`
rises with any change of the table (docs/store.md, "Schema version").
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

FORMAT = "topotrace-store"
SCHEMA_VERSION = 1
"""The version of the store's layout, written into every new store (root attribute ``schema_version``).

Rule: it rises by one with any change of what a store holds: a row of :data:`DATASETS` added, removed or changed
(name, group, shape rule, dtype, presence, attributes, how shards combine it) or a root attribute added or removed
(:data:`ROOT_ATTRS`). ``tests/test_store_layout.py`` pins :func:`layout_fingerprint` per version and fails when the
table changes without a new version. Readers read every version from 1 to this one (an older store lacks the
rows whose ``required_from`` is newer than its version, and is read without them; a resumed store keeps its
version and its layout); a store of a newer version is refused in one line that says to upgrade topotrace.
Version 1 covers every store written before the table existed (with or without checksums, ``nonfinite`` or
``/temperature``, see docs/store.md).
"""
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
# The root attributes of every store, in the order they are written; then ``meta_<key>`` per metadata key, then
# (a sharded run's combined store only) ``shards``, and last ATTRS_DIGEST.
ROOT_ATTRS = ("format", "schema_version", "layers", "class_names", "measures", "act_dtype", "compression", "probe_sets")


def _write_root_attrs(f: h5py.File, spec: StoreSpec, meta: Mapping[str, object]) -> None:
    """The root attributes of a new store: :data:`ROOT_ATTRS` (format, version, the spec) and ``meta_*``."""
    values = {"format": FORMAT, "schema_version": SCHEMA_VERSION, **_spec_to_attrs(spec),
              "probe_sets": _json([p.name for p in spec.probes])}
    for k in ROOT_ATTRS:
        f.attrs[k] = values[k]
    for k, v in meta.items():
        f.attrs[f"meta_{k}"] = v if isinstance(v, str) else _json(v)


# --- the layout: one table of the store's datasets ---------------------------------------------------------------

ROOT = "/"  # group of a row: the file's root
PROBE = "probes/<set>"  # group of a row: the group of each probe set


@dataclass(frozen=True)
class DatasetSpec:
    """One row of :data:`DATASETS`: a dataset of every store (or one per recorded layer or confidence measure).

    Attributes:
        name: the path inside its group; ``{layer}`` or ``{measure}`` in it makes one dataset per recorded layer
            (``acts/{layer}``) or confidence measure (``conf/{measure}``).
        group: :data:`ROOT` (the file's root) or :data:`PROBE` (each probe set's group ``probes/<set>``).
        shape: the row shape (after the snapshot axis for a per-snapshot dataset; the whole shape of a fixed one)
            in symbols: ``"n"`` the probe set's samples, ``"C"`` the classes, ``"d"`` the layer's neurons,
            ``"L+1"`` the layers and the logits; an int stands for itself.
        dtype: a numpy dtype name, or ``"act_dtype"``: the spec's activation dtype.
        per_snapshot: one row per snapshot: shape (S, *row), resizable along axis 0, one snapshot per chunk,
            Fletcher-32, appended under the commit protocol. Otherwise fixed: written once at creation.
        source: where the writer takes the values. A per-snapshot row: the attribute of :class:`Snapshot` (root
            rows) or of :class:`ProbeRecord` (probe rows; a dict by layer or measure for ``{layer}``/``{measure}``
            rows), also checked against the row shape before anything is written. A fixed row: the attribute of
            :class:`ProbeSpec`. ``None``: the writer makes it (``committed``; :data:`NONFINITE`, counted on the
            stored activations and logits).
        when: which stores have it: ``"always"``, or a key of :data:`PRESENCE` (a rule on the spec).
        attrs: the dataset's HDF5 attributes, by name (values: :func:`dataset_attrs`; the reader checks them).
        compressed: takes the spec's compression.
        checksum: a fixed row is stored in one chunk with Fletcher-32 (per-snapshot rows always are).
        shards: what a sharded run's combined store holds for it: ``"split"`` (a virtual dataset that puts the
            shards' rows side by side along the sample axis), ``"first"`` (shard 0's through a virtual dataset:
            the same in every shard), ``"whole"`` (written in full from the spec), ``"counts"`` (a virtual dataset
            of every shard's count) or ``"own"`` (absent: every shard keeps its own, the reader combines them).
        required_from: the first schema version whose stores always hold it; a store of an older version may lack
            it and is read (and resumed) without it. 1: every store holds it.
    """

    name: str
    group: str
    shape: tuple[str | int, ...]
    dtype: str
    per_snapshot: bool
    source: str | None
    when: str = "always"
    attrs: tuple[str, ...] = ()
    compressed: bool = False
    checksum: bool = False
    shards: str = "split"
    required_from: int = 1


# Presence rules for DatasetSpec.when: name -> (whether a store of the spec has the dataset, why, for messages).
PRESENCE: dict[str, tuple[Callable[[StoreSpec], bool], str]] = {
    "temp_prob": (has_temperature, f"it is recorded exactly with the measure {TEMPERATURE_MEASURE!r}"),
}

# The layout. Rows are created in this order (root rows, then every probe set's rows), which the bytes of a new
# store depend on: append a new row at the end of its group. A change here is a new SCHEMA_VERSION.
DATASETS: tuple[DatasetSpec, ...] = (
    DatasetSpec("committed", ROOT, (1,), "int64", per_snapshot=False, source=None, shards="counts"),
    DatasetSpec("step", ROOT, (), "int64", per_snapshot=True, source="step", shards="first"),
    DatasetSpec("epoch", ROOT, (), "int64", per_snapshot=True, source="epoch", shards="first"),
    DatasetSpec("time", ROOT, (), "float64", per_snapshot=True, source="time", shards="first"),
    DatasetSpec(TEMPERATURE, ROOT, (), "float64", per_snapshot=True, source="temperature", when="temp_prob",
                shards="first"),
    DatasetSpec("index", PROBE, ("n",), "int64", per_snapshot=False, source="index", checksum=True, shards="whole"),
    DatasetSpec("label", PROBE, ("n",), "int64", per_snapshot=False, source="label", checksum=True, shards="whole"),
    DatasetSpec("logits", PROBE, ("n", "C"), "float32", per_snapshot=True, source="logits", compressed=True),
    DatasetSpec("pred", PROBE, ("n",), "int64", per_snapshot=True, source="pred"),
    DatasetSpec("correct", PROBE, ("n",), "bool", per_snapshot=True, source="correct"),
    DatasetSpec("loss", PROBE, ("n",), "float32", per_snapshot=True, source="loss"),
    DatasetSpec("acts/{layer}", PROBE, ("n", "d"), "act_dtype", per_snapshot=True, source="acts",
                attrs=("reduction", "output_shape"), compressed=True),
    DatasetSpec("conf/{measure}", PROBE, ("n",), "float32", per_snapshot=True, source="conf"),
    DatasetSpec(NONFINITE, PROBE, ("L+1",), "int64", per_snapshot=True, source=None, attrs=("columns",),
                shards="own", required_from=2),
)


class Planned(NamedTuple):
    """One dataset of a particular store: its row of :data:`DATASETS` resolved against the store's spec.

    Attributes:
        row: the table row.
        path: the dataset's path from the root (``"step"``, ``"probes/heldout/acts/fc1"``).
        key: its path inside its group (``"step"``, ``"acts/fc1"``).
        shape: the row shape in numbers.
        dtype: the numpy dtype name.
        probe: the probe set of a probe row (None for a root row).
        item: the layer (``{layer}``) or measure (``{measure}``) name, else None.
    """

    row: DatasetSpec
    path: str
    key: str
    shape: tuple[int, ...]
    dtype: str
    probe: ProbeSpec | None
    item: str | None


def present(row: DatasetSpec, spec: StoreSpec) -> bool:
    """Whether a store of ``spec`` has the datasets of ``row`` (its ``when`` rule)."""
    return row.when == "always" or PRESENCE[row.when][0](spec)


def plan(spec: StoreSpec) -> Iterator[Planned]:
    """Every dataset a store of ``spec`` holds (as written by this version), in creation order."""
    layers = {la.name: la for la in spec.layers}
    for probe in (None, *spec.probes):
        group = ROOT if probe is None else PROBE
        for row in DATASETS:
            if row.group != group or not present(row, spec):
                continue
            items = (list(layers) if "{layer}" in row.name else list(spec.measures) if "{measure}" in row.name
                     else [None])
            for item in items:
                dims = {"n": len(probe.index) if probe is not None else None, "C": spec.n_classes,
                        "d": layers[item].n_neurons if item in layers else None, "L+1": len(spec.layers) + 1}
                key = row.name.format(layer=item, measure=item) if item is not None else row.name
                path = key if probe is None else f"probes/{probe.name}/{key}"
                shape = tuple(d if isinstance(d, int) else dims[d] for d in row.shape)
                dtype = spec.act_dtype if row.dtype == "act_dtype" else row.dtype
                yield Planned(row, path, key, shape, dtype, probe, item)


def dataset_attrs(ds: Planned, spec: StoreSpec) -> dict[str, object]:
    """The HDF5 attributes of one dataset (``ds.row.attrs``), by name, as the writer writes them."""
    out: dict[str, object] = {}
    for name in ds.row.attrs:
        la = next((la for la in spec.layers if la.name == ds.item), None)
        if name == "reduction":
            out[name] = la.reduction
        elif name == "output_shape":
            out[name] = np.asarray(la.output_shape, np.int64)
        elif name == "columns":
            out[name] = _json([la.name for la in spec.layers] + ["logits"])
        else:
            raise KeyError(f"No value for the dataset attribute {name!r} (add it to dataset_attrs).")
    return out


def attr_value(value: object) -> object:
    """A dataset attribute as plain Python, JSON text decoded, for comparing what a store holds with the table's."""
    value = _plain(value)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def layout_fingerprint() -> str:
    """SHA-256 of the layout: every row of :data:`DATASETS`, :data:`ROOT_ATTRS` and the digest attribute's name.

    Pinned per :data:`SCHEMA_VERSION` by ``tests/test_store_layout.py``.
    """
    table = {"datasets": [asdict(r) for r in DATASETS], "root_attrs": list(ROOT_ATTRS), "digest": ATTRS_DIGEST,
             "presence": sorted(PRESENCE)}
    return hashlib.sha256(json.dumps(table, sort_keys=True).encode()).hexdigest()


def readable_versions() -> str:
    """The schema versions this code reads, for messages: ``"1"`` or ``"1 to 3"``."""
    return "1" if SCHEMA_VERSION == 1 else f"1 to {SCHEMA_VERSION}"


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


def _check_format(f: h5py.File, path: Path) -> int:
    """Check the format and schema version attributes; returns the store's schema version (1 .. SCHEMA_VERSION)."""
    reads = readable_versions()
    a = f.attrs  # read with [] (not .get, which turns an unreadable attribute into None): damage must surface
    fmt = _plain(a["format"]) if "format" in a else None
    if fmt != FORMAT:
        raise StoreError(f"{path} is not a topotrace store (attribute 'format' is {fmt!r}).")
    if "schema_version" not in a:
        raise StoreError(f"{path} has no schema version (attribute 'schema_version' is missing): it is damaged or was "
                         f"not written by topotrace; this topotrace reads stores of schema version {reads}. "
                         "Restore it from a copy or record the run again.")
    raw = _plain(a["schema_version"])
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise StoreError(f"{path} has a schema version that is not a whole number (attribute 'schema_version' is "
                         f"{raw!r}): it is damaged; this topotrace reads stores of schema version {reads}. "
                         "Restore it from a copy or record the run again.")
    if not 1 <= raw <= SCHEMA_VERSION:
        advice = (" It was written by a newer topotrace: upgrade topotrace to read it." if raw > SCHEMA_VERSION
                  else " Restore it from a copy or record the run again.")
        raise StoreError(f"{path} has store schema version {raw}; this topotrace reads version "
                         f"{reads}.{advice}")
    return raw


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
