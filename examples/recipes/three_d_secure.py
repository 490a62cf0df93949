"""Recipe: a 3-D Secure challenge, where the issuer's ACS posts the shopper back cross-site.

Page: ``docs/recipes/3d-secure-return.md``.
Run it: ``flask --app examples.recipes.three_d_secure run``.

* ``POST /orders``                 the cart (``{product id: quantity}``) becomes an order
* ``POST /orders/<id>/pay``        same-site card form: the PSP answers ``succeeded``
                                   (frictionless: tracked right here, the cookie is present)
                                   or ``requires_action``: ``persist_before_gateway``, then an
                                   auto-submitting form to the issuer's ACS
* ``POST /3ds/return``             the ACS's cross-site form POST (``cres`` +
                                   ``threeDSSessionData``, or 3-D Secure 1's ``PaRes`` + ``MD``):
                                   no ``SameSite=Lax`` cookie. Complete the payment with the
                                   PSP, then ``track_conversion`` (snapshot, else the signed mirror
                                   cookie) and ``track_conversion``
* ``GET  /orders/<id>/thanks``     displays

``NEUROON_SNAPSHOTS="both"``: the snapshot in storage, and a signed ``SameSite=None;
Secure`` mirror cookie that the ACS's POST does carry, for hosts without shared storage
and for when storage is down.

:class:`FakePSP` plays the PSP's payments API, its 3DS server and the issuer's ACS. The
CReq/CRes are base64url JSON with EMV 3DS field names; the PaReq/PaRes of 3-D Secure 1
(deflated, XML-DSig signed) are modelled the same way. The shop never trusts the CRes it
is handed: it forwards it to the PSP, which checks it against the result the ACS sent the
3DS server directly (the RReq) — so a forged or altered one fails.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from flask import Blueprint, Flask, abort, current_app, redirect, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup, escape

from flask_neuroon import Neuroon

from .shop import OrderStore, ShopOrder, minor_units, order_created

logger = logging.getLogger(__name__)

neuroon = Neuroon()
bp = Blueprint("three_d_secure", __name__)

#: Test cards (the numbers Stripe uses in test mode for these behaviours).
CARD_FRICTIONLESS = "4242424242424242"
CARD_CHALLENGE = "4000000000003220"  # 3-D Secure 2
CARD_CHALLENGE_V1 = "4000000000003063"  # legacy 3-D Secure 1
CARD_DECLINED = "4000000000000002"
ACS_URL = "https://acs.issuer.example/challenge"


def b64url_json(data: Mapping[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url_json(text: str) -> dict[str, Any]:
    """Raises ValueError on anything but base64url of a JSON object."""
    try:
        data = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    return data


# --- the fake PSP, 3DS server and ACS ----------------------------------------------------


class PSPError(Exception):
    """The PSP refused the request (unknown payment, a CRes that is not this payment's)."""


@dataclass
class FakePSP:
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)

    def create_payment(
        self, *, amount: int, currency: str, reference: str, card: str, return_url: str
    ) -> dict[str, Any]:
        """Authorise ``amount`` minor units; 3-D Secure decides whether the cardholder
        must be challenged (``requires_action``) or not (``succeeded``)."""
        payment_id = f"pay_{secrets.token_hex(10)}"
        payment: dict[str, Any] = {
            "id": payment_id,
            "amount": amount,
            "currency": currency,
            "reference": reference,
            "status": "succeeded",
            "return_url": return_url,
        }
        if card == CARD_DECLINED:
            payment["status"] = "failed"
        elif card in (CARD_CHALLENGE, CARD_CHALLENGE_V1):
            trans = {
                "threeDSServerTransID": str(uuid.uuid4()),
                "acsTransID": str(uuid.uuid4()),
            }
            payment.update(status="requires_action", trans=trans, result=None)
            if card == CARD_CHALLENGE:
                creq = {**trans, "messageType": "CReq", "messageVersion": "2.2.0"}
                action = {"type": "threeDS2", "acs_url": ACS_URL, "creq": b64url_json(creq)}
            else:
                pareq = {**trans, "messageType": "PaReq", "messageVersion": "1.0.2"}
                action = {"type": "threeDS1", "acs_url": ACS_URL, "pareq": b64url_json(pareq)}
            payment["action"] = action
        self.payments[payment_id] = payment
        return dict(payment)

    def acs_challenge(
        self, form: Mapping[str, str], *, passed: bool = True
    ) -> tuple[str, dict[str, str]]:
        """The issuer's ACS: receives the shop's auto-submitted form, challenges the
        cardholder, tells the 3DS server the result (RReq) and auto-posts the shopper back
        to the shop. Returns ``(url, form fields)`` of that cross-site POST."""
        version2 = "creq" in form
        request_message = unb64url_json(form["creq"] if version2 else form["PaReq"])
        payment = next(
            p
            for p in self.payments.values()
            if p.get("trans", {}).get("acsTransID") == request_message["acsTransID"]
        )
        status = "Y" if passed else "N"
        payment["result"] = status  # the RReq, ACS to 3DS server: the browser never sees it
        answer = {**payment["trans"], "transStatus": status}
        if version2:
            cres = b64url_json({**answer, "messageType": "CRes", "messageVersion": "2.2.0"})
            return payment["return_url"], {
                "cres": cres,
                "threeDSSessionData": form.get("threeDSSessionData", ""),
            }
        pares = b64url_json({**answer, "messageType": "PaRes", "messageVersion": "1.0.2"})
        return form["TermUrl"], {"PaRes": pares, "MD": form.get("MD", "")}

    def complete_payment(self, payment_id: str, authentication: str) -> dict[str, Any]:
        """Finish a ``requires_action`` payment with the CRes (or PaRes) the shopper
        brought back; the outcome is the RReq's, not the browser's."""
        payment = self.payments.get(payment_id)
        if payment is None or payment["status"] != "requires_action":
            raise PSPError(f"no payment {payment_id} awaiting authentication")
        try:
            message = unb64url_json(authentication)
        except ValueError:
            raise PSPError("the authentication result is not readable") from None
        trans = payment["trans"]
        if any(message.get(key) != value for key, value in trans.items()):
            raise PSPError("the authentication result belongs to another transaction")
        if payment["result"] is None:
            raise PSPError("the ACS reported no result for this transaction")
        payment["status"] = "succeeded" if payment["result"] == "Y" else "failed"
        return dict(payment)


