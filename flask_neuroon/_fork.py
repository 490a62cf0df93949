"""Fork safety: objects that hold threads, locks, sessions or connections reset in a child.

``os.register_at_fork`` is registered once, at import; it starts nothing. After a fork
(gunicorn ``--preload``, uWSGI, multiprocessing) every registered object's
``_after_fork()`` runs in the child, which then creates its own threads and connections
lazily, when first needed.
"""

from __future__ import annotations

import logging
import os
import weakref
from typing import Protocol

logger = logging.getLogger("flask_neuroon")


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_objects: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def register(obj: ForkAware) -> None:
    _objects.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_objects):
        try:
            obj._after_fork()
        except Exception:  # a hook must never break the child
            logger.exception("flask-neuroon: resetting %r after fork failed", type(obj).__name__)


os.register_at_fork(after_in_child=_after_fork_in_child)
