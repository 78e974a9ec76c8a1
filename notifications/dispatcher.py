"""The dispatcher: moves notifications from the outbox to the broker, in order.

A notification enters through :meth:`Dispatcher.store` (durable once its
Deferred fires) and leaves the outbox only when the broker confirms it. The
dispatcher publishes over the publisher's connection with a bounded number of
unconfirmed messages (the in-flight window); a message that was not
confirmed (connection lost, ``basic.nack``) goes back in its place and is
published again, so the exchange receives notifications in the order they
were accepted.

Memory stays bounded whatever the broker does: at most ``memory_limit``
entries are kept in memory; past that the outbox is said to have *spilled*
and entries are paged in from disk as the broker takes them.

The dispatcher neither opens the outbox nor connects the publisher: the
:class:`~notifications.delivery.DeliveryService` that owns all three starts
them in order and stops them in the reverse one, the dispatcher's drain first.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from .outbox import Duplicate, Entry, NewEntry, Outbox
from .publisher import PublicationRefused, Publisher


class Dispatcher(service.Service):
    """Owns the outbox and the publisher; publishes what the outbox holds."""

    log = Logger()

    def __init__(
        self,
        outbox: Outbox,
        publisher: Publisher,
        reactor,
        window: int = 256,
        memory_limit: int = 1024,
        page: int = 512,
        drain_timeout: float = 10.0,
        nack_delay: float = 1.0,
    ):
        self.outbox = outbox
        self.publisher = publisher
        self.reactor = reactor
        self.window = window
        self.memory_limit = memory_limit
        self.page = page
        self.drain_timeout = drain_timeout
        self.nack_delay = nack_delay
        #: Gate calls being processed (between :meth:`call_started` and
        #: :meth:`call_finished`): they may still store notifications, so the
        #: drain waits for them.
        self.calls_in_progress = 0
        self.published = 0
        self.nacked = 0
        self._queue: deque[Entry] = deque()
        self._requeued: list[Entry] = []
        self._inflight: dict[int, Entry] = {}
        #: When each in-flight entry was published (insertion order: oldest first).
        self._sent_at: dict[int, float] = {}
        self._cursor = 0
        self._spilled = False
        self._loading = False
        self._waiters: dict[int, defer.Deferred] = {}
        #: (deadline, entry id) of the waiters, earliest first; confirmed ones
        #: stay until the timer passes them.
        self._deadlines: list[tuple[float, int]] = []
        self._expiry = None
        self._confirmed: list[int] = []
        #: Notifications published before being stored (:meth:`deliver`): when
        #: each was sent, by a key of their own (negative, apart from entry ids).
        self._direct_sent: dict[int, float] = {}
        self._next_direct = -1
        self._removing = False
        self._flush_waiters: list[defer.Deferred] = []
        self._paused: object = None
        self._purge: task.LoopingCall | None = None
        self._refresh: task.LoopingCall | None = None
        #: Creation time of the oldest entry of the outbox, refreshed every few seconds.
        self.oldest_created: float | None = None
        publisher.connected_listeners.append(self._pump)

    # Service -----------------------------------------------------------------

    def startService(self) -> None:
        """Start publishing what the (open) outbox holds, and the periodic chores."""
        super().startService()
        # What the outbox held at start is read from disk as the broker takes it.
        self._spilled = self.outbox.depth > 0
        if self._spilled:
            self.log.info(
                "Replaying {depth} notifications left in the outbox", depth=self.outbox.depth
            )
        self._purge = task.LoopingCall(self._forget_deliveries)
        self._purge.clock = self.reactor
        self._purge.start(3600, now=True)
        self._refresh = task.LoopingCall(self._refresh_oldest)
        self._refresh.clock = self.reactor
        self._refresh.start(5, now=True)

    def _refresh_oldest(self) -> defer.Deferred:
        d = self.outbox.oldest()

        def refreshed(oldest: float | None) -> None:
            self.oldest_created = oldest

        d.addCallbacks(refreshed, lambda f: self.log.failure("Could not read the outbox", f))
        return d

    def _forget_deliveries(self) -> defer.Deferred:
        # Wrapped so that one failure cannot stop the loop.
        d = self.outbox.forget_deliveries()
        d.addErrback(lambda f: self.log.failure("Could not purge old delivery ids", f))
        return d

    @defer.inlineCallbacks
    def stopService(self):
        """Finish the calls in progress and drain for a bounded time; answer the
        waiters left. The publisher and the outbox are still open afterwards."""
        super().stopService()
        for loop in (self._purge, self._refresh):
            if loop is not None and loop.running:
                loop.stop()
        deadline = self.reactor.seconds() + self.drain_timeout
        while self.reactor.seconds() < deadline and not self._idle():
            yield task.deferLater(self.reactor, 0.05)
        if self._paused is not None and self._paused.active():
            self._paused.cancel()
        self._paused = None
        waiters, self._waiters = self._waiters, {}
        self._forget_deadlines()
        for waiter in waiters.values():
            waiter.callback(False)
        if not self._idle():
            self.log.warn(
                "Stopping with {depth} notifications left in the outbox for the next start",
                depth=self.outbox.depth - len(self._confirmed),
            )

    def flush(self) -> defer.Deferred:
        """Fires once what the broker has confirmed is removed from the outbox."""
        if not self._removing and not self._confirmed:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._flush_waiters.append(d)
        self._flush_confirmed()
        return d

    def _idle(self) -> bool:
        return (
            self.calls_in_progress == 0
            and not self._queue
            and not self._requeued
            and not self._inflight
            and not self._spilled
        )

    # Entering ------------------------------------------------------------------

    def call_started(self) -> None:
        """A gate call begins: it may store notifications until :meth:`call_finished`."""
        self.calls_in_progress += 1

    def call_finished(self) -> None:
        self.calls_in_progress -= 1

    def store(self, entries: Sequence[NewEntry], delivery: str | None = None) -> defer.Deferred:
        """Make entries durable, then queue them for the broker; fires with the entries."""
        return self.outbox.add(entries, delivery).addCallback(self._accept)

    def _accept(self, entries: list[Entry]) -> list[Entry]:
        # Results of the outbox come in commit order, so ids only grow here.
        for entry in entries:
            if not self._spilled and len(self._queue) < self.memory_limit:
                self._queue.append(entry)
                self._cursor = entry.id
            else:
                self._spilled = True
        self._pump()
        return entries

    def stalled(self, threshold: float) -> bool:
        """Whether the oldest unconfirmed publication waits for more than ``threshold`` s.

        A broker that accepts frames but does not confirm them (a network
        partition not yet noticed by the heartbeats) would make every caller
        wait for its whole timeout: callers are answered "queued" at once then.
        """
        now = self.reactor.seconds()
        for sent in self._sent_at.values():
            if now - sent > threshold:
                return True
            break
        for sent in self._direct_sent.values():
            return now - sent > threshold
        return False

    # The common case: published first, stored only when need be -----------------

    def deliver(
        self,
        entries: Sequence[NewEntry],
        delivery: str | None,
        timeout: float,
        accepted: Callable[[], object] | None = None,
    ) -> defer.Deferred:
        """Make notifications durable and say which the broker confirmed within ``timeout``.

        Fires with one boolean per entry: True when the broker confirmed it
        (``published``), False when it is in the outbox instead (``queued``).
        Fails with :class:`~.outbox.Duplicate` for a delivery id seen within
        the window, with :class:`~.outbox.OutboxError` when an entry could be
        neither confirmed nor stored.

        When the broker takes notifications as they come (connected, nothing
        waiting in the outbox before them, nothing refused lately), they are
        published at once, and an entry is written to the outbox only if its
        confirm does not come within ``timeout`` (a nack, the connection
        lost, a broker too slow): the broker's confirm is then its
        durability, as the outbox's commit is otherwise. A GitHub delivery id
        is checked before publishing and remembered once the notifications
        are durable, before the answer. Otherwise the entries go through the
        outbox, in order behind what waits there (:meth:`store`).

        ``accepted`` is called once the call is known not to be a duplicate
        (before its notifications are durable): the side actions start then.
        """
        accepted = accepted or _nothing
        if not self._direct(timeout):
            return self._stored_then_waited(entries, delivery, timeout, accepted)
        known = None if delivery is None else self.outbox.known_delivery(delivery)
        if known:
            return defer.fail(Duplicate(delivery))
        if delivery is None or known is False:
            accepted()
            return self._publish_directly(entries, delivery, timeout)
        d = self.outbox.check_delivery(delivery)

        def checked(_) -> defer.Deferred:
            accepted()
            return self._publish_directly(entries, delivery, timeout)

        return d.addCallback(checked)

    def _direct(self, timeout: float) -> bool:
        return (
            timeout > 0
            and self.running
            and self.publisher.connected
            and self._paused is None
            and not self._queue
            and not self._requeued
            and not self._spilled
            and not self._loading
        )

    def _stored_then_waited(
        self,
        entries: Sequence[NewEntry],
        delivery: str | None,
        timeout: float,
        accepted: Callable[[], object] = lambda: None,
    ) -> defer.Deferred:
        def stored(stored: list[Entry]) -> defer.Deferred:
            accepted()
            waits = [self.wait_confirmed(entry.id, timeout) for entry in stored]
            return (
                waits[0].addCallback(lambda confirmed: [confirmed])
                if len(waits) == 1
                else (defer.gatherResults(waits))
            )

        return self.store(entries, delivery).addCallback(stored)

    def _publish_directly(
        self, entries: Sequence[NewEntry], delivery: str | None, timeout: float
    ) -> defer.Deferred:
        if not self._direct(timeout):  # the broker went while the id was checked
            return self._stored_then_waited(entries, delivery, timeout)
        now = self.reactor.seconds()
        waits = []
        for message_id, routing_key, body in entries:
            key = self._next_direct
            self._next_direct -= 1
            self._direct_sent[key] = now
            published = self.publisher.publish(routing_key, body, message_id, int(now))
            published.addCallbacks(
                self._direct_settled, self._direct_settled, (key, True), None, (key, False)
            )
            waits.append(self.wait_confirmed(key, timeout))
        if len(waits) == 1:  # the common case: one callback, not two
            return waits[0].addCallback(self._directly_published_one, entries, delivery)
        d = defer.gatherResults(waits)
        return d.addCallback(self._directly_published, entries, delivery)

    def _direct_settled(self, result, key: int, confirmed: bool) -> None:
        """The broker's answer to a direct publication: ``confirmed``, or not and
        ``result`` is the failure."""
        self._direct_sent.pop(key, None)
        if confirmed:
            self.published += 1
        elif result.check(PublicationRefused):
            self.nacked += 1
        waiter = self._waiters.pop(key, None)
        if waiter is not None:
            if not self._waiters:
                self._forget_deadlines()
            waiter.callback(confirmed)

    def _directly_published_one(
        self, confirmed: bool, entries: Sequence[NewEntry], delivery: str | None
    ) -> defer.Deferred | list[bool]:
        return self._directly_published([confirmed], entries, delivery)

    def _directly_published(
        self, confirmed: list[bool], entries: Sequence[NewEntry], delivery: str | None
    ) -> defer.Deferred | list[bool]:
        missing = [entry for entry, ok in zip(entries, confirmed, strict=True) if not ok]
        if missing:
            # Not confirmed in time: into the outbox (the delivery id with them),
            # and published again from there. A late confirm of the first
            # publication makes that a copy with the same message id.
            d = self.store(missing, delivery)
            return d.addCallback(lambda _: confirmed)
        recorded = None if delivery is None else self.outbox.record_delivery(delivery)
        if recorded is None:
            return confirmed
        return recorded.addCallback(lambda _: confirmed)

    def wait_confirmed(self, entry_id: int, timeout: float) -> defer.Deferred:
        """Fires with True once the broker confirmed the entry, False after ``timeout``."""
        if timeout <= 0:
            return defer.succeed(False)
        d = defer.Deferred()
        self._waiters[entry_id] = d
        deadline = self.reactor.seconds() + timeout
        # One timer for every waiter (the earliest deadline) rather than a
        # delayed call each: under load a call per gate call was measurable.
        heapq.heappush(self._deadlines, (deadline, entry_id))
        if self._expiry is None or self._expiry.getTime() > deadline:
            self._arm_expiry(deadline)
        return d

    def _arm_expiry(self, deadline: float) -> None:
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        delay = max(0.0, deadline - self.reactor.seconds())
        self._expiry = self.reactor.callLater(delay, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        now = self.reactor.seconds()
        deadlines = self._deadlines
        while deadlines and (deadlines[0][0] <= now or deadlines[0][1] not in self._waiters):
            _, entry_id = heapq.heappop(deadlines)
            waiter = self._waiters.pop(entry_id, None)
            if waiter is not None:
                waiter.callback(False)
        if deadlines:
            self._arm_expiry(deadlines[0][0])

    def _forget_deadlines(self) -> None:
        # No waiter left: the timer and the deadlines of confirmed ones go.
        if self._expiry is not None and self._expiry.active():
            self._expiry.cancel()
        self._expiry = None
        self._deadlines.clear()

    # Publishing ---------------------------------------------------------------

    def _pump(self) -> None:
        if self._requeued:
            self._queue = deque(heapq.merge(sorted(self._requeued, key=_id), self._queue, key=_id))
            self._requeued.clear()
        if self._paused is None:
            while self.publisher.connected and len(self._inflight) < self.window and self._queue:
                entry = self._queue.popleft()
                self._inflight[entry.id] = entry
                self._sent_at[entry.id] = self.reactor.seconds()
                d = self.publisher.publish(
                    entry.routing_key, entry.body, entry.message_id, int(entry.created)
                )
                d.addCallbacks(self._on_confirm, self._on_failure, (entry,), None, (entry,))
        if self._spilled and not self._loading and len(self._queue) < self.page:
            self._page_in()

    def _on_confirm(self, _, entry: Entry) -> None:
        self._inflight.pop(entry.id, None)
        self._sent_at.pop(entry.id, None)
        self.published += 1
        self._confirmed.append(entry.id)
        waiter = self._waiters.pop(entry.id, None)
        if waiter is not None:
            if not self._waiters:
                self._forget_deadlines()
            waiter.callback(True)
        self._flush_confirmed()
        self._pump()

    def _on_failure(self, failure, entry: Entry) -> None:
        self._inflight.pop(entry.id, None)
        self._sent_at.pop(entry.id, None)
        self._requeued.append(entry)
        if failure.check(PublicationRefused):
            self.nacked += 1
            self.log.warn(
                "The broker refused notification {message_id} ({routing_key}); "
                "retrying in {delay} s",
                message_id=entry.message_id,
                routing_key=entry.routing_key,
                delay=self.nack_delay,
            )
            if self._paused is None:
                self._paused = self.reactor.callLater(self.nack_delay, self._resume)
        # A lost connection needs nothing more: the publisher calls _pump
        # again once it is connected.

    def _resume(self) -> None:
        self._paused = None
        self._pump()

    def _page_in(self) -> None:
        self._loading = True
        d = self.outbox.load(self._cursor, self.page)

        def loaded(entries: list[Entry]) -> None:
            self._loading = False
            if entries:
                self._queue.extend(entries)
                self._cursor = entries[-1].id
            if len(entries) < self.page:
                # Everything committed before this read is in memory now, and
                # what commits after it reaches _accept after this callback.
                self._spilled = False
            self._pump()

        def failed(failure) -> None:
            self._loading = False
            self.log.failure("Could not read the outbox; trying again", failure)
            self.reactor.callLater(1.0, self._pump)

        d.addCallbacks(loaded, failed)

    def _flush_confirmed(self) -> None:
        # One removal at a time; what is confirmed meanwhile goes with the next.
        if self._removing:
            return
        if not self._confirmed:
            waiters, self._flush_waiters = self._flush_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return
        ids, self._confirmed = self._confirmed, []
        self._removing = True

        def removed(_) -> None:
            self._removing = False
            self._flush_confirmed()

        def failed(failure):
            # The entries stay on disk: they will be published again (with
            # the same message id) at the next start.
            self.log.failure("Could not remove confirmed notifications from the outbox", failure)

        d = self.outbox.remove(ids)
        d.addErrback(failed)
        d.addBoth(removed)

    # Figures --------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Notifications published and waiting for the broker's confirm."""
        return len(self._inflight) + len(self._direct_sent)

    def report(self) -> defer.Deferred:
        """:meth:`status` and ``oldest_age``, the age in seconds of the oldest
        notification waiting (None when the outbox is empty), read now."""

        def reported(oldest: float | None) -> dict:
            figures = self.status()
            now = self.reactor.seconds()
            figures["oldest_age"] = None if oldest is None else round(max(0.0, now - oldest), 3)
            return figures

        return self.outbox.oldest().addCallback(reported)

    def status(self) -> dict:
        return {
            "depth": self.outbox.depth,
            "in_flight": self.in_flight,
            "in_memory": len(self._queue) + len(self._requeued),
            "published": self.published,
            "nacked": self.nacked,
        }


def _nothing() -> None:
    pass


def _id(entry: Entry) -> int:
    return entry.id
