"""Delivery through a real Celery worker (and its beat) with this machine's RabbitMQ."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from flask_neuroon import Order, OrderLine
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import API_KEY, need_service
from .services import AMQP_URL, importable, port_open

ROOT = Path(__file__).resolve().parent.parent


def order(order_id: str) -> Order:
    return Order(
        id=order_id,
        total=Decimal("30.00"),
        currency="EUR",
        lines=[OrderLine(product_id="P1", quantity=3, unit_price=Decimal("10.00"))],
    )


@pytest.fixture
def celery_env(api: FakeNeuroonAPI, tmp_path: Path) -> dict[str, str]:
    need_service("RabbitMQ", port_open("127.0.0.1", 5672), "amqp on 127.0.0.1:5672")
    need_service("Celery", importable("celery"), "pip install 'flask-neuroon[celery]'")
    queue = "flask-neuroon-tests"  # one queue, purged before each test
    env = {
        **os.environ,
        "SHOP_INSTANCE": str(tmp_path),
        "SHOP_API_KEY": API_KEY,
        "SHOP_API_URL": api.url,
        "SHOP_STORAGE_URI": f"sqlite:///{tmp_path}/outbox.sqlite3",
        "SHOP_BROKER_URL": AMQP_URL,
        "SHOP_CELERY_QUEUE": queue,
    }
    return env


def start_worker(env: dict[str, str], tmp_path: Path) -> subprocess.Popen[bytes]:
    celery = shutil.which("celery", path=os.path.dirname(sys.executable))
    assert celery, "celery is part of the celery extra"
    return subprocess.Popen(
        [
            celery,
            "-A",
            "tests.apps.celery_app:celery_app",
            "worker",
            "-B",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
            "-n",
            f"neuroon-{tmp_path.name}@%h",
            "-Q",
            env["SHOP_CELERY_QUEUE"],
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def web_side(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    from tests.apps import celery_app as module

    app = module.create_app()
    app.extensions["celery"].control.purge()  # messages left by an earlier, interrupted run
    return app, module.neuroon


@pytest.mark.slow
def test_a_celery_worker_delivers_and_its_beat_flushes_retries(
    api: FakeNeuroonAPI, celery_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    app, neuroon = web_side(celery_env, monkeypatch)
    worker = start_worker(celery_env, tmp_path)
    output = ""
    try:
        with app.app_context():
            started = time.perf_counter()
            delivery = neuroon.track_conversion(order("CEL-1"), clicks={"P1": "log-1"})
            # The view never waits for the broker (a blocked publish waits seconds).
            assert time.perf_counter() - started < 1.0
            assert delivery.status == "pending"
            assert api.wait_for(1, timeout=40), "the worker delivered the conversion"
            assert api.conversions[0].attributed_value == Decimal("30.00")
            # A failure on the worker: the row is retried by the periodic flush (beat).
            api.fail(1, status=503)
            neuroon.track_conversion(order("CEL-2"), clicks={})
            if not api.wait_for(2, timeout=40):
                worker.terminate()
                output = worker.communicate(timeout=30)[0].decode(errors="replace")
                pytest.fail(f"beat's flush did not deliver the retry:\n{output[-4000:]}")
            assert api.received_count("CEL-2") == 2
            neuroon.flush(2)
    finally:
        if worker.poll() is None:
            worker.terminate()
            output = worker.communicate(timeout=30)[0].decode(errors="replace")
        with app.app_context():
            neuroon.shutdown()
    assert "flask_neuroon.deliver" in output, output[-3000:]
    assert "flask_neuroon.flush" in output, output[-3000:]
    assert api.delivered_order_ids() == {"CEL-1": 1, "CEL-2": 1}
