"""The exceptions flask-neuroon raises: one small tree, in the itsdangerous manner.

``NeuroonError`` is the root. Only two kinds ever reach a shop's own code:

* :class:`ConfigurationError` from ``init_app`` when a ``NEUROON_*`` value is malformed;
* :class:`InvalidOrder` from the pure payload builder when the shop's order data cannot be
  sent (a negative total, no currency, ...). The fire-and-forget path catches it and logs it
  with the order id; ``build_payload`` lets it through so the shop's own tests see it.

:class:`StorageError` wraps every driver error of every storage backend; the extension
catches it on the request path and logs it. Messages never contain the API key.
"""

from __future__ import annotations


class NeuroonError(Exception):
    """Base class of every error flask-neuroon raises."""


class ConfigurationError(NeuroonError, ValueError):
    """A ``NEUROON_*`` configuration value is malformed."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class InvalidOrder(NeuroonError, ValueError):
    """The shop's order cannot become a conversion; names the order and the field."""

    def __init__(self, message: str, *, order_id: str | None = None, field: str | None = None):
        where = f"order {order_id!r}" if order_id else "order"
        if field:
            where = f"{where}, field {field}"
        super().__init__(f"{where}: {message}")
        self.order_id = order_id
        self.field = field
        self.reason = message


class StorageError(NeuroonError):
    """A storage backend failed (database down, lock timeout, driver error, ...)."""


__all__ = ["ConfigurationError", "InvalidOrder", "NeuroonError", "StorageError"]
