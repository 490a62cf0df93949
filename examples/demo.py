"""The whole journey on loopback: ``python -m examples.demo`` (what ``make demo`` runs).

Three real HTTP servers run in this process:

* the fake Neuroon API (:class:`flask_neuroon.testing.FakeNeuroonAPI`) on 127.0.0.1;
* the shop (:mod:`examples.shop`) on 127.0.0.1, with flask-neuroon's defaults: a SQLite
  outbox in the app's instance folder (here a temporary directory) and background sender
  threads;
* the payment gateway (:mod:`examples.gateway`) on *localhost*: another site than
  127.0.0.1, so its return POST to the shop is cross-site and, in a browser, carries no
  ``SameSite=Lax`` cookie.

A scripted shopper (``requests`` playing the browser) searches, clicks a result (writing
the widget's cookie exactly as ``widget.js`` does), buys the clicked product and one it
did not click, pays at the gateway and comes back by the cross-site POST without the
cookie. The demo then shows what the shop saw and sent and what the API recorded, and
exits 0 only if the API credited search with exactly the clicked line, once.

``python -m examples.demo --serve`` starts the same three servers for a person to click
through in a browser, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import secrets
import signal
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote, urljoin, urlsplit

import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from flask_neuroon._stopping import StopRequest
from flask_neuroon.testing import FakeNeuroonAPI

from .gateway import create_app as create_gateway_app
from .shop import create_app as create_shop_app
from .shop import neuroon
from .shop.app import sync_catalog_from_config
from .shop.catalog import CURRENCY, PRODUCTS

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

SHOP_ID = "shop_demo"
COOKIE = "neuroon_clicks"
#: What the shopper searches for, clicks, and buys.
QUERY = "mug"
CLICKED_PRODUCT = "SKU-MUG-RED"
CLICKED_QUANTITY = 2
#: Bought too, but found without the search: it must not be attributed.
OTHER_PRODUCT = "SKU-BEANS-ETH"
OTHER_QUANTITY = 1
#: The widget keeps ``neuroon_clicks=<value>`` within this many bytes.
WIDGET_COOKIE_MAX_BYTES = 4096
TIMEOUT = 10.0


class DemoFailed(Exception):
    """A step did not go as a shop would expect; the message says which and why."""


# --- the widget's cookie, as static/widget.js writes it ---------------------------------


def widget_cookie_value(clicks: Mapping[str, str]) -> str:
    """``encodeURIComponent(JSON.stringify(clicks))``, cut so ``name=value`` fits 4096 bytes."""
    text = json.dumps(dict(clicks), separators=(",", ":"), ensure_ascii=False)
    value = quote(text, safe="!'()*-._~")  # encodeURIComponent leaves exactly these
    return value[: WIDGET_COOKIE_MAX_BYTES - len(COOKIE) - 1]


def widget_click(
    previous: Mapping[str, str], product_id: str, search_log_id: str
) -> dict[str, str]:
    """The map after a click: the new click first, then the older ones (as widget.js)."""
    return {product_id: search_log_id, **{k: v for k, v in previous.items() if k != product_id}}


def read_widget_cookie(value: str | None) -> dict[str, str]:
    if not value:
        return {}
    try:
        data = json.loads(unquote(value))
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


# --- three servers on loopback ----------------------------------------------------------


def _starting(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
    start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
    return [b"starting\n"]


class ThreadedServer:
    """A werkzeug server on a loopback port (0: any free one), serving from a thread.

    The port is bound at once, so its URL is known before the app is built (the shop's
    Origin must be known to the API, the gateway's URL to the shop).
    """

    def __init__(self, name: str, public_host: str, port: int = 0) -> None:
        self.name = name
        self._server: BaseWSGIServer = make_server("127.0.0.1", port, _starting, threaded=True)
        self.port: int = self._server.socket.getsockname()[1]
        self.url = f"http://{public_host}:{self.port}"
        self._thread: threading.Thread | None = None

    def serve(self, app: WSGIApplication) -> None:
        self._server.app = app
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"demo-{self.name}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()


@dataclass
class DemoStack:
    api: FakeNeuroonAPI
    shop_app: Flask
    shop_url: str
    gateway_url: str
    instance_path: Path
    synced: int
    api_key: str = field(repr=False)


def _close_tracking(app: Flask) -> None:
    """Deliver what is left, then stop flask-neuroon's sender threads and close its SQLite
    connections. (``Neuroon`` has no public close; its atexit hook does the same later.)"""
    with app.app_context():
        neuroon.flush(5)
    state = app.extensions["neuroon"]
    state.dispatcher.close()
    state.storage.close()


@contextlib.contextmanager
def demo_stack(
    *,
    api_port: int = 0,
    shop_port: int = 0,
    gateway_port: int = 0,
    shop_config: Mapping[str, Any] | None = None,
) -> Iterator[DemoStack]:
    """The fake API, the shop and the gateway, up and serving, with the catalogue synced.

    ``shop_config`` is merged into the shop's config last (e.g. ``NEUROON_SNAPSHOTS``).
    """
    api_key = f"sk_demo_{secrets.token_hex(16)}"  # this run's; never printed
    gateway_secret = secrets.token_hex(32)
    with tempfile.TemporaryDirectory(prefix="neuroon-demo-") as tmp:
        instance_path = Path(tmp) / "shop-instance"
        servers: list[ThreadedServer] = []
        api: FakeNeuroonAPI | None = None
        shop_app: Flask | None = None
        try:
            shop = ThreadedServer("shop", "127.0.0.1", shop_port)
            servers.append(shop)
            gateway = ThreadedServer("gateway", "localhost", gateway_port)
            servers.append(gateway)
            api = FakeNeuroonAPI(
                shop_id=SHOP_ID, api_key=api_key, allowed_origins=(shop.url,), port=api_port
            ).start()
            shop_app = create_shop_app(
                {
                    "SECRET_KEY": secrets.token_hex(32),
                    "GATEWAY_URL": f"{gateway.url}/pay",
                    "GATEWAY_SECRET": gateway_secret,
                    "SHOP_DEBUG_PAGES": True,
                    "NEUROON_SHOP_ID": SHOP_ID,
                    "NEUROON_API_KEY": api_key,
                    "NEUROON_ORIGIN": shop.url,
                    "NEUROON_API_URL": api.url,
                    # Everything else as a shop gets it: SQLite storage, thread dispatch.
                    **(shop_config or {}),
                },
                instance_path=str(instance_path),
            )
            shop.serve(shop_app)
            gateway.serve(create_gateway_app({"GATEWAY_SECRET": gateway_secret}))
            synced = sync_catalog_from_config(shop_app, shop.url)
            yield DemoStack(
                api, shop_app, shop.url, gateway.url, instance_path, synced, api_key=api_key
            )
        finally:
            for server in servers:
                server.stop()
            if shop_app is not None:
                _close_tracking(shop_app)
            if api is not None:
                api.stop()


# --- reading HTML, as a browser does ---------------------------------------------------


@dataclass
class HtmlForm:
    action: str
    method: str
    fields: dict[str, str]


class _PageParser(HTMLParser):
    """The forms of a page (by id, with their inputs) and the attributes of each element
    that has an id."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: dict[str, HtmlForm] = {}
        self.elements: dict[str, dict[str, str]] = {}
        self._form: HtmlForm | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if "id" in attributes:
            self.elements[attributes["id"]] = attributes
        if tag == "form":
            self._form = HtmlForm(
                attributes.get("action", ""), attributes.get("method", "get").lower(), {}
            )
            self.forms[attributes.get("id", str(len(self.forms)))] = self._form
        elif tag == "input" and self._form is not None and attributes.get("name"):
            self._form.fields[attributes["name"]] = attributes.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def _parse(page: requests.Response) -> _PageParser:
    parser = _PageParser()
    parser.feed(page.text)
    parser.close()
    return parser


def find_form(page: requests.Response, form_id: str) -> HtmlForm:
    form = _parse(page).forms.get(form_id)
    if form is None:
        raise DemoFailed(f"{page.url}: no <form id={form_id!r}> on the page")
    form.action = urljoin(page.url, form.action)
    return form


def find_element(page: requests.Response, element_id: str) -> dict[str, str]:
    attributes = _parse(page).elements.get(element_id)
    if attributes is None:
        raise DemoFailed(f"{page.url}: no element with id={element_id!r} on the page")
    return attributes


# --- the walk-through -------------------------------------------------------------------


class Transcript:
    """Prints lines and keeps them (to check that no secret was printed)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def expect(response: requests.Response, status: int, what: str) -> requests.Response:
    if response.status_code != status:
        raise DemoFailed(
            f"{what}: {response.request.method} {response.url} answered "
            f"{response.status_code}, expected {status}"
        )
    return response


def money(amount: Decimal) -> str:
    return f"{amount:.2f} {CURRENCY}"


def pretty_json(value: Any, indent: str = "  ") -> str:
    """Indented JSON with Decimals written digit for digit."""
    inner = indent + "  "
    if isinstance(value, Mapping) and value:
        items = [f"{inner}{json.dumps(str(k))}: {pretty_json(v, inner)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list) and value:
        return "[\n" + ",\n".join(inner + pretty_json(v, inner) for v in value) + f"\n{indent}]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value)


def add_to_cart(browser: requests.Session, product_page: requests.Response, quantity: int) -> None:
    form = find_form(product_page, "add-to-cart")
    added = browser.post(
        form.action, data={**form.fields, "quantity": str(quantity)}, timeout=TIMEOUT
    )
    expect(added, 200, "add to cart")  # after the 303 to the cart


def walk_through(demo: DemoStack, say: Transcript) -> list[str]:
    """The shopper's journey; returns the problems found (empty: all good)."""
    shop, api = demo.shop_url, demo.api
    browser = requests.Session()
    browser.headers["User-Agent"] = "examples.demo (a scripted shopper)"
    with browser:
        say(f"1. Catalogue: {demo.synced} products synced to the API (POST /products/sync).")

        # 2. Search. The page comes from the shop; the results from the widget, which
        #    calls the API from the browser (fetch: no cookies, Origin: the shop).
        expect(browser.get(f"{shop}/", timeout=TIMEOUT), 200, "home page")
        page = expect(
            browser.get(f"{shop}/search", params={"q": QUERY}, timeout=TIMEOUT), 200, "search page"
        )
        widget = find_element(page, "neuroon-results")  # what widget.js reads
        found = expect(
            requests.get(
                f"{widget['data-api-url']}/api/widget/shops/{widget['data-shop-id']}/search",
                params={"q": widget["data-query"]},
                headers={"Origin": shop, "Accept": "application/json"},
                timeout=TIMEOUT,
            ),
            200,
            "widget search",
        )
        results = json.loads(found.text, parse_float=Decimal)["results"]
        say(f'2. Searched "{QUERY}": the widget got {len(results)} results')
        for result in results:
            say(f"     {result['productId']:<14} {result['name']:<18} {money(result['price'])}")

        # 3. Click: widget.js writes the cookie, then the link opens the product page.
        clicked = next((r for r in results if r["productId"] == CLICKED_PRODUCT), None)
        if clicked is None:
            raise DemoFailed(f"{CLICKED_PRODUCT} is not among the results for {QUERY!r}")
        previous = read_widget_cookie(browser.cookies.get(COOKIE, domain="127.0.0.1"))
        value = widget_cookie_value(
            widget_click(previous, clicked["productId"], clicked["searchLogId"])
        )
        browser.cookies.set(COOKIE, value, domain="127.0.0.1", path="/")
        say(f'3. Clicked "{clicked["name"]}": the widget wrote the cookie (path=/; SameSite=Lax)')
        say(f"     {COOKIE}={value}")
        product_url = widget["data-product-url"].replace("__ID__", quote(CLICKED_PRODUCT))
        product_page = expect(
            browser.get(urljoin(page.url, product_url), timeout=TIMEOUT), 200, "product page"
        )

        # 4. Cart: the clicked product, and one the shopper found without the search.
        add_to_cart(browser, product_page, CLICKED_QUANTITY)
        other_page = expect(
            browser.get(f"{shop}/product/{OTHER_PRODUCT}", timeout=TIMEOUT), 200, "product page"
        )
        add_to_cart(browser, other_page, OTHER_QUANTITY)
        clicked_total = PRODUCTS[CLICKED_PRODUCT].price * CLICKED_QUANTITY
        other_total = PRODUCTS[OTHER_PRODUCT].price * OTHER_QUANTITY
        say(
            f"4. Cart: {CLICKED_QUANTITY} x {CLICKED_PRODUCT} = {money(clicked_total)}"
            f" (clicked in search), {OTHER_QUANTITY} x {OTHER_PRODUCT} = {money(other_total)}"
            " (not clicked)"
        )

        # 5. Checkout: the order, then the route that sends the shopper to the gateway.
        created = expect(
            browser.post(f"{shop}/checkout", allow_redirects=False, timeout=TIMEOUT),
            303,
            "checkout",
        )
        pay_url = urljoin(created.url, created.headers["Location"])
        order_id = urlsplit(pay_url).path.split("/")[-2]
        to_gateway = expect(
            browser.get(pay_url, allow_redirects=False, timeout=TIMEOUT), 302, "pay"
        )
        gateway_page_url = to_gateway.headers["Location"]
        if not gateway_page_url.startswith(f"{demo.gateway_url}/"):
            raise DemoFailed(f"the shop redirected to {gateway_page_url}, not to the gateway")
        say(f"5. Checkout: order {order_id} created, awaiting payment")
        say(f"     GET {urlsplit(pay_url).path} (@neuroon.before_gateway: clicks snapshotted)")
        gateway_page = gateway_page_url.split("?")[0]
        say(f"     302 -> {gateway_page}?order={order_id}&amount=...&return_url=...")

        # 6. The gateway, another site: pay, get the page that posts back to the shop.
        card_page = expect(browser.get(gateway_page_url, timeout=TIMEOUT), 200, "gateway card page")
        pay_form = find_form(card_page, "pay")
        paid_page = expect(
            browser.post(
                pay_form.action, data={**pay_form.fields, "action": "pay"}, timeout=TIMEOUT
            ),
            200,
            "gateway payment",
        )
        back = find_form(paid_page, "return")
        say(f"6. Gateway ({demo.gateway_url}): paid; its page auto-submits a form POST")
        say(f"     to {back.action} with fields {', '.join(back.fields)}")

        # 7. The return: the browser submits that form from the gateway's site. Cross-site,
        #    so it sends none of the shop's SameSite=Lax cookies: no neuroon_clicks (and no
        #    session). This driver sends it without any cookie, on purpose.
        withheld = sorted(
            {cookie.name for cookie in browser.cookies if cookie.domain == "127.0.0.1"}
        )
        say(
            "7. Return POST, cross-site (localhost -> 127.0.0.1): sent WITHOUT the shop's"
            f" SameSite=Lax cookies ({', '.join(withheld)}), as a browser does"
        )
        returned = requests.post(
            back.action,
            data=back.fields,
            headers={"Origin": demo.gateway_url, "Referer": paid_page.url},
            allow_redirects=False,
            timeout=TIMEOUT,
        )
        expect(returned, 200, "payment return")
        if "Thank you" not in returned.text or order_id not in returned.text:
            raise DemoFailed("the return did not land on the thank-you page for the order")
        say(f"     -> 200, thank-you page for {order_id}; @neuroon.on_order_confirmed tracked it")

        # 8. flask-neuroon sends in the background; wait for it.
        started = time.perf_counter()
        with demo.shop_app.app_context():
            left = neuroon.flush(TIMEOUT)
        api.wait_for(1, timeout=1.0)  # flush() returns once the send has been answered
        say(
            f"8. Delivery: neuroon.flush() -> {left} still queued"
            f" (waited {time.perf_counter() - started:.2f} s)"
        )

        seen = expect(
            browser.get(f"{shop}/_debug/requests", timeout=TIMEOUT), 200, "debug log"
        ).json()

    return report(
        demo, say, order_id=order_id, seen=seen, expected_total=clicked_total + other_total
    )


def report(
    demo: DemoStack,
    say: Transcript,
    *,
    order_id: str,
    seen: list[dict[str, Any]],
    expected_total: Decimal,
) -> list[str]:
    api = demo.api
    problems: list[str] = []

    say()
    say("What the shop's server saw (GET /_debug/requests: cookie names per request)")
    for entry in seen:
        cookies = ", ".join(entry["cookies"]) or "-"
        clicks = ", ".join(entry["clicks"]) or "-"
        say(f"  {entry['method']:<5}{entry['path']:<28} cookies: {cookies:<24} clicks: {clicks}")
    checkout = next((e for e in seen if e["method"] == "POST" and e["path"] == "/checkout"), None)
    back = next((e for e in reversed(seen) if e["path"] == "/payment/return"), None)
    at_checkout = "yes" if checkout and checkout["neuroon_clicks"] else "no"
    at_return = "yes" if back and back["neuroon_clicks"] else "no"
    say(f"  {COOKIE} at checkout: {at_checkout}; at the return POST: {at_return}")
    if checkout and back and checkout["neuroon_clicks"] and not back["neuroon_clicks"]:
        say("  so the clicks sent with the order came from the snapshot taken before the gateway")
    if checkout is None or not checkout["neuroon_clicks"]:
        problems.append(f"the checkout request did not carry {COOKIE}")
    if back is None:
        problems.append("the shop never saw the return POST")
    elif back["neuroon_clicks"]:
        problems.append(f"the return POST carried {COOKIE}: it was not a fair cross-site test")

    say()
    sent = [r for r in api.requests if r.order_id == order_id]
    for request in sent:
        say(f"What the shop sent: {request.method} {request.path} -> {request.status}")
        key = request.header("X-Shop-API-Key") or ""
        say(f"  X-Shop-API-Key: <redacted, {len(key)} characters>")
        for name in ("Origin", "Content-Type", "User-Agent"):
            say(f"  {name}: {request.header(name)}")
        say("  " + pretty_json(request.json))
    if not sent:
        say("What the shop sent: nothing reached the API")

    say()
    conversions = [c for c in api.conversions if c.order_id == order_id]
    expected = PRODUCTS[CLICKED_PRODUCT].price * CLICKED_QUANTITY
    say("What the API recorded")
    for conversion in conversions:
        say(
            f"  order {conversion.order_id}: order value {money(conversion.order_value)},"
            f" attributed {money(conversion.attributed_value)}"
        )
        for line in conversion.conversions:
            verified = any(line is a for a in conversion.attributed_lines)
            say(
                f"    {line['productId']} x {line['quantity']} = {money(line['lineTotal'])}"
                f"  searchLogId {'verified' if verified else 'NOT verified'}"
            )
    if not conversions:
        say(f"  nothing for order {order_id}")
    say(f"  POSTs for this order: {len(sent)}; conversions recorded: {len(conversions)}")
    say(f"  Dashboard: {api.url}/dashboard  (up while this runs; --serve keeps it up)")

    if len(sent) != 1 or len(conversions) != 1:
        problems.append(
            f"the API got {len(sent)} POST(s) and recorded {len(conversions)} conversion(s)"
            f" for {order_id}, expected exactly 1"
        )
    else:
        conversion = conversions[0]
        if conversion.attributed_value != expected:
            problems.append(
                f"attributed {money(conversion.attributed_value)}, expected {money(expected)}"
                f" = {CLICKED_QUANTITY} x {money(PRODUCTS[CLICKED_PRODUCT].price)}"
            )
        if conversion.order_value != expected_total:
            problems.append(
                f"order value {money(conversion.order_value)}, expected {money(expected_total)}"
            )
        if [line["productId"] for line in conversion.attributed_lines] != [CLICKED_PRODUCT]:
            problems.append(f"the verified lines are not exactly {CLICKED_PRODUCT}")
        if not problems:
            say()
            say(
                f"PASS: order {order_id} recorded once, attributed {money(expected)}"
                f" = {CLICKED_QUANTITY} x {money(PRODUCTS[CLICKED_PRODUCT].price)}"
                f" (the clicked line) of {money(conversion.order_value)},"
                f" although the return POST carried no {COOKIE}."
            )
    return problems


# --- entry points -----------------------------------------------------------------------


def run() -> int:
    started = time.perf_counter()
    say = Transcript()
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no access log lines
    say("flask-neuroon demo: search -> click -> pay on another site -> conversion credited")
    problems: list[str] = []
    try:
        with demo_stack() as demo:
            say()
            api_url, origin = demo.api.url, demo.shop_url
            say(f"  Neuroon API (fake)  {api_url:<24} shop {SHOP_ID}, accepts Origin {origin}")
            say(f"  shop                {demo.shop_url:<24} outbox: SQLite in {demo.instance_path}")
            say(f"  payment gateway     {demo.gateway_url:<24} another site than the shop")
            say()
            try:
                problems = walk_through(demo, say)
            except (DemoFailed, requests.RequestException, KeyError, ValueError) as exc:
                problems = [f"{type(exc).__name__}: {exc}"]
            if demo.api_key in say.text:
                problems.append("the API key appeared in the output")
    except (OSError, RuntimeError, requests.RequestException) as exc:
        problems = [f"the servers did not start: {exc}"]
    say()
    for problem in problems:
        say(f"FAIL: {problem}")
    say(f"Took {time.perf_counter() - started:.2f} s (start, walk-through, shutdown).")
    return 1 if problems else 0


def serve(*, api_port: int, shop_port: int, gateway_port: int) -> int:
    with (
        StopRequest().on(signal.SIGINT, signal.SIGTERM) as stop,
        demo_stack(api_port=api_port, shop_port=shop_port, gateway_port=gateway_port) as demo,
    ):
        shop = demo.shop_url
        print("flask-neuroon demo servers (Ctrl-C to stop)")
        print()
        print(f"  shop                {shop}/")
        print(f'                      search "{QUERY}", click a result, buy it, pay')
        print(f"  payment gateway     {demo.gateway_url}/  (another site: FakePay)")
        print(f"  Neuroon dashboard   {demo.api.url}/dashboard?refresh=2")
        print(f"  attribution check   {shop}/_debug/clicks")
        print(f"  requests seen       {shop}/_debug/requests")
        print(f"  shop outbox         {demo.instance_path / 'neuroon.sqlite3'}")
        print(flush=True)
        while not stop.wait(0.5):
            pass
    print("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m examples.demo",
        description="Search, click, pay through a cross-site gateway, see the conversion.",
    )
    parser.add_argument("--serve", action="store_true", help="keep the servers up for a browser")
    parser.add_argument("--shop-port", type=int, default=0, help="with --serve (0: any free port)")
    parser.add_argument(
        "--gateway-port", type=int, default=0, help="with --serve (0: any free port)"
    )
    parser.add_argument("--api-port", type=int, default=0, help="with --serve (0: any free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="  [%(name)s] %(levelname)s: %(message)s")
    if args.serve:
        return serve(
            api_port=args.api_port, shop_port=args.shop_port, gateway_port=args.gateway_port
        )
    return run()


if __name__ == "__main__":
    raise SystemExit(main())
