"""Field tables inside txamqp's frames (AMQPClient), extra channels, and on the real broker.

AMQPClient encodes and decodes every frame carrying a table with
notifications.amqp.fieldtable; frames txamqp's own codec can handle must
come out the same as txamqp writes them. Extra channels (open_extra_channel)
have their own listener. The broker tests publish and consume real
messages: every field type in headers, dead-lettering (x-death), quorum
redeliveries (x-delivery-count), and method arguments.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from txamqp.client import Closed
from txamqp.connection import Body, Frame, Header, Method
from txamqp.content import Content
from txamqp.protocol import FrameReceiver

from notifications.amqp.connection import (
    AMQPClient,
    BrokerEvents,
    ChannelEvents,
    Delegate,
    TableChannel,
    connect,
    decode_payload,
    encode_payload,
)
from notifications.amqp.fieldtable import (
    Float32,
    Int8,
    Int16,
    Int64,
    LongString,
    Timestamp,
    UInt8,
    UInt16,
    UInt32,
)
from notifications.amqp.spec import load_spec
from tests.conftest import wait_for
from tests.helpers import generated
from tests.test_amqp_fast_publish import broker_says
from tests.test_amqp_fieldtable import same, tables

AMQP_SPEC = load_spec()
TXAMQP = FrameReceiver(AMQP_SPEC)  # txamqp's own frame codec, for comparison


def method(name: str, **values) -> Method:
    klass, name = name.split(".")
    spec_method = AMQP_SPEC.classes.byname[klass].methods.byname[name]
    defaults = {"bit": False, "shortstr": "", "longstr": "", "table": {}}
    args = [
        values.get(field.name.replace("-", "_"), defaults.get(field.type, 0))
        for field in spec_method.fields
    ]
    return Method(spec_method, *args)


def header(size: int = 3, **properties) -> Header:
    return Header(AMQP_SPEC.classes.byname["basic"], 0, size, **properties)


def new_client(listener=None) -> tuple[AMQPClient, StringTransport]:
    client = AMQPClient(Delegate(listener), vhost="/", spec=AMQP_SPEC, heartbeat=0, clock=Clock())
    transport = StringTransport()
    client.makeConnection(transport)
    return client, transport


def logged_in_client(
    case: SynchronousTestCase, channel_max: int, listener=None
) -> tuple[AMQPClient, StringTransport]:
    """A ``new_client`` logged in to a scripted broker that allows ``channel_max`` channels."""
    client, transport = new_client(listener)
    started = client.start(b"\0guest\0guest", mechanism="PLAIN")
    client.dataReceived(
        broker_says(0, "connection.start", version_minor=9, mechanisms="PLAIN")
        + broker_says(0, "connection.tune", channel_max=channel_max, frame_max=4096)
        + broker_says(0, "connection.open-ok")
    )
    case.successResultOf(started)
    return client, transport


# Frames as txamqp writes them ----------------------------------------------------------------

# What txamqp's codec writes right: ASCII text (it counts characters, not
# bytes) and non-negative 32-bit integers.
txamqp_tables = st.dictionaries(
    st.text(alphabet="abcxyz-", max_size=10),
    st.text(alphabet="abc -.", max_size=10) | st.integers(0, 2**31 - 1),
    max_size=5,
)


def txamqp_frame(payload) -> bytes:
    return TXAMQP._pack_frame(Frame(3, payload))


@settings(max_examples=100, deadline=None)
@given(table=txamqp_tables, name=st.sampled_from(["queue.declare", "basic.consume", "queue.bind"]))
def test_tables_txamqp_can_write_are_written_the_same(table, name):
    client, _ = new_client()
    payload = method(name, queue="q", arguments=table)
    assert client._pack_frame(Frame(3, payload)) == txamqp_frame(payload)
    decoded = client._unpack_frame(txamqp_frame(payload))
    assert decoded.payload.args == payload.args


@settings(max_examples=100, deadline=None)
@given(headers=txamqp_tables)
def test_content_headers_txamqp_can_write_are_written_the_same(headers):
    client, _ = new_client()
    payload = header(
        size=5,
        headers=headers,
        **{"content-type": "text/plain", "message-id": "m-1", "timestamp": 1700000000},
    )
    assert client._pack_frame(Frame(3, payload)) == txamqp_frame(payload)
    decoded = client._unpack_frame(txamqp_frame(payload)).payload
    assert (decoded.size, decoded.properties) == (5, payload.properties)


def test_frames_without_tables_are_txamqps_own():
    client, _ = new_client()
    for payload in (method("basic.ack", delivery_tag=7), header(**{"app-id": "x"})):
        assert client._pack_frame(Frame(3, payload)) == txamqp_frame(payload)


def test_every_content_property_round_trips():
    properties = {
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "headers": {"x-stream-offset": Int64(2**40), "when": Timestamp(5), "list": [1, None]},
        "delivery-mode": 2,
        "priority": 9,
        "correlation-id": "c",
        "reply-to": "r",
        "expiration": "60000",
        "message-id": "m",
        "timestamp": 1700000000,
        "type": "t",
        "user-id": "guest",
        "app-id": "notifications",
        "reserved": "",
    }
    data = encode_payload(header(size=2**33, **properties))
    decoded = decode_payload(AMQP_SPEC, 2, data)
    assert (decoded.size, decoded.properties) == (2**33, properties)


def test_a_delivery_header_with_a_long_offset_decodes():
    # Written by hand: class 60, weight 0, body size 2, flags = headers
    # only (bit 13), then the table {"x-stream-offset": l 5}.
    table = b"\x0fx-stream-offsetl" + (5).to_bytes(8)
    payload = (
        (60).to_bytes(2) + bytes(2) + (2).to_bytes(8) + (1 << 13).to_bytes(2)
        + len(table).to_bytes(4) + table
    )  # fmt: skip
    frame = bytes((2,)) + (1).to_bytes(2) + len(payload).to_bytes(4) + payload + b"\xce"
    client, _ = new_client()
    decoded = client._unpack_frame(frame)
    assert decoded.channel == 1
    assert decoded.payload.properties == {"headers": {"x-stream-offset": 5}}
    assert type(decoded.payload.properties["headers"]["x-stream-offset"]) is Int64


# Extra channels, on a scripted broker --------------------------------------------------------


class Listener(ChannelEvents):
    """Records what an extra channel's listener is told."""

    def __init__(self):
        self.heard: list[tuple] = []

    def broker_ack(self, message) -> None:
        self.heard.append(("ack", message.delivery_tag))

    def broker_cancel(self, message) -> None:
        self.heard.append(("cancel", message.consumer_tag))

    def deliver(self, message) -> None:
        self.heard.append(("deliver", message.delivery_tag, message.content.body))

    def channel_closed(self, reason) -> None:
        self.heard.append(("closed", reason))


class ExtraChannelTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.main = Listener()
        self.client, self.transport = logged_in_client(self, 4, self.main)
        self.assertEqual(self.client.channel_max, 4)
        self.transport.clear()

    def open(self, listener) -> TableChannel:
        before = set(self.client.channels)
        opening = defer.Deferred.fromCoroutine(self.client.open_extra_channel(listener))
        [channel_id] = set(self.client.channels) - before
        self.client.dataReceived(broker_says(channel_id, "channel.open-ok"))
        channel = self.successResultOf(opening)
        self.transport.clear()
        return channel

    def test_ids_are_free_ones_and_given_back(self) -> None:
        first, second = self.open(Listener()), self.open(Listener())
        self.assertEqual((first.id, second.id), (2, 3))
        closing = defer.Deferred.fromCoroutine(self.client.close_extra_channel(first))
        self.client.dataReceived(broker_says(2, "channel.close-ok"))
        self.successResultOf(closing)
        self.assertNotIn(2, self.client.channels)
        self.assertEqual(self.open(Listener()).id, 2)
        self.open(Listener())
        failed = defer.Deferred.fromCoroutine(self.client.open_extra_channel(Listener()))
        self.assertIn("channels of the connection are in use", str(self.failureResultOf(failed)))

    def test_what_the_broker_sends_goes_to_the_channels_listener(self) -> None:
        listener = Listener()
        channel = self.open(listener)
        self.client.dataReceived(
            broker_says(channel.id, "basic.ack", delivery_tag=1)
            + broker_says(1, "basic.ack", delivery_tag=9)
            + broker_says(channel.id, "basic.cancel", consumer_tag="c1")
            + broker_says(channel.id, "basic.deliver", consumer_tag="c1", delivery_tag=4)
            + TXAMQP._pack_frame(Frame(channel.id, header(size=2)))
            + TXAMQP._pack_frame(Frame(channel.id, Body(b"hi")))
        )
        self.assertEqual(listener.heard, [("ack", 1), ("cancel", "c1"), ("deliver", 4, b"hi")])
        self.assertEqual(self.main.heard, [("ack", 9)])

    def test_a_channel_error_closes_only_that_channel(self) -> None:
        listener = Listener()
        channel = self.open(listener)
        self.client.dataReceived(
            broker_says(channel.id, "channel.close", reply_code=404, reply_text="NOT_FOUND")
        )
        self.assertTrue(channel.closed)
        [(what, reason)] = listener.heard
        self.assertEqual((what, reason.reply_code), ("closed", 404))
        self.assertFalse(self.transport.disconnecting)
        # The broker was answered close-ok on that channel.
        frames = self.transport.value()
        self.assertEqual(frames, TXAMQP._pack_frame(Frame(channel.id, method("channel.close-ok"))))

    def test_the_connections_end_reaches_every_listener(self) -> None:
        listeners = [Listener(), Listener()]
        channels = [self.open(listener) for listener in listeners]

        # A listener freeing its channel as it hears of the end is fine.
        def forget(reason, channel=channels[0]) -> None:
            self.client.forget_channel(channel)

        listeners[0].channel_closed = forget
        self.client.connectionLost(Failure(ConnectionDone()))
        self.assertEqual([what for what, _ in listeners[1].heard], ["closed"])
        self.assertTrue(all(channel.closed for channel in channels))

    def test_a_bad_table_fails_the_call_and_writes_nothing(self) -> None:
        channel = self.open(Listener())
        self.transport.clear()
        failed = channel.queue_declare(queue="q", arguments={"x": object()})
        self.assertIn(
            "no AMQP field type for object", str(self.failureResultOf(failed, TypeError).value)
        )
        failed = channel.basic_publish(
            exchange="",
            routing_key="q",
            content=Content(b"x", properties={"headers": {"n": 2**64}}),
        )
        self.failureResultOf(failed, ValueError)
        failed = channel.basic_publish(
            exchange="", routing_key="q", content=Content(b"x", properties={"headrs": {}})
        )
        self.assertIn("unknown message properties: headrs", str(self.failureResultOf(failed).value))
        self.assertEqual(self.transport.value(), b"")


