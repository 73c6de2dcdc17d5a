"""Every parameter of the analysis in one place: :class:`AnalysisParams`.

Each field carries its default, its check (a one-line error: what was wrong, what is allowed, what to do) and its
help text (field metadata, :func:`param`). Generated from the fields: the cache key (:meth:`AnalysisParams.key`,
the ``params`` attribute of ``analysis.h5`` and the incremental sidecar's key), the Dask task
(:meth:`AnalysisParams.to_dict` / :meth:`AnalysisParams.from_dict`), the command-line options of ``analyze``,
``report`` and ``study`` (:func:`add_options`, :func:`from_args`, :func:`options_given`), the options that repeat
an analysis (:func:`cli_options`) and the parameter list of an archive's README (:func:`describe`). Adding a
parameter is one field here plus its use.

Fields without an ``option`` are fixed on the command line (the Python API can still set them); their value is
part of the cache key all the same, so a cache made with other values is never taken for this one.
"""

from __future__ import annotations

import argparse
import json
import math
import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace

from . import calibration, collapse, evidence
from .layouts import METHODS, METRICS, REGISTRY

# The version of what the analysis computes: part of the cache key (a cache of another version is recomputed).
ANALYSIS_VERSION = 12  # 2: partial Spearman, robust layout scaling, default rule; 3: bin names; 4: map regions;
# 5: layers say whether they are non-negative; 6: per-sample evidence, per-snapshot bins, no trend p-values;
# 7: non-finite values left out per statistic (with counts), layouts without non-finite neurons, divergence;
# 8: calibration (ECE, reliability, temperature), dormant units, NC1, train-vs-probe NAP gap, trends;
# 9: maps on a 128 x 128 grid with the region's outline; 10: distinctness from centred float64 values, trend
# resamples paired over the two ends; 11: temp_prob_cv (temperature cross-fitted on halves of each probe set);
# 12: r NaN below 3 samples (within class: below 1 degree of freedom), no layouts with fewer than 2 classes
LAYOUT_FEATURES = "class NAPs at the last snapshot"

Check = Callable[[str, object], None]


def param(default: object, help: str, check: Check, option: str = "", metavar: str | None = None,
          parse: Callable[[str], object] | None = None) -> object:
    """A field of :class:`AnalysisParams`: its default, help text, check and (optionally) its command-line option.

    Args:
        default: the default value (immutable).
        help: what the parameter does, in a few words (the option's help and the README's list).
        check: ``check(name, value)`` raises ``TypeError``/``ValueError`` in one line for a bad value.
        option: the command-line option (``"--bins"``), or ``""``: not on the command line.
        metavar: the option's metavar.
        parse: text of the option -> value (default: the text itself); may raise ``ValueError`` in one line.
    """
    return field(default=default, metadata={"help": help, "check": check, "option": option, "metavar": metavar,
                                            "parse": parse})


def _got(value: object) -> str:
    return f"Got {value!r} instead."


def _int(lo: int) -> Check:
    def check(name: str, v: object) -> None:
        if isinstance(v, bool) or not isinstance(v, int):
            raise TypeError(f"The {name!r} parameter must be an int >= {lo}. Got {type(v).__name__} {v!r} instead.")
        if v < lo:
            raise ValueError(f"The {name!r} parameter must be an int >= {lo}. {_got(v)}")
    return check


def _number(lo: float, hi: float = math.inf, what: str = "") -> Check:
    def check(name: str, v: object) -> None:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and lo <= v < hi):
            span = f">= {lo:g}" + (f" and < {hi:g}" if hi < math.inf else "")
            raise ValueError(f"The {name!r} parameter must be a number {span}{what}. {_got(v)}")
    return check


def _choice(*allowed: object) -> Check:
    def check(name: str, v: object) -> None:
        if v not in allowed:
            raise ValueError(f"The {name!r} parameter must be one of {list(allowed)}. {_got(v)}")
    return check


def _name(optional: bool) -> Check:
    def check(name: str, v: object) -> None:
        if (v is None and optional) or (isinstance(v, str) and v):
            return
        raise TypeError(f"The {name!r} parameter must be a non-empty str{' or None' if optional else ''}. {_got(v)}")
    return check


