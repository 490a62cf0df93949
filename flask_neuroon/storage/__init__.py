"""Storage backends, chosen by URI (``NEUROON_STORAGE_URI``).

==============================  =====================================================
URI                             backend
==============================  =====================================================
``sqlite:///neuroon.sqlite3``   :class:`~.sqlite.SQLiteStorage` (default); a relative
                                path lives in the app's instance folder, an absolute one
                                is written ``sqlite:////var/lib/shop/neuroon.sqlite3``
``memory://``                   :class:`~.memory.MemoryStorage`, this process only
``postgresql+psycopg://…``      :class:`~.sqlalchemy.SQLAlchemyStorage`: any SQLAlchemy
``mysql+pymysql://…``           URL (extras ``[postgresql]``, ``[mysql]``,
``mariadb+pymysql://…``         ``[sqlalchemy]``)
``redis://…``, ``rediss://…``   :class:`~.redis.RedisStorage` (extra ``[redis]``)
==============================  =====================================================

Drivers beyond the standard library are imported only when their URI is used; a
missing one is a ConfigurationError that names the extra to install.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError
from .base import DEAD, PENDING, SENT, OutboxRow, OutboxStats, Storage
from .memory import MemoryStorage


def storage_from_uri(
    uri: str, *, instance_path: str | None = None, create_tables: bool = True
) -> Storage:
    """Build the backend named by ``uri``; raise ConfigurationError for an unknown one."""
    scheme = uri.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemoryStorage()
    if scheme == "sqlite":
        from .sqlite import SQLiteStorage

        rest = uri.split("://", 1)[1]
        if not rest.startswith("/") or rest == "/":
            raise ConfigurationError(
                "NEUROON_STORAGE_URI", "a SQLite URI is sqlite:///relative.db or sqlite:////abs.db"
            )
        parts = urlsplit("sqlite://" + rest)
        path = parts.path[1:]  # one slash: relative; two: absolute
        if path == ":memory:" or path.startswith("file:"):
            # An in-memory SQLite database is one per connection, and each sender thread
            # has its own: the rows the view writes would never reach them.
            raise ConfigurationError(
                "NEUROON_STORAGE_URI",
                "SQLite in memory cannot be shared by the sender threads: use memory:// "
                "(this process only) or a file such as sqlite:///neuroon.sqlite3",
            )
        if not os.path.isabs(path):
            path = os.path.join(instance_path or os.getcwd(), path)
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        try:
            return SQLiteStorage(path, synchronous=options.get("synchronous", "normal"))
        except ValueError as exc:
            raise ConfigurationError("NEUROON_STORAGE_URI", str(exc)) from None
    if scheme in ("redis", "rediss", "unix"):
        try:
            from .redis import RedisStorage
        except ImportError as exc:
            raise _missing_driver("redis", exc) from None
        return RedisStorage.from_uri(uri)
    dialect = scheme.split("+", 1)[0]
    if dialect in _SQLALCHEMY_DIALECTS:
        extra = {"postgresql": "postgresql", "postgres": "postgresql"}.get(dialect, "sqlalchemy")
        extra = "mysql" if dialect in ("mysql", "mariadb") else extra
        try:
            from sqlalchemy.exc import ArgumentError, NoSuchModuleError

            from .sqlalchemy import SQLAlchemyStorage
        except ImportError as exc:
            raise _missing_driver(extra, exc) from None
        try:
            return SQLAlchemyStorage.from_uri(uri, create_tables=create_tables)
        except ImportError as exc:
            if "+" not in scheme and dialect in _OUR_DRIVERS:
                # SQLAlchemy's default driver for the dialect, not the one our extra brings.
                raise ConfigurationError(
                    "NEUROON_STORAGE_URI",
                    f"{scheme}:// asks for SQLAlchemy's default driver ({exc.name or exc}),"
                    f" which is not installed: write {_OUR_DRIVERS[dialect]}:// (installed by"
                    f" pip install 'flask-neuroon[{extra}]')",
                ) from None
            raise _missing_driver(extra, exc) from None
        except (NoSuchModuleError, ArgumentError) as exc:
            raise ConfigurationError(
                "NEUROON_STORAGE_URI", f"not a usable SQLAlchemy URL: {exc}"
            ) from None
    raise ConfigurationError(
        "NEUROON_STORAGE_URI",
        f"unknown storage scheme {scheme!r} (sqlite:///, memory://, redis://,"
        " or an SQLAlchemy URL such as postgresql+psycopg://)",
    )


#: The driver each extra installs, for a URI that names none.
_OUR_DRIVERS = {
    "postgresql": "postgresql+psycopg",
    "postgres": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

_SQLALCHEMY_DIALECTS = (
    "postgresql",
    "postgres",
    "mysql",
    "mariadb",
    "mssql",
    "oracle",
    "cockroachdb",
)


def _missing_driver(extra: str, exc: ImportError) -> ConfigurationError:
    return ConfigurationError(
        "NEUROON_STORAGE_URI",
        f"needs a driver that is not installed ({exc.name or exc}): "
        f"pip install 'flask-neuroon[{extra}]'",
    )


__all__ = [
    "DEAD",
    "PENDING",
    "SENT",
    "MemoryStorage",
    "OutboxRow",
    "OutboxStats",
    "Storage",
    "storage_from_uri",
]