# On the broker -------------------------------------------------------------------------------

EVERY_TYPE = {
    "t": True,
    "t0": False,
    "b": Int8(-128),
    "B": UInt8(255),
    "s": Int16(-32768),
    "u": UInt16(65535),
    "I": -(2**31),
    "i": UInt32(2**32 - 1),
    "l": Int64(-(2**63)),
    "l+": 2**62,
    "f": Float32(-1.5),
    "d": 3.141592653589793,
    "D": Decimal("-123.456"),
    "S": "Zoë « ✓ »",
    "S0": "",
    "LS": LongString(b"\xff\xfe"),
    "A": [1, "a", [True, None], {"k": Int64(1)}],
    "A0": [],
    "T": Timestamp(1700000000),
    "F": {"nested": {"deeper": UInt8(1)}, "empty": {}},
    "V": None,
    "x": b"\x00\x01\xff",
    "x0": b"",
    "é-name": 1,
}


async def first_message(client, channel, queue: str, timeout: float = 10.0):
    reply = await channel.basic_consume(queue=queue, no_ack=True)
    deliveries = await client.queue(reply.consumer_tag)
    message = await deliveries.get(timeout=timeout)
    await channel.basic_cancel(consumer_tag=reply.consumer_tag)
    return message


@pytest_twisted.async_yield_fixture
async def amqp(broker):
    """A connection and its channel, on an exchange of the test's own (deleted after)."""
    client, channel = await connect(reactor, broker)
    yield client, channel
    if not client.closed:
        await client.close(within=2)
    cleanup, cleanup_channel = await connect(reactor, broker)
    await cleanup_channel.exchange_delete(exchange=broker.exchange)
    await cleanup.close(within=2)


