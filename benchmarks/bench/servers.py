"""The servers under load: the daemon (``twistd notifications``, its
generated configuration, its readiness, health and outboxes), the bare and
the default twisted.web servers, the FastAPI receiver (and its virtual
environment), and another revision's code for ``compare``."""

# ruff: noqa: S603, S607 - it starts twistd, the servers and git

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from notifications.config import load_config

from .base import (
    BARE,
    DEFAULT,
    FASTAPI,
    FASTAPI_REQUIREMENTS,
    GITHUB_DOOR,
    ROOT,
    BenchError,
    free_port,
    http_get,
    wait_until,
)

if TYPE_CHECKING:
    from .outcome import Outcome


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
        """Stop the server, then check its log for tracebacks."""
        self.stop()
        problems = self.problems()
        whose = "the daemon's" if self.kind == "gateway" else f"the {self.kind} server's"
        outcome.check(
            f"{label}: no traceback in {whose} log",
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
            # "[worker 0 <namespace>#info]" (the parent writes the workers'
            # lines), or "[worker 0] " before the line (older versions).
            match = re.search(r"\[worker (\d+)[\] ]", line)
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


def _start_script(
    kind: str, command: list[str], workdir: Path, environ: dict[str, str] | None = None
) -> Server:
    """A server script on a free port (``--port`` appended), its output in
    ``<kind>-<port>.log``; ready when ``GET /status`` answers 200."""
    port = free_port()
    log = workdir / f"{kind}-{port}.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=environ,
        )
    server = Server(kind, process, port, log)
    try:
        wait_until(
            lambda: process.poll() is None and http_get(port, "/status")[0] == 200,
            30,
            f"the {kind} server (log: {log})",
        )
    except BenchError:
        server.stop()
        raise
    return server


def start_bare(workdir: Path, parse_forms: bool = False) -> Server:
    """``bare.py``: twisted.web with everything optional taken out (the ceiling)."""
    command = [sys.executable, str(BARE)] + (["--parse-forms"] if parse_forms else [])
    return _start_script("bare", command, workdir)


def start_default(workdir: Path) -> Server:
    """``twisted_default.py``: twisted.web's ``Site`` with its defaults, the
    access log written to a file of the temporary folder."""
    access_log = workdir / f"default-access-{uuid.uuid4().hex[:8]}.log"
    command = [sys.executable, str(DEFAULT), "--access-log", str(access_log)]
    return _start_script("default", command, workdir)


def fastapi_venv_folder(requested: Path | None) -> tuple[Path, str]:
    """The FastAPI receiver's virtual environment and the digest of what it must hold.

    By default one per machine, in the user's cache folder, named after the
    digest of the pinned requirements and of this Python: made once, then
    reused by every checkout and every run (CI included) until the pins change.
    """
    digest = hashlib.sha256(FASTAPI_REQUIREMENTS.read_bytes() + sys.version.encode()).hexdigest()[
        :12
    ]
    if requested is not None:
        return requested, digest
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "notifications-benchmarks" / f"fastapi-{digest}", digest


def fastapi_python(requested: Path | None, timeout: float = 600) -> Path:
    """The Python of the FastAPI receiver's virtual environment, created when missing.

    Its packages (``benchmarks/fastapi-requirements.txt``, every version
    pinned) are kept out of the project's environment. Made under a lock (two
    runs at once wait for one creation); complete once its marker file holds
    the digest of the requirements, else made again.
    """
    folder, digest = fastapi_venv_folder(requested)
    python = folder / "bin" / "python"
    marker = folder / ".bench-complete"

    def complete() -> bool:
        return python.exists() and marker.exists() and marker.read_text() == digest

    if complete():
        return python
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f"{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if complete():
            return python
        print(f"  creating the FastAPI receiver's virtual environment in {folder}", flush=True)
        started = time.monotonic()
        shutil.rmtree(folder, ignore_errors=True)
        for step in (
            [sys.executable, "-m", "venv", str(folder)],
            [
                str(python),
                *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                *("--no-input", "-r", str(FASTAPI_REQUIREMENTS)),
            ],
        ):
            try:
                subprocess.run(step, capture_output=True, check=True, timeout=timeout)
            except (OSError, subprocess.SubprocessError) as error:
                shutil.rmtree(folder, ignore_errors=True)
                output = getattr(error, "stderr", b"") or b""
                lines = output.decode(errors="replace").strip().splitlines()[-5:]
                raise BenchError(
                    f"cannot create the FastAPI receiver's environment ({' '.join(step[:4])}…): "
                    + " / ".join(lines or [str(error)])
                ) from None
        marker.write_text(digest)
        print(f"  created in {time.monotonic() - started:.0f} s (kept for later runs)", flush=True)
    return python


def start_fastapi(
    options, workdir: Path, exchange: str, secret: str, python: Path | None = None
) -> Server:
    """``fastapi_receiver.py`` with its own environment's Python, publishing on ``exchange``.

    The broker address and the GitHub secret go through the environment, not
    the command line (which ``ps`` shows).
    """
    python = python or fastapi_python(options.fastapi_venv)
    environ = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTHONPATH", "PYTHONHOME") and not name.startswith("BROKER_")
    }
    environ["BENCH_SECRET"] = secret
    environ["BENCH_AMQP_URL"] = f"amqp://guest:guest@{options.broker_host}:{options.broker_port}/"
    command = [str(python), str(FASTAPI), "--exchange", exchange]
    return _start_script("fastapi", command, workdir, environ)


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
    archive: bool | None = None,
) -> GatewaySetup:
    """A copy of etc/ with a unique exchange, a temporary outbox and a known GitHub secret
    (and ``[gate] max_in_progress`` when given); ``source``: the checkout whose etc/ it is;
    ``archive``: ``[archive] enabled`` (as the example says when not given)."""
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
    if archive is not None:
        text += f"\n[archive]\nenabled = {'true' if archive else 'false'}\n"
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
                return all(
                    any(re.search(rf"\[worker {i}[\] ]", x) for x in lines) for i in range(workers)
                )

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
