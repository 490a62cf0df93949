"""The gateway recipes (examples/recipes, docs/recipes), driven the way a browser and a
gateway drive a shop, against the real fake API on loopback.

:class:`Browser` keeps one cookie jar and applies the SameSite rules per hop: a same-site
request carries every cookie; a cross-site top-level GET (a redirect back from the
gateway) carries ``Lax`` and ``None`` cookies; a cross-site form POST (an auto-submitted
return) carries only ``SameSite=None; Secure`` ones. Server-to-server calls (webhooks,
notifications) come from a client with no cookies at all.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from flask import Flask
from werkzeug.test import TestResponse

from examples.recipes import paypal_return, redsys, stripe_checkout, three_d_secure
from flask_neuroon import StorageError
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import base_config
from .shop import click_cookie

SHOP = "https://shop.example"
SAME_SITE = "same-site"
CROSS_SITE = "cross-site"
#: The cart: 2 x SKU-RED (19.99, the clicked search result) + 1 x SKU-BLUE (24.99).
CART = {"SKU-RED": "2", "SKU-BLUE": "1"}
ORDER_VALUE = Decimal("64.97")
ATTRIBUTED = Decimal("39.98")
SECRET_KEY = "the-same-secret-key-on-every-host"


# --- a browser with SameSite rules -------------------------------------------------------


@dataclass
class JarCookie:
    value: str
    samesite: str  # "lax", "strict" or "none"
    secure: bool


class Browser:
    """One shopper's browser. ``hop`` says who initiates each request: the shop's own
    page (same-site) or another site (the gateway, the ACS, the bank)."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.jar: dict[str, JarCookie] = {}
        self.last_sent: set[str] = set()

    def click_search_result(self, api: FakeNeuroonAPI, product_id: str) -> str:
        """The widget writes its cookie (SameSite=Lax) with a searchLogId from the API."""
        log_id = api.issue_search_log_id(product_id, "mug")
        self.jar["neuroon_clicks"] = JarCookie(click_cookie({product_id: log_id}), "lax", False)
        return log_id

    def _sends(self, cookie: JarCookie, method: str, hop: str) -> bool:
        if hop == SAME_SITE or cookie.samesite == "none":
            return True
        return cookie.samesite == "lax" and method == "GET"  # a top-level navigation

    def request(
        self,
        method: str,
        url: str,
        *,
        hop: str,
        data: dict[str, str] | None = None,
        host: Flask | None = None,
    ) -> TestResponse:
        """``host``: which of the shop's servers the load balancer picks."""
        parts = urlsplit(url)
        base_url = f"{parts.scheme}://{parts.netloc}" if parts.netloc else SHOP
        assert base_url == SHOP, f"the browser left the shop: {url}"
        sent = {n: c.value for n, c in self.jar.items() if self._sends(c, method, hop)}
        self.last_sent = set(sent)
        headers = {"Cookie": "; ".join(f"{n}={v}" for n, v in sent.items())} if sent else {}
        client = (host or self.app).test_client(use_cookies=False)
        response = client.open(
            parts.path,
            base_url=base_url,
            method=method,
            query_string=parts.query,
            data=data,
            headers=headers,
        )
        self._store(response)
        return response

    def _store(self, response: TestResponse) -> None:
        for header in response.headers.getlist("Set-Cookie"):
            jar: SimpleCookie = SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                samesite = (morsel["samesite"] or "lax").lower()
                secure = bool(morsel["secure"])
                if morsel["max-age"] == "0" or (samesite == "none" and not secure):
                    self.jar.pop(name, None)  # deleted, or refused by the browser
                else:
                    self.jar[name] = JarCookie(morsel.value, samesite, secure)


def server_to_server(app: Flask, path: str, **kwargs: Any) -> TestResponse:
    """A webhook or notification: the gateway's server calls the shop's. No cookie."""
    response = app.test_client(use_cookies=False).post(path, base_url=SHOP, **kwargs)
    assert "Cookie" not in response.request.headers
    return response


