"""``throughput``: the comparison users make, in alternating rounds.

The same signed 7 KB GitHub push, with the same wrk, at each connection
count, to: the bare twisted.web server (the ceiling of one Python process
with Twisted), twisted.web with its defaults (what a Twisted user starts
from), the FastAPI receiver (what a Python user would write instead of the
gateway: FastAPI, uvicorn, aio-pika with publisher confirms) and the gateway
(one process; and with ``--workers N``, N processes). Figures taken apart
do not compare on a shared machine, so every server runs in every round,
the order reversed from one round to the next (ABCD, DCBA…). Every 2xx of
the FastAPI receiver and of the gateway is counted in a queue bound to its
exchange before the run; a mismatch fails the run.
"""

from __future__ import annotations

import json
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

from tests.payloads import github_push

from ..broker import Broker
from ..load import PUSH_COMMITS, Load
from ..outcome import Outcome, cpu_per_call, ms, print_table
from ..servers import fastapi_python
from .runs import fastapi_run, github_run, plain_run

#: The targets; printed MET / NOT MET, never asserted (timings are noisy).
#: The gateway against the receiver a Python user would write instead of it…
TARGET_OVER_FASTAPI = 1.5
#: … and against the twisted.web a Twisted user starts from.
TARGET_OVER_DEFAULT = 0.5
TARGET_P99_MS_AT_16 = 20.0
TARGET_RSS_MB_AT_64 = 80.0
#: N workers give at least this × one worker's throughput (on a 2-core
#: machine, with the load generator elsewhere).
TARGET_WORKERS_RATIO = 1.6

#: The servers, in the order of odd rounds (even rounds run them backwards).
SERVERS = ("bare", "default", "fastapi", "gateway")
NAMES = {
    "bare": "bare twisted.web",
    "default": "default twisted.web",
    "fastapi": "FastAPI receiver",
    "gateway": "gateway",
}


@dataclass(frozen=True)
class Contender:
    """One server of the comparison (the gateway once per worker count)."""

    server: str
    workers: int = 1

    @property
    def key(self) -> str:
        """The start of its runs' labels: ``bare``, ``fastapi``, ``gateway``, ``gateway-2w``."""
        return self.server if self.workers == 1 else f"{self.server}-{self.workers}w"

    @property
    def name(self) -> str:
        """Its name in the tables."""
        name = NAMES[self.server]
        return name if self.workers == 1 else f"{name}, {self.workers} workers"


GATEWAY = Contender("gateway")


def gateway_label(connections: int, workers: int) -> str:
    """The label of a gateway run of one round (``gateway-16``, ``gateway-2w-16``)."""
    return Contender("gateway", workers).key + f"-{connections}"


def _label(contender: Contender, connections: int, index: int, rounds: int) -> str:
    label = f"{contender.key}-{connections}"
    return label if rounds == 1 else f"{label}-round{index + 1}"


def _spread(values: list[float], digits: str = ".0f") -> str:
    low, high = min(values), max(values)
    return f"{low:{digits}}" if low == high else f"{low:{digits}}–{high:{digits}}"


def _median_rate(loads: list[Load]) -> float:
    return statistics.median(load.rate for load in loads)


