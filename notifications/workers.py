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
SIGHUP and records the reload once every worker has reported it, and on stop
sends SIGTERM and waits for every worker to drain. The workers' log events
come to the parent, which writes them where it writes its own.

Deduplication of GitHub deliveries holds across the workers: they share one
deliveries database in the storage directory (see :mod:`notifications.outbox`
for why several writers are safe there).
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
    eventAsJSON,
    eventFromJSON,
    globalLogBeginner,
    globalLogPublisher,
)

from .config import Config, ConfigError, load_config
from .daemon import build_daemon, freeze_startup_objects
from .daemonfiles import DaemonFiles
from .outbox import DELIVERIES_NAME


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


#: The longest line a worker may write before it is cut (a runaway log line
#: must not grow the parent's memory).
MAX_LINE = 1024 * 1024


class _Worker(protocol.ProcessProtocol):
    """One worker process: its log events come through its standard output.

    A worker writes each log event as one line of twisted.logger's JSON; the
    parent publishes it to its own observers (the log file of a daemonized
    twistd, which SIGUSR1 reopens, syslog, or standard output), marked with
    the worker's number. Its standard error (a crash before its logging
    started) is logged line by line.
    """

    log = Logger()

    def __init__(self, pool: WorkerPool, index: int):
        self.pool = pool
        self.index = index
        self.ended: defer.Deferred = defer.Deferred()
        self._buffers = {1: b"", 2: b""}

    def childDataReceived(self, fd: int, data: bytes) -> None:
        buffer = self._buffers.get(fd, b"") + data
        *lines, rest = buffer.split(b"\n")
        if len(rest) > MAX_LINE:
            lines.append(rest)
            rest = b""
        self._buffers[fd] = rest
        for line in lines:
            if fd == 1:
                self._event(line)
            elif line.strip():
                self.log.error(
                    "Worker {index}: {line}", index=self.index, line=line.decode(errors="replace")
                )

    def _event(self, line: bytes) -> None:
        if not line.strip():
            return
        try:
            event = eventFromJSON(line.decode("utf-8", errors="replace"))
        except ValueError:
            self.log.info(
                "Worker {index}: {line}", index=self.index, line=line.decode(errors="replace")
            )
            return
        level = event.get("log_level")
        event["log_system"] = (
            f"worker {self.index} {event.get('log_namespace', '-')}#{getattr(level, 'name', level)}"
        )
        event["worker"] = self.index
        globalLogPublisher(event)
        if "reload_ok" in event:
            self.pool.worker_reloaded(self, event)

    def processEnded(self, reason) -> None:
        for fd, rest in self._buffers.items():
            if rest:
                self.childDataReceived(fd, b"\n")
        self.ended.callback(reason.value.exitCode)
        self.pool.worker_ended(self, reason.value.exitCode)


class WorkerPool(service.Service):
    """The parent process of ``--workers N``: binds, starts and supervises the workers."""

    log = Logger()

    #: Seconds the parent waits for every worker to report a reload.
    reload_timeout = 30.0

    def __init__(
        self,
        config: Config,
        ports: list[str],
        admin_ports: list[str],
        count: int,
        reactor=None,
        files: DaemonFiles | None = None,
    ):
        if reactor is None:
            from twisted.internet import reactor
        self.config = config
        self.reactor = reactor
        self.count = count
        self.files = files
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
        #: The reload being waited for: {worker index: event or None}, and its timer.
        self._reload: dict[int, dict | None] | None = None
        self._reload_timer = None

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
        worker = _Worker(self, index)
        self.workers[index] = worker
        self.reactor.spawnProcess(
            worker,
            sys.executable,
            arguments,
            env=os.environ.copy(),
            childFDs={0: "w", 1: "r", 2: "r"},
        )
        self.log.info("Started worker {index}", index=index)

    def worker_ended(self, worker: _Worker, code) -> None:
        if self.workers.get(worker.index) is not worker:
            return
        del self.workers[worker.index]
        if self._reload is not None and worker.index in self._reload:
            # It will not report: the reload is judged on the others.
            del self._reload[worker.index]
            self._reload_done()
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
        self.reactor.callFromThread(self.reload)

    def reload(self) -> None:
        """SIGHUP: every worker reloads; the outcome is recorded once all have said."""
        self._reload = dict.fromkeys(self.workers)
        if self._reload_timer is not None and self._reload_timer.active():
            self._reload_timer.cancel()
        self._reload_timer = self.reactor.callLater(self.reload_timeout, self._reload_done, True)
        self._signal_all("HUP")

    def worker_reloaded(self, worker: _Worker, event: dict) -> None:
        if self._reload is not None and worker.index in self._reload:
            self._reload[worker.index] = event
            self._reload_done()

    def _reload_done(self, timed_out: bool = False) -> None:
        waiting = self._reload
        if waiting is None or (not timed_out and None in waiting.values()):
            return
        self._reload = None
        if self._reload_timer is not None and self._reload_timer.active():
            self._reload_timer.cancel()
        self._reload_timer = None
        silent = sorted(index for index, event in waiting.items() if event is None)
        refused = [event for event in waiting.values() if event and not event["reload_ok"]]
        if silent:
            error = f"workers {', '.join(map(str, silent))} did not report within the timeout"
        elif refused:
            error = refused[0].get("error") or "refused"
        else:
            error = None
        services = next(
            (event.get("count") for event in waiting.values() if event and event["reload_ok"]),
            None,
        )
        if self.files is not None:
            self.files.reloaded(error is None, error, services)

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
        if self._reload_timer is not None and self._reload_timer.active():
            self._reload_timer.cancel()
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
    """Run one worker: a whole daemon on its own SO_REUSEPORT sockets.

    Its log events go to standard output as JSON lines, for the parent.
    """
    parser = argparse.ArgumentParser(prog="notifications.workers")
    parser.add_argument("--config", required=True)
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--listen", action="append", default=[])
    arguments = parser.parse_args(argv)

    from twisted.internet import reactor

    observer = FileLogObserver(sys.stdout, lambda event: eventAsJSON(event) + "\n")
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)

    def load_worker_config(path: Path) -> Config:
        """The configuration as this worker runs it, at start and at each reload:
        its outbox in a folder of its own under the storage directory."""
        config = load_config(path)
        own = config.storage_directory / f"worker-{arguments.index}"
        return replace(config, storage_directory=own)

    try:
        config = load_worker_config(Path(arguments.config))
    except ConfigError as error:
        sys.stderr.write(f"notifications: configuration error: {error}\n")
        return 2
    root = config.storage_directory.parent
    try:
        daemon = build_daemon(
            config, reactor, deliveries=root / DELIVERIES_NAME, load=load_worker_config
        )
    except SystemExit as error:
        sys.stderr.write(f"{error}\n")
        return 2
    ports = []
    for listen in arguments.listen:
        surface, description = listen.split("=", 1)
        with bind(description) as listener:
            # adoptStreamPort takes a copy of the descriptor.
            site = daemon.app.site(surface)
            ports.append(reactor.adoptStreamPort(listener.fileno(), listener.family, site))

    def stop() -> defer.Deferred:
        for port in ports:
            port.stopListening()
        return daemon.top.stopService()

    def start() -> None:
        try:
            daemon.top.startService()
        except Exception:
            Logger().failure("Worker {index} could not start", index=arguments.index)
            reactor.stop()
            return
        reactor.addSystemEventTrigger("before", "shutdown", stop)
        freeze_startup_objects()

    reactor.callWhenRunning(start)
    reactor.run()
    return 0


if __name__ == "__main__":
    sys.exit(worker_main())
