"""Helpers for the fault and claim tests: counting what the API received, flusher processes.

The numbers are derived from the fake API's records (every request, its status, when it
arrived and when it was answered) and from the outbox, never from the code under test:

* **delivered**: orders the API accepted exactly once (one 200);
* **lost**: orders the API never accepted;
* **duplicated**: extra acceptances of an order, plus every 409 that no lost answer
  explains (with a correct sender, a repeat only follows an answer the sender never got);
* **repeats-after-lost-answer**: the 409s that a lost answer does explain.

An answer is *lost* when the client cannot have used it: it came after the client's read
timeout, or after the sending process was killed (the tests say which, per request).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask_neuroon import Order, OrderLine
from flask_neuroon.conversion import build_payload, dumps_payload
from flask_neuroon.storage import SENT, Storage
from flask_neuroon.testing import FakeNeuroonAPI, RecordedRequest

ROOT = Path(__file__).resolve().parent.parent


class RecordingAPI(FakeNeuroonAPI):
    """The fake API, also noting when it answered each conversion request.

    ``answered_at[i]`` belongs to ``requests[i]``: the fake records a request at the moment
    it answers it (after any injected slowness), under its lock, so the two lists grow in
    step. Used to tell an answer the client waited for from one it had given up on.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answered_at: list[float] = []

    def _record(self, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            response = super()._record(*args, **kwargs)
            self.answered_at.append(time.time())
        return response

    def answered(self) -> list[tuple[RecordedRequest, float]]:
        """Every conversion request with the time it was answered (or dropped)."""
        with self._lock:
            requests = self.requests
            assert len(requests) == len(self.answered_at)
            return list(zip(requests, self.answered_at, strict=True))


#: Is this answer lost to its sender? ``(request, answered_at) -> bool``.
LostAnswer = Callable[[RecordedRequest, float], bool]


def slower_than(read_timeout: float, margin: float = 0.05) -> LostAnswer:
    """Answers that came after the client's read timeout: the client had given up."""

    def lost(request: RecordedRequest, answered_at: float) -> bool:
        return answered_at - request.received_at >= read_timeout - margin

    return lost


def sender_port(request: RecordedRequest) -> int | None:
    """The port of the request's Origin header: the tests give each process its own."""
    try:
        return urlsplit(request.header("Origin") or "").port
    except ValueError:
        return None


@dataclass
class Tally:
    orders: int
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    repeats_after_lost_answer: int = 0
    #: Every answer the API gave, by status (None: dropped without an answer).
    statuses: dict[int | None, int] = field(default_factory=dict)
    conflicts: int = 0
    lost_answers: int = 0
    posts: int = 0
    #: Outbox rows of these orders that are not ``sent`` (pending or dead), by state.
    unsent_rows: dict[str, int] = field(default_factory=dict)
    lost_ids: list[str] = field(default_factory=list)
    duplicated_ids: list[str] = field(default_factory=list)

    def line(self, name: str, backend: str) -> str:
        return (
            f"fault[{name}][{backend}]: orders {self.orders}, delivered {self.delivered},"
            f" lost {self.lost}, duplicated {self.duplicated},"
            f" repeats-after-lost-answer {self.repeats_after_lost_answer}"
        )

    def detail(self) -> str:
        return (
            f"posts {self.posts}, statuses {self.statuses}, 409s {self.conflicts},"
            f" lost answers {self.lost_answers}, unsent outbox rows {self.unsent_rows},"
            f" lost ids {self.lost_ids[:10]}, duplicated ids {self.duplicated_ids[:10]}"
        )

    def assert_clean(self) -> None:
        """Every order delivered once; every 409 explained; the outbox all sent."""
        assert self.lost == 0, self.detail()
        assert self.duplicated == 0, self.detail()
        assert self.delivered == self.orders, self.detail()
        assert not self.unsent_rows, self.detail()
        # A 409 only ever answers a repeat, and a repeat only ever follows a lost answer.
        assert self.conflicts == self.repeats_after_lost_answer, self.detail()
        assert self.conflicts <= self.lost_answers, self.detail()


def tally(
    api: RecordingAPI,
    order_ids: Iterable[str],
    *,
    lost_answer: LostAnswer,
    storage: Storage | None = None,
) -> Tally:
    """Count, per order, what the API accepted and whether each 409 is explained."""
    wanted = list(order_ids)
    result = Tally(orders=len(wanted))
    by_order: dict[str, list[tuple[RecordedRequest, float]]] = defaultdict(list)
    statuses: dict[int | None, int] = defaultdict(int)
    for request, answered_at in api.answered():
        statuses[request.status] += 1
        if request.order_id is not None:
            by_order[request.order_id].append((request, answered_at))
    result.statuses = dict(statuses)
    result.posts = sum(statuses.values())
    for order_id in wanted:
        # What reached the contract (200 accepted, 409 already had it), in arrival order.
        reached = sorted(
            (pair for pair in by_order.get(order_id, []) if pair[0].status in (200, 409)),
            key=lambda pair: pair[0].received_at,
        )
        accepted = sum(1 for request, _ in reached if request.status == 200)
        result.conflicts += sum(1 for request, _ in reached if request.status == 409)
        if accepted == 0:
            result.lost += 1
            result.lost_ids.append(order_id)
            continue
        if accepted == 1:
            result.delivered += 1
        # The first arrival is the original; each later one is a repeat (answered 409,
        # or 200 while the original, still unanswered, got the 409), explained only by
        # an earlier answer its sender never got. Each lost answer explains one repeat.
        unexplained = 0
        owed = 0
        for index, (request, answered_at) in enumerate(reached):
            if index > 0:
                if owed:
                    owed -= 1
                    result.repeats_after_lost_answer += 1
                else:
                    unexplained += 1
            if lost_answer(request, answered_at):
                owed += 1
                result.lost_answers += 1
        duplicated = max(accepted - 1, unexplained)
        if duplicated:
            result.duplicated += duplicated
            result.duplicated_ids.append(order_id)
    if storage is not None:
        unsent: dict[str, int] = defaultdict(int)
        for order_id in wanted:
            row = storage.get(order_id)
            if row is not None and row.state != SENT:
                unsent[row.state] += 1
        result.unsent_rows = dict(unsent)
    return result


# --------------------------------------------------------------------------- backends


def backend_name(request: Any) -> str:
    """``sqlite``, ``postgresql``, ``mariadb`` or ``redis``: the ``backend_uri`` param."""
    return str(request.node.callspec.params["backend_uri"])


@contextlib.contextmanager
def private_database(uri: str) -> Iterator[str]:
    """On a SQL server, a database of this test's own (created here, dropped after);
    any other URI as it is.

    ``backend_uri`` hands every test the same ``test`` database and empties it first, so
    two test runs at the same time on one machine (two engineers, two terminals) would
    empty each other's outbox in the middle of a run.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    url = make_url(uri)
    backend = url.get_backend_name()
    if backend not in ("postgresql", "mysql", "mariadb"):
        yield uri
        return
    name = f"neuroon_{uuid.uuid4().hex[:12]}"
    # No pool: a connection kept across a server restart would be dead by the DROP.
    admin = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=_null_pool())
    try:
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        try:
            yield url.set(database=name).render_as_string(hide_password=False)
        finally:
            drop = f"DROP DATABASE IF EXISTS {name}"
            if backend == "postgresql":
                drop += " WITH (FORCE)"  # connections a killed process left behind
            with admin.connect() as connection:
                connection.execute(text(drop))
    finally:
        admin.dispose()


# --------------------------------------------------------------------------- orders


def make_order(order_id: str) -> Order:
    return Order(
        id=order_id,
        total=Decimal("10.00"),
        currency="EUR",
        lines=[OrderLine(product_id="P1", quantity=1, unit_price=Decimal("10.00"))],
    )


def payload_of(order_id: str) -> str:
    """The body the extension would store for ``order_id`` (the fake API accepts it)."""
    return dumps_payload(build_payload(make_order(order_id), {"P1": f"log-{order_id}"}))


def fill_outbox(storage: Storage, order_ids: Iterable[str]) -> None:
    """Add pending rows through the storage API (one transaction on SQL servers)."""
    now = time.time()
    from flask_neuroon.storage.sqlalchemy import SQLAlchemyStorage

    if isinstance(storage, SQLAlchemyStorage):
        with storage.engine.begin() as connection:
            for order_id in order_ids:
                assert storage.add(order_id, payload_of(order_id), now, connection=connection)
        return
    for order_id in order_ids:
        assert storage.add(order_id, payload_of(order_id), now)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


# --------------------------------------------------------------------------- processes


def shop_env(api: FakeNeuroonAPI, instance: Path, **settings: Any) -> dict[str, str]:
    """The environment of a ``tests.apps.wsgi`` process (``SHOP_*`` variables)."""
    env = {
        **os.environ,
        "SHOP_INSTANCE": str(instance),
        "SHOP_API_KEY": api.api_key,
        "SHOP_API_URL": api.url,
        "PYTHONUNBUFFERED": "1",
    }
    for key, value in settings.items():
        if value is not None:
            env[f"SHOP_{key.upper()}"] = str(value)
    return env


def start_flusher(env: Mapping[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    """``flask --app tests.apps.wsgi neuroon flush ARGS``, output to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", "tests.apps.wsgi", "neuroon", "flush", *args],
            cwd=ROOT,
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def release(barrier: Path, processes: int, timeout: float = 60.0) -> float:
    """Wait until ``processes`` flushers are ready at ``barrier``, then let them all go."""
    ready = wait_until(lambda: len(list(barrier.glob("ready-*"))) >= processes, timeout)
    assert ready, f"only {len(list(barrier.glob('ready-*')))} of {processes} flushers started"
    go = time.time()
    (barrier / "go").write_text("go\n")
    return go


# --------------------------------------------------------------------------- servers


def _answers(uri: str) -> bool:
    """True if the SQL server of ``uri`` runs ``SELECT 1`` now."""
    from sqlalchemy import create_engine, text

    engine = create_engine(uri, connect_args={"connect_timeout": 2}, poolclass=_null_pool())
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _null_pool() -> Any:
    from sqlalchemy.pool import NullPool

    return NullPool


def wait_for_server(uri: str, timeout: float) -> bool:
    return wait_until(lambda: _answers(uri), timeout, interval=0.1)


def _run(command: list[str], timeout: float) -> None:
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{' '.join(command)}: {done.stdout}{done.stderr}"


def _postgres_cluster() -> tuple[str, str]:
    """The (version, name) of this machine's PostgreSQL cluster: ``ls /etc/postgresql``."""
    versions = sorted(os.listdir("/etc/postgresql"), key=lambda v: [int(p) for p in v.split(".")])
    version = versions[-1]
    clusters = sorted(os.listdir(f"/etc/postgresql/{version}"))
    return version, "main" if "main" in clusters else clusters[0]


MARIADBD = "/usr/sbin/mariadbd"


def restart_server(backend: str, hold: float = 1.0) -> None:
    """Restart this machine's PostgreSQL or MariaDB server (blocking, as root).

    PostgreSQL: ``pg_ctlcluster … restart`` (down for about a second or two). MariaDB
    stops in a fraction of a second, so it stays stopped ``hold`` seconds before starting
    again: long enough for a shop to confirm orders while it is down.
    """
    if backend == "postgresql":
        version, cluster = _postgres_cluster()
        _run(["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"], 120)
        return
    _run(["start-stop-daemon", "--stop", "--exec", MARIADBD, "--retry", "30"], 60)
    time.sleep(hold)
    start_server(backend)


def start_server(backend: str) -> None:
    """Start the server if it is not running (idempotent)."""
    if backend == "postgresql":
        version, cluster = _postgres_cluster()
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "start"]
        subprocess.run(command, capture_output=True, timeout=120, check=False)  # "already running"
        return
    _run(["start-stop-daemon", "--start", "--oknodo", "--background", "--exec", MARIADBD], 30)


