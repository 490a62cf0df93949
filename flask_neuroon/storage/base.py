"""The storage protocol: click snapshots and the outbox, one contract for every backend.

A backend stores two things:

* **snapshots** — the click map of an order, kept from the redirect to the payment
  gateway until the order is confirmed (read once, then gone; ignored after expiry);
* **the outbox** — one row per order id (the primary key: a second ``add`` of the same
  id is refused, which is what makes delivery once-only across processes). A row is
  ``pending`` until the API accepted it (``sent``) or it gave up (``dead``).

Claims: a sender *claims* due rows before sending them. A claim is atomic across
threads, processes and hosts sharing the backend: it bumps ``attempts``, sets a lease
(``lease_until``) and a ``claim_token``, and only rows with no live lease are claimable.
Results are recorded with the token, so a sender whose lease ran out (and whose row
was claimed again by someone else) cannot overwrite the newer claimer's result.

All times are POSIX seconds (float). Every method may raise
:class:`~flask_neuroon.errors.StorageError`, never a driver's own exception.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Mapping
from dataclasses import dataclass

#: Threads flask-neuroon starts (senders, sweeper) are named so; storage may let them wait
#: longer for a lock than a shop's request thread, which must not stall a checkout.
BACKGROUND_THREAD_PREFIX = "neuroon-"


def in_background_thread() -> bool:
    return threading.current_thread().name.startswith(BACKGROUND_THREAD_PREFIX)


PENDING = "pending"
SENT = "sent"
DEAD = "dead"
STATES = (PENDING, SENT, DEAD)


@dataclass(frozen=True)
class OutboxRow:
    """One conversion in the outbox, as stored."""

    order_id: str
    payload: str
    state: str = PENDING
    attempts: int = 0
    created_at: float = 0.0
    next_attempt_at: float = 0.0
    last_error: str | None = None
    synced_at: float | None = None
    lease_until: float | None = None
    claim_token: str | None = None


@dataclass(frozen=True)
class OutboxStats:
    """Counts by state, and the age of the oldest pending row (seconds, None if none)."""

    pending: int = 0
    due: int = 0
    sent: int = 0
    dead: int = 0
    oldest_pending_age: float | None = None


class Storage(abc.ABC):
    """Base class of the backends. Subclasses implement every abstract method atomically."""

    #: The URI with any password hidden, for logs and the CLI.
    display_uri: str = ""
    #: True for a server over the network, which can hang in ways no driver timeout
    #: covers: a request thread then waits for it through a RequestGuard (storage/guard.py).
    remote: bool = False

    # --- snapshots -------------------------------------------------------------------

    @abc.abstractmethod
    def put_snapshot(self, order_id: str, clicks: Mapping[str, str], expires_at: float) -> None:
        """Store (or replace) the click map of ``order_id`` until ``expires_at``."""

    @abc.abstractmethod
    def take_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        """Return and delete the snapshot of ``order_id``; None if absent or expired."""

    @abc.abstractmethod
    def peek_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        """The snapshot of ``order_id`` without deleting it; None if absent or expired."""

    @abc.abstractmethod
    def delete_snapshot(self, order_id: str) -> None:
        """Delete the snapshot of ``order_id`` (its order is queued); no error if absent."""

    @abc.abstractmethod
    def purge_snapshots(self, now: float) -> int:
        """Delete expired snapshots; return how many."""

    # --- outbox ----------------------------------------------------------------------

    @abc.abstractmethod
    def add(self, order_id: str, payload: str, now: float) -> bool:
        """Insert a pending row due now. False (and nothing changed) if the id exists."""

    @abc.abstractmethod
    def claim(
        self, now: float, lease_until: float, token: str, limit: int, order_id: str | None = None
    ) -> list[OutboxRow]:
        """Atomically claim up to ``limit`` due, unleased pending rows (or just ``order_id``).

        Claimed rows get ``attempts + 1``, ``lease_until`` and ``claim_token = token``;
        they are returned as stored after the claim, oldest due first.
        """

    @abc.abstractmethod
    def mark_sent(self, order_id: str, token: str, now: float) -> bool:
        """The API accepted the row: ``sent`` at ``now``. False if the claim was lost."""

    @abc.abstractmethod
    def mark_retry(self, order_id: str, token: str, next_attempt_at: float, error: str) -> bool:
        """Release the claim; the row is due again at ``next_attempt_at``."""

    @abc.abstractmethod
    def mark_dead(self, order_id: str, token: str, error: str) -> bool:
        """The row gave up: ``dead`` with ``error``. False if the claim was lost."""

    @abc.abstractmethod
    def get(self, order_id: str) -> OutboxRow | None:
        """The row of ``order_id``, or None."""

    @abc.abstractmethod
    def rows(self, state: str, limit: int) -> list[OutboxRow]:
        """Up to ``limit`` rows in ``state``, oldest first."""

    @abc.abstractmethod
    def due_ids(self, now: float, limit: int) -> list[str]:
        """Ids of up to ``limit`` pending rows that are due and unleased (not claimed)."""

    @abc.abstractmethod
    def make_due(self, now: float) -> int:
        """Every pending row waiting for a later retry becomes due ``now``; return how many."""

    @abc.abstractmethod
    def stats(self, now: float) -> OutboxStats:
        """Counts by state."""

    @abc.abstractmethod
    def requeue(self, order_id: str, now: float) -> bool:
        """A dead row becomes pending and due now, its attempts reset. False if not dead."""

    @abc.abstractmethod
    def delete(self, order_id: str, state: str) -> bool:
        """Delete the row of ``order_id`` if it is in ``state``."""

    @abc.abstractmethod
    def purge_sent(self, before: float) -> int:
        """Delete sent rows synced before ``before``; return how many."""

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release connections held by this process."""

    def _after_fork(self) -> None:  # noqa: B027 - optional hook
        """In a forked child: drop what belongs to the parent (locks, pooled connections)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.display_uri}>"


__all__ = [
    "BACKGROUND_THREAD_PREFIX",
    "DEAD",
    "PENDING",
    "SENT",
    "STATES",
    "OutboxRow",
    "OutboxStats",
    "Storage",
    "in_background_thread",
]
