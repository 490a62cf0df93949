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
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import threading
import time
from dataclasses import dataclass, replace
from typing import Literal

import requests

from ._version import __version__
from .config import Secret

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


def _message(response: requests.Response) -> str:
    """The API's own words for a failure, short."""
    text = response.text[:2000]
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
    return f"HTTP {response.status_code}: {text[:500]}" if text else f"HTTP {response.status_code}"


def classify(response: requests.Response) -> SendResult:
    status = response.status_code
    if 200 <= status < 300:
        return SendResult("sent", status)
    if status == 409:
        return SendResult("duplicate", status, _message(response))
    if status in RETRY_STATUSES or status >= 500:
        return SendResult(
            "retry",
            status,
            _message(response),
            parse_retry_after(response.headers.get("Retry-After")),
        )
    return SendResult("reject", status, _message(response))


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

    def _session(self) -> requests.Session:
        if self._pid != os.getpid():
            self._after_fork()
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
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
            self._local.session = session
        return session

    def _prepared(self, session: requests.Session, data: bytes) -> requests.PreparedRequest:
        """This POST as ``session.post`` would prepare it, from a per-thread template.

        Everything but the body is the same for every send: URL, merged headers, auth.
        The template is prepared once by the session itself; each send copies it and
        sets the body (and its Content-Length), skipping requests' per-call merging.
        """
        template: requests.PreparedRequest | None = getattr(self._local, "template", None)
        if template is None or getattr(self._local, "template_of", None) is not session:
            template = session.prepare_request(requests.Request("POST", self.endpoint))
            self._local.template = template
            self._local.template_of = session
        prepared = template.copy()
        prepared.prepare_body(data, None)
        return prepared

    def send(self, body: str | bytes) -> SendResult:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            session = self._session()
            if session.cookies:
                # The API has set a cookie: requests' full path sends it back.
                response = session.post(
                    self.endpoint, data=data, timeout=self._timeout, allow_redirects=False
                )
            else:
                response = session.send(
                    self._prepared(session, data), timeout=self._timeout, allow_redirects=False
                )
        except requests.Timeout as exc:
            return SendResult("retry", None, f"timeout: {type(exc).__name__}")
        except requests.ConnectionError as exc:
            return SendResult("retry", None, self._hide(f"connection error: {_scrub(exc)}"))
        except requests.RequestException as exc:
            return SendResult("retry", None, self._hide(f"request failed: {_scrub(exc)}"))
        except Exception as exc:  # noqa: BLE001 - a missing CA bundle, a header that cannot be encoded
            # Not the network's doing, but never the caller's problem: retried, then dead,
            # with the reason in last_error.
            return SendResult("retry", None, self._hide(f"{type(exc).__name__}: {_scrub(exc)}"))
        try:
            result = classify(response)
        finally:
            response.close()
        if result.message:
            result = replace(result, message=self._hide(result.message))
        return result

    def _hide(self, text: str) -> str:
        """Never let the key out, even when an error or the API's answer quotes it."""
        key = self._api_key.reveal()
        return text.replace(key, "***") if key else text

    def close(self) -> None:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None
            self._local.template = None


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
