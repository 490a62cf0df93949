"""One contract, every storage backend (the flask-caching way): subclass StorageContract."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from flask_neuroon import ConfigurationError
from flask_neuroon.storage import DEAD, PENDING, SENT, Storage, storage_from_uri

NOW = 1_700_000_000.0


class StorageContract:
    """What every backend must do. Subclasses provide a ``storage`` fixture, empty."""

    @pytest.fixture
    def storage(self) -> Storage:  # pragma: no cover - every backend overrides it
        raise NotImplementedError

    # --- snapshots -------------------------------------------------------------------

    def test_snapshot_is_returned_once_then_gone(self, storage: Storage):
        storage.put_snapshot("o1", {"p1": "s1", "é": "ü"}, NOW + 60)
        assert storage.take_snapshot("o1", NOW) == {"p1": "s1", "é": "ü"}
        assert storage.take_snapshot("o1", NOW) is None

    def test_expired_snapshot_is_ignored_and_purged(self, storage: Storage):
        storage.put_snapshot("old", {"p": "s"}, NOW - 1)
        storage.put_snapshot("new", {"p": "s"}, NOW + 60)
        assert storage.purge_snapshots(NOW) == 1
        assert storage.take_snapshot("old", NOW) is None
        storage.put_snapshot("old2", {"p": "s"}, NOW + 10)
        assert storage.take_snapshot("old2", NOW + 11) is None
        assert storage.take_snapshot("new", NOW) == {"p": "s"}

    def test_peek_leaves_the_snapshot_and_delete_removes_it(self, storage: Storage):
        storage.put_snapshot("o", {"a": "1"}, NOW + 60)
        assert storage.peek_snapshot("o", NOW) == {"a": "1"}
        assert storage.peek_snapshot("o", NOW) == {"a": "1"}
        assert storage.peek_snapshot("o", NOW + 60) is None  # expired by then
        storage.delete_snapshot("o")
        storage.delete_snapshot("o")  # absent: no error
        assert storage.peek_snapshot("o", NOW) is None
        assert storage.take_snapshot("o", NOW) is None

    def test_snapshot_is_replaced_by_a_newer_one(self, storage: Storage):
        storage.put_snapshot("o", {"a": "1"}, NOW + 60)
        storage.put_snapshot("o", {"b": "2"}, NOW + 60)
        assert storage.take_snapshot("o", NOW) == {"b": "2"}

    def test_a_snapshot_is_taken_by_one_reader_only(self, storage: Storage):
        storage.put_snapshot("race", {"p": "s"}, NOW + 60)
        results: list[object] = []
        threads = [
            threading.Thread(target=lambda: results.append(storage.take_snapshot("race", NOW)))
            for _ in range(8)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [r for r in results if r is not None] == [{"p": "s"}]

    # --- outbox ----------------------------------------------------------------------

    def test_an_order_id_is_added_once(self, storage: Storage):
        assert storage.add("o1", '{"orderId":"o1"}', NOW) is True
        assert storage.add("o1", '{"orderId":"other"}', NOW) is False
        row = storage.get("o1")
        assert row is not None
        assert (row.payload, row.state, row.attempts) == ('{"orderId":"o1"}', PENDING, 0)
        assert row.created_at == NOW

    def test_claim_takes_due_rows_bumps_attempts_and_leases_them(self, storage: Storage):
        for index in range(3):
            storage.add(f"o{index}", "{}", NOW + index)
        claimed = storage.claim(NOW + 5, NOW + 65, "t1", limit=2)
        assert [row.order_id for row in claimed] == ["o0", "o1"]
        assert all(row.attempts == 1 and row.claim_token == "t1" for row in claimed)
        assert all(row.lease_until == NOW + 65 for row in claimed)
        # Leased rows are not claimable again, nor listed as due, until the lease ends.
        assert [row.order_id for row in storage.claim(NOW + 6, NOW + 66, "t2", 10)] == ["o2"]
        assert storage.claim(NOW + 7, NOW + 67, "t3", 10) == []
        assert storage.due_ids(NOW + 7, 10) == []
        again = storage.claim(NOW + 70, NOW + 130, "t4", 10)
        assert sorted(row.order_id for row in again) == ["o0", "o1", "o2"]
        assert all(row.attempts == 2 for row in again)

    def test_claim_of_one_order_id(self, storage: Storage):
        storage.add("a", "{}", NOW)
        storage.add("b", "{}", NOW)
        assert [row.order_id for row in storage.claim(NOW, NOW + 60, "t", 10, order_id="b")] == [
            "b"
        ]
        assert storage.claim(NOW, NOW + 60, "t2", 10, order_id="b") == []
        assert storage.claim(NOW, NOW + 60, "t3", 10, order_id="missing") == []

    def test_rows_not_yet_due_are_not_claimed(self, storage: Storage):
        storage.add("o", "{}", NOW)
        assert len(storage.claim(NOW, NOW + 60, "t", 1)) == 1
        assert storage.mark_retry("o", "t", NOW + 300, "HTTP 503") is True
        assert storage.claim(NOW + 299, NOW + 360, "t2", 1) == []
        assert storage.due_ids(NOW + 299, 10) == []
        assert storage.due_ids(NOW + 300, 10) == ["o"]
        [again] = storage.claim(NOW + 300, NOW + 360, "t2", 1)
        assert (again.attempts, again.last_error) == (2, "HTTP 503")

    def test_make_due_brings_waiting_retries_forward(self, storage: Storage):
        storage.add("o", "{}", NOW)
        storage.claim(NOW, NOW + 60, "t", 1)
        storage.mark_retry("o", "t", NOW + 3600, "HTTP 503")
        storage.add("fresh", "{}", NOW)
        assert storage.make_due(NOW + 1) == 1
        assert sorted(storage.due_ids(NOW + 1, 10)) == ["fresh", "o"]

    def test_sent_rows_leave_the_queue(self, storage: Storage):
        storage.add("o", "{}", NOW)
        storage.claim(NOW, NOW + 60, "t", 1)
        assert storage.mark_sent("o", "t", NOW + 1) is True
        row = storage.get("o")
        assert row is not None
        assert (row.state, row.synced_at, row.claim_token, row.lease_until) == (
            SENT,
            NOW + 1,
            None,
            None,
        )
        assert storage.claim(NOW + 1000, NOW + 2000, "t2", 10) == []
        assert storage.add("o", "{}", NOW + 5) is False

    def test_a_lost_claim_cannot_write_its_result(self, storage: Storage):
        storage.add("o", "{}", NOW)
        storage.claim(NOW, NOW + 60, "slow", 1)
        # The lease ran out; another worker claimed and delivered the row.
        storage.claim(NOW + 61, NOW + 121, "fast", 1)
        assert storage.mark_sent("o", "fast", NOW + 62) is True
        assert storage.mark_retry("o", "slow", NOW + 500, "timeout") is False
        assert storage.mark_dead("o", "slow", "timeout") is False
        row = storage.get("o")
        assert row is not None and row.state == SENT

    def test_dead_letters_are_listed_requeued_and_dropped(self, storage: Storage):
        storage.add("d1", "{}", NOW)
        storage.add("d2", "{}", NOW + 1)
        for order_id in ("d1", "d2"):
            storage.claim(NOW + 2, NOW + 62, order_id, 1, order_id=order_id)
            assert storage.mark_dead(order_id, order_id, "HTTP 400: orderId is required") is True
        assert [row.order_id for row in storage.rows(DEAD, 10)] == ["d1", "d2"]
        assert storage.rows(DEAD, 10)[0].last_error == "HTTP 400: orderId is required"
        assert storage.requeue("d1", NOW + 10) is True
        assert storage.requeue("d1", NOW + 10) is False  # no longer dead
        row = storage.get("d1")
        assert row is not None and (row.state, row.attempts, row.next_attempt_at) == (
            PENDING,
            0,
            NOW + 10,
        )
        assert storage.delete("d2", DEAD) is True
        assert storage.get("d2") is None
        assert storage.delete("d1", DEAD) is False

    def test_stats_count_each_state(self, storage: Storage):
        storage.add("p1", "{}", NOW)
        storage.add("p2", "{}", NOW + 10)
        storage.add("s", "{}", NOW)
        storage.add("d", "{}", NOW)
        storage.claim(NOW, NOW + 60, "t", 1, order_id="s")
        storage.mark_sent("s", "t", NOW)
        storage.claim(NOW, NOW + 60, "t", 1, order_id="d")
        storage.mark_dead("d", "t", "x")
        storage.claim(NOW + 10, NOW + 60, "t", 1, order_id="p2")  # leased: not due
        stats = storage.stats(NOW + 20)
        assert (stats.pending, stats.due, stats.sent, stats.dead) == (2, 1, 1, 1)
        assert stats.oldest_pending_age == 20

    def test_purge_sent_keeps_recent_and_unsent_rows(self, storage: Storage):
        for order_id in ("old", "new"):
            storage.add(order_id, "{}", NOW)
            storage.claim(NOW, NOW + 60, order_id, 1, order_id=order_id)
        storage.mark_sent("old", "old", NOW)
        storage.mark_sent("new", "new", NOW + 100)
        storage.add("pending", "{}", NOW)
        assert storage.purge_sent(NOW + 50) == 1
        assert storage.get("old") is None
        assert storage.get("new") is not None and storage.get("pending") is not None

    def test_concurrent_claimers_never_share_a_row(self, storage: Storage):
        for index in range(200):
            storage.add(f"o{index}", "{}", NOW)
        claimed: list[str] = []
        lock = threading.Lock()

        def claimer() -> None:
            while True:
                rows = storage.claim(NOW, NOW + 60, uuid.uuid4().hex, 7)
                if not rows:
                    return
                with lock:
                    claimed.extend(row.order_id for row in rows)

        threads = [threading.Thread(target=claimer) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(claimed) == sorted(f"o{index}" for index in range(200))


class TestMemoryStorage(StorageContract):
    @pytest.fixture
    def storage(self) -> Storage:
        return storage_from_uri("memory://")


class TestSQLiteStorage(StorageContract):
    @pytest.fixture
    def storage(self, tmp_path: Path) -> Iterator[Storage]:
        backend = storage_from_uri("sqlite:///neuroon.sqlite3", instance_path=str(tmp_path))
        yield backend
        backend.close()

    def test_relative_path_lives_in_the_instance_folder(self, tmp_path: Path):
        backend = storage_from_uri("sqlite:///sub/n.db", instance_path=str(tmp_path / "inst"))
        backend.add("o", "{}", time.time())
        backend.close()
        assert (tmp_path / "inst" / "sub" / "n.db").exists()

    def test_absolute_path(self, tmp_path: Path):
        backend = storage_from_uri(f"sqlite:///{tmp_path}/abs.db", instance_path="/nonexistent")
        backend.add("o", "{}", time.time())
        backend.close()
        assert (tmp_path / "abs.db").exists()

    def test_a_corrupt_snapshot_reads_as_empty(self, storage: Storage):
        storage.put_snapshot("o", {"a": "1"}, NOW + 60)
        storage._execute("UPDATE neuroon_snapshots SET clicks = 'not json'")  # type: ignore[attr-defined]
        assert storage.take_snapshot("o", NOW) == {}

    def test_a_new_file_another_worker_is_writing_is_waited_for_not_refused(self, tmp_path: Path):
        # Two workers' first requests on a new file: one holds its write lock while the
        # other switches it to WAL, which SQLite refuses at once ("database is locked")
        # instead of waiting. That refusal once sent an order directly while the other
        # worker queued it too: the API got it twice.
        import sqlite3

        path = tmp_path / "new.sqlite3"
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("CREATE TABLE shop_orders (id TEXT)")
        other.execute("BEGIN IMMEDIATE")
        threading.Timer(0.3, other.execute, ("COMMIT",)).start()
        backend = storage_from_uri(f"sqlite:///{path}", instance_path=str(tmp_path))
        started = time.monotonic()
        try:
            assert backend.add("o", "{}", NOW) is True  # waited for the lock, then queued
        finally:
            backend.close()
            other.close()
        assert time.monotonic() - started >= 0.25


@pytest.mark.parametrize(
    "uri", ["redis+x://", "sqlite://", "sqlite:///", "nonsense", "sqlite:///a.db?synchronous=maybe"]
)
def test_unknown_or_malformed_storage_uri_is_a_configuration_error(uri: str):
    with pytest.raises(ConfigurationError, match="NEUROON_STORAGE_URI"):
        storage_from_uri(uri, instance_path="/tmp")
