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
        # The master imported the app (--preload) but runs no thread of ours.
        if os.path.isdir(f"/proc/{server.pid}/task"):
            assert len(os.listdir(f"/proc/{server.pid}/task")) == 1
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
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=20)[0].decode(errors="replace")
    received = api.delivered_order_ids()
    assert sorted(received) == sorted(order_ids), output[-2000:]
    assert set(received.values()) == {1}
    assert "Traceback" not in output, output[-2000:]
