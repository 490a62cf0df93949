"""One flusher process of benchmark 5: ``flask neuroon flush`` on shared storage.

It builds the benchmark shop on ``--uri``, opens its storage, says it is ready (a file
``ready-<pid>`` in ``--barrier``), waits for a file ``go`` there, runs the CLI's flush
command with this app and prints one JSON line: its pid, the outcomes of the attempts it
made, the command's output and exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from flask_neuroon.cli import neuroon_cli

from .apps import create_app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--uri", required=True)
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--barrier", required=True)
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-flusher-") as instance:
        app = create_app(
            True, api_url=args.api_url, instance=instance, NEUROON_STORAGE_URI=args.uri
        )
        state = app.extensions["neuroon"]
        state.outbox.stats()  # connect (and import the driver) before the start
        with open(os.path.join(args.barrier, f"ready-{os.getpid()}"), "w") as ready:
            ready.write("ready\n")
        go = os.path.join(args.barrier, "go")
        deadline = time.monotonic() + 120
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                return 3
            time.sleep(0.002)
        runner = app.test_cli_runner()
        result = runner.invoke(neuroon_cli, ["flush", "--timeout", str(args.timeout)])
        print(
            json.dumps(
                {
                    "pid": os.getpid(),
                    "outcomes": dict(state.outcomes),
                    "output": result.output.strip(),
                    "exit": result.exit_code,
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