class FormReader(HTMLParser):
    """The action and hidden fields of the auto-submitting form on a page."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.action = ""
        self.fields: dict[str, str] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.action = values.get("action", "")
        elif tag == "input" and values.get("type") == "hidden":
            self.fields[values["name"]] = values.get("value", "")


# --- apps and assertions ---------------------------------------------------------------


Build = Callable[..., Flask]


@pytest.fixture
def build(api: FakeNeuroonAPI, tmp_path: Path) -> Iterator[Build]:
    """``build(recipe_module, **config)``: the recipe's shop on the fake API, sending
    inline (``NEUROON_DISPATCH="sync"``), its snapshots in a SQLite file that every app of
    the test shares (one host, or several with shared storage) unless told otherwise."""
    built: list[tuple[Flask, ModuleType]] = []

    def factory(module: ModuleType, **overrides: Any) -> Flask:
        config = base_config(api, tmp_path, NEUROON_DISPATCH="sync", SECRET_KEY=SECRET_KEY)
        config.update(overrides)
        app: Flask = module.create_app(config)
        built.append((app, module))
        return app

    yield factory
    for app, module in built:
        with app.app_context():
            module.neuroon.shutdown()


def second_host(build: Build, module: ModuleType, first: Flask, key: str, **config: Any) -> Flask:
    """Another server of the same shop: the orders and the gateway account are shared
    (one database, one merchant account), flask-neuroon's storage is whatever
    ``config`` says."""
    gateway_account = {
        k: v for k, v in first.config.items() if k.startswith(("STRIPE_", "REDSYS_"))
    }
    host = build(module, **{**gateway_account, **config})
    host.extensions[key] = first.extensions[key]
    return host


def assert_attributed_once(api: FakeNeuroonAPI, order_id: str, log_id: str) -> None:
    """The order reached the API once, credited with the clicked line only."""
    assert api.received_count(order_id) == 1
    [conversion] = [c for c in api.conversions if c.order_id == order_id]
    assert conversion.order_value == ORDER_VALUE
    assert conversion.attributed_value == ATTRIBUTED
    assert [(c["productId"], c["searchLogId"], c["quantity"]) for c in conversion.conversions] == [
        ("SKU-RED", log_id, 2)
    ]
    assert len(conversion.attributed_lines) == 1  # the API recognises the searchLogId


def assert_unattributed_once(api: FakeNeuroonAPI, order_id: str) -> None:
    assert api.received_count(order_id) == 1
    [conversion] = [c for c in api.conversions if c.order_id == order_id]
    assert conversion.order_value == ORDER_VALUE
    assert conversion.attributed_value == 0
    assert conversion.conversions == []


def break_storage(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every storage operation of this app fails, as with a database that is down."""
    storage = app.extensions["neuroon"].storage

    def down(*args: Any, **kwargs: Any) -> Any:
        raise StorageError("storage is down")

    for name in ("put_snapshot", "take_snapshot", "peek_snapshot", "delete_snapshot", "add"):
        monkeypatch.setattr(storage, name, down)
    monkeypatch.setattr(storage, "get", down)


def new_order(shopper: Browser, host: Flask | None = None) -> str:
    response = shopper.request("POST", "/orders", hop=SAME_SITE, data=CART, host=host)
    assert response.status_code == 201
    order_id: str = response.get_json()["id"]
    return order_id


# --- 1. Stripe Checkout ------------------------------------------------------------------


def stripe_checkout_started(
    api: FakeNeuroonAPI, app: Flask
) -> tuple[Browser, str, str, stripe_checkout.FakeStripe, str]:
    """The shopper clicked a result, ordered and was sent to Stripe."""
    shopper = Browser(app)
    log_id = shopper.click_search_result(api, "SKU-RED")
    order_id = new_order(shopper)
    go = shopper.request("POST", f"/orders/{order_id}/checkout", hop=SAME_SITE)
    assert go.status_code == 303
    assert go.location.startswith("https://checkout.stripe.com/c/pay/cs_test_")
    assert "neuroon_clicks" in shopper.last_sent
    assert not shopper.jar.keys() - {"neuroon_clicks"}  # storage mode: no mirror cookie
    return shopper, order_id, log_id, app.extensions["stripe_checkout"].stripe, go.location


def post_stripe(app: Flask, webhook: stripe_checkout.SignedWebhook) -> TestResponse:
    return server_to_server(app, "/webhooks/stripe", data=webhook.body, headers=webhook.headers)


