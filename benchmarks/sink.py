"""A minimal, fast stand-in for the conversion endpoint: asyncio, HTTP/1.1, keep-alive.

It answers every ``POST`` with ``200`` the first time it sees an ``orderId`` and ``409``
after that (as the real API does), and counts requests, distinct order ids and repeats.
No validation, no recording of bodies: it exists so that the *sender* is what is measured,
not the server (``flask_neuroon.testing.FakeNeuroonAPI`` checks the whole contract and is
several times slower; benchmark 3 measures both).

Control (plain HTTP on the same port):

* ``GET /_stats``            ``{"requests", "distinct", "duplicates", "slow"}``
* ``POST /_reset``           forget everything counted
* ``POST /_slow?seconds=S``  wait S seconds before every answer (0: off)

Run: ``python -m benchmarks.sink [--port N]``; the port is the only line on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sys
from typing import Any
from urllib.parse import parse_qs, urlsplit

_ORDER_ID = re.compile(rb'"orderId"\s*:\s*"((?:[^"\\]|\\.)*)"')
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:[ \t]*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close", re.IGNORECASE)


class Sink:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.seen: set[bytes] = set()
        self.duplicates = 0
        self.slow = 0.0

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "distinct": len(self.seen),
            "duplicates": self.duplicates,
            "slow": self.slow,
        }

    def control(self, method: bytes, target: bytes) -> tuple[int, bytes]:
        parts = urlsplit(target.decode("latin-1"))
        if parts.path == "/_stats":
            return 200, json.dumps(self.stats()).encode()
        if parts.path == "/_reset" and method == b"POST":
            self.reset()
            return 200, b"{}"
        if parts.path == "/_slow" and method == b"POST":
            self.slow = float(parse_qs(parts.query).get("seconds", ["0"])[0])
            return 200, b"{}"
        return 404, b'{"error":"not found"}'

    def conversion(self, body: bytes) -> tuple[int, bytes]:
        self.requests += 1
        found = _ORDER_ID.search(body)
        if found is None:
            return 400, b'{"error":"orderId is required"}'
        order_id = found.group(1)
        if order_id in self.seen:
            self.duplicates += 1
            return 409, b'{"error":"Conversion already recorded"}'
        self.seen.add(order_id)
        return 200, b'{"success":true}'

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                line_end = head.find(b"\r\n")
                method, target, _version = head[:line_end].split(b" ", 2)
                found = _CONTENT_LENGTH.search(head)
                length = int(found.group(1)) if found else 0
                body = await reader.readexactly(length) if length else b""
                if target.startswith(b"/_"):
                    status, payload = self.control(method, target)
                else:
                    if self.slow:
                        await asyncio.sleep(self.slow)
                    status, payload = self.conversion(body)
                close = _CLOSE.search(head) is not None
                writer.write(
                    b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\n"
                    b"Content-Length: %d\r\n%s\r\n%s"
                    % (status, len(payload), b"Connection: close\r\n" if close else b"", payload)
                )
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()


async def serve(port: int, ready: Any = None) -> None:
    sink = Sink()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await asyncio.start_server(sink.handle, sock=sock, backlog=1024)
    print(sock.getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        # Nothing to clean up: leave at once, without cancelling every connection's task.
        loop.add_signal_handler(signum, os._exit, 0)
    parent = os.getppid()
    async with server:
        # Orphaned (the benchmark died without stopping us): leave too.
        while os.getppid() == parent:
            await asyncio.sleep(0.5)
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.port))
    return 0


# --------------------------------------------------------------------------- client side


class SinkProcess:
    """The sink in a child process, with its control calls (used by the benchmarks)."""

    def __init__(self, port: int = 0) -> None:
        import subprocess

        from .common import PYTHON, ROOT, child_env, wait_for_port

        self.proc = subprocess.Popen(
            [PYTHON, "-m", "benchmarks.sink", "--port", str(port)],
            stdout=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=str(ROOT),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.strip():
            raise RuntimeError("the sink did not start")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}"
        wait_for_port(self.port, proc=self.proc)

    def _call(self, method: str, path: str) -> dict[str, Any]:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return json.loads(response.read() or b"{}")  # type: ignore[no-any-return]
        finally:
            connection.close()

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stats")

    def reset(self) -> None:
        self._call("POST", "/_reset")

    def slow(self, seconds: float) -> None:
        self._call("POST", f"/_slow?seconds={seconds}")

    def wait_distinct(self, n: int, timeout: float, poll: float = 0.01) -> float | None:
        """Wait until ``n`` distinct orders arrived; the monotonic time it happened, or None."""
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stats()["distinct"] >= n:
                return time.monotonic()
            time.sleep(poll)
        return None

    def close(self) -> None:
        from .common import stop_process

        stop_process(self.proc)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> SinkProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


if __name__ == "__main__":
    sys.exit(main())
