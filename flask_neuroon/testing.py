"""A real HTTP fake of the Neuroon API on loopback, for tests, demos and benchmarks.

Shops can use it in their own test suites::

    from flask_neuroon.testing import fake_api

    def test_checkout_sends_the_conversion(client):
        with fake_api(shop_id="shop_1", api_key="sk_test_1") as api:
            app.config["NEUROON_API_URL"] = api.url
            ...
            assert api.wait_for(1)
            assert api.conversions[0].attributed_value == Decimal("24.90")

It is a real server (``http.server.ThreadingHTTPServer``, HTTP/1.1 with keep-alive) so the
client under test goes through its real socket, pooling, timeout and retry code. It checks
the wire contract of ``POST /api/plugin/shops/{shopId}/track/conversion`` the way the
vendor describes it (API key, Origin, JSON body, one clear message per problem, 409 on a
repeated ``orderId``), records everything it receives with money as :class:`Decimal`,
and can be told to fail, slow down, drop connections or go down.

The widget side is faked too: ``/products/sync`` stores a catalog, the widget search
endpoint returns results with an itsdangerous-signed ``searchLogId`` that names the
product, and :meth:`FakeNeuroonAPI.attributed_revenue` credits only the lines whose id was
really issued for that product. ``GET /dashboard`` shows it all to a person.

Standard library and itsdangerous only; no Flask in here. The API key never appears in
logs, reprs or exceptions.

Run it in the foreground (the key comes from an environment variable, so it never shows
in a process list; the URL is the only line written to stdout)::

    NEUROON_API_KEY=sk_test_demo python -m flask_neuroon.testing --port 0 --shop-id shop_demo
"""

from __future__ import annotations

import argparse
import contextlib
import html
import http
import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import types
from collections import Counter, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Context, Decimal
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from itsdangerous import BadData, URLSafeSerializer

from ._stopping import StopRequest
from ._version import __version__

log = logging.getLogger("flask_neuroon.testing")

#: Largest request body the fake reads; larger ones get 413 and the connection is closed.
MAX_BODY_BYTES = 1024 * 1024

_CONVERSION_PATH = re.compile(r"^/api/plugin/shops/([^/]+)/track/conversion/?$")
_SYNC_PATH = re.compile(r"^/api/plugin/shops/([^/]+)/products/sync/?$")
_SEARCH_PATH = re.compile(r"^/api/widget/shops/([^/]+)/search/?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_API_KEY_HEADER = "X-Shop-API-Key"
_SEARCH_LOG_SALT = "neuroon-search-log"
# Sums never round: far more digits than any amount has.
_SUM_CONTEXT = Context(prec=200)
_CORS_HEADERS = (
    ("Access-Control-Allow-Origin", "*"),
    ("Access-Control-Allow-Methods", "GET, OPTIONS"),
    ("Access-Control-Allow-Headers", "Content-Type"),
    ("Access-Control-Max-Age", "600"),
)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True, repr=False)
class RecordedRequest:
    """One request to the conversion endpoint, as received, and the status answered.

    ``status`` is ``None`` when the connection was dropped without a response (``drop()``).
    ``json`` is the parsed body (money as :class:`Decimal`) or ``None`` when it was not
    JSON. ``headers`` holds the header names as the client spelled them; use
    :meth:`header` for a case-insensitive lookup. The ``repr`` hides the API key.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any
    status: int | None
    received_at: float

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (case-insensitive), or ``None``."""
        wanted = name.lower()
        for key, value in self.headers.items():
            if key.lower() == wanted:
                return value
        return None

    @property
    def order_id(self) -> str | None:
        """The ``orderId`` the body carried, if it was a JSON object with a string one."""
        if isinstance(self.json, dict):
            value = self.json.get("orderId")
            if isinstance(value, str):
                return value
        return None

    def __repr__(self) -> str:
        headers = {
            k: ("<redacted>" if k.lower() == _API_KEY_HEADER.lower() else v)
            for k, v in self.headers.items()
        }
        return (
            f"RecordedRequest(method={self.method!r}, path={self.path!r}, "
            f"status={self.status!r}, order_id={self.order_id!r}, headers={headers!r}, "
            f"body=<{len(self.body)} bytes>, received_at={self.received_at!r})"
        )


@dataclass(frozen=True)
class RecordedConversion:
    """An accepted conversion (the first delivery of its ``orderId``).

    Money is :class:`Decimal` exactly as it was written on the wire. ``attributed_value``
    is the ``attributedValue`` sent, or the sum of ``conversions[].lineTotal`` when it was
    omitted (then ``attributed_value_derived`` is true). ``attributed_lines`` are the
    entries whose ``searchLogId`` the fake issued for that very product;
    ``noise_lines`` the others (unsigned, forged, or issued for another product).
    """

    order_id: str
    order_value: Decimal
    attributed_value: Decimal
    currency: str
    conversions: list[dict[str, Any]]
    attributed_lines: list[dict[str, Any]]
    noise_lines: list[dict[str, Any]]
    origin: str
    user_agent: str | None
    received_at: float
    attributed_value_derived: bool = False
    payload: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- JSON helpers


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(data: bytes) -> Any:
    """Parse JSON with every non-integer number as :class:`Decimal`; never a float."""
    return json.loads(data.decode("utf-8"), parse_float=Decimal, parse_constant=_reject_constant)


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError("non-finite Decimal cannot be written as JSON")
    return str(value)


