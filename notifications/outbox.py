"""The outbox: notifications made durable on local disk before a gate answers.

SQLite in WAL mode, in the storage directory. Every database operation runs
on one dedicated thread, so a slow disk never stalls the reactor, and
operations that arrive while a transaction is being committed are grouped
into the next transaction (group commit): under load, many gate calls share
one fsync instead of paying one each, and their rows are written with one
statement per table. When one operation of a group fails, the group is
replayed with one savepoint per operation, so that it does not undo the
others.

The GitHub delivery ids seen recently are kept in a second database,
``deliveries.sqlite3``, which every worker of ``--workers`` shares, so that a
redelivery is recognised (and not published twice) across restarts and
across the workers. Several processes write it safely because each group's
check and record happen under SQLite's write lock of that database (``BEGIN
IMMEDIATE``), held from the check until the group's notifications are
committed to the outbox: a second worker given the same delivery waits for
the lock, then sees it. The outbox is committed first, so that a crash
between the two commits can only forget a delivery id (a redelivery is then
published again, with the same message id), never remember one whose
notification was not stored. The deliveries database is written with
``synchronous = NORMAL``: losing its last commits to a power loss has the
same harmless effect.

Nothing is opened when an :class:`Outbox` is made: :meth:`Outbox.open`
(``startService``) takes the directory's lock, opens the databases and
starts the thread, after twistd has forked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from .lockfile import HeldElsewhere, HeldFile, holder

#: ``synchronous`` settings of SQLite in WAL mode: FULL syncs the log at
#: every commit (a committed notification survives a power loss); NORMAL
#: syncs only at checkpoints (it survives a crash of the process, not of the
#: machine) and is faster.
SYNCHRONOUS = {"full": "FULL", "normal": "NORMAL"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL,
    routing_key TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL
);
"""

_DELIVERIES_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_seen ON deliveries (seen);
"""

#: Seconds a worker waits for another worker's hold on the deliveries database.
DELIVERIES_BUSY_TIMEOUT = 10.0

#: Seconds delivery ids remembered in memory wait to be written together (alone).
WRITE_BEHIND = 0.2

#: The deliveries database's file name (in the storage directory).
DELIVERIES_NAME = "deliveries.sqlite3"

#: The file an outbox's holder keeps locked (see :mod:`notifications.lockfile`).
LOCK_NAME = "outbox.lock"


class OutboxError(Exception):
    """A notification could not be made durable."""


class OutboxFull(OutboxError):
    """The outbox holds as many notifications as it is allowed to."""


class OutboxUnavailable(OutboxError):
    """The storage failed (disk full, read-only, I/O error…)."""


class OutboxHeld(OutboxUnavailable):
    """Another living process holds this outbox (a daemon, a drain)."""

    def __init__(self, directory: Path, pid: int | None):
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"the outbox in {directory} is held by {holder}")
        self.pid = pid


@dataclass(frozen=True, slots=True)
class Entry:
    """One notification waiting for the broker's confirm."""

    id: int
    message_id: str
    routing_key: str
    body: bytes
    created: float


#: What a gate asks to store: (message_id, routing_key, body).
NewEntry = tuple[str, str, bytes]


class Duplicate(Exception):
    """The delivery id was seen within the deduplication window."""


#: Rows per multi-row statement: far below SQLite's limit of host parameters
#: (32,766 since 3.32), and a group rarely holds more calls than this anyway.
_CHUNK = 500


def _chunks(values: Sequence, size: int = _CHUNK):
    for start in range(0, len(values), size):
        yield values[start : start + size]


class _Add:
    """Store entries (and a delivery id): the operation behind :meth:`Outbox.add`.

    The batcher writes the adds of a group with one multi-row statement per
    table (see :meth:`_Batcher._write_adds`); :meth:`run` does the same for
    one add alone, inside its own savepoint, when a group has to be replayed
    operation by operation. Whether its delivery id is a duplicate was
    decided before (:meth:`_Batcher._check_deliveries`).
    """

    __slots__ = ("delivery", "entries", "now", "window")

    def __init__(self, entries: Sequence[NewEntry], delivery: str | None, now: float, window):
        self.entries = entries
        self.delivery = delivery
        self.now = now
        self.window = window

    def run(self, cursor: sqlite3.Cursor, batcher: _Batcher) -> list[Entry]:
        return batcher._write_adds(cursor, [self])[0]


