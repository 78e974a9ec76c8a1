"""The credentials file, edited in place by ``notifications door`` (reference §8.9).

An edit is all or nothing, and refuses rather than guesses:

- the file is locked (``flock``, exclusive) from its reading to its
  replacement, so that two commands never edit it at once;
- a file that does not parse, that the daemon would refuse, or that is
  read-only is left alone, and so is one that someone else changed after
  it was read (an editor that does not lock it): just before the new file
  replaces it, its bytes, inode, size and modification time are compared
  with those read;
- the new content is written to a temporary file beside it, synced, given the
  old file's mode and owner, then renamed over it (and the folder synced): a
  reader sees the old file or the new one, never a part.

The file is written back with one entry per line (``{"services": [`` …
``]}``), the entries in their order, each with its keys and values as they were.

Secret files (``secret_file``) are written the same way, mode 0600.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import parse_services
from .errors import ConfigError
from .files import replace_file, sync_folder

#: The longest door name, in UTF-8 bytes (it is a URL segment and a routing-key word).
DOOR_MAX_BYTES = 100

#: What a door name may not hold: what would end or escape a URL path segment
#: (``/ \\ ? # %``), what topic routing keys read as syntax (``. * #``), and
#: spaces and control characters (Unicode categories Z* and C*).
_DOOR_FORBIDDEN = re.compile(r"[/\\?#%.*\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]")

#: How long an edit waits for another one to release the file.
LOCK_TIMEOUT = 10.0


class CredentialsError(Exception):
    """An edit that was refused, and why (one line); the file is unchanged.

    ``usage`` marks a mistake in the request (a bad name, an unknown gate),
    as opposed to the state of the file.
    """

    def __init__(self, message: str, usage: bool = False):
        super().__init__(message)
        self.usage = usage


def check_door_name(door: str) -> None:
    """Refuse a door name that could not be a URL path segment and a routing-key word."""
    if not door:
        raise CredentialsError("a door name cannot be empty", usage=True)
    if len(door.encode("utf-8", "surrogatepass")) > DOOR_MAX_BYTES:
        raise CredentialsError(
            f"door name {door!r} is over {DOOR_MAX_BYTES} bytes (UTF-8)", usage=True
        )
    found = _DOOR_FORBIDDEN.search(door)
    if found is not None or not door.isprintable():
        character = (
            found.group() if found is not None else next(c for c in door if not c.isprintable())
        )
        raise CredentialsError(
            f"door name {door!r} holds {character!r}: a door name is a URL path segment "
            "and a routing-key word (no / \\ ? # % . *, spaces or control characters)",
            usage=True,
        )


class _EveryVariable(Mapping[str, str]):
    """An environment in which every variable is set: the daemon's secrets may come
    from variables of its own environment, not of the shell that edits its file."""

    def __getitem__(self, name: str) -> str:
        return os.environ.get(name, "set in the daemon's environment")

    def __contains__(self, name: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def check_document(document: Any, path: Path) -> None:
    """Raise a :class:`CredentialsError` when the daemon would refuse this content."""
    try:
        parse_services(document, path, _EveryVariable())
    except ConfigError as error:
        raise CredentialsError(str(error)) from None


def format_credentials(document: dict[str, Any]) -> bytes:
    """The file's text: one entry per line, as the reference shows it."""
    entries = document["services"]
    if not entries:
        return b'{"services": []}\n'
    lines = [
        "    " + json.dumps(entry, ensure_ascii=False) + ("," if index < len(entries) - 1 else "")
        for index, entry in enumerate(entries)
    ]
    return ("\n".join(['{"services": [', *lines, "]}"]) + "\n").encode("utf-8")


@dataclass(frozen=True)
class Snapshot:
    """What a file held when it was read, to tell whether someone changed it since."""

    data: bytes
    inode: int
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int

    @classmethod
    def of(cls, path: Path) -> Snapshot:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            data = file.read()
        return cls(
            data=data,
            inode=info.st_ino,
            size=info.st_size,
            mtime_ns=info.st_mtime_ns,
            mode=stat.S_IMODE(info.st_mode),
            uid=info.st_uid,
            gid=info.st_gid,
        )

    def same_as(self, other: Snapshot) -> bool:
        return (self.data, self.inode, self.size, self.mtime_ns) == (
            other.data,
            other.inode,
            other.size,
            other.mtime_ns,
        )


def write_secret_file(path: Path, secret: str) -> None:
    """A new file holding ``secret`` and a newline, mode 0600; refused if it exists."""
    if path.exists() or path.is_symlink():
        raise CredentialsError(f"{path} exists: give the path of a new file", usage=True)
    if not path.parent.is_dir():
        raise CredentialsError(f"{path.parent} is not a folder", usage=True)
    try:
        replace_file(path, (secret + "\n").encode("utf-8"), 0o600)
    except OSError as error:
        raise CredentialsError(f"cannot write {path}: {error.strerror or error}") from None


