"""``archive``: the gateway with the archive stream on and off, in alternating rounds.

With the archive on, the broker appends every notification to a stream queue
as well (one more queue to route to, written to disk); the daemon itself does
nothing more per call. The target: calls/s with the archive on within 10 % of
off, measured side by side.
"""

from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path

from tests.payloads import github_push

from ..broker import Broker
from ..load import PUSH_COMMITS, Load, github_request
from ..outcome import Outcome, cpu_per_call, ms
from .runs import gateway_run

#: The largest drop of calls/s the archive may cost (the target).
TOLERANCE = 0.10


def scenario_archive(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    """The gateway with ``[archive] enabled = false`` then ``true`` (ABBA order)."""
    settings = [("archive-off", False), ("archive-on", True)]
    print(
        f"\n== archive: the gateway with the archive off and on, {options.rounds} round"
        f"{'s' if options.rounds > 1 else ''} in alternating order, at "
        f"{', '.join(map(str, options.connections))} connections, {options.duration:g} s each "
        f"(GitHub push, {len(json.dumps(github_push(PUSH_COMMITS)))} bytes, signed)"
    )
    loads: dict[tuple[str, int], list[Load]] = collections.defaultdict(list)
    for index in range(options.rounds):
        for name, enabled in settings if index % 2 == 0 else settings[::-1]:
            for connections in options.connections:
                label = f"{name}-{connections}-round{index + 1}"
                load, in_queue, verdict = gateway_run(
                    options,
                    workdir,
                    broker,
                    outcome,
                    github_request,
                    connections,
                    label,
                    options.duration,
                    archive=enabled,
                )
                loads[name, connections].append(load)
                outcome.rows.append(
                    load.as_dict()
                    | {"scenario": "archive", "archive": enabled, "round": index + 1}
                    | {"in_queue": in_queue, "count": verdict}
                )
                print(
                    f"  {label}: {load.rate:.0f} req/s, {cpu_per_call(load):.0f} µs of CPU per "
                    f"call, p99 {ms(load.latency_ms['p99'])} ms, {in_queue} in the queue {verdict}",
                    flush=True,
                )
    print(f"\nArchive off and on (GitHub push, 7 KB signed; min–max of {options.rounds} runs)")
    header = f"{'archive':<12} {'conns':>5} {'req/s':>13} {'p99 ms':>11} {'CPU µs/call':>11}"
    print(header)
    print("-" * len(header))
    for connections in options.connections:
        for name, _ in settings:
            runs = loads[name, connections]
            rates = [x.rate for x in runs]
            p99 = [x.latency_ms["p99"] for x in runs]
            cpu = [cpu_per_call(x) for x in runs]
            print(
                f"{name:<12} {connections:>5} {min(rates):>6.0f}–{max(rates):<6.0f} "
                f"{min(p99):>5.1f}–{max(p99):<5.1f} {min(cpu):>5.0f}–{max(cpu):<5.0f}"
            )
    for connections in options.connections:
        off = statistics.median(x.rate for x in loads["archive-off", connections])
        on = statistics.median(x.rate for x in loads["archive-on", connections])
        ratio = on / (off or 1)
        detail = f"median req/s on {on:.0f} / off {off:.0f} = {ratio:.2f}"
        print(f"  {connections} connections: {detail}")
        outcome.targets.append(
            (
                f"archive on within {TOLERANCE:.0%} of off, {connections} connections",
                ratio >= 1 - TOLERANCE,
                detail,
            )
        )
