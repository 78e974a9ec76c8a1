"""Benchmarks of the notifications center: throughput, broker outage, memory.

Every scenario starts the real daemon (``twistd notifications``) on a copy of
``etc/`` pointed at the local RabbitMQ (publisher confirms on), drives it with
``wrk`` and ``benchmarks/gate.lua``, and checks that every call answered 2xx
reached a queue bound to the exchange. See benchmarks/README.rst.

    python benchmarks/run.py                 # throughput: bare and gateway, 16 and 64 connections
    python benchmarks/run.py outage          # the broker cut for the middle third of the run
    python benchmarks/run.py memory          # 1,000,000 small Notification calls, RSS sampled
    python benchmarks/run.py all --profile   # the three, with py-spy during the 16-connection run
    python benchmarks/run.py --smoke         # the three, tiny (what the test suite runs)

Exit status: 0 when every check passed, 1 when a count did not match or a
call was refused, dropped or unanswered, 2 when the benchmark could not run.
The performance targets of the issue are printed (MET / NOT MET), never
turned into a failure: timings are noisy.
"""

# ruff: noqa: S603, S607 - a benchmark driver: it runs wrk, twistd, py-spy and rabbitmqctl

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import hmac
import http.client
import json
import linecache
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from payloads import github_push  # noqa: E402  (tests/payloads.py: realistic payloads)

from notifications.config import BrokerConfig, load_config  # noqa: E402

LUA = HERE / "gate.lua"
BARE = HERE / "bare.py"
GITHUB_DOOR = "Acme"
#: Commits in the push payload: 12 gives a body of about 7 KB.
PUSH_COMMITS = 12
SMALL_NOTIFICATION = {
    "service": "Deployer",
    "group": "ops",
    "type": "deploy",
    "text": "v2 is live",
    "link": "https://deploy.acme.example/v2",
}

#: The targets of the issue; printed, not asserted.
TARGET_RATIO = 0.5
TARGET_P99_MS_AT_16 = 20.0
TARGET_RSS_MB_AT_64 = 80.0
#: "Memory stays flat": RSS growth over the second half of the memory run,
#: from a least-squares fit of the samples, below this many MB.
TARGET_FLAT_MB = 2.0

CLK_TCK = os.sysconf("SC_CLK_TCK")


class BenchError(Exception):
    """The benchmark could not run (no wrk, no broker, the daemon did not start…)."""


