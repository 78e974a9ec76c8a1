"""The dispatcher: in-flight window, order, requeue, nack pause, spill to disk, drain.

A unit test of the dispatcher's own logic: the outbox is real (SQLite, run on
the calling thread), the publisher is a fake whose confirms the test gives by
hand, and time is a :class:`Clock`. The broker itself is tested elsewhere.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass

from twisted.application import service
from twisted.internet import defer
from twisted.internet.error import ConnectionLost

from notifications.delivery import DeliveryService
from notifications.dispatcher import Dispatcher
from notifications.outbox import Duplicate, Outbox
from notifications.publisher import PublicationRefused
from tests.test_outbox import OutboxTestCase


@dataclass
class Publication:
    """One call of :meth:`FakePublisher.publish` and the Deferred it returned."""

    routing_key: str
    body: bytes
    message_id: str
    timestamp: int
    deferred: defer.Deferred


class FakePublisher(service.Service):
    """What the dispatcher needs of a publisher; the test fires each confirm by hand."""

    exchange = "notifications-test"

    def __init__(self, connected: bool = False):
        self.connected = connected
        self.connected_listeners: list = []
        #: Every publication, in the order the dispatcher asked for it.
        self.published: list[Publication] = []
        #: The publications neither confirmed nor failed yet, oldest first.
        self.unconfirmed: list[Publication] = []

    def stopService(self) -> defer.Deferred:
        # The real publisher closes its connection, failing what is unconfirmed.
        super().stopService()
        self.lose()
        return defer.succeed(None)

    def publish(self, routing_key: str, body: bytes, message_id: str, timestamp: int):
        assert self.connected, "published without a connection"
        publication = Publication(routing_key, body, message_id, timestamp, defer.Deferred())
        self.published.append(publication)
        self.unconfirmed.append(publication)
        return publication.deferred

    # Driven by the test ---------------------------------------------------------------

    def connect(self) -> None:
        """A connection becomes ready."""
        self.connected = True
        for listener in list(self.connected_listeners):
            listener()

    def lose(self) -> None:
        """The connection is lost: every unconfirmed publication fails (as Publisher._lost)."""
        self.connected = False
        unconfirmed, self.unconfirmed = self.unconfirmed, []
        for publication in unconfirmed:
            publication.deferred.errback(ConnectionLost("lost before the confirm"))

    def confirm(self, count: int = 1) -> list[str]:
        """Confirm the ``count`` oldest unconfirmed publications; their message ids."""
        confirmed = []
        for _ in range(count):
            publication = self.unconfirmed.pop(0)
            confirmed.append(publication.message_id)
            publication.deferred.callback(None)
        return confirmed

    def confirm_all(self) -> None:
        """Confirm until nothing is left: each confirm may let the dispatcher publish more."""
        while self.unconfirmed:
            self.confirm()

    def nack(self) -> str:
        """Refuse the oldest unconfirmed publication; its message id."""
        publication = self.unconfirmed.pop(0)
        publication.deferred.errback(PublicationRefused("nack"))
        return publication.message_id

    def published_ids(self) -> list[str]:
        return [publication.message_id for publication in self.published]


def new_entries(count: int, prefix: str = "m") -> list[tuple[str, str, bytes]]:
    return [(f"{prefix}{i}", f"test.{prefix}", f'{{"n": {i}}}'.encode()) for i in range(count)]


def delivery_ids(outbox: Outbox) -> list[str]:
    """The delivery ids the outbox remembers, read through a connection of the test's own."""
    with closing(sqlite3.connect(outbox.deliveries_path)) as connection:
        return [row[0] for row in connection.execute("SELECT delivery FROM deliveries")]


def message_ids(count: int, prefix: str = "m") -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


