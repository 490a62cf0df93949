"""WSGI middleware: a lazily parsed click map in the environ of every request.

Wrap any WSGI application, in the manner of werkzeug's ``ProxyFix``::

    app.wsgi_app = ClickMapMiddleware(app.wsgi_app)

For each request the middleware stores a :class:`ClickMap` under
``environ["neuroon.clicks"]`` and calls the application; the response passes through
untouched. The map holds only the raw ``Cookie`` header: nothing is parsed until someone
reads it (``len``, ``in``, ``[]``, iteration, ``get``, ``keys``/``items``/``values``,
``bool``, ``==`` or ``repr``), and then it is parsed once, with
:func:`flask_neuroon.cookies.parse_click_header`'s rules (see there). A
request that never asks for its clicks pays for one small object and nothing else.

:func:`clicks_from_environ` returns that map, or builds one from the header when the
middleware did not run, so the rest of the package works either way.

Nothing here imports Flask.
"""

from __future__ import annotations

from collections.abc import (
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Mapping,
    MutableMapping,
    ValuesView,
)
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .cookies import COOKIE_NAME, _shared_click_map

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["ENVIRON_KEY", "ClickMap", "ClickMapMiddleware", "clicks_from_environ"]

ENVIRON_KEY = "neuroon.clicks"

_T = TypeVar("_T")

_REPR_ENTRIES = 3
_REPR_ID_LENGTH = 40


def _short(text: str) -> str:
    if len(text) <= _REPR_ID_LENGTH:
        return repr(text)
    return repr(text[:_REPR_ID_LENGTH] + "...")


class ClickMap(Mapping[str, str]):
    """The read-only ``{productId: searchLogId}`` map of one request, parsed on first use.

    Built from the raw ``Cookie`` header (``None`` for no header). Parsing happens at most
    once per instance; the header is released afterwards. Two threads reading the same
    fresh map at the same instant may both parse it, harmlessly: the results are equal.
    """

    __slots__ = ("_clicks", "_cookie_name", "_header")

    def __init__(self, cookie_header: str | None, cookie_name: str = COOKIE_NAME) -> None:
        self._header = cookie_header
        self._cookie_name = cookie_name
        self._clicks: Mapping[str, str] | None = None

    @property
    def cookie_name(self) -> str:
        """The cookie this map reads."""
        return self._cookie_name

    @property
    def parsed(self) -> bool:
        """Whether the cookie has been parsed yet (reading this does not parse it)."""
        return self._clicks is not None

    def _data(self) -> Mapping[str, str]:
        # Read-only, maybe shared with other requests carrying the same cookie: nothing
        # here changes it, and the views handed out (keys, items, values) cannot.
        clicks = self._clicks
        if clicks is None:
            clicks = self._clicks = _shared_click_map(self._header, self._cookie_name)
            self._header = None
        return clicks

    def __getitem__(self, product_id: str) -> str:
        return self._data()[product_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data())

    def __len__(self) -> int:
        return len(self._data())

    def __contains__(self, product_id: object) -> bool:
        return product_id in self._data()

    def __bool__(self) -> bool:
        return bool(self._data())

    @overload
    def get(self, product_id: str, /) -> str | None: ...
    @overload
    def get(self, product_id: str, default: str, /) -> str: ...
    @overload
    def get(self, product_id: str, default: _T, /) -> str | _T: ...
    def get(self, product_id: str, default: object = None, /) -> object:
        return self._data().get(product_id, default)

    def keys(self) -> KeysView[str]:
        return self._data().keys()

    def items(self) -> ItemsView[str, str]:
        return self._data().items()

    def values(self) -> ValuesView[str]:
        return self._data().values()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ClickMap):
            return self._data() == other._data()
        if isinstance(other, Mapping):
            return self._data() == dict(other.items())
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        clicks = self._data()
        shown = ", ".join(
            f"{_short(product_id)}: {_short(search_log_id)}"
            for product_id, search_log_id in list(clicks.items())[:_REPR_ENTRIES]
        )
        more = len(clicks) - _REPR_ENTRIES
        if more > 0:
            shown += f", ... ({more} more)"
        return f"{type(self).__name__}({{{shown}}})"


class ClickMapMiddleware:
    """Put a lazy :class:`ClickMap` for ``cookie_name`` in ``environ[environ_key]``."""

    def __init__(
        self,
        app: WSGIApplication,
        cookie_name: str = COOKIE_NAME,
        environ_key: str = ENVIRON_KEY,
    ) -> None:
        self.app = app
        self.cookie_name = cookie_name
        self.environ_key = environ_key

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[self.environ_key] = ClickMap(environ.get("HTTP_COOKIE"), self.cookie_name)
        return self.app(environ, start_response)


def clicks_from_environ(
    environ: MutableMapping[str, Any],
    environ_key: str = ENVIRON_KEY,
    cookie_name: str = COOKIE_NAME,
) -> Mapping[str, str]:
    """This request's click map: the middleware's, else one made now and stored back.

    A :class:`ClickMap` already under ``environ_key`` for the same cookie is returned as
    is (and parsed at most once, however often this is called). Otherwise a fresh one is
    built from ``HTTP_COOKIE`` and stored under ``environ_key``, replacing whatever was
    there.
    """
    clicks = environ.get(environ_key)
    if isinstance(clicks, ClickMap) and clicks._cookie_name == cookie_name:
        return clicks
    clicks = ClickMap(environ.get("HTTP_COOKIE"), cookie_name)
    environ[environ_key] = clicks
    return clicks
