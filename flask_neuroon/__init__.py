"""flask-neuroon: durable server-side conversion tracking for the Neuroon search widget.

Where each layer lives:

* ``middleware.py`` / ``cookies.py`` — the WSGI middleware and the pure click-cookie parser
* ``extension.py`` — the Flask extension (:class:`Neuroon`), decorators; ``cli.py`` its CLI
* ``orders.py`` / ``conversion.py`` / ``currencies.py`` / ``ids.py`` — the pure payload builder
* ``outbox.py`` — the durable queue; ``storage/`` — its backends, chosen by URI
* ``dispatch.py`` — who runs the sends; ``client.py`` — the one HTTP POST
* ``testing.py`` — a fake Neuroon API on loopback for your tests
"""

from __future__ import annotations

from ._version import __version__
from .delivery import Delivery
from .errors import ConfigurationError, InvalidOrder, NeuroonError, StorageError
from .extension import Neuroon
from .orders import Order, OrderLine

__all__ = [
    "ConfigurationError",
    "Delivery",
    "InvalidOrder",
    "Neuroon",
    "NeuroonError",
    "Order",
    "OrderLine",
    "StorageError",
    "__version__",
]