def scenario_throughput(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    rounds = options.rounds
    contenders = [Contender(server) for server in SERVERS if server in options.servers]
    extra_workers = None
    if "gateway" in options.servers:
        if options.workers > 1:
            contenders.append(Contender("gateway", options.workers))
        elif options.smoke:
            # --smoke without --workers: one 2-worker run too, at the first connection count.
            extra_workers = Contender("gateway", 2)
            contenders.append(extra_workers)

    def connection_counts(contender: Contender) -> list[int]:
        return options.connections[:1] if contender == extra_workers else options.connections

    if "fastapi" in options.servers:
        # Made (once per machine) before any measurement, or the run stops here.
        fastapi_python(options.fastapi_venv)
    body_size = len(json.dumps(github_push(PUSH_COMMITS)))
    print(
        "\n== throughput: "
        + ", ".join(contender.name for contender in contenders)
        + f", at {', '.join(map(str, options.connections))} connections, "
        f"{options.duration:g} s each, {rounds} round{'s' if rounds > 1 else ''} "
        f"(the order reversed every other round) (GitHub push, {body_size} bytes, signed)"
    )
    runs: dict[tuple[Contender, int], list[Load]] = {}
    order: list[Load] = []
    counts: dict[str, tuple[int, str]] = {}
    rounds_of: dict[str, int] = {}
    for index in range(rounds):
        for contender in contenders if index % 2 == 0 else contenders[::-1]:
            for connections in connection_counts(contender):
                label = _label(contender, connections, index, rounds)
                counted = ""
                if contender.server in ("bare", "default"):
                    load = plain_run(
                        options,
                        workdir,
                        outcome,
                        connections,
                        label,
                        options.duration,
                        default=contender.server == "default",
                    )
                else:
                    if contender.server == "fastapi":
                        load, in_queue, verdict = fastapi_run(
                            options, workdir, broker, outcome, connections, label, options.duration
                        )
                    else:
                        profile = (
                            options.profile
                            and index == 0
                            and contender == GATEWAY
                            and connections == options.connections[0]
                        )
                        load, in_queue, verdict = github_run(
                            options,
                            workdir,
                            broker,
                            outcome,
                            connections,
                            label,
                            profile=profile,
                            workers=contender.workers,
                        )
                    counts[label] = (in_queue, verdict)
                    counted = f", {in_queue} in the queue {verdict}"
                runs.setdefault((contender, connections), []).append(load)
                order.append(load)
                rounds_of[label] = index + 1
                print(
                    f"  {label}: {load.rate:.0f} req/s, p99 {ms(load.latency_ms['p99'])} ms, "
                    f"{cpu_per_call(load):.0f} µs of CPU per call{counted}",
                    flush=True,
                )

    # Each run's ratio to the bare server of the same round and connection count.
    bare_of = {
        (rounds_of[load.label], load.connections): load
        for load in order
        if load.server == "bare" and load.rate
    }
    ratios = {
        load.label: load.rate / bare_of[rounds_of[load.label], load.connections].rate
        for load in order
        if load.server == "gateway" and (rounds_of[load.label], load.connections) in bare_of
    }
    one_worker = {
        (rounds_of[load.label], load.connections): load
        for load in order
        if load.server == "gateway" and load.workers == 1 and load.rate
    }
    worker_ratios = {
        load.label: load.rate / one_worker[rounds_of[load.label], load.connections].rate
        for load in order
        if load.server == "gateway"
        and load.workers > 1
        and (rounds_of[load.label], load.connections) in one_worker
    }
    print_table(
        "Throughput (GitHub push, 7 KB signed): every run", order, counts, ratios, worker_ratios
    )
    for load in order:
        if load.label in worker_ratios:
            base = one_worker[rounds_of[load.label], load.connections]
            print(
                f"  {load.connections} connections: {load.workers} workers / 1 worker = "
                f"{load.rate:.0f} / {base.rate:.0f} req/s = {worker_ratios[load.label]:.2f}"
            )
    if worker_ratios:
        print(
            f"  (wrk runs on the same {os.cpu_count()} cores as the daemon's processes and "
            "RabbitMQ: it takes CPU the workers would otherwise use; see CPU% above)"
        )
    for load in order:
        if load.workers > 1 and load.server == "gateway":
            parent, *children = load.rss_each_mb or [0.0]
            print(
                f"  peak RSS at {load.connections} connections with {load.workers} workers: "
                f"{load.rss_peak_mb:.1f} MB summed over {load.processes} processes "
                f"(largest of each: the twistd parent {parent:.1f} MB, the workers "
                + " + ".join(f"{mb:.1f}" for mb in children)
                + " MB)"
            )
    for load in order:
        row = load.as_dict() | {"scenario": "throughput", "round": rounds_of[load.label]}
        if load.label in counts:
            row["in_queue"], row["count"] = counts[load.label]
        if load.label in ratios:
            row["ratio_to_bare"] = round(ratios[load.label], 3)
        if load.label in worker_ratios:
            row["ratio_to_1_worker"] = round(worker_ratios[load.label], 3)
        outcome.rows.append(row)

    _print_comparison(options, contenders, runs, outcome)
    _targets(options, contenders, runs, outcome)


def _print_comparison(
    options, contenders: list[Contender], runs: dict[tuple[Contender, int], list[Load]], outcome
) -> None:
    """One row per server and connection count: min–max over the rounds, and
    the gateway's ratio to it (medians)."""
    rounds = options.rounds
    print(
        f"\nCompared (GitHub push, 7 KB signed; min–max of {rounds} round"
        f"{'s' if rounds > 1 else ''}; gateway ×: the gateway's req/s over this server's, "
        "medians)"
    )
    header = (
        f"{'server':<30} {'conns':>5} {'req/s':>13} {'p50 ms':>11} {'p99 ms':>11} "
        f"{'CPU µs/call':>11} {'gateway ×':>9}"
    )
    print(header)
    print("-" * len(header))
    summary = []
    for connections in options.connections:
        gateway = runs.get((GATEWAY, connections))
        for contender in contenders:
            loads = runs.get((contender, connections))
            if not loads:
                continue
            ratio = (
                _median_rate(gateway) / _median_rate(loads)
                if gateway and _median_rate(loads)
                else None
            )
            print(
                f"{contender.name:<30} {connections:>5} {_spread([x.rate for x in loads]):>13} "
                f"{_spread([x.latency_ms['p50'] for x in loads], '.1f'):>11} "
                f"{_spread([x.latency_ms['p99'] for x in loads], '.1f'):>11} "
                f"{_spread([cpu_per_call(x) for x in loads]):>11} "
                f"{'-' if ratio is None else f'{ratio:.2f}':>9}"
            )
            summary.append(
                {
                    "server": contender.server,
                    "workers": contender.workers,
                    "connections": connections,
                    "rounds": len(loads),
                    "requests_per_s": [round(x.rate, 1) for x in loads],
                    "p50_ms": [x.latency_ms["p50"] for x in loads],
                    "p99_ms": [x.latency_ms["p99"] for x in loads],
                    "cpu_us_per_call": [round(cpu_per_call(x), 1) for x in loads],
                    "gateway_ratio_of_medians": None if ratio is None else round(ratio, 3),
                }
            )
    print(
        "(CPU µs/call: the CPU time of the server's processes over its answered calls: "
        "the twistd process, the uvicorn process; FastAPI and the gateway: every 2xx "
        "counted in the queue)"
    )
    outcome.extra["throughput"] = summary


def _targets(
    options, contenders: list[Contender], runs: dict[tuple[Contender, int], list[Load]], outcome
) -> None:
    rounds = f"medians of {options.rounds} rounds" if options.rounds > 1 else "1 round"
    for connections in options.connections:
        gateway = runs.get((GATEWAY, connections))
        if not gateway:
            continue
        for server, target in (("fastapi", TARGET_OVER_FASTAPI), ("default", TARGET_OVER_DEFAULT)):
            other = runs.get((Contender(server), connections))
            if not other or not _median_rate(other):
                continue
            ratio = _median_rate(gateway) / _median_rate(other)
            outcome.targets.append(
                (
                    f"gateway >= {target}x the {NAMES[server]} at {connections} connections "
                    "(one process each)",
                    ratio >= target,
                    f"{ratio:.2f}x ({_median_rate(gateway):.0f} / {_median_rate(other):.0f} "
                    f"req/s, {rounds})",
                )
            )
    for contender in contenders:
        if contender.server != "gateway":
            continue
        loads = runs.get((contender, 16))
        if loads:
            p99 = statistics.median(x.latency_ms["p99"] for x in loads)
            outcome.targets.append(
                (
                    f"gateway p99 < {TARGET_P99_MS_AT_16:g} ms at 16 connections "
                    f"({contender.workers} worker" + ("s)" if contender.workers > 1 else ")"),
                    p99 < TARGET_P99_MS_AT_16,
                    f"p99 {p99:.1f} ms ({rounds}; "
                    f"{_spread([x.latency_ms['p99'] for x in loads], '.1f')} ms)",
                )
            )
        if contender.workers > 1:
            for connections in options.connections:
                many, one = runs.get((contender, connections)), runs.get((GATEWAY, connections))
                if many and one and _median_rate(one):
                    ratio = _median_rate(many) / _median_rate(one)
                    outcome.targets.append(
                        (
                            f"{contender.workers} workers >= {TARGET_WORKERS_RATIO}x 1 worker at "
                            f"{connections} connections (wrk on the same {os.cpu_count()} cores "
                            "here)",
                            ratio >= TARGET_WORKERS_RATIO,
                            f"{ratio:.2f}x ({_median_rate(many):.0f} / {_median_rate(one):.0f} "
                            f"req/s, {rounds})",
                        )
                    )
    if (GATEWAY, 64) in runs:
        rss = max(x.rss_peak_mb for x in runs[GATEWAY, 64])
        outcome.targets.append(
            (
                f"peak RSS < {TARGET_RSS_MB_AT_64:g} MB at 64 connections (1 worker)",
                rss < TARGET_RSS_MB_AT_64,
                f"{rss:.1f} MB (the largest of the rounds)",
            )
        )
