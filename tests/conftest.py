"""Shared fixtures: the fake Neuroon API on loopback, app factories, service gating."""

from __future__ import annotations

import os
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
