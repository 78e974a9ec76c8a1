"""Benchmarks of the notifications center: throughput, broker outage, overload, memory.

Every scenario starts the real daemon (``twistd notifications``) on a copy of
``etc/`` pointed at the local RabbitMQ (publisher confirms on), drives it with
``wrk`` and ``benchmarks/gate.lua``, and checks that every call answered 2xx
reached a queue bound to the exchange. See benchmarks/README.rst.

    python benchmarks/run.py                 # throughput: bare and gateway, 16 and 64 connections
    python benchmarks/run.py --workers 2     # the same, and the gateway with 2 worker processes
    python benchmarks/run.py outage          # the broker cut for the middle third of the run
    python benchmarks/run.py overload        # max_in_progress 16, then 4x as many connections
    python benchmarks/run.py memory          # 1,000,000 small Notification calls, RSS sampled
    python benchmarks/run.py all --profile   # the four, with py-spy during the 16-connection run
    python benchmarks/run.py compare --against 9c9f5c2   # that version and this one, alternated
    python benchmarks/run.py --smoke         # the four, tiny (what the test suite runs)

Exit status: 0 when every check passed, 1 when a count did not match or a
call was refused, dropped or unanswered (past the overload scenario's
limit, a 503 with Retry-After is expected), 2 when the benchmark could not
run. The performance targets of the issue are printed (MET / NOT MET),
never turned into a failure: timings are noisy.
"""

# ruff: noqa: S603, S607 - a benchmark driver: it runs wrk, twistd, py-spy and rabbitmqctl

from __future__ import annotations

