"""Reading stream queues (notifications.amqp.stream) on the real RabbitMQ.

Each test declares stream queues of its own (small retention, deleted at the
end). These tests also pin down what the module's documentation says
RabbitMQ 3.10 does: where each x-stream-offset starts, the headers a
delivery carries, what a stream does to header types, what closes the
connection.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase
from txamqp.client import Closed
from txamqp.connection import Body, Frame
from txamqp.content import Content

from notifications.amqp.connection import ChannelEvents, connect
from notifications.amqp.fieldtable import Int64, Timestamp
from notifications.amqp.stream import (
    MARKER_HEADER,
    EndOfStream,
    MarkerNotConfirmed,
    StreamClosed,
    StreamReader,
    offset_argument,
    publish_marker,
    read_until_end,
)
from tests.conftest import wait_for
from tests.test_amqp_fast_publish import broker_says
from tests.test_amqp_tables import TXAMQP, header, logged_in_client, method


class Confirms(ChannelEvents):
    """An extra channel's listener: the highest delivery tag the broker confirmed."""

    def __init__(self) -> None:
        self.confirmed = 0
        self.waiters: list[tuple[int, defer.Deferred]] = []

    def broker_ack(self, message) -> None:
        self.confirmed = max(self.confirmed, message.delivery_tag)
        for tag, waiter in list(self.waiters):
            if tag <= self.confirmed:
                self.waiters.remove((tag, waiter))
                waiter.callback(None)

    def channel_closed(self, reason) -> None:
        for _, waiter in self.waiters:
            waiter.errback(Closed(reason))
        self.waiters.clear()

    def wait(self, tag: int) -> defer.Deferred:
        if tag <= self.confirmed:
            return defer.succeed(None)
        waiter: defer.Deferred = defer.Deferred()
        self.waiters.append((tag, waiter))
        return waiter.addTimeout(10, reactor)


class StreamPublisher:
    """Publishes to a stream queue through the default exchange, with confirms."""

    def __init__(self, client, queue: str):
        self.client, self.queue = client, queue
        self.confirms = Confirms()
        self.sent = 0
        self.channel = None

    async def open(self) -> StreamPublisher:
        self.channel = await self.client.open_extra_channel(self.confirms)
        await self.channel.confirm_select()
        return self

    def send(self, body: bytes, **properties) -> int:
        self.channel.basic_publish(
            exchange="", routing_key=self.queue, content=Content(body, properties=properties)
        )
        self.sent += 1
        return self.sent

    async def one_by_one(self, bodies, **properties) -> None:
        """Each message confirmed before the next: one chunk each."""
        for body in bodies:
            await self.confirms.wait(self.send(body, **properties))

    async def together(self, bodies, **properties) -> None:
        """All sent at once, then confirmed: the broker writes them in few chunks."""
        tags = [self.send(body, **properties) for body in bodies]
        await self.confirms.wait(tags[-1])

    async def close(self) -> None:
        await self.client.close_extra_channel(self.channel)


def stream_arguments(max_bytes: int = 2_000_000, segment: int = 500_000) -> dict:
    return {
        "x-queue-type": "stream",
        "x-max-length-bytes": Int64(max_bytes),
        "x-stream-max-segment-size-bytes": segment,
    }


@pytest_twisted.async_yield_fixture
async def amqp(broker):
    """A connection, and a function declaring stream queues (deleted at the end).

    Other connections of the test use the same ``broker`` (and exchange).
    """
    client, channel = await connect(reactor, broker)
    declared: list[str] = []

    async def new_stream(**arguments) -> str:
        name = f"notifications-test-stream-{uuid.uuid4().hex[:12]}"
        await channel.queue_declare(
            queue=name, durable=True, arguments=stream_arguments(**arguments)
        )
        declared.append(name)
        return name

    yield client, channel, new_stream
    cleanup, cleanup_channel = await connect(reactor, broker)
    for name in declared:
        await cleanup_channel.queue_delete(queue=name)
    await cleanup_channel.exchange_delete(exchange=broker.exchange)
    await cleanup.close(within=2)
    if not client.closed:
        await client.close(within=2)


async def publisher(client, queue: str) -> StreamPublisher:
    return await StreamPublisher(client, queue).open()