# --------------------------------------------------------------------------- a hung server


class FreezeProxy:
    """A TCP proxy on loopback in front of a real server, that can go silent.

    ``silent=True``: it accepts connections and never forwards a byte (a server that
    hangs before its greeting). Otherwise it forwards both ways until :meth:`freeze`,
    after which it keeps every connection open and forwards nothing (a frozen proxy or
    a database hung on a lock): TCP stays up, no driver error comes.
    """

    def __init__(self, target_port: int, *, silent: bool = False) -> None:
        import socket
        import threading

        self.target = ("127.0.0.1", target_port)
        self.frozen = threading.Event()
        if silent:
            self.frozen.set()
        self._sockets: list[socket.socket] = []
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._server.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def freeze(self) -> None:
        self.frozen.set()

    def _accept(self) -> None:
        import socket
        import threading

        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self._sockets.append(client)
            if self.frozen.is_set():
                continue  # connected, and never a word
            upstream = socket.create_connection(self.target)
            self._sockets.append(upstream)
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, client: Any, upstream: Any) -> None:
        import select

        while not self._closed:
            readable, _, _ = select.select([client, upstream], [], [], 0.05)
            if self.frozen.is_set():
                continue
            for sock in readable:
                try:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is client else client).sendall(data)
                except OSError:
                    return

    def close(self) -> None:
        """Close everything: a call still waiting on it gets its error and ends."""
        self._closed = True
        for sock in [self._server, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.close()
