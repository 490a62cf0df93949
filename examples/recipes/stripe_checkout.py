"""Recipe: Stripe Checkout, confirmed by the ``checkout.session.completed`` webhook.

Page: ``docs/recipes/stripe-checkout.md``.
Run it: ``flask --app examples.recipes.stripe_checkout run``.

* ``POST /orders``                      the cart (``{product id: quantity}``) becomes an order
* ``POST /orders/<id>/checkout``        creates the Checkout Session, 303 to Stripe;
                                        ``@neuroon.before_gateway`` snapshots the clicks
* ``POST /webhooks/stripe``             Stripe, server to server, no cookie: verify the
                                        ``Stripe-Signature``, mark paid, ``track_conversion``
* ``GET  /orders/<id>/thanks``          the ``success_url``: displays, never tracks

:class:`FakeStripe` stands in for ``api.stripe.com`` and ``checkout.stripe.com``: it
creates sessions the shape Stripe does, "takes the payment" and signs the webhook the way
Stripe documents (``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">``).
The shop verifies that header with :func:`verify_stripe_signature` (standard library), as
``stripe.Webhook.construct_event`` would.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Blueprint, Flask, abort, current_app, jsonify, redirect, request, url_for
from flask.typing import ResponseReturnValue

from flask_neuroon import Neuroon

from .shop import OrderStore, ShopOrder, minor_units, order_created

logger = logging.getLogger(__name__)

neuroon = Neuroon()
bp = Blueprint("stripe_checkout", __name__)

#: Stripe's default tolerance for the signature's timestamp (replayed events), seconds.
SIGNATURE_TOLERANCE = 300
#: Events after which a Checkout Session may be paid (delayed methods: the second one).
PAID_EVENTS = ("checkout.session.completed", "checkout.session.async_payment_succeeded")
#: Stripe metadata: at most 500 characters per value.
METADATA_VALUE_MAX = 500


# --- the shop's side of Stripe's webhook signature ---------------------------------------


class SignatureError(ValueError):
    """The ``Stripe-Signature`` header does not prove that Stripe sent this body."""


def stripe_signature(payload: bytes, secret: str, timestamp: int) -> str:
    """The ``v1`` signature: hex HMAC-SHA256, keyed by the endpoint secret, of
    ``"{timestamp}.{payload}"``."""
    signed = f"{timestamp}.".encode() + payload
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def verify_stripe_signature(
    payload: bytes,
    header: str,
    secret: str,
    *,
    tolerance: int = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> dict[str, Any]:
    """The event in ``payload`` if ``header`` is a valid ``Stripe-Signature`` for it.

    As Stripe documents it: split the header on ``,`` into ``key=value`` pairs; ``t`` is
    the timestamp, each ``v1`` a signature (several during a secret roll); compare the
    expected signature with each in constant time; refuse a timestamp older than
    ``tolerance`` seconds. Raises :class:`SignatureError`.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("no timestamp or no v1 signature in Stripe-Signature")
    expected = stripe_signature(payload, secret, timestamp)
    if not any(hmac.compare_digest(expected, candidate) for candidate in candidates):
        raise SignatureError("no v1 signature matches the payload")
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise SignatureError("the timestamp is outside the tolerance")
    try:
        event = json.loads(payload)
    except ValueError:
        raise SignatureError("the payload is not JSON") from None
    if not isinstance(event, dict):
        raise SignatureError("the payload is not an event object")
    return event


# --- the fake Stripe -------------------------------------------------------------------


class StripeError(Exception):
    """What the API answers 400 with (``stripe.InvalidRequestError``)."""


@dataclass(frozen=True)
class SignedWebhook:
    """One delivery attempt of an event: the body and headers Stripe POSTs."""

    body: bytes
    headers: dict[str, str]


@dataclass(frozen=True)
class StripePayment:
    """What happens when the shopper pays on checkout.stripe.com."""

    success_url: str  # where the browser is sent: a top-level GET to the shop
    webhook: SignedWebhook  # what Stripe POSTs to the endpoint, server to server
    event: dict[str, Any]


