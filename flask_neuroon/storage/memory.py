"""``memory://`` — a dict in this process. For tests and single-process demos only:
nothing survives a restart and nothing is shared between workers."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import replace

from .base import DEAD, PENDING, SENT, OutboxRow, OutboxStats, Storage


class MemoryStorage(Storage):
    display_uri = "memory://"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshots: dict[str, tuple[dict[str, str], float]] = {}
        self._rows: dict[str, OutboxRow] = {}

    def _after_fork(self) -> None:
        self._lock = threading.Lock()

    def put_snapshot(self, order_id: str, clicks: Mapping[str, str], expires_at: float) -> None:
        with self._lock:
            self._snapshots[order_id] = (dict(clicks), expires_at)

    def take_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        with self._lock:
            found = self._snapshots.pop(order_id, None)
        if found is None or found[1] <= now:
            return None
        return found[0]

    def peek_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        with self._lock:
            found = self._snapshots.get(order_id)
        if found is None or found[1] <= now:
            return None
        return dict(found[0])

    def delete_snapshot(self, order_id: str) -> None:
        with self._lock:
            self._snapshots.pop(order_id, None)

    def purge_snapshots(self, now: float) -> int:
        with self._lock:
            expired = [key for key, (_, expires) in self._snapshots.items() if expires <= now]
            for key in expired:
                del self._snapshots[key]
        return len(expired)

    def add(self, order_id: str, payload: str, now: float) -> bool:
        with self._lock:
            if order_id in self._rows:
                return False
            self._rows[order_id] = OutboxRow(
                order_id=order_id, payload=payload, created_at=now, next_attempt_at=now
            )
            return True

    @staticmethod
    def _claimable(row: OutboxRow, now: float) -> bool:
        return (
            row.state == PENDING
            and row.next_attempt_at <= now
            and (row.lease_until is None or row.lease_until <= now)
        )

    def claim(
        self, now: float, lease_until: float, token: str, limit: int, order_id: str | None = None
    ) -> list[OutboxRow]:
        with self._lock:
            if order_id is not None:
                candidates = [self._rows[order_id]] if order_id in self._rows else []
            else:
                candidates = list(self._rows.values())
            due = sorted(
                (row for row in candidates if self._claimable(row, now)),
                key=lambda row: (row.next_attempt_at, row.created_at),
            )[:limit]
            claimed = []
            for row in due:
                new = replace(
                    row, attempts=row.attempts + 1, lease_until=lease_until, claim_token=token
                )
                self._rows[row.order_id] = new
                claimed.append(new)
            return claimed

    def _update_claimed(self, order_id: str, token: str, **changes: object) -> bool:
        with self._lock:
            row = self._rows.get(order_id)
            if row is None or row.claim_token != token or row.state != PENDING:
                return False
            self._rows[order_id] = replace(row, lease_until=None, claim_token=None, **changes)  # type: ignore[arg-type]
            return True

    def mark_sent(self, order_id: str, token: str, now: float) -> bool:
        return self._update_claimed(order_id, token, state=SENT, synced_at=now, last_error=None)

    def mark_retry(self, order_id: str, token: str, next_attempt_at: float, error: str) -> bool:
        return self._update_claimed(
            order_id, token, next_attempt_at=next_attempt_at, last_error=error
        )

    def mark_dead(self, order_id: str, token: str, error: str) -> bool:
        return self._update_claimed(order_id, token, state=DEAD, last_error=error)

    def get(self, order_id: str) -> OutboxRow | None:
        with self._lock:
            return self._rows.get(order_id)

    def rows(self, state: str, limit: int) -> list[OutboxRow]:
        with self._lock:
            rows = [row for row in self._rows.values() if row.state == state]
        return sorted(rows, key=lambda row: row.created_at)[:limit]

    def due_ids(self, now: float, limit: int) -> list[str]:
        with self._lock:
            due = [row for row in self._rows.values() if self._claimable(row, now)]
        due.sort(key=lambda row: (row.next_attempt_at, row.created_at))
        return [row.order_id for row in due[:limit]]

    def make_due(self, now: float) -> int:
        with self._lock:
            waiting = [
                row
                for row in self._rows.values()
                if row.state == PENDING and row.next_attempt_at > now
            ]
            for row in waiting:
                self._rows[row.order_id] = replace(row, next_attempt_at=now)
        return len(waiting)

    def stats(self, now: float) -> OutboxStats:
        with self._lock:
            rows = list(self._rows.values())
        pending = [row for row in rows if row.state == PENDING]
        return OutboxStats(
            pending=len(pending),
            due=sum(1 for row in pending if self._claimable(row, now)),
            sent=sum(1 for row in rows if row.state == SENT),
            dead=sum(1 for row in rows if row.state == DEAD),
            oldest_pending_age=(now - min(row.created_at for row in pending)) if pending else None,
        )

    def requeue(self, order_id: str, now: float) -> bool:
        with self._lock:
            row = self._rows.get(order_id)
            if row is None or row.state != DEAD:
                return False
            self._rows[order_id] = replace(
                row,
                state=PENDING,
                attempts=0,
                next_attempt_at=now,
                lease_until=None,
                claim_token=None,
            )
            return True

    def delete(self, order_id: str, state: str) -> bool:
        with self._lock:
            row = self._rows.get(order_id)
            if row is None or row.state != state:
                return False
            del self._rows[order_id]
            return True

    def purge_sent(self, before: float) -> int:
        with self._lock:
            old = [
                key
                for key, row in self._rows.items()
                if row.state == SENT and row.synced_at is not None and row.synced_at < before
            ]
            for key in old:
                del self._rows[key]
        return len(old)
