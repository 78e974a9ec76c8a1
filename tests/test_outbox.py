"""The outbox: order and ids, depth, deduplication, limits, savepoints, group commit.

Most tests run the SQLite transactions on the calling thread (``threaded=False``)
with a :class:`Clock` for the time stamps; the group-commit tests need the
database thread and so run in the real reactor (pytest-twisted).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest
import pytest_twisted
from twisted.internet import defer, reactor, task
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from notifications.outbox import (
    Duplicate,
    Entry,
    Outbox,
    OutboxFull,
    OutboxHeld,
    OutboxUnavailable,
)

DAY = 86_400.0


def new_entries(count: int, prefix: str = "m", size: int = 10) -> list[tuple[str, str, bytes]]:
    """``count`` entries to store: message ids ``m0``, ``m1``… and bodies of ``size`` bytes."""
    return [(f"{prefix}{i}", f"test.{prefix}", bytes([65 + i % 26]) * size) for i in range(count)]


@asynccontextmanager
async def opened(directory: Path, **options) -> AsyncIterator[Outbox]:
    """An outbox on the reactor (its database thread), open; closed on the way out."""
    outbox = Outbox(directory, reactor, **options)
    outbox.open()
    try:
        yield outbox
    finally:
        await outbox.close()


def count_rows(path: Path, table: str) -> int:
    """Rows of a table, read through a connection of the test's own."""
    with closing(sqlite3.connect(path)) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608


class OutboxTestCase(SynchronousTestCase):
    """A directory of the test's own and a Clock ``start`` seconds in, for outboxes whose
    transactions run synchronously (here and in the dispatcher's tests)."""

    start = 1_000_000

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="outbox-test-"))
        self.addCleanup(shutil.rmtree, self.directory, True)
        self.clock = Clock()
        self.clock.advance(self.start)

    def open(self, **kwargs) -> Outbox:
        """An outbox on the test's directory, closed at the end of the test."""
        outbox = Outbox(self.directory, self.clock, threaded=False, **kwargs)
        outbox.open()
        self.addCleanup(outbox.close)
        return outbox


