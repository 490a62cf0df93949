"""Orders as the shop already has them, adapted to one shape (pure, no I/O).

A shop hands :func:`~flask_neuroon.Neuroon.track_conversion` whatever it already has: an
:class:`Order` / :class:`OrderLine`, a mapping (a JSON body, a dict from its ORM), or any
object with attributes. :func:`adapt_order` reads the common spellings of each field and
returns an :class:`Order`; it does *not* validate — the payload builder does, once, with
messages that name the field. A shop whose model is spelled differently registers an
adapter function (``Order | None``) with :meth:`~flask_neuroon.Neuroon.order_adapter`.

Field spellings, first match wins (a line's product id: every spelling present is kept,
the first as ``product_id``, the others as ``other_ids``, and any of them may match a
click: a line with both an internal ``product_id`` and the ``sku`` the widget knows is
attributed by its ``sku``):

======================  ==========================================================
Order field             read from
======================  ==========================================================
``id``                  id, order_id, orderId
``total``               total, orderValue, order_value
``currency``            currency, currency_code, currencyCode
``lines``               lines, items, line_items, lineItems
line ``product_id``     product_id, productId, sku, external_id, externalId
line ``variant_id``     variant_id, variantId, variation_id, variationId
line ``quantity``       quantity, qty
line ``unit_price``     unit_price, unitPrice, price
line ``line_total``     line_total, lineTotal, total
======================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Union

from .ids import clean_id, id_text

#: What the shop may use for an amount. Floats are read through ``str()`` (their
#: shortest representation, ``19.99`` stays ``19.99``); nothing is computed in float.
Money = Union[Decimal, int, str, float]

OrderAdapter = Callable[[Any], "Order | None"]

_MISSING = object()

ORDER_ID_KEYS = ("id", "order_id", "orderId")
TOTAL_KEYS = ("total", "orderValue", "order_value")
CURRENCY_KEYS = ("currency", "currency_code", "currencyCode")
LINES_KEYS = ("lines", "items", "line_items", "lineItems")
PRODUCT_KEYS = ("product_id", "productId", "sku", "external_id", "externalId")
VARIANT_KEYS = ("variant_id", "variantId", "variation_id", "variationId")
QUANTITY_KEYS = ("quantity", "qty")
UNIT_PRICE_KEYS = ("unit_price", "unitPrice", "price")
LINE_TOTAL_KEYS = ("line_total", "lineTotal", "total")


@dataclass(frozen=True)
class OrderLine:
    """One line of an order: a product (optionally a variant of it), units and money.

    ``line_total`` (after line discounts) wins over ``unit_price * quantity``.
    ``other_ids``: more ids of the same product (an internal id beside the SKU); the line
    is attributed when its variant id, its product id or one of these is in the click map.
    """

    product_id: Any
    quantity: Any = 1
    unit_price: Money | None = None
    line_total: Money | None = None
    variant_id: Any = None
    other_ids: Sequence[Any] = ()

    def ids(self) -> list[str]:
        """The line's ids as the click map would hold them, in matching order: the
        variant, the product, the other ids (each once; unusable values left out)."""
        found: list[str] = []
        for value in (self.variant_id, self.product_id, *self.other_ids):
            text = id_text(value)
            if text is not None and text not in found:
                found.append(text)
        return found


@dataclass(frozen=True)
class Order:
    """An order: its id (the idempotency key), grand total, ISO 4217 currency and lines."""

    id: Any
    total: Money | None
    currency: Any
    lines: Sequence[OrderLine] = field(default_factory=tuple)


def _read_all(source: Any, keys: Iterable[str]) -> list[Any]:
    """The present, non-None values of ``keys`` in a mapping or an object, in key order."""
    found: list[Any] = []
    if isinstance(source, Mapping):
        for key in keys:
            value = source.get(key, _MISSING)
            if value is not _MISSING and value is not None:
                found.append(value)
        return found
    for key in keys:
        value = getattr(source, key, _MISSING)
        # ``items`` on a dict-like object, or a bound method: not data.
        if value is not _MISSING and value is not None and not callable(value):
            found.append(value)
    return found


def _read(source: Any, keys: Iterable[str]) -> Any:
    """The first present, non-None value of ``keys`` in a mapping or an object."""
    found = _read_all(source, keys)
    return found[0] if found else None


def adapt_line(line: Any) -> OrderLine:
    """Read one order line from an :class:`OrderLine`, a mapping or an object."""
    if isinstance(line, OrderLine):
        return line
    quantity = _read(line, QUANTITY_KEYS)
    product_ids = _read_all(line, PRODUCT_KEYS)
    return OrderLine(
        product_id=product_ids[0] if product_ids else None,
        other_ids=tuple(product_ids[1:]),
        variant_id=_read(line, VARIANT_KEYS),
        quantity=1 if quantity is None else quantity,
        unit_price=_read(line, UNIT_PRICE_KEYS),
        line_total=_read(line, LINE_TOTAL_KEYS),
    )


def adapt_order(obj: Any, adapters: Sequence[OrderAdapter] = ()) -> Order:
    """Turn what the shop has into an :class:`Order` (no validation here).

    Registered ``adapters`` are tried first, in order; the first that returns an
    :class:`Order` wins. Lines that are not a list (a string, a number) are kept as they
    are so that the builder can name the problem.
    """
    for adapter in adapters:
        adapted = adapter(obj)
        if adapted is None:
            continue
        if not isinstance(adapted, Order):
            name = getattr(adapter, "__name__", repr(adapter))
            raise TypeError(
                f"order adapter {name} returned {type(adapted).__name__}, not an Order or None"
            )
        order = adapted
        break
    else:
        order = (
            obj
            if isinstance(obj, Order)
            else Order(
                id=_read(obj, ORDER_ID_KEYS),
                total=_read(obj, TOTAL_KEYS),
                currency=_read(obj, CURRENCY_KEYS),
                lines=_read(obj, LINES_KEYS) or (),
            )
        )
    lines: Any = order.lines
    if isinstance(lines, (str, bytes, Mapping)) or not isinstance(lines, Iterable):
        return order
    return Order(
        id=order.id,
        total=order.total,
        currency=order.currency,
        lines=tuple(adapt_line(line) for line in lines),
    )


def order_id_of(obj: Any) -> str | None:
    """The order's id as the API and storage get it (see :mod:`flask_neuroon.ids`), or
    None when it has none that can be sent. Nothing else is validated."""
    value = obj.id if isinstance(obj, Order) else _read(obj, ORDER_ID_KEYS)
    return clean_id(value)


__all__ = [
    "Money",
    "Order",
    "OrderAdapter",
    "OrderLine",
    "adapt_line",
    "adapt_order",
    "order_id_of",
]
