"""One measured server: a daemon with its queue, warm-up, wrk run, optional
profile and count; the FastAPI receiver with its queue and count; a bare or
default twisted.web server with its warm-up and wrk run."""

from __future__ import annotations

import collections
import json
import shutil
import statistics
import time
import uuid
from pathlib import Path

from tests.payloads import github_push

from ..base import ROOT
from ..load import PUSH_COMMITS, Load, github_request, run_wrk
from ..outcome import count_check, cpu_per_call, load_checks, ms
from ..profiling import print_profile, start_profiler, summarize_profile
from ..servers import (
    start_bare,
    start_default,
    start_fastapi,
    start_gateway,
    wait_drained,
    write_config,
)


def gateway_run(
    options,
    workdir,
    broker,
    outcome,
    request_of,
    connections,
    label,
    duration,
    profile=False,
    workers=1,
    max_in_progress=None,
    expect_refusals=False,
    source: Path | None = None,
    archive: bool | None = None,
) -> tuple[Load, int, str]:
    """One daemon, one queue, a warm-up and a measured wrk run; the count checked.

    ``expect_refusals``: 503 answers with ``Retry-After`` are expected (the
    overload scenario checks them itself) instead of being a failure.
    ``source``: run the code (and the etc/) of that checkout (see :func:`start_gateway`).
    """
    setup = write_config(
        workdir,
        options.broker_host,
        options.broker_port,
        options.synchronous,
        max_in_progress,
        source=source or ROOT,
        archive=archive,
    )
    broker.setup(setup.exchange, setup.queue)
    server = None
    try:
        server = start_gateway(options, setup, workers=workers, source=source)
        request = request_of(server.port, setup.secret)
        answered = 0
        if options.warmup > 0:
            warm = run_wrk(
                options, workdir, server, request, connections, label + "-warmup", options.warmup
            )
            load_checks(outcome, warm, f"{label} warm-up", expect_refusals)
            answered += warm.ok2xx
        profiler = None
        profile_file = setup.folder / "profile.raw.txt"
        profile_seconds = max(1, int(duration) - 2)
        if profile:
            profiler = start_profiler(options, server.pid, profile_seconds, profile_file)
        load = run_wrk(options, workdir, server, request, connections, label, duration)
        load.warmup_2xx = answered
        answered += load.ok2xx
        if profiler is not None:
            output, _ = profiler.communicate(timeout=60)
            if profile_file.exists():
                summary = summarize_profile(profile_file)
                outcome.extra["profile"] = {
                    "connections": connections,
                    "seconds": profile_seconds,
                    "rate": options.profile_rate,
                    "threads": summary,
                }
                print_profile(
                    summary, profile_seconds, options.profile_rate, load.rate, options.profile_gil
                )
                busy = [f"{v:.0f}%" for v in load.thread_cpu.get("others", []) if v >= 0.5]
                print(
                    f"  CPU of the daemon's threads over the run (/proc/<pid>/task): main "
                    f"(reactor) thread {load.thread_cpu.get('main', 0):.0f}% of a core, the "
                    f"others {', '.join(busy) or '0%'} (a thread waiting for the GIL after a "
                    "system call is sampled in that call's frame: part of the reactor's "
                    "'idle' samples, in epoll_wait's, are such waits)"
                )
                if options.profile_output:
                    shutil.copy(profile_file, options.profile_output)
            else:
                print(f"py-spy wrote nothing: {output.decode(errors='replace')}")
        load_checks(outcome, load, label, expect_refusals)
        report = wait_drained(server.port, options.drain_timeout, server)
        in_queue = broker.count(setup.exchange, setup.queue)
        verdict = count_check(outcome, label, in_queue, answered)
        outcome.check(
            f"{label}: no unroutable notification",
            report["broker"]["unroutable"] == 0,
            f"unroutable {report['broker']['unroutable']}"
            + (" (routing keys logged)" if workers > 1 else ""),
        )
        if workers > 1:
            load.raw["answers_per_worker"] = per_worker = server.answers_per_worker()
            shares = ", ".join(f"worker {i}: {n}" for i, n in per_worker.items())
            print(f"  {label}: 2xx answers per worker (warm-up included): {shares}")
        return load, in_queue, verdict
    finally:
        if server is not None:
            server.stop_and_check(outcome, label)
        broker.teardown(setup.exchange, setup.queue)


def github_run(options, workdir, broker, outcome, connections, label, **arguments):
    """The gateway under the signed GitHub push for ``--duration`` seconds, the
    run of ``throughput`` and of the alternating rounds; ``arguments``: the
    keyword arguments of :func:`gateway_run`."""
    return gateway_run(
        options,
        workdir,
        broker,
        outcome,
        github_request,
        connections,
        label,
        options.duration,
        **arguments,
    )


def plain_run(options, workdir, outcome, connections, label, duration, default=False) -> Load:
    """The bare twisted.web server (or, ``default``, twisted.web with its
    defaults) under the same requests as the gateway: no queue, nothing to count."""
    server = start_default(workdir) if default else start_bare(workdir, options.bare_parse_forms)
    try:
        request = github_request(server.port, "bare-does-not-check")
        if options.warmup > 0:
            run_wrk(
                options, workdir, server, request, connections, label + "-warmup", options.warmup
            )
        load = run_wrk(options, workdir, server, request, connections, label, duration)
        load_checks(outcome, load, label)
        return load
    finally:
        server.stop()


def bare_run(options, workdir, outcome, connections, label, duration) -> Load:
    """The bare twisted.web server: see :func:`plain_run`."""
    return plain_run(options, workdir, outcome, connections, label, duration)


