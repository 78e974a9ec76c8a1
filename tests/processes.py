"""The daemon as ``twistd`` runs it, in a subprocess, for the tests that need a real process.

Signals, command-line options, worker processes, a browser or a blocking
HTTP client (hypothesis, schemathesis) need the daemon outside the test's
reactor. Everything here blocks: call it from a plain test, or through
``threads.deferToThread`` from a test running in the reactor.

- ``twistd_command`` is the command line, ``popen_twistd`` runs it with its
  output in pipes (for ``communicate()``);
- ``start_twistd`` runs it on a configuration folder and a free loopback port,
  with its output in the folder's ``twistd.log``: a ``TwistdProcess``;
  ``running_twistd`` is the same as a context manager (ready, then stopped,
  then its log checked);
- ``free_port``, ``http_status``, ``request`` and ``wait_until`` are the
  blocking client side.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

from twisted.internet import threads

#: The project's folder: the daemon's working directory (``etc/…`` paths are relative to it).
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A loopback TCP port free to listen on (just released by the OS)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def loopback_endpoint(port: int) -> str:
    """The Twisted endpoint string of a loopback TCP port, for ``--port``/``--admin-port``."""
    return f"tcp:{port}:interface=127.0.0.1"


def http_status(port: int, timeout: float = 30, process: subprocess.Popen | None = None) -> bytes:
    """GET /status on a loopback port, waiting for the daemon to listen.

    Returns the whole HTTP/1.0 answer (status line, headers, body), or ``b""``
    when nothing answered within ``timeout`` seconds, or (given the daemon's
    ``process``) once that process has ended.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (process is None or process.poll() is None):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as connection:
                connection.sendall(b"GET /status HTTP/1.0\r\nHost: x\r\n\r\n")
                return connection.makefile("rb").read()
        except OSError:
            time.sleep(0.2)
    return b""


def request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes]:
    """One blocking HTTP call to a loopback port: ``(status code, body)``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(method, path, body, dict(headers or {}))
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    """Poll ``predicate`` every 0.1 s until it is true; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


def twistd_command(config_path: Path | str, *arguments: str, runner: str = "twistd") -> list[str]:
    """``twistd --pidfile= -n notifications <arguments> --config <config_path>``.

    ``runner="twist"`` gives the same with ``twist`` (which has neither
    ``--pidfile`` nor ``-n``). A relative ``config_path`` is relative to ``ROOT``.
    """
    executable = str(Path(sys.executable).parent / runner)
    options = ["--pidfile=", "-n"] if runner == "twistd" else []
    return [executable, *options, "notifications", *arguments, "--config", str(config_path)]


def popen_twistd(
    config_path: Path | str, *arguments: str, runner: str = "twistd", **kwargs
) -> subprocess.Popen:
    """Run ``twistd_command`` in ``ROOT``, stdout and stderr as text pipes.

    For the tests that read both streams with ``communicate()``; ``kwargs``
    go to ``subprocess.Popen``.
    """
    return subprocess.Popen(
        twistd_command(config_path, *arguments, runner=runner),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **kwargs,
    )


