"""Bounded waits for a shop's request on storage that can hang (a database server, Redis).

A driver's own timeouts do not cover every way a server can hang: psycopg has no read
timeout, PyMySQL waits for a greeting that never comes, a frozen proxy keeps a TCP
connection open and silent. A checkout must never wait on any of that, so
:class:`RequestGuard` runs a storage call of a request thread in one of a few worker
threads of its own and waits for it at most ``timeout`` seconds; after a call that timed
out (or failed slowly) it stops waiting on storage at all for ``cooldown`` seconds,
raising :class:`~flask_neuroon.errors.StorageError` at once, so that a request making
several storage calls pays one timeout, not one each. The extension then falls back as
for any storage failure (the conversion is sent directly).

A call that was abandoned may still finish later, or not at all; one still queued when
its caller gave up is never run. Every operation it guards is one the outbox tolerates
running late (a row added twice is refused by its primary key; a late snapshot expires).

Calls from flask-neuroon's own background threads are not guarded (they may wait)
unless they ask for a bound (``background_wait``), nor are calls for backends that cannot
hang this way (``offload=False``: SQLite, memory).
The worker threads are daemons, started lazily in the process that uses them, and
never survive a fork.
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
        self, name: str, *, timeout: float = 2.0, cooldown: float = 10.0, offload: bool = True
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.cooldown = cooldown
        self.offload = offload
        self._init_process_state()

    def _init_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._calls: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._resting_until = 0.0

    def _after_fork(self) -> None:
        self._init_process_state()

    def call(
        self, function: Callable[..., T], *args: Any, background_wait: float | None = None
    ) -> T:
        """``function(*args)``, waited for at most ``timeout`` seconds on a request path.

        In flask-neuroon's own threads the call runs as it is, unless ``background_wait``
        bounds it too (seconds): a sender that must not wait forever for a hung server.
        """
        timeout = self.timeout
        if in_background_thread():
            if background_wait is None:
                return function(*args)
            timeout = background_wait
        now = time.monotonic()
        if now < self._resting_until:
            raise StorageError(
                f"{self.name} did not answer a moment ago; not waiting for it again for"
                f" {self._resting_until - now:.0f} s"
            )
        if not self.offload:
            return function(*args)
        started = time.monotonic()
        try:
            return self._offloaded(function, args, timeout)
        except StorageError:
            if time.monotonic() - started >= self.timeout / 2:
                self._rest()  # a slow failure: the next one would be as slow
            raise

    def _offloaded(self, function: Callable[..., T], args: tuple[Any, ...], timeout: float) -> T:
        if self._pid != os.getpid():
            self._after_fork()
        if not self._start():
            return function(*args)  # no thread to be had (a process limit): wait ourselves
        call = _Call(function, args, time.monotonic() + timeout)
        self._calls.put(call)
        if not call.done.wait(timeout):
            raise StorageError(f"{self.name} did not answer within {timeout:g} s")
        if call.error is not None:
            raise call.error
        return call.result  # type: ignore[no-any-return]

    def _rest(self) -> None:
        self._resting_until = time.monotonic() + self.cooldown

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
