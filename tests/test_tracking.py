"""From the click cookie to a conversion at the (fake) API, as a shop sees it."""

from __future__ import annotations

import dataclasses
import decimal
import logging
import time
from collections.abc import Iterator, Mapping
from decimal import Decimal

import pytest
from flask import Flask

from flask_neuroon import Delivery, Neuroon
from flask_neuroon.client import USER_AGENT
from flask_neuroon.signals import (
    clicks_persisted,
    conversion_failed,
    conversion_queued,
    conversion_sent,
)
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import API_KEY, ORIGIN, AppFactory
from .shop import ORDERS, add_checkout_routes, make_order, set_clicks


@pytest.fixture(params=["sync", "thread"])
def dispatch(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def checkout(app, neuroon, order_id: str, clicks: dict[str, str]) -> None:
    """Shopper clicks, pays at the gateway, comes back by a cross-site POST without the cookie."""
    make_order(order_id)
    client = app.test_client()
    set_clicks(client, clicks)
    response = client.post(f"/checkout/{order_id}/pay")
    assert response.status_code == 302
    # The gateway's return is cross-site: the browser drops the SameSite=Lax cookie.
    gateway = app.test_client()
    response = gateway.post("/payment/return", data={"order": order_id})
    assert response.status_code == 200
    assert response.data == b"thank you"
    assert "neuroon" not in response.headers.get("Set-Cookie", "")


def test_clicked_line_is_attributed_through_the_gateway_round_trip(
    api: FakeNeuroonAPI, make_app: AppFactory, dispatch: str
):
    app, neuroon = make_app(api, NEUROON_DISPATCH=dispatch)
    add_checkout_routes(app, neuroon)
    checkout(app, neuroon, "ORD-1", {"SKU-RED": "log-red", "SKU-ELSE": "log-else"})
    with app.app_context():
        assert neuroon.flush(5) == 0
    [request] = api.requests
    assert request.json == {
        "orderId": "ORD-1",
        "orderValue": Decimal("64.97"),
        "attributedValue": Decimal("39.98"),
        "currency": "EUR",
        "conversions": [
            {
                "productId": "SKU-RED",
                "searchLogId": "log-red",
                "quantity": 2,
                "lineTotal": Decimal("39.98"),
            }
        ],
    }
    assert request.body.decode().count("39.98") == 2  # JSON numbers, exact
    assert request.header("X-Shop-API-Key") == API_KEY
    assert request.header("Origin") == ORIGIN
    assert request.header("Content-Type") == "application/json"
    assert request.header("User-Agent") == USER_AGENT
    assert request.path == "/api/plugin/shops/shop_test/track/conversion"
    assert request.status == 200
    [conversion] = api.conversions
    assert conversion.attributed_value == Decimal("39.98")


def test_confirming_the_same_order_twice_sends_it_once(
    api: FakeNeuroonAPI, make_app: AppFactory, dispatch: str
):
    app, neuroon = make_app(api, NEUROON_DISPATCH=dispatch)
    add_checkout_routes(app, neuroon)
    make_order("ORD-2")
    client = app.test_client()
    set_clicks(client, {"SKU-RED": "log"})
    for _ in range(3):
        assert client.post("/payment/return", data={"order": "ORD-2"}).status_code == 200
    with app.app_context():
        again = neuroon.track_conversion(ORDERS["ORD-2"])
        assert again.status == "duplicate"
        neuroon.flush(5)
    assert api.received_count("ORD-2") == 1


def test_track_conversion_returns_a_delivery_that_reports_sent(api, make_app, dispatch):
    app, neuroon = make_app(api, NEUROON_DISPATCH=dispatch)
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("ORD-3"), clicks={"SKU-BLUE": "b"})
        assert isinstance(delivery, Delivery)
        assert delivery.wait(5) == "sent"
        assert delivery.error is None
    assert api.conversions[0].attributed_value == Decimal("24.99")


