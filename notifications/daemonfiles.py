"""What a running daemon leaves in its storage directory for the commands.

- ``notifications.pid``: the process id of the daemon that answers signals
  (with ``--workers``, the supervising parent), held locked while it runs
  (:mod:`notifications.lockfile`): the commands find the daemon running on a
  configuration whatever twistd's own ``--pidfile`` says, and a file left
  by a killed daemon is recognised as stale.
- ``reload.json``: the outcome of the last reload (SIGHUP): ``{"pid",
  "time", "ok", "error", "services"}``, written once every process has
  applied (or refused) the new configuration, so that a command that sent
  SIGHUP can wait for it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import threads
from twisted.logger import Logger

from .files import replace_file
from .lockfile import HeldElsewhere, HeldFile, holder

PID_NAME = "notifications.pid"
RELOAD_NAME = "reload.json"


def running_pid(storage: Path) -> int | None:
    """The process id of the daemon running on this storage directory, or None."""
    return holder(Path(storage) / PID_NAME)


def read_reload(storage: Path) -> dict[str, Any] | None:
    """The outcome of the last reload, or None when none was recorded (or it is unreadable)."""
    try:
        value = json.loads((Path(storage) / RELOAD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


class DaemonFiles(service.Service):
    """Holds the pid file while the daemon runs; records the outcome of reloads."""

    log = Logger()

    def __init__(self, storage: Path, reactor):
        self.storage = Path(storage)
        self.reactor = reactor
        self._pid = HeldFile(self.storage / PID_NAME)

    def check(self) -> None:
        """Stop the start (before twistd forks) when another daemon runs on this storage."""
        pid = running_pid(self.storage)
        if pid is not None:
            raise SystemExit(
                f"notifications: another daemon (process {pid or '?'}) runs on the "
                f"storage directory {self.storage}"
            )

    def startService(self) -> None:
        try:
            self._pid.acquire()
        except HeldElsewhere as held:
            raise RuntimeError(
                f"another daemon (process {held.pid or '?'}) runs on the storage "
                f"directory {self.storage}"
            ) from None
        super().startService()

    def stopService(self):
        super().stopService()
        self._pid.release()

    def reloaded(self, ok: bool, error: str | None = None, services: int | None = None):
        """Record the outcome of a reload (in a thread: it syncs a file); a Deferred."""
        record = {
            "pid": os.getpid(),
            "time": time.time(),
            "ok": ok,
            "error": error,
            "services": services,
        }
        data = json.dumps(record).encode()
        d = threads.deferToThreadPool(
            self.reactor,
            self.reactor.getThreadPool(),
            replace_file,
            self.storage / RELOAD_NAME,
            data,
        )
        d.addErrback(lambda failure: self.log.failure("Could not record the reload", failure))
        return d
