"""The daemon's second broker connection: the one it reads with.

The publisher's connection only publishes. What the daemon reads — the
archive stream for the status page, a server-sent-events client's stream,
the queues of outgoing webhooks — goes over this one, so that a consumer
never shares a connection with the publisher (RabbitMQ blocks a publishing
connection under memory pressure, and a consumer on it would stop too).

Each reader is a :class:`ConnectionUser`: told when a connection is ready
(it then opens its own channels with ``client.open_extra_channel``) and when
it is lost (its channels are gone; it waits for the next ``connected``).
"""

from __future__ import annotations

from typing import Protocol

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.logger import Logger

from .amqp.connection import (
    AMQPClient,
    AMQPFactory,
    BrokerEvents,
    broker_endpoint,
    describe_error,
    open_channel,
)
from .config import BrokerConfig


class ConnectionUser(Protocol):
    """Something that reads over the daemon's consumer connection."""

    def connected(self, client: AMQPClient) -> None:
        """A connection is ready (logged in, the exchange declared)."""

    def lost(self) -> None:
        """The connection is gone, and every channel opened on it."""


class ConsumerConnection(BrokerEvents, service.Service):
    """A persistent connection for reading, reconnecting with backoff and jitter."""

    log = Logger()

    def __init__(self, broker: BrokerConfig, reactor, retry_policy=None, endpoint=None):
        self.broker = broker
        self.reactor = reactor
        self.endpoint = endpoint or broker_endpoint(reactor, broker)
        self.retry_policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self.client: AMQPClient | None = None
        self.users: list[ConnectionUser] = []
        self._client_service: ClientService | None = None
        self._setup_failures = 0

    @property
    def connected(self) -> bool:
        return self.client is not None

    def add_user(self, user: ConnectionUser) -> None:
        """Tell ``user`` of every connection from now on (at once if one is ready)."""
        self.users.append(user)
        if self.client is not None:
            user.connected(self.client)

    def remove_user(self, user: ConnectionUser) -> None:
        if user in self.users:
            self.users.remove(user)

    def startService(self) -> None:
        super().startService()
        # Set up from amqp_connection_made rather than prepareConnection, as
        # the publisher does (see Publisher.startService for why).
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

    def amqp_connection_made(self, client: AMQPClient) -> None:
        client.node = getattr(self.endpoint, "current", "")
        d = open_channel(client, self.broker)
        d.addTimeout(self.broker.connect_timeout, self.reactor)
        d.addCallbacks(lambda _: self._ready(client), self._setup_failed, errbackArgs=(client,))

    def _ready(self, client: AMQPClient) -> None:
        self._setup_failures = 0
        self.client = client
        client.disconnected.wait().addCallback(lambda _: self._lost(client))
        for user in list(self.users):
            try:
                user.connected(client)
            except Exception:
                self.log.failure("A reader failed to start on the new connection")

    def _setup_failed(self, failure, client: AMQPClient) -> None:
        self._setup_failures += 1
        if self.running:
            self.log.warn(
                "Could not set up the reading connection to {node}: {error}",
                node=client.node,
                error=describe_error(failure.value),
            )
        if client.transport is not None:
            client.transport.abortConnection()

    def _lost(self, client: AMQPClient) -> None:
        if client is not self.client:
            return
        self.client = None
        for user in list(self.users):
            try:
                user.lost()
            except Exception:
                self.log.failure("A reader failed to stop after the connection was lost")