def rewrite_secret_file(path: Path, secret: str) -> None:
    """Replace the secret an existing file holds, keeping its mode and owner."""
    try:
        info = path.stat()
        replace_file(
            path,
            (secret + "\n").encode("utf-8"),
            stat.S_IMODE(info.st_mode),
            (info.st_uid, info.st_gid),
        )
    except OSError as error:
        raise CredentialsError(f"cannot write {path}: {error.strerror or error}") from None


class CredentialsFile:
    """One edit of the credentials file: ``with CredentialsFile(path) as file:``,
    change ``file.document``, then ``file.save()``.

    Entering locks the file and reads it; leaving unlocks it. Nothing is
    written but by :meth:`save`.
    """

    def __init__(self, path: Path, lock_timeout: float = LOCK_TIMEOUT):
        self.path = Path(path)
        self.lock_timeout = lock_timeout
        self.snapshot: Snapshot | None = None
        self.document: dict[str, Any] = {}
        self._descriptor: int | None = None

    def __enter__(self) -> CredentialsFile:
        self._lock()
        try:
            self._read()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self._unlock()

    def _lock(self) -> None:
        # A command, not the daemon: waiting here blocks no reactor.
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                descriptor = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError as error:
                raise CredentialsError(
                    f"cannot open {self.path}: {error.strerror or error}"
                ) from None
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(descriptor)
                if time.monotonic() > deadline:
                    raise CredentialsError(
                        f"{self.path} is being edited by another command "
                        f"(locked for over {self.lock_timeout:g} s)"
                    ) from None
                time.sleep(0.1)
                continue
            # The file may have been replaced while we waited: lock the one at the path.
            try:
                current = os.stat(self.path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(descriptor).st_ino:
                self._descriptor = descriptor
                return
            os.close(descriptor)

    def _unlock(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # closing drops the flock
            self._descriptor = None

    def _read(self) -> None:
        self.snapshot = Snapshot.of(self.path)
        if not self.snapshot.mode & stat.S_IWUSR or not os.access(self.path, os.W_OK):
            raise CredentialsError(
                f"{self.path} is read-only (mode {self.snapshot.mode:04o}): make it writable "
                "to edit it with this command"
            )
        if not os.access(self.path.parent, os.W_OK):
            raise CredentialsError(
                f"cannot write in {self.path.parent}: the new file is written beside the old one"
            )
        try:
            document = json.loads(self.snapshot.data.decode("utf-8"))
        except UnicodeDecodeError:
            raise CredentialsError(f"{self.path}: not UTF-8", usage=True) from None
        except ValueError as error:
            raise CredentialsError(f"{self.path}: invalid JSON: {error}", usage=True) from None
        try:
            check_document(document, self.path)
        except CredentialsError as error:
            raise CredentialsError(str(error), usage=True) from None
        self.document = document

    @property
    def entries(self) -> list[dict[str, Any]]:
        return self.document["services"]

    def find(self, gate: str, door: str) -> int | None:
        """The index of the entry of (gate, door), or None."""
        for index, entry in enumerate(self.entries):
            if entry.get("gate") == gate and entry.get("door") == door:
                return index
        return None

    def before_replace(self) -> None:
        """Called once the new file is ready, just before it is compared and renamed.

        Nothing to do; the tests make a concurrent change here.
        """

    def save(self) -> None:
        """Write :attr:`document` in place of the file, or refuse and leave it as it was."""
        if self.snapshot is None:
            raise RuntimeError("CredentialsFile.save() outside of its with block")
        check_document(self.document, self.path)
        data = format_credentials(self.document)
        snapshot = self.snapshot
        descriptor, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(descriptor, "wb") as file:
                os.fchmod(file.fileno(), snapshot.mode)
                if (snapshot.uid, snapshot.gid) != (os.geteuid(), os.getegid()):
                    try:
                        os.fchown(file.fileno(), snapshot.uid, snapshot.gid)
                    except PermissionError:
                        raise CredentialsError(
                            f"cannot give the new {self.path.name} the owner of the old one "
                            f"(uid {snapshot.uid}, gid {snapshot.gid}): run as that user or root"
                        ) from None
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            self.before_replace()
            try:
                now = Snapshot.of(self.path)
            except FileNotFoundError:
                now = None
            if now is None or not snapshot.same_as(now):
                raise CredentialsError(
                    f"{self.path} was changed by someone else while this command edited it: "
                    "nothing written; run the command again"
                )
            os.replace(temporary, self.path)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                message = "no space left on the device"
            else:
                message = error.strerror or str(error)
            raise CredentialsError(f"cannot write {self.path}: {message}") from None
        finally:
            Path(temporary).unlink(missing_ok=True)
        sync_folder(self.path.parent)
        self.snapshot = Snapshot.of(self.path)
