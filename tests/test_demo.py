"""The examples: the demo runs end to end, and the demo shop survives any click cookie."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient

from examples.demo import CLICKED_PRODUCT, CLICKED_QUANTITY
from examples.gateway import create_app as create_gateway_app
from examples.shop import create_app as create_shop_app
from examples.shop.catalog import PRODUCTS
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import API_KEY, ORIGIN, SHOP_ID

ROOT = Path(__file__).resolve().parent.parent
GATEWAY_SECRET = "test-gateway-secret"


def test_the_demo_credits_search_with_the_clicked_line_through_a_cross_site_return():
    result = subprocess.run(
        [sys.executable, "-m", "examples.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    attributed = PRODUCTS[CLICKED_PRODUCT].price * CLICKED_QUANTITY
    assert f"attributed {attributed:.2f} EUR" in result.stdout
    assert "neuroon_clicks at checkout: yes; at the return POST: no" in result.stdout
    assert "sk_demo_" not in output  # the run's API key is never printed
    assert "Traceback" not in output


# --- a malformed neuroon_clicks cookie on every page of the demo shop -------------------

BAD_COOKIES = [
    "",
    "%7B",
    "not-json",
    "null",
    "[1,2,3]",
    '"just a string"',
    '{"SKU-MUG-RED":',
    "%7B%22SKU-MUG-RED%22%3A%22log-1%22%2C%22SKU-",  # cut by the widget at 4096 bytes
    "%7B%22SKU-MUG-RED%22%3A%22log-1%22%7D%E2%8",  # cut inside an escape
    "%257B%2522SKU-MUG-RED%2522%253A%2522log%2522%257D",  # encoded twice
    '"{\\"SKU-MUG-RED\\":\\"log\\"}"',  # quoted by another framework
    "%ZZ%%%",
    "\xff\xfe\xc3(",  # not UTF-8
    '{"SKU-MUG-RED":{"nested":1},"a":[1],"b":null,"c":2}',
    '{"\\ud800":"lone surrogate"}',
    '{"SKU-MUG-RED":"' + "x" * 5000 + '"}',  # an id far too long
    "x" * 20000,  # over any cookie size
    "%7B%22%3Cscript%3Ealert(1)%3C%2Fscript%3E%22%3A%22%3Cb%3E%22%7D",  # markup as an id
    "{" + ",".join(f'"P{i}":"L{i}"' for i in range(1000)) + "}",  # too many entries
    "\x01\x02\x7f",
]


@pytest.fixture
def shop(api: FakeNeuroonAPI, tmp_path: Path):
    app = create_shop_app(
        {
            "TESTING": True,
            "SHOP_DEBUG_PAGES": True,
            "GATEWAY_SECRET": GATEWAY_SECRET,
            "GATEWAY_URL": "http://localhost:5001/pay",
            "NEUROON_SHOP_ID": SHOP_ID,
            "NEUROON_API_KEY": API_KEY,
            "NEUROON_ORIGIN": ORIGIN,
            "NEUROON_API_URL": api.url,
            "NEUROON_DISPATCH": "sync",
        },
        instance_path=str(tmp_path / "instance"),
    )
    yield app
    state = app.extensions["neuroon"]
    state.dispatcher.close()
    state.storage.close()


class RawCookieBrowser:
    """Sends ``neuroon_clicks`` exactly as given (a client's cookie jar would re-quote it),
    next to the shop's session cookie, which it keeps up to date."""

    def __init__(self, client: FlaskClient, clicks_value: str) -> None:
        self.client = client
        self.clicks_value = clicks_value
        self.session: str | None = None
        self.seen: list[tuple[str, str, int]] = []

    def request(self, method: str, path: str, *, cookie: bool = True, **kwargs):
        cookies = [f"neuroon_clicks={self.clicks_value}"] if cookie else []
        if self.session and cookie:
            cookies.insert(len(self.seen) % 2, f"session={self.session}")  # either order
        headers = {"Cookie": "; ".join(cookies)} if cookies else {}
        response = self.client.open(path, method=method, headers=headers, **kwargs)
        for header in response.headers.getlist("Set-Cookie"):
            if header.startswith("session="):
                self.session = header.split(";", 1)[0].split("=", 1)[1] or None
        self.seen.append((method, path, response.status_code))
        return response


def signed_return(return_url: str, order_id: str, amount: str) -> dict[str, str]:
    """The form the gateway posts back after a payment, from the gateway app itself."""
    gateway = create_gateway_app({"GATEWAY_SECRET": GATEWAY_SECRET}).test_client()
    page = gateway.post(
        "/pay",
        data={
            "order": order_id,
            "amount": amount,
            "currency": "EUR",
            "return_url": return_url,
            "action": "pay",
        },
    )
    assert page.status_code == 200
    fields = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page.text))
    assert set(fields) == {"order", "status", "signature"}
    return fields


