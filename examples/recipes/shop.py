"""What the recipe shops share: a catalogue, an order model and an in-process order store.

flask-neuroon reads these orders as they are (``id``, ``total``, ``currency``, ``lines``
with ``product_id``, ``quantity``, ``unit_price``, ``line_total``): no adapter needed. A
real shop has a database table instead of :class:`OrderStore`.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from decimal import Decimal

from flask import abort

CURRENCY = "EUR"
AWAITING_PAYMENT = "awaiting_payment"
PAID = "paid"


@dataclass(frozen=True)
class Product:
    id: str  # the externalId: the id in /products/sync, in the click cookie, on order lines
    name: str
    price: Decimal


CATALOG: dict[str, Product] = {
    product.id: product
    for product in (
        Product("SKU-RED", "Red enamel mug", Decimal("19.99")),
        Product("SKU-BLUE", "Blue enamel mug", Decimal("24.99")),
    )
}


@dataclass(frozen=True)
class OrderLine:
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
    lines: tuple[OrderLine, ...]
    status: str = AWAITING_PAYMENT
    #: The gateway's id for this payment (Checkout Session, PayPal order, PSP payment).
    gateway_ref: str | None = None

    @property
    def total(self) -> Decimal:
        return sum((line.line_total for line in self.lines), Decimal("0.00"))

    @property
    def paid(self) -> bool:
        return self.status == PAID


def default_order_id() -> str:
    return f"ORD-{secrets.token_hex(4).upper()}"


class OrderStore:
    """Orders by id, safe to use from the server's request threads."""

    def __init__(self, new_id: Callable[[], str] = default_order_id) -> None:
        self._orders: dict[str, ShopOrder] = {}
        self._lock = threading.Lock()
        self._new_id = new_id

    def create(self, lines: Iterable[OrderLine], currency: str = CURRENCY) -> ShopOrder:
        with self._lock:
            order_id = self._new_id()
            while order_id in self._orders:
                order_id = self._new_id()
            order = self._orders[order_id] = ShopOrder(order_id, currency, tuple(lines))
            return order

    def get(self, order_id: object) -> ShopOrder | None:
        if not isinstance(order_id, str):
            return None
        with self._lock:
            return self._orders.get(order_id)

    def get_paid(self, order_id: object) -> ShopOrder | None:
        """The order if it is paid: what a confirmation hands to flask-neuroon."""
        order = self.get(order_id)
        return order if order is not None and order.paid else None

    def by_gateway_ref(self, ref: str) -> ShopOrder | None:
        with self._lock:
            return next((o for o in self._orders.values() if ref and o.gateway_ref == ref), None)

    def set_gateway_ref(self, order_id: str, ref: str) -> ShopOrder:
        with self._lock:
            order = self._orders[order_id] = replace(self._orders[order_id], gateway_ref=ref)
            return order

    def mark_paid(self, order_id: str) -> ShopOrder:
        """Idempotent: a gateway may confirm twice."""
        with self._lock:
            order = self._orders[order_id]
            if not order.paid:
                order = self._orders[order_id] = replace(order, status=PAID)
            return order

    def put(self, order: ShopOrder) -> None:
        """Store an order as is (a second host that received it from the first)."""
        with self._lock:
            self._orders[order.id] = order


def lines_from_form(form: Mapping[str, str]) -> list[OrderLine]:
    """``{product id: quantity}`` (a cart form) as order lines; unknown ids are ignored,
    a quantity that is not a whole number from 1 to 99 raises ValueError."""
    lines = []
    for product_id, raw in form.items():
        product = CATALOG.get(product_id)
        if product is None:
            continue
        quantity = int(raw)
        if not 0 < quantity < 100:
            raise ValueError(f"quantity of {product_id} must be 1 to 99")
        lines.append(OrderLine(product.id, product.name, quantity, product.price))
    if not lines:
        raise ValueError("the cart is empty")
    return lines


def order_created(store: OrderStore, form: Mapping[str, str]) -> tuple[dict[str, str], int]:
    """``POST /orders`` of every recipe: the cart form as a new order (400 for a bad cart)."""
    try:
        order = store.create(lines_from_form(form))
    except ValueError as exc:
        abort(400, str(exc))
    return {"id": order.id, "total": str(order.total), "currency": order.currency}, 201


def minor_units(amount: Decimal, exponent: int = 2) -> int:
    """``Decimal("64.97")`` -> ``6497``: gateways count cents. Raises on a fraction of one."""
    scaled = amount.scaleb(exponent)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has a fraction of a minor unit")
    return int(scaled)


def from_minor_units(amount: int | str, exponent: int = 2) -> Decimal:
    return Decimal(int(amount)).scaleb(-exponent)


__all__ = [
    "AWAITING_PAYMENT",
    "CATALOG",
    "CURRENCY",
    "PAID",
    "OrderLine",
    "OrderStore",
    "Product",
    "ShopOrder",
    "from_minor_units",
    "lines_from_form",
    "minor_units",
    "order_created",
]
