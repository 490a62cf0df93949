"""The payload a shop's order becomes: exactly the wire contract, money exact."""

from __future__ import annotations

import decimal
import json
import logging
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_neuroon import InvalidOrder, Order, OrderLine
from flask_neuroon.conversion import build_payload, dumps_payload, loads_payload
from flask_neuroon.orders import adapt_order


def payload(order: Any, clicks: dict[str, str] | None = None) -> dict[str, Any]:
    return build_payload(adapt_order(order), clicks or {})


def test_clicked_and_unclicked_line_give_exactly_the_contract_fields():
    order = Order(
        id="A-1001",
        total=Decimal("59.97"),
        currency="EUR",
        lines=[
            OrderLine(product_id="SKU-1", quantity=2, unit_price=Decimal("19.99")),
            OrderLine(product_id="SKU-2", quantity=1, unit_price=Decimal("19.99")),
        ],
    )
    body = json.loads(dumps_payload(payload(order, {"SKU-1": "log-1", "OTHER": "log-9"})))
    assert body == {
        "orderId": "A-1001",
        "orderValue": 59.97,
        "attributedValue": 39.98,
        "currency": "EUR",
        "conversions": [
            {"productId": "SKU-1", "searchLogId": "log-1", "quantity": 2, "lineTotal": 39.98}
        ],
    }


def test_money_is_written_as_exact_json_numbers():
    order = {
        "id": 1,
        "total": "0.30",
        "currency": "EUR",
        "lines": [{"sku": "a", "price": 0.1}, {"sku": "b", "price": 0.2}],
    }
    text = dumps_payload(payload(order, {"a": "x", "b": "y"}))
    assert '"orderValue":0.30' in text
    assert '"attributedValue":0.30' in text
    assert '"lineTotal":0.10' in text and '"lineTotal":0.20' in text
    assert loads_payload(text)["attributedValue"] == Decimal("0.30")


@pytest.mark.parametrize(
    ("currency", "total", "expected"),
    [
        ("JPY", "1234.5", "1235"),
        ("EUR", "10.005", "10.01"),
        ("EUR", "10.004", "10.00"),
        ("KWD", "1.2345", "1.235"),
        ("CLF", "1.23456", "1.2346"),
        ("eur", "5", "5.00"),
    ],
)
def test_amounts_round_half_up_to_the_currencys_minor_units(currency, total, expected):
    body = payload({"id": "o", "total": total, "currency": currency, "lines": []})
    assert body["orderValue"] == Decimal(expected)
    assert str(body["orderValue"]) == expected
    assert body["currency"] == currency.upper()


def test_explicit_line_total_wins_over_unit_price_times_quantity():
    order = {
        "id": "o",
        "total": 100,
        "currency": "EUR",
        "lines": [{"sku": "a", "qty": 3, "unitPrice": "10.00", "lineTotal": "27.00"}],
    }
    body = payload(order, {"a": "s"})
    assert body["conversions"][0]["lineTotal"] == Decimal("27.00")
    assert body["attributedValue"] == Decimal("27.00")


def test_variant_id_is_matched_before_product_id():
    order = {
        "id": "o",
        "total": 30,
        "currency": "EUR",
        "lines": [
            {"product_id": "P1", "variant_id": "V1", "price": 10},
            {"product_id": "P1", "variant_id": "V2", "price": 20},
        ],
    }
    body = payload(order, {"V1": "logV1", "P1": "logP1"})
    assert body["conversions"] == [
        {"productId": "V1", "searchLogId": "logV1", "quantity": 1, "lineTotal": Decimal("10.00")},
        {"productId": "P1", "searchLogId": "logP1", "quantity": 1, "lineTotal": Decimal("20.00")},
    ]


def test_ids_are_compared_as_strings():
    order = {"id": 7, "total": 10, "currency": "EUR", "lines": [{"product_id": 42, "price": 10}]}
    body = payload(order, {"42": "log"})
    assert body["orderId"] == "7"
    assert body["conversions"][0]["productId"] == "42"


