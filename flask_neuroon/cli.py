"""``flask neuroon …``: look after the outbox from a shell or cron.

Installed as a ``flask.commands`` entry point, so every Flask app that calls
``neuroon.init_app`` gets it. The API key is never printed.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import click
from flask import current_app
from flask.cli import with_appcontext

from ._stopping import StopRequest
from .config import is_loopback_host
from .diagnostics import explain_api_answer
from .dispatch import Dispatcher, ThreadDispatcher
from .errors import StorageError
from .storage.base import DEAD, OutboxRow


def _state() -> Any:
    state = current_app.extensions.get("neuroon")
    if state is None:
        raise click.ClickException(
            "flask-neuroon is not initialised on this app: call neuroon.init_app(app)."
        )
    return state


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(seconds, 0.0)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


@click.group("neuroon", help="Neuroon conversion tracking: the outbox and the configuration.")
def neuroon_cli() -> None:
    pass


def _flusher(state: Any) -> Dispatcher:
    """Send from this process: the app's own dispatcher, or a pool of ours under Celery."""
    dispatcher = cast(Dispatcher, state.dispatcher)
    if dispatcher.sends_here:
        return dispatcher
    return ThreadDispatcher(
        state.courier,
        workers=state.settings.max_workers,
        max_pending=state.settings.max_pending,
        flush_interval=0,
        shutdown_timeout=0,
    )


T = TypeVar("T")

#: The longest a command waits for one storage call: a server that accepts connections and
#: never answers must not hold a cron job for the driver's read timeouts, over and over.
STORAGE_WAIT = 10.0
#: ... and for one purge, which may delete many rows.
PURGE_WAIT = 300.0


def _ask(state: Any, function: Callable[..., T], *args: Any, wait: float | None = None) -> T:
    """``function(*args)`` on storage, waited for at most ``wait`` seconds (by default
    STORAGE_WAIT; StorageError after that, or at once after a failure a moment ago)."""
    return cast(T, state.guard.call(function, *args, wait=STORAGE_WAIT if wait is None else wait))


def _flush_once(state: Any, flusher: Dispatcher, timeout: float) -> str:
    """Flush and say what happened. Raises StorageError when the outbox cannot be read,
    before or after: a flush that could not look must not report "nothing was due"."""
    _ask(state, state.outbox.stats, wait=min(timeout, STORAGE_WAIT))
    before = dict(state.outcomes)
    flusher.flush(timeout)
    left = _ask(state, state.outbox.stats, wait=min(timeout, STORAGE_WAIT)).pending
    done = {key: state.outcomes[key] - before.get(key, 0) for key in state.outcomes}
    summary = ", ".join(f"{count} {status}" for status, count in sorted(done.items()) if count)
    return f"flushed: {summary or 'nothing was due'}; still pending: {left}"