@pytest_twisted.ensureDeferred
async def test_headers_of_every_type_come_back_equal(amqp):
    client, channel = amqp
    queue = (await channel.queue_declare(exclusive=True, auto_delete=True)).queue
    properties = {"headers": EVERY_TYPE, "timestamp": 1700000000}
    channel.basic_publish(
        exchange="", routing_key=queue, content=Content(b"x", properties=properties)
    )
    message = await first_message(client, channel, queue)
    headers = message.content.properties["headers"]
    assert headers == EVERY_TYPE
    assert same(headers, EVERY_TYPE)


@pytest_twisted.ensureDeferred
async def test_any_headers_come_back_from_the_broker_as_they_went(amqp):
    client, channel = amqp
    queue = (await channel.queue_declare(exclusive=True, auto_delete=True)).queue
    drawn = generated(tables, 60)
    for n, table in enumerate(drawn):
        content = Content(str(n).encode(), properties={"headers": table})
        channel.basic_publish(exchange="", routing_key=queue, content=content)
    reply = await channel.basic_consume(queue=queue, no_ack=True)
    deliveries = await client.queue(reply.consumer_tag)
    for n, table in enumerate(drawn):
        message = await deliveries.get(timeout=10)
        assert message.content.body == str(n).encode()
        # No headers at all when the table is empty.
        assert same(message.content.properties.get("headers", {}), table), table


@pytest_twisted.ensureDeferred
async def test_a_dead_lettered_message_carries_x_death_and_can_be_sent_back(amqp):
    client, channel = amqp
    # Exclusive, not auto-deleted: consumers come and go.
    dead = (await channel.queue_declare(exclusive=True)).queue
    source = (
        await channel.queue_declare(
            exclusive=True,
            arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dead},
        )
    ).queue
    await channel.basic_qos(prefetch_count=1)
    headers: dict = {"mine": "yes"}
    for round_ in (1, 2):
        content = Content(b"x", properties={"headers": headers})
        channel.basic_publish(exchange="", routing_key=source, content=content)
        reply = await channel.basic_consume(queue=source)
        message = await (await client.queue(reply.consumer_tag)).get(timeout=10)
        channel.basic_reject(delivery_tag=message.delivery_tag, requeue=False)
        await channel.basic_cancel(consumer_tag=reply.consumer_tag)
        headers = (await first_message(client, channel, dead)).content.properties["headers"]
        [death] = headers["x-death"]
        # Sent back as it came, the broker reads its own count and adds one.
        assert death["count"] == round_
        assert type(death["count"]) is Int64
        assert (death["reason"], death["queue"], death["routing-keys"]) == (
            "rejected",
            source,
            [source],
        )
        assert abs(death["time"].datetime - datetime.now(UTC)).total_seconds() < 60
        assert headers["mine"] == "yes"


