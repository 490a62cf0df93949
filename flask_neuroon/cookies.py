"""Parse the Neuroon widget's click cookie: pure functions, no Flask, no I/O, never raise.

When a shopper clicks a search result, the widget writes the cookie ``neuroon_clicks``
(path ``/``, ``SameSite=Lax``) whose value is a JSON object ``{productId: searchLogId}``,
normally URL-encoded with JavaScript's ``encodeURIComponent`` and cut by the widget at
4096 bytes, so the JSON may end anywhere: inside an id, inside a ``%XX`` escape, inside a
multi-byte UTF-8 sequence.

:func:`parse_click_header` takes a raw ``Cookie`` header (as the WSGI environ's
``HTTP_COOKIE``), :func:`parse_click_value` one cookie value as it appears after ``name=``.
Both return every complete, valid entry and drop the rest, with a DEBUG log on the
``flask_neuroon.cookies`` logger (values are shortened to 60 characters in logs).

The rules:

* **Input is WSGI text.** PEP 3333 hands the header over latin-1-decoded, so the value is
  re-encoded to latin-1 bytes and, after percent-decoding, decoded as UTF-8: raw UTF-8 ids
  sent unencoded come back right. A byte sequence that is not UTF-8 invalidates only the
  entry it sits in. (A str with characters above U+00FF cannot come from WSGI; it is taken
  as already-decoded text and encoded to UTF-8 instead.)
* **Cookie quoting.** A value in double quotes is unquoted the way werkzeug and
  :mod:`http.cookies` write it: ``\\"``, ``\\\\`` and octal escapes such as ``\\054``,
  the octal escapes being bytes (werkzeug escapes the UTF-8 bytes of non-ASCII text).
* **Percent-decoding** as the browser encoded it: ``%20`` is a space, ``+`` stays a
  plus, ``%C3%A9`` is ``é``. A value is decoded only while it *looks encoded* (it starts
  with ``%`` or with ``{`` followed by ``%``), at most :data:`MAX_DECODE_ROUNDS` times,
  which covers double encoding (``%257B...``). A raw JSON value (``{"...``) is never
  percent-decoded, so an id that really contains ``%41`` survives. A ``%`` that does not
  start a valid escape stays a literal ``%``; an escape cut at the very end is dropped.
* **JSON.** The top level must be an object; an array, a string, a number or garbage
  gives an empty map. The fast path (the widget's compact, escape-free output) is one
  C-level decode straight to a dict plus a few whole-map C checks, no Python loop over
  entries; anything else (an entry to drop, a duplicate, escapes, whitespace) is decoded
  again as a list of pairs and checked entry by entry. When decoding fails (a truncated
  or broken value) the entries *before the first syntax error* are kept and nothing
  after it is guessed at, so a result never holds an entry that is not in the cookie.
  Text after a complete object is ignored. A value nested deeper than the interpreter's
  recursion limit counts as a syntax error.
* **Entries.** Key and value must both be non-empty strings of at most
  :data:`MAX_ID_LENGTH` characters without control characters (C0, DEL, C1) or lone
  surrogates (what an invalid UTF-8 sequence becomes); any other entry is dropped alone:
  numbers, ``null``, nested objects and arrays, empty or over-long ids. At most
  :data:`MAX_ENTRIES` entries are kept, in cookie order.
* **Duplicates: the first occurrence wins**, inside one JSON object as across cookies.
  Invalid entries are dropped before this rule applies. First-wins (rather than JSON's
  usual last-wins) keeps the result of a truncated cookie a subset of the full one.
* **Several cookies.** Browsers send one ``neuroon_clicks`` per path/domain it was set
  for, the most specific path first; all are merged, the first occurrence of a productId
  winning. The header is not split into a dict: the parser looks for ``name=`` at cookie
  boundaries (start of header or after ``;``) and reads up to the next ``;``.
* **Bounds.** A value longer than :data:`MAX_VALUE_LENGTH` characters is ignored whole.
  Every step is linear in the value length; no regular expression can backtrack.
"""

from __future__ import annotations

import binascii
import contextlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import unquote_to_bytes

from .ids import BAD_ID_CHAR, MAX_ID_LENGTH, shown

