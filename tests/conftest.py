"""Shared fixtures: the fake Neuroon API on loopback, app factories, service gating."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from flask_neuroon import Neuroon
from flask_neuroon.testing import FakeNeuroonAPI

SHOP_ID = "shop_test"
API_KEY = "sk_test_0123456789abcdef"
ORIGIN = "http://127.0.0.1"


def services_required() -> bool:
    return os.environ.get("NEUROON_REQUIRE_SERVICES", "") not in ("", "0", "false")


def need_service(name: str, available: bool, reason: str = "") -> None:
    """Skip (or fail, under NEUROON_REQUIRE_SERVICES=1) when a server is not here."""
    if available:
        return
    message = f"{name} is not available{': ' + reason if reason else ''}"
    if services_required():
        pytest.fail(f"{message} (NEUROON_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def api() -> Iterator[FakeNeuroonAPI]:
    server = FakeNeuroonAPI(shop_id=SHOP_ID, api_key=API_KEY, allowed_origins=(ORIGIN,))
    server.start()
    try:
        yield server
    finally:
        server.stop()


def base_config(api: FakeNeuroonAPI | None, tmp_path: Path, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "TESTING": True,
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": API_KEY,
        "NEUROON_ORIGIN": ORIGIN,
        "NEUROON_API_URL": api.url if api is not None else "http://127.0.0.1:9",
        # tmp_path is absolute, so this is sqlite:////tmp/...: an absolute path.
        "NEUROON_STORAGE_URI": f"sqlite:///{tmp_path}/neuroon.sqlite3",
        "NEUROON_RETRY_SCHEDULE": (0.2, 0.2, 0.2, 0.2),
        "NEUROON_TIMEOUT": (1.0, 2.0),
        "NEUROON_FLUSH_INTERVAL": 0,
    }
    config.update(overrides)
    return config


AppFactory = Callable[..., tuple[Flask, Neuroon]]


@pytest.fixture
def make_app(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[AppFactory]:
    """Build a Flask app with flask-neuroon pointed at the fake API (if the test uses it)."""
    apps: list[tuple[Flask, Neuroon]] = []

    def factory(api: FakeNeuroonAPI | None = None, **overrides: Any) -> tuple[Flask, Neuroon]:
        app = Flask(f"shop{len(apps)}", instance_path=str(tmp_path / "instance"))
        app.config.update(base_config(api, tmp_path, **overrides))
        neuroon = Neuroon(app)
        apps.append((app, neuroon))
        return app, neuroon

    yield factory
    for app, neuroon in apps:
        with app.app_context():
            neuroon.shutdown()


#: The backends that share an outbox between processes (memory:// does not).
SHARED_BACKENDS = ("sqlite", "postgresql", "mariadb", "redis")


@pytest.fixture(params=SHARED_BACKENDS)
def backend_uri(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A NEUROON_STORAGE_URI for each shareable backend, empty, on this machine's servers."""
    from .services import MARIADB_URL, POSTGRES_URL, REDIS_URL, importable, port_open

    name = str(request.param)
    if name == "sqlite":
        yield f"sqlite:///{tmp_path}/outbox.sqlite3"
        return
    if name == "redis":
        need_service("Redis", importable("redis") and port_open("127.0.0.1", 6379))
        prefix = f"test{uuid.uuid4().hex[:12]}"
        uri = f"{REDIS_URL}?prefix={prefix}"
        yield uri
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        return
    url, driver, port = {
        "postgresql": (POSTGRES_URL, "psycopg", 5432),
        "mariadb": (MARIADB_URL, "pymysql", 3306),
    }[name]
    need_service(name, importable(driver) and port_open("127.0.0.1", port))
    from flask_neuroon.storage.sqlalchemy import SQLAlchemyStorage, metadata

    storage = SQLAlchemyStorage.from_uri(url)
    metadata.create_all(storage.engine)
    with storage.engine.begin() as connection:
        for table in metadata.sorted_tables:
            connection.execute(table.delete())
    storage.close()
    yield url
