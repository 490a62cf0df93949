"""The Flask extension: configuration, request-scoped clicks, snapshots, tracking, decorators.

Only this module knows Flask (with ``cli.py``). It wires the layers below it together:
the middleware for the click map, the pure payload builder, the outbox on a storage
backend, a dispatcher and the HTTP client. Per-app state lives in
``app.extensions["neuroon"]``; the :class:`Neuroon` object itself holds no app.

Rule: nothing here raises into the shop's request because of tracking. Storage and
network failures are logged and signalled; an invalid order is logged with its id.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
import time
import weakref
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from flask import Flask, Response, after_this_request, current_app, has_request_context, request
from flask.typing import ResponseReturnValue

from . import _fork
from .client import NeuroonClient, SendResult
from .config import Secret, Settings, is_loopback_host
from .conversion import build_payload, dumps_payload
from .delivery import Delivery
from .diagnostics import explain_mismatch
from .dispatch import Courier, Dispatcher, SyncDispatcher, ThreadDispatcher
from .errors import InvalidOrder, StorageError
from .ids import shown
from .middleware import ClickMapMiddleware, clicks_from_environ
from .mirror import MirrorCodec
from .orders import Order, OrderAdapter, adapt_order, order_id_of
from .outbox import Outbox
from .signals import (
    attribution_mismatch,
    clicks_persisted,
    conversion_failed,
    conversion_queued,
    conversion_sent,
    storage_failed,
)
from .storage import DEAD, SENT, Storage, storage_from_uri
from .storage.guard import RequestGuard
from .storage.uri import display_uri

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

logger = logging.getLogger("flask_neuroon")

F = TypeVar("F", bound=Callable[..., Any])
OrderIdSource = str | Callable[[], Any]

_EMPTY: Mapping[str, str] = MappingProxyType({})
#: The least time Delivery.wait() gives a look at the outbox row (wait(0) included).
_MIN_LOOK_WAIT = 0.05
#: Order ids remembered for once-only sending when the outbox is off or unreachable.
_RECENT_LIMIT = 10_000
#: Seconds between purges of expired snapshots by the in-process sweeper.
_PURGE_EVERY = 3600.0
#: The longest such a purge is waited for.
_PURGE_WAIT = 60.0


class _State:
    """One app's configured pieces: ``app.extensions["neuroon"]``."""

    def __init__(
        self, app: Flask, settings: Settings, adapters: list[OrderAdapter], storage: Storage
    ) -> None:
        self.settings = settings
        self.adapters = adapters
        self._app = weakref.ref(app)
        self.storage = storage
        _fork.register(self.storage)
        #: What a request thread waits for storage through (bounded, see storage/guard.py).
        self.guard = RequestGuard(
            f"storage {storage.display_uri or type(storage).__name__}", offload=storage.remote
        )
        _fork.register(self.guard)
        self.mirror: MirrorCodec | None = None
        if settings.snapshots_in_cookie:
            keys = [*(app.config.get("SECRET_KEY_FALLBACKS") or ()), app.config["SECRET_KEY"]]
            self.mirror = MirrorCodec(keys, settings.mirror_cookie_name)
        self.outbox: Outbox | None = None
        if settings.outbox:
            self.outbox = Outbox(
                self.storage,
                retry_schedule=settings.retry_schedule,
                max_attempts=settings.max_attempts,
                lease_seconds=settings.lease_seconds,
            )
        self.client = NeuroonClient(
            settings.endpoint,
            api_key=settings.api_key or Secret(""),  # no key: tracking is inactive
            origin=settings.origin or "",
            timeout=settings.timeout,
        )
        _fork.register(self.client)
        self.courier = Courier(self.client, self.outbox, self.report, self.guard)
        self.dispatcher: Dispatcher
        if settings.dispatch == "sync":
            self.dispatcher = SyncDispatcher(self.courier)
        elif settings.dispatch == "celery":
            from .contrib.celery import CeleryDispatcher

            self.dispatcher = CeleryDispatcher(
                self.courier,
                app,
                max_pending=settings.max_pending,
                shutdown_timeout=settings.shutdown_timeout,
            )
        else:
            self.dispatcher = ThreadDispatcher(
                self.courier,
                workers=settings.max_workers,
                max_pending=settings.max_pending,
                flush_interval=settings.flush_interval,
                shutdown_timeout=settings.shutdown_timeout,
                on_sweep=self._on_sweep,
            )
        self.deliveries: weakref.WeakValueDictionary[str, Delivery] = weakref.WeakValueDictionary()
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._recent_lock = threading.Lock()
        self._last_purge = 0.0
        self._warned: set[str] = set()
        #: Outcomes of delivery attempts made by this process, by status (for the CLI).
        self.outcomes: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"<NeuroonState shop={self.settings.shop_id!r} storage={self.storage!r}>"

    @property
    def app(self) -> Flask | None:
        return self._app()

    # --- reporting -------------------------------------------------------------------

    def signal(self, signal: Any, **kwargs: Any) -> None:
        app = self._app()
        if app is None or not signal.receivers:
            return
        try:
            signal.send(app, **kwargs)
        except Exception:
            logger.exception("flask-neuroon: a receiver of %s raised", signal.name)

    def storage_failed(self, operation: str, error: StorageError, then: str = "") -> None:
        """Log and signal a storage failure; ``then``: what happens instead, for the log."""
        logger.warning("flask-neuroon: %s failed: %s%s", operation, error, then and f"; {then}")
        self.signal(storage_failed, operation=operation, error=error)

    def report(self, order_id: str, status: str, result: SendResult | None) -> None:
        """Called after every delivery attempt, in the thread that made it."""
        reason = result.message if result is not None else None
        with self._recent_lock:
            self.outcomes[status] += 1
            if status == "failed":  # not in the outbox, not delivered: let a retry through
                self._recent.pop(order_id, None)
        delivery = self.deliveries.get(order_id)
        if delivery is not None:
            delivery._update(status, None if status in ("sent", "duplicate") else reason)
        if status in ("sent", "duplicate"):
            logger.debug("flask-neuroon: order %s delivered (%s)", order_id, status)
            self.signal(conversion_sent, order_id=order_id, status=status)
        elif status in ("retrying", "dead", "failed"):
            will_retry = status == "retrying"
            log = logger.warning if will_retry else logger.error
            log(
                "flask-neuroon: order %s not delivered (%s)%s: %s",
                order_id,
                status,
                ", will retry" if will_retry else "",
                reason or "no answer recorded",
            )
            self.signal(
                conversion_failed,
                order_id=order_id,
                status=status,
                reason=reason,
                will_retry=will_retry,
            )

    def follow_row(self, order_id: str, delivery: Delivery) -> None:
        """Report this process's attempts on ``delivery``, and let its wait() read the
        outbox row, which another process (worker, cron, Celery) may be the one to send."""
        self.deliveries[order_id] = delivery
        delivery._look = functools.partial(self.stored_outcome, order_id)

    def stored_outcome(self, order_id: str, wait: float) -> tuple[str, str | None] | None:
        """("sent", None) or ("dead", its last error) when the outbox row says so; None
        otherwise, or when storage cannot tell within ``wait`` seconds. Never raises."""
        try:
            row = self.guard.call(
                self.storage.get, order_id, wait=max(wait, _MIN_LOOK_WAIT), rest=False
            )
        except StorageError:
            return None
        except Exception:  # a storage backend of the shop's own: wait() must not raise
            logger.exception("flask-neuroon: reading the outbox row of order %s failed", order_id)
            return None
        if row is None or row.state not in (SENT, DEAD):
            return None
        return (SENT, None) if row.state == SENT else (DEAD, row.last_error)

    def _on_sweep(self) -> None:
        self.purge_expired_snapshots()

    def purge_expired_snapshots(self) -> None:
        """At most once an hour: delete snapshots whose TTL ran out."""
        now = time.time()
        if now - self._last_purge >= _PURGE_EVERY:
            self._last_purge = now
            try:  # bounded: the sweeper and `flush --loop` must go on against a hung server
                self.guard.call(self.storage.purge_snapshots, now, wait=_PURGE_WAIT)
            except StorageError as exc:
                self.storage_failed("purging snapshots", exc)

    # --- once-only without an outbox ---------------------------------------------------

    def first_time(self, order_id: str) -> bool:
        """Remember ``order_id``; False if it was seen recently in this process."""
        with self._recent_lock:
            if order_id in self._recent:
                return False
            self._recent[order_id] = None
            if len(self._recent) > _RECENT_LIMIT:
                self._recent.popitem(last=False)
            return True

    def warn_once(self, topic: str, message: str, *args: Any) -> None:
        """Log a configuration warning once per app and process."""
        if topic not in self._warned:
            self._warned.add(topic)
            logger.warning(message, *args)

    # --- starting each process's senders ------------------------------------------------

    def install_starter(self) -> None:
        """Start this worker process's sender threads and sweeper with its first request:
        after any fork, never at import. The hook takes itself out once they run, so the
        shop's other requests pay nothing for it; a fork puts it back in the child."""
        settings, app = self.settings, self._app()
        if app is None or not (settings.active and settings.dispatch == "thread"):
            return
        if not settings.flush_interval:
            return  # the senders start with the first conversion; nothing sweeps
        hooks = app.before_request_funcs.setdefault(None, [])
        if self._start_senders not in hooks:
            hooks.append(self._start_senders)

    def _start_senders(self) -> None:
        self.dispatcher.start()  # never raises (see ThreadDispatcher)
        app = self._app()
        if app is not None and self.dispatcher.running():
            # A new list, not a change to the one Flask may be iterating right now.
            hooks = app.before_request_funcs.get(None, [])
            app.before_request_funcs[None] = [hook for hook in hooks if hook != self._start_senders]

    def _after_fork(self) -> None:
        self._recent_lock = threading.Lock()
        self.install_starter()


