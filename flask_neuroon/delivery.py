"""The handle ``track_conversion`` returns: what happened to one conversion.

=============  ====================================================================
status         meaning
=============  ====================================================================
``pending``    queued, no attempt finished yet
``sent``       the API recorded it
``duplicate``  not sent again: this order was tracked before (or the API had it)
``retrying``   an attempt failed; the outbox will try again on the schedule
``dead``       gave up: a dead letter, see ``flask neuroon outbox``
``failed``     the outbox is off (or unreachable) and the one attempt failed
``disabled``   tracking is off (NEUROON_ENABLED, or a key is missing)
``invalid``    the order cannot be sent (the error says which field)
``skipped``    no line was clicked and NEUROON_SEND_UNATTRIBUTED is false
``dropped``    the outbox is off and the in-memory queue was full
``discarded``  tracked inside the shop's transaction, which rolled back: nothing sent
=============  ====================================================================
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

#: ``(status, error)`` of a conversion as its outbox row tells it, or None while the row
#: says nothing final (how a Delivery learns what another process did with its order).
#: It is given the seconds it may take.
Look = Callable[[float], "tuple[str, str | None] | None"]
#: How soon wait() first asks the outbox, while nothing in this process has reported;
#: the pause doubles after each look, up to _LOOK_AT_MOST.
_LOOK_EVERY = 0.25
_LOOK_AT_MOST = 2.0

PENDING = "pending"
#: Statuses after which nothing more will happen to this conversion in this process.
FINAL = frozenset(
    {
        "sent",
        "duplicate",
        "dead",
        "failed",
        "disabled",
        "invalid",
        "skipped",
        "dropped",
        "discarded",
    }
)


class Delivery:
    __slots__ = ("__weakref__", "_done", "_error", "_look", "_status", "order_id")

    def __init__(self, order_id: str | None, status: str = PENDING, error: str | None = None):
        self.order_id = order_id
        self._status = status
        self._error = error
        self._done = threading.Event()
        #: Set for a conversion in the outbox: another process (a second worker, cron's
        #: flush, a Celery worker) may be the one that sends it.
        self._look: Look | None = None
        if status != PENDING:
            self._done.set()

    @property
    def status(self) -> str:
        return self._status

    @property
    def error(self) -> str | None:
        """Why it was not sent (the API's message, the invalid field), if it was not."""
        return self._error

    def wait(self, timeout: float | None = None) -> str:
        """Block until an attempt has finished (or ``timeout``); return the status.

        Also ends when the outbox row shows the order sent or dead by another process
        (looked at after a quarter of a second, then ever less often, up to every 2 s,
        while this process has nothing to say).
        """
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        pause = _LOOK_EVERY
        while True:
            step = pause
            if deadline is not None:
                step = max(min(step, deadline - time.monotonic()), 0.0)
            if self._done.wait(step):
                return self._status
            pause = min(pause * 2, _LOOK_AT_MOST)
            look = self._look
            left = _LOOK_AT_MOST if deadline is None else deadline - time.monotonic()
            found = look(left) if look is not None else None
            if found is not None and not self._done.is_set():
                self._update(*found)
                return self._status
            if deadline is not None and time.monotonic() >= deadline:
                return self._status

    def _update(self, status: str, error: str | None = None) -> None:
        self._status = status
        self._error = error
        if status != PENDING:
            self._done.set()

    def __repr__(self) -> str:
        return f"<Delivery {self.order_id!r} {self._status}>"


__all__ = ["FINAL", "PENDING", "Delivery"]
