"""The load: the requests (a signed GitHub push, small Notification calls,
stamped with their send time or not) and one wrk run with ``gate.lua``,
measured (answers, latency, RSS and CPU of the server, wrk, the broker)."""

# ruff: noqa: S603 - it runs wrk

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import os
import shutil
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.payloads import github_push

from .base import GITHUB_DOOR, LUA, BenchError
from .process import (
    RSSSampler,
    broker_pids,
    children_cpu,
    cpu_of,
    cpu_used,
    machine_busy_cpu,
    own_cpu,
    proc_status,
    thread_cpu,
    tree_cpu,
)

if TYPE_CHECKING:
    from .servers import Server

#: Commits in the push payload: 12 gives a body of about 7 KB.
PUSH_COMMITS = 12
SMALL_NOTIFICATION = {
    "service": "Deployer",
    "group": "ops",
    "type": "deploy",
    "text": "v2 is live",
    "link": "https://deploy.acme.example/v2",
}


@dataclass
class Request:
    """One request shape: the head up to the variable header value, and the rest."""

    path: str
    head: bytes
    tail: bytes
    body_size: int
    #: The variable part is the send time (16 digits, µs), inside the body's
    #: ``type``: it comes back in the report's routing key, so gate.lua can
    #: time the 2xx answers alone (see ``stamped_notification_request``).
    stamped: bool = False
    #: Callers wait ``Retry-After`` after a 503 before their next call.
    honour_retry_after: bool = False


#: ``--connection-close``: each call on a new connection (``Connection: close``).
CONNECTION_CLOSE = {"on": False}


def github_request(port: int, secret: str) -> Request:
    body = json.dumps(github_push(PUSH_COMMITS)).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    path = f"/gate/GitHub/{GITHUB_DOOR}"
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: GitHub-Hookshot/bench\r\n"
        "Accept: */*\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-GitHub-Event: push\r\n"
        "X-GitHub-Hook-ID: 424242\r\n"
        f"X-Hub-Signature-256: sha256={signature}\r\n"
        + ("Connection: close\r\n" if CONNECTION_CLOSE["on"] else "")
        + "X-GitHub-Delivery: "
    )
    return Request(path, head.encode(), b"\r\n\r\n" + body, len(body))


#: The Notification gate's door of the small calls.
NOTIFICATION_PATH = "/gate/Notification/Acme"


def notification_head(port: int, length: int) -> str:
    """The request line and headers of a small Notification call, up to its
    ``Content-Length``: the plain and the stamped calls end them differently."""
    return (
        f"POST {NOTIFICATION_PATH} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: deployer/bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {length}\r\n"
    )


def notification_request(port: int) -> Request:
    body = json.dumps(SMALL_NOTIFICATION).encode()
    head = notification_head(port, len(body)) + "X-Request-Id: "
    return Request(NOTIFICATION_PATH, head.encode(), b"\r\n\r\n" + body, len(body))


#: Width of the send-time stamp of a stamped request (µs of CLOCK_MONOTONIC).
STAMP_DIGITS = 16


def stamped_notification_request(port: int, secret: str = "") -> Request:
    """The small Notification call, its ``type`` ending in ``.t<send time in µs>``.

    The routing key of the actions report (``acme.ops.deployer.deploy.t…``)
    carries the stamp back: gate.lua then times each accepted call, apart
    from the 503 answers that wrk's own latency figures mix in.
    """
    fields = dict(SMALL_NOTIFICATION, type="deploy.t" + "0" * STAMP_DIGITS)
    body = json.dumps(fields)
    cut = body.index("0" * STAMP_DIGITS)
    head = notification_head(port, len(body.encode())) + "\r\n" + body[:cut]
    tail = body[cut + STAMP_DIGITS :]
    return Request(
        NOTIFICATION_PATH, head.encode(), tail.encode(), len(body.encode()), stamped=True
    )