def test_several_lines_of_one_product_become_one_entry():
    order = {
        "id": "o",
        "total": 50,
        "currency": "EUR",
        "lines": [
            {"sku": "a", "qty": 1, "price": 10},
            {"sku": "b", "qty": 1, "price": 5},
            {"sku": "a", "qty": 2, "price": 10, "line_total": 15},
        ],
    }
    body = payload(order, {"a": "s"})
    assert body["conversions"] == [
        {"productId": "a", "searchLogId": "s", "quantity": 3, "lineTotal": Decimal("25.00")}
    ]
    assert body["attributedValue"] == Decimal("25.00")


def test_order_level_discount_scales_attribution_and_the_sums_agree():
    # Lines add up to 100.00, the order-level coupon brings the total to 90.00.
    order = {
        "id": "o",
        "total": "90.00",
        "currency": "EUR",
        "lines": [
            {"sku": "a", "price": "33.33"},
            {"sku": "b", "price": "33.33"},
            {"sku": "c", "price": "33.34"},
        ],
    }
    body = payload(order, {"a": "1", "b": "2"})
    totals = [c["lineTotal"] for c in body["conversions"]]
    # 33.33 * 0.9 = 29.997 each: the attributed value rounds to 59.99 and the entries agree.
    assert body["attributedValue"] == Decimal("59.99")
    assert sum(totals) == body["attributedValue"]
    assert sorted(totals) == [Decimal("29.99"), Decimal("30.00")]


def test_attributed_value_never_exceeds_order_value_when_everything_is_clicked():
    order = {
        "id": "o",
        "total": "10.00",
        "currency": "EUR",
        "lines": [{"sku": "a", "price": "7.00"}, {"sku": "b", "price": "7.00"}],
    }
    body = payload(order, {"a": "1", "b": "2"})
    assert body["attributedValue"] == Decimal("10.00")
    assert [c["lineTotal"] for c in body["conversions"]] == [Decimal("5.00"), Decimal("5.00")]


def test_shipping_above_the_lines_does_not_scale():
    order = {
        "id": "o",
        "total": "24.99",
        "currency": "EUR",
        "lines": [{"sku": "a", "price": "19.99"}],
    }
    assert payload(order, {"a": "1"})["attributedValue"] == Decimal("19.99")


def test_free_order_attributes_zero():
    order = {"id": "o", "total": "0", "currency": "EUR", "lines": [{"sku": "a", "price": "5"}]}
    body = payload(order, {"a": "1"})
    assert body["attributedValue"] == Decimal("0.00")
    assert body["conversions"][0]["lineTotal"] == Decimal("0.00")


def test_an_order_with_no_clicked_line_has_no_conversions():
    order = {"id": "o", "total": 10, "currency": "USD", "lines": [{"sku": "a", "price": 10}]}
    body = payload(order, {"zzz": "1"})
    assert body["conversions"] == []
    assert body["attributedValue"] == Decimal("0.00")


def test_vendor_javascript_example_shape_is_understood():
    @dataclass
    class Line:
        sku: str
        quantity: int
        unitPrice: float

    @dataclass
    class ShopOrder:
        id: str
        total: float
        currency: str
        lines: list[Line] = field(default_factory=list)

    order = ShopOrder("ORD-1", 49.9, "eur", [Line("S1", 2, 12.45), Line("S2", 1, 25.0)])
    body = payload(order, {"S1": "log-S1"})
    assert body["orderValue"] == Decimal("49.90")
    assert body["conversions"] == [
        {"productId": "S1", "searchLogId": "log-S1", "quantity": 2, "lineTotal": Decimal("24.90")}
    ]


