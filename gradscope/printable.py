"""Names from models and users, shown to people: control characters made visible.

A module name, a ``track`` label or a run name can hold anything a Python string can. Pages,
figure titles, JUnit XML and terminals must neither break on it (XML 1.0 forbids most control
characters; matplotlib has no glyph for them) nor act on it (an ANSI escape recolours a
terminal), so wherever a name is shown its control characters are written as escapes.
"""

import re

# C0 controls, DEL, C1 controls, lone surrogates and the two noncharacters XML forbids
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_WHITESPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(value, keep_line_breaks: bool = False) -> str:
    """``str(value)`` with each control character written as its Python escape.

    Args:
        value: anything; shown as ``str(value)``.
        keep_line_breaks: keep ``\\n``, ``\\r`` and ``\\t`` as they are (for multi-line text
            such as a JUnit failure body); otherwise they are escaped too.

    Returns:
        The text with ``\\n``, ``\\r``, ``\\t`` or ``\\xNN`` / ``\\uNNNN`` in place of each
        control character, lone surrogate or XML-forbidden noncharacter.
    """
    pattern = _WHITESPACE if keep_line_breaks else _UNPRINTABLE
    return pattern.sub(_escape, str(value))


def _escape(match):
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