@pytest.mark.parametrize("shopper_returns", ["after-webhook", "before-webhook", "never"])
def test_stripe_the_webhook_confirms_with_the_snapshot(api, build, shopper_returns):
    app = build(stripe_checkout)
    shopper, order_id, log_id, stripe, url = stripe_checkout_started(api, app)
    payment = stripe.pay(url.rsplit("/", 1)[1])
    if shopper_returns == "before-webhook":
        page = shopper.request("GET", payment.success_url, hop=CROSS_SITE)
        assert "neuroon_clicks" in shopper.last_sent  # a top-level GET: the Lax cookie comes
        assert "confirming the payment" in page.text
        assert api.requests == []  # the success page displays, it never tracks
    hook = post_stripe(app, payment.webhook)
    assert hook.status_code == 200
    assert hook.get_json() == {"received": True, "tracking": "sent"}
    if shopper_returns == "after-webhook":
        page = shopper.request("GET", payment.success_url, hop=CROSS_SITE)
        assert f"Order {order_id} is paid" in page.text
    assert_attributed_once(api, order_id, log_id)
    assert len(api.requests) == 1


def test_stripe_retried_webhooks_are_duplicates_and_send_nothing(api, build):
    app = build(stripe_checkout)
    _shopper, order_id, log_id, stripe, url = stripe_checkout_started(api, app)
    payment = stripe.pay(url.rsplit("/", 1)[1])
    statuses = [
        post_stripe(app, stripe.sign(payment.event)).get_json()["tracking"] for _ in range(3)
    ]
    assert statuses == ["sent", "duplicate", "duplicate"]
    assert_attributed_once(api, order_id, log_id)
    assert len(api.requests) == 1


def forged_webhooks(
    stripe: stripe_checkout.FakeStripe, event: dict[str, Any]
) -> dict[str, stripe_checkout.SignedWebhook]:
    genuine = stripe.sign(event)
    other = stripe_checkout.FakeStripe("whsec_not_the_shops")
    return {
        "another-secret": other.sign(event),
        "tampered-body": stripe_checkout.SignedWebhook(
            genuine.body.replace(b'"amount_total":6497', b'"amount_total":1'), genuine.headers
        ),
        "replayed-old": stripe.sign(event, timestamp=int(time.time()) - 3600),
        "no-signature": stripe_checkout.SignedWebhook(
            genuine.body, {"Content-Type": "application/json"}
        ),
        "v0-only": stripe_checkout.SignedWebhook(
            genuine.body,
            {"Stripe-Signature": genuine.headers["Stripe-Signature"].replace("v1=", "v0=")},
        ),
    }


def test_stripe_forged_webhooks_are_refused_and_track_nothing(api, build):
    app = build(stripe_checkout)
    _shopper, order_id, log_id, stripe, url = stripe_checkout_started(api, app)
    payment = stripe.pay(url.rsplit("/", 1)[1])
    for name, forged in forged_webhooks(stripe, payment.event).items():
        response = post_stripe(app, forged)
        assert response.status_code == 400, name
    assert api.requests == []
    assert not app.extensions["stripe_checkout"].orders.get(order_id).paid
    # The snapshot survived the forgeries: the genuine event is still attributed.
    assert post_stripe(app, payment.webhook).get_json()["tracking"] == "sent"
    assert_attributed_once(api, order_id, log_id)


@pytest.mark.parametrize("clicks_in_metadata", [True, False], ids=["metadata", "snapshot-only"])
def test_stripe_on_hosts_without_shared_storage(api, build, clicks_in_metadata):
    """The webhook lands on another host than the checkout: its own storage has no
    snapshot, and no cookie of any kind comes with a webhook. The session's metadata does."""
    options = {"NEUROON_STORAGE_URI": "memory://", "STRIPE_CLICKS_IN_METADATA": clicks_in_metadata}
    host_a = build(stripe_checkout, **options)
    host_b = second_host(build, stripe_checkout, host_a, "stripe_checkout", **options)
    _shopper, order_id, log_id, stripe, url = stripe_checkout_started(api, host_a)
    payment = stripe.pay(url.rsplit("/", 1)[1])
    assert post_stripe(host_b, payment.webhook).get_json()["tracking"] == "sent"
    if clicks_in_metadata:
        assert_attributed_once(api, order_id, log_id)
    else:
        assert_unattributed_once(api, order_id)  # the cost of no shared storage