@pytest.mark.parametrize(
    ("order", "field", "words"),
    [
        ({"total": 1, "currency": "EUR"}, "orderId", "orderId is missing"),
        ({"id": "  ", "total": 1, "currency": "EUR"}, "orderId", "orderId is missing"),
        (
            {"id": "o", "total": -1, "currency": "EUR"},
            "orderValue",
            "orderValue must be >= 0: refunds use a different endpoint",
        ),
        ({"id": "o", "total": "NaN", "currency": "EUR"}, "orderValue", "finite"),
        ({"id": "o", "total": float("inf"), "currency": "EUR"}, "orderValue", "finite"),
        ({"id": "o", "total": "abc", "currency": "EUR"}, "orderValue", "must be a number"),
        ({"id": "o", "currency": "EUR"}, "orderValue", "orderValue is missing"),
        ({"id": "o", "total": True, "currency": "EUR"}, "orderValue", "must be a number"),
        ({"id": "o", "total": 1}, "currency", "currency is missing"),
        ({"id": "o", "total": 1, "currency": "EURO"}, "currency", "not an ISO 4217 code"),
        ({"id": "o", "total": 1, "currency": "XAU"}, "currency", "not an ISO 4217 code"),
        ({"id": "o", "total": 1, "currency": "EUR", "lines": "abc"}, "lines", "must be a list"),
        ({"id": Decimal("NaN"), "total": 1, "currency": "EUR"}, "orderId", "must be a string"),
        ({"id": Decimal("12.5"), "total": 1, "currency": "EUR"}, "orderId", "must be a string"),
        ({"id": 1.0, "total": 1, "currency": "EUR"}, "orderId", "not float"),
        ({"id": "A\nB", "total": 1, "currency": "EUR"}, "orderId", "control characters"),
        ({"id": "SUR\udc80", "total": 1, "currency": "EUR"}, "orderId", "control characters"),
        ({"id": "x" * 257, "total": 1, "currency": "EUR"}, "orderId", "longer than 256"),
        ({"id": "o", "total": "9E+999999", "currency": "EUR"}, "orderValue", "too large"),
    ],
)
def test_invalid_orders_raise_a_clear_error_naming_order_and_field(order, field, words):
    with pytest.raises(InvalidOrder) as caught:
        payload(order, {"a": "1"})
    error = caught.value
    assert isinstance(error, ValueError)
    assert error.field == field
    assert words in str(error)
    if order.get("id") == "o":
        assert "order 'o'" in str(error)


def _beside_a_clicked_line(odd_line: dict[str, Any]) -> dict[str, Any]:
    """Order ``o`` of 25.00: ``odd_line`` and a clicked 5.00 line of product ``b``."""
    return {
        "id": "o",
        "total": "25.00",
        "currency": "EUR",
        "lines": [odd_line, {"sku": "b", "qty": 1, "price": "5.00"}],
    }


@pytest.mark.parametrize(
    ("odd_line", "field", "words"),
    [
        ({"sku": "a", "qty": "two", "price": 1}, "lines[0].quantity", "positive integer"),
        ({"sku": "a", "qty": True, "price": 1}, "lines[0].quantity", "positive integer"),
        ({"sku": "a", "qty": "NaN", "price": 1}, "lines[0].quantity", "positive integer"),
        ({"sku": "a"}, "lines[0]", "needs a unitPrice or a lineTotal"),
        ({"sku": "a", "qty": 1, "subtotal": 10}, "lines[0]", "needs a unitPrice or a lineTotal"),
        ({"sku": "a", "price": "nan"}, "lines[0].unitPrice", "finite"),
        ({"sku": "a", "qty": "0.5", "price": "nan"}, "lines[0].unitPrice", "finite"),
        ({"sku": "a", "qty": 2, "price": Decimal("9E+999999")}, "lines[0].unitPrice", "too large"),
        ({"sku": "a", "line_total": "9E+999999"}, "lines[0].lineTotal", "too large"),
    ],
)
def test_a_clicked_line_with_wrong_data_is_an_invalid_order(odd_line, field, words):
    # Sent without that line, the order would lose the credit for good: fixed and tracked
    # again it is a duplicate. Invalid, the snapshot waits for the fixed order.
    order = _beside_a_clicked_line(odd_line)
    with pytest.raises(InvalidOrder) as caught:
        payload(order, {"a": "log-a", "b": "log-b"})
    assert caught.value.field == field
    assert words in str(caught.value) and "order 'o'" in str(caught.value)