# Small helpers ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except (OSError, http.client.HTTPException, ValueError) as error:
            last_error = error
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    values = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, rest = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                values[name] = int(rest.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (its threads included)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def broker_pids() -> list[int]:
    """The local RabbitMQ's Erlang VM, for its CPU share (empty when remote)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "beam.smp":
                    pids.append(int(entry.name))
    return pids


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(OSError):
            total += cpu_seconds(pid)
    return total


def machine_busy_cpu() -> float:
    """CPU seconds spent by the whole machine (every core, idle and I/O wait excluded)."""
    with open("/proc/stat") as stat:
        fields = [int(value) for value in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / CLK_TCK


def own_cpu() -> float:
    usage = os.times()
    return usage.user + usage.system


def children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


class RSSSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds: (time, kB)."""

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(OSError):
                self.samples.append((time.monotonic(), proc_status(self.pid)["VmRSS"]))
            self._halt.wait(self.interval)

    def stop(self) -> list[tuple[float, int]]:
        self._halt.set()
        self.join()
        return self.samples


# The Twisted side of the driver: AMQP administration and the TCP proxy ----------


class Background:
    """A Twisted reactor in a thread of this script (AMQP admin, broker proxy)."""

    def __init__(self):
        from twisted.internet import reactor

        self.reactor = reactor
        self.thread = threading.Thread(
            target=reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        self.thread.start()

    def call(self, function, *args):
        from twisted.internet import defer, threads

        def run():
            return defer.ensureDeferred(function(*args))

        return threads.blockingCallFromThread(self.reactor, run)

    def call_plain(self, function, *args):
        from twisted.internet import threads

        return threads.blockingCallFromThread(self.reactor, function, *args)

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(5)


class Broker:
    """Declares, counts, purges and deletes the benchmark's queue (txamqp)."""

    def __init__(self, background: Background, host: str, port: int):
        self.background = background
        self.host = host
        self.port = port

    def _config(self, exchange: str) -> BrokerConfig:
        return BrokerConfig(
            host=self.host, port=self.port, exchange=exchange, heartbeat=0, connect_timeout=5.0
        )

    def _session(self, exchange: str, work):
        from notifications.amqp.connection import connect

        async def session():
            reactor = self.background.reactor
            client, channel = await connect(reactor, self._config(exchange))
            try:
                return await work(channel)
            finally:
                with contextlib.suppress(Exception):
                    await client.close(within=2)

        try:
            return self.background.call(session)
        except Exception as error:
            raise BenchError(f"broker at {self.host}:{self.port}: {error!r}") from None

    def setup(self, exchange: str, queue: str) -> None:
        """The exchange (as the daemon declares it) and a queue bound with ``#``."""

        async def work(channel):
            await channel.queue_declare(
                queue=queue, durable=False, exclusive=False, auto_delete=False
            )
            await channel.queue_bind(queue=queue, exchange=exchange, routing_key="#")

        self._session(exchange, work)

    def count(self, exchange: str, queue: str) -> int:
        async def work(channel):
            declared = await channel.queue_declare(queue=queue, passive=True)
            return declared.message_count

        return self._session(exchange, work)

    def purge(self, exchange: str, queue: str) -> int:
        async def work(channel):
            purged = await channel.queue_purge(queue=queue)
            return purged.message_count

        return self._session(exchange, work)

    def teardown(self, exchange: str, queue: str) -> None:
        async def work(channel):
            await channel.queue_delete(queue=queue)
            await channel.exchange_delete(exchange=exchange)

        with contextlib.suppress(BenchError):
            self._session(exchange, work)


class Proxy:
    """A loopback TCP forwarder to the broker that can be cut and restored.

    ``reset``: the listening port closes and every connection is aborted, so
    the daemon sees the broker go away at once and its reconnections are
    refused (a broker down or restarting). ``blackhole``: connections stay
    open and new ones are accepted, but nothing is forwarded either way (a
    network partition: the daemon notices through missed heartbeats).
    """

    def __init__(self, background: Background, host: str, port: int):
        self.background = background
        self.target = (host, port)
        self.port = free_port()
        self.listening = None
        self.held = False
        self.pipes: set = set()
        self.connections = 0

    def _factory(self):
        from twisted.internet import protocol

        proxy = self

        class Pipe(protocol.Protocol):
            peer: Pipe | None = None

            def connectionMade(self):
                proxy.pipes.add(self)
                if proxy.held:
                    self.transport.pauseProducing()

            def dataReceived(self, data):
                if self.peer is not None and self.peer.transport is not None:
                    self.peer.transport.write(data)

            def connectionLost(self, reason):
                proxy.pipes.discard(self)
                if self.peer is not None and self.peer.transport is not None:
                    self.peer.transport.loseConnection()

        class Server(Pipe):
            def connectionMade(self):
                super().connectionMade()
                proxy.connections += 1
                self.transport.pauseProducing()
                client = protocol.ClientCreator(proxy.background.reactor, Pipe)
                d = client.connectTCP(*proxy.target, timeout=5)
                d.addCallbacks(self.linked, lambda _: self.transport.abortConnection())

            def linked(self, other):
                self.peer, other.peer = other, self
                if self.transport.disconnected:
                    other.transport.loseConnection()
                elif not proxy.held:
                    self.transport.resumeProducing()

        factory = protocol.Factory()
        factory.protocol = Server
        return factory

    def start(self) -> int:
        def listen():
            reactor = self.background.reactor
            self.listening = reactor.listenTCP(self.port, self._factory(), interface="127.0.0.1")

        self.background.call_plain(listen)
        return self.port

    def cut(self, how: str) -> None:
        def reset():
            d = self.listening.stopListening()
            self.listening = None
            for pipe in list(self.pipes):
                pipe.transport.abortConnection()
            return d

        def hold():
            self.held = True
            for pipe in list(self.pipes):
                pipe.transport.pauseProducing()

        self.background.call_plain(reset if how == "reset" else hold)

    def restore(self) -> None:
        def resume():
            if self.listening is None:
                reactor = self.background.reactor
                self.listening = reactor.listenTCP(
                    self.port, self._factory(), interface="127.0.0.1"
                )
            if self.held:
                self.held = False
                for pipe in list(self.pipes):
                    if pipe.peer is not None:
                        pipe.transport.resumeProducing()

        self.background.call_plain(resume)

    def stop(self) -> None:
        def close():
            if self.listening is not None:
                self.listening.stopListening()
            for pipe in list(self.pipes):
                pipe.transport.abortConnection()

        with contextlib.suppress(Exception):
            self.background.call_plain(close)


# The servers --------------------------------------------------------------------


@dataclass
class Server:
    """A server process under load: the daemon or the bare twisted.web server."""

    kind: str
    process: subprocess.Popen
    port: int
    log: Path | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 30.0) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)

    def problems(self) -> int:
        """Tracebacks and unhandled errors in the daemon's log."""
        if self.log is None or not self.log.exists():
            return 0
        count = 0
        with self.log.open(errors="replace") as lines:
            for line in lines:
                if "Traceback" in line or "Unhandled" in line:
                    count += 1
        return count


