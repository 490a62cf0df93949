"""The shop's own order model and a tiny in-process order store.

A real shop has a database table; flask-neuroon does not care. It reads ``id``,
``total``, ``currency`` and ``lines`` (each with ``product_id``, ``quantity``,
``unit_price``, ``line_total``) straight off these objects: no conversion code needed.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from decimal import Decimal

AWAITING_PAYMENT = "awaiting_payment"
PAID = "paid"


@dataclass(frozen=True)
class ShopOrderLine:
    product_id: str
    name: str
    quantity: int
    unit_price: Decimal

    @property
    def line_total(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class ShopOrder:
    id: str
    currency: str
    lines: tuple[ShopOrderLine, ...]
    status: str = AWAITING_PAYMENT

    @property
    def total(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00"))


class OrderStore:
    """Orders by id, safe to use from the server's request threads."""

    def __init__(self) -> None:
        self._orders: dict[str, ShopOrder] = {}
        self._lock = threading.Lock()

    def create(self, lines: Iterable[ShopOrderLine], currency: str) -> ShopOrder:
        with self._lock:
            while True:
                order_id = f"ORD-{secrets.token_hex(4).upper()}"
                if order_id not in self._orders:
                    break
            order = ShopOrder(order_id, currency, tuple(lines))
            self._orders[order_id] = order
            return order

    def get(self, order_id: object) -> ShopOrder | None:
        if not isinstance(order_id, str):
            return None
        with self._lock:
            return self._orders.get(order_id)

    def get_paid(self, order_id: object) -> ShopOrder | None:
        """The order if it is paid: what the confirmation hands to flask-neuroon."""
        order = self.get(order_id)
        return order if order is not None and order.status == PAID else None

    def mark_paid(self, order_id: str) -> ShopOrder | None:
        """Set the order paid (idempotent: a gateway may return twice)."""
        with self._lock:
            order = self._orders.get(order_id)
            if order is None:
                return None
            if order.status != PAID:
                order = self._orders[order_id] = replace(order, status=PAID)
            return order