@pytest_twisted.async_yield_fixture
async def stream(amqp):
    """The connection, a stream queue of the test and a publisher on it (closed at the end).

    Most tests write to one stream of their own and read it back.
    """
    client, _, new_stream = amqp
    queue = await new_stream()
    writer = await publisher(client, queue)
    yield client, queue, writer
    await writer.close()


async def take(reader: StreamReader, count: int, timeout: float = 10.0) -> list:
    return [await reader.get().addTimeout(timeout, reactor) for _ in range(count)]


async def nothing_more(reader: StreamReader, wait: float = 0.5) -> None:
    with pytest.raises(defer.TimeoutError):
        delivery = await reader.get().addTimeout(wait, reactor)
        raise AssertionError(f"unexpected delivery at offset {delivery.offset}: {delivery.body!r}")


def bodies(prefix: str, count: int) -> list[bytes]:
    return [f"{prefix}{n}".encode() for n in range(count)]


# Offsets --------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_delivery_has_its_offset_as_a_long_and_no_other_header(stream):
    client, queue, writer = stream
    await writer.one_by_one(bodies("m", 3))
    await writer.together(bodies("b", 3), headers={"mine": 1})
    reader = await StreamReader(client, queue, "first").start()
    deliveries = await take(reader, 6)
    assert [d.body for d in deliveries] == bodies("m", 3) + bodies("b", 3)
    assert [d.offset for d in deliveries] == list(range(6))
    for delivery in deliveries[:3]:
        assert delivery.properties["headers"] == {"x-stream-offset": delivery.offset}
        assert type(delivery.properties["headers"]["x-stream-offset"]) is Int64
    assert deliveries[3].properties["headers"] == {"mine": 1, "x-stream-offset": 3}
    offset, message = deliveries[0]  # an (offset, message) pair
    assert (offset, message.content.body) == (0, b"m0")
    await reader.close()


@pytest_twisted.ensureDeferred
async def test_where_each_offset_starts(stream):
    client, queue, writer = stream
    await writer.one_by_one(bodies("single", 3))  # offsets 0-2, a chunk each
    await writer.together(bodies("batch", 50))  # offsets 3-52, in few chunks

    async def starting_at(offset, count: int) -> list[bytes]:
        reader = await StreamReader(client, queue, offset).start()
        got = [d.body for d in await take(reader, count)]
        await nothing_more(reader, 0.3)
        await reader.close()
        return got

    assert await starting_at("first", 53) == bodies("single", 3) + bodies("batch", 50)
    assert await starting_at(2, 51) == [b"single2", *bodies("batch", 50)]
    # inside a chunk: from that very message
    assert await starting_at(30, 23) == bodies("batch", 50)[27:]
    # 'last': the last chunk, several messages of the burst, ending with the last one
    reader = await StreamReader(client, queue, "last").start()
    last = [await reader.get().addTimeout(10, reactor)]
    while last[-1].body != b"batch49":
        last.append(await reader.get().addTimeout(10, reactor))
    await nothing_more(reader, 0.3)
    await reader.close()
    assert len(last) > 1
    assert [d.body for d in last] == bodies("batch", 50)[-len(last) :]

    # 'next', 'last' after single messages, past the end, a future timestamp
    readers = {
        "next": await StreamReader(client, queue, "next").start(),
        "past the end": await StreamReader(client, queue, 55).start(),
        "future": await StreamReader(client, queue, datetime.now(UTC) + timedelta(hours=1)).start(),
    }
    await writer.one_by_one([b"after0"])
    readers["last"] = await StreamReader(client, queue, "last").start()
    await writer.one_by_one([b"after1", b"after2", b"after3"])
    got = {name: [d.body for d in await take(r, 1)] for name, r in readers.items()}
    assert got == {
        "next": [b"after0"],
        "past the end": [b"after2"],  # offset 55 is after2 (53 is after0)
        "future": [b"after0"],  # a future timestamp is 'next'
        "last": [b"after0"],  # the last chunk, one message
    }
    for reader in readers.values():
        await reader.close()


