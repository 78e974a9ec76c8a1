"""Server-sent events: ``GET /events``, the notifications a consumer may read, as they come
(reference §10).

A browser's ``EventSource``, ``curl -N`` or a CI script reads notifications
over plain HTTP, authenticated by a consumer's token (``[[consumers]]``):

- Each stream reads the archive (:mod:`notifications.archive`) with a
  :class:`~notifications.amqp.stream.StreamReader` of its own, on the
  daemon's reading connection. The event's ``id`` is the notification's
  offset in the archive, so a client that reconnects with ``Last-Event-ID``
  resumes right after it: nothing missed, nothing twice, whichever process
  or instance it reconnects to, across restarts, within the archive's
  retention; past it, an ``event: gap`` says that notifications may have
  been missed.
- Where a stream starts is found exactly with an end marker
  (:func:`~notifications.amqp.stream.publish_marker`): a new stream starts
  after it; a resumed one checks that its ``Last-Event-ID`` is not past it
  (an id from an archive started again is a gap, not a wait for an offset
  that may never come). So each request writes one small marker message.
- Flow control goes all the way to the broker: the stream is the HTTP
  transport's push producer, takes a notification from its reader only while
  the transport is not paused, and the reader acknowledges (gives the broker
  credit for) only what is taken. A client that does not read stops the
  broker; once the notifications waiting for it reach the reader's prefetch
  or ``[events] max_buffer`` bytes, it is disconnected (it may reconnect and
  resume), so that a stuck client never grows the daemon's memory.
- A lost broker connection keeps the HTTP streams open (heartbeats go on);
  each resumes from its position when the connection is back.

Rights: a consumer may ask for a pattern only if every routing key it matches
is matched by one of the consumer's own patterns
(:func:`~notifications.routing.covers`); then it receives the notifications
whose routing key matches one of the patterns it asked for (all of its own
when it asks for none).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IPushProducer
from twisted.logger import Logger
from twisted.web import server
from txamqp.client import Closed
from zope.interface import implementer

from .amqp.connection import AMQPClient
from .amqp.stream import MarkerNotConfirmed, StreamClosed, StreamReader, publish_marker
from .config import Config, ConsumerConfig
from .http import Leaf
from .routing import compile_pattern, covers, pattern_error

EVENT_STREAM = "text/event-stream; charset=utf-8"

#: Milliseconds a client waits before it reconnects (sent at the start of each stream).
RETRY_MS = 2000

#: Deliveries a stream's reader holds at most (the broker waits for the rest).
PREFETCH = 32

#: Patterns one request may ask for.
MAX_PATTERNS = 32

#: Seconds a stream waits for the archive while it looks for its start.
ATTACH_TIMEOUT = 30.0

#: Seconds before a stream reads the archive again after it could not.
REATTACH_DELAY = 2.0

#: Retry-After of the 503 answers that are worth retrying.
RETRY_AFTER = 5

#: ``Last-Event-ID``: an offset, as the events' ids are.
_EVENT_ID = re.compile(r"[0-9]{1,19}")

# The answers' texts (the OpenAPI document says them as they are).
UNAUTHORIZED = "Unauthorized."
FORBIDDEN = "Forbidden."
BAD_REQUEST = "Bad request."
UNAVAILABLE = "Service unavailable."
MISSING_CREDENTIAL = "Send a consumer's token: Authorization: Bearer <token> (or ?token=)."
UNKNOWN_CREDENTIAL = "This token is not a consumer's."
READS_NOTHING = "This consumer may read no pattern."
ARCHIVE_OFF = "The event stream reads the archive, which is off ([archive] enabled = false)."
TOO_MANY_STREAMS = "Too many event streams are open, retry later."
NOT_CONNECTED = "The daemon is not connected to the broker, retry later."
UNREADABLE = "The archive cannot be read now, retry later."


class Refusal(Exception):
    """A request that gets no stream: its status, its two lines, its headers."""

    def __init__(self, status: int, first: str, reason: str, headers: dict | None = None):
        super().__init__(reason)
        self.status = status
        self.first = first
        self.reason = reason
        self.headers = headers or {}

    def render(self, request) -> bytes:
        request.setResponseCode(self.status)
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        for name, value in self.headers.items():
            request.setHeader(name.encode(), value.encode())
        return f"{self.first}\n{self.reason}\n".encode()


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


def find_consumer(consumers: Sequence[ConsumerConfig], token: str) -> ConsumerConfig | None:
    """The consumer whose token this is, compared in constant time: every consumer's
    token is compared (as digests of one length), whichever matches."""
    given = _digest(token)
    found = None
    for consumer in consumers:
        if hmac.compare_digest(given, _digest(consumer.token)) and found is None:
            found = consumer
    return found


def bearer_token(request) -> str | None:
    """The token of ``Authorization: Bearer <token>``, else of ``?token=`` (which
    ``EventSource`` in a browser needs: it cannot set headers), else None."""
    header = request.getHeader(b"authorization")
    if header:
        scheme, _, value = header.decode("latin-1").strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
        return None
    values = request.args.get(b"token")
    if values:
        return values[0].decode("utf-8", "replace")
    return None


def requested_patterns(request) -> list[str]:
    """The ``pattern`` parameters, checked; a :class:`Refusal` (400) when one is wrong."""
    patterns = []
    for raw in request.args.get(b"pattern", []):
        try:
            pattern = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Refusal(400, BAD_REQUEST, "A pattern must be UTF-8.") from None
        problem = pattern_error(pattern)
        if problem is not None:
            raise Refusal(400, BAD_REQUEST, f"{pattern!r} is not a routing-key pattern: {problem}")
        patterns.append(pattern)
    if len(patterns) > MAX_PATTERNS:
        raise Refusal(400, BAD_REQUEST, f"At most {MAX_PATTERNS} patterns per stream.")
    return list(dict.fromkeys(patterns))


def last_event_id(request) -> int | None:
    header = request.getHeader(b"last-event-id")
    if header is None or not header.strip():
        return None
    text = header.decode("latin-1").strip()
    if not _EVENT_ID.fullmatch(text):
        raise Refusal(400, BAD_REQUEST, "Last-Event-ID must be an event id of this stream.")
    return int(text)


def event(name: str, data: bytes, event_id: int | None = None) -> bytes:
    """One event in the ``text/event-stream`` format: ``id``, ``event``, ``data`` lines.

    Written here: the format is three kinds of lines and a blank one (the HTML
    standard's server-sent events), and neither Twisted nor treq writes it.
    """
    lines = [] if event_id is None else [b"id: %d" % event_id]
    lines.append(b"event: " + name.encode())
    # A data line ends at a line break: one data line per line of the payload.
    lines.extend(b"data: " + line for line in data.splitlines() or [b""])
    return b"\n".join(lines) + b"\n\n"


def _json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except (ValueError, UnicodeDecodeError):
        return False


class _Reader(StreamReader):
    """A stream reader that tells its stream of every delivery that arrives."""

    def __init__(self, stream: EventStream, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.stream = stream

    def deliver(self, message) -> None:
        super().deliver(message)
        self.stream.arrived(self)


class _Gap(Exception):
    """Where the archive no longer holds what a stream was to resume after."""


@implementer(IPushProducer)
class EventStream:
    """One client's stream: its rights, its position in the archive, its flow control."""

    log = Logger()

    def __init__(
        self,
        streams: EventStreams,
        request,
        consumer: ConsumerConfig,
        patterns: list[str],
        resume_after: int | None,
    ):
        self.streams = streams
        self.request = request
        self.consumer = consumer
        self.patterns = patterns
        self._matchers = [compile_pattern(pattern) for pattern in patterns]
        #: The ``Last-Event-ID`` asked for (until the stream found it).
        self.resume_after = resume_after
        #: The id of the last event sent (what the client would resume after).
        self.last_sent = resume_after
        #: The offset of the last message the reader gave (a notification or not).
        self.position: int | None = None
        #: The offset a new reader must deliver first (already handled).
        self._expect: int | None = None
        self.reader: StreamReader | None = None
        self.started = False
        self.done = False
        self.paused = False
        self._aborting = False
        #: A gap found before the answer's head was sent: said right after it.
        self._early_gap: tuple[int | None, str] | None = None
        self._resumed: defer.Deferred | None = None
        self._retry = None
        self._heartbeat: task.LoopingCall | None = None
        self.sent = 0
        address = request.getClientAddress()
        host = getattr(address, "host", None)
        self.peer = f"{host}:{address.port}" if host is not None else str(address)

    # Life --------------------------------------------------------------------------------

    def start(self, client: AMQPClient) -> None:
        self.request.notifyFinish().addBoth(self._finished)
        self._serve(client)

    def connected(self, client: AMQPClient) -> None:
        if not self.done and self.reader is None and self._retry is None:
            self._serve(client)

    def lost(self) -> None:
        # The reader ends by itself (StreamClosed); a new connection resumes.
        self._cancel_retry()

    def _serve(self, client: AMQPClient) -> None:
        d = defer.ensureDeferred(self._read(client))
        d.addErrback(self._crashed)

    async def _read(self, client: AMQPClient) -> None:
        try:
            reader = await self._attach(client)
        except (StreamClosed, MarkerNotConfirmed, Closed, defer.TimeoutError) as error:
            self._unreadable(client, error)
            return
        if self.done:
            await reader.close()
            return
        self.reader = reader
        if not self.started:
            self._begin()
        try:
            await self._pump(reader)
        except StreamClosed as error:
            if not error.by_owner:
                self._unreadable(client, error)
        finally:
            if self.reader is reader:
                self.reader = None
            await reader.close()

    def _unreadable(self, client: AMQPClient, error: Exception) -> None:
        if self.done:
            return
        if not self.started:
            self.log.warn(
                "Could not start the event stream of consumer {consumer}: {error}",
                consumer=self.consumer.name,
                error=str(error),
            )
            refusal = Refusal(503, UNAVAILABLE, UNREADABLE, {"Retry-After": str(RETRY_AFTER)})
            self.request.write(refusal.render(self.request))
            self.request.finish()
            return
        # Streaming: keep the client (heartbeats go on) and read again, on this
        # connection if it is still there, else on the next one (connected()).
        if self.streams.client is client and not client.closed:
            self._retry = self.streams.reactor.callLater(REATTACH_DELAY, self._again, client)

    def _again(self, client: AMQPClient) -> None:
        self._retry = None
        if not self.done and self.streams.client is client:
            self._serve(client)

    def _cancel_retry(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None

    def _crashed(self, failure) -> None:
        self.log.failure(
            "The event stream of consumer {consumer} failed", failure, consumer=self.consumer.name
        )
        self.abort()

    # Where to start ----------------------------------------------------------------------

    async def _attach(self, client: AMQPClient) -> StreamReader:
        """A reader placed where this stream goes on (see the module's documentation)."""
        queue = self.streams.queue
        if self.position is not None:
            # Again after an interruption: from the last message read, which the
            # new reader must give first (else the archive dropped it meanwhile).
            reader = self._reader(client, self.position)
            await reader.start()
            self._expect = self.position
            return reader
        # The end of the archive now: a marker written after a reader placed on its last chunk.
        probe = self._reader(client, "last")
        await probe.start()
        try:
            marker = await publish_marker(client, queue)
            while True:
                delivery = await probe.get().addTimeout(ATTACH_TIMEOUT, client.clock)
                if delivery.marker == marker:
                    break
        except BaseException:
            await probe.close()
            raise
        end = delivery.offset
        self.position = end
        resume = self.resume_after
        if resume is None:
            return probe  # a new stream: what comes after the marker
        if resume > end:
            self._early_gap = (resume, "not an event id of this archive (was it started again?)")
            return probe
        # Resumed: from the client's last event, which the reader must give first.
        await probe.close()
        reader = self._reader(client, resume)
        await reader.start()
        self.position = resume
        self._expect = resume
        return reader

    def _reader(self, client: AMQPClient, offset) -> StreamReader:
        return _Reader(self, client, self.streams.queue, offset, prefetch=PREFETCH, markers=True)

    # Sending -----------------------------------------------------------------------------

    def _begin(self) -> None:
        """The answer's head, once the stream has its place in the archive."""
        self.started = True
        request = self.request
        request.setResponseCode(200)
        request.setHeader(b"content-type", EVENT_STREAM.encode())
        request.setHeader(b"cache-control", b"no-store")
        # nginx would buffer the stream otherwise.
        request.setHeader(b"x-accel-buffering", b"no")
        request.registerProducer(self, True)
        self._write(b"retry: %d\n\n" % RETRY_MS)
        if self._early_gap is not None:
            self._gap(*self._early_gap)
            self._early_gap = None
        self._heartbeat = task.LoopingCall(self._beat)
        self._heartbeat.clock = self.streams.reactor
        self._heartbeat.start(self.streams.config.events.heartbeat, now=False)
        self.log.info(
            "Consumer {consumer} reads {patterns} from {peer}",
            consumer=self.consumer.name,
            patterns=" ".join(self.patterns),
            peer=self.peer,
        )

    async def _pump(self, reader: StreamReader) -> None:
        while not self.done:
            if self.paused:
                self._resumed = defer.Deferred()
                await self._resumed
                continue
            delivery = await reader.get()
            offset = delivery.offset
            expected, self._expect = self._expect, None
            if expected is not None:
                if offset == expected:
                    continue  # already sent (or skipped) before
                if offset > expected:
                    self._gap(self.last_sent, "no longer in the archive: notifications may be lost")
            self.position = offset
            if delivery.marker is not None:
                continue
            if not any(matcher(delivery.message.routing_key) for matcher in self._matchers):
                continue
            body = delivery.body
            if not _json_object(body):
                continue  # not a notification (another publisher's message)
            self._write(event("notification", body, offset))
            self.last_sent = offset
            self.sent += 1
            self.streams.sent += 1

    def _gap(self, after: int | None, reason: str) -> None:
        data = json.dumps({"lastEventId": None if after is None else str(after), "reason": reason})
        self.log.info(
            "A gap in the event stream of consumer {consumer} after {after}: {reason}",
            consumer=self.consumer.name,
            after=after,
            reason=reason,
        )
        self._write(event("gap", data.encode()))

    def _write(self, data: bytes) -> None:
        if not self.done:
            self.request.write(data)

    def _beat(self) -> None:
        if not self.paused and not self.done:
            self._write(b": keep-alive\n\n")

    # Flow control (IPushProducer) ---------------------------------------------------------

    def pauseProducing(self) -> None:
        self.paused = True

    def resumeProducing(self) -> None:
        self.paused = False
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)

    def stopProducing(self) -> None:
        self.abort()

    def arrived(self, reader: StreamReader) -> None:
        """A delivery arrived for this stream: a client that does not read is dropped
        once what waits for it fills the reader's prefetch or ``max_buffer``."""
        if not self.paused or self.done or reader is not self.reader:
            return
        limit = self.streams.config.events.max_buffer
        if reader.buffered >= PREFETCH or reader.buffered_bytes >= limit:
            self.log.warn(
                "Disconnected consumer {consumer} at {peer}: it reads too slowly "
                "({count} notifications, {size} bytes waiting for it)",
                consumer=self.consumer.name,
                peer=self.peer,
                count=reader.buffered,
                size=reader.buffered_bytes,
            )
            self.streams.too_slow += 1
            self.abort()

    # Ending ------------------------------------------------------------------------------

    def abort(self) -> None:
        """Drop the connection at once (a stuck client never takes what is written)."""
        if self.done or self._aborting:
            return
        self._aborting = True
        transport = getattr(self.request.channel, "transport", None)
        if transport is not None:
            transport.abortConnection()
        else:
            self._finished(None)

    def end(self) -> None:
        """End the answer cleanly (the daemon stops, the consumer's rights changed):
        the client reconnects with its Last-Event-ID."""
        if self.done:
            return
        if self.started:
            self.request.unregisterProducer()
            self.request.finish()
        else:
            refusal = Refusal(503, UNAVAILABLE, UNREADABLE, {"Retry-After": str(RETRY_AFTER)})
            self.request.write(refusal.render(self.request))
            self.request.finish()

    def _finished(self, result) -> None:
        if self.done:
            return
        self.done = True
        self.streams.forget(self)
        self._cancel_retry()
        if self._heartbeat is not None and self._heartbeat.running:
            self._heartbeat.stop()
        resumed, self._resumed = self._resumed, None
        if resumed is not None:
            resumed.callback(None)
        reader, self.reader = self.reader, None
        if reader is not None:
            defer.ensureDeferred(reader.close())


class EventStreams(service.Service):
    """Every open event stream of the process, and what they share.

    A :class:`~notifications.consumer.ConnectionUser` (its streams read over the
    daemon's reading connection), and the service that ends them all when the
    daemon stops. Reloads apply at once: new consumers, tokens and patterns for
    the requests that follow, and a stream whose consumer lost its right to what
    it reads is ended (its client reconnects and is refused).
    """

    log = Logger()

    def __init__(self, config: Config, reactor):
        self.config = config
        self.reactor = reactor
        self.queue = config.archive.queue
        self.archive = config.archive.enabled
        self.client: AMQPClient | None = None
        self.streams: set[EventStream] = set()
        #: Events sent, streams opened, clients dropped for reading too slowly, requests refused.
        self.sent = 0
        self.opened = 0
        self.too_slow = 0
        self.refused: dict[int, int] = {}

    # The reading connection -----------------------------------------------------------------

    def connected(self, client: AMQPClient) -> None:
        self.client = client
        for stream in list(self.streams):
            stream.connected(client)

    def lost(self) -> None:
        self.client = None
        for stream in list(self.streams):
            stream.lost()

    def forget(self, stream: EventStream) -> None:
        self.streams.discard(stream)

    def stopService(self):
        super().stopService()
        for stream in list(self.streams):
            stream.end()

    def reconfigure(self, config: Config) -> None:
        self.config = config
        for stream in list(self.streams):
            consumer = config.consumer(stream.consumer.name)
            if (
                consumer is None
                or consumer.token != stream.consumer.token
                or not all(covers(consumer.patterns, pattern) for pattern in stream.patterns)
            ):
                self.log.info(
                    "Ended the event stream of consumer {consumer}: the new configuration "
                    "no longer grants it",
                    consumer=stream.consumer.name,
                )
                stream.end()

    # Requests -----------------------------------------------------------------------------

    def authenticate(self, request) -> ConsumerConfig:
        token = bearer_token(request)
        challenge = 'Bearer realm="notifications"'
        if token is None:
            raise Refusal(401, UNAUTHORIZED, MISSING_CREDENTIAL, {"WWW-Authenticate": challenge})
        consumer = find_consumer(self.config.consumers, token)
        if consumer is None:
            raise Refusal(
                401,
                UNAUTHORIZED,
                UNKNOWN_CREDENTIAL,
                {"WWW-Authenticate": challenge + ', error="invalid_token"'},
            )
        return consumer

    def granted(self, consumer: ConsumerConfig, request) -> list[str]:
        """The patterns the stream reads: those asked for, each within the consumer's."""
        patterns = requested_patterns(request)
        if not consumer.patterns:
            raise Refusal(403, FORBIDDEN, READS_NOTHING)
        for pattern in patterns:
            if not covers(consumer.patterns, pattern):
                raise Refusal(
                    403,
                    FORBIDDEN,
                    f"{pattern!r} matches routing keys this consumer may not read "
                    f"(it may read {' '.join(consumer.patterns)}).",
                )
        return patterns or list(consumer.patterns)

    def open(self, request) -> int | bytes:
        """Check a request and start its stream (a :class:`Refusal` when it gets none)."""
        consumer = self.authenticate(request)
        patterns = self.granted(consumer, request)
        resume_after = last_event_id(request)
        if not self.archive:
            raise Refusal(503, UNAVAILABLE, ARCHIVE_OFF)
        if request.method == b"HEAD":
            request.setHeader(b"content-type", EVENT_STREAM.encode())
            return b""
        retry = {"Retry-After": str(RETRY_AFTER)}
        if len(self.streams) >= self.config.events.max_streams:
            raise Refusal(503, UNAVAILABLE, TOO_MANY_STREAMS, retry)
        client = self.client
        if client is None or not self.running:
            raise Refusal(503, UNAVAILABLE, NOT_CONNECTED, retry)
        stream = EventStream(self, request, consumer, patterns, resume_after)
        self.streams.add(stream)
        self.opened += 1
        stream.start(client)
        return server.NOT_DONE_YET

    def figures(self) -> dict[str, Any]:
        return {
            "enabled": self.archive,
            "open": len(self.streams),
            "opened": self.opened,
            "sent": self.sent,
            "tooSlow": self.too_slow,
            "maxStreams": self.config.events.max_streams,
        }


class EventsResource(Leaf):
    """``GET /events``: a stream of server-sent events (see :class:`EventStreams`)."""

    def __init__(self, streams: EventStreams):
        super().__init__()
        self.streams = streams

    def render_GET(self, request):
        try:
            return self.streams.open(request)
        except Refusal as refusal:
            self.streams.refused[refusal.status] = self.streams.refused.get(refusal.status, 0) + 1
            return refusal.render(request)

    render_HEAD = render_GET
