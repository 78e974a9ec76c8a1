"""``outage``: the broker cut (reset or blackhole) for the middle third of a
run through a loopback proxy; every answered call must still be delivered."""

from __future__ import annotations

import time
from pathlib import Path

from ..broker import Broker, Proxy
from ..load import github_request, run_wrk
from ..outcome import Outcome, count_check, load_checks, print_table
from ..servers import HealthPoller, start_gateway, wait_drained, write_config


def scenario_outage(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    third = options.outage_duration / 3
    connections = options.outage_connections
    print(
        f"\n== outage: {connections} connections for {options.outage_duration:g} s, the broker "
        f"cut ({options.cut}) for the middle third, through a loopback proxy"
        + (
            " (one daemon process: its /health timeline describes it alone, --workers "
            "does not apply here)"
            if options.workers > 1
            else ""
        )
    )
    background = broker.background
    proxy = Proxy(background, options.broker_host, options.broker_port)
    proxy_port = proxy.start()
    setup = write_config(workdir, "127.0.0.1", proxy_port, options.synchronous)
    broker.setup(setup.exchange, setup.queue)
    server = None
    poller = None
    try:
        server = start_gateway(options, setup)
        request = github_request(server.port, setup.secret)
        poller = HealthPoller(server.port)
        poller.start()
        loads = []
        started = time.monotonic()
        for phase in ("before", "outage", "after"):
            if phase == "outage":
                proxy.cut(options.cut)
                cut_at = time.monotonic()
            if phase == "after":
                proxy.restore()
                restored_at = time.monotonic()
            load = run_wrk(options, workdir, server, request, connections, f"outage-{phase}", third)
            load.server = phase
            load_checks(outcome, load, f"outage {phase}")
            loads.append(load)
            print(
                f"  {phase}: {load.rate:.0f} req/s, {load.published} published, "
                f"{load.queued} queued",
                flush=True,
            )
        load_end = time.monotonic()
        report = wait_drained(server.port, options.drain_timeout)
        drained_at = time.monotonic()
        samples = poller.stop()
        poller = None
        answered = sum(load.ok2xx for load in loads)
        in_queue = broker.count(setup.exchange, setup.queue)
        verdict = count_check(outcome, "outage", in_queue, answered)
        for load in loads:
            outcome.check(
                f"outage {load.server}: every 2xx says published or queued",
                load.published + load.queued == load.ok2xx and load.unknown == 0,
                f"{load.published} published + {load.queued} queued of {load.ok2xx}",
            )
        max_depth = max((depth for _, depth, _ in samples), default=0)
        reconnected = next(
            (t for t, _, connected in samples if t >= restored_at and connected), None
        )
        # Under load the outbox is never quite empty: the backlog is caught up
        # once the depth is back to what it was before the cut.
        before_depth = max((d for t, d, _ in samples if t < cut_at), default=0)
        caught_up = next(
            (
                t
                for t, depth, connected in samples
                if t >= restored_at and connected and depth <= before_depth + connections
            ),
            None,
        )
        counts = {loads[-1].label: (in_queue, verdict)}
        print_table(
            f"Outage (broker cut {third:.0f} s, {options.cut}): one row per third",
            loads,
            counts,
            {},
        )
        print(
            f"outbox depth peak {max_depth}; broker cut at {cut_at - started:.1f} s, restored at "
            f"{restored_at - started:.1f} s, "
            + (
                "the connection survived the cut (no reconnect)"
                if report["broker"]["reconnects"] == 0
                else f"connected again {reconnected - restored_at:.1f} s after"
                if reconnected
                else "connected again after the load"
            )
            + (
                f"; backlog caught up {caught_up - restored_at:.1f} s after the restore "
                f"(depth back to {before_depth} + {connections})"
                if caught_up
                else "; backlog not caught up during the load"
            )
            + f"; outbox empty {drained_at - load_end:.1f} s after the load ended; "
            f"reconnects {report['broker']['reconnects']}, proxy connections {proxy.connections}"
        )
        print(
            f"answers: {sum(x.published for x in loads)} published, "
            f"{sum(x.queued for x in loads)} queued; count {in_queue} in the queue "
            f"vs {answered} answered 2xx: {verdict}"
        )
        for load in loads:
            outcome.rows.append(load.as_dict() | {"scenario": "outage", "phase": load.server})
        outcome.extra["outage"] = {
            "cut": options.cut,
            "max_depth": max_depth,
            "reconnected_after_restore_s": (
                round(reconnected - restored_at, 1) if reconnected else None
            ),
            "drained_after_load_s": round(drained_at - load_end, 1),
            "caught_up_after_restore_s": (round(caught_up - restored_at, 1) if caught_up else None),
            "in_queue": in_queue,
            "answered_2xx": answered,
            "count": verdict,
        }
    finally:
        if poller is not None:
            poller.stop()
        if server is not None:
            server.stop_and_check(outcome, "outage")
        proxy.stop()
        broker.teardown(setup.exchange, setup.queue)


#: "Memory stays bounded under a 4x overload": the overload run's peak RSS at
