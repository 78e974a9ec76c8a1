"""The credentials file: its entries as the daemon reads them (reference §7.2),
and its edition in place by ``notifications door`` (reference §8.9).

Each entry is a :class:`Service`: a (gate, door), its secret or instance, and
the previous secret of a rotation. A secret may be given in the file, by an
environment variable or by a file of its own (:func:`resolve_secret`, which the
configuration file uses too).

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
import math
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .analyzers import read_json
from .errors import ConfigError
from .files import replace_file, sync_folder
from .gates import gate_class

#: The longest door name, in UTF-8 bytes (it is a URL segment and a routing-key word).
DOOR_MAX_BYTES = 100

#: What a door name may not hold: what would end or escape a URL path segment
#: (``/ \\ ? # %``), what topic routing keys read as syntax (``. * #``), and
#: spaces and control characters (Unicode categories Z* and C*).
_DOOR_FORBIDDEN = re.compile(r"[/\\?#%.*\s\x00-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\ufeff]")

#: How long an edit waits for another one to release the file.
LOCK_TIMEOUT = 10.0


#: A secret being rotated keeps its previous value, accepted until its expiry
#: (reference §7.8): ``previous_<key>`` (or ``previous_<key>_file``) and
#: ``previous_<key>_expires``.
def _previous_keys(key: str) -> frozenset[str]:
    return frozenset({f"previous_{key}", f"previous_{key}_file", f"previous_{key}_expires"})


#: The keys of any credentials entry; a gate may allow more (its ``credential_keys``).
_SERVICE_KEYS = {
    "gate",
    "door",
    "instance",
    "secret",
    "secret_env",
    "secret_file",
    *_previous_keys("secret"),
}


def resolve_secret(
    values: Mapping[str, Any],
    name: str,
    where: str,
    path: Path,
    environ: Mapping[str, str],
) -> str | None:
    """A secret given as ``name``, ``name_env`` (a variable) or ``name_file`` (a file).

    So that a secret manager (Vault agent templates, systemd credentials,
    container secrets) can supply it instead of the configuration file. A
    missing variable or an unreadable file is a configuration error; a file
    path is relative to the folder of the file that names it.
    """
    given = [key for key in (name, f"{name}_env", f"{name}_file") if values.get(key) is not None]
    if len(given) > 1:
        raise ConfigError(path, f"{where}: give only one of {', '.join(given)}")
    if not given:
        return None
    key = given[0]
    value = values[key]
    if not isinstance(value, str):
        raise ConfigError(path, f"{where}: {key} must be a string")
    if key == name:
        return value
    if key.endswith("_env"):
        if value not in environ:
            raise ConfigError(path, f"{where}: environment variable {value} is not set")
        return environ[value]
    file = Path(value) if os.path.isabs(value) else path.parent / value
    try:
        return file.read_text(encoding="utf-8").rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise ConfigError(path, f"{where}: cannot read the secret file {file}: {reason}") from None


@dataclass(frozen=True)
class Service:
    """One entry of the credentials file: a (gate, door) and its secret or instance.

    A secret being rotated (``notifications door rotate``) has a previous
    value, still accepted until its expiry (Unix time): calls are checked
    against :meth:`secrets` or :meth:`hmac_keys` at the time of the call, so
    that the previous value stops working on time without a reload.
    """

    gate: str
    door: str
    instance: str | None = None
    secret: str | None = field(default=None, repr=False)
    #: Phabricator only: the HMAC key that signs the door's Herald webhooks.
    hmac_key: str | None = field(default=None, repr=False)
    previous_secret: str | None = field(default=None, repr=False)
    previous_secret_expires: float | None = None
    previous_hmac_key: str | None = field(default=None, repr=False)
    previous_hmac_key_expires: float | None = None

    def secrets(self, now: float) -> tuple[str, ...]:
        """The secrets a call may carry at ``now``: the current one, and the
        previous one before its expiry."""
        return _accepted(self.secret, self.previous_secret, self.previous_secret_expires, now)

    def hmac_keys(self, now: float) -> tuple[str, ...]:
        """The Herald HMAC keys a call may be signed with at ``now`` (as :meth:`secrets`)."""
        return _accepted(self.hmac_key, self.previous_hmac_key, self.previous_hmac_key_expires, now)

    def previous(self) -> Iterator[tuple[str, float]]:
        """``(key name, expiry)`` of each previous value this entry keeps."""
        if self.previous_secret and self.previous_secret_expires is not None:
            yield "secret", self.previous_secret_expires
        if self.previous_hmac_key and self.previous_hmac_key_expires is not None:
            yield "hmac_key", self.previous_hmac_key_expires


def _accepted(
    current: str | None, previous: str | None, expires: float | None, now: float
) -> tuple[str, ...]:
    if not current:
        # A door without a secret is open (or closed) as such: a previous
        # secret alone does not make it a signed door.
        return ()
    if previous and expires is not None and now < expires:
        return (current, previous)
    return (current,)


def parse_expiry(text: str) -> float:
    """An ISO 8601 time with its time zone (``2026-12-08T10:00:00Z``) as Unix time.

    Raises ValueError when it is not one.
    """
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError("no time zone (end it with Z for UTC)")
    return moment.timestamp()


def format_expiry(seconds: float) -> str:
    """Unix time as the credentials file writes an expiry: ``2026-12-08T10:00:00Z``,
    rounded up to the second (a grace period is never shorter than asked)."""
    return datetime.fromtimestamp(math.ceil(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe_previous_secrets(services: tuple[Service, ...], now: float) -> list[str]:
    """One phrase per previous secret: accepted until when, or expired (for the logs)."""
    phrases = []
    for service in services:
        for key, expires in service.previous():
            state = "accepted until" if now < expires else "expired at"
            phrases.append(
                f"{service.gate}/{service.door} previous {key} {state} {format_expiry(expires)}"
            )
    return phrases


def load_services(path: Path, environ: Mapping[str, str] = os.environ) -> tuple[Service, ...]:
    """Read the older system's credentials file, naming any entry that is wrong."""
    return parse_services(read_json(path), path, environ)


