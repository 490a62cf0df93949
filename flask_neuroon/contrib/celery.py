"""Deliver conversions through Celery (``NEUROON_DISPATCH = "celery"``, extra ``[celery]``).

In the web process, ``track_conversion`` still writes the outbox row first; a single
publisher thread then hands the order id to Celery, so a slow or unreachable broker
never slows a checkout (the row waits in the outbox and the periodic flush sends it).
A Celery worker runs :data:`DELIVER_TASK` (claim, send, record — the same code as the
thread pool) and, from beat, :data:`FLUSH_TASK` (everything due: retries, rows whose
publish failed, rows of crashed processes).

Set up, next to your Celery app (the Flask docs' pattern)::

    from flask_neuroon.contrib.celery import register_tasks

    celery_app = Celery(app.name, broker=...)
    app.extensions["celery"] = celery_app                 # where the dispatcher finds it
    register_tasks(celery_app, flask_app=app, flush_every=60)

and run ``celery -A yourshop worker -B`` (or a separate ``celery beat``).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from typing import Any

from celery import Celery
from flask import Flask, current_app, has_app_context

from ..dispatch import Courier, SyncDispatcher, ThreadDispatcher, _AwaitRow, _Direct, _Work

logger = logging.getLogger("flask_neuroon")

DELIVER_TASK = "flask_neuroon.deliver"
FLUSH_TASK = "flask_neuroon.flush"
BEAT_ENTRY = "flask-neuroon-flush"


def _context(flask_app: Flask | None) -> contextlib.AbstractContextManager[Any]:
    if flask_app is not None and not has_app_context():
        return flask_app.app_context()
    return contextlib.nullcontext()


def register_tasks(
    celery_app: Celery, *, flask_app: Flask | None = None, flush_every: float = 60.0
) -> None:
    """Register the delivery and flush tasks on ``celery_app`` and a beat entry for the flush.

    ``flask_app``: pushed as app context around the tasks when the worker does not already
    run tasks inside one. ``flush_every``: seconds between flushes (0: no beat entry).
    """

    @celery_app.task(name=DELIVER_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
    def deliver(order_id: str) -> str | None:
        with _context(flask_app):
            state = current_app.extensions["neuroon"]
            status: str | None = state.courier.deliver_id(order_id)
            return status

    @celery_app.task(name=FLUSH_TASK, ignore_result=True)  # type: ignore[untyped-decorator]
    def flush(timeout: float = 50.0) -> int:
        with _context(flask_app):
            state = current_app.extensions["neuroon"]
            left: int = SyncDispatcher(state.courier).flush(timeout)
            return left

    if flush_every:
        schedule = dict(celery_app.conf.beat_schedule or {})
        schedule[BEAT_ENTRY] = {
            "task": FLUSH_TASK,
            "schedule": float(flush_every),
            "kwargs": {"timeout": max(1.0, float(flush_every) * 0.8)},
        }
        celery_app.conf.beat_schedule = schedule


class CeleryDispatcher(ThreadDispatcher):
    """One publisher thread in the web process; Celery workers do the sending."""

    sends_here = False

    def __init__(
        self, courier: Courier, app: Flask, *, max_pending: int, shutdown_timeout: float
    ) -> None:
        super().__init__(
            courier,
            workers=1,
            max_pending=max_pending,
            flush_interval=0,  # beat runs the flush
            shutdown_timeout=shutdown_timeout,
        )
        self._app = weakref.ref(app)

    def _celery(self) -> Celery | None:
        app = self._app()
        celery_app = app.extensions.get("celery") if app is not None else None
        if celery_app is None:
            app_config = app.config if app is not None else {}
            celery_app = app_config.get("NEUROON_CELERY_APP")
        return celery_app

    def _handle(self, job: _Work) -> None:
        if isinstance(job, _Direct):
            self._deliver_direct(job)  # storage was down: no row for a worker to claim
            return
        order_id, countdown = (job.order_id, 1.0) if isinstance(job, _AwaitRow) else (job, None)
        celery_app = self._celery()
        if celery_app is None:
            logger.error(
                "flask-neuroon: NEUROON_DISPATCH is 'celery' but app.extensions['celery'] is not"
                " set; order %s waits in the outbox for `flask neuroon flush`",
                order_id,
            )
            return
        try:
            celery_app.send_task(DELIVER_TASK, args=[order_id], countdown=countdown, retry=False)
        except Exception as exc:  # noqa: BLE001 - any broker failure: beat's flush sends it later
            logger.warning(
                "flask-neuroon: cannot hand order %s to Celery (%s); it waits in the outbox",
                order_id,
                exc,
            )


__all__ = ["BEAT_ENTRY", "DELIVER_TASK", "FLUSH_TASK", "CeleryDispatcher", "register_tasks"]