def _check_layouts(name: str, v: object) -> None:
    if v is None:
        return
    if isinstance(v, str) or not all(isinstance(m, str) for m in v):
        raise TypeError(f"The {name!r} parameter must be a list of method names among {list(METHODS)}, not "
                        f"{type(v).__name__} {v!r}.")
    for m in v:
        if m not in REGISTRY:
            raise ValueError(f"The {name!r} parameter must list methods among {list(METHODS)}. Got {m!r} in {v!r}.")
        if not REGISTRY[m].available():
            raise ValueError(f"The layout method {m!r} of {name!r} needs the package {REGISTRY[m].package}, which is "
                             f"not installed: pip install {REGISTRY[m].package}, or choose among "
                             f"{', '.join(k for k in METHODS if REGISTRY[k].available())}.")


def parse_layouts(text: str) -> tuple[str, ...]:
    """The methods of ``--layouts`` (comma-separated), each known.

    Raises:
        ValueError: one line: no method named, or an unknown one (listing the methods).
    """
    names = [m.strip() for m in str(text).split(",") if m.strip()]
    if not names:
        raise ValueError(f"The '--layouts' option must name at least one layout method (comma-separated) among "
                         f"{', '.join(METHODS)}. Got {text!r}.")
    for m in names:
        if m not in METHODS:
            raise ValueError(f"Unknown layout method {m!r} for '--layouts'. Available: {list(METHODS)}.")
    return tuple(names)


def _parse_number(kind: type) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            return kind(text)
        except ValueError:
            raise ValueError(f"expected {'an int' if kind is int else 'a number'}, e.g. "
                             f"{'5' if kind is int else '0.025'}; got {text!r}") from None
    return parse


