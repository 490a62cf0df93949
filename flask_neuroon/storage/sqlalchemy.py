"""SQL servers through SQLAlchemy Core: PostgreSQL, MariaDB/MySQL, and any engine a shop has.

``NEUROON_STORAGE_URI = "postgresql+psycopg://user@db/shop"`` (extra ``[postgresql]``) or
``"mysql+pymysql://user@db/shop"`` (extra ``[mysql]``), or hand over an existing engine
(Flask-SQLAlchemy's ``db.engine``) with ``neuroon.init_app(app, engine=...)`` so that
snapshots and outbox live in the shop's own database.

Tables are created on first use unless ``NEUROON_CREATE_TABLES`` is false; their
definitions are :data:`metadata` (``neuroon_snapshots``, ``neuroon_outbox``), for a shop's
own migrations (Alembic: add ``flask_neuroon.storage.sqlalchemy.metadata`` to
``target_metadata``).

Claims: where the database has ``FOR UPDATE SKIP LOCKED`` (PostgreSQL, MariaDB >= 10.6,
MySQL >= 8.0.1) a claimer locks the due rows it reads, skipping those another claimer
holds, then leases them, in one transaction committed before anything is sent.
Elsewhere one conditional ``UPDATE … WHERE <still claimable>`` does it. Either way a row
is claimed by one claimer only, on any number of hosts.
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.sql.elements import ColumnElement

from ..errors import StorageError
from .base import DEAD, PENDING, SENT, OutboxRow, OutboxStats, Storage
from .serialization import dumps_clicks, loads_clicks
from .uri import display_uri

#: The tables, for a shop's own migrations.
metadata = MetaData()

# Order ids compare byte for byte: MySQL's default collations would make "a1" == "A1".
_ORDER_ID = String(255).with_variant(
    mysql.VARCHAR(255, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
)
_LONG_TEXT = Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb")
_MYSQL: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

snapshots_table = Table(
    "neuroon_snapshots",
    metadata,
    Column("order_id", _ORDER_ID, primary_key=True),
    Column("clicks", _LONG_TEXT, nullable=False),
    Column("expires_at", Double, nullable=False, index=True),
    **_MYSQL,
)

outbox_table = Table(
    "neuroon_outbox",
    metadata,
    Column("order_id", _ORDER_ID, primary_key=True),
    Column("payload", _LONG_TEXT, nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("created_at", Double, nullable=False),
    Column("synced_at", Double),
    Column("next_attempt_at", Double, nullable=False),
    Column("lease_until", Double),
    Column("claim_token", String(64)),
    Index("neuroon_outbox_due", "state", "next_attempt_at"),
    Index("neuroon_outbox_claim", "claim_token"),
    **_MYSQL,
)

_t = outbox_table
_s = snapshots_table
_ROW_COLUMNS = (
    _t.c.order_id,
    _t.c.payload,
    _t.c.state,
    _t.c.attempts,
    _t.c.created_at,
    _t.c.next_attempt_at,
    _t.c.last_error,
    _t.c.synced_at,
    _t.c.lease_until,
    _t.c.claim_token,
)

# Fail fast when the database is unreachable: a checkout must never wait on it for long.
_CONNECT_TIMEOUTS = {
    "psycopg": "connect_timeout",
    "psycopg2": "connect_timeout",
    "pymysql": "connect_timeout",
    "mysqldb": "connect_timeout",
}
CONNECT_TIMEOUT = 5
# Bounds for our own background threads (a request never waits on them: see
# storage/guard.py). PyMySQL waits forever for a server's greeting or answer without a
# read timeout; libpq notices a vanished host through TCP keepalives and
# tcp_user_timeout, and a statement stuck behind a lock through statement_timeout.
READ_TIMEOUT = 60
_DRIVER_BOUNDS: dict[str, dict[str, Any]] = {
    "pymysql": {"read_timeout": READ_TIMEOUT, "write_timeout": READ_TIMEOUT},
    "psycopg": {
        "keepalives": 1,
        "keepalives_idle": 30,
        "keepalives_interval": 10,
        "keepalives_count": 3,
        "tcp_user_timeout": READ_TIMEOUT * 1000,
        "options": f"-c statement_timeout={READ_TIMEOUT * 1000}",
    },
}


# INSERT … ON CONFLICT DO NOTHING RETURNING: one statement, no savepoint.
_INSERT_IF_ABSENT: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _claimable(now: float) -> ColumnElement[bool]:
    return and_(
        _t.c.state == PENDING,
        _t.c.next_attempt_at <= now,
        or_(_t.c.lease_until.is_(None), _t.c.lease_until <= now),
    )


def _row(values: Any) -> OutboxRow:
    return OutboxRow(*values)


class SQLAlchemyStorage(Storage):
    def __init__(self, engine: Engine, *, create_tables: bool = True, owns_engine: bool = False):
        self.engine = engine
        self.display_uri = display_uri(engine.url.render_as_string(hide_password=True))
        self.remote = engine.dialect.name != "sqlite"
        self._create_tables = create_tables
        self._owns_engine = owns_engine
        self._ready = False
        self._skip_locked: bool | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_uri(cls, uri: str, *, create_tables: bool = True) -> SQLAlchemyStorage:
        url = make_url(uri)
        connect_args: dict[str, Any] = {}
        timeout_arg = _CONNECT_TIMEOUTS.get(url.get_driver_name())
        if timeout_arg and timeout_arg not in url.query:
            connect_args[timeout_arg] = CONNECT_TIMEOUT
        for name, value in _DRIVER_BOUNDS.get(url.get_driver_name(), {}).items():
            if name not in url.query:
                connect_args[name] = value
        engine = create_engine(
            url, pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args
        )
        return cls(engine, create_tables=create_tables, owns_engine=True)

    def _after_fork(self) -> None:
        # The parent's pooled connections must not be used here; close=False leaves them
        # to the parent.
        self.engine.dispose(close=False)
        self._lock = threading.Lock()

    # --- plumbing --------------------------------------------------------------------

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except SQLAlchemyError as exc:
            # str(exc) of a DBAPI error names the statement, never the password.
            message = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
            where = f"{self.engine.dialect.name} ({self.display_uri})"
            raise StorageError(f"{where}: {message}") from exc

    def _prepare(self) -> None:
        if self._ready:
            return
        with self._lock:
            if self._ready:
                return
            if self._create_tables:
                try:
                    metadata.create_all(self.engine, checkfirst=True)
                except SQLAlchemyError:
                    # Another process created them at the same instant: check again.
                    metadata.create_all(self.engine, checkfirst=True)
            self._ready = True

    @contextlib.contextmanager
    def _begin(self, connection: Connection | None = None) -> Iterator[Connection]:
        """A transaction of our own, or the caller's connection (their transaction).

        In the caller's transaction our statements run in a savepoint: one that fails (no
        table yet, a lock timeout) is undone alone, and on PostgreSQL it would otherwise
        abort the shop's whole transaction, its commit and its page. (Not on SQLite: a
        failed statement aborts nothing there, and pysqlite's savepoints commit early.)
        """
        with self._errors():
            self._prepare()
            if connection is None:
                with self.engine.begin() as own:
                    yield own
            elif connection.dialect.name == "sqlite":
                yield connection
            else:
                with connection.begin_nested():
                    yield connection

    def _uses_skip_locked(self, connection: Connection) -> bool:
        if self._skip_locked is None:
            dialect = connection.dialect
            version = dialect.server_version_info or ()
            if dialect.name == "postgresql":
                self._skip_locked = True
            elif dialect.name in ("mysql", "mariadb"):
                mariadb = bool(getattr(dialect, "is_mariadb", False))
                self._skip_locked = tuple(version) >= ((10, 6) if mariadb else (8, 0, 1))
            else:
                self._skip_locked = False
        return self._skip_locked

    # --- snapshots -------------------------------------------------------------------

    def put_snapshot(self, order_id: str, clicks: Mapping[str, str], expires_at: float) -> None:
        values = {"order_id": order_id, "clicks": dumps_clicks(clicks), "expires_at": expires_at}
        replace = {"clicks": values["clicks"], "expires_at": expires_at}
        with self._begin() as connection:
            name = connection.dialect.name
            if name in _INSERT_IF_ABSENT:
                connection.execute(
                    _INSERT_IF_ABSENT[name](_s)
                    .values(values)
                    .on_conflict_do_update(index_elements=[_s.c.order_id], set_=replace)
                )
            elif name in ("mysql", "mariadb"):
                connection.execute(mysql.insert(_s).values(values).on_duplicate_key_update(replace))
            elif not connection.execute(
                update(_s).where(_s.c.order_id == order_id).values(replace)
            ).rowcount:
                connection.execute(insert(_s).values(values))

    def take_snapshot(
        self, order_id: str, now: float, connection: Connection | None = None
    ) -> dict[str, str] | None:
        with self._begin(connection) as conn:
            found = conn.execute(
                select(_s.c.clicks, _s.c.expires_at)
                .where(_s.c.order_id == order_id)
                .with_for_update()
            ).first()
            # Only the reader whose DELETE removed the row may use it (SQLite has no
            # FOR UPDATE: two readers can both see the row).
            if found is not None:
                taken = conn.execute(delete(_s).where(_s.c.order_id == order_id)).rowcount
                found = found if taken == 1 else None
        if found is None or found.expires_at <= now:
            return None
        return loads_clicks(found.clicks)

    def peek_snapshot(self, order_id: str, now: float) -> dict[str, str] | None:
        with self._begin() as connection:
            found = connection.execute(
                select(_s.c.clicks).where(_s.c.order_id == order_id, _s.c.expires_at > now)
            ).scalar_one_or_none()
        return None if found is None else loads_clicks(found)

    def delete_snapshot(self, order_id: str, connection: Connection | None = None) -> None:
        with self._begin(connection) as conn:
            conn.execute(delete(_s).where(_s.c.order_id == order_id))

    def purge_snapshots(self, now: float) -> int:
        with self._begin() as connection:
            return connection.execute(delete(_s).where(_s.c.expires_at <= now)).rowcount

    # --- outbox ----------------------------------------------------------------------

    def add(
        self, order_id: str, payload: str, now: float, connection: Connection | None = None
    ) -> bool:
        values = {
            "order_id": order_id,
            "payload": payload,
            "state": PENDING,
            "attempts": 0,
            "created_at": now,
            "next_attempt_at": now,
        }
        with self._begin(connection) as conn:
            dialect_insert = _INSERT_IF_ABSENT.get(conn.dialect.name)
            if dialect_insert is not None:
                statement = dialect_insert(_t).values(values).on_conflict_do_nothing()
                return conn.execute(statement.returning(_t.c.order_id)).first() is not None
            # Elsewhere (MySQL/MariaDB) a savepoint keeps a duplicate from aborting the
            # caller's transaction. (Not on SQLite: pysqlite's savepoints commit early.)
            try:
                with conn.begin_nested():
                    conn.execute(insert(_t).values(values))
            except IntegrityError:
                return False
            return True

    def claim(
        self, now: float, lease_until: float, token: str, limit: int, order_id: str | None = None
    ) -> list[OutboxRow]:
        claimable = _claimable(now)
        if order_id is not None:
            claimable = and_(claimable, _t.c.order_id == order_id)
        lease = {"attempts": _t.c.attempts + 1, "lease_until": lease_until, "claim_token": token}
        with self._begin() as connection:
            due = select(_t.c.order_id).where(claimable).order_by(_t.c.next_attempt_at).limit(limit)
            if self._uses_skip_locked(connection):
                ids = connection.execute(due.with_for_update(skip_locked=True)).scalars().all()
                if not ids:
                    return []
                connection.execute(update(_t).where(_t.c.order_id.in_(ids)).values(lease))
                mine: ColumnElement[bool] = _t.c.order_id.in_(ids)  # read back by primary key
            else:
                # One statement: the database serialises it, and the repeated condition
                # makes it claim nothing that another claimer took first.
                connection.execute(
                    update(_t)
                    .where(_t.c.order_id.in_(due.scalar_subquery()), claimable)
                    .values(lease)
                )
                mine = _t.c.claim_token == token  # read back through its index
            found = connection.execute(
                select(*_ROW_COLUMNS)
                .where(mine, _t.c.claim_token == token, _t.c.state == PENDING)
                .order_by(_t.c.next_attempt_at)
            ).all()
        return [_row(values) for values in found]

    def _finish(self, order_id: str, token: str, **values: Any) -> bool:
        with self._begin() as connection:
            result = connection.execute(
                update(_t)
                .where(_t.c.order_id == order_id, _t.c.claim_token == token, _t.c.state == PENDING)
                .values(lease_until=None, claim_token=None, **values)
            )
            return result.rowcount == 1

    def mark_sent(self, order_id: str, token: str, now: float) -> bool:
        return self._finish(order_id, token, state=SENT, synced_at=now, last_error=None)

    def mark_retry(self, order_id: str, token: str, next_attempt_at: float, error: str) -> bool:
        return self._finish(order_id, token, next_attempt_at=next_attempt_at, last_error=error)

    def mark_dead(self, order_id: str, token: str, error: str) -> bool:
        return self._finish(order_id, token, state=DEAD, last_error=error)

    def get(self, order_id: str) -> OutboxRow | None:
        with self._begin() as connection:
            found = connection.execute(
                select(*_ROW_COLUMNS).where(_t.c.order_id == order_id)
            ).first()
        return None if found is None else _row(found)

    def rows(self, state: str, limit: int) -> list[OutboxRow]:
        with self._begin() as connection:
            found = connection.execute(
                select(*_ROW_COLUMNS)
                .where(_t.c.state == state)
                .order_by(_t.c.created_at, _t.c.order_id)
                .limit(limit)
            ).all()
        return [_row(values) for values in found]

    def due_ids(self, now: float, limit: int) -> list[str]:
        with self._begin() as connection:
            return list(
                connection.execute(
                    select(_t.c.order_id)
                    .where(_claimable(now))
                    .order_by(_t.c.next_attempt_at)
                    .limit(limit)
                ).scalars()
            )

    def make_due(self, now: float) -> int:
        with self._begin() as connection:
            return connection.execute(
                update(_t)
                .where(_t.c.state == PENDING, _t.c.next_attempt_at > now)
                .values(next_attempt_at=now)
            ).rowcount

    def stats(self, now: float) -> OutboxStats:
        with self._begin() as connection:
            counts: dict[str, int] = dict(
                connection.execute(select(_t.c.state, func.count()).group_by(_t.c.state)).all()
            )
            due = connection.execute(
                select(func.count()).select_from(_t).where(_claimable(now))
            ).scalar_one()
            oldest = connection.execute(
                select(func.min(_t.c.created_at)).where(_t.c.state == PENDING)
            ).scalar_one()
        return OutboxStats(
            pending=counts.get(PENDING, 0),
            due=due,
            sent=counts.get(SENT, 0),
            dead=counts.get(DEAD, 0),
            oldest_pending_age=None if oldest is None else now - oldest,
        )

    def requeue(self, order_id: str, now: float) -> bool:
        with self._begin() as connection:
            return (
                connection.execute(
                    update(_t)
                    .where(_t.c.order_id == order_id, _t.c.state == DEAD)
                    .values(
                        state=PENDING,
                        attempts=0,
                        next_attempt_at=now,
                        lease_until=None,
                        claim_token=None,
                    )
                ).rowcount
                == 1
            )

    def delete(self, order_id: str, state: str) -> bool:
        with self._begin() as connection:
            return (
                connection.execute(
                    delete(_t).where(_t.c.order_id == order_id, _t.c.state == state)
                ).rowcount
                == 1
            )

    def purge_sent(self, before: float) -> int:
        with self._begin() as connection:
            return connection.execute(
                delete(_t).where(_t.c.state == SENT, _t.c.synced_at < before)
            ).rowcount

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()


Watch = Callable[[Callable[[], None], Callable[[], None]], None]

# Callbacks waiting for the end of a Session's or Connection's transaction. One pair of
# listeners per object, registered once: SQLAlchemy forbids removing a listener while its
# event runs, and a long-lived Session must not collect one listener per order.
_waiting: weakref.WeakKeyDictionary[Any, list[tuple[Callable[[], None], Callable[[], None]]]]
_waiting = weakref.WeakKeyDictionary()
_waiting_lock = threading.Lock()


def _settle(target: Any, committed: bool) -> None:
    with _waiting_lock:
        callbacks = _waiting.get(target) or []
        if target in _waiting:
            _waiting[target] = []
    for on_commit, on_rollback in callbacks:
        (on_commit if committed else on_rollback)()


def _watch(target: Any, listen: Callable[[Any], None]) -> Watch:
    def watch(on_commit: Callable[[], None], on_rollback: Callable[[], None]) -> None:
        with _waiting_lock:
            first = target not in _waiting
            _waiting.setdefault(target, []).append((on_commit, on_rollback))
        if first:
            listen(target)

    return watch


def _listen_session(session: Any) -> None:
    from sqlalchemy import event

    event.listen(session, "after_commit", lambda s: _settle(s, True))
    event.listen(
        session,
        "after_soft_rollback",
        lambda s, previous: _settle(s, False) if previous.parent is None else None,
    )


def _listen_connection(connection: Any) -> None:
    from sqlalchemy import event

    event.listen(connection, "commit", lambda c: _settle(c, True))
    event.listen(connection, "rollback", lambda c: _settle(c, False))


def same_database(one: Engine, other: Engine) -> bool:
    """Whether two engines reach the same database (whatever driver, user or options)."""
    if one is other:
        return True
    a, b = one.url, other.url
    return (a.get_backend_name(), a.host or "", a.port, a.database) == (
        b.get_backend_name(),
        b.host or "",
        b.port,
        b.database,
    )


def in_transaction(transaction: Any) -> tuple[Connection, Watch, bool]:
    """The Connection of a shop's Session or Connection, a way to run code when its
    transaction ends (``watch(on_commit, on_rollback)``), and whether ``on_commit`` runs
    *after* the commit (a Session) or just before the database commits (a bare Connection:
    SQLAlchemy has no after-commit event there, so the row may not be visible yet).
    """
    from sqlalchemy.orm import Session, scoped_session

    if isinstance(transaction, scoped_session):  # Flask-SQLAlchemy's db.session
        transaction = transaction()
    if isinstance(transaction, Session):
        return transaction.connection(), _watch(transaction, _listen_session), True
    if isinstance(transaction, Connection):
        return transaction, _watch(transaction, _listen_connection), False
    raise TypeError(
        f"connection= takes a SQLAlchemy Connection or Session, not {type(transaction).__name__}"
    )


__all__ = [
    "SQLAlchemyStorage",
    "in_transaction",
    "metadata",
    "outbox_table",
    "same_database",
    "snapshots_table",
]
