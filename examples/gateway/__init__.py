"""A fake payment gateway, meant to be served on another *site* than the shop."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
