"""Delivery through the outbox: retries, dead letters, the CLI, an API that is down or slow."""

from __future__ import annotations

import http.server
import logging
import shutil
import signal
import ssl
import subprocess
import threading
import time
from decimal import Decimal

import pytest

from flask_neuroon._stopping import StopRequest
from flask_neuroon.cli import neuroon_cli
from flask_neuroon.client import NeuroonClient
from flask_neuroon.config import Secret
from flask_neuroon.conversion import dumps_payload
from flask_neuroon.signals import conversion_sent
from flask_neuroon.storage import DEAD, SENT
from flask_neuroon.testing import FakeNeuroonAPI

from .conftest import API_KEY, AppFactory
from .shop import add_checkout_routes, make_order, set_clicks


def cli(app, *args: str):
    result = app.test_cli_runner().invoke(neuroon_cli, list(args), catch_exceptions=False)
    return result


def test_api_down_then_flush_after_recovery_delivers(api: FakeNeuroonAPI, make_app: AppFactory):
    app, neuroon = make_app(api, NEUROON_DISPATCH="thread", NEUROON_RETRY_SCHEDULE=(0.5,))
    add_checkout_routes(app, neuroon)
    api.stop()  # connection refused, as when the API is down
    make_order("DOWN-1")
    client = app.test_client()
    set_clicks(client, {"SKU-RED": "r"})
    started = time.perf_counter()
    assert client.post("/payment/return", data={"order": "DOWN-1"}).status_code == 200
    assert time.perf_counter() - started < 0.5  # the view does not wait for the API
    with app.app_context():
        neuroon.flush(5)
    row = app.extensions["neuroon"].storage.get("DOWN-1")
    assert row.state == "pending" and row.attempts == 1
    assert row.last_error == "connection error: [Errno 111] Connection refused"
    api.start()
    time.sleep(0.5)
    result = cli(app, "flush")
    assert result.exit_code == 0
    assert "1 sent" in result.output and "still pending: 0" in result.output
    assert api.received_count("DOWN-1") == 1
    assert api.conversions[0].attributed_value == Decimal("39.98")


def test_flush_all_sends_rows_still_waiting_for_their_backoff(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_RETRY_SCHEDULE=(3600,))
    api.fail(1, status=503)
    with app.app_context():
        assert neuroon.track_conversion(make_order("ALL-1"), clicks={}).status == "retrying"
    assert "nothing was due" in cli(app, "flush").output
    result = cli(app, "flush", "--all")
    assert "1 sent" in result.output
    assert len(api.conversions) == 1


def test_after_the_last_attempt_it_is_a_dead_letter_and_retry_sends_it(api, make_app):
    app, neuroon = make_app(
        api, NEUROON_DISPATCH="sync", NEUROON_MAX_ATTEMPTS=3, NEUROON_RETRY_SCHEDULE=(0,)
    )
    api.fail(10, status=503)
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("DL-1"), clicks={"SKU-RED": "r"})
        assert delivery.status == "retrying"
        neuroon.flush(5)
    assert delivery.status == "dead"
    assert api.received_count("DL-1") == 3
    out = cli(app, "outbox").output
    assert "dead: 1" in out and "DL-1" in out and "attempts=3" in out and "HTTP 503" in out
    api.clear_faults()
    result = cli(app, "retry", "DL-1")
    assert result.exit_code == 0 and "DL-1: sent" in result.output
    assert len(api.conversions) == 1
    assert "dead: 0" in cli(app, "outbox").output
    assert cli(app, "retry", "DL-1").exit_code != 0  # not a dead letter any more


