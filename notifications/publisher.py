"""The publisher: one persistent broker connection, publishing with confirms.

A :class:`twisted.application.internet.ClientService` keeps the connection up
(exponential backoff with jitter, heartbeats so a dead broker is noticed);
each connection is prepared (log-in, channel, ``confirm.select``, exchange
declared) before it is used. :meth:`Publisher.publish` fires once the broker
has confirmed the message (``basic.ack``), fails on ``basic.nack``, on a lost
connection, or at once when there is no connection.
"""

from __future__ import annotations

import struct
import time
from collections import OrderedDict

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from .amqp.connection import (
    AMQPFactory,
    PublishEncoder,
    broker_endpoint,
    describe_error,
    open_channel,
)
from .config import BrokerConfig


class BrokerUnavailable(Exception):
    """There is no usable connection to the broker right now."""


class PublicationRefused(Exception):
    """The broker answered ``basic.nack``: it could not take the message."""


def message_properties(message_id: str, timestamp: int | None = None) -> dict:
    """The AMQP properties of a notification message (persistent JSON)."""
    return {
        "content-type": "application/json",
        "content-encoding": "utf-8",
        "delivery-mode": 2,
        "message-id": message_id,
        "timestamp": int(time.time()) if timestamp is None else timestamp,
        "app-id": "notifications",
    }