@pytest.mark.parametrize("value", BAD_COOKIES, ids=lambda v: repr(v[:24]))
def test_a_malformed_click_cookie_never_breaks_a_page_of_the_shop(
    shop: Flask, api: FakeNeuroonAPI, value: str
):
    browser = RawCookieBrowser(shop.test_client(use_cookies=False), value)
    assert browser.request("GET", "/").status_code == 200
    assert browser.request("GET", "/search?q=mug").status_code == 200
    assert browser.request("GET", "/product/SKU-MUG-RED").status_code == 200
    assert browser.request("GET", "/product/NO-SUCH").status_code == 404
    assert browser.request("GET", "/static/widget.js").status_code == 200
    added = browser.request(
        "POST", "/cart/add", data={"product_id": "SKU-MUG-RED", "quantity": "2"}
    )
    assert added.status_code == 303
    bad_quantity = browser.request(
        "POST", "/cart/add", data={"product_id": "SKU-MUG-RED", "quantity": "many"}
    )
    assert bad_quantity.status_code == 400
    assert browser.request("GET", "/cart").status_code == 200

    created = browser.request("POST", "/checkout")
    assert created.status_code == 303
    pay_path = urlsplit(created.headers["Location"]).path
    order_id = pay_path.split("/")[-2]
    to_gateway = browser.request("GET", pay_path)
    assert to_gateway.status_code == 302
    query = {k: v[0] for k, v in parse_qs(urlsplit(to_gateway.headers["Location"]).query).items()}
    assert query["order"] == order_id and query["amount"] == "25.80"

    form = signed_return(query["return_url"], order_id, query["amount"])
    forged = browser.request("POST", "/payment/return", data={**form, "signature": "forged"})
    assert forged.status_code == 400
    # The gateway's return is cross-site: no cookie at all on it.
    back = browser.request("POST", "/payment/return", data=form, cookie=False)
    assert back.status_code == 200 and order_id in back.text
    # ... but a same-site return (a GET from a gateway's link) carries the cookie.
    again = browser.request("GET", "/payment/return", query_string=form)
    assert again.status_code == 200

    clicks_page = browser.request("GET", "/_debug/clicks")
    assert clicks_page.status_code == 200
    assert "<script>alert" not in clicks_page.text
    assert browser.request("GET", "/_debug/clicks?format=json").status_code == 200
    seen = browser.request("GET", "/_debug/requests").json
    assert seen is not None
    assert seen[0]["path"] == "/" and seen[0]["neuroon_clicks"] is True  # it did arrive
    assert [
        e["neuroon_clicks"]
        for e in seen
        if e["method"] == "POST" and e["path"] == "/payment/return"
    ] == [True, False]

    assert all(status < 500 for _, _, status in browser.seen), browser.seen
    # Tracking went on regardless: the order reached the API, once.
    assert api.received_count(order_id) == 1
    [conversion] = [c for c in api.conversions if c.order_id == order_id]
    assert conversion.attributed_lines == []  # nothing in these cookies was issued by search
