"""Outgoing webhooks: what a subscription's patterns match, POSTed to its URL (reference §11).

Each ``[[subscriptions]]`` entry has a durable quorum queue of its own,
``<exchange>.subscription.<name>``, bound to the exchange with its patterns
and declared by the daemon (:func:`declare_subscription`): while the
receiver is down, or the daemon is, notifications wait there. A
:class:`Subscriber` consumes it over the daemon's reading connection
(:mod:`notifications.consumer`), one notification at a time, and POSTs each
(:func:`webhook_headers`: signed with HMAC-SHA256 as GitHub signs its
webhooks) through its own HTTP client, which checks the addresses it connects
to (:mod:`notifications.clients.webhooks`). A 2xx answer acknowledges the
notification; anything else is retried, in order, with a growing delay, and
after ``max_attempts`` attempts the notification goes to the subscription's
dead-letter queue, ``<exchange>.subscription.<name>.dead``, from where
``notifications subscriptions replay`` publishes it again.

What RabbitMQ 3.10.8 does, which this design follows (observed, and checked
by ``tests/test_subscriptions.py``):

- A message rejected (``basic.reject`` or ``basic.nack``) with ``requeue``
  goes to the *tail* of a quorum queue: with 0, 1, 2, 3 waiting and 0
  rejected, the next ones are 1, 2, 3, then 0. Retrying that way would break
  the order. A message returned because its channel closed goes back to the
  *head*. So after a failed attempt the subscriber closes its channel and
  consumes again on a new one.
- Every return adds one to the message's ``x-delivery-count`` header (a
  64-bit integer, absent on the first delivery), a closed channel as much as
  a reject: it is the number of attempts made so far, kept by the broker, so
  that the count and the growing delay go on across a restart of the daemon.
  (A return not caused by a failure — the daemon stopping while a POST is in
  flight — counts as an attempt too.)
- The subscriber waits before it retries while it holds the notification
  (at most ``max_delay``): RabbitMQ closes a channel whose consumer holds a
  message past its ``consumer_timeout`` (30 minutes by default), hence the
  configuration's bound on ``max_delay``.
- ``x-single-active-consumer``: with several consumers (the workers of
  ``--workers``, several gateways), the broker delivers to one at a time and
  moves to the next when that one's channel closes: one subscriber POSTs, in
  order, whichever process it is in.
- ``x-dead-letter-strategy: at-least-once`` (which needs ``x-overflow:
  reject-publish``) makes the move to the dead-letter queue itself safe: the
  queue keeps the message until the dead-letter queue has confirmed it. The
  dead-lettered message keeps its body and properties, with an ``x-death``
  header (``reason`` ``rejected``, the first ``routing-keys``).
- ``x-delivery-limit`` is not used: a queue's arguments are fixed once it is
  declared, and ``max_attempts`` may change; the subscriber counts with
  ``x-delivery-count`` and rejects without requeue at the last attempt.

Bindings are added, never removed (AMQP 0-9-1 cannot list them): the
subscriber also checks each routing key against its configured patterns, so
that a pattern taken out of the configuration stops its POSTs at once.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from twisted.application import service
from twisted.application.internet import backoffPolicy
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from txamqp.client import Closed

from . import __version__
from .amqp.connection import AMQPClient, ChannelEvents, describe_error
from .clients.http import HTTP, RemoteServiceError
from .clients.webhooks import webhook_client
from .config import (
    Config,
    SubscriptionConfig,
    dead_letter_exchange,
    dead_letter_queue,
    subscription_queue,
)
from .files import replace_file
from .routing import compile_pattern

#: The headers of a webhook call (reference §11.3).
SIGNATURE_HEADER = "X-Notifications-Signature-256"
ID_HEADER = "X-Notifications-Id"
TIMESTAMP_HEADER = "X-Notifications-Timestamp"
ATTEMPT_HEADER = "X-Notifications-Attempt"
ROUTING_KEY_HEADER = "X-Notifications-Routing-Key"
USER_AGENT = f"notifications/{__version__}"

#: The message header a replayed notification keeps its routing key in (it is
#: published again to its queue directly, under the queue's name).
ROUTING_KEY_KEPT = "notifications-routing-key"

#: The file, in the storage directory, where the subscribers' figures are kept.
FIGURES_NAME = "subscriptions.json"


def sign(secret: str, body: bytes) -> str:
    """The ``X-Notifications-Signature-256`` value: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def queue_arguments(exchange: str, name: str) -> dict[str, Any]:
    """The arguments of a subscription's queue (see the module's documentation)."""
    return {
        "x-queue-type": "quorum",
        "x-single-active-consumer": True,
        "x-dead-letter-exchange": dead_letter_exchange(exchange),
        "x-dead-letter-routing-key": name,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


async def declare_subscription(channel, exchange: str, subscription: SubscriptionConfig):
    """Declare a subscription's dead-letter exchange and queue, then its queue and bindings.

    Returns the queue's ``queue.declare-ok`` (``message_count``: what waits).
    The dead-letter queue comes first: an at-least-once dead-lettering
    needs somewhere to go.
    """
    name = subscription.name
    dead_exchange = dead_letter_exchange(exchange)
    dead_queue = dead_letter_queue(exchange, name)
    queue = subscription_queue(exchange, name)
    await channel.exchange_declare(exchange=dead_exchange, type="direct", durable=True)
    await channel.queue_declare(
        queue=dead_queue, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await channel.queue_bind(queue=dead_queue, exchange=dead_exchange, routing_key=name)
    declared = await channel.queue_declare(
        queue=queue, durable=True, arguments=queue_arguments(exchange, name)
    )
    for pattern in subscription.patterns:
        await channel.queue_bind(queue=queue, exchange=exchange, routing_key=pattern)
    return declared


class _Declaration(ChannelEvents):
    """The listener of a declaring channel: nothing to hear but its end."""


class QueuesDeclarer:
    """Declares every subscription's queues on each new connection of the publisher,
    before it publishes: a notification published at the daemon's very first start
    already has its queues to go to. A refusal is logged once; never fails."""

    log = Logger()

    def __init__(self, subscriptions: tuple[SubscriptionConfig, ...], exchange: str):
        self.subscriptions = subscriptions
        self.exchange = exchange
        self._refused: dict[str, str] = {}

    async def _declare(self, client: AMQPClient) -> None:
        for subscription in self.subscriptions:
            channel = await client.open_extra_channel(_Declaration())
            try:
                await declare_subscription(channel, self.exchange, subscription)
            except Closed as error:
                reason = describe_error(error)
                if self._refused.get(subscription.name) != reason:
                    self.log.error(
                        "The broker refused the queues of subscription {name} ({reason}): "
                        "a queue of that name with other arguments?",
                        name=subscription.name,
                        reason=reason,
                    )
                self._refused[subscription.name] = reason
                if client.closed:
                    return
                continue
            finally:
                await client.close_extra_channel(channel)
            self._refused.pop(subscription.name, None)

    def declare(self, client: AMQPClient) -> defer.Deferred:
        """Declare them all (each on a channel of its own); fires when done, never fails."""
        d = defer.ensureDeferred(self._declare(client))
        d.addErrback(
            lambda failure: self.log.warn(
                "Could not declare the subscriptions' queues: {error}",
                error=describe_error(failure.value),
            )
        )
        return d


def _header_value(text: str) -> str:
    # Header values are bytes on the wire: anything but printable ASCII is
    # percent-encoded (UTF-8), as a URL would be.
    if text.isascii() and text.isprintable():
        return text
    return quote(text, safe="")


def routing_key_of(message) -> str:
    """The notification's routing key: kept in a header when it was replayed."""
    headers = message.content.properties.get("headers") or {}
    kept = headers.get(ROUTING_KEY_KEPT)
    return kept if isinstance(kept, str) else message.routing_key


def delivery_count(message) -> int:
    """How many times the broker has delivered this message before (``x-delivery-count``)."""
    headers = message.content.properties.get("headers") or {}
    count = headers.get("x-delivery-count")
    return int(count) if isinstance(count, int) and count > 0 else 0


def webhook_headers(
    secret: str, body: bytes, routing_key: str, properties: dict, attempt: int
) -> dict[str, list[str]]:
    """The headers of the POST of a notification (reference §11.3)."""
    headers = {
        "Content-Type": ["application/json"],
        "User-Agent": [USER_AGENT],
        SIGNATURE_HEADER: [sign(secret, body)],
        ATTEMPT_HEADER: [str(attempt)],
        ROUTING_KEY_HEADER: [_header_value(routing_key)],
    }
    message_id = properties.get("message-id")
    if isinstance(message_id, str) and message_id:
        headers[ID_HEADER] = [_header_value(message_id)]
    timestamp = properties.get("timestamp")
    if isinstance(timestamp, int):
        headers[TIMESTAMP_HEADER] = [str(timestamp)]
    return headers


@dataclass
class SubscriptionFigures:
    """What ``subscriptions status``, ``/metrics`` and the status page say of a subscription.

    The counters add up across restarts (they are kept in the storage
    directory); ``waiting`` and ``dead`` are read from the broker.
    """

    #: Notifications the receiver took (2xx).
    delivered: int = 0
    #: Failed attempts followed by another one.
    retried: int = 0
    #: Notifications given up on after max_attempts, moved to the dead-letter queue.
    dead_lettered: int = 0
    #: Notifications whose routing key no configured pattern matches any more.
    skipped: int = 0
    last_error: str | None = None
    last_error_time: float | None = None
    last_delivered_time: float | None = None
    #: In the queue, the one being delivered included (None until read).
    waiting: int | None = None
    #: In the dead-letter queue (None until read).
    dead: int | None = None

    #: What is kept in the storage directory.
    KEPT = (
        "delivered",
        "retried",
        "dead_lettered",
        "skipped",
        "last_error",
        "last_error_time",
        "last_delivered_time",
    )

    def kept(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.KEPT}

    def report(self) -> dict[str, Any]:
        """The figures as ``/status.json`` gives them."""
        return {
            "delivered": self.delivered,
            "retried": self.retried,
            "deadLettered": self.dead_lettered,
            "skipped": self.skipped,
            "waiting": self.waiting,
            "dead": self.dead,
            "lastError": self.last_error,
            "lastErrorTime": self.last_error_time,
            "lastDeliveredTime": self.last_delivered_time,
        }

    @classmethod
    def from_kept(cls, value: Any) -> SubscriptionFigures:
        """Figures read back from the storage directory (what is not as written is left out)."""
        figures = cls()
        if not isinstance(value, dict):
            return figures
        for name in cls.KEPT:
            kept = value.get(name)
            counter = name in ("delivered", "retried", "dead_lettered", "skipped")
            if isinstance(kept, bool):
                continue
            if (counter and isinstance(kept, int) and kept >= 0) or (
                not counter and isinstance(kept, str | int | float)
            ):
                setattr(figures, name, kept)
        return figures


def read_figures(directory: Path) -> dict[str, SubscriptionFigures]:
    """The figures a daemon kept in ``directory`` (none when there is no such file)."""
    try:
        data = json.loads((Path(directory) / FIGURES_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    kept = data.get("subscriptions") if isinstance(data, dict) else None
    if not isinstance(kept, dict):
        return {}
    return {name: SubscriptionFigures.from_kept(value) for name, value in kept.items()}


def kept_figures(storage: Path) -> dict[str, SubscriptionFigures]:
    """The figures kept in a storage directory and its workers' folders, added up
    (with ``--workers``, each worker keeps its own; the last error is the latest)."""
    storage = Path(storage)
    total: dict[str, SubscriptionFigures] = {}
    for directory in [storage, *sorted(storage.glob("worker-*"))]:
        for name, figures in read_figures(directory).items():
            sum_ = total.setdefault(name, SubscriptionFigures())
            for counter in ("delivered", "retried", "dead_lettered", "skipped"):
                setattr(sum_, counter, getattr(sum_, counter) + getattr(figures, counter))
            if (figures.last_error_time or 0) > (sum_.last_error_time or 0):
                sum_.last_error, sum_.last_error_time = figures.last_error, figures.last_error_time
            if (figures.last_delivered_time or 0) > (sum_.last_delivered_time or 0):
                sum_.last_delivered_time = figures.last_delivered_time
    return total


class _Channel(ChannelEvents):
    """The listener of one of a subscriber's channels: tells it what happens there."""

    def __init__(self, subscriber: Subscriber):
        self.subscriber = subscriber
        self.channel = None
        #: Closed by the subscriber itself (not the broker's doing).
        self.closing = False

    def deliver(self, message) -> None:
        self.subscriber._delivered(self, message)

    def broker_cancel(self, message) -> None:
        self.subscriber._broken(self, "the broker cancelled the consumer (queue deleted?)")

    def channel_closed(self, reason) -> None:
        if not self.closing:
            self.subscriber._broken(self, describe_error(Closed(reason)))


class Subscriber:
    """Delivers one subscription's queue to its URL, one notification at a time, in order.

    A :class:`~notifications.consumer.ConnectionUser`: on each connection it
    declares the queues, then consumes with a prefetch of 1. See the module's
    documentation for the retries and the dead-letter queue.
    """

    log = Logger()

    #: Seconds before consuming again after the broker refused (doubled up to the last).
    reopen_delays = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

    def __init__(
        self,
        subscription: SubscriptionConfig,
        exchange: str,
        reactor,
        http: HTTP,
        timeout: float,
        figures: SubscriptionFigures | None = None,
        jitter: Callable[[float, float], float] = random.uniform,
    ):
        self.subscription = subscription
        self.exchange = exchange
        self.reactor = reactor
        self.http = http
        self.timeout = timeout
        self.figures = figures or SubscriptionFigures()
        self.queue = subscription_queue(exchange, subscription.name)
        self.dead_queue = dead_letter_queue(exchange, subscription.name)
        #: How errors name the receiver: never the whole URL (it may hold a secret).
        self.what = f"subscription {subscription.name} at {subscription.origin}"
        self._matchers = [compile_pattern(pattern) for pattern in subscription.patterns]
        initial = subscription.initial_delay
        # Twisted's backoff (factor 2), with up to one initial delay of jitter
        # so that subscribers failing together do not retry together.
        self._backoff = backoffPolicy(
            initialDelay=initial,
            maxDelay=subscription.max_delay,
            factor=2.0,
            jitter=lambda: jitter(0.0, initial),
        )
        self._client: AMQPClient | None = None
        self._current: _Channel | None = None
        self._declared = False
        self._work: defer.Deferred | None = None
        self._reopen = None
        self._reopen_failures = 0
        self._last_refusal: str | None = None
        self.running = False

    # The connection -------------------------------------------------------------------------

    def start(self) -> None:
        self.running = True
        if self._client is not None:
            self._open(self._client)

    def connected(self, client: AMQPClient) -> None:
        self._client = client
        self._declared = False
        if self.running:
            self._open(client)

    def lost(self) -> None:
        # The channel went with the connection, and the broker returned what we held.
        self._client = None
        self._current = None
        self._cancel_reopen()
        self._cancel_work()

    async def stop(self) -> None:
        """Stop delivering: what is in flight is cut short and returned to the queue's head."""
        self.running = False
        current, self._current = self._current, None
        self._cancel_reopen()
        self._cancel_work()
        client = self._client
        if current is not None and current.channel is not None and client is not None:
            current.closing = True
            await client.close_extra_channel(current.channel)

    def delay(self, count: int) -> float:
        """Seconds to wait before the attempt that follows ``count`` failed ones."""
        return self._backoff(count - 1)

    @property
    def holding(self) -> bool:
        """Whether a notification is being delivered (or waited on) now."""
        return self._work is not None

    def _open(self, client: AMQPClient) -> None:
        self._reopen = None
        if client is not self._client or not self.running or self._current is not None:
            return
        listener = _Channel(self)
        self._current = listener
        d = defer.ensureDeferred(self._consume(client, listener))
        d.addErrback(self._not_consuming, client, listener)

    async def _consume(self, client: AMQPClient, listener: _Channel) -> None:
        listener.channel = channel = await client.open_extra_channel(listener)
        if not self._declared:
            declared = await declare_subscription(channel, self.exchange, self.subscription)
            self._declared = True
            self.figures.waiting = declared.message_count
        await channel.basic_qos(prefetch_count=1)
        await channel.basic_consume(queue=self.queue, no_ack=False)
        self._reopen_failures = 0
        if self._last_refusal is not None:
            self.log.info("Subscription {name} consumes its queue again", name=self.name)
            self._last_refusal = None

    @property
    def name(self) -> str:
        return self.subscription.name

    def _not_consuming(self, failure, client: AMQPClient, listener: _Channel) -> None:
        reason = describe_error(failure.value)
        self._broken(listener, reason)

    def _broken(self, listener: _Channel, reason: str) -> None:
        """The channel ended or failed without us: consume again later, on a new one."""
        if listener is not self._current:
            return
        self._current = None
        self._cancel_work()
        client = self._client
        if client is None or client.closed or not self.running:
            return  # the connection is going (lost() follows), or we stop
        if listener.channel is not None:
            listener.closing = True
            defer.ensureDeferred(client.close_extra_channel(listener.channel))
        if reason != self._last_refusal:
            self.log.warn(
                "Subscription {name}: cannot consume {queue} ({reason}); trying again",
                name=self.name,
                queue=self.queue,
                reason=reason,
            )
            self._last_refusal = reason
        self._declared = False
        delays = self.reopen_delays
        delay = delays[min(self._reopen_failures, len(delays) - 1)]
        self._reopen_failures += 1
        self._reopen = self.reactor.callLater(delay, self._open, client)

    def _cancel_reopen(self) -> None:
        if self._reopen is not None and self._reopen.active():
            self._reopen.cancel()
        self._reopen = None

    def _cancel_work(self) -> None:
        work, self._work = self._work, None
        if work is not None:
            work.cancel()

    # Deliveries -----------------------------------------------------------------------------

    def _delivered(self, listener: _Channel, message) -> None:
        if listener is not self._current:
            return  # a late delivery on a channel being closed: the broker returns it
        work = defer.ensureDeferred(self._handle(listener, message))
        self._work = work
        work.addErrback(self._crashed)
        work.addBoth(self._done, work)

    def _done(self, result, work: defer.Deferred) -> None:
        if self._work is work:
            self._work = None

    def _crashed(self, failure) -> None:
        if not failure.check(defer.CancelledError):
            self.log.failure("Subscription {name} failed", failure, name=self.name)

    async def _handle(self, listener: _Channel, message) -> None:
        channel = listener.channel
        tag = message.delivery_tag
        key = routing_key_of(message)
        if not any(matcher(key) for matcher in self._matchers):
            channel.basic_ack(delivery_tag=tag)
            self.figures.skipped += 1
            return
        failed_before = delivery_count(message)
        if failed_before:
            await task.deferLater(self.reactor, self.delay(failed_before))
        attempt = failed_before + 1
        try:
            await self._post(message, key, attempt)
        except RemoteServiceError as error:
            await self._failed(listener, message, attempt, error)
            return
        if listener is self._current and not channel.closed:
            channel.basic_ack(delivery_tag=tag)
        self.figures.delivered += 1
        self.figures.last_delivered_time = self.reactor.seconds()

    async def _post(self, message, key: str, attempt: int) -> None:
        body = message.content.body or b""
        headers = webhook_headers(
            self.subscription.secret, body, key, message.content.properties, attempt
        )
        answer = await self.http.request(
            self.what, "POST", self.subscription.url, self.timeout, data=body, headers=headers
        )
        answer.check_status()

    async def _failed(self, listener: _Channel, message, attempt: int, error: Exception) -> None:
        if listener is not self._current or not self.running:
            return  # cut short by a stop or a lost connection: not the receiver's failure
        figures = self.figures
        figures.last_error = str(error)
        figures.last_error_time = self.reactor.seconds()
        message_id = message.content.properties.get("message-id") or "-"
        channel = listener.channel
        if attempt >= self.subscription.max_attempts:
            if not channel.closed:
                # To the dead-letter queue (at least once: see the module).
                channel.basic_reject(delivery_tag=message.delivery_tag, requeue=False)
            figures.dead_lettered += 1
            self.log.warn(
                "Subscription {name}: gave up on notification {id} after {attempts} attempts "
                "({error}); it is in {queue}",
                name=self.name,
                id=message_id,
                attempts=attempt,
                error=str(error),
                queue=self.dead_queue,
            )
            return
        figures.retried += 1
        self.log.warn(
            "Subscription {name}: attempt {attempt} of {attempts} for notification {id} "
            "failed ({error}); next in about {delay:.1f} s",
            name=self.name,
            attempt=attempt,
            attempts=self.subscription.max_attempts,
            id=message_id,
            error=str(error),
            delay=self.delay(attempt),
        )
        # Back to the head of the queue: close the channel (a requeue would
        # put it at the tail), and consume again on a new one.
        self._current = None
        listener.closing = True
        client = self._client
        if client is not None:
            await client.close_extra_channel(channel)
            self._open(client)


class Subscriptions(service.Service):
    """Every subscriber of a configuration, and their figures.

    A :class:`~notifications.consumer.ConnectionUser`: each subscriber starts on
    each new connection. Every ``poll_interval`` seconds the queues' depths are
    read from the broker, and the figures written to
    ``<storage>/subscriptions.json`` when they changed (in a thread), so that
    ``notifications subscriptions status`` can show them.
    """

    log = Logger()

    def __init__(
        self,
        config: Config,
        reactor,
        tls_policy=None,
        poll_interval: float = 5.0,
        persistent: bool = True,
    ):
        self.reactor = reactor
        self.storage = config.storage_directory
        self.exchange = config.broker.exchange
        self.poll_interval = poll_interval
        self.subscribers: dict[str, Subscriber] = {}
        for subscription in config.subscriptions:
            http = webhook_client(
                reactor,
                subscription.allow_private,
                config.http_timeout,
                tls_policy=tls_policy,
                persistent=persistent,
            )
            self.subscribers[subscription.name] = Subscriber(
                subscription, self.exchange, reactor, http, config.http_timeout
            )
        self._client: AMQPClient | None = None
        self._poll: task.LoopingCall | None = None
        self._written: str | None = None

    def figures(self) -> dict[str, SubscriptionFigures]:
        return {name: subscriber.figures for name, subscriber in self.subscribers.items()}

    def reconfigure(self, config: Config) -> None:
        """Apply a reload: the HTTP timeout (subscriptions themselves change at the next start)."""
        for subscriber in self.subscribers.values():
            subscriber.timeout = config.http_timeout

    def startService(self) -> None:
        super().startService()
        kept = read_figures(self.storage)
        for name, subscriber in self.subscribers.items():
            if name in kept:
                subscriber.figures = kept[name]
            subscriber.http.start()
            subscriber.start()
        if self.subscribers:
            self._poll = task.LoopingCall(self._refresh)
            self._poll.clock = self.reactor
            self._poll.start(self.poll_interval, now=False).addErrback(
                lambda failure: self.log.failure("The subscriptions' figures stopped", failure)
            )

    async def _stop(self) -> None:
        if self._poll is not None and self._poll.running:
            self._poll.stop()
        for subscriber in self.subscribers.values():
            try:
                await subscriber.stop()
            except Closed:
                pass  # the connection went first
            await subscriber.http.close()
        await self._write()

    def stopService(self) -> defer.Deferred:
        super().stopService()
        return defer.ensureDeferred(self._stop())

    def connected(self, client: AMQPClient) -> None:
        self._client = client
        for subscriber in self.subscribers.values():
            subscriber.connected(client)

    def lost(self) -> None:
        self._client = None
        for subscriber in self.subscribers.values():
            subscriber.lost()

    async def _refresh(self) -> None:
        try:
            await self._read_depths()
        except Exception as error:  # a figure missed: read again at the next round
            self.log.debug("Could not read the subscriptions' queues: {error}", error=error)
        await self._write()

    async def _read_depths(self) -> None:
        """``waiting`` and ``dead`` of each subscription, by passive declarations."""
        client = self._client
        if client is None:
            return
        listener = ChannelEvents()
        channel = await client.open_extra_channel(listener)
        try:
            for subscriber in self.subscribers.values():
                if channel.closed:
                    # A missing queue closes the channel (not declared yet): a new one.
                    channel = await client.open_extra_channel(listener)
                try:
                    waiting = await channel.queue_declare(queue=subscriber.queue, passive=True)
                    dead = await channel.queue_declare(queue=subscriber.dead_queue, passive=True)
                except Closed:
                    subscriber.figures.waiting = subscriber.figures.dead = None
                    continue
                # Ready messages only: the one being delivered is unacknowledged.
                subscriber.figures.waiting = waiting.message_count + int(subscriber.holding)
                subscriber.figures.dead = dead.message_count
        finally:
            await client.close_extra_channel(channel)

    async def _write(self) -> None:
        record = {"subscriptions": {name: f.kept() for name, f in self.figures().items()}}
        data = json.dumps(record, sort_keys=True)
        if data == self._written or not self.subscribers:
            return
        self._written = data
        try:
            await threads.deferToThreadPool(
                self.reactor,
                self.reactor.getThreadPool(),
                replace_file,
                Path(self.storage) / FIGURES_NAME,
                data.encode(),
            )
        except OSError as error:
            self.log.warn("Could not keep the subscriptions' figures: {error}", error=error)
