"""Recipe: PayPal, where the shopper's return (``token`` + ``PayerID``) confirms the order.

Page: ``docs/recipes/paypal-return.md``.
Run it: ``flask --app examples.recipes.paypal_return run``.

* ``POST /orders``                   the cart (``{product id: quantity}``) becomes an order
* ``POST /orders/<id>/paypal``       creates the PayPal order, 303 to PayPal's approval page;
                                     ``@neuroon.before_gateway`` snapshots the clicks
* ``GET|POST /paypal/return``        ``return_url``: capture server-side, mark paid, 303 to
                                     the thanks page; ``@neuroon.on_order_confirmed`` tracks
* ``GET  /orders/<id>/thanks``       displays

The return is a top-level GET with Orders v2 (the Lax cookie comes along) but a cross-site
form POST in some integrations (Payments Standard with ``rm=2``, some wallets): then only
the snapshot, or the signed mirror cookie, has the clicks. The route takes both.

:class:`FakePayPal` stands in for ``api-m.paypal.com`` (Orders v2: create, capture with
``PayPal-Request-Id`` idempotency, the 422 issues) and the approval page on
``www.paypal.com``. The capture is the server-side call that proves the payment: the
query string of a return can be forged, a capture cannot.
"""

from __future__ import annotations

import logging
import secrets
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast
from urllib.parse import urlencode

from flask import Blueprint, Flask, abort, current_app, redirect, request, url_for
from flask.typing import ResponseReturnValue

from flask_neuroon import Neuroon

from .shop import OrderStore, ShopOrder, order_created

logger = logging.getLogger(__name__)

neuroon = Neuroon()
bp = Blueprint("paypal_return", __name__)


# --- the fake PayPal --------------------------------------------------------------------


class PayPalError(Exception):
    """An API error: HTTP status and the ``details[0].issue`` PayPal names."""

    def __init__(self, status: int, issue: str) -> None:
        super().__init__(f"HTTP {status}: {issue}")
        self.status = status
        self.issue = issue


@dataclass(frozen=True)
class PayPalReturn:
    """How the browser comes back from PayPal: ``method`` to ``url`` with ``form``."""

    method: str
    url: str
    form: dict[str, str]


def _paypal_id(length: int) -> str:
    alphabet = string.ascii_uppercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


@dataclass
class FakePayPal:
    """Orders v2 as PayPal answers it; no network."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: ``PayPal-Request-Id`` -> the answer given: a repeated capture gets the same one.
    _requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    def create_order(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /v2/checkout/orders``."""
        if body.get("intent") != "CAPTURE" or len(body.get("purchase_units", ())) != 1:
            raise PayPalError(422, "UNPROCESSABLE_ENTITY")
        Decimal(body["purchase_units"][0]["amount"]["value"])  # a decimal string, or raise
        context = body["payment_source"]["paypal"]["experience_context"]
        order_id = _paypal_id(17)
        self.orders[order_id] = {
            "id": order_id,
            "status": "PAYER_ACTION_REQUIRED",
            "purchase_units": [dict(body["purchase_units"][0])],
            "return_url": context["return_url"],
            "cancel_url": context["cancel_url"],
            "payer_id": None,
            "declined": False,
        }
        return {
            "id": order_id,
            "status": "PAYER_ACTION_REQUIRED",
            "links": [
                {
                    "href": f"https://api-m.paypal.com/v2/checkout/orders/{order_id}",
                    "rel": "self",
                    "method": "GET",
                },
                {
                    "href": f"https://www.paypal.com/checkoutnow?token={order_id}",
                    "rel": "payer-action",
                    "method": "GET",
                },
            ],
        }

    def approve(
        self, token: str, *, method: str = "GET", instrument_declined: bool = False
    ) -> PayPalReturn:
        """The shopper logs in and approves on www.paypal.com, and is sent to
        ``return_url`` with ``token`` and ``PayerID``: by a GET (Orders v2) or a form POST."""
        order = self.orders[token]
        order.update(status="APPROVED", payer_id=_paypal_id(13), declined=instrument_declined)
        values = {"token": token, "PayerID": order["payer_id"]}
        if method == "POST":
            return PayPalReturn("POST", order["return_url"], values)
        return PayPalReturn("GET", f"{order['return_url']}?{urlencode(values)}", {})

    def capture_order(self, order_id: str, *, request_id: str | None = None) -> dict[str, Any]:
        """``POST /v2/checkout/orders/{id}/capture`` with an optional ``PayPal-Request-Id``
        header: the same id gets the same answer instead of ``ORDER_ALREADY_CAPTURED``."""
        if request_id is not None and request_id in self._requests:
            return self._requests[request_id]
        order = self.orders.get(order_id)
        if order is None:
            raise PayPalError(404, "RESOURCE_NOT_FOUND")
        if order["status"] == "COMPLETED":
            raise PayPalError(422, "ORDER_ALREADY_CAPTURED")
        if order["status"] != "APPROVED":
            raise PayPalError(422, "ORDER_NOT_APPROVED")
        if order["declined"]:
            raise PayPalError(422, "INSTRUMENT_DECLINED")
        order["status"] = "COMPLETED"
        unit = order["purchase_units"][0]
        answer = {
            "id": order_id,
            "status": "COMPLETED",
            "payer": {"payer_id": order["payer_id"]},
            "purchase_units": [
                {
                    "reference_id": unit.get("reference_id"),
                    "payments": {
                        "captures": [
                            {
                                "id": _paypal_id(17),
                                "status": "COMPLETED",
                                "amount": dict(unit["amount"]),
                                "custom_id": unit.get("custom_id"),
                            }
                        ]
                    },
                }
            ],
        }
        if request_id is not None:
            self._requests[request_id] = answer
        return answer


