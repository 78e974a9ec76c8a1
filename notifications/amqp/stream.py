"""Reading a RabbitMQ stream queue over AMQP 0-9-1.

A stream queue (``x-queue-type: stream``) keeps every message, in order, each
at an *offset*; consumers read it from wherever they choose and nothing is
removed by reading. :class:`StreamReader` reads one on its own channel of an
open connection; :func:`read_until_end` reads from a point to the end as it
is when called, and tells where that end was.

What RabbitMQ 3.10 does (observed on 3.10.8; ``tests/test_amqp_stream.py``
checks these points against the broker, but for the ``message-count``
figures, which depend on when the broker refreshes its statistics):

Consuming
    A stream consumer must set a prefetch (``basic.qos``; without one,
    ``basic.consume`` fails with a channel error, 406 PRECONDITION_FAILED)
    and acknowledge (``no-ack`` is refused with 540 NOT_IMPLEMENTED, which
    closes the *connection*). Acks only give the broker credit to send more:
    the message stays. ``basic.get``, ``basic.reject`` and ``basic.nack``
    on a stream close the whole connection too (540 NOT_IMPLEMENTED), so
    this module never sends them. The broker checks the credit before each
    *chunk* (what it wrote at once) and sends the whole chunk: a consumer
    holds at most ``prefetch`` deliveries plus the rest of one chunk (33 for
    a prefetch of 3 and a burst of 2000 messages). The reader acknowledges a
    delivery when its caller takes it, so a slow caller stops the broker, and
    memory stays bounded by that figure.

Offsets
    Every delivery has a header ``x-stream-offset``, a signed 64-bit integer
    (type ``l``). No other header is added: there is no per-message or
    per-chunk timestamp on an AMQP 0-9-1 delivery (only the message's own
    ``timestamp`` property, as its publisher set it). Offsets increase but
    are **not contiguous**: the broker writes chunks of its own (offset
    tracking, at the start of every segment file) that take an offset and
    are never delivered, so a reader cannot tell from offsets alone that it
    missed nothing or reached the end.

``x-stream-offset`` (what ``offset`` asks for)
    ``"first"``: the first message still retained. An integer: that offset
    exactly (a message inside a chunk included); an integer below the first
    retained offset reads from the first retained message (so would a
    negative one: :func:`offset_argument` refuses those); an integer past
    the end waits until the stream reaches that offset and reads from there
    (nothing before it is delivered). ``"next"``: only messages written after
    the consumer is attached. ``"last"``: the last *chunk* written, then
    what follows: one message when messages were published one at a time
    (each confirmed before the next), several when a publisher sent a burst
    that the broker wrote as one chunk; nothing on an empty stream. A
    timestamp (sent as type ``T``, so whole seconds): from the first chunk
    the broker wrote at or after that second, so the messages of that
    second before the time asked come first, and a chunk's messages come
    together. The reader drops the messages whose own ``timestamp`` property
    (whole seconds too, by the publisher's clock) is older than the time
    asked; those without a ``timestamp`` are kept. A notification accepted
    before that time but written later (replayed from the outbox after an
    outage) is dropped as well: by its timestamp it is older. A timestamp
    in the future acts as ``"next"``.

Header types in a stream (3.10)
    A stream stores messages in AMQP 1.0 form: field arrays (``A``) and
    tables (``F``) in ``headers`` are silently dropped (so is ``x-death``),
    and a decimal (``D``) makes the broker close the *publisher's*
    connection with 541 INTERNAL_ERROR (the message is lost). Every other
    type comes back with its type.

The end of a stream
    ``queue.declare`` (passive) gives a ``message-count`` that is neither
    exact nor current: it is the span of offsets (untracked chunks counted)
    as of a statistics refresh every few seconds: 0 for a stream just
    written, 14 for eleven messages left by retention. ``"last"`` gives the
    last chunk's offsets, but no frame says where a chunk ends, and an empty
    stream gives nothing: both could only be settled by waiting. The stream
    protocol (another port and client library) tells the committed offset,
    AMQP 0-9-1 does not. So :func:`read_until_end` publishes a *marker*: an
    empty message with the header :data:`MARKER_HEADER` (a random id), sent
    straight to the stream queue through the default exchange with a
    publisher confirm, once its reader is attached. Everything written to the
    stream before the marker is before it in the stream, whichever connection
    wrote it; the read ends when the reader meets that marker. It is exact
    with concurrent publishers (what they write after the marker is after
    the end), works on an empty stream and for any start, and costs one
    small message per read. :class:`StreamReader` skips markers unless asked
    for them; other consumers of the stream see them (an empty body and that
    header).
"""