@dataclass(frozen=True)
class AnalysisParams:
    """The parameters of one analysis (see the module docstring); the field order is the cache key's order.

    Example:
        >>> AnalysisParams(n_bins=3).key()["n_bins"]
        3
    """

    probe_set: str = param("heldout", "probe set the layer results describe", _name(False), "--probe-set")
    measure: str | None = param(None, "confidence measure that defines the confidence bins and leads the findings "
                                "(default: logit_margin when recorded, else the store's first measure)",
                                _name(True), "--measure")
    layout_methods: tuple[str, ...] | None = param(
        None, f"comma-separated layout methods among {', '.join(METHODS)} (default: the fast ones for each layer's "
        "size)", _check_layouts, "--layouts", parse=parse_layouts)
    default_layout: str | None = param(None, "layout the report draws maps on, e.g. force+declutter (default: the "
                                       "most trustworthy one whose map fills its square)", _name(True))
    n_bins: int = param(5, "number of confidence bins", _int(1), "--bins", "N", _parse_number(int))
    bins: str = param("snapshot", "confidence bins: quantiles of each snapshot (snapshot) or of all snapshots "
                      "pooled (pooled)", _choice("snapshot", "pooled"))
    alpha: float = param(0.05, "false discovery rate of the per-neuron correlation tests", _number(0, 1))
    grid: int = param(128, "map image side in pixels", _int(2))
    min_map_fill: float = param(0.4, "least share of its square a default layout's map fills", _number(0, 1))
    random_state: int = param(0, "seed of the layouts, the bootstraps and the CKA subset", _int(0))
    cka_max_samples: int = param(512, "probe samples (a fixed seeded subset) behind CKA", _int(2))
    layout_features: str = param(LAYOUT_FEATURES, "what the layouts place the neurons by", _choice(LAYOUT_FEATURES))
    metric: str = param("cosine", "distance between the neurons' features in the layouts", _choice(*METRICS))
    n_boot: int = param(evidence.N_BOOT, "bootstrap resamples of the claims' evidence", _int(1))
    dormant_tau: float = param(collapse.DORMANT_TAU, "a unit is dormant when its mean |activation| is at most TAU "
                               "times the layer's mean (Sokar et al. 2023)",
                               _number(0, what=" (share of the layer's mean |activation| at or below which a unit "
                                       "counts as dormant)"), "--dormant-tau", "TAU", _parse_number(float))
    ece_bins: int = param(calibration.ECE_BINS, "equal-width bins of the expected calibration error", _int(1))
    n_boot_trends: int = param(200, "bootstrap resamples behind the trends (dormant share, NC1, ECE)", _int(2))

    def __post_init__(self) -> None:
        if self.layout_methods is not None and not isinstance(self.layout_methods, (str, tuple)):
            try:
                object.__setattr__(self, "layout_methods", tuple(self.layout_methods))
            except TypeError:
                pass  # the check says what is wrong
        for f in fields(self):  # numpy scalars as Python numbers (the checks, JSON, the key)
            v = getattr(self, f.name)
            if isinstance(v, bool):
                continue
            if type(f.default) is int and isinstance(v, numbers.Integral):
                object.__setattr__(self, f.name, int(v))
            elif type(f.default) is float and isinstance(v, numbers.Real):
                object.__setattr__(self, f.name, float(v))
        for f in fields(self):
            f.metadata["check"](f.name, getattr(self, f.name))

    @classmethod
    def make(cls, params: AnalysisParams | None = None, **overrides: object) -> AnalysisParams:
        """``params`` (default: the defaults) with ``overrides`` (field name -> value; ``None`` keeps a default).

        Raises:
            TypeError: an unknown parameter name (one line naming the parameters), or a bad value's kind.
            ValueError: a bad value.
        """
        names = [f.name for f in fields(cls)]
        unknown = [k for k in overrides if k not in names]
        if unknown:
            raise TypeError(f"Unknown analysis parameter {unknown[0]!r}. Available: {names}.")
        base = params if params is not None else cls()
        return replace(base, **{k: v for k, v in overrides.items() if v is not None})

    def to_dict(self) -> dict[str, object]:
        """Field name -> JSON-able value, in field order (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, object]) -> AnalysisParams:
        """The inverse of :meth:`to_dict` (keys not among the fields, e.g. ``analysis_version``, are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def key(self) -> dict[str, object]:
        """The ``params`` of ``analysis.h5``: :data:`ANALYSIS_VERSION` and every field, in field order."""
        return {"analysis_version": ANALYSIS_VERSION} | self.to_dict()

    def key_json(self) -> str:
        """The cache key's text (:meth:`key` with sorted keys): the cache and its sidecar are made with it."""
        return json.dumps(self.key(), sort_keys=True)


def _option_fields() -> list:
    return [f for f in fields(AnalysisParams) if f.metadata["option"]]


def add_options(parser: argparse.ArgumentParser) -> None:
    """The command-line options of the parameters that have one (each default ``None``: not given)."""
    for f in _option_fields():
        default = "" if f.default is None else f" (default: {f.default:g})" if isinstance(f.default, float) \
            else f" (default: {f.default})"
        help_text = f.metadata["help"] + ("" if "(default" in f.metadata["help"] else default)
        metavar = f.metadata["metavar"] or f.metadata["option"].lstrip("-").upper().replace("-", "_")
        parser.add_argument(f.metadata["option"], default=None, dest=f.name, metavar=metavar,
                            help=help_text.replace("%", "%%"))


def options_given(args: argparse.Namespace) -> bool:
    """True when any option of :func:`add_options` was given."""
    return any(getattr(args, f.name, None) is not None for f in _option_fields())


def from_args(args: argparse.Namespace) -> AnalysisParams:
    """The parameters of the options given (the others at their defaults), checked.

    Raises:
        ValueError: one line naming the option (a value that does not parse, or a bad value).
    """
    given = {}
    for f in _option_fields():
        text = getattr(args, f.name, None)
        if text is None:
            continue
        parse = f.metadata["parse"]
        try:
            given[f.name] = parse(text) if parse is not None else text
        except ValueError as err:
            if str(err).startswith(("The ", "Unknown ")):
                raise
            raise ValueError(f"The '{f.metadata['option']}' option ({f.metadata['help']}): {err}.") from None
    return AnalysisParams.make(**given)


def cli_options(params: dict[str, object]) -> str:
    """The command-line options that repeat an analysis made with ``params`` (its ``params`` attribute)."""
    opts = []
    for f in _option_fields():
        v = params.get(f.name)
        if isinstance(v, list) and v:
            opts.append(f"{f.metadata['option']} {','.join(map(str, v))}")
        elif v is not None and not isinstance(v, list):
            opts.append(f"{f.metadata['option']} {v}")
    return " ".join(opts)


def describe(params: dict[str, object]) -> list[str]:
    """One line per parameter of an analysis made with ``params``: name, value, what it does."""
    width = max(len(f.name) for f in fields(AnalysisParams))
    out = []
    for f in fields(AnalysisParams):
        if f.name in params:
            v = params[f.name]
            shown = "default" if v is None else ",".join(map(str, v)) if isinstance(v, list) else v
            out.append(f"  {f.name.ljust(width)}  {shown}  ({f.metadata['help']})")
    return out
