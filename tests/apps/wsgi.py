"""A shop app for process-level tests (gunicorn, several processes), configured by env vars."""

from __future__ import annotations

import os
import threading
from decimal import Decimal

from flask import Flask, Response, jsonify

from flask_neuroon import Neuroon, Order, OrderLine

neuroon = Neuroon()


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["SHOP_INSTANCE"])
    app.config.update(
        NEUROON_SHOP_ID=os.environ.get("SHOP_ID", "shop_test"),
        NEUROON_API_KEY=os.environ["SHOP_API_KEY"],
        NEUROON_ORIGIN="http://127.0.0.1",
        NEUROON_API_URL=os.environ["SHOP_API_URL"],
        NEUROON_RETRY_SCHEDULE=(0.2,),
        NEUROON_FLUSH_INTERVAL=0.5,
    )
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

    return app


app = create_app() if "SHOP_INSTANCE" in os.environ else None