def start_bare(workdir: Path) -> Server:
    port = free_port()
    log = workdir / f"bare-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(BARE), "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
    server = Server("bare", process, port, log)
    try:
        wait_until(lambda: http_get(port, "/")[0] == 200, 20, "the bare server")
    except BenchError:
        server.stop()
        raise
    return server


@dataclass
class GatewaySetup:
    """The temporary configuration of one daemon run."""

    folder: Path
    config: Path
    exchange: str
    queue: str
    secret: str


def write_config(
    workdir: Path, broker_host: str, broker_port: int, synchronous: str
) -> GatewaySetup:
    """A copy of etc/ with a unique exchange, a temporary outbox and a known GitHub secret."""
    tag = uuid.uuid4().hex[:12]
    folder = workdir / f"gateway-{tag}"
    etc = folder / "etc"
    shutil.copytree(ROOT / "etc", etc)
    exchange = f"notifications-bench-{tag}"
    storage = folder / "var"
    text = (etc / "notifications.toml").read_text()
    for pattern, value in (
        (r"^host = .*$", f'host = "{broker_host}"'),
        (r"^port = .*$", f"port = {broker_port}"),
        (r"^exchange = .*$", f'exchange = "{exchange}"'),
        (r"^directory = .*$", f'directory = "{storage}"'),
        (r"^#? *synchronous = .*$", f'synchronous = "{synchronous}"'),
    ):
        text, count = re.subn(pattern, value, text, count=1, flags=re.MULTILINE)
        if count != 1:
            raise BenchError(f"etc/notifications.toml: no line matches {pattern!r}")
    (etc / "notifications.toml").write_text(text)
    secret = f"bench-{uuid.uuid4().hex}"
    credentials_path = etc / "credentials.json"
    credentials = json.loads(credentials_path.read_text())
    for service in credentials["services"]:
        if service["gate"] == "GitHub" and service["door"] == GITHUB_DOOR:
            service["secret"] = secret
            break
    else:
        raise BenchError(f"etc/credentials.json has no GitHub/{GITHUB_DOOR} door")
    # A push on a door that also has a Phabricator service (or a Docker Hub
    # trigger token for its repository) makes the daemon call that service:
    # the example's are made-up hosts, so the copy has none of them and the
    # benchmark measures the gateway alone.
    credentials["services"] = [s for s in credentials["services"] if s["gate"] != "Phabricator"]
    credentials_path.write_text(json.dumps(credentials, indent=4))
    (etc / "dockerhub-tokens.json").write_text("{}\n")
    config = load_config(etc / "notifications.toml", environ={})
    assert config.broker.exchange == exchange  # noqa: S101 - our own edit, checked
    return GatewaySetup(folder, etc / "notifications.toml", exchange, f"{exchange}-count", secret)


def twistd_command(options) -> list[str]:
    if options.twistd:
        return [options.twistd]
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("twistd")
    if found:
        return [found]
    raise BenchError("twistd not found: install the project (pip install -e .) or give --twistd")


def start_gateway(options, setup: GatewaySetup, wait_connected: bool = True) -> Server:
    port = free_port()
    log = setup.folder / "twistd.log"
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BROKER_") and name != "NOTIFICATIONS_CONFIG"
    }
    command = [
        *twistd_command(options),
        "--pidfile=",
        "-n",
        "notifications",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        "--config",
        str(setup.config),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=setup.folder, env=environ
        )
    server = Server("gateway", process, port, log)
    try:
        wait_until(
            lambda: process.poll() is None and http_get(port, "/status") == (200, b"ALIVE"),
            30,
            f"the daemon on port {port} (log: {log})",
        )
        if wait_connected:
            wait_until(lambda: health(port)["broker"]["connected"], 30, "the broker connection")
    except BenchError:
        server.stop()
        raise
    return server


def health(port: int) -> dict:
    _, body = http_get(port, "/health")
    return json.loads(body)


def wait_drained(port: int, timeout: float) -> dict:
    """Wait until the outbox is empty and nothing is in flight; the last /health."""

    def drained():
        report = health(port)
        outbox = report["outbox"]
        if outbox["depth"] == 0 and outbox["in_flight"] == 0 and report["broker"]["connected"]:
            return report
        return None

    return wait_until(drained, timeout, "the outbox to drain", interval=0.2)