def test_drop_deletes_a_dead_letter(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    api.fail(1, status=422)
    with app.app_context():
        assert neuroon.track_conversion(make_order("DR-1"), clicks={}).status == "dead"
    assert "DR-1: dropped" in cli(app, "drop", "DR-1").output
    assert app.extensions["neuroon"].storage.get("DR-1") is None
    result = cli(app, "drop", "DR-1")
    assert result.exit_code != 0 and "no dead letter 'DR-1'" in result.output


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_is_a_dead_letter_at_once_with_the_apis_message(api, make_app, status):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    api.fail(1, status=status, body='{"error": "Invalid API key"}')
    with app.app_context():
        delivery = neuroon.track_conversion(make_order(f"R-{status}"), clicks={})
    assert delivery.status == "dead"
    row = app.extensions["neuroon"].storage.get(f"R-{status}")
    assert row.state == DEAD and row.attempts == 1
    assert row.last_error == f"HTTP {status}: Invalid API key"


def test_real_rejection_by_the_api_names_the_problem(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_API_KEY="sk_wrong_key_123")
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("AUTH-1"), clicks={})
    assert delivery.status == "dead"
    assert delivery.error == "HTTP 401: Invalid API key"


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_then_delivered(api, make_app, status):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_RETRY_SCHEDULE=(0,))
    api.fail(2, status=status)
    with app.app_context():
        delivery = neuroon.track_conversion(make_order(f"T-{status}"), clicks={})
        assert delivery.status == "retrying"
        neuroon.flush(5)
    assert delivery.status == "sent"
    assert api.received_count(f"T-{status}") == 3
    row = app.extensions["neuroon"].storage.get(f"T-{status}")
    assert row.state == SENT and row.attempts == 3


def test_retry_after_is_honoured(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_RETRY_SCHEDULE=(0,))
    api.fail(1, status=429, retry_after=120)
    before = time.time()
    with app.app_context():
        assert neuroon.track_conversion(make_order("RA-1"), clicks={}).status == "retrying"
        started = time.perf_counter()
        assert neuroon.flush(1) == 1  # still pending, but flush does not wait for it
        assert time.perf_counter() - started < 0.5
    row = app.extensions["neuroon"].storage.get("RA-1")
    assert 119 <= row.next_attempt_at - before <= 122
    assert api.received_count("RA-1") == 1


def test_retry_schedule_spaces_the_attempts(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_RETRY_SCHEDULE="300, 600")
    api.fail(1, status=500)
    before = time.time()
    with app.app_context():
        neuroon.track_conversion(make_order("RS-1"), clicks={})
    row = app.extensions["neuroon"].storage.get("RS-1")
    assert 299 <= row.next_attempt_at - before <= 302


def test_409_means_the_api_already_has_it(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    app2, neuroon2 = make_app(api, NEUROON_DISPATCH="sync", NEUROON_STORAGE_URI="memory://")
    with app2.app_context():
        assert neuroon2.track_conversion(make_order("DUP-1"), clicks={}).status == "sent"
    with app.app_context():
        assert neuroon.track_conversion(make_order("DUP-1"), clicks={}).status == "duplicate"
    assert app.extensions["neuroon"].storage.get("DUP-1").state == SENT


def test_a_dropped_connection_is_retried(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_RETRY_SCHEDULE=(0,))
    api.drop(1)
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("DROP-1"), clicks={})
        assert delivery.status == "retrying"
        last_error = app.extensions["neuroon"].storage.get("DROP-1").last_error
        assert last_error.startswith("connection error: "), last_error
        neuroon.flush(5)
    assert delivery.status == "sent"
    assert len(api.conversions) == 1


def test_slow_api_does_not_slow_the_view_and_flush_is_bounded(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="thread", NEUROON_TIMEOUT=(1, 3))
    add_checkout_routes(app, neuroon)
    api.slow(2.0)
    make_order("SLOW-1")
    started = time.perf_counter()
    assert app.test_client().post("/payment/return", data={"order": "SLOW-1"}).status_code == 200
    assert time.perf_counter() - started < 0.5
    with app.app_context():
        started = time.perf_counter()
        left = neuroon.flush(0.3)
        assert time.perf_counter() - started < 1.0
        assert left == 1
        assert neuroon.flush(10) == 0
    assert api.received_count("SLOW-1") == 1


def _queue_rows(app, neuroon, count: int, prefix: str) -> None:
    """Put ``count`` due rows in the outbox, as a backlog after an outage leaves them."""
    outbox = app.extensions["neuroon"].outbox
    with app.app_context():
        for number in range(count):
            order = make_order(f"{prefix}-{number}")
            outbox.add(order.id, dumps_payload(neuroon.build_payload(order, {"SKU-RED": "r"})))