class DispatcherTestCase(OutboxTestCase):
    """A dispatcher on a real outbox, a fake publisher and a Clock."""

    start = 1_000

    def make_dispatcher(
        self, connected: bool = False, start: bool = True, **kwargs
    ) -> tuple[Dispatcher, FakePublisher]:
        """A dispatcher in its delivery service (``dispatcher.parent``), the outbox open.

        ``start=False``: the outbox is open, nothing else is started.
        """
        publisher = FakePublisher(connected)
        outbox = self.open()
        dispatcher = Dispatcher(outbox, publisher, self.clock, **kwargs)
        delivery = DeliveryService(outbox, publisher, dispatcher)
        if start:
            delivery.startService()
        return dispatcher, publisher

    def store_each(self, dispatcher: Dispatcher, entries) -> list:
        """Store entries one call each (as separate gate calls would); the stored entries."""
        return [self.successResultOf(dispatcher.store([entry]))[0] for entry in entries]

    def stop(self, dispatcher: Dispatcher) -> None:
        """Stop the dispatcher, letting the drain run out on the clock."""
        stopped = dispatcher.parent.stopService()
        self.clock.pump([0.05] * int(dispatcher.drain_timeout / 0.05 + 2))
        self.successResultOf(stopped)

    def stop_cleanly(self, dispatcher: Dispatcher) -> None:
        """Stop the dispatcher: no timer of it may be left on the clock."""
        self.stop(dispatcher)
        self.assertNoDelayedCalls()

    def stop_emptied(self, dispatcher: Dispatcher) -> None:
        """The end of most tests: the outbox is empty, the stop leaves nothing on the clock."""
        self.assertEqual(dispatcher.outbox.depth, 0)
        self.stop_cleanly(dispatcher)

    def assertNoDelayedCalls(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])