@dataclass
class FakeStripe:
    """Checkout Sessions and webhook events, shaped like Stripe's; no network."""

    webhook_secret: str
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def create_checkout_session(
        self,
        *,
        mode: str,
        line_items: list[dict[str, Any]],
        success_url: str,
        cancel_url: str,
        client_reference_id: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """``stripe.checkout.Session.create(...)``."""
        if mode != "payment":
            raise StripeError(f"mode {mode!r} is not supported by this fake")
        currencies = {item["price_data"]["currency"] for item in line_items}
        if len(currencies) != 1 or not all(c == c.lower() for c in currencies):
            raise StripeError("line items need one lower-case currency")
        amounts = [(item["price_data"]["unit_amount"], item["quantity"]) for item in line_items]
        if not all(isinstance(a, int) and isinstance(q, int) and q > 0 for a, q in amounts):
            raise StripeError("unit_amount and quantity must be integers (minor units)")
        metadata = dict(metadata or {})
        if len(metadata) > 50 or any(
            len(k) > 40 or len(v) > METADATA_VALUE_MAX for k, v in metadata.items()
        ):
            raise StripeError("metadata: at most 50 keys, 40-character keys, 500-character values")
        session_id = f"cs_test_{secrets.token_urlsafe(24)}"
        session = {
            "id": session_id,
            "object": "checkout.session",
            "mode": mode,
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": sum(a * q for a, q in amounts),
            "currency": currencies.pop(),
            "client_reference_id": client_reference_id,
            "metadata": metadata,
            "payment_intent": None,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "url": f"https://checkout.stripe.com/c/pay/{session_id}",
        }
        self.sessions[session_id] = session
        return dict(session)

    def pay(self, session_id: str) -> StripePayment:
        """The shopper pays: the session completes, Stripe signs a
        ``checkout.session.completed`` event and sends the browser to ``success_url``."""
        session = self.sessions[session_id]
        session.update(
            status="complete",
            payment_status="paid",
            payment_intent=f"pi_{secrets.token_hex(12)}",
            url=None,
        )
        event = {
            "id": f"evt_{secrets.token_hex(12)}",
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(time.time()),
            "livemode": False,
            "data": {"object": dict(session)},
        }
        success_url = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session_id)
        return StripePayment(success_url, self.sign(event), event)

    def sign(self, event: Mapping[str, Any], timestamp: int | None = None) -> SignedWebhook:
        """One delivery of ``event`` (Stripe signs every retry afresh)."""
        body = json.dumps(event, separators=(",", ":")).encode()
        t = int(time.time()) if timestamp is None else timestamp
        header = f"t={t},v1={stripe_signature(body, self.webhook_secret, t)}"
        return SignedWebhook(body, {"Stripe-Signature": header, "Content-Type": "application/json"})


# --- the shop ---------------------------------------------------------------------------


@dataclass
class RecipeState:
    orders: OrderStore
    stripe: FakeStripe  # a real shop: stripe.StripeClient(api_key)