class _CheckDelivery:
    """Whether a delivery id was seen within the window: the operation behind
    :meth:`Outbox.check_delivery`. It reads the deliveries database only."""

    __slots__ = ("delivery", "now", "window")

    def __init__(self, delivery: str, now: float, window: float):
        self.delivery = delivery
        self.now = now
        self.window = window


class _RecordDelivery:
    """Remember delivery ids: the operation behind :meth:`Outbox.record_delivery`."""

    __slots__ = ("rows",)

    def __init__(self, rows: Sequence[tuple[str, float]]):
        #: ``(delivery, seen)`` each.
        self.rows = rows


#: Operations on the deliveries database alone.
_DELIVERY_ONLY = (_CheckDelivery, _RecordDelivery)


class _Remove:
    """Delete confirmed entries: the operation behind :meth:`Outbox.remove`."""

    __slots__ = ("ids",)

    def __init__(self, ids: Sequence[int]):
        self.ids = ids

    def run(self, cursor: sqlite3.Cursor, batcher: _Batcher) -> int:
        removed = 0
        for chunk in _chunks(self.ids):
            marks = ",".join("?" * len(chunk))
            cursor.execute(f"DELETE FROM outbox WHERE id IN ({marks})", chunk)  # noqa: S608
            removed += cursor.rowcount
        return removed


def open_database(path: Path, synchronous: str, timeout: float = 5.0) -> sqlite3.Connection:
    """A SQLite connection in WAL mode, statements in autocommit unless a BEGIN says otherwise."""
    connection = sqlite3.connect(
        path, isolation_level=None, check_same_thread=False, timeout=timeout
    )
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute(f"PRAGMA synchronous={SYNCHRONOUS[synchronous]}")
    return connection


class _Deliveries:
    """The delivery ids seen recently, in a database the workers share (see the module)."""

    log = Logger()

    def __init__(self, connection: sqlite3.Connection):
        self.connection = connection
        self._warned = False

    @classmethod
    def open(cls, path: Path) -> _Deliveries:
        connection = open_database(path, "normal", timeout=DELIVERIES_BUSY_TIMEOUT)
        connection.executescript(_DELIVERIES_SCHEMA)
        return cls(connection)

    def hold(self, deliveries: Sequence[str], lock: bool = True) -> dict[str, float] | None:
        """Take the write lock (unless ``lock`` is false: then only read) and read
        when each delivery was seen.

        None when the database cannot be used now (locked for too long, an
        I/O error): the calls are then stored without deduplication, since a
        redelivery published twice is better than a delivery refused.
        """
        try:
            if lock:
                self.connection.execute("BEGIN IMMEDIATE")
            seen: dict[str, float] = {}
            for chunk in _chunks(deliveries):
                marks = ",".join("?" * len(chunk))
                seen.update(
                    self.connection.execute(
                        f"SELECT delivery, seen FROM deliveries WHERE delivery IN ({marks})",  # noqa: S608
                        chunk,
                    ).fetchall()
                )
        except sqlite3.Error as error:
            self.release()
            self._warn("could not read", error)
            return None
        return seen

    def record(self, rows: Sequence[tuple[str, float]]) -> None:
        """Write the deliveries whose notifications were stored, and let go of the lock
        (without it, each statement is its own transaction)."""
        try:
            for chunk in _chunks(rows):
                self.connection.execute(
                    "INSERT OR REPLACE INTO deliveries (delivery, seen) VALUES "  # noqa: S608
                    + ",".join(["(?,?)"] * len(chunk)),
                    [value for row in chunk for value in row],
                )
            if self.connection.in_transaction:
                self.connection.execute("COMMIT")
        except sqlite3.Error as error:
            self.release()
            self._warn("could not record", error)

    def release(self) -> None:
        """Let go of the lock without recording anything."""
        if self.connection.in_transaction:
            self.connection.rollback()

    def forget(self, horizon: float) -> int:
        cursor = self.connection.execute("DELETE FROM deliveries WHERE seen <= ?", (horizon,))
        return cursor.rowcount

    def _warn(self, what: str, error: sqlite3.Error) -> None:
        # Once per failure streak: a broken disk would otherwise log every call.
        if not self._warned:
            self._warned = True
            self.log.warn(
                "The deliveries database {what}: {error}; GitHub deliveries are stored "
                "without deduplication until it works again",
                what=what,
                error=str(error),
            )

    def close(self) -> None:
        self.connection.close()


