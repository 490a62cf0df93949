"""Recipe: Redsys-style payment, confirmed by the bank's signed notification.

Page: ``docs/recipes/redsys-notification.md``.
Run it: ``flask --app examples.recipes.redsys run``.

* ``POST /orders``                 the cart (``{product id: quantity}``) becomes an order whose
                                   id is a 12-character ``Ds_Order``
* ``POST /orders/<id>/pay``        a page that auto-posts the signed payment request to the
                                   TPV; ``@neuroon.before_gateway`` snapshots the clicks
* ``POST /redsys/notification``    ``DS_MERCHANT_MERCHANTURL``: the bank, server to server, no
                                   cookie. Verify ``Ds_Signature``, mark paid, ``track_conversion``
* ``GET  /redsys/ok`` / ``/ko``    ``URLOK`` / ``URLKO``: the shopper's browser; display only

The protocol is Redsys' (``Ds_SignatureVersion=HMAC_SHA256_V1``, ``Ds_MerchantParameters``
= base64 of a JSON object, ``Ds_Signature`` = base64 HMAC-SHA256 of the parameters string
under a key derived per order from the merchant secret), with one simplification: Redsys
derives the per-order key by 3DES-CBC-encrypting ``Ds_Order`` with the secret, and the
standard library has no 3DES, so :func:`order_key` uses HMAC-SHA256 of ``Ds_Order``
instead. A real shop computes the key with its Redsys library (or ``cryptography``); the
rest — what is signed, base64url in notifications, constant-time comparison, the order
read from the parameters before the signature can be checked — is as Redsys does it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote, urlencode

from flask import Blueprint, Flask, abort, current_app, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup

from flask_neuroon import Neuroon

from .shop import (
    OrderStore,
    ShopOrder,
    from_minor_units,
    minor_units,
    order_created,
)

logger = logging.getLogger(__name__)

neuroon = Neuroon()
bp = Blueprint("redsys", __name__)

SIGNATURE_VERSION = "HMAC_SHA256_V1"
#: ISO 4217 numeric codes, as Redsys wants them.
NUMERIC_CURRENCY = {"EUR": "978"}
#: ``Ds_Order``: 4 to 12 characters, the first four digits (the recipe always uses 12).
DS_ORDER = re.compile(r"[0-9]{4}[0-9A-Za-z]{0,8}")
TPV_URL = "https://sis-t.redsys.es:25443/sis/realizarPago"


def new_ds_order() -> str:
    """A fresh 12-character ``Ds_Order``: 4 digits, then 8 alphanumerics."""
    return f"{secrets.randbelow(10_000):04d}{secrets.token_hex(4).upper()}"


# --- the signature (both sides) -----------------------------------------------------------


def order_key(secret: str, ds_order: str) -> bytes:
    """The per-order signing key. SIMPLIFIED: Redsys uses 3DES-CBC (zero IV) of
    ``Ds_Order`` under the base64-decoded secret; this stand-in uses HMAC-SHA256."""
    return hmac.new(base64.b64decode(secret), ds_order.encode(), hashlib.sha256).digest()


def redsys_signature(secret: str, ds_order: str, merchant_parameters: str) -> bytes:
    """HMAC-SHA256 of the ``Ds_MerchantParameters`` string, as sent, under the order key."""
    return hmac.new(
        order_key(secret, ds_order), merchant_parameters.encode(), hashlib.sha256
    ).digest()


def encode_parameters(parameters: Mapping[str, str]) -> str:
    return base64.b64encode(json.dumps(dict(parameters)).encode()).decode()


class SignatureError(ValueError):
    """The notification is not signed by the bank for this order."""


def decode_signature(value: str) -> bytes:
    """``Ds_Signature`` is base64url in notifications, plain base64 in requests."""
    try:
        return base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except binascii.Error:
        raise SignatureError("Ds_Signature is not base64") from None


def verify_notification(form: Mapping[str, str], secret: str) -> dict[str, str]:
    """The decoded ``Ds_MerchantParameters`` of a genuine notification; raises
    :class:`SignatureError`. The order must be read from the (not yet trusted) parameters
    to derive the key; nothing else is used before the signature matched."""
    if form.get("Ds_SignatureVersion") != SIGNATURE_VERSION:
        raise SignatureError("unknown Ds_SignatureVersion")
    raw = form.get("Ds_MerchantParameters", "")
    try:
        params = json.loads(base64.b64decode(raw.replace("-", "+").replace("_", "/")))
    except (binascii.Error, ValueError):
        raise SignatureError("Ds_MerchantParameters is not base64 JSON") from None
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise SignatureError("Ds_MerchantParameters is not an object of strings")
    ds_order = params.get("Ds_Order", "")
    if not DS_ORDER.fullmatch(ds_order):
        raise SignatureError("no valid Ds_Order")
    expected = redsys_signature(secret, ds_order, raw)
    if not hmac.compare_digest(expected, decode_signature(form.get("Ds_Signature", ""))):
        raise SignatureError("Ds_Signature does not match")
    return params


# --- the fake bank ----------------------------------------------------------------------


class RedsysError(Exception):
    """The TPV refused the payment request (an ``SISxxxx`` error page)."""


@dataclass(frozen=True)
class RedsysOutcome:
    """What the bank does after the shopper paid (or not)."""

    notification_url: str  # POSTed server to server ...
    notification: dict[str, str]  # ... with these form fields
    return_url: str  # URLOK or URLKO with the same fields in the query: the browser's GET


@dataclass
class FakeRedsys:
    secret: str  # base64, as in the Redsys admin panel
    merchant_code: str
    used_orders: set[str] = field(default_factory=set)

    def receive(self, form: Mapping[str, str]) -> dict[str, str]:
        """The TPV receives the shopper's auto-submitted form and checks it."""
        raw = form.get("Ds_MerchantParameters", "")
        params = json.loads(base64.b64decode(raw))
        ds_order = params.get("DS_MERCHANT_ORDER", "")
        if not DS_ORDER.fullmatch(ds_order):
            raise RedsysError("DS_MERCHANT_ORDER: 4 to 12 characters, the first 4 digits")
        expected = redsys_signature(self.secret, ds_order, raw)
        if form.get("Ds_SignatureVersion") != SIGNATURE_VERSION or not hmac.compare_digest(
            expected, base64.b64decode(form.get("Ds_Signature", ""))
        ):
            raise RedsysError("SIS0042: the signature is wrong")
        if ds_order in self.used_orders:
            raise RedsysError("SIS0051: repeated order number")
        if params.get("DS_MERCHANT_MERCHANTCODE") != self.merchant_code:
            raise RedsysError("unknown merchant")
        self.used_orders.add(ds_order)
        return dict(params)

    def pay(self, form: Mapping[str, str], *, approve: bool = True) -> RedsysOutcome:
        """The shopper pays on the TPV: the bank signs a notification for the shop's
        MERCHANTURL and sends the browser to URLOK (or URLKO)."""
        params = self.receive(form)
        now = time.localtime()
        notification_params = {
            # Redsys writes the date and hour URL-encoded inside the JSON, really.
            "Ds_Date": quote(time.strftime("%d/%m/%Y", now), safe=""),
            "Ds_Hour": quote(time.strftime("%H:%M", now), safe=""),
            "Ds_SecurePayment": "1",
            "Ds_Amount": params["DS_MERCHANT_AMOUNT"],
            "Ds_Currency": params["DS_MERCHANT_CURRENCY"],
            "Ds_Order": params["DS_MERCHANT_ORDER"],
            "Ds_MerchantCode": params["DS_MERCHANT_MERCHANTCODE"],
            "Ds_Terminal": params["DS_MERCHANT_TERMINAL"],
            "Ds_Response": "0000" if approve else "0190",
            "Ds_TransactionType": params["DS_MERCHANT_TRANSACTIONTYPE"],
            "Ds_MerchantData": "",
            "Ds_AuthorisationCode": f"{secrets.randbelow(10**6):06d}" if approve else "",
            "Ds_ConsumerLanguage": "1",
        }
        return self.sign(params, notification_params, approve=approve)

    def sign(
        self, request_params: Mapping[str, str], params: Mapping[str, str], *, approve: bool
    ) -> RedsysOutcome:
        raw = encode_parameters(params)
        signature = redsys_signature(self.secret, params["Ds_Order"], raw)
        fields = {
            "Ds_SignatureVersion": SIGNATURE_VERSION,
            "Ds_MerchantParameters": raw,
            "Ds_Signature": base64.urlsafe_b64encode(signature).decode(),
        }
        back = request_params["DS_MERCHANT_URLOK" if approve else "DS_MERCHANT_URLKO"]
        return RedsysOutcome(
            request_params["DS_MERCHANT_MERCHANTURL"], fields, f"{back}?{urlencode(fields)}"
        )