class OutboxTests(OutboxTestCase):
    """The outbox with its transactions run synchronously."""

    def close(self, outbox: Outbox) -> None:
        self.assertIsNone(self.successResultOf(outbox.close()))

    # Storing and reading --------------------------------------------------------------

    def test_add_gives_increasing_ids_and_keeps_the_fields(self) -> None:
        outbox = self.open()
        first = self.successResultOf(outbox.add(new_entries(3)))
        second = self.successResultOf(outbox.add([("other", "test.other", b"{}")]))
        self.assertEqual(
            first,
            [
                Entry(1, "m0", "test.m", b"A" * 10, 1_000_000.0),
                Entry(2, "m1", "test.m", b"B" * 10, 1_000_000.0),
                Entry(3, "m2", "test.m", b"C" * 10, 1_000_000.0),
            ],
        )
        self.assertEqual([entry.id for entry in second], [4])
        self.assertEqual(outbox.depth, 4)
        self.assertEqual(outbox.last_id, 4)

    def test_load_in_order_after_an_id(self) -> None:
        outbox = self.open()
        stored = self.successResultOf(outbox.add(new_entries(10)))
        self.assertEqual(self.successResultOf(outbox.load(0, 100)), stored)
        self.assertEqual(self.successResultOf(outbox.load(0, 4)), stored[:4])
        self.assertEqual(self.successResultOf(outbox.load(stored[3].id, 4)), stored[4:8])
        self.assertEqual(self.successResultOf(outbox.load(stored[-1].id, 4)), [])
        # The bodies come back as bytes, not memoryview or str.
        self.assertIsInstance(self.successResultOf(outbox.load(0, 1))[0].body, bytes)

    def test_remove_forgets_entries_and_lowers_the_depth(self) -> None:
        outbox = self.open()
        stored = self.successResultOf(outbox.add(new_entries(5)))
        removed = self.successResultOf(outbox.remove([stored[1].id, stored[3].id]))
        self.assertEqual(removed, 2)
        self.assertEqual(outbox.depth, 3)
        remaining = self.successResultOf(outbox.load(0, 10))
        self.assertEqual([entry.message_id for entry in remaining], ["m0", "m2", "m4"])

    def test_ids_are_not_reused_after_removal(self) -> None:
        outbox = self.open()
        stored = self.successResultOf(outbox.add(new_entries(3)))
        self.successResultOf(outbox.remove([entry.id for entry in stored]))
        again = self.successResultOf(outbox.add(new_entries(1)))
        self.assertEqual(again[0].id, 4)
        self.assertEqual(outbox.depth, 1)

    def test_removing_an_unknown_id_leaves_the_depth_alone(self) -> None:
        outbox = self.open()
        stored = self.successResultOf(outbox.add(new_entries(2)))
        self.assertEqual(self.successResultOf(outbox.remove([stored[0].id, 999])), 1)
        self.assertEqual(outbox.depth, 1)

    def test_oldest(self) -> None:
        outbox = self.open()
        self.assertIsNone(self.successResultOf(outbox.oldest()))
        first = self.successResultOf(outbox.add(new_entries(1)))
        self.clock.advance(60)
        self.successResultOf(outbox.add(new_entries(1, prefix="n")))
        self.assertEqual(self.successResultOf(outbox.oldest()), 1_000_000.0)
        self.successResultOf(outbox.remove([first[0].id]))
        self.assertEqual(self.successResultOf(outbox.oldest()), 1_000_060.0)

    def test_entries_and_depth_persist_across_reopening(self) -> None:
        outbox = self.open()
        stored = self.successResultOf(outbox.add(new_entries(4)))
        self.successResultOf(outbox.remove([stored[0].id]))
        self.close(outbox)

        reopened = self.open()
        self.assertEqual(reopened.depth, 3)
        self.assertEqual(reopened.last_id, 4)
        self.assertEqual(self.successResultOf(reopened.load(0, 10)), stored[1:])
        added = self.successResultOf(reopened.add(new_entries(1, prefix="n")))
        self.assertEqual(added[0].id, 5)

    def test_ids_are_not_reused_after_removing_everything_and_reopening(self) -> None:
        outbox = self.open()
        stored = self.successResultOf(outbox.add(new_entries(3)))
        self.successResultOf(outbox.remove([entry.id for entry in stored]))
        self.close(outbox)
        reopened = self.open()
        self.assertEqual(reopened.depth, 0)
        self.assertEqual(self.successResultOf(reopened.add(new_entries(1)))[0].id, 4)

    # Deduplication --------------------------------------------------------------------

    def test_same_delivery_is_a_duplicate_and_stores_nothing(self) -> None:
        outbox = self.open()
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))
        failure = self.failureResultOf(
            outbox.add(new_entries(2, prefix="again"), delivery="delivery-1"), Duplicate
        )
        self.assertEqual(failure.value.args, ("delivery-1",))
        self.assertEqual(outbox.depth, 1)
        self.assertEqual(count_rows(outbox.path, "outbox"), 1)
        # Another delivery, or none, is stored.
        self.successResultOf(outbox.add(new_entries(1, prefix="n"), delivery="delivery-2"))
        self.successResultOf(outbox.add(new_entries(1, prefix="p")))
        self.assertEqual(outbox.depth, 3)

    def test_duplicate_window_expires(self) -> None:
        outbox = self.open(dedup_window=DAY)
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-2"))
        self.clock.advance(DAY - 1)
        self.failureResultOf(outbox.add(new_entries(1), delivery="delivery-1"), Duplicate)
        # Nothing is old enough to be forgotten yet.
        self.assertEqual(self.successResultOf(outbox.forget_deliveries()), 0)
        self.assertEqual(count_rows(outbox.deliveries_path, "deliveries"), 2)

        self.clock.advance(2)
        self.assertEqual(self.successResultOf(outbox.forget_deliveries()), 2)
        self.assertEqual(count_rows(outbox.deliveries_path, "deliveries"), 0)
        stored = self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))
        self.assertEqual(len(stored), 1)
        # Seen again now, so a duplicate again.
        self.failureResultOf(outbox.add(new_entries(1), delivery="delivery-1"), Duplicate)

    def test_expired_delivery_is_accepted_before_the_purge(self) -> None:
        outbox = self.open(dedup_window=60)
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))
        self.clock.advance(61)
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))
        self.assertEqual(outbox.depth, 2)

    def test_duplicate_check_survives_reopening(self) -> None:
        outbox = self.open()
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))
        self.close(outbox)
        reopened = self.open()
        self.failureResultOf(reopened.add(new_entries(1), delivery="delivery-1"), Duplicate)
        self.assertEqual(reopened.depth, 1)

    # Limits ---------------------------------------------------------------------------

    def test_max_messages(self) -> None:
        outbox = self.open(max_messages=5)
        self.successResultOf(outbox.add(new_entries(4)))
        failure = self.failureResultOf(outbox.add(new_entries(2, prefix="n")), OutboxFull)
        self.assertIn("the outbox is full", str(failure.value))
        self.assertIn("4 notifications are waiting", str(failure.value))
        self.assertEqual(outbox.depth, 4)
        self.assertEqual(count_rows(outbox.path, "outbox"), 4)
        # What still fits is taken; a removal makes room again.
        self.successResultOf(outbox.add(new_entries(1, prefix="p")))
        self.failureResultOf(outbox.add(new_entries(1, prefix="q")), OutboxFull)
        self.successResultOf(outbox.remove([1]))
        self.successResultOf(outbox.add(new_entries(1, prefix="r")))
        self.assertEqual(outbox.depth, 5)

    def test_full_outbox_does_not_record_the_delivery(self) -> None:
        outbox = self.open(max_messages=1)
        self.successResultOf(outbox.add(new_entries(1)))
        self.failureResultOf(outbox.add(new_entries(1), delivery="delivery-1"), OutboxFull)
        self.successResultOf(outbox.remove([1]))
        # The caller was told it failed, so the redelivery must be taken.
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))

    def test_max_bytes_gives_outbox_full_and_stays_usable(self) -> None:
        outbox = self.open(max_bytes=64 * 1024)
        kept = self.successResultOf(outbox.add(new_entries(2, size=100)))
        failure = self.failureResultOf(
            outbox.add(new_entries(1, prefix="big", size=200_000), delivery="big-delivery"),
            OutboxFull,
        )
        self.assertIn("storage is full", str(failure.value))
        self.assertEqual(outbox.depth, 2)
        self.assertEqual(count_rows(outbox.path, "outbox"), 2)

        # Smaller entries are still taken, removals still work, and the refused
        # delivery was not recorded.
        small = self.successResultOf(
            outbox.add(new_entries(1, prefix="small", size=100), delivery="big-delivery")
        )
        self.assertEqual(self.successResultOf(outbox.remove([kept[0].id])), 1)
        self.assertEqual(
            self.successResultOf(outbox.load(0, 10)),
            [kept[1], small[0]],
        )
        self.assertEqual(outbox.depth, 2)

    def test_filling_max_bytes_entry_by_entry(self) -> None:
        outbox = self.open(max_bytes=64 * 1024)
        outcomes: list = []
        for i in range(40):
            outbox.add(new_entries(1, prefix=f"e{i}-", size=3000)).addBoth(outcomes.append)
        stored = [outcome for outcome in outcomes if isinstance(outcome, list)]
        # Entries are taken until the storage is full, then all are refused.
        self.assertTrue(5 < len(stored) < 40, len(stored))
        self.assertEqual(outcomes[: len(stored)], stored)
        for refused in outcomes[len(stored) :]:
            refused.trap(OutboxFull)
        self.assertEqual(outbox.depth, len(stored))
        # Room comes back after removals.
        self.successResultOf(outbox.remove([entries[0].id for entries in stored]))
        self.successResultOf(outbox.add(new_entries(1, prefix="after", size=3000)))
        self.assertEqual(outbox.depth, 1)

    def test_failed_operation_is_rolled_back_whole(self) -> None:
        # The second entry breaks a NOT NULL constraint after the first entry
        # and the delivery id were written: the savepoint undoes both.
        outbox = self.open()
        broken = [("m0", "test.m", b"fine"), ("m1", "test.m", None)]
        self.failureResultOf(outbox.add(broken, delivery="delivery-1"), OutboxUnavailable)
        self.assertEqual(outbox.depth, 0)
        self.assertEqual(count_rows(outbox.path, "outbox"), 0)
        self.assertEqual(count_rows(outbox.deliveries_path, "deliveries"), 0)
        self.successResultOf(outbox.add(new_entries(1), delivery="delivery-1"))
        self.assertEqual(outbox.depth, 1)

    # Opening --------------------------------------------------------------------------

    def test_database_is_in_wal_mode(self) -> None:
        outbox = self.open()
        with closing(sqlite3.connect(outbox.path)) as connection:
            mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
        self.assertEqual(mode, "wal")

    def test_synchronous_settings(self) -> None:
        full = self.open()
        connection = full._batcher.connection
        self.assertEqual(connection.execute("PRAGMA synchronous").fetchone()[0], 2)
        self.close(full)
        normal = self.open(synchronous="normal")
        connection = normal._batcher.connection
        self.assertEqual(connection.execute("PRAGMA synchronous").fetchone()[0], 1)
        self.successResultOf(normal.add(new_entries(1)))
        self.assertEqual(normal.depth, 1)

    def test_unusable_directory_is_outbox_unavailable(self) -> None:
        blocker = self.directory / "a-file"
        blocker.write_bytes(b"")
        with self.assertRaises(OutboxUnavailable) as raised:
            Outbox(blocker / "outbox", self.clock, threaded=False).open()
        self.assertIn("cannot open the outbox", str(raised.exception))

    def test_close_finishes_and_closes_the_database(self) -> None:
        outbox = self.open()
        batcher = outbox._batcher
        self.successResultOf(outbox.add(new_entries(1)))
        self.close(outbox)
        with self.assertRaises(sqlite3.ProgrammingError):
            batcher.connection.execute("SELECT 1")