def test_stripe_with_storage_down_the_checkout_and_the_webhook_still_succeed(
    api, build, monkeypatch
):
    app = build(stripe_checkout)
    break_storage(app, monkeypatch)
    _shopper, order_id, _log_id, stripe, url = stripe_checkout_started(api, app)
    payment = stripe.pay(url.rsplit("/", 1)[1])
    assert post_stripe(app, payment.webhook).get_json()["tracking"] == "sent"
    # Sent directly, without the snapshot it could not keep; once only, in this process.
    assert post_stripe(app, stripe.sign(payment.event)).get_json()["tracking"] == "duplicate"
    assert_unattributed_once(api, order_id)


def test_stripe_signature_is_verified_as_stripe_documents_it():
    secret, body, t = "whsec_test", b'{"id":"evt_1"}', 1_700_000_000
    header = f"t={t},v1={'0' * 64},v1={stripe_checkout.stripe_signature(body, secret, t)}"
    event = stripe_checkout.verify_stripe_signature(body, header, secret, now=t + 299)
    assert event == {"id": "evt_1"}  # any v1 may match (a secret being rolled)
    with pytest.raises(stripe_checkout.SignatureError, match="tolerance"):
        stripe_checkout.verify_stripe_signature(body, header, secret, now=t + 301)


# --- 2. PayPal -------------------------------------------------------------------------


def paypal_approved(
    api: FakeNeuroonAPI, app: Flask, *, method: str, declined: bool = False
) -> tuple[Browser, str, str, paypal_return.PayPalReturn]:
    shopper = Browser(app)
    log_id = shopper.click_search_result(api, "SKU-RED")
    order_id = new_order(shopper)
    go = shopper.request("POST", f"/orders/{order_id}/paypal", hop=SAME_SITE)
    assert go.status_code == 303
    assert go.location.startswith("https://www.paypal.com/checkoutnow?token=")
    token = go.location.split("token=", 1)[1]
    back = app.extensions["paypal_return"].paypal.approve(
        token, method=method, instrument_declined=declined
    )
    return shopper, order_id, log_id, back


def return_from_paypal(
    shopper: Browser, back: paypal_return.PayPalReturn, host: Flask | None = None
) -> TestResponse:
    form = back.form if back.method == "POST" else None
    return shopper.request(back.method, back.url, hop=CROSS_SITE, data=form, host=host)


def test_paypal_get_return_confirms_with_the_cookie_and_a_reload_sends_nothing(api, build):
    app = build(paypal_return)
    shopper, order_id, log_id, back = paypal_approved(api, app, method="GET")
    assert "token=" in back.url and "PayerID=" in back.url
    response = return_from_paypal(shopper, back)
    assert "neuroon_clicks" in shopper.last_sent  # a top-level GET carries the Lax cookie
    assert response.status_code == 303
    assert response.location.endswith(f"/orders/{order_id}/thanks")
    assert_attributed_once(api, order_id, log_id)
    again = return_from_paypal(shopper, back)  # the shopper reloads the return URL
    assert again.status_code == 303
    assert len(api.requests) == 1  # captured once (PayPal-Request-Id), tracked once
    page = shopper.request("GET", response.location, hop=CROSS_SITE)
    assert "is paid" in page.text


@pytest.mark.parametrize(
    ("snapshots", "hosts", "attributed"),
    [
        ("storage", "one", True),
        ("both", "one", True),
        ("both", "two-without-shared-storage", True),
        ("storage", "two-without-shared-storage", False),
    ],
)
def test_paypal_post_return_without_the_lax_cookie(api, build, snapshots, hosts, attributed):
    """The cross-site return POST carries no Lax cookie: the snapshot (same storage) or
    the signed mirror cookie (any host with the same SECRET_KEY) has the clicks."""
    options: dict[str, Any] = {"NEUROON_SNAPSHOTS": snapshots}
    if hosts != "one":
        options["NEUROON_STORAGE_URI"] = "memory://"
    app = build(paypal_return, **options)
    returns_to = app
    if hosts != "one":
        returns_to = second_host(build, paypal_return, app, "paypal_return", **options)
    shopper, order_id, log_id, back = paypal_approved(api, app, method="POST")
    response = return_from_paypal(shopper, back, host=returns_to)
    assert "neuroon_clicks" not in shopper.last_sent
    assert ("neuroon_clicks_mirror" in shopper.last_sent) == (snapshots == "both")
    assert response.status_code == 303
    if attributed:
        assert_attributed_once(api, order_id, log_id)
    else:
        assert_unattributed_once(api, order_id)


