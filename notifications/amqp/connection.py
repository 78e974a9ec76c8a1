"""A txamqp connection with our spec, publisher confirms and returned messages.

txamqp gives the protocol; this module gives what every user of the broker
in the project needs (the daemon's publisher, the ``tail`` and ``send``
commands, the tests): an endpoint built from the broker configuration, a
factory whose delegate hands broker-initiated methods to callbacks, and the
log-in sequence.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable, Mapping
from io import BytesIO
from typing import Any, Protocol

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.client import Closed, TwistedDelegate
from txamqp.codec import Codec
from txamqp.connection import Body, Frame, Header, Method
from txamqp.message import Message
from txamqp.protocol import AMQChannel, AMQClient, GarbageException

from ..config import BrokerConfig
from . import fieldtable
from .spec import load_spec

#: The channel every user of the connection works on.
CHANNEL = 1

#: What the client tells the broker about itself in ``connection.start-ok``.
#: Only capabilities the spec table can take: announcing ``connection.blocked``
#: would bring methods it does not carry.
CLIENT_PROPERTIES = {"product": "notifications", "capabilities": {"consumer_cancel_notify": True}}


class BrokerListener(Protocol):
    """What the owner of a connection is told: the connection is made, and the
    methods the broker sends on its own (each a txamqp ``Message``)."""

    def amqp_connection_made(self, client: AMQClient) -> None:
        """A new TCP connection, before the log-in."""

    def broker_ack(self, message: Message) -> None:
        """``basic.ack`` of a publisher confirm."""

    def broker_nack(self, message: Message) -> None:
        """``basic.nack`` of a publisher confirm."""

    def broker_return(self, message: Message) -> None:
        """``basic.return``: a mandatory message no queue was bound for."""

    def broker_cancel(self, message: Message) -> None:
        """``basic.cancel``: the broker dropped a consumer (its queue was deleted…)."""


class BrokerEvents:
    """A :class:`BrokerListener` that ignores everything: owners override what they use."""

    def amqp_connection_made(self, client: AMQClient) -> None:
        pass

    def broker_ack(self, message: Message) -> None:
        pass

    def broker_nack(self, message: Message) -> None:
        pass

    def broker_return(self, message: Message) -> None:
        pass

    def broker_cancel(self, message: Message) -> None:
        pass


class ChannelListener(BrokerListener, Protocol):
    """The owner of a channel of its own (:meth:`AMQPClient.open_extra_channel`): it also
    receives the channel's deliveries, and hears when the channel ends."""

    def deliver(self, message: Message) -> None:
        """``basic.deliver`` on the channel."""

    def channel_closed(self, reason: Any) -> None:
        """The channel ended: the broker closed it, the connection ended, or its owner did."""


class ChannelEvents(BrokerEvents):
    """A :class:`ChannelListener` that ignores everything: owners override what they use."""

    def deliver(self, message: Message) -> None:
        pass

    def channel_closed(self, reason: Any) -> None:
        pass