class _DeliveryIndex:
    """The recent delivery ids of the one process that writes the deliveries database.

    In memory, oldest first, at most ``size``. When more had to be kept, the
    index no longer knows every id of the window: until the ids it let go of
    are past the window, a miss is asked of the database.
    """

    __slots__ = ("_dropped_until", "_seen", "_size")

    def __init__(self, size: int):
        self._seen: dict[str, float] = {}
        self._size = size
        #: When the newest id let go of was seen (None: none let go of).
        self._dropped_until: float | None = None

    def load(self, deliveries: _Deliveries, horizon: float) -> None:
        rows = deliveries.connection.execute(
            "SELECT delivery, seen FROM deliveries WHERE seen > ? ORDER BY seen DESC LIMIT ?",
            (horizon, self._size + 1),
        ).fetchall()
        if len(rows) > self._size:
            self._dropped_until = rows[-1][1]
            rows = rows[:-1]
        self._seen = dict(reversed(rows))

    def seen(self, delivery: str) -> float | None:
        return self._seen.get(delivery)

    def complete(self, horizon: float) -> bool:
        """Whether every id seen after ``horizon`` is here."""
        return self._dropped_until is None or self._dropped_until <= horizon

    def add(self, delivery: str, now: float) -> None:
        self._seen.pop(delivery, None)
        self._seen[delivery] = now
        while len(self._seen) > self._size:
            oldest = next(iter(self._seen))
            self._dropped_until = max(self._dropped_until or 0.0, self._seen.pop(oldest))

    def forget(self, horizon: float) -> None:
        while self._seen:
            oldest = next(iter(self._seen))
            if self._seen[oldest] > horizon:
                break
            del self._seen[oldest]


