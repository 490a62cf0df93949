"""``python -m benchmarks [NAME ...] [--long]``: run the benchmarks, print a table, write JSON.

Names (or numbers): 1 overhead, 2 confirm, 3 throughput, 4 outage, 5 flushers,
6 instructions. With no name, all of them run in that order. Figures go to
``benchmarks/results/latest.json``
(``--json PATH`` elsewhere); a run of some benchmarks replaces only their entries there.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from typing import Any

from .common import RESULTS, Outcome, machine_info, outcome_to_json, print_table, write_json

BENCHMARKS = {
    "overhead": "benchmarks.bench_overhead",
    "confirm": "benchmarks.bench_confirm",
    "throughput": "benchmarks.bench_throughput",
    "outage": "benchmarks.bench_outage",
    "flushers": "benchmarks.bench_flushers",
    "instructions": "benchmarks.bench_instructions",
}
NUMBERS = {str(i): name for i, name in enumerate(BENCHMARKS, start=1)}


def _select(names: list[str]) -> list[str]:
    if not names:
        return list(BENCHMARKS)
    chosen = []
    for name in names:
        key = NUMBERS.get(name, name)
        if key not in BENCHMARKS:
            raise SystemExit(f"unknown benchmark {name!r}; choose from {', '.join(BENCHMARKS)}")
        chosen.append(key)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n", 1)[0]
    )
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all)")
    parser.add_argument("--long", action="store_true", help="the longer, steadier runs")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--json", default=str(RESULTS / "latest.json"), help="where to write")
    parser.add_argument("--no-json", action="store_true", help="print only")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when a figure misses its target"
    )
    args = parser.parse_args(argv)
    if args.list:
        for number, name in NUMBERS.items():
            module = importlib.import_module(BENCHMARKS[name])
            print(f"{number}. {name:<11} {module.TITLE}")
        return 0

    machine = machine_info()
    print(
        f"flask-neuroon benchmarks{' (--long)' if args.long else ''}: "
        f"{machine['cpu_model']}, {machine['cores']} cores, Python {machine['python']}, "
        f"SQLite {machine['sqlite']}, load {machine['load_average_at_start']}",
        flush=True,
    )
    outcomes: list[Outcome] = []
    crashed = False
    for name in _select(args.names):
        module = importlib.import_module(BENCHMARKS[name])
        print(f"running {name}: {module.TITLE}", file=sys.stderr, flush=True)
        started = time.monotonic()
        try:
            outcome: Outcome = module.run(long=args.long)
        except Exception:
            crashed = True
            traceback.print_exc()
            outcome = Outcome(name, module.TITLE, skipped="crashed (traceback above)")
        outcome.seconds = round(time.monotonic() - started, 1)
        outcome.long = args.long
        outcome.run_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        outcomes.append(outcome)
        print(f"{name}: {outcome.seconds:.1f} s", file=sys.stderr, flush=True)

    print()
    print_table(outcomes)
    missed = [f"{o.name}: {f.name}" for o in outcomes for f in o.figures if f.met is False]
    print(f"\n{len(missed)} figure(s) missed their target" + (":" if missed else "."))
    for text in missed:
        print(f"  {text}")

    if not args.no_json:
        path = __import__("pathlib").Path(args.json)
        document: dict[str, Any] = {"benchmarks": {}}
        if path.exists():
            try:
                document = json.loads(path.read_text())
            except ValueError:
                document = {"benchmarks": {}}
        document.setdefault("benchmarks", {})
        document["machine"] = machine
        document["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        for outcome in outcomes:
            entry = outcome_to_json(outcome)
            entry["machine"] = machine
            document["benchmarks"][outcome.name] = entry
        write_json(path, document)
        print(f"\nfigures written to {path}")
    if crashed:
        return 2
    return 1 if args.strict and missed else 0


if __name__ == "__main__":
    sys.exit(main())