class _Number(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """A finite number above ``minimum`` (or at it, when ``inclusive``): never NaN, never
    an infinity, never a negative time."""

    name = "number"

    def __init__(self, minimum: float, *, inclusive: bool) -> None:
        self.minimum = minimum
        self.inclusive = inclusive

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        low = number < self.minimum or (number == self.minimum and not self.inclusive)
        if not math.isfinite(number) or low:
            bound = ">=" if self.inclusive else ">"
            self.fail(f"{value!r}: must be a finite number {bound} {self.minimum:g}", param, ctx)
        return number


_POSITIVE = _Number(0, inclusive=False)


@neuroon_cli.command("flush", help="Send every conversion that is due now (for cron).")
@click.option(
    "--timeout",
    type=_POSITIVE,
    default=60.0,
    show_default=True,
    help="Give up after this many seconds.",
)
@click.option(
    "--all",
    "send_all",
    is_flag=True,
    help="Also send rows still waiting for their retry time (after an outage).",
)
@click.option("--loop", is_flag=True, help="Keep flushing until stopped (SIGTERM, Ctrl-C).")
@click.option(
    "--interval",
    type=_POSITIVE,
    default=10.0,
    show_default=True,
    help="With --loop: seconds between rounds.",
)
@with_appcontext
def flush_command(timeout: float, send_all: bool, loop: bool, interval: float) -> None:
    state = _state()
    if not state.settings.active:
        raise click.ClickException(
            f"tracking is off: {state.settings.disabled_reason or 'NEUROON_ENABLED is false'}"
        )
    if state.outbox is None:
        click.echo("NEUROON_OUTBOX is off: there is no outbox to flush.")
        return
    flusher = _flusher(state)
    with _storage_errors():
        if send_all:
            _ask(state, state.storage.make_due, time.time())
        if not loop:
            click.echo(_flush_once(state, flusher, timeout))
            return
    click.echo(f"flushing every {interval:g} s until stopped")
    with StopRequest().on(signal.SIGTERM, signal.SIGINT) as stop:
        while not stop.requested:
            try:
                line = _flush_once(state, flusher, min(timeout, max(interval, 1.0)))
                if "nothing was due" not in line:
                    click.echo(line)
                state.purge_expired_snapshots()
            except StorageError as exc:
                click.echo(f"storage unavailable, trying again: {exc}", err=True)
            # Jitter: several flushers on several hosts do not run in step.
            stop.wait(interval * random.uniform(0.8, 1.2))
        flusher.close(state.settings.shutdown_timeout)
    click.echo("stopped")


@contextlib.contextmanager
def _storage_errors() -> Iterator[None]:
    """A storage failure is one clear line and exit status 1 (cron's monitoring sees it)."""
    try:
        yield
    except StorageError as exc:
        raise click.ClickException(f"storage unavailable: {exc}") from None


def _show(row: OutboxRow) -> str:
    return (
        f"  {row.order_id}  attempts={row.attempts}  created={_when(row.created_at)}\n"
        f"      last error: {row.last_error or '-'}"
    )


@neuroon_cli.command("outbox", help="Counts by state, the oldest pending age, the dead letters.")
@click.option("--limit", default=20, show_default=True, help="Dead letters to list.")
@with_appcontext
def outbox_command(limit: int) -> None:
    state = _state()
    with _storage_errors():
        _show_outbox(state, limit)


def _show_outbox(state: Any, limit: int) -> None:
    stats = _ask(state, state.outbox.stats) if state.outbox else None
    if stats is None:
        click.echo("NEUROON_OUTBOX is off.")
        return
    click.echo(f"storage: {state.storage.display_uri}")
    click.echo(
        f"pending: {stats.pending} (due now: {stats.due}, oldest: {_age(stats.oldest_pending_age)})"
    )
    click.echo(f"sent: {stats.sent}")
    click.echo(f"dead: {stats.dead}")
    dead = cast(list[OutboxRow], _ask(state, state.storage.rows, DEAD, limit))
    if dead:
        click.echo(
            "dead letters (retry with `flask neuroon retry ID`, drop with `flask neuroon drop ID`):"
        )
        for row in dead:
            click.echo(_show(row))
        if stats.dead > len(dead):
            click.echo(f"  ... and {stats.dead - len(dead)} more (--limit N to list them)")


@neuroon_cli.command("retry", help="Send a dead letter again, now (or every one: --all).")
@click.argument("order_id", required=False)
@click.option("--all", "every", is_flag=True, help="Every dead letter (after an outage or a fix).")
@click.option(
    "--timeout", type=_POSITIVE, default=300.0, show_default=True, help="With --all: give up after."
)
@with_appcontext
def retry_command(order_id: str | None, every: bool, timeout: float) -> None:
    state = _state()
    if state.outbox is None:
        raise click.ClickException("NEUROON_OUTBOX is off: there are no dead letters")
    if every == (order_id is not None):
        raise click.UsageError("give one ORDER_ID, or --all")
    with _storage_errors():
        if order_id is not None:
            if not _ask(state, state.storage.requeue, order_id, time.time()):
                raise click.ClickException(f"no dead letter {order_id!r} in the outbox")
            send_wait = STORAGE_WAIT + sum(state.settings.timeout)
            status = _ask(state, state.courier.deliver_id, order_id, wait=send_wait)
            row = _ask(state, state.storage.get, order_id)
            click.echo(f"{order_id}: {status or 'queued'}")
            if row is not None and row.last_error and status != "sent":
                click.echo(f"  last error: {row.last_error}")
            return
        requeued = 0
        while batch := _ask(state, state.storage.rows, DEAD, 500):
            now = time.time()
            requeued += sum(_ask(state, state.storage.requeue, row.order_id, now) for row in batch)
        click.echo(f"{requeued} dead letters queued again")
        click.echo(_flush_once(state, _flusher(state), timeout))


@neuroon_cli.command("drop", help="Delete a dead letter for good.")
@click.argument("order_id")
@with_appcontext
def drop_command(order_id: str) -> None:
    state = _state()
    with _storage_errors():
        dropped = state.outbox is not None and _ask(state, state.storage.delete, order_id, DEAD)
    if not dropped:
        raise click.ClickException(f"no dead letter {order_id!r} in the outbox")
    click.echo(f"{order_id}: dropped")


@neuroon_cli.command("purge", help="Delete expired click snapshots and old sent rows.")
@click.option(
    "--sent-older-than",
    "days",
    type=_Number(0, inclusive=True),
    default=30.0,
    show_default=True,
    help="Days to keep sent rows (their order ids guard against sending twice; 0: none).",
)
@with_appcontext
def purge_command(days: float) -> None:
    state = _state()
    now = time.time()
    with _storage_errors():
        snapshots = _ask(state, state.storage.purge_snapshots, now, wait=PURGE_WAIT)
        sent = _ask(state, state.storage.purge_sent, now - days * 86400, wait=PURGE_WAIT)
    click.echo(f"purged: {snapshots} expired snapshots, {sent} sent rows older than {days:g} days")


_KEY_SHAPE = re.compile(r"^sk_[A-Za-z0-9_]{32}$")  # the vendor's keys: sk_ + 32, 35 in all


@neuroon_cli.command(
    "check", help="Check the configuration, the storage, the outbox and (with --call-api) the API."
)
@click.option(
    "--call-api",
    is_flag=True,
    help="Also POST an empty probe to the API: a 400 proves the key and Origin are accepted.",
)
@with_appcontext
def check_command(call_api: bool) -> None:
    state = _state()
    settings = state.settings
    failures = 0

    def report(level: str, text: str) -> None:
        nonlocal failures
        failures += level == "FAIL"
        click.echo(f"  {level:<4} {text}")

    click.echo("configuration")
    report("ok", f"API URL {settings.api_url}")
    if not settings.enabled:
        report("WARN", "NEUROON_ENABLED is false: nothing is stored or sent")
    if settings.disabled_reason:
        report("FAIL", settings.disabled_reason)
    if settings.shop_id:
        shape = "ok" if settings.shop_id.startswith("shop_") else "WARN"
        report(
            shape,
            f"shop id {settings.shop_id}"
            + (
                ""
                if shape == "ok"
                else " (Neuroon shop ids start with shop_: copy it from the dashboard)"
            ),
        )
    if settings.api_key:
        if _KEY_SHAPE.match(settings.api_key.reveal()):
            report("ok", "API key set (sk_…, 35 characters)")
        else:
            report(
                "WARN",
                "API key set, but not shaped like a Neuroon key (sk_ and 35 "
                "characters in all): check you copied all of it",
            )
    if settings.origin:
        secure = settings.origin.startswith("https://") or is_loopback_host(
            urlsplit(settings.origin).hostname
        )
        report(
            "ok" if secure else "WARN",
            f"Origin {settings.origin}"
            + ("" if secure else " (plain http: the shop's registered URL is normally https)"),
        )
    report(
        "ok",
        f"click snapshots: {settings.snapshots}"
        + (" (signed mirror cookie)" if settings.snapshots_in_cookie else ""),
    )

    click.echo("storage")
    try:
        stats = _ask(state, state.storage.stats, time.time())
    except StorageError as exc:
        report("FAIL", f"{state.storage.display_uri} is not reachable: {exc}")
    else:
        report("ok", f"{state.storage.display_uri} reachable")
        if state.outbox is None:
            report("WARN", "NEUROON_OUTBOX is off: a failed send is not retried")
        else:
            age = stats.oldest_pending_age
            stale = age is not None and age > max(settings.retry_schedule) * 2
            report(
                "WARN" if stale else "ok",
                f"outbox: {stats.pending} pending (oldest {_age(age)}), {stats.sent} sent"
                + (
                    ": is anything flushing? (the sweeper, cron, --loop, Celery beat)"
                    if stale
                    else ""
                ),
            )
            if stats.dead:
                report("WARN", f"{stats.dead} dead letters: see `flask neuroon outbox`")

    if call_api:
        click.echo("API")
        if settings.disabled_reason:
            report("FAIL", "not called: the configuration is incomplete")
        else:
            result = state.client.send("{}")
            verdict = explain_api_answer(
                result.status_code,
                result.message,
                shop_id=settings.shop_id or "",
                origin=settings.origin or "",
            )
            report("ok" if verdict.ok else "FAIL", verdict.message)
    if failures:
        raise click.ClickException(f"{failures} problem(s) found")
    click.echo("no problems found")