@pytest_twisted.ensureDeferred
async def test_an_empty_stream_gives_nothing_for_last_then_what_comes(stream):
    client, queue, writer = stream
    last = await StreamReader(client, queue, "last").start()
    first = await StreamReader(client, queue, "first").start()
    await nothing_more(last, 0.3)
    await writer.one_by_one([b"a", b"b"])
    assert [d.body for d in await take(last, 2)] == [b"a", b"b"]
    assert [d.body for d in await take(first, 2)] == [b"a", b"b"]
    await last.close()
    await first.close()


async def first_offset(client, queue: str, start="first") -> int:
    reader = await StreamReader(client, queue, start).start()
    [delivery] = await take(reader, 1)
    await reader.close()
    return delivery.offset


@pytest_twisted.ensureDeferred
async def test_retention_offsets_with_gaps_and_below_the_first(amqp):
    client, _, new_stream = amqp
    # Tiny segments: about four messages each, the first ones dropped.
    queue = await new_stream(max_bytes=3000, segment=1000)
    writer = await publisher(client, queue)
    await writer.one_by_one([b"x" * 100 + str(n).encode() for n in range(60)])
    await writer.close()
    # Retention runs some time after the writes: wait until it is done.
    first, deadline = await first_offset(client, queue), reactor.seconds() + 20
    while True:
        await deferLater(reactor, 1)
        now = await first_offset(client, queue)
        if now == first or reactor.seconds() > deadline:
            break
        first = now
    assert first > 0  # the first segments are gone
    reader = await StreamReader(client, queue, first).start()
    deliveries = []
    while not deliveries or not deliveries[-1].body.endswith(b"x59"):
        deliveries.extend(await take(reader, 1))
    await reader.close()
    offsets = [d.offset for d in deliveries]
    assert offsets[0] == first
    # Not contiguous: the broker's own chunk at each segment's start takes an offset.
    assert set(range(offsets[0], offsets[-1] + 1)) - set(offsets)
    for below in (0, first - 1):
        assert await first_offset(client, queue, below) == first


@pytest_twisted.ensureDeferred
async def test_a_timestamp_starts_at_that_second_and_older_messages_are_dropped(stream):
    client, queue, writer = stream
    await writer.one_by_one([b"before"], timestamp=int(time.time()))
    # The next whole second, so that the broker's chunks fall on either side of it.
    now = time.time()
    await deferLater(reactor, int(now) + 1.05 - now)
    since = Timestamp(int(time.time()))
    # Written after the time asked, but stamped earlier (as a notification
    # replayed from the outbox is): dropped; without a timestamp: kept.
    await writer.one_by_one([b"replayed"], timestamp=int(since) - 3600)
    await writer.one_by_one([b"no timestamp"])
    await writer.one_by_one([b"after"], timestamp=int(since))
    for offset in (since, since.datetime + timedelta(milliseconds=500)):
        reader = await StreamReader(client, queue, offset).start()
        assert [d.body for d in await take(reader, 2)] == [b"no timestamp", b"after"]
        await nothing_more(reader, 0.3)
        await reader.close()


def test_offsets_are_checked_and_typed():
    assert offset_argument("first") == "first"
    assert type(offset_argument(5)) is Int64
    assert offset_argument(datetime(2024, 1, 1, tzinfo=UTC)) == Timestamp(1704067200)
    assert type(offset_argument(Timestamp(3))) is Timestamp
    for bad in ("begin", -1, True, 1.5, None):
        with pytest.raises(ValueError, match="stream offset"):
            offset_argument(bad)
    with pytest.raises(ValueError, match="naive"):
        offset_argument(datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="prefetch"):
        StreamReader(None, "q", prefetch=0)


# Flow ----------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_slow_taker_stops_the_broker(stream):
    client, queue, writer = stream
    reader = await StreamReader(client, queue, "next", prefetch=5).start()
    sent = bodies("m", 500)
    for start in range(0, 500, 25):  # chunks of at most 25 messages
        await writer.together(sent[start : start + 25])
    await wait_for(lambda: reader.buffered >= 5)
    await deferLater(reactor, 0.5)
    held = reader.buffered
    # The prefetch and the rest of one chunk at most, far from everything.
    assert held <= 5 + 24
    await deferLater(reactor, 0.3)
    assert reader.buffered == held
    got = [d.body for d in await take(reader, 500)]
    assert got == sent
    assert reader.buffered == 0
    await reader.close()


