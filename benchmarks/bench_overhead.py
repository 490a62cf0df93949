"""1. Request overhead: the same shop with and without flask-neuroon, 4 KiB click cookie.

Two gunicorn servers run side by side on loopback (one gthread worker each, keep-alive),
the shop of :mod:`benchmarks.apps` without (A) and with (B) the extension. Load generators
in other processes (``wrk``, else :mod:`benchmarks.loadgen`), one per server, send
keep-alive ``GET`` requests carrying a full 4096-byte Cookie header with a
``neuroon_clicks`` cookie of ~50 entries. Both servers are loaded *at the same time*, and
pinned to the same CPU (the generators to the other): the machine's speed drifts by tens
of percent from one second to the next on a shared VM, and servers measured one after
the other would measure that drift; measured together on one core they see the same
drift, and the ratio of their rates is the ratio of their costs. Rounds are repeated;
the figure is the median of the per-round ratios B / A, with their spread. Per case:

* ``/clicks``, same cookie: the route reads the click map (``len(neuroon.clicks)``), and
  every request carries the same cookie, as a shopper's pages do until the next click;
* ``/clicks``, new cookie: every request carries a cookie never seen before (a counter
  in a searchLogId), the worst case: the first page after each click;
* ``/plain``: the route does not read the clicks.

Reported per case: throughput (requests/s) as the generators saw it, and the gunicorn
worker's CPU time per request (``/proc/<pid>/stat``). ``--long`` adds a control server
without the extension (A2) whose ratio to A shows the method's resolution.

In this process: the click-map parse of the same header (a new cookie: a full parse;
the same cookie again: the kept result) against werkzeug's own parse of it
(``werkzeug.http.parse_cookie``, what Flask does for ``request.cookies``); and the two
apps called as WSGI callables in alternating batches: the microseconds the extension
adds per request, without server, network or scheduler in the way.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
import timeit
from collections.abc import Callable, Iterable

from werkzeug.http import parse_cookie

from flask_neuroon.cookies import parse_click_header

from . import loadgen
from .apps import create_app, stop
from .bench_cookie_parse import build_header, forget_parsed
from .common import (
    PYTHON,
    Figure,
    Outcome,
    child_env,
    cpu_seconds,
    free_port,
    log,
    median,
    spread,
    stop_process,
    wait_for_port,
)

NAME = "overhead"
TITLE = "request overhead, 4 KiB click cookie, gunicorn gthread + keep-alive load"
GUNICORN = ("--workers=1", "--worker-class=gthread", "--threads=4", "--keep-alive=75")


def _gunicorn(
    port: int, with_neuroon: bool, instance: str, cpu: int | None = None
) -> subprocess.Popen[bytes]:
    env = child_env(BENCH_NEUROON="1" if with_neuroon else "0", BENCH_INSTANCE=instance)
    argv = [PYTHON, "-m", "gunicorn", *GUNICORN, f"--bind=127.0.0.1:{port}", "--log-level=warning"]
    if os.path.isdir("/dev/shm"):
        argv.append("--worker-tmp-dir=/dev/shm")
    return subprocess.Popen(
        [*argv, "benchmarks.apps:create_app()"],
        env=env,
        cwd=instance,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=loadgen.pinned_to(cpu),
    )


def _worker_pid(master: int, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{master}/task/{master}/children") as children:
                pids = children.read().split()
        except OSError:
            pids = []
        if pids:
            return int(pids[0])
        time.sleep(0.05)
    raise RuntimeError("gunicorn started no worker")


def _per_call_us(parse: Callable[[], object], number: int, repeat: int) -> float:
    return min(timeit.Timer(parse).repeat(repeat=repeat, number=number)) / number * 1e6


def parse_figures(header: str, long: bool) -> list[Figure]:
    number, repeat = (20000, 15) if long else (4000, 7)

    def miss() -> object:
        forget_parsed()  # a cookie this worker has not seen: a full parse
        return parse_click_header(header)

    theirs = _per_call_us(lambda: parse_cookie(header), number, repeat)
    ours = _per_call_us(miss, number, repeat)
    parse_click_header(header), parse_click_header(header)  # seen twice: kept
    hit = _per_call_us(lambda: parse_click_header(header), number, repeat)
    return [
        Figure(
            "click-map parse, 4 KiB Cookie header, a new cookie",
            ours,
            "us",
            baseline=theirs,
            baseline_label="werkzeug parse_cookie",
            target="<= 25 us",
            met=ours <= 25.0,
        ),
        Figure(
            "the same cookie again (the shopper's next page)",
            hit,
            "us",
            baseline=theirs,
            baseline_label="werkzeug parse_cookie",
        ),
    ]


def _environ(path: str, header: str) -> dict[str, object]:
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_COOKIE": header,
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }


#: (label, path, a new click cookie on every request)
CASES = (
    ("/clicks, same cookie", "/clicks", False),
    ("/clicks, new cookie", "/clicks", True),
    ("/plain", "/plain", False),
)


def in_process_figures(header: str, long: bool) -> list[Figure]:
    """The same two apps called as WSGI callables in this process, in alternating batches:
    the time the extension adds per request, without server or network noise."""
    batch, rounds = (500, 30) if long else (300, 12)
    head, tail = loadgen.vary_slot(header)
    counter = iter(range(1, 10**9))

    def start_response(status: str, headers: object, exc_info: object = None) -> None:
        return None

    def per_call(app: Callable[..., Iterable[bytes]], path: str, vary: bool) -> float:
        started = time.perf_counter()
        for _ in range(batch):
            cookie = f"{head}{next(counter):08x}{tail}" if vary else header
            body = app(_environ(path, cookie), start_response)
            b"".join(body)
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (time.perf_counter() - started) / batch

    figures = []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-wsgi-") as instance:
        plain, tracked = create_app(False, instance=instance), create_app(True, instance=instance)
        for label, path, vary in CASES:
            per_call(plain, path, vary), per_call(tracked, path, vary)  # warm up
            a: list[float] = []
            b: list[float] = []
            for number in range(rounds):
                for which in "ab" if number % 2 == 0 else "ba":
                    app = plain if which == "a" else tracked
                    (a if which == "a" else b).append(per_call(app, path, vary))
            ratios = [y / x for x, y in zip(a, b, strict=True)]
            added = [(y - x) * 1e6 for x, y in zip(a, b, strict=True)]
            figures.append(
                Figure(
                    f"in-process WSGI call {label}, with / without",
                    median(b) * 1e6,
                    "us",
                    baseline=median(a) * 1e6,
                    baseline_label="no extension",
                    ratio=median(ratios),
                    spread=spread(ratios),
                    note=f"the extension adds {median(added):.1f} us per request "
                    f"(median of {rounds} alternating batches of {batch})",
                    extra={"added_us": median(added), "ratios": ratios},
                )
            )
        stop(tracked)
    return figures


def run(long: bool = False) -> Outcome:
    outcome = Outcome(NAME, TITLE, long=long)
    header, clicks = build_header()
    assert len(header) == 4096 and parse_click_header(header) == clicks
    outcome.figures.extend(parse_figures(header, long))

    rounds, slot = (15, 3.0) if long else (6, 2.0)
    connections = 8
    # Both servers share CPU 0 (the load generators run on CPU 1), loaded at the same time:
    # the ratio of their rates is the ratio of their costs, measured at the same moments
    # on the same core, whatever the machine's speed does meanwhile. With --long, a third
    # server without the extension (A2) is the control: A2 / A shows the resolution.
    servers = {"A": False, "B": True} | ({"A2": False} if long else {})
    server_cpu, load_cpu = (0, 1) if (os.cpu_count() or 1) >= 2 else (None, None)
    outcome.setup = {
        "loadgen": loadgen.tool(),
        "connections_per_server": connections,
        "rounds": rounds,
        "seconds_per_round_and_case": slot,
        "method": "A (no extension) and B (extension) loaded at the same time, each by its "
        "own generator, servers pinned to CPU 0, generators to CPU 1; ratio B / A per round"
        + ("; A2, a second server without the extension, is the control" if long else ""),
        "server": "gunicorn " + " ".join(GUNICORN),
        "cookie_header_bytes": len(header),
        "clicks_in_cookie": len(clicks),
        "new cookie": "a counter in a searchLogId: every request a cookie never seen before",
    }
    rates: dict[tuple[str, str], list[float]] = {}
    cpu: dict[tuple[str, str], list[float]] = {}
    errors = 0
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        ports = {key: free_port() for key in servers}
        procs = {}
        try:
            for key, with_neuroon in servers.items():
                os.makedirs(os.path.join(tmp, key))
                procs[key] = _gunicorn(ports[key], with_neuroon, os.path.join(tmp, key), server_cpu)
            for key, proc in procs.items():
                wait_for_port(ports[key], proc=proc)
            workers = {key: _worker_pid(proc.pid) for key, proc in procs.items()}
            log(f"overhead: warming up ({loadgen.tool()})")
            for _label, path, vary in CASES:
                targets = [(ports[k], path) for k in servers]
                loadgen.measure_together(targets, header, 1, connections, vary, load_cpu)
            for number in range(rounds):
                for label, path, vary in CASES:
                    before = {key: cpu_seconds(workers[key]) for key in servers}
                    loads = loadgen.measure_together(
                        [(ports[key], path) for key in servers],
                        header,
                        slot,
                        connections,
                        vary,
                        load_cpu,
                    )
                    for key, load in zip(servers, loads, strict=True):
                        used = cpu_seconds(workers[key]) - before[key]
                        errors += load.errors
                        rates.setdefault((key, label), []).append(load.rate)
                        cpu.setdefault((key, label), []).append(used / max(load.requests, 1))
                log(f"overhead: round {number + 1}/{rounds} done")
        finally:
            for proc in procs.values():
                stop_process(proc)
    if errors:
        outcome.setup["errors"] = errors

    for label, _path, _vary in CASES:
        reads = label.startswith("/clicks")
        target, limit = (">= 0.97 (<= 3 %)", 0.97) if reads else ("~1.00 (>= 0.99)", 0.99)
        a, b = rates[("A", label)], rates[("B", label)]
        ratios = [y / x for x, y in zip(a, b, strict=True)]
        ratio = median(ratios)
        ca = [c * 1e6 for c in cpu[("A", label)]]
        cb = [c * 1e6 for c in cpu[("B", label)]]
        cpu_ratios = [y / x for x, y in zip(ca, cb, strict=True)]
        note = ""
        if ("A2", label) in rates:
            control = [y / x for x, y in zip(a, rates[("A2", label)], strict=True)]
            cpu_control = [
                y / x for x, y in zip(cpu[("A", label)], cpu[("A2", label)], strict=True)
            ]
            note = (
                f"control A2 / A (both without the extension): throughput median "
                f"{median(control):.3f}, spread {spread(control)}; CPU per request median "
                f"{median(cpu_control):.3f}, spread {spread(cpu_control)}"
            )
        outcome.figures.append(
            Figure(
                f"throughput {label}, with / without",
                median(b),
                "req/s",
                baseline=median(a),
                baseline_label="no extension",
                ratio=ratio,
                spread=spread(ratios),
                target=target,
                met=ratio >= limit,
                note=note,
                extra={"ratios": ratios, "with": b, "without": a},
            )
        )
        outcome.figures.append(
            Figure(
                f"server CPU per request {label}, with / without",
                median(cb),
                "us",
                baseline=median(ca),
                baseline_label="no extension",
                ratio=median(cpu_ratios),
                spread=spread(cpu_ratios),
                extra={"ratios": cpu_ratios},
            )
        )
    log("overhead: in-process WSGI calls")
    outcome.figures.extend(in_process_figures(header, long))
    return outcome
