"""How a click map is written into a storage backend: JSON text, never pickle."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping

logger = logging.getLogger("flask_neuroon.storage")


def dumps_clicks(clicks: Mapping[str, str]) -> str:
    return json.dumps(dict(clicks), ensure_ascii=False, separators=(",", ":"))


def loads_clicks(text: str | bytes) -> dict[str, str]:
    """Read a stored click map; anything that is not a {str: str} object reads as empty."""
    try:
        value = json.loads(text)
    except ValueError:
        logger.warning("flask-neuroon: a stored click snapshot is not JSON; ignored")
        return {}
    if not isinstance(value, dict):
        logger.warning("flask-neuroon: a stored click snapshot is not an object; ignored")
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