# --- the shop ---------------------------------------------------------------------------


@dataclass
class RecipeState:
    orders: OrderStore
    paypal: FakePayPal  # a real shop: its PayPal REST client


def state() -> RecipeState:
    return cast(RecipeState, current_app.extensions["paypal_return"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The shop. ``config`` overrides the environment (``FLASK_*`` variables)."""
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=secrets.token_hex(32),  # signs the mirror cookie: the same on every host
        NEUROON_SNAPSHOTS="both",  # storage, and the mirror cookie for a cross-site POST
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    neuroon.init_app(app)
    app.extensions["paypal_return"] = RecipeState(OrderStore(), FakePayPal())
    app.register_blueprint(bp)
    return app


@bp.post("/orders")
def create_order() -> ResponseReturnValue:
    return order_created(state().orders, request.form)


@bp.post("/orders/<order_id>/paypal")
@neuroon.before_gateway(order_id="order_id")  # snapshot, once this answers below 400
def start_paypal(order_id: str) -> ResponseReturnValue:
    """Create the PayPal order and send the shopper to approve it."""
    order = state().orders.get(order_id)
    if order is None:
        abort(404)
    if order.paid:
        abort(409, "this order is paid")
    try:
        created = state().paypal.create_order(
            {
                "intent": "CAPTURE",
                "purchase_units": [
                    {
                        "reference_id": order.id,
                        "custom_id": order.id,
                        "amount": {"currency_code": order.currency, "value": str(order.total)},
                    }
                ],
                "payment_source": {
                    "paypal": {
                        "experience_context": {
                            "return_url": url_for(".paypal_return", _external=True),
                            "cancel_url": url_for(".thanks", order_id=order.id, _external=True),
                            "user_action": "PAY_NOW",
                        }
                    }
                },
            }
        )
    except PayPalError as exc:
        logger.error("PayPal refused order %s: %s", order.id, exc)
        return {"error": "the payment could not be started"}, 502  # no snapshot either
    state().orders.set_gateway_ref(order.id, created["id"])
    approve = next(link["href"] for link in created["links"] if link["rel"] == "payer-action")
    return redirect(approve, code=303)


def order_id_for_token() -> str | None:
    """Which of our orders this return is about: PayPal's ``token`` is its order id."""
    order = state().orders.by_gateway_ref(request.values.get("token", ""))
    return order.id if order is not None else None


def load_paid_order(order_id: Any) -> ShopOrder | None:
    """What ``on_order_confirmed`` tracks: the order only if it really is paid."""
    return state().orders.get_paid(order_id)


def captured_in_full(capture: Mapping[str, Any], order: ShopOrder) -> bool:
    captures = capture["purchase_units"][0]["payments"]["captures"]
    return capture.get("status") == "COMPLETED" and any(
        c.get("status") == "COMPLETED"
        and c["amount"]["currency_code"] == order.currency
        and Decimal(c["amount"]["value"]) == order.total
        for c in captures
    )


@bp.route("/paypal/return", methods=["GET", "POST"])
@neuroon.on_order_confirmed(load_order=load_paid_order, order_id=order_id_for_token)
def paypal_return() -> ResponseReturnValue:
    """The shopper is back (a GET, or a cross-site POST without the Lax cookie). Capture
    server-side; answer 4xx when nothing was confirmed, so nothing is tracked. A reload
    captures nothing twice (``PayPal-Request-Id``) and tracks as a ``duplicate``."""
    order = state().orders.by_gateway_ref(request.values.get("token", ""))
    if order is None or not request.values.get("PayerID"):
        return "This PayPal payment is not one of ours.", 400
    if not order.paid:
        try:
            capture = state().paypal.capture_order(
                order.gateway_ref or "", request_id=f"capture-{order.id}"
            )
        except PayPalError as exc:
            logger.warning("PayPal capture of order %s failed: %s", order.id, exc)
            return f"PayPal did not complete the payment ({exc.issue}).", 402
        if not captured_in_full(capture, order):
            logger.error("PayPal captured something else than order %s", order.id)
            return "The payment does not match the order.", 402
        state().orders.mark_paid(order.id)
    return redirect(url_for(".thanks", order_id=order.id), code=303)


@bp.get("/orders/<order_id>/thanks")
def thanks(order_id: str) -> ResponseReturnValue:
    order = state().orders.get(order_id)
    if order is None:
        abort(404)
    if order.paid:
        return f"Thank you! Order {order.id} is paid."
    return f"Order {order.id} is not paid."


__all__ = ["FakePayPal", "PayPalError", "PayPalReturn", "create_app", "neuroon"]
