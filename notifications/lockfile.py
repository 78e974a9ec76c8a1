"""Files that say a process holds something: the daemon's pid file, an outbox's lock.

A held file is locked with ``flock`` for as long as its process lives and
holds the process id as text. The kernel drops the lock when the process
ends, however it ends: a file left behind by a killed daemon is recognised
as stale because nobody holds its lock, whatever process has since been
given the same id. (``twisted.python.lockfile`` uses symlinks and pids
instead, which a pid reused by another process fools.)
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


class HeldElsewhere(Exception):
    """Another living process holds the file."""

    def __init__(self, path: Path, pid: int | None):
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"{path} is held by {holder}")
        self.path = path
        self.pid = pid


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None


class HeldFile:
    """A file locked by this process while it runs, holding its process id.

    ``acquire`` raises :class:`HeldElsewhere` when a living process holds it;
    ``release`` unlocks it and removes it (``remove=False`` leaves it).
    """

    def __init__(self, path: Path, remove: bool = True):
        self.path = Path(path)
        self.remove = remove
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, pid: int | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise HeldElsewhere(self.path, _read_pid(self.path)) from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, b"%d\n" % (os.getpid() if pid is None else pid))
        self._fd = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        if self.remove:
            # Removed while still locked, so that no other process can take
            # the lock of a file about to disappear.
            try:
                self.path.unlink()
            except FileNotFoundError:
                pass
        os.close(fd)


def holder(path: Path) -> int | None:
    """The process id of the living process holding ``path``, or None.

    None when the file does not exist or nobody holds its lock (a stale file);
    0 when it is held but its content is not a process id.
    """
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_pid(path) or 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
