r"""Link targets and bidirectional controls in topotrace's HTML pages (the report, layer pages, comparison, site).

Every ``href`` of a page is made by :func:`relative_href` (in the templates, the jinja filter ``href``): a relative
path whose every segment is percent-encoded (``urllib.parse.quote``) and which starts with ``./`` or ``../``, so a
run folder named ``javascript:alert(1)`` becomes ``./javascript%3Aalert%281%29/report.html`` and no scheme can be
read from any link. Absolute paths and URLs are refused. A test checks that every ``href`` in the templates goes
through the filter.

Bidirectional controls (U+202A-U+202E, U+2066-U+2069, U+200E, U+200F, U+061C) in run text could reorder what a
reader sees (a run named ``x\u202egnp.exe``). :func:`escape_bidi` shows each as a visible escape, ``\u202e``,
as the terminal does (:func:`topotrace.cli.visible`): in the page's HTML (every raw one) and in the text that
Bokeh draws (its JSON escapes in the document's ``application/json`` script, which would decode to the raw
character in the browser). A visible escape was chosen over an isolating wrapper (``<bdi>``) because it also shows
that the name holds such a character, and because it works in titles, attributes and canvas text alike.
"""

from __future__ import annotations

import re
import urllib.parse

BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
_BIDI_TABLE = {ord(c): f"\\u{ord(c):04x}" for c in BIDI_CONTROLS}
_BIDI_RAW = re.compile(f"[{BIDI_CONTROLS}]")
# a JSON escape of a bidi control, not itself escaped (an even number of backslashes before it)
_BIDI_JSON = re.compile(r"(?<!\\)((?:\\\\)*)\\u(202[a-eA-E]|206[6-9]|200[eEfF]|061[cC])")
_JSON_SCRIPT = re.compile(r'(<script type="application/json"[^>]*>)(.*?)(</script>)', re.S)
_CHECKED = re.compile(r"^(\./|(\.\./)+)[A-Za-z0-9._~%/-]*(#[A-Za-z0-9._~%=&-]*)?$")


def relative_href(target: str | tuple[str, str]) -> str:
    """A checked relative link: ``"runs/a b/report.html"`` -> ``"./runs/a%20b/report.html"``.

    Args:
        target: a relative path with ``/`` between folders (``..`` allowed), or ``(path, fragment)``; the path is
            percent-encoded segment by segment, the fragment (e.g. ``layer=hidden%201``) keeps ``%``, ``=``, ``&``.

    Returns:
        The link, starting with ``./`` or ``../``; nothing in it can be read as a scheme.

    Raises:
        ValueError: an empty or absolute path (or a URL with ``//``), which a page never links.
    """
    path, fragment = (target, "") if isinstance(target, str) else target
    path, fragment = str(path), str(fragment)
    if not path or path.startswith(("/", "\\")) or "//" in path:
        raise ValueError(f"A link of a topotrace page must be a relative path (runs/NAME/report.html). Got {path!r}.")
    segments = [urllib.parse.quote(s, safe="") for s in path.split("/")]
    href = "/".join(segments)
    if not href.startswith("../"):
        href = "./" + href
    if fragment:
        href += "#" + urllib.parse.quote(fragment, safe="%=&")
    return check_href(href)


def check_href(href: str) -> str:
    """``href`` if it has the form :func:`relative_href` gives; else ValueError (the page is not written)."""
    if not _CHECKED.match(href):
        raise ValueError(f"Refusing the link {href!r}: a topotrace page links only relative, percent-encoded paths.")
    return href


def escape_bidi(text: str) -> str:
    r"""``text`` with every bidi control shown as a visible escape (U+202E -> the six characters ``\u202e``)."""
    return str(text).translate(_BIDI_TABLE)


def escape_bidi_page(page: str) -> str:
    r"""A whole page with its bidi controls made visible: raw ones anywhere, JSON escapes in the Bokeh document.

    Raw ones become ``\u202e`` text, which in HTML shows as such and in a script literal means the same character
    as before (BokehJS holds none). In ``<script type="application/json">`` (the Bokeh document), the escape
    ``\u202e`` becomes ``\\u202e``, so the text Bokeh draws shows the escape instead of reordering.
    """
    if _BIDI_RAW.search(page):
        page = escape_bidi(page)
    if "\\u20" not in page and "\\u06" not in page:
        return page
    return _JSON_SCRIPT.sub(lambda m: m.group(1) + _BIDI_JSON.sub(r"\1\\\\u\2", m.group(2)) + m.group(3), page)
