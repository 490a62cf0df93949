"""``sqlite:///path`` — the default: a file in the app's instance folder, standard library only.

Several processes on one host may share the file (gunicorn workers, cron running
``flask neuroon flush``): claims run in ``BEGIN IMMEDIATE`` transactions, so a row is
claimed by one of them only. Each thread of each process opens its own connection,
lazily; a connection is never used across ``fork``. Threads of one process take
turns at writing through a lock of their own before SQLite's: SQLite's busy handler
waits by sleeping (1, 2, 5, 10 ms…), which would add milliseconds to a checkout whenever
a sender thread happens to be writing; the lock hands over at once. The journal is WAL with
``synchronous=NORMAL``: a committed row survives the app crashing or being killed; only
a power cut may lose the last transactions (``?synchronous=full`` in the URI closes that
at some cost per write).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from ..errors import StorageError
from .base import DEAD, PENDING, SENT, OutboxRow, OutboxStats, Storage, in_background_thread
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


#: Ids per ``IN (...)``: under SQLite's oldest limit of 999 bound parameters.
_CHUNK = 500
#: UPDATE … RETURNING (SQLite 3.35, 2021): a claim in one statement.
_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


def _next_attempt_at(values: tuple[Any, ...]) -> float:
    """The next_attempt_at of a row as selected with ``_COLUMNS``."""
    return float(values[5])


def _row(values: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(*values)


def _enable_wal(connection: sqlite3.Connection, wait: float) -> None:
    """``PRAGMA journal_mode=WAL``, waiting up to ``wait`` seconds for other writers.

    Switching a new file to WAL needs its write lock, and SQLite answers "database is
    locked" at once, without calling the busy handler, while another connection holds
    it (two workers opening a new file together): so this waits here instead.
    """
    deadline = time.monotonic() + wait
    pause = 0.001
    while True:
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class SQLiteStorage(Storage):
    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "NORMAL",
        timeout: float = 30.0,
        request_timeout: float = 2.0,
    ) -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be off, normal, full or extra, not {synchronous!r}")
        self.path = path
        self.display_uri = f"sqlite:///{path}"
        self._synchronous = synchronous.upper()
        # How long to wait for another writer: a checkout waits briefly, then the caller
        # falls back (sends directly); our own background threads may wait longer.
        self._timeout = timeout
        self._request_timeout = request_timeout
        self._local = threading.local()
        self._pid = os.getpid()
        self._lock = threading.Lock()
        #: Held by the thread writing through this object (one writer at a time anyway).
        self._write_lock = threading.Lock()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        # Connections inherited through fork: kept referenced, never used or closed.
        self._inherited: list[tuple[threading.Thread, sqlite3.Connection]] = []

    def _after_fork(self) -> None:
        self._inherited.extend(self._connections)
        self._connections = []
        self._local = threading.local()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pid = os.getpid()

    def _wait_limit(self) -> float:
        return self._timeout if in_background_thread() else self._request_timeout

    def _connect(self) -> sqlite3.Connection:
        directory = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(directory, exist_ok=True)
        wait = self._wait_limit()
        connection = sqlite3.connect(
            self.path, timeout=wait, isolation_level=None, check_same_thread=False
        )
        _enable_wal(connection, wait)
        connection.execute(f"PRAGMA synchronous={self._synchronous}")
        connection.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
        # Per connection, not per process: the file may have been replaced meanwhile.
        connection.executescript(SCHEMA)
        with self._lock:
            self._connections.append((threading.current_thread(), connection))
        return connection

    @contextlib.contextmanager
    def _writer(self) -> Iterator[None]:
        """This process's writers in turn, waiting no longer than this thread may."""
        if not self._write_lock.acquire(timeout=self._wait_limit()):
            raise StorageError(
                f"SQLite ({self.path}): another writer of this process held the file for"
                f" over {self._wait_limit():g} s"
            )
        try:
            yield
        finally:
            self._write_lock.release()

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
            with self._writer():
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

    def _execute_write(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Cursor:
        """One writing statement (its own transaction), this process's writers in turn."""
        with self._errors():
            connection = self._connection
            with self._writer():
                return connection.execute(sql, params)

    # --- snapshots -------------------------------------------------------------------

    def put_snapshot(self, order_id: str, clicks: Mapping[str, str], expires_at: float) -> None:
        self._execute_write(
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
        # Most orders have no snapshot (no gateway, or it was taken): look before writing, so
        # that they cost a read, not a write transaction queued behind the senders'.
        found = self._execute(
            "SELECT 1 FROM neuroon_snapshots WHERE order_id = ?", (order_id,)
        ).fetchone()
        if found is not None:
            self._execute_write("DELETE FROM neuroon_snapshots WHERE order_id = ?", (order_id,))

    def purge_snapshots(self, now: float) -> int:
        return self._execute_write(
            "DELETE FROM neuroon_snapshots WHERE expires_at <= ?", (now,)
        ).rowcount

    # --- outbox ----------------------------------------------------------------------

    def add(self, order_id: str, payload: str, now: float) -> bool:
        cursor = self._execute_write(
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
        if _RETURNING:
            # One statement: it takes the write lock before it reads, so nothing can come
            # between picking the rows and leasing them; RETURNING hands them back as
            # stored, without a second look-up.
            with self._errors(), self._writer():
                claimed = self._connection.execute(
                    "UPDATE neuroon_outbox"
                    " SET attempts = attempts + 1, lease_until = ?, claim_token = ?"
                    " WHERE order_id IN (SELECT order_id FROM neuroon_outbox WHERE "
                    f"{_CLAIMABLE}{only} ORDER BY next_attempt_at LIMIT ?) RETURNING {_COLUMNS}",
                    (lease_until, token, *params, limit),
                ).fetchall()
            claimed.sort(key=_next_attempt_at)  # oldest due first
            return [_row(values) for values in claimed]
        # Without RETURNING (SQLite < 3.35): pick, lease and read back the rows by primary
        # key, in one write transaction. (Reading them back by claim_token would walk every
        # pending row, claim_token having no index: milliseconds per claim once an outage
        # has queued a few ten thousand rows.)
        with self._write() as connection:
            ids = [
                values[0]
                for values in connection.execute(
                    f"SELECT order_id FROM neuroon_outbox WHERE {_CLAIMABLE}{only}"
                    " ORDER BY next_attempt_at LIMIT ?",
                    (*params, limit),
                )
            ]
            found: list[tuple[Any, ...]] = []
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                connection.execute(
                    "UPDATE neuroon_outbox"
                    " SET attempts = attempts + 1, lease_until = ?, claim_token = ?"
                    f" WHERE order_id IN ({marks})",
                    (lease_until, token, *chunk),
                )
                found += connection.execute(
                    f"SELECT {_COLUMNS} FROM neuroon_outbox WHERE order_id IN ({marks})", chunk
                ).fetchall()
        rank = {order_id: position for position, order_id in enumerate(ids)}
        found.sort(key=lambda values: rank[values[0]])  # oldest due first, as picked
        return [_row(values) for values in found]

    def _finish(self, order_id: str, token: str, assignments: str, params: tuple[Any, ...]) -> bool:
        cursor = self._execute_write(
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
        return self._execute_write(
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
        cursor = self._execute_write(
            "UPDATE neuroon_outbox SET state = 'pending', attempts = 0, next_attempt_at = ?,"
            " lease_until = NULL, claim_token = NULL WHERE order_id = ? AND state = 'dead'",
            (now, order_id),
        )
        return cursor.rowcount == 1

    def delete(self, order_id: str, state: str) -> bool:
        cursor = self._execute_write(
            "DELETE FROM neuroon_outbox WHERE order_id = ? AND state = ?", (order_id, state)
        )
        return cursor.rowcount == 1

    def purge_sent(self, before: float) -> int:
        return self._execute_write(
            "DELETE FROM neuroon_outbox WHERE state = 'sent' AND synced_at < ?", (before,)
        ).rowcount

    def close(self) -> None:
        """Close this thread's connection and those of threads that have ended. A thread
        still running may be inside a statement: closing its connection under it would
        crash the interpreter, so it keeps it until it ends."""
        me = threading.current_thread()
        with self._lock:
            closing = [(t, c) for t, c in self._connections if t is me or not t.is_alive()]
            self._connections = [(t, c) for t, c in self._connections if (t, c) not in closing]
        for _, connection in closing:
            with contextlib.suppress(sqlite3.Error):
                connection.close()
        self._local.connection = None
