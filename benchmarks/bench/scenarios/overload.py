"""``overload``: ``[gate] max_in_progress`` at its limit, then 4× as many
connections, callers retrying at once or honouring ``Retry-After``."""

from __future__ import annotations

from pathlib import Path

from ..broker import Broker
from ..load import Request, stamped_notification_request
from ..outcome import Outcome, ms, print_table
from ..process import rss_growth
from .runs import gateway_run

#: "Memory stays bounded under a 4x overload": the overload run's peak RSS at
#: most this many MB above the run at the limit (as many connections as calls
#: allowed in progress).
TARGET_OVERLOAD_RSS_MB = 10.0


def scenario_overload(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    limit = options.max_in_progress
    workers = options.workers
    at_limit = limit * workers
    connections = options.overload_connections or 4 * at_limit
    print(
        f"\n== overload: [gate] max_in_progress = {limit}"
        + (f" per worker, {workers} workers" if workers > 1 else "")
        + f"; {at_limit} connections (at the limit), then {connections} "
        f"({connections / at_limit:g}x), {options.overload_duration:g} s each "
        "(small Notification calls stamped with their send time)"
    )

    def honouring(port: int, secret: str = "") -> Request:
        request = stamped_notification_request(port, secret)
        request.honour_retry_after = True
        return request

    runs = []
    for label, conns, refusals, request_of, name in (
        ("overload-limit", at_limit, workers > 1, stamped_notification_request, "limit"),
        ("overload", connections, True, stamped_notification_request, "retry now"),
        ("overload-wait", connections, True, honouring, "wait R-A"),
    ):
        load, in_queue, verdict = gateway_run(
            options,
            workdir,
            broker,
            outcome,
            request_of,
            conns,
            label,
            options.overload_duration,
            workers=workers,
            max_in_progress=limit,
            expect_refusals=refusals,
        )
        load.server = name
        outcome.check(
            f"{label}: every 2xx says published or queued",
            load.published + load.queued == load.ok2xx and load.unknown == 0,
            f"{load.published} published + {load.queued} queued of {load.ok2xx}",
        )
        runs.append((load, in_queue, verdict))
        print(
            f"  {label}: {load.ok2xx / load.elapsed:.0f} accepted/s, "
            f"{load.s503 / load.elapsed:.0f} refused (503)/s, {in_queue} in the queue {verdict}",
            flush=True,
        )
    (base, _, _), (over, over_count, _), (polite, polite_count, _) = runs
    counts = {load.label: (count, verdict) for load, count, verdict in runs}
    print_table(
        f"Overload (max_in_progress {limit}"
        + (" per worker" if workers > 1 else "")
        + ", small Notification calls; callers retrying at once, then waiting Retry-After)",
        [load for load, _, _ in runs],
        counts,
        {},
    )
    print(
        f"{'run':<9} {'conns':>5} {'accepted/s':>10} {'503/s':>7} {'503':>8} "
        f"{'w/ Retry-After':>14} {'acc. p50':>8} {'acc. p99':>8} {'acc. max':>8} "
        f"{'RSS growth MB':>13}"
    )
    for load, _, _ in runs:
        accepted = load.accepted_ms or {"p50": 0.0, "p99": 0.0, "max": 0.0}
        _, growth = rss_growth(load.rss_samples)
        print(
            f"{load.server:<9} {load.connections:>5} {load.ok2xx / load.elapsed:>10.0f} "
            f"{load.s503 / load.elapsed:>7.0f} {load.s503:>8} {load.s503_retry:>14} "
            f"{ms(accepted['p50']):>8} {ms(accepted['p99']):>8} {ms(accepted['max']):>8} "
            f"{growth:>+13.2f}"
        )
    print(
        "(limit: as many connections as calls allowed in progress; retry now: wrk sends the "
        "next call as soon as a 503 comes; wait R-A: a 503 holds a connection back for "
        "Retry-After; acc.: latency of the 2xx answers alone, from the send-time stamp "
        "echoed in the routing key; p50/p99 ms above: every answer, 503s included; RSS "
        "growth: least-squares fit over the second half of the run)"
    )
    for load, count, verdict in runs:
        _, growth = rss_growth(load.rss_samples)
        outcome.rows.append(
            load.as_dict()
            | {
                "scenario": "overload",
                "max_in_progress": limit,
                "in_queue": count,
                "count": verdict,
                "accepted_per_s": round(load.ok2xx / load.elapsed, 1),
                "refused_per_s": round(load.s503 / load.elapsed, 1),
                "rss_second_half_growth_mb": round(growth, 2),
            }
        )
    outcome.targets.append(
        (
            f"{connections / at_limit:g}x overload: calls past max_in_progress answered 503 "
            "with Retry-After at once",
            over.s503 > 0 and over.s503 == over.s503_retry,
            f"{over.s503:,} 503 ({over.s503_retry:,} with Retry-After), {over.ok2xx:,} accepted",
        )
    )
    delivered = over.ok2xx + over.warmup_2xx + polite.ok2xx + polite.warmup_2xx
    outcome.targets.append(
        (
            f"{connections / at_limit:g}x overload: every accepted call delivered",
            over_count + polite_count == delivered,
            f"{over_count + polite_count:,} in the queues = {delivered:,} answered 2xx",
        )
    )
    peak = max(over.rss_peak_mb, polite.rss_peak_mb)
    outcome.targets.append(
        (
            f"{connections / at_limit:g}x overload: memory bounded (peak RSS <= the run at "
            f"the limit + {TARGET_OVERLOAD_RSS_MB:g} MB)",
            peak <= base.rss_peak_mb + TARGET_OVERLOAD_RSS_MB,
            f"{over.rss_peak_mb:.1f} MB (retry now) and {polite.rss_peak_mb:.1f} MB (wait "
            f"Retry-After) at {over.connections} connections, {base.rss_peak_mb:.1f} MB at "
            f"{base.connections}",
        )
    )
