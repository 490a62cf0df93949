"""What every benchmark shares: figures and verdicts, statistics, processes, ports, RSS.

A benchmark returns a list of :class:`Figure`. A figure is one measured value, printed
with its absolute number, and, whenever there is one, the *baseline* it is compared to
(run in the same process or the same run) and the ratio between the two. Targets are
checked on the figure the issue names; a figure without a target is for information.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
PYTHON = sys.executable


@dataclass
class Figure:
    """One measured value and, if any, its baseline from the same run."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    #: value / baseline unless given (some figures are read the other way round).
    ratio: float | None = None
    target: str = ""
    #: True / False against the target; None when the figure has no target.
    met: bool | None = None
    note: str = ""
    #: Spread of the repeated measurements (e.g. min..max of the ratios), as text.
    spread: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline


@dataclass
class Outcome:
    """The figures of one benchmark run, with how it was run."""

    name: str
    title: str
    figures: list[Figure] = field(default_factory=list)
    skipped: str = ""
    long: bool = False
    seconds: float = 0.0
    run_at: str = ""
    setup: dict[str, Any] = field(default_factory=dict)


def fmt(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit in ("us", "ms", "s", "MB", "%"):
        text = f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    elif abs(value) >= 100 or float(value).is_integer():
        text = f"{value:,.0f}"
    else:
        text = f"{value:,.2f}"
    return f"{text} {unit}".strip()


def verdict(met: bool | None) -> str:
    return {True: "met", False: "MISSED", None: ""}[met]


def print_table(outcomes: Sequence[Outcome], out: TextIO = sys.stdout) -> None:
    """The figures of every benchmark, one line each, with their baseline and verdict."""
    header = ("figure", "value", "baseline", "ratio", "spread", "target", "verdict")
    rows: list[tuple[str, ...]] = []
    for outcome in outcomes:
        rows.append((f"[{outcome.name}] {outcome.title}", "", "", "", "", "", ""))
        if outcome.skipped:
            rows.append(("  skipped: " + outcome.skipped, "", "", "", "", "", ""))
        for fig in outcome.figures:
            baseline = ""
            if fig.baseline is not None:
                baseline = fmt(fig.baseline, fig.unit)
                if fig.baseline_label:
                    baseline += f" ({fig.baseline_label})"
            rows.append(
                (
                    "  " + fig.name,
                    fmt(fig.value, fig.unit),
                    baseline,
                    "" if fig.ratio is None else f"{fig.ratio:.3f}",
                    fig.spread,
                    fig.target,
                    verdict(fig.met),
                )
            )
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    widths[0] = min(widths[0], 60)

    def line(row: tuple[str, ...]) -> str:
        cells = [row[0].ljust(widths[0])]
        cells += [row[i].rjust(widths[i]) if i < 5 else row[i].ljust(widths[i]) for i in (1, 2, 3)]
        cells += [row[4].ljust(widths[4]), row[5].ljust(widths[5]), row[6]]
        return "  ".join(cells).rstrip()

    print(line(header), file=out)
    print("-" * (sum(widths) + 2 * (len(widths) - 1)), file=out)
    for row in rows:
        print(line(row), file=out)
    for outcome in outcomes:
        notes = [f"  {fig.name}: {fig.note}" for fig in outcome.figures if fig.note]
        if notes:
            print(f"\n[{outcome.name}] notes:", file=out)
            for note in notes:
                print(note, file=out)


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for text in Path("/proc/cpuinfo").read_text().splitlines():
            if text.startswith("model name"):
                return text.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def tool_version(*argv: str) -> str | None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else None


def machine_info() -> dict[str, Any]:
    with contextlib.suppress(OSError):
        load = os.getloadavg()
    packages = (
        "flask-neuroon",
        "Flask",
        "Werkzeug",
        "requests",
        "urllib3",
        "gunicorn",
        "SQLAlchemy",
        "psycopg",
    )
    mem_total = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for text in Path("/proc/meminfo").read_text().splitlines():
            if text.startswith("MemTotal:"):
                mem_total = int(text.split()[1]) // 1024
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_mb": mem_total,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "sqlite": __import__("sqlite3").sqlite_version,
        "load_average_at_start": list(load) if "load" in locals() else None,
        "versions": {name: _version(name) for name in packages},
        "tools": {"wrk": tool_version("wrk", "--version")},
    }


# --------------------------------------------------------------------------- statistics


def percentile(samples: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sample."""
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-pct * len(ordered) // 100))))
    return ordered[rank - 1]


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples) if samples else float("nan")


def spread(samples: Sequence[float], digits: int = 3) -> str:
    if not samples:
        return ""
    return f"{min(samples):.{digits}f}..{max(samples):.{digits}f} (n={len(samples)})"


# --------------------------------------------------------------------------- memory


def rss_mb(pid: int | None = None) -> float:
    """Resident set size (VmRSS) of ``pid`` (default: this process), in MB."""
    path = f"/proc/{pid or 'self'}/status"
    with open(path) as status:
        for text in status:
            if text.startswith("VmRSS:"):
                return int(text.split()[1]) / 1024
    return float("nan")


class RSSSampler:
    """Sample VmRSS every ``interval`` seconds in a thread; remember the peak."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.start_mb = rss_mb()
        self.peak_mb = self.start_mb
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> float:
        now = rss_mb()
        self.samples += 1
        self.peak_mb = max(self.peak_mb, now)
        return now

    def __enter__(self) -> RSSSampler:
        self.start_mb = rss_mb()
        self.peak_mb = self.start_mb
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def growth_mb(self) -> float:
        return self.peak_mb - self.start_mb


def cpu_seconds(pid: int) -> float:
    """User + system CPU time consumed so far by process ``pid``."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(
    port: int, timeout: float = 20.0, proc: subprocess.Popen[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.update(extra)
    return env


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> None:
    """Terminate one process we started (by its own handle), then kill it if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


@contextlib.contextmanager
def running(
    argv: Sequence[str], *, port: int | None = None, **kwargs: Any
) -> Iterator[subprocess.Popen[str]]:
    """Run ``argv`` as a child for the duration of the block (waiting for ``port``)."""
    kwargs.setdefault("env", child_env())
    kwargs.setdefault("cwd", str(ROOT))
    kwargs.setdefault("stdout", subprocess.DEVNULL)
    proc = subprocess.Popen(list(argv), text=True, **kwargs)
    try:
        if port is not None:
            wait_for_port(port, proc=proc)
        yield proc
    finally:
        stop_process(proc)


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write atomically: a ``.tmp`` sibling renamed over the target."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def outcome_to_json(outcome: Outcome) -> dict[str, Any]:
    return asdict(outcome)


def log(message: str) -> None:
    """Progress on stderr, so that stdout holds the table only."""
    print(f"  .. {message}", file=sys.stderr, flush=True)