# In the real reactor, with the database thread ----------------------------------------


@pytest_twisted.ensureDeferred
async def test_group_commit(tmp_path):
    async with opened(tmp_path) as outbox:
        before = outbox.batches
        calls = [outbox.add(new_entries(1, prefix=f"g{i}-")) for i in range(200)]
        results = await defer.gatherResults(calls)
        batches = outbox.batches - before
    ids = [entries[0].id for entries in results]
    assert [entries[0].message_id for entries in results] == [f"g{i}-0" for i in range(200)]
    assert ids == sorted(set(ids)), "ids must be distinct and increase in call order"
    assert outbox.depth == 200
    print(f"200 adds committed in {batches} transactions")
    assert batches < 50


def _statements(outbox: Outbox) -> list[str]:
    """The SQL statements the outbox's connections run from now on: the first
    words, after ``outbox:`` or ``deliveries:``."""
    seen: list[str] = []
    batcher = outbox._batcher
    for name, connection in (
        ("outbox", batcher.connection),
        ("deliveries", batcher.deliveries.connection),
    ):
        connection.set_trace_callback(
            lambda sql, name=name: seen.append(f"{name}: " + " ".join(sql.split()[:3]))
        )
    return seen


@pytest_twisted.ensureDeferred
async def test_a_group_is_written_with_a_few_statements(tmp_path):
    # The database thread gives up the GIL for each statement and must take
    # it back from a busy reactor: a group of 60 calls (40 with a delivery id)
    # must cost a handful of statements, not a few per call.
    async with opened(tmp_path) as outbox:
        await outbox.add(new_entries(1, prefix="first"))
        await task.deferLater(reactor, 0)
        running = outbox.add(new_entries(1, prefix="running"))
        statements = _statements(outbox)
        await running
        del statements[:]
        group = [
            outbox.add(new_entries(2, prefix=f"g{i}-"), delivery=f"d-{i}" if i % 3 else None)
            for i in range(60)
        ]
        results = await defer.gatherResults(group)
        grouped = list(statements)
        stored = await outbox.load(0, 1000)
    # The deliveries database is held from the check until the outbox is
    # committed, and the outbox is committed first (see notifications.outbox).
    assert grouped == [
        "deliveries: BEGIN IMMEDIATE",
        "deliveries: SELECT delivery, seen",
        "outbox: BEGIN IMMEDIATE",
        "outbox: INSERT INTO outbox",
        "outbox: COMMIT",
        "deliveries: INSERT OR REPLACE",
        "deliveries: COMMIT",
    ]
    assert [entry.message_id for entries in results for entry in entries] == [
        f"g{i}-{j}" for i in range(60) for j in range(2)
    ]
    assert [entry.id for entry in stored] == list(range(1, 123))
    assert count_rows(outbox.deliveries_path, "deliveries") == 40


