"""The Redis backend: the storage contract, plus what only Redis can get wrong.

Each test works under its own key prefix (a uuid) and deletes its keys afterwards; it
never flushes the database, which other things may share.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
import signal
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest

from flask_neuroon import ConfigurationError, StorageError
from flask_neuroon.storage import (
    DEAD,
    PENDING,
    SENT,
    MemoryStorage,
    OutboxStats,
    Storage,
    storage_from_uri,
)

from .conftest import need_service
from .services import REDIS_URL, importable, port_open
from .test_storage_contract import NOW, StorageContract

if importable("redis"):
    import redis
    from redis.crc import key_slot

    from flask_neuroon.storage.redis import READ_TIMEOUT, SNAPSHOT_GRACE_SECONDS, RedisStorage


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def redis_available() -> bool:
    if not importable("redis"):
        return False
    parts = urlsplit(REDIS_URL)
    if parts.scheme == "unix":
        return os.path.exists(parts.path)
    return port_open(parts.hostname or "127.0.0.1", parts.port or 6379)


def need_redis() -> None:
    need_service(
        "Redis",
        importable("redis") and redis_available(),
        f"nothing answers at {REDIS_URL} (NEUROON_TEST_REDIS_URL), or redis-py is missing:"
        " pip install 'flask-neuroon[redis]'",
    )


def keys_of(prefix: str) -> list[str]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return sorted(client.scan_iter(match=f"*{prefix}*", count=1000))
    finally:
        client.close()


def drop_keys(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
    finally:
        client.close()


@pytest.fixture
def make_storage() -> Iterator[Callable[[], RedisStorage]]:
    """A factory of empty RedisStorages on the test server, each under a new prefix."""
    need_redis()
    made: list[RedisStorage] = []

    def factory() -> RedisStorage:
        storage = storage_from_uri(with_prefix(REDIS_URL, uuid.uuid4().hex))
        assert isinstance(storage, RedisStorage)
        made.append(storage)
        return storage

    yield factory
    for storage in made:
        storage.close()
        drop_keys(storage.prefix)


@pytest.mark.services
class TestRedisStorage(StorageContract):
    @pytest.fixture
    def storage(self, make_storage: Callable[[], RedisStorage]) -> Storage:
        return make_storage()

    def test_a_corrupt_snapshot_reads_as_empty(self, storage: RedisStorage):
        storage.put_snapshot("o", {"a": "1"}, NOW + 60)
        storage._client.hset(storage._snapshot_prefix + "o", "clicks", "not json")
        assert storage.take_snapshot("o", NOW) == {}

    def test_times_read_back_exactly_and_boundaries_are_exact(self, storage: RedisStorage):
        created = NOW + 1 / 3
        due = 1_700_000_123.456789
        storage.add("o", "{}", created)
        before = math.nextafter(created, -math.inf)
        assert storage.due_ids(before, 10) == []
        assert storage.claim(before, NOW + 60, "early", 1) == []
        assert storage.due_ids(created, 10) == ["o"]
        [row] = storage.claim(created, created + 0.1, "t", 1)
        assert (row.created_at, row.next_attempt_at, row.lease_until) == (
            created,
            created,
            created + 0.1,
        )
        assert storage.mark_retry("o", "t", due, "HTTP 503") is True
        assert storage.claim(math.nextafter(due, -math.inf), due + 60, "t2", 1) == []
        [row] = storage.claim(due, due + 60, "t2", 1)
        synced = due + 0.1 + 0.2
        assert storage.mark_sent("o", "t2", synced) is True
        row2 = storage.get("o")
        assert row2 is not None and row2.synced_at == synced
        assert storage.purge_sent(synced) == 0  # strictly before
        assert storage.purge_sent(math.nextafter(synced, math.inf)) == 1

    def test_a_snapshot_expires_exactly_at_its_time(self, storage: RedisStorage):
        expires = NOW + 0.1 + 0.2
        storage.put_snapshot("a", {"p": "s"}, expires)
        storage.put_snapshot("b", {"p": "s"}, expires)
        assert storage.take_snapshot("a", math.nextafter(expires, -math.inf)) == {"p": "s"}
        assert storage.take_snapshot("b", expires) is None

    def test_a_snapshot_also_carries_a_redis_ttl(self, storage: RedisStorage):
        storage.put_snapshot("future", {"p": "s"}, time.time() + 3600)
        storage.put_snapshot("past", {"p": "s"}, NOW)  # long gone by the wall clock
        future = storage._client.pttl(storage._snapshot_prefix + "future")
        past = storage._client.pttl(storage._snapshot_prefix + "past")
        grace = SNAPSHOT_GRACE_SECONDS * 1000
        assert grace + 3_500_000 < future <= grace + 3_600_000
        assert grace - 60_000 < past <= grace
        # Still there for a shop whose clock says otherwise; the stored time decides.
        assert storage.take_snapshot("past", NOW - 1) == {"p": "s"}

    def test_purging_many_snapshots_goes_in_batches(self, storage: RedisStorage):
        for index in range(1234):
            storage.put_snapshot(f"o{index}", {"p": "s"}, NOW + (index % 2))
        assert storage.purge_snapshots(NOW) == 617
        assert storage.purge_snapshots(NOW) == 0
        assert storage.take_snapshot("o1", NOW) == {"p": "s"}

    def test_a_lapsed_claimer_can_still_record_until_someone_claims_again(
        self, storage: RedisStorage
    ):
        storage.add("o", "{}", NOW)
        storage.claim(NOW, NOW + 60, "slow", 1)
        assert storage.stats(NOW + 61).due == 1  # the lease ran out: due again
        assert storage.due_ids(NOW + 61, 10) == ["o"]
        assert storage.mark_sent("o", "slow", NOW + 62) is True
        assert storage.due_ids(NOW + 63, 10) == []
        assert storage.stats(NOW + 63).sent == 1

    def test_a_host_with_a_slower_clock_respects_a_lease_another_saw_lapse(
        self, storage: RedisStorage
    ):
        storage.add("o", "{}", NOW)
        storage.claim(NOW, NOW + 60, "t1", 1)
        assert storage.due_ids(NOW + 100, 10) == ["o"]  # a host whose clock is ahead
        # A host whose clock is behind: for it the lease is still live.
        assert storage.due_ids(NOW + 30, 10) == []
        assert storage.stats(NOW + 30).due == 0
        assert storage.claim(NOW + 30, NOW + 90, "t2", 10) == []
        assert storage.claim(NOW + 30, NOW + 90, "t2", 10, order_id="o") == []
        [row] = storage.claim(NOW + 60, NOW + 120, "t3", 10)
        assert (row.attempts, row.claim_token) == (2, "t3")
        assert storage.mark_sent("o", "t1", NOW + 61) is False

    def test_make_due_also_moves_claimed_rows_waiting_for_later(self, storage: RedisStorage):
        storage.add("late", "{}", NOW + 500)
        storage.claim(NOW + 500, NOW + 560, "t", 1)
        for index in range(1200):
            storage.add(f"o{index}", "{}", NOW)
            storage.claim(NOW, NOW + 60, "t", 1, order_id=f"o{index}")
            storage.mark_retry(f"o{index}", "t", NOW + 3600 + index, "HTTP 503")
        assert storage.make_due(NOW + 100) == 1201
        assert storage.make_due(NOW + 100) == 0
        late = storage.get("late")
        assert late is not None and late.next_attempt_at == NOW + 100
        assert len(storage.due_ids(NOW + 100, 5000)) == 1200  # "late" is still leased
        assert len(storage.claim(NOW + 600, NOW + 700, "t2", 5000)) == 1201

    def test_purging_many_sent_rows_goes_in_batches(self, storage: RedisStorage):
        for index in range(1100):
            storage.add(f"o{index}", "{}", NOW)
        for row in storage.claim(NOW, NOW + 60, "t", 2000):
            storage.mark_sent(row.order_id, "t", NOW + 1)
        assert storage.stats(NOW + 2).sent == 1100
        assert storage.purge_sent(NOW + 2) == 1100
        assert storage.stats(NOW + 2).sent == 0
        assert keys_of(storage.prefix) == []

    def test_deleting_a_row_leaves_no_trace(self, storage: RedisStorage):
        storage.add("o", "{}", NOW)
        storage.claim(NOW, NOW + 60, "t", 1)
        storage.mark_dead("o", "t", "HTTP 400")
        assert storage.delete("o", PENDING) is False
        assert storage.delete("o", "nonsense") is False
        assert storage.delete("o", DEAD) is True
        assert keys_of(storage.prefix) == []

    def test_rows_and_claims_with_no_room_return_nothing(self, storage: RedisStorage):
        storage.add("o", "{}", NOW)
        assert storage.rows(PENDING, 0) == []
        assert storage.rows("nonsense", 10) == []
        assert storage.due_ids(NOW, 0) == []
        assert storage.claim(NOW, NOW + 60, "t", 0) == []
        assert storage.claim(NOW, NOW + 60, "t", 0, order_id="o") == []

    def test_an_order_id_may_hold_any_characters(self, storage: RedisStorage):
        odd = ["", "a:b", "{x}", "}{", "é ü \n", "*?[", "o" * 500]
        for index, order_id in enumerate(odd):
            assert storage.add(order_id, f'{{"i":{index}}}', NOW + index) is True
            storage.put_snapshot(order_id, {"p": order_id}, NOW + 60)
        assert [row.order_id for row in storage.claim(NOW + 100, NOW + 160, "t", 100)] == odd
        for order_id in odd:
            assert storage.take_snapshot(order_id, NOW) == {"p": order_id}
            assert storage.mark_sent(order_id, "t", NOW + 101) is True
        assert all(key.startswith("{" + storage.prefix + "}:") for key in keys_of(storage.prefix))

    def test_the_same_operations_as_the_memory_backend(self, storage: RedisStorage):
        """A seeded random walk, step by step against MemoryStorage as the reference model.

        Clocks go backwards as well as forwards (hosts disagree); times are distinct, so
        the order of claims is fully determined.
        """
        model = MemoryStorage()
        rnd = random.Random(20240611)
        ids = [f"o{index}" for index in range(40)]
        tokens: dict[str, str] = {}
        clock = NOW

        def now() -> float:
            nonlocal clock
            clock += rnd.uniform(-30, 60)
            return clock + rnd.random() / 1000

        result: list[Any]
        for step in range(1500):
            op = rnd.choice(
                ["add", "add", "claim", "claim", "one", "sent", "retry", "dead", "requeue",
                 "delete", "purge", "stats", "due", "rows", "get"]
            )  # fmt: skip
            order_id = rnd.choice(ids)
            token = tokens.get(order_id, "none") if rnd.random() < 0.9 else "stale"
            if op == "add":
                t = now()
                result = [s.add(order_id, f'{{"s":{step}}}', t) for s in (model, storage)]
            elif op in ("claim", "one"):
                t = now()
                lease = t + rnd.uniform(1, 120)
                only = order_id if op == "one" else None
                token, limit = uuid.uuid4().hex, rnd.randint(1, 6)
                result = [s.claim(t, lease, token, limit, order_id=only) for s in (model, storage)]
                for row in result[0]:
                    tokens[row.order_id] = token
            elif op == "sent":
                t = now()
                result = [s.mark_sent(order_id, token, t) for s in (model, storage)]
            elif op == "retry":
                t = now() + rnd.uniform(-50, 300)
                result = [s.mark_retry(order_id, token, t, f"e{step}") for s in (model, storage)]
            elif op == "dead":
                result = [s.mark_dead(order_id, token, f"d{step}") for s in (model, storage)]
            elif op == "requeue":
                t = now()
                result = [s.requeue(order_id, t) for s in (model, storage)]
            elif op == "delete":
                state = rnd.choice([PENDING, SENT, DEAD])
                result = [s.delete(order_id, state) for s in (model, storage)]
            elif op == "purge":
                t = now() - rnd.uniform(0, 100)
                result = [s.purge_sent(t) for s in (model, storage)]
            elif op == "stats":
                t = now()
                result = [s.stats(t) for s in (model, storage)]
            elif op == "due":
                t, limit = now(), rnd.randint(1, 50)
                result = [s.due_ids(t, limit) for s in (model, storage)]
            elif op == "rows":
                state, limit = rnd.choice([PENDING, SENT, DEAD]), rnd.randint(1, 50)
                result = [s.rows(state, limit) for s in (model, storage)]
            else:
                result = [s.get(order_id) for s in (model, storage)]
            assert result[0] == result[1], f"step {step}: {op} {order_id}"
        for order_id in ids:
            assert model.get(order_id) == storage.get(order_id)


# --- URIs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "shown", "expected"),
    [
        (
            "redis://:s3cr%40t@db.internal:6380/2",
            "redis://:***@db.internal:6380/2",
            {"host": "db.internal", "port": 6380, "db": 2, "password": "s3cr@t"},
        ),
        (
            "redis://shop:s3cret@127.0.0.1/0?prefix=shop1&socket_timeout=5",
            "redis://shop:***@127.0.0.1/0?prefix=shop1&socket_timeout=5",
            {"username": "shop", "password": "s3cret", "socket_timeout": 5.0, "prefix": "shop1"},
        ),
        (
            "rediss://:s3cret@cache.example:6379/0",
            "rediss://:***@cache.example:6379/0",
            {"ssl": True, "socket_connect_timeout": 2.0},
        ),
        (
            "unix:///run/redis/redis.sock?db=3&password=s3cret",
            "unix:///run/redis/redis.sock?db=3&password=***",
            {"path": "/run/redis/redis.sock", "db": 3, "password": "s3cret"},
        ),
        (
            "redis://127.0.0.1:6379",
            "redis://127.0.0.1:6379",
            {"db": 0, "socket_timeout": 2.0, "socket_connect_timeout": 2.0, "prefix": "neuroon"},
        ),
    ],
)
def test_uri_forms(uri: str, shown: str, expected: dict[str, Any]):
    if not importable("redis"):
        pytest.skip("redis-py is not installed: pip install 'flask-neuroon[redis]'")
    storage = storage_from_uri(uri)
    assert isinstance(storage, RedisStorage)
    assert storage.display_uri == shown
    assert repr(storage) == f"<RedisStorage {shown}>"
    assert "s3cr" not in repr(storage)
    pool = storage._client.connection_pool
    kwargs = pool.connection_kwargs
    assert "prefix" not in kwargs
    for name, value in expected.items():
        if name == "prefix":
            assert storage.prefix == value
        elif name == "ssl":
            assert issubclass(pool.connection_class, redis.SSLConnection)
        else:
            assert kwargs.get(name, 0 if name == "db" else None) == value, name
    assert pool._created_connections == 0  # nothing connects before the first operation


def test_a_storage_built_on_a_client_shows_where_it_connects():
    if not importable("redis"):
        pytest.skip("redis-py is not installed: pip install 'flask-neuroon[redis]'")
    storage = RedisStorage(redis.Redis(host="h", port=7000, db=4, password="s3cret"), prefix="p")
    assert storage.display_uri == "redis://:***@h:7000/4?prefix=p"
    unix = RedisStorage(redis.Redis(unix_socket_path="/tmp/r.sock"))
    assert unix.display_uri == "unix:///tmp/r.sock?db=0"


@pytest.mark.parametrize(
    "uri",
    [
        "redis://:s3cret@127.0.0.1:6379/0?prefix=",
        "redis://:s3cret@127.0.0.1:6379/0?prefix=a{b}",
        "redis://:s3cret@127.0.0.1:6379/notadb",
        "redis://:s3cret@127.0.0.1:6379/0?socket_timeout=soon",
        "redis://:s3cret@127.0.0.1:6379/0?socket_timout=5",
        "unix:///run/redis.sock?password=s3cret&db=x",
    ],
)
def test_a_malformed_redis_uri_is_a_configuration_error_without_the_password(uri: str):
    if not importable("redis"):
        pytest.skip("redis-py is not installed: pip install 'flask-neuroon[redis]'")
    with pytest.raises(ConfigurationError, match="NEUROON_STORAGE_URI") as caught:
        storage_from_uri(uri)
    assert "s3cret" not in str(caught.value)
    assert "***" in str(caught.value)


def test_a_prefix_with_braces_is_refused():
    if not importable("redis"):
        pytest.skip("redis-py is not installed: pip install 'flask-neuroon[redis]'")
    with pytest.raises(ValueError, match="prefix"):
        RedisStorage(redis.Redis(), prefix="{x}")


# --- a Redis that is down or hung -------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


OPERATIONS: list[Callable[[Storage], object]] = [
    lambda s: s.add("o", "{}", NOW),
    lambda s: s.put_snapshot("o", {"p": "s"}, NOW),
    lambda s: s.take_snapshot("o", NOW),
    lambda s: s.claim(NOW, NOW + 60, "t", 10),
    lambda s: s.stats(NOW),
    lambda s: s.get("o"),
]


def test_a_redis_that_is_down_fails_fast_with_a_clear_error():
    if not importable("redis"):
        pytest.skip("redis-py is not installed: pip install 'flask-neuroon[redis]'")
    port = closed_port()
    storage = storage_from_uri(f"redis://:s3cret@127.0.0.1:{port}/0")
    for operation in OPERATIONS:
        started = time.monotonic()
        with pytest.raises(StorageError) as caught:
            operation(storage)
        assert time.monotonic() - started < 3
        message = str(caught.value)
        assert f"Redis (redis://:***@127.0.0.1:{port}/0)" in message
        assert "ConnectionError" in message and f"127.0.0.1:{port}" in message
        assert "s3cret" not in message and "s3cret" not in repr(caught.value)


def test_a_redis_that_does_not_answer_fails_within_the_timeout():
    """Something accepts the connection and never replies (a hung server, a bad proxy)."""
    if not importable("redis"):
        pytest.skip("redis-py is not installed: pip install 'flask-neuroon[redis]'")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)  # the kernel completes the handshakes; nobody ever reads
        port = server.getsockname()[1]
        storage = storage_from_uri(f"redis://:s3cret@127.0.0.1:{port}/0")
        started = time.monotonic()
        with pytest.raises(StorageError, match="Timeout") as caught:
            storage.add("o", "{}", NOW)
        elapsed = time.monotonic() - started
        storage.close()
    assert READ_TIMEOUT - 0.5 < elapsed < 3
    assert "s3cret" not in str(caught.value)


# --- keys ---------------------------------------------------------------------------------


def exercise(storage: Storage) -> None:
    """Every kind of key a storage writes."""
    for order_id in ("p", "s", "d", "l", "k"):
        storage.add(order_id, "{}", NOW)
    storage.claim(NOW, NOW + 60, "t", 1, order_id="s")
    storage.mark_sent("s", "t", NOW)
    storage.claim(NOW, NOW + 60, "t", 1, order_id="d")
    storage.mark_dead("d", "t", "x")
    storage.claim(NOW, NOW + 60, "t", 1, order_id="l")
    storage.claim(NOW, NOW + 60, "t", 1, order_id="p")
    storage.mark_retry("p", "t", NOW + 10, "x")
    storage.claim(NOW, NOW + 1000, "t", 1, order_id="k")
    storage.stats(NOW + 100)  # the lease of "l" lapses, the one of "k" holds
    storage.put_snapshot("snap", {"a": "b"}, NOW + 60)


@pytest.mark.services
def test_every_key_carries_the_hash_tag_of_its_prefix(make_storage: Callable[[], RedisStorage]):
    storage = make_storage()
    exercise(storage)
    keys = keys_of(storage.prefix)
    assert len(keys) == 14  # 5 rows, 7 outbox indexes, a snapshot and its index
    assert all(key.startswith("{" + storage.prefix + "}:") for key in keys)
    assert len({key_slot(key.encode()) for key in keys}) == 1


@pytest.mark.services
def test_two_prefixes_do_not_see_each_other(make_storage: Callable[[], RedisStorage]):
    one, two = make_storage(), make_storage()
    exercise(one)
    assert two.stats(NOW + 100) == OutboxStats()  # all zero
    assert two.get("p") is None and two.take_snapshot("snap", NOW) is None
    assert two.add("p", '{"two":1}', NOW) is True
    assert [row.order_id for row in two.claim(NOW, NOW + 60, "t2", 10)] == ["p"]
    assert two.purge_snapshots(NOW + 1000) == 0
    assert two.purge_sent(NOW + 1000) == 0
    assert two.make_due(NOW) == 0
    stats = one.stats(NOW + 100)
    assert (stats.pending, stats.due, stats.sent, stats.dead) == (3, 2, 1, 1)
    assert one.take_snapshot("snap", NOW) == {"a": "b"}
    row = one.get("p")
    assert row is not None and row.payload == "{}"


# --- processes ----------------------------------------------------------------------------


def _claim_until_empty(url: str, barrier: Any, results: Any, seed: int) -> None:
    """A worker process: claim in small random batches until nothing is due."""
    storage = RedisStorage.from_uri(url)
    rnd = random.Random(seed)
    barrier.wait(timeout=60)
    claimed: list[str] = []
    while True:
        rows = storage.claim(NOW, NOW + 600, uuid.uuid4().hex, rnd.randint(1, 9))
        if not rows:
            break
        claimed.extend(row.order_id for row in rows)
    storage.close()
    results.put(claimed)


@pytest.mark.services
@pytest.mark.slow
def test_eight_processes_claim_each_row_exactly_once(make_storage: Callable[[], RedisStorage]):
    storage = make_storage()
    expected = [f"o{index}" for index in range(2000)]
    for order_id in expected:
        storage.add(order_id, "{}", NOW)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    results = context.Queue()
    url = with_prefix(REDIS_URL, storage.prefix)
    workers = [
        context.Process(target=_claim_until_empty, args=(url, barrier, results, seed))
        for seed in range(8)
    ]
    for worker in workers:
        worker.start()
    try:
        per_worker = [results.get(timeout=120) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=30)
    assert all(worker.exitcode == 0 for worker in workers)
    claimed = [order_id for ids in per_worker for order_id in ids]
    assert len(claimed) == len(set(claimed)) == 2000  # none twice, none missed
    assert sorted(claimed) == sorted(expected)
    assert sum(1 for ids in per_worker if ids) >= 2  # they really competed
    assert all(row.attempts == 1 for row in storage.rows(PENDING, 5000))
    assert storage.stats(NOW).due == 0


# --- fork ---------------------------------------------------------------------------------


@pytest.mark.services
def test_a_forked_child_works_even_if_a_parent_thread_held_the_pool(
    make_storage: Callable[[], RedisStorage],
):
    """gunicorn --preload forks while another thread may be inside redis-py's pool."""
    from flask_neuroon import _fork

    storage = make_storage()
    storage.add("parent", "{}", NOW)  # the parent has a connection
    _fork.register(storage)
    held, release = threading.Event(), threading.Event()

    def hold_the_pool_lock() -> None:
        with storage._client.connection_pool._lock:
            held.set()
            release.wait()

    thread = threading.Thread(target=hold_the_pool_lock)
    thread.start()
    held.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: on purpose
        pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.alarm(10)
            code = 0 if storage.add("child", "{}", NOW) else 2
        finally:
            os._exit(code)
    release.set()
    thread.join()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert storage.get("child") is not None
    assert storage.add("parent2", "{}", NOW) is True  # the parent's pool is untouched


@pytest.mark.services
def test_close_then_use_again(make_storage: Callable[[], RedisStorage]):
    storage = make_storage()
    storage.add("o", "{}", NOW)
    storage.close()
    assert storage.get("o") is not None
