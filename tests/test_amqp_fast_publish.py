"""The publisher's hand-written basic.publish and confirms: txamqp's bytes, and on the broker.

PublishEncoder (notifications.amqp.connection) replaces txamqp's generic
codec for the one method the daemon sends per notification. Its frames are
compared byte for byte with what txamqp writes for the same ``basic_publish``
(captured on a StringTransport, with the project's spec); the publisher is
driven through a whole connection by a scripted broker, then against the
real RabbitMQ. AMQPClient decodes the broker's basic.ack/basic.nack by hand
too: checked against txamqp's decoder, and for the order of methods.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import pytest_twisted
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from txamqp.connection import Body, Frame, Header, Method
from txamqp.content import Content
from txamqp.protocol import FrameReceiver
from txamqp.spec import pythonize

from notifications.amqp.connection import CHANNEL, AMQPClient, Delegate, PublishEncoder
from notifications.amqp.spec import load_spec
from notifications.config import BrokerConfig
from notifications.publisher import (
    BrokerUnavailable,
    PublicationRefused,
    Publisher,
    message_properties,
)

#: The smallest frame_max a broker may propose: bodies split early.
SMALL_FRAME_MAX = 4096
#: What RabbitMQ proposes, unless configured otherwise.
RABBITMQ_FRAME_MAX = 131072

TIMESTAMP = 1795855255


def txamqp_publish(
    frame_max: int,
    exchange: str | bytes,
    routing_key: bytes,
    body: bytes,
    message_id: str | bytes,
    timestamp: int,
) -> bytes:
    """What txamqp's ``channel.basic_publish`` writes, as the publisher called it before.

    txamqp counts a text short string in characters: give it non-ASCII
    strings as UTF-8 bytes, or it writes a wrong length.
    """
    client = AMQPClient(Delegate(), vhost="/", spec=load_spec(), heartbeat=0, clock=Clock())
    client.MAX_LENGTH = frame_max  # as connection.tune sets it
    transport = StringTransport()
    client.makeConnection(transport)
    transport.clear()  # the protocol header
    channels: list = []
    client.channel(CHANNEL).addCallback(channels.append)
    published: list = []
    channels[0].basic_publish(
        exchange=exchange,
        routing_key=routing_key,
        mandatory=True,
        content=Content(body, properties=message_properties(message_id, timestamp)),
    ).addCallback(published.append)
    assert published == [None]
    return transport.value()


def fast_publish(
    frame_max: int,
    exchange: str,
    routing_key: bytes,
    body: bytes,
    message_id: str,
    timestamp: int,
) -> bytes:
    encoder = PublishEncoder(CHANNEL, exchange, frame_max, message_properties("", 0))
    return encoder.encode(routing_key, body, message_id.encode(), timestamp)


def for_txamqp(text: str) -> str | bytes:
    return text if text.isascii() else text.encode()


# Byte for byte against txamqp ---------------------------------------------------------------

CASES = {
    "ascii": ("notifications", b"acme.widgets.github.push", b'{"text": "pushed"}', "d-0001"),
    "non-ascii body and id": (
        "notifications",
        b"acme.widgets.github.push",
        json.dumps({"text": "Zoë a poussé « ça » ✓ 🚀"}, ensure_ascii=False).encode(),
        "délivrance-✓-0002",
    ),
    "empty body": ("notifications", b"a.b", b"", "d-0003"),
    "empty routing key and id": ("notifications", b"", b"{}", ""),
    "one frame exactly": ("notifications", b"a.b", b"x" * (SMALL_FRAME_MAX - 8), "d-0004"),
    "one byte over a frame": ("notifications", b"a.b", b"x" * (SMALL_FRAME_MAX - 7), "d-0005"),
    "several body frames": (
        "notifications",
        b"a.b",
        ("é" * 9000).encode() + b"!",  # 18001 bytes, frames split inside characters
        "d-0006",
    ),
    "two frames exactly": ("notifications", b"a.b", b"y" * 2 * (SMALL_FRAME_MAX - 8), "d-7"),
    "255-byte routing key": ("notifications", b"k" * 255, b"{}", "d-0008"),
    "255-byte non-ASCII routing key": ("notifications", ("é" * 127).encode() + b".", b"{}", "9"),
    "255-byte message id": ("notifications", b"a.b", b"{}", "i" * 255),
    "other exchange": ("notifications-test-0123456789ab", b"a.b", b"{}", "d-0010"),
    "non-ASCII exchange": ("échange", b"a.b", b"{}", "d-0011"),
}


@pytest.mark.parametrize("frame_max", [SMALL_FRAME_MAX, RABBITMQ_FRAME_MAX])
@pytest.mark.parametrize("case", CASES)
def test_the_frames_are_txamqps(case: str, frame_max: int):
    exchange, routing_key, body, message_id = CASES[case]
    expected = txamqp_publish(
        frame_max, for_txamqp(exchange), routing_key, body, for_txamqp(message_id), TIMESTAMP
    )
    assert fast_publish(frame_max, exchange, routing_key, body, message_id, TIMESTAMP) == expected


def test_a_long_body_is_split_at_frame_max():
    body = bytes(range(256)) * 70  # 17920 bytes: 4 full body frames and a short one
    frames = split_frames(fast_publish(SMALL_FRAME_MAX, "x", b"a.b", body, "d", TIMESTAMP))
    assert [kind for kind, _ in frames] == [1, 2, 3, 3, 3, 3, 3]
    payloads = [payload for kind, payload in frames if kind == 3]
    assert [len(p) for p in payloads] == [4088, 4088, 4088, 4088, 17920 - 4 * 4088]
    assert b"".join(payloads) == body


def split_frames(data: bytes) -> list[tuple[int, bytes]]:
    """(frame type, payload) of each frame, checking channel and frame-end octets."""
    frames = []
    while data:
        kind, channel, size = data[0], int.from_bytes(data[1:3]), int.from_bytes(data[3:7])
        assert channel == CHANNEL
        assert data[7 + size] == 0xCE
        frames.append((kind, data[7 : 7 + size]))
        data = data[8 + size :]
    return frames


def short_text(limit: int = 255):
    return st.text(max_size=limit).filter(lambda text: len(text.encode()) <= limit)


@settings(max_examples=300, deadline=None)
@given(
    frame_max=st.sampled_from([SMALL_FRAME_MAX, 5000, RABBITMQ_FRAME_MAX]),
    routing_key=short_text(),
    body=st.binary(max_size=3 * SMALL_FRAME_MAX),
    message_id=short_text(),
    timestamp=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_any_message_is_framed_as_txamqp_frames_it(
    frame_max, routing_key, body, message_id, timestamp
):
    key = routing_key.encode()
    expected = txamqp_publish(frame_max, "notifications", key, body, message_id.encode(), timestamp)
    assert fast_publish(frame_max, "notifications", key, body, message_id, timestamp) == expected


def test_a_short_string_over_255_bytes_is_refused():
    encoder = PublishEncoder(CHANNEL, "notifications", 4096, message_properties("", 0))
    with pytest.raises(ValueError, match="255 bytes"):
        encoder.encode(b"k" * 256, b"{}", b"d", TIMESTAMP)
    with pytest.raises(ValueError, match="255 bytes"):
        encoder.encode(b"a.b", b"{}", ("é" * 128).encode(), TIMESTAMP)


def test_only_the_notification_properties_are_encoded():
    properties = {**message_properties("", 0), "priority": 5}
    with pytest.raises(ValueError, match="cannot encode"):
        PublishEncoder(CHANNEL, "notifications", 4096, properties)


# The publisher over a scripted broker --------------------------------------------------------


class ScriptedEndpoint:
    """Connects at once, over a StringTransport that writes are counted on.

    Its connections are the factory's protocols: ClientService's proxies of
    the AMQPClient, which tell the service when the connection is lost.
    """

    def __init__(self):
        self.connections: list[tuple[Any, CountingTransport]] = []

    def connect(self, factory) -> defer.Deferred:
        client = factory.buildProtocol(None)
        transport = CountingTransport()
        client.makeConnection(transport)
        self.connections.append((client, transport))
        return defer.succeed(client)


class CountingTransport(StringTransport):
    def __init__(self):
        super().__init__()
        self.writes = 0

    def write(self, data: bytes) -> None:
        self.writes += 1
        super().write(data)


_BROKER_SIDE = FrameReceiver(load_spec())
_DEFAULTS = {"bit": False, "shortstr": "", "longstr": "", "table": {}}


def broker_says(channel: int, name: str, **values) -> bytes:
    """A method frame from the broker: ``broker_says(1, "basic.ack", delivery_tag=3)``."""
    klass, method = name.split(".")
    method = _BROKER_SIDE.spec.classes.byname[klass].methods.byname[method]
    args = [values.get(pythonize(f.name), _DEFAULTS.get(f.type, 0)) for f in method.fields]
    return _BROKER_SIDE._pack_frame(Frame(channel, Method(method, *args)))


def handshake(frame_max: int) -> bytes:
    """The broker's side of log-in, channel, exchange and confirm.select, in one go."""
    return b"".join(
        (
            broker_says(0, "connection.start", version_minor=9, mechanisms="PLAIN"),
            broker_says(0, "connection.tune", channel_max=2047, frame_max=frame_max),
            broker_says(0, "connection.open-ok"),
            broker_says(CHANNEL, "channel.open-ok"),
            broker_says(CHANNEL, "exchange.declare-ok"),
            broker_says(CHANNEL, "confirm.select-ok"),
        )
    )


class ScriptedBrokerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = ScriptedEndpoint()
        self.broker = BrokerConfig(exchange="notifications-test", heartbeat=0)
        self.publisher = Publisher(self.broker, self.clock, endpoint=self.endpoint)
        self.publisher.startService()
        self.client, self.transport = self.connect()

    def connect(self) -> tuple[Any, CountingTransport]:
        client, transport = self.endpoint.connections[-1]
        client.dataReceived(handshake(SMALL_FRAME_MAX))
        self.assertTrue(self.publisher.connected)
        self.assertIs(self.publisher.client.transport, transport)
        transport.clear()
        transport.writes = 0
        return client, transport

    def tearDown(self) -> None:
        connected = self.publisher.connected
        stopped = self.publisher.stopService()
        if connected:  # a StringTransport does not end by itself
            self.client.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def ack(self, tag: int, multiple: bool = False) -> None:
        self.client.dataReceived(
            broker_says(CHANNEL, "basic.ack", delivery_tag=tag, multiple=multiple)
        )

    def publish(self, count: int) -> list[defer.Deferred]:
        return [
            self.publisher.publish("a.b", b'{"n": %d}' % n, f"d-{n}", TIMESTAMP)
            for n in range(count)
        ]

    def test_a_publication_is_one_write_of_txamqps_frames(self) -> None:
        body = ("ü" * 5000).encode()  # three body frames at frame_max 4096
        confirmed = self.publisher.publish("acme.wïdgets.push", body, "délivrance-1", TIMESTAMP)
        self.assertEqual(self.transport.writes, 1)
        expected = txamqp_publish(
            SMALL_FRAME_MAX,
            self.broker.exchange,
            "acme.wïdgets.push".encode(),
            body,
            "délivrance-1".encode(),
            TIMESTAMP,
        )
        self.assertEqual(self.transport.value(), expected)
        self.assertNoResult(confirmed)
        self.ack(1)
        self.assertIsNone(self.successResultOf(confirmed))

    def test_the_time_of_publication_is_the_default_timestamp(self) -> None:
        before = int(time.time())  # the wall clock, as before: not the reactor's
        confirmed = self.publisher.publish("a.b", b"{}", "d-1")
        header = split_frames(self.transport.value())[1][1]
        # content-type, content-encoding, delivery-mode, message-id "d-1", then the time.
        offset = 14 + 1 + len("application/json") + 1 + len("utf-8") + 1 + 1 + len("d-1")
        timestamp = int.from_bytes(header[offset : offset + 8])
        self.assertLessEqual(before, timestamp)
        self.assertLessEqual(timestamp, before + 2)
        self.ack(1)
        self.successResultOf(confirmed)

    def test_multiple_ack_settles_exactly_the_tags_up_to_it(self) -> None:
        confirms = self.publish(6)
        self.ack(2)
        self.assertIsNone(self.successResultOf(confirms[1]))
        self.assertNoResult(confirms[0])
        self.ack(4, multiple=True)
        for confirm in confirms[:4]:
            self.assertIsNone(self.successResultOf(confirm))
        self.assertNoResult(confirms[4])
        self.assertNoResult(confirms[5])
        self.assertEqual(self.publisher.confirms.tags, [5, 6])
        self.client.dataReceived(broker_says(CHANNEL, "basic.nack", delivery_tag=6))
        self.failureResultOf(confirms[5], PublicationRefused)
        self.assertNoResult(confirms[4])
        self.ack(6, multiple=True)
        self.assertIsNone(self.successResultOf(confirms[4]))
        self.assertEqual(self.publisher.status()["unconfirmed"], 0)

    def test_a_multiple_ack_below_every_pending_tag_settles_nothing(self) -> None:
        confirms = self.publish(2)
        self.ack(2)
        self.ack(1, multiple=True)
        self.successResultOf(confirms[0])
        self.ack(1, multiple=True)  # again: nothing left at or below 1
        self.assertEqual(self.publisher.confirms.tags, [])

    def test_tags_count_from_one_on_each_connection(self) -> None:
        first = self.publish(3)
        self.client.connectionLost(Failure(ConnectionLost("cut")))
        for confirm in first:
            self.failureResultOf(confirm, ConnectionLost)
        self.failureResultOf(self.publish(1)[0], BrokerUnavailable)

        self.clock.advance(60)  # the retry
        self.client, self.transport = self.connect()
        second = self.publish(2)
        self.ack(1)
        self.successResultOf(second[0])
        self.assertEqual(self.publisher.confirms.tags, [2])
        self.ack(2)
        self.successResultOf(second[1])

    @pytest.mark.logged_errors
    def test_publishing_on_a_channel_the_broker_closed_is_broker_unavailable(self) -> None:
        pending = self.publish(1)[0]
        self.client.dataReceived(
            broker_says(CHANNEL, "channel.close", reply_code=406, reply_text="PRECONDITION")
        )
        self.assertTrue(self.publisher.channel.closed)  # until the connection is lost
        self.transport.clear()

        self.failureResultOf(self.publish(1)[0], BrokerUnavailable)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.publisher.confirms.tags, [1])

        self.client.connectionLost(Failure(ConnectionDone()))
        self.failureResultOf(pending, ConnectionLost)

    def test_publishing_after_the_transport_is_gone_is_broker_unavailable(self) -> None:
        self.client.connectionLost(Failure(ConnectionLost("reset")))
        self.failureResultOf(self.publish(1)[0], BrokerUnavailable)
        self.assertEqual(self.transport.value(), b"")
        self.assertEqual(self.publisher.status()["unconfirmed"], 0)

    def test_a_routing_key_over_255_bytes_fails_without_a_tag(self) -> None:
        failed = self.publisher.publish("k" * 256, b"{}", "d-1", TIMESTAMP)
        self.failureResultOf(failed, ValueError)
        self.assertEqual(self.transport.value(), b"")
        confirmed = self.publish(1)[0]
        self.ack(1)
        self.successResultOf(confirmed)