def dumps(value: Any) -> str:
    """JSON text with :class:`Decimal` written as a number, digit for digit (no float)."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, Decimal):
        return _decimal_text(value)
    if isinstance(value, (int, float, str)):
        return json.dumps(value)
    if isinstance(value, Mapping):
        items = (f"{json.dumps(str(k))}: {dumps(v)}" for k, v in value.items())
        return "{" + ", ".join(items) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(dumps(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def _money(value: Any) -> Decimal | None:
    """A JSON number >= 0 as Decimal, else None."""
    if not _is_number(value):
        return None
    number = Decimal(value)
    if not number.is_finite() or number < 0:
        return None
    return number


def _positive_int(value: Any) -> int | None:
    """A JSON number that is a whole number > 0 (``2`` or ``2.0``, as JS would see it)."""
    if not _is_number(value):
        return None
    number = Decimal(value)
    if not number.is_finite() or number <= 0 or number != number.to_integral_value():
        return None
    return int(number)


def _non_empty_string(value: Any) -> bool:
    return isinstance(value, str) and value.strip() != ""


def _sum(values: Iterable[Decimal]) -> Decimal:
    total = Decimal(0)
    for value in values:
        total = _SUM_CONTEXT.add(total, value)
    return total


# --------------------------------------------------------------------------- validation


@dataclass
class _ValidConversion:
    order_id: str
    order_value: Decimal
    attributed_value: Decimal
    attributed_value_derived: bool
    currency: str
    lines: list[dict[str, Any]]


def _validate_conversion(body: dict[str, Any]) -> tuple[_ValidConversion | None, list[str]]:
    details: list[str] = []

    order_id = body.get("orderId")
    if order_id is None:
        details.append("orderId is required")
    elif not _non_empty_string(order_id):
        details.append("orderId must be a non-empty string")

    order_value: Decimal | None = None
    if body.get("orderValue") is None:
        details.append("orderValue is required")
    else:
        order_value = _money(body["orderValue"])
        if order_value is None:
            details.append("orderValue must be a number >= 0")

    currency = body.get("currency")
    if currency is None:
        details.append("currency is required")
    elif not (isinstance(currency, str) and _CURRENCY.match(currency)):
        details.append("currency must be a 3-letter ISO 4217 code")

    lines: list[dict[str, Any]] = []
    raw_lines = body.get("conversions")
    if raw_lines is None:
        details.append("conversions is required")
    elif not isinstance(raw_lines, list):
        details.append("conversions must be an array")
    else:
        for i, raw in enumerate(raw_lines):
            where = f"conversions[{i}]"
            if not isinstance(raw, dict):
                details.append(f"{where} must be an object")
                continue
            line = dict(raw)
            for name in ("productId", "searchLogId"):
                if raw.get(name) is None:
                    details.append(f"{where}.{name} is required")
                elif not _non_empty_string(raw[name]):
                    details.append(f"{where}.{name} must be a non-empty string")
            if raw.get("quantity") is None:
                details.append(f"{where}.quantity is required")
            else:
                quantity = _positive_int(raw["quantity"])
                if quantity is None:
                    details.append(f"{where}.quantity must be a positive integer")
                else:
                    line["quantity"] = quantity
            if raw.get("lineTotal") is None:
                details.append(f"{where}.lineTotal is required")
            else:
                line_total = _money(raw["lineTotal"])
                if line_total is None:
                    details.append(f"{where}.lineTotal must be a number >= 0")
                else:
                    line["lineTotal"] = line_total
            lines.append(line)

    attributed: Decimal | None = None
    derived = body.get("attributedValue") is None
    if not derived:
        attributed = _money(body["attributedValue"])
        if attributed is None:
            details.append("attributedValue must be a number >= 0")
        elif order_value is not None and attributed > order_value:
            details.append("attributedValue must not exceed orderValue")

    if details:
        return None, details
    assert isinstance(order_id, str)
    assert isinstance(currency, str)
    assert order_value is not None
    if attributed is None:
        attributed = _sum(line["lineTotal"] for line in lines)
    return (
        _ValidConversion(order_id, order_value, attributed, derived, currency, lines),
        [],
    )


def _validate_products(
    raw_products: Any, *, python: bool = False
) -> tuple[list[dict[str, Any]], list[str]]:
    details: list[str] = []
    products: list[dict[str, Any]] = []
    if not isinstance(raw_products, list):
        return [], ["products must be an array"]
    for i, raw in enumerate(raw_products):
        where = f"products[{i}]"
        if not isinstance(raw, Mapping):
            details.append(f"{where} must be an object")
            continue
        product = dict(raw)
        external_id = raw.get("externalId")
        if external_id is None:
            details.append(f"{where}.externalId is required")
        elif not _non_empty_string(external_id):
            details.append(f"{where}.externalId must be a non-empty string")
        if not isinstance(raw.get("name"), str):
            details.append(f"{where}.name must be a string")
        price: Any = raw.get("price")
        if python and isinstance(price, float):
            price = Decimal(repr(price))
        money = _money(price)
        if money is None:
            details.append(f"{where}.price must be a number >= 0")
        else:
            product["price"] = money
        if raw.get("url") is not None and not isinstance(raw.get("url"), str):
            details.append(f"{where}.url must be a string")
        products.append(product)
    return products, details


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int | None  # as written; None means "any port" for an allowed origin

    @property
    def effective_port(self) -> int:
        if self.port is not None:
            return self.port
        return 443 if self.scheme == "https" else 80


def _parse_origin(text: str) -> _Origin | None:
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        return None
    return _Origin(parts.scheme, parts.hostname.lower(), port)


# --------------------------------------------------------------------------- faults


@dataclass(frozen=True)
class _Fault:
    kind: str  # "fail" | "drop"
    status: int = 503
    retry_after: int | None = None
    body: str | None = None


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json"
    headers: list[tuple[str, str]] = field(default_factory=list)


def _json_response(status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> _Response:
    return _Response(status, dumps(payload).encode("utf-8"), "application/json", list(headers))


# --------------------------------------------------------------------------- the fake


class FakeNeuroonAPI:
    """The Neuroon API on a loopback port, recording what it receives.

    ``start()`` binds and serves on a daemon thread; ``stop()`` closes the listening socket
    and every open connection (idempotent). After ``stop()``, ``start()`` binds the same
    port again, so ``stop()``/``start()`` simulates an outage with a real refused
    connection while ``url`` stays valid. Everything recorded is kept across restarts
    until :meth:`reset`.
    """

    def __init__(
        self,
        *,
        shop_id: str = "shop_test",
        api_key: str = "sk_test_fake",
        allowed_origins: Iterable[str] = ("http://127.0.0.1", "http://localhost"),
        secret: str = "fake-neuroon-secret",  # noqa: S107 - signs fake searchLogIds only
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not shop_id:
            raise ValueError("shop_id must not be empty")
        if not api_key:
            raise ValueError("api_key must not be empty")
        self.shop_id = shop_id
        self.__api_key = api_key
        self._allow_any_origin = False
        self._allowed: list[_Origin] = []
        for text in allowed_origins:
            if text == "*":
                self._allow_any_origin = True
                continue
            origin = _parse_origin(text)
            if origin is None:
                raise ValueError(f"not an origin (scheme://host[:port]): {text!r}")
            self._allowed.append(origin)
        self._signer = URLSafeSerializer(secret, salt=_SEARCH_LOG_SALT)
        self._host = host
        self._port = port

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._open: dict[socket.socket, threading.Thread] = {}
        self._url: str | None = None

        self._conversions: list[RecordedConversion] = []
        self._accepted_ids: set[str] = set()
        self._requests: list[RecordedRequest] = []
        self._received: Counter[str] = Counter()
        self._delivered: Counter[str] = Counter()
        self._stats: Counter[str] = Counter()
        self._connections = 0
        self._catalog: dict[str, dict[str, Any]] = {}
        self._faults: deque[_Fault] = deque()
        self._slow_seconds = 0.0
        self._slow_times: int | None = None
        self._down = False

    # ------------------------------------------------------------------ lifecycle

    @property
    def api_key(self) -> str:
        """The key clients must send in ``X-Shop-API-Key`` (never in the repr)."""
        return self.__api_key

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, the base URL to configure the client with."""
        if self._url is None:
            raise RuntimeError("FakeNeuroonAPI is not started; call start() first")
        return self._url

    @property
    def port(self) -> int:
        """The bound TCP port (after ``start()``)."""
        if self._url is None:
            raise RuntimeError("FakeNeuroonAPI is not started; call start() first")
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def conversion_url(self) -> str:
        """The full URL of this shop's conversion endpoint."""
        return f"{self.url}/api/plugin/shops/{self.shop_id}/track/conversion"

    def start(self) -> FakeNeuroonAPI:
        """Bind and serve on a daemon thread; returns ``self``."""
        with self._lock:
            if self._server is not None:
                raise RuntimeError("FakeNeuroonAPI is already running")
            self._stopping.clear()
            server = _Server((self._host, self._port), self)
            self._port = server.server_address[1]
            host = self._host if ":" not in self._host else f"[{self._host}]"
            self._url = f"http://{host}:{self._port}"
            self._server = server
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-neuroon-{self._port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, close the port and every open connection (idempotent)."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is None:
            return
        self._stopping.set()
        with self._changed:
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            open_connections = list(self._open.items())
        for sock, _ in open_connections:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for _, worker in open_connections:
            if worker is not threading.current_thread():
                worker.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FakeNeuroonAPI:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        url = self._url or "<not started>"
        return f"<FakeNeuroonAPI url={url!r} shop_id={self.shop_id!r}>"

    # ------------------------------------------------------------------ recorded data

    @property
    def conversions(self) -> list[RecordedConversion]:
        """Accepted conversions (first delivery of each ``orderId``), in arrival order."""
        with self._lock:
            return list(self._conversions)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to the conversion endpoint, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def products(self) -> list[dict[str, Any]]:
        """The synced catalog (``externalId``, ``name``, ``price`` as Decimal, ``url``)."""
        with self._lock:
            return [dict(p) for p in self._catalog.values()]

    @property
    def connections_accepted(self) -> int:
        """TCP connections accepted (any endpoint) since start or :meth:`reset`."""
        with self._lock:
            return self._connections

    def stats(self) -> dict[str, int]:
        """Counts of conversion requests: ``requests``, ``accepted``, ``duplicates``,
        ``rejected`` (4xx other than 409), ``injected`` (fail/down answers), ``dropped``."""
        with self._lock:
            return {
                key: self._stats[key]
                for key in ("requests", "accepted", "duplicates", "rejected", "injected", "dropped")
            }

    def received_count(self, order_id: str) -> int:
        """How many POSTs carried this ``orderId`` (accepted, duplicate, failed or dropped)."""
        with self._lock:
            return self._received[order_id]

    def delivered_order_ids(self) -> Counter[str]:
        """Per ``orderId``, the arrivals answered 200 or 409 (i.e. reached the contract)."""
        with self._lock:
            return Counter(self._delivered)

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` conversions were accepted; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._conversions) >= n, timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> bool:
        """Block until at least ``n`` requests reached the conversion endpoint (any status,
        dropped ones included); False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._requests) >= n, timeout)

    def reset(self) -> None:
        """Forget everything recorded (conversions, requests, counters, catalog) and clear
        the faults. Configuration and open connections are kept."""
        with self._lock:
            self._conversions.clear()
            self._accepted_ids.clear()
            self._requests.clear()
            self._received.clear()
            self._delivered.clear()
            self._stats.clear()
            self._connections = 0
            self._catalog.clear()
            self._clear_faults_locked()
            self._changed.notify_all()

    # ------------------------------------------------------------------ fault injection

    def fail(
        self,
        times: int,
        status: int = 503,
        *,
        retry_after: int | None = None,
        body: str | None = None,
    ) -> None:
        """Answer the next ``times`` conversion requests with ``status`` (JSON error body,
        or ``body`` as given), with a ``Retry-After`` header when ``retry_after`` is set.
        Queued after any faults already pending."""
        if times < 0:
            raise ValueError("times must be >= 0")
        if not 200 <= status <= 599:
            raise ValueError("status must be an HTTP status between 200 and 599")
        if retry_after is not None and retry_after < 0:
            raise ValueError("retry_after must be >= 0")
        with self._lock:
            self._faults.extend([_Fault("fail", status, retry_after, body)] * times)

    def drop(self, times: int) -> None:
        """Read each of the next ``times`` conversion requests, then close the connection
        without any response. Queued after any faults already pending."""
        if times < 0:
            raise ValueError("times must be >= 0")
        with self._lock:
            self._faults.extend([_Fault("drop")] * times)

    def slow(self, seconds: float, times: int | None = None) -> None:
        """Delay the answer to conversion requests by ``seconds``: the next ``times``
        requests, or every one until :meth:`clear_faults` when ``times`` is None."""
        if seconds < 0:
            raise ValueError("seconds must be >= 0")
        if times is not None and times < 0:
            raise ValueError("times must be >= 0")
        with self._lock:
            self._slow_seconds = seconds
            self._slow_times = times

    def down(self) -> None:
        """Answer every conversion request with 503 until :meth:`up` (queued faults wait)."""
        with self._lock:
            self._down = True

    def up(self) -> None:
        with self._lock:
            self._down = False

    def clear_faults(self) -> None:
        """Cancel pending fail/drop/slow faults and come back up."""
        with self._lock:
            self._clear_faults_locked()

    def _clear_faults_locked(self) -> None:
        self._faults.clear()
        self._slow_seconds = 0.0
        self._slow_times = None
        self._down = False

    # ------------------------------------------------------------------ widget side

    def sync_products(self, products: Iterable[Mapping[str, Any]]) -> None:
        """Store (upsert by ``externalId``) catalog entries, like ``POST /products/sync``.

        Prices may be int, Decimal or float (read through ``repr``); a bad entry raises
        :class:`ValueError` listing every problem.
        """
        valid, details = _validate_products(list(products), python=True)
        if details:
            raise ValueError("Validation failed: " + "; ".join(details))
        self._store_products(valid)

    def _store_products(self, products: list[dict[str, Any]]) -> None:
        with self._lock:
            for product in products:
                self._catalog[product["externalId"]] = product

    def issue_search_log_id(self, product_id: str, query: str = "") -> str:
        """A ``searchLogId`` signed for ``product_id``, as the widget search hands out.

        ``query`` is accepted for symmetry with the search endpoint; the id does not carry
        it. Ids are URL-safe, about 50 characters for a short product id.
        """
        return self._signer.dumps([str(product_id), secrets.token_urlsafe(6)])

    def verify_search_log_id(self, search_log_id: Any, product_id: Any) -> bool:
        """True if ``search_log_id`` was issued by this fake for ``product_id``."""
        if not isinstance(search_log_id, str) or not isinstance(product_id, str):
            return False
        try:
            payload = self._signer.loads(search_log_id)
        except BadData:
            return False
        return isinstance(payload, list) and len(payload) == 2 and payload[0] == product_id

    def attributed_revenue(self) -> dict[str, Decimal]:
        """Per currency, the sum of ``lineTotal`` over the verified lines of the accepted
        conversions. Currencies with accepted conversions but no verified line show 0."""
        with self._lock:
            conversions = list(self._conversions)
        revenue: dict[str, Decimal] = {}
        for conversion in conversions:
            total = _sum(line["lineTotal"] for line in conversion.attributed_lines)
            revenue[conversion.currency] = _SUM_CONTEXT.add(
                revenue.get(conversion.currency, Decimal(0)), total
            )
        return revenue

    # ------------------------------------------------------------------ serving (internal)

    def _connection_opened(self, sock: socket.socket, worker: threading.Thread) -> None:
        with self._lock:
            self._connections += 1
            self._open[sock] = worker

    def _connection_closed(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.pop(sock, None)

    def _origin_allowed(self, header: str | None) -> bool:
        if not header:
            return False
        if self._allow_any_origin:
            return True
        origin = _parse_origin(header)
        if origin is None:
            return False
        return any(
            allowed.scheme == origin.scheme
            and allowed.host == origin.host
            and (allowed.port is None or allowed.effective_port == origin.effective_port)
            for allowed in self._allowed
        )

    def _check_access(self, shop_id: str, headers: Message) -> _Response | None:
        """The checks every plugin endpoint makes, in the API's order: shop, key, origin,
        content type."""
        if shop_id != self.shop_id:
            return _json_response(404, {"error": "Shop not found"})
        key = headers.get(_API_KEY_HEADER)
        if key is None or not secrets.compare_digest(key.encode(), self.__api_key.encode()):
            return _json_response(401, {"error": "Invalid API key"})
        if not self._origin_allowed(headers.get("Origin")):
            return _json_response(403, {"error": "Origin not allowed"})
        content_type = (headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
        if content_type != "application/json":
            return _json_response(400, {"error": "Content-Type must be application/json"})
        return None

    def _next_fault(self) -> tuple[float, _Fault | None]:
        """Consume the slow delay and the fault that apply to one conversion request."""
        with self._lock:
            delay = 0.0
            if self._slow_seconds > 0 and self._slow_times != 0:
                delay = self._slow_seconds
                if self._slow_times is not None:
                    self._slow_times -= 1
            if self._down:
                return delay, _Fault("fail", 503, None, None)
            if self._faults:
                return delay, self._faults.popleft()
            return delay, None

    def _handle_conversion(self, shop_id: str, handler: _Handler, body: bytes) -> _Response | None:
        """Answer one conversion POST; ``None`` means drop the connection."""
        headers = handler.headers
        try:
            parsed: Any = _loads(body)
        except (ValueError, RecursionError):
            parsed = None
        record = _PendingRecord(handler, body, parsed)

        delay, fault = self._next_fault()
        if delay and self._stopping.wait(delay):
            self._record(record, None, "dropped")
            return None
        if fault is not None:
            if fault.kind == "drop":
                self._record(record, None, "dropped")
                return None
            injected = self._fault_response(fault)
            self._record(record, injected.status, "injected")
            return injected

        response = self._check_access(shop_id, headers)
        if response is None:
            if parsed is None:
                response = _json_response(400, {"error": "Invalid JSON"})
            elif not isinstance(parsed, dict):
                response = _json_response(400, {"error": "Request body must be a JSON object"})
        if response is not None:
            self._record(record, response.status, "rejected")
            return response

        assert isinstance(parsed, dict)
        valid, details = _validate_conversion(parsed)
        if valid is None:
            response = _json_response(400, {"error": "Validation failed", "details": details})
            self._record(record, response.status, "rejected")
            return response

        attributed: list[dict[str, Any]] = []
        noise: list[dict[str, Any]] = []
        for line in valid.lines:
            verified = self.verify_search_log_id(line["searchLogId"], line["productId"])
            (attributed if verified else noise).append(line)
        conversion = RecordedConversion(
            order_id=valid.order_id,
            order_value=valid.order_value,
            attributed_value=valid.attributed_value,
            currency=valid.currency,
            conversions=valid.lines,
            attributed_lines=attributed,
            noise_lines=noise,
            origin=headers.get("Origin") or "",
            user_agent=headers.get("User-Agent"),
            received_at=record.received_at,
            attributed_value_derived=valid.attributed_value_derived,
            payload=parsed,
        )
        return self._record(record, 200, "accepted", conversion)

    def _fault_response(self, fault: _Fault) -> _Response:
        extra = [] if fault.retry_after is None else [("Retry-After", str(fault.retry_after))]
        if fault.body is None:
            phrase = _phrase(fault.status) or "Error"
            message = "Service unavailable" if fault.status == 503 else phrase
            return _json_response(fault.status, {"error": message}, extra)
        content_type = "application/json"
        try:
            json.loads(fault.body)
        except ValueError:
            stripped = fault.body.lstrip()
            content_type = "text/html" if stripped.startswith("<") else "text/plain"
            content_type += "; charset=utf-8"
        return _Response(fault.status, fault.body.encode("utf-8"), content_type, extra)

    def _record(
        self,
        pending: _PendingRecord,
        status: int | None,
        outcome: str,
        conversion: RecordedConversion | None = None,
    ) -> _Response | None:
        """Record a conversion request under the lock; for a valid conversion decide
        200 or 409 atomically and return the response."""
        response: _Response | None = None
        with self._lock:
            if conversion is not None:
                if conversion.order_id in self._accepted_ids:
                    status = 409
                    outcome = "duplicates"
                    response = _json_response(
                        409,
                        {"error": "Conversion already recorded", "orderId": conversion.order_id},
                    )
                else:
                    status = 200
                    self._accepted_ids.add(conversion.order_id)
                    self._conversions.append(conversion)
                    response = _json_response(
                        200,
                        {
                            "ok": True,
                            "orderId": conversion.order_id,
                            "attributedValue": conversion.attributed_value,
                        },
                    )
            request = RecordedRequest(
                method=pending.method,
                path=pending.path,
                headers=pending.headers,
                body=pending.body,
                json=pending.parsed,
                status=status,
                received_at=pending.received_at,
            )
            self._requests.append(request)
            self._stats["requests"] += 1
            order_id = request.order_id
            if order_id is not None:
                self._received[order_id] += 1
                if status in (200, 409):
                    self._delivered[order_id] += 1
            self._stats[outcome] += 1
            self._changed.notify_all()
        return response

    def _handle_sync(self, shop_id: str, handler: _Handler, body: bytes) -> _Response:
        response = self._check_access(shop_id, handler.headers)
        if response is not None:
            return response
        try:
            parsed = _loads(body)
        except (ValueError, RecursionError):
            return _json_response(400, {"error": "Invalid JSON"})
        if not isinstance(parsed, dict):
            return _json_response(400, {"error": "Request body must be a JSON object"})
        if parsed.get("products") is None:
            details = ["products is required"]
            products: list[dict[str, Any]] = []
        else:
            products, details = _validate_products(parsed["products"])
        if details:
            return _json_response(400, {"error": "Validation failed", "details": details})
        self._store_products(products)
        return _json_response(200, {"ok": True, "synced": len(products)})

    def _handle_search(self, shop_id: str, query_string: str) -> _Response:
        if shop_id != self.shop_id:
            return _json_response(404, {"error": "Shop not found"}, _CORS_HEADERS)
        query = parse_qs(query_string).get("q", [""])[0]
        needle = query.strip().casefold()
        with self._lock:
            catalog = list(self._catalog.values())
        results = [
            {
                "productId": product["externalId"],
                "name": product.get("name", ""),
                "price": product.get("price"),
                "url": product.get("url"),
                "searchLogId": self.issue_search_log_id(product["externalId"], query),
            }
            for product in catalog
            if needle in str(product.get("name", "")).casefold()
        ]
        return _json_response(200, {"query": query, "results": results}, _CORS_HEADERS)

    def _conversions_json(self) -> dict[str, Any]:
        with self._lock:
            conversions = list(self._conversions)
        return {
            "shopId": self.shop_id,
            "conversions": [
                {
                    "orderId": c.order_id,
                    "orderValue": c.order_value,
                    "attributedValue": c.attributed_value,
                    "attributedValueDerived": c.attributed_value_derived,
                    "currency": c.currency,
                    "conversions": [
                        {
                            **line,
                            "verified": any(line is a for a in c.attributed_lines),
                        }
                        for line in c.conversions
                    ],
                    "origin": c.origin,
                    "userAgent": c.user_agent,
                    "receivedAt": c.received_at,
                }
                for c in conversions
            ],
            "attributedRevenue": self.attributed_revenue(),
            "stats": self.stats(),
        }

    def dashboard_html(self, refresh: int | None = None) -> str:
        """The dashboard page: accepted conversions, attributed revenue, counts."""
        esc = html.escape
        with self._lock:
            conversions = list(self._conversions)
        stats = self.stats()
        revenue = self.attributed_revenue()
        rows = []
        for c in conversions:
            lines = []
            for line in c.conversions:
                verified = any(line is a for a in c.attributed_lines)
                lines.append(
                    f'<li class="line {"verified" if verified else "unverified"}" '
                    f'data-product-id="{esc(str(line.get("productId")))}">'
                    f'<span class="product-id">{esc(str(line.get("productId")))}</span> '
                    f'&times; <span class="quantity">{esc(str(line.get("quantity")))}</span> '
                    f'= <span class="line-total">{esc(str(line.get("lineTotal")))}</span> '
                    f'<span class="verdict">{"verified" if verified else "not verified"}'
                    "</span></li>"
                )
            received = time.strftime("%H:%M:%S", time.localtime(c.received_at))
            rows.append(
                f'<tr class="order" data-order-id="{esc(c.order_id)}">'
                f'<td class="order-id">{esc(c.order_id)}</td>'
                f'<td class="order-value num">{esc(str(c.order_value))}</td>'
                f'<td class="attributed-value num">{esc(str(c.attributed_value))}</td>'
                f'<td class="currency">{esc(c.currency)}</td>'
                f'<td><ul class="lines">{"".join(lines)}</ul></td>'
                f'<td class="received">{esc(received)}</td></tr>'
            )
        revenue_rows = (
            "".join(
                f'<tr data-currency="{esc(cur)}"><td>{esc(cur)}</td>'
                f'<td class="revenue num">{esc(str(total))}</td></tr>'
                for cur, total in sorted(revenue.items())
            )
            or '<tr><td colspan="2">none yet</td></tr>'
        )
        stat_items = "".join(
            f'<div class="stat" data-stat="{esc(k)}"><dt>{esc(k)}</dt><dd>{v}</dd></div>'
            for k, v in stats.items()
        )
        body_rows = "".join(rows) or (
            '<tr class="empty"><td colspan="6">No conversions yet.</td></tr>'
        )
        meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
        return (
            "<!doctype html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            f"<title>Fake Neuroon API: {esc(self.shop_id)}</title>{meta}"
            "<style>"
            "body{font:14px/1.4 system-ui,sans-serif;margin:2rem;color:#222}"
            "table{border-collapse:collapse;margin:1rem 0}"
            "td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left;vertical-align:top}"
            ".num{text-align:right;font-variant-numeric:tabular-nums}"
            "ul.lines{margin:0;padding-left:1rem}"
            ".verified .verdict{color:#186a3b}.unverified .verdict{color:#a93226}"
            "dl{display:flex;gap:1.5rem}.stat dt{font-size:12px;color:#666}"
            ".stat dd{margin:0;font-size:20px}"
            "</style></head><body>"
            "<h1>Fake Neuroon API</h1>"
            f'<p>Shop <code id="shop-id">{esc(self.shop_id)}</code> at '
            f"<code>{esc(self._url or '')}</code></p>"
            f'<section id="stats"><dl>{stat_items}</dl></section>'
            '<section id="revenue"><h2>Attributed revenue</h2>'
            "<table><thead><tr><th>Currency</th><th>Revenue</th></tr></thead>"
            f"<tbody>{revenue_rows}</tbody></table></section>"
            '<section id="conversions"><h2>Conversions</h2>'
            "<table><thead><tr><th>Order</th><th>Order value</th><th>Attributed</th>"
            "<th>Currency</th><th>Lines</th><th>Received</th></tr></thead>"
            f"<tbody>{body_rows}</tbody></table></section>"
            "</body></html>\n"
        )

    def _handle(self, handler: _Handler, method: str, body: bytes) -> _Response | None:
        parts = urlsplit(handler.path)
        path = parts.path

        match = _CONVERSION_PATH.match(path)
        if match:
            if method != "POST":
                return _method_not_allowed("POST")
            return self._handle_conversion(unquote(match.group(1)), handler, body)
        match = _SYNC_PATH.match(path)
        if match:
            if method != "POST":
                return _method_not_allowed("POST")
            return self._handle_sync(unquote(match.group(1)), handler, body)
        match = _SEARCH_PATH.match(path)
        if match:
            if method == "OPTIONS":
                return _Response(204, b"", "text/plain", list(_CORS_HEADERS))
            if method not in ("GET", "HEAD"):
                return _method_not_allowed("GET, OPTIONS", _CORS_HEADERS)
            return self._handle_search(unquote(match.group(1)), parts.query)
        if path in ("/", "/dashboard", "/dashboard/"):
            if method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            refresh_text = parse_qs(parts.query).get("refresh", [""])[0]
            refresh = int(refresh_text) if refresh_text.isdigit() else None
            page = self.dashboard_html(refresh=refresh).encode("utf-8")
            return _Response(200, page, "text/html; charset=utf-8", [("Cache-Control", "no-store")])
        if path == "/api/_fake/conversions":
            if method not in ("GET", "HEAD"):
                return _method_not_allowed("GET")
            return _json_response(200, self._conversions_json(), [("Cache-Control", "no-store")])
        return _json_response(404, {"error": "Not found"})


def _phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return ""


def _method_not_allowed(allow: str, extra: Iterable[tuple[str, str]] = ()) -> _Response:
    return _json_response(405, {"error": "Method not allowed"}, [("Allow", allow), *extra])


class _PendingRecord:
    """What a conversion request looked like, captured before it is answered."""

    __slots__ = ("body", "headers", "method", "parsed", "path", "received_at")

    def __init__(self, handler: _Handler, body: bytes, parsed: Any) -> None:
        self.method = handler.command
        self.path = handler.path
        self.headers = dict(handler.headers.items())
        self.body = body
        self.parsed = parsed
        self.received_at = time.time()


# --------------------------------------------------------------------------- HTTP plumbing


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], api: FakeNeuroonAPI) -> None:
        self.api = api
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a DNS lookup; not needed here.
        import socketserver

        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        worker = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name="fake-neuroon-conn",
            daemon=True,
        )
        self.api._connection_opened(request, worker)
        worker.start()

    def shutdown_request(self, request: Any) -> None:
        self.api._connection_closed(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("error on connection from %s", client_address, exc_info=True)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = f"FakeNeuroon/{__version__}"
    sys_version = ""
    server: _Server

    def setup(self) -> None:
        super().setup()
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        try:
            body = self._read_body()
            if body is None:
                return
            response = self.server.api._handle(self, method, body)
            if response is None:
                self._drop()
                return
            self._send(response, head=method == "HEAD")
        except OSError:
            # The client went away (timeout, reset, broken pipe): nothing to answer.
            self.close_connection = True
        except Exception:
            log.exception("fake Neuroon API failed on %s %s", method, self.path.split("?")[0])
            self.close_connection = True
            with contextlib.suppress(OSError):
                self._send(_json_response(500, {"error": "Internal error in the fake"}))

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked()
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return b""
        try:
            length = int(length_text)
            if length < 0:
                raise ValueError(length_text)
        except ValueError:
            self.close_connection = True
            self._send(_json_response(400, {"error": "Invalid Content-Length"}))
            return None
        if length > MAX_BODY_BYTES:
            # Read (and discard) a moderately large body first, so the client gets to
            # read the 413 instead of a connection reset while it is still sending.
            self.close_connection = True
            remaining = length if length <= 16 * MAX_BODY_BYTES else 0
            while remaining > 0:
                chunk = self.rfile.read(min(remaining, 65536))
                if not chunk:
                    return None
                remaining -= len(chunk)
            self._send(_json_response(413, {"error": "Payload too large"}))
            return None
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            return None
        return body

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = self.rfile.readline(1024)
            try:
                size = int(size_line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                self.close_connection = True
                self._send(_json_response(400, {"error": "Invalid chunked body"}))
                return None
            if size == 0:
                while self.rfile.readline(8192).strip():
                    pass  # trailers
                return b"".join(chunks)
            total += size
            if total > MAX_BODY_BYTES:
                self.close_connection = True
                self._send(_json_response(413, {"error": "Payload too large"}))
                return None
            chunk = self.rfile.read(size)
            if len(chunk) < size:
                self.close_connection = True
                return None
            chunks.append(chunk)
            self.rfile.readline(8)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Malformed requests (bad request line, oversized headers, ...) get a JSON error
        too, and the connection is closed."""
        self.close_connection = True
        self.log_error("code %d, message %s", code, message)
        response = _json_response(code, {"error": message or _phrase(code) or "Error"})
        with contextlib.suppress(OSError):
            self._send(response, head=getattr(self, "command", None) == "HEAD")

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _send(self, response: _Response, *, head: bool = False) -> None:
        """Write status line, headers and body in one send (no Nagle/delayed-ACK stall)."""
        headers = [
            f"{self.protocol_version} {response.status} {_phrase(response.status)}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
        ]
        headers.extend(f"{name}: {value}" for name, value in response.headers)
        if self.close_connection:
            headers.append("Connection: close")
        data = ("\r\n".join(headers) + "\r\n\r\n").encode("latin-1")
        if not head:
            data += response.body
        self.wfile.write(data)
        self.log_request(response.status, len(response.body))


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def fake_api(**kwargs: Any) -> Iterator[FakeNeuroonAPI]:
    """Start a :class:`FakeNeuroonAPI` for the ``with`` block and stop it afterwards.

    As a pytest fixture::

        @pytest.fixture
        def neuroon_api():
            with fake_api(shop_id="shop_1") as api:
                yield api
    """
    api = FakeNeuroonAPI(**kwargs)
    api.start()
    try:
        yield api
    finally:
        api.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m flask_neuroon.testing``: serve in the foreground, print the URL."""
    parser = argparse.ArgumentParser(
        prog="python -m flask_neuroon.testing",
        description="Run the fake Neuroon API in the foreground. Prints its URL on stdout.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind (0: any free port)")
    parser.add_argument("--shop-id", default="shop_test", help="the one shop id it knows")
    parser.add_argument(
        "--api-key-env",
        default="NEUROON_API_KEY",
        metavar="VAR",
        help="environment variable holding the API key clients must send (NEUROON_API_KEY)",
    )
    parser.add_argument(
        "--origin",
        action="append",
        metavar="ORIGIN",
        help="allowed Origin (repeatable; default http://127.0.0.1 and http://localhost, "
        "any port; '*' allows any)",
    )
    parser.add_argument(
        "--secret-env",
        default="NEUROON_FAKE_SECRET",
        metavar="VAR",
        help="environment variable with the searchLogId signing secret (optional)",
    )
    args = parser.parse_args(argv)
    api_key = os.environ.get(args.api_key_env, "")
    if not api_key:
        parser.error(f"environment variable {args.api_key_env} is not set or empty")
    options: dict[str, Any] = {
        "shop_id": args.shop_id,
        "api_key": api_key,
        "host": args.host,
        "port": args.port,
    }
    if args.origin:
        options["allowed_origins"] = args.origin
    secret = os.environ.get(args.secret_env)
    if secret:
        options["secret"] = secret
    api = FakeNeuroonAPI(**options)
    try:
        api.start()
    except OSError as exc:
        sys.stderr.write(f"cannot bind {args.host}:{args.port}: {exc.strerror or exc}\n")
        return 1
    try:
        with StopRequest().on(signal.SIGTERM) as stop:
            sys.stdout.write(api.url + "\n")
            sys.stdout.flush()
            sys.stderr.write(
                f"fake Neuroon API for shop {api.shop_id!r}; dashboard: {api.url}/dashboard; "
                "Ctrl-C to stop\n"
            )
            sys.stderr.flush()
            while not stop.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
    return 0


__all__ = [
    "MAX_BODY_BYTES",
    "FakeNeuroonAPI",
    "RecordedConversion",
    "RecordedRequest",
    "dumps",
    "fake_api",
    "main",
]

if __name__ == "__main__":
    raise SystemExit(main())
