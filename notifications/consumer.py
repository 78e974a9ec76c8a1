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

from twisted.logger import Logger

from .amqp.connection import AMQPClient
from .amqp.reconnecting import ReconnectingConnection
from .config import BrokerConfig


class ConnectionUser(Protocol):
    """Something that reads over the daemon's consumer connection."""

    def connected(self, client: AMQPClient) -> None:
        """A connection is ready (logged in, the exchange declared)."""

    def lost(self) -> None:
        """The connection is gone, and every channel opened on it."""


class ConsumerConnection(ReconnectingConnection):
    """A persistent connection for reading, reconnecting with backoff and jitter."""

    log = Logger()
    purpose = "the reading connection"

    def __init__(self, broker: BrokerConfig, reactor, retry_policy=None, endpoint=None):
        super().__init__(broker, reactor, retry_policy, endpoint)
        self.client: AMQPClient | None = None
        self.users: list[ConnectionUser] = []

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

    def ready(self, client: AMQPClient, channel) -> None:
        self.client = client
        for user in list(self.users):
            try:
                user.connected(client)
            except Exception:
                self.log.failure("A reader failed to start on the new connection")

    def lost(self, client: AMQPClient) -> None:
        if client is not self.client:
            return
        self.client = None
        for user in list(self.users):
            try:
                user.lost()
            except Exception:
                self.log.failure("A reader failed to stop after the connection was lost")
