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
from collections.abc import Iterator
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
    """The last :data:`RECENT` notifications of the archive, followed live.

    A :class:`~notifications.consumer.ConnectionUser`: on each connection it
    reads the stream from where it stopped (or, the first time, from a little
    before its last chunk), keeps the newest entries by offset, and follows
    what is appended. Until the first connection, and with the archive off or
    refused, it holds nothing: ``available`` is False then.
    """

    log = Logger()

    #: Seconds before reading again a stream that could not be read (not yet
    #: declared by the publisher's connection, say), doubled up to the last.
    retry_delays = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0)

    def __init__(self, queue: str, reactor, size: int = RECENT):
        self.queue = queue
        self.reactor = reactor
        self.size = size
        self._client: AMQPClient | None = None
        self._retry = None
        self._failures = 0
        self._entries: dict[int, dict] = {}
        self._readers: list[StreamReader] = []
        self._last_offset: int | None = None
        self.available = False

    def entries(self) -> list[dict]:
        """Newest first."""
        return [self._entries[offset] for offset in sorted(self._entries, reverse=True)]

    def __iter__(self) -> Iterator[dict]:
        return iter(self.entries())

    def connected(self, client: AMQPClient) -> None:
        self._client = client
        self._start(client)

    def _start(self, client: AMQPClient) -> None:
        self._retry = None
        if client is not self._client:
            return  # that connection is gone; the next one starts again
        if self._last_offset is not None:
            self._follow(client, self._last_offset + 1)
            return
        # The first time: where the stream ends now ("last" gives its last
        # chunk), then a little before it.
        self._follow(client, "last", first_time=True)

    def lost(self) -> None:
        # The channels went with the connection: the readers end by themselves.
        self._client = None
        self._readers.clear()
        self._cancel_retry()

    def stop(self) -> defer.Deferred:
        self._client = None
        self._cancel_retry()
        readers, self._readers = self._readers, []
        closing = [defer.ensureDeferred(reader.close()) for reader in readers]
        return defer.gatherResults(closing, consumeErrors=True)

    def _follow(self, client: AMQPClient, offset, first_time: bool = False) -> None:
        reader = StreamReader(client, self.queue, offset, prefetch=50)
        self._readers.append(reader)
        d = defer.ensureDeferred(self._read(client, reader, first_time))
        d.addErrback(self._failed, reader)

    async def _read(self, client: AMQPClient, reader: StreamReader, first_time: bool) -> None:
        await reader.start()
        self.available = True
        self._failures = 0
        backfilled = not first_time
        async for delivery in reader:
            if not backfilled:
                backfilled = True
                start = max(0, int(delivery.offset) - LOOKBACK)
                if start < delivery.offset:
                    self._backfill(client, start, int(delivery.offset))
            self._add(delivery)

    def _backfill(self, client: AMQPClient, start: int, end: int) -> None:
        # What came before the last chunk: read from start up to end, then stop.
        reader = StreamReader(client, self.queue, start, prefetch=LOOKBACK)
        self._readers.append(reader)

        async def read() -> None:
            await reader.start()
            try:
                await self._take_until(reader, end)
            finally:
                await reader.close()
            if reader in self._readers:
                self._readers.remove(reader)

        defer.ensureDeferred(read()).addErrback(self._failed, reader)

    async def _take_until(self, reader: StreamReader, end: int) -> None:
        async for delivery in reader:
            if delivery.offset >= end:
                return
            self._add(delivery)

    def _add(self, delivery: StreamDelivery) -> None:
        offset = int(delivery.offset)
        if self._last_offset is None or offset > self._last_offset:
            self._last_offset = offset
        entry = recent_entry(delivery)
        if entry is None:
            return
        self._entries[offset] = entry
        if len(self._entries) > self.size:
            for old in sorted(self._entries)[: len(self._entries) - self.size]:
                del self._entries[old]

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _failed(self, failure, reader: StreamReader) -> None:
        if reader in self._readers:
            self._readers.remove(reader)
        if not failure.check(StreamClosed, Closed, defer.CancelledError):
            self.log.failure("Could not read the archive {queue}", failure, queue=self.queue)
        # The stream may not be there yet (the publisher's connection declares
        # it), or was refused (said once by the declaration): try again later,
        # on this connection, unless it is gone (lost() follows then).
        client = self._client
        if client is not None and not self._readers and self._retry is None:
            delay = self.retry_delays[min(self._failures, len(self.retry_delays) - 1)]
            self._failures += 1
            self._retry = self.reactor.callLater(delay, self._start, client)