def test_a_backlog_drains_in_parallel_when_the_api_answers_slowly(api, make_app):
    # A drain starts with one sender; the others join as soon as the sends wait on the
    # network: 8 rows at 0.4 s per answer take about 2 rounds (0.8 s) with 4 senders, 3.2 s
    # with one; the bound leaves room for a loaded machine.
    app, neuroon = make_app(api, NEUROON_DISPATCH="thread", NEUROON_MAX_WORKERS=4)
    _queue_rows(app, neuroon, 8, "SLOWDRAIN")
    api.slow(0.4)
    with app.app_context():
        started = time.perf_counter()
        assert neuroon.flush(10) == 0
        elapsed = time.perf_counter() - started
    assert elapsed < 2.4, f"8 slow answers took {elapsed:.2f} s: the drain did not spread"
    assert sorted(c.order_id for c in api.conversions) == [f"SLOWDRAIN-{n}" for n in range(8)]


def test_a_backlog_against_a_fast_api_is_sent_by_one_sender_once_each(api, make_app):
    # On loopback a send is mostly CPU under the GIL: one sender goes faster than four
    # taking the GIL from each other (benchmark 3), and leaves it to the shop's requests.
    app, neuroon = make_app(api, NEUROON_DISPATCH="thread", NEUROON_MAX_WORKERS=4)
    _queue_rows(app, neuroon, 200, "FASTDRAIN")
    senders: list[str] = []

    def sent(sender, **extra):
        senders.append(threading.current_thread().name)

    with conversion_sent.connected_to(sent, app), app.app_context():
        assert neuroon.flush(30) == 0
    received = [c.order_id for c in api.conversions]
    assert len(received) == 200 and len(set(received)) == 200
    assert api.stats()["duplicates"] == 0
    # A sender descheduled for 10 ms may call another one in; not all four evenly.
    busiest = max(senders.count(name) for name in set(senders))
    assert len(senders) == 200 and busiest >= 80, sorted(set(senders))  # four evenly: 50


def test_read_timeout_is_retried_and_the_server_deduplicates(api, make_app):
    app, neuroon = make_app(
        api, NEUROON_DISPATCH="sync", NEUROON_TIMEOUT=(1, 0.3), NEUROON_RETRY_SCHEDULE=(0,)
    )
    api.slow(0.6, times=1)
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("TO-1"), clicks={})
        assert delivery.status == "retrying"
        assert app.extensions["neuroon"].storage.get("TO-1").last_error == "timeout: ReadTimeout"
        time.sleep(0.5)  # the slow answer lands at the server meanwhile
        neuroon.flush(5)
    assert delivery.status == "duplicate"  # 409: the first send did arrive
    assert len(api.conversions) == 1


def test_without_outbox_it_is_plain_fire_and_forget(api, make_app, tmp_path):
    app, neuroon = make_app(api, NEUROON_OUTBOX=False, NEUROON_DISPATCH="thread")
    with app.app_context():
        first = neuroon.track_conversion(make_order("NO-1"), clicks={"SKU-RED": "x"})
        assert neuroon.track_conversion(make_order("NO-1")).status == "duplicate"
        assert first.wait(5) == "sent"
        api.fail(1, status=503)
        assert neuroon.track_conversion(make_order("NO-2"), clicks={}).wait(5) == "failed"
        neuroon.flush(2)
    assert api.received_count("NO-1") == 1
    assert api.received_count("NO-2") == 1  # one attempt, no retry
    result = cli(app, "outbox")
    assert "NEUROON_OUTBOX is off" in result.output


def test_storage_outage_still_sends_directly_and_checkout_succeeds(api, make_app, caplog, tmp_path):
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a directory should be")
    app, neuroon = make_app(
        api, NEUROON_DISPATCH="sync", NEUROON_STORAGE_URI=f"sqlite:///{blocker}/db.sqlite3"
    )
    add_checkout_routes(app, neuroon)
    make_order("SO-1")
    client = app.test_client()
    set_clicks(client, {"SKU-RED": "r"})
    assert client.post("/checkout/SO-1/pay").status_code == 302  # snapshot fails, logged
    assert client.post("/payment/return", data={"order": "SO-1"}).status_code == 200
    assert api.received_count("SO-1") == 1
    assert api.conversions[0].attributed_value == Decimal("39.98")  # the cookie still came
    assert "saving the clicks of order SO-1 failed" in caplog.text
    assert "queueing order SO-1 failed" in caplog.text
    assert "order SO-1 cannot be queued" in caplog.text  # by the sender either
    assert "sending it directly" in caplog.text


