"""6. Request overhead in instructions: the same comparison as benchmark 1, counted by callgrind.

On a shared VM the speed of a core drifts by tens of percent from one second to the next,
and the overhead under test is a few percent: timed figures straddle their target. An
instruction count does not drift: ``valgrind --tool=callgrind`` counts the same total for
the same program and input, whatever else the machine does. Each case runs in a child
process under callgrind with instrumentation off (imports, app set-up and a warm-up run
at plain valgrind speed and are not counted); a tiny C helper built here with
``valgrind/callgrind.h`` switches counting on just for ``n`` requests, so the count over
``n`` is what one request costs. The requests are in-process WSGI calls of the benchmark
shop (:mod:`benchmarks.apps`) with the 4 KiB Cookie header of benchmark 1: no server, no
network, so this is the extension's cost against Flask's own work alone, a stricter
figure than under a server (whose own work dilutes it). Cases:

* ``/plain``: a page that does not read the clicks (target: within 1 %);
* ``/clicks``, the same cookie on every request (target: within 3 %);
* ``/clicks``, a new cookie on every request: a full parse each time (for information;
  the first page after each click);
* the full parse of the header alone against werkzeug's ``parse_cookie`` of it.

Needs valgrind and a C compiler (Debian's ``valgrind`` and ``gcc``); skipped with the
reason without them. ``--long`` counts more requests (the figures hardly move: counts).
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable

from .apps import create_app, stop
from .bench_cookie_parse import build_header, forget_parsed
from .bench_overhead import _environ
from .common import PYTHON, ROOT, Figure, Outcome, child_env, log
from .loadgen import vary_slot

NAME = "instructions"
TITLE = "request overhead in instructions (callgrind, in process): steady on a noisy VM"

_COLLECTED = re.compile(r"Collected : (\d+)")
_HELPER = r"""
#include <valgrind/callgrind.h>
void counting_on(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void counting_off(void) { CALLGRIND_STOP_INSTRUMENTATION; }
"""
#: (label, app, path, a new click cookie on every request)
CASES = (
    ("/plain", "/plain", False),
    ("/clicks, same cookie", "/clicks", False),
    ("/clicks, new cookie", "/clicks", True),
)
TARGETS = {"/plain": 1.01, "/clicks, same cookie": 1.03}
WARM_UP = 30


def _child(helper: str, mode: str, path: str, vary: bool, count: int) -> None:
    """In the child under callgrind: warm up uncounted, then count ``count`` requests
    (or parses) of ``mode`` ("A" without the extension, "B" with it, "ours"/"werkzeug")."""
    import ctypes

    from werkzeug.http import parse_cookie

    from flask_neuroon.cookies import parse_click_header

    counter = ctypes.CDLL(helper)
    header, _ = build_header()
    head, tail = vary_slot(header)
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as instance:
        app = create_app(mode == "B", instance=instance)

        def start_response(status: str, headers: object, exc_info: object = None) -> None:
            return None

        def request(number: int) -> None:
            cookie = f"{head}{number:08x}{tail}" if vary else header
            body: Iterable[bytes] = app(_environ(path, cookie), start_response)  # type: ignore[arg-type]
            b"".join(body)

        def ours(number: int) -> None:
            forget_parsed()  # a full parse every time
            parse_click_header(header)

        def theirs(number: int) -> None:
            parse_cookie(header)

        step: Callable[[int], None] = {"ours": ours, "werkzeug": theirs}.get(mode, request)
        for number in range(WARM_UP):
            step(number)
        time.sleep(1.0)  # let the sender threads the first request started settle
        # The two apps' heaps differ in size (the extension's modules): out of the
        # collector's way, so that no full collection walks one but not the other.
        gc.collect()
        gc.freeze()
        counter.counting_on()
        for number in range(WARM_UP, WARM_UP + count):
            step(number)
        counter.counting_off()
        stop(app)
    os._exit(0)


def _build_helper(directory: str) -> str | None:
    """The counting switch as a shared library; None without a compiler or the header."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    source, library = os.path.join(directory, "count.c"), os.path.join(directory, "count.so")
    with open(source, "w") as file:
        file.write(_HELPER)
    built = subprocess.run(
        [compiler, "-O1", "-shared", "-fPIC", "-o", library, source],
        capture_output=True,
        check=False,
    )
    return library if built.returncode == 0 else None


def _per_call(helper: str, mode: str, path: str, vary: bool, count: int) -> float:
    """Instructions of one request (or parse), counted by callgrind."""
    argv = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        "--callgrind-out-file=/dev/null",
        PYTHON,
        "-m",
        "benchmarks.bench_instructions",
        helper,
        mode,
        path,
        "new" if vary else "same",
        str(count),
    ]
    done = subprocess.run(
        argv,
        cwd=ROOT,
        # One hash seed for every child: dict and set layouts, and so the counts, repeat.
        env=child_env(PYTHONHASHSEED="0"),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    found = _COLLECTED.search(done.stderr)
    if done.returncode != 0 or found is None:
        raise RuntimeError(f"callgrind run failed ({done.returncode}): {done.stderr[-500:]}")
    return int(found.group(1)) / count


def run(long: bool = False) -> Outcome:
    outcome = Outcome(NAME, TITLE, long=long)
    if shutil.which("valgrind") is None:
        outcome.skipped = "valgrind is not installed (apt-get install valgrind)"
        return outcome
    count = 400 if long else 100
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        helper = _build_helper(tmp)
        if helper is None:
            outcome.skipped = "no C compiler or valgrind/callgrind.h to build the counting switch"
            return outcome
        outcome.setup = {
            "counter": "valgrind --tool=callgrind --instr-atstart=no, counting switched on"
            f" for {count} requests after {WARM_UP} uncounted ones",
            "requests": "in-process WSGI calls of benchmarks/apps.py, 4 KiB Cookie header",
        }
        for label, path, vary in CASES:
            log(f"instructions: {label}")
            without = _per_call(helper, "A", path, vary, count)
            with_it = _per_call(helper, "B", path, vary, count)
            target = TARGETS.get(label)
            ratio = with_it / without
            outcome.figures.append(
                Figure(
                    f"instructions per request {label}, with / without",
                    with_it,
                    "instr",
                    baseline=without,
                    baseline_label="no extension",
                    target=f"<= {target:g} (in process)" if target else "",
                    met=ratio <= target if target else None,
                    note=f"the extension adds {with_it - without:,.0f} instructions per request",
                )
            )
        log("instructions: the parse")
        ours = _per_call(helper, "ours", "", False, count)
        theirs = _per_call(helper, "werkzeug", "", False, count)
    outcome.figures.append(
        Figure(
            "instructions per click-map parse, a new 4 KiB cookie",
            ours,
            "instr",
            baseline=theirs,
            baseline_label="werkzeug parse_cookie",
        )
    )
    return outcome


if __name__ == "__main__":  # the child: HELPER MODE PATH same|new COUNT
    _child(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "new", int(sys.argv[5]))
