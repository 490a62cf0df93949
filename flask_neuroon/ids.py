"""What an id may be: order ids, product ids, searchLogIds (pure, no I/O).

One rule for every id that goes on the wire or becomes a storage key:

* :func:`id_text` turns what a shop has into the id's canonical text: a string (without
  surrounding blanks), an integer, an integral :class:`~decimal.Decimal` (``Decimal("1E+3")``
  is ``"1000"``, as the integer it is) or a :class:`~uuid.UUID`. Anything else (None, a
  bool, a float, NaN, a fraction, an object with its own ``__str__``) has no id text: the
  same order must always give the same id, and a float or an arbitrary ``__str__`` cannot
  promise that.
* :func:`clean_id` also requires at most :data:`MAX_ID_LENGTH` characters and none of the
  characters no id may hold: C0 and C1 controls, DEL and lone surrogates (what invalid
  UTF-8 becomes). They would forge log lines, break a storage driver or be refused by the
  API.
"""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any

__all__ = ["BAD_ID_CHAR", "MAX_ID_LENGTH", "clean_id", "id_text", "shown"]

#: Longest id kept, in characters (cookie entries, order ids, product ids).
MAX_ID_LENGTH = 256

#: What an id may not contain: C0 controls, DEL, C1 controls, lone surrogates.
BAD_ID_CHAR = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def id_text(value: Any) -> str | None:
    """The canonical text of an id, or None when ``value`` cannot be one (see above)."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        return None
    try:
        if isinstance(value, int):
            return str(value)
        if isinstance(value, Decimal):
            if not value.is_finite() or value != value.to_integral_value():
                return None
            return str(int(value))
    except (ValueError, ArithmeticError):  # thousands of digits: no id is that long
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    return None


def clean_id(value: Any) -> str | None:
    """:func:`id_text`, and only when it is short enough and free of control characters."""
    text = id_text(value)
    if text is None or len(text) > MAX_ID_LENGTH or BAD_ID_CHAR.search(text):
        return None
    return text


def shown(value: Any, limit: int = 60) -> str:
    """A value for a log line or an error message: its repr (control characters escaped),
    at most about ``limit`` characters of it, with the full length of a long text."""
    if isinstance(value, (str, bytes)):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} chars)"
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a shop's object with a broken __repr__
        text = f"<{type(value).__name__}>"
    return text if len(text) <= limit else f"{text[: limit - 3]}... ({len(text)} chars)"
