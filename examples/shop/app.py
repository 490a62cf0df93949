"""The demo shop: a catalogue, a session cart, and a checkout through an external gateway.

flask-neuroon is used exactly as documented:

* ``neuroon = Neuroon()`` at module level, ``neuroon.init_app(app)`` in the factory, the
  ``NEUROON_*`` settings in ``app.config``;
* ``@neuroon.before_gateway`` on the route that sends the shopper to the payment gateway:
  it snapshots the click cookie, because the gateway's cross-site return will not carry it;
* ``@neuroon.on_order_confirmed`` on the route the gateway returns to: once that view has
  answered without error, the order is tracked (in the background, never in the way).

Everything else is an ordinary small Flask shop. Two debug pages (``SHOP_DEBUG_PAGES``,
off by default) show what the server sees: ``/_debug/clicks`` (the vendor's "validate the
attribution" helper) and ``/_debug/requests`` (which recent requests carried the cookie).
"""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

import click
import requests
from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.typing import ResponseReturnValue

from flask_neuroon import Neuroon

from .catalog import CURRENCY, PRODUCTS, sync_catalog
from .orders import PAID, OrderStore, ShopOrder, ShopOrderLine
from .payments import gateway_redirect_url, verify_return

neuroon = Neuroon()
shop = Blueprint("shop", __name__, cli_group=None)

MAX_QUANTITY = 99


@dataclass
class ShopState:
    """Per-app state: ``app.extensions["shop"]``."""

    orders: OrderStore = field(default_factory=OrderStore)
    #: The last requests (method, path, cookie names): what ``/_debug/requests`` shows.
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=50))


def create_app(
    config: Mapping[str, Any] | None = None, *, instance_path: str | None = None
) -> Flask:
    """Build the shop. ``config`` overrides the environment (``FLASK_*`` variables).

    ``instance_path`` is where flask-neuroon's default SQLite outbox lives
    (``<instance>/neuroon.sqlite3``).
    """
    app = Flask(__name__, instance_path=instance_path)
    app.config.from_mapping(
        # Both random per process unless configured: set them for anything but a demo.
        SECRET_KEY=secrets.token_hex(32),
        GATEWAY_SECRET=secrets.token_hex(32),  # shared with the payment gateway
        GATEWAY_URL="http://localhost:5001/pay",
        # Like neuroon_clicks, the session is not sent with the gateway's cross-site
        # return POST: that view must not need it (it trusts the gateway's signature).
        SESSION_COOKIE_SAMESITE="Lax",
        SHOP_DEBUG_PAGES=False,
    )
    app.config.from_prefixed_env()  # FLASK_NEUROON_API_KEY=sk_... and so on
    if config:
        app.config.update(config)

    neuroon.init_app(app)
    app.extensions["shop"] = ShopState()
    app.register_blueprint(shop)
    app.jinja_env.filters["money"] = format_money
    return app


def sync_catalog_from_config(app: Flask, shop_url: str) -> int:
    """Push the catalogue to Neuroon with the app's ``NEUROON_*`` settings (an admin task:
    at deploy time, from cron, or ``flask --app examples.shop sync-catalog``)."""
    config = app.config
    missing = [
        key
        for key in ("NEUROON_SHOP_ID", "NEUROON_API_KEY", "NEUROON_ORIGIN")
        if not config.get(key)
    ]
    if missing:
        raise RuntimeError(f"cannot sync the catalogue: {', '.join(missing)} not set")
    return sync_catalog(
        api_url=config.get("NEUROON_API_URL") or "https://api.neuroon.ai",
        shop_id=config["NEUROON_SHOP_ID"],
        api_key=config["NEUROON_API_KEY"],
        origin=config["NEUROON_ORIGIN"],
        shop_url=shop_url,
    )


