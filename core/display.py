"""One sanitiser for text shown to people: names come from users and file systems, and may hold
newlines (a forged line in a summary), ESC sequences (a retitled or cleared terminal) or
right-to-left overrides (``gpj.exe`` shown as ``exe.jpg``). Every human-readable output passes its
text through :func:`printable`; JSON and CSV carry the text as it is (their quoting keeps it inert;
CSV cells also get :func:`core.reports.csv_cell`)."""

from __future__ import annotations

import unicodedata

# Control, format (bidi overrides, zero-width), surrogate (undecodable bytes), line and paragraph separators
_HIDDEN = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def printable(text: str) -> str:
    """``text`` with every control or invisible character written as its escape (``\\n``, ``\\x1b``,
    ``\\u202e``), so it shows as one inert line whatever it holds."""
    if text.isprintable():
        return text
    return "".join(
        char.encode("unicode_escape", "backslashreplace").decode("ascii")
        if unicodedata.category(char) in _HIDDEN else char
        for char in text
    )