@dataclass
class Load:
    """What one wrk run measured."""

    label: str
    server: str
    connections: int
    sent: int = 0
    answered: int = 0
    ok2xx: int = 0
    non2xx: int = 0
    errors: int = 0
    published: int = 0
    queued: int = 0
    unknown: int = 0
    elapsed: float = 0.0
    complete: bool = True
    latency_ms: dict[str, float] = field(default_factory=dict)
    #: 2xx answers of the warm-up run before this one (also counted in the queue).
    warmup_2xx: int = 0
    #: 503 answers, and those of them with ``Retry-After`` (overload).
    s503: int = 0
    s503_retry: int = 0
    #: Latency of the 2xx answers alone (requests stamped with their send time).
    accepted_ms: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    #: Processes of the server seen in one RSS sample (parent + workers).
    processes: int = 0
    #: The largest sampled RSS of each of them, the parent first (MB).
    rss_each_mb: list[float] = field(default_factory=list)
    rss_peak_mb: float = 0.0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    server_cpu: float = 0.0
    #: CPU % of the server process's threads: the main (reactor) thread, the others.
    thread_cpu: dict = field(default_factory=dict)
    wrk_cpu: float = 0.0
    broker_cpu: float = 0.0
    other_cpu: float = 0.0
    own_cpu: float = 0.0
    raw: dict = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.answered / self.elapsed if self.elapsed else 0.0

    def as_dict(self) -> dict:
        return {
            "label": self.label,
            "server": self.server,
            "workers": self.workers,
            "processes": self.processes,
            "connections": self.connections,
            "requests_per_s": round(self.rate, 1),
            "sent": self.sent,
            "answered": self.answered,
            "2xx": self.ok2xx,
            "non_2xx": self.non2xx,
            "socket_errors": self.errors,
            "published": self.published,
            "queued": self.queued,
            "elapsed_s": round(self.elapsed, 3),
            "complete": self.complete,
            "latency_ms": self.latency_ms,
            "status_503": self.s503,
            "status_503_with_retry_after": self.s503_retry,
            "accepted_latency_ms": self.accepted_ms,
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "rss_each_mb": self.rss_each_mb,
            "cpu_percent": {
                "server": round(self.server_cpu, 1),
                "wrk": round(self.wrk_cpu, 1),
                "broker": round(self.broker_cpu, 1),
                "others": round(self.other_cpu, 1),
                "of_which_run_py": round(self.own_cpu, 1),
                "server_threads": self.thread_cpu,
            },
        }