@pytest.mark.parametrize(
    ("odd_line", "line_sum"),
    [
        ({"sku": "a", "qty": 0, "price": 1}, "0.00"),  # a free gift
        ({"sku": "a", "qty": 1.5, "price": 1}, "1.50"),  # weighed
        ({"sku": "a", "qty": "0.5", "price": 4}, "2.00"),
        ({"sku": "a", "qty": "0.25", "line_total": "3.10"}, "3.10"),
    ],
)
def test_a_clicked_free_gift_or_weighed_product_is_left_unattributed(odd_line, line_sum, caplog):
    # Real lines, but no whole number of units, which the contract counts: the order is
    # sent, that line is left unattributed, and a warning names it and the reason.
    order = _beside_a_clicked_line(odd_line)
    with caplog.at_level(logging.WARNING, logger="flask_neuroon"):
        body = payload(order, {"a": "log-a", "b": "log-b"})
    assert body["orderValue"] == Decimal("25.00")
    assert [c["productId"] for c in body["conversions"]] == ["b"]
    assert body["attributedValue"] == Decimal("5.00")
    assert len(caplog.records) == 1, caplog.text
    message = caplog.records[0].getMessage()
    assert "order o: lines[0], a clicked product (a), is not attributed" in message
    assert "lines[0].quantity: quantity must be a positive integer" in message


def test_a_clicked_weighed_line_counts_towards_the_lines_sum():
    # 0.5 x 30.00 of clicked coffee plus 20.00 of a clicked mug, paid 30.00 after a coupon:
    # the lines add up to 35.00, so the mug is attributed 20 x 30/35 = 17.14.
    order = {
        "id": "o",
        "total": "30.00",
        "currency": "EUR",
        "lines": [
            {"sku": "COFFEE", "qty": "0.5", "price": "30.00"},
            {"sku": "MUG", "qty": 1, "price": "20.00"},
        ],
    }
    body = payload(order, {"COFFEE": "log-c", "MUG": "log-m"})
    assert body["attributedValue"] == Decimal("17.14")
    assert body["conversions"][0]["lineTotal"] == Decimal("17.14")


def test_a_negative_line_of_a_clicked_product_lowers_its_entry():
    # A per-item discount line carrying the product's SKU is a discount on that product.
    order = {
        "id": "o",
        "total": "13.00",
        "currency": "EUR",
        "lines": [
            {"sku": "a", "qty": 1, "line_total": "-2.00"},
            {"sku": "a", "qty": 1, "price": "10.00"},
            {"sku": "b", "qty": 1, "price": "5.00"},
        ],
    }
    body = payload(order, {"a": "log-a"})
    assert body["conversions"] == [
        {"productId": "a", "searchLogId": "log-a", "quantity": 1, "lineTotal": Decimal("8.00")}
    ]
    assert body["attributedValue"] == Decimal("8.00")


def test_a_discount_line_larger_than_its_product_lowers_it_to_zero_and_the_rest_pro_rata():
    order = {
        "id": "o",
        "total": "8.00",
        "currency": "EUR",
        "lines": [
            {"sku": "a", "qty": 1, "price": "4.00"},
            {"sku": "a", "qty": 1, "line_total": "-6.00"},
            {"sku": "b", "qty": 1, "price": "10.00"},
        ],
    }
    body = payload(order, {"a": "log-a", "b": "log-b"})
    assert {c["productId"]: c["lineTotal"] for c in body["conversions"]} == {
        "a": Decimal("0.00"),
        "b": Decimal("8.00"),  # the 2.00 beyond product a comes off the rest
    }
    assert body["attributedValue"] == Decimal("8.00")


