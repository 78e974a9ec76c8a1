"""``notifications subscriptions list|status|replay``: the outgoing webhooks (reference §11.6).

``list`` reads the configuration only. ``status`` adds what waits in each
subscription's queue and dead-letter queue (asked of the broker) to the
figures the daemon keeps in its storage directory (its workers' folders
included). ``replay NAME`` moves what the subscription's dead-letter queue
holds back to its queue, one notification at a time: published with a
confirm, then removed from the dead-letter queue, so that nothing is lost if
the command is interrupted (a notification may then be in both, and be
POSTed twice with the same id).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from twisted.internet import defer
from txamqp.client import Closed
from txamqp.content import Content

from ..amqp.connection import AMQPClient, ChannelEvents
from ..config import Config, SubscriptionConfig, dead_letter_queue, subscription_queue
from ..subscriptions import (
    ROUTING_KEY_KEPT,
    SubscriptionFigures,
    declare_subscription,
    kept_figures,
)
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    close_connection,
    connected,
    describe_failure,
    format_table,
    load,
    positive_int,
    reporting_errors,
    run_react,
    say,
    start_connection,
)

#: Properties a replayed notification keeps (the others are the broker's).
KEPT_PROPERTIES = (
    "content-type",
    "content-encoding",
    "delivery-mode",
    "message-id",
    "timestamp",
    "app-id",
)


def describe_retries(subscription: SubscriptionConfig) -> str:
    return (
        f"{subscription.initial_delay:g} s to {subscription.max_delay:g} s, "
        f"{subscription.max_attempts} attempts"
    )


def command_list(args: argparse.Namespace) -> int:
    config = load(args)
    if not config.subscriptions:
        say(f"No subscription in {config.path}.")
        return EXIT_OK
    rows = [
        (
            subscription.name,
            subscription.origin,
            " ".join(subscription.patterns),
            "yes" if subscription.allow_private else "no",
            describe_retries(subscription),
            subscription_queue(config.broker.exchange, subscription.name),
        )
        for subscription in config.subscriptions
    ]
    headers = ("subscription", "receiver", "patterns", "private", "retries", "queue")
    for line in format_table(headers, rows):
        say(line)
    return EXIT_OK


async def queue_depth(client: AMQPClient, queue: str) -> int | None:
    """How many messages wait (ready) in ``queue``; None when it does not exist."""
    channel = await client.open_extra_channel(ChannelEvents())
    try:
        declared = await channel.queue_declare(queue=queue, passive=True)
    except Closed:
        return None  # a missing queue closes the channel
    finally:
        await client.close_extra_channel(channel)
    return declared.message_count


def _when(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def _count(value: int | None) -> str:
    return "?" if value is None else str(value)


def status_rows(config: Config, figures: dict[str, SubscriptionFigures]) -> list[tuple]:
    rows = []
    for subscription in config.subscriptions:
        kept = figures.get(subscription.name) or SubscriptionFigures()
        error = kept.last_error or ""
        if error and kept.last_error_time is not None:
            error = f"{_when(kept.last_error_time)} {error}"
        rows.append(
            (
                subscription.name,
                subscription.origin,
                _count(kept.waiting),
                str(kept.delivered),
                str(kept.retried),
                _count(kept.dead),
                error or "-",
            )
        )
    return rows


async def status_main(reactor, config: Config, args: argparse.Namespace) -> None:
    figures = kept_figures(config.storage_directory)
    client, _ = await connected(start_connection(reactor, config), config)
    try:
        for subscription in config.subscriptions:
            kept = figures.setdefault(subscription.name, SubscriptionFigures())
            exchange = config.broker.exchange
            kept.waiting = await queue_depth(
                client, subscription_queue(exchange, subscription.name)
            )
            kept.dead = await queue_depth(client, dead_letter_queue(exchange, subscription.name))
    finally:
        await close_connection(client)
    headers = ("subscription", "receiver", "waiting", "delivered", "retried", "dead", "last error")
    for line in format_table(headers, status_rows(config, figures)):
        say(line)


def command_status(args: argparse.Namespace) -> int:
    config = load(args)
    if not config.subscriptions:
        say(f"No subscription in {config.path}.")
        return EXIT_OK
    return run_react(reporting_errors, status_main, config, args)


class _Confirms(ChannelEvents):
    """The broker's answer to each message published on a confirm channel, one at a time."""

    def __init__(self) -> None:
        self.waiting: defer.Deferred | None = None

    def expect(self) -> defer.Deferred:
        self.waiting = defer.Deferred()
        return self.waiting

    def _settle(self, error: str | None) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is None:
            return
        if error is None:
            waiting.callback(None)
        else:
            waiting.errback(CommandError(error))

    def broker_ack(self, message) -> None:
        self._settle(None)

    def broker_nack(self, message) -> None:
        self._settle("the broker refused a replayed notification (basic.nack)")

    def broker_return(self, message) -> None:
        self._settle(f"a replayed notification was returned: {message.reply_text}")

    def channel_closed(self, reason) -> None:
        self._settle(f"the channel closed: {describe_failure(Closed(reason))}")


