"""One POST to the conversion endpoint, and what its answer means (the only HTTP in the package).

:meth:`NeuroonClient.send` never raises for anything the network or the API does; it
returns a :class:`SendResult`:

=================  =================================================================
outcome            when
=================  =================================================================
``sent``           2xx: the API recorded the conversion
``duplicate``      409: the API already had this orderId (delivered before)
``retry``          timeout, connection error, 408, 425, 429, 5xx (``retry_after`` from
                   the Retry-After header when the API gave one)
``reject``         any other 4xx: sending it again cannot help (a dead letter)
=================  =================================================================

Each thread of each process has its own keep-alive ``requests.Session``. What requests
would otherwise look up in the environment on every call (``HTTP(S)_PROXY``/``ALL_PROXY``
and ``NO_PROXY`` for the endpoint, ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE``, ``.netrc``
credentials) is looked up once, when a session is made, and set on it: the same
settings, without scanning ``os.environ`` twice and stat-ing ``~/.netrc`` per POST.

Every send goes to the same URL with the same headers, so the session's own adapter is
asked once per thread for what it would do (the urllib3 connection pool, through the
proxy and with the CA bundle it chose, the URL to request, the merged headers), and each
POST then goes straight to that pool: what ``Session.send`` adds per call (hooks, cookie
jars, redirect resolution, the ``Response`` wrapper) cost more CPU than the POST itself.
Once the API sets a cookie (a load balancer's), sends take requests' full path, which
sends it back.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Literal, cast

import requests
import urllib3
from requests.cookies import extract_cookies_to_jar
from urllib3.connectionpool import HTTPConnectionPool
from urllib3.exceptions import HTTPError, MaxRetryError, NewConnectionError

from ._version import __version__
from .config import Secret, scrub_secret

USER_AGENT = f"flask-neuroon/{__version__}"
RETRY_STATUSES = frozenset({408, 425, 429})
MAX_RETRY_AFTER = 86400.0

Outcome = Literal["sent", "duplicate", "retry", "reject"]


@dataclass(frozen=True)
class SendResult:
    outcome: Outcome
    status_code: int | None = None
    message: str = ""
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        return self.outcome in ("sent", "duplicate")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), MAX_RETRY_AFTER)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    delay = when.timestamp() - (time.time() if now is None else now)
    return min(max(delay, 0.0), MAX_RETRY_AFTER)


def _message(status: int, text: str) -> str:
    """The API's own words for a failure, short."""
    text = text[:2000]
    try:
        body = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        parts = [str(body[key]) for key in ("error", "message") if body.get(key)]
        details = body.get("details")
        if isinstance(details, list):
            parts.extend(str(item) for item in details[:10])
        elif details:
            parts.append(str(details))
        if parts:
            text = "; ".join(parts)
    text = " ".join(text.split())
    return f"HTTP {status}: {text[:500]}" if text else f"HTTP {status}"


def classify(status: int, text: str = "", retry_after: str | None = None) -> SendResult:
    """What an answer with ``status``, body ``text`` and a ``Retry-After`` header means."""
    if 200 <= status < 300:
        return SendResult("sent", status)
    if status == 409:
        return SendResult("duplicate", status, _message(status, text))
    if status in RETRY_STATUSES or status >= 500:
        return SendResult("retry", status, _message(status, text), parse_retry_after(retry_after))
    return SendResult("reject", status, _message(status, text))


_TIMEOUT_NAMES = {"ReadTimeoutError": "ReadTimeout", "ConnectTimeoutError": "ConnectTimeout"}


def _failure(exc: Exception) -> str:
    """``last_error`` for a send that got no answer (requests' or urllib3's exception)."""
    if isinstance(exc, MaxRetryError) and isinstance(exc.reason, Exception):
        exc = exc.reason
    refused = isinstance(exc, NewConnectionError)
    if not refused and isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        name = type(exc).__name__
        return f"timeout: {_TIMEOUT_NAMES.get(name, name)}"
    if refused or isinstance(exc, (requests.ConnectionError, HTTPError)):
        return f"connection error: {_scrub(exc)}"
    if isinstance(exc, requests.RequestException):
        return f"request failed: {_scrub(exc)}"
    # Not the network's doing (a missing CA bundle, a header that cannot be encoded), but
    # never the caller's problem: retried, then dead, with the reason in last_error.
    return f"{type(exc).__name__}: {_scrub(exc)}"


class _Route:
    """Where and how one thread's POSTs go, as the session's adapter decided it once."""

    __slots__ = ("headers", "pool", "session", "template", "timeout", "url")

    def __init__(self, session: requests.Session, endpoint: str, timeout: tuple[float, float]):
        self.session = session
        self.template = session.prepare_request(requests.Request("POST", endpoint))
        adapter = session.get_adapter(endpoint)
        if not isinstance(adapter, requests.adapters.HTTPAdapter):
            raise TypeError(f"unexpected adapter {type(adapter).__name__} for {endpoint}")
        self.pool = cast(
            HTTPConnectionPool,
            adapter.get_connection_with_tls_context(
                self.template, session.verify, proxies=session.proxies, cert=session.cert
            ),
        )
        adapter.cert_verify(self.pool, endpoint, session.verify, session.cert)  # type: ignore[no-untyped-call]
        self.url = adapter.request_url(self.template, session.proxies)
        self.headers = dict(self.template.headers)
        self.timeout = urllib3.Timeout(connect=timeout[0], read=timeout[1])