from __future__ import annotations

import inspect
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, NamedTuple

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.client import Closed
from txamqp.content import Content
from txamqp.message import Message

from .connection import AMQPClient, ChannelEvents
from .fieldtable import Int64, Timestamp

#: The header of an end marker (:func:`publish_marker`); its value is the marker's id.
MARKER_HEADER = "notifications-end-marker"

#: What ``x-stream-offset`` may be given as (see the module's documentation).
OffsetSpec = str | int | datetime

_NAMED_OFFSETS = ("first", "last", "next")


class StreamDelivery(NamedTuple):
    """One message read from a stream: its offset and the txamqp ``basic.deliver`` message."""

    offset: int
    message: Message

    @property
    def body(self) -> bytes:
        """The message's body (txamqp gives an empty one as ``""``: here it is ``b""``)."""
        return self.message.content.body or b""

    @property
    def properties(self) -> dict[str, Any]:
        """The content properties (``timestamp``, ``headers``, ``message-id``…)."""
        return self.message.content.properties

    @property
    def marker(self) -> str | None:
        """The id of the end marker this message is, or ``None`` for any other message."""
        headers = self.properties.get("headers") or {}
        value = headers.get(MARKER_HEADER)
        return value if isinstance(value, str) else None


def _why(reason: Any) -> str:
    """A closed channel's or connection's reason, in words."""
    if isinstance(reason, Failure):
        reason = reason.value
    if isinstance(reason, Closed) and reason.args:
        reason = reason.args[0]
        return _why(reason)
    if hasattr(reason, "reply_code"):  # the broker's channel.close or connection.close
        return f"{reason.reply_code} {reason.reply_text}"
    if isinstance(reason, BaseException):
        return str(reason) or type(reason).__name__
    return str(reason)


class StreamClosed(Exception):
    """The reader stopped: closed by its owner, or the broker or the connection ended it."""

    def __init__(self, message: str, *, by_owner: bool = False):
        super().__init__(message)
        #: Whether the reader's own ``close()``/``cancel()`` ended it (not an error).
        self.by_owner = by_owner


class MarkerNotConfirmed(Exception):
    """The broker refused or dropped an end marker, or did not confirm it in time."""


def offset_argument(offset: OffsetSpec) -> str | Int64 | Timestamp:
    """The ``x-stream-offset`` value for ``offset``, typed for the wire; ``ValueError`` if bad."""
    if isinstance(offset, str) and offset in _NAMED_OFFSETS:
        return offset
    if isinstance(offset, Timestamp):
        return offset
    if isinstance(offset, datetime):
        return Timestamp.from_datetime(offset)
    if isinstance(offset, int) and not isinstance(offset, bool):
        if offset < 0:
            raise ValueError(f"a stream offset is 0 or more, not {offset} (use 'first')")
        return Int64(offset)
    raise ValueError(
        f"a stream offset is 'first', 'last', 'next', an int or a datetime, not {offset!r}"
    )