@shop.cli.command("sync-catalog")
@click.option("--shop-url", default="http://127.0.0.1:5000", show_default=True)
def sync_catalog_command(shop_url: str) -> None:
    """Send the catalogue to Neuroon's /products/sync."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    try:
        count = sync_catalog_from_config(app, shop_url)
    except (RuntimeError, requests.RequestException) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"synced {count} products")


def _state() -> ShopState:
    return cast(ShopState, current_app.extensions["shop"])


def format_money(amount: Decimal, currency: str = CURRENCY) -> str:
    return f"{amount:.2f} {currency}"


# --- what the server sees (debug) -----------------------------------------------------


def _cookie_names(header: str) -> list[str]:
    """The cookie names in a raw ``Cookie`` header. Read from the header itself, as
    flask-neuroon does: ``request.cookies`` leaves out values it cannot parse, such as
    unencoded JSON, which the extension still reads."""
    names = {part.split("=", 1)[0].strip() for part in header.split(";") if "=" in part}
    return sorted(names)[:20]


@shop.before_app_request
def record_request() -> None:
    """Remember which cookies each request carried (names only, never values) and the
    clicks flask-neuroon read from them."""
    if request.path.startswith(("/static/", "/_debug/")):
        return
    cookie_name = current_app.config.get("NEUROON_COOKIE_NAME") or "neuroon_clicks"
    names = _cookie_names(request.headers.get("Cookie", ""))
    _state().requests.append(
        {
            "method": request.method,
            "path": request.path,
            "cookies": names,
            "neuroon_clicks": cookie_name in names,
            "clicks": dict(list(neuroon.clicks.items())[:10]),
        }
    )


def _debug_pages_enabled() -> None:
    if not current_app.config["SHOP_DEBUG_PAGES"]:
        abort(404)


@shop.get("/_debug/requests")
def debug_requests() -> ResponseReturnValue:
    _debug_pages_enabled()
    return jsonify(list(_state().requests))


@shop.get("/_debug/clicks")
def debug_clicks() -> ResponseReturnValue:
    """The click map this very request carries: open it after clicking a search result."""
    _debug_pages_enabled()
    clicks = dict(neuroon.clicks)
    if request.args.get("format") == "json":
        return jsonify(clicks)
    return render_template("debug_clicks.html", clicks=clicks, products=PRODUCTS)


# --- browsing ---------------------------------------------------------------------------


@shop.get("/")
def home() -> ResponseReturnValue:
    return render_template("home.html", products=PRODUCTS.values())


@shop.get("/search")
def search() -> ResponseReturnValue:
    # The results come from the Neuroon widget (static/widget.js), in the browser.
    return render_template(
        "search.html",
        query=request.args.get("q", ""),
        api_url=current_app.config.get("NEUROON_API_URL") or "",
        shop_id=current_app.config.get("NEUROON_SHOP_ID") or "",
    )


@shop.get("/product/<product_id>")
def product(product_id: str) -> ResponseReturnValue:
    item = PRODUCTS.get(product_id)
    if item is None:
        abort(404)
    return render_template("product.html", product=item, max_quantity=MAX_QUANTITY)


# --- cart -------------------------------------------------------------------------------


def _cart() -> dict[str, int]:
    """``{product_id: quantity}`` from the session, without unknown products."""
    raw = session.get("cart")
    if not isinstance(raw, dict):
        return {}
    return {
        pid: qty
        for pid, qty in raw.items()
        if pid in PRODUCTS and isinstance(qty, int) and 0 < qty <= MAX_QUANTITY
    }


def _cart_lines() -> list[ShopOrderLine]:
    return [
        ShopOrderLine(pid, PRODUCTS[pid].name, qty, PRODUCTS[pid].price)
        for pid, qty in _cart().items()
    ]


@shop.post("/cart/add")
def cart_add() -> ResponseReturnValue:
    product_id = request.form.get("product_id", "")
    if product_id not in PRODUCTS:
        abort(404)
    try:
        quantity = int(request.form.get("quantity", "1"))
    except ValueError:
        abort(400, "quantity must be a whole number")
    if not 0 < quantity <= MAX_QUANTITY:
        abort(400, f"quantity must be between 1 and {MAX_QUANTITY}")
    cart = _cart()
    cart[product_id] = min(cart.get(product_id, 0) + quantity, MAX_QUANTITY)
    session["cart"] = cart
    flash(f"Added {quantity} \u00d7 {PRODUCTS[product_id].name} to the cart.")
    return redirect(url_for(".cart"), code=303)


@shop.get("/cart")
def cart() -> ResponseReturnValue:
    lines = _cart_lines()
    total = sum((line.line_total for line in lines), Decimal("0.00"))
    return render_template("cart.html", lines=lines, total=total)


# --- checkout ---------------------------------------------------------------------------


@shop.post("/checkout")
def checkout() -> ResponseReturnValue:
    """Turn the cart into an order awaiting payment, then go and pay it."""
    lines = _cart_lines()
    if not lines:
        flash("Your cart is empty.")
        return redirect(url_for(".cart"), code=303)
    order = _state().orders.create(lines, CURRENCY)
    session["cart"] = {}
    session["orders"] = [*session.get("orders", [])[-9:], order.id]
    return redirect(url_for(".pay", order_id=order.id), code=303)


@shop.get("/checkout/<order_id>/pay")
@neuroon.before_gateway(order_id="order_id")
def pay(order_id: str) -> ResponseReturnValue:
    """Send the shopper to the gateway. The decorator snapshots the clicks for this order
    first: the shopper comes back by a cross-site POST that will not carry the cookie."""
    order = _state().orders.get(order_id)
    if order is None or order_id not in session.get("orders", []):
        abort(404)
    if order.status == PAID:
        abort(409, "This order is already paid.")
    return redirect(
        gateway_redirect_url(
            current_app.config["GATEWAY_URL"],
            order_id=order.id,
            amount=order.total,
            currency=order.currency,
            return_url=url_for(".payment_return", _external=True),
        ),
        code=302,
    )


def load_paid_order(order_id: Any) -> ShopOrder | None:
    """What ``on_order_confirmed`` tracks: only an order that really is paid."""
    return _state().orders.get_paid(order_id)


@shop.route("/payment/return", methods=["GET", "POST"])
@neuroon.on_order_confirmed(
    load_order=load_paid_order, order_id=lambda: request.values.get("order")
)
def payment_return() -> ResponseReturnValue:
    """Where the gateway sends the shopper back: a cross-site form POST (or a GET).

    No CSRF token can come with it and no SameSite=Lax cookie does (not the session, not
    ``neuroon_clicks``): the gateway's signature is what this view trusts. An answer of
    400 or more tells ``on_order_confirmed`` that nothing was confirmed.
    """
    order_id = request.values.get("order", "")
    signature = request.values.get("signature", "")
    order = _state().orders.get(order_id)
    result = verify_return(current_app.config["GATEWAY_SECRET"], order_id, signature)
    if (
        order is None
        or result is None
        or result.amount != order.total
        or result.currency != order.currency
    ):
        return render_template("payment_problem.html", reason="could not be verified"), 400
    if result.status != "paid":
        return render_template("payment_problem.html", reason="was not completed"), 402
    paid = _state().orders.mark_paid(order.id) or order
    return render_template("thank_you.html", order=paid)