@pytest_twisted.ensureDeferred
async def test_the_same_delivery_twice_in_one_group(tmp_path):
    async with opened(tmp_path) as outbox:
        running = outbox.add(new_entries(1, prefix="running"))
        first = outbox.add(new_entries(1, prefix="first"), delivery="twice")
        second = outbox.add(new_entries(1, prefix="second"), delivery="twice")
        other = outbox.add(new_entries(1, prefix="other"), delivery="once")
        outcomes = await defer.DeferredList([running, first, second, other], consumeErrors=True)
        batches = outbox.batches
        stored = await outbox.load(0, 100)
    assert batches == 2, "the last three calls shared a transaction"
    (ok_running, _), (ok_first, _), (ok_second, failure), (ok_other, _) = outcomes
    assert ok_running and ok_first and ok_other and not ok_second
    failure.trap(Duplicate)
    assert [entry.message_id for entry in stored] == ["running0", "first0", "other0"]


@pytest_twisted.ensureDeferred
async def test_one_failing_operation_does_not_undo_its_group(tmp_path):
    async with opened(tmp_path) as outbox:
        await outbox.add(new_entries(1, prefix="seen"), delivery="delivery-1")
        # Resumed from inside the batcher's callbacks: let it go idle first.
        await task.deferLater(reactor, 0)
        before = outbox.batches
        # The first call starts a transaction on the database thread; the next
        # three wait behind it and share the next transaction.
        running = outbox.add(new_entries(1, prefix="a"))
        duplicate = outbox.add(new_entries(1, prefix="dup"), delivery="delivery-1")
        broken = outbox.add([("b0", "test.b", b"fine"), ("b1", "test.b", None)], delivery="d-2")
        normal = outbox.add(new_entries(2, prefix="c"), delivery="delivery-3")
        outcomes = await defer.DeferredList(
            [running, duplicate, broken, normal], consumeErrors=True
        )
        assert outbox.batches - before == 2
        stored = await outbox.load(0, 100)
    (ok_a, _), (ok_dup, dup), (ok_broken, broken_failure), (ok_c, c) = outcomes
    assert ok_a and ok_c and not ok_dup and not ok_broken
    dup.trap(Duplicate)
    broken_failure.trap(OutboxUnavailable)
    assert [entry.message_id for entry in c] == ["c0", "c1"]
    assert [entry.message_id for entry in stored] == ["seen0", "a0", "c0", "c1"]
    assert outbox.depth == 4
    assert count_rows(outbox.deliveries_path, "deliveries") == 2  # delivery-1 and delivery-3


