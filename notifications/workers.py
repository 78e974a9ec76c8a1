"""``--workers N``: several daemon processes sharing the listening sockets.

One Python process is bound to one core. With ``--workers N`` the twistd
process starts N worker processes, each listening on the same ports with
``SO_REUSEPORT`` (a socket of its own, given to ``reactor.adoptStreamPort``)
so that the kernel spreads the connections evenly among them: with one
shared socket, Twisted's accept loop lets the first worker to wake take
every pending connection, and the benchmark saw one worker answer 25,086
calls for the other's 1,550. Each worker is a whole daemon with its own
outbox (``<storage>/worker-<i>``) and its own broker connection; the parent
only supervises: it checks the ports can be bound, restarts a worker that
dies (connections waiting in that worker's backlog are reset), forwards
SIGHUP, and on stop sends SIGTERM and waits for every worker to drain.

Deduplication of GitHub deliveries is per worker: a redelivery that lands on
another worker than the first delivery is published again (with the same
message id, which consumers can drop).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from dataclasses import replace
from pathlib import Path

from twisted.application import service
from twisted.internet import defer, protocol
from twisted.logger import (
    FileLogObserver,
    Logger,
    globalLogBeginner,
)

from .config import Config, ConfigError, load_config
from .logs import classic_formatter, json_log_observer


def bind(description: str, listen: bool = True) -> socket.socket:
    """A ``SO_REUSEPORT`` socket for ``tcp:PORT[:interface=ADDRESS][:backlog=N]``.

    Twisted's endpoints do not set ``SO_REUSEPORT``, so the socket is made
    here and adopted; only plain TCP is supported. ``listen=False`` only
    checks that the address can be bound.
    """
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6") or not rest:
        raise ValueError("--workers takes tcp:PORT[:interface=ADDRESS] endpoints only")
    port_text, *options = rest.split(":")
    settings = dict(option.split("=", 1) for option in options if "=" in option)
    interface = settings.get("interface", "::" if kind == "tcp6" else "")
    family = socket.AF_INET6 if ":" in interface or kind == "tcp6" else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((interface, int(port_text)))
    if listen:
        listener.listen(int(settings.get("backlog", 511)))
        listener.setblocking(False)
    return listener


class _Worker(protocol.ProcessProtocol):
    def __init__(self, pool: WorkerPool, index: int):
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)
        self.pool.worker_ended(self, reason.value.exitCode)


class WorkerPool(service.Service):
    """The parent process of ``--workers N``: binds, starts and supervises the workers."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        ports: list[str],
        admin_ports: list[str],
        count: int,
        reactor=None,
        json_logs: bool = False,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.count = count
        self.json_logs = json_logs
        self.listens = [("public" if admin_ports else "all", port) for port in ports]
        self.listens += [("admin", port) for port in admin_ports]
        # Bound (not listening: a socket nobody accepts on would get its share
        # of the connections) and closed, to stop a wrong port at once.
        for _, description in self.listens:
            try:
                bind(description, listen=False).close()
            except (ValueError, OSError) as error:
                raise SystemExit(f"notifications: --workers {description!r}: {error}") from None
        self.workers: dict[int, _Worker] = {}
        self._previous_hup = None

    def startService(self) -> None:
        super().startService()
        for index in range(self.count):
            self._spawn(index)
        self._previous_hup = signal.signal(signal.SIGHUP, self._forward_hup)

    def _spawn(self, index: int) -> None:
        arguments = [
            sys.executable,
            "-m",
            "notifications.workers",
            "--config",
            str(self.config.path),
            "--index",
            str(index),
        ]
        for surface, description in self.listens:
            arguments += ["--listen", f"{surface}={description}"]
        if self.json_logs:
            arguments.append("--json-logs")
        worker = _Worker(self, index)
        self.workers[index] = worker
        self.reactor.spawnProcess(
            worker, sys.executable, arguments, env=os.environ.copy(), childFDs={0: "w", 1: 1, 2: 2}
        )
        self.log.info("Started worker {index}", index=index)

    def worker_ended(self, worker: _Worker, code) -> None:
        if self.workers.get(worker.index) is not worker:
            return
        del self.workers[worker.index]
        if self.running:
            self.log.error(
                "Worker {index} ended (exit code {code}); starting it again in 1 s",
                index=worker.index,
                code=code,
            )
            self.reactor.callLater(1, self._respawn, worker.index)

    def _respawn(self, index: int) -> None:
        if self.running and index not in self.workers:
            self._spawn(index)

    def _forward_hup(self, number, frame) -> None:
        self.reactor.callFromThread(self._signal_all, "HUP")

    def _signal_all(self, name: str) -> None:
        for worker in list(self.workers.values()):
            try:
                worker.transport.signalProcess(name)
            except OSError:  # already gone; processEnded will follow
                self.log.debug("Worker {index} already ended", index=worker.index)

    @defer.inlineCallbacks
    def stopService(self):
        """SIGTERM to every worker; each drains its outbox, then the sockets close."""
        super().stopService()
        if self._previous_hup is not None:
            signal.signal(signal.SIGHUP, self._previous_hup)
        workers = list(self.workers.values())
        self._signal_all("TERM")
        ended = defer.DeferredList([worker.ended for worker in workers])
        limit = self.config.drain_timeout + 15
        try:
            yield ended.addTimeout(limit, self.reactor)
        except defer.TimeoutError:
            self.log.error("Workers still running after {limit} s: killing them", limit=limit)
            self._signal_all("KILL")


def worker_main(argv: list[str] | None = None) -> int:
    """Run one worker: a whole daemon on its own SO_REUSEPORT sockets."""
    parser = argparse.ArgumentParser(prog="notifications.workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--listen", action="append", default=[])
    parser.add_argument("--json-logs", action="store_true")
    arguments = parser.parse_args(argv)

    from twisted.internet import reactor

    from .tap import freeze_startup_objects, make_daemon

    if arguments.json_logs:
        observer = json_log_observer()
    else:
        observer = FileLogObserver(sys.stdout, classic_formatter(f"[worker {arguments.index}] "))
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    try:
        config = load_config(Path(arguments.config))
    except ConfigError as error:
        sys.stderr.write(f"notifications: configuration error: {error}\n")
        return 2
    config = replace(
        config, storage_directory=config.storage_directory / f"worker-{arguments.index}"
    )
    top, app = make_daemon(config, reactor)
    ports = []
    for listen in arguments.listen:
        surface, description = listen.split("=", 1)
        with bind(description) as listener:
            # adoptStreamPort takes a copy of the descriptor.
            site = app.site(surface)
            ports.append(reactor.adoptStreamPort(listener.fileno(), listener.family, site))

    def stop() -> defer.Deferred:
        for port in ports:
            port.stopListening()
        return top.stopService()

    top.startService()
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    reactor.callWhenRunning(freeze_startup_objects)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
