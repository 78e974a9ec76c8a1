"""The publisher's reconnection: backoff, set-up failures and timeout, stop; confirms.

In the manner of Twisted's ``twisted/application/test/test_internet.py``: the
publisher connects through an endpoint whose attempts the test fires or fails
by hand, and time is a :class:`Clock` that the test advances.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

from twisted.application.internet import backoffPolicy
from twisted.internet import defer
from twisted.internet.error import ConnectionAborted, ConnectionLost, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransportWithDisconnection
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from notifications.config import BrokerConfig
from notifications.publisher import BrokerUnavailable, PublicationRefused, Publisher

CONNECT_TIMEOUT = 5.0

#: The retry delays of backoffPolicy(initialDelay=1, maxDelay=30, factor=2):
#: Twisted counts the first retry as attempt 1, so it waits initialDelay * 2.
DELAYS = [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


class HandDrivenEndpoint:
    """A client endpoint whose connection attempts the test completes or fails."""

    def __init__(self):
        self.factories: list = []
        self.attempts: list[defer.Deferred] = []

    def connect(self, factory) -> defer.Deferred:
        self.factories.append(factory)
        self.attempts.append(defer.Deferred())
        return self.attempts[-1]

    def fail(self) -> None:
        """The last attempt fails (the broker's port is closed)."""
        self.attempts[-1].errback(ConnectionRefusedError("refused"))

    def succeed(self):
        """The last attempt makes a TCP connection; the protocol and its transport."""
        protocol = self.factories[-1].buildProtocol(None)
        transport = StringTransportWithDisconnection()
        transport.protocol = protocol
        protocol.makeConnection(transport)
        self.attempts[-1].callback(protocol)
        return protocol, transport


def drop(protocol, transport: StringTransportWithDisconnection, reason: Exception) -> None:
    """The TCP connection ends under the protocol (the peer reset it, say)."""
    transport.connected = False
    protocol.connectionLost(Failure(reason))


@dataclass
class Confirm:
    """The arguments of ``basic.ack`` / ``basic.nack`` that the publisher reads."""

    delivery_tag: int
    multiple: bool = False


class PublisherTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.endpoint = HandDrivenEndpoint()
        broker = BrokerConfig(heartbeat=0, connect_timeout=CONNECT_TIMEOUT)
        self.publisher = Publisher(
            broker,
            self.clock,
            retry_policy=backoffPolicy(initialDelay=1, maxDelay=30, factor=2, jitter=lambda: 0),
            endpoint=self.endpoint,
        )
        self.ready: list[None] = []
        self.publisher.connected_listeners.append(lambda: self.ready.append(None))

    def delays(self) -> list[float]:
        """When the pending delayed calls are due, from now."""
        now = self.clock.seconds()
        return [round(call.getTime() - now, 6) for call in self.clock.getDelayedCalls()]

    def wait_retry(self, delay: float) -> None:
        """Check that the next attempt comes after ``delay`` seconds, not before."""
        self.assertEqual(self.delays(), [delay])
        attempts = len(self.endpoint.attempts)
        self.clock.advance(delay - 0.01)
        self.assertEqual(len(self.endpoint.attempts), attempts)
        self.clock.advance(0.01)
        self.assertEqual(len(self.endpoint.attempts), attempts + 1)

    def stop(self) -> None:
        self.successResultOf(self.publisher.stopService())
        self.assertEqual(self.clock.getDelayedCalls(), [])


class BackoffTests(PublisherTestCase):
    def test_first_attempt_at_start(self) -> None:
        self.assertEqual(self.endpoint.attempts, [])
        self.publisher.startService()
        self.assertEqual(len(self.endpoint.attempts), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertFalse(self.publisher.connected)
        self.stop()

    def test_failed_attempts_back_off_up_to_the_maximum(self) -> None:
        self.publisher.startService()
        for delay in DELAYS:
            self.endpoint.fail()
            self.wait_retry(delay)
        self.assertEqual(len(self.endpoint.attempts), len(DELAYS) + 1)
        self.assertEqual(self.publisher._setup_failures, 0)
        self.assertEqual(self.ready, [])
        self.stop()

    def test_lost_during_setup_counts_as_a_setup_failure(self) -> None:
        self.publisher.startService()
        protocol, transport = self.endpoint.succeed()
        # The AMQP set-up has begun: the protocol header went out.
        self.assertTrue(transport.value().startswith(b"AMQP"))
        self.assertEqual(self.delays(), [CONNECT_TIMEOUT])

        # ClientService saw a successful connection (its own count starts
        # again), but the set-up failures keep the backoff growing.
        drop(protocol, transport, ConnectionLost("reset by peer"))
        self.assertEqual(self.publisher._setup_failures, 1)
        self.assertFalse(self.publisher.connected)
        self.wait_retry(DELAYS[1])

        protocol, transport = self.endpoint.succeed()
        drop(protocol, transport, ConnectionLost("reset by peer"))
        self.assertEqual(self.publisher._setup_failures, 2)
        self.wait_retry(DELAYS[2])

        # A refused TCP connection now: ClientService's count (1) plus the
        # two set-up failures.
        self.endpoint.fail()
        self.wait_retry(DELAYS[3])
        self.assertEqual(self.ready, [])
        self.assertEqual(self.publisher.status()["reconnects"], 0)
        self.stop()

    def test_setup_is_bounded_by_connect_timeout(self) -> None:
        self.publisher.startService()
        _protocol, transport = self.endpoint.succeed()
        self.clock.advance(CONNECT_TIMEOUT - 0.01)
        self.assertFalse(transport.disconnected)
        self.assertEqual(self.publisher._setup_failures, 0)

        self.clock.advance(0.01)
        # Aborted, and (this transport disconnects at once) retried later.
        self.assertTrue(transport.disconnected)
        self.assertFalse(transport.connected)
        self.assertEqual(self.publisher._setup_failures, 1)
        self.assertFalse(self.publisher.connected)
        self.wait_retry(DELAYS[1])

        # The next set-up times out too: the delay keeps growing.
        _protocol, transport = self.endpoint.succeed()
        self.clock.advance(CONNECT_TIMEOUT)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.publisher._setup_failures, 2)
        self.wait_retry(DELAYS[2])
        self.stop()

    def test_aborted_transport_that_reports_late(self) -> None:
        self.publisher.startService()
        protocol, transport = self.endpoint.succeed()
        # A transport that reports the abort later, as a real one does: here
        # abortConnection only marks it.
        transport.connected = False
        self.clock.advance(CONNECT_TIMEOUT)
        self.assertTrue(transport.disconnected)
        self.assertEqual(self.publisher._setup_failures, 1)
        self.assertEqual(self.delays(), [])
        drop(protocol, transport, ConnectionAborted())
        self.assertEqual(self.publisher._setup_failures, 1)
        self.wait_retry(DELAYS[1])
        self.stop()

    def test_stop_while_waiting_cancels_the_retry(self) -> None:
        self.publisher.startService()
        self.endpoint.fail()
        self.assertEqual(self.delays(), [DELAYS[0]])
        self.stop()
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_stop_while_connecting(self) -> None:
        self.publisher.startService()
        self.stop()
        self.assertTrue(self.endpoint.attempts[0].called)  # cancelled
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_stop_during_setup(self) -> None:
        self.publisher.startService()
        _protocol, transport = self.endpoint.succeed()
        self.stop()
        self.assertFalse(transport.connected)
        self.clock.advance(100)
        self.assertEqual(len(self.endpoint.attempts), 1)

    def test_stop_before_start(self) -> None:
        self.stop()
        self.assertEqual(self.endpoint.attempts, [])

    def test_restart_after_stop(self) -> None:
        self.publisher.startService()
        self.endpoint.fail()
        self.stop()
        self.publisher.startService()
        self.assertEqual(len(self.endpoint.attempts), 2)
        self.endpoint.fail()
        self.assertEqual(self.delays(), [DELAYS[0]])
        self.stop()


class ConfirmTests(PublisherTestCase):
    def pending(self, count: int) -> list[defer.Deferred]:
        """The confirms of ``count`` messages published (tags 1…count)."""
        return [self.publisher.confirms.expect() for _ in range(count)]

    def test_single_ack(self) -> None:
        confirms = self.pending(3)
        self.publisher.broker_ack(Confirm(2))
        self.assertIsNone(self.successResultOf(confirms[1]))
        self.assertNoResult(confirms[0])
        self.assertNoResult(confirms[2])
        self.assertEqual(self.publisher.confirms.tags, [1, 3])
        self.assertEqual(self.publisher.status()["unconfirmed"], 2)
        self.publisher.broker_ack(Confirm(1))
        self.publisher.broker_ack(Confirm(3))
        self.successResultOf(confirms[0])
        self.successResultOf(confirms[2])
        self.assertEqual(self.publisher.status()["unconfirmed"], 0)

    def test_multiple_ack(self) -> None:
        confirms = self.pending(5)
        self.publisher.broker_ack(Confirm(2))
        self.publisher.broker_ack(Confirm(4, multiple=True))
        for confirm in confirms[:4]:
            self.assertIsNone(self.successResultOf(confirm))
        self.assertNoResult(confirms[4])
        self.assertEqual(self.publisher.confirms.tags, [5])

    def test_ack_of_an_unknown_tag_is_ignored(self) -> None:
        confirms = self.pending(1)
        self.publisher.broker_ack(Confirm(7))
        self.publisher.broker_ack(Confirm(0, multiple=True))
        self.assertNoResult(confirms[0])
        self.publisher.broker_ack(Confirm(1))
        self.publisher.broker_ack(Confirm(1))
        self.successResultOf(confirms[0])

    def test_nack_is_publication_refused(self) -> None:
        confirms = self.pending(4)
        self.publisher.broker_nack(Confirm(1))
        self.failureResultOf(confirms[0], PublicationRefused)
        self.assertNoResult(confirms[1])
        self.publisher.broker_nack(Confirm(3, multiple=True))
        self.failureResultOf(confirms[1], PublicationRefused)
        self.failureResultOf(confirms[2], PublicationRefused)
        self.publisher.broker_ack(Confirm(4))
        self.successResultOf(confirms[3])
        self.assertEqual(self.publisher.status()["unconfirmed"], 0)

    def test_a_broker_that_refuses_everything_for_long_gets_a_new_connection(self) -> None:
        # RabbitMQ 3.10 may refuse every message of a channel after a quorum
        # queue's leader election: past refusing_limit of nothing but nacks,
        # the publisher drops the connection (the service makes a new one).
        lost: list[bool] = []
        transport = SimpleNamespace(loseConnection=lambda: lost.append(True))
        self.publisher.client = SimpleNamespace(node="broker:5672", transport=transport)
        self.publisher.channel = object()
        for second in range(5):
            self.publisher.broker_nack(Confirm(second + 1))
            self.clock.advance(1)
            if second == 2:
                # An ack starts the count again.
                self.publisher.broker_ack(Confirm(99))
        self.assertEqual(lost, [])
        self.clock.advance(2)
        self.publisher.broker_nack(Confirm(7))
        self.assertEqual(lost, [])  # 4 s of refusals since the ack
        self.clock.advance(2)
        self.publisher.broker_nack(Confirm(8))
        self.assertEqual(lost, [True])

    def test_lost_connection_fails_every_pending_confirm(self) -> None:
        client = SimpleNamespace(node="broker:5672")
        self.publisher.client = client
        self.publisher.channel = object()
        self.assertTrue(self.publisher.status()["connected"])
        confirms = self.pending(3)
        self.publisher.broker_ack(Confirm(1))

        self.publisher.lost(object())  # an older connection: ignored
        self.assertNoResult(confirms[1])

        self.clock.advance(42)
        self.publisher.lost(client)
        for confirm in confirms[1:]:
            self.failureResultOf(confirm, ConnectionLost)
        status = self.publisher.status()
        self.assertEqual(
            (status["connected"], status["node"], status["since"], status["unconfirmed"]),
            (False, None, 42, 0),
        )

    def test_publish_without_a_connection(self) -> None:
        self.failureResultOf(self.publisher.publish("a.b", b"{}", "id-1", 0), BrokerUnavailable)
        self.assertEqual(self.publisher.status()["unconfirmed"], 0)

    def test_status_before_any_connection(self) -> None:
        self.clock.advance(5)
        self.assertEqual(
            self.publisher.status(),
            {
                "connected": False,
                "node": None,
                "since": 0,
                "reconnects": 0,
                "unroutable": 0,
                "unconfirmed": 0,
            },
        )

    def test_returned_messages_are_counted(self) -> None:
        @dataclass
        class Returned:
            routing_key: str
            reply_code: int = 312
            reply_text: str = "NO_ROUTE"

        for key in ("a.b", "a.b", "c.d"):
            self.publisher.broker_return(Returned(key))
        self.assertEqual(self.publisher.status()["unroutable"], 3)
