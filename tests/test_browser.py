"""End to end in a real browser: headless Chromium (Debian's package) driven by Playwright.

The demo stack (``examples.demo.demo_stack``) runs on loopback: the shop on 127.0.0.1 and
the payment gateway on localhost, another *site*, so the gateway's auto-submitted return
POST is cross-site and Chromium itself decides which of the shop's cookies go with it.
What the shop's server received is read from its ``/_debug/requests`` log (cookie names
per request), what was credited from the fake Neuroon API.

Needs ``/usr/bin/chromium`` and Playwright (the ``browser`` extra): skipped with the reason
when either is absent, failed under ``NEUROON_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from itsdangerous import BadSignature, URLSafeTimedSerializer

from examples.demo import (
    CLICKED_PRODUCT,
    CLICKED_QUANTITY,
    COOKIE,
    OTHER_PRODUCT,
    OTHER_QUANTITY,
    QUERY,
    DemoStack,
    demo_stack,
)
from examples.shop.catalog import PRODUCTS
from flask_neuroon.mirror import SALT as MIRROR_SALT

from .browser import (
    CHROMIUM,
    Purchase,
    chromium_installed,
    cookie_named,
    cookie_names,
    decode_click_cookie,
    launch,
    new_context,
    parse_set_cookie,
    shop_in_a_browser,
)
from .conftest import need_service
from .services import importable

if TYPE_CHECKING:
    from playwright.sync_api import Browser, BrowserContext, Page

pytestmark = [pytest.mark.services, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"  # gitignored
MIRROR_COOKIE = "neuroon_clicks_mirror"  # NEUROON_MIRROR_COOKIE_NAME's default
SNAPSHOT_TTL = 259200  # NEUROON_SNAPSHOT_TTL's default
CLICKED_LINE_TOTAL = PRODUCTS[CLICKED_PRODUCT].price * CLICKED_QUANTITY
ORDER_TOTAL = CLICKED_LINE_TOTAL + PRODUCTS[OTHER_PRODUCT].price * OTHER_QUANTITY


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the whole module; each test gets its own context (profile)."""
    need_service("Playwright", importable("playwright.sync_api"), "pip install -e '.[browser]'")
    need_service(
        "Chromium", chromium_installed(), f"no browser at {CHROMIUM} (apt-get install chromium)"
    )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    context = new_context(browser)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def page(context: BrowserContext) -> Page:
    return context.new_page()


def buy(page: Page, stack: DemoStack) -> Purchase:
    return shop_in_a_browser(
        page,
        stack,
        query=QUERY,
        clicked=CLICKED_PRODUCT,
        clicked_quantity=CLICKED_QUANTITY,
        other=OTHER_PRODUCT,
        other_quantity=OTHER_QUANTITY,
    )


def assert_credited_once(stack: DemoStack, purchase: Purchase) -> None:
    """The API recorded the order once, search credited with exactly the clicked line."""
    api = stack.api
    assert api.wait_for(1, timeout=5)
    assert api.received_count(purchase.order_id) == 1
    [conversion] = [c for c in api.conversions if c.order_id == purchase.order_id]
    assert conversion.order_value == ORDER_TOTAL
    assert conversion.attributed_value == CLICKED_LINE_TOTAL
    assert [
        (line["productId"], line["searchLogId"], line["quantity"])
        for line in conversion.attributed_lines
    ] == [(CLICKED_PRODUCT, purchase.clicked_search_log_id, CLICKED_QUANTITY)]
    assert conversion.noise_lines == []


def assert_lax_cookie_stayed_behind(purchase: Purchase) -> None:
    """Chromium sent neuroon_clicks on every same-site request after the click, and on the
    gateway's cross-site return POST sent neither it nor the (Lax) session cookie."""
    [search] = purchase.requests_to("GET", "/search")
    assert COOKIE not in search["cookies"]  # before the click: no cookie yet
    same_site = [
        *purchase.requests_to("GET", f"/product/{CLICKED_PRODUCT}"),
        *purchase.requests_to("POST", "/cart/add"),
        *purchase.requests_to("POST", "/checkout"),
        *purchase.requests_to("GET", f"/checkout/{purchase.order_id}/pay"),
    ]
    assert len(same_site) == 5, purchase.seen
    for entry in same_site:
        assert COOKIE in entry["cookies"], entry
        assert entry["clicks"] == {CLICKED_PRODUCT: purchase.clicked_search_log_id}, entry

    back = purchase.return_post
    assert COOKIE not in back["cookies"], back
    assert "session" not in back["cookies"], back
    assert back["clicks"] == {}
    # The browser's own view: a cross-site, top-level form POST from the gateway.
    headers = purchase.return_headers
    assert headers.get("sec-fetch-site") == "cross-site", headers
    assert headers.get("sec-fetch-mode") == "navigate", headers
    assert COOKIE not in cookie_names(headers.get("cookie", "")), headers


# --- where the clicks wait during the payment: NEUROON_SNAPSHOTS -----------------------