@pytest_twisted.ensureDeferred
async def test_storage_full_in_a_group_spares_the_others(tmp_path):
    async with opened(tmp_path, max_bytes=64 * 1024) as outbox:
        before = outbox.batches
        running = outbox.add(new_entries(1, prefix="a"))
        big = outbox.add(new_entries(1, prefix="big", size=200_000), delivery="big")
        small = outbox.add(new_entries(1, prefix="small"), delivery="small")
        outcomes = await defer.DeferredList([running, big, small], consumeErrors=True)
        assert outbox.batches - before == 2
        stored = await outbox.load(0, 100)
    (ok_a, _), (ok_big, big_failure), (ok_small, _) = outcomes
    assert ok_a and ok_small and not ok_big
    big_failure.trap(OutboxFull)
    assert [entry.message_id for entry in stored] == ["a0", "small0"]
    assert count_rows(outbox.deliveries_path, "deliveries") == 1


@pytest_twisted.ensureDeferred
async def test_workers_sharing_the_deliveries_database_store_each_delivery_once(tmp_path):
    # Two outboxes (two workers) given the same 300 delivery ids at once, each
    # on its own thread and connection: every id is stored by exactly one.
    shared = tmp_path / "deliveries.sqlite3"
    outboxes = [Outbox(tmp_path / f"worker-{i}", reactor, deliveries=shared) for i in range(2)]
    for outbox in outboxes:
        outbox.open()
    try:
        calls = [
            outbox.add(new_entries(1, prefix=f"w{index}-{n}-"), delivery=f"delivery-{n}")
            for n in range(300)
            for index, outbox in enumerate(outboxes)
        ]
        results = await defer.DeferredList(calls, consumeErrors=True)
    finally:
        for outbox in outboxes:
            await outbox.close()
    stored = [result for ok, result in results if ok]
    duplicates = [result for ok, result in results if not ok]
    assert len(stored) == 300
    assert all(failure.check(Duplicate) for failure in duplicates)
    assert len(duplicates) == 300
    stored_ids = sorted(n for outbox in outboxes for n in _stored_deliveries(outbox.path))
    assert stored_ids == list(range(300))
    assert count_rows(shared, "deliveries") == 300


def _stored_deliveries(path) -> list[int]:
    """The delivery numbers (from the message ids ``w<i>-<n>-0``) an outbox file holds."""
    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT message_id FROM outbox").fetchall()
    return [int(message_id.split("-")[1]) for (message_id,) in rows]


