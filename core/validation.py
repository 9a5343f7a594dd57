"""Checks on the text callers hand the facade: names, labels, sources, user names and passwords.

One module, used by every facade call that stores or looks up caller-given text, so the app, the API
and the CLI reject the same values with the same :class:`~core.errors.InvalidRequest` naming the
field. Text is refused, never cleaned: silently altering a name would store something the caller
did not send.
"""

from __future__ import annotations

import math
import re
import unicodedata

from core.errors import InvalidRequest

MAX_TEXT = 200  # source labels, search texts' filters, display names
MAX_FILE_NAME = 1024
MAX_USER_NAME = 64
MIN_PASSWORD = 8
MAX_PASSWORD_BYTES = 72  # bcrypt ignores (bcrypt>=5: refuses) anything beyond 72 bytes
_USER_NAME = re.compile(r"[a-z0-9][a-z0-9._@-]*")


def text(field: str, value: object, *, max_length: int = MAX_TEXT) -> str:
    """``value`` unchanged if it is a non-blank string of at most ``max_length`` characters with no
    control or invisible format characters (they hide in terminals, logs and CSV exports)."""
    if not isinstance(value, str):
        raise InvalidRequest(field, f"expected text, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRequest(field, "it is empty")
    if len(value) > max_length:
        raise InvalidRequest(field, f"it is {len(value)} characters long; at most {max_length} are allowed")
    for position, char in enumerate(value):
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            raise InvalidRequest(field, f"it contains the control character U+{ord(char):04X} at position {position}")
    return value


def optional_text(field: str, value: object, *, max_length: int = MAX_TEXT) -> str | None:
    return None if value is None else text(field, value, max_length=max_length)


def texts(field: str, values: object) -> tuple[str, ...]:
    """A tuple of checked texts (a filter's sources, for example)."""
    if isinstance(values, str) or not isinstance(values, (list, tuple, set, frozenset)):
        raise InvalidRequest(field, "expected a list of texts")
    return tuple(text(field, v) for v in values)


def file_name(value: object) -> str:
    return text("file_name", value, max_length=MAX_FILE_NAME)


def path_name(value: str) -> str:
    """A name read from a folder, unchanged if a catalog can store it. File systems allow any byte but
    NUL and ``/``, so newlines and escape sequences are kept (every human-readable output escapes them,
    see :func:`core.display.printable`); bytes that are not UTF-8 (Python's surrogate escapes) are refused,
    since neither SQLite nor PostgreSQL can store them."""
    for position, char in enumerate(value):
        if char == "\x00" or unicodedata.category(char) == "Cs":
            raise InvalidRequest("file_name", f"it contains U+{ord(char):04X} at position {position}, "
                                              "which is not valid text (rename the file)")
    return value


def finite(field: str, value: object) -> float:
    """``value`` as a float if it is a real, finite number: NaN compares false with everything, so a
    threshold of NaN would silently select nothing (or everything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidRequest(field, f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise InvalidRequest(field, f"{value!r} is not a finite number")
    return float(value)


def optional_finite(field: str, value: object) -> float | None:
    return None if value is None else finite(field, value)


def user_name(value: object, field: str = "name") -> str:
    """A login name: lower-case letters, digits and ``. _ @ -`` (the app's login form lower-cases
    what people type, so a stored name must already be lower case)."""
    name = text(field, value, max_length=MAX_USER_NAME)
    if not _USER_NAME.fullmatch(name):
        raise InvalidRequest(
            field, f"{name!r} is not a user name: use lower-case letters, digits and . _ @ - (starting with a letter or digit)"
        )
    return name


def password(value: object) -> str:
    if not isinstance(value, str):
        raise InvalidRequest("password", f"expected text, got {type(value).__name__}")
    if len(value) < MIN_PASSWORD:
        raise InvalidRequest("password", f"it must be at least {MIN_PASSWORD} characters long")
    if len(value.encode()) > MAX_PASSWORD_BYTES:
        raise InvalidRequest("password", f"it must be at most {MAX_PASSWORD_BYTES} bytes long (UTF-8)")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise InvalidRequest("password", "it contains a control character")
    return value


def one_of(field: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidRequest(field, f"{value!r} is not one of {', '.join(choices)}")
    return str(value)