@pytest_twisted.ensureDeferred
async def test_async_iteration_consume_and_cancel(stream):
    client, queue, writer = stream
    await writer.one_by_one(bodies("m", 4))

    reader = await StreamReader(client, queue, "first", prefetch=2).start()
    seen = []
    async for offset, message in reader:
        seen.append((offset, message.content.body))
        if len(seen) == 4:
            await reader.close()
    assert seen == list(enumerate(bodies("m", 4)))

    # consume(): an awaitable result is awaited before the next delivery.
    reader = await StreamReader(client, queue, "first", prefetch=1).start()
    handled: list[bytes] = []

    async def slowly(delivery) -> None:
        await deferLater(reactor, 0.05)
        handled.append(delivery.body)
        if len(handled) == 4:
            defer.ensureDeferred(reader.cancel())

    await defer.Deferred.fromCoroutine(reader.consume(slowly)).addTimeout(10, reactor)
    assert handled == bodies("m", 4)

    # cancel(): what already arrived can still be taken, then the end.
    reader = await StreamReader(client, queue, "first", prefetch=10).start()
    await wait_for(lambda: reader.buffered == 4)
    await reader.cancel()
    assert [d.body for d in await take(reader, 4)] == bodies("m", 4)
    with pytest.raises(StreamClosed) as ended:
        await reader.get()
    assert ended.value.by_owner
    assert sorted(client.channels) == [0, 1, writer.channel.id]


@pytest_twisted.ensureDeferred
async def test_a_failing_handler_closes_the_reader(stream):
    client, queue, writer = stream
    await writer.one_by_one([b"boom"])
    reader = await StreamReader(client, queue, "first").start()

    def handler(delivery) -> None:
        raise RuntimeError(delivery.body)

    with pytest.raises(RuntimeError, match="boom"):
        await reader.consume(handler)
    assert reader.channel.closed
    assert reader.channel.id not in client.channels


# Ends -----------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_what_ends_a_reader_other_than_its_owner(amqp):
    client, channel, new_stream = amqp
    with pytest.raises(StreamClosed, match="404 NOT_FOUND"):
        await StreamReader(client, f"missing-{uuid.uuid4().hex}", "first").start()
    classic = (await channel.queue_declare(exclusive=True)).queue
    with pytest.raises(StreamClosed, match="406 PRECONDITION_FAILED - invalid arg 'x-stream"):
        await StreamReader(client, classic, "first").start()

    queue = await new_stream()
    reader = await StreamReader(client, queue, "next").start()
    pending = reader.get()
    await channel.queue_delete(queue=queue)
    with pytest.raises(StreamClosed, match="cancelled"):
        await pending.addTimeout(10, reactor)
    await wait_for(lambda: reader.channel.id not in client.channels)
    # None of this touched the connection or its main channel.
    assert not client.closed
    assert sorted(client.channels) == [0, 1]
    assert (await channel.queue_declare(queue=classic, passive=True)).queue == classic


@pytest_twisted.ensureDeferred
async def test_the_connections_end_ends_its_readers(amqp):
    client, _, new_stream = amqp
    queue = await new_stream()
    readers = [await StreamReader(client, queue, "next").start() for _ in range(2)]
    pending = [reader.get() for reader in readers]
    await client.close(within=2)
    for waiting in pending:
        with pytest.raises(StreamClosed, match="stopped"):
            await waiting
    for reader in readers:
        await reader.close()  # fine after the end


# What a stream does to a connection and to headers (RabbitMQ 3.10) ----------------------------