# The load --------------------------------------------------------------------------


@dataclass
class Request:
    """One request shape: the head up to the variable header value, and the rest."""

    path: str
    head: bytes
    tail: bytes
    body_size: int


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
        "X-GitHub-Delivery: "
    )
    return Request(path, head.encode(), b"\r\n\r\n" + body, len(body))


def notification_request(port: int) -> Request:
    body = json.dumps(SMALL_NOTIFICATION).encode()
    path = "/gate/Notification/Acme"
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: deployer/bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "X-Request-Id: "
    )
    return Request(path, head.encode(), b"\r\n\r\n" + body, len(body))


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
    rss_peak_mb: float = 0.0
    rss_samples: list[tuple[float, int]] = field(default_factory=list)
    server_cpu: float = 0.0
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
            "rss_peak_mb": round(self.rss_peak_mb, 1),
            "cpu_percent": {
                "server": round(self.server_cpu, 1),
                "wrk": round(self.wrk_cpu, 1),
                "broker": round(self.broker_cpu, 1),
                "others": round(self.other_cpu, 1),
                "of_which_run_py": round(self.own_cpu, 1),
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
    server_cpu0, wrk_cpu0, broker_cpu0 = cpu_seconds(server.pid), children_cpu(), cpu_of(brokers)
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
    server_cpu = cpu_seconds(server.pid) - server_cpu0
    samples = sampler.stop()
    load = Load(label, server.kind, connections, rss_samples=samples)
    with contextlib.suppress(OSError):
        load.rss_peak_mb = proc_status(server.pid)["VmHWM"] / 1024
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
    load.complete = finished_at is not None and load.sent == load.answered
    load.elapsed = (finished_at - start) if finished_at is not None else wall
    latency = raw["latency_us"]
    load.latency_ms = {
        name: round(latency[name] / 1000, 2) for name in ("p50", "p90", "p99", "p999", "max")
    }
    load.latency_ms["mean"] = round(latency["mean"] / 1000, 2)
    load.server_cpu = 100 * server_cpu / wall
    load.wrk_cpu = 100 * (children_cpu() - wrk_cpu0) / wall
    load.broker_cpu = 100 * (cpu_of(brokers) - broker_cpu0) / wall
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


# Profiling ---------------------------------------------------------------------------

#: Buckets of the reactor thread's profile. Each sample goes to the bucket of
#: the innermost frame that a rule names (its "self time", frames that no
#: rule names, like the standard library's helpers, being transparent):
#: (bucket, substring of the file path, function names or None for any).
#: The first matching rule of a frame wins.
PROFILE_RULES: list[tuple[str, str, frozenset[str] | None]] = [
    ("idle (waiting in epoll)", "twisted/internet/epollreactor.py", frozenset({"doPoll"})),
    ("HMAC (signature check)", "/hmac.py", None),
    ("HMAC (signature check)", "notifications/gates/github.py", frozenset({"signature_matches"})),
    ("JSON parsing", "/json/decoder.py", None),
    ("JSON parsing", "/json/__init__.py", frozenset({"loads"})),
    ("JSON parsing", "notifications/gates/base.py", frozenset({"parse_json_object"})),
    (
        "JSON depth check (_depth_checked)",
        "notifications/gates/base.py",
        frozenset({"_depth_checked"}),
    ),
    ("JSON encoding (notification, report)", "/json/encoder.py", None),
    ("JSON encoding (notification, report)", "/json/__init__.py", frozenset({"dumps"})),
    ("rendering (text, link, group)", "notifications/renderers/", None),
    ("rendering (text, link, group)", "notifications/analyzers.py", None),
    ("gate logic (headers, checks, routing key, report)", "notifications/gates/", None),
    ("gate logic (headers, checks, routing key, report)", "notifications/notification.py", None),
    ("gate logic (headers, checks, routing key, report)", "notifications/report.py", None),
    ("reactor and sockets", "twisted/python/log.py", frozenset({"callWithLogger"})),
    ("reactor and sockets", "twisted/python/log.py", frozenset({"callWithContext"})),
    ("logging (call line, access log)", "twisted/logger/", None),
    ("logging (call line, access log)", "twisted/python/log.py", None),
    ("logging (call line, access log)", "twisted/python/logfile.py", None),
    ("logging (call line, access log)", "notifications/web.py", frozenset({"_log_call"})),
    ("logging (call line, access log)", "notifications/web.py", frozenset({"_summary"})),
    (
        "logging (call line, access log)",
        "notifications/web.py",
        frozenset({"redacted_log_formatter"}),
    ),
    ("logging (call line, access log)", "twisted/web/http.py", frozenset({"combinedLogFormatter"})),
    ("logging (call line, access log)", "twisted/web/http.py", frozenset({"log"})),
    ("logging (call line, access log)", "twisted/web/http.py", frozenset({"_escape"})),
    ("thread hand-off (outbox pool)", "twisted/python/threadpool.py", None),
    ("thread hand-off (outbox pool)", "twisted/_threads/", None),
    ("thread hand-off (outbox pool)", "twisted/internet/threads.py", None),
    ("thread hand-off (outbox pool)", "twisted/internet/base.py", frozenset({"callFromThread"})),
    ("thread hand-off (outbox pool)", "twisted/internet/posixbase.py", frozenset({"wakeUp"})),
    ("thread hand-off (outbox pool)", "twisted/internet/_posixwaker.py", None),
    ("outbox + dispatcher (reactor side)", "notifications/outbox.py", None),
    ("outbox + dispatcher (reactor side)", "notifications/dispatcher.py", None),
    ("AMQP framing (txamqp, publisher)", "/txamqp/", None),
    ("AMQP framing (txamqp, publisher)", "notifications/amqp/", None),
    ("AMQP framing (txamqp, publisher)", "notifications/publisher.py", None),
    ("metrics", "notifications/metrics.py", None),
    ("twisted.web request handling", "twisted/web/", None),
    ("twisted.web request handling", "notifications/web.py", None),
    ("twisted.web request handling", "notifications/http.py", None),
    ("Deferred machinery", "twisted/internet/defer.py", None),
    ("reactor and sockets", "twisted/internet/", None),
]


def _rule(function: str, filename: str) -> str | None:
    name = function.rpartition(".")[2]  # py-spy writes Class.method
    for bucket, path, functions in PROFILE_RULES:
        if path in filename and (functions is None or name in functions):
            return bucket
    if "/notifications/" in filename:
        return "notifications/" + filename.rpartition("/notifications/")[2]
    return None


def classify(frames: list[tuple[str, str, int]]) -> str:
    """The bucket of one reactor-thread stack (outermost frame first)."""
    for function, filename, _ in reversed(frames):
        bucket = _rule(function, filename)
        if bucket is not None:
            return bucket
    return "other"


def classify_outbox(frames: list[tuple[str, str, int]]) -> str:
    """The bucket of one outbox-thread stack: waiting, or which SQL statement."""
    for function, filename, line in reversed(frames):
        if filename.endswith("/threading.py") and function.endswith("wait"):
            return "idle (waiting for work)"
        if filename.endswith("notifications/outbox.py"):
            # The statement is on the frame's line, or the closure is named after it.
            source = linecache.getline(filename, line) + " " + function.upper()
            for word, bucket in (
                ("COMMIT", "COMMIT (WAL write and fsync)"),
                ("BEGIN", "BEGIN IMMEDIATE"),
                ("SAVEPOINT", "savepoints"),
                ("RELEASE", "savepoints"),
                ("INSERT", "INSERT (outbox, deliveries)"),
                ("DELETE", "DELETE (confirmed)"),
                ("SELECT", "SELECT (dedup, page-in, oldest)"),
            ):
                if word in source:
                    return bucket
    return "other (Python around the statements)"


_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?):(?P<line>\d+)\)$")