import argparse
import collections
import contextlib
import hashlib
import hmac
import http.client
import io
import json
import linecache
import math
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
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


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (``--workers``: the twistd parent and its workers).

    Read from ``/proc/<pid>/task/<tid>/children`` of every thread, recursively.
    """
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        if current in found:
            continue
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    pending.extend(int(c) for c in (task / "children").read_text().split())
    return found


def tree_rss_kb(pid: int, each: dict[int, int] | None = None) -> tuple[int, int]:
    """The summed VmRSS (kB) of a process and its descendants, and how many they are.

    ``each``, when given, keeps the largest VmRSS seen of every process.
    """
    total = count = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, KeyError):
            rss = proc_status(member)["VmRSS"]
            total += rss
            count += 1
            if each is not None:
                each[member] = max(each.get(member, 0), rss)
    return total, count


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process, by thread id (the main thread's is ``pid``)."""
    seconds = {}
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (task / "stat").read_text().rpartition(")")[2].split()
                seconds[int(task.name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seconds


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of a process and of each of its descendants, by pid."""
    seconds = {}
    for member in process_tree(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            seconds[member] = cpu_seconds(member)
    return seconds


class RSSSampler(threading.Thread):
    """Samples the summed RSS of a process and its descendants every ``interval`` seconds.

    ``samples``: (time, kB); ``processes``: the most processes seen in one sample.
    """

    def __init__(self, pid: int, interval: float):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.processes = 0
        #: The largest VmRSS (kB) of each process, the parent first.
        self.each: dict[int, int] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kb, count = tree_rss_kb(self.pid, self.each)
            if count:
                self.samples.append((time.monotonic(), kb))
                self.processes = max(self.processes, count)
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
    #: ``--workers`` of the daemon (1: one process, no worker processes).
    workers: int = 1
    #: The daemon's storage directory (the outboxes are there).
    storage: Path | None = None

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

    def stop_and_check(self, outcome: Outcome, label: str) -> None:
        """Stop the daemon, then check its log for tracebacks."""
        self.stop()
        problems = self.problems()
        outcome.check(
            f"{label}: no traceback in the daemon's log",
            problems == 0,
            f"{problems} lines (log: {self.log})",
        )

    def log_lines(self, text: str) -> list[str]:
        """The lines of the daemon's log (its workers' included) that contain ``text``."""
        if self.log is None or not self.log.exists():
            return []
        with self.log.open(errors="replace") as lines:
            return [line for line in lines if text in line]

    def answers_per_worker(self) -> dict[int, int]:
        """Gate calls answered 2xx by each worker, from the one log line of each call."""
        counts: collections.Counter = collections.Counter()
        for line in self.log_lines(" → 2"):
            match = re.match(r"\[worker (\d+)\] ", line)
            if match:
                counts[int(match[1])] += 1
        return dict(sorted(counts.items()))

    def outbox_rows(self) -> int:
        """Notifications still in the outboxes on disk (not yet confirmed by the broker)."""
        import sqlite3

        folders = (
            [self.storage]
            if self.workers == 1
            else [self.storage / f"worker-{i}" for i in range(self.workers)]
        )
        total = 0
        for folder in folders:
            path = folder / "outbox.sqlite3"
            if not path.exists():
                raise ValueError(f"{path} does not exist yet")
            connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                total += connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            finally:
                connection.close()
        return total


def start_bare(workdir: Path, parse_forms: bool = False) -> Server:
    port = free_port()
    log = workdir / f"bare-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, str(BARE), "--port", str(port)]
            + (["--parse-forms"] if parse_forms else []),
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
    storage: Path


def write_config(
    workdir: Path,
    broker_host: str,
    broker_port: int,
    synchronous: str,
    max_in_progress: int | None = None,
    source: Path = ROOT,
) -> GatewaySetup:
    """A copy of etc/ with a unique exchange, a temporary outbox and a known GitHub secret
    (and ``[gate] max_in_progress`` when given); ``source``: the checkout whose etc/ it is."""
    tag = uuid.uuid4().hex[:12]
    folder = workdir / f"gateway-{tag}"
    etc = folder / "etc"
    shutil.copytree(source / "etc", etc)
    exchange = f"notifications-bench-{tag}"
    storage = folder / "var"
    text = (etc / "notifications.toml").read_text()
    for pattern, value in (
        (r"^host = .*$", f'host = "{broker_host}"'),
        (r"^port = .*$", f"port = {broker_port}"),
        (r"^exchange = .*$", f'exchange = "{exchange}"'),
        (r"^directory = .*$", f'directory = "{storage}"'),
        (r"^#? *synchronous = .*$", f'synchronous = "{synchronous}"'),
        *(
            [(r"^#? *max_in_progress = .*$", f"max_in_progress = {max_in_progress}")]
            if max_in_progress is not None
            else []
        ),
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
    if source == ROOT:
        # Another version's configuration is that version's to read.
        config = load_config(etc / "notifications.toml", environ={})
        assert config.broker.exchange == exchange  # noqa: S101 - our own edit, checked
        if max_in_progress is not None:
            assert config.max_in_progress == max_in_progress  # noqa: S101 - likewise
    return GatewaySetup(
        folder, etc / "notifications.toml", exchange, f"{exchange}-count", secret, storage
    )


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


def start_gateway(
    options,
    setup: GatewaySetup,
    wait_connected: bool = True,
    workers: int = 1,
    source: Path | None = None,
) -> Server:
    """``twistd -n notifications`` on a free port; ``--workers`` when ``workers`` > 1.

    ``source``: a checkout whose code the daemon runs (first on its
    ``PYTHONPATH``, its ``twisted/plugins`` included) instead of the installed one.

    It is ready when ``/status`` answers and (``wait_connected``) the broker
    connection is up: ``/health`` says so for one process; with workers,
    ``/health`` describes whichever worker answered, so the log must show each
    worker's "Connected to the broker" line.
    """
    port = free_port()
    log = setup.folder / "twistd.log"
    environ = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BROKER_") and name != "NOTIFICATIONS_CONFIG"
    }
    if source is not None:
        environ["PYTHONPATH"] = os.pathsep.join(
            [str(source), *filter(None, [environ.get("PYTHONPATH")])]
        )
    command = [
        *twistd_command(options),
        "--pidfile=",
        "-n",
        "notifications",
        "--port",
        f"tcp:{port}:interface=127.0.0.1",
        "--config",
        str(setup.config),
        "--workers",
        str(workers),
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, cwd=setup.folder, env=environ
        )
    server = Server("gateway", process, port, log, workers=workers, storage=setup.storage)
    try:
        wait_until(
            lambda: process.poll() is None and http_get(port, "/status") == (200, b"ALIVE"),
            30,
            f"the daemon on port {port} (log: {log})",
        )
        if wait_connected and workers == 1:
            wait_until(lambda: health(port)["broker"]["connected"], 30, "the broker connection")
        elif wait_connected:

            def every_worker_connected() -> bool:
                lines = server.log_lines("Connected to the broker")
                return all(any(f"[worker {i}] " in x for x in lines) for i in range(workers))

            wait_until(every_worker_connected, 30, f"the broker connection of {workers} workers")
    except BenchError:
        server.stop()
        raise
    return server


def health(port: int) -> dict:
    _, body = http_get(port, "/health")
    return json.loads(body)


def wait_drained(port: int, timeout: float, server: Server | None = None) -> dict:
    """Wait until the outbox is empty and nothing is in flight; the last /health.

    With workers (``server.workers`` > 1), ``/health`` describes one worker
    only: the outbox tables of every worker are read on disk instead (a row
    leaves the outbox when the broker has confirmed it), and the report is a
    summary with the unroutable count taken from the log.
    """
    if server is not None and server.workers > 1:

        def every_outbox_empty():
            return server.outbox_rows() == 0

        wait_until(every_outbox_empty, timeout, "the outboxes to drain", interval=0.2)
        unroutable = len(server.log_lines("No queue is bound for routing key"))
        return {"broker": {"unroutable": unroutable, "reconnects": None}, "outbox": {"depth": 0}}

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
    path = "/gate/Notification/Acme"
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "User-Agent: deployer/bench\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n"
    ) + body[:cut]
    tail = body[cut + STAMP_DIGITS :]
    return Request(path, head.encode(), tail.encode(), len(body.encode()), stamped=True)


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
    ("JSON encoding (notification, report)", "notifications/jsonutil.py", None),
    ("rendering (text, link, group)", "notifications/renderers/", None),
    ("rendering (text, link, group)", "notifications/analyzers.py", None),
    ("gate logic (headers, checks, routing key, report)", "notifications/gates/", None),
    ("gate logic (headers, checks, routing key, report)", "notifications/notification.py", None),
    ("gate logic (headers, checks, routing key, report)", "notifications/report.py", None),
    ("reactor and sockets", "twisted/python/log.py", frozenset({"callWithLogger"})),
    ("reactor and sockets", "twisted/python/log.py", frozenset({"callWithContext"})),
    ("logging (the call line)", "twisted/logger/", None),
    ("logging (the call line)", "twisted/python/log.py", None),
    ("logging (the call line)", "twisted/python/logfile.py", None),
    ("logging (the call line)", "notifications/logs.py", None),
    ("logging (the call line)", "notifications/web.py", frozenset({"_log_call"})),
    ("logging (the call line)", "notifications/web.py", frozenset({"_summary"})),
    (
        "logging (the call line)",
        "notifications/web.py",
        frozenset({"redacted_log_formatter"}),
    ),
    ("logging (the call line)", "twisted/web/http.py", frozenset({"combinedLogFormatter"})),
    ("logging (the call line)", "twisted/web/http.py", frozenset({"log"})),
    ("logging (the call line)", "twisted/web/http.py", frozenset({"_escape"})),
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
            # The statement is on the frame's line or the next two (a call
            # spread over lines), or the closure is named after it.
            source = " ".join(linecache.getline(filename, n) for n in range(line, line + 3))
            source += " " + function.upper()
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


def cpu_per_call(load: Load) -> float:
    """The server's CPU time per answered call (µs): steadier from run to run
    than the request rate, which moves with whatever else the cores do."""
    return load.server_cpu / 100 * 1e6 / load.rate if load.rate else 0.0


def ms(value: float) -> str:
    return f"{value:.1f}" if value < 100 else f"{value:.0f}"


def print_table(
    title: str,
    loads: list[Load],
    counts: dict[str, tuple[int, str]],
    ratios,
    worker_ratios: dict[str, float] | None = None,
) -> None:
    """One row per run; ``ratios``: gateway/bare, ``worker_ratios``: N workers / 1 worker."""
    worker_ratios = worker_ratios or {}
    print(f"\n{title}")
    header = (
        f"{'server':<9} {'wk':>2} {'conns':>5} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'max ms':>7} {'non-2xx':>7} {'errors':>6} {'peak RSS MB':>11} "
        f"{'CPU% srv/wrk/mq/other':>21} {'CPU µs/call':>11} {'2xx':>8} {'in queue':>8} "
        f"{'count':>8} {'/bare':>6}" + (f" {'/1 wk':>6}" if worker_ratios else "")
    )
    print(header)
    print("-" * len(header))
    for load in loads:
        count, verdict = counts.get(load.label, (None, "-"))
        ratio = ratios.get(load.label)
        cpu = f"{load.server_cpu:.0f}/{load.wrk_cpu:.0f}/{load.broker_cpu:.0f}/{load.other_cpu:.0f}"
        workers = "-" if load.server == "bare" else str(load.workers)
        by_workers = worker_ratios.get(load.label)
        per_call = cpu_per_call(load)
        print(
            f"{load.server:<9} {workers:>2} {load.connections:>5} {load.rate:>8.0f} "
            f"{ms(load.latency_ms['p50']):>7} {ms(load.latency_ms['p99']):>7} "
            f"{ms(load.latency_ms['max']):>7} {load.non2xx:>7} {load.errors:>6} "
            f"{load.rss_peak_mb:>11.1f} {cpu:>21} {per_call:>11.0f} "
            f"{load.ok2xx + load.warmup_2xx:>8} "
            f"{'-' if count is None else count:>8} {verdict:>8} "
            f"{'-' if ratio is None else f'{ratio:.2f}':>6}"
            + (f" {'-' if by_workers is None else f'{by_workers:.2f}':>6}" if worker_ratios else "")
        )
    if loads:
        print(
            "(req/s, latencies, CPU: the measured run; 2xx: the measured run and its warm-up, "
            "both counted in the queue; wk: daemon processes taking calls (--workers); peak "
            "RSS: the largest sum of VmRSS over the server's processes (the twistd parent and "
            "its workers), sampled, or VmHWM for one process; CPU srv: every server process; "
            "other: the rest of the machine, this script included; CPU µs/call: CPU srv over "
            "req/s)"
        )


def load_checks(outcome: Outcome, load: Load, name: str, expect_refusals: bool = False) -> None:
    outcome.check(
        f"{name}: every call answered",
        load.complete and load.errors == 0,
        f"sent {load.sent}, answered {load.answered}, socket errors {load.errors}"
        + ("" if load.complete else " (wrk stopped before every answer came)"),
    )
    if expect_refusals:
        outcome.check(
            f"{name}: every non-2xx is a 503 with Retry-After",
            load.non2xx == load.s503 == load.s503_retry,
            f"{load.non2xx} non-2xx, {load.s503} 503, {load.s503_retry} with Retry-After",
        )
    else:
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


def bare_run(options, workdir, outcome, connections, label, duration) -> Load:
    server = start_bare(workdir, options.bare_parse_forms)
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


def git(*arguments: str, binary: bool = False) -> str | bytes:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *arguments], capture_output=True, check=True, timeout=60
        )
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or str(error).encode()
        detail = detail.decode(errors="replace").strip() if isinstance(detail, bytes) else detail
        raise BenchError(f"git {' '.join(arguments)}: {detail}") from None
    return done.stdout if binary else done.stdout.decode().strip()


def export_version(revision: str, workdir: Path) -> tuple[str, Path]:
    """The files of a git revision in a folder of their own: (short commit id, folder)."""
    commit = git("rev-parse", "--short", "--verify", f"{revision}^{{commit}}")
    folder = workdir / f"version-{commit}"
    archive = git("archive", "--format=tar", commit, binary=True)
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    return commit, folder


def check_source(name: str, source: Path) -> None:
    """Make sure a daemon started with ``source`` first on its path runs that code."""
    probe = (
        "import notifications, twisted.plugins.notifications_plugin as plugin; "
        "print(notifications.__file__); print(plugin.__file__)"
    )
    environ = dict(os.environ, PYTHONPATH=str(source))
    # -P: like twistd (a script), without the current folder first on the path.
    done = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        capture_output=True,
        text=True,
        env=environ,
        timeout=60,
    )
    paths = done.stdout.split()
    if done.returncode != 0 or len(paths) != 2:
        raise BenchError(f"{name}: cannot import its code: {done.stderr.strip()[-500:]}")
    for path in paths:
        if not Path(path).resolve().is_relative_to(source.resolve()):
            raise BenchError(f"{name}: the daemon would run {path}, not the code in {source}")
    print(f"  {name}: {Path(paths[0]).parent}")


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
#: most this many MB above the run at the limit (as many connections as calls
#: allowed in progress).
TARGET_OVERLOAD_RSS_MB = 10.0


def rss_growth(samples: list[tuple[float, int]]) -> tuple[float, float]:
    """(MB per second, MB over the span) of a least-squares fit over the second half."""
    if not samples:
        return 0.0, 0.0
    t0 = samples[0][0]
    points = [(t - t0, kb / 1024) for t, kb in samples]
    half = [p for p in points if p[0] >= points[-1][0] / 2]
    per_second = slope(half)
    span = (half[-1][0] - half[0][0]) if len(half) > 1 else 0.0
    return per_second, per_second * span


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
        + (f", {options.workers} workers (RSS summed)" if options.workers > 1 else "")
    )
    setup = write_config(workdir, options.broker_host, options.broker_port, options.synchronous)
    broker.setup(setup.exchange, setup.queue)
    server = None
    purger = None
    try:
        server = start_gateway(options, setup, workers=options.workers)
        request = notification_request(server.port)
        rss_start = tree_rss_kb(server.pid)[0] / 1024
        purger = Purger(broker, setup.exchange, setup.queue, 15.0)
        purger.start()
        progress = {"next": 60.0}

        def during(elapsed: float) -> None:
            if elapsed >= progress["next"]:
                progress["next"] += 60.0
                rss = tree_rss_kb(server.pid)[0] / 1024
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
        wait_drained(server.port, options.drain_timeout, server)
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
            server.stop_and_check(outcome, "memory")
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
        choices=["throughput", "outage", "overload", "memory", "all", "compare"],
        help="what to run (all: the first four; compare: see --against)",
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
        default=3,
        help="compare: runs of each version at each connection count, the order alternated",
    )
    parser.add_argument("--connections", default="16,64", help="throughput connection counts")
    parser.add_argument(
        "--no-bare", action="store_true", help="throughput: the gateway only (no ratio)"
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
    if options.rounds < 1:
        parser.error("--rounds must be 1 or more")
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
    CONNECTION_CLOSE["on"] = options.connection_close
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
            {
                "throughput": scenario_throughput,
                "outage": scenario_outage,
                "overload": scenario_overload,
                "memory": scenario_memory,
                "compare": scenario_compare,
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
