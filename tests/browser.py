"""Headless Chromium (Debian's package) driven by Playwright, for the end-to-end tests.

Playwright never downloads a browser here: it launches ``/usr/bin/chromium`` (or
``NEUROON_TEST_CHROMIUM``), which ``.ci/run`` installs with apt-get when it is missing.

:func:`shop_in_a_browser` walks a shopper through the demo stack (``examples.demo``) the
way a person does it, with clicks: search, click a result (``static/widget.js`` writes
``neuroon_clicks``), add that product and another one to the cart, check out, pay at the
gateway (another site), and come back by the gateway's auto-submitted cross-site POST.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

import requests

from examples.demo import DemoStack
from examples.shop import neuroon

if TYPE_CHECKING:
    from playwright.sync_api import (
        Browser,
        BrowserContext,
        Cookie,
        Page,
        Playwright,
        Response,
    )

CHROMIUM = os.environ.get("NEUROON_TEST_CHROMIUM", "/usr/bin/chromium")
#: Root, no display, no network but loopback: no sandbox, no GPU, nothing phoning home.
LAUNCH_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
#: Milliseconds any one browser step may take before the test fails (all on loopback).
STEP_TIMEOUT_MS = 15_000
#: The shop's default storage: SQLite in its instance folder (NEUROON_STORAGE_URI unset).
SHOP_DB = "neuroon.sqlite3"


def chromium_installed() -> bool:
    path = Path(CHROMIUM)
    return (path.is_file() and os.access(path, os.X_OK)) or shutil.which(CHROMIUM) is not None


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=list(LAUNCH_ARGS)
    )


def new_context(browser: Browser) -> BrowserContext:
    """A fresh profile: no cookies, no cache; every step bounded in time."""
    context = browser.new_context(viewport={"width": 1100, "height": 800}, locale="en-GB")
    context.set_default_timeout(STEP_TIMEOUT_MS)
    context.set_default_navigation_timeout(STEP_TIMEOUT_MS)
    return context


def cookie_named(cookies: list[Cookie], name: str) -> Cookie | None:
    return next((c for c in cookies if c.get("name") == name), None)


def cookie_names(header: str) -> list[str]:
    """The names in a raw ``Cookie`` request header."""
    return sorted({part.split("=", 1)[0].strip() for part in header.split(";") if "=" in part})


def parse_set_cookie(header: str) -> tuple[str, str, dict[str, str]]:
    """``name``, ``value`` and the attributes (lower-case names; "" for a flag)."""
    first, *attributes = (part.strip() for part in header.split(";"))
    name, _, value = first.partition("=")
    parsed = {}
    for attribute in attributes:
        key, _, setting = attribute.partition("=")
        parsed[key.strip().lower()] = setting.strip()
    return name.strip(), value.strip(), parsed


def decode_click_cookie(value: str) -> dict[str, str]:
    """What widget.js wrote: ``encodeURIComponent(JSON.stringify({productId: searchLogId}))``."""
    data = json.loads(unquote(value))
    assert isinstance(data, dict), data
    return {str(k): str(v) for k, v in data.items()}


def snapshot_rows(stack: DemoStack) -> int:
    """Click snapshots in the shop's storage right now (SQLite in its instance folder)."""
    path = stack.instance_path / SHOP_DB
    if not path.exists():
        return 0
    connection = sqlite3.connect(path, timeout=5)
    try:
        (count,) = connection.execute("SELECT COUNT(*) FROM neuroon_snapshots").fetchone()
    except sqlite3.OperationalError as exc:  # no table: nothing was ever snapshotted
        if "no such table" in str(exc):
            return 0
        raise
    finally:
        connection.close()
    return int(count)