class _Batcher:
    """Runs database operations on one thread, grouped into transactions.

    Why the statements are few: the sqlite3 module lets go of the GIL for
    each statement it runs and must take it back afterwards, from a reactor
    thread that holds it most of the time under load. So the adds of a group
    are written with one multi-row ``INSERT``, a removal is one ``DELETE …
    IN``, whatever their number, and savepoints are only used when a group
    has to be replayed because one of its operations failed.
    """

    log = Logger()

    def __init__(
        self,
        connection: sqlite3.Connection,
        deliveries: _Deliveries,
        reactor,
        next_id: int,
        threaded=True,
    ):
        self.connection = connection
        self.deliveries = deliveries
        self.reactor = reactor
        #: The id the next stored entry gets: ids are given here (one writer)
        #: so that a multi-row INSERT knows them without reading them back.
        self.next_id = next_id
        self.pool: ThreadPool | None = None
        if threaded:
            self.pool = ThreadPool(minthreads=1, maxthreads=1, name="outbox")
            self.pool.start()
        self._waiting: list[tuple[Any, defer.Deferred]] = []
        self._running = False
        self.batches = 0

    def run(self, operation) -> defer.Deferred:
        """Run an operation in the next transaction; fires with its result.

        An operation is an :class:`_Add`, a :class:`_Remove`, or any callable
        taking the cursor.
        """
        d = defer.Deferred()
        self._waiting.append((operation, d))
        if not self._running:
            self._next()
        return d

    def _next(self) -> None:
        if not self._waiting:
            self._running = False
            return
        self._running = True
        group, self._waiting = self._waiting, []
        operations = [operation for operation, _ in group]
        if self.pool is None:
            d = defer.maybeDeferred(self._transaction, operations)
        else:
            d = deferToThreadPool(self.reactor, self.pool, self._transaction, operations)
        d.addBoth(self._done, group)

    def _transaction(self, operations: Sequence) -> list[tuple[bool, Any]]:
        # On the database thread. Duplicates are found first (holding the
        # deliveries database), then the rest is written: the whole group in
        # one go; if any statement fails, the group is rolled back and
        # replayed with one savepoint per operation, so that only the failing
        # ones fail. Some errors (SQLITE_FULL, I/O errors) make SQLite roll
        # back the whole transaction even then: that operation is set aside
        # and the replay starts again with the others.
        failed = self._check_deliveries(operations)
        try:
            if all(isinstance(operation, _DELIVERY_ONLY) for operation in operations):
                # Nothing for the outbox: no transaction of it at all.
                results = [
                    (False, failed[index]) if index in failed else (True, None)
                    for index in range(len(operations))
                ]
            else:
                results = self._write(operations, failed)
        except BaseException:
            self.deliveries.release()
            raise
        self._record_deliveries(operations, results)
        self.batches += 1
        return results

    def _write(self, operations: Sequence, failed: dict[int, Exception]) -> list[tuple[bool, Any]]:
        first_id = self.next_id
        try:
            return self._attempt_whole(operations, failed)
        except Exception:
            self.next_id = first_id
        failed = dict(failed)
        while True:
            results = self._attempt(operations, failed)
            if results is not None:
                return results
            self.next_id = first_id

    def _check_deliveries(self, operations: Sequence) -> dict[int, Exception]:
        """The adds and checks whose delivery id was seen within the window:
        ``{index: Duplicate}``.

        Leaves the deliveries database held (its write lock taken) when an add
        has a delivery id: its check and its record must be one transaction.
        Checks alone only read, and records alone are one statement each
        (``_record_deliveries``): no lock is held for them.
        """
        concerned = [
            (index, operation)
            for index, operation in enumerate(operations)
            if isinstance(operation, _Add | _CheckDelivery) and operation.delivery is not None
        ]
        if not concerned:
            return {}
        lock = any(isinstance(operation, _Add) for _, operation in concerned)
        ids = list({operation.delivery for _, operation in concerned})
        seen = self.deliveries.hold(ids, lock=lock)
        if seen is None:
            return {}
        duplicates: dict[int, Exception] = {}
        for index, operation in concerned:
            last = seen.get(operation.delivery)
            if last is not None and last > operation.now - operation.window:
                duplicates[index] = Duplicate(operation.delivery)
            elif isinstance(operation, _Add):
                # A second add of the same group with this id is a duplicate.
                # (Not after a check: the checked call may yet fail to store
                # its notification, and the second one must not be lost then.)
                seen[operation.delivery] = operation.now
        return duplicates

    def _record_deliveries(self, operations: Sequence, results: list[tuple[bool, Any]]) -> None:
        rows: list[tuple[str, float]] = []
        for operation, (ok, _) in zip(operations, results, strict=True):
            if not ok:
                continue
            if isinstance(operation, _Add) and operation.delivery is not None:
                rows.append((operation.delivery, operation.now))
            elif isinstance(operation, _RecordDelivery):
                rows.extend(operation.rows)
        if rows or self.deliveries.connection.in_transaction:
            self.deliveries.record(rows)

    @contextmanager
    def _transaction_cursor(self):
        """A cursor in a ``BEGIN IMMEDIATE`` transaction: committed at the end
        (unless SQLite already rolled it back), rolled back on an error."""
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            yield cursor
            if self.connection.in_transaction:
                cursor.execute("COMMIT")
        except BaseException:
            if self.connection.in_transaction:
                self.connection.rollback()
            raise
        finally:
            cursor.close()

    def _attempt_whole(
        self, operations: Sequence, failed: dict[int, Exception]
    ) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        with self._transaction_cursor() as cursor:
            index = 0
            while index < len(operations):
                operation = operations[index]
                if index in failed:
                    results.append((False, failed[index]))
                    index += 1
                    continue
                if isinstance(operation, _Add):
                    end = index + 1
                    while (
                        end < len(operations)
                        and isinstance(operations[end], _Add)
                        and end not in failed
                    ):
                        end += 1
                    stored = self._write_adds(cursor, operations[index:end])
                    results.extend((True, entries) for entries in stored)
                    index = end
                    continue
                results.append((True, self._run_one(operation, cursor)))
                index += 1
        return results

    def _run_one(self, operation, cursor: sqlite3.Cursor) -> Any:
        if isinstance(operation, _Add | _Remove):
            return operation.run(cursor, self)
        if isinstance(operation, _DELIVERY_ONLY):
            return None  # done in _check_deliveries and _record_deliveries
        return operation(cursor)

    def _write_adds(self, cursor: sqlite3.Cursor, adds: Sequence[_Add]) -> list[list[Entry]]:
        """Write a run of adds with one INSERT; the entries stored for each."""
        stored: list[list[Entry]] = []
        rows: list[tuple] = []
        next_id = self.next_id
        for add in adds:
            entries = []
            for message_id, routing_key, body in add.entries:
                rows.append((next_id, message_id, routing_key, body, add.now))
                entries.append(Entry(next_id, message_id, routing_key, body, add.now))
                next_id += 1
            stored.append(entries)
        for chunk in _chunks(rows):
            cursor.execute(
                "INSERT INTO outbox (id, message_id, routing_key, body, created) VALUES "  # noqa: S608
                + ",".join(["(?,?,?,?,?)"] * len(chunk)),
                [value for row in chunk for value in row],
            )
        self.next_id = next_id
        return stored

    def _attempt(self, operations, failed: dict[int, Exception]):
        results: list[tuple[bool, Any]] = []
        with self._transaction_cursor() as cursor:
            for index, operation in enumerate(operations):
                if index in failed:
                    results.append((False, failed[index]))
                    continue
                cursor.execute("SAVEPOINT operation")
                next_id = self.next_id
                try:
                    results.append((True, self._run_one(operation, cursor)))
                except Exception as error:  # handed to that operation's caller
                    self.next_id = next_id
                    if not self.connection.in_transaction:
                        # SQLite rolled the whole transaction back: replay
                        # the group without this one.
                        failed[index] = error
                        return None
                    cursor.execute("ROLLBACK TO operation")
                    results.append((False, error))
                cursor.execute("RELEASE operation")
        return results

    def _done(self, outcome, group) -> None:
        if isinstance(outcome, list):
            for (ok, value), (_, d) in zip(outcome, group, strict=True):
                if ok:
                    d.callback(value)
                else:
                    d.errback(value)
        else:
            # The transaction itself failed (commit or BEGIN): every operation of it.
            for _, d in group:
                d.errback(outcome.value)
        self._next()

    def close(self) -> defer.Deferred:
        """Finish the queued operations, then stop the thread and close the database."""
        d = defer.Deferred()

        def closed(result):
            if self.pool is not None:
                self.pool.stop()
            self.connection.close()
            self.deliveries.close()
            return result

        if self._running or self._waiting:
            self.run(lambda cursor: None).addBoth(lambda _: d.callback(None))
        else:
            d.callback(None)
        return d.addCallback(closed)


