"""A minimal shop for the tests: the routes a real checkout has, decorated the documented way."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from flask import Flask, redirect, request
from werkzeug.test import Client

from flask_neuroon import Neuroon, Order, OrderLine

ORDERS: dict[str, Order] = {}


def make_order(order_id: str, clicked_qty: int = 2) -> Order:
    order = Order(
        id=order_id,
        total=Decimal("64.97"),
        currency="EUR",
        lines=[
            OrderLine(product_id="SKU-RED", quantity=clicked_qty, unit_price=Decimal("19.99")),
            OrderLine(product_id="SKU-BLUE", quantity=1, unit_price=Decimal("24.99")),
        ],
    )
    ORDERS[order_id] = order
    return order


def add_checkout_routes(app: Flask, neuroon: Neuroon) -> None:
    @app.post("/checkout/<order_id>/pay")
    @neuroon.before_gateway(order_id="order_id")
    def pay(order_id: str) -> Any:
        return redirect(f"https://gateway.example/pay?order={order_id}")

    @app.route("/payment/return", methods=["GET", "POST"])
    @neuroon.on_order_confirmed(load_order=ORDERS.get, order_id=lambda: request.values["order"])
    def payment_return() -> Any:
        return "thank you"

    @app.post("/broken/return")
    @neuroon.on_order_confirmed(load_order=ORDERS.get, order_id=lambda: request.values["order"])
    def broken_return() -> Any:
        return "payment failed", 402


def click_cookie(clicks: dict[str, str]) -> str:
    """The cookie value as the widget writes it (encodeURIComponent of the JSON)."""
    return quote(json.dumps(clicks, separators=(",", ":")), safe="~()*!.'")


def set_clicks(client: Client, clicks: dict[str, str]) -> None:
    client.set_cookie("neuroon_clicks", click_cookie(clicks), domain="localhost")
