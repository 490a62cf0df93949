"""The shop's side of the payment gateway's protocol: where to send the shopper, and how
to check what comes back.

The gateway returns the shopper with a form POST carrying the order id, a status and a
signature: ``URLSafeTimedSerializer(shared_secret, salt=RETURN_SALT)`` over
``{"order", "status", "amount", "currency"}``. The return URL is public, and a cross-site
POST cannot carry a CSRF token, so the signature is what makes the return trustworthy:
verify it, and check the amount and currency against the order, before marking it paid.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import urlencode

from itsdangerous import BadData, URLSafeTimedSerializer

#: Part of the gateway's protocol (the same on both sides).
RETURN_SALT = "fake-gateway-return"
#: A return older than this is refused (a replayed old form).
RETURN_MAX_AGE = 3600


@dataclass(frozen=True)
class PaymentReturn:
    order_id: str
    status: str
    amount: Decimal
    currency: str


def gateway_redirect_url(
    gateway_url: str, *, order_id: str, amount: Decimal, currency: str, return_url: str
) -> str:
    query = urlencode(
        {"order": order_id, "amount": str(amount), "currency": currency, "return_url": return_url}
    )
    return f"{gateway_url}?{query}"


def verify_return(secret: str, order_id: str, signature: str) -> PaymentReturn | None:
    """The signed payment result for ``order_id``, or None if the signature is not valid."""
    serializer = URLSafeTimedSerializer(secret, salt=RETURN_SALT)
    try:
        data = serializer.loads(signature, max_age=RETURN_MAX_AGE)
    except BadData:
        return None
    if not isinstance(data, dict) or data.get("order") != order_id:
        return None
    try:
        amount = Decimal(str(data["amount"]))
        return PaymentReturn(order_id, str(data["status"]), amount, str(data["currency"]))
    except (KeyError, InvalidOperation):
        return None