class Delegate(TwistedDelegate):
    """Routes the methods the broker sends on its own to the connection's owner.

    A channel opened with a listener of its own (:meth:`AMQPClient.open_extra_channel`:
    a stream reader's, say) has its confirms, returns, cancels and
    deliveries handed to that listener instead, and a channel error closes
    only that channel.
    """

    log = Logger()

    def __init__(self, listener: BrokerListener | None = None):
        super().__init__()
        self.listener: BrokerListener = listener if listener is not None else BrokerEvents()

    def _listener(self, channel) -> BrokerListener:
        # A channel with a listener of its own (open_extra_channel) tells it.
        own = channel.listener if isinstance(channel, TableChannel) else None
        return own if own is not None else self.listener

    def connection_start(self, channel, message) -> None:
        # txamqp announces no capability. The broker tells a consumer that its
        # queue is gone (basic.cancel) only to clients that announce
        # consumer_cancel_notify, as a boolean, which txamqp's own table codec
        # could not even write (it sent True as an integer).
        channel.connection_start_ok(
            client_properties=CLIENT_PROPERTIES,
            mechanism=self.client.mechanism,
            response=self.client.response,
            locale=self.client.locale,
        )

    def connection_tune(self, channel, message) -> None:
        # 0 means no limit: channel ids are 16-bit.
        self.client.channel_max = message.channel_max or 65535
        super().connection_tune(channel, message)

    def basic_ack(self, channel, message) -> None:
        self._listener(channel).broker_ack(message)

    def basic_nack(self, channel, message) -> None:
        self._listener(channel).broker_nack(message)

    def basic_return_(self, channel, message) -> None:
        self._listener(channel).broker_return(message)

    def basic_cancel(self, channel, message) -> None:
        self._listener(channel).broker_cancel(message)

    def basic_deliver(self, channel, message):
        own = channel.listener if isinstance(channel, TableChannel) else None
        if own is None:
            return super().basic_deliver(channel, message)
        own.deliver(message)
        return None

    def channel_close(self, channel, message) -> None:
        # A channel error on the main channel (an exchange declared with
        # another type, say) leaves it unusable: drop the connection so the
        # reconnecting service starts again from a clean state. Any other
        # channel is its user's own (a probe, a stream reader): closed alone,
        # its user hears of it (TableChannel.do_close, or the failed call).
        super().channel_close(channel, message)
        if channel.id != CHANNEL:
            return
        self.log.error(
            "The broker closed channel {channel}: {code} {text}",
            channel=channel.id,
            code=message.reply_code,
            text=message.reply_text,
        )
        self.client.transport.loseConnection()


def describe_error(error: BaseException) -> str:
    """A one-line account of a broker error, for logs and reports.

    txamqp wraps the reason of a closed connection or channel in ``Closed``:
    either a Failure (the TCP connection ended) or the broker's own
    ``connection.close``/``channel.close`` method with its reply code and text.
    """
    reason = error.args[0] if isinstance(error, Closed) and error.args else None
    if isinstance(reason, Failure):
        return describe_error(reason.value)
    if reason is not None and hasattr(reason, "reply_code"):
        return f"the broker closed the connection: {reason.reply_code} {reason.reply_text}"
    return str(error) or type(error).__name__


# Frames (AMQP 0-9-1, section 4.2.3): frame type, channel, payload size,
# payload, frame-end octet.
_FRAME_METHOD, _FRAME_HEADER, _FRAME_BODY = 1, 2, 3
_FRAME_END = b"\xce"
_FRAME_START = struct.Struct("!BHI")

# A basic.ack or basic.nack (publisher confirms) is a 21-byte method frame:
# frame type 1, channel, payload size 13, class 60, method, delivery tag, one
# octet of bits (multiple, then requeue for a nack), frame end.
_CONFIRM_FRAME = struct.Struct("!BHIHHQBB")


class TableCodec(Codec):
    """txamqp's codec with complete field tables (:mod:`notifications.amqp.fieldtable`).

    Every other type is txamqp's own, so a frame without a table is the same
    either way.
    """

    def encode_table(self, tbl: Mapping[str, Any]) -> None:
        self.write(fieldtable.encode_table(tbl))

    def decode_table(self) -> dict[str, Any]:
        size = self.decode_long()
        data = self.read(size)
        if len(data) != size:
            raise fieldtable.FieldTableError(f"a table of {size} bytes, but {len(data)} left")
        return fieldtable.decode_fields(data)


def _carries_table(payload: Any) -> bool:
    """Whether txamqp's own codec would get this outgoing payload wrong."""
    if type(payload) is Method:
        return any(field.type == "table" for field in payload.method.fields)
    return type(payload) is Header and payload.properties.get("headers") is not None


