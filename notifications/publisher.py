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

from twisted.internet import defer
from twisted.internet.error import ConnectionLost
from twisted.logger import Logger

from .amqp.connection import PublishEncoder
from .amqp.reconnecting import ReconnectingConnection
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


class Confirms:
    """The publisher confirms awaited on one channel: a Deferred per delivery tag.

    Tags are given in publishing order (1, 2, 3… per channel); the broker's
    ``basic.ack`` fires them, ``basic.nack`` fails them with
    :class:`PublicationRefused`, either for one tag or (``multiple``) for
    every tag up to it.
    """

    def __init__(self) -> None:
        self._next_tag = 1
        self._pending: OrderedDict[int, defer.Deferred] = OrderedDict()

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def tags(self) -> list[int]:
        """The delivery tags still waiting for their confirm, in order."""
        return list(self._pending)

    def expect(self) -> defer.Deferred:
        """The Deferred of the next message published on the channel."""
        confirmed: defer.Deferred = defer.Deferred()
        self._pending[self._next_tag] = confirmed
        self._next_tag += 1
        return confirmed

    def ack(self, tag: int, multiple: bool) -> None:
        for d in self._settled(tag, multiple):
            d.callback(None)

    def nack(self, tag: int, multiple: bool) -> None:
        for d in self._settled(tag, multiple):
            d.errback(PublicationRefused("the broker refused the message (nack)"))

    def fail_all(self, error: Exception) -> None:
        """The channel is gone: fail every pending confirm; tags start again at 1."""
        pending, self._pending = self._pending, OrderedDict()
        self._next_tag = 1
        for d in pending.values():
            d.errback(error)

    def _settled(self, tag: int, multiple: bool) -> list[defer.Deferred]:
        if not multiple:
            d = self._pending.pop(tag, None)
            return [] if d is None else [d]
        # _pending is in tag order: what is settled is a prefix of it.
        settled = []
        while self._pending:
            first = next(iter(self._pending))
            if first > tag:
                break
            settled.append(self._pending.pop(first))
        return settled


class Publisher(ReconnectingConnection):
    """Publishes notifications on the exchange over one persistent connection."""

    log = Logger()

    #: Seconds of nothing but refusals (nacks) after which a new connection is made.
    refusing_limit = 5.0

    def __init__(
        self,
        broker: BrokerConfig,
        reactor,
        retry_policy=None,
        endpoint=None,
        archive=None,
        declarers=(),
    ):
        """``archive``: an :class:`~notifications.archive.ArchiveDeclarer`, whose stream is
        declared on each connection before anything is published on it; ``declarers``:
        more of the same kind (``declare(client)``, never failing), run after it (the
        queues of the outgoing webhooks, :class:`~notifications.subscriptions.QueuesDeclarer`)."""
        super().__init__(broker, reactor, retry_policy, endpoint)
        self.archive = archive
        self.declarers = list(declarers)
        self.client = None
        self.channel = None
        #: The frames of basic.publish for the current connection.
        self._encoder: PublishEncoder | None = None
        self.connected_since: float | None = None
        self.disconnected_since: float | None = reactor.seconds()
        self.connections = 0
        #: The confirms awaited on the current channel.
        self.confirms = Confirms()
        #: When the broker began refusing (nack) without accepting anything since.
        self._refusing_since: float | None = None
        self._ready_waiters: list[defer.Deferred] = []
        #: Called (without arguments) each time a connection is ready.
        self.connected_listeners: list = []
        self.unroutable = 0
        self._unroutable_keys: set[str] = set()

    @property
    def exchange(self) -> str:
        return self.broker.exchange

    @property
    def connected(self) -> bool:
        return self.channel is not None

    @property
    def node(self) -> str | None:
        """The node (``host:port``) the daemon is connected to, or None."""
        return self.client.node if self.client is not None else None

    def when_connected(self) -> defer.Deferred:
        """Fires once a prepared connection is up (at once if it is)."""
        if self.connected:
            return defer.succeed(self)
        d = defer.Deferred()
        self._ready_waiters.append(d)
        return d

    # Connection life -------------------------------------------------------

    @defer.inlineCallbacks
    def prepare(self, client, channel):
        """Confirm mode, and the archive and the webhooks' queues declared before anything
        is published."""
        yield channel.confirm_select()
        if self.archive is not None:
            yield self.archive.declare(client)
        for declarer in self.declarers:
            yield declarer.declare(client)

    def ready(self, client, channel) -> None:
        # A new channel numbers its messages from 1 again.
        self.confirms.fail_all(ConnectionLost("the broker connection was replaced"))
        self._refusing_since = None
        self._encoder = PublishEncoder(
            channel.id, self.broker.exchange, client.MAX_LENGTH, message_properties("", 0)
        )
        self.client = client
        self.channel = channel
        self.connections += 1
        self.connected_since = self.reactor.seconds()
        self.disconnected_since = None
        self.log.info(
            "Connected to the broker at {node}, exchange {exchange!r}",
            node=client.node,
            exchange=self.broker.exchange,
        )
        waiters, self._ready_waiters = self._ready_waiters, []
        for waiter in waiters:
            waiter.callback(self)
        for listener in self.connected_listeners:
            listener()

    def lost(self, client) -> None:
        if client is not self.client:
            return
        self.client = None
        self.channel = None
        self.connected_since = None
        self.disconnected_since = self.reactor.seconds()
        if self.running:
            self.log.warn(
                "Lost the connection to the broker at {node}; reconnecting", node=client.node
            )
        self.confirms.fail_all(ConnectionLost("the broker connection was lost before the confirm"))

    # Confirms ---------------------------------------------------------------

    def broker_ack(self, message) -> None:
        self._refusing_since = None
        self.confirms.ack(message.delivery_tag, message.multiple)

    def broker_nack(self, message) -> None:
        self.confirms.nack(message.delivery_tag, message.multiple)
        now = self.reactor.seconds()
        if self._refusing_since is None:
            self._refusing_since = now
        elif now - self._refusing_since >= self.refusing_limit and self.client is not None:
            # RabbitMQ 3.10 can refuse every message of a channel for its whole
            # life when the channel's first publication to a quorum queue fell
            # in that queue's leader election (a node lost): a new connection
            # (a new channel, maybe another node) is accepted at once.
            self.log.warn(
                "The broker at {node} has refused every notification for {seconds:.0f} s: "
                "connecting again",
                node=self.client.node,
                seconds=now - self._refusing_since,
            )
            self._refusing_since = None
            if self.client.transport is not None:
                self.client.transport.loseConnection()

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
        confirmed = self.confirms.expect()
        # Straight to the transport, not through txamqp's send_frame: its
        # heartbeats then go every interval even while we publish, harmless.
        self.client.transport.write(frames)
        return confirmed

    def status(self) -> dict:
        """The broker state, for the status endpoints."""
        return {
            "connected": self.connected,
            "node": self.node,
            "since": self.connected_since if self.connected else self.disconnected_since,
            "reconnects": max(0, self.connections - 1),
            "unroutable": self.unroutable,
            "unconfirmed": len(self.confirms),
        }
