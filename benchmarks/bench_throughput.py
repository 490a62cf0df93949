"""3. Delivery throughput to a fast loopback API: the extension against the naive loop.

The API is :mod:`benchmarks.sink` in another process (asyncio, keep-alive, counts order
ids). In this process, one after the other (the order alternates between repeats):

* **extension**: ``track_conversion(order, clicks=...)`` for N orders as fast as the loop
  goes (SQLite outbox, the default 4 sender threads), timed from the first call until the
  sink has received all N distinct orders: conversions delivered per second, end to end.
* **naive**: the vendor's basic recipe in a loop, build the payload and
  ``requests.post`` it, one call (one new connection) per order.

Each repeat's ratio is extension / naive; the figure is their median. For information:
the naive loop with one keep-alive ``requests.Session``, the sink's own ceiling (``wrk``
posting to it, when installed), and the same extension and session loop against
``flask_neuroon.testing.FakeNeuroonAPI`` (``python -m flask_neuroon.testing``), to show
whether the fake, rather than the sender, would be the bottleneck.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any

import requests

from flask_neuroon import Neuroon
from flask_neuroon.conversion import dumps_payload

from .apps import API_KEY, ORIGIN, SHOP_ID, create_app, order, stop
from .common import PYTHON, ROOT, Figure, Outcome, child_env, log, median, spread, stop_process
from .sink import SinkProcess

NAME = "throughput"
TITLE = "conversions/s delivered to a fast loopback API, extension vs naive loop"
CLICKS = {"SKU-00000-BLK-M": "9b2f6c1e-3d4a-4e5b-8c7d-0a1b2c3d4e5f"}
HEADERS = {"X-Shop-API-Key": API_KEY, "Origin": ORIGIN, "Content-Type": "application/json"}


def quiet_logs(directory: str) -> logging.Handler:
    """Send flask-neuroon's log lines to a file, as a shop's logging setup would."""
    handler = logging.FileHandler(os.path.join(directory, "neuroon.log"))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("flask_neuroon")
    logger.addHandler(handler)
    logger.propagate = False
    return handler


def unquiet_logs(handler: logging.Handler) -> None:
    logger = logging.getLogger("flask_neuroon")
    logger.removeHandler(handler)
    logger.propagate = True
    handler.close()


def delivered(neuroon_state: Any) -> int:
    outcomes = neuroon_state.outcomes
    return int(outcomes["sent"] + outcomes["duplicate"])


def _orders(count: int, prefix: str) -> list[dict[str, Any]]:
    return [order(number, CLICKS, prefix=prefix) for number in range(count)]


def extension_run(
    api_url: str, count: int, prefix: str, drain: bool = False, **config: Any
) -> tuple[float, Any]:
    """Deliver ``count`` orders through the extension; (seconds, the app's state).

    ``drain=False``: end to end, ``track_conversion`` of every order as fast as the loop
    goes, timed until the last one is delivered. ``drain=True``: the rows are put in the
    outbox first (not timed), then ``neuroon.flush()`` sends them, as ``flask neuroon
    flush`` or the sweeper would: the sender side alone.
    """
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as instance:
        handler = quiet_logs(instance)
        app = create_app(True, api_url=api_url, instance=instance, **config)
        neuroon: Neuroon = app.extensions["bench_neuroon"]
        state = app.extensions["neuroon"]
        orders = _orders(count, prefix)
        try:
            with app.app_context():
                if drain:
                    for each in orders:
                        body = dumps_payload(neuroon.build_payload(each, CLICKS))
                        state.outbox.add(each["id"], body)
                started = time.monotonic()
                if drain:
                    neuroon.flush(timeout=300)
                else:
                    for each in orders:
                        neuroon.track_conversion(each, clicks=CLICKS)
                deadline = started + 300
                while delivered(state) < count and time.monotonic() < deadline:
                    time.sleep(0.001)
                elapsed = time.monotonic() - started
                stop(app)
        finally:
            unquiet_logs(handler)
    return elapsed, state


def naive_run(endpoint: str, count: int, prefix: str, session: bool = False) -> float:
    """The vendor's recipe in a loop: one ``requests.post`` per order (bodies pre-built)."""
    builder = Neuroon()
    bodies = [dumps_payload(builder.build_payload(each, CLICKS)) for each in _orders(count, prefix)]
    post: Callable[..., requests.Response] = requests.Session().post if session else requests.post
    started = time.monotonic()
    for body in bodies:
        with contextlib.suppress(requests.RequestException):
            post(endpoint, data=body, headers=HEADERS, timeout=(3.05, 10))
    return time.monotonic() - started


def wrk_post_ceiling(url: str, seconds: int = 2) -> float | None:
    if not shutil.which("wrk"):
        return None
    body = json.dumps({"orderId": "ceiling", "orderValue": 1, "currency": "EUR", "conversions": []})
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            f'wrk.headers["X-Shop-API-Key"] = "{API_KEY}"\n'
            f'wrk.headers["Origin"] = "{ORIGIN}"\n'
        )
    try:
        out = subprocess.run(
            ["wrk", "-t1", "-c4", f"-d{seconds}s", "-s", script.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(script.name)
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


class FakeAPIProcess:
    """``python -m flask_neuroon.testing`` in a child process."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "flask_neuroon.testing", "--port", "0", "--shop-id", SHOP_ID],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=child_env(NEUROON_API_KEY=API_KEY),
            cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url:
            raise RuntimeError("the fake API did not start")

    def stats(self) -> dict[str, Any]:
        response = requests.get(f"{self.url}/api/_fake/conversions", timeout=30)
        return response.json()["stats"]  # type: ignore[no-any-return]

    def close(self) -> None:
        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run(long: bool = False) -> Outcome:
    outcome = Outcome(NAME, TITLE, long=long)
    count, repeats = (20000, 5) if long else (3000, 3)
    naive_count = count // 2
    outcome.setup = {
        "orders_per_extension_run": count,
        "orders_per_naive_run": naive_count,
        "repeats": repeats,
        "order_of_runs": "rotated each repeat",
        "sender_threads": "4; a drain starts with one, the others join while sends wait",
        "outbox_storage": "SQLite (WAL, synchronous=NORMAL) in a temporary directory",
        "naive": "requests.post per order (a new connection each), bodies built beforehand",
    }
    rates: dict[str, list[float]] = {"drain": [], "e2e": [], "naive": []}
    with SinkProcess() as sink:
        endpoint = f"{sink.url}/api/plugin/shops/{SHOP_ID}/track/conversion"
        naive_run(endpoint, 100, "warm")
        kinds = ["drain", "e2e", "naive"]
        for number in range(repeats):
            for kind in kinds[number % 3 :] + kinds[: number % 3]:
                sink.reset()
                if kind == "naive":
                    rate = naive_count / naive_run(endpoint, naive_count, f"n{number}")
                else:
                    seconds, _state = extension_run(
                        sink.url, count, f"{kind}{number}", drain=kind == "drain"
                    )
                    stats = sink.stats()
                    if stats["distinct"] != count or stats["duplicates"]:
                        raise RuntimeError(f"{kind} run delivered {stats}, expected {count}")
                    rate = count / seconds
                rates[kind].append(rate)
                log(f"throughput: repeat {number + 1}, {kind}: {rate:,.0f}/s")
        sink.reset()
        session_rate = naive_count / naive_run(endpoint, naive_count, "s", session=True)
        ceiling = wrk_post_ceiling(endpoint)

    naive = median(rates["naive"])
    for kind, label, target in (
        ("drain", "extension delivering from the outbox (flush)", True),
        ("e2e", "extension end to end: track_conversion + delivery", False),
    ):
        ratios = [e / n for e, n in zip(rates[kind], rates["naive"], strict=False)]
        ratio, value = median(ratios), median(rates[kind])
        outcome.figures.append(
            Figure(
                label,
                value,
                "orders/s",
                baseline=naive,
                baseline_label="naive requests.post loop",
                ratio=ratio,
                spread=spread(ratios),
                target=">= 2x naive and >= 1,000/s",
                met=ratio >= 2.0 and value >= 1000,
                note="" if target else "the same loop also enqueues (durable write) every order",
                extra={"rates": rates[kind], "naive": rates["naive"], "ratios": ratios},
            )
        )
    outcome.figures.append(
        Figure(
            "naive loop with one keep-alive Session (info)",
            session_rate,
            "orders/s",
            baseline=naive,
            baseline_label="naive requests.post loop",
        )
    )
    if ceiling is not None:
        outcome.figures.append(
            Figure(
                "sink ceiling: wrk -c4 POSTs (info)",
                ceiling,
                "req/s",
                baseline=median(rates["drain"]),
                baseline_label="extension drain",
            )
        )

    log("throughput: against FakeNeuroonAPI")
    fake = FakeAPIProcess()
    try:
        fake_endpoint = f"{fake.url}/api/plugin/shops/{SHOP_ID}/track/conversion"
        fake_count = min(count, 2000)
        fake_session = fake_count / naive_run(fake_endpoint, fake_count, "fs", session=True)
        seconds, _state = extension_run(fake.url, fake_count, "fe", drain=True)
        fake_stats = fake.stats()
        fake_ceiling = wrk_post_ceiling(fake_endpoint)
    finally:
        fake.close()
    outcome.figures += [
        Figure(
            "extension drain against FakeNeuroonAPI (info)",
            fake_count / seconds,
            "orders/s",
            baseline=median(rates["drain"]),
            baseline_label="same, against the sink",
            note=f"the fake's counters afterwards: {fake_stats}",
        ),
        Figure(
            "keep-alive Session loop against FakeNeuroonAPI (info)",
            fake_session,
            "orders/s",
            baseline=session_rate,
            baseline_label="same, against the sink",
        ),
    ]
    if fake_ceiling is not None:
        outcome.figures.append(
            Figure(
                "FakeNeuroonAPI ceiling: wrk -c4 POSTs (info)",
                fake_ceiling,
                "req/s",
                baseline=ceiling,
                baseline_label="sink ceiling",
            )
        )
    return outcome
