"""Numbers as the report prints them: one place, so every page and table agrees.

All functions return plain text (Unicode minus sign, thin formatting, no Markdown); escape the
result for its target like any other text.
"""

from __future__ import annotations

import math

MINUS = "\u2212"
#: magnitudes below this print as 0: float noise (a Wilson bound of 4e-19 is a 0), not a measurement
ZERO = 1e-12


def num(x: float | None, digits: int = 3) -> str:
    """``digits`` significant digits; scientific notation outside [1e-3, 1e5); ``n/a`` for None/NaN."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    if abs(x) < ZERO:
        return "0"
    ax = abs(x)
    if 1e-3 <= ax < 1e5:
        rounded = float(f"{ax:.{digits}g}")  # 9.996 → 10.0 before the decimals are chosen
        decimals = max(0, digits - 1 - math.floor(math.log10(rounded)))
        text = f"{rounded:.{decimals}f}"
    else:
        mantissa, exponent = f"{ax:.{digits - 1}e}".split("e")
        text = f"{mantissa}×10{_superscript(int(exponent))}"
    return (MINUS if x < 0 else "") + text


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _superscript(n: int) -> str:
    return str(n).translate(_SUPERSCRIPT)


def integer(n: int) -> str:
    """Thousands separated by a comma: ``50,257``."""
    return f"{n:,}"


def percent(fraction: float | None, digits: int = 2) -> str:
    """A fraction as a percentage with ``digits`` significant digits: ``0.0123`` → ``1.2%``."""
    if fraction is None:
        return "n/a"
    return f"{num(100 * fraction, digits)}%"


def ci(bounds: list[float | None] | None, digits: int = 3, fmt=None) -> str:
    """A 95% interval ``[lo, hi]`` as ``lo–hi``."""
    if not bounds or bounds[0] is None or bounds[1] is None:
        return "n/a"
    f = fmt or (lambda v: num(v, digits))
    return f"{f(bounds[0])}–{f(bounds[1])}"


def p_value(p: float | None) -> str:
    """``p = 0.034``, ``p = 0.21``, ``p < 10⁻¹⁰`` (below that a p-value has no useful precision)."""
    if p is None:
        return "p = n/a"
    if p < 1e-10:
        return "p < 10⁻¹⁰"
    return f"p = {num(p, 2)}"
