"""Where this machine's servers are, and whether they answer (used to skip or fail)."""

from __future__ import annotations

import functools
import os
import socket

POSTGRES_URL = os.environ.get(
    "NEUROON_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("NEUROON_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("NEUROON_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
AMQP_URL = os.environ.get("NEUROON_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")


@functools.cache
def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@functools.cache
def importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True