class StreamReader(ChannelEvents):
    """Reads a stream queue on a channel of its own, one delivery at a time, in order.

    ``await StreamReader(client, queue, offset).start()`` attaches it; then
    take deliveries (:class:`StreamDelivery`, an ``(offset, message)`` pair)
    with ``await reader.get()``, ``async for offset, message in reader``, or
    ``await reader.consume(handler)`` (the handler may return an awaitable,
    awaited before the next delivery). A delivery is acknowledged when it is
    taken, so at most ``prefetch`` (and the rest of a chunk, see above) wait
    in memory: a slow taker slows the broker, not the other way round.
    ``close()`` stops at once; ``cancel()`` stops the consumer but lets what
    already arrived be taken. Either frees the channel; an ``async for``
    then ends quietly, ``get()`` raises :class:`StreamClosed` with
    ``by_owner`` true. The broker deleting the queue, a channel error or the
    connection's end raise :class:`StreamClosed`.

    ``offset`` is ``"first"``, ``"last"``, ``"next"`` (the default), an offset
    or an aware ``datetime`` (then messages whose ``timestamp`` property is
    older are dropped); see the module's documentation for what each gives.
    End markers (:func:`read_until_end`) are dropped unless ``markers`` is
    true. The connection must be an :class:`~notifications.amqp.connection.AMQPClient`.
    """

    log = Logger()

    def __init__(
        self,
        client: AMQPClient,
        queue: str,
        offset: OffsetSpec = "next",
        *,
        prefetch: int = 100,
        markers: bool = False,
    ):
        if not 1 <= prefetch <= 65535:
            raise ValueError(f"prefetch is 1 to 65535 messages, not {prefetch}")
        self.client = client
        self.queue = queue
        self.prefetch = prefetch
        self.markers = markers
        self._arguments = {"x-stream-offset": offset_argument(offset)}
        argument = self._arguments["x-stream-offset"]
        self._not_before = int(argument) if isinstance(argument, Timestamp) else None
        # Acknowledging in groups saves frames; a group smaller than the
        # prefetch keeps the broker's credit above zero while we wait.
        self._ack_every = max(1, prefetch // 4)
        self._unacked = 0
        self._pending: deque[Message] = deque()
        self._pending_bytes = 0
        self._waiting: defer.Deferred | None = None
        self._ended: StreamClosed | None = None
        # Deliveries still arriving are dropped (closed, or ended by an error).
        self._discarding = False
        self._released: defer.Deferred | None = None
        self.channel: Any = None
        self.consumer_tag: str | None = None

    async def start(self) -> StreamReader:
        """Open the channel and attach the consumer; raises :class:`StreamClosed` if refused."""
        if self.channel is not None or self._released is not None:
            raise RuntimeError("a StreamReader starts once")
        try:
            self.channel = await self.client.open_extra_channel(self)
            await self.channel.basic_qos(prefetch_count=self.prefetch)
            reply = await self.channel.basic_consume(
                queue=self.queue, no_ack=False, arguments=self._arguments
            )
        except Exception as error:
            await self._release()
            raise StreamClosed(f"cannot read the stream {self.queue!r}: {_why(error)}") from error
        self.consumer_tag = reply.consumer_tag
        return self

    # What the channel's listener hears (see notifications.amqp.connection.Delegate) ---------

    def deliver(self, message: Message) -> None:
        if self._discarding:
            return
        headers = message.content.properties.get("headers") or {}
        if not isinstance(headers.get("x-stream-offset"), int):
            self._end(StreamClosed(f"{self.queue!r} is not a stream: no x-stream-offset"))
            self._release()
            return
        if self._waiting is not None and not self._pending:
            delivery = self._take(message)
            if delivery is not None:
                waiting, self._waiting = self._waiting, None
                waiting.callback(delivery)
            return
        self._pending.append(message)
        self._pending_bytes += len(message.content.body or b"")

    def broker_cancel(self, message: Message) -> None:
        self._end(StreamClosed(f"the broker cancelled the reading of {self.queue!r} (deleted?)"))
        self._release()

    def channel_closed(self, reason: Any) -> None:
        if self._released is not None:
            return  # closed by close(), cancel() or after the broker's cancel
        self._end(StreamClosed(f"reading {self.queue!r} stopped: {_why(reason)}"))
        method = getattr(reason, "method", None)
        if getattr(method, "klass", None) is not None and method.klass.name == "channel":
            # The broker closed this channel only: free its id (nothing to
            # send). When the connection ends, txamqp is going through its
            # channels, and the whole table goes anyway.
            self.client.forget_channel(self.channel)

    # Taking deliveries ------------------------------------------------------------------------

    def get(self) -> defer.Deferred:
        """The next delivery (a Deferred :class:`StreamDelivery`); one ``get()`` at a time."""
        if self._waiting is not None:
            raise RuntimeError("get() called again before the previous one fired")
        while self._pending:
            message = self._pending.popleft()
            self._pending_bytes -= len(message.content.body or b"")
            delivery = self._take(message)
            if delivery is not None:
                return defer.succeed(delivery)
        if self._ended is not None:
            return defer.fail(self._ended)
        self._waiting = defer.Deferred(self._forget_waiting)
        return self._waiting

    @property
    def buffered(self) -> int:
        """How many deliveries arrived and wait to be taken (dropped ones included)."""
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        """The size of the bodies of the deliveries that wait to be taken."""
        return self._pending_bytes

    def _forget_waiting(self, waiting: defer.Deferred) -> None:
        if self._waiting is waiting:
            self._waiting = None

    def __aiter__(self) -> StreamReader:
        return self

    async def __anext__(self) -> StreamDelivery:
        try:
            return await self.get()
        except StreamClosed as closed:
            if closed.by_owner:
                raise StopAsyncIteration from None
            raise

    async def consume(self, handler: Callable[[StreamDelivery], Awaitable[Any] | Any]) -> None:
        """Hand every delivery to ``handler`` until the reader is closed or cancelled.

        An awaitable result is awaited before the next delivery is taken. If
        the handler raises, the reader is closed and the error raised.
        """
        try:
            async for delivery in self:
                result = handler(delivery)
                if inspect.isawaitable(result):
                    await result
        except BaseException:
            await self.close()
            raise

    def _take(self, message: Message) -> StreamDelivery | None:
        """Acknowledge a delivery the caller takes; ``None`` if it is one to drop."""
        self._acknowledge(message.delivery_tag)
        properties = message.content.properties
        delivery = StreamDelivery(int(properties["headers"]["x-stream-offset"]), message)
        if delivery.marker is not None:
            return delivery if self.markers else None
        timestamp = properties.get("timestamp")
        if self._not_before is not None and timestamp is not None:
            if timestamp < self._not_before:
                return None
        return delivery

    def _acknowledge(self, tag: int) -> None:
        channel = self.channel
        if channel is None or channel.closed or self.client.closed:
            return
        self._unacked += 1
        if self._unacked >= self._ack_every:
            self._unacked = 0
            channel.basic_ack(delivery_tag=tag, multiple=True)

    # Stopping ---------------------------------------------------------------------------------

    def _end(self, error: StreamClosed) -> None:
        """Record why the reader ends (the first error wins over its owner's stop)."""
        if self._ended is None or (self._ended.by_owner and not error.by_owner):
            self._ended = error
        if not error.by_owner:
            self._discarding = True
            self._pending.clear()
            self._pending_bytes = 0
        if self._waiting is not None and not self._pending:
            waiting, self._waiting = self._waiting, None
            waiting.errback(self._ended)

    def _release(self) -> defer.Deferred:
        """Close the channel, once, however many ask (the Deferred fires with None)."""
        if self._released is None:
            if self.channel is None:
                self._released = defer.succeed(None)
            else:
                closing = self.client.close_extra_channel(self.channel)
                self._released = defer.Deferred.fromCoroutine(closing)
        return self._released

    async def cancel(self) -> None:
        """Stop the consumer; deliveries already received can still be taken, then it ends."""
        if self._released is not None:
            await self._released
            return
        self._end(StreamClosed("the reader was cancelled", by_owner=True))
        channel = self.channel
        if channel is not None and not channel.closed and self.consumer_tag is not None:
            try:
                await channel.basic_cancel(consumer_tag=self.consumer_tag)
            except Closed as error:  # the channel or the connection ended first
                self.log.debug("Cancelled on a closed channel: {error}", error=_why(error))
        await self._release()

    async def close(self) -> None:
        """Stop now: drop what was not taken and close the channel (again is fine)."""
        self._discarding = True
        self._pending.clear()
        self._pending_bytes = 0
        self._end(StreamClosed("the reader was closed", by_owner=True))
        await self._release()


class _Confirmation(ChannelEvents):
    """The listener of a marker's channel: the broker's confirm, or why there is none."""

    def __init__(self) -> None:
        self.done = defer.Deferred()
        self.returned: str | None = None

    def _fail(self, text: str) -> None:
        if not self.done.called:
            self.done.errback(MarkerNotConfirmed(text))

    def broker_ack(self, message: Message) -> None:
        if self.returned is not None:
            self._fail(f"the marker was returned: {self.returned}")
        elif not self.done.called:
            self.done.callback(None)

    def broker_nack(self, message: Message) -> None:
        self._fail("the broker refused the marker (basic.nack)")

    def broker_return(self, message: Message) -> None:
        self.returned = f"{message.reply_code} {message.reply_text}"

    def channel_closed(self, reason: Any) -> None:
        self._fail(f"its channel closed: {getattr(reason, 'reply_text', reason)}")


async def publish_marker(client: AMQPClient, queue: str, timeout: float = 10.0) -> str:
    """Write an end marker to the stream queue ``queue``; return its id once the broker confirms it.

    Sent through the default exchange (so only to that queue), persistent and
    mandatory, on a channel of its own in confirm mode. Raises
    :class:`MarkerNotConfirmed` if the broker returns or refuses it, or does
    not confirm it within ``timeout`` seconds.
    """
    confirmation = _Confirmation()
    try:
        channel = await client.open_extra_channel(confirmation)
    except (Closed, RuntimeError) as error:
        raise MarkerNotConfirmed(f"no channel for the marker: {_why(error)}") from error
    marker = uuid.uuid4().hex
    try:
        try:
            await channel.confirm_select()
        except Closed as error:
            raise MarkerNotConfirmed(f"its channel closed: {_why(error)}") from error
        properties = {"headers": {MARKER_HEADER: marker}, "delivery-mode": 2}
        channel.basic_publish(
            exchange="",
            routing_key=queue,
            mandatory=True,
            content=Content(b"", properties=properties),
        )
        try:
            await confirmation.done.addTimeout(timeout, client.clock)
        except defer.TimeoutError:
            raise MarkerNotConfirmed(f"no confirm within {timeout} s") from None
    finally:
        await client.close_extra_channel(channel)
    return marker


class EndOfStream(NamedTuple):
    """Where :func:`read_until_end` stopped: the end marker's offset, and how many were read."""

    offset: int
    count: int


async def read_until_end(
    client: AMQPClient,
    queue: str,
    handler: Callable[[StreamDelivery], Awaitable[Any] | Any],
    start: OffsetSpec = "first",
    *,
    prefetch: int = 100,
    idle_timeout: float = 30.0,
) -> EndOfStream:
    """Hand ``handler`` every message of the stream from ``start`` to its end as of now.

    The end is found with a marker (see the module's documentation): a
    reader is attached at ``start``, a marker is written once it is, and the
    read stops on that marker, which is not handed over. The marker's offset
    is returned: a reader started at ``offset + 1`` then continues with the
    messages written after the end, none missed and none twice. A handler's
    awaitable result is awaited before the next message. Other readers'
    markers are skipped.

    Raises :class:`MarkerNotConfirmed` if the marker cannot be written,
    :class:`StreamClosed` if the stream cannot be read, and
    ``twisted.internet.defer.TimeoutError`` when the broker sends nothing for
    ``idle_timeout`` seconds while the marker is awaited (an integer
    ``start`` past the end of the stream waits for the stream to reach it,
    so the marker is never met: this is how that ends).
    """
    reader = StreamReader(client, queue, start, prefetch=prefetch, markers=True)
    await reader.start()
    try:
        marker = await publish_marker(client, queue)
        count = 0
        while True:
            delivery = await reader.get().addTimeout(idle_timeout, client.clock)
            if delivery.marker == marker:
                return EndOfStream(delivery.offset, count)
            if delivery.marker is not None:
                continue
            count += 1
            result = handler(delivery)
            if inspect.isawaitable(result):
                await result
    finally:
        await reader.close()