def fastapi_run(
    options, workdir, broker, outcome, connections, label, duration
) -> tuple[Load, int, str]:
    """The FastAPI receiver on an exchange of its own (named as the gateway's
    runs name theirs) with the count queue bound before the load: a warm-up
    and a measured wrk run, then every 2xx answer counted in the queue."""
    exchange = f"notifications-bench-{uuid.uuid4().hex[:12]}"
    queue = f"{exchange}-count"
    secret = f"bench-{uuid.uuid4().hex}"
    broker.setup(exchange, queue)
    server = None
    try:
        server = start_fastapi(options, workdir, exchange, secret)
        request = github_request(server.port, secret)
        answered = 0
        if options.warmup > 0:
            warm = run_wrk(
                options, workdir, server, request, connections, label + "-warmup", options.warmup
            )
            load_checks(outcome, warm, f"{label} warm-up")
            answered += warm.ok2xx
        load = run_wrk(options, workdir, server, request, connections, label, duration)
        load.warmup_2xx = answered
        answered += load.ok2xx
        load_checks(outcome, load, label)
        # Each 2xx came after the broker's confirm: the messages are in the
        # queue already, give its count a moment to show them all anyway.
        deadline = time.monotonic() + 5
        in_queue = broker.count(exchange, queue)
        while in_queue < answered and time.monotonic() < deadline:
            time.sleep(0.2)
            in_queue = broker.count(exchange, queue)
        verdict = count_check(outcome, label, in_queue, answered)
        return load, in_queue, verdict
    finally:
        if server is not None:
            server.stop_and_check(outcome, label)
        broker.teardown(exchange, queue)


def alternating_rounds(
    options, workdir, broker, outcome, scenario: str, variants: list[tuple[str, str, dict]]
) -> dict[tuple[str, int], list[Load]]:
    """The gateway in each variant, round after round, in alternating order.

    ``variants``: (label prefix, name, keyword arguments of :func:`github_run`).
    Figures taken minutes apart on a shared machine drift: only variants run
    side by side, in ABBA order (A B, B A, A B…), compare. Returns the loads
    of each (name, connections); each run is a row of the outcome too.
    """
    loads: dict[tuple[str, int], list[Load]] = collections.defaultdict(list)
    for index in range(options.rounds):
        for prefix, name, arguments in variants if index % 2 == 0 else variants[::-1]:
            for connections in options.connections:
                label = f"{prefix}-{connections}-round{index + 1}"
                load, in_queue, verdict = github_run(
                    options, workdir, broker, outcome, connections, label, **arguments
                )
                loads[name, connections].append(load)
                outcome.rows.append(
                    load.as_dict()
                    | {"scenario": scenario, "variant": name, "round": index + 1}
                    | {"in_queue": in_queue, "count": verdict}
                )
                print(
                    f"  {label}: {load.rate:.0f} req/s, {cpu_per_call(load):.0f} µs of CPU per "
                    f"call, p99 {ms(load.latency_ms['p99'])} ms, {in_queue} in the queue {verdict}",
                    flush=True,
                )
    return loads


def variants_side_by_side(
    options,
    workdir,
    broker,
    outcome,
    scenario: str,
    heading: str,
    title: str,
    variants: list[tuple[str, str, dict]],
) -> dict[tuple[str, int], list[Load]]:
    """:func:`alternating_rounds` between its announcement and its table.

    ``heading`` says what the scenario compares (``== <scenario>: <heading>,
    3 rounds…``), ``title`` heads the table (:func:`print_variants`).
    """
    print(
        f"\n== {scenario}: {heading}, {options.rounds} round"
        f"{'s' if options.rounds > 1 else ''} in alternating order, at "
        f"{', '.join(map(str, options.connections))} connections, {options.duration:g} s each "
        f"(GitHub push, {len(json.dumps(github_push(PUSH_COMMITS)))} bytes, signed)"
    )
    loads = alternating_rounds(options, workdir, broker, outcome, scenario, variants)
    print_variants(
        f"{title} (GitHub push, 7 KB signed; min–max of {options.rounds} runs)",
        [name for _, name, _ in variants],
        loads,
        options.connections,
    )
    return loads


def spread(values: list[float], digits: str = ".0f") -> str:
    """``low–high`` of some figures (one figure when they are all the same)."""
    low, high = min(values), max(values)
    return f"{low:{digits}}" if low == high else f"{low:{digits}}–{high:{digits}}"


def print_variants(
    title: str, names: list[str], loads: dict[tuple[str, int], list[Load]], connections: list[int]
) -> None:
    """The table of :func:`alternating_rounds`: the spread of each figure per variant."""
    width = max(12, *(len(name) for name in names))
    print(f"\n{title}")
    header = (
        f"{'variant':<{width}} {'conns':>5} {'req/s':>13} {'p50 ms':>11} {'p99 ms':>11} "
        f"{'CPU µs/call':>11}"
    )
    print(header)
    print("-" * len(header))
    for count in connections:
        for name in names:
            runs = loads[name, count]
            print(
                f"{name:<{width}} {count:>5} {spread([x.rate for x in runs]):>13} "
                f"{spread([x.latency_ms['p50'] for x in runs], '.1f'):>11} "
                f"{spread([x.latency_ms['p99'] for x in runs], '.1f'):>11} "
                f"{spread([cpu_per_call(x) for x in runs]):>11}"
            )


def median_ratio(new: list[Load], old: list[Load], figure) -> float:
    """The ratio of the medians of a figure (``figure(load)``) of two variants."""
    return statistics.median(map(figure, new)) / (statistics.median(map(figure, old)) or 1)
