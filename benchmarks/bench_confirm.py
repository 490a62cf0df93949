"""2. Time added to the confirm view: ``track_conversion`` as the view sees it.

The shop's confirm view is called through Flask (its test client, in this process, with
the 4 KiB click cookie) at a steady 200 orders/s, while the extension's sender threads
work in the background of the same process, as they do in a gunicorn worker (its log
lines go to a file, as a shop's would). After one warm-up order, the view times one
call with ``time.perf_counter``:

* ``track_conversion(order)`` with the SQLite outbox on (the default) and off;
* the baseline, the vendor's basic recipe: build the same payload and ``requests.post``
  it synchronously in the view (timeouts ``(3.05, 10)`` as the extension's).

Against an API (the fast sink of :mod:`benchmarks.sink`, in another process) that is
healthy, slow (2 s before every answer) and down (a loopback port nobody listens on: the
connection is refused). p50 / p99 / max per case; the ratio is the case's p99 over the
baseline's p99 for the same API. A slow baseline takes 2 s per call, so it gets only a
handful of calls.

The jitter floor (for information): the same view tracks its order untimed, so that
the senders are as busy, then times a fixed workload of about track_conversion's p50
that lets go of the GIL as it does (four SQLite statements on a private in-memory
database between slices of pure Python). What the floor's p99 shows, any code in that
process would see: a track_conversion p99 near it is the machine's and the GIL's.
"""

from __future__ import annotations

import contextlib
import sqlite3
import tempfile
import time
from collections.abc import Callable

import requests
from flask import Flask

from flask_neuroon import Neuroon
from flask_neuroon.conversion import dumps_payload

from .apps import API_KEY, ORIGIN, create_app, order, stop
from .bench_cookie_parse import build_header
from .bench_throughput import quiet_logs, unquiet_logs
from .common import Figure, Outcome, free_port, log, percentile
from .sink import SinkProcess

NAME = "confirm"
TITLE = "time track_conversion adds to the confirm view (p50/p99/max)"
TARGET_P99_MS = 2.0
SLOW_SECONDS = 2.0
BASELINE = "sync requests.post (baseline)"
FLOOR = "jitter floor, outbox on (info)"


def _app(api_url: str, instance: str, outbox: bool) -> tuple[Flask, Neuroon, list[float]]:
    app = create_app(True, api_url=api_url, instance=instance, NEUROON_OUTBOX=outbox)
    neuroon: Neuroon = app.extensions["bench_neuroon"]
    state = app.extensions["neuroon"]
    endpoint = state.settings.endpoint
    samples: list[float] = []
    session_headers = {
        "X-Shop-API-Key": API_KEY,
        "Origin": ORIGIN,
        "Content-Type": "application/json",
    }

    @app.post("/confirm/<number>")
    def confirm(number: str) -> str:
        the_order = order(number, neuroon.clicks, prefix=f"c{id(app)}")
        started = time.perf_counter()
        neuroon.track_conversion(the_order)
        samples.append(time.perf_counter() - started)
        return "thanks"

    @app.post("/confirm-sync/<number>")
    def confirm_sync(number: str) -> str:
        the_order = order(number, neuroon.clicks, prefix=f"s{id(app)}")
        started = time.perf_counter()
        body = dumps_payload(neuroon.build_payload(the_order, neuroon.clicks))
        with contextlib.suppress(requests.RequestException):
            requests.post(endpoint, data=body, headers=session_headers, timeout=(3.05, 10))
        samples.append(time.perf_counter() - started)
        return "thanks"

    floor_db = sqlite3.connect(":memory:", check_same_thread=False)

    @app.post("/floor/<number>")
    def floor(number: str) -> str:
        # The same tracking (untimed: the sender threads are as busy), then, timed, a
        # fixed workload about the size of track_conversion's p50 that lets go of the GIL
        # the way it does: four SQLite statements (on a private in-memory database, so no
        # lock is shared with the senders) between slices of pure Python. Its tail is
        # the jitter any code in this process sees, whatever it does.
        neuroon.track_conversion(order(number, neuroon.clicks, prefix=f"f{id(app)}"))
        started = time.perf_counter()
        for step in range(4):
            until = time.perf_counter() + 0.00005
            while time.perf_counter() < until:
                pass
            floor_db.execute("SELECT ?", (step,)).fetchone()
        samples.append(time.perf_counter() - started)
        return "thanks"

    return app, neuroon, samples