def test_the_api_key_never_appears_in_logs_reprs_or_cli(api, make_app, caplog):
    caplog.set_level(logging.DEBUG)
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_RETRY_SCHEDULE=(0,))
    state = app.extensions["neuroon"]
    api.fail(1, status=500)
    api.fail(1, status=401)
    with app.app_context():
        neuroon.track_conversion(make_order("K-1"), clicks={})
        neuroon.flush(2)
    outputs = [cli(app, "outbox").output, cli(app, "flush").output]
    texts = [
        caplog.text,
        repr(state),
        repr(state.settings),
        repr(state.client),
        repr(neuroon),
        str(state.settings),
        *outputs,
    ]
    for text in texts:
        assert API_KEY not in text
    assert "HTTP 401" in outputs[0]


def test_purge_removes_expired_snapshots_and_old_sent_rows(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    state = app.extensions["neuroon"]
    with app.app_context():
        neuroon.track_conversion(make_order("P-1"), clicks={})
    state.storage.put_snapshot("gone", {"a": "b"}, time.time() - 1)
    assert "1 expired snapshots, 0 sent rows" in cli(app, "purge").output
    assert "0 expired snapshots, 1 sent rows" in cli(app, "purge", "--sent-older-than", "0").output


def test_retry_all_sends_every_dead_letter_after_an_outage(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_MAX_ATTEMPTS=1)
    api.down()
    with app.app_context():
        for index in range(30):
            assert neuroon.track_conversion(make_order(f"RA-{index}"), clicks={}).status == "dead"
    api.up()
    assert "no dead letter" not in cli(app, "outbox").output
    result = cli(app, "retry", "--all")
    assert result.exit_code == 0, result.output
    assert "30 dead letters queued again" in result.output
    assert "30 sent" in result.output
    assert len(api.conversions) == 30
    assert "dead: 0" in cli(app, "outbox").output
    assert cli(app, "retry").exit_code != 0  # neither an id nor --all


def test_send_never_raises_even_for_a_missing_ca_bundle(monkeypatch):
    from flask_neuroon.client import NeuroonClient
    from flask_neuroon.config import Secret

    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/nonexistent/ca.pem")
    client = NeuroonClient(
        "https://127.0.0.1:9/x", api_key=Secret(API_KEY), origin="http://127.0.0.1", timeout=(1, 1)
    )
    result = client.send("{}")
    assert result.outcome == "retry"
    assert "CA certificate bundle" in result.message


@pytest.mark.parametrize(
    ("quoted", "shown"),
    [
        (API_KEY, "unknown key ***"),
        (API_KEY[:20], "unknown key ***"),  # cut short by a proxy's error page
        (API_KEY[6:], "unknown key ***"),
        (f"{API_KEY[:10]}...{API_KEY[-10:]}", "unknown key ***...***"),  # a masked echo
        (API_KEY[:7], f"unknown key {API_KEY[:7]}"),  # the key's public prefix, no more
    ],
)
def test_an_api_answer_quoting_the_key_whole_or_in_part_is_scrubbed(
    api, make_app, caplog, quoted, shown
):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    api.fail(1, status=401, body=f'{{"error": "unknown key {quoted}"}}')
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("ECHO-1"), clicks={})
    assert delivery.error == f"HTTP 401: {shown}"
    output = cli(app, "outbox").output
    for start in range(len(API_KEY) - 7):
        piece = API_KEY[start : start + 8]
        assert piece not in caplog.text and piece not in output and piece not in delivery.error