def test_paypal_failed_or_forged_returns_track_nothing(api, build):
    app = build(paypal_return)
    shopper, order_id, _, back = paypal_approved(api, app, method="GET", declined=True)
    assert return_from_paypal(shopper, back).status_code == 402  # INSTRUMENT_DECLINED
    forged = shopper.request(
        "GET", "/paypal/return?token=5O190127TN364715T&PayerID=X", hop=CROSS_SITE
    )
    assert forged.status_code == 400
    no_payer = shopper.request("GET", back.url.split("&")[0], hop=CROSS_SITE)  # token only
    assert no_payer.status_code == 400
    assert api.requests == []
    assert not app.extensions["paypal_return"].orders.get(order_id).paid


def test_paypal_a_return_before_approval_is_not_a_payment(api, build):
    app = build(paypal_return)
    shopper = Browser(app)
    shopper.click_search_result(api, "SKU-RED")
    order_id = new_order(shopper)
    go = shopper.request("POST", f"/orders/{order_id}/paypal", hop=SAME_SITE)
    token = go.location.split("token=", 1)[1]
    response = shopper.request(
        "GET", f"/paypal/return?token={token}&PayerID=ABCDEFGHIJKLM", hop=CROSS_SITE
    )
    assert response.status_code == 402  # ORDER_NOT_APPROVED: the capture proves payment
    assert api.requests == []


# --- 3. 3-D Secure ------------------------------------------------------------------------


def challenged(
    api: FakeNeuroonAPI, app: Flask, card: str = three_d_secure.CARD_CHALLENGE
) -> tuple[Browser, str, str, FormReader]:
    """The shopper clicked, ordered, submitted the card: the PSP wants a challenge."""
    shopper = Browser(app)
    log_id = shopper.click_search_result(api, "SKU-RED")
    order_id = new_order(shopper)
    page = shopper.request("POST", f"/orders/{order_id}/pay", hop=SAME_SITE, data={"card": card})
    assert page.status_code == 200
    form = FormReader(page.text)
    assert form.action == three_d_secure.ACS_URL
    return shopper, order_id, log_id, form


def acs_returns(
    app: Flask,
    shopper: Browser,
    form: FormReader,
    *,
    passed: bool = True,
    host: Flask | None = None,
) -> TestResponse:
    """The ACS challenges the cardholder and auto-posts them back: cross-site."""
    psp = app.extensions["three_d_secure"].psp
    url, fields = psp.acs_challenge(form.fields, passed=passed)
    return shopper.request("POST", url, hop=CROSS_SITE, data=fields, host=host)


@pytest.mark.parametrize("card", [three_d_secure.CARD_CHALLENGE, three_d_secure.CARD_CHALLENGE_V1])
def test_3ds_the_acs_post_has_no_lax_cookie_and_the_mirror_or_snapshot_attributes(api, build, card):
    app = build(three_d_secure)
    shopper, order_id, log_id, form = challenged(api, app, card)
    expected = (
        {"creq", "threeDSSessionData"}
        if card == three_d_secure.CARD_CHALLENGE
        else {"PaReq", "MD", "TermUrl"}
    )
    assert set(form.fields) == expected
    assert shopper.jar["neuroon_clicks_mirror"].samesite == "none"
    response = acs_returns(app, shopper, form)
    assert shopper.last_sent == {"neuroon_clicks_mirror"}  # the Lax cookie stayed behind
    assert response.status_code == 303
    assert_attributed_once(api, order_id, log_id)
    # A resubmitted ACS form (back button) confirms nothing twice.
    assert acs_returns(app, shopper, form).status_code == 303  # paid already: the thanks page
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("snapshots", "attributed"), [("both", True), ("storage", False)], ids=["both", "storage"]
)
def test_3ds_on_hosts_without_shared_storage_needs_the_mirror(api, build, snapshots, attributed):
    options = {"NEUROON_SNAPSHOTS": snapshots, "NEUROON_STORAGE_URI": "memory://"}
    host_a = build(three_d_secure, **options)
    host_b = second_host(build, three_d_secure, host_a, "three_d_secure", **options)
    shopper, order_id, log_id, form = challenged(api, host_a)
    assert acs_returns(host_a, shopper, form, host=host_b).status_code == 303
    if attributed:
        assert_attributed_once(api, order_id, log_id)
    else:
        assert_unattributed_once(api, order_id)


