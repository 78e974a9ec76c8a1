"""The command line: ``python benchmarks/run.py [scenario] [options]`` (or
``python -m benchmarks.bench`` from the checkout). See benchmarks/README.rst."""

# ruff: noqa: S607 - it asks rabbitmqctl and wrk for their versions

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import load as load_module
from .base import BenchError
from .broker import Background, Broker
from .outcome import Outcome
from .scenarios import SCENARIOS
from .scenarios.throughput import SERVERS


def machine() -> dict:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.partition(":")[2].strip()
                break
    rabbitmq = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(
            ["rabbitmqctl", "version"], capture_output=True, text=True, timeout=30
        )
        if done.returncode == 0:
            rabbitmq = done.stdout.strip()
    wrk = "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(["wrk", "--version"], capture_output=True, text=True, timeout=10)
        wrk = (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0]
    import twisted

    return {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "cores": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "twisted": twisted.__version__,
        "rabbitmq": rabbitmq,
        "wrk": wrk,
        "kernel": platform.release(),
    }


def parse_args(argv: list[str] | None = None):
    parser = argparse.ArgumentParser(
        description="Benchmarks of the notifications center (see benchmarks/README.rst).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "scenario",
        nargs="?",
        default="throughput",
        choices=["throughput", "outage", "overload", "memory", "all", "compare", "archive"],
        help="what to run (all: the first four; compare: see --against; archive: the "
        "archive stream on and off, side by side)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the four scenarios, tiny: 1 to 2 s runs, 2,000 memory calls, and a 2-worker "
        "gateway run at the first connection count",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="daemon worker processes (twistd notifications --workers N); with N > 1 the "
        "throughput scenario runs the gateway with 1 then N workers and prints the ratio",
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds per throughput run")
    parser.add_argument(
        "--against",
        metavar="REV",
        help="compare: the git revision (commit, tag, branch) whose gateway is measured beside "
        "this checkout's, its code and etc/ taken from git",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        help="throughput and compare: runs of each server (or version) at each connection "
        "count, the order reversed every other round (default: throughput 2, --smoke 1; "
        "compare 3)",
    )
    parser.add_argument("--connections", default="16,64", help="throughput connection counts")
    parser.add_argument(
        "--no-bare", action="store_true", help="throughput: the gateway only (--servers gateway)"
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="throughput: the servers compared, among " + ", ".join(SERVERS),
    )
    parser.add_argument(
        "--fastapi-venv",
        type=Path,
        help="the FastAPI receiver's virtual environment, created there when missing (default: "
        "one per machine in ~/.cache/notifications-benchmarks/, named after its pinned "
        "requirements)",
    )
    parser.add_argument(
        "--connection-close",
        action="store_true",
        help="throughput: every GitHub call on a new connection (Connection: close), as "
        "webhook senders mostly do; the connections then spread over the workers as they "
        "come, instead of being taken all at once at the start",
    )
    parser.add_argument(
        "--bare-parse-forms",
        action="store_true",
        help="the bare server parses POST bodies into request.args, as twisted.web does by "
        "default (the ceiling of the benchmarks before the daemon stopped doing it)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1,
        help="seconds of load before each measured run (counted too)",
    )
    parser.add_argument(
        "--outage-duration",
        type=float,
        default=30,
        help="seconds of the outage run, the broker cut for the middle third",
    )
    parser.add_argument("--outage-connections", type=int, default=16)
    parser.add_argument(
        "--cut",
        choices=["reset", "blackhole"],
        default="reset",
        help="reset: the broker goes away (connections closed, new ones "
        "refused); blackhole: nothing passes, connections stay open",
    )
    parser.add_argument(
        "--max-in-progress",
        type=int,
        default=16,
        help="overload: [gate] max_in_progress of the daemon (per worker)",
    )
    parser.add_argument(
        "--overload-connections",
        type=int,
        help="overload: connections of the overload run (default: 4 x max-in-progress x workers)",
    )
    parser.add_argument(
        "--overload-duration",
        type=float,
        default=15,
        help="overload: seconds of each run (at the limit, then overloaded)",
    )
    parser.add_argument("--calls", type=int, default=1_000_000, help="calls of the memory scenario")
    parser.add_argument("--memory-connections", type=int, default=16)
    parser.add_argument(
        "--memory-interval",
        type=float,
        default=1.0,
        help="seconds between RSS samples in the memory scenario",
    )
    parser.add_argument(
        "--synchronous",
        choices=["full", "normal"],
        default="full",
        help="[storage] synchronous of the daemon",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy on the daemon during the first gateway throughput run",
    )
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--profile-output", type=Path, help="keep py-spy's raw output here")
    parser.add_argument(
        "--profile-gil",
        action="store_true",
        help="sample only the threads holding the GIL (py-spy --gil) instead of every thread",
    )
    parser.add_argument("--json", type=Path, help="write every figure to this file as JSON")
    parser.add_argument("--wrk", default=shutil.which("wrk") or "wrk")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-timeout", type=int, default=10, help="seconds, wrk's --timeout")
    parser.add_argument(
        "--wrk-grace",
        type=float,
        default=10,
        help="seconds wrk may run past the deadline for the last answers",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=3600, help="hard time limit of one fixed-count wrk run"
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=180,
        help="seconds to wait for the outbox to empty after a run",
    )
    parser.add_argument("--twistd", help="the twistd to run (default: beside this Python)")
    parser.add_argument("--broker-host", default=os.environ.get("BROKER_HOST", "127.0.0.1"))
    parser.add_argument(
        "--broker-port", type=int, default=int(os.environ.get("BROKER_PORT", "5672"))
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args(argv)
    options.connections = [int(c) for c in str(options.connections).split(",") if c.strip()]
    if options.workers < 1:
        parser.error("--workers must be 1 or more")
    if options.scenario == "compare" and not options.against:
        parser.error("compare needs --against REV")
    if options.rounds is None:
        options.rounds = (
            3 if options.scenario in ("compare", "archive") else 1 if options.smoke else 2
        )
    if options.rounds < 1:
        parser.error("--rounds must be 1 or more")
    options.servers = [s.strip() for s in str(options.servers).split(",") if s.strip()]
    unknown = sorted(set(options.servers) - set(SERVERS))
    if unknown or not options.servers:
        parser.error(f"--servers: among {', '.join(SERVERS)} (not {', '.join(unknown)})")
    if options.no_bare:
        options.servers = ["gateway"]
    if options.smoke:
        options.scenario = "all" if options.scenario == "throughput" else options.scenario
        options.duration = 1
        options.warmup = 0
        options.outage_duration = 3
        options.overload_duration = 1
        options.calls = min(options.calls, 2000)
        options.memory_interval = 0.2
        options.drain_timeout = min(options.drain_timeout, 60)
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    load_module.CONNECTION_CLOSE["on"] = options.connection_close
    if shutil.which(options.wrk) is None and not Path(options.wrk).exists():
        print("run.py: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    info = machine()
    print(
        f"notifications benchmarks — {info['date']}: {info['cores']} cores, {info['cpu']}, "
        f"Python {info['python']}, Twisted {info['twisted']}, RabbitMQ {info['rabbitmq']}, "
        f"{info['wrk']}; daemon synchronous={options.synchronous}, --workers {options.workers}"
        + ("; Connection: close" if options.connection_close else "")
        + "; "
        f"wrk -t{options.wrk_threads} on the same machine"
    )
    outcome = Outcome(extra={"machine": info})
    workdir = Path(tempfile.mkdtemp(prefix="notifications-bench-"))
    background = Background()
    broker = Broker(background, options.broker_host, options.broker_port)
    scenarios = (
        ["throughput", "outage", "overload", "memory"]
        if options.scenario == "all"
        else [options.scenario]
    )
    status = 0
    try:
        for name in scenarios:
            SCENARIOS[name](options, workdir, broker, outcome)
    except BenchError as error:
        print(f"run.py: {error}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("run.py: interrupted", file=sys.stderr)
        status = 2
    finally:
        background.stop()
        if options.keep:
            print(f"kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    if outcome.checks:
        print("\nChecks:")
        for name, ok, detail in outcome.checks:
            print(f"  {'OK  ' if ok else 'FAIL'} {name}: {detail}")
    if outcome.targets:
        print("\nTargets (reported, not enforced):")
        for name, met, detail in outcome.targets:
            print(f"  {'MET    ' if met else 'NOT MET'} {name}: {detail}")
    if options.json:
        options.json.write_text(
            json.dumps(
                {
                    "machine": info,
                    "options": {
                        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(options).items()
                    },
                    "rows": outcome.rows,
                    "checks": [{"name": n, "ok": o, "detail": d} for n, o, d in outcome.checks],
                    "targets": [{"name": n, "met": m, "detail": d} for n, m, d in outcome.targets],
                    "extra": outcome.extra,
                },
                indent=2,
            )
        )
    if status == 0 and not outcome.ok:
        status = 1
    print(f"\nresult: {'PASS' if status == 0 else 'FAIL'} (exit {status})")
    return status
