"""Who runs the sends: a bounded thread pool in each worker process, or inline.

:class:`Courier` does one delivery: claim a row, send it, record the answer, report.
A dispatcher decides where that runs:

* :class:`ThreadDispatcher` (``NEUROON_DISPATCH="thread"``, the default): a queue of at
  most ``NEUROON_MAX_PENDING`` order ids and ``NEUROON_MAX_WORKERS`` daemon threads,
  created on first use *in the process that uses them* (never at import, never before a
  fork). When the queue is full, rows simply wait in the outbox and are pulled in as the
  queue drains, so memory stays flat however long the API is down. A sweeper thread
  (every ``NEUROON_FLUSH_INTERVAL`` seconds, jittered) pulls in rows whose retry is due.
* :class:`SyncDispatcher` (``"sync"``): every send runs inline, in the caller. For tests.
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable
from typing import NamedTuple, Union

from . import _fork
from .client import NeuroonClient, SendResult
from .errors import StorageError
from .outbox import Outbox
from .storage.base import OutboxRow

logger = logging.getLogger("flask_neuroon")

#: ``(order_id, status, result)``: called after every attempt, from the sending thread.
Report = Callable[[str, str, Union[SendResult, None]], None]

_DIRECT_STATUS = {"sent": "sent", "duplicate": "duplicate", "retry": "failed", "reject": "failed"}


class Courier:
    """One delivery, start to end. Never raises."""

    def __init__(self, client: NeuroonClient, outbox: Outbox | None, report: Report) -> None:
        self.client = client
        self.outbox = outbox
        self.report = report

    def deliver_id(self, order_id: str) -> str | None:
        """Claim ``order_id`` and send it; None when it is not ours to send (not due,
        already claimed by another worker, already sent)."""
        assert self.outbox is not None
        try:
            rows = self.outbox.claim(1, order_id=order_id)
        except StorageError as exc:
            logger.warning("flask-neuroon: cannot claim order %s: %s", order_id, exc)
            return None
        return self.deliver_row(rows[0]) if rows else None

    def deliver_row(self, row: OutboxRow) -> str:
        """Send a row this process has claimed and record the outcome."""
        assert self.outbox is not None
        result: SendResult | None = None
        try:
            if self.outbox.exhausted(row):
                status = self.outbox.abandon(row)
            else:
                result = self.client.send(row.payload)
                status = self.outbox.record(row, result)
        except StorageError as exc:
            # The answer could not be written; the lease runs out and the row is sent
            # again, which the API answers with 409 (delivered).
            logger.warning("flask-neuroon: cannot record order %s: %s", row.order_id, exc)
            status = "retrying"
        self._report(row.order_id, status, result)
        return status

    def deliver_direct(self, order_id: str, body: str) -> str:
        """Send without the outbox: one attempt."""
        result = self.client.send(body)
        status = _DIRECT_STATUS[result.outcome]
        self._report(order_id, status, result)
        return status

    def _report(self, order_id: str, status: str, result: SendResult | None) -> None:
        try:
            self.report(order_id, status, result)
        except Exception:  # a shop's signal receiver must not stop deliveries
            logger.exception("flask-neuroon: reporting the delivery of %s failed", order_id)


class Dispatcher:
    """The interface both dispatchers share."""

    #: False when the sends happen elsewhere (Celery workers): the CLI then sends itself.
    sends_here = True

    def __init__(self, courier: Courier) -> None:
        self.courier = courier

    def start(self) -> None:
        """Make sure this process's workers run (no-op when there are none)."""

    def submit_id(self, order_id: str, wait_for_row: float = 0.0) -> bool:
        """Deliver outbox row ``order_id`` soon. ``wait_for_row``: the row is being committed
        by another connection right now; allow it that many seconds to become visible."""
        raise NotImplementedError

    def submit_direct(self, order_id: str, body: str) -> bool:
        raise NotImplementedError

    def flush(self, timeout: float) -> int:
        raise NotImplementedError

    def close(self, timeout: float = 0.0) -> None:
        """Stop this process's workers after at most ``timeout`` seconds of flushing."""

    def _outbox_pending(self) -> int:
        """Rows not yet delivered nor dead, due now or waiting for a retry time."""
        outbox = self.courier.outbox
        if outbox is None:
            return 0
        try:
            return outbox.stats().pending
        except StorageError as exc:
            logger.warning("flask-neuroon: cannot read the outbox: %s", exc)
            return 0

    def _due_ids(self, limit: int) -> list[str]:
        outbox = self.courier.outbox
        if outbox is None or limit <= 0:
            return []
        try:
            return outbox.due_ids(limit)
        except StorageError as exc:
            logger.warning("flask-neuroon: cannot read the outbox: %s", exc)
            return []