def original_routing_key(message) -> str:
    """The routing key a dead-lettered notification was first published with."""
    headers = message.content.properties.get("headers") or {}
    kept = headers.get(ROUTING_KEY_KEPT)
    if isinstance(kept, str):
        return kept
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        keys = deaths[0].get("routing-keys")
        if isinstance(keys, list) and keys and isinstance(keys[0], str):
            return keys[0]
    return message.routing_key


async def replay(client: AMQPClient, channel, exchange: str, subscription, limit: int | None):
    """Move the dead-letter queue's notifications back to the subscription's queue, in order."""
    await declare_subscription(channel, exchange, subscription)
    dead = dead_letter_queue(exchange, subscription.name)
    queue = subscription_queue(exchange, subscription.name)
    confirms = _Confirms()
    publishing = await client.open_extra_channel(confirms)
    moved = 0
    try:
        await publishing.confirm_select()
        while limit is None or moved < limit:
            message = await channel.basic_get(queue=dead, no_ack=False)
            if message.method.name != "get-ok":
                break  # get-empty: the dead-letter queue is empty
            properties: dict[str, Any] = {
                key: value
                for key, value in message.content.properties.items()
                if key in KEPT_PROPERTIES
            }
            properties["headers"] = {ROUTING_KEY_KEPT: original_routing_key(message)}
            confirmed = confirms.expect()
            # Straight to the queue (the default exchange): the exchange's other
            # consumers must not see it a second time.
            publishing.basic_publish(
                exchange="",
                routing_key=queue,
                mandatory=True,
                content=Content(message.content.body or b"", properties=properties),
            )
            await confirmed
            channel.basic_ack(delivery_tag=message.delivery_tag)
            moved += 1
    finally:
        await client.close_extra_channel(publishing)
    return moved, dead, queue


async def replay_main(reactor, config: Config, args: argparse.Namespace) -> None:
    subscription = config.subscription(args.name)
    client, channel = await connected(start_connection(reactor, config), config)
    try:
        moved, dead, queue = await replay(
            client, channel, config.broker.exchange, subscription, args.count
        )
    except Closed as error:
        raise CommandError(f"cannot replay {args.name}: {describe_failure(error)}") from None
    finally:
        await close_connection(client)
    say(f"{moved} notifications moved from {dead} back to {queue}")


def command_replay(args: argparse.Namespace) -> int:
    config = load(args)
    if config.subscription(args.name) is None:
        known = ", ".join(s.name for s in config.subscriptions) or "none"
        raise CommandError(
            f"no subscription named {args.name!r} in {config.path} (known: {known})", EXIT_USAGE
        )
    return run_react(reporting_errors, replay_main, config, args)


def add_commands(commands) -> None:
    """``subscriptions list|status|replay``."""
    subscriptions = commands.add_parser("subscriptions", help="the outgoing webhooks")
    actions = subscriptions.add_subparsers(required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the subscriptions of the configuration")
    listing.set_defaults(command=command_list)
    status = actions.add_parser(
        "status", help="waiting, delivered, retried, dead and the last error of each"
    )
    status.set_defaults(command=command_status)
    replaying = actions.add_parser(
        "replay", help="publish a subscription's dead-letter queue to its queue again"
    )
    replaying.add_argument("name", help="the subscription")
    replaying.add_argument(
        "--count", type=positive_int, metavar="N", help="at most N notifications (default: all)"
    )
    replaying.set_defaults(command=command_replay)
