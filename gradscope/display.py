"""How gradscope writes names and numbers for people: the terminal, CI output, reports and plots
all say the root module, a part and a number the same way."""

from __future__ import annotations

import math
from numbers import Number
from typing import Any, Optional

import pandas as pd

from gradscope.printable import printable


def module_label(module: str) -> str:
    """How people read a module name: the model's root (``""``) as ``(root)``.

    Args:
        module: a qualified module name as the tables hold it (``""`` for the model itself).
    Returns:
        ``"(root)"`` for ``""``, else the name with its control characters written as
        escapes (``gradscope.printable``: a name must not break XML or recolour a terminal).
    """
    return "(root)" if module == "" else printable(module)


def compact_part_label(module: Optional[str], layer: Optional[int] = None, direction: Optional[str] = None) -> str:
    """``"rnn l0 forward"``: one recurrent part, leaving out what is not named.

    Args:
        module: the module (``""``: the root); None for something about the whole model.
        layer: its layer, or None.
        direction: ``"forward"``/``"reverse"``, or None.
    Returns:
        The label; ``"(model)"`` when nothing is named.
    """
    words = [module_label(module) if module is not None else "(model)"]
    if layer is not None:
        words.append(f"l{int(layer)}")
    if direction:
        words.append(str(direction))
    return " ".join(words)


def fmt(value: Any, digits: int = 3, unicode: bool = False) -> str:
    """A number as people read it: ``digits`` significant digits, whole numbers (below a
    million) as whole numbers, booleans as yes/no; text as it is.

    Args:
        value: a number (Python, numpy or pandas), text, None or ``pd.NA``.
        digits: significant digits of a number that is not whole.
        unicode: ``∞`` and ``–`` (for HTML and figures) instead of ``inf`` and ``n/a``.
    Returns:
        ``"n/a"`` (``"–"``) for None, NaN and ``pd.NA``; ``"inf"``/``"-inf"`` (``"∞"``/``"−∞"``);
        else the number.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "yes" if value else "no"
    if not isinstance(value, Number):
        if value is None or value is pd.NA or value is pd.NaT:
            return "–" if unicode else "n/a"
        return str(value)
    number = float(value)
    if math.isnan(number):
        return "–" if unicode else "n/a"
    if math.isinf(number):
        if unicode:
            return "∞" if number > 0 else "−∞"
        return "inf" if number > 0 else "-inf"
    if number.is_integer() and abs(number) < 1e6:
        return str(int(number))
    return f"{number:.{digits}g}"


def steps_back(horizon: Optional[float], unicode: bool = False) -> str:
    """A horizon as a count of steps: ``1259``, not ``1.26e+03``.

    Args:
        horizon: steps back (float; inf: the gradient does not decay; NaN or None: unknown).
        unicode: as ``fmt``.
    Returns:
        The rounded count, or ``fmt``'s words for inf and unknown.
    """
    if horizon is None or not math.isfinite(horizon):
        return fmt(horizon, unicode=unicode)
    return f"{horizon:.0f}"