@pytest_twisted.ensureDeferred
async def test_a_quorum_redelivery_counts_in_a_long(amqp):
    client, channel = amqp
    queue = f"notifications-test-quorum-{uuid.uuid4().hex[:12]}"
    await channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        channel.basic_publish(exchange="", routing_key=queue, content=Content(b"q"))
        await channel.basic_qos(prefetch_count=1)
        reply = await channel.basic_consume(queue=queue)
        deliveries = await client.queue(reply.consumer_tag)
        first = await deliveries.get(timeout=10)
        assert "x-delivery-count" not in (first.content.properties.get("headers") or {})
        channel.basic_reject(delivery_tag=first.delivery_tag, requeue=True)
        again = await deliveries.get(timeout=10)
        count = again.content.properties["headers"]["x-delivery-count"]
        assert (count, type(count)) == (1, Int64)
        channel.basic_ack(delivery_tag=again.delivery_tag)
    finally:
        await channel.queue_delete(queue=queue)


@pytest_twisted.ensureDeferred
async def test_method_arguments_of_any_type_reach_the_broker(amqp):
    client, channel = amqp
    exchange = f"notifications-test-headers-{uuid.uuid4().hex[:12]}"
    # exchange.declare with an argument the broker reads
    await channel.exchange_declare(
        exchange=exchange, type="headers", arguments={"alternate-exchange": "nowhere"}
    )
    try:
        # queue.declare with a long the broker enforces: one message at most
        queue = (
            await channel.queue_declare(
                exclusive=True, auto_delete=True, arguments={"x-max-length": Int64(1)}
            )
        ).queue
        # queue.bind arguments: a headers exchange matches values of any type
        match = {"n": Int64(2**40), "when": Timestamp(1700000000), "flag": True, "x": b"\x01"}
        await channel.queue_bind(
            queue=queue, exchange=exchange, arguments={"x-match": "all", **match}
        )
        for headers in ({**match, "n": Int64(2**40 + 1)}, match, {**match, "extra": 1.5}):
            content = Content(repr(headers).encode(), properties={"headers": headers})
            channel.basic_publish(exchange=exchange, routing_key="", content=content)
        # basic.consume arguments: a priority as a short
        reply = await channel.basic_consume(
            queue=queue, no_ack=True, arguments={"x-priority": Int16(5)}
        )
        deliveries = await client.queue(reply.consumer_tag)
        message = await deliveries.get(timeout=10)
        # Only the last matching message is left (x-max-length 1).
        assert message.content.properties["headers"] == {**match, "extra": 1.5}
        declared = await channel.queue_declare(queue=queue, passive=True)
        assert declared.message_count == 0
    finally:
        await channel.exchange_delete(exchange=exchange)


@pytest_twisted.ensureDeferred
async def test_a_bad_argument_fails_the_call_and_the_connection_goes_on(amqp):
    client, channel = amqp
    with pytest.raises(ValueError, match="'x-max-length': an integer field is at most 64 bits"):
        await channel.queue_declare(exclusive=True, arguments={"x-max-length": 2**64})
    declared = await channel.queue_declare(exclusive=True, auto_delete=True)
    assert declared.queue
    assert not client.closed
    with pytest.raises(Closed):
        # A channel error on an extra channel leaves the connection open.
        extra = await client.open_extra_channel(Listener())
        try:
            await extra.queue_declare(queue=f"missing-{uuid.uuid4().hex}", passive=True)
        finally:
            await client.close_extra_channel(extra)
    assert not client.closed
    assert (await channel.queue_declare(queue=declared.queue, passive=True)).queue == declared.queue


@pytest_twisted.ensureDeferred
async def test_the_broker_tells_a_consumer_its_queue_is_gone(amqp, broker):
    # Only to a client announcing consumer_cancel_notify (a boolean) at log-in.
    cancelled: list = []

    class Owner(BrokerEvents):
        def broker_cancel(self, message) -> None:
            cancelled.append(message.consumer_tag)

    client, channel = await connect(reactor, broker, Owner())
    try:
        queue = (await channel.queue_declare(exclusive=True)).queue
        reply = await channel.basic_consume(queue=queue, no_ack=True)
        await channel.queue_delete(queue=queue)
        await wait_for(lambda: cancelled == [reply.consumer_tag])
    finally:
        await client.close(within=2)
