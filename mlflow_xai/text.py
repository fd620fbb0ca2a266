"""How the report and the plots write values: HTML escaping, numbers to 3 significant digits
and HTML tables (one module, so that the report's sections and plots share it without import
cycles)."""

from __future__ import annotations

import html
import math
import numbers
from typing import Any


def e(value: Any) -> str:
    """Escape anything for HTML text or attribute context."""
    return html.escape(str(value), quote=True)


def fmt(x: Any) -> str:
    """A number as the report shows it: 3 significant digits, no float noise.

    Integers (counts: rows, model evaluations) are exact. Floats from 0.001 to 100000 are
    positional ("0.00123", "12.3", "12300"); outside that range Python's ``.3g`` (scientific,
    "3.15e-16", "1.23e+05"; positional down to 1e-4).
    Tiny values are *not* shown as "0" or "≈0": a number has no scale of its own here, and the
    magnitude is the information (an efficiency gap of 2.22e-16 says "exact up to float
    rounding", one of 1e-03 says "approximate"). Anything else is ``str(x)``; None is "-".
    """
    if x is None:
        return "-"
    if isinstance(x, bool) or not isinstance(x, numbers.Real):
        return str(x)
    if isinstance(x, numbers.Integral):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if x == 0:
        return "0"
    if not 1e-3 <= abs(x) < 1e5:
        return f"{x:.3g}"
    decimals = 2 - math.floor(math.log10(abs(x)))
    text = f"{round(x, decimals):.{max(decimals, 0)}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An HTML table: ``headers`` are escaped here, the cells are HTML already."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
