"""Order + click map -> the conversion payload of the wire contract (pure: values in, values out).

Rules (see DESIGN.md, "The wire contract"):

* Money is :class:`~decimal.Decimal`, rounded half-up to the currency's ISO 4217 minor
  units, and written by :func:`dumps_payload` as a JSON *number*. Floats given by the
  shop are read through ``str()``; no arithmetic is done in float.
* A line's total is its explicit ``line_total`` if it has one, else ``unit_price * quantity``.
* A line is attributed when one of its ids (variant first, then product, then its other
  ids) is a key of the click map (compared as canonical text, see
  :mod:`flask_neuroon.ids`). Lines of the same clicked id become one conversion entry; a
  clicked line with a negative total (a per-item discount line) lowers that product's
  entry.
* ``attributedValue`` never exceeds ``orderValue``: when the lines add up to more than
  what was paid for them (the order total after an order-level coupon, or the lines
  after discount lines with negative totals), the attributed totals are scaled down in
  proportion and the rounding remainder is spread (largest remainder first) so that the
  entries add up to ``attributedValue`` exactly.
* What goes on the wire is checked strictly: the order's id, total and currency, and
  each *clicked* line (a positive whole quantity, a readable price or total). Wrong data
  there (no price, NaN, a quantity of ``"two"`` or ``True``, an amount out of range)
  raises :class:`~flask_neuroon.errors.InvalidOrder` naming the order and the field:
  sending the order without that line would lose its credit for good, since the fixed
  order, tracked again, is a duplicate. Two real cases are no error: a clicked free gift
  (quantity 0) or weighed product (0.5) is no whole number of units, so it is left out of
  ``conversions[]`` with a warning and counts towards the lines' sum; a clicked line with
  a negative total (a per-item discount) lowers that product's entry. Lines nobody
  clicked never void the order: a discount line (negative), a shipping line without a
  product, a free gift, a weighed product only count towards the lines' sum, and not at
  all when unreadable.
* Click entries that cannot be sent (an empty or non-string searchLogId) are ignored.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    InvalidOperation,
    Overflow,
    localcontext,
)
from typing import Any

from .currencies import minor_units
from .errors import InvalidOrder
from .ids import BAD_ID_CHAR, MAX_ID_LENGTH, id_text
from .orders import Order, OrderLine

logger = logging.getLogger("flask_neuroon")

# Enough digits that no division or product below loses precision for any real amount.
_PRECISION = 60
#: The arithmetic of every amount here, whatever the shop's thread has set: a context that
#: traps Inexact or Rounded, a precision of 3 or ROUND_FLOOR must not change a payload or
#: raise into a checkout. Every field is given, so nothing comes from DefaultContext.
_MONEY = Context(
    prec=_PRECISION,
    rounding=ROUND_HALF_UP,
    Emin=-999999,
    Emax=999999,
    capitals=1,
    clamp=0,
    flags=[],
    traps=[InvalidOperation, DivisionByZero, Overflow],
)


@dataclass
class _Entry:
    product_id: str
    search_log_id: str
    quantity: int
    line_total: Decimal


def _required_id(value: Any, order_id: str | None, field: str) -> str:
    """An id that must be there: its canonical text (see :mod:`flask_neuroon.ids`)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InvalidOrder(f"{field} is missing", order_id=order_id, field=field)
    text = id_text(value)
    if text is None:
        kind = "a fraction, NaN or infinite" if isinstance(value, Decimal) else type(value).__name__
        raise InvalidOrder(
            f"{field} must be a string or an integer, not {kind}", order_id=order_id, field=field
        )
    if len(text) > MAX_ID_LENGTH:
        raise InvalidOrder(
            f"{field} is longer than {MAX_ID_LENGTH} characters", order_id=order_id, field=field
        )
    if BAD_ID_CHAR.search(text):
        raise InvalidOrder(
            f"{field} contains control characters or invalid text", order_id=order_id, field=field
        )
    return text


def to_decimal(value: Any, order_id: str | None, field: str) -> Decimal:
    """Read an amount without float arithmetic; NaN, infinities and non-numbers are errors."""
    with localcontext(_MONEY):
        return _to_decimal(value, order_id, field)