@pytest_twisted.ensureDeferred
async def test_methods_a_stream_refuses_close_the_connection(stream, broker):
    client, queue, writer = stream
    await writer.one_by_one([b"m"])

    async def attempt(action) -> str:
        """How the broker closed a new connection on which ``action`` ran."""
        other, other_channel = await connect(reactor, broker)
        try:
            await action(other, other_channel)
        except Closed:
            pass
        await wait_for(lambda: other.closed, timeout=5)
        reason = other_channel.reason
        return f"{reason.reply_code} {reason.reply_text}"

    async def get(_, channel) -> None:
        await channel.basic_get(queue=queue)

    async def no_ack(_, channel) -> None:
        await channel.basic_qos(prefetch_count=1)
        await channel.basic_consume(queue=queue, no_ack=True)

    async def settle(other, channel, refuse) -> None:
        await channel.basic_qos(prefetch_count=1)
        reply = await channel.basic_consume(queue=queue, arguments={"x-stream-offset": "first"})
        message = await (await other.queue(reply.consumer_tag)).get(timeout=10)
        refuse(channel, message.delivery_tag)

    def reject(channel, tag: int) -> None:
        channel.basic_reject(delivery_tag=tag, requeue=True)

    def nack(channel, tag: int) -> None:
        channel.basic_nack(delivery_tag=tag, multiple=False, requeue=True)

    assert (await attempt(get)).startswith("540 NOT_IMPLEMENTED - basic.get not supported")
    assert (await attempt(no_ack)).startswith("540 NOT_IMPLEMENTED - automatic acknowledgement")
    for refuse in (reject, nack):
        closed = await attempt(lambda other, channel, refuse=refuse: settle(other, channel, refuse))
        assert closed.startswith("540 NOT_IMPLEMENTED - basic.nack and basic.reject"), closed
    # Without a prefetch: a channel error only.
    extra = await client.open_extra_channel(Confirms())
    with pytest.raises(Closed, match="406"):
        await extra.basic_consume(queue=queue, arguments={"x-stream-offset": "first"})
    await client.close_extra_channel(extra)
    assert not client.closed


@pytest_twisted.ensureDeferred
async def test_a_stream_drops_arrays_and_tables_from_headers(stream):
    client, queue, writer = stream
    headers = {"n": Int64(2**40), "when": Timestamp(5), "b": b"\x00", "A": [1], "F": {"k": 1}}
    await writer.one_by_one([b"m"], headers=headers)
    reader = await StreamReader(client, queue, "first").start()
    [delivery] = await take(reader, 1)
    kept = {k: v for k, v in headers.items() if k not in ("A", "F")}
    assert delivery.properties["headers"] == {**kept, "x-stream-offset": 0}
    await reader.close()


@pytest_twisted.ensureDeferred
async def test_a_decimal_header_makes_the_broker_drop_the_publisher(amqp, broker):
    client, _, new_stream = amqp
    queue = await new_stream()
    other, _ = await connect(reactor, broker)
    writer = await publisher(other, queue)
    writer.send(b"d", headers={"price": Decimal("1.5")})
    await wait_for(lambda: other.closed, timeout=10)
    end = await read_until_end(client, queue, lambda delivery: None)
    assert end.count == 0  # the message is lost


# Reading to the end ---------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_read_until_end_on_an_empty_stream_and_after(stream):
    client, queue, writer = stream
    got: list = []
    end = await read_until_end(client, queue, got.append)
    assert (end, got) == (EndOfStream(0, 0), [])
    await writer.together(bodies("m", 30))
    end = await read_until_end(client, queue, got.append, start=end.offset + 1)
    assert [d.body for d in got] == bodies("m", 30)
    assert [d.offset for d in got] == list(range(1, 31))  # the first marker is at 0
    assert end == EndOfStream(31, 30)
    # From the start: markers are not handed over.
    again: list = []
    assert await read_until_end(client, queue, again.append) == EndOfStream(32, 30)
    assert [d.body for d in again] == bodies("m", 30)
    assert sorted(client.channels) == [0, 1, writer.channel.id]