def encode_payload(payload: Method | Header) -> bytes:
    """A method or content header frame's payload, with :class:`TableCodec`.

    The same steps as txamqp's ``Method.encode`` and ``Header.encode``, which
    build txamqp's ``Codec`` themselves and so cannot be given another one.
    """
    buffer = BytesIO()
    codec = TableCodec(buffer)
    if isinstance(payload, Method):
        codec.encode_short(payload.method.klass.id)
        codec.encode_short(payload.method.id)
        for field, value in zip(payload.method.fields, payload.args, strict=True):
            codec.encode(field.type, value)
    else:
        fields = payload.klass.fields
        codec.encode_short(payload.klass.id)
        codec.encode_short(payload.weight)
        codec.encode_longlong(payload.size)
        # Property flags (AMQP 0-9-1, section 4.2.6.1): one bit per property,
        # from bit 15 down; bit 0 of a word says another word follows.
        words, word = [], 0
        for index, field in enumerate(fields):
            if index and index % 15 == 0:
                words.append(word | 1)
                word = 0
            if payload.properties.get(field.name) is not None:
                word |= 1 << (15 - index % 15)
        for flags in (*words, word):
            codec.encode_short(flags)
        for field in fields:
            value = payload.properties.get(field.name)
            if value is not None:
                codec.encode(field.type, value)
        _check_properties(payload)
    codec.flush()
    return buffer.getvalue()


def _check_properties(header: Header) -> None:
    # txamqp only logs a property it does not know, and drops it.
    unknown = set(header.properties) - {field.name for field in header.klass.fields}
    if unknown:
        raise ValueError(f"unknown message properties: {', '.join(sorted(unknown))}")


def decode_payload(spec: Any, kind: int, data: bytes) -> Method | Header:
    """A method (``kind`` 1) or content header (2) frame's payload, with :class:`TableCodec`."""
    codec = TableCodec(BytesIO(data))
    klass = spec.classes.byid[codec.decode_short()]
    if kind == _FRAME_METHOD:
        method = klass.methods.byid[codec.decode_short()]
        return Method(method, *(codec.decode(field.type) for field in method.fields))
    weight = codec.decode_short()
    size = codec.decode_longlong()
    present: list[bool] = []
    while True:
        flags = codec.decode_short()
        present.extend(bool(flags >> bit & 1) for bit in range(15, 0, -1))
        if not flags & 1:
            break
    properties = {
        str(field.name): codec.decode(field.type)
        for flag, field in zip(present, klass.fields)  # noqa: B905 - padding bits
        if flag
    }
    return Header(klass, weight, size, **properties)


class TableChannel(AMQChannel):
    """txamqp's channel: tables checked when a method is called, and an optional listener.

    Frames are encoded later, by the connection's writer, where an error
    would stop every later frame and tell no caller: so a method or a content
    header carrying a table is encoded once here first, and a bad value (or
    a message property that does not exist, which txamqp would drop) fails
    the call's Deferred with the codec's ``TypeError`` or ``ValueError``.

    ``listener`` (see :class:`Delegate`) also hears ``channel_closed(reason)``
    when the channel ends, whoever closed it: the broker (a ``channel.close``
    message), the connection's end (a Failure or exception), or
    :meth:`AMQPClient.close_extra_channel`.
    """

    #: What the broker sends on this channel goes here, when set (see Delegate).
    listener: ChannelListener | None = None

    def invoke(self, method, args, content=None) -> defer.Deferred:
        try:
            payload = Method(method, *args)
            if _carries_table(payload):
                encode_payload(payload)
            if content is not None:
                header = Header(
                    method.klass, content.weight(), content.size(), **content.properties
                )
                if _carries_table(header):
                    encode_payload(header)
                else:
                    _check_properties(header)
        except (TypeError, ValueError):
            return defer.fail()
        return super().invoke(method, args, content)

    def do_close(self, reason) -> None:
        was_closed = self.closed
        super().do_close(reason)
        listener = self.listener
        if not was_closed and listener is not None:
            listener.channel_closed(reason)