__all__ = [
    "COOKIE_NAME",
    "MAX_DECODE_ROUNDS",
    "MAX_ENTRIES",
    "MAX_ID_LENGTH",
    "MAX_VALUE_LENGTH",
    "parse_click_header",
    "parse_click_value",
]

COOKIE_NAME = "neuroon_clicks"

#: Raw cookie value characters considered. The widget stops at 4096 bytes; a value
#: several times longer than any browser stores is not a click cookie and is ignored.
MAX_VALUE_LENGTH = 16384
#: Entries kept per parse (per header, after merging). A 4 KiB cookie holds at most a few
#: hundred real entries; the rest of an oversized map is dropped.
MAX_ENTRIES = 512
#: Percent-decoding passes at most (1 = normal, 2 = double-encoded, 3 = once more).
MAX_DECODE_ROUNDS = 3

logger = logging.getLogger("flask_neuroon.cookies")

#: The last clean parses, by raw cookie value. A shopper's requests carry the same cookie
#: until their next click, so a worker parses it about twice instead of on every page that
#: reads it (a hit costs a look-up, a comparison in place and, for a caller that may
#: change the result, a copy: a few microseconds instead of a few tens). Entries are found
#: by the value's last _FINGERPRINT characters (where the widget appends the newest click,
#: with its unique searchLogId), not by a hash of the whole value, which every request's
#: new string would have to compute again; a hit also needs the whole stored value to
#: equal this one, compared where it stands in the header, so two cookies alike at the
#: end only miss. A value is kept the second time it is parsed (its fingerprint is noted
#: the first time): keeping every value would cost the many cookies seen once more than
#: the cache saves. Only values the widget's fast path took whole are kept (nothing was
#: dropped or logged for them, so a hit returns and logs exactly what a parse would), at
#: most _RECENT_SIZE of at most _RECENT_VALUE_LENGTH characters, least recently used out
#: first. C-level dict and set operations only: atomic under the GIL, no lock to hold (or
#: to inherit across a fork).
_RECENT_SIZE = 256
_RECENT_VALUE_LENGTH = 8192
_SEEN_SIZE = 4096
_FINGERPRINT = 64
_recent: OrderedDict[str, tuple[str, dict[str, str]]] = OrderedDict()
_seen: set[str] = set()


def _fingerprint(text: str, start: int, end: int) -> str:
    """The key of the value ``text[start:end]`` in _recent: its last _FINGERPRINT characters."""
    return text[max(start, end - _FINGERPRINT) : end]


# Starts like a percent-encoded object: "%7B..." or "{%22...". Anchored, one optional
# group, no nested repetition: it cannot backtrack more than linearly.
_LOOKS_ENCODED = re.compile(rb"(?:\{[ \t\r\n]*)?%")
# Cookie-string escapes, left to right: \ooo (a byte) or \ followed by any byte.
_COOKIE_ESCAPE = re.compile(rb"\\([0-3][0-7]{2}|.)", re.DOTALL)
_JSON_WS = re.compile(r"[ \t\n\r]*")

# The C decoder. Objects become lists of (key, value) pairs so that duplicate keys are
# visible; strict=False lets a raw control character through to be dropped with its
# entry instead of failing the whole object.
# Numbers are never ids: they are read as None (dropped with their entry) without being
# converted, so that a number of 5,000 digits (over int's digit limit) or 1e999 cannot
# break the decoding of the entries after it.


def _not_an_id(text: str) -> None:
    return None


def _decoder(*, pairs: bool, strict: bool) -> json.JSONDecoder:
    return json.JSONDecoder(
        object_pairs_hook=list if pairs else None,
        strict=strict,
        parse_int=_not_an_id,
        parse_float=_not_an_id,
        parse_constant=_not_an_id,
    )


_DECODER = _decoder(pairs=True, strict=False)
# The same, but a raw control character is an error, so that a text it accepts is known
# to hold none (see _parse_value); and the fast path's, straight to a dict.
_STRICT_DECODER = _decoder(pairs=True, strict=True)
_STRICT_DICT_DECODER = _decoder(pairs=False, strict=True)
# The C string scanner the json module itself uses (not in typeshed's json.decoder).
_scanstring: Callable[[str, int, bool], tuple[str, int]] = json.decoder.scanstring  # type: ignore[attr-defined]
# Cheap attempts to re-close a cut object before walking it entry by entry.
_RECLOSE_ATTEMPTS = 4