# --- the shop ---------------------------------------------------------------------------


@dataclass
class RecipeState:
    orders: OrderStore
    psp: FakePSP  # a real shop: its PSP's client


def state() -> RecipeState:
    return cast(RecipeState, current_app.extensions["three_d_secure"])


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """The shop. ``config`` overrides the environment (``FLASK_*`` variables)."""
    app = Flask(__name__)
    app.config.from_mapping(
        SECRET_KEY=secrets.token_hex(32),  # signs the mirror cookie: the same on every host
        NEUROON_SNAPSHOTS="both",
    )
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    neuroon.init_app(app)
    app.extensions["three_d_secure"] = RecipeState(OrderStore(), FakePSP())
    app.register_blueprint(bp)
    return app


@bp.post("/orders")
def create_order() -> ResponseReturnValue:
    return order_created(state().orders, request.form)


def session_data(order_id: str) -> str:
    """``threeDSSessionData`` / ``MD``: the shop's own data, returned as is by the ACS."""
    return base64.urlsafe_b64encode(order_id.encode()).rstrip(b"=").decode()


def order_of_session_data(value: str) -> ShopOrder | None:
    try:
        order_id = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return state().orders.get(order_id)


def acs_form(action: Mapping[str, Any], order: ShopOrder) -> str:
    """The page that auto-posts the shopper to the issuer's ACS."""
    if action["type"] == "threeDS2":
        fields = {"creq": action["creq"], "threeDSSessionData": session_data(order.id)}
    else:
        fields = {
            "PaReq": action["pareq"],
            "MD": session_data(order.id),
            "TermUrl": url_for(".three_ds_return", _external=True),
        }
    inputs = Markup("").join(
        Markup('<input type="hidden" name="{}" value="{}">').format(name, value)
        for name, value in fields.items()
    )
    return Markup(
        "<!doctype html><title>Verifying your card…</title>"
        '<form method="post" action="{}">{}<noscript><button>Continue</button></noscript>'
        "</form><script>document.forms[0].submit()</script>"
    ).format(escape(action["acs_url"]), inputs)


@bp.post("/orders/<order_id>/pay")
def pay(order_id: str) -> ResponseReturnValue:
    """The card form, posted same-site: the click cookie is here."""
    order = state().orders.get(order_id)
    if order is None:
        abort(404)
    if order.paid:
        return redirect(url_for(".thanks", order_id=order.id), code=303)
    payment = state().psp.create_payment(
        amount=minor_units(order.total),
        currency=order.currency,
        reference=order.id,
        card=request.form.get("card", ""),
        return_url=url_for(".three_ds_return", _external=True),
    )
    state().orders.set_gateway_ref(order.id, payment["id"])
    if payment["status"] == "succeeded":  # frictionless: no hop, the cookie is here
        neuroon.track_conversion(state().orders.mark_paid(order.id))
        return redirect(url_for(".thanks", order_id=order.id), code=303)
    if payment["status"] == "requires_action":
        # The ACS will post the shopper back cross-site, without the Lax cookie: keep the
        # clicks now (storage, and the signed mirror cookie set on this response).
        neuroon.persist_before_gateway(order.id)
        return acs_form(payment["action"], order)
    return "Your card was declined.", 402


@bp.post("/3ds/return")
def three_ds_return() -> ResponseReturnValue:
    """The ACS's cross-site POST. No CSRF token, no Lax cookie (not ``neuroon_clicks``,
    not the session): the PSP's answer is what this view trusts."""
    if "cres" in request.form:
        result, data = request.form["cres"], request.form.get("threeDSSessionData", "")
    elif "PaRes" in request.form:
        result, data = request.form["PaRes"], request.form.get("MD", "")
    else:
        return "Not a 3-D Secure result.", 400
    order = order_of_session_data(data)
    if order is None or order.gateway_ref is None:
        return "Unknown payment.", 400
    if not order.paid:  # else a resubmitted form: already confirmed
        try:
            payment = state().psp.complete_payment(order.gateway_ref, result)
        except PSPError as exc:
            logger.warning("3-D Secure result for order %s refused: %s", order.id, exc)
            return "The card verification could not be checked.", 400
        if payment["status"] != "succeeded":
            return "The card verification failed.", 402
        if payment["amount"] != minor_units(order.total) or payment["currency"] != order.currency:
            logger.error("payment %s does not match order %s", payment["id"], order.id)
            return "The payment does not match the order.", 402
        paid = state().orders.mark_paid(order.id)
        # No Lax cookie here: the snapshot, else the mirror. Read, not consumed, until the
        # order is queued, so a PSP webhook racing this return is attributed as well.
        neuroon.track_conversion(paid)
    return redirect(url_for(".thanks", order_id=order.id), code=303)


@bp.get("/orders/<order_id>/thanks")
def thanks(order_id: str) -> ResponseReturnValue:
    order = state().orders.get(order_id)
    if order is None:
        abort(404)
    if order.paid:
        return f"Thank you! Order {order.id} is paid."
    return f"Order {order.id} is not paid."


__all__ = ["FakePSP", "PSPError", "create_app", "neuroon"]