class AMQPClient(AMQClient):
    """txamqp's client, reading message bodies as bytes, and confirms quickly.

    txamqp decodes each body frame to text when it can, then counts the
    characters it read against the byte size announced by the content header:
    a body with any non-ASCII character never completes. Here body frames
    stay bytes, which txamqp's content reader already handles.

    The broker's ``basic.ack``/``basic.nack`` are decoded with one
    ``struct.unpack`` and handed to the delegate at once: txamqp's generic
    path (its codec, then three ``inlineCallbacks`` and two queues per
    frame) costs about 80 µs per confirm on the reactor thread, and RabbitMQ
    sends one for every three or four messages under load. The delegate
    receives the same txamqp ``Message``.

    Field tables (message headers, method arguments, the broker's
    properties) are read and written with every type RabbitMQ uses
    (:class:`TableCodec`), where txamqp's codec knows only strings, 32-bit
    integers, booleans and nested tables. Frames without a table are still
    written by txamqp.
    """

    channelClass = TableChannel

    #: Called with the client once the TCP connection is made (see AMQPFactory).
    connection_made_hook: Callable | None = None
    #: The node (``host:port``) this connection was made to (``NodesEndpoint.current``).
    node: str = ""

    #: The highest channel id, as the broker tunes it (RabbitMQ: 2047 by default).
    channel_max = 2047

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        basic = self.spec.classes.byname["basic"]
        self._basic_class = basic.id
        self._ack = basic.methods.byname["ack"]
        self._nack = basic.methods.byname["nack"]

    def connectionMade(self) -> None:
        # Nagle's algorithm would hold a publication back while the broker has
        # not acknowledged the previous one's segment: a call waits for its
        # confirm, so every millisecond there is a millisecond of answer.
        set_no_delay = getattr(self.transport, "setTcpNoDelay", None)
        if set_no_delay is not None:
            set_no_delay(True)
        super().connectionMade()
        if self.connection_made_hook is not None:
            self.connection_made_hook(self)

    async def open_extra_channel(self, listener: ChannelListener) -> TableChannel:
        """Open a channel on a free id (never :data:`CHANNEL`) for ``listener``.

        The broker's confirms, returns, cancels and deliveries on it go to
        ``listener`` (``broker_ack``, ``broker_nack``, ``broker_return``,
        ``broker_cancel``, ``deliver``), and ``channel_closed(reason)`` when it
        ends; a channel error closes only this channel. Give it back with
        :meth:`close_extra_channel`.
        """
        taken = self.channels
        ident = next((i for i in range(CHANNEL + 1, self.channel_max + 1) if i not in taken), None)
        if ident is None:
            raise RuntimeError(f"all {self.channel_max} channels of the connection are in use")
        # Reserved at once, without txamqp's asynchronous lock, so that two
        # callers can never pick the same id.
        channel = taken[ident] = self.channelFactory(ident, self.outgoing, self)
        channel.listener = listener
        try:
            await channel.channel_open()
        except BaseException:
            self.forget_channel(channel)
            raise
        return channel

    async def close_extra_channel(self, channel: TableChannel, within: float = 5.0) -> None:
        """Close a channel from :meth:`open_extra_channel` (if still open) and free its id.

        Waits at most ``within`` seconds for the broker's ``close-ok``; past
        that the id stays taken, as a late ``close-ok`` would otherwise land
        on the next channel given that id.
        """
        if not channel.closed and not self.closed:
            closing = channel.channel_close(reply_code=200, reply_text="closed by the client")
            timer = self.clock.callLater(within, closing.cancel)
            try:
                await closing
            except defer.CancelledError:
                channel.close(Closed("no close-ok from the broker"))
                return
            except Closed:
                pass  # the broker or the connection closed it first
            finally:
                if timer.active():
                    timer.cancel()
        channel.close(Closed("channel closed by its owner"))
        self.forget_channel(channel)

    def forget_channel(self, channel: TableChannel) -> None:
        """Drop a channel txamqp would otherwise keep for the connection's lifetime."""
        if self.channels.get(channel.id) is channel:
            del self.channels[channel.id]

    def do_close(self, reason) -> None:
        # txamqp's, over copies of its tables: a channel's listener, told of
        # the end, may free its channel (forget_channel) while we go through.
        for channel in list(self.channels.values()):
            channel.close(reason)
        for queue in list(self.queues.values()):
            queue.close()
        self.delegate.close(reason)

    def _unpack_frame(self, data: bytes):
        kind = data[0]
        if kind == _FRAME_BODY:
            channel, size = struct.unpack("!HI", data[1:7])
            if data[7 + size] != self.FRAME_END:
                raise GarbageException(f"frame error: expected frame end, got {data[7 + size]!r}")
            return Frame(channel, Body(data[7 : 7 + size]))
        if kind == _FRAME_METHOD and len(data) == _CONFIRM_FRAME.size:
            _, channel, size, klass, method, tag, bits, end = _CONFIRM_FRAME.unpack(data)
            if klass == self._basic_class and size == 13 and end == self.FRAME_END:
                if method == self._ack.id:
                    return Frame(channel, Method(self._ack, tag, bool(bits & 1)))
                if method == self._nack.id:
                    return Frame(channel, Method(self._nack, tag, bool(bits & 1), bool(bits & 2)))
        if kind in (_FRAME_METHOD, _FRAME_HEADER):
            channel, size = struct.unpack("!HI", data[1:7])
            if data[7 + size] != self.FRAME_END:
                raise GarbageException(f"frame error: expected frame end, got {data[7 + size]!r}")
            return Frame(channel, decode_payload(self.spec, kind, data[7 : 7 + size]))
        return super()._unpack_frame(data)

    def _pack_frame(self, frame) -> bytes:
        payload = frame.payload
        if not _carries_table(payload):
            return super()._pack_frame(frame)
        kind = _FRAME_METHOD if type(payload) is Method else _FRAME_HEADER
        data = encode_payload(payload)
        return _FRAME_START.pack(kind, frame.channel, len(data)) + data + _FRAME_END

    def frame_received(self, frame) -> None:
        payload = frame.payload
        if type(payload) is Method and payload.method in (self._ack, self._nack):
            channel = self.channels.get(frame.channel)
            # Only when txamqp's worker has nothing queued (a message whose
            # content is still arriving, say), so that methods stay in order;
            # anything unusual takes txamqp's path.
            if (
                channel is not None
                and not channel.closed
                and not self.closed
                and self.work.waiting
                and not self.work.pending
            ):
                self.delegate.dispatch(channel, Message(payload.method, payload.args))
                if self.heartbeatInterval > 0 and not self.closed:
                    self.reschedule_check_heartbeat()
                return
        super().frame_received(frame)