def test_a_line_is_attributed_by_any_of_its_product_id_spellings():
    # Shopify- and WooCommerce-like lines: an internal numeric product_id beside the SKU
    # that the widget (and /products/sync) knows.
    order = {
        "id": "o",
        "total": "30.00",
        "currency": "EUR",
        "lines": [
            {"product_id": 7712345, "sku": "MUG-RED", "qty": 1, "price": "10.00"},
            {"product_id": "", "sku": "CUP-1", "qty": 2, "price": "10.00"},
        ],
    }
    body = payload(order, {"MUG-RED": "log-1", "CUP-1": "log-2"})
    assert [(c["productId"], c["searchLogId"]) for c in body["conversions"]] == [
        ("MUG-RED", "log-1"),
        ("CUP-1", "log-2"),
    ]
    assert body["attributedValue"] == Decimal("30.00")


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (1000, "1000"),
        (Decimal("1000"), "1000"),
        (Decimal("1000.0"), "1000"),
        (Decimal("1E+3"), "1000"),
        (" A-1 ", "A-1"),
        (uuid.UUID(int=7), "00000000-0000-0000-0000-000000000007"),
    ],
)
def test_one_order_always_sends_one_order_id(given, sent):
    body = payload({"id": given, "total": 1, "currency": "EUR"}, {})
    assert body["orderId"] == sent


def test_build_payload_refuses_clicks_that_are_not_a_mapping():
    with pytest.raises(InvalidOrder, match="clicks must be a mapping"):
        payload({"id": "o", "total": 1, "currency": "EUR"}, [("a", "1")])  # type: ignore[arg-type]


def test_quantity_may_be_an_integral_string_or_decimal():
    order = {
        "id": "o",
        "total": 30,
        "currency": "EUR",
        "lines": [
            {"sku": "a", "qty": "3", "price": 10},
            {"sku": "b", "qty": Decimal("2"), "price": 1},
        ],
    }
    body = payload(order, {"a": "1", "b": "2"})
    assert [c["quantity"] for c in body["conversions"]] == [3, 2]


def test_floats_are_read_through_their_shortest_repr_not_binary_value():
    # 0.1 * 3 in float is 0.30000000000000004; the payload must not see that.
    order = {
        "id": "o",
        "total": 0.3,
        "currency": "EUR",
        "lines": [{"sku": "a", "qty": 3, "price": 0.1}],
    }
    body = payload(order, {"a": "1"})
    assert body["attributedValue"] == Decimal("0.30")


def test_dumps_refuses_float_money():
    with pytest.raises(TypeError):
        dumps_payload({"orderValue": 1.5})


amounts = st.decimals(
    min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False
)


@settings(max_examples=300, deadline=None)
@given(
    lines=st.lists(st.tuples(st.sampled_from("abcdef"), st.integers(1, 5), amounts), max_size=8),
    discount=st.decimals(min_value=-200, max_value=0, places=2),
    total=amounts,
    clicked=st.sets(st.sampled_from("abcdef")),
    currency=st.sampled_from(["EUR", "JPY", "KWD", "USD"]),
)
def test_attribution_invariants_hold_for_any_order(lines, discount, total, clicked, currency):
    order = {
        "id": "o",
        "total": total,
        "currency": currency,
        "lines": [{"sku": s, "qty": q, "price": p} for s, q, p in lines]
        + [{"sku": "coupon", "price": discount}],
    }
    body = payload(order, {key: f"log-{key}" for key in clicked})
    entries = body["conversions"]
    assert body["attributedValue"] <= body["orderValue"]
    assert sum((e["lineTotal"] for e in entries), Decimal(0)) == body["attributedValue"]
    assert all(e["lineTotal"] >= 0 for e in entries)
    assert {e["productId"] for e in entries} == clicked & {s for s, _, _ in lines}
    exponent = body["orderValue"].as_tuple().exponent
    assert all(e["lineTotal"].as_tuple().exponent == exponent for e in entries)
    back = loads_payload(dumps_payload(body))
    assert Decimal(back["orderValue"]) == body["orderValue"]
    assert [Decimal(e["lineTotal"]) for e in back["conversions"]] == [
        e["lineTotal"] for e in entries
    ]


