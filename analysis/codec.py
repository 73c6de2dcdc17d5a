"""One codec for ``analysis.h5``: each result field declares its storage beside it; one writer and one reader.

A field of a result dataclass (:mod:`.results`) is declared with one of the functions below instead of a bare
``dataclasses.field``; the storage goes into the field's metadata (key :data:`KEY`) and :func:`write` /
:func:`read` walk the dataclass's fields in order. An object is stored in one HDF5 group (the file's root for
:class:`~.results.AnalysisResults`); a field is stored in that group under its own name as

- :func:`attr`: an attribute, converted by a rule of :data:`RULES` (JSON text for lists and mappings);
- :func:`dataset`: a dataset, cast to a fixed dtype or written as the array is;
- :func:`datasets`: a mapping name -> array as the datasets ``<field>/<name>`` (``<field>/<a>/<b>`` for a mapping
  of mappings), its key order in a JSON attribute when one is named (else read back in the file's order, by name);
- :func:`groups`: a mapping key -> dataclass as the groups ``<field>/<key>``, key order as for :func:`datasets`;
  the dataclass field that holds the key is declared :func:`key` (not stored, filled in on reading);
- :func:`group`: an optional dataclass as the group ``<field>`` (absent for ``None``);
- :func:`inline`: a dataclass whose own fields are stored in this same group.

On reading, a field missing from the file takes its dataclass default (results of older analyses); a field
without a default must be there (``KeyError`` otherwise). Datasets are plain (contiguous, uncompressed) and are
all written by the ``put`` function handed to :func:`write`, so a caller can watch or fail every write.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

KEY = "h5"  # the metadata key of a field's storage
Put = Callable[[h5py.Group, str, np.ndarray], None]  # writes one dataset: put(group, path, array)


def _text(v: object) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return str(obj)


def _dumps(obj: object) -> str:
    return json.dumps(obj, default=_json_default)


def _loads(v: object) -> Any:
    return json.loads(_text(v))


def _same(v: object) -> object:
    return v


RULES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any]]] = {
    # name: (value -> attribute, attribute -> value)
    "str": (_same, _text),  # text attribute
    "int": (int, int),  # int64 scalar
    "float": (float, float),  # float64 scalar
    "number": (_same, float),  # a number written with its own type, read as float
    "bool": (bool, bool),  # HDF5 boolean
    "json": (_dumps, _loads),  # JSON text of a JSON-able value
    "list": (lambda v: _dumps(list(v)), _loads),  # JSON text of a sequence, read as a list
    "tuple": (lambda v: _dumps(list(v)), lambda v: tuple(_loads(v))),  # the same, read as a tuple
    "ints": (lambda v: np.asarray(v, np.int64), lambda v: tuple(int(x) for x in v)),  # int64 array, read as a tuple
    "floats": (lambda v: np.asarray(v, np.float64), lambda v: tuple(float(x) for x in v)),  # float64 array, tuple
}


class _Missing:
    """What a storage's ``read`` returns when the file does not hold the field."""


MISSING = _Missing()


