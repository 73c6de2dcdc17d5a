"""Numbers for sentences and tables: significant digits, real minus signs, percentages, ratios, lists of names."""

from __future__ import annotations

import math


def number(value: float, digits: int = 3) -> str:
    """A number for a sentence or a table: 3 significant digits, a real minus sign, "n/a" for NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return text.replace("-", "−")



def percent(value: float) -> str:
    """A fraction as a signed percentage: ``"+1 %"``, ``"−48.6 %"``, ``"+1,310 %"``; "n/a" for NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if abs(value) >= 10:  # 1,000 % and more: whole percent with thousands separators, not "1.31e+03 %"
        return f"{100 * value:+,.0f} %".replace("-", "−")
    return ("+" if value > 0 else "") + number(100 * value) + " %"



def percentage_points(value: float) -> str:
    """A change of a share (a fraction) in signed percentage points: ``"+1.5 pp"``, ``"−0.3 pp"``; "n/a" for NaN."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:+.1f} pp".replace("-", "−")


def ratio(log_value: float) -> str:
    """A ratio from its natural log: ``"0.0567×"``; "n/a" when undefined."""
    if log_value is None or not math.isfinite(log_value):
        return "n/a"
    return number(math.exp(log_value)) + "×"



def _names(names: list[str]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]



def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