@pytest.mark.parametrize(
    ("snapshots", "in_storage", "in_mirror"),
    [
        pytest.param(None, True, False, id="default-storage"),
        pytest.param("both", True, True, id="both"),
        pytest.param("storage", True, False, id="storage"),
        pytest.param("cookie", False, True, id="cookie"),
    ],
)
def test_the_clicked_line_is_credited_although_the_gateway_return_drops_the_lax_cookie(
    page: Page, snapshots: str | None, in_storage: bool, in_mirror: bool
):
    """Storage: a snapshot row from @before_gateway to the confirmation. Cookie: a signed
    ``SameSite=None; Secure; HttpOnly`` mirror, which Chromium does send on the return
    POST (the shop is plain http on 127.0.0.1: loopback counts as a secure context)."""
    config = {} if snapshots is None else {"NEUROON_SNAPSHOTS": snapshots}
    with demo_stack(shop_config=config) as stack:
        before = time.time()
        purchase = buy(page, stack)

        assert_lax_cookie_stayed_behind(purchase)
        # While the shopper was at the gateway: a snapshot row, or none at all.
        assert purchase.snapshots_at_gateway == (1 if in_storage else 0)
        assert purchase.snapshots_after == 0  # consumed (or never written)

        mirror = cookie_named(purchase.cookies, MIRROR_COOKIE)
        back = purchase.return_post
        [pay] = purchase.requests_to("GET", f"/checkout/{purchase.order_id}/pay")
        assert MIRROR_COOKIE not in pay["cookies"]  # that response sets it
        mirror_headers = [
            parse_set_cookie(h)
            for h in purchase.set_by_pay
            if parse_set_cookie(h)[0] == MIRROR_COOKIE
        ]
        if in_mirror:
            # As the shop sent it: SameSite=None; Secure; HttpOnly; Path=/; Max-Age=TTL.
            [(_, value, attributes)] = mirror_headers
            assert attributes.get("samesite", "").lower() == "none", attributes
            assert "secure" in attributes, attributes
            assert "httponly" in attributes, attributes
            assert attributes.get("path") == "/", attributes
            assert attributes.get("max-age") == str(SNAPSHOT_TTL), attributes
            assert len(MIRROR_COOKIE) + 1 + len(value) <= 4096
            # ... and as Chromium kept it, on plain http: loopback is a secure context.
            assert mirror is not None, (
                f"Chromium holds no {MIRROR_COOKIE} for {stack.shop_url}: {purchase.cookies}"
            )
            assert mirror.get("path") == "/"
            assert mirror.get("sameSite") == "None"
            assert mirror.get("secure") is True
            assert mirror.get("httpOnly") is True
            assert len(MIRROR_COOKIE) + 1 + len(mirror.get("value", "")) <= 4096
            expires = mirror.get("expires", -1)
            assert before + SNAPSHOT_TTL - 60 <= expires <= time.time() + SNAPSHOT_TTL + 60
            assert MIRROR_COOKIE in back["cookies"], back
            # Signed and timestamped with the shop's SECRET_KEY (itsdangerous).
            signed = URLSafeTimedSerializer(stack.shop_app.config["SECRET_KEY"], salt=MIRROR_SALT)
            data, signed_at = signed.loads(value, max_age=60, return_timestamp=True)
            carried = json.dumps(data)  # the order id and its click map
            assert purchase.order_id in carried
            assert f'"{CLICKED_PRODUCT}": "{purchase.clicked_search_log_id}"' in carried
            assert abs(signed_at.timestamp() - before) < 60
            with pytest.raises(BadSignature):
                URLSafeTimedSerializer("another key", salt=MIRROR_SALT).loads(value)
        else:
            assert mirror_headers == []
            assert mirror is None, mirror
            assert MIRROR_COOKIE not in back["cookies"], back

        assert_credited_once(stack, purchase)


# --- the vendor's "validate the attribution" steps --------------------------------------


def test_validate_the_attribution_from_the_browser_cookie_to_the_dashboard(page: Page):
    with demo_stack() as stack:
        purchase = buy(page, stack)
        assert_credited_once(stack, purchase)

        # 1. The cookie, as the browser holds it (DevTools > Application > Cookies).
        clicks = cookie_named(purchase.cookies, COOKIE)
        assert clicks is not None, purchase.cookies
        assert clicks.get("path") == "/"
        assert clicks.get("sameSite") == "Lax"
        assert clicks.get("httpOnly") is False  # the widget writes it from JavaScript
        assert clicks.get("secure") is False  # http: widget.js adds Secure on https only
        assert len(COOKIE) + 1 + len(clicks.get("value", "")) <= 4096
        decoded = decode_click_cookie(clicks.get("value", ""))
        assert decoded == {CLICKED_PRODUCT: purchase.clicked_search_log_id}
        # ... a searchLogId that Neuroon issued for that very product.
        assert stack.api.verify_search_log_id(decoded[CLICKED_PRODUCT], CLICKED_PRODUCT)
        assert not stack.api.verify_search_log_id(decoded[CLICKED_PRODUCT], OTHER_PRODUCT)

        # 2. The order on the Neuroon dashboard, attributed the clicked line's total.
        page.goto(f"{stack.api.url}/dashboard")
        row = page.locator(f'tr.order[data-order-id="{purchase.order_id}"]')
        row.wait_for(state="visible")
        assert Decimal(row.locator(".attributed-value").inner_text()) == CLICKED_LINE_TOTAL
        assert Decimal(row.locator(".order-value").inner_text()) == ORDER_TOTAL
        assert row.locator(f'li.verified[data-product-id="{CLICKED_PRODUCT}"]').is_visible()
        assert row.locator(f'li[data-product-id="{OTHER_PRODUCT}"]').count() == 0
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "dashboard.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 0
        print(f"\ndashboard screenshot: {screenshot} (order {purchase.order_id})")
        print(f"browser journey took {purchase.seconds:.2f} s")