# basic.publish and its content (AMQP 0-9-1, section 4.2.6), for PublishEncoder.
_BASIC_CLASS, _BASIC_PUBLISH = 60, 40
_MANDATORY = b"\x01"  # the bits octet: mandatory, not immediate
_HEADER_START = struct.Struct("!HHQH")  # class, weight, body size, property flags
_TIMESTAMP = struct.Struct("!Q")

#: The properties a PublishEncoder sends, in the order of the basic class
#: (which is the order on the wire), with their flag bits (bit 15 is the
#: first property of the class, content-type).
PUBLISH_PROPERTIES = {
    "content-type": 1 << 15,
    "content-encoding": 1 << 14,
    "delivery-mode": 1 << 12,
    "message-id": 1 << 7,
    "timestamp": 1 << 6,
    "app-id": 1 << 3,
}


def _shortstr(value: bytes) -> bytes:
    if len(value) > 255:
        raise ValueError(f"an AMQP short string is at most 255 bytes, not {len(value)}")
    return bytes((len(value),)) + value


class PublishEncoder:
    """The frames of one ``basic.publish`` of a notification, as bytes for one write.

    Written by hand because txamqp's generic path costs 40-70 µs of reactor
    time per message (``benchmarks/components.py``): ``basic_publish`` runs as
    an ``inlineCallbacks`` generator, queues each frame through a
    ``DeferredQueue``, and encodes each frame with a ``BytesIO`` and a
    ``Codec`` per frame, looking up every field's type by name. Here what is
    fixed for a connection (channel, exchange, negotiated frame size, every
    property but the message id and the timestamp) is encoded once, and a
    message is a few ``struct`` packs and one join: about 3 µs.

    The bytes are those txamqp's codec writes for the same ``basic_publish``
    (``tests/test_amqp_fast_publish.py`` compares them), with one difference:
    txamqp writes the length of a text short string in characters, which
    breaks non-ASCII message ids; here every string is counted in UTF-8 bytes.
    """

    def __init__(self, channel: int, exchange: str, frame_max: int, properties: Mapping[str, Any]):
        """``properties`` are a message's (``message_properties``): exactly the
        keys of :data:`PUBLISH_PROPERTIES`; its message id and timestamp are
        ignored, each message gives its own."""
        if set(properties) != set(PUBLISH_PROPERTIES):
            raise ValueError(f"cannot encode the properties {sorted(properties)}")
        self.channel = channel
        #: The largest body frame payload: the frame's 7-byte header and its end octet.
        self._chunk = frame_max - 8
        # class, method, reserved short, exchange; then the routing key and the bits.
        start = struct.pack("!HHH", _BASIC_CLASS, _BASIC_PUBLISH, 0)
        self._method_start = start + _shortstr(exchange.encode())
        self._flags = sum(PUBLISH_PROPERTIES.values())
        # Before the message id: content-type, content-encoding, delivery-mode;
        # between the timestamp and the frame's end: app-id.
        self._before_id = (
            _shortstr(properties["content-type"].encode())
            + _shortstr(properties["content-encoding"].encode())
            + bytes((properties["delivery-mode"],))
        )
        self._after_timestamp = _shortstr(properties["app-id"].encode())

    def encode(self, routing_key: bytes, body: bytes, message_id: bytes, timestamp: int) -> bytes:
        """The method frame, the content header frame and the body frames of a
        mandatory ``basic.publish``.

        Raises ValueError for a routing key or a message id over 255 bytes
        (before anything is written), struct.error for a timestamp that is not
        a 64-bit unsigned integer.
        """
        channel = self.channel
        method = self._method_start + _shortstr(routing_key) + _MANDATORY
        header = b"".join(
            (
                _HEADER_START.pack(_BASIC_CLASS, 0, len(body), self._flags),
                self._before_id,
                _shortstr(message_id),
                _TIMESTAMP.pack(timestamp),
                self._after_timestamp,
            )
        )
        parts = [
            _FRAME_START.pack(_FRAME_METHOD, channel, len(method)),
            method,
            _FRAME_END,
            _FRAME_START.pack(_FRAME_HEADER, channel, len(header)),
            header,
            _FRAME_END,
        ]
        size, chunk = len(body), self._chunk
        if size <= chunk:
            if size:
                parts += (_FRAME_START.pack(_FRAME_BODY, channel, size), body, _FRAME_END)
        else:
            # Slices of a memoryview: the body is copied once, by the join.
            view = memoryview(body)
            for start in range(0, size, chunk):
                piece = view[start : start + chunk]
                parts += (_FRAME_START.pack(_FRAME_BODY, channel, len(piece)), piece, _FRAME_END)
        return b"".join(parts)