@pytest.mark.parametrize(
    ("odd_line", "attributed"),
    [
        ({"sku": "COUPON", "price": "-5.00"}, "20.80"),  # a discount line: shared pro rata
        ({"sku": "GIFT", "qty": 0, "price": "0"}, "25.80"),  # a free gift
        ({"name": "Shipping", "price": "4.90"}, "25.80"),  # no product at all
        ({"sku": "COFFEE", "qty": "0.5", "price": "30.00"}, "25.80"),  # a weighed product
        ({"sku": "BROKEN", "price": "NaN"}, "25.80"),  # unreadable
        ({"sku": "WHAT", "qty": "two", "price": "1"}, "25.80"),
    ],
    ids=["discount", "free-gift", "shipping", "weighed", "nan-price", "bad-quantity"],
)
def test_an_odd_line_nobody_clicked_never_voids_the_conversion(odd_line, attributed):
    order = {
        "id": "O-1",
        "total": "100.00",
        "currency": "EUR",
        "lines": [{"sku": "MUG", "qty": 2, "price": "12.90"}, odd_line],
    }
    body = payload(order, {"MUG": "log-mug"})
    assert body["conversions"] == [
        {
            "productId": "MUG",
            "searchLogId": "log-mug",
            "quantity": 2,
            "lineTotal": Decimal(attributed),
        }
    ]
    assert body["attributedValue"] == Decimal(attributed)


def test_a_discount_line_shares_its_reduction_among_the_attributed_lines():
    # 60 + 40 with a -20 coupon line, plus 10 shipping in the 90 total: the lines were paid
    # 80, so A and B are attributed 48 and 32, not their list prices.
    order = {
        "id": "O-2",
        "total": "90.00",
        "currency": "EUR",
        "lines": [
            {"sku": "A", "price": "60"},
            {"sku": "B", "price": "40"},
            {"sku": "C", "price": "-20"},
        ],
    }
    body = payload(order, {"A": "1", "B": "2"})
    assert body["attributedValue"] == Decimal("80.00")
    assert [c["lineTotal"] for c in body["conversions"]] == [Decimal("48.00"), Decimal("32.00")]


@pytest.mark.parametrize(
    "bad_entry",
    [{"A": ""}, {"A": "   "}, {"A": 17}, {"A": None}, {"A": ["x"]}, {"A": "x" * 300}],
    ids=["empty", "blank", "int", "none", "list", "too-long"],
)
def test_a_click_entry_that_cannot_be_sent_is_ignored_not_sent(bad_entry):
    order = {
        "id": "O-3",
        "total": "30",
        "currency": "EUR",
        "lines": [{"sku": "A", "price": "10"}, {"sku": "B", "price": "20"}],
    }
    body = payload(order, {**bad_entry, "B": "log-b"})
    assert [c["productId"] for c in body["conversions"]] == ["B"]
    assert body["attributedValue"] == Decimal("20.00")


def test_integer_click_keys_match_integer_product_ids():
    order = {
        "id": "O-4",
        "total": "5",
        "currency": "EUR",
        "lines": [{"product_id": 7, "price": "5"}],
    }
    clicks: dict[Any, str] = {7: "log-7"}  # a shop passing its integer ids
    assert payload(order, clicks)["conversions"][0]["productId"] == "7"


def test_very_large_amounts_stay_exact_on_the_wire():
    big = "1234567890123456789012345678901234.50"
    order = {"id": "O-5", "total": big, "currency": "EUR", "lines": [{"sku": "A", "price": big}]}
    text = dumps_payload(payload(order, {"A": "1"}))
    assert f'"orderValue":{big}' in text
    assert f'"attributedValue":{big}' in text


def _hostile_contexts() -> list[decimal.Context]:
    trapping = decimal.Context(traps=[decimal.Inexact, decimal.Rounded, decimal.InvalidOperation])
    lax = decimal.Context(traps=[])  # "abc" would become NaN instead of raising
    tiny = decimal.Context(prec=3, rounding=decimal.ROUND_FLOOR)
    return [trapping, lax, tiny]


