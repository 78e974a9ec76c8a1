"""History: every notification kept in a RabbitMQ stream queue, the archive.

The daemon declares a stream queue (``x-queue-type: stream``) bound to the
exchange with ``#``, after every (re)connection of its publisher and before
it publishes anything, so that whatever it publishes is also appended to
the archive: an append-only log on the broker's disk, replicated over the
nodes of a cluster, trimmed by age (``x-max-age``) and size
(``x-max-length-bytes``), whole segments at a time. Readers choose where to
start (an offset, a time) and nothing is removed by reading
(:mod:`notifications.amqp.stream`).

- :func:`declare_archive`: the declaration, on a channel of its own, so
  that a broker that refuses it (a RabbitMQ without streams, a queue of
  that name with other arguments, a policy conflict) costs one clear log
  line and the daemon goes on without history.
- :class:`RecentNotifications`: the last notifications of the archive, as
  the status page shows them: every worker and every instance follow the
  same stream, so they show the same list, and the same after a restart.

The broker refuses to declare a stream again with other arguments: changing
``max_age`` or ``max_bytes`` takes a policy (``rabbitmqctl set_policy``) or a
new stream (another ``[archive] queue``); see the README, "History".
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from twisted.internet import defer
from twisted.logger import Logger
from txamqp.client import Closed

from .amqp.connection import AMQPClient, ChannelEvents, describe_error
from .amqp.fieldtable import Int64
from .amqp.stream import StreamClosed, StreamDelivery, StreamReader
from .config import ArchiveConfig
from .dashboard import RECENT

#: How far before the last chunk the recent list is read from: offsets have
#: gaps (the broker's own chunks take one each, see notifications.amqp.stream),
#: so a little more than RECENT is read, and the last RECENT kept.
LOOKBACK = 3 * RECENT


def stream_arguments(archive: ArchiveConfig) -> dict:
    """The ``queue.declare`` arguments of the archive stream."""
    return {
        "x-queue-type": "stream",
        "x-max-age": archive.max_age,
        "x-max-length-bytes": Int64(archive.max_bytes),
        "x-stream-max-segment-size-bytes": Int64(archive.segment_bytes),
    }


@dataclass
class ArchiveState:
    """What ``/health`` says of the archive."""

    enabled: bool
    queue: str
    #: Declared on the current connection (or the last one).
    declared: bool = False
    #: Why the broker refused it, when it did.
    error: str | None = None

    def status(self) -> dict:
        return {
            "enabled": self.enabled,
            "queue": self.queue,
            "on": self.enabled and self.declared,
            "error": self.error,
        }


class _Declaration(ChannelEvents):
    """The listener of the declaring channel: nothing to hear but its end."""


class ArchiveDeclarer:
    """Declares the archive on each new publishing connection; logs a refusal once."""

    log = Logger()

    def __init__(self, archive: ArchiveConfig, exchange: str):
        self.archive = archive
        self.exchange = exchange
        self.state = ArchiveState(enabled=archive.enabled, queue=archive.queue)

    @defer.inlineCallbacks
    def declare(self, client: AMQPClient):
        """Declare and bind the stream on a channel of its own; never fails."""
        if not self.archive.enabled:
            return self.state
        try:
            channel = yield client.open_extra_channel(_Declaration())
            try:
                yield channel.queue_declare(
                    queue=self.archive.queue,
                    durable=True,
                    arguments=stream_arguments(self.archive),
                )
                yield channel.queue_bind(
                    queue=self.archive.queue, exchange=self.exchange, routing_key="#"
                )
            finally:
                yield client.close_extra_channel(channel)
        except (Closed, StreamClosed) as error:
            reason = describe_error(error)
            if self.state.error != reason:
                self.log.error(
                    "The broker refused the archive stream {queue} ({reason}): the daemon "
                    "goes on without history. A queue of that name with other arguments? "
                    "Streams need RabbitMQ 3.9 or later.",
                    queue=self.archive.queue,
                    reason=reason,
                )
            self.state.declared = False
            self.state.error = reason
            return self.state
        if not self.state.declared:
            self.log.info(
                "Notifications are archived in the stream {queue} (kept {age}, at most "
                "{size} bytes)",
                queue=self.archive.queue,
                age=self.archive.max_age,
                size=self.archive.max_bytes,
            )
        self.state.declared = True
        self.state.error = None
        return self.state


def recent_entry(delivery: StreamDelivery) -> dict | None:
    """What the status page shows of an archived notification (None: not one)."""
    try:
        notification = json.loads(delivery.body)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(notification, dict):
        return None
    properties = delivery.properties

    def text(key: str) -> str:
        value = notification.get(key)
        return value if isinstance(value, str) else ""

    return {
        "time": properties.get("timestamp"),
        "service": text("service"),
        "project": text("project"),
        "group": text("group"),
        "type": text("type"),
        "text": text("text"),
        "link": text("link"),
        "routingKey": delivery.message.routing_key,
        "messageId": properties.get("message-id"),
        "offset": int(delivery.offset),
    }


class RecentNotifications:
    """The last :data:`RECENT` notifications of the archive, read when asked.

    A :class:`~notifications.consumer.ConnectionUser`. Reading is on demand,
    not a consumer following every notification: decoding each delivery costs
    the reactor more than the gate call that published it, and the list is
    only wanted while someone looks at the status page. :meth:`read` reads
    the stream's last chunk (``x-stream-offset: last``; its messages come in
    one burst, which ends when nothing more comes for ``settle`` seconds) and,
    when that holds fewer than :data:`RECENT`, a little before it, then keeps
    the newest by offset. A result is reused for ``cache_seconds``, so that
    any number of status pages cost one read a second.
    """

    log = Logger()

    #: Seconds a read is reused.
    cache_seconds = 1.0
    #: Seconds of silence that end the last chunk's burst.
    settle = 0.1
    #: Seconds a read may take at most.
    timeout = 3.0

    def __init__(self, queue: str, reactor, size: int = RECENT):
        self.queue = queue
        self.reactor = reactor
        self.size = size
        self._client: AMQPClient | None = None
        self._cached: tuple[float, list[dict]] | None = None
        self._reading: defer.Deferred | None = None
        self._waiting: list[defer.Deferred] = []

    @property
    def available(self) -> bool:
        """Whether the archive can be read now (a connection is up)."""
        return self._client is not None

    def connected(self, client: AMQPClient) -> None:
        self._client = client

    def lost(self) -> None:
        self._client = None
        self._cached = None

    def read(self) -> defer.Deferred:
        """The entries, newest first (a Deferred); fails when the stream cannot be read."""
        now = self.reactor.seconds()
        if self._cached is not None and now - self._cached[0] < self.cache_seconds:
            return defer.succeed(self._cached[1])
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        if self._reading is None:
            client = self._client
            if client is None:
                self._finish(StreamClosed("not connected to the broker"))
            else:
                self._reading = defer.ensureDeferred(self._read(client))
                self._reading.addTimeout(self.timeout, self.reactor)
                self._reading.addBoth(self._finish)
        return d

    def _finish(self, result) -> None:
        self._reading = None
        if isinstance(result, list):
            self._cached = (self.reactor.seconds(), result)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            if isinstance(result, list):
                d.callback(result)
            else:
                d.errback(result)

    async def _read(self, client: AMQPClient) -> list[dict]:
        entries: dict[int, dict] = {}
        last = StreamReader(client, self.queue, "last", prefetch=LOOKBACK)
        await last.start()
        try:
            first = await self._burst(last, entries)
        finally:
            await last.close()
        if first is not None and len(entries) < self.size and first > 0:
            before = StreamReader(client, self.queue, max(0, first - LOOKBACK), prefetch=LOOKBACK)
            await before.start()
            try:
                while True:
                    delivery = await before.get().addTimeout(self.timeout, self.reactor)
                    if delivery.offset >= first:
                        break
                    self._add(entries, delivery)
            finally:
                await before.close()
        return [entries[offset] for offset in sorted(entries, reverse=True)][: self.size]

    async def _burst(self, reader: StreamReader, entries: dict[int, dict]) -> int | None:
        """Take what the reader gets until ``settle`` seconds of silence (or, while
        notifications keep coming, for three times that); the first offset."""
        first = None
        deadline = self.reactor.seconds() + 3 * self.settle
        while True:
            wait = min(self.settle, deadline - self.reactor.seconds())
            if wait <= 0:
                return first
            try:
                delivery = await reader.get().addTimeout(wait, self.reactor)
            except defer.TimeoutError:
                return first
            if first is None:
                first = int(delivery.offset)
            self._add(entries, delivery)

    def _add(self, entries: dict[int, dict], delivery: StreamDelivery) -> None:
        entry = recent_entry(delivery)
        if entry is not None:
            entries[int(delivery.offset)] = entry