def state() -> RecipeState:
    return cast(RecipeState, current_app.extensions["stripe_checkout"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The shop. ``config`` overrides the environment (``FLASK_*`` variables)."""
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=secrets.token_hex(32),
        STRIPE_WEBHOOK_SECRET=f"whsec_{secrets.token_hex(16)}",
        # Only a webhook confirms: a mirror cookie would never reach it.
        NEUROON_SNAPSHOTS="storage",
        # Several hosts without shared storage: carry the clicks in the session's metadata.
        STRIPE_CLICKS_IN_METADATA=False,
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    neuroon.init_app(app)
    app.extensions["stripe_checkout"] = RecipeState(
        OrderStore(), FakeStripe(app.config["STRIPE_WEBHOOK_SECRET"])
    )
    app.register_blueprint(bp)
    return app


@bp.post("/orders")
def create_order() -> ResponseReturnValue:
    return order_created(state().orders, request.form)


def clicks_of(order: ShopOrder) -> dict[str, str]:
    """This request's clicks on the order's products: small enough for metadata."""
    wanted = {line.product_id for line in order.lines}
    return {pid: log for pid, log in neuroon.clicks.items() if pid in wanted}


@bp.post("/orders/<order_id>/checkout")
@neuroon.before_gateway(order_id="order_id")  # snapshot, once this answers below 400
def checkout(order_id: str) -> ResponseReturnValue:
    """Create the Checkout Session and send the shopper to Stripe (same-site POST: the
    click cookie is here, so the decorator can snapshot it)."""
    order = state().orders.get(order_id)
    if order is None:
        abort(404)
    if order.paid:
        abort(409, "this order is paid")
    metadata = {"order_id": order.id}
    if current_app.config["STRIPE_CLICKS_IN_METADATA"]:
        carried = json.dumps(clicks_of(order), separators=(",", ":"))
        if len(carried) <= METADATA_VALUE_MAX:
            metadata["neuroon_clicks"] = carried
    try:
        session = state().stripe.create_checkout_session(
            mode="payment",
            client_reference_id=order.id,
            line_items=[
                {
                    "price_data": {
                        "currency": order.currency.lower(),
                        "unit_amount": minor_units(line.unit_price),
                        "product_data": {"name": line.name},
                    },
                    "quantity": line.quantity,
                }
                for line in order.lines
            ],
            success_url=url_for(".thanks", order_id=order.id, _external=True)
            + "?session_id={CHECKOUT_SESSION_ID}",
            cancel_url=url_for(".thanks", order_id=order.id, _external=True),
            metadata=metadata,
        )
    except StripeError as exc:
        logger.error("Stripe refused the session of order %s: %s", order.id, exc)
        return {"error": "the payment could not be started"}, 502  # no snapshot either
    state().orders.set_gateway_ref(order.id, session["id"])
    return redirect(session["url"], code=303)


def carried_clicks(session: Mapping[str, Any]) -> dict[str, str]:
    """The clicks the session's metadata carries (STRIPE_CLICKS_IN_METADATA)."""
    raw = (session.get("metadata") or {}).get("neuroon_clicks")
    try:
        clicks = json.loads(raw) if isinstance(raw, str) else {}
    except ValueError:
        return {}
    if not isinstance(clicks, dict):
        return {}
    return {k: v for k, v in clicks.items() if isinstance(k, str) and isinstance(v, str)}


@bp.post("/webhooks/stripe")
def stripe_webhook() -> ResponseReturnValue:
    """Stripe, server to server: no cookie, no session. Confirm here, and only here."""
    try:
        event = verify_stripe_signature(
            request.get_data(),
            request.headers.get("Stripe-Signature", ""),
            current_app.config["STRIPE_WEBHOOK_SECRET"],
        )
    except SignatureError as exc:
        logger.warning("refused a Stripe webhook: %s", exc)
        return {"error": "invalid signature"}, 400
    if event.get("type") not in PAID_EVENTS:
        return {"received": True}
    session = event["data"]["object"]
    if session.get("payment_status") != "paid":  # a delayed method: wait for the next event
        return {"received": True}
    order = state().orders.get(session.get("client_reference_id"))
    if order is None:
        logger.error("Stripe session %s names no order of ours", session.get("id"))
        return {"received": True}
    if (
        session.get("amount_total") != minor_units(order.total)
        or session.get("currency") != order.currency.lower()
    ):
        logger.error("Stripe session %s does not match order %s", session.get("id"), order.id)
        return {"received": True}
    paid = state().orders.mark_paid(order.id)  # idempotent: Stripe may deliver twice
    carried = carried_clicks(session)
    if carried:  # several hosts without shared storage
        delivery = neuroon.track_conversion(paid, clicks=carried)
    else:  # the snapshot taken by @before_gateway (no cookie comes with a webhook)
        delivery = neuroon.track_conversion(paid)
    # A repeated event is "duplicate": nothing is sent twice. Answer 2xx either way, or
    # Stripe retries for three days.
    return jsonify(received=True, tracking=delivery.status)


@bp.get("/orders/<order_id>/thanks")
def thanks(order_id: str) -> ResponseReturnValue:
    """The success_url (a top-level GET: the Lax cookie is back). Display only: the
    webhook may not have arrived yet, and it is the webhook that confirms."""
    order = state().orders.get(order_id)
    if order is None:
        abort(404)
    if order.paid:
        return f"Thank you! Order {order.id} is paid."
    return f"Thank you! We are confirming the payment of order {order.id}."


__all__ = [
    "FakeStripe",
    "SignatureError",
    "create_app",
    "neuroon",
    "stripe_signature",
    "verify_stripe_signature",
]