@dataclass
class Purchase:
    """What happened on the way, from the browser's side and the shop server's side."""

    order_id: str
    clicked_search_log_id: str
    #: ``neuroon_snapshots`` rows while the shopper was at the gateway, and at the end.
    snapshots_at_gateway: int
    snapshots_after: int
    #: ``Set-Cookie`` headers of the shop's redirect to the gateway (@before_gateway).
    set_by_pay: list[str]
    #: Headers of the return POST as Chromium sent it (lower-case names).
    return_headers: dict[str, str]
    #: The shop server's ``/_debug/requests``: method, path, cookie *names* per request.
    seen: list[dict[str, Any]]
    #: The shop's cookies in the browser once back on the thank-you page.
    cookies: list[Cookie] = field(default_factory=list)
    seconds: float = 0.0

    def requests_to(self, method: str, path: str) -> list[dict[str, Any]]:
        return [e for e in self.seen if e["method"] == method and e["path"] == path]

    @property
    def return_post(self) -> dict[str, Any]:
        """The gateway's return, as the shop's server received it (exactly one)."""
        [back] = self.requests_to("POST", "/payment/return")
        return back


def add_to_cart(page: Page, shop_url: str, quantity: int) -> None:
    page.fill("#add-to-cart input[name=quantity]", str(quantity))
    page.click("#add-to-cart button[type=submit]")
    page.wait_for_url(f"{shop_url}/cart")


def shop_in_a_browser(
    page: Page,
    stack: DemoStack,
    *,
    query: str,
    clicked: str,
    clicked_quantity: int,
    other: str,
    other_quantity: int,
) -> Purchase:
    """Search, click ``clicked``, buy it and ``other``, pay at the gateway, come back."""
    started = time.perf_counter()
    shop, gateway = stack.shop_url, stack.gateway_url

    # Search: the page comes from the shop, the results from the API through widget.js.
    page.goto(f"{shop}/search?q={query}")
    result = page.locator(f'a.neuroon-result[data-product-id="{clicked}"]')
    result.wait_for(state="visible")
    search_log_id = result.get_attribute("data-search-log-id") or ""
    # The click: widget.js writes neuroon_clicks, then the link takes us to the product.
    result.click()
    page.wait_for_url(f"{shop}/product/{clicked}")
    add_to_cart(page, shop, clicked_quantity)

    # A product found without the search.
    page.goto(f"{shop}/product/{other}")
    add_to_cart(page, shop, other_quantity)

    # Checkout: 303 to /checkout/<id>/pay (@before_gateway), 302 to the gateway.
    def is_pay(response: Response) -> bool:
        path = urlsplit(response.url).path
        return response.url.startswith(f"{shop}/checkout/") and path.endswith("/pay")

    with page.expect_response(is_pay) as to_gateway:
        page.click("#checkout button[type=submit]")
    page.wait_for_url(lambda url: url.startswith(f"{gateway}/pay?"))
    order_id = parse_qs(urlsplit(page.url).query)["order"][0]
    assert page.inner_text("#order") == order_id
    at_gateway = snapshot_rows(stack)
    set_cookies = [
        h["value"] for h in to_gateway.value.headers_array() if h["name"].lower() == "set-cookie"
    ]

    # Pay: the gateway's page auto-submits its form POST to the shop (cross-site).
    return_url = f"{shop}/payment/return"
    with page.expect_request(lambda r: r.method == "POST" and r.url == return_url) as back:
        page.click("#pay-button")
    page.wait_for_url(return_url)
    landed = page.locator("#order-id")
    landed.wait_for(state="visible")
    assert landed.get_attribute("data-order-id") == order_id, page.content()
    return_headers = back.value.all_headers()

    # flask-neuroon sends in the background: wait for it.
    with stack.shop_app.app_context():
        left = neuroon.flush(10)
    assert left == 0, f"{left} conversion(s) still queued after 10 s"

    seen = requests.get(f"{shop}/_debug/requests", timeout=10).json()
    return Purchase(
        order_id=order_id,
        clicked_search_log_id=search_log_id,
        snapshots_at_gateway=at_gateway,
        snapshots_after=snapshot_rows(stack),
        return_headers=return_headers,
        set_by_pay=set_cookies,
        seen=seen,
        cookies=page.context.cookies([shop]),
        seconds=time.perf_counter() - started,
    )
