"""Keep-alive HTTP load, from another process: ``wrk`` when installed, else a Python client.

:func:`measure` runs ``connections`` keep-alive connections against one URL for
``duration`` seconds and returns the requests completed and the seconds they took. With
``wrk`` on the PATH (``apt-get install -y wrk``) it is used (one thread: it needs a
fraction of a core, leaving the other to the server); otherwise this module's own asyncio
client runs in a child process (``python -m benchmarks.loadgen``), which costs the
machine more CPU per request but loads both servers of a comparison alike.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass

from .common import PYTHON, ROOT, child_env

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)


@dataclass
class Load:
    requests: int
    seconds: float
    errors: int = 0
    tool: str = ""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def tool() -> str:
    return "wrk" if shutil.which("wrk") else "python-asyncio"


_SLOT = re.compile(r"neuroon_clicks=[^;]*?([0-9a-f]{8})-[0-9a-f]{4}-")
#: Each varying run counts from its own start: no cookie of one run comes back in another.
_runs = itertools.count(1)


def vary_slot(cookie: str) -> tuple[str, str]:
    """``cookie`` cut around the first 8 hex digits of a searchLogId in the click cookie.

    With a counter (``%08x``) put between the two halves, every request carries a click
    cookie of its own, of the same length and as valid: no cache can recognise it.
    """
    found = _SLOT.search(cookie)
    if found is None:
        raise ValueError("no searchLogId to vary in the click cookie")
    return cookie[: found.start(1)], cookie[found.end(1) :]


def measure(
    port: int, path: str, cookie: str, duration: float, connections: int = 8, vary: bool = False
) -> Load:
    return measure_together([(port, path)], cookie, duration, connections, vary)[0]


def pinned_to(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that keeps the child (and its threads and children) on one CPU."""
    if cpu is None or not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) <= cpu:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def measure_together(
    targets: list[tuple[int, str]],
    cookie: str,
    duration: float,
    connections: int = 8,
    vary: bool = False,
    cpu: int | None = None,
) -> list[Load]:
    """Load every ``(port, path)`` at the same time, one generator process each.

    Servers measured at the same moment share whatever else the machine is doing at that
    moment, so the ratio of their rates does not drift with it. ``vary``: a different
    click cookie on every request (see :func:`vary_slot`).
    """
    started = [
        _start(port, path, cookie, duration, connections, vary, cpu) for port, path in targets
    ]
    return [finish() for finish in started]


def _start(
    port: int,
    path: str,
    cookie: str,
    duration: float,
    connections: int,
    vary: bool,
    cpu: int | None,
) -> Callable[[], Load]:
    if shutil.which("wrk"):
        # The 4 KiB header goes through a Lua script: no argv length or quoting concerns.
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
            if vary:
                head, tail = vary_slot(cookie)
                script.write(
                    f"local head, tail = {json.dumps(head)}, {json.dumps(tail)}\n"
                    f"local counter = {next(_runs) * 2**20}\n"
                    "request = function()\n"
                    "  counter = counter + 1\n"
                    '  wrk.headers["Cookie"] = head .. string.format("%08x", counter) .. tail\n'
                    "  return wrk.format()\n"
                    "end\n"
                )
            else:
                script.write(f'wrk.headers["Cookie"] = {json.dumps(cookie)}\n')
        argv = [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "10s",
            "-s",
            script.name,
            f"http://127.0.0.1:{port}{path}",
        ]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=pinned_to(cpu),
        )

        def finish_wrk() -> Load:
            try:
                out, err = proc.communicate()
            finally:
                os.unlink(script.name)
            if proc.returncode:
                raise RuntimeError(f"wrk failed: {err.strip()}")
            return _parse_wrk(out)

        return finish_wrk
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as header:
        header.write(cookie)
    argv = [
        PYTHON,
        "-m",
        "benchmarks.loadgen",
        "--port",
        str(port),
        "--path",
        path,
        "--cookie-file",
        header.name,
        "--duration",
        str(duration),
        "--connections",
        str(connections),
        *(["--vary", str(next(_runs) * 2**20)] if vary else []),
    ]
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=child_env(),
        cwd=str(ROOT),
        preexec_fn=pinned_to(cpu),
    )

    def finish_python() -> Load:
        try:
            out, err = proc.communicate()
        finally:
            os.unlink(header.name)
        if proc.returncode:
            raise RuntimeError(f"benchmarks.loadgen failed: {err.strip()}")
        result = json.loads(out)
        return Load(result["requests"], result["seconds"], result["errors"], "python-asyncio")

    return finish_python


def _parse_wrk(out: str) -> Load:
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    if total is None:
        raise RuntimeError(f"unexpected wrk output: {out!r}")
    scale = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[total.group(3)]
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Load(int(total.group(1)), float(total.group(2)) * scale, errors, "wrk")


# --------------------------------------------------------------------------- the client


async def _connection(
    port: int, request: bytes | tuple[bytes, bytes], stop_at: float, counts: list[int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < stop_at:
            if isinstance(request, tuple):
                counts[2] += 1
                writer.write(b"%s%08x%s" % (request[0], counts[2] % 2**32, request[1]))
            else:
                writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            found = _CONTENT_LENGTH.search(head)
            if found:
                await reader.readexactly(int(found.group(1)))
            status = int(head[9:12])
            counts[0 if status < 400 else 1] += 1
    finally:
        writer.close()


async def _run(
    port: int, path: str, cookie: str, duration: float, connections: int, vary: int | None = None
) -> Load:
    def request_with(text: str) -> bytes:
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {text}\r\n"
            "User-Agent: benchmarks.loadgen\r\nAccept: */*\r\n\r\n"
        ).encode("latin-1")

    request: bytes | tuple[bytes, bytes]
    counts = [0, 0, vary or 0]
    if vary is not None:
        head, tail = vary_slot(cookie)
        whole = request_with(head + "\0" + tail)
        cut = whole.index(b"\0")
        request = (whole[:cut], whole[cut + 1 :])
    else:
        request = request_with(cookie)
    start = time.monotonic()
    await asyncio.gather(
        *(_connection(port, request, start + duration, counts) for _ in range(connections))
    )
    return Load(counts[0], time.monotonic() - start, counts[1], "python-asyncio")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="keep-alive GET load for a fixed time")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/")
    parser.add_argument("--cookie-file", required=True)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--vary", type=int, metavar="START", help="a new click cookie per request, from START"
    )
    args = parser.parse_args(argv)
    with open(args.cookie_file) as cookie:
        header = cookie.read()
    load = asyncio.run(
        _run(args.port, args.path, header, args.duration, args.connections, args.vary)
    )
    print(json.dumps({"requests": load.requests, "seconds": load.seconds, "errors": load.errors}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
