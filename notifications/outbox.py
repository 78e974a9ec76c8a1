"""The outbox: notifications made durable on local disk before a gate answers.

SQLite in WAL mode, in the storage directory. Every database operation runs
on one dedicated thread, so a slow disk never stalls the reactor, and
operations that arrive while a transaction is being committed are grouped
into the next transaction (group commit): under load, many gate calls share
one fsync instead of paying one each. Each operation runs inside its own
savepoint, so one failing operation does not undo the others of its group.

The same database keeps the GitHub delivery ids seen recently, so that a
redelivery is recognised (and not published twice) across restarts, in the
same transaction that stores the notification.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
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


class _Batcher:
    """Runs database operations on one thread, grouped into transactions."""

    log = Logger()

    def __init__(self, connection: sqlite3.Connection, reactor, threaded: bool = True):
        self.connection = connection
        self.reactor = reactor
        self.pool: ThreadPool | None = None
        if threaded:
            self.pool = ThreadPool(minthreads=1, maxthreads=1, name="outbox")
            self.pool.start()
        self._waiting: list[tuple[Callable, defer.Deferred]] = []
        self._running = False
        self.batches = 0

    def run(self, operation: Callable[[sqlite3.Cursor], Any]) -> defer.Deferred:
        """Run ``operation(cursor)`` in the next transaction; fires with its result."""
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

    def _transaction(self, operations: Sequence[Callable]) -> list[tuple[bool, Any]]:
        # On the database thread: one transaction, one savepoint per operation.
        # Some errors (SQLITE_FULL, I/O errors) make SQLite roll back the whole
        # transaction by itself: that operation fails, and the transaction is
        # run again with the others, so that they do not share its fate.
        failed: dict[int, Exception] = {}
        while True:
            results = self._attempt(operations, failed)
            if results is not None:
                self.batches += 1
                return results

    def _attempt(self, operations, failed: dict[int, Exception]):
        results: list[tuple[bool, Any]] = []
        cursor = self.connection.cursor()
        cursor.execute("BEGIN IMMEDIATE")
        try:
            for index, operation in enumerate(operations):
                if index in failed:
                    results.append((False, failed[index]))
                    continue
                cursor.execute("SAVEPOINT operation")
                try:
                    results.append((True, operation(cursor)))
                except Exception as error:  # handed to that operation's caller
                    if not self.connection.in_transaction:
                        failed[index] = error
                        return None
                    cursor.execute("ROLLBACK TO operation")
                    results.append((False, error))
                cursor.execute("RELEASE operation")
            cursor.execute("COMMIT")
        except BaseException:
            if self.connection.in_transaction:
                self.connection.rollback()
            raise
        finally:
            cursor.close()
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
        except (OSError, sqlite3.Error) as error:
            raise OutboxUnavailable(f"cannot open the outbox {self.path}: {error}") from None
        self._reserved = 0
        self._batcher = _Batcher(connection, reactor, threaded=threaded)

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
        now = self.reactor.seconds()
        window = self.dedup_window

        def insert(cursor: sqlite3.Cursor) -> list[Entry]:
            if delivery is not None:
                seen = cursor.execute(
                    "SELECT 1 FROM deliveries WHERE delivery = ? AND seen > ?",
                    (delivery, now - window),
                ).fetchone()
                if seen:
                    raise Duplicate(delivery)
                cursor.execute(
                    "INSERT OR REPLACE INTO deliveries (delivery, seen) VALUES (?, ?)",
                    (delivery, now),
                )
            stored = []
            for message_id, routing_key, body in entries:
                cursor.execute(
                    "INSERT INTO outbox (message_id, routing_key, body, created) "
                    "VALUES (?, ?, ?, ?)",
                    (message_id, routing_key, body, now),
                )
                stored.append(Entry(cursor.lastrowid, message_id, routing_key, body, now))
            return stored

        self._reserved += len(entries)
        d = self._batcher.run(insert)

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
        ids = list(ids)

        def delete(cursor: sqlite3.Cursor) -> int:
            cursor.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            return cursor.rowcount

        def removed(count: int) -> int:
            self.depth = max(0, self.depth - count)
            return count

        return self._batcher.run(delete).addCallback(removed)

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
