"""The fake Neuroon API, driven by a real ``requests`` client over loopback.

Each test states what a user of ``flask_neuroon.testing`` observes: the status codes and
messages of the contract, what is recorded (money exactly as sent), the faults it injects,
keep-alive, the widget endpoints, the dashboard, and a clean stop.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

import flask_neuroon.testing as testing_module
from flask_neuroon.testing import FakeNeuroonAPI, RecordedConversion, fake_api

SHOP = "shop_1"
KEY = "sk_test_0123456789abcdef"
ORIGIN = "http://127.0.0.1:5000"


@pytest.fixture
def api() -> Iterator[FakeNeuroonAPI]:
    with fake_api(shop_id=SHOP, api_key=KEY) as server:
        yield server


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def headers(
    *,
    key: str | None = KEY,
    origin: str | None = ORIGIN,
    content_type: str | None = "application/json",
) -> dict[str, str]:
    """The request headers of the contract; ``None`` leaves one out."""
    base = {"X-Shop-API-Key": key, "Origin": origin, "Content-Type": content_type}
    return {k: v for k, v in base.items() if v is not None}


def order(order_id: str = "1001", **fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "orderId": order_id,
        "orderValue": 59.9,
        "attributedValue": 24.9,
        "currency": "EUR",
        "conversions": [
            {"productId": "sku-1", "searchLogId": "log-1", "quantity": 1, "lineTotal": 24.9}
        ],
    }
    body.update(fields)
    return body


def post(
    session: requests.Session,
    api: FakeNeuroonAPI,
    body: Any,
    *,
    shop: str = SHOP,
    timeout: float = 5.0,
    key: str | None = KEY,
    origin: str | None = ORIGIN,
    content_type: str | None = "application/json",
) -> requests.Response:
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return session.post(
        f"{api.url}/api/plugin/shops/{shop}/track/conversion",
        data=data,
        headers=headers(key=key, origin=origin, content_type=content_type),
        timeout=timeout,
    )


# --------------------------------------------------------------------------- the contract


def test_accepts_a_valid_conversion_and_records_it(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    response = post(session, api, order("1001"))

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.json() == {"ok": True, "orderId": "1001", "attributedValue": 24.9}
    [conversion] = api.conversions
    assert isinstance(conversion, RecordedConversion)
    assert conversion.order_id == "1001"
    assert conversion.order_value == Decimal("59.9")
    assert conversion.attributed_value == Decimal("24.9")
    assert conversion.attributed_value_derived is False
    assert conversion.currency == "EUR"
    assert conversion.conversions == [
        {"productId": "sku-1", "searchLogId": "log-1", "quantity": 1, "lineTotal": Decimal("24.9")}
    ]
    assert conversion.origin == ORIGIN
    assert conversion.user_agent is not None
    assert conversion.user_agent.startswith("python-requests/")
    [request] = api.requests
    assert request.method == "POST"
    assert request.path == f"/api/plugin/shops/{SHOP}/track/conversion"
    assert request.status == 200
    assert request.header("x-shop-api-key") == KEY
    assert request.json["orderId"] == "1001"
    assert json.loads(request.body) == json.loads(json.dumps(order("1001")))


def test_unknown_shop_is_404_before_the_key_is_checked(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    response = post(session, api, order(), shop="shop_other", key="wrong")

    assert response.status_code == 404
    assert response.json() == {"error": "Shop not found"}
    assert api.conversions == []


@pytest.mark.parametrize("key", [None, "", "sk_test_wrong", KEY + "x"])
def test_missing_or_wrong_api_key_is_401(
    api: FakeNeuroonAPI, session: requests.Session, key: str | None
) -> None:
    response = post(session, api, order(), key=key, origin="http://evil")

    assert response.status_code == 401
    assert response.json() == {"error": "Invalid API key"}
    assert api.conversions == []


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://127.0.0.1", 200),
        ("http://127.0.0.1:5000", 200),
        ("http://localhost:8080", 200),
        ("HTTP://LOCALHOST", 200),
        ("https://127.0.0.1", 403),
        ("http://127.0.0.2", 403),
        ("http://evil.example", 403),
        ("null", 403),
        ("http://127.0.0.1/path", 403),
        (None, 403),
    ],
)
def test_origin_must_be_an_allowed_origin_any_port_when_allowed_without_one(
    api: FakeNeuroonAPI, session: requests.Session, origin: str | None, status: int
) -> None:
    response = post(session, api, order(), origin=origin)

    assert response.status_code == status
    if status == 403:
        assert response.json() == {"error": "Origin not allowed"}


def test_an_allowed_origin_with_a_port_matches_that_port_only(session: requests.Session) -> None:
    with fake_api(shop_id=SHOP, api_key=KEY, allowed_origins=["https://shop.example:8443"]) as api:
        ok = post(session, api, order("1"), origin="https://shop.example:8443")
        other_port = post(session, api, order("2"), origin="https://shop.example")
        other_host = post(session, api, order("3"), origin="http://127.0.0.1")

    assert ok.status_code == 200
    assert other_port.status_code == 403
    assert other_host.status_code == 403


def test_bad_allowed_origin_is_a_constructor_error() -> None:
    with pytest.raises(ValueError, match="not an origin"):
        FakeNeuroonAPI(allowed_origins=["shop.example"])


@pytest.mark.parametrize(
    ("content_type", "body", "error"),
    [
        ("text/plain", json.dumps(order()), "Content-Type must be application/json"),
        (None, json.dumps(order()), "Content-Type must be application/json"),
        ("application/json", "{not json", "Invalid JSON"),
        ("application/json", '{"orderValue": NaN}', "Invalid JSON"),
        ("application/json", "[1, 2]", "Request body must be a JSON object"),
        ("application/json; charset=utf-8", '"1001"', "Request body must be a JSON object"),
    ],
)
def test_body_must_be_a_json_object(
    api: FakeNeuroonAPI, session: requests.Session, content_type: str | None, body: str, error: str
) -> None:
    response = post(session, api, body, content_type=content_type)

    assert response.status_code == 400
    assert response.json() == {"error": error}
    assert api.requests[0].status == 400


def test_validation_lists_one_message_per_problem(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    body = {
        "orderValue": "59.90",
        "currency": "eur",
        "conversions": [
            {"productId": "sku-1", "quantity": 0, "lineTotal": -1},
            {"productId": "", "searchLogId": 7, "quantity": 1.5, "lineTotal": "3.00"},
            "sku-3",
        ],
        "attributedValue": -2,
    }

    response = post(session, api, body)

    assert response.status_code == 400
    assert response.json() == {
        "error": "Validation failed",
        "details": [
            "orderId is required",
            "orderValue must be a number >= 0",
            "currency must be a 3-letter ISO 4217 code",
            "conversions[0].searchLogId is required",
            "conversions[0].quantity must be a positive integer",
            "conversions[0].lineTotal must be a number >= 0",
            "conversions[1].productId must be a non-empty string",
            "conversions[1].searchLogId must be a non-empty string",
            "conversions[1].quantity must be a positive integer",
            "conversions[1].lineTotal must be a number >= 0",
            "conversions[2] must be an object",
            "attributedValue must be a number >= 0",
        ],
    }
    assert api.conversions == []


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"orderId": ""}, "orderId must be a non-empty string"),
        ({"orderId": 1001}, "orderId must be a non-empty string"),
        ({"orderValue": None}, "orderValue is required"),
        ({"orderValue": True}, "orderValue must be a number >= 0"),
        ({"orderValue": -0.01}, "orderValue must be a number >= 0"),
        ({"currency": "EURO"}, "currency must be a 3-letter ISO 4217 code"),
        ({"conversions": {"sku-1": "log-1"}}, "conversions must be an array"),
        ({"conversions": None}, "conversions is required"),
        ({"attributedValue": 60}, "attributedValue must not exceed orderValue"),
    ],
)
def test_each_invalid_field_gets_a_clear_message(
    api: FakeNeuroonAPI, session: requests.Session, fields: dict[str, Any], message: str
) -> None:
    response = post(session, api, order(**fields))

    assert response.status_code == 400
    assert response.json()["details"] == [message]


def test_quantity_written_as_a_whole_float_is_accepted_like_in_javascript(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    body = order(
        conversions=[{"productId": "a", "searchLogId": "l", "quantity": 2.0, "lineTotal": 1}]
    )

    assert post(session, api, body).status_code == 200
    assert api.conversions[0].conversions[0]["quantity"] == 2


def test_repeated_order_id_is_409_and_recorded_once(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    first = post(session, api, order("1001"))
    again = post(session, api, order("1001", orderValue=99))

    assert first.status_code == 200
    assert again.status_code == 409
    assert again.json() == {"error": "Conversion already recorded", "orderId": "1001"}
    assert [c.order_id for c in api.conversions] == ["1001"]
    assert api.conversions[0].order_value == Decimal("59.9")
    assert api.received_count("1001") == 2
    assert api.delivered_order_ids() == {"1001": 2}
    assert api.stats()["duplicates"] == 1


def test_concurrent_deliveries_of_one_order_are_accepted_exactly_once(api: FakeNeuroonAPI) -> None:
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def send() -> None:
        with requests.Session() as s:
            barrier.wait()
            statuses.append(post(s, api, order("race")).status_code)

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(statuses) == [200] + [409] * 7
    assert len(api.conversions) == 1
    assert api.received_count("race") == 8


# --------------------------------------------------------------------------- money


def test_money_is_recorded_digit_for_digit_as_decimal(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    raw = (
        '{"orderId": "d1", "orderValue": 0.30, "currency": "EUR", "conversions": ['
        '{"productId": "a", "searchLogId": "l1", "quantity": 1, "lineTotal": 0.10},'
        '{"productId": "b", "searchLogId": "l2", "quantity": 3, "lineTotal": 0.20}]}'
    )

    response = post(session, api, raw)

    assert response.status_code == 200
    # derived attributedValue: 0.10 + 0.20 in Decimal, written back as the JSON number 0.30
    assert '"attributedValue": 0.30' in response.text
    assert response.json(parse_float=Decimal)["attributedValue"] == Decimal("0.30")
    [conversion] = api.conversions
    assert str(conversion.order_value) == "0.30"
    assert str(conversion.attributed_value) == "0.30"
    assert conversion.attributed_value_derived is True
    assert [str(line["lineTotal"]) for line in conversion.conversions] == ["0.10", "0.20"]


def test_a_float_computed_amount_is_not_rounded_away(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    raw = json.dumps(order("f1", orderValue=0.1 + 0.2, attributedValue=0.1 + 0.2))

    post(session, api, raw)

    assert api.conversions[0].order_value == Decimal("0.30000000000000004")


def test_integer_amounts_are_recorded_as_decimal(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    body = order("jpy", orderValue=1500, attributedValue=1200, currency="JPY")
    body["conversions"][0]["lineTotal"] = 1200

    response = post(session, api, body)

    assert response.json()["attributedValue"] == 1200
    conversion = api.conversions[0]
    assert conversion.order_value == Decimal(1500)
    assert isinstance(conversion.order_value, Decimal)
    assert isinstance(conversion.conversions[0]["lineTotal"], Decimal)


def test_any_decimal_amounts_round_trip_exactly() -> None:
    with fake_api(shop_id=SHOP, api_key=KEY) as api, requests.Session() as session:
        ids = iter(range(10**9))
        amounts = st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False)

        @settings(max_examples=60, deadline=None)
        @given(lines=st.lists(amounts, max_size=5), extra=amounts)
        def check(lines: list[Decimal], extra: Decimal) -> None:
            order_id = f"h-{next(ids)}"
            attributed = sum(lines, Decimal(0))
            body = {
                "orderId": order_id,
                "orderValue": attributed + extra,
                "currency": "EUR",
                "conversions": [
                    {"productId": f"p{i}", "searchLogId": "l", "quantity": 1, "lineTotal": total}
                    for i, total in enumerate(lines)
                ],
            }

            response = post(session, api, testing_module.dumps(body))

            assert response.status_code == 200
            assert response.json(parse_float=Decimal)["attributedValue"] == attributed
            recorded = api.conversions[-1]
            assert recorded.order_id == order_id
            assert str(recorded.order_value) == str(attributed + extra)
            assert [str(line["lineTotal"]) for line in recorded.conversions] == [
                str(total) for total in lines
            ]
            assert recorded.attributed_value == attributed

        check()


# --------------------------------------------------------------------------- connections


def test_keep_alive_reuses_one_connection(api: FakeNeuroonAPI, session: requests.Session) -> None:
    for i in range(50):
        assert post(session, api, order(f"ka-{i}")).status_code == 200

    assert api.connections_accepted == 1
    assert len(api.conversions) == 50


def test_error_answers_keep_the_connection_too(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    post(session, api, order(), shop="nope")
    post(session, api, "{broken")
    post(session, api, order("ok"))

    assert api.connections_accepted == 1


def test_connection_close_is_honoured(api: FakeNeuroonAPI) -> None:
    body = json.dumps(order("cc")).encode()
    request = (
        f"POST /api/plugin/shops/{SHOP}/track/conversion HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nX-Shop-API-Key: {KEY}\r\nOrigin: {ORIGIN}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", api.port), timeout=5) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):  # ends only when the server closes the connection
            received += chunk

    head, _, payload = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"\r\nConnection: close" in head
    assert f"Content-Length: {len(payload)}".encode() in head
    assert json.loads(payload)["orderId"] == "cc"


def test_chunked_request_body_is_read(api: FakeNeuroonAPI, session: requests.Session) -> None:
    def chunks() -> Iterator[bytes]:
        yield json.dumps(order("chunked")).encode()

    response = session.post(
        f"{api.url}/api/plugin/shops/{SHOP}/track/conversion",
        data=chunks(),
        headers=headers(),
        timeout=5,
    )

    assert response.status_code == 200
    assert api.requests[0].header("Transfer-Encoding") == "chunked"


def test_oversized_body_is_413(api: FakeNeuroonAPI, session: requests.Session) -> None:
    response = post(session, api, b"{" + b" " * (testing_module.MAX_BODY_BYTES + 1) + b"}")

    assert response.status_code == 413
    assert api.requests == []


# --------------------------------------------------------------------------- faults


def test_fail_answers_the_next_requests_then_recovers(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    api.fail(2)

    first = post(session, api, order("r1"))
    second = post(session, api, order("r1"))
    third = post(session, api, order("r1"))

    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 200]
    assert first.json() == {"error": "Service unavailable"}
    assert "Retry-After" not in first.headers
    assert api.received_count("r1") == 3
    assert api.delivered_order_ids() == {"r1": 1}
    assert [r.status for r in api.requests] == [503, 503, 200]
    assert api.stats()["injected"] == 2


def test_fail_with_retry_after_and_custom_body(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    api.fail(1, 429, retry_after=7)
    api.fail(1, 502, body="<html>Bad gateway</html>")

    limited = post(session, api, order("r2"))
    gateway = post(session, api, order("r2"))

    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "7"
    assert limited.json() == {"error": "Too Many Requests"}
    assert gateway.status_code == 502
    assert gateway.headers["Content-Type"].startswith("text/html")
    assert gateway.text == "<html>Bad gateway</html>"
    assert api.conversions == []


def test_faults_apply_before_authentication(api: FakeNeuroonAPI, session: requests.Session) -> None:
    api.fail(1, 500)

    assert post(session, api, order(), key="wrong").status_code == 500


def test_fail_rejects_nonsense_arguments(api: FakeNeuroonAPI) -> None:
    with pytest.raises(ValueError, match="times"):
        api.fail(-1)
    with pytest.raises(ValueError, match="status"):
        api.fail(1, 99)


def test_drop_closes_the_connection_without_an_answer(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    api.drop(1)

    with pytest.raises(requests.ConnectionError):
        post(session, api, order("d1"))
    after = post(session, api, order("d1"))

    assert after.status_code == 200
    assert api.received_count("d1") == 2
    assert api.requests[0].status is None
    assert api.stats()["dropped"] == 1
    assert api.connections_accepted == 2  # the dropped connection was not reused


def test_slow_answer_times_the_client_out_but_the_order_was_recorded(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    api.slow(0.5, times=1)

    with pytest.raises(requests.ReadTimeout):
        post(session, api, order("s1"), timeout=0.1)
    assert api.wait_for(1, timeout=5)  # the server finished the request after the delay
    retry = post(session, api, order("s1"))

    assert retry.status_code == 409
    assert api.received_count("s1") == 2


def test_slow_until_cleared(api: FakeNeuroonAPI, session: requests.Session) -> None:
    api.slow(1.0)

    with pytest.raises(requests.ReadTimeout):
        post(session, api, order("a"), timeout=0.1)
    with pytest.raises(requests.ReadTimeout):
        post(session, api, order("b"), timeout=0.1)
    api.clear_faults()
    after = post(session, api, order("c"), timeout=5)

    assert after.status_code == 200
    assert api.wait_for(3, timeout=5)  # the slowed ones finish later, as on a real server
    assert sorted(c.order_id for c in api.conversions) == ["a", "b", "c"]


def test_down_answers_503_until_up(api: FakeNeuroonAPI, session: requests.Session) -> None:
    api.down()
    answers = [post(session, api, order("u1")).status_code for _ in range(3)]
    api.up()

    assert answers == [503, 503, 503]
    assert post(session, api, order("u1")).status_code == 200


def test_clear_faults_cancels_pending_failures(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    api.fail(5)
    api.drop(5)
    api.down()
    api.clear_faults()

    assert post(session, api, order("cf")).status_code == 200


def test_wait_for_blocks_until_enough_conversions(api: FakeNeuroonAPI) -> None:
    def later() -> None:
        time.sleep(0.1)
        with requests.Session() as s:
            post(s, api, order("w1"))

    threading.Thread(target=later).start()

    assert api.wait_for(1, timeout=5) is True
    assert api.wait_for(2, timeout=0.1) is False


def test_reset_forgets_everything_recorded(api: FakeNeuroonAPI, session: requests.Session) -> None:
    post(session, api, order("x1"))
    api.sync_products([{"externalId": "sku-1", "name": "Mug", "price": 5}])
    api.fail(1)

    api.reset()

    assert api.conversions == []
    assert api.requests == []
    assert api.received_count("x1") == 0
    assert api.products == []
    assert post(session, api, order("x1")).status_code == 200  # no fault left, not a duplicate


# --------------------------------------------------------------------------- widget side


def test_signed_search_log_ids_count_in_attributed_revenue(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    signed = api.issue_search_log_id("sku-1", "mug")
    for_other_product = api.issue_search_log_id("sku-2")
    forged = FakeNeuroonAPI(secret="not-the-fake-secret").issue_search_log_id("sku-1")
    body = order(
        "rev-1",
        orderValue=100,
        currency="EUR",
        conversions=[
            {"productId": "sku-1", "searchLogId": signed, "quantity": 2, "lineTotal": 20.50},
            {"productId": "sku-3", "searchLogId": for_other_product, "quantity": 1, "lineTotal": 7},
            {"productId": "sku-1", "searchLogId": forged, "quantity": 1, "lineTotal": 3},
            {"productId": "sku-4", "searchLogId": "log-plain", "quantity": 1, "lineTotal": 4},
        ],
    )
    del body["attributedValue"]
    jpy = order(
        "rev-2",
        orderValue=3000,
        currency="JPY",
        conversions=[
            {
                "productId": "sku-2",
                "searchLogId": for_other_product,
                "quantity": 1,
                "lineTotal": 1500,
            }
        ],
    )
    del jpy["attributedValue"]

    assert post(session, api, body).status_code == 200
    assert post(session, api, jpy).status_code == 200

    assert api.attributed_revenue() == {"EUR": Decimal("20.50"), "JPY": Decimal(1500)}
    eur = api.conversions[0]
    assert [line["productId"] for line in eur.attributed_lines] == ["sku-1"]
    assert [line["searchLogId"] for line in eur.noise_lines] == [
        for_other_product,
        forged,
        "log-plain",
    ]
    assert eur.attributed_value == Decimal("34.50")  # derived: every line, verified or not
    assert api.verify_search_log_id(signed, "sku-1")
    assert not api.verify_search_log_id(signed, "sku-2")


def test_search_log_ids_from_another_secret_do_not_verify() -> None:
    other = FakeNeuroonAPI(secret="another-secret")
    ours = FakeNeuroonAPI()

    assert not ours.verify_search_log_id(other.issue_search_log_id("sku-1"), "sku-1")


def test_product_sync_then_widget_search_with_cors(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    synced = session.post(
        f"{api.url}/api/plugin/shops/{SHOP}/products/sync",
        json={
            "products": [
                {"externalId": "sku-1", "name": "Blue Mug", "price": 12.5, "url": "/p/1"},
                {"externalId": "sku-2", "name": "Red mug", "price": 9, "url": "/p/2"},
                {"externalId": "sku-3", "name": "Teapot", "price": 30.00, "url": "/p/3"},
            ]
        },
        headers=headers(),
        timeout=5,
    )
    search = session.get(
        f"{api.url}/api/widget/shops/{SHOP}/search",
        params={"q": "MUG"},
        headers={"Origin": "https://anywhere.example"},
        timeout=5,
    )
    everything = session.get(f"{api.url}/api/widget/shops/{SHOP}/search", timeout=5)

    assert synced.status_code == 200
    assert synced.json() == {"ok": True, "synced": 3}
    assert search.status_code == 200
    assert search.headers["Access-Control-Allow-Origin"] == "*"
    found = search.json(parse_float=Decimal)
    assert found["query"] == "MUG"
    assert [(r["productId"], r["name"], r["price"], r["url"]) for r in found["results"]] == [
        ("sku-1", "Blue Mug", Decimal("12.5"), "/p/1"),
        ("sku-2", "Red mug", 9, "/p/2"),
    ]
    for result in found["results"]:
        assert api.verify_search_log_id(result["searchLogId"], result["productId"])
    assert len(everything.json()["results"]) == 3


def test_search_preflight_and_unknown_shop(api: FakeNeuroonAPI, session: requests.Session) -> None:
    preflight = session.options(
        f"{api.url}/api/widget/shops/{SHOP}/search",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "GET",
        },
        timeout=5,
    )
    unknown = session.get(f"{api.url}/api/widget/shops/nope/search?q=x", timeout=5)

    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.content == b""
    assert unknown.status_code == 404
    assert unknown.headers["Access-Control-Allow-Origin"] == "*"


def test_product_sync_checks_key_and_body(api: FakeNeuroonAPI, session: requests.Session) -> None:
    url = f"{api.url}/api/plugin/shops/{SHOP}/products/sync"
    unauthorized = session.post(url, json={"products": []}, headers=headers(key="no"), timeout=5)
    invalid = session.post(
        url,
        json={"products": [{"externalId": "", "name": 3, "price": "1.00"}]},
        headers=headers(),
        timeout=5,
    )

    assert unauthorized.status_code == 401
    assert invalid.status_code == 400
    assert invalid.json()["details"] == [
        "products[0].externalId must be a non-empty string",
        "products[0].name must be a string",
        "products[0].price must be a number >= 0",
    ]
    assert api.products == []


def test_sync_products_in_python_reads_float_prices_exactly(api: FakeNeuroonAPI) -> None:
    api.sync_products([{"externalId": "sku-1", "name": "Mug", "price": 12.1, "url": "/m"}])
    api.sync_products([{"externalId": "sku-1", "name": "Mug v2", "price": Decimal("13.10")}])

    assert api.products == [{"externalId": "sku-1", "name": "Mug v2", "price": Decimal("13.10")}]
    with pytest.raises(ValueError, match=r"products\[0\].price"):
        api.sync_products([{"externalId": "sku-2", "name": "Bad", "price": -1}])


# --------------------------------------------------------------------------- read-outs


def test_dashboard_lists_conversions_and_escapes_hostile_text(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    signed = api.issue_search_log_id("<img src=x onerror=alert(1)>")
    hostile = '<script>alert("pwned")</script>'
    body = order(
        hostile,
        conversions=[
            {
                "productId": "<img src=x onerror=alert(1)>",
                "searchLogId": signed,
                "quantity": 1,
                "lineTotal": 24.9,
            }
        ],
    )
    post(session, api, body)
    post(session, api, body)
    post(session, api, order(), key="bad")

    page = session.get(f"{api.url}/dashboard", timeout=5)
    root = session.get(f"{api.url}/", timeout=5)

    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert root.text.startswith("<!doctype html>")
    html_text = page.text
    assert "<script>" not in html_text
    assert "<img" not in html_text
    assert 'data-order-id="&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;"' in html_text
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;</td>" in html_text
    assert 'class="line verified"' in html_text
    assert '<tr data-currency="EUR"><td>EUR</td><td class="revenue num">24.9</td>' in html_text
    assert '<div class="stat" data-stat="duplicates"><dt>duplicates</dt><dd>1</dd>' in html_text
    assert '<div class="stat" data-stat="rejected"><dt>rejected</dt><dd>1</dd>' in html_text
    assert KEY not in html_text


def test_conversions_endpoint_serves_the_record_as_json_numbers(
    api: FakeNeuroonAPI, session: requests.Session
) -> None:
    signed = api.issue_search_log_id("sku-1")
    body = order("j1", orderValue=10.10)
    body["conversions"][0].update(searchLogId=signed, lineTotal=5.05)
    body["attributedValue"] = 5.05
    post(session, api, body)

    response = session.get(f"{api.url}/api/_fake/conversions", timeout=5)
    data = json.loads(response.text, parse_float=Decimal)

    assert response.status_code == 200
    assert data["shopId"] == SHOP
    [conversion] = data["conversions"]
    assert conversion["orderId"] == "j1"
    assert conversion["orderValue"] == Decimal("10.1")
    assert conversion["attributedValue"] == Decimal("5.05")
    assert conversion["conversions"][0]["lineTotal"] == Decimal("5.05")
    assert conversion["conversions"][0]["verified"] is True
    assert data["attributedRevenue"] == {"EUR": Decimal("5.05")}
    assert data["stats"]["accepted"] == 1


def test_anything_else_is_a_json_404(api: FakeNeuroonAPI, session: requests.Session) -> None:
    response = session.get(f"{api.url}/api/nothing/here", timeout=5)
    wrong_method = session.get(f"{api.url}/api/plugin/shops/{SHOP}/track/conversion", timeout=5)

    assert response.status_code == 404
    assert response.json() == {"error": "Not found"}
    assert wrong_method.status_code == 405
    assert wrong_method.headers["Allow"] == "POST"
    assert api.requests == []  # not a POST: not a conversion request


def test_api_key_never_appears_in_reprs_or_logs(
    session: requests.Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="flask_neuroon.testing")
    with fake_api(shop_id=SHOP, api_key=KEY) as api:
        post(session, api, order("k1"))
        post(session, api, order("k1"), key="sk_test_wrong_guess")
        request_repr = repr(api.requests[0])
        api_repr = repr(api)

    assert api_repr == f"<FakeNeuroonAPI url={api.url!r} shop_id={SHOP!r}>"
    assert KEY not in api_repr
    assert KEY not in request_repr
    assert "<redacted>" in request_repr
    assert "sk_test_wrong_guess" not in request_repr
    assert KEY not in caplog.text
    assert any("/track/conversion" in r.getMessage() for r in caplog.records)


# --------------------------------------------------------------------------- lifecycle


def test_stop_frees_the_port_and_is_idempotent(session: requests.Session) -> None:
    api = FakeNeuroonAPI(shop_id=SHOP, api_key=KEY).start()
    post(session, api, order("p1"))  # leaves an idle keep-alive connection open
    port = api.port

    api.stop()
    api.stop()

    with pytest.raises(requests.ConnectionError):
        post(session, api, order("p2"), timeout=2)
    with FakeNeuroonAPI(shop_id=SHOP, api_key=KEY, port=port) as again:
        assert again.url == f"http://127.0.0.1:{port}"
        assert post(session, again, order("p3")).status_code == 200


def test_restart_keeps_the_url_and_the_record(session: requests.Session) -> None:
    with fake_api(shop_id=SHOP, api_key=KEY) as api:
        url = api.url
        post(session, api, order("o1"))
        api.stop()
        with pytest.raises(requests.ConnectionError):
            post(session, api, order("o2"), timeout=2)
        api.start()

        assert api.url == url
        assert post(session, api, order("o2")).status_code == 200
        assert [c.order_id for c in api.conversions] == ["o1", "o2"]


def test_stop_does_not_wait_for_a_slowed_request(session: requests.Session) -> None:
    api = FakeNeuroonAPI(shop_id=SHOP, api_key=KEY).start()
    api.slow(30)
    errors: list[BaseException] = []

    def send() -> None:
        with requests.Session() as s:
            try:
                post(s, api, order("slow"), timeout=60)
            except requests.RequestException as exc:
                errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 5
    while api.connections_accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the request is read and is being slowed down
    started = time.monotonic()
    api.stop()
    sender.join(10)

    assert time.monotonic() - started < 5
    assert not sender.is_alive()
    assert len(errors) == 1  # the client saw the connection close, not an answer
    assert api.conversions == []
    assert [r.status for r in api.requests] == [None]


def test_url_before_start_is_an_error() -> None:
    api = FakeNeuroonAPI()

    with pytest.raises(RuntimeError, match="not started"):
        _ = api.url
    assert "not started" in repr(api)


# --------------------------------------------------------------------------- command line


def _package_root() -> str:
    return str(Path(testing_module.__file__).resolve().parents[1])


def test_command_line_prints_the_url_and_serves_until_terminated(session: requests.Session) -> None:
    env = {**os.environ, "FAKE_KEY": KEY, "PYTHONPATH": _package_root()}
    command = [sys.executable, "-m", "flask_neuroon.testing", "--port", "0"]
    command += ["--shop-id", SHOP, "--api-key-env", "FAKE_KEY"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        response = session.post(
            f"{url}/api/plugin/shops/{SHOP}/track/conversion",
            json=order("cli-1"),
            headers=headers(),
            timeout=5,
        )
        recorded = session.get(f"{url}/api/_fake/conversions", timeout=5).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)

    assert response.status_code == 200
    assert [c["orderId"] for c in recorded["conversions"]] == ["cli-1"]
    assert proc.returncode == 0
    assert KEY not in out
    assert KEY not in err
    assert KEY not in " ".join(command)


def test_command_line_refuses_to_start_without_the_key_variable() -> None:
    env = {k: v for k, v in os.environ.items() if k != "NEUROON_API_KEY"}
    env["PYTHONPATH"] = _package_root()

    result = subprocess.run(
        [sys.executable, "-m", "flask_neuroon.testing", "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )

    assert result.returncode == 2
    assert "NEUROON_API_KEY is not set" in result.stderr