_Pairs = list[tuple[str, Any]]


def parse_click_header(cookie_header: str | None, name: str = COOKIE_NAME) -> dict[str, str]:
    """Return the merged click map of every ``name`` cookie in a raw ``Cookie`` header.

    ``cookie_header`` is the header as WSGI gives it (``environ["HTTP_COOKIE"]``); ``None``
    or a header without the cookie gives ``{}``. The first occurrence of a productId
    wins, across cookies as inside one. Never raises.
    """
    return dict(_shared_click_map(cookie_header, name))


def _shared_click_map(cookie_header: str | None, name: str = COOKIE_NAME) -> Mapping[str, str]:
    """:func:`parse_click_header` without the copy, for
    :class:`~flask_neuroon.middleware.ClickMap` only: the map may be the one kept for every
    request with the same cookie, so its caller must never change it (ClickMap hands out
    nothing that could). Never raises."""
    try:
        return _parse_header(cookie_header, name)
    except Exception:
        # Unreachable for any input the test-suite can generate; if it ever happens it is
        # a bug in this module, reported without the cookie itself.
        logger.warning(
            "could not parse the %s cookie header (%d chars); ignoring it",
            name,
            len(cookie_header) if isinstance(cookie_header, str) else -1,
            exc_info=True,
        )
        return {}


def parse_click_value(value: str) -> dict[str, str]:
    """Return the click map of one cookie value, as it appears after ``name=``.

    See the module documentation for the accepted encodings. Never raises.
    """
    try:
        return _parse_value(value)
    except Exception:
        logger.warning(
            "could not parse a click cookie value (%d chars); ignoring it",
            len(value) if isinstance(value, str) else -1,
            exc_info=True,
        )
        return {}


# -- the header -------------------------------------------------------------------------


def _parse_header(header: str | None, name: str) -> Mapping[str, str]:
    if not header or not name:
        return {}
    needle = name + "="
    kept = _kept_parse(header, needle)
    if kept is not None:
        return kept
    start = 0
    merged: dict[str, str] | None = None
    while (pos := header.find(needle, start)) >= 0:
        start = pos + len(needle)
        if not _at_cookie_start(header, pos):
            continue
        end = header.find(";", start)
        if end < 0:
            end = len(header)
        clicks = _parse_value(header[start:end])
        start = end
        if merged is None:
            merged = clicks
        else:
            for product_id, search_log_id in clicks.items():
                if len(merged) >= MAX_ENTRIES:
                    break
                merged.setdefault(product_id, search_log_id)
        if len(merged) >= MAX_ENTRIES:
            break
    return merged if merged is not None else {}


# -- one value --------------------------------------------------------------------------


def _at_cookie_start(header: str, pos: int) -> bool:
    """Whether a cookie starts at ``pos``: the header's start, or ';' and optional blanks
    before it. Rejects "xneuroon_clicks=" and "other=neuroon_clicks=..." alike."""
    before = pos - 1
    while before >= 0 and header[before] in " \t":
        before -= 1
    return before < 0 or header[before] == ";"


def _kept_parse(header: str, needle: str) -> dict[str, str] | None:
    """The kept parse of the header's one ``needle`` cookie, found without copying its
    value out of the header; None when it is not kept or the header needs the full walk
    (another cookie of that name, or the name inside another cookie's value)."""
    pos = header.find(needle)
    if pos < 0:
        return None
    start = pos + len(needle)
    end = header.find(";", start)
    if end < 0:
        end = len(header)
    if header.find(needle, end) >= 0 or not _at_cookie_start(header, pos):
        return None
    return _kept(header, start, end)


def _kept(text: str, start: int, end: int) -> dict[str, str] | None:
    """The kept parse of the value ``text[start:end]``, compared where it stands (no
    copy of it is made); None when there is none."""
    fingerprint = _fingerprint(text, start, end)
    cached = _recent.get(fingerprint)
    if cached is None or len(cached[0]) != end - start or not text.startswith(cached[0], start):
        return None
    try:  # noqa: SIM105 - suppress() costs 3 Python calls on every page reading clicks
        _recent.move_to_end(fingerprint)
    except KeyError:  # another thread has just evicted it
        pass
    return cached[1]