def _check_signature(function: Any, name: str, expected: str, arguments: int = 0) -> None:
    """Raise TypeError now if ``function`` cannot be called with ``arguments`` positional
    arguments (when Python can tell: some builtins have no signature to inspect)."""
    if not callable(function):
        raise TypeError(f"{name} must be callable: {expected}")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*([None] * arguments))
    except TypeError as exc:
        raise TypeError(f"{name} must be {expected}; {function!r} cannot be: {exc}") from None


_cv_request: Any
try:  # Flask 2.3 to 3.1 keep the request context here
    from flask.globals import _cv_request
except ImportError:  # pragma: no cover - a Flask that keeps it elsewhere
    _cv_request = None


def _current_request() -> tuple[Flask, Any] | None:
    """(app, WSGI environ) of the request being handled, or None outside one.

    Read straight from Flask's context variable where it has one: the ``current_app``
    and ``request`` proxies cost several times as much, on every page that reads the
    clicks. Anything unexpected there and it asks the proxies instead.
    """
    if _cv_request is not None:
        context = _cv_request.get(None)
        if context is None:
            return None
        app = getattr(context, "app", None)
        wsgi_request = getattr(context, "request", None)
        if app is not None and wsgi_request is not None:
            return app, wsgi_request.environ
    if not has_request_context():
        return None
    return current_app._get_current_object(), request.environ  # type: ignore[attr-defined]