def _to_decimal(value: Any, order_id: str | None, field: str) -> Decimal:
    if isinstance(value, bool) or value is None:
        raise InvalidOrder(f"{field} must be a number", order_id=order_id, field=field)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidOrder(f"{field} must be a finite number", order_id=order_id, field=field)
        value = repr(value)
    if isinstance(value, (int, Decimal)):
        number = Decimal(value)
    elif isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            raise InvalidOrder(
                f"{field} must be a number, not {value[:40]!r}", order_id=order_id, field=field
            ) from None
    else:
        raise InvalidOrder(
            f"{field} must be a number, not {type(value).__name__}", order_id=order_id, field=field
        )
    if not number.is_finite():
        raise InvalidOrder(f"{field} must be a finite number", order_id=order_id, field=field)
    return number


def _round(amount: Decimal, exponent: Decimal, order_id: str | None, field: str) -> Decimal:
    try:
        rounded = amount.quantize(exponent, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise InvalidOrder(f"{field} is too large", order_id=order_id, field=field) from None
    return rounded + 0  # no negative zero


def _times(price: Decimal, quantity: Decimal | int, order_id: str | None, field: str) -> Decimal:
    try:
        return price * quantity
    except ArithmeticError:  # Overflow: beyond any real amount
        raise InvalidOrder(f"{field} is too large", order_id=order_id, field=field) from None


def _quantity(value: Any, order_id: str | None, field: str) -> int:
    message = "quantity must be a positive integer"
    if isinstance(value, bool) or value is None:
        raise InvalidOrder(message, order_id=order_id, field=field)
    if isinstance(value, int):
        number = value
    else:
        try:
            as_decimal = _to_decimal(value, order_id, field)
        except InvalidOrder:
            raise InvalidOrder(message, order_id=order_id, field=field) from None
        if as_decimal != as_decimal.to_integral_value():
            raise InvalidOrder(message, order_id=order_id, field=field)
        number = int(as_decimal)
    if number <= 0:
        raise InvalidOrder(message, order_id=order_id, field=field)
    return number


def _uncounted_quantity(value: Any) -> Decimal | None:
    """A quantity that is a real amount but no whole number of units: 0 (a free gift) or
    a positive fraction (a weighed product). None for anything else."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = _to_decimal(value, None, "quantity")
    except InvalidOrder:
        return None
    if number < 0 or (number > 0 and number == number.to_integral_value()):
        return None
    return number


def _line_total(
    line: OrderLine, quantity: Decimal | int, exponent: Decimal, order_id: str | None, where: str
) -> Decimal:
    if line.line_total is not None:
        field = f"{where}.lineTotal"
        amount = _to_decimal(line.line_total, order_id, field)
    elif line.unit_price is not None:
        field = f"{where}.unitPrice"
        amount = _times(_to_decimal(line.unit_price, order_id, field), quantity, order_id, field)
    else:
        raise InvalidOrder(
            "a line needs a unitPrice or a lineTotal", order_id=order_id, field=where
        )
    # The sign of the amount as it goes on the wire: -0.004 EUR is 0.00, not a discount.
    rounded = _round(amount, exponent, order_id, field)
    if rounded < 0:
        raise InvalidOrder("must be >= 0", order_id=order_id, field=field)
    return rounded


def usable_clicks(clicks: Mapping[Any, Any]) -> dict[str, str]:
    """The entries of a click map that can go on the wire: a productId with an id's text
    (integers read as strings), a searchLogId that is a non-empty string of at most
    MAX_ID_LENGTH characters without control characters."""
    usable: dict[str, str] = {}
    for key, value in clicks.items():
        product_id = id_text(key)
        if product_id is None or len(product_id) > MAX_ID_LENGTH or BAD_ID_CHAR.search(product_id):
            continue
        if (
            isinstance(value, str)
            and value.strip()
            and len(value) <= MAX_ID_LENGTH
            and not BAD_ID_CHAR.search(value)
        ):
            usable.setdefault(product_id, value)
    return usable


def clicked_key(line: OrderLine, clicked: Mapping[str, str]) -> str | None:
    """The click-map key a line is attributed under: the first of its ids in ``clicked``."""
    for key in line.ids():
        if key in clicked:
            return key
    return None


def _loose_line_total(line: OrderLine, exponent: Decimal, order_id: str, where: str) -> Decimal:
    """The total of a line that is not attributed, leniently: any finite quantity and
    price (negative for a discount line); 0 when it cannot be read."""
    try:
        if line.line_total is not None:
            amount = _to_decimal(line.line_total, order_id, f"{where}.lineTotal")
        elif line.unit_price is not None:
            quantity = _to_decimal(line.quantity, order_id, f"{where}.quantity")
            field = f"{where}.unitPrice"
            price = _to_decimal(line.unit_price, order_id, field)
            amount = _times(price, quantity, order_id, field)
        else:
            return Decimal(0)
        return _round(amount, exponent, order_id, where)
    except InvalidOrder as exc:
        logger.debug("flask-neuroon: %s left out of the lines' sum: %s", where, exc)
        return Decimal(0)


def _scale(
    entries: list[_Entry], factor_num: Decimal, factor_den: Decimal, exponent: Decimal
) -> Decimal:
    """Scale entry totals by num/den; the entries then add up to the returned total exactly."""
    exact = [entry.line_total * factor_num / factor_den for entry in entries]
    total = sum(exact, Decimal(0)).quantize(exponent, rounding=ROUND_HALF_UP)
    floors = [value.quantize(exponent, rounding=ROUND_DOWN) for value in exact]
    remainder_units = int((total - sum(floors, Decimal(0))) / exponent)
    # Largest fractional remainder first; ties keep the order of the lines.
    by_remainder = sorted(range(len(entries)), key=lambda i: floors[i] - exact[i])
    for rank, index in enumerate(by_remainder):
        entries[index].line_total = floors[index] + (exponent if rank < remainder_units else 0)
    return total


def build_payload(order: Order, clicks: Mapping[str, str]) -> dict[str, Any]:
    """The contract's body for ``order``, attributing the lines found in ``clicks``.

    Returns a dict whose money values are :class:`~decimal.Decimal`; serialize it with
    :func:`dumps_payload`. Raises :class:`InvalidOrder` naming the order and the field.
    """
    if not isinstance(order, Order):
        raise InvalidOrder(f"is a {type(order).__name__}, not an Order: adapt it first")
    order_id = _required_id(order.id, None, "orderId")
    if not isinstance(clicks, Mapping):
        raise InvalidOrder(
            f"clicks must be a mapping of productId to searchLogId, not {type(clicks).__name__}",
            order_id=order_id,
            field="clicks",
        )
    currency_raw = order.currency
    if currency_raw is None or (isinstance(currency_raw, str) and not currency_raw.strip()):
        raise InvalidOrder("currency is missing", order_id=order_id, field="currency")
    currency = str(currency_raw).strip().upper()
    digits = minor_units(currency)
    if digits is None:
        raise InvalidOrder(
            f"currency {str(currency_raw)[:20]!r} is not an ISO 4217 code",
            order_id=order_id,
            field="currency",
        )
    exponent = Decimal((0, (1,), -digits))  # built exactly, no context involved

    with localcontext(_MONEY):
        if order.total is None:
            raise InvalidOrder("orderValue is missing", order_id=order_id, field="orderValue")
        order_value = _round(
            _to_decimal(order.total, order_id, "orderValue"), exponent, order_id, "orderValue"
        )
        if order_value < 0:
            raise InvalidOrder(
                "orderValue must be >= 0: refunds use a different endpoint",
                order_id=order_id,
                field="orderValue",
            )
        lines: Any = order.lines
        if isinstance(lines, (str, bytes, Mapping)) or not isinstance(lines, Iterable):
            raise InvalidOrder(
                "lines must be a list of order lines", order_id=order_id, field="lines"
            )

        clicked = usable_clicks(clicks)
        entries: dict[str, _Entry] = {}
        lines_sum = Decimal(0)  # the lines at their own prices
        discounts = Decimal(0)  # discount lines (negative totals)
        product_discounts: dict[str, Decimal] = {}  # negative lines of a clicked product
        for index, line in enumerate(lines):
            where = f"lines[{index}]"
            if not isinstance(line, OrderLine):
                raise InvalidOrder("is not an order line", order_id=order_id, field=where)
            key = clicked_key(line, clicked)
            if key is not None:
                try:
                    quantity = _quantity(line.quantity, order_id, f"{where}.quantity")
                    total = _line_total(line, quantity, exponent, order_id, where)
                except InvalidOrder as exc:
                    loose = _loose_line_total(line, exponent, order_id, where)
                    if loose < 0:
                        # A discount line of the clicked product: it lowers that entry.
                        product_discounts[key] = product_discounts.get(key, Decimal(0)) + loose
                        continue
                    uncounted = _uncounted_quantity(line.quantity)
                    if uncounted is None:
                        raise  # wrong data (no price, NaN, "two"): fix it, then track again
                    # A free gift (0) or a weighed product (0.5): real, but not units.
                    total = _line_total(line, uncounted, exponent, order_id, where)
                    logger.warning(
                        "flask-neuroon: order %s: %s, a clicked product (%s), is not"
                        " attributed: %s: %s (the contract counts whole units)",
                        order_id,
                        where,
                        key,
                        exc.field or where,
                        exc.reason,
                    )
                    lines_sum += total
                    continue
                lines_sum += total
                entry = entries.get(key)
                if entry is None:
                    entries[key] = _Entry(key, clicked[key], quantity, total)
                else:
                    entry.quantity += quantity
                    entry.line_total += total
                continue
            # Not attributed, so not on the wire: a discount, shipping or gift line, or a
            # weighed product, only counts towards the sums (when readable).
            total = _loose_line_total(line, exponent, order_id, where)
            if total < 0:
                discounts += total
            else:
                lines_sum += total
        for key, reduction in product_discounts.items():
            entry = entries.get(key)
            if entry is None:
                discounts += reduction  # no unit of it to lower: an order-level discount
                logger.warning(
                    "flask-neuroon: order %s: the clicked product %s has only lines below"
                    " zero (%s in all: a negative quantity or price, or a discount line) and"
                    " is not attributed; they count as an order-level discount",
                    order_id,
                    key,
                    reduction,
                )
                continue
            lowered = max(entry.line_total + reduction, Decimal(0))
            lines_sum -= entry.line_total - lowered
            discounts += entry.line_total + reduction - lowered  # what it lowers beyond 0
            entry.line_total = lowered

        attributed_entries = list(entries.values())
        # What the lines were really paid: after discount lines, and never more than the
        # order's total (an order-level coupon). Attribution shares any reduction pro rata.
        paid = max(min(order_value, lines_sum + discounts), Decimal(0))
        if lines_sum > paid and attributed_entries:
            attributed = _scale(attributed_entries, paid, lines_sum, exponent)
        else:
            attributed = sum((e.line_total for e in attributed_entries), Decimal(0))
            attributed = _round(attributed, exponent, order_id, "attributedValue")

    return {
        "orderId": order_id,
        "orderValue": order_value,
        "attributedValue": attributed,
        "currency": currency,
        "conversions": [
            {
                "productId": e.product_id,
                "searchLogId": e.search_log_id,
                "quantity": e.quantity,
                "lineTotal": e.line_total,
            }
            for e in attributed_entries
        ],
    }


def _encode(value: Any) -> str:
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("cannot encode a non-finite amount")
        # No arithmetic here: the default context (28 digits) would round large amounts.
        return format(value.copy_abs() if value.is_zero() else value, "f")
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_encode(str(k))}:{_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(item) for item in value) + "]"
    if isinstance(value, float):
        raise TypeError("floats are not money: use Decimal")
    return json.dumps(value, ensure_ascii=False)


def dumps_payload(payload: Mapping[str, Any]) -> str:
    """Compact JSON for a payload, every Decimal written exactly as a JSON number."""
    return _encode(payload)


def loads_payload(text: str | bytes) -> dict[str, Any]:
    """Read a stored payload back, numbers with a fraction as Decimal."""
    value = json.loads(text, parse_float=Decimal)
    if not isinstance(value, dict):
        raise ValueError("a payload is a JSON object")
    return value


__all__ = [
    "MAX_ID_LENGTH",
    "build_payload",
    "clicked_key",
    "dumps_payload",
    "loads_payload",
    "to_decimal",
    "usable_clicks",
]