def _parse_value(value: str) -> dict[str, str]:
    if len(value) <= _RECENT_VALUE_LENGTH:
        kept = _kept(value, 0, len(value))
        if kept is not None:
            return dict(kept)
    if len(value) > MAX_VALUE_LENGTH:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "ignored a click cookie of %d chars (over MAX_VALUE_LENGTH=%d): %s",
                len(value),
                MAX_VALUE_LENGTH,
                shown(value),
            )
        return {}
    data = _decode(value)
    if data[:1] != b"{":
        # Empty, an array, a string, a number, or not JSON at all.
        if data and logger.isEnabledFor(logging.DEBUG):
            logger.debug("ignored a click cookie that is not a JSON object: %s", shown(data))
        return {}
    # "Plain" JSON text cannot yield an id with a forbidden character, so the checks can
    # skip that one: no backslash (so no \u escape), no DEL, no C1 control (UTF-8 C2 80-9F,
    # tested coarsely as any C2 lead byte), valid UTF-8 (so no lone surrogate) and no raw
    # C0 control inside a string (the strict decoder rejects it). Single-byte tests only:
    # they run at memchr speed, a two-byte substring search is ten times slower.
    pairs: _Pairs
    unescaped = b"\\" not in data
    plain = unescaped and b"\x7f" not in data and b"\xc2" not in data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Invalid UTF-8 becomes lone surrogates, which drop the entry they sit in.
        text = data.decode("utf-8", "surrogateescape")
        plain = False
    if unescaped:
        # The widget's case: compact JSON.stringify output, ids without quotes or
        # backslashes. One C decode straight to a dict, a few whole-map checks, done.
        try:
            clicks = _STRICT_DICT_DECODER.raw_decode(text)[0]
        except (ValueError, RecursionError) as error:
            # Cut or broken; the pairs decoder would stop at the same place.
            pairs, plain = _parse_broken(text, error, plain)
            return _clean(pairs, plain)
        if _all_valid(clicks, plain, text):
            _remember(value, clicks)
            return clicks  # type: ignore[no-any-return]
        # Something to drop or a duplicate: decode again as pairs and sort it out.
    try:
        pairs = _STRICT_DECODER.raw_decode(text)[0]
    except (ValueError, RecursionError) as error:
        pairs, plain = _parse_broken(text, error, plain)
    return _clean(pairs, plain)


def _remember(value: str, clicks: dict[str, str]) -> None:
    """Keep a copy of the clean parse of ``value`` if it was seen before (see _recent)."""
    if len(value) > _RECENT_VALUE_LENGTH:
        return
    fingerprint = _fingerprint(value, 0, len(value))
    if fingerprint not in _seen:
        if len(_seen) >= _SEEN_SIZE:
            _seen.clear()
        _seen.add(fingerprint)
        return
    if len(_recent) >= _RECENT_SIZE:
        with contextlib.suppress(KeyError):  # threads racing: one may have emptied it
            _recent.popitem(last=False)
    _recent[fingerprint] = (value, dict(clicks))


def _all_valid(clicks: dict[str, Any], plain: bool, text: str | None = None) -> bool:
    """Whether every entry of ``clicks`` is valid, checked with whole-map C calls.

    With ``text``, the backslash-free JSON text ``clicks`` was decoded from, also whether
    that text held no duplicate key (a dict keeps the last one). Compact JSON without
    escapes, ``{"k":"v",...}``, is exactly ``1 + 6 * n`` characters plus the lengths of
    the ``n`` keys and values; every duplicate pair, whitespace or trailing text makes it
    longer, so equality proves there is none.
    """
    count = len(clicks)
    if not count:
        return True
    try:
        values = "".join(clicks.values())
    except TypeError:
        return False  # a value that is not a string
    keys = "".join(clicks)
    return (
        count <= MAX_ENTRIES
        and (text is None or len(text) == 1 + 6 * count + len(keys) + len(values))
        and (plain or (values.isprintable() and keys.isprintable()))
        and "" not in clicks
        and "" not in clicks.values()
        and len(max(clicks, key=len)) <= MAX_ID_LENGTH
        and len(max(clicks.values(), key=len)) <= MAX_ID_LENGTH
    )


