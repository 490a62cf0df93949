"""Several processes: once-only delivery across processes, and gunicorn --preload workers."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from flask import Flask

from flask_neuroon import Neuroon, Order, OrderLine
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import API_KEY, base_config

ROOT = Path(__file__).resolve().parent.parent


def _order(order_id: str) -> Order:
    return Order(
        id=order_id,
        total=Decimal("10.00"),
        currency="EUR",
        lines=[OrderLine(product_id="P1", quantity=1, unit_price=Decimal("10.00"))],
    )


def _confirm_in_a_process(api_url: str, tmp: str, order_ids: list[str], start: float) -> None:
    """A worker process: the same confirm handler, started at the same instant as its twin."""
    app = Flask("worker", instance_path=tmp)
    app.config.update(base_config(None, Path(tmp), NEUROON_API_URL=api_url))
    app.config["NEUROON_DISPATCH"] = "thread"
    neuroon = Neuroon(app)
    time.sleep(max(0.0, start - time.time()))
    with app.app_context():
        for order_id in order_ids:
            neuroon.track_conversion(_order(order_id), clicks={"P1": "log"})
        deadline = time.time() + 30
        # flush() counts every pending row of the shared outbox, the twin's too.
        while neuroon.flush(1) and time.time() < deadline:
            pass
        assert neuroon.flush(0) == 0


def test_two_processes_confirming_the_same_orders_at_once_deliver_each_once(
    api: FakeNeuroonAPI, tmp_path: Path
):
    order_ids = [f"MP-{index}" for index in range(200)]
    context = multiprocessing.get_context("spawn")
    start = time.time() + 2.0  # both processes begin together, after their imports
    processes = [
        context.Process(
            target=_confirm_in_a_process, args=(api.url, str(tmp_path), order_ids, start)
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(60)
        assert process.exitcode == 0
    received = api.delivered_order_ids()
    assert sorted(received) == sorted(order_ids)
    assert set(received.values()) == {1}  # not one order sent twice
    assert sum(api.received_count(order_id) for order_id in order_ids) == 200


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_gunicorn_preload_two_workers_deliver_from_both(api: FakeNeuroonAPI, tmp_path: Path):
    gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable))
    assert gunicorn, "gunicorn is part of the dev extra"
    port = _free_port()
    env = {
        **os.environ,
        "SHOP_INSTANCE": str(tmp_path),
        "SHOP_API_KEY": API_KEY,
        "SHOP_API_URL": api.url,
        "SHOP_IMPORT_THREADS_FILE": str(tmp_path / "import-threads.txt"),
    }
    server = subprocess.Popen(
        [gunicorn, "--preload", "-w", "2", "-b", f"127.0.0.1:{port}", "tests.apps.wsgi:app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 20
        while True:
            try:
                requests.get(f"{base}/threads", timeout=1)
                break
            except requests.ConnectionError:
                assert time.time() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        # The master imported the app (--preload) and started no thread of ours.
        at_import = (tmp_path / "import-threads.txt").read_text().split("\n")
        assert at_import == ["MainThread"], at_import
        pids: set[int] = set()
        order_ids = []
        for index in range(300):
            order_id = f"GU-{index}"
            answer = requests.post(f"{base}/confirm/{order_id}", timeout=5).json()
            assert answer["status"] in ("pending", "sent")
            pids.add(answer["pid"])
            order_ids.append(order_id)
            if len(pids) == 2 and index >= 50:
                break
        assert len(pids) == 2, "both workers served requests"
        assert api.wait_for(len(order_ids), timeout=20)
        names = requests.get(f"{base}/threads", timeout=5).json()["names"]
        assert any(name.startswith("neuroon-sender") for name in names)
        assert "neuroon-sweeper" in names  # started by the worker's first request
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=20)[0].decode(errors="replace")
    received = api.delivered_order_ids()
    assert sorted(received) == sorted(order_ids), output[-2000:]
    assert set(received.values()) == {1}
    assert "Traceback" not in output, output[-2000:]


SHUTDOWN_SCRIPT = """
import logging, sys, time
logging.basicConfig(level=logging.INFO)
from decimal import Decimal
from pathlib import Path
from flask import Flask
from flask_neuroon import Neuroon, Order, OrderLine
sys.path.insert(0, {root!r})
from tests.conftest import base_config
app = Flask("s", instance_path={tmp!r})
app.config.update(base_config(None, Path({tmp!r}), NEUROON_API_URL={url!r},
                  NEUROON_DISPATCH="thread", NEUROON_OUTBOX={outbox}, NEUROON_TIMEOUT=(1, 5)))
neuroon = Neuroon(app)
with app.app_context():
    for i in range({orders}):
        neuroon.track_conversion(Order(id=f"SD-{{i}}", total=Decimal("1"), currency="EUR",
                                       lines=[OrderLine(product_id="P", unit_price=1)]), clicks={{}})
    time.sleep({pause})  # senders are inside their requests and SQLite statements now
    started = time.time()
    neuroon.shutdown(timeout=0.5)
    print("shutdown took", round(time.time() - started, 2))
"""


@pytest.mark.parametrize(
    ("outbox", "slow", "orders", "pause"),
    [(True, 0.5, 40, 0.3), (False, 0.5, 40, 0.3)],
    ids=["slow-api", "no-outbox"],
)
def test_shutdown_with_sends_in_flight_is_bounded_and_never_crashes(
    api, tmp_path, outbox, slow, orders, pause
):
    if slow:
        api.slow(slow)
    script = SHUTDOWN_SCRIPT.format(
        root=str(ROOT), tmp=str(tmp_path), url=api.url, outbox=outbox, orders=orders, pause=pause
    )
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]  # no segfault (was exit 139)
    assert time.time() - started < 20
    assert "shutdown took" in done.stdout
    if not outbox:
        assert "are lost (NEUROON_OUTBOX is off)" in done.stderr
    elif slow:
        assert "stay in the outbox" in done.stderr


DRAINING_SCRIPT = """
import sys, time
from pathlib import Path
from flask import Flask
sys.path.insert(0, {root!r})
from flask_neuroon import Neuroon
from flask_neuroon.conversion import build_payload, dumps_payload
from flask_neuroon.orders import adapt_order
from tests.conftest import base_config
app = Flask("s", instance_path={tmp!r})
app.config.update(base_config(None, Path({tmp!r}), NEUROON_API_URL={url!r}, NEUROON_DISPATCH="thread"))
neuroon = Neuroon(app)
storage = app.extensions["neuroon"].storage
for i in range(3000):
    order = adapt_order({{"id": f"DR-{{i}}", "total": 1, "currency": "EUR"}})
    storage.add(f"DR-{{i}}", dumps_payload(build_payload(order, {{}})), time.time())
with app.app_context():
    neuroon.flush(0.3)    # four senders draining: claims and marks, SQLite all the time
    neuroon.shutdown(0)   # closing the storage while they are inside statements
print("clean exit")
"""


@pytest.mark.slow
def test_shutdown_while_senders_are_inside_sqlite_statements_does_not_crash(api, tmp_path):
    # Before the fix, close() closed the senders' connections under them: exit 139 in about
    # one run in five. Five runs.
    for attempt in range(5):
        folder = tmp_path / str(attempt)
        script = DRAINING_SCRIPT.format(root=str(ROOT), tmp=str(folder), url=api.url)
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT
        )
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
        assert "clean exit" in done.stdout