class NeuroonClient:
    """Sends conversion bodies to ``endpoint`` with the contract's headers."""

    def __init__(
        self, endpoint: str, *, api_key: Secret, origin: str, timeout: tuple[float, float]
    ) -> None:
        self.endpoint = endpoint
        self._api_key = api_key
        self._origin = origin
        self._timeout = timeout
        self._local = threading.local()
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<NeuroonClient {self.endpoint}>"

    @property
    def timeout(self) -> tuple[float, float]:
        """(connect, read) timeouts in seconds: together, the longest a send may wait."""
        return self._timeout

    def _after_fork(self) -> None:
        self._local = threading.local()
        self._pid = os.getpid()

    def _route(self) -> _Route:
        if self._pid != os.getpid():
            self._after_fork()
        route: _Route | None = getattr(self._local, "route", None)
        if route is None:
            session = requests.Session()
            _settle_environment(session, self.endpoint)
            session.headers.update(
                {
                    "X-Shop-API-Key": self._api_key.reveal(),
                    "Origin": self._origin,
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": USER_AGENT,
                }
            )
            try:
                route = _Route(session, self.endpoint, self._timeout)
            except BaseException:
                session.close()
                raise
            self._local.route = route
        return route

    def send(self, body: str | bytes) -> SendResult:
        try:
            data = body.encode("utf-8") if isinstance(body, str) else body
        except UnicodeEncodeError as exc:  # a lone surrogate: no send can ever succeed
            return SendResult("reject", None, f"the payload is not valid text: {exc.reason}")
        try:
            route = self._route()
            if route.session.cookies:
                result = self._send_with_cookies(route, data)
            else:
                result = self._send_to_pool(route, data)
        except Exception as exc:  # noqa: BLE001 - never raises: see _failure
            return SendResult("retry", None, self._hide(_failure(exc)))
        if result.message:
            result = replace(result, message=self._hide(result.message))
        return result

    @staticmethod
    def _send_to_pool(route: _Route, data: bytes) -> SendResult:
        """POST straight to the connection pool the session's adapter chose."""
        headers = dict(route.headers)
        headers["Content-Length"] = str(len(data))
        response = route.pool.urlopen(
            "POST",
            route.url,
            body=data,
            headers=headers,
            redirect=False,
            assert_same_host=False,
            retries=False,
            preload_content=True,
            decode_content=True,
            timeout=route.timeout,
        )
        if "Set-Cookie" in response.headers:
            extract_cookies_to_jar(route.session.cookies, route.template, response)  # type: ignore[no-untyped-call]
        status = response.status
        text = "" if 200 <= status < 300 else response.data[:4000].decode("utf-8", "replace")
        return classify(status, text, response.headers.get("Retry-After"))

    def _send_with_cookies(self, route: _Route, data: bytes) -> SendResult:
        """requests' full path: it sends back the cookies the API has set."""
        response = route.session.post(
            self.endpoint, data=data, timeout=self._timeout, allow_redirects=False
        )
        try:
            status = response.status_code
            text = "" if 200 <= status < 300 else response.text[:4000]
            return classify(status, text, response.headers.get("Retry-After"))
        finally:
            response.close()

    def _hide(self, text: str) -> str:
        """Never let the key out, even when an error or the API's answer quotes it, whole
        or in part."""
        key = self._api_key.reveal()
        return scrub_secret(text, key) if key else text

    def close(self) -> None:
        route: _Route | None = getattr(self._local, "route", None)
        if route is not None:
            route.session.close()
            self._local.route = None


def _settle_environment(session: requests.Session, url: str) -> None:
    """Resolve once what ``trust_env`` makes requests resolve on every call to ``url``.

    Exactly what ``Session.merge_environment_settings`` and ``prepare_request`` would
    find: the environment's proxies unless ``NO_PROXY`` bypasses the endpoint's host,
    the CA bundle of ``REQUESTS_CA_BUNDLE`` (else ``CURL_CA_BUNDLE``), and ``.netrc``
    credentials for the host. They are set on the session and ``trust_env`` is turned
    off, so later calls read the session's settings instead of the environment.
    """
    proxies = requests.utils.get_environ_proxies(url)
    verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    auth = requests.utils.get_netrc_auth(url)
    session.trust_env = False
    session.proxies.update(proxies)
    if verify:
        session.verify = verify
    if auth is not None:
        session.auth = auth


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def _scrub(exc: BaseException) -> str:
    """The root cause of a network error, one line, short (never a header)."""
    text = " ".join(str(exc).split())
    found = _ERRNO.search(text)
    if found:
        return found.group(0).strip()
    return text[:300] or type(exc).__name__


__all__ = ["USER_AGENT", "NeuroonClient", "SendResult", "classify", "parse_retry_after"]
