"""The demo shop. ``create_app()`` builds it; ``neuroon`` is its flask-neuroon extension.

Run it alone with ``flask --app examples.shop run`` (set ``FLASK_NEUROON_SHOP_ID``,
``FLASK_NEUROON_API_KEY``, ``FLASK_NEUROON_ORIGIN``, ``FLASK_NEUROON_API_URL``), or all
three servers together with ``python -m examples.demo --serve``.
"""

from __future__ import annotations

from .app import create_app, neuroon

__all__ = ["create_app", "neuroon"]