class DispatcherTests(DispatcherTestCase):
    # Window and confirms --------------------------------------------------------------

    def test_never_more_than_window_unconfirmed(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, window=3)
        stored = self.successResultOf(dispatcher.store(new_entries(10)))
        self.assertEqual(len(stored), 10)
        self.assertEqual(publisher.published_ids(), message_ids(3))
        self.assertEqual(dispatcher.status()["in_flight"], 3)

        while publisher.unconfirmed:
            self.assertLessEqual(len(publisher.unconfirmed), 3)
            self.assertLessEqual(dispatcher.status()["in_flight"], 3)
            publisher.confirm()
        self.assertEqual(publisher.published_ids(), message_ids(10))
        self.assertEqual(dispatcher.status()["published"], 10)
        self.stop_emptied(dispatcher)

    def test_publication_carries_the_entry(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True)
        self.clock.advance(0.7)
        self.successResultOf(dispatcher.store([("id-1", "github.push", b'{"a": 1}')]))
        [publication] = publisher.published
        self.assertEqual(
            (publication.routing_key, publication.body, publication.message_id),
            ("github.push", b'{"a": 1}', "id-1"),
        )
        self.assertEqual(publication.timestamp, 1_000)
        publisher.confirm()
        self.stop_cleanly(dispatcher)

    def test_confirms_remove_entries_and_fire_waiters(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, window=2)
        stored = self.successResultOf(dispatcher.store(new_entries(3)))
        waiters = [dispatcher.wait_confirmed(entry.id, 5) for entry in stored]
        self.assertNoResult(waiters[0])
        self.assertEqual(dispatcher.outbox.depth, 3)

        publisher.confirm()
        self.assertIs(self.successResultOf(waiters[0]), True)
        self.assertNoResult(waiters[1])
        self.assertEqual(dispatcher.outbox.depth, 2)

        publisher.confirm(2)
        self.assertEqual([self.successResultOf(w) for w in waiters[1:]], [True, True])
        self.assertEqual(dispatcher.outbox.depth, 0)
        self.assertEqual(self.successResultOf(dispatcher.outbox.load(0, 10)), [])
        self.stop(dispatcher)
        # The waiters' timeouts were cancelled with their confirms.
        self.assertNoDelayedCalls()

    def test_wait_confirmed_times_out_with_false(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=False)
        [entry] = self.successResultOf(dispatcher.store(new_entries(1)))
        waiter = dispatcher.wait_confirmed(entry.id, 2)
        self.clock.advance(1.9)
        self.assertNoResult(waiter)
        self.clock.advance(0.1)
        self.assertIs(self.successResultOf(waiter), False)
        # No timeout: False at once.
        self.assertIs(self.successResultOf(dispatcher.wait_confirmed(entry.id, 0)), False)

        # A confirm that comes later still removes the entry, without a waiter.
        publisher.connect()
        publisher.confirm()
        self.stop_emptied(dispatcher)

    def test_waiters_with_other_timeouts_fire_at_their_own_deadlines(self) -> None:
        # One timer serves every waiter: a shorter timeout given later (a
        # reloaded publish_timeout) must not wait for an earlier, longer one.
        dispatcher, publisher = self.make_dispatcher(connected=True)
        stored = self.successResultOf(dispatcher.store(new_entries(4)))
        loops = len(self.clock.getDelayedCalls())  # the dispatcher's periodic tasks
        long_wait = dispatcher.wait_confirmed(stored[0].id, 5)
        confirmed = dispatcher.wait_confirmed(stored[1].id, 3)
        short_wait = dispatcher.wait_confirmed(stored[2].id, 1)
        self.clock.advance(0.5)
        later_short = dispatcher.wait_confirmed(stored[3].id, 1)
        self.assertEqual(len(self.clock.getDelayedCalls()), loops + 1)
        publisher.confirm(2)  # the first two, in order
        self.assertIs(self.successResultOf(long_wait), True)
        self.assertIs(self.successResultOf(confirmed), True)
        self.clock.advance(0.5)
        self.assertIs(self.successResultOf(short_wait), False)
        self.assertNoResult(later_short)
        self.clock.advance(0.5)
        self.assertIs(self.successResultOf(later_short), False)
        self.assertEqual(len(self.clock.getDelayedCalls()), loops)
        self.stop(dispatcher)

    def test_stop_answers_the_waiters_left(self) -> None:
        dispatcher, _ = self.make_dispatcher(connected=True, drain_timeout=1)
        [entry] = self.successResultOf(dispatcher.store(new_entries(1)))
        waiter = dispatcher.wait_confirmed(entry.id, 30)
        stopped = dispatcher.parent.stopService()
        self.clock.pump([0.05] * 25)
        self.successResultOf(stopped)
        self.assertIs(self.successResultOf(waiter), False)
        self.assertNoDelayedCalls()

    # Connection loss and nack ---------------------------------------------------------

    def test_republished_in_order_after_a_connection_loss(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, window=5)
        self.store_each(dispatcher, new_entries(8))
        self.assertEqual(publisher.confirm(2), ["m0", "m1"])
        self.assertEqual(publisher.published_ids(), message_ids(7))

        publisher.lose()
        self.assertEqual(dispatcher.status()["in_flight"], 0)
        self.assertEqual(dispatcher.status()["in_memory"], 6)
        self.assertEqual(dispatcher.outbox.depth, 6)
        # Nothing is published without a connection, not even new entries.
        self.store_each(dispatcher, new_entries(2, prefix="late"))
        self.assertEqual(len(publisher.published), 7)

        del publisher.published[:]
        publisher.connect()
        self.assertEqual(publisher.published_ids(), ["m2", "m3", "m4", "m5", "m6"])
        publisher.confirm_all()
        self.assertEqual(
            publisher.published_ids(), ["m2", "m3", "m4", "m5", "m6", "m7", "late0", "late1"]
        )
        self.stop_emptied(dispatcher)

    def test_connection_lost_twice(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, window=4)
        self.store_each(dispatcher, new_entries(6))
        publisher.lose()
        publisher.connect()
        publisher.confirm()
        publisher.lose()
        del publisher.published[:]
        publisher.connect()
        publisher.confirm_all()
        self.assertEqual(publisher.published_ids(), message_ids(6)[1:])
        self.stop_emptied(dispatcher)

    def test_nack_pauses_then_retries_the_same_entry_first(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, window=3, nack_delay=1)
        self.store_each(dispatcher, new_entries(6))
        self.assertEqual(publisher.published_ids(), ["m0", "m1", "m2"])

        self.assertEqual(publisher.nack(), "m0")
        self.assertEqual(dispatcher.status()["nacked"], 1)
        # The others' confirms free the window, yet nothing goes out during the pause.
        publisher.confirm(2)
        self.store_each(dispatcher, new_entries(1, prefix="new"))
        self.assertEqual(len(publisher.published), 3)
        self.clock.advance(0.99)
        self.assertEqual(len(publisher.published), 3)

        self.clock.advance(0.01)
        self.assertEqual(publisher.published_ids()[3:], ["m0", "m3", "m4"])
        publisher.confirm_all()
        self.assertEqual(publisher.published_ids()[3:], ["m0", "m3", "m4", "m5", "new0"])
        self.stop_emptied(dispatcher)

    def test_stop_cancels_the_nack_pause(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, nack_delay=5, drain_timeout=1)
        self.store_each(dispatcher, new_entries(2))
        publisher.nack()
        self.stop_cleanly(dispatcher)

    def test_several_nacks_make_one_pause(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, window=3, nack_delay=2)
        self.store_each(dispatcher, new_entries(3))
        publisher.nack()
        self.clock.advance(1)
        publisher.nack()
        publisher.nack()
        self.assertEqual(len(self.clock.getDelayedCalls()), 3)  # the pause and two loops
        self.clock.advance(1)
        self.assertEqual(publisher.published_ids()[3:], ["m0", "m1", "m2"])
        publisher.confirm(3)
        self.assertEqual(dispatcher.status()["nacked"], 3)
        self.stop_emptied(dispatcher)

    # Spill to disk --------------------------------------------------------------------

    def test_spill_keeps_memory_bounded_and_order(self) -> None:
        dispatcher, publisher = self.make_dispatcher(
            connected=False, window=4, memory_limit=10, page=5
        )
        stored = self.store_each(dispatcher, new_entries(50))
        self.assertLessEqual(dispatcher.status()["in_memory"], 10)
        self.assertEqual(dispatcher.outbox.depth, 50)

        publisher.connect()
        most = 0
        while publisher.unconfirmed:
            most = max(most, dispatcher.status()["in_memory"])
            self.assertLessEqual(len(publisher.unconfirmed), 4)
            publisher.confirm()
        self.assertLessEqual(most, 15)
        self.assertEqual(publisher.published_ids(), message_ids(50))
        self.assertEqual(dispatcher.status()["published"], 50)
        self.assertEqual(dispatcher.outbox.depth, 0)
        self.assertEqual(self.successResultOf(dispatcher.outbox.load(0, 100)), [])
        self.assertEqual(len(stored), len({entry.id for entry in stored}))
        self.stop_cleanly(dispatcher)

    def test_spill_with_a_wide_window(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=False, memory_limit=10, page=5)
        self.store_each(dispatcher, new_entries(50))
        publisher.connect()
        self.assertEqual(publisher.published_ids(), message_ids(50))
        publisher.confirm(50)
        self.stop_emptied(dispatcher)

    def test_stores_while_spilled_and_publishing(self) -> None:
        # New entries arrive while older ones are still on disk only: they must
        # wait for them, and none may be published twice or skipped.
        dispatcher, publisher = self.make_dispatcher(
            connected=True, window=2, memory_limit=10, page=5
        )
        expected = []
        for i in range(100):
            self.store_each(dispatcher, new_entries(1, prefix=f"s{i}-"))
            expected.append(f"s{i}-0")
            if i % 3 == 0:
                publisher.confirm()
            self.assertLessEqual(dispatcher.status()["in_memory"], 15)
        publisher.confirm_all()
        self.assertEqual(publisher.published_ids(), expected)
        self.stop_emptied(dispatcher)

    def test_connection_lost_while_spilled(self) -> None:
        dispatcher, publisher = self.make_dispatcher(
            connected=True, window=3, memory_limit=4, page=2
        )
        self.store_each(dispatcher, new_entries(20))
        publisher.confirm(2)
        publisher.lose()
        self.store_each(dispatcher, new_entries(3, prefix="late"))
        publisher.connect()
        publisher.confirm_all()
        confirmed = ["m0", "m1"]
        republished = publisher.published_ids()[5:]
        self.assertEqual(confirmed + republished, message_ids(20) + message_ids(3, "late"))
        self.stop_emptied(dispatcher)

    # Restart and stop -----------------------------------------------------------------

    def test_restart_replays_the_outbox_in_order(self) -> None:
        first, first_publisher = self.make_dispatcher(connected=False, start=False)
        stored = self.store_each(first, new_entries(12))
        self.successResultOf(first.outbox.close())
        self.assertEqual(first_publisher.published, [])

        second, publisher = self.make_dispatcher(connected=False, page=5, memory_limit=8)
        self.assertEqual(second.outbox.depth, 12)
        self.assertEqual(second.status()["in_memory"], 0)
        publisher.connect()
        self.assertEqual(publisher.published_ids(), message_ids(12))
        self.assertEqual(
            [publication.timestamp for publication in publisher.published], [1_000] * 12
        )
        publisher.confirm(12)
        self.assertEqual(second.outbox.depth, 0)
        # Entries stored after the replay come after the replayed ones.
        later = self.store_each(second, new_entries(1, prefix="later"))
        self.assertGreater(later[0].id, stored[-1].id)
        self.assertEqual(publisher.published_ids()[-1], "later0")
        publisher.confirm()
        self.stop_cleanly(second)

    def test_stop_while_disconnected_waits_for_the_drain_timeout(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=False, drain_timeout=2)
        self.store_each(dispatcher, new_entries(3))
        stopped = dispatcher.parent.stopService()
        self.assertFalse(dispatcher.running)
        self.clock.pump([0.05] * 39)
        self.assertNoResult(stopped)
        self.assertTrue(publisher.running)
        self.clock.pump([0.05] * 2)
        self.successResultOf(stopped)
        self.assertFalse(publisher.running)
        self.assertNoDelayedCalls()

        reopened = self.open()
        self.assertEqual(reopened.depth, 3)
        entries = self.successResultOf(reopened.load(0, 10))
        self.assertEqual([entry.message_id for entry in entries], message_ids(3))

    def test_stop_returns_once_drained(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True, drain_timeout=10)
        self.store_each(dispatcher, new_entries(2))
        stopped = dispatcher.parent.stopService()
        self.clock.advance(0.05)
        self.assertNoResult(stopped)
        publisher.confirm(2)
        self.clock.advance(0.05)
        self.successResultOf(stopped)
        self.assertNoDelayedCalls()
        self.assertEqual(self.open().depth, 0)

    def test_start_purges_old_deliveries_every_hour(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=False, start=False)
        dispatcher.outbox.dedup_window = 60
        self.successResultOf(dispatcher.store(new_entries(1), delivery="delivery-1"))
        self.clock.advance(61)
        self.assertEqual(delivery_ids(dispatcher.outbox), ["delivery-1"])
        dispatcher.parent.startService()
        self.assertTrue(publisher.running)
        self.assertEqual(delivery_ids(dispatcher.outbox), [])

        self.successResultOf(dispatcher.store(new_entries(1, prefix="n"), delivery="delivery-2"))
        self.clock.advance(3599)
        self.assertEqual(delivery_ids(dispatcher.outbox), ["delivery-2"])
        self.clock.advance(1)
        self.assertEqual(delivery_ids(dispatcher.outbox), [])
        self.stop_cleanly(dispatcher)


