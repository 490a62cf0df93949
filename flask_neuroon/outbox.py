"""The durable queue of conversions: enqueue, claim with a lease, backoff, dead letters.

The outbox sits on a :class:`~flask_neuroon.storage.Storage` and owns the *policy*:
how long a claim lasts, when a failed row is tried again, when it becomes a dead
letter. It knows nothing of HTTP (it reads a :class:`~flask_neuroon.client.SendResult`)
and nothing of threads (the dispatcher decides who sends).

The delay before attempt ``n + 1`` is ``retry_schedule[n - 1]`` (the last entry repeats),
or the API's ``Retry-After`` when it gave a longer one. After ``max_attempts`` failed attempts
the row is ``dead``: it stays, with its last error, until a person retries or drops it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from .client import SendResult
from .storage.base import DEAD, OutboxRow, OutboxStats, Storage

Clock = Callable[[], float]

#: What recording a result did to the row.
#: sent / duplicate: delivered; retrying: due again later; dead: gave up; lost: another
#: claimer holds the row now (our lease had run out), nothing was written.
RecordStatus = str


class Outbox:
    def __init__(
        self,
        storage: Storage,
        *,
        retry_schedule: tuple[float, ...],
        max_attempts: int,
        lease_seconds: float,
        clock: Clock = time.time,
    ) -> None:
        self.storage = storage
        self.retry_schedule = retry_schedule
        self.max_attempts = max_attempts
        self.lease_seconds = lease_seconds
        self.clock = clock

    def add(self, order_id: str, payload: str) -> bool:
        """Store a new pending row; False if this order id is already in the outbox."""
        return self.storage.add(order_id, payload, self.clock())

    def claim(self, limit: int = 1, order_id: str | None = None) -> list[OutboxRow]:
        now = self.clock()
        return self.storage.claim(
            now, now + self.lease_seconds, uuid.uuid4().hex, limit, order_id=order_id
        )

    def due_ids(self, limit: int) -> list[str]:
        return self.storage.due_ids(self.clock(), limit)

    def stats(self) -> OutboxStats:
        return self.storage.stats(self.clock())

    def delay_before_next(self, attempts: int, retry_after: float | None) -> float:
        """Seconds to wait after ``attempts`` failed attempts: the schedule's, or the API's
        ``Retry-After`` when that is longer. Never shorter than the schedule: a
        ``Retry-After: 0`` would otherwise spend every attempt within a second."""
        index = min(max(attempts, 1), len(self.retry_schedule)) - 1
        scheduled = self.retry_schedule[index]
        return scheduled if retry_after is None else max(retry_after, scheduled)

    def exhausted(self, row: OutboxRow) -> bool:
        """A claimed row that has had all its attempts (e.g. its sender kept crashing)."""
        return row.attempts > self.max_attempts

    def record(self, row: OutboxRow, result: SendResult) -> RecordStatus:
        """Write the outcome of sending a claimed ``row``."""
        token = row.claim_token or ""
        if result.delivered:
            done = self.storage.mark_sent(row.order_id, token, self.clock())
            return result.outcome if done else "lost"
        if result.outcome == "reject" or row.attempts >= self.max_attempts:
            done = self.storage.mark_dead(row.order_id, token, result.message)
            return DEAD if done else "lost"
        delay = self.delay_before_next(row.attempts, result.retry_after)
        done = self.storage.mark_retry(row.order_id, token, self.clock() + delay, result.message)
        return "retrying" if done else "lost"

    def abandon(self, row: OutboxRow) -> RecordStatus:
        """Dead-letter a claimed row that exceeded its attempts without a recorded answer."""
        message = f"gave up after {row.attempts - 1} attempts with no recorded answer"
        done = self.storage.mark_dead(row.order_id, row.claim_token or "", message)
        return DEAD if done else "lost"


__all__ = ["Outbox"]
