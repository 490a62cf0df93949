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

Each thread of each process has its own keep-alive ``requests.Session``.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import threading
import time
from dataclasses import dataclass
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

    def _after_fork(self) -> None:
        self._local = threading.local()
        self._pid = os.getpid()

    def _session(self) -> requests.Session:
        if self._pid != os.getpid():
            self._after_fork()
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
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

    def send(self, body: str | bytes) -> SendResult:
        data = body.encode("utf-8") if isinstance(body, str) else body
        try:
            response = self._session().post(
                self.endpoint, data=data, timeout=self._timeout, allow_redirects=False
            )
        except requests.Timeout as exc:
            return SendResult("retry", None, f"timeout: {type(exc).__name__}")
        except requests.ConnectionError as exc:
            return SendResult("retry", None, f"connection error: {_scrub(exc)}")
        except requests.RequestException as exc:
            return SendResult("retry", None, f"request failed: {_scrub(exc)}")
        try:
            return classify(response)
        finally:
            response.close()

    def close(self) -> None:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is not None:
            session.close()
            self._local.session = None


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")


def _scrub(exc: BaseException) -> str:
    """The root cause of a network error, one line, short (never a header)."""
    text = " ".join(str(exc).split())
    found = _ERRNO.search(text)
    if found:
        return found.group(0).strip()
    return text[:300] or type(exc).__name__


__all__ = ["USER_AGENT", "NeuroonClient", "SendResult", "classify", "parse_retry_after"]