class SyncDispatcher(Dispatcher):
    """Sends inline, in the calling thread."""

    def submit_id(self, order_id: str, wait_for_row: float = 0.0) -> bool:
        if wait_for_row:
            return False  # not committed yet in this very thread: flush() will send it
        self.courier.deliver_id(order_id)
        return True

    def submit_direct(self, order_id: str, body: str) -> bool:
        self.courier.deliver_direct(order_id, body)
        return True

    def flush(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            due = self._due_ids(100)
            if not due:
                break
            for order_id in due:
                if time.monotonic() >= deadline:
                    break
                self.courier.deliver_id(order_id)
        return self._outbox_pending()


class _AwaitRow(NamedTuple):
    order_id: str
    deadline: float


#: An outbox order id, (order id, body) to send directly, or a row still being committed.
_Job = Union[str, tuple[str, str], _AwaitRow]


class ThreadDispatcher(Dispatcher):
    def __init__(
        self,
        courier: Courier,
        *,
        workers: int,
        max_pending: int,
        flush_interval: float,
        shutdown_timeout: float,
        on_sweep: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(courier)
        self.workers = workers
        self.max_pending = max_pending
        self.flush_interval = flush_interval
        self.shutdown_timeout = shutdown_timeout
        self.on_sweep = on_sweep
        self._init_process_state()
        self._atexit_registered = False
        _fork.register(self)

    def _init_process_state(self) -> None:
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Job] = queue.Queue(self.max_pending)
        self._queued: set[str] = set()
        self._threads: list[threading.Thread] = []
        self._sweeper: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._refilling = threading.Lock()
        self._backlog = False

    def _after_fork(self) -> None:
        # The parent's threads do not exist here; its queued ids are still in the outbox.
        self._init_process_state()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        if self._pid != os.getpid():
            self._after_fork()
        if len(self._threads) == self.workers and (self._sweeper or not self.flush_interval):
            return
        with self._lock:
            if self._stopping.is_set():
                return
            while len(self._threads) < self.workers:
                thread = threading.Thread(
                    target=self._work, name=f"neuroon-sender-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
            if self.flush_interval and self._sweeper is None:
                self._sweeper = threading.Thread(
                    target=self._sweep, name="neuroon-sweeper", daemon=True
                )
                self._sweeper.start()
            if not self._atexit_registered:
                atexit.register(self._at_exit)
                self._atexit_registered = True

    def _at_exit(self) -> None:
        if self._pid == os.getpid() and self._threads and not self._stopping.is_set():
            self.close(self.shutdown_timeout)

    def close(self, timeout: float = 0.0) -> None:
        if timeout > 0:
            left = self.flush(timeout, pull_due=False)
            if left:
                logger.info(
                    "flask-neuroon: %d conversions still queued at exit; they stay in the outbox",
                    left,
                )
        self._stopping.set()
        self._wake.set()

    # --- queueing --------------------------------------------------------------------

    def _put(self, job: _Job) -> bool:
        self.start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self._backlog = True
            return False
        return True

    def submit_id(self, order_id: str, wait_for_row: float = 0.0) -> bool:
        if wait_for_row:
            return self._put(_AwaitRow(order_id, time.monotonic() + wait_for_row))
        with self._lock:
            if order_id in self._queued:
                return True
            self._queued.add(order_id)
        if self._put(order_id):
            return True
        with self._lock:
            self._queued.discard(order_id)
        return False

    def submit_direct(self, order_id: str, body: str) -> bool:
        return self._put((order_id, body))

    def _refill(self) -> int:
        """Pull due outbox rows into free queue slots; return how many were queued."""
        if not self._refilling.acquire(blocking=False):
            return 0
        try:
            free = self.max_pending - self._queue.qsize()
            queued = 0
            for order_id in self._due_ids(free):
                with self._lock:
                    if order_id in self._queued:
                        continue
                if not self.submit_id(order_id):
                    break
                queued += 1
            return queued
        finally:
            self._refilling.release()

    # --- threads ---------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                if isinstance(job, str):
                    with self._lock:
                        self._queued.discard(job)
                self._handle(job)
            except Exception:  # never let one delivery kill a sender thread
                logger.exception("flask-neuroon: delivery failed unexpectedly")
            finally:
                self._queue.task_done()
            if self._backlog and self._queue.qsize() <= self.max_pending // 2:
                self._backlog = False
                self._refill()

    def _handle(self, job: _Job) -> None:
        """Run one job in a sender thread (a subclass may hand it on instead)."""
        if isinstance(job, str):
            self.courier.deliver_id(job)
        elif isinstance(job, _AwaitRow):
            self._deliver_when_visible(job)
        else:
            self.courier.deliver_direct(*job)

    def _deliver_when_visible(self, job: _AwaitRow) -> None:
        """Deliver a row whose transaction was committing when it was submitted."""
        outbox = self.courier.outbox
        while self.courier.deliver_id(job.order_id) is None and outbox is not None:
            try:
                exists = outbox.storage.get(job.order_id) is not None
            except StorageError:
                return  # the sweeper will find it
            if exists or time.monotonic() >= job.deadline:
                return  # someone else holds it, or it was never committed
            time.sleep(0.01)

    def _sweep(self) -> None:
        while not self._stopping.is_set():
            # Jitter: workers on many hosts do not sweep in step.
            self._wake.wait(self.flush_interval * random.uniform(0.8, 1.2))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._refill()
                if self.on_sweep is not None:
                    self.on_sweep()
            except Exception:
                logger.exception("flask-neuroon: outbox sweep failed")

    # --- waiting ---------------------------------------------------------------------

    def _wait_idle(self, deadline: float) -> bool:
        condition = self._queue.all_tasks_done
        with condition:
            while self._queue.unfinished_tasks:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                condition.wait(remaining)
        return True

    def flush(self, timeout: float, pull_due: bool = True) -> int:
        """Wait for queued sends, pulling in due outbox rows too; return how many rows are
        still pending (in flight, due, or waiting for a retry time)."""
        deadline = time.monotonic() + max(timeout, 0.0)
        if self._pid != os.getpid():
            self._after_fork()
        while True:
            idle = self._wait_idle(deadline) if self._threads else not self._queue.unfinished_tasks
            if not idle or not pull_due or time.monotonic() >= deadline:
                break
            if not self._refill():
                break
        # Every queued or in-flight id is also a pending outbox row: the larger count
        # covers both, plus rows waiting for a retry time and rows of other processes.
        return max(self._queue.unfinished_tasks, self._outbox_pending())


__all__ = ["Courier", "Dispatcher", "SyncDispatcher", "ThreadDispatcher"]
