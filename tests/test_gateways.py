"""Attribution across real gateway flows: the signed mirror cookie, webhook races, diagnostics
and `flask neuroon check` (the browser itself is in test_browser.py)."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from decimal import Decimal
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from flask import Flask, request

from flask_neuroon import ConfigurationError, Neuroon, Order, OrderLine
from flask_neuroon.cli import neuroon_cli
from flask_neuroon.config import Settings
from flask_neuroon.diagnostics import (
    CAUSE_NO_LINES,
    CAUSE_NO_USABLE_CLICKS,
    CAUSE_NOT_BOUGHT,
    CAUSE_SKU,
    CAUSE_SPELLING,
    CAUSE_UNATTRIBUTABLE,
    CAUSE_VARIANT,
    explain_mismatch,
)
from flask_neuroon.mirror import MirrorCodec
from flask_neuroon.signals import attribution_mismatch
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import SHOP_ID, AppFactory
from .shop import add_checkout_routes, click_cookie, make_order, set_clicks

SECRET = "a-secret-key-for-tests-only"
CLICKS = {"SKU-RED": "log-red"}


def mirror_of(response) -> SimpleCookie:
    cookies = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        cookies.load(header)
    return cookies


def test_the_snapshot_sets_a_signed_mirror_cookie_browsers_send_cross_site(api, make_app):
    app, neuroon = make_app(
        api, SECRET_KEY=SECRET, NEUROON_SNAPSHOT_TTL=3600, NEUROON_SNAPSHOTS="both"
    )
    add_checkout_routes(app, neuroon)
    make_order("M-1")
    client = app.test_client()
    set_clicks(client, CLICKS)
    response = client.post("/checkout/M-1/pay")
    assert response.status_code == 302
    [header] = [h for h in response.headers.getlist("Set-Cookie") if "neuroon_clicks_mirror" in h]
    attributes = {part.strip().split("=")[0].lower() for part in header.split(";")}
    assert {"secure", "httponly", "path", "max-age"} <= attributes
    assert "SameSite=None" in header and "Max-Age=3600" in header and "Path=/" in header
    assert len(header.split(";")[0]) <= 4096


def test_mirror_alone_restores_attribution_with_storage_snapshots_off(api, make_app, tmp_path):
    app, neuroon = make_app(
        api, SECRET_KEY=SECRET, NEUROON_SNAPSHOTS="cookie", NEUROON_DISPATCH="sync"
    )
    add_checkout_routes(app, neuroon)
    make_order("M-2")
    shopper = app.test_client()
    set_clicks(shopper, CLICKS)
    mirror = mirror_of(shopper.post("/checkout/M-2/pay"))["neuroon_clicks_mirror"].value
    assert app.extensions["neuroon"].storage.peek_snapshot("M-2", time.time()) is None
    # The gateway's cross-site POST: the Lax cookie stays behind, the None one comes.
    gateway = app.test_client()
    gateway.set_cookie("neuroon_clicks_mirror", mirror, domain="localhost")
    response = gateway.post("/payment/return", data={"order": "M-2"})
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers  # a request without the cookie sets nothing
    [conversion] = api.conversions
    assert conversion.attributed_value == Decimal("39.98")
    assert conversion.conversions[0]["searchLogId"] == "log-red"


@pytest.mark.parametrize(
    ("tamper", "log"),
    [
        (lambda value: value[:-2] + ("AA" if not value.endswith("AA") else "BB"), "bad signature"),
        (lambda value: "x" + value, "bad signature"),
        (
            lambda value: (
                MirrorCodec(["another-key"], "m").dumps("M-3", {"SKU-RED": "forged"}) or ""
            ),
            "bad signature",
        ),
        (
            lambda value: MirrorCodec([SECRET], "m").dumps("OTHER-ORDER", CLICKS) or "",
            "belongs to order 'OTHER-ORDER'",
        ),
    ],
    ids=["tampered", "garbled", "forged-with-another-key", "another-order"],
)
def test_forged_tampered_or_foreign_mirrors_are_ignored_with_a_log_line(
    api, make_app, caplog, tamper, log
):
    caplog.set_level(logging.INFO, "flask_neuroon")
    app, neuroon = make_app(api, SECRET_KEY=SECRET, NEUROON_SNAPSHOTS="cookie")
    good = MirrorCodec([SECRET], "neuroon_clicks_mirror").dumps("M-3", CLICKS)
    assert good is not None
    with app.test_request_context(headers={"Cookie": f"neuroon_clicks_mirror={tamper(good)}"}):
        assert neuroon.clicks_for("M-3") == {}
    with app.test_request_context(headers={"Cookie": f"neuroon_clicks_mirror={good}"}):
        assert neuroon.clicks_for("M-3") == CLICKS
    assert log in caplog.text


def test_an_expired_mirror_is_ignored(api, make_app, caplog):
    caplog.set_level(logging.INFO, "flask_neuroon")
    app, neuroon = make_app(
        api, SECRET_KEY=SECRET, NEUROON_SNAPSHOTS="cookie", NEUROON_SNAPSHOT_TTL=1
    )
    value = MirrorCodec([SECRET], "neuroon_clicks_mirror").dumps("M-4", CLICKS)
    time.sleep(2.1)
    with app.test_request_context(headers={"Cookie": f"neuroon_clicks_mirror={value}"}):
        assert neuroon.clicks_for("M-4") == {}
    assert "expired mirror cookie" in caplog.text


def test_a_rotated_secret_key_still_reads_mirrors_signed_with_the_old_one(api, make_app):
    old = MirrorCodec(["old-secret"], "neuroon_clicks_mirror").dumps("M-5", CLICKS)
    app, neuroon = make_app(
        api, SECRET_KEY=SECRET, SECRET_KEY_FALLBACKS=["old-secret"], NEUROON_SNAPSHOTS="cookie"
    )
    with app.test_request_context(headers={"Cookie": f"neuroon_clicks_mirror={old}"}):
        assert neuroon.clicks_for("M-5") == CLICKS


def test_a_huge_click_map_keeps_the_newest_entries_that_fit_4096_bytes():
    codec = MirrorCodec([SECRET], "neuroon_clicks_mirror")
    # Random ids, as real searchLogIds are: zlib cannot shrink them much.
    clicks = {f"SKU-{secrets.token_hex(8)}": secrets.token_urlsafe(40) for _ in range(400)}
    value = codec.dumps("BIG", clicks)
    assert value is not None
    assert len("neuroon_clicks_mirror=") + len(value) <= 4096
    kept = codec.loads(value, "BIG", 60)
    assert 0 < len(kept) < len(clicks)
    assert list(kept) == list(clicks)[: len(kept)]  # the first (newest) ones


def test_mirror_modes_follow_the_secret_key():
    base = {
        "NEUROON_SHOP_ID": "shop_x",
        "NEUROON_API_KEY": "sk_x",
        "NEUROON_ORIGIN": "https://s.example",
    }
    assert Settings.from_config(base).snapshots == "storage"
    assert Settings.from_config({**base, "SECRET_KEY": "k"}).snapshots == "storage"
    assert (
        Settings.from_config({**base, "SECRET_KEY": "k", "NEUROON_SNAPSHOTS": "both"}).snapshots
        == "both"
    )
    assert (
        Settings.from_config({**base, "SECRET_KEY": "k", "NEUROON_SNAPSHOTS": "storage"}).snapshots
        == "storage"
    )
    with pytest.raises(ConfigurationError, match="needs the app's SECRET_KEY"):
        Settings.from_config({**base, "NEUROON_SNAPSHOTS": "cookie"})
    with pytest.raises(ConfigurationError, match="must be one of"):
        Settings.from_config({**base, "SECRET_KEY": "k", "NEUROON_SNAPSHOTS": "browser"})


# --- webhooks -----------------------------------------------------------------------------


def webhook_shop(
    api: FakeNeuroonAPI, make_app: AppFactory, storage_uri: str, track_on_return: bool
):
    app, neuroon = make_app(api, NEUROON_STORAGE_URI=storage_uri, NEUROON_DISPATCH="thread")
    add_checkout_routes(app, neuroon)

    @app.post("/webhooks/stripe")
    def stripe_webhook():
        # checkout.session.completed: server to server, no cookie, no session.
        order_id = request.get_json()["data"]["object"]["client_reference_id"]
        neuroon.track_conversion(make_order(order_id))
        return {"received": True}

    @app.get("/thanks/<order_id>")
    def thanks(order_id: str):
        if track_on_return:  # belt and braces: the shop tracks here too
            neuroon.track_conversion(make_order(order_id))
        return "thank you"

    return app, neuroon


@pytest.mark.parametrize("track_on_return", [False, True], ids=["webhook-only", "both-confirm"])
def test_webhook_racing_the_shoppers_return_delivers_once_attributed(
    api, make_app, backend_uri, track_on_return
):
    app, neuroon = webhook_shop(api, make_app, backend_uri, track_on_return)
    orders = [f"WH-{index}" for index in range(25)]
    for order_id in orders:
        shopper = app.test_client()
        set_clicks(shopper, CLICKS)
        assert shopper.post(f"/checkout/{order_id}/pay").status_code == 302
        stripe = app.test_client()
        start = threading.Barrier(2)
        answers: list[int] = []

        def webhook(order_id: str = order_id) -> None:
            start.wait()
            event = {
                "type": "checkout.session.completed",
                "data": {"object": {"client_reference_id": order_id}},
            }
            answers.append(stripe.post("/webhooks/stripe", json=event).status_code)

        def shopper_returns(order_id: str = order_id, shopper=shopper) -> None:
            start.wait()  # success_url: a top-level GET, so the Lax cookie comes along
            answers.append(shopper.get(f"/thanks/{order_id}").status_code)

        threads = [threading.Thread(target=webhook), threading.Thread(target=shopper_returns)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert answers == [200, 200]
    with app.app_context():
        deadline = time.time() + 20
        while neuroon.flush(1) and time.time() < deadline:
            pass
    delivered = api.delivered_order_ids()
    assert sorted(delivered) == sorted(orders)
    assert set(delivered.values()) == {1}
    assert {c.attributed_value for c in api.conversions} == {Decimal("39.98")}
    assert sum(api.received_count(order_id) for order_id in orders) == len(orders)
    print(
        f"webhook race [{backend_uri.split(':')[0]}]: {len(orders)} orders, "
        f"delivered {len(delivered)}, all attributed, duplicates 0"
    )


# --- diagnostics --------------------------------------------------------------------------


def order_with(*lines: OrderLine) -> Order:
    return Order(id="D-1", total=Decimal("10"), currency="EUR", lines=list(lines))


@pytest.mark.parametrize(
    ("lines", "clicks", "cause"),
    [
        (
            [OrderLine(product_id=1234, unit_price=5), OrderLine(product_id=99, unit_price=5)],
            {"SKU-RED": "l"},
            CAUSE_SKU,
        ),
        ([OrderLine(product_id="SKU-RED-XL", unit_price=5)], {"SKU-RED": "l"}, CAUSE_VARIANT),
        ([OrderLine(product_id="sku-red ", unit_price=5)], {"SKU-RED": "l"}, CAUSE_SPELLING),
        ([OrderLine(product_id="SKU-BLUE", unit_price=5)], {"SKU-RED": "l"}, CAUSE_NOT_BOUGHT),
    ],
    ids=["sku-vs-internal-id", "parent-vs-variant", "case-or-spaces", "not-bought"],
)
def test_mismatches_name_their_likely_cause(lines, clicks, cause):
    explanation = explain_mismatch(order_with(*lines), clicks)
    assert explanation is not None
    assert explanation.cause == cause
    assert "SKU-RED" in explanation.message


@pytest.mark.parametrize(
    ("lines", "clicks", "cause"),
    [
        ([OrderLine(product_id="P1", unit_price=5)], {123: "log"}, CAUSE_SKU),
        ([OrderLine(product_id="P1", unit_price=5)], {"P1": 123}, CAUSE_NO_USABLE_CLICKS),
        ([OrderLine(product_id=1.0, unit_price=5)], {"1.0": "log"}, CAUSE_NO_LINES),
        (
            [OrderLine(product_id="P1", quantity=0.5, unit_price=5)],
            {"P1": "l"},
            CAUSE_UNATTRIBUTABLE,
        ),
    ],
    ids=["integer-click-key", "number-search-log-id", "float-product-id", "weighed-product"],
)
def test_a_mismatch_of_odd_ids_is_explained_not_raised(lines, clicks, cause):
    explanation = explain_mismatch(order_with(*lines), clicks)
    assert explanation is not None
    assert explanation.cause == cause


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("a shop object whose __str__ fails")


@pytest.mark.parametrize(
    "clicks",
    [{123: "slog"}, {"P1": 5}, {_Unprintable(): "x"}],
    ids=["int-key", "int-value", "odd-key"],
)
def test_a_diagnosis_never_costs_the_order(api, make_app, clicks):
    # The order is still sent (unattributed) whatever the click map and lines hold.
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    order = Order(
        id="DX-1",
        total=Decimal("10"),
        currency="EUR",
        lines=[
            OrderLine(product_id=_Unprintable(), unit_price=10),
            OrderLine(product_id="P9", unit_price=0),
        ],
    )
    with app.app_context():
        assert neuroon.track_conversion(order, clicks=clicks).status == "sent"
    assert api.conversions[0].order_id == "DX-1"
    assert api.conversions[0].attributed_value == 0


def test_a_mismatch_logs_one_warning_and_signals(api, make_app, caplog):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    seen: list[dict[str, object]] = []
    attribution_mismatch.connect(lambda sender, **kw: seen.append(kw), app, weak=False)
    caplog.set_level(logging.INFO, "flask_neuroon")
    clicks = {f"SKU-{n}": f"log-{n}" for n in range(8)}
    order = Order(
        id="D-2",
        total=Decimal("10"),
        currency="EUR",
        lines=[OrderLine(product_id=n, unit_price=1) for n in range(1000, 1010)],
    )
    with app.app_context():
        assert neuroon.track_conversion(order, clicks=clicks).wait(5) == "sent"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "SKU versus internal id" in warnings[0].getMessage()
    assert seen[0]["cause"] == CAUSE_SKU
    assert seen[0]["click_ids"] == ("SKU-0", "SKU-1", "SKU-2", "SKU-3", "SKU-4")
    assert seen[0]["line_ids"] == ("1000", "1001", "1002", "1003", "1004")


# --- flask neuroon check --------------------------------------------------------------------


def check(app: Flask, *args: str):
    return app.test_cli_runner().invoke(neuroon_cli, ["check", *args])


def test_check_passes_on_a_good_configuration(api, make_app):
    app, _ = make_app(api, NEUROON_SHOP_ID=SHOP_ID)
    result = check(app, "--call-api")
    assert result.exit_code == 0, result.output
    assert "accepted the key and the Origin" in result.output
    assert "no problems found" in result.output


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        (
            {"NEUROON_API_KEY": "sk_wrong_key_0000000000000000000000"},
            "401: the API key is not valid",
        ),
        (
            {"NEUROON_ORIGIN": "http://127.0.0.2"},
            "403: the Origin http://127.0.0.2 is not the shop's",
        ),
        ({"NEUROON_SHOP_ID": "shop_other"}, "404: no shop shop_other"),
    ],
    ids=["invalid-key", "origin-mismatch", "unknown-shop"],
)
def test_check_explains_each_rejection_in_words(api, make_app, overrides, words):
    app, _ = make_app(api, **overrides)
    result = check(app, "--call-api")
    assert result.exit_code == 1
    assert words in result.output
    assert "problem(s) found" in result.output
    assert "sk_wrong_key" not in result.output


def test_check_reports_an_unreachable_api_and_storage(make_app, tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    app, _ = make_app(None, NEUROON_STORAGE_URI=f"sqlite:///{blocker}/db.sqlite3")
    result = check(app, "--call-api")
    assert result.exit_code == 1
    assert "is not reachable" in result.output
    assert "the API could not be reached" in result.output


def test_check_warns_about_key_shape_missing_keys_and_dead_letters(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    api.fail(1, status=422)
    with app.app_context():
        neuroon.track_conversion(make_order("CHK-1"), clicks={})
    result = check(app)
    assert "not shaped like a Neuroon key" in result.output
    assert "1 dead letters" in result.output
    assert result.exit_code == 0
    app2, _ = make_app(api, NEUROON_API_KEY=None)
    result = check(app2)
    assert result.exit_code == 1
    assert "NEUROON_API_KEY not set" in result.output


def test_check_never_prints_the_key(api, make_app):
    app, _ = make_app(api, NEUROON_API_KEY="sk_" + "a" * 32)
    result = check(app, "--call-api")
    assert "a" * 32 not in result.output
    assert "API key set (sk_…, 35 characters)" in result.output


def test_click_cookie_helper_matches_the_widget_encoding():
    assert click_cookie({"a b": "1+2"}) == "%7B%22a%20b%22%3A%221%2B2%22%7D"


def test_neuroon_constructor_takes_storage_objects(api, tmp_path):
    from flask_neuroon.storage import MemoryStorage

    storage = MemoryStorage()
    app = Flask("custom_storage", instance_path=str(tmp_path))
    app.config.update(
        {
            "NEUROON_SHOP_ID": SHOP_ID,
            "NEUROON_API_KEY": "sk_x",
            "NEUROON_ORIGIN": "http://127.0.0.1",
            "NEUROON_API_URL": api.url,
        }
    )
    Neuroon(app, storage=storage)
    assert app.extensions["neuroon"].storage is storage


def test_a_mirror_set_over_plain_http_to_a_real_host_warns_once(api, make_app, caplog):
    app, neuroon = make_app(api, SECRET_KEY=SECRET, NEUROON_SNAPSHOTS="cookie")
    cookie = {"Cookie": "neuroon_clicks=" + click_cookie(CLICKS)}
    for order_id in ("H-1", "H-2"):
        with app.test_request_context(base_url="http://shop.example", headers=cookie):
            neuroon.persist_before_gateway(order_id)
    assert caplog.text.count("browsers drop it") == 1
    caplog.clear()
    secure_app, secure_neuroon = make_app(api, SECRET_KEY=SECRET, NEUROON_SNAPSHOTS="cookie")
    with secure_app.test_request_context(base_url="https://shop.example", headers=cookie):
        assert secure_neuroon.persist_before_gateway("H-3") == 1
    with secure_app.test_request_context(base_url="http://127.0.0.1:5000", headers=cookie):
        assert secure_neuroon.persist_before_gateway("H-4") == 1
    assert "browsers drop it" not in caplog.text


def test_a_mirror_that_cannot_be_read_is_ignored_never_raised():
    # Whatever goes wrong reading a mirror (here a signing key of the wrong type, which
    # init_app now refuses), the order must still be tracked: the codec answers {}.
    from flask_neuroon.mirror import MirrorCodec

    good = MirrorCodec(["right key"], "m").dumps("O-1", {"SKU": "log"})
    assert good is not None
    broken = MirrorCodec([12345], "m")  # type: ignore[list-item]
    assert broken.loads(good, "O-1", 60) == {}