def parse_services(
    data: Any, path: Path, environ: Mapping[str, str] = os.environ
) -> tuple[Service, ...]:
    """Check the parsed credentials file ``data`` (read from ``path``), naming any entry
    that is wrong; its services."""
    if not isinstance(data, dict) or not isinstance(data.get("services"), list):
        raise ConfigError(path, 'expected an object with a "services" list')
    unknown = sorted(set(data) - {"services"})
    if unknown:
        raise ConfigError(path, f"unknown key {unknown[0]!r}")
    services: list[Service] = []
    seen: set[tuple[str, str]] = set()
    for index, entry in enumerate(data["services"]):
        where = f"services[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(path, f"{where} must be an object")
        if isinstance(entry.get("gate"), str) and isinstance(entry.get("door"), str):
            where += f" ({entry['gate']}/{entry['door']})"
        gate = gate_class(entry.get("gate"))
        keys = _SERVICE_KEYS | (gate.credential_keys if gate is not None else set())
        unknown = sorted(set(entry) - keys)
        if unknown:
            # The keys of a rotation are named only for a key that looks like one.
            rotating = unknown[0].startswith("prev")
            expected = sorted(key for key in keys if rotating or not key.startswith("previous_"))
            raise ConfigError(
                path, f"{where}: unknown key {unknown[0]!r} (expected {', '.join(expected)})"
            )
        for key in ("gate", "door"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(path, f"{where}: {key} must be a non-empty string")
        if entry.get("instance") is not None and not isinstance(entry["instance"], str):
            raise ConfigError(path, f"{where}: instance must be a string")
        secret = resolve_secret(entry, "secret", where, path, environ)
        hmac_key = resolve_secret(entry, "hmac_key", where, path, environ)
        previous_secret, previous_secret_expires = _previous(entry, "secret", where, path)
        previous_hmac_key, previous_hmac_key_expires = _previous(entry, "hmac_key", where, path)
        if gate is None:
            raise ConfigError(path, f"{where}: unknown gate {entry['gate']!r}")
        if gate.needs_instance and not entry.get("instance"):
            raise ConfigError(path, f"{where}: a {gate.name} service needs an instance URL")
        key = (entry["gate"], entry["door"])
        if key in seen:
            raise ConfigError(path, f"{where}: this gate and door are already declared")
        seen.add(key)
        services.append(
            Service(
                gate=entry["gate"],
                door=entry["door"],
                instance=entry.get("instance") or None,
                secret=secret or None,
                hmac_key=hmac_key or None,
                previous_secret=previous_secret,
                previous_secret_expires=previous_secret_expires,
                previous_hmac_key=previous_hmac_key,
                previous_hmac_key_expires=previous_hmac_key_expires,
            )
        )
    return tuple(services)


def _previous(
    entry: Mapping[str, Any], key: str, where: str, path: Path
) -> tuple[str | None, float | None]:
    """The previous value of a secret being rotated and its expiry, both or neither."""
    value = resolve_secret(entry, f"previous_{key}", where, path, {})
    expires = entry.get(f"previous_{key}_expires")
    if value is None and expires is None:
        return None, None
    if value is None:
        raise ConfigError(
            path, f"{where}: previous_{key}_expires without previous_{key} (or previous_{key}_file)"
        )
    if expires is None:
        raise ConfigError(path, f"{where}: previous_{key} needs previous_{key}_expires")
    try:
        if not isinstance(expires, str):
            raise ValueError("not a string")
        seconds = parse_expiry(expires)
    except ValueError as error:
        raise ConfigError(
            path,
            f"{where}: previous_{key}_expires must be a time such as 2026-12-08T10:00:00Z "
            f"({error})",
        ) from None
    return value or None, seconds


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
