"""The signed mirror of the click map: a snapshot that lives in the shopper's browser.

For shops without shared storage (several hosts, each with its own SQLite): when the
clicks are snapshotted before the gateway, the response also sets a first-party cookie
holding ``{order id, clicks}``, signed and timestamped with itsdangerous under the app's
``SECRET_KEY``. It is ``SameSite=None; Secure; HttpOnly``, so browsers send it on the
gateway's cross-site return POST, where the widget's ``SameSite=Lax`` cookie is missing.

Pure: values in, values out; no Flask. A forged, tampered, expired or foreign mirror
reads as nothing, with a log line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

logger = logging.getLogger("flask_neuroon")

SALT = "flask-neuroon.mirror"
#: A cookie's name and value together, as browsers keep them.
MAX_COOKIE_BYTES = 4096


class MirrorCodec:
    """Signs and reads mirror cookies. ``secret_keys``: oldest first, the last signs
    (Flask's ``SECRET_KEY_FALLBACKS`` + ``SECRET_KEY``), so keys can be rotated."""

    def __init__(self, secret_keys: Sequence[str], cookie_name: str) -> None:
        self._serializer = URLSafeTimedSerializer(list(secret_keys), salt=SALT)
        self.cookie_name = cookie_name

    def __repr__(self) -> str:
        return f"<MirrorCodec {self.cookie_name}>"

    def dumps(self, order_id: str, clicks: Mapping[str, str]) -> str | None:
        """The cookie value; the last entries are left out until it fits 4096 bytes
        (the widget writes the newest clicks first). None if not even one fits."""
        entries = list(clicks.items())
        budget = MAX_COOKIE_BYTES - len(self.cookie_name) - 1
        while entries:
            value = self._serializer.dumps({"o": order_id, "c": dict(entries)})
            if len(value) <= budget:
                if len(entries) < len(clicks):
                    logger.info(
                        "flask-neuroon: mirror cookie of order %s keeps %d of %d clicks (4 KiB)",
                        order_id,
                        len(entries),
                        len(clicks),
                    )
                return value
            # Shrink in proportion to the overshoot, at least by one entry.
            keep = int(len(entries) * budget / len(value))
            entries = entries[: min(keep, len(entries) - 1)]
        return None

    def loads(self, value: str, order_id: str, max_age: float) -> dict[str, str]:
        """The clicks of a mirror for ``order_id`` signed within ``max_age`` seconds; {}
        for anything else, with a log line. Never raises."""
        try:
            return self._loads(value, order_id, max_age)
        except Exception:  # a bug of ours must not cost the order its tracking
            logger.exception("flask-neuroon: reading the mirror cookie of order %s", order_id)
            return {}

    def _loads(self, value: str, order_id: str, max_age: float) -> dict[str, str]:
        try:
            data: Any = self._serializer.loads(value, max_age=int(max_age))
        except SignatureExpired:
            logger.info("flask-neuroon: ignored an expired mirror cookie (order %s)", order_id)
            return {}
        except BadSignature:
            logger.warning(
                "flask-neuroon: ignored a mirror cookie with a bad signature (forged, tampered"
                " or signed with another SECRET_KEY) on order %s",
                order_id,
            )
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("c"), dict):
            logger.warning("flask-neuroon: ignored a malformed mirror cookie (order %s)", order_id)
            return {}
        if data.get("o") != order_id:
            logger.info(
                "flask-neuroon: the mirror cookie belongs to order %r, not %s; ignored",
                data.get("o"),
                order_id,
            )
            return {}
        return {k: v for k, v in data["c"].items() if isinstance(k, str) and isinstance(v, str)}


__all__ = ["MAX_COOKIE_BYTES", "MirrorCodec"]
