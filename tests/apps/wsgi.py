"""A shop app for process-level tests (gunicorn, several processes), configured by env vars.

Required: ``SHOP_INSTANCE`` (instance folder), ``SHOP_API_KEY``, ``SHOP_API_URL``.
Optional, each mapped onto the ``NEUROON_*`` key of the same meaning when set:

=======================  ==========================================================
``SHOP_STORAGE_URI``     ``NEUROON_STORAGE_URI`` (default: SQLite in the instance folder)
``SHOP_CLAIM_LEASE``     ``NEUROON_CLAIM_LEASE`` (seconds)
``SHOP_TIMEOUT``         ``NEUROON_TIMEOUT`` (``"1"`` or ``"1,2"``)
``SHOP_ORIGIN``          ``NEUROON_ORIGIN`` (default ``http://127.0.0.1``); a test may give
                         each process its own port to tell their requests apart at the API
``SHOP_MAX_WORKERS``     ``NEUROON_MAX_WORKERS``
``SHOP_RETRY_SCHEDULE``  ``NEUROON_RETRY_SCHEDULE`` (default ``0.2``)
``SHOP_FLUSH_INTERVAL``  ``NEUROON_FLUSH_INTERVAL`` (default ``0.5``)
``SHOP_MAX_ATTEMPTS``    ``NEUROON_MAX_ATTEMPTS``
``SHOP_BARRIER``         a directory: once the app is built, write ``ready-<pid>`` there
                         and wait for a file ``go`` (several processes then start at once)
=======================  ==========================================================
"""

from __future__ import annotations

import os
import threading
import time
from decimal import Decimal
from typing import Any

from flask import Flask, Response, jsonify

from flask_neuroon import Neuroon, Order, OrderLine

neuroon = Neuroon()

_OPTIONAL = {
    "SHOP_STORAGE_URI": "NEUROON_STORAGE_URI",
    "SHOP_CLAIM_LEASE": "NEUROON_CLAIM_LEASE",
    "SHOP_TIMEOUT": "NEUROON_TIMEOUT",
    "SHOP_MAX_WORKERS": "NEUROON_MAX_WORKERS",
    "SHOP_RETRY_SCHEDULE": "NEUROON_RETRY_SCHEDULE",
    "SHOP_FLUSH_INTERVAL": "NEUROON_FLUSH_INTERVAL",
    "SHOP_MAX_ATTEMPTS": "NEUROON_MAX_ATTEMPTS",
}


def _wait_at_barrier(directory: str, timeout: float = 60.0) -> None:
    """Say this process is ready, then wait until the test says go."""
    with open(os.path.join(directory, f"ready-{os.getpid()}"), "w") as ready:
        ready.write("ready\n")
    go = os.path.join(directory, "go")
    deadline = time.monotonic() + timeout
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            raise SystemExit(f"no go at {directory} within {timeout:g} s")
        time.sleep(0.005)


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["SHOP_INSTANCE"])
    config: dict[str, Any] = {
        "NEUROON_SHOP_ID": os.environ.get("SHOP_ID", "shop_test"),
        "NEUROON_API_KEY": os.environ["SHOP_API_KEY"],
        "NEUROON_ORIGIN": os.environ.get("SHOP_ORIGIN", "http://127.0.0.1"),
        "NEUROON_API_URL": os.environ["SHOP_API_URL"],
        "NEUROON_RETRY_SCHEDULE": (0.2,),
        "NEUROON_FLUSH_INTERVAL": 0.5,
    }
    for variable, key in _OPTIONAL.items():
        if os.environ.get(variable):
            config[key] = os.environ[variable]
    app.config.update(config)
    neuroon.init_app(app)

    @app.post("/confirm/<order_id>")
    def confirm(order_id: str) -> Response:
        order = Order(
            id=order_id,
            total=Decimal("10.00"),
            currency="EUR",
            lines=[OrderLine(product_id="P1", quantity=1, unit_price=Decimal("10.00"))],
        )
        delivery = neuroon.track_conversion(order, clicks={"P1": f"log-{order_id}"})
        return jsonify(pid=os.getpid(), status=delivery.status)

    @app.get("/threads")
    def threads() -> Response:
        return jsonify(pid=os.getpid(), names=sorted(t.name for t in threading.enumerate()))

    if os.environ.get("SHOP_BARRIER"):
        _wait_at_barrier(os.environ["SHOP_BARRIER"])
    return app


app = create_app() if "SHOP_INSTANCE" in os.environ else None

if app is not None and os.environ.get("SHOP_IMPORT_THREADS_FILE"):
    # What runs right after import: under gunicorn --preload, in the master, before fork.
    with open(os.environ["SHOP_IMPORT_THREADS_FILE"], "w") as threads_file:
        threads_file.write("\n".join(t.name for t in threading.enumerate()))
