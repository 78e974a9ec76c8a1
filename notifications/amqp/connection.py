"""A txamqp connection with our spec, publisher confirms and returned messages.

txamqp gives the protocol; this module gives what every user of the broker
in the project needs (the daemon's publisher, the ``tail`` and ``send``
commands, the tests): an endpoint built from the broker configuration, a
factory whose delegate hands broker-initiated methods to callbacks, and the
log-in sequence.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.protocol import Factory
from twisted.internet.ssl import optionsForClientTLS
from twisted.logger import Logger
from twisted.python.failure import Failure
from txamqp.client import Closed, TwistedDelegate
from txamqp.connection import Body, Frame
from txamqp.protocol import AMQClient, GarbageException

from ..config import BrokerConfig
from .spec import load_spec

#: The channel every user of the connection works on.
CHANNEL = 1


class Delegate(TwistedDelegate):
    """Routes the methods the broker sends on its own to the connection's owner."""

    log = Logger()

    def __init__(self, listener: Any = None):
        super().__init__()
        self.listener = listener

    def _tell(self, name: str, message: Any) -> None:
        handler: Callable | None = getattr(self.listener, name, None)
        if handler is not None:
            handler(message)

    def basic_ack(self, channel, message) -> None:
        self._tell("broker_ack", message)

    def basic_nack(self, channel, message) -> None:
        self._tell("broker_nack", message)

    def basic_return_(self, channel, message) -> None:
        self._tell("broker_return", message)

    def basic_cancel(self, channel, message) -> None:
        self._tell("broker_cancel", message)

    def channel_close(self, channel, message) -> None:
        # A channel error (an exchange declared with another type, say)
        # leaves our only channel unusable: drop the connection so the
        # reconnecting service starts again from a clean state.
        self.log.error(
            "The broker closed channel {channel}: {code} {text}",
            channel=channel.id,
            code=message.reply_code,
            text=message.reply_text,
        )
        super().channel_close(channel, message)
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


class AMQPClient(AMQClient):
    """txamqp's client, reading message bodies as bytes.

    txamqp decodes each body frame to text when it can, then counts the
    characters it read against the byte size announced by the content header:
    a body with any non-ASCII character never completes. Here body frames
    stay bytes, which txamqp's content reader already handles.
    """

    _FRAME_BODY = 3

    #: Called with the client once the TCP connection is made (see AMQPFactory).
    connection_made_hook: Callable | None = None

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.connection_made_hook is not None:
            self.connection_made_hook(self)

    def _unpack_frame(self, data: bytes):
        if data[0] != self._FRAME_BODY:
            return super()._unpack_frame(data)
        channel, size = struct.unpack("!HI", data[1:7])
        if data[7 + size] != self.FRAME_END:
            raise GarbageException(f"frame error: expected frame end, got {data[7 + size]!r}")
        return Frame(channel, Body(data[7 : 7 + size]))


class AMQPFactory(Factory):
    """Builds txamqp clients that speak our spec."""

    def __init__(self, broker: BrokerConfig, clock, listener: Any = None):
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
        client.connection_made_hook = getattr(self.listener, "amqp_connection_made", None)
        return client


def broker_endpoint(reactor, broker: BrokerConfig):
    """A client endpoint for the broker, with TLS (verified by service_identity) if asked."""
    endpoint = HostnameEndpoint(reactor, broker.host, broker.port, timeout=broker.connect_timeout)
    if broker.tls:
        endpoint = wrapClientTLS(optionsForClientTLS(broker.host), endpoint)
    return endpoint


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


def connect(reactor, broker: BrokerConfig, listener: Any = None) -> defer.Deferred:
    """Connect once (no retry) and return ``(client, channel)``; for commands and tests."""
    endpoint = broker_endpoint(reactor, broker)
    d = endpoint.connect(AMQPFactory(broker, reactor, listener))

    def opened(client):
        return open_channel(client, broker).addCallback(lambda channel: (client, channel))

    d.addCallback(opened)
    return d
