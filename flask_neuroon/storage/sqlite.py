"""``sqlite:///path`` — the default: a file in the app's instance folder, standard library only.

Several processes on one host may share the file (gunicorn workers, cron running
``flask neuroon flush``): claims run in ``BEGIN IMMEDIATE`` transactions, so a row is
claimed by one of them only. Each thread of each process opens its own connection,
lazily; a connection is never used across ``fork``. The journal is WAL with
``synchronous=NORMAL``: a committed row survives the app crashing or being killed; only
a power cut may lose the last transactions (``?synchronous=full`` in the URI closes that
at some cost per write).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import StorageError
from .base import DEAD, PENDING, SENT, OutboxRow, OutboxStats, Storage
from .serialization import dumps_clicks, loads_clicks

SCHEMA = """
CREATE TABLE IF NOT EXISTS neuroon_snapshots (
    order_id    TEXT PRIMARY KEY,
    clicks      TEXT NOT NULL,
    expires_at  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS neuroon_snapshots_expires ON neuroon_snapshots (expires_at);
CREATE TABLE IF NOT EXISTS neuroon_outbox (
    order_id         TEXT PRIMARY KEY,
    payload          TEXT NOT NULL,
    state            TEXT NOT NULL DEFAULT 'pending',
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       REAL NOT NULL,
    synced_at        REAL,
    next_attempt_at  REAL NOT NULL,
    lease_until      REAL,
    claim_token      TEXT
);
CREATE INDEX IF NOT EXISTS neuroon_outbox_due ON neuroon_outbox (state, next_attempt_at);
"""

_COLUMNS = (
    "order_id, payload, state, attempts, created_at, next_attempt_at, last_error, synced_at, "
    "lease_until, claim_token"
)
_CLAIMABLE = (
    "state = 'pending' AND next_attempt_at <= ? AND (lease_until IS NULL OR lease_until <= ?)"
)


def _row(values: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(*values)


class SQLiteStorage(Storage):
    def __init__(self, path: str, *, synchronous: str = "NORMAL", timeout: float = 30.0) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be off, normal, full or extra, not {synchronous!r}")
        self.path = path
        self.display_uri = f"sqlite:///{path}"
        self._synchronous = synchronous.upper()
        self._timeout = timeout
        self._local = threading.local()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        # Connections inherited through fork: kept referenced, never used or closed.
        self._inherited: list[sqlite3.Connection] = []

    def _after_fork(self) -> None:
        self._inherited.extend(self._connections)
        self._connections = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        connection = sqlite3.connect(
            self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
        )
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        # Per connection, not per process: the file may have been replaced meanwhile.
        connection.executescript(SCHEMA)
        with self._lock:
            self._connections.append(connection)
        return connection

    @property
    def _connection(self) -> sqlite3.Connection:
        if self._pid != os.getpid():  # forked without our hook (should not happen)
            self._after_fork()
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"SQLite ({self.path}): {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """An immediate (write-locked) transaction, committed on success."""
        with self._errors():
            connection = self._connection
            connection.execute("BEGIN IMMEDIATE")
            try:
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        with self._errors():
            return self._connection.execute(sql, params)

    # --- snapshots -------------------------------------------------------------------

    def put_snapshot(self, order_id: str, clicks: Mapping[str, str], expires_at: float) -> None:
        self._execute(
            "INSERT OR REPLACE INTO neuroon_snapshots (order_id, clicks, expires_at)"
            " VALUES (?, ?, ?)",
            (order_id, dumps_clicks(clicks), expires_at),
        )

    def take_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        with self._write() as connection:
            found = connection.execute(
                "SELECT clicks, expires_at FROM neuroon_snapshots WHERE order_id = ?", (order_id,)
            ).fetchone()
            if found is not None:
                connection.execute("DELETE FROM neuroon_snapshots WHERE order_id = ?", (order_id,))
        if found is None or found[1] <= now:
            return None
        return loads_clicks(found[0])

    def peek_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        found = self._execute(
            "SELECT clicks FROM neuroon_snapshots WHERE order_id = ? AND expires_at > ?",
            (order_id, now),
        ).fetchone()
        return None if found is None else loads_clicks(found[0])

    def delete_snapshot(self, order_id: str) -> None:
        self._execute("DELETE FROM neuroon_snapshots WHERE order_id = ?", (order_id,))

    def purge_snapshots(self, now: float) -> int:
        return self._execute("DELETE FROM neuroon_snapshots WHERE expires_at <= ?", (now,)).rowcount

    # --- outbox ----------------------------------------------------------------------

    def add(self, order_id: str, payload: str, now: float) -> bool:
        cursor = self._execute(
            "INSERT OR IGNORE INTO neuroon_outbox (order_id, payload, state, attempts, created_at,"
            " next_attempt_at) VALUES (?, ?, 'pending', 0, ?, ?)",
            (order_id, payload, now, now),
        )
        return cursor.rowcount == 1

    def claim(
        self, now: float, lease_until: float, token: str, limit: int, order_id: str | None = None
    ) -> list[OutboxRow]:
        only = " AND order_id = ?" if order_id is not None else ""
        params: tuple[Any, ...] = (now, now) + ((order_id,) if order_id is not None else ())
        with self._write() as connection:
            connection.execute(
                "UPDATE neuroon_outbox"
                " SET attempts = attempts + 1, lease_until = ?, claim_token = ?"
                " WHERE order_id IN (SELECT order_id FROM neuroon_outbox WHERE "
                f"{_CLAIMABLE}{only} ORDER BY next_attempt_at LIMIT ?)",
                (lease_until, token, *params, limit),
            )
            found = connection.execute(
                f"SELECT {_COLUMNS} FROM neuroon_outbox WHERE claim_token = ? AND state = 'pending'"
                " ORDER BY next_attempt_at",
                (token,),
            ).fetchall()
        return [_row(values) for values in found]

    def _finish(self, order_id: str, token: str, assignments: str, params: tuple[Any, ...]) -> bool:
        cursor = self._execute(
            f"UPDATE neuroon_outbox SET {assignments}, lease_until = NULL, claim_token = NULL"
            " WHERE order_id = ? AND claim_token = ? AND state = 'pending'",
            (*params, order_id, token),
        )
        return cursor.rowcount == 1

    def mark_sent(self, order_id: str, token: str, now: float) -> bool:
        return self._finish(
            order_id, token, "state = ?, synced_at = ?, last_error = NULL", (SENT, now)
        )

    def mark_retry(self, order_id: str, token: str, next_attempt_at: float, error: str) -> bool:
        return self._finish(
            order_id, token, "next_attempt_at = ?, last_error = ?", (next_attempt_at, error)
        )

    def mark_dead(self, order_id: str, token: str, error: str) -> bool:
        return self._finish(order_id, token, "state = ?, last_error = ?", (DEAD, error))

    def get(self, order_id: str) -> OutboxRow | None:
        found = self._execute(
            f"SELECT {_COLUMNS} FROM neuroon_outbox WHERE order_id = ?", (order_id,)
        ).fetchone()
        return None if found is None else _row(found)

    def rows(self, state: str, limit: int) -> list[OutboxRow]:
        found = self._execute(
            f"SELECT {_COLUMNS} FROM neuroon_outbox WHERE state = ? ORDER BY created_at LIMIT ?",
            (state, limit),
        ).fetchall()
        return [_row(values) for values in found]

    def due_ids(self, now: float, limit: int) -> list[str]:
        found = self._execute(
            f"SELECT order_id FROM neuroon_outbox WHERE {_CLAIMABLE}"
            " ORDER BY next_attempt_at LIMIT ?",
            (now, now, limit),
        ).fetchall()
        return [values[0] for values in found]

    def make_due(self, now: float) -> int:
        return self._execute(
            "UPDATE neuroon_outbox SET next_attempt_at = ? WHERE state = 'pending'"
            " AND next_attempt_at > ?",
            (now, now),
        ).rowcount

    def stats(self, now: float) -> OutboxStats:
        counts = dict(
            self._execute("SELECT state, COUNT(*) FROM neuroon_outbox GROUP BY state").fetchall()
        )
        due, oldest = self._execute(
            f"SELECT SUM(CASE WHEN {_CLAIMABLE} THEN 1 ELSE 0 END), MIN(created_at)"
            " FROM neuroon_outbox WHERE state = 'pending'",
            (now, now),
        ).fetchone()
        return OutboxStats(
            pending=counts.get(PENDING, 0),
            due=due or 0,
            sent=counts.get(SENT, 0),
            dead=counts.get(DEAD, 0),
            oldest_pending_age=None if oldest is None else now - oldest,
        )

    def requeue(self, order_id: str, now: float) -> bool:
        cursor = self._execute(
            "UPDATE neuroon_outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " lease_until = NULL, claim_token = NULL WHERE order_id = ? AND state = 'dead'",
            (now, order_id),
        )
        return cursor.rowcount == 1

    def delete(self, order_id: str, state: str) -> bool:
        cursor = self._execute(
            "DELETE FROM neuroon_outbox WHERE order_id = ? AND state = ?", (order_id, state)
        )
        return cursor.rowcount == 1

    def purge_sent(self, before: float) -> int:
        return self._execute(
            "DELETE FROM neuroon_outbox WHERE state = 'sent' AND synced_at < ?", (before,)
        ).rowcount

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        self._local = threading.local()
