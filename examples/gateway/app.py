"""A fake payment gateway that returns the shopper the way PayPal or Redsys do: by a form
POST to the shop, auto-submitted by a script, from the gateway's own site.

``GET /pay?order=&amount=&currency=&return_url=``
    A card page with a Pay and a Cancel button.
``POST /pay``
    "Charges the card" and answers a page whose ``<form method="post"
    action="{return_url}">`` carries ``order``, ``status`` and ``signature`` and is
    submitted by ``document.forms[0].submit()`` (a button does it without JavaScript).

Served on another site than the shop (``localhost`` vs ``127.0.0.1`` in the demo), that
return POST is cross-site: the browser does not send the shop's ``SameSite=Lax`` cookies
with it. The signature (itsdangerous, ``GATEWAY_SECRET`` shared with the shop) is what
the shop checks instead.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, abort, current_app, render_template, request
from flask.typing import ResponseReturnValue
from itsdangerous import URLSafeTimedSerializer

#: Part of the protocol: the shop verifies with the same salt (examples/shop/payments.py).
RETURN_SALT = "fake-gateway-return"

gateway = Blueprint("gateway", __name__)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=secrets.token_hex(32),
        GATEWAY_SECRET=secrets.token_hex(32),  # set it to the shop's GATEWAY_SECRET
    )
    if config:
        app.config.update(config)
    app.register_blueprint(gateway)
    return app


@dataclass(frozen=True)
class PaymentRequest:
    order_id: str
    amount: Decimal
    currency: str
    return_url: str


def _payment_request(values: Mapping[str, str]) -> PaymentRequest:
    """The shop's request, checked; 400 for anything malformed."""
    order_id = values.get("order", "").strip()
    currency = values.get("currency", "")
    return_url = values.get("return_url", "")
    try:
        amount = Decimal(values.get("amount", ""))
    except InvalidOperation:
        abort(400, "amount must be a decimal number")
    if not amount.is_finite() or amount <= 0:
        abort(400, "amount must be a positive decimal number")
    if not order_id or len(order_id) > 64:
        abort(400, "order is required")
    if not re.fullmatch(r"[A-Z]{3}", currency):
        abort(400, "currency must be an ISO 4217 code")
    parts = urlsplit(return_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        abort(400, "return_url must be an http(s) URL")
    return PaymentRequest(order_id, amount, currency, return_url)


@gateway.get("/pay")
def card_page() -> ResponseReturnValue:
    return render_template("pay.html", payment=_payment_request(request.args))


@gateway.post("/pay")
def charge() -> ResponseReturnValue:
    payment = _payment_request(request.form)
    status = "paid" if request.form.get("action") == "pay" else "cancelled"
    serializer = URLSafeTimedSerializer(current_app.config["GATEWAY_SECRET"], salt=RETURN_SALT)
    signature = serializer.dumps(
        {
            "order": payment.order_id,
            "status": status,
            "amount": str(payment.amount),
            "currency": payment.currency,
        }
    )
    return render_template("return.html", payment=payment, status=status, signature=signature)
