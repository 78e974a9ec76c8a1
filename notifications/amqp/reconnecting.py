"""One broker connection kept up: what the publisher and the reading connection share.

A :class:`twisted.application.internet.ClientService` reconnects with
exponential backoff and jitter (to the next node of a cluster each time, see
:class:`~.connection.NodesEndpoint`); each new TCP connection is logged in and
its main channel opened (:func:`~.connection.open_channel`) before the
subclass prepares it (:meth:`ReconnectingConnection.prepare`). A connection
that cannot be set up is dropped, and its failure counted in the backoff, so
that, say, a wrong password is retried less and less often.
"""

from __future__ import annotations

from twisted.application import service
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.logger import Logger

from ..config import BrokerConfig
from .connection import (
    AMQPClient,
    AMQPFactory,
    BrokerEvents,
    broker_endpoint,
    describe_error,
    open_channel,
)


class ReconnectingConnection(BrokerEvents, service.Service):
    """The connection's life; subclasses say what a ready connection is for."""

    log = Logger()

    #: What the connection is, in log lines ("the broker connection").
    purpose = "the broker connection"

    def __init__(self, broker: BrokerConfig, reactor, retry_policy=None, endpoint=None):
        self.broker = broker
        self.reactor = reactor
        #: Where to connect; tests give an endpoint they drive by hand.
        self.endpoint = endpoint or broker_endpoint(reactor, broker)
        self.retry_policy = retry_policy or backoffPolicy(initialDelay=0.5, maxDelay=30.0)
        self._client_service: ClientService | None = None
        self._setup_failures = 0

    def startService(self) -> None:
        super().startService()
        # The set-up runs from amqp_connection_made rather than as
        # ClientService's prepareConnection: a rejected prepared connection
        # stays open there, and closing it ourselves makes the service's state
        # machine fail (no transition for a disconnect while waiting). A
        # connection we close from the Connected state is retried normally;
        # set-up failures are added to the attempt count so that they back off.
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
        """A new TCP connection: log in, open the main channel, let the subclass prepare it."""
        client.node = getattr(self.endpoint, "current", "")
        d = open_channel(client, self.broker)
        d.addCallback(self._prepare, client)
        d.addTimeout(self.broker.connect_timeout, self.reactor)
        d.addCallbacks(self._prepared, self._setup_failed, (client,), None, (client,))

    def _prepare(self, channel, client: AMQPClient) -> defer.Deferred:
        return defer.maybeDeferred(self.prepare, client, channel).addCallback(lambda _: channel)

    def prepare(self, client: AMQPClient, channel) -> defer.Deferred | None:
        """Make a logged-in connection ready (within ``connect_timeout``); a failure drops it."""
        return None

    def ready(self, client: AMQPClient, channel) -> None:
        """The connection is prepared and in use until ``lost`` is called for it."""

    def lost(self, client: AMQPClient) -> None:
        """A connection that was ready has ended."""

    def _prepared(self, channel, client: AMQPClient) -> None:
        self._setup_failures = 0
        client.disconnected.wait().addCallback(lambda _: self.lost(client))
        self.ready(client, channel)

    def _setup_failed(self, failure, client: AMQPClient) -> None:
        self._setup_failures += 1
        if self.running:
            self.log.warn(
                "Could not set up {purpose} to {node}: {error}",
                purpose=self.purpose,
                node=client.node,
                error=describe_error(failure.value),
            )
        if client.transport is not None:
            client.transport.abortConnection()