def run_wrk(
    options,
    workdir: Path,
    server: Server,
    request: Request,
    connections: int,
    label: str,
    duration: float | None = None,
    quota: int | None = None,
    rss_interval: float = 0.5,
    during=None,
) -> Load:
    """Drive ``server`` with wrk until ``duration`` seconds or ``quota`` requests.

    No request is left in flight at the end (see gate.lua), so ``answered``
    equals ``sent`` unless wrk hit its hard time limit. ``during(elapsed)``
    is called about every 0.05 s while the load runs.
    """
    threads = max(1, min(options.wrk_threads, connections))
    run = workdir / f"wrk-{uuid.uuid4().hex[:8]}"
    markers = run / "markers"
    markers.mkdir(parents=True)
    (run / "head").write_bytes(request.head)
    (run / "tail").write_bytes(request.tail)
    environ = dict(
        os.environ,
        BENCH_REQUEST=str(run / "head"),
        BENCH_TAIL=str(run / "tail"),
        BENCH_PREFIX=str(uuid.uuid4()),
        BENCH_THREADS=str(threads),
        BENCH_MARKERS=str(markers),
        BENCH_DEADLINE="",
        BENCH_QUOTA="",
        BENCH_STAMP="1" if request.stamped else "",
        BENCH_RETRY_AFTER="1" if request.honour_retry_after else "",
    )
    start = time.time()
    if duration is not None:
        # Whole seconds: wrk's Lua clock (os.time) has a resolution of one second.
        deadline = math.ceil(start + duration)
        environ["BENCH_DEADLINE"] = str(deadline)
        limit = deadline - start + options.wrk_grace
    else:
        environ["BENCH_QUOTA"] = str(quota)
        limit = options.max_seconds
    command = [
        options.wrk,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{math.ceil(limit)}s",
        "--timeout",
        f"{options.wrk_timeout}s",
        "-s",
        str(LUA),
        f"http://127.0.0.1:{server.port}{request.path}",
    ]
    sampler = RSSSampler(server.pid, rss_interval)
    brokers = broker_pids()
    server_cpu0, wrk_cpu0, broker_cpu0 = tree_cpu(server.pid), children_cpu(), cpu_of(brokers)
    threads0 = thread_cpu(server.pid)
    machine_cpu0, own_cpu0 = machine_busy_cpu(), own_cpu()
    sampler.start()
    start = time.time()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environ, cwd=run
    )
    finished_at = None
    try:
        while process.poll() is None:
            done = list(markers.iterdir())
            if len(done) >= threads:
                finished_at = max(marker.stat().st_mtime for marker in done)
                process.send_signal(signal.SIGINT)  # wrk then prints its report at once
                break
            if during is not None:
                during(time.time() - start)
            time.sleep(0.05)
        output, _ = process.communicate(timeout=60)
    except BaseException:
        process.kill()
        process.wait()
        sampler.stop()
        raise
    wall = time.time() - start
    # Every process of the server (the twistd parent and its workers), each
    # from its own starting figure (a worker started meanwhile from zero).
    server_cpu = sum(
        seconds - server_cpu0.get(pid, 0.0) for pid, seconds in tree_cpu(server.pid).items()
    )
    threads = {
        tid: 100 * (seconds - threads0.get(tid, 0.0)) / wall
        for tid, seconds in thread_cpu(server.pid).items()
    }
    samples = sampler.stop()
    load = Load(label, server.kind, connections, rss_samples=samples, workers=server.workers)
    load.processes = sampler.processes
    load.rss_each_mb = [round(kb / 1024, 1) for kb in sampler.each.values()]
    # Peak RSS: the largest sampled sum over the process tree; for one process,
    # its VmHWM (the kernel's own peak, which no sampling can miss) when larger.
    load.rss_peak_mb = max((kb for _, kb in samples), default=0) / 1024
    if load.processes <= 1:
        with contextlib.suppress(OSError, KeyError):
            load.rss_peak_mb = max(load.rss_peak_mb, proc_status(server.pid)["VmHWM"] / 1024)
    text = output.decode(errors="replace")
    line = next((row for row in text.splitlines() if row.startswith("BENCH-JSON ")), None)
    if line is None:
        raise BenchError(f"wrk gave no report (exit {process.returncode}):\n{text}")
    raw = json.loads(line.removeprefix("BENCH-JSON "))
    load.raw = raw
    load.sent = raw["started"]
    load.answered = raw["answered"]
    load.ok2xx = raw["s2xx"]
    load.non2xx = raw["s4xx"] + raw["s5xx"] + raw["sother"]
    errors = raw["errors"]
    load.errors = errors["connect"] + errors["read"] + errors["write"] + errors["timeout"]
    load.published = raw["published"]
    load.queued = raw["queued"]
    load.unknown = raw["unknown"] + raw["failed"]
    load.s503 = raw["s503"]
    load.s503_retry = raw["s503retry"]
    accepted = raw.get("accepted_us")
    if accepted and accepted["count"]:
        load.accepted_ms = {
            name: round(accepted[name] / 1000, 2) for name in ("p50", "p90", "p99", "max")
        }
        load.accepted_ms["count"] = accepted["count"]
    load.complete = finished_at is not None and load.sent == load.answered
    load.elapsed = (finished_at - start) if finished_at is not None else wall
    latency = raw["latency_us"]
    load.latency_ms = {
        name: round(latency[name] / 1000, 2) for name in ("p50", "p90", "p99", "p999", "max")
    }
    load.latency_ms["mean"] = round(latency["mean"] / 1000, 2)
    load.server_cpu = 100 * server_cpu / wall
    # The server process's own threads (the parent's only, with workers): the
    # main thread runs the reactor; the others are thread pools (the outbox…).
    load.thread_cpu = {
        "main": round(threads.pop(server.pid, 0.0), 1),
        "others": sorted((round(v, 1) for v in threads.values()), reverse=True),
    }
    load.wrk_cpu = 100 * (children_cpu() - wrk_cpu0) / wall
    load.broker_cpu = 100 * cpu_used(broker_cpu0, cpu_of(brokers)) / wall
    # Whatever else ran on the machine meanwhile (this script included): other
    # users' work shows here, and makes the figures of that run suspect.
    load.other_cpu = max(
        0.0,
        100 * (machine_busy_cpu() - machine_cpu0) / wall
        - load.server_cpu
        - load.wrk_cpu
        - load.broker_cpu,
    )
    load.own_cpu = 100 * (own_cpu() - own_cpu0) / wall
    if not options.keep:
        shutil.rmtree(run, ignore_errors=True)
    return load