def test_3ds_with_storage_down_the_mirror_still_attributes(api, build, monkeypatch):
    app = build(three_d_secure)
    break_storage(app, monkeypatch)
    shopper, order_id, log_id, form = challenged(api, app)
    assert acs_returns(app, shopper, form).status_code == 303  # the checkout never breaks
    assert_attributed_once(api, order_id, log_id)


def test_3ds_forged_or_failed_challenges_track_nothing(api, build):
    app = build(three_d_secure)
    shopper, order_id, _log_id, form = challenged(api, app)
    trans = json.loads(base64.urlsafe_b64decode(form.fields["creq"] + "=="))
    forged_cres = three_d_secure.b64url_json({**trans, "messageType": "CRes", "transStatus": "Y"})
    forged = shopper.request(
        "POST",
        "/3ds/return",
        hop=CROSS_SITE,
        data={"cres": forged_cres, "threeDSSessionData": form.fields["threeDSSessionData"]},
    )
    assert forged.status_code == 400  # the ACS never reported a result for it
    garbage = shopper.request("POST", "/3ds/return", hop=CROSS_SITE, data={"cres": "%%%"})
    assert garbage.status_code == 400
    assert acs_returns(app, shopper, form, passed=False).status_code == 402
    assert api.requests == []
    assert not app.extensions["three_d_secure"].orders.get(order_id).paid


def test_3ds_frictionless_is_tracked_at_once_with_the_cookie_and_keeps_no_snapshot(api, build):
    app = build(three_d_secure)
    shopper = Browser(app)
    log_id = shopper.click_search_result(api, "SKU-RED")
    order_id = new_order(shopper)
    response = shopper.request(
        "POST",
        f"/orders/{order_id}/pay",
        hop=SAME_SITE,
        data={"card": three_d_secure.CARD_FRICTIONLESS},
    )
    assert response.status_code == 303
    assert "neuroon_clicks_mirror" not in shopper.jar
    assert app.extensions["neuroon"].storage.peek_snapshot(order_id, time.time()) is None
    assert_attributed_once(api, order_id, log_id)


def test_3ds_a_declined_card_tracks_nothing(api, build):
    app = build(three_d_secure)
    shopper = Browser(app)
    shopper.click_search_result(api, "SKU-RED")
    order_id = new_order(shopper)
    response = shopper.request(
        "POST",
        f"/orders/{order_id}/pay",
        hop=SAME_SITE,
        data={"card": three_d_secure.CARD_DECLINED},
    )
    assert response.status_code == 402
    assert api.requests == []


# --- 4. Redsys ----------------------------------------------------------------------------


def redsys_paid(
    api: FakeNeuroonAPI, app: Flask, *, approve: bool = True
) -> tuple[Browser, str, str, redsys.RedsysOutcome]:
    shopper = Browser(app)
    log_id = shopper.click_search_result(api, "SKU-RED")
    order_id = new_order(shopper)
    page = shopper.request("POST", f"/orders/{order_id}/pay", hop=SAME_SITE)
    assert page.status_code == 200
    assert "neuroon_clicks" in shopper.last_sent
    form = FormReader(page.text)
    assert form.action == redsys.TPV_URL
    assert set(form.fields) == {"Ds_SignatureVersion", "Ds_MerchantParameters", "Ds_Signature"}
    outcome = app.extensions["redsys"].bank.pay(form.fields, approve=approve)
    return shopper, order_id, log_id, outcome


def notify(app: Flask, outcome: redsys.RedsysOutcome, **changes: str) -> TestResponse:
    assert urlsplit(outcome.notification_url).path == "/redsys/notification"
    return server_to_server(app, "/redsys/notification", data={**outcome.notification, **changes})


