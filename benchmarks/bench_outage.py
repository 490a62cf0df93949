"""4. Outage: N orders tracked while the API is down, then it comes back.

The API URL points at a loopback port nobody listens on (every connection is refused).
The shop tracks N orders (``track_conversion``, SQLite outbox, default settings: 4
sender threads, ``NEUROON_MAX_PENDING`` 1000); the senders try each once, fail, and the
rows wait for their retry. This process's VmRSS is sampled every 50 ms throughout; the
figure is the peak minus the RSS before the first order (after a warm-up order, so that
threads and connections already exist). The orders are generated one at a time, so
the benchmark itself holds none of them.

Then the API comes back (the sink starts on that very port) and the operator runs
``flask neuroon flush --all`` (through Flask's CLI runner, in this process, with this
app): time until the sink has every order, the drain rate (orders / that time, against
the rate of a naive ``requests.post`` loop measured in the same run), and the sink's
count of distinct orders and of repeats: lost = N - distinct, duplicated = repeats.
"""

from __future__ import annotations

import tempfile
import time

from flask_neuroon import Neuroon
from flask_neuroon.cli import neuroon_cli

from .apps import SHOP_ID, create_app, order, stop
from .bench_throughput import CLICKS, naive_run, quiet_logs, unquiet_logs
from .common import Figure, Outcome, RSSSampler, free_port, log
from .sink import SinkProcess

NAME = "outage"
TITLE = "orders tracked while the API is down, then the drain when it is back"


def run(long: bool = False) -> Outcome:
    outcome = Outcome(NAME, TITLE, long=long)
    count = 100_000 if long else 10_000
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    outcome.setup = {
        "orders": count,
        "api_down_as": "connection refused (nothing listens on the port)",
        "recovery": "sink started on the same port, then `flask neuroon flush --all`",
        "rss_sampling": "VmRSS of this process every 50 ms",
        "settings": "defaults (4 sender threads, NEUROON_MAX_PENDING 1000, SQLite outbox)",
    }
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as instance:
        handler = quiet_logs(instance)
        try:
            app = create_app(True, api_url=api_url, instance=instance)
            neuroon: Neuroon = app.extensions["bench_neuroon"]
            state = app.extensions["neuroon"]
            with app.app_context():
                neuroon.track_conversion(order(0, CLICKS, prefix="warm"), clicks=CLICKS)
                neuroon.flush(10)
                time.sleep(0.2)
                log(f"outage: tracking {count:,} orders with the API down")
                with RSSSampler(0.05) as rss:
                    started = time.monotonic()
                    for number in range(count):
                        neuroon.track_conversion(order(number, CLICKS, prefix="o"), clicks=CLICKS)
                    tracked = time.monotonic() - started
                    # Let the senders make their one attempt at every row.
                    neuroon.flush(600)
                    attempted = time.monotonic() - started
                stats = state.outbox.stats()
                log(f"outage: {stats}; the API comes back")
                with SinkProcess(port) as sink:
                    runner = app.test_cli_runner()
                    started = time.monotonic()
                    result = runner.invoke(neuroon_cli, ["flush", "--all", "--timeout", "900"])
                    flushed = time.monotonic() - started
                    expected = count + 1  # and the warm-up order
                    done_at = sink.wait_distinct(
                        expected, timeout=60 if result.exit_code == 0 else 1
                    )
                    drained = (done_at - started) if done_at is not None else float("nan")
                    sink_stats = sink.stats()
                    log(f"outage: drained in {drained:.1f} s; {result.output.strip()}")
                    endpoint = f"{sink.url}/api/plugin/shops/{SHOP_ID}/track/conversion"
                    sink.reset()
                    naive_count = 2000 if long else 1000
                    naive_rate = naive_count / naive_run(endpoint, naive_count, "naive")
                after = state.outbox.stats()
                stop(app)
        finally:
            unquiet_logs(handler)

    lost = expected - sink_stats["distinct"]
    duplicated = sink_stats["duplicates"]
    drain_rate = expected / drained
    outcome.figures += [
        Figure(
            "peak RSS growth while the API is down",
            rss.growth_mb,
            "MB",
            baseline=rss.start_mb,
            baseline_label="RSS before",
            target="<= 50 MB",
            met=rss.growth_mb <= 50,
            note=(
                f"{rss.samples} samples; tracking took {tracked:.1f} s "
                f"({count / tracked:,.0f} orders/s), first attempts done after {attempted:.1f} s; "
                f"outbox then: {stats.pending:,} pending"
            ),
        ),
        Figure(
            "orders lost",
            lost,
            "",
            target="0",
            met=lost == 0,
            note=f"sink: {sink_stats}; outbox afterwards: {after}",
        ),
        Figure("orders delivered twice", duplicated, "", target="0", met=duplicated == 0),
        Figure(
            "time to drain after the API is back",
            drained,
            "s",
            note=f"`flask neuroon flush --all` returned after {flushed:.1f} s: "
            f"{result.output.strip()!r}",
        ),
        Figure(
            "drain rate",
            drain_rate,
            "orders/s",
            baseline=naive_rate,
            baseline_label="naive requests.post loop",
            target=">= 1,000/s",
            met=drain_rate >= 1000,
        ),
    ]
    return outcome