def summarize_profile(path: Path) -> dict:
    """Percentages per bucket of py-spy's raw (collapsed) output, per thread."""
    threads: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in path.read_text(errors="replace").splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        parts = stack.split(";")
        # "thread (31831): MainThread", "thread (31836): PoolThread-outbox-0"
        name = parts[0].partition(": ")[2]
        frames = []
        for part in parts[1:]:
            match = _FRAME.match(part)
            if match:
                frames.append((match["function"], match["file"], int(match["line"])))
        if name == "MainThread":
            threads["reactor thread"][classify(frames)] += int(count)
        elif "outbox" in name:
            threads["outbox thread"][classify_outbox(frames)] += int(count)
    summary = {}
    for thread, buckets in threads.items():
        total = sum(buckets.values())
        summary[thread] = {
            "samples": total,
            "buckets": {
                bucket: round(100 * count / total, 1) for bucket, count in buckets.most_common()
            },
        }
    return summary


def py_spy_command(options) -> str:
    beside = Path(sys.executable).parent / "py-spy"
    if beside.exists():
        return str(beside)
    found = shutil.which("py-spy")
    if not found:
        raise BenchError("--profile needs py-spy: pip install py-spy")
    return found


def start_profiler(options, pid: int, seconds: int, output: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            py_spy_command(options),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(options.profile_rate),
            "--nonblocking",
            "--threads",
            *(["--gil"] if options.profile_gil else ["--idle"]),
            "--full-filenames",
            "--format",
            "raw",
            "--output",
            str(output),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def print_profile(
    summary: dict, seconds: float, rate: int, calls_per_s: float, gil: bool = False
) -> None:
    mode = "--gil: only the thread holding the GIL is sampled" if gil else "--idle"
    print(
        f"\nProfile (py-spy record --nonblocking {mode}, {rate} Hz asked, {seconds:.0f} s, "
        f"{calls_per_s:.0f} calls/s): share of each thread's samples"
        + ("" if gil else ", and the wall time per call")
    )
    if gil:
        calls_per_s = 0.0  # samples are not spread over the wall time: no time per call
    for thread in ("reactor thread", "outbox thread"):
        data = summary.get(thread)
        if not data:
            continue
        print(f"  {thread} ({data['samples']} samples, {data['samples'] / seconds:.0f} Hz got):")
        busy = {b: p for b, p in data["buckets"].items() if not b.startswith("idle")}
        busy_total = sum(busy.values())
        for bucket, percent in data["buckets"].items():
            of_busy = f"{100 * percent / busy_total:5.1f}% of busy" if bucket in busy else ""
            per_call = f"{1e6 * percent / 100 / calls_per_s:6.0f} µs/call" if calls_per_s else ""
            print(f"    {percent:5.1f}%  {of_busy:>15}  {per_call:>12}  {bucket}")
        data["us_per_call"] = {
            bucket: round(1e6 * percent / 100 / calls_per_s, 1) if calls_per_s else None
            for bucket, percent in data["buckets"].items()
        }


# Scenarios -------------------------------------------------------------------------------


@dataclass
class Outcome:
    """Results of the whole command: rows, checks, targets."""

    rows: list[dict] = field(default_factory=list)
    checks: list[tuple[str, bool, str]] = field(default_factory=list)
    targets: list[tuple[str, bool, str]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.checks.append((name, ok, detail))

    @property
    def ok(self) -> bool:
        return all(ok for _, ok, _ in self.checks)


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def print_table(title: str, loads: list[Load], counts: dict[str, tuple[int, str]], ratios) -> None:
    print(f"\n{title}")
    header = (
        f"{'server':<8} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
        f"{'non-2xx':>7} {'errors':>6} {'peak RSS MB':>11} {'CPU% srv/wrk/mq/other':>21} "
        f"{'2xx':>8} {'in queue':>8} {'count':>8} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for load in loads:
        count, verdict = counts.get(load.label, (None, "-"))
        ratio = ratios.get(load.label)
        cpu = f"{load.server_cpu:.0f}/{load.wrk_cpu:.0f}/{load.broker_cpu:.0f}/{load.other_cpu:.0f}"
        print(
            f"{load.server:<8} {load.connections:>5} {load.rate:>8.0f} "
            f"{ms(load.latency_ms['p50']):>7} {ms(load.latency_ms['p99']):>7} "
            f"{ms(load.latency_ms['max']):>7} {load.non2xx:>7} {load.errors:>6} "
            f"{load.rss_peak_mb:>11.1f} {cpu:>21} {load.ok2xx + load.warmup_2xx:>8} "
            f"{'-' if count is None else count:>8} {verdict:>8} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>6}"
        )
    if loads:
        print(
            "(req/s, latencies, CPU: the measured run; 2xx: the measured run and its warm-up, "
            "both counted in the queue; peak RSS: VmHWM of the server process; CPU other: the "
            "rest of the machine, this script included)"
        )


def load_checks(outcome: Outcome, load: Load, name: str) -> None:
    outcome.check(
        f"{name}: every call answered",
        load.complete and load.errors == 0,
        f"sent {load.sent}, answered {load.answered}, socket errors {load.errors}"
        + ("" if load.complete else " (wrk stopped before every answer came)"),
    )
    outcome.check(f"{name}: no non-2xx answer", load.non2xx == 0, f"{load.non2xx} non-2xx")


def count_check(outcome: Outcome, name: str, in_queue: int, answered_2xx: int) -> str:
    verdict = "OK" if in_queue == answered_2xx else "MISMATCH"
    outcome.check(
        f"{name}: messages in the queue = 2xx answers",
        verdict == "OK",
        f"{in_queue} in the queue, {answered_2xx} answered 2xx",
    )
    return verdict


def gateway_run(
    options, workdir, broker, outcome, request_of, connections, label, duration, profile=False
) -> tuple[Load, int, str]:
    """One daemon, one queue, a warm-up and a measured wrk run; the count checked."""
    setup = write_config(workdir, options.broker_host, options.broker_port, options.synchronous)
    broker.setup(setup.exchange, setup.queue)
    server = None
    try:
        server = start_gateway(options, setup)
        request = request_of(server.port, setup.secret)
        answered = 0
        if options.warmup > 0:
            warm = run_wrk(
                options, workdir, server, request, connections, label + "-warmup", options.warmup
            )
            load_checks(outcome, warm, f"{label} warm-up")
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
                if options.profile_output:
                    shutil.copy(profile_file, options.profile_output)
            else:
                print(f"py-spy wrote nothing: {output.decode(errors='replace')}")
        load_checks(outcome, load, label)
        report = wait_drained(server.port, options.drain_timeout)
        in_queue = broker.count(setup.exchange, setup.queue)
        verdict = count_check(outcome, label, in_queue, answered)
        outcome.check(
            f"{label}: no unroutable notification",
            report["broker"]["unroutable"] == 0,
            f"unroutable {report['broker']['unroutable']}",
        )
        return load, in_queue, verdict
    finally:
        if server is not None:
            server.stop()
            problems = server.problems()
            outcome.check(
                f"{label}: no traceback in the daemon's log",
                problems == 0,
                f"{problems} lines (log: {server.log})",
            )
        broker.teardown(setup.exchange, setup.queue)


def bare_run(options, workdir, outcome, connections, label, duration) -> Load:
    server = start_bare(workdir)
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


def scenario_throughput(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    print(
        f"\n== throughput: bare twisted.web, then the gateway, at "
        f"{', '.join(map(str, options.connections))} connections, {options.duration:g} s each "
        f"(GitHub push, {len(json.dumps(github_push(PUSH_COMMITS)))} bytes, signed)"
    )
    bare: dict[int, Load] = {}
    gateway: dict[int, Load] = {}
    counts: dict[str, tuple[int, str]] = {}
    for connections in options.connections if not options.no_bare else []:
        label = f"bare-{connections}"
        bare[connections] = bare_run(
            options, workdir, outcome, connections, label, options.duration
        )
        print(f"  {label}: {bare[connections].rate:.0f} req/s", flush=True)
    for connections in options.connections:
        label = f"gateway-{connections}"
        profile = options.profile and connections == options.connections[0]
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
        )
        gateway[connections] = load
        counts[label] = (in_queue, verdict)
        print(f"  {label}: {load.rate:.0f} req/s, {in_queue} in the queue {verdict}", flush=True)
    ratios = {
        f"gateway-{c}": gateway[c].rate / bare[c].rate
        for c in options.connections
        if c in bare and bare[c].rate
    }
    loads = [bare[c] for c in options.connections if c in bare]
    loads += [gateway[c] for c in options.connections]
    print_table("Throughput (GitHub push, 7 KB signed)", loads, counts, ratios)
    for load in loads:
        row = load.as_dict() | {"scenario": "throughput"}
        if load.label in counts:
            row["in_queue"], row["count"] = counts[load.label]
            if load.label in ratios:
                row["ratio_to_bare"] = round(ratios[load.label], 3)
        outcome.rows.append(row)
    for connections in options.connections:
        if f"gateway-{connections}" not in ratios:
            continue
        ratio = ratios[f"gateway-{connections}"]
        rates = f"{gateway[connections].rate:.0f} / {bare[connections].rate:.0f} req/s"
        outcome.targets.append(
            (
                f"gateway >= {TARGET_RATIO}x bare at {connections} connections",
                ratio >= TARGET_RATIO,
                f"{ratio:.2f}x ({rates})",
            )
        )
    if 16 in gateway:
        p99 = gateway[16].latency_ms["p99"]
        outcome.targets.append(
            (
                f"p99 < {TARGET_P99_MS_AT_16:g} ms at 16 connections",
                p99 < TARGET_P99_MS_AT_16,
                f"p99 {p99:.1f} ms",
            )
        )
    if 64 in gateway:
        rss = gateway[64].rss_peak_mb
        outcome.targets.append(
            (
                f"peak RSS < {TARGET_RSS_MB_AT_64:g} MB at 64 connections",
                rss < TARGET_RSS_MB_AT_64,
                f"{rss:.1f} MB",
            )
        )


class HealthPoller(threading.Thread):
    """Polls /health every ``interval`` seconds: (time, depth, connected)."""

    def __init__(self, port: int, interval: float = 0.5):
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.samples: list[tuple[float, int, bool]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
                report = health(self.port)
                self.samples.append(
                    (time.monotonic(), report["outbox"]["depth"], report["broker"]["connected"])
                )
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join()
        return self.samples


def scenario_outage(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    third = options.outage_duration / 3
    connections = options.outage_connections
    print(
        f"\n== outage: {connections} connections for {options.outage_duration:g} s, the broker "
        f"cut ({options.cut}) for the middle third, through a loopback proxy"
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
            server.stop()
            problems = server.problems()
            outcome.check(
                "outage: no traceback in the daemon's log",
                problems == 0,
                f"{problems} lines (log: {server.log})",
            )
        proxy.stop()
        broker.teardown(setup.exchange, setup.queue)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (x, y) points."""
    n = len(points)
    if n < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    if var == 0:
        return 0.0
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var


class Purger(threading.Thread):
    """Empties the count queue every ``interval`` seconds, adding up what it removed,
    so that a million messages do not pile up in RabbitMQ."""

    def __init__(self, broker: Broker, exchange: str, queue: str, interval: float):
        super().__init__(daemon=True)
        self.broker, self.exchange, self.queue, self.interval = broker, exchange, queue, interval
        self.purged = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.interval):
            self.purged += self.broker.purge(self.exchange, self.queue)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.purged


def scenario_memory(options, workdir: Path, broker: Broker, outcome: Outcome) -> None:
    connections = options.memory_connections
    print(
        f"\n== memory: {options.calls:,} small Notification calls at {connections} connections, "
        f"RSS sampled every {options.memory_interval:g} s"
    )
    setup = write_config(workdir, options.broker_host, options.broker_port, options.synchronous)
    broker.setup(setup.exchange, setup.queue)
    server = None
    purger = None
    try:
        server = start_gateway(options, setup)
        request = notification_request(server.port)
        rss_start = proc_status(server.pid)["VmRSS"] / 1024
        purger = Purger(broker, setup.exchange, setup.queue, 15.0)
        purger.start()
        progress = {"next": 60.0}

        def during(elapsed: float) -> None:
            if elapsed >= progress["next"]:
                progress["next"] += 60.0
                rss = proc_status(server.pid)["VmRSS"] / 1024
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
        wait_drained(server.port, options.drain_timeout)
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
            server.stop()
            problems = server.problems()
            outcome.check(
                "memory: no traceback in the daemon's log",
                problems == 0,
                f"{problems} lines (log: {server.log})",
            )
        broker.teardown(setup.exchange, setup.queue)


# The command ---------------------------------------------------------------------------


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
        choices=["throughput", "outage", "memory", "all"],
        help="what to run",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the three scenarios, tiny: 2 s runs, 2,000 memory calls",
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds per throughput run")
    parser.add_argument("--connections", default="16,64", help="throughput connection counts")
    parser.add_argument(
        "--no-bare", action="store_true", help="throughput: the gateway only (no ratio)"
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
    if options.smoke:
        options.scenario = "all" if options.scenario == "throughput" else options.scenario
        options.duration = 2
        options.warmup = 0
        options.outage_duration = 3
        options.calls = min(options.calls, 2000)
        options.memory_interval = 0.2
        options.drain_timeout = min(options.drain_timeout, 60)
    return options


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if shutil.which(options.wrk) is None and not Path(options.wrk).exists():
        print("run.py: wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    info = machine()
    print(
        f"notifications benchmarks — {info['date']}: {info['cores']} cores, {info['cpu']}, "
        f"Python {info['python']}, Twisted {info['twisted']}, RabbitMQ {info['rabbitmq']}, "
        f"{info['wrk']}; daemon synchronous={options.synchronous}; "
        f"wrk -t{options.wrk_threads} on the same machine"
    )
    outcome = Outcome(extra={"machine": info})
    workdir = Path(tempfile.mkdtemp(prefix="notifications-bench-"))
    background = Background()
    broker = Broker(background, options.broker_host, options.broker_port)
    scenarios = (
        ["throughput", "outage", "memory"] if options.scenario == "all" else [options.scenario]
    )
    status = 0
    try:
        for name in scenarios:
            {
                "throughput": scenario_throughput,
                "outage": scenario_outage,
                "memory": scenario_memory,
            }[name](options, workdir, broker, outcome)
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
        print("\nTargets of the issue (reported, not enforced):")
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


if __name__ == "__main__":
    sys.exit(main())