# On the broker -------------------------------------------------------------------------------


def broker_messages() -> list[tuple[str, bytes, str]]:
    """(routing key, body, message id): small, non-ASCII, empty, and over frame_max."""
    big = json.dumps({"text": "« Zoë » ✓ " * 30000}, ensure_ascii=False).encode()
    assert len(big) > 2 * RABBITMQ_FRAME_MAX
    return [
        ("acme.widgets.github.push", b'{"text": "pushed"}', "d-ascii"),
        ("acme.widgets.github.push", '{"text": "poussé ✓ 🚀"}'.encode(), "délivrance-✓"),
        ("acme.empty", b"", "d-empty"),
        ("acme.frame", b"x" * (RABBITMQ_FRAME_MAX - 8), "d-one-frame"),
        ("acme.frame", b"y" * (RABBITMQ_FRAME_MAX - 7), "d-one-byte-more"),
        ("acme.big", big, "d-big-1"),
        ("k" * 255, big[: 3 * RABBITMQ_FRAME_MAX // 2], "d-big-2"),
    ]


@pytest_twisted.ensureDeferred
async def test_the_broker_takes_and_delivers_what_the_fast_path_sends(broker, consumer):
    publisher = Publisher(broker, reactor)
    publisher.startService()
    try:
        await publisher.when_connected().addTimeout(10, reactor)
        assert publisher.client.MAX_LENGTH == RABBITMQ_FRAME_MAX
        messages = broker_messages()
        confirms = [
            publisher.publish(key, body, message_id, TIMESTAMP + n)
            for n, (key, body, message_id) in enumerate(messages)
        ]
        await defer.gatherResults(confirms, consumeErrors=True).addTimeout(10, reactor)
        assert publisher.status()["unconfirmed"] == 0
        assert publisher.unroutable == 0
        for n, (key, body, message_id) in enumerate(messages):
            raw = await consumer.queue.get(timeout=5)
            assert raw.routing_key == key
            # txamqp reads an empty body as "".
            assert (raw.content.body or b"") == body
            assert raw.content.properties == {
                "content-type": "application/json",
                "content-encoding": "utf-8",
                "delivery-mode": 2,
                "message-id": message_id,
                "timestamp": TIMESTAMP + n,
                "app-id": "notifications",
            }
        await consumer.expect_nothing()
    finally:
        await publisher.stopService()


# Confirms decoded by hand -------------------------------------------------------------------


def confirm_frame(channel: int, method: int, tag: int, bits: int) -> bytes:
    return (
        bytes((1,))
        + channel.to_bytes(2)
        + (13).to_bytes(4)
        + (60).to_bytes(2)
        + (method.to_bytes(2) + tag.to_bytes(8) + bytes((bits, 0xCE)))
    )


class Recorder:
    """A delegate's listener that notes what the broker said, in order."""

    def __init__(self):
        self.heard: list[tuple] = []

    def broker_ack(self, message) -> None:
        self.heard.append(("ack", message.delivery_tag, message.multiple))

    def broker_nack(self, message) -> None:
        self.heard.append(("nack", message.delivery_tag, message.multiple, message.requeue))

    def broker_return(self, message) -> None:
        self.heard.append(("return", message.routing_key, message.content.body))


class ConfirmFrameTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.recorder = Recorder()
        self.client = AMQPClient(
            Delegate(self.recorder), vhost="/", spec=load_spec(), heartbeat=5, clock=self.clock
        )
        self.transport = StringTransport()
        self.client.makeConnection(self.transport)
        for channel in (1, 2):
            self.successResultOf(self.client.channel(channel))
        self.generic = 0
        process_frame = self.client.process_frame

        def counting(frame):
            self.generic += 1
            return process_frame(frame)

        self.client.process_frame = counting

    def tearDown(self) -> None:
        self.client.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_confirms_decode_as_txamqp_decodes_them(self) -> None:
        for method in (80, 120):
            for tag in (0, 1, 255, 2**32, 2**64 - 1):
                for bits in range(4):
                    data = confirm_frame(1, method, tag, bits)
                    ours = self.client._unpack_frame(data)
                    theirs = FrameReceiver._unpack_frame(self.client, data)
                    self.assertEqual(ours.channel, theirs.channel)
                    self.assertIs(ours.payload.method, theirs.payload.method)
                    self.assertEqual(ours.payload.args, theirs.payload.args)

    def test_confirms_reach_the_listener_at_once(self) -> None:
        self.client.dataReceived(
            broker_says(1, "basic.ack", delivery_tag=3, multiple=True)
            + broker_says(1, "basic.nack", delivery_tag=4, requeue=True)
            + broker_says(1, "basic.ack", delivery_tag=5)
        )
        self.assertEqual(
            self.recorder.heard, [("ack", 3, True), ("nack", 4, False, True), ("ack", 5, False)]
        )
        self.assertEqual(self.generic, 0)

    def test_a_confirm_waits_behind_a_message_still_arriving(self) -> None:
        basic = load_spec().classes.byname["basic"]
        self.client.dataReceived(
            broker_says(2, "basic.return", reply_code=312, reply_text="NO_ROUTE", routing_key="a.b")
            + _BROKER_SIDE._pack_frame(Frame(2, Header(basic, 0, 2)))
        )
        self.client.dataReceived(broker_says(1, "basic.ack", delivery_tag=7, multiple=True))
        self.assertEqual(self.recorder.heard, [])  # txamqp's queue keeps the order
        self.client.dataReceived(_BROKER_SIDE._pack_frame(Frame(2, Body(b"{}"))))
        self.assertEqual(self.recorder.heard, [("return", "a.b", b"{}"), ("ack", 7, True)])
        self.client.dataReceived(broker_says(1, "basic.ack", delivery_tag=8))
        self.assertEqual(self.recorder.heard[-1], ("ack", 8, False))
        self.assertEqual(self.generic, 4)  # return, header, first ack, body

    def test_confirms_count_as_signs_of_life(self) -> None:
        # Three heartbeat intervals without a frame abort the connection.
        for _ in range(4):
            self.clock.advance(10)
            self.client.dataReceived(broker_says(1, "basic.ack", delivery_tag=1))
        self.assertFalse(self.transport.disconnecting)
        self.clock.advance(15)
        self.assertTrue(self.transport.disconnecting)