class Publisher(service.Service):
    """Publishes notifications on the exchange over one persistent connection."""

    log = Logger()

    def __init__(self, broker: BrokerConfig, reactor, retry_policy=None, endpoint=None):
        self.broker = broker
        self.reactor = reactor
        #: Where to connect; tests give an endpoint they drive by hand.
        self.endpoint = endpoint or broker_endpoint(reactor, broker)
        self.retry_policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self.client = None
        self.channel = None
        #: The frames of basic.publish for the current connection.
        self._encoder: PublishEncoder | None = None
        self.connected_since: float | None = None
        self.disconnected_since: float | None = reactor.seconds()
        self.connections = 0
        self._next_tag = 1
        self._pending: OrderedDict[int, defer.Deferred] = OrderedDict()
        self._client_service: ClientService | None = None
        self._ready_waiters: list[defer.Deferred] = []
        #: Called (without arguments) each time a connection is ready.
        self.connected_listeners: list = []
        self.unroutable = 0
        self._unroutable_keys: set[str] = set()
        self._setup_failures = 0

    @property
    def exchange(self) -> str:
        return self.broker.exchange

    @property
    def connected(self) -> bool:
        return self.channel is not None

    # Service ---------------------------------------------------------------

    def startService(self) -> None:
        super().startService()
        # The AMQP set-up runs from amqp_connection_made rather than as
        # ClientService's prepareConnection: a rejected prepared connection
        # stays open there, and closing it ourselves makes the service's state
        # machine fail (no transition for a disconnect while waiting). A
        # connection we close from the Connected state is retried normally;
        # set-up failures are added to the attempt count so that, say, a wrong
        # password still backs off.
        self._client_service = ClientService(
            self.endpoint,
            AMQPFactory(self.broker, self.reactor, listener=self),
            retryPolicy=lambda attempt: self.retry_policy(attempt + self._setup_failures),
            clock=self.reactor,
        )
        self._client_service.startService()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        client_service, self._client_service = self._client_service, None
        if client_service is None:
            return defer.succeed(None)
        return client_service.stopService()

    def when_connected(self) -> defer.Deferred:
        """Fires once a prepared connection is up (at once if it is)."""
        if self.connected:
            return defer.succeed(self)
        d = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    # Connection life -------------------------------------------------------

    def amqp_connection_made(self, client) -> None:
        """A new TCP connection to the broker: log in, open the channel, confirm mode."""
        d = open_channel(client, self.broker)
        d.addCallback(lambda channel: self._confirm(client, channel))
        d.addTimeout(self.broker.connect_timeout, self.reactor)
        d.addErrback(self._setup_failed, client)

    @defer.inlineCallbacks
    def _confirm(self, client, channel):
        yield channel.confirm_select()
        self._encoder = PublishEncoder(
            channel.id, self.broker.exchange, client.MAX_LENGTH, message_properties("", 0)
        )
        self.client = client
        self.channel = channel
        self._next_tag = 1
        self._setup_failures = 0
        self.connections += 1
        self.connected_since = self.reactor.seconds()
        self.disconnected_since = None
        self.log.info(
            "Connected to the broker at {host}:{port}, exchange {exchange!r}",
            host=self.broker.host,
            port=self.broker.port,
            exchange=self.broker.exchange,
        )
        client.disconnected.wait().addCallback(lambda _: self._lost(client))
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(self)
        for listener in self.connected_listeners:
            listener()

    def _setup_failed(self, failure, client) -> None:
        self._setup_failures += 1
        if self.running:
            self.log.warn(
                "Could not set up the broker connection to {host}:{port}: {error}",
                host=self.broker.host,
                port=self.broker.port,
                error=describe_error(failure.value),
            )
        if client.transport is not None:
            client.transport.abortConnection()

    def _lost(self, client) -> None:
        if client is not self.client:
            return
        self.client = None
        self.channel = None
        self.connected_since = None
        self.disconnected_since = self.reactor.seconds()
        if self.running:
            self.log.warn("Lost the connection to the broker; reconnecting")
        pending, self._pending = self._pending, OrderedDict()
        for d in pending.values():
            d.errback(ConnectionLost("the broker connection was lost before the confirm"))

    # Confirms ---------------------------------------------------------------

    def _settle(self, tag: int, multiple: bool, outcome) -> None:
        if multiple:
            # _pending is in tag order: what is settled is a prefix of it.
            tags = []
            for t in self._pending:
                if t > tag:
                    break
                tags.append(t)
        else:
            tags = [tag]
        for t in tags:
            d = self._pending.pop(t, None)
            if d is not None:
                outcome(d)

    def broker_ack(self, message) -> None:
        self._settle(message.delivery_tag, message.multiple, lambda d: d.callback(None))

    def broker_nack(self, message) -> None:
        self._settle(
            message.delivery_tag,
            message.multiple,
            lambda d: d.errback(PublicationRefused("the broker refused the message (nack)")),
        )

    def broker_return(self, message) -> None:
        # Published as mandatory, a notification no queue is bound for comes
        # back before its confirm. That is the normal fate of a notification
        # nobody listens to (the older system dropped it silently): count it,
        # and say it once per routing key so the log cannot be flooded.
        self.unroutable += 1
        key = message.routing_key
        if key not in self._unroutable_keys and len(self._unroutable_keys) < 1000:
            self._unroutable_keys.add(key)
            self.log.info(
                "No queue is bound for routing key {key} ({code} {text}); "
                "such notifications are counted as unroutable",
                key=key,
                code=message.reply_code,
                text=message.reply_text,
            )

    # Publishing ------------------------------------------------------------

    def publish(self, routing_key: str, body: bytes, message_id: str, timestamp=None):
        """Publish one persistent message; fires when the broker confirms it.

        The frames go to the transport in one write, encoded by PublishEncoder
        rather than by txamqp's ``channel.basic_publish`` (see its docstring);
        the channel stays txamqp's for everything else.
        """
        # A channel the broker closed stays set until the connection, which
        # Delegate.channel_close drops, is lost: nothing can be sent on it.
        if self.channel is None or self.channel.closed:
            return defer.fail(BrokerUnavailable("not connected to the broker"))
        if timestamp is None:
            timestamp = int(time.time())
        try:
            frames = self._encoder.encode(
                routing_key.encode(), body, message_id.encode(), timestamp
            )
        except (ValueError, struct.error) as error:
            return defer.fail(error)
        tag = self._next_tag
        self._next_tag += 1
        confirmed = defer.Deferred()
        self._pending[tag] = confirmed
        # Straight to the transport, not through txamqp's send_frame: its
        # heartbeats then go every interval even while we publish, harmless.
        self.client.transport.write(frames)
        return confirmed

    def status(self) -> dict:
        """The broker state, for the status endpoints."""
        return {
            "connected": self.connected,
            "since": self.connected_since if self.connected else self.disconnected_since,
            "reconnects": max(0, self.connections - 1),
            "unroutable": self.unroutable,
            "unconfirmed": len(self._pending),
        }
