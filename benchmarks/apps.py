"""The small shop the benchmarks run: the same app with and without flask-neuroon.

:func:`create_app` builds it; under gunicorn it reads its settings from the environment
(``BENCH_NEUROON=1`` to install the extension, ``BENCH_INSTANCE`` for the SQLite outbox,
``BENCH_API_URL``). Routes:

* ``GET /clicks``  reads the click map (``len(neuroon.clicks)``), as a product page or the
  cart that shows "found through search" would; without the extension it answers a
  number of the same length and reads nothing.
* ``GET /plain``   does not touch the clicks: the cost of merely having the extension.

Like every shop with a cart the app has a ``SECRET_KEY``, so Flask opens its session
(and werkzeug parses the Cookie header) on every request, with or without the extension.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from flask import Flask

from flask_neuroon import Neuroon

SHOP_ID = "shop_bench"
API_KEY = "sk_bench_0123456789"
ORIGIN = "http://127.0.0.1"


def neuroon_config(api_url: str, instance: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "NEUROON_API_URL": api_url,
        "NEUROON_SHOP_ID": SHOP_ID,
        "NEUROON_API_KEY": API_KEY,
        "NEUROON_ORIGIN": ORIGIN,
        # An absolute path: sqlite:////abs/path.
        "NEUROON_STORAGE_URI": "sqlite:///" + os.path.abspath(os.path.join(instance, "o.db")),
    }
    config.update(overrides)
    return config


def create_app(
    with_neuroon: bool | None = None,
    *,
    api_url: str | None = None,
    instance: str | None = None,
    **overrides: Any,
) -> Flask:
    if with_neuroon is None:
        with_neuroon = os.environ.get("BENCH_NEUROON", "1") == "1"
    instance = instance or os.environ.get("BENCH_INSTANCE") or os.getcwd()
    api_url = api_url or os.environ.get("BENCH_API_URL", "http://127.0.0.1:9")
    app = Flask("bench_shop", instance_path=instance)
    app.config.update(SECRET_KEY="bench-secret-key-not-for-production")
    neuroon: Neuroon | None = None
    if with_neuroon:
        # BENCH_CONFIG_NEUROON_X=value in the environment: NEUROON_X (for experiments).
        from_env = {
            key[len("BENCH_CONFIG_") :]: value
            for key, value in os.environ.items()
            if key.startswith("BENCH_CONFIG_NEUROON_")
        }
        app.config.update(neuroon_config(api_url, instance, **{**from_env, **overrides}))
        neuroon = Neuroon(app)
    app.extensions["bench_neuroon"] = neuroon

    if neuroon is not None:
        tracker = neuroon

        @app.get("/clicks")
        def clicks() -> str:
            return f"{len(tracker.clicks):03d}"

    else:

        @app.get("/clicks")
        def clicks() -> str:
            return f"{0:03d}"

    @app.get("/plain")
    def plain() -> str:
        return "ok!"

    return app


def order(number: int | str, clicks: Mapping[str, str], prefix: str = "bench") -> dict[str, Any]:
    """An order of three lines, one of them a product the shopper clicked (when any)."""
    clicked = next(iter(clicks), "SKU-00000-BLK-M")
    return {
        "id": f"{prefix}-{number:07d}" if isinstance(number, int) else f"{prefix}-{number}",
        "total": Decimal("129.85"),
        "currency": "EUR",
        "lines": [
            {"product_id": clicked, "quantity": 1, "unit_price": Decimal("49.95")},
            {"product_id": "SKU-11111-WHT-S", "quantity": 2, "unit_price": Decimal("19.95")},
            {"product_id": "SKU-22222-NVY-L", "quantity": 1, "line_total": Decimal("40.00")},
        ],
    }


def stop(app: Flask, timeout: float = 10.0) -> None:
    """Stop the extension's sender threads, wait for them to finish, then close storage.

    ``neuroon.shutdown()`` leaves the SQLite connection of a sender thread that is still
    running open (closing it under a statement would crash the interpreter, as these
    benchmarks once showed), so that a run leaves nothing open the threads go first here
    and are joined, then storage closes every connection.
    """
    state = app.extensions.get("neuroon")
    if state is None:
        return
    dispatcher = state.dispatcher
    dispatcher.close(0)
    deadline = time.monotonic() + timeout
    for thread in [*getattr(dispatcher, "_threads", ()), getattr(dispatcher, "_sweeper", None)]:
        if thread is not None:
            thread.join(max(0.0, deadline - time.monotonic()))
    state.storage.close()