class DeliverTests(DispatcherTestCase):
    """``deliver``: published first, stored only when the confirm does not come in time."""

    def test_a_confirmed_notification_is_never_written_to_the_outbox(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True)
        accepted: list[bool] = []
        d = dispatcher.deliver(new_entries(2), None, 2.0, accepted=lambda: accepted.append(True))
        self.assertEqual(accepted, [True])
        self.assertEqual(publisher.published_ids(), message_ids(2))
        self.assertEqual(dispatcher.status()["in_flight"], 2)
        self.assertNoResult(d)
        publisher.confirm(2)
        self.assertEqual(self.successResultOf(d), [True, True])
        self.assertEqual(count_rows(dispatcher.outbox, "outbox"), 0)
        self.assertEqual(dispatcher.status()["published"], 2)
        self.assertEqual(dispatcher.status()["in_flight"], 0)
        self.stop_cleanly(dispatcher)

    def test_a_delivery_is_checked_before_and_remembered_after(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True)
        d = dispatcher.deliver(new_entries(1), "delivery-7", 2.0)
        # Checked (nothing written), published, then remembered once confirmed.
        self.assertEqual(delivery_ids(dispatcher.outbox), [])
        publisher.confirm()
        self.assertEqual(self.successResultOf(d), [True])
        # Remembered at once (a redelivery is a duplicate), written behind.
        self.failureResultOf(dispatcher.deliver(new_entries(1), "delivery-7", 2.0), Duplicate)
        self.assertEqual(delivery_ids(dispatcher.outbox), [])
        self.clock.advance(0.2)
        self.assertEqual(delivery_ids(dispatcher.outbox), ["delivery-7"])
        again = dispatcher.deliver(new_entries(1, prefix="again"), "delivery-7", 2.0)
        self.failureResultOf(again, Duplicate)
        self.assertEqual(publisher.published_ids(), message_ids(1))
        self.stop(dispatcher)

    def test_no_confirm_in_time_stores_it_and_a_late_confirm_leaves_a_copy(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True)
        d = dispatcher.deliver(new_entries(1), "delivery-8", 2.0)
        self.clock.advance(2.0)
        self.assertEqual(self.successResultOf(d), [False])
        # Stored with its delivery id, and published again from the outbox.
        self.assertEqual(dispatcher.outbox.depth, 1)
        self.assertEqual(delivery_ids(dispatcher.outbox), ["delivery-8"])
        self.assertEqual(publisher.published_ids(), ["m0", "m0"])
        publisher.confirm(2)
        self.stop_emptied(dispatcher)

    def test_a_nack_or_a_lost_connection_stores_it(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=True)
        nacked = dispatcher.deliver(new_entries(1, prefix="n"), None, 2.0)
        publisher.nack()
        self.assertEqual(self.successResultOf(nacked), [False])
        self.assertEqual(dispatcher.status()["nacked"], 1)
        lost = dispatcher.deliver(new_entries(1, prefix="l"), None, 2.0)
        publisher.lose()
        self.assertEqual(self.successResultOf(lost), [False])
        self.assertEqual(dispatcher.outbox.depth, 2)
        publisher.connect()
        self.clock.advance(1.0)  # the nack's pause
        self.assertEqual(publisher.published_ids()[-2:], ["n0", "l0"])
        self.stop(dispatcher)

    def test_with_notifications_waiting_in_the_outbox_new_ones_queue_behind_them(self) -> None:
        dispatcher, publisher = self.make_dispatcher(connected=False)
        self.store_each(dispatcher, new_entries(3, prefix="old"))
        publisher.connect()
        self.assertEqual(publisher.published_ids(), message_ids(3, prefix="old"))
        # Published from the outbox, not yet confirmed: a new call is not
        # published before them, it goes through the outbox too.
        d = dispatcher.deliver(new_entries(1, prefix="new"), None, 2.0)
        publisher.confirm(3)
        self.assertEqual(publisher.published_ids()[-1], "new0")
        publisher.confirm()
        self.assertEqual(self.successResultOf(d), [True])
        self.stop(dispatcher)

    def test_without_a_broker_it_is_stored_at_once(self) -> None:
        dispatcher, _ = self.make_dispatcher(connected=False)
        accepted: list[bool] = []
        d = dispatcher.deliver(new_entries(1), "delivery-9", 0, accepted=lambda: accepted.append(1))
        self.assertEqual(self.successResultOf(d), [False])
        self.assertEqual(accepted, [1])
        self.assertEqual(dispatcher.outbox.depth, 1)
        self.failureResultOf(dispatcher.deliver(new_entries(1), "delivery-9", 0), Duplicate)
        self.stop(dispatcher)

    def test_stop_stores_what_waits_for_its_confirm(self) -> None:
        dispatcher, _ = self.make_dispatcher(connected=True, drain_timeout=1)
        d = dispatcher.deliver(new_entries(1), None, 30)
        stopped = dispatcher.parent.stopService()
        self.clock.pump([0.05] * 25)
        self.successResultOf(stopped)
        self.assertEqual(self.successResultOf(d), [False])
        reopened = self.open()
        self.assertEqual(reopened.depth, 1)


def count_rows(outbox: Outbox, table: str) -> int:
    with closing(sqlite3.connect(outbox.path)) as connection:
        return connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608