@pytest.mark.parametrize(
    "hostile", _hostile_contexts(), ids=["traps-inexact", "no-traps", "prec-3"]
)
def test_the_shops_decimal_context_changes_nothing(hostile):
    # A coupon that does not divide evenly: 3 x 7.00 lines, order total 20.00, two clicked.
    order = {
        "id": "ctx",
        "total": "20.00",
        "currency": "EUR",
        "lines": [
            {"sku": "a", "price": "7.00"},
            {"sku": "b", "price": "7.00"},
            {"sku": "c", "price": "7.00"},
        ],
    }
    bad = {"id": "ctx-bad", "total": "abc", "currency": "EUR", "lines": []}
    expected = payload(order, {"a": "1", "b": "2"})
    with pytest.raises(InvalidOrder) as plain_error:
        payload(bad, {})
    with decimal.localcontext(hostile):
        got = payload(order, {"a": "1", "b": "2"})
        with pytest.raises(InvalidOrder) as hostile_error:
            payload(bad, {})
        assert decimal.getcontext().prec == hostile.prec  # the shop's context is left as it was
    assert got == expected
    assert dumps_payload(got) == dumps_payload(expected)
    assert got["attributedValue"] == Decimal("13.33")  # 14.00 x 20/21 = 13.333...
    assert sum(c["lineTotal"] for c in got["conversions"]) == got["attributedValue"]
    assert str(hostile_error.value) == str(plain_error.value)


@pytest.mark.parametrize(
    ("currency", "price", "tiny", "unit"),
    [
        ("EUR", "10", {"line_total": "-0.004"}, "0.00"),
        ("EUR", "10", {"unitPrice": "-0.0016"}, "0.00"),
        ("JPY", "1000", {"line_total": "-0.4"}, "0"),
        ("KWD", "10", {"unitPrice": "-0.0004"}, "0.000"),
    ],
)
def test_a_clicked_line_that_rounds_to_zero_is_zero_not_a_void_order(currency, price, tiny, unit):
    # -0.004 EUR is 0.00 on the wire: not below zero, so not a reason to drop the order.
    order = {
        "id": "TINY-1",
        "total": price,
        "currency": currency,
        "lines": [
            {"sku": "B", "quantity": 1, "unitPrice": price},
            {"sku": "A", "quantity": 1, **tiny},
        ],
    }
    body = payload(order, {"A": "log-a", "B": "log-b"})
    total = Decimal(price).quantize(Decimal(unit) + 1)
    assert body["attributedValue"] == total and body["orderValue"] == total
    assert body["conversions"] == [
        {"productId": "B", "searchLogId": "log-b", "quantity": 1, "lineTotal": total},
        {"productId": "A", "searchLogId": "log-a", "quantity": 1, "lineTotal": Decimal(unit)},
    ]
    assert ":-" not in dumps_payload(body)  # no negative zero either


@pytest.mark.parametrize(
    "negative",
    [
        {"quantity": -1, "unitPrice": "10"},
        {"quantity": 1, "line_total": "-5"},
        {"quantity": 1, "unitPrice": "-2.50"},
    ],
)
def test_a_clicked_product_with_only_negative_lines_says_why_it_is_unattributed(negative, caplog):
    order = {
        "id": "QN1",
        "total": "5.00",
        "currency": "EUR",
        "lines": [{"sku": "X", "quantity": 1, "unitPrice": 10}, {"sku": "A", **negative}],
    }
    with caplog.at_level(logging.WARNING, logger="flask_neuroon"):
        body = payload(order, {"A": "a"})
    assert body["conversions"] == [] and body["attributedValue"] == Decimal("0.00")
    assert body["orderValue"] == Decimal("5.00")
    (record,) = caplog.records
    assert "order QN1: the clicked product A has only lines below zero" in record.getMessage()