def _discard(delivery: Delivery) -> None:
    """The shop's transaction rolled back: nothing is sent."""
    delivery._update("discarded", "the shop's transaction rolled back")


def _safe_order_id(order: Any) -> str | None:
    try:
        return order_id_of(order)
    except Exception:  # noqa: BLE001 - only for a log line
        return None


class Neuroon:
    """Server-side conversion tracking for the Neuroon search widget.

    ``Neuroon(app)`` or ``neuroon = Neuroon(); neuroon.init_app(app)``. See the README for
    the configuration keys.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        order_adapters: list[OrderAdapter] | None = None,
        engine: Engine | Callable[[], Engine] | None = None,
        storage: Storage | None = None,
    ):
        self._adapters: list[OrderAdapter] = list(order_adapters or ())
        if app is not None:
            self.init_app(app, engine=engine, storage=storage)

    def __repr__(self) -> str:
        return f"<Neuroon adapters={len(self._adapters)}>"

    def init_app(
        self,
        app: Flask,
        *,
        engine: Engine | Callable[[], Engine] | None = None,
        storage: Storage | None = None,
    ) -> None:
        """Validate ``NEUROON_*`` config, install the middleware, keep state on the app.

        ``engine``: a SQLAlchemy engine (or a function returning one, called inside an app
        context, e.g. ``lambda: db.engine``) to keep snapshots and outbox in the shop's own
        database instead of ``NEUROON_STORAGE_URI``. ``storage``: a backend object of your
        own (a :class:`~flask_neuroon.storage.Storage`).

        Raises :class:`~flask_neuroon.ConfigurationError` for a malformed value; a missing
        shop id, API key or Origin disables tracking with one warning instead.
        """
        if "neuroon" in app.extensions:
            raise RuntimeError(
                "A 'Neuroon' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        settings = Settings.from_config(app.config)
        if storage is None and engine is not None:
            from .storage.sqlalchemy import SQLAlchemyStorage

            if callable(engine) and not hasattr(engine, "connect"):
                with app.app_context():
                    engine = engine()
            storage = SQLAlchemyStorage(engine, create_tables=settings.create_tables)  # type: ignore[arg-type]
        if storage is None:
            storage = storage_from_uri(
                settings.storage_uri,
                instance_path=app.instance_path,
                create_tables=settings.create_tables,
            )
        state = _State(app, settings, self._adapters, storage)
        _fork.register(state)
        app.extensions["neuroon"] = state
        app.wsgi_app = ClickMapMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, cookie_name=settings.cookie_name
        )
        if settings.enabled and settings.disabled_reason:
            logger.warning("flask-neuroon (%s): %s", app.name, settings.disabled_reason)
        state.install_starter()

    # --- state -----------------------------------------------------------------------

    @staticmethod
    def _state() -> _State:
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return cast(_State, app.extensions["neuroon"])
        except KeyError:
            raise RuntimeError(
                "flask-neuroon is not initialised on the current app: call"
                " neuroon.init_app(app) in your app factory."
            ) from None

    def order_adapter(self, adapter: OrderAdapter) -> OrderAdapter:
        """Register a function ``(obj) -> Order | None`` for order models of your own.

        Usable as a decorator. Adapters run before the built-in spellings, in order.
        """
        self._adapters.append(adapter)
        return adapter

    # --- clicks ----------------------------------------------------------------------

    @property
    def clicks(self) -> Mapping[str, str]:
        """This request's click map ``{productId: searchLogId}``; empty outside a request."""
        found = _current_request()
        if found is None:
            return _EMPTY
        app, environ = found
        state = app.extensions.get("neuroon")
        if state is None:
            return _EMPTY
        return clicks_from_environ(environ, cookie_name=state.settings.cookie_name)

    def persist_before_gateway(self, order_id: Any) -> int:
        """Snapshot this request's click map for ``order_id``; return the entries kept.

        Where depends on ``NEUROON_SNAPSHOTS``: in storage, in a signed mirror cookie set on
        this response, or both. 0 when there is nothing to keep, tracking is off or every
        place failed (logged).
        """
        state = self._state()
        settings = state.settings
        if not settings.active:
            return 0
        key = order_id_of({"id": order_id})
        clicks = dict(self.clicks)
        if key is None or not clicks:
            return 0
        kept = False
        if settings.snapshots_in_storage:
            try:
                state.guard.call(
                    state.storage.put_snapshot, key, clicks, time.time() + settings.snapshot_ttl
                )
                kept = True
            except StorageError as exc:
                state.storage_failed(f"saving the clicks of order {key}", exc)
        if settings.snapshots_in_cookie and state.mirror is not None:
            kept = self._set_mirror(state, key, clicks) or kept
        if not kept:
            return 0
        state.signal(clicks_persisted, order_id=key, count=len(clicks))
        return len(clicks)

    @staticmethod
    def _set_mirror(state: _State, order_id: str, clicks: dict[str, str]) -> bool:
        assert state.mirror is not None
        if not has_request_context():
            return False
        if not request.is_secure and not is_loopback_host(
            request.host.rsplit(":", 1)[0].strip("[]")
        ):
            state.warn_once(
                "insecure-mirror",
                "flask-neuroon: the mirror cookie is Secure, but this request came over plain"
                " http to %s: browsers drop it, so only storage snapshots can attribute"
                " gateway returns. Serve https (behind a TLS proxy, wrap the app in werkzeug's"
                " ProxyFix so Flask sees https).",
                request.host,
            )
        value = state.mirror.dumps(order_id, clicks)
        if value is None:
            logger.warning("flask-neuroon: clicks of order %s do not fit a mirror cookie", order_id)
            return False
        name, max_age = state.mirror.cookie_name, int(state.settings.snapshot_ttl)

        @after_this_request
        def set_mirror_cookie(response: Response) -> Response:
            response.set_cookie(
                name,
                value,
                max_age=max_age,
                path="/",
                secure=True,
                httponly=True,
                samesite="None",
            )
            return response

        return True

    def clicks_for(self, order_id: Any) -> dict[str, str]:
        """The clicks to attribute ``order_id`` with: its snapshot (storage, else the
        signed mirror cookie), overlaid with this request's cookie (the cookie wins). The
        stored snapshot is deleted as it is read."""
        state = self._state()
        key = order_id_of({"id": order_id})
        return self._gather_clicks(state, key, consume=True)

    def _gather_clicks(
        self, state: _State, key: str | None, *, consume: bool, connection: Any = None
    ) -> dict[str, str]:
        cookie = dict(self.clicks)
        settings = state.settings
        if key is None or not settings.active:
            return cookie
        snapshot: dict[str, str] | None = None
        if settings.snapshots_in_storage:
            try:
                if not consume:
                    snapshot = state.guard.call(state.storage.peek_snapshot, key, time.time())
                elif connection is None:
                    snapshot = state.guard.call(state.storage.take_snapshot, key, time.time())
                else:  # inside the shop's transaction: a rollback keeps it
                    snapshot = state.storage.take_snapshot(  # type: ignore[call-arg]
                        key, time.time(), connection=connection
                    )
            except StorageError as exc:
                state.storage_failed(f"reading the clicks of order {key}", exc)
        mirror: dict[str, str] = {}
        if settings.snapshots_in_cookie and state.mirror is not None and has_request_context():
            value = request.cookies.get(state.mirror.cookie_name)
            if value:
                mirror = state.mirror.loads(value, key, settings.snapshot_ttl)
        return {**mirror, **(snapshot or {}), **cookie}

    # --- payload and delivery ----------------------------------------------------------

    def build_payload(self, order: Any, clicks: Mapping[str, str]) -> dict[str, Any]:
        """The wire contract's body for ``order`` (pure). Raises InvalidOrder."""
        return build_payload(adapt_order(order, self._adapters), clicks)

    def track_conversion(
        self, order: Any, clicks: Mapping[str, str] | None = None, *, connection: Any = None
    ) -> Delivery:
        """Queue ``order`` for delivery and return at once; never raises for tracking.

        ``clicks`` defaults to the order's snapshot (storage or mirror cookie) overlaid with
        this request's cookie; the snapshot is deleted once the order is queued, so that a
        webhook and the shopper's return racing each other both see it.

        ``connection``: the shop's SQLAlchemy ``Session`` or ``Connection`` whose transaction
        confirms the order (transactional outbox). The outbox row is written inside that
        transaction, so it exists if and only if the shop commits; it is sent after the
        commit and never after a rollback. Needs SQLAlchemy storage on the same database.
        """
        state = self._state()
        try:
            return self._track(state, order, clicks, connection)
        except Exception as exc:  # a bug of ours must not become the checkout's 500
            order_id = _safe_order_id(order)
            logger.exception("flask-neuroon: tracking order %s failed unexpectedly", order_id)
            return Delivery(order_id, "invalid", f"{type(exc).__name__} while tracking")

    def _track(
        self, state: _State, order: Any, clicks: Mapping[str, str] | None, connection: Any
    ) -> Delivery:
        settings = state.settings
        if not settings.active:
            return Delivery(order_id_of(order), "disabled", settings.disabled_reason)
        try:
            adapted = adapt_order(order, state.adapters)
        except Exception as exc:  # a shop's adapter failed: their bug, not the checkout's
            logger.exception("flask-neuroon: adapting order %s failed", order_id_of(order))
            return Delivery(order_id_of(order), "invalid", str(exc))
        order_id = order_id_of(adapted)
        if order_id is not None and state.outbox is not None:
            try:
                if state.guard.call(state.storage.get, order_id) is not None:
                    self._forget_snapshot(state, order_id)
                    return Delivery(order_id, "duplicate")
            except StorageError as exc:
                state.storage_failed(f"looking up order {order_id}", exc)
        transaction = self._transaction(state, connection) if connection is not None else None
        if clicks is not None and not isinstance(clicks, Mapping):
            logger.error(
                "flask-neuroon: clicks= for order %s is a %s, not a mapping; using the cookie"
                " and snapshot instead",
                order_id,
                type(clicks).__name__,
            )
            clicks = None
        explicit = clicks is not None
        try:
            if clicks is None:
                clicks = self._gather_clicks(state, order_id, consume=False)
            payload = build_payload(adapted, clicks)
        except InvalidOrder as exc:
            logger.error(
                "flask-neuroon: order %s not tracked: %s",
                exc.order_id or order_id or shown(getattr(adapted, "id", None)),
                exc,
            )
            return Delivery(order_id, "invalid", str(exc))
        order_id = payload["orderId"]
        if clicks and not payload["conversions"]:
            self._report_mismatch(state, adapted, clicks, order_id)
        if not payload["conversions"] and not settings.send_unattributed:
            return Delivery(order_id, "skipped")
        if transaction is not None:
            return self._enqueue_in(state, order_id, payload, transaction, forget=not explicit)
        delivery = self._enqueue(state, order_id, payload)
        if not explicit:
            # Queued (or already there): the snapshot has done its job.
            self._forget_snapshot(state, order_id)
        return delivery

    @staticmethod
    def _forget_snapshot(state: _State, order_id: str, connection: Any = None) -> None:
        if not state.settings.snapshots_in_storage:
            return
        try:
            if connection is None:
                state.guard.call(state.storage.delete_snapshot, order_id)
            else:
                state.storage.delete_snapshot(order_id, connection=connection)  # type: ignore[call-arg]
        except StorageError as exc:
            state.storage_failed(f"deleting the clicks of order {order_id}", exc)

    @staticmethod
    def _report_mismatch(
        state: _State, order: Order, clicks: Mapping[str, str], order_id: str
    ) -> None:
        """The shopper clicked products, yet no line matched: say why it may be. A
        diagnosis that fails is logged and never costs the order."""
        try:
            explanation = explain_mismatch(order, clicks)
        except Exception:
            logger.exception("flask-neuroon: order %s: explaining the mismatch failed", order_id)
            return
        if explanation is None:
            return
        log = logger.warning if explanation.likely_misconfiguration else logger.info
        log("flask-neuroon: order %s: %s", order_id, explanation.message)
        state.signal(
            attribution_mismatch,
            order_id=order_id,
            click_ids=explanation.click_ids,
            line_ids=explanation.line_ids,
            cause=explanation.cause,
        )

    @staticmethod
    def _transaction(state: _State, connection: Any) -> Any:
        """(Connection or None, watch, after_commit) of the shop's transaction, or None
        when ``connection`` is none of SQLAlchemy's (logged). The Connection is None when
        the outbox is not in that database: the row then cannot be written inside the
        shop's transaction, and is queued once it commits instead."""
        from .storage.sqlalchemy import SQLAlchemyStorage, in_transaction, same_database

        try:
            shop_connection, watch, after_commit = in_transaction(connection)
        except Exception:
            logger.exception("flask-neuroon: cannot use the given connection; tracking without it")
            return None
        storage = state.storage
        if state.outbox is None or not isinstance(storage, SQLAlchemyStorage):
            logger.error(
                "flask-neuroon: connection= needs the outbox on SQLAlchemy storage in the same"
                " database (NEUROON_STORAGE_URI or init_app(engine=...)); queueing the order"
                " after your commit instead"
            )
            return None, watch, after_commit
        if not same_database(shop_connection.engine, storage.engine):
            logger.error(
                "flask-neuroon: connection= is a connection to %s, the outbox is in %s:"
                " queueing the order after your commit instead (init_app(engine=...) keeps"
                " the outbox in your database)",
                display_uri(shop_connection.engine.url.render_as_string(hide_password=True)),
                storage.display_uri,
            )
            return None, watch, after_commit
        return shop_connection, watch, after_commit

    def _enqueue_in(
        self,
        state: _State,
        order_id: str,
        payload: dict[str, Any],
        transaction: Any,
        *,
        forget: bool,
    ) -> Delivery:
        """Queue ``payload`` in the shop's transaction (``forget``: and delete the order's
        snapshot there too), or, when that cannot be, once the transaction commits."""
        connection, watch, after_commit = transaction
        delivery = Delivery(order_id)
        if connection is not None:
            try:
                added = state.storage.add(  # type: ignore[call-arg]
                    order_id, dumps_payload(payload), time.time(), connection=connection
                )
            except StorageError as exc:
                # A savepoint undid just our statement: the shop's transaction goes on.
                state.storage_failed(
                    f"queueing order {order_id} in the shop's transaction",
                    exc,
                    "it is queued after the shop's commit instead",
                )
            else:
                if not added:
                    return Delivery(order_id, "duplicate")
                if forget:
                    self._forget_snapshot(state, order_id, connection)
                state.follow_row(order_id, delivery)

                def committed() -> None:
                    state.signal(conversion_queued, order_id=order_id, payload=payload)
                    state.dispatcher.submit_id(order_id, wait_for_row=0.0 if after_commit else 2.0)

                watch(committed, functools.partial(_discard, delivery))
                return delivery

        def queue_after_commit() -> None:
            try:
                self._enqueue(state, order_id, payload, delivery)
                if forget and delivery.status != "duplicate":
                    self._forget_snapshot(state, order_id)
            except Exception:  # never into the shop's commit
                logger.exception("flask-neuroon: queueing order %s after the commit", order_id)

        watch(queue_after_commit, functools.partial(_discard, delivery))
        return delivery

    def _enqueue(
        self,
        state: _State,
        order_id: str,
        payload: dict[str, Any],
        delivery: Delivery | None = None,
    ) -> Delivery:
        """Queue ``payload`` (or send it, see below); ``delivery``: the handle to report on."""
        body = dumps_payload(payload)
        if delivery is None:
            delivery = Delivery(order_id)
        if state.outbox is not None:
            try:
                added = state.guard.call(state.outbox.add, order_id, body)
            except StorageError as exc:
                state.storage_failed(
                    f"queueing order {order_id}",
                    exc,
                    "a sender thread queues it again, or sends it directly if it cannot",
                )
            else:
                if not added:
                    delivery._update("duplicate")
                    return delivery
                state.signal(conversion_queued, order_id=order_id, payload=payload)
                state.follow_row(order_id, delivery)
                state.dispatcher.submit_id(order_id)  # full queue: the row waits in the outbox
                return delivery
        if not state.first_time(order_id):
            delivery._update("duplicate")
            return delivery
        state.signal(conversion_queued, order_id=order_id, payload=payload)
        state.deliveries[order_id] = delivery
        if not state.dispatcher.submit_direct(order_id, body):
            logger.error("flask-neuroon: order %s dropped: the send queue is full", order_id)
            delivery._update("dropped", "the in-memory send queue is full")
        return delivery

    def confirm(self, order: Any, clicks: Mapping[str, str] | None = None) -> None:
        """From inside a view: track ``order`` once this request's response turns out not
        to be an error (below 400). For views that know the order and whether it was
        paid, where :meth:`on_order_confirmed` would have to load it again."""

        @after_this_request
        def track_after_response(response: Response) -> Response:
            if response.status_code < 400:
                try:
                    self.track_conversion(order, clicks)
                except Exception:
                    logger.exception("flask-neuroon: tracking the confirmed order failed")
            return response

    def flush(self, timeout: float = 10.0) -> int:
        """Wait up to ``timeout`` seconds for queued and due sends.

        Returns how many conversions are still pending: in flight, or waiting in the outbox
        for a retry time (it does not wait for those). 0 means all were delivered or dead.
        """
        state = self._state()
        if not state.settings.active:
            return 0
        return state.dispatcher.flush(timeout)

    def shutdown(self, timeout: float = 0.0) -> None:
        """Stop this app's sender threads (after up to ``timeout`` seconds of flushing) and
        close its storage connections in this process. Pending rows stay in the outbox.
        Called at interpreter exit anyway; use it in tests and embedded servers."""
        state = self._state()
        state.dispatcher.close(timeout)
        state.storage.close()

    # --- decorators ------------------------------------------------------------------

    @staticmethod
    def _resolve_order_id(
        source: OrderIdSource, view_kwargs: Mapping[str, Any]
    ) -> tuple[Any, str | None]:
        """(the order id, None) or, when there is none in this request, (None, why)."""
        if not callable(source):
            if source in view_kwargs:
                return view_kwargs[source], None
            key = request.values.get(source)
            return (
                key,
                None if key is not None else f"no view argument, form or query field {source!r}",
            )
        try:
            key = source()
        except LookupError as exc:  # request.values["order"] without one
            looked_up = f" for {shown(exc.args[0])}" if exc.args else ""
            return None, f"{source!r} raised {type(exc).__name__}{looked_up}"
        return key, None if key is not None else f"{source!r} returned None"

    @staticmethod
    def _after_success(
        action: Callable[[Any], object], order_id: OrderIdSource, failure: str
    ) -> Callable[[F], F]:
        """Wrap a view: after it answers below 400, run ``action(order id)``; never raise."""
        if callable(order_id):
            _check_signature(order_id, "order_id", "order_id() -> the order id, no arguments")

        def decorator(view: F) -> F:
            @functools.wraps(view)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                response = current_app.make_response(
                    cast(ResponseReturnValue, current_app.ensure_sync(view)(*args, **kwargs))
                )
                if response.status_code < 400:
                    try:
                        key, missing = Neuroon._resolve_order_id(order_id, kwargs)
                        if key is None:
                            logger.warning(
                                "flask-neuroon: %s: no order id in this request (%s)",
                                failure,
                                missing,
                            )
                        else:
                            action(key)
                    except Exception:
                        logger.exception("flask-neuroon: %s failed", failure)
                return response

            return cast(F, wrapper)

        return decorator

    def before_gateway(self, order_id: OrderIdSource = "order_id") -> Callable[[F], F]:
        """Snapshot the clicks after the view answers without error (a redirect, a page).

        ``order_id`` is the name of a view argument (or, failing that, a form or query
        field), or a callable with no arguments that returns the id.
        """
        return self._after_success(
            self.persist_before_gateway, order_id, "persisting clicks before the gateway"
        )

    def on_order_confirmed(
        self, load_order: Callable[[Any], Any], order_id: OrderIdSource = "order_id"
    ) -> Callable[[F], F]:
        """Track the order after the view answers without error.

        ``load_order(order_id)`` returns the shop's order (or None: nothing to track).
        A callable that cannot take that one argument is refused here, when the view is
        decorated, rather than failing, logged, at every confirmation.
        """
        _check_signature(load_order, "load_order", "load_order(order_id) -> the order or None", 1)

        def track(key: Any) -> None:
            order = load_order(key)
            if order is None:
                logger.warning("flask-neuroon: no order %r to track", key)
            else:
                self.track_conversion(order)

        return self._after_success(track, order_id, "tracking the confirmed order")


__all__ = ["Neuroon"]
