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
from typing import Any, NamedTuple, TypeVar, Union

from . import _fork
from .client import NeuroonClient, SendResult
from .errors import StorageError
from .outbox import Outbox
from .storage.base import BACKGROUND_THREAD_PREFIX, PENDING, OutboxRow
from .storage.guard import RequestGuard

logger = logging.getLogger("flask_neuroon")

T = TypeVar("T")

#: ``(order_id, status, result)``: called after every attempt, from the sending thread.
Report = Callable[[str, str, Union[SendResult, None]], None]

#: Most rows one drain claim takes (when a long NEUROON_CLAIM_LEASE allows several).
_MAX_CLAIM_BATCH = 16
#: How long a sweep's drain may go on before it checks in again.
_DRAIN_SECONDS = 60.0
#: How long close() waits for the sender threads to stop.
_JOIN_SECONDS = 2.0
#: How long a sender waits for storage to queue an order its request could not queue.
_REQUEUE_WAIT = 10.0
#: The least a bounded storage call is given, even past its deadline.
_MIN_WAIT = 0.05

_DIRECT_STATUS = {"sent": "sent", "duplicate": "duplicate", "retry": "failed", "reject": "failed"}


class Courier:
    """One delivery, start to end. Never raises."""

    def __init__(
        self,
        client: NeuroonClient,
        outbox: Outbox | None,
        report: Report,
        guard: RequestGuard | None = None,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.report = report
        #: Bounds this courier's waits on storage that may hang (see storage/guard.py).
        self.guard = guard

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
        except Exception:  # a bug, or a backend of the shop's own: same as above, loudly
            logger.exception("flask-neuroon: delivering order %s failed", row.order_id)
            status = "retrying"
        self._report(row.order_id, status, result)
        return status

    def drain(
        self,
        deadline: float,
        batch: int = 1,
        stopping: threading.Event | None = None,
        crew: DrainCrew | None = None,
    ) -> int:
        """Claim the next due rows (whichever: several drains, in several processes, claim
        disjoint rows instead of racing for the same ids) and send them, until none is
        due or ``deadline`` (monotonic) has passed. Returns how many were sent. ``crew``:
        the drain this one is part of, told how long each claim and send took."""
        if self.outbox is None:
            return 0
        sent = 0
        while time.monotonic() < deadline and not (stopping and stopping.is_set()):
            started = crew.begin() if crew is not None else None
            try:
                rows = self.outbox.claim(batch)
            except StorageError as exc:
                logger.warning("flask-neuroon: cannot claim due rows: %s", exc)
                break
            if not rows:
                break
            for row in rows:
                self.deliver_row(row)
            sent += len(rows)
            if crew is not None and started is not None:  # (both or neither: for mypy)
                crew.end(started)
        return sent

    def deliver_direct(self, order_id: str, body: str, *, will_retry: bool = False) -> str | None:
        """Deliver an order that is not in the outbox: the outbox is off, or the request
        could not queue it (storage failed or was busy there).

        With an outbox, queue it again first, from here, where a wait costs no shopper
        anything, and deliver it from its row. A row that turns out to exist already
        (another worker queued the same order at the same moment) is the outbox's to send:
        sending it here too would send it twice. Only when storage fails here as well is
        it sent directly. ``will_retry``: the caller tries again later if that attempt
        fails in a way worth repeating (it is then ``retrying``, not ``failed``). None
        when the row is someone else's.
        """
        if self.outbox is not None:
            try:
                add = self.outbox.add
                if self.guard is not None:
                    added = self.guard.call(add, order_id, body, wait=_REQUEUE_WAIT)
                else:
                    added = add(order_id, body)
            except StorageError as exc:
                logger.warning(
                    "flask-neuroon: order %s cannot be queued (%s); sending it directly",
                    order_id,
                    exc,
                )
            else:
                status = self.deliver_id(order_id)
                if status is None and not added:
                    self._report(order_id, "duplicate", None)  # queued by another, theirs
                    return "duplicate"
                return status
        result = self.client.send(body)
        status = _DIRECT_STATUS[result.outcome]
        if will_retry and result.outcome == "retry":
            status = "retrying"
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

    def running(self) -> bool:
        """Whether this process's workers run (always, when there are none to start)."""
        return True

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

    def _ask(self, function: Callable[..., T], *args: Any, deadline: float | None = None) -> T:
        """A storage call, bounded by ``deadline`` (monotonic) when there is one, so that a
        flush with a timeout keeps it even against a server that hangs."""
        guard = self.courier.guard
        if guard is None or deadline is None:
            return function(*args)
        return guard.call(function, *args, wait=max(_MIN_WAIT, deadline - time.monotonic()))

    def _outbox_pending(self, deadline: float | None = None) -> int:
        """Rows not yet delivered nor dead, due now or waiting for a retry time."""
        outbox = self.courier.outbox
        if outbox is None:
            return 0
        try:
            return self._ask(outbox.stats, deadline=deadline).pending
        except StorageError as exc:
            logger.warning("flask-neuroon: cannot read the outbox: %s", exc)
            return 0

    def _due_ids(self, limit: int, deadline: float | None = None) -> list[str]:
        outbox = self.courier.outbox
        if outbox is None or limit <= 0:
            return []
        try:
            return self._ask(outbox.due_ids, limit, deadline=deadline)
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
        self.courier.drain(time.monotonic() + timeout)
        return self._outbox_pending()


def _claimable(row: OutboxRow, now: float) -> bool:
    return (
        row.state == PENDING
        and row.next_attempt_at <= now
        and (row.lease_until is None or row.lease_until <= now)
    )


class _AwaitRow(NamedTuple):
    order_id: str
    deadline: float


class DrainCrew:
    """The sender threads of one drain, and when more of them should join it.

    A drain starts with one sender; the others stand by. Against a fast API (loopback,
    the same data centre) a send is mostly CPU (``http.client`` and ``urllib3`` work under
    the GIL), and one thread sends more per second than four, which mostly take the GIL
    from each other (and from the shop's requests). Against a distant, slow or hanging
    API a send is mostly waiting, and parallel sends multiply the rate. So a standby
    joins when the senders at work wait more than they compute: every one of them has
    been in its current claim-and-send for ``JOIN_AFTER`` seconds or more, or so far
    their rounds took more than twice their own CPU time.
    """

    #: A round (claim and send) that has lasted this long calls for help.
    JOIN_AFTER = 0.01

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._busy_since: dict[int, float] = {}
        self._wall = 0.0
        self._cpu = 0.0
        self.done = False

    def begin(self) -> tuple[float, float]:
        """A sender starts a round; returns what :meth:`end` needs."""
        now = time.monotonic()
        with self._condition:
            self._busy_since[threading.get_ident()] = now
        return now, time.thread_time()

    def end(self, started: tuple[float, float]) -> None:
        """A sender's round is over."""
        wall = time.monotonic() - started[0]
        cpu = time.thread_time() - started[1]
        with self._condition:
            self._busy_since.pop(threading.get_ident(), None)
            self._wall += wall
            self._cpu += cpu

    def finish(self) -> None:
        """A sender found nothing more to do (or ran out of time): the drain is over."""
        with self._condition:
            self.done = True
            self._busy_since.pop(threading.get_ident(), None)
            self._condition.notify_all()

    def _needs_help(self, now: float) -> bool:
        """(Called holding the condition's lock.)"""
        if self._wall > 2.0 * self._cpu + self.JOIN_AFTER:
            return True
        busy = self._busy_since.values()
        return bool(busy) and all(now - since >= self.JOIN_AFTER for since in busy)

    def stand_by(self, deadline: float, stopping: threading.Event) -> bool:
        """Wait until this standby should join (True) or the drain is over (False)."""
        with self._condition:
            while not (self.done or stopping.is_set()):
                now = time.monotonic()
                if now >= deadline:
                    return False
                if self._needs_help(now):
                    return True
                self._condition.wait(min(self.JOIN_AFTER, deadline - now))
        return False


class _Drain:
    """Claim the next due rows and send them, again and again, until none is due (or
    ``deadline``, monotonic, has passed): how a flush sends what is due. The sender
    threads of one drain share a :class:`DrainCrew`; all but one start as standbys."""

    __slots__ = ("crew", "deadline", "standby")

    def __init__(self, deadline: float, crew: DrainCrew, standby: bool = False) -> None:
        self.deadline = deadline
        self.crew = crew
        self.standby = standby


class _Stop:
    """Wakes a sender thread waiting for work, to end it (close)."""


_STOP = _Stop()


#: An outbox order id, an order to queue or send directly, a row still being committed,
#: a drain of the due rows (flush), or the end.
class _Direct(NamedTuple):
    """An order that is not in the outbox, to queue (else send) from a sender thread."""

    order_id: str
    body: str
    attempt: int = 1


_Work = Union[str, _Direct, _AwaitRow, _Drain]
_Job = Union[_Work, _Stop]
#: How long an idle sender waits for work before looking at the stop flag again. Long:
#: close() wakes it with _STOP, and every wake-up of an idle thread takes the GIL from
#: the shop's requests for nothing.
_IDLE_WAIT = 30.0


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
        #: Orders neither storage nor the API took, by id: (the next try, when, monotonic).
        self._unqueued: dict[str, tuple[_Direct, float]] = {}
        self._threads: list[threading.Thread] = []
        self._sweeper: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._refilling = threading.Lock()
        self._backlog = False
        self._start_failed = False

    def _after_fork(self) -> None:
        # The parent's threads do not exist here; its queued ids are still in the outbox.
        self._init_process_state()

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        """Start this process's sender threads and sweeper, once. Never raises: when the
        system refuses a thread (a container's process limit), that is logged once and the
        rows wait in the outbox for a later try, the sweeper of another worker or cron."""
        if self._pid != os.getpid():
            self._after_fork()
        if len(self._threads) == self.workers and (self._sweeper or not self.flush_interval):
            return
        with self._lock:
            if self._stopping.is_set():
                return
            try:
                self._start_threads()
            except RuntimeError as exc:  # "can't start new thread": a process limit
                if not self._start_failed:
                    self._start_failed = True
                    logger.error(
                        "flask-neuroon: cannot start the sender threads (%s); conversions"
                        " wait in the outbox (run flask neuroon flush from cron)",
                        exc,
                    )
            if not self._atexit_registered:
                atexit.register(self._at_exit)
                self._atexit_registered = True

    def running(self) -> bool:
        return (
            self._pid == os.getpid()
            and len(self._threads) == self.workers
            and (self._sweeper is not None or not self.flush_interval)
        )

    def _start_threads(self) -> None:
        while len(self._threads) < self.workers:
            thread = threading.Thread(
                target=self._work,
                name=f"{BACKGROUND_THREAD_PREFIX}sender-{len(self._threads)}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)
        if self.flush_interval and self._sweeper is None:
            sweeper = threading.Thread(
                target=self._sweep, name=f"{BACKGROUND_THREAD_PREFIX}sweeper", daemon=True
            )
            sweeper.start()
            self._sweeper = sweeper

    def _at_exit(self) -> None:
        if self._pid == os.getpid() and self._threads and not self._stopping.is_set():
            self.close(self.shutdown_timeout)

    def close(self, timeout: float = 0.0) -> None:
        if timeout > 0:
            left = self.flush(timeout, pull_due=False)
            if left and self.courier.outbox is not None:
                logger.info(
                    "flask-neuroon: %d conversions of this process not sent yet at exit;"
                    " they stay in the outbox",
                    left,
                )
            elif left:
                logger.warning(
                    "flask-neuroon: %d conversions not sent at exit are lost (NEUROON_OUTBOX"
                    " is off)",
                    left,
                )
        self._stopping.set()
        self._wake.set()
        for _ in self._threads:  # wake the idle ones; busy ones see the flag between jobs
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                break
        # Let the senders finish the statement or request they are in before the storage
        # closes under them (bounded: a send may wait for its read timeout).
        deadline = time.monotonic() + _JOIN_SECONDS
        for thread in [*self._threads, *([self._sweeper] if self._sweeper else [])]:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    # --- queueing --------------------------------------------------------------------

    def _put(self, job: _Job) -> bool:
        self.start()
        if not self._threads:
            return False  # nobody to run it: the row waits in the outbox
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
        return self._put(_Direct(order_id, body))

    def _deliver_direct(self, job: _Direct) -> None:
        """Queue (else send) an order that is not in the outbox; when storage is down and
        the API fails too, keep it in memory and try both again on the outbox's schedule,
        from the sweeper: nothing is dropped because two things failed at once."""
        outbox = self.courier.outbox
        retry = (
            outbox is not None
            and bool(self.flush_interval)
            and job.attempt < outbox.max_attempts
            and (job.order_id in self._unqueued or len(self._unqueued) < self.max_pending)
        )
        status = self.courier.deliver_direct(job.order_id, job.body, will_retry=retry)
        if status == "retrying" and outbox is not None:
            due = time.monotonic() + outbox.delay_before_next(job.attempt, None)
            with self._lock:
                self._unqueued[job.order_id] = (
                    _Direct(job.order_id, job.body, job.attempt + 1),
                    due,
                )
        elif status == "failed" and outbox is not None:
            logger.error(
                "flask-neuroon: order %s was neither queued nor delivered after %d attempts:"
                " storage failed, and so did the API (tracking it again tries again)",
                job.order_id,
                job.attempt,
            )

    def _retry_unqueued(self) -> None:
        """Hand the orders kept in memory whose time has come back to the senders."""
        now = time.monotonic()
        with self._lock:
            due = [job for job, at in self._unqueued.values() if at <= now]
            for job in due:
                del self._unqueued[job.order_id]
        for job in due:
            if not self._put(job):
                with self._lock:  # no room: next sweep
                    self._unqueued[job.order_id] = (job, now)

    def _refill(self) -> int:
        """Pull due outbox rows into free queue slots; return how many were queued."""
        if not self._refilling.acquire(blocking=False):
            return 0
        try:
            free = self.max_pending - self._queue.qsize()
            if free <= 0:
                return 0
            # The oldest due rows are mostly the ones already waiting in the queue: read
            # past them, or a backlog would be pulled in only by the next sweep.
            with self._lock:
                waiting = len(self._queued)
            limit = free + waiting
            due = self._due_ids(limit)
            queued = 0
            for order_id in due:
                with self._lock:
                    if order_id in self._queued:
                        continue
                if not self.submit_id(order_id):
                    break  # the queue is full: _put flagged the backlog
                queued += 1
                if queued >= free:
                    break
            if queued >= free or len(due) >= limit:
                # Every free slot taken, or more rows due than were read: pull in the rest
                # as the queue drains instead of waiting for the next sweep.
                self._backlog = True
            return queued
        finally:
            self._refilling.release()

    # --- threads ---------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stopping.is_set():
            try:
                job = self._queue.get(timeout=_IDLE_WAIT)
            except queue.Empty:
                continue
            if isinstance(job, _Stop):
                self._queue.task_done()
                return
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
                self._pull_due(time.monotonic() + _DRAIN_SECONDS)

    def _handle(self, job: _Work) -> None:
        """Run one job in a sender thread (a subclass may hand it on instead)."""
        if isinstance(job, str):
            self.courier.deliver_id(job)
        elif isinstance(job, _AwaitRow):
            self._deliver_when_visible(job)
        elif isinstance(job, _Drain):
            self._drain(job)
        else:
            self._deliver_direct(job)

    def _claim_batch(self) -> int:
        """Rows one claim may take: as many as can all be sent, one after the other, each
        taking its worst (connect + read timeout), with the lease's 30 s margin intact.
        One with the default lease (timeouts + 30 s); more with a longer NEUROON_CLAIM_LEASE.
        """
        outbox = self.courier.outbox
        worst = sum(self.courier.client.timeout)
        if outbox is None or worst <= 0:
            return 1
        return max(1, min(_MAX_CLAIM_BATCH, int((outbox.lease_seconds - 30.0) / worst + 1e-9)))

    def _drain(self, job: _Drain) -> None:
        crew = job.crew
        if job.standby and not crew.stand_by(job.deadline, self._stopping):
            return
        try:
            self.courier.drain(job.deadline, self._claim_batch(), self._stopping, crew)
        finally:
            crew.finish()

    def _deliver_when_visible(self, job: _AwaitRow) -> None:
        """Deliver a row whose transaction was committing when it was submitted."""
        outbox = self.courier.outbox
        while self.courier.deliver_id(job.order_id) is None and outbox is not None:
            try:
                row = outbox.storage.get(job.order_id)
            except StorageError:
                return  # the sweeper will find it
            if row is not None and not _claimable(row, outbox.clock()):
                return  # someone else holds it, or it is sent, dead or waiting for a retry
            # Absent: not committed yet. Present and claimable: the commit landed after
            # our claim looked. Either way, look again until the deadline.
            if time.monotonic() >= job.deadline:
                return  # never committed
            time.sleep(0.01)

    def _sweep(self) -> None:
        while not self._stopping.is_set():
            # Jitter: workers on many hosts do not sweep in step.
            self._wake.wait(self.flush_interval * random.uniform(0.8, 1.2))
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                self._retry_unqueued()
                self._pull_due(time.monotonic() + _DRAIN_SECONDS)
                if self.on_sweep is not None:
                    self.on_sweep()
            except Exception:
                logger.exception("flask-neuroon: outbox sweep failed")

    def _pull_due(self, deadline: float) -> int:
        """Have the due outbox rows sent: drained by this process's senders, or, when the
        sends happen elsewhere (Celery), handed on by id."""
        return self._start_drain(deadline) if self.sends_here else self._refill()

    def _start_drain(self, deadline: float) -> int:
        """Set every sender thread draining the due rows; 0 when none is due."""
        if not self._due_ids(1, deadline):
            return 0
        crew = DrainCrew()
        started = 0
        for number in range(self.workers):
            if not self._put(_Drain(deadline, crew, standby=number > 0)):
                break
            started += 1
        return started

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
            if not self._pull_due(deadline):
                break
        if not pull_due:
            return self._queue.unfinished_tasks  # this process's own, in memory
        # Every queued or in-flight id is also a pending outbox row: the larger count
        # covers both, plus rows waiting for a retry time and rows of other processes.
        # (One more second at most for that count.)
        count_by = max(deadline, time.monotonic() + 1.0)
        return max(self._queue.unfinished_tasks, self._outbox_pending(count_by))


__all__ = ["Courier", "Dispatcher", "SyncDispatcher", "ThreadDispatcher"]
