"""``compare --against REV``: the gateway of another git revision and of this
checkout, measured in alternating rounds."""

from __future__ import annotations

import collections
import json
import statistics
from pathlib import Path

from tests.payloads import github_push

from ..base import ROOT
from ..broker import Broker
from ..load import PUSH_COMMITS, Load, github_request
from ..outcome import Outcome, cpu_per_call, ms
from ..servers import check_source, export_version, git
from .runs import gateway_run


def scenario_compare(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    """The gateway of another revision and of this checkout, side by side.

    Figures taken hours apart on a shared machine differ by more than most
    changes: only versions measured in the same minutes, in alternating order
    (ABBA: A B, B A, A B…), compare.
    """
    commit, folder = export_version(options.against, workdir)
    this = f"{git('describe', '--always', '--dirty')} (this checkout)"
    # (label of its runs, name in the table, code)
    versions = [(commit, commit, folder), ("this", this, ROOT)]
    for _, name, source in versions:
        check_source(name, source)
    print(
        f"\n== compare: the gateway of {commit} and of {this}, {options.rounds} round"
        f"{'s' if options.rounds > 1 else ''} in alternating order, at "
        f"{', '.join(map(str, options.connections))} connections, {options.duration:g} s each "
        f"(GitHub push, {len(json.dumps(github_push(PUSH_COMMITS)))} bytes, signed)"
    )
    loads: dict[tuple[str, int], list[Load]] = collections.defaultdict(list)
    for index in range(options.rounds):
        for prefix, name, source in versions if index % 2 == 0 else versions[::-1]:
            for connections in options.connections:
                label = f"{prefix}-{connections}-round{index + 1}"
                load, in_queue, verdict = gateway_run(
                    options,
                    workdir,
                    broker,
                    outcome,
                    github_request,
                    connections,
                    label,
                    options.duration,
                    source=source,
                )
                loads[name, connections].append(load)
                outcome.rows.append(
                    load.as_dict()
                    | {"scenario": "compare", "version": name, "round": index + 1}
                    | {"in_queue": in_queue, "count": verdict}
                )
                print(
                    f"  {label}: {load.rate:.0f} req/s, {cpu_per_call(load):.0f} µs of CPU per "
                    f"call, p99 {ms(load.latency_ms['p99'])} ms, {in_queue} in the queue {verdict}",
                    flush=True,
                )

    def spread(values: list[float], digits: str = ".0f") -> str:
        low, high = min(values), max(values)
        return f"{low:{digits}}" if low == high else f"{low:{digits}}–{high:{digits}}"

    print(f"\nCompared (GitHub push, 7 KB signed; min–max of {options.rounds} runs)")
    header = (
        f"{'version':<30} {'conns':>5} {'req/s':>13} {'p50 ms':>11} {'p99 ms':>11} "
        f"{'CPU µs/call':>11}"
    )
    print(header)
    print("-" * len(header))
    for connections in options.connections:
        for _, name, _ in versions:
            runs = loads[name, connections]
            print(
                f"{name:<30} {connections:>5} {spread([x.rate for x in runs]):>13} "
                f"{spread([x.latency_ms['p50'] for x in runs], '.1f'):>11} "
                f"{spread([x.latency_ms['p99'] for x in runs], '.1f'):>11} "
                f"{spread([cpu_per_call(x) for x in runs]):>11}"
            )
    for connections in options.connections:
        old, new = loads[commit, connections], loads[this, connections]
        ratio = statistics.median(x.rate for x in new) / (
            statistics.median(x.rate for x in old) or 1
        )
        cpu = statistics.median(cpu_per_call(x) for x in new) / (
            statistics.median(cpu_per_call(x) for x in old) or 1
        )
        print(
            f"  {connections} connections: this checkout / {commit}, medians: req/s × {ratio:.2f}, "
            f"CPU per call × {cpu:.2f}"
        )