@pytest.mark.parametrize("shopper_returns", ["after-notification", "before-notification", "never"])
def test_redsys_the_notification_confirms_with_the_snapshot(api, build, shopper_returns):
    app = build(redsys)
    shopper, order_id, log_id, outcome = redsys_paid(api, app)
    assert redsys.DS_ORDER.fullmatch(order_id) and len(order_id) == 12
    if shopper_returns == "before-notification":
        page = shopper.request("GET", outcome.return_url, hop=CROSS_SITE)
        assert "neuroon_clicks" in shopper.last_sent  # URLOK is a top-level GET
        assert "confirming the payment" in page.text
        assert api.requests == []  # URLOK displays, it never tracks
    response = notify(app, outcome)
    assert response.status_code == 200
    assert response.text == "OK sent"
    if shopper_returns == "after-notification":
        page = shopper.request("GET", outcome.return_url, hop=CROSS_SITE)
        assert f"Order {order_id} is paid" in page.text
    assert_attributed_once(api, order_id, log_id)  # orderId is the 12-character Ds_Order
    assert len(api.requests) == 1


def test_redsys_a_repeated_notification_is_a_duplicate(api, build):
    app = build(redsys)
    _shopper, order_id, log_id, outcome = redsys_paid(api, app)
    answers = [notify(app, outcome).text for _ in range(3)]
    assert answers == ["OK sent", "OK duplicate", "OK duplicate"]
    assert_attributed_once(api, order_id, log_id)
    assert len(api.requests) == 1


def tampered_parameters(outcome: redsys.RedsysOutcome) -> str:
    params = json.loads(base64.b64decode(outcome.notification["Ds_MerchantParameters"]))
    params["Ds_Amount"] = "100"
    return redsys.encode_parameters(params)


def test_redsys_forged_notifications_are_refused_and_track_nothing(api, build):
    app = build(redsys)
    _shopper, order_id, log_id, outcome = redsys_paid(api, app)
    other_bank = redsys.FakeRedsys(base64.b64encode(b"x" * 24).decode(), "999008881")
    params = json.loads(base64.b64decode(outcome.notification["Ds_MerchantParameters"]))
    forged_by_other = other_bank.sign(
        {"DS_MERCHANT_MERCHANTURL": "/", "DS_MERCHANT_URLOK": "/", "DS_MERCHANT_URLKO": "/"},
        params,
        approve=True,
    )
    forgeries = {
        "another-secret": forged_by_other.notification,
        "tampered-amount": {"Ds_MerchantParameters": tampered_parameters(outcome)},
        "unknown-version": {"Ds_SignatureVersion": "HMAC_SHA512_V2"},
        "not-base64": {"Ds_Signature": "%%%"},
        "no-parameters": {"Ds_MerchantParameters": ""},
    }
    for name, changes in forgeries.items():
        assert notify(app, outcome, **changes).status_code == 400, name
    assert api.requests == []
    assert not app.extensions["redsys"].orders.get(order_id).paid
    assert notify(app, outcome).text == "OK sent"  # the snapshot waited for the real one
    assert_attributed_once(api, order_id, log_id)


def test_redsys_a_denied_payment_is_acknowledged_and_tracks_nothing(api, build):
    app = build(redsys)
    _shopper, order_id, _, outcome = redsys_paid(api, app, approve=False)
    response = notify(app, outcome)
    assert response.status_code == 200
    assert response.text == "OK"
    assert urlsplit(outcome.return_url).path == "/redsys/ko"
    assert api.requests == []
    assert not app.extensions["redsys"].orders.get(order_id).paid


def test_redsys_notification_fields_are_shaped_like_the_banks():
    bank = redsys.FakeRedsys(base64.b64encode(b"k" * 24).decode(), "999008881")
    outcome = bank.sign(
        {"DS_MERCHANT_MERCHANTURL": "u", "DS_MERCHANT_URLOK": "ok", "DS_MERCHANT_URLKO": "ko"},
        {"Ds_Order": "0001ABCDEF12", "Ds_Response": "0000"},
        approve=True,
    )
    signature = outcome.notification["Ds_Signature"]
    assert "+" not in signature and "/" not in signature  # base64url, as Redsys sends it
    assert dict(parse_qsl(urlsplit(outcome.return_url).query)) == outcome.notification
    assert redsys.verify_notification(outcome.notification, bank.secret)["Ds_Order"] == (
        "0001ABCDEF12"
    )
