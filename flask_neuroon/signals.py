"""Signals, in flask-neuroon's own blinker namespace; the sender is always the app.

Connect with ``clicks_persisted.connect(receiver, app)``. Receivers run in the thread
that did the work (a sender thread for the conversion signals); an exception in a
receiver is logged, never raised into the shop's request or a delivery.

=========================  ==============================================================
signal                     keyword arguments
=========================  ==============================================================
``clicks_persisted``       ``order_id``, ``count`` (entries snapshotted)
``conversion_queued``      ``order_id``, ``payload`` (the dict, money as Decimal)
``conversion_sent``        ``order_id``, ``status`` ("sent" or "duplicate")
``conversion_failed``      ``order_id``, ``status``, ``reason``, ``will_retry``
``storage_failed``         ``operation``, ``error`` (a StorageError)
``attribution_mismatch``   ``order_id``, ``click_ids``, ``line_ids``, ``cause``: the shopper
                           clicked products, yet no order line matched one

=========================  ==============================================================
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

clicks_persisted = _signals.signal("clicks-persisted")
conversion_queued = _signals.signal("conversion-queued")
conversion_sent = _signals.signal("conversion-sent")
conversion_failed = _signals.signal("conversion-failed")
storage_failed = _signals.signal("storage-failed")
attribution_mismatch = _signals.signal("attribution-mismatch")

__all__ = [
    "attribution_mismatch",
    "clicks_persisted",
    "conversion_failed",
    "conversion_queued",
    "conversion_sent",
    "storage_failed",
]