class Outbox(service.Service):
    """Durable storage of the notifications not yet confirmed by the broker.

    Made without touching the disk; :meth:`open` (or ``startService``) takes
    the directory's lock (so that two daemons, or a daemon and ``outbox
    drain``, never share an outbox), opens the databases and starts the
    thread; :meth:`close` (or ``stopService``) undoes it.
    """

    log = Logger()

    def __init__(
        self,
        directory: Path,
        reactor,
        synchronous: str = "full",
        max_messages: int = 100_000,
        max_bytes: int | None = None,
        dedup_window: float = 86_400.0,
        threaded: bool = True,
        deliveries: Path | None = None,
        shared_deliveries: bool = False,
        index_size: int = 50_000,
    ):
        """``deliveries`` is the deliveries database (default: ``deliveries.sqlite3``
        in ``directory``); the workers of ``--workers`` are given the same one, and
        ``shared_deliveries``. Without it, this process is the database's only
        writer and keeps the recent delivery ids in memory as well (at most
        ``index_size``): a check then costs no trip to the database thread."""
        self.reactor = reactor
        self.directory = Path(directory)
        self.synchronous = synchronous
        self.max_messages = max_messages
        self.max_bytes = max_bytes
        self.dedup_window = dedup_window
        self.threaded = threaded
        self.path = self.directory / "outbox.sqlite3"
        self.deliveries_path = Path(deliveries or self.directory / DELIVERIES_NAME)
        self.depth = 0
        self.last_id = 0
        self._reserved = 0
        self._lock = HeldFile(self.directory / LOCK_NAME)
        self._batcher: _Batcher | None = None
        self.shared_deliveries = shared_deliveries
        self._index = _DeliveryIndex(index_size) if not shared_deliveries else None
        #: Delivery ids remembered in memory and not yet written (alone).
        self._behind: list[tuple[str, float]] = []
        self._behind_call = None

    @property
    def opened(self) -> bool:
        return self._batcher is not None

    def check(self) -> None:
        """What :meth:`open` would refuse, found without keeping anything open.

        Raises :class:`OutboxHeld` or :class:`OutboxUnavailable`; for a
        clear error before twistd forks.
        """
        pid = holder(self.directory / LOCK_NAME)
        if pid is not None:
            raise OutboxHeld(self.directory, pid)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            for path in (self.path, self.deliveries_path):
                with closing(sqlite3.connect(path, timeout=DELIVERIES_BUSY_TIMEOUT)) as database:
                    database.execute("PRAGMA schema_version").fetchone()
        except (OSError, sqlite3.Error) as error:
            raise OutboxUnavailable(f"cannot open the outbox {self.path}: {error}") from None

    def open(self) -> None:
        """Take the lock, open the databases, start the thread.

        Raises :class:`OutboxHeld` when another living process holds the
        outbox, :class:`OutboxUnavailable` when it cannot be opened.
        """
        if self._batcher is not None:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock.acquire()
        except HeldElsewhere as held:
            raise OutboxHeld(self.directory, held.pid) from None
        except OSError as error:
            raise OutboxUnavailable(f"cannot open the outbox {self.path}: {error}") from None
        try:
            connection = open_database(self.path, self.synchronous)
            try:
                connection.executescript(_SCHEMA)
                if self.max_bytes is not None:
                    page_size = connection.execute("PRAGMA page_size").fetchone()[0]
                    connection.execute(
                        f"PRAGMA max_page_count={max(16, self.max_bytes // page_size)}"
                    )
                self.depth = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
                self.last_id = connection.execute(
                    "SELECT IFNULL(MAX(id), 0) FROM outbox"
                ).fetchone()[0]
                # AUTOINCREMENT's record of the largest id ever given: ids are never reused.
                sequence = connection.execute(
                    "SELECT IFNULL(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'"
                ).fetchone()[0]
                deliveries = _Deliveries.open(self.deliveries_path)
                _move_old_deliveries(connection, deliveries)
                if self._index is not None:
                    self._index.load(deliveries, self.reactor.seconds() - self.dedup_window)
            except BaseException:
                connection.close()
                raise
        except (OSError, sqlite3.Error) as error:
            self._lock.release()
            raise OutboxUnavailable(f"cannot open the outbox {self.path}: {error}") from None
        self._reserved = 0
        self._batcher = _Batcher(
            connection,
            deliveries,
            self.reactor,
            next_id=max(self.last_id, sequence) + 1,
            threaded=self.threaded,
        )

    def startService(self) -> None:
        self.open()
        super().startService()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return self.close()

    @property
    def batches(self) -> int:
        """How many transactions were committed (for the group-commit figures)."""
        return 0 if self._batcher is None else self._batcher.batches

    def add(self, entries: Sequence[NewEntry], delivery: str | None = None) -> defer.Deferred:
        """Store entries durably; fires with their :class:`Entry` list once committed.

        With a ``delivery`` id seen within the deduplication window, nothing
        is stored and the Deferred fails with :class:`Duplicate`. Fails with
        :class:`OutboxFull` or :class:`OutboxUnavailable` when the entries
        could not be made durable.
        """
        if self.depth + self._reserved + len(entries) > self.max_messages:
            return defer.fail(
                OutboxFull(
                    f"the outbox is full: {self.depth} notifications are waiting for the broker"
                )
            )
        self._reserved += len(entries)
        d = self._batcher.run(_Add(entries, delivery, self.reactor.seconds(), self.dedup_window))

        def stored(result: list[Entry]) -> list[Entry]:
            self._reserved -= len(entries)
            if delivery is not None and self._index is not None:
                self._index.add(delivery, self.reactor.seconds())
            self.depth += len(result)
            if result:
                self.last_id = max(self.last_id, result[-1].id)
            return result

        def failed(failure):
            self._reserved -= len(entries)
            if failure.check(Duplicate):
                return failure
            if failure.check(sqlite3.Error):
                error = failure.value
                if getattr(error, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
                    raise OutboxFull(f"the outbox storage is full: {error}")
                raise OutboxUnavailable(f"could not store the notification: {error}")
            return failure

        return d.addCallbacks(stored, failed)

    def known_delivery(self, delivery: str) -> bool | None:
        """Whether the delivery id was seen within the window, when memory can tell
        (alone, see the constructor); None when the database must be asked
        (:meth:`check_delivery`)."""
        if self._index is None:
            return None
        now = self.reactor.seconds()
        seen = self._index.seen(delivery)
        if seen is not None and seen > now - self.dedup_window:
            return True
        if self._index.complete(now - self.dedup_window):
            return False
        return None

    def check_delivery(self, delivery: str) -> defer.Deferred:
        """Fails with :class:`Duplicate` when the delivery id was seen within the
        window; nothing is written (see :meth:`record_delivery`)."""
        known = self.known_delivery(delivery)
        if known is not None:
            return defer.fail(Duplicate(delivery)) if known else defer.succeed(None)
        return self._batcher.run(
            _CheckDelivery(delivery, self.reactor.seconds(), self.dedup_window)
        )

    def record_delivery(self, delivery: str) -> defer.Deferred | None:
        """Remember a delivery id whose notifications were made durable elsewhere
        (confirmed by the broker): a redelivery is then a duplicate.

        Shared with other workers, it returns a Deferred that fires once written,
        so that a redelivery to another worker after the answer sees it. Alone,
        None: the id is in memory at once, written in the background (lost
        only with the process, when a redelivery is then published again, with
        the same message id).
        """
        now = self.reactor.seconds()
        if self._index is None:
            return self._batcher.run(_RecordDelivery([(delivery, now)]))
        self._index.add(delivery, now)
        # Written together every WRITE_BEHIND seconds: one statement, one
        # trip to the database thread for all the calls of that time.
        self._behind.append((delivery, now))
        if self._behind_call is None:
            self._behind_call = self.reactor.callLater(WRITE_BEHIND, self._write_behind)
        return None

    def _write_behind(self) -> None:
        self._behind_call = None
        rows, self._behind = self._behind, []
        if rows:
            self._batcher.run(_RecordDelivery(rows)).addErrback(
                lambda failure: self.log.failure(
                    "Could not remember {count} delivery ids", failure, count=len(rows)
                )
            )

    def remove(self, ids: Sequence[int]) -> defer.Deferred:
        """Forget entries the broker has confirmed."""

        def removed(count: int) -> int:
            self.depth = max(0, self.depth - count)
            return count

        return self._batcher.run(_Remove(list(ids))).addCallback(removed)

    def load(self, after_id: int, limit: int) -> defer.Deferred:
        """The next entries in order, with an id above ``after_id``."""

        def select(cursor: sqlite3.Cursor) -> list[Entry]:
            rows = cursor.execute(
                "SELECT id, message_id, routing_key, body, created FROM outbox "
                "WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
            return [Entry(row[0], row[1], row[2], bytes(row[3]), row[4]) for row in rows]

        return self._batcher.run(select)

    def oldest(self) -> defer.Deferred:
        """The creation time of the oldest entry, or None."""

        def select(cursor: sqlite3.Cursor) -> float | None:
            row = cursor.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
            return row[0] if row else None

        return self._batcher.run(select)

    def forget_deliveries(self) -> defer.Deferred:
        """Drop the delivery ids older than the deduplication window."""
        horizon = self.reactor.seconds() - self.dedup_window
        if self._index is not None:
            self._index.forget(horizon)
        deliveries = self._batcher.deliveries
        return self._batcher.run(lambda cursor: deliveries.forget(horizon))

    def close(self) -> defer.Deferred:
        """Finish the queued operations, close the databases, let go of the lock."""
        if self._batcher is not None:
            if self._behind_call is not None and self._behind_call.active():
                self._behind_call.cancel()
            self._write_behind()
        batcher, self._batcher = self._batcher, None
        if batcher is None:
            return defer.succeed(None)

        def closed(result):
            self._lock.release()
            return result

        return batcher.close().addBoth(closed)


def _move_old_deliveries(connection: sqlite3.Connection, deliveries: _Deliveries) -> None:
    """Move the delivery ids an outbox of an earlier version kept in its own database."""
    exists = connection.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'deliveries'"
    ).fetchone()
    if not exists:
        return
    rows = connection.execute("SELECT delivery, seen FROM deliveries").fetchall()
    if deliveries.hold([]) is None:
        return  # left for the next start
    deliveries.record(rows)
    connection.execute("DROP TABLE deliveries")