def test_a_locked_sqlite_file_delays_checkout_by_seconds_not_minutes(api, make_app, tmp_path):
    import sqlite3

    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    add_checkout_routes(app, neuroon)
    make_order("LOCK-1")
    with app.app_context():  # create the file and its tables
        neuroon.track_conversion(make_order("LOCK-0"), clicks={})
    blocker = sqlite3.connect(tmp_path / "neuroon.sqlite3", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # VACUUM, a long transaction of another tool...
    try:
        client = app.test_client()
        set_clicks(client, {"SKU-RED": "r"})
        started = time.perf_counter()
        assert client.post("/checkout/LOCK-1/pay").status_code == 302
        assert client.post("/payment/return", data={"order": "LOCK-1"}).status_code == 200
        elapsed = time.perf_counter() - started
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert elapsed < 12, elapsed  # each storage call gives up after 2 s
    assert api.received_count("LOCK-1") == 1  # sent directly, attributed from the cookie
    assert api.conversions[-1].attributed_value == Decimal("39.98")


def test_an_order_another_worker_queued_while_storage_was_busy_is_not_sent_twice(
    api, make_app, tmp_path, caplog
):
    # Two workers on one SQLite file confirm the same order at once. Worker B looks the
    # order up (not there yet); worker A queues it; then the file is busy for longer than
    # a checkout may wait, so B cannot queue it. B's sender queues it again once the file
    # is free, finds A's row and leaves it to A: one delivery, not a direct send as well.
    import sqlite3

    from flask_neuroon.signals import attribution_mismatch

    worker_a, neuroon_a = make_app(api, NEUROON_DISPATCH="sync")
    worker_b, neuroon_b = make_app(api, NEUROON_DISPATCH="thread")
    with worker_a.app_context():  # create the file and its tables
        neuroon_a.track_conversion(make_order("BUSY-0"), clicks={})
    blockers: list[sqlite3.Connection] = []

    def meanwhile_worker_a_queues_it(sender, **_: object) -> None:
        # Runs inside B's track_conversion, after its look-up and before its queueing.
        with worker_a.app_context():
            assert neuroon_a.track_conversion(make_order("BUSY-1"), clicks={}).status == "sent"
        blocker = sqlite3.connect(
            tmp_path / "neuroon.sqlite3", isolation_level=None, check_same_thread=False
        )
        blocker.execute("BEGIN IMMEDIATE")  # a long transaction of another tool
        blockers.append(blocker)
        threading.Timer(3.0, blocker.execute, ("ROLLBACK",)).start()

    attribution_mismatch.connect(meanwhile_worker_a_queues_it, worker_b)
    try:
        with worker_b.app_context():
            delivery = neuroon_b.track_conversion(make_order("BUSY-1"), clicks={"OTHER": "x"})
            delivery.wait(15)
            neuroon_b.flush(5)
    finally:
        attribution_mismatch.disconnect(meanwhile_worker_a_queues_it, worker_b)
        time.sleep(3.1)
        for blocker in blockers:
            blocker.close()
    assert api.received_count("BUSY-1") == 1
    assert delivery.status == "duplicate"
    assert "queueing order BUSY-1 failed" in caplog.text  # B's checkout gave up waiting
    assert "order BUSY-1 cannot be queued" not in caplog.text


class _Recorder(http.server.BaseHTTPRequestHandler):
    """A loopback HTTP/1.1 server that records each request and answers from a script."""

    protocol_version = "HTTP/1.1"
    seen: list[dict[str, str]]
    answers: list[tuple[int, dict[str, str]]]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        self.seen.append(
            {
                "line": self.requestline,
                "cookie": self.headers.get("Cookie") or "",
                "port": str(self.client_address[1]),
                "body": body,
            }
        )
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        payload = b'{"success":true}'
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder():
    handler = type("Handler", (_Recorder,), {"seen": [], "answers": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def _client(url: str) -> NeuroonClient:
    return NeuroonClient(
        f"{url}/api/plugin/shops/shop_1/track/conversion",
        api_key=Secret(API_KEY),
        origin="https://shop.example",
        timeout=(3.05, 10),
    )


def test_sends_reuse_one_keep_alive_connection(recorder):
    server, handler = recorder
    client = _client(f"http://127.0.0.1:{server.server_port}")
    results = [client.send(f'{{"orderId": "K-{number}"}}') for number in range(5)]
    assert [result.outcome for result in results] == ["sent"] * 5
    assert [seen["body"] for seen in handler.seen] == [f'{{"orderId": "K-{n}"}}' for n in range(5)]
    assert len({seen["port"] for seen in handler.seen}) == 1  # one TCP connection for all five


def test_a_cookie_the_api_sets_is_sent_back_and_redirects_are_not_followed(recorder):
    server, handler = recorder
    handler.answers.extend(
        [(200, {"Set-Cookie": "lb=node-2; Path=/"}), (302, {"Location": "/elsewhere"})]
    )
    client = _client(f"http://127.0.0.1:{server.server_port}")
    assert client.send('{"orderId": "C-1"}').outcome == "sent"
    redirected = client.send('{"orderId": "C-2"}')
    assert (redirected.outcome, redirected.status_code) == ("reject", 302)
    assert client.send('{"orderId": "C-3"}').outcome == "sent"
    assert [seen["cookie"] for seen in handler.seen] == ["", "lb=node-2", "lb=node-2"]
    assert all("/elsewhere" not in seen["line"] for seen in handler.seen)


@pytest.fixture
def tls_recorder(tmp_path):
    """The recorder behind TLS, with a self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    handler = type("Handler", (_Recorder,), {"seen": [], "answers": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler, cert
    server.shutdown()
    server.server_close()


def test_https_is_verified_against_the_ca_bundle_of_the_environment(tls_recorder, monkeypatch):
    server, handler, cert = tls_recorder
    url = f"https://127.0.0.1:{server.server_port}"
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    untrusted = _client(url).send('{"orderId": "TLS-0"}')
    assert untrusted.outcome == "retry"  # a certificate nobody vouches for is never trusted
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.message, untrusted.message
    assert handler.seen == []
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(cert))
    client = _client(url)
    assert [client.send(f'{{"orderId": "TLS-{n}"}}').outcome for n in (1, 2)] == ["sent"] * 2
    assert [seen["body"] for seen in handler.seen] == [
        '{"orderId": "TLS-1"}',
        '{"orderId": "TLS-2"}',
    ]
    assert len({seen["port"] for seen in handler.seen}) == 1  # kept alive over TLS too


def test_the_environments_proxy_is_used(recorder, monkeypatch):
    proxy, handler = recorder  # it answers as the API would, and records the request line
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_port}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = _client("http://127.0.0.1:9")  # nothing listens there: only the proxy can answer
    assert client.send('{"orderId": "P-1"}').outcome == "sent"
    assert handler.seen[0]["line"] == (
        "POST http://127.0.0.1:9/api/plugin/shops/shop_1/track/conversion HTTP/1.1"
    )


@pytest.mark.parametrize(
    "args",
    [("flush",), ("flush", "--all"), ("outbox",), ("purge",), ("retry", "--all"), ("drop", "X")],
)
def test_cli_says_storage_is_unavailable_and_exits_1(api, make_app, args):
    # A directory that cannot hold a database: every command must fail loudly for cron.
    app, _neuroon = make_app(api, NEUROON_STORAGE_URI="sqlite:////proc/neuroon/outbox.sqlite3")
    result = app.test_cli_runner().invoke(neuroon_cli, list(args))
    assert result.exit_code == 1, result.output
    assert "Error: storage unavailable:" in result.output
    assert "nothing was due" not in result.output
    assert "Traceback" not in result.output and result.exception is not None
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    "args",
    [
        ("flush", "--timeout", "-1"),
        ("flush", "--timeout", "nan"),
        ("flush", "--timeout", "inf"),
        ("flush", "--loop", "--interval", "0"),
        ("flush", "--loop", "--interval", "-1"),
        ("flush", "--loop", "--interval", "nan"),
        ("retry", "--all", "--timeout", "0"),
        ("purge", "--sent-older-than", "-5"),
        ("purge", "--sent-older-than", "nan"),
        ("purge", "--sent-older-than", "-inf"),
        ("purge", "--sent-older-than", "soon"),
    ],
)
def test_cli_refuses_times_that_are_negative_or_not_finite(api, make_app, args):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    with app.app_context():
        assert neuroon.track_conversion(make_order("KEEP-1"), clicks={}).status == "sent"
    result = app.test_cli_runner().invoke(neuroon_cli, list(args))
    assert result.exit_code == 2, result.output  # a usage error, before anything runs
    assert "must be a finite number" in result.output or "is not a number" in result.output
    assert app.extensions["neuroon"].storage.get("KEEP-1").state == SENT  # nothing purged


def test_a_stop_signal_ends_the_wait_at_once_and_the_old_handler_comes_back():
    # flush --loop and the servers wait in StopRequest.wait; a signal must end the wait
    # within a step, not after the interval (and never hang as Event.set() could).
    before = signal.getsignal(signal.SIGALRM)
    with StopRequest().on(signal.SIGALRM) as flag:
        started = time.monotonic()
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        assert flag.wait(30.0) is True
        waited = time.monotonic() - started
        assert flag.wait(30.0) is True  # stays requested: the loop ends
        assert signal.getsignal(signal.SIGALRM) is flag
    assert waited < 5.0, waited
    assert signal.getsignal(signal.SIGALRM) is before
    assert StopRequest().wait(0.01) is False  # no signal: the wait times out


def test_storage_that_keeps_failing_is_tried_once_a_second_not_on_every_call(
    api, make_app, tmp_path
):
    # Storage down with quick failures (here a file where its directory should be; on a
    # server, connection refused): each failure is cheap, but a checkout makes several
    # storage calls and every page pays them for as long as the outage lasts. After one
    # failure the request threads skip storage for a second.
    from flask_neuroon.signals import storage_failed

    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a directory should be")
    app, neuroon = make_app(
        api, NEUROON_DISPATCH="thread", NEUROON_STORAGE_URI=f"sqlite:///{blocker}/db.sqlite3"
    )
    add_checkout_routes(app, neuroon)
    errors: list[str] = []

    def failed(sender: object, operation: str, error: Exception) -> None:
        errors.append(str(error))

    storage_failed.connect(failed, app)
    try:
        started = time.monotonic()
        for number in range(5):
            make_order(f"DOWN-{number}")
            shopper = app.test_client()
            set_clicks(shopper, {"SKU-RED": "r"})
            assert shopper.post(f"/checkout/DOWN-{number}/pay").status_code == 302
            assert (
                shopper.post("/payment/return", data={"order": f"DOWN-{number}"}).status_code == 200
            )
        elapsed = time.monotonic() - started
        assert api.wait_for(5, timeout=10)
    finally:
        storage_failed.disconnect(failed, app)
    tried = [error for error in errors if "failed a moment ago" not in error]
    assert len(errors) >= 5 * 3  # every checkout's snapshot, look-up and queueing
    assert len(tried) <= 1 + int(elapsed)  # really tried at most once a second
    assert sorted(api.delivered_order_ids()) == [f"DOWN-{n}" for n in range(5)]


def test_a_locked_sqlite_file_costs_one_wait_not_one_per_checkout(api, make_app, tmp_path):
    # Another program holds the file (a backup, a long transaction): the first storage call
    # waits its 2 s and fails; the checkouts after it skip storage instead of waiting 2 s
    # per call. Once the file is free, the sender threads queue the orders as usual.
    import sqlite3

    app, neuroon = make_app(api, NEUROON_DISPATCH="thread")
    add_checkout_routes(app, neuroon)
    with app.app_context():  # create the file and its tables
        neuroon.track_conversion(make_order("LOCKED-0"), clicks={}).wait(5)
    blocker = sqlite3.connect(tmp_path / "neuroon.sqlite3", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    timings = []
    try:
        for number in range(1, 4):
            make_order(f"LOCKED-{number}")
            shopper = app.test_client()
            set_clicks(shopper, {"SKU-RED": "r"})
            started = time.monotonic()
            assert shopper.post(f"/checkout/LOCKED-{number}/pay").status_code == 302
            returned = shopper.post("/payment/return", data={"order": f"LOCKED-{number}"})
            assert returned.status_code == 200
            timings.append(time.monotonic() - started)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert 1.5 < timings[0] < 3.0, timings  # one wait of 2 s
    assert max(timings[1:]) < 0.5, timings  # then no more waiting
    assert api.wait_for(4, timeout=40)
    with app.app_context():
        assert neuroon.flush(10) == 0
    assert sorted(api.delivered_order_ids()) == [f"LOCKED-{n}" for n in range(4)]
    state = app.extensions["neuroon"]
    rows = {n: state.storage.get(f"LOCKED-{n}") for n in range(4)}
    assert all(row is not None and row.state == "sent" for row in rows.values()), rows  # queued


def _unreachable_storage(tmp_path) -> str:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where a directory should be")
    return f"sqlite:///{blocker}/db.sqlite3"


def test_storage_down_and_the_api_failing_too_is_retried_from_memory(api, make_app, tmp_path):
    # Storage cannot queue the order and the direct send meets a 503: the order was lost
    # (and every later confirmation called it a duplicate). It is kept in memory and tried
    # again, storage first, on the outbox's schedule by the sweeper.
    app, neuroon = make_app(
        api,
        NEUROON_DISPATCH="thread",
        NEUROON_STORAGE_URI=_unreachable_storage(tmp_path),
        NEUROON_FLUSH_INTERVAL=0.2,
    )
    api.fail(1, status=503)
    with app.app_context():
        delivery = neuroon.track_conversion(make_order("SDF-1"), clicks={})
        assert delivery.wait(5) == "retrying"
        assert api.wait_for(1, timeout=10)
        deadline = time.monotonic() + 5
        while delivery.status != "sent" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert delivery.status == "sent"
    assert api.received_count("SDF-1") == 2
    assert api.delivered_order_ids() == {"SDF-1": 1}


def test_an_order_neither_queued_nor_sent_can_be_tracked_again(api, make_app, tmp_path, caplog):
    # No sweeper to retry from memory (NEUROON_FLUSH_INTERVAL = 0): the failure is logged
    # as such, and the next confirmation of the order sends it instead of "duplicate".
    app, neuroon = make_app(
        api, NEUROON_DISPATCH="thread", NEUROON_STORAGE_URI=_unreachable_storage(tmp_path)
    )
    api.fail(1, status=503)
    with app.app_context():
        assert neuroon.track_conversion(make_order("SDF-2"), clicks={}).wait(5) == "failed"
        assert neuroon.track_conversion(make_order("SDF-2"), clicks={}).wait(5) == "sent"
    assert "order SDF-2 was neither queued nor delivered after 1 attempts" in caplog.text
    assert api.delivered_order_ids() == {"SDF-2": 1}


@pytest.mark.parametrize("retry_after", [0, 1])
def test_a_retry_after_shorter_than_the_schedule_does_not_spend_the_attempts(
    api, make_app, retry_after
):
    # "Retry-After: 0" on every 429 sent five attempts, and a dead letter, within a second.
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync", NEUROON_RETRY_SCHEDULE=(300,))
    api.fail(10, status=429, retry_after=retry_after)
    before = time.time()
    with app.app_context():
        assert neuroon.track_conversion(make_order("RA-0"), clicks={}).status == "retrying"
        neuroon.flush(1)
    row = app.extensions["neuroon"].storage.get("RA-0")
    assert row.state == "pending" and row.attempts == 1
    assert 299 <= row.next_attempt_at - before <= 302
    assert api.received_count("RA-0") == 1


def test_the_outbox_listing_says_how_many_dead_letters_it_left_out(api, make_app):
    app, neuroon = make_app(api, NEUROON_DISPATCH="sync")
    api.fail(3, status=400)
    with app.app_context():
        for number in range(3):
            assert neuroon.track_conversion(make_order(f"DL-{number}"), clicks={}).status == "dead"
    output = cli(app, "outbox", "--limit", "2").output
    assert "dead: 3" in output
    assert "... and 1 more (--limit N to list them)" in output


def test_wait_learns_of_a_delivery_made_by_another_worker(api, make_app):
    # Two workers share one outbox (the same SQLite file): whichever sends an order, the
    # Delivery of the worker that tracked it says so, without waiting out its timeout.
    app, neuroon = make_app(api, NEUROON_DISPATCH="thread", NEUROON_MAX_WORKERS=1)
    other, other_neuroon = make_app(api, NEUROON_DISPATCH="sync")
    api.slow(1.0, times=1)  # holds this worker's only sender on the first order
    with app.app_context():
        deliveries = [
            neuroon.track_conversion(make_order(f"ELSEWHERE-{n}"), clicks={}) for n in range(3)
        ]
    with other.app_context():
        other_neuroon.flush(5)  # cron's `flask neuroon flush`, say
    started = time.perf_counter()
    assert [delivery.wait(10) for delivery in deliveries] == ["sent", "sent", "sent"]
    assert time.perf_counter() - started < 3.0
    assert sorted(c.order_id for c in api.conversions) == [f"ELSEWHERE-{n}" for n in range(3)]
