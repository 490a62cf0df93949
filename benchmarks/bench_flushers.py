"""5. Concurrent flushers: 1, 2, 4 and 8 processes running ``flask neuroon flush`` at once.

M due rows are put in a shared outbox (SQLite file, then PostgreSQL), then K flusher
processes (:mod:`benchmarks.flusher`, each the benchmark shop with its default 4 sender
threads) are started, wait at a barrier, and are released together. Timed from the
release until the sink has received all M orders: rows per second claimed and sent,
and, against the single flusher's rate in the same run, the scaling ratio. Duplicates
are the sink's repeated order ids (must be 0); the outbox must end with M sent rows.

PostgreSQL: ``NEUROON_BENCH_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/neuroon_bench``; the database is created
when missing). Skipped, with the reason printed, when it cannot be reached.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from typing import Any

from flask_neuroon.conversion import dumps_payload
from flask_neuroon.orders import adapt_order
from flask_neuroon.storage import Storage, storage_from_uri

from .apps import order
from .bench_throughput import CLICKS
from .common import PYTHON, ROOT, Figure, Outcome, child_env, log
from .sink import SinkProcess

NAME = "flushers"
TITLE = "concurrent flusher processes on one outbox: rows/s and duplicates"
POSTGRES_URL = os.environ.get(
    "NEUROON_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/neuroon_bench"
)
PROCESSES = (1, 2, 4, 8)


def _postgres_ready() -> str | None:
    """None when the benchmark database is usable, else why not."""
    try:
        import psycopg
        from sqlalchemy.engine import make_url
    except ImportError as exc:
        return f"driver missing: {exc}"
    url = make_url(POSTGRES_URL)
    params: dict[str, Any] = {
        "host": url.host or "127.0.0.1",
        "port": url.port or 5432,
        "user": url.username or "postgres",
        "password": url.password or "",
        "connect_timeout": 3,
    }
    try:
        with psycopg.connect(dbname=url.database, **params) as connection:
            connection.execute("SELECT 1")
        return None
    except psycopg.OperationalError as exc:
        if "does not exist" not in str(exc):
            return f"PostgreSQL unreachable at {url.render_as_string(hide_password=True)}: {exc}"
    try:
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as connection:
            connection.execute(f'CREATE DATABASE "{url.database}"')
        return None
    except psycopg.Error as exc:
        return f"cannot create database {url.database}: {exc}"


def _fresh_storage(uri: str) -> Storage:
    storage = storage_from_uri(uri)
    if uri.startswith("postgresql"):
        from sqlalchemy import text

        engine = storage.engine  # type: ignore[attr-defined]
        with engine.begin() as connection:
            connection.execute(text("DROP TABLE IF EXISTS neuroon_outbox, neuroon_snapshots"))
        storage.close()
        storage = storage_from_uri(uri)
    return storage


def _fill(storage: Storage, count: int, prefix: str) -> None:
    from flask_neuroon.conversion import build_payload

    now = time.time()
    for number in range(count):
        the_order = adapt_order(order(number, CLICKS, prefix=prefix), [])
        payload = build_payload(the_order, CLICKS)
        storage.add(payload["orderId"], dumps_payload(payload), now)


def _one_run(uri: str, processes: int, count: int, sink: SinkProcess, tag: str) -> dict[str, Any]:
    storage = _fresh_storage(uri)
    try:
        _fill(storage, count, tag)
        sink.reset()
        with tempfile.TemporaryDirectory(prefix="bench-barrier-") as barrier:
            children = [
                subprocess.Popen(
                    [
                        PYTHON,
                        "-m",
                        "benchmarks.flusher",
                        "--uri",
                        uri,
                        "--api-url",
                        sink.url,
                        "--barrier",
                        barrier,
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                    env=child_env(),
                    cwd=str(ROOT),
                )
                for _ in range(processes)
            ]
            try:
                deadline = time.monotonic() + 120
                while len([n for n in os.listdir(barrier) if n.startswith("ready-")]) < processes:
                    if time.monotonic() > deadline or any(c.poll() is not None for c in children):
                        raise RuntimeError("flusher processes did not get ready")
                    time.sleep(0.01)
                started = time.monotonic()
                open(os.path.join(barrier, "go"), "w").close()
                done_at = sink.wait_distinct(count, timeout=600, poll=0.005)
                elapsed = (done_at or time.monotonic()) - started
                reports: list[dict[str, Any]] = []
                for child in children:
                    out, _ = child.communicate(timeout=600)
                    lines = [line for line in out.splitlines() if line.startswith("{")]
                    reports.append(json.loads(lines[-1]) if lines else {"exit": child.returncode})
            finally:
                for child in children:
                    if child.poll() is None:
                        child.kill()
                        child.wait()
        stats = sink.stats()
        outbox = storage.stats(time.time())
    finally:
        storage.close()
    return {
        "seconds": elapsed,
        "rate": count / elapsed,
        "sink": stats,
        "outbox_sent": outbox.sent,
        "outbox_pending": outbox.pending,
        "per_process_sent": [
            sum(r.get("outcomes", {}).get(k, 0) for k in ("sent", "duplicate")) for r in reports
        ],
    }


def run(long: bool = False) -> Outcome:
    outcome = Outcome(NAME, TITLE, long=long)
    count = 20_000 if long else 2_000
    outcome.setup = {
        "rows": count,
        "processes": list(PROCESSES),
        "sender_threads_per_process": 4,
        "command": "flask neuroon flush (CLI runner in each process)",
        "postgres_url": POSTGRES_URL,
    }
    backends: list[tuple[str, str | None]] = []
    tmp = tempfile.TemporaryDirectory(prefix="bench-flushers-")
    backends.append(("SQLite", f"sqlite:///{os.path.join(tmp.name, 'shared.db')}"))
    reason = _postgres_ready()
    if reason is None:
        backends.append(("PostgreSQL", POSTGRES_URL))
    else:
        outcome.skipped = f"PostgreSQL skipped: {reason}"
        print(f"flushers: {outcome.skipped}")
    try:
        with SinkProcess() as sink:
            for label, uri in backends:
                assert uri is not None
                results = {}
                for processes in PROCESSES:
                    if label == "SQLite":
                        path = os.path.join(tmp.name, "shared.db")
                        for suffix in ("", "-wal", "-shm"):
                            if os.path.exists(path + suffix):
                                os.unlink(path + suffix)
                    results[processes] = result = _one_run(
                        uri, processes, count, sink, f"{label[0]}{processes}"
                    )
                    log(
                        f"flushers: {label}, {processes} process(es): {result['rate']:,.0f} rows/s,"
                        f" sink {result['sink']}, per process {result['per_process_sent']}"
                    )
                single = results[1]["rate"]
                for processes, result in results.items():
                    duplicates = result["sink"]["duplicates"]
                    lost = count - result["sink"]["distinct"]
                    outcome.figures.append(
                        Figure(
                            f"{label}: {processes} flusher process(es), rows/s",
                            result["rate"],
                            "rows/s",
                            baseline=single,
                            baseline_label="1 process",
                            note=(
                                f"{duplicates} duplicates, {lost} lost, outbox sent "
                                f"{result['outbox_sent']}/{count}; sent per process "
                                f"{result['per_process_sent']}"
                            ),
                            extra=result,
                        )
                    )
                    outcome.figures.append(
                        Figure(
                            f"{label}: {processes} process(es), duplicates / lost",
                            duplicates + lost,
                            "",
                            target="0",
                            met=duplicates == 0 and lost == 0,
                        )
                    )
    finally:
        tmp.cleanup()
    return outcome
