"""Authors of a run or a bundle: ``'Given Family <ORCID>'`` parsed and checked (the ORCID's check character too).

The archive names them in ``CITATION.cff`` and the RO-Crate; a config names them in ``[run] authors``, a recording in
``meta["authors"]``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from .instrument.store import Store

ORCID_URL = "https://orcid.org/"
AUTHOR_FORM = ("'Given Family <ORCID>' (e.g. 'Josiah Carberry <0000-0002-1825-0097>'; 'Family, Given' when the "
               "family name has several words; the ORCID is optional)")
_AUTHOR = re.compile(r"^(?P<name>[^<>]*?)\s*(?:<(?P<orcid>[^<>]*)>)?$")
_ORCID = re.compile(r"^(?:https?://orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])$")
UNNAMED = "The topotrace authors"  # the bundle's author when none is named


@dataclass(frozen=True)
class Author:
    """One author of a bundle: a person with a given and a family name and an optional ORCID (as its URL)."""

    given: str
    family: str
    orcid: str | None = None

    @property
    def name(self) -> str:
        return f"{self.given} {self.family}".strip()


def orcid_checksum_ok(orcid: str) -> bool:
    """The ISO 7064 MOD 11-2 check character of an ORCID ``0000-0002-1825-0097`` matches its 15 digits."""
    digits = orcid.replace("-", "")
    total = 0
    for d in digits[:-1]:
        total = (total + int(d)) * 2
    check = (12 - total % 11) % 11
    return digits[-1] == ("X" if check == 10 else str(check))


def parse_author(text: object, where: str = "--author") -> Author:
    """An author from ``'Given Family <ORCID>'`` (or ``'Family, Given <ORCID>'``); the ORCID is optional.

    Args:
        text: the author as written.
        where: what gave it, for the error (``--author``, or a store's meta).

    Raises:
        ValueError: one line naming ``where``, the value and the form allowed (an ORCID must be 16 digits in four
            groups whose check character matches, e.g. 0000-0002-1825-0097).
    """
    m = _AUTHOR.match(text) if isinstance(text, str) else None
    name = " ".join(m.group("name").split()) if m else ""
    if m is None or not name or any(ord(c) < 32 for c in name):
        raise ValueError(f"{where} {text!r} is not an author: write {AUTHOR_FORM}.")
    orcid = None
    if m.group("orcid") is not None:
        o = _ORCID.match(m.group("orcid").strip().upper().replace("HTTPS://ORCID.ORG/", ""))
        if o is None or not orcid_checksum_ok(o.group(1)):
            why = "its check character does not match its digits" if o else "an ORCID is 16 digits in four groups"
            raise ValueError(f"{where} {text!r}: {m.group('orcid')!r} is not a valid ORCID ({why}, e.g. "
                             f"0000-0002-1825-0097); write {AUTHOR_FORM}.")
        orcid = ORCID_URL + o.group(1)
    if "," in name:
        family, _, given = (" ".join(part.split()) for part in name.partition(","))
    else:
        given, _, family = name.rpartition(" ")
    if not family:
        raise ValueError(f"{where} {text!r} has no family name after the comma: write {AUTHOR_FORM}.")
    return Author(given, family, orcid)


def meta_authors(stores: list[Path]) -> list[Author]:
    """The authors the runs name, in order, each once.

    Per store: ``meta["authors"]`` (``Recorder(meta={"authors": [...]})``), else the ``[run] authors`` setting of
    the config it was trained with (``meta["config"]``), each a list of :data:`AUTHOR_FORM` strings.

    Raises:
        ValueError: an entry that is not an author (:func:`parse_author`), naming the store.
    """
    out: list[Author] = []
    for path in stores:
        with Store(path) as st:
            meta = st.meta
        names = meta.get("authors")
        config = meta.get("config")
        if names is None and isinstance(config, dict) and isinstance(config.get("run"), dict):
            names = config["run"].get("authors")
        if names is None:
            continue
        if isinstance(names, str) or not isinstance(names, list):
            raise ValueError(f"The authors of {path} (meta 'authors') must be a list of {AUTHOR_FORM}. Got "
                             f"{names!r}.")
        for text in names:
            author = parse_author(text, f"The author in {path} (meta 'authors')")
            if author not in out:
                out.append(author)
    return out