@pytest_twisted.ensureDeferred
async def test_read_until_end_with_publishers_writing_all_along(amqp, broker):
    client, _, new_stream = amqp
    queue = await new_stream()
    connections = [await connect(reactor, broker) for _ in range(3)]
    writers = [await publisher(other, queue) for other, _ in connections]
    confirmed = {n: 0 for n in range(len(writers))}
    stop = False

    async def write(n: int, writer: StreamPublisher) -> None:
        for seq in itertools.count():
            if stop:
                return
            body = json.dumps([n, seq]).encode()
            tag = writer.send(body) if seq % 5 else None
            if tag is None:  # now and then a burst, confirmed together
                tags = [writer.send(json.dumps([n, seq, k]).encode()) for k in range(5)]
                tag = tags[-1]
            await writer.confirms.wait(tag)
            confirmed[n] = writer.sent

    writing = [defer.ensureDeferred(write(n, w)) for n, w in enumerate(writers)]
    await deferLater(reactor, 0.5)
    confirmed_before = dict(confirmed)
    seen: list = []

    async def slow_handler(delivery) -> None:
        seen.append(json.loads(delivery.body))
        if len(seen) % 50 == 0:
            await deferLater(reactor, 0.01)

    end = await read_until_end(client, queue, slow_handler, prefetch=20)
    stop = True
    await defer.gatherResults(writing)
    assert end.count == len(seen) > 0
    sent_by: dict[int, list] = {n: [] for n in confirmed}
    for message in seen:
        sent_by[message[0]].append(message)
    for n, messages in sent_by.items():
        # All that was confirmed before the call is there, in order, no hole.
        assert len(messages) >= confirmed_before[n]
        assert messages == expected_sequence(n, len(messages))
    # After the end: the rest of every sequence, none twice, none missed.
    rest: list = []
    await read_until_end(client, queue, lambda d: rest.append(json.loads(d.body)), end.offset + 1)
    for n, writer in enumerate(writers):
        theirs = [m for m in rest if m[0] == n]
        assert sent_by[n] + theirs == expected_sequence(n, writer.sent)
    for (other, _), writer in zip(connections, writers, strict=True):
        await writer.close()
        await other.close(within=2)


def expected_sequence(n: int, count: int) -> list:
    """What writer ``n`` of the test above sent, its first ``count`` messages."""
    messages: list = []
    for seq in itertools.count():
        if len(messages) >= count:
            return messages[:count]
        if seq % 5:
            messages.append([n, seq])
        else:
            messages.extend([n, seq, k] for k in range(5))
    raise AssertionError("unreachable")


@pytest_twisted.ensureDeferred
async def test_concurrent_reads_to_the_end_skip_each_others_markers(stream):
    client, queue, writer = stream
    await writer.together(bodies("m", 10))
    results: list[list] = [[], [], []]
    ends = await defer.gatherResults(
        [defer.ensureDeferred(read_until_end(client, queue, results[n].append)) for n in range(3)]
    )
    for end, got in zip(ends, results, strict=True):
        assert [d.body for d in got] == bodies("m", 10)
        assert end.count == 10
    assert len({end.offset for end in ends}) == 3


@pytest_twisted.ensureDeferred
async def test_markers_are_seen_only_when_asked_for(amqp):
    client, _, new_stream = amqp
    queue = await new_stream()
    marker = await publish_marker(client, queue)
    plain = await StreamReader(client, queue, "first").start()
    with_markers = await StreamReader(client, queue, "first", markers=True).start()
    [delivery] = await take(with_markers, 1)
    assert delivery.marker == marker
    assert delivery.body == b""
    assert delivery.properties["headers"][MARKER_HEADER] == marker
    await nothing_more(plain, 0.3)
    await plain.close()
    await with_markers.close()


@pytest_twisted.ensureDeferred
async def test_read_until_end_failures(amqp):
    client, _, new_stream = amqp
    with pytest.raises(StreamClosed, match="404"):
        await read_until_end(client, f"missing-{uuid.uuid4().hex}", lambda d: None)
    with pytest.raises(MarkerNotConfirmed, match="returned: 312 NO_ROUTE"):
        await publish_marker(client, f"missing-{uuid.uuid4().hex}")
    queue = await new_stream()
    # Past the end: the reader waits for offsets that do not exist yet.
    with pytest.raises(defer.TimeoutError):
        await read_until_end(client, queue, lambda d: None, start=1000, idle_timeout=1)
    assert sorted(client.channels) == [0, 1]
    assert not client.closed


# The reader on a scripted broker: acknowledgements and odd deliveries -------------------------