def test_an_outbox_held_by_a_living_process_is_refused(tmp_path):
    first = Outbox(tmp_path, reactor, threaded=False)
    first.open()
    try:
        with pytest.raises(OutboxHeld) as held:
            Outbox(tmp_path, reactor, threaded=False).open()
        assert held.value.pid == os.getpid()
        assert f"the outbox in {tmp_path} is held by process {os.getpid()}" in str(held.value)
        with pytest.raises(OutboxHeld):
            Outbox(tmp_path, reactor, threaded=False).check()
    finally:
        first.close()
    second = Outbox(tmp_path, reactor, threaded=False)
    second.check()
    second.open()
    second.close()


def test_delivery_ids_of_an_earlier_outbox_are_moved_to_the_shared_database(tmp_path):
    with closing(sqlite3.connect(tmp_path / "outbox.sqlite3")) as old:
        old.executescript(
            "CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, message_id TEXT NOT NULL,"
            " routing_key TEXT NOT NULL, body BLOB NOT NULL, created REAL NOT NULL);"
            "CREATE TABLE deliveries (delivery TEXT PRIMARY KEY, seen REAL NOT NULL);"
            "INSERT INTO deliveries VALUES ('old-1', 1e12), ('old-2', 1e12);"
        )
    clock = Clock()
    clock.advance(1e12 + 10)
    outbox = Outbox(tmp_path, clock, threaded=False)
    outbox.open()
    try:
        failure = outbox.add(new_entries(1), delivery="old-2")
        assert failure.result.check(Duplicate)
        failure.addErrback(lambda _: None)
    finally:
        outbox.close()
    assert count_rows(outbox.deliveries_path, "deliveries") == 2
    with closing(sqlite3.connect(tmp_path / "outbox.sqlite3")) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert "deliveries" not in tables


@pytest_twisted.ensureDeferred
async def test_a_delivery_check_and_record_are_one_statement_each_when_shared(tmp_path):
    # The common path of a GitHub call (published first, then remembered) with
    # workers sharing the database: one read and one write, no transaction held.
    async with opened(tmp_path, shared_deliveries=True) as outbox:
        statements = _statements(outbox)
        await outbox.check_delivery("d-1")
        checked = list(statements)
        del statements[:]
        await outbox.record_delivery("d-1")
        recorded = list(statements)
        with pytest.raises(Duplicate):
            await outbox.check_delivery("d-1")
    assert checked == ["deliveries: SELECT delivery, seen"]
    assert recorded == ["deliveries: INSERT OR REPLACE"]
    assert count_rows(outbox.path, "outbox") == 0


@pytest_twisted.ensureDeferred
async def test_alone_a_delivery_is_checked_in_memory_and_written_behind(tmp_path):
    async with opened(tmp_path) as outbox:
        statements = _statements(outbox)
        await outbox.check_delivery("d-1")
        assert statements == []  # no trip to the database thread
        assert outbox.record_delivery("d-1") is None  # nothing to wait for
        assert outbox.record_delivery("d-2") is None
        with pytest.raises(Duplicate):
            await outbox.check_delivery("d-1")
        assert statements == []
        # Written behind, the two in one statement.
        await task.deferLater(reactor, 0.3)
        await outbox.load(0, 1)  # after the record, in the thread's order
        assert statements[0] == "deliveries: INSERT OR REPLACE"
        assert count_rows(outbox.deliveries_path, "deliveries") == 2
    # Read again at the next start.
    async with opened(tmp_path) as again:
        with pytest.raises(Duplicate):
            await again.check_delivery("d-1")
        await again.check_delivery("d-3")


def test_a_full_index_asks_the_database_until_what_it_dropped_is_past_the_window(tmp_path):
    clock = Clock()
    clock.advance(1000)
    outbox = Outbox(tmp_path, clock, threaded=False, index_size=3, dedup_window=100)
    outbox.open()
    try:
        for n in range(5):
            assert outbox.record_delivery(f"d-{n}") is None
            clock.advance(1)
        # d-0 and d-1 were let go of by the index: the database still knows them.
        for n in range(5):
            outbox.check_delivery(f"d-{n}").addCallbacks(
                lambda _, n=n: pytest.fail(f"d-{n} not found"), lambda f: f.trap(Duplicate)
            )
        assert outbox._index.complete(clock.seconds() - 100) is False
        clock.advance(100)
        assert outbox._index.complete(clock.seconds() - 100) is True
    finally:
        outbox.close()