# --- the shop ---------------------------------------------------------------------------


@dataclass
class RecipeState:
    orders: OrderStore
    bank: FakeRedsys


def state() -> RecipeState:
    return cast(RecipeState, current_app.extensions["redsys"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The shop. ``config`` overrides the environment (``FLASK_*`` variables)."""
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=secrets.token_hex(32),
        REDSYS_SECRET=base64.b64encode(secrets.token_bytes(24)).decode(),
        REDSYS_MERCHANT_CODE="999008881",
        REDSYS_TERMINAL="1",
        # Only the notification confirms: a mirror cookie would never reach it.
        NEUROON_SNAPSHOTS="storage",
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    neuroon.init_app(app)
    bank = FakeRedsys(app.config["REDSYS_SECRET"], app.config["REDSYS_MERCHANT_CODE"])
    app.extensions["redsys"] = RecipeState(OrderStore(new_ds_order), bank)
    app.register_blueprint(bp)
    return app


@bp.post("/orders")
def create_order() -> ResponseReturnValue:
    return order_created(state().orders, request.form)


def payment_request(order: ShopOrder) -> dict[str, str]:
    """The three fields of the form the shopper's browser posts to the TPV."""
    config = current_app.config
    raw = encode_parameters(
        {
            "DS_MERCHANT_AMOUNT": str(minor_units(order.total)),
            "DS_MERCHANT_ORDER": order.id,
            "DS_MERCHANT_MERCHANTCODE": config["REDSYS_MERCHANT_CODE"],
            "DS_MERCHANT_CURRENCY": NUMERIC_CURRENCY[order.currency],
            "DS_MERCHANT_TRANSACTIONTYPE": "0",
            "DS_MERCHANT_TERMINAL": config["REDSYS_TERMINAL"],
            "DS_MERCHANT_MERCHANTURL": url_for(".notification", _external=True),
            "DS_MERCHANT_URLOK": url_for(".url_ok", _external=True),
            "DS_MERCHANT_URLKO": url_for(".url_ko", _external=True),
        }
    )
    signature = redsys_signature(config["REDSYS_SECRET"], order.id, raw)
    return {
        "Ds_SignatureVersion": SIGNATURE_VERSION,
        "Ds_MerchantParameters": raw,
        "Ds_Signature": base64.b64encode(signature).decode(),
    }


@bp.post("/orders/<order_id>/pay")
@neuroon.before_gateway(order_id="order_id")  # snapshot, once this answers below 400
def pay(order_id: str) -> ResponseReturnValue:
    """A same-site POST (the click cookie is here) answered by a page that auto-posts the
    signed request to the TPV."""
    order = state().orders.get(order_id)
    if order is None:
        abort(404)
    if order.paid:
        abort(409, "this order is paid")
    inputs = Markup("").join(
        Markup('<input type="hidden" name="{}" value="{}">').format(name, value)
        for name, value in payment_request(order).items()
    )
    return Markup(
        "<!doctype html><title>Redirecting to your bank…</title>"
        '<form method="post" action="{}">{}<noscript><button>Pay</button></noscript></form>'
        "<script>document.forms[0].submit()</script>"
    ).format(TPV_URL, inputs)


def authorised(ds_response: str) -> bool:
    """``Ds_Response`` 0000 to 0099: authorised; anything else: denied or an error."""
    return ds_response.isdigit() and int(ds_response) <= 99


@bp.post("/redsys/notification")
def notification() -> ResponseReturnValue:
    """The bank, server to server: no cookie, no session. Confirm here, and only here."""
    try:
        params = verify_notification(request.form, current_app.config["REDSYS_SECRET"])
    except SignatureError as exc:
        logger.warning("refused a Redsys notification: %s", exc)
        return "invalid signature", 400
    order = state().orders.get(params["Ds_Order"])
    if order is None or params.get("Ds_MerchantCode") != current_app.config["REDSYS_MERCHANT_CODE"]:
        logger.error("Redsys notified an order that is not ours: %s", params.get("Ds_Order"))
        return "unknown order", 400
    if not authorised(params.get("Ds_Response", "")):
        logger.info("Redsys denied order %s (%s)", order.id, params.get("Ds_Response"))
        return "OK"  # acknowledged; nothing confirmed, nothing tracked
    amount = params.get("Ds_Amount", "")
    if (
        not amount.isdigit()
        or from_minor_units(amount) != order.total
        or params.get("Ds_Currency") != NUMERIC_CURRENCY[order.currency]
    ):
        logger.error("Redsys notification does not match order %s", order.id)
        return "amount mismatch", 400
    paid = state().orders.mark_paid(order.id)  # idempotent: a notification may come twice
    # The snapshot taken by @before_gateway, under this very Ds_Order; a repeat is a
    # "duplicate" and sends nothing.
    delivery = neuroon.track_conversion(paid)
    return f"OK {delivery.status}"


def order_of_return() -> ShopOrder | None:
    """The order of a URLOK/URLKO visit, if its parameters carry a genuine signature."""
    try:
        params = verify_notification(request.args, current_app.config["REDSYS_SECRET"])
    except SignatureError:
        return None
    return state().orders.get(params["Ds_Order"])


@bp.get("/redsys/ok")
def url_ok() -> ResponseReturnValue:
    """URLOK: a top-level GET (the Lax cookie is back). Display only: the notification
    confirms, and it may come before or after this page."""
    order = order_of_return()
    if order is None:
        return "Thank you! We are confirming your payment."
    if order.paid:
        return f"Thank you! Order {order.id} is paid."
    return f"Thank you! We are confirming the payment of order {order.id}."


@bp.get("/redsys/ko")
def url_ko() -> ResponseReturnValue:
    return "The payment was not completed."


__all__ = [
    "FakeRedsys",
    "SignatureError",
    "create_app",
    "neuroon",
    "order_key",
    "redsys_signature",
    "verify_notification",
]
