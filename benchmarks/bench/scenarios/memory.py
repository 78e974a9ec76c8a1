"""``memory``: a million small Notification calls, the RSS sampled; flat
means less than ``TARGET_FLAT_MB`` of growth over the second half."""

from __future__ import annotations

from pathlib import Path

from ..broker import Broker, Purger
from ..load import notification_request, run_wrk
from ..outcome import Outcome, count_check, load_checks, print_table
from ..process import slope, tree_rss_kb
from ..servers import start_gateway, wait_drained, write_config

#: "Memory stays flat": RSS growth over the second half of the memory run,
#: from a least-squares fit of the samples, below this many MB.
TARGET_FLAT_MB = 2.0


def scenario_memory(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    connections = options.memory_connections
    print(
        f"\n== memory: {options.calls:,} small Notification calls at {connections} connections, "
        f"RSS sampled every {options.memory_interval:g} s"
        + (f", {options.workers} workers (RSS summed)" if options.workers > 1 else "")
    )
    setup = write_config(workdir, options.broker_host, options.broker_port, options.synchronous)
    broker.setup(setup.exchange, setup.queue)
    server = None
    purger = None
    try:
        server = start_gateway(options, setup, workers=options.workers)
        request = notification_request(server.port)
        rss_start = tree_rss_kb(server.pid)[0] / 1024
        purger = Purger(broker, setup.exchange, setup.queue, 15.0)
        purger.start()
        progress = {"next": 60.0}

        def during(elapsed: float) -> None:
            if elapsed >= progress["next"]:
                progress["next"] += 60.0
                rss = tree_rss_kb(server.pid)[0] / 1024
                print(f"  {elapsed:5.0f} s: RSS {rss:.1f} MB", flush=True)

        load = run_wrk(
            options,
            workdir,
            server,
            request,
            connections,
            "memory",
            quota=options.calls,
            rss_interval=options.memory_interval,
            during=during,
        )
        load_checks(outcome, load, "memory")
        wait_drained(server.port, options.drain_timeout, server)
        purged = purger.stop()
        purger = None
        in_queue = purged + broker.count(setup.exchange, setup.queue)
        verdict = count_check(outcome, "memory", in_queue, load.ok2xx)
        samples = load.rss_samples
        t0 = samples[0][0] if samples else 0.0
        points = [(t - t0, kb / 1024) for t, kb in samples]
        half = [p for p in points if p[0] >= points[-1][0] / 2] if points else []
        per_second = slope(half)
        second_half_s = (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
        growth = per_second * second_half_s
        per_100k = per_second * 100_000 / load.rate if load.rate else 0.0
        rss_end = points[-1][1] if points else 0.0
        rss_peak = max((p[1] for p in points), default=0.0)
        rss_mid = half[0][1] if half else 0.0
        print_table(
            "Memory (small Notification calls)", [load], {"memory": (in_queue, verdict)}, {}
        )
        print(
            f"RSS: start {rss_start:.1f} MB, at half-run {rss_mid:.1f} MB, peak {rss_peak:.1f} MB, "
            f"end {rss_end:.1f} MB; second half: {per_second * 60:+.2f} MB/min, "
            f"{per_100k:+.3f} MB per 100k calls, {growth:+.2f} MB over {second_half_s:.0f} s "
            f"(least squares); {load.answered:,} calls in {load.elapsed:.0f} s"
        )
        step = max(1, len(points) // 10)
        print(
            "RSS over the run (s, MB): "
            + ", ".join(f"{t:.0f}: {mb:.1f}" for t, mb in points[::step] + points[-1:])
        )
        outcome.rows.append(
            load.as_dict()
            | {
                "scenario": "memory",
                "calls": options.calls,
                "in_queue": in_queue,
                "count": verdict,
                "rss_mb": {
                    "start": round(rss_start, 1),
                    "half": round(rss_mid, 1),
                    "peak": round(rss_peak, 1),
                    "end": round(rss_end, 1),
                    "second_half_growth": round(growth, 2),
                    "per_100k_calls": round(per_100k, 3),
                },
            }
        )
        outcome.targets.append(
            (
                f"memory flat over {options.calls:,} calls (second-half growth < "
                f"{TARGET_FLAT_MB:g} MB)",
                growth < TARGET_FLAT_MB,
                f"{growth:+.2f} MB",
            )
        )
    finally:
        if purger is not None:
            purger.stop()
        if server is not None:
            server.stop_and_check(outcome, "memory")
        broker.teardown(setup.exchange, setup.queue)