def _parse_broken(text: str, error: BaseException, plain: bool) -> tuple[_Pairs, bool]:
    """The pairs of a text the strict decoder refused, and whether it is still plain.

    A raw control character inside a string is not a break: the text is decoded again
    without that rule and the entry is dropped later. Anything else is a break (a cut,
    garbage): the pairs before it are salvaged. Those of a re-closed prefix lie before
    the strict decoder's stop, so they hold no raw control character; those the entry
    walker finds are not vouched for.
    """
    if isinstance(error, json.JSONDecodeError) and error.msg.startswith("Invalid control"):
        plain = False
        try:
            return _DECODER.raw_decode(text)[0], plain
        except (ValueError, RecursionError) as lenient_error:
            error = lenient_error
    pairs = _reclose(text, error)
    if pairs is None:
        pairs = _walk(text)
        plain = False
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(
            "click cookie is cut or broken (%s); kept the %d entries before the break: %s",
            type(error).__name__,
            len(pairs),
            shown(text),
        )
    return pairs, plain


def _decode(value: str) -> bytes:
    """Cookie value (WSGI latin-1 text) -> the UTF-8 bytes of the JSON text it carries."""
    if value.isascii():
        data = value.encode("ascii")
    else:
        try:
            data = value.encode("latin-1")
        except UnicodeEncodeError:
            # Not WSGI text: characters above U+00FF mean it is already real text.
            data = value.encode("utf-8", "surrogatepass")
    data = data.strip()
    if data[:1] == b'"':
        data = _unquote_cookie_string(data).strip()
    rounds = 0
    while rounds < MAX_DECODE_ROUNDS and _LOOKS_ENCODED.match(data):
        data = _percent_decode(data).strip()
        rounds += 1
    return data


def _unquote_cookie_string(data: bytes) -> bytes:
    """Undo RFC 2109 / werkzeug / http.cookies quoting; tolerate a missing closing quote."""
    body = data[1:-1] if len(data) >= 2 and data[-1:] == b'"' else data[1:]
    if b"\\" not in body:
        return body
    if b"\\\\" not in body:
        # Every backslash starts an escape and none is itself escaped, so the two escapes
        # JSON needs most can be undone in C; any other escape is left for the regex.
        body = body.replace(b'\\"', b'"').replace(b"\\054", b",")
        if b"\\" not in body:
            return body
    return _COOKIE_ESCAPE.sub(_unescape_one, body)


def _unescape_one(match: re.Match[bytes]) -> bytes:
    escaped = match.group(1)
    if len(escaped) == 1:
        return escaped
    return bytes((int(escaped, 8),))


def _percent_decode(data: bytes) -> bytes:
    """Percent-decode bytes exactly like :func:`urllib.parse.unquote_to_bytes`, in C.

    A ``%`` in the last two bytes is a cut escape and is dropped with what follows it.

    The fast path rewrites ``%`` to ``=`` and lets :func:`binascii.a2b_qp` (quoted-printable
    has the same ``=XX`` hex escapes, either case) do the work. It is exact when the input
    has no ``=``, CR or LF of its own (QP gives those a meaning), no ``%`` in its last two
    bytes (QP drops a final ``=``), and every ``%`` starts a valid escape. QP turns a valid
    escape into its byte, copies any other ``=`` (``==`` once), so an output without ``=``
    proves exactness; an output with one (from ``%3D``) is exact when it is shorter by two
    bytes per ``%``, which only valid escapes achieve. Otherwise the pure-Python decoder runs.
    """
    cut = data.find(b"%", len(data) - 2)
    if cut >= 0:
        data = data[:cut]
    if b"%" not in data:
        return data
    if (
        b"=" not in data
        and b"\r" not in data
        and b"\n" not in data
        and data.find(b"%", len(data) - 2) < 0  # "%%" cut to "%": QP would drop it
    ):
        # replace(), not translate(): it jumps from one "%" to the next (memchr) where
        # translate looks at every byte through a table, several times the work.
        decoded = binascii.a2b_qp(data.replace(b"%", b"="))
        if b"=" not in decoded or len(data) - len(decoded) == 2 * data.count(b"%"):
            return decoded
    return unquote_to_bytes(data)


