"""Bounded waits for a shop's request on storage that is down, locked or hung.

A driver's own timeouts do not cover every way a server can hang: psycopg has no read
timeout, PyMySQL waits for a greeting that never comes, a frozen proxy keeps a TCP
connection open and silent. A checkout must never wait on any of that, so
:class:`RequestGuard` runs a storage call of a request thread in one of a few worker
threads of its own and waits for it at most ``timeout`` seconds. After a failure, request
threads stop trying storage for a while and get a
:class:`~flask_neuroon.errors.StorageError` at once, so that a checkout making several
storage calls pays for one failure, not one each, and the shop's pages do not pay for
every call of every request for as long as an outage lasts: ``cooldown`` seconds after
a slow failure (a timeout, a SQLite file locked by another program), ``short_cooldown``
after a quick one (connection refused). The extension then falls back as for any storage
failure (a sender thread queues the conversion, else sends it directly).

A call that was abandoned may still finish later, or not at all; one still queued when
its caller gave up is never run. Every operation it guards is one the outbox tolerates
running late (a row added twice is refused by its primary key; a late snapshot expires).

Calls from flask-neuroon's own background threads are not guarded (they may wait)
unless they ask for a bound (``wait``); they are made even while request
threads rest. Backends that cannot hang this way (``offload=False``: SQLite, memory) run
in the calling thread, bounded by their own timeouts, but rest the same way. The worker
threads are daemons, started lazily in the process that uses them, and never survive a
fork.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import StorageError
from .base import in_background_thread

T = TypeVar("T")

#: Threads of the guard run request calls: named so that backends give them the short
#: waits of a request thread (not the ``neuroon-`` prefix of background threads).
THREAD_PREFIX = "flask-neuroon-storage-"
_WORKERS = 4


class _Call:
    __slots__ = ("args", "deadline", "done", "error", "function", "result")

    def __init__(self, function: Callable[..., Any], args: tuple[Any, ...], deadline: float):
        self.function = function
        self.args = args
        self.deadline = deadline
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None


class RequestGuard:
    def __init__(
        self,
        name: str,
        *,
        timeout: float = 2.0,
        cooldown: float = 10.0,
        short_cooldown: float = 1.0,
        offload: bool = True,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.cooldown = cooldown
        self.short_cooldown = short_cooldown
        self.offload = offload
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._resting_until = 0.0
        self._last_failure = ""

    def _after_fork(self) -> None:
        self._init_process_state()

    def call(
        self, function: Callable[..., T], *args: Any, wait: float | None = None, rest: bool = True
    ) -> T:
        """``function(*args)``, waited for at most ``wait`` seconds (on a request thread,
        by default, ``timeout``).

        In flask-neuroon's own threads the call runs as it is unless ``wait`` bounds it too
        (a sender that must not wait forever for a hung server, a bounded flush). Those
        calls are made even while request threads rest, and their failures make request
        threads rest too. ``rest=False``: a failure of this call does not (a look with a
        wait far shorter than a checkout's, by Delivery.wait()).
        """
        background = in_background_thread()
        if background and wait is None:
            return function(*args)
        now = time.monotonic()
        if not background and now < self._resting_until:
            raise StorageError(
                f"{self.name} failed a moment ago ({self._last_failure}); not trying it"
                f" again on a request for {self._resting_until - now:.1f} s"
            )
        timeout = self.timeout if wait is None else wait
        started = now
        try:
            if self.offload:
                return self._offloaded(function, args, timeout)
            return function(*args)
        except StorageError as exc:
            # A slow failure (a timeout, a lock) would be as slow next time: rest long. A
            # quick one (connection refused) is cheap once, but a checkout makes several
            # storage calls, on every request, for as long as the outage lasts: rest briefly.
            if rest:
                slow = time.monotonic() - started >= self.timeout / 2
                self._rest(self.cooldown if slow else self.short_cooldown, exc)
            raise

    def _offloaded(self, function: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
        if self._pid != os.getpid():
            self._after_fork()
        if not self._start():
            return function(*args)  # no thread to be had (a process limit): wait ourselves
        call = _Call(function, args, time.monotonic() + timeout)
        self._calls.put(call)
        if not call.done.wait(timeout):
            raise StorageError(f"{self.name} did not answer within {timeout:.1f} s")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[no-any-return]

    def _rest(self, seconds: float, failure: StorageError) -> None:
        self._last_failure = str(failure)[:200]
        self._resting_until = max(self._resting_until, time.monotonic() + seconds)

    def _start(self) -> bool:
        """Start the worker threads; False when there is none to run a call."""
        if len(self._threads) >= _WORKERS:
            return True
        with self._lock:
            while len(self._threads) < _WORKERS:
                thread = threading.Thread(
                    target=self._work, name=f"{THREAD_PREFIX}{len(self._threads)}", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # "can't start new thread"
                    break
                self._threads.append(thread)
        return bool(self._threads)

    def _work(self) -> None:
        while True:
            call = self._calls.get()
            if time.monotonic() >= call.deadline:
                continue  # its caller gave up: never run it late
            try:
                call.result = call.function(*call.args)
            except Exception as exc:  # noqa: BLE001 - handed to the caller, who raises it
                call.error = exc
            finally:
                call.done.set()


__all__ = ["RequestGuard"]