class AMQPFactory(Factory):
    """Builds txamqp clients that speak our spec."""

    def __init__(self, broker: BrokerConfig, clock, listener: BrokerListener | None = None):
        self.broker = broker
        self.clock = clock
        self.listener = listener

    def buildProtocol(self, addr) -> AMQPClient:
        client = AMQPClient(
            Delegate(self.listener),
            vhost=self.broker.vhost,
            spec=load_spec(),
            heartbeat=self.broker.heartbeat,
            clock=self.clock,
        )
        if self.listener is not None:
            client.connection_made_hook = self.listener.amqp_connection_made
        return client


def node_name(host: str, port: int) -> str:
    """``host:port``, an IPv6 address in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class NodesEndpoint:
    """Connects to the broker's nodes in turn: each ``connect`` tries the next one.

    The nodes are shuffled once per process, so that several gateways spread
    over a cluster, then taken round-robin: a node that fails, or whose
    connection is lost, is followed by the next one at the next attempt (the
    reconnecting service's backoff and jitter apply between attempts). With
    TLS, each node's certificate is checked against that node's own name.
    """

    def __init__(
        self, reactor, broker: BrokerConfig, shuffle: Callable[[list], None] | None = None
    ):
        nodes = list(broker.nodes)
        (shuffle or random.shuffle)(nodes)
        self.nodes = [node_name(host, port) for host, port in nodes]
        self._endpoints = [_node_endpoint(reactor, broker, host, port) for host, port in nodes]
        self._next = 0
        #: The node of the latest attempt: a reconnecting service makes one
        #: attempt at a time, so this is the node a new connection is to.
        self.current = ""

    def connect(self, factory: Factory) -> defer.Deferred:
        index = self._next % len(self._endpoints)
        self._next += 1
        self.current = self.nodes[index]
        return self._endpoints[index].connect(factory)


def _node_endpoint(reactor, broker: BrokerConfig, host: str, port: int):
    endpoint = HostnameEndpoint(reactor, host, port, timeout=broker.connect_timeout)
    if broker.tls:
        endpoint = wrapClientTLS(optionsForClientTLS(host), endpoint)
    return endpoint


def broker_endpoint(reactor, broker: BrokerConfig) -> NodesEndpoint:
    """A client endpoint for the broker's node(s), with TLS (verified by
    service_identity) if asked."""
    return NodesEndpoint(reactor, broker)


@defer.inlineCallbacks
def open_channel(client: AMQClient, broker: BrokerConfig):
    """Log in, open our channel and declare the exchange; return the channel.

    The credentials are sent as bytes with the PLAIN mechanism: txamqp counts
    the length of a text string in characters, not bytes, which breaks
    non-ASCII passwords.
    """
    response = b"\0" + broker.username.encode() + b"\0" + broker.password.encode()
    yield client.start(response, mechanism="PLAIN")
    channel = yield client.channel(CHANNEL)
    yield channel.channel_open()
    yield channel.exchange_declare(exchange=broker.exchange, type="topic", durable=True)
    return channel


@defer.inlineCallbacks
def queue_exists(client: AMQClient, name: str, channel_id: int):
    """Whether a queue exists, asked on a channel of its own (``channel_id``, closed
    afterwards): a passive declaration of a missing queue closes its channel."""
    from txamqp.client import Closed

    channel = yield client.channel(channel_id)
    yield channel.channel_open()
    try:
        yield channel.queue_declare(queue=name, passive=True)
    except Closed:
        return False
    yield channel.channel_close()
    return True


@defer.inlineCallbacks
def connect(reactor, broker: BrokerConfig, listener: BrokerListener | None = None):
    """Connect once and return ``(client, channel)``; for commands and tests.

    No retry with a delay: the nodes of a cluster are tried in turn, and the
    last one's error is raised when none could be reached.
    """
    endpoint = broker_endpoint(reactor, broker)
    for attempt in range(len(endpoint.nodes)):
        try:
            client = yield endpoint.connect(AMQPFactory(broker, reactor, listener))
            client.node = endpoint.current
            try:
                channel = yield open_channel(client, broker)
            except BaseException:
                if client.transport is not None:
                    client.transport.abortConnection()
                raise
        except Exception:
            if attempt == len(endpoint.nodes) - 1:
                raise
            continue
        return client, channel