class ScriptedReaderTests(SynchronousTestCase):
    """A StreamReader on an AMQPClient over a StringTransport, the broker's frames by hand."""

    def setUp(self) -> None:
        self.client, self.transport = logged_in_client(self, 16)

    def start(self, offset="first", prefetch: int = 8) -> StreamReader:
        reader = StreamReader(self.client, "s", offset, prefetch=prefetch)
        starting = defer.Deferred.fromCoroutine(reader.start())
        self.client.dataReceived(
            broker_says(2, "channel.open-ok")
            + broker_says(2, "basic.qos-ok")
            + broker_says(2, "basic.consume-ok", consumer_tag="c")
        )
        self.assertIs(self.successResultOf(starting), reader)
        self.transport.clear()
        return reader

    def deliver(self, tag: int, headers: dict | None, **properties) -> None:
        if headers is not None:
            properties["headers"] = headers
        frames = [
            Frame(2, method("basic.deliver", consumer_tag="c", delivery_tag=tag)),
            Frame(2, header(size=1, **properties)),
            Frame(2, Body(b"%d" % tag)),
        ]
        self.client.dataReceived(b"".join(self.client._pack_frame(f) for f in frames))

    def written(self) -> list[tuple]:
        """(method name, arguments) of each frame the client wrote since the last call."""
        data, frames = self.transport.value(), []
        self.transport.clear()
        while data:
            size = int.from_bytes(data[3:7])
            payload = TXAMQP._unpack_frame(data[: 8 + size]).payload
            frames.append((f"{payload.method.klass.name}.{payload.method.name}", payload.args))
            data = data[8 + size :]
        return frames

    def test_deliveries_are_acknowledged_as_they_are_taken_in_groups(self) -> None:
        reader = self.start(prefetch=8)  # a group of 2
        for tag in range(1, 6):
            self.deliver(tag, {"x-stream-offset": Int64(tag + 10)})
        self.assertEqual(reader.buffered, 5)
        self.assertEqual(self.written(), [])  # nothing taken, nothing acknowledged
        taken = [self.successResultOf(reader.get()) for _ in range(3)]
        self.assertEqual([d.offset for d in taken], [11, 12, 13])
        self.assertEqual(self.written(), [("basic.ack", (2, True))])
        self.successResultOf(reader.get())
        self.assertEqual(self.written(), [("basic.ack", (4, True))])
        # Waiting for the next one: it is taken (and counted) as it arrives.
        self.successResultOf(reader.get())
        waiting = reader.get()
        self.assertNoResult(waiting)
        self.deliver(6, {"x-stream-offset": Int64(16)})
        self.assertEqual(self.successResultOf(waiting).offset, 16)
        self.assertEqual(self.written(), [("basic.ack", (6, True))])
        with self.assertRaises(RuntimeError):
            reader.get(), reader.get()

    def test_dropped_deliveries_are_acknowledged_too(self) -> None:
        since = Timestamp(1700000000)
        reader = self.start(offset=since, prefetch=1)
        self.deliver(1, {"x-stream-offset": Int64(1)}, timestamp=int(since) - 1)
        self.deliver(2, {"x-stream-offset": Int64(2), MARKER_HEADER: "m"})
        self.deliver(3, {"x-stream-offset": Int64(3)}, timestamp=int(since))
        self.assertEqual(self.successResultOf(reader.get()).offset, 3)
        self.assertEqual(
            self.written(),
            [("basic.ack", (1, True)), ("basic.ack", (2, True)), ("basic.ack", (3, True))],
        )

    def test_a_delivery_without_an_offset_ends_the_reader(self) -> None:
        reader = self.start()
        waiting = reader.get()
        self.deliver(1, None)
        self.assertIn("not a stream", str(self.failureResultOf(waiting, StreamClosed).value))
        self.assertEqual(self.written(), [("channel.close", (200, "closed by the client", 0, 0))])
        self.client.dataReceived(broker_says(2, "channel.close-ok"))
        self.assertEqual(sorted(self.client.channels), [0])

    def test_close_drops_what_was_not_taken(self) -> None:
        reader = self.start()
        self.deliver(1, {"x-stream-offset": Int64(1)})
        closing = defer.Deferred.fromCoroutine(reader.close())
        self.assertEqual(reader.buffered, 0)
        self.deliver(2, {"x-stream-offset": Int64(2)})  # in flight: dropped
        self.client.dataReceived(broker_says(2, "channel.close-ok"))
        self.successResultOf(closing)
        self.assertEqual(self.written(), [("channel.close", (200, "closed by the client", 0, 0))])
        self.assertTrue(self.failureResultOf(reader.get(), StreamClosed).value.by_owner)
        self.assertEqual(sorted(self.client.channels), [0])