def test_error_response_of_the_view_tracks_nothing(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    add_checkout_routes(app, neuroon)
    make_order("ORD-4")
    assert app.test_client().post("/broken/return", data={"order": "ORD-4"}).status_code == 402
    assert api.requests == []


def test_a_gateway_route_whose_order_id_cannot_be_found_says_so(api, make_app, caplog):
    # The route names its argument "oid", the decorator looks for the default "order_id":
    # nothing can be snapshotted, and the shop must hear why.
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")

    @app.post("/orders/<oid>/pay")
    @neuroon.before_gateway()
    def pay(oid: str) -> tuple[str, int]:
        return "", 302

    @app.post("/orders/<oid>/back")
    @neuroon.on_order_confirmed(load_order=lambda key: None, order_id=lambda: None)
    def back(oid: str) -> str:
        return "thanks"

    shopper = app.test_client()
    set_clicks(shopper, {"SKU-RED": "r"})
    assert shopper.post("/orders/O-9/pay").status_code == 302
    assert shopper.post("/orders/O-9/back").status_code == 200
    assert (
        "persisting clicks before the gateway: no order id in this request (no view argument,"
        " form or query field 'order_id')"
    ) in caplog.text
    assert "tracking the confirmed order: no order id in this request (<function" in caplog.text
    assert "returned None)" in caplog.text


def test_unknown_order_in_the_confirm_view_is_logged_and_the_page_still_renders(
    api, make_app, caplog
):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    add_checkout_routes(app, neuroon)
    response = app.test_client().post("/payment/return", data={"order": "nope"})
    assert response.status_code == 200
    assert "no order 'nope' to track" in caplog.text
    assert api.requests == []


def test_missing_order_field_in_the_confirm_view_is_one_warning_not_a_500(api, make_app, caplog):
    # The route's order_id is lambda: request.values["order"], and the POST has no "order":
    # one line saying so, no traceback.
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    add_checkout_routes(app, neuroon)
    with caplog.at_level(logging.WARNING, logger="flask_neuroon"):
        response = app.test_client().post("/payment/return", data={})
    assert response.status_code == 200
    (record,) = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert "tracking the confirmed order: no order id in this request" in record.getMessage()
    assert "raised BadRequestKeyError for 'order')" in record.getMessage()


def test_invalid_order_is_logged_with_its_id_and_never_raised(api, make_app, caplog):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    with app.app_context():
        delivery = neuroon.track_conversion({"id": "BAD-1", "total": -5, "currency": "EUR"})
    assert delivery.status == "invalid"
    assert "orderValue must be >= 0: refunds use a different endpoint" in (delivery.error or "")
    assert "BAD-1" in caplog.text and "refunds use a different endpoint" in caplog.text
    assert api.requests == []


def test_an_adapter_that_raises_is_logged_as_invalid(api, make_app, caplog):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")

    @neuroon.order_adapter
    def broken(obj):
        raise KeyError("total")

    with app.app_context():
        assert neuroon.track_conversion({"id": "X"}).status == "invalid"
    assert "adapting order X failed" in caplog.text


def test_a_shop_adapter_reads_its_own_model(api, make_app):
    from flask_neuroon import Order, OrderLine

    class Basket:
        ref = "B-9"
        grand = "12.00"
        lines = (("P-1", 3, "4.00"),)

    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")

    @neuroon.order_adapter
    def basket(obj):
        if not isinstance(obj, Basket):
            return None
        return Order(
            id=obj.ref,
            total=obj.grand,
            currency="GBP",
            lines=[OrderLine(product_id=p, quantity=q, unit_price=u) for p, q, u in obj.lines],
        )

    with app.app_context():
        assert neuroon.track_conversion(Basket(), clicks={"P-1": "s"}).status == "sent"
    assert api.conversions[0].attributed_value == Decimal("12.00")
    assert api.conversions[0].currency == "GBP"


def test_unattributed_orders_are_sent_with_zero_or_skipped_when_configured(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    with app.app_context():
        assert neuroon.track_conversion(make_order("U-1"), clicks={}).status == "sent"
    assert api.conversions[0].attributed_value == Decimal("0.00")
    assert api.conversions[0].conversions == []
    app2, neuroon2 = make_app(api, NEUROON_DISPATCH="sync", NEUROON_SEND_UNATTRIBUTED=False)
    with app2.app_context():
        assert neuroon2.track_conversion(make_order("U-2"), clicks={}).status == "skipped"
    assert api.received_count("U-2") == 0


def test_disabled_tracking_stores_and_sends_nothing(api, make_app, tmp_path):
    app, neuroon = make_app(api, NEUROON_ENABLED=False, NEUROON_DISPATCH="sync")
    add_checkout_routes(app, neuroon)
    checkout(app, neuroon, "D-1", {"SKU-RED": "x"})
    with app.app_context():
        assert neuroon.track_conversion(make_order("D-2")).status == "disabled"
        assert neuroon.flush(1) == 0
    assert api.requests == []
    assert not (tmp_path / "neuroon.sqlite3").exists()


def test_missing_keys_warn_once_and_disable(make_app, caplog):
    caplog.set_level(logging.WARNING, "flask_neuroon")
    app, neuroon = make_app(None, NEUROON_API_KEY=None, NEUROON_SHOP_ID="")
    assert caplog.text.count("NEUROON_SHOP_ID, NEUROON_API_KEY not set: tracking is disabled") == 1
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("M-1"))
    assert delivery.status == "disabled"


def test_snapshot_is_taken_before_the_gateway_and_consumed_on_confirm(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    received: list[dict[str, object]] = []
    clicks_persisted.connect(lambda sender, **kw: received.append(kw), app, weak=False)
    with app.test_request_context(
        "/checkout/S-1/pay",
        method="POST",
        headers={"Cookie": "neuroon_clicks=%7B%22a%22%3A%221%22%7D"},
    ):
        assert neuroon.clicks == {"a": "1"}
        assert neuroon.persist_before_gateway("S-1") == 1
    assert received == [{"order_id": "S-1", "count": 1}]
    with app.test_request_context("/payment/return", method="POST"):
        assert neuroon.clicks == {}
        assert neuroon.clicks_for("S-1") == {"a": "1"}
        assert neuroon.clicks_for("S-1") == {}


def test_cookie_wins_over_the_snapshot(api, make_app):
    app, neuroon = make_app(api)
    with app.test_request_context(headers={"Cookie": "neuroon_clicks=%7B%22a%22%3A%22old%22%7D"}):
        neuroon.persist_before_gateway("C-1")
    cookie = "neuroon_clicks=%7B%22a%22%3A%22new%22%2C%22b%22%3A%222%22%7D"
    with app.test_request_context(headers={"Cookie": cookie}):
        assert neuroon.clicks_for("C-1") == {"a": "new", "b": "2"}


def test_empty_click_map_stores_nothing(api, make_app):
    app, neuroon = make_app(api)
    with app.test_request_context():
        assert neuroon.persist_before_gateway("E-1") == 0
    with app.test_request_context(headers={"Cookie": "neuroon_clicks=garbage"}):
        assert neuroon.persist_before_gateway("E-1") == 0
    state = app.extensions["neuroon"]
    assert state.storage.take_snapshot("E-1", time.time()) is None


def test_expired_snapshot_is_not_used(api, make_app):
    app, neuroon = make_app(api, NEUROON_SNAPSHOT_TTL=1)
    with app.test_request_context(headers={"Cookie": "neuroon_clicks=%7B%22a%22%3A%221%22%7D"}):
        assert neuroon.persist_before_gateway("T-1") == 1
    time.sleep(1.1)
    with app.test_request_context():
        assert neuroon.clicks_for("T-1") == {}


def test_webhook_outside_any_request_uses_the_snapshot(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    with app.test_request_context(
        headers={"Cookie": "neuroon_clicks=%7B%22SKU-RED%22%3A%22w%22%7D"}
    ):
        neuroon.persist_before_gateway("W-1")
    with app.app_context():  # a webhook handler / Celery task / CLI: no request, no cookie
        assert neuroon.clicks == {}
        assert neuroon.track_conversion(make_order("W-1")).status == "sent"
    assert api.conversions[0].conversions[0]["searchLogId"] == "w"


def test_signals_report_queued_sent_and_failed(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_MAX_ATTEMPTS=1)
    events: list[tuple[str, dict[str, object]]] = []
    for name, signal in (
        ("queued", conversion_queued),
        ("sent", conversion_sent),
        ("failed", conversion_failed),
    ):
        signal.connect(lambda sender, _n=name, **kw: events.append((_n, kw)), app, weak=False)
    with app.app_context():
        neuroon.track_conversion(make_order("SG-1"), clicks={})
        api.fail(1, status=400)
        neuroon.track_conversion(make_order("SG-2"), clicks={})
    names = [name for name, _ in events]
    assert names == ["queued", "sent", "queued", "failed"]
    assert events[1][1] == {"order_id": "SG-1", "status": "sent"}
    failed = events[3][1]
    assert failed["order_id"] == "SG-2" and failed["status"] == "dead"
    assert failed["will_retry"] is False
    assert str(failed["reason"]).startswith("HTTP 400")


def test_a_signal_receiver_that_raises_does_not_break_checkout(api, make_app, caplog):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")

    def bad_receiver(sender, **kwargs):
        raise RuntimeError("receiver bug")

    conversion_sent.connect(bad_receiver, app, weak=False)
    with app.app_context():
        assert neuroon.track_conversion(make_order("R-1"), clicks={}).status == "sent"
    assert "receiver bug" in caplog.text


def test_init_app_twice_is_refused(make_app):
    app, neuroon = make_app(None)
    with pytest.raises(RuntimeError, match="already been registered"):
        neuroon.init_app(app)


def test_an_extension_object_serves_several_apps(api, make_app):
    app1, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    from flask import Flask

    app2 = Flask("second", instance_path=app1.instance_path)
    app2.config.update(app1.config)
    app2.config["NEUROON_STORAGE_URI"] = "memory://"
    neuroon.init_app(app2)
    with app2.app_context():
        assert neuroon.track_conversion(make_order("TWO-1"), clicks={}).status == "sent"
    assert app2.extensions["neuroon"] is not app1.extensions["neuroon"]
    assert not hasattr(neuroon, "app")


@pytest.mark.parametrize("flask_context", ["context variable", "proxies"])
def test_clicks_outside_a_request_are_empty_and_inside_one_are_its_own(
    make_app, monkeypatch, flask_context
):
    from flask_neuroon import extension

    if flask_context == "proxies":  # a Flask without the context variable read first
        monkeypatch.setattr(extension, "_cv_request", None)
    app, neuroon = make_app(None)
    other = Flask("no_neuroon_here")
    assert neuroon.clicks == {}
    with app.app_context():
        assert neuroon.clicks == {}
    with app.test_request_context(headers={"Cookie": "neuroon_clicks=%7B%22a%22%3A%221%22%7D"}):
        assert neuroon.clicks == {"a": "1"}
    with other.test_request_context(headers={"Cookie": "neuroon_clicks=%7B%22a%22%3A%221%22%7D"}):
        assert neuroon.clicks == {}  # an app without the extension


def test_uninitialised_app_gives_a_clear_error():
    from flask import Flask

    neuroon = Neuroon()
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="init_app"):
        neuroon.track_conversion({})


def test_an_invalid_first_attempt_keeps_the_snapshot_for_the_corrected_one(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    with app.test_request_context(
        headers={"Cookie": "neuroon_clicks=%7B%22SKU-RED%22%3A%22r%22%7D"}
    ):
        neuroon.persist_before_gateway("FIX-1")
    broken = {
        "id": "FIX-1",
        "total": "64.97",
        "currency": None,
        "lines": [{"sku": "SKU-RED", "qty": 2, "price": "19.99"}],
    }
    with app.app_context():
        assert neuroon.track_conversion(broken).status == "invalid"
        fixed = {**broken, "currency": "EUR"}
        assert neuroon.track_conversion(fixed).status == "sent"
    assert api.conversions[0].attributed_value == Decimal("39.98")


def test_lines_under_an_unknown_key_warn_that_nothing_can_be_attributed(api, make_app, caplog):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    order = {"id": "S1", "total": "10", "currency": "EUR", "products": [{"sku": "A", "price": 10}]}
    with app.app_context():
        assert neuroon.track_conversion(order, clicks={"A": "log-a"}).status == "sent"
    assert "has no lines with a product id that flask-neuroon can read" in caplog.text
    assert "register an order adapter" in caplog.text


def test_clicks_that_are_not_a_mapping_are_logged_and_the_cookie_used(api, make_app, caplog):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    cookie = "neuroon_clicks=%7B%22SKU-RED%22%3A%22r%22%7D"
    with app.test_request_context(headers={"Cookie": cookie}):
        delivery = neuroon.track_conversion(make_order("LIST-1"), clicks=["SKU-RED"])
    assert delivery.status == "sent"
    assert "is a list, not a mapping" in caplog.text
    assert api.conversions[0].attributed_value == Decimal("39.98")


def test_an_adapter_returning_something_else_is_an_invalid_order(api, make_app, caplog):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    neuroon.order_adapter(lambda obj: {"id": "x"})
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("AD-1"))
    assert delivery.status == "invalid"
    assert "returned dict, not an Order or None" in (delivery.error or "")


def test_confirm_inside_the_view_tracks_only_a_successful_answer(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")

    @app.post("/paid/<order_id>")
    def paid(order_id: str):
        order = make_order(order_id)
        neuroon.confirm(order, clicks={"SKU-RED": "log"})
        if order_id.startswith("FAIL"):
            return "payment declined", 402
        return "thanks"

    client = app.test_client()
    assert client.post("/paid/OK-1").status_code == 200
    assert client.post("/paid/FAIL-1").status_code == 402
    assert api.received_count("OK-1") == 1
    assert api.received_count("FAIL-1") == 0


def test_a_view_under_a_decimal_context_that_traps_inexact_still_tracks(api, make_app, dispatch):
    # A money-careful shop traps Inexact in its own code; the pro-rata share of a coupon
    # does not divide evenly. The checkout answers 200 and the conversion is delivered.
    app, neuroon = make_app(api, NEUROON_DISPATCH=dispatch)
    add_checkout_routes(app, neuroon)

    @app.before_request
    def strict_money() -> None:
        decimal.getcontext().traps[decimal.Inexact] = True

    @app.teardown_request
    def relax(_exc: object) -> None:
        decimal.getcontext().traps[decimal.Inexact] = False

    # The lines add up to 64.97; a coupon of 4.97 brings the order to 60.00.
    ORDERS["CTX-1"] = dataclasses.replace(make_order("CTX-1"), total=Decimal("60.00"))
    client = app.test_client()
    set_clicks(client, {"SKU-RED": "log-red"})
    assert client.post("/payment/return", data={"order": "CTX-1"}).status_code == 200
    with app.app_context():
        neuroon.flush(5)
    [conversion] = api.conversions
    # 39.98 x 60.00 / 64.97 = 36.9213...
    assert conversion.attributed_value == Decimal("36.92")


def test_anything_unexpected_while_tracking_is_logged_never_raised(api, make_app, caplog):
    class Exploding(Mapping[str, str]):  # a shop's own mapping type, broken
        def __getitem__(self, key: str) -> str:
            raise KeyError(key)

        def __iter__(self) -> Iterator[str]:
            raise RuntimeError("the session store is gone")

        def __len__(self) -> int:
            return 1

    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    with app.app_context(), caplog.at_level(logging.ERROR, logger="flask_neuroon"):
        delivery = neuroon.track_conversion(make_order("BUG-1"), clicks=Exploding())
    assert (delivery.order_id, delivery.status) == ("BUG-1", "invalid")
    assert "RuntimeError" in (delivery.error or "")
    assert "tracking order BUG-1 failed unexpectedly" in caplog.text


def test_decorators_refuse_callables_of_the_wrong_shape_when_the_view_is_decorated(api, make_app):
    _app, neuroon = make_app(api)

    def find_paid_order():  # reads request.values itself: the natural mistake
        return None

    with pytest.raises(TypeError, match=r"load_order must be load_order\(order_id\)"):
        neuroon.on_order_confirmed(load_order=find_paid_order)
    with pytest.raises(TypeError, match="load_order must be callable"):
        neuroon.on_order_confirmed(load_order="orders")
    with pytest.raises(TypeError, match=r"order_id must be order_id\(\)"):
        neuroon.before_gateway(order_id=lambda request: request.form["id"])
    # What the README shows, a dict's get, a method, a function with defaults: all fine.
    neuroon.on_order_confirmed(load_order=ORDERS.get)
    neuroon.on_order_confirmed(load_order=lambda order_id, session=None: None)
    neuroon.before_gateway(order_id=lambda: "ORD")


def test_when_no_sender_thread_can_start_every_page_still_answers(
    api, make_app, monkeypatch, caplog
):
    # A container's process limit: the OS refuses new threads. Pages, the checkout
    # included, answer as usual; the conversion waits in the outbox for cron, logged once.
    import threading

    real_start = threading.Thread.start

    def refuse(self: threading.Thread) -> None:
        if self.name.startswith("neuroon"):
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", refuse)
    app, neuroon = make_app(api, NEUROON_DISPATCH="thread", NEUROON_FLUSH_INTERVAL=60)
    add_checkout_routes(app, neuroon)
    app.add_url_rule("/", "home", lambda: "home")
    caplog.set_level(logging.ERROR, "flask_neuroon")
    client = app.test_client()
    assert client.get("/").status_code == 200
    checkout(app, neuroon, "NT-1", {"SKU-RED": "log-red"})
    assert client.get("/").status_code == 200
    errors = [r for r in caplog.records if "cannot start the sender threads" in r.getMessage()]
    assert len(errors) == 1
    row = app.extensions["neuroon"].storage.get("NT-1")
    assert row is not None and row.state == "pending"
    monkeypatch.setattr(threading.Thread, "start", real_start)
    from flask_neuroon.cli import neuroon_cli

    assert app.test_cli_runner().invoke(neuroon_cli, ["flush"]).exit_code == 0
    assert api.received_count("NT-1") == 1
    assert api.conversions[0].attributed_value == Decimal("39.98")


@pytest.mark.parametrize("uri", ["memory://", "sqlite"])
@pytest.mark.parametrize("dispatch", ["sync", "thread"])
@pytest.mark.parametrize("order_id", ["SUR\udc80", "A\nB", "C\x85D", Decimal("NaN"), 1.5])
def test_an_order_id_that_cannot_be_sent_is_invalid_and_queues_nothing(
    api, make_app, tmp_path, uri, dispatch, order_id
):
    storage = f"sqlite:///{tmp_path}/o.sqlite3" if uri == "sqlite" else uri
    app, neuroon = make_app(api, NEUROON_DISPATCH=dispatch, NEUROON_STORAGE_URI=storage)
    order = {"id": order_id, "total": "10", "currency": "EUR", "lines": []}
    with app.app_context():
        delivery = neuroon.track_conversion(order, clicks={})
        assert delivery.status == "invalid"
        assert "orderId" in (delivery.error or "")
        assert neuroon.flush(2) == 0
        assert app.extensions["neuroon"].outbox.stats().pending == 0
    assert api.requests == []


def test_the_sender_starter_leaves_the_shops_requests_once_it_has_run(api, make_app):
    # A hook on every request costs every page a few microseconds; once this process's
    # senders and sweeper run it has nothing left to do, so it takes itself out.
    import os
    import threading

    app, _neuroon = make_app(api, NEUROON_DISPATCH="thread", NEUROON_FLUSH_INTERVAL=60)
    seen: list[str] = []
    app.before_request(lambda: seen.append("shop hook"))
    app.add_url_rule("/", "home", lambda: "home")
    state = app.extensions["neuroon"]
    assert state._start_senders in app.before_request_funcs[None]
    client = app.test_client()
    assert client.get("/").status_code == 200
    assert client.get("/").status_code == 200
    names = {thread.name for thread in threading.enumerate()}
    assert {"neuroon-sender-0", "neuroon-sweeper"} <= names
    assert state._start_senders not in app.before_request_funcs[None]
    assert seen == ["shop hook", "shop hook"]  # the shop's own hook still runs every time
    # A child forked from this process has none of its threads: the hook is back there.
    child = os.fork()
    if child == 0:  # pragma: no cover - the child process
        os._exit(0 if state._start_senders in app.before_request_funcs[None] else 1)
    _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize(
    ("order_id", "named"),
    [("Z" * 5000, "'ZZZZZZZZZZ"), ("A\nB", "'A\\nB'"), (float("nan"), "nan")],
)
def test_an_order_with_an_unusable_id_is_named_by_what_it_holds(
    api, make_app, caplog, order_id, named
):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    order = {"id": order_id, "total": "5.00", "currency": "EUR", "lines": []}
    with caplog.at_level(logging.ERROR, logger="flask_neuroon"), app.app_context():
        delivery = neuroon.track_conversion(order, clicks={})
    assert delivery.status == "invalid" and "orderId" in (delivery.error or "")
    (record,) = [r for r in caplog.records if "not tracked" in r.getMessage()]
    assert f"order {named}" in record.getMessage() and "order None" not in record.getMessage()
    assert len(record.getMessage()) < 300
    assert api.conversions == []
