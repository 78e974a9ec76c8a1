"""The outbox: notifications made durable on local disk before a gate answers.

SQLite in WAL mode, in the storage directory. Every database operation runs
on one dedicated thread, so a slow disk never stalls the reactor, and
operations that arrive while a transaction is being committed are grouped
into the next transaction (group commit): under load, many gate calls share
one fsync instead of paying one each, and their rows are written with one
statement per table. When one operation of a group fails, the group is
replayed with one savepoint per operation, so that it does not undo the
others.

The same database keeps the GitHub delivery ids seen recently, so that a
redelivery is recognised (and not published twice) across restarts, in the
same transaction that stores the notification.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

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
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_seen ON deliveries (seen);
"""


class OutboxError(Exception):
    """A notification could not be made durable."""


class OutboxFull(OutboxError):
    """The outbox holds as many notifications as it is allowed to."""


class OutboxUnavailable(OutboxError):
    """The storage failed (disk full, read-only, I/O error…)."""


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
    operation by operation.
    """

    __slots__ = ("delivery", "entries", "now", "window")

    def __init__(self, entries: Sequence[NewEntry], delivery: str | None, now: float, window):
        self.entries = entries
        self.delivery = delivery
        self.now = now
        self.window = window

    def run(self, cursor: sqlite3.Cursor, batcher: _Batcher) -> list[Entry]:
        [(ok, value)] = batcher._write_adds(cursor, [self])
        if not ok:
            raise value
        return value


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


class _Batcher:
    """Runs database operations on one thread, grouped into transactions.

    Why the statements are few: the sqlite3 module lets go of the GIL for
    each statement it runs and must take it back afterwards, from a reactor
    thread that holds it most of the time under load. So the adds of a group
    are written with one multi-row ``INSERT`` per table and a removal is one
    ``DELETE … IN``, whatever their number, and savepoints are only used when
    a group has to be replayed because one of its operations failed.
    """

    log = Logger()

    def __init__(self, connection: sqlite3.Connection, reactor, next_id: int, threaded=True):
        self.connection = connection
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
        # On the database thread. First the whole group in one go; if any
        # statement fails, the group is rolled back and replayed with one
        # savepoint per operation, so that only the failing ones fail. Some
        # errors (SQLITE_FULL, I/O errors) make SQLite roll back the whole
        # transaction even then: that operation is set aside and the replay
        # starts again with the others.
        first_id = self.next_id
        try:
            results = self._attempt_whole(operations)
        except Exception:
            self.next_id = first_id
        else:
            self.batches += 1
            return results
        failed: dict[int, Exception] = {}
        while True:
            results = self._attempt(operations, failed)
            if results is not None:
                self.batches += 1
                return results
            self.next_id = first_id

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

    def _attempt_whole(self, operations: Sequence) -> list[tuple[bool, Any]]:
        results: list[tuple[bool, Any]] = []
        with self._transaction_cursor() as cursor:
            index = 0
            while index < len(operations):
                operation = operations[index]
                if isinstance(operation, _Add):
                    end = index + 1
                    while end < len(operations) and isinstance(operations[end], _Add):
                        end += 1
                    results.extend(self._write_adds(cursor, operations[index:end]))
                    index = end
                    continue
                results.append((True, self._run_one(operation, cursor)))
                index += 1
        return results

    def _run_one(self, operation, cursor: sqlite3.Cursor) -> Any:
        if isinstance(operation, _Add | _Remove):
            return operation.run(cursor, self)
        return operation(cursor)

    def _write_adds(self, cursor: sqlite3.Cursor, adds: Sequence[_Add]) -> list[tuple[bool, Any]]:
        """Write a run of adds: one dedup query, then one INSERT per table."""
        deliveries = list({add.delivery for add in adds if add.delivery is not None})
        seen: dict[str, float] = {}
        for chunk in _chunks(deliveries):
            marks = ",".join("?" * len(chunk))
            seen.update(
                cursor.execute(
                    f"SELECT delivery, seen FROM deliveries WHERE delivery IN ({marks})",  # noqa: S608
                    chunk,
                ).fetchall()
            )
        results: list[tuple[bool, Any]] = []
        delivery_rows: list[tuple[str, float]] = []
        outbox_rows: list[tuple] = []
        next_id = self.next_id
        for add in adds:
            if add.delivery is not None:
                last = seen.get(add.delivery)
                if last is not None and last > add.now - add.window:
                    results.append((False, Duplicate(add.delivery)))
                    continue
                # A second call of the same group with this id is a duplicate.
                seen[add.delivery] = add.now
                delivery_rows.append((add.delivery, add.now))
            stored = []
            for message_id, routing_key, body in add.entries:
                outbox_rows.append((next_id, message_id, routing_key, body, add.now))
                stored.append(Entry(next_id, message_id, routing_key, body, add.now))
                next_id += 1
            results.append((True, stored))
        for chunk in _chunks(delivery_rows):
            cursor.execute(
                "INSERT OR REPLACE INTO deliveries (delivery, seen) VALUES "  # noqa: S608
                + ",".join(["(?,?)"] * len(chunk)),
                [value for row in chunk for value in row],
            )
        for chunk in _chunks(outbox_rows):
            cursor.execute(
                "INSERT INTO outbox (id, message_id, routing_key, body, created) VALUES "  # noqa: S608
                + ",".join(["(?,?,?,?,?)"] * len(chunk)),
                [value for row in chunk for value in row],
            )
        self.next_id = next_id
        return results

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
            return result

        if self._running or self._waiting:
            self.run(lambda cursor: None).addBoth(lambda _: d.callback(None))
        else:
            d.callback(None)
        return d.addCallback(closed)


class Outbox:
    """Durable storage of the notifications not yet confirmed by the broker."""

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
    ):
        self.reactor = reactor
        self.max_messages = max_messages
        self.dedup_window = dedup_window
        self.path = Path(directory) / "outbox.sqlite3"
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            connection = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute(f"PRAGMA synchronous={SYNCHRONOUS[synchronous]}")
            connection.executescript(_SCHEMA)
            if max_bytes is not None:
                page_size = connection.execute("PRAGMA page_size").fetchone()[0]
                connection.execute(f"PRAGMA max_page_count={max(16, max_bytes // page_size)}")
            self.depth = connection.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
            self.last_id = connection.execute("SELECT IFNULL(MAX(id), 0) FROM outbox").fetchone()[0]
            # AUTOINCREMENT's record of the largest id ever given: ids are never reused.
            sequence = connection.execute(
                "SELECT IFNULL(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'outbox'"
            ).fetchone()[0]
        except (OSError, sqlite3.Error) as error:
            raise OutboxUnavailable(f"cannot open the outbox {self.path}: {error}") from None
        self._reserved = 0
        self._batcher = _Batcher(
            connection, reactor, next_id=max(self.last_id, sequence) + 1, threaded=threaded
        )

    @property
    def batches(self) -> int:
        """How many transactions were committed (for the group-commit figures)."""
        return self._batcher.batches

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

        def delete(cursor: sqlite3.Cursor) -> int:
            cursor.execute("DELETE FROM deliveries WHERE seen <= ?", (horizon,))
            return cursor.rowcount

        return self._batcher.run(delete)

    def close(self) -> defer.Deferred:
        return self._batcher.close()