def _drive(app: Flask, path: str, count: int, rate: float, header: str, tag: str = "") -> None:
    client = app.test_client()
    interval = 1.0 / rate
    start = time.monotonic()
    for number in range(count):
        delay = start + number * interval - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        response = client.post(f"{path}/{tag}{number}", environ_base={"HTTP_COOKIE": header})
        assert response.status_code == 200, response.status_code


def _case(
    api_url: str, outbox: bool, path: str, count: int, rate: float, header: str
) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="bench-confirm-") as instance:
        handler = quiet_logs(instance)
        app, neuroon, samples = _app(api_url, instance, outbox)
        try:
            with app.app_context():
                try:
                    # One order first: sender threads and connections exist, as in a
                    # worker that has served before.
                    _drive(app, path, 1, rate, header, "w")
                    neuroon.flush(5)
                    samples.clear()
                    _drive(app, path, count, rate, header)
                finally:
                    stop(app)
        finally:
            unquiet_logs(handler)
    return samples


def run(long: bool = False) -> Outcome:
    outcome = Outcome(NAME, TITLE, long=long)
    header, _clicks = build_header()
    count, rate = (3000, 200.0) if long else (400, 200.0)
    slow_baseline = 6 if long else 3
    outcome.setup = {
        "orders_per_case": count,
        "pace_per_second": rate,
        "slow_baseline_calls": slow_baseline,
        "slow_answer_seconds": SLOW_SECONDS,
        "sender_threads": 4,
        "outbox_storage": "SQLite (WAL, synchronous=NORMAL) in a temporary directory",
    }
    with SinkProcess() as sink:
        apis: dict[str, tuple[str, Callable[[], None]]] = {
            "healthy": (sink.url, lambda: sink.slow(0)),
            "slow": (sink.url, lambda: sink.slow(SLOW_SECONDS)),
            "down": (f"http://127.0.0.1:{free_port()}", lambda: sink.slow(0)),
        }
        for api, (url, prepare) in apis.items():
            prepare()
            cases: list[tuple[str, bool, str, int]] = [
                (BASELINE, False, "/confirm-sync", slow_baseline if api == "slow" else count),
                ("outbox on", True, "/confirm", count),
                ("outbox off", False, "/confirm", count),
                (FLOOR, True, "/floor", count),
            ]
            results: dict[str, list[float]] = {}
            for label, outbox, path, n in cases:
                log(f"confirm: API {api}, {label}, {n} orders")
                results[label] = _case(url, outbox, path, n, rate, header)
            base = results[BASELINE]
            floor_p99 = percentile(results[FLOOR], 99) * 1e3
            base_p99 = percentile(base, 99) * 1e3
            for label, samples in results.items():
                p50, p99 = percentile(samples, 50) * 1e3, percentile(samples, 99) * 1e3
                worst = max(samples) * 1e3
                is_base = label == BASELINE
                figure = Figure(
                    f"API {api}: {label} p99",
                    p99,
                    "ms",
                    baseline=None if is_base else base_p99,
                    baseline_label="" if is_base else "sync post p99",
                    note=f"p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {worst:.3f} ms, n={len(samples)}",  # noqa: E501
                    extra={"p50_ms": p50, "p99_ms": p99, "max_ms": worst, "n": len(samples)},
                )
                if label == "outbox on":
                    figure.target = f"<= {TARGET_P99_MS:g} ms"
                    figure.met = p99 <= TARGET_P99_MS
                    figure.note += (
                        f"; the jitter floor's p99 in the same conditions: {floor_p99:.3f} ms"
                    )
                outcome.figures.append(figure)
        sink.slow(0)
    return outcome
