"""The shop's catalogue: a few products, prices as Decimal, in one currency.

``Product.id`` is the *externalId*: the id sent to Neuroon's ``/products/sync``, the id the
widget writes into the ``neuroon_clicks`` cookie, and the ``product_id`` of order lines.
Those three must be the same string, or no line is ever attributed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

import requests

CURRENCY = "EUR"


@dataclass(frozen=True)
class Product:
    id: str
    name: str
    price: Decimal
    description: str


PRODUCTS: dict[str, Product] = {
    product.id: product
    for product in (
        Product("SKU-MUG-RED", "Red enamel mug", Decimal("12.90"), "350 ml, dishwasher safe."),
        Product("SKU-MUG-BLUE", "Blue enamel mug", Decimal("12.90"), "350 ml, dishwasher safe."),
        Product("SKU-KETTLE", "Gooseneck kettle", Decimal("54.00"), "1 l, for pour-over."),
        Product("SKU-GRINDER", "Hand coffee grinder", Decimal("39.95"), "Ceramic burrs."),
        Product("SKU-DRIPPER", "Ceramic pour-over dripper", Decimal("24.90"), "Fits size 02."),
        Product("SKU-FILTERS", "Paper filters, 100 pcs", Decimal("4.25"), "Size 02, unbleached."),
        Product("SKU-BEANS-ETH", "Ethiopia Yirgacheffe beans, 250 g", Decimal("11.50"), "Floral."),
        Product("SKU-BEANS-COL", "Colombia Huila beans, 250 g", Decimal("9.80"), "Chocolate."),
    )
}


def catalog_json(products: Mapping[str, Product], shop_url: str) -> str:
    """The ``/products/sync`` body: ``{"products": [{externalId, name, price, url}]}``.

    Prices are written as JSON numbers digit for digit from the Decimal (``json.dumps``
    cannot write a Decimal, and going through float is exactly what money must not do).
    """
    items = [
        "{"
        f'"externalId": {json.dumps(p.id)}, "name": {json.dumps(p.name)}, '
        f'"price": {p.price}, "url": {json.dumps(f"{shop_url}/product/{p.id}")}'
        "}"
        for p in products.values()
    ]
    return '{"products": [' + ", ".join(items) + "]}"


def sync_catalog(*, api_url: str, shop_id: str, api_key: str, origin: str, shop_url: str) -> int:
    """Push the catalogue to Neuroon (``POST /api/plugin/shops/{shopId}/products/sync``).

    An admin action, not part of any shopper's request: it raises on failure. Returns the
    number of products the API says it synced.
    """
    response = requests.post(
        f"{api_url.rstrip('/')}/api/plugin/shops/{shop_id}/products/sync",
        data=catalog_json(PRODUCTS, shop_url.rstrip("/")).encode("utf-8"),
        headers={"X-Shop-API-Key": api_key, "Origin": origin, "Content-Type": "application/json"},
        timeout=(3.05, 10),
    )
    if response.status_code != 200:
        # The API's message, never the request headers (they hold the key).
        raise RuntimeError(f"product sync failed: HTTP {response.status_code}: {response.text}")
    synced = response.json().get("synced", 0)
    return int(synced)