@dataclasses.dataclass(frozen=True)
class _Attr:
    rule: str
    record: type | None = None  # a dataclass stored as a JSON object (``null`` for None)
    written: Callable[[Any], bool] | None = None  # write only when this holds

    def write(self, g: h5py.Group, name: str, value: Any, put: Put) -> None:
        if self.written is not None and not self.written(value):
            return
        if self.record is not None:
            value = None if value is None else {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        g.attrs[name] = RULES[self.rule][0](value)

    def read(self, g: h5py.Group, name: str) -> Any:
        if name not in g.attrs:
            return MISSING
        value = RULES[self.rule][1](g.attrs[name])
        if self.record is not None:
            return None if value is None else self.record(**value)
        return value


@dataclasses.dataclass(frozen=True)
class _Dataset:
    dtype: Any = None

    def write(self, g: h5py.Group, name: str, value: Any, put: Put) -> None:
        put(g, name, np.asarray(value, self.dtype) if self.dtype is not None else value)

    def read(self, g: h5py.Group, name: str) -> Any:
        return g[name][()] if name in g else MISSING


def _order(g: h5py.Group, name: str, order: str | None, depth: int) -> Any:
    """The keys of a mapping stored under ``name``: from the order attribute, else the file's (by name)."""
    if order is not None and order in g.attrs:
        return _loads(g.attrs[order])
    if name not in g:
        return MISSING
    if depth == 2:
        return {k: list(h) for k, h in g[name].items()}
    return list(g[name])


@dataclasses.dataclass(frozen=True)
class _Datasets:
    dtype: Any = None
    order: str | None = None  # the attribute that keeps the key order (JSON)
    depth: int = 1  # 2: a mapping of mappings

    def write(self, g: h5py.Group, name: str, value: Any, put: Put) -> None:
        if self.order is not None:
            g.attrs[self.order] = _dumps({k: list(v) for k, v in value.items()} if self.depth == 2 else list(value))
        cell = _Dataset(self.dtype)
        for k, v in value.items():
            if self.depth == 2:
                for k2, v2 in v.items():
                    cell.write(g, f"{name}/{k}/{k2}", v2, put)
            else:
                cell.write(g, f"{name}/{k}", v, put)

    def read(self, g: h5py.Group, name: str) -> Any:
        keys = _order(g, name, self.order, self.depth)
        if keys is MISSING:
            return MISSING
        if self.depth == 2:
            return {k: {k2: g[f"{name}/{k}/{k2}"][()] for k2 in names} for k, names in keys.items()}
        return {k: g[f"{name}/{k}"][()] for k in keys}


@dataclasses.dataclass(frozen=True)
class _Groups:
    cls: type
    order: str | None = None
    key: str | None = None  # the field of ``cls`` that holds the key

    def write(self, g: h5py.Group, name: str, value: Any, put: Put) -> None:
        if self.order is not None:
            g.attrs[self.order] = _dumps(list(value))
        for k, item in value.items():
            write(g.create_group(f"{name}/{k}"), item, put)

    def read(self, g: h5py.Group, name: str) -> Any:
        keys = _order(g, name, self.order, 1)
        if keys is MISSING:
            return MISSING
        return {k: read(g[f"{name}/{k}"], self.cls, **({self.key: k} if self.key else {})) for k in keys}


@dataclasses.dataclass(frozen=True)
class _Group:
    cls: type

    def write(self, g: h5py.Group, name: str, value: Any, put: Put) -> None:
        if value is not None:
            write(g.create_group(name), value, put)

    def read(self, g: h5py.Group, name: str) -> Any:
        return read(g[name], self.cls) if name in g else MISSING


@dataclasses.dataclass(frozen=True)
class _Inline:
    cls: type

    def write(self, g: h5py.Group, name: str, value: Any, put: Put) -> None:
        write(g, value, put)

    def read(self, g: h5py.Group, name: str) -> Any:
        return read(g, self.cls)


@dataclasses.dataclass(frozen=True)
class _Key:
    def write(self, g: h5py.Group, name: str, value: Any, put: Put) -> None:
        pass

    def read(self, g: h5py.Group, name: str) -> Any:
        return MISSING


def _field(storage: object, kw: dict[str, Any]) -> Any:
    return dataclasses.field(metadata={KEY: storage}, **kw)


def attr(rule: str, *, record: type | None = None, written: Callable[[Any], bool] | None = None, **kw: Any) -> Any:
    """An attribute converted by ``RULES[rule]``.

    Args:
        rule: a key of :data:`RULES`.
        record: a dataclass whose value (or None) is stored as a JSON object (with rule ``"json"``).
        written: write the attribute only when this holds for the value (else it is absent from the file).
        **kw: ``default`` or ``default_factory`` of the field.
    """
    if rule not in RULES:
        raise ValueError(f"unknown attribute rule {rule!r}; the rules are {', '.join(RULES)}")
    return _field(_Attr(rule, record, written), kw)


def dataset(dtype: Any = None, **kw: Any) -> Any:
    """A dataset: the array cast to ``dtype`` (``None``: as it is)."""
    return _field(_Dataset(dtype), kw)


def datasets(dtype: Any = None, *, order: str | None = None, depth: int = 1, **kw: Any) -> Any:
    """A mapping name -> array as the datasets ``<field>/<name>``.

    Args:
        dtype: the arrays' dtype (``None``: as they are).
        order: the attribute (of this object) that keeps the key order as JSON; ``None``: read in name order.
        depth: 2 for a mapping name -> name -> array (datasets ``<field>/<a>/<b>``).
        **kw: ``default`` or ``default_factory`` of the field.
    """
    return _field(_Datasets(dtype, order, depth), kw)


def groups(cls: type, *, order: str | None = None, key: str | None = None, **kw: Any) -> Any:
    """A mapping key -> ``cls`` as groups ``<field>/<key>``; ``key``: the field of ``cls`` holding the key."""
    return _field(_Groups(cls, order, key), kw)


def group(cls: type, **kw: Any) -> Any:
    """An optional ``cls`` as the group ``<field>`` (absent for ``None``)."""
    return _field(_Group(cls), kw)


def inline(cls: type, **kw: Any) -> Any:
    """A ``cls`` whose fields are stored in this object's own group."""
    return _field(_Inline(cls), kw)


def key(**kw: Any) -> Any:
    """The key under which the object is stored in its parent's mapping (see :func:`groups`); not stored."""
    return _field(_Key(), kw)


def write(g: h5py.Group, obj: Any, put: Put) -> None:
    """Store the dataclass ``obj`` in the group ``g``, field by field as each field declares."""
    for f in dataclasses.fields(obj):
        if KEY not in f.metadata:
            raise TypeError(f"{type(obj).__name__}.{f.name} declares no storage (see topotrace.analysis.codec)")
        f.metadata[KEY].write(g, f.name, getattr(obj, f.name), put)


def read(g: h5py.Group, cls: type, **known: Any) -> Any:
    """The ``cls`` stored in the group ``g`` by :func:`write`; ``known``: fields given (the mapping key).

    Raises:
        KeyError: a field without a default is not in the file.
    """
    values = dict(known)
    for f in dataclasses.fields(cls):
        if f.name in values:
            continue
        value = f.metadata[KEY].read(g, f.name)
        if value is not MISSING:
            values[f.name] = value
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyError(f"{g.name}: no {f.name!r} in the analysis file")
    return cls(**values)
