"""``throughput``: requests per second, latency, CPU per call and memory of
the bare twisted.web server and of the gateway (and with ``--workers N``),
at each connection count."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tests.payloads import github_push

from ..broker import Broker
from ..load import PUSH_COMMITS, Load, github_request
from ..outcome import Outcome, print_table
from .runs import bare_run, gateway_run

#: The targets of the issue; printed, not asserted.
TARGET_RATIO = 0.5
TARGET_P99_MS_AT_16 = 20.0
TARGET_RSS_MB_AT_64 = 80.0
#: The issue's target for --workers: N workers give at least this × one worker's
#: throughput (on a 2-core machine, with the load generator elsewhere).
TARGET_WORKERS_RATIO = 1.6


def gateway_label(connections: int, workers: int) -> str:
    return f"gateway-{connections}" if workers == 1 else f"gateway-{workers}w-{connections}"


def scenario_throughput(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    worker_counts = [1] + ([options.workers] if options.workers > 1 else [])
    # --smoke without --workers: one 2-worker run too, at the first connection count.
    extra_workers = 2 if options.smoke and options.workers == 1 else None
    if extra_workers:
        worker_counts.append(extra_workers)

    def connection_counts(workers: int) -> list[int]:
        return options.connections[:1] if workers == extra_workers else options.connections

    print(
        "\n== throughput: "
        + ("" if options.no_bare else "bare twisted.web, then ")
        + "the gateway"
        + (f" with 1 then {options.workers} workers" if options.workers > 1 else "")
        + f", at {', '.join(map(str, options.connections))} connections, "
        f"{options.duration:g} s each "
        f"(GitHub push, {len(json.dumps(github_push(PUSH_COMMITS)))} bytes, signed)"
    )
    bare: dict[int, Load] = {}
    gateway: dict[tuple[int, int], Load] = {}
    counts: dict[str, tuple[int, str]] = {}
    for connections in options.connections if not options.no_bare else []:
        label = f"bare-{connections}"
        bare[connections] = bare_run(
            options, workdir, outcome, connections, label, options.duration
        )
        print(f"  {label}: {bare[connections].rate:.0f} req/s", flush=True)
    for workers in worker_counts:
        for connections in connection_counts(workers):
            label = gateway_label(connections, workers)
            profile = options.profile and workers == 1 and connections == options.connections[0]
            load, in_queue, verdict = gateway_run(
                options,
                workdir,
                broker,
                outcome,
                github_request,
                connections,
                label,
                options.duration,
                profile=profile,
                workers=workers,
            )
            gateway[workers, connections] = load
            counts[label] = (in_queue, verdict)
            print(
                f"  {label}: {load.rate:.0f} req/s, {in_queue} in the queue {verdict}", flush=True
            )
    ratios = {
        gateway_label(c, w): load.rate / bare[c].rate
        for (w, c), load in gateway.items()
        if c in bare and bare[c].rate
    }
    worker_ratios = {
        gateway_label(c, w): load.rate / gateway[1, c].rate
        for (w, c), load in gateway.items()
        if w > 1 and gateway[1, c].rate
    }
    loads = [bare[c] for c in options.connections if c in bare]
    loads += [gateway[w, c] for w in worker_counts for c in connection_counts(w)]
    print_table(
        "Throughput (GitHub push, 7 KB signed)", loads, counts, ratios, worker_ratios or None
    )
    for (workers, connections), load in gateway.items():
        label = gateway_label(connections, workers)
        if label in worker_ratios:
            print(
                f"  {connections} connections: {workers} workers / 1 worker = "
                f"{load.rate:.0f} / {gateway[1, connections].rate:.0f} req/s = "
                f"{worker_ratios[label]:.2f}"
            )
    if worker_ratios:
        print(
            f"  (wrk runs on the same {os.cpu_count()} cores as the daemon's processes and "
            "RabbitMQ: it takes CPU the workers would otherwise use; see CPU% above)"
        )
    for load in loads:
        row = load.as_dict() | {"scenario": "throughput"}
        if load.label in counts:
            row["in_queue"], row["count"] = counts[load.label]
        if load.label in ratios:
            row["ratio_to_bare"] = round(ratios[load.label], 3)
        if load.label in worker_ratios:
            row["ratio_to_1_worker"] = round(worker_ratios[load.label], 3)
        outcome.rows.append(row)
    for connections in options.connections:
        label = gateway_label(connections, 1)
        if label not in ratios:
            continue
        ratio = ratios[label]
        rates = f"{gateway[1, connections].rate:.0f} / {bare[connections].rate:.0f} req/s"
        outcome.targets.append(
            (
                f"gateway >= {TARGET_RATIO}x bare at {connections} connections (1 worker)",
                ratio >= TARGET_RATIO,
                f"{ratio:.2f}x ({rates})",
            )
        )
    for (workers, connections), load in gateway.items():
        label = gateway_label(connections, workers)
        if workers > 1 and label in ratios:
            outcome.targets.append(
                (
                    f"gateway >= {TARGET_RATIO}x bare at {connections} connections "
                    f"({workers} workers)",
                    ratios[label] >= TARGET_RATIO,
                    f"{ratios[label]:.2f}x ({load.rate:.0f} / {bare[connections].rate:.0f} req/s)",
                )
            )
        if label in worker_ratios:
            outcome.targets.append(
                (
                    f"{workers} workers >= {TARGET_WORKERS_RATIO}x 1 worker at {connections} "
                    f"connections (wrk on the same {os.cpu_count()} cores here)",
                    worker_ratios[label] >= TARGET_WORKERS_RATIO,
                    f"{worker_ratios[label]:.2f}x ({load.rate:.0f} / "
                    f"{gateway[1, connections].rate:.0f} req/s)",
                )
            )
    for workers in worker_counts:
        if (workers, 16) in gateway:
            p99 = gateway[workers, 16].latency_ms["p99"]
            outcome.targets.append(
                (
                    f"p99 < {TARGET_P99_MS_AT_16:g} ms at 16 connections ({workers} worker"
                    + ("s)" if workers > 1 else ")"),
                    p99 < TARGET_P99_MS_AT_16,
                    f"p99 {p99:.1f} ms",
                )
            )
    if (1, 64) in gateway:
        rss = gateway[1, 64].rss_peak_mb
        outcome.targets.append(
            (
                f"peak RSS < {TARGET_RSS_MB_AT_64:g} MB at 64 connections (1 worker)",
                rss < TARGET_RSS_MB_AT_64,
                f"{rss:.1f} MB",
            )
        )
    for (workers, connections), load in gateway.items():
        if workers > 1:
            parent, *children = load.rss_each_mb or [0.0]
            print(
                f"  peak RSS at {connections} connections with {workers} workers: "
                f"{load.rss_peak_mb:.1f} MB summed over {load.processes} processes "
                f"(largest of each: the twistd parent {parent:.1f} MB, the workers "
                + " + ".join(f"{mb:.1f}" for mb in children)
                + " MB)"
            )
