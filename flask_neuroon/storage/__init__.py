"""Storage backends, chosen by URI (``NEUROON_STORAGE_URI``).

==============================  =====================================================
URI                             backend
==============================  =====================================================
``sqlite:///neuroon.sqlite3``   :class:`~.sqlite.SQLiteStorage` (default); a relative
                                path lives in the app's instance folder, an absolute one
                                is written ``sqlite:////var/lib/shop/neuroon.sqlite3``
``memory://``                   :class:`~.memory.MemoryStorage`, this process only
==============================  =====================================================

Drivers beyond the standard library are imported only when their URI is used.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from ..errors import ConfigurationError
from .base import DEAD, PENDING, SENT, OutboxRow, OutboxStats, Storage
from .memory import MemoryStorage


def storage_from_uri(uri: str, *, instance_path: str | None = None) -> Storage:
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
        if not os.path.isabs(path):
            path = os.path.join(instance_path or os.getcwd(), path)
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        try:
            return SQLiteStorage(path, synchronous=options.get("synchronous", "normal"))
        except ValueError as exc:
            raise ConfigurationError("NEUROON_STORAGE_URI", str(exc)) from None
    raise ConfigurationError(
        "NEUROON_STORAGE_URI", f"unknown storage scheme {scheme!r} (use sqlite:/// or memory://)"
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