class TwistdProcess:
    """``twistd notifications`` on a configuration folder, listening on a loopback port.

    The configuration is ``<directory>/notifications.toml`` (``make_config``
    writes it); the daemon listens on ``port`` (a free one unless given) with
    ``arguments`` added to its command line, and writes its output, stderr
    included, to ``<directory>/twistd.log`` (appended to, so that a restart
    keeps the earlier output). ``env`` is added to the environment.
    """

    def __init__(
        self,
        directory: Path,
        *arguments: str,
        port: int | None = None,
        env: Mapping[str, str] | None = None,
    ):
        self.directory = directory
        self.config_path = directory / "notifications.toml"
        self.log_path = directory / "twistd.log"
        self.port = port if port is not None else free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.arguments = arguments
        self.env = dict(env or {})
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return twistd_command(
            self.config_path, "--port", loopback_endpoint(self.port), *self.arguments
        )

    def start(self) -> TwistdProcess:
        """Start the daemon (again, after it stopped: same port, same log)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        return self

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def poll(self) -> int | None:
        return self.process.poll()

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def ready(self, timeout: float = 30) -> None:
        """Wait until ``/status`` answers ``ALIVE``; fail with the log otherwise."""
        assert http_status(self.port, timeout).endswith(b"ALIVE"), self.output()

    def output(self) -> str:
        """The log so far, undecodable bytes replaced."""
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM (unless it has exited), wait for the exit; the log.

        A daemon still running after ``timeout`` seconds is killed, and the
        wait's ``TimeoutExpired`` raised.
        """
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM)  # nothing once it has exited
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise
        return self.output()

    def kill(self) -> None:
        """SIGKILL the daemon if it is running, and wait for it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def assert_clean(self) -> None:
        """Fail when the log holds a traceback or an unhandled error (a 5xx, a crash)."""
        output = self.output()
        assert "Traceback" not in output and "Unhandled" not in output, output[-3000:]


def start_twistd(
    directory: Path, *arguments: str, port: int | None = None, env=None
) -> TwistdProcess:
    """A started ``TwistdProcess`` (see there); ``ready()`` waits for it to answer."""
    return TwistdProcess(directory, *arguments, port=port, env=env).start()


@contextmanager
def running_twistd(
    directory: Path, *arguments: str, clean: bool = True, **kwargs
) -> Iterator[TwistdProcess]:
    """``start_twistd``, ready; stopped on the way out, its log then ``assert_clean``.

    The log is checked only when the block ended without an exception, and
    not at all with ``clean=False`` (a daemon meant to hit known bugs).
    """
    daemon = start_twistd(directory, *arguments, **kwargs)
    try:
        daemon.ready()
        yield daemon
    finally:
        daemon.stop()
    if clean:
        daemon.assert_clean()


@asynccontextmanager
async def serving_twistd(
    directory: Path, *arguments: str, **kwargs
) -> AsyncIterator[TwistdProcess]:
    """``start_twistd`` for a test in the reactor: ready, stopped on the way out, both in a
    thread (they block). The log is left to the test to check."""
    daemon = start_twistd(directory, *arguments, **kwargs)
    try:
        await threads.deferToThread(daemon.ready)
        yield daemon
    finally:
        await threads.deferToThread(daemon.stop)


def pid_alive(pid: int) -> bool:
    """Whether a process (not necessarily a child of ours) still runs, zombies aside."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


class DaemonizedTwistd:
    """``twistd --pidfile F --logfile L notifications …``: the classic forking daemon.

    ``start`` runs twistd, which returns once the daemon is running (or has
    failed to start: then its output says why); the daemon's pid comes from
    its pidfile, its log from ``<directory>/twistd.log`` — or, with
    ``syslog=True``, from nowhere: ``twistd --syslog`` logs to the system's
    syslog, which the tests do not read.
    """

    def __init__(
        self, directory: Path, *arguments: str, port: int | None = None, syslog: bool = False
    ):
        self.directory = directory
        self.config_path = directory / "notifications.toml"
        self.pidfile = directory / "twistd.pid"
        self.log_path = directory / "twistd.log"
        self.port = port if port is not None else free_port()
        self.arguments = arguments
        self.syslog = syslog
        self.pid: int | None = None

    def command(self) -> list[str]:
        twistd = str(Path(sys.executable).parent / "twistd")
        logging = (
            ["--syslog", "--prefix=notifications-test"]
            if self.syslog
            else [f"--logfile={self.log_path}"]
        )
        return [
            twistd,
            f"--pidfile={self.pidfile}",
            *logging,
            "notifications",
            "--port",
            loopback_endpoint(self.port),
            *self.arguments,
            "--config",
            str(self.config_path),
        ]

    def start(self) -> DaemonizedTwistd:
        launcher = subprocess.run(
            self.command(),
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert launcher.returncode == 0, launcher.stdout + launcher.stderr + self.output()
        self.pid = int(self.pidfile.read_text().strip())
        return self

    def ready(self, timeout: float = 30) -> None:
        assert http_status(self.port, timeout).endswith(b"ALIVE"), self.output()

    def signal(self, number: int) -> None:
        os.kill(self.pid, number)

    def output(self) -> str:
        logs = sorted(self.directory.glob("twistd.log*"), reverse=True)
        return "".join(path.read_text(errors="replace") for path in logs)

    def stop(self, timeout: float = 30) -> str:
        """SIGTERM, then wait until the process is gone; SIGKILL after ``timeout`` s."""
        if self.pid is not None and pid_alive(self.pid):
            self.signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while pid_alive(self.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(self.pid):
                os.kill(self.pid, signal.SIGKILL)
                raise AssertionError(f"the daemon ignored SIGTERM for {timeout} s")
        return self.output()

    def assert_clean(self) -> None:
        output = self.output()
        assert "Traceback" not in output and "Unhandled" not in output, output[-3000:]