# -- a cut or broken object -------------------------------------------------------------


def _reclose(text: str, error: BaseException) -> _Pairs | None:
    """The pairs before a break, by closing the object just before it; None if no luck.

    Tries the text up to the error position, then up to each of the commas left of it (a
    few tries: a comma inside an id just fails its try), closed with ``}``. A prefix that
    parses once closed holds only complete tokens of the original text, so this never
    invents an entry.
    """
    if not isinstance(error, json.JSONDecodeError):
        return None  # RecursionError: no position
    cut = error.pos
    for _ in range(_RECLOSE_ATTEMPTS):
        prefix = text[:cut].rstrip(" \t\n\r")
        if prefix.endswith(","):
            prefix = prefix[:-1]
        if not prefix.endswith(":"):  # '"key":' cannot be closed; try the next comma
            try:
                pairs, end = _DECODER.raw_decode(prefix + "}")
            except (ValueError, RecursionError):
                pass
            else:
                if end == len(prefix) + 1:
                    return pairs  # type: ignore[no-any-return]
        cut = text.rfind(",", 0, cut)
        if cut < 0:
            break
    return None


def _walk(text: str) -> _Pairs:
    """Read ``{"k": v, ...}`` pair by pair; stop at the first thing that is not JSON.

    The slow but sure way to the pairs before a break, used when :func:`_reclose` fails.
    """
    pairs: _Pairs = []
    size = len(text)
    pos = _skip_ws(text, 1)  # text[0] == "{"
    try:
        while pos < size and text[pos] == '"':
            key, pos = _scanstring(text, pos + 1, False)
            pos = _skip_ws(text, pos)
            if text[pos : pos + 1] != ":":
                break
            pos = _skip_ws(text, pos + 1)
            if text[pos : pos + 1] == '"':
                value, pos = _scanstring(text, pos + 1, False)
            else:
                value, pos = _DECODER.raw_decode(text, pos)
            pairs.append((key, value))
            pos = _skip_ws(text, pos)
            if text[pos : pos + 1] != ",":
                break
            pos = _skip_ws(text, pos + 1)
    except (ValueError, RecursionError):
        pass
    return pairs


def _skip_ws(text: str, pos: int) -> int:
    match = _JSON_WS.match(text, pos)
    return match.end() if match else pos


# -- entries ----------------------------------------------------------------------------


def _clean(pairs: _Pairs, plain: bool = False) -> dict[str, str]:
    """Keep the valid ``{str: str}`` pairs, first occurrence winning, at most MAX_ENTRIES.

    ``plain`` says the JSON text was checked to hold nothing that decodes to a forbidden
    character (see :func:`_parse_value`).
    """
    clicks = dict(pairs)
    if len(clicks) == len(pairs) and _all_valid(clicks, plain):
        return clicks
    return _clean_slowly(pairs)


def _clean_slowly(pairs: Iterable[tuple[Any, Any]]) -> dict[str, str]:
    clicks: dict[str, str] = {}
    dropped = 0
    first_dropped: tuple[Any, Any] | None = None
    for key, value in pairs:
        if key in clicks:
            # A later duplicate of a kept productId: the first occurrence wins.
            dropped += 1
        elif _valid_id(key) and _valid_id(value) and len(clicks) < MAX_ENTRIES:
            clicks[key] = value
        else:
            dropped += 1
            if first_dropped is None:
                first_dropped = (key, value)
    if dropped and logger.isEnabledFor(logging.DEBUG):
        example = ""
        if first_dropped is not None:
            key, value = first_dropped
            text = value if isinstance(value, str) else repr(value)
            example = f"; first dropped: {shown(key)} -> {shown(text)}"
        logger.debug(
            "click cookie: dropped %d entries (duplicate, not {string: string}, empty, "
            "over MAX_ID_LENGTH=%d, control characters, invalid UTF-8, or over "
            "MAX_ENTRIES=%d)%s",
            dropped,
            MAX_ID_LENGTH,
            MAX_ENTRIES,
            example,
        )
    return clicks


def _valid_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_ID_LENGTH
        and BAD_ID_CHAR.search(value) is None
    )
