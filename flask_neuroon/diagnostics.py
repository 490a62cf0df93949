"""Why attribution did not happen, in words a shop engineer can act on (pure).

Two kinds of diagnosis, both from the vendor's common-errors table:

* :func:`explain_mismatch` — the shopper clicked products, yet no order line matched the
  click map. Usually normal (they bought something else), but a systematic mismatch is a
  misconfiguration: SKUs in the widget versus internal ids in the order, a parent product
  versus the variant bought, ids that differ in case or spaces.
* :func:`explain_api_answer` — what an answer of the conversion endpoint means for the
  configuration (401 key, 403 Origin, 404 shop, ...), used by ``flask neuroon check``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .conversion import usable_clicks
from .orders import Order, OrderLine

#: Ids shown from each side in a warning.
SAMPLE = 5

CAUSE_SKU = "sku-vs-internal-id"
CAUSE_VARIANT = "parent-vs-variant"
CAUSE_SPELLING = "case-or-spaces"
CAUSE_NOT_BOUGHT = "clicked-products-not-bought"
CAUSE_NO_LINES = "no-readable-lines"
CAUSE_UNATTRIBUTABLE = "clicked-lines-not-attributable"
CAUSE_NO_USABLE_CLICKS = "no-usable-clicks"


@dataclass(frozen=True)
class Mismatch:
    cause: str
    message: str
    click_ids: tuple[str, ...]
    line_ids: tuple[str, ...]

    @property
    def likely_misconfiguration(self) -> bool:
        return self.cause != CAUSE_NOT_BOUGHT


def _line_ids(lines: Iterable[OrderLine]) -> list[str]:
    ids: list[str] = []
    for line in lines:
        ids.extend(value for value in line.ids() if value not in ids)
    return ids


def _numeric(ids: Iterable[str]) -> bool:
    return all(value.isdigit() for value in ids)


def _related(a: str, b: str) -> bool:
    """One id is the other plus a suffix: SKU-1 and SKU-1-RED, 1234 and 1234_2."""
    short, long = sorted((a.lower(), b.lower()), key=len)
    return short != long and long.startswith(short) and not long[len(short)].isalnum()


def explain_mismatch(order: Order, clicks: Mapping[str, str]) -> Mismatch | None:
    """Why no line of ``order`` is in ``clicks`` (None when there is nothing to explain).

    Reads ids the way the payload builder does (:meth:`OrderLine.ids`, usable click
    entries only), so it never calls a shop object's ``__str__`` and never raises for
    the kinds of ids the builder accepts.
    """
    lines = [line for line in order.lines if isinstance(line, OrderLine)]
    line_ids = _line_ids(lines)
    if not clicks:
        return None
    click_ids = list(usable_clicks(clicks))
    if not click_ids:
        shown = [repr(key)[:40] for key in list(clicks)[:SAMPLE]]
        return Mismatch(
            CAUSE_NO_USABLE_CLICKS,
            "no click entry can be used: a productId must be a string or an integer and a"
            f" searchLogId a non-empty string (clicked {shown})",
            (),
            tuple(line_ids[:SAMPLE]),
        )
    matched = [value for value in line_ids if value in set(click_ids)]
    if matched:
        return Mismatch(
            CAUSE_UNATTRIBUTABLE,
            f"the clicked products {matched[:SAMPLE]} are in the order, but their lines could"
            " not be attributed (see the warnings logged for them: quantity, price)",
            tuple(matched[:SAMPLE]),
            tuple(line_ids[:SAMPLE]),
        )
    if not line_ids:
        return Mismatch(
            CAUSE_NO_LINES,
            "the order has no lines with a product id that flask-neuroon can read (it looks"
            " for lines, items, line_items, lineItems and, in each, product_id, productId,"
            " sku, external_id, externalId, holding a string or an integer): register an"
            " order adapter"
            f" (clicked {click_ids[:SAMPLE]})",
            tuple(click_ids[:SAMPLE]),
            (),
        )
    shown_clicks, shown_lines = tuple(click_ids[:SAMPLE]), tuple(line_ids[:SAMPLE])
    sides = f"clicked {list(shown_clicks)}, order lines {list(shown_lines)}"

    def normal(value: str) -> str:
        return "".join(value.split()).lower()

    if {normal(c) for c in click_ids} & {normal(i) for i in line_ids}:
        cause, advice = (
            CAUSE_SPELLING,
            (
                "the ids differ only in case or spaces; send exactly the externalId given to "
                "/products/sync"
            ),
        )
    elif any(_related(c, i) for c in click_ids for i in line_ids):
        cause, advice = (
            CAUSE_VARIANT,
            (
                "parent versus variant: the widget's product and the variant bought have "
                "different ids; give order lines both (product_id = the parent, variant_id = "
                "the variant), as synced to Neuroon"
            ),
        )
    elif _numeric(line_ids) != _numeric(click_ids):
        cause, advice = (
            CAUSE_SKU,
            (
                "SKU versus internal id: the widget's ids and the order's ids are of different "
                "kinds; send the externalId given to /products/sync (register an order adapter "
                "that reads it)"
            ),
        )
    else:
        cause, advice = (
            CAUSE_NOT_BOUGHT,
            (
                "none of the clicked products is in this order (normal when the shopper bought "
                "something else)"
            ),
        )
    return Mismatch(
        cause, f"no order line matches a click: {advice} ({sides})", shown_clicks, shown_lines
    )


@dataclass(frozen=True)
class ApiVerdict:
    ok: bool
    message: str


def explain_api_answer(status: int | None, detail: str, *, shop_id: str, origin: str) -> ApiVerdict:
    """Read a probe's answer (an intentionally empty conversion) as the vendor's table does."""
    if status is None:
        return ApiVerdict(False, f"the API could not be reached: {detail}")
    if status == 400:
        return ApiVerdict(
            True,
            "the API accepted the key and the Origin (it rejected the "
            "empty probe body, as it should)",
        )
    if 200 <= status < 300:
        return ApiVerdict(True, "the API accepted the request")
    if status == 401:
        return ApiVerdict(
            False,
            (
                f"401: the API key is not valid for shop {shop_id}: copy it again from the "
                "dashboard (sk_…, 35 characters), and do not mix production (api.neuroon.ai) "
                f"with development keys. The API said: {detail}"
            ),
        )
    if status == 403:
        return ApiVerdict(
            False,
            (
                f"403: the Origin {origin} is not the shop's registered URL, or the domain is "
                "not verified yet: check the URL in the dashboard's shop settings (add staging "
                f"origins through support) and verify the domain. The API said: {detail}"
            ),
        )
    if status == 404:
        return ApiVerdict(
            False,
            f"404: no shop {shop_id} at this API: check NEUROON_SHOP_ID "
            f"and NEUROON_API_URL. The API said: {detail}",
        )
    if status == 429:
        return ApiVerdict(
            False, "429: rate limited; deliveries wait for Retry-After and are retried"
        )
    if status >= 500:
        return ApiVerdict(
            False,
            f"{status}: the API is failing; deliveries will be retried. The API said: {detail}",
        )
    return ApiVerdict(False, f"{status}: unexpected answer: {detail}")


__all__ = [
    "CAUSE_NOT_BOUGHT",
    "CAUSE_NO_LINES",
    "CAUSE_SKU",
    "CAUSE_SPELLING",
    "CAUSE_VARIANT",
    "ApiVerdict",
    "Mismatch",
    "explain_api_answer",
    "explain_mismatch",
]
