"""``notifications tail``: the command-line consumer of the exchange.

It prints each notification as the older CLI client did,
``[<Mon DD HH:MM:SS>] <project>/<group> <text> — <link>``, or one JSON object
per line with ``--json``, from a temporary queue bound with the routing-key
patterns (default ``#``), reconnecting when the broker goes away.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.task import deferLater

from ..amqp.connection import BrokerEvents, queue_exists
from ..amqp.stream import StreamClosed, StreamReader, read_until_end
from ..config import Config
from ..routing import compile_pattern, pattern_error
from ..texts import SEPARATOR
from .common import (
    CommandError,
    add_timeout,
    close_connection,
    complain,
    connected,
    describe_failure,
    load,
    parse_time,
    positive_int,
    reporting_errors,
    run_react,
    say,
    start_connection,
)

#: Seconds between reconnection attempts of ``tail``.
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 30)

#: Unacknowledged messages of a named queue in flight to ``tail`` at once.
PREFETCH = 100

#: The channel the existence of a named queue is asked on.
PROBE_CHANNEL = 2

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

DIM = "\x1b[2m"
BOLD = "\x1b[1m"
RESET = "\x1b[0m"


class MalformedMessage(ValueError):
    """A message on the exchange that is not a notification."""


def parse_notification(body: bytes) -> dict[str, Any]:
    """The JSON object of a message body, or :class:`MalformedMessage`."""
    try:
        value = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedMessage(f"not JSON ({error})") from None
    if not isinstance(value, dict):
        raise MalformedMessage("not a JSON object")
    return value


def _field(notification: dict[str, Any], key: str) -> str:
    value = notification.get(key)
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value)
    # A payload must not drive the terminal (escape sequences) or break the line.
    return _CONTROL.sub(" ", text)


def format_notification(notification: dict[str, Any], timestamp: float, colour: bool) -> str:
    """``[<Mon DD HH:MM:SS>] <project>/<group> <text>``, then `` — <link>`` if there is one."""
    when = time.strftime("%b %d %H:%M:%S", time.localtime(timestamp))
    where = f"{_field(notification, 'project')}/{_field(notification, 'group')}"
    if colour:
        when, where = f"{DIM}{when}{RESET}", f"{BOLD}{where}{RESET}"
    line = f"[{when}] {where} {_field(notification, 'text')}"
    link = _field(notification, "link")
    return line + (SEPARATOR + link if link else "")


def wants_colour(stream: TextIO) -> bool:
    return stream.isatty() and "NO_COLOR" not in os.environ


def reconnect_delays() -> Iterator[int]:
    """1, 2, 4… seconds, then 30 s for ever."""
    yield from RECONNECT_DELAYS
    while True:
        yield RECONNECT_DELAYS[-1]


class Tail(BrokerEvents):
    """Prints what arrives on a queue bound to the exchange, reconnecting as needed.

    The queue is a temporary one (exclusive, deleted when the connection
    closes: what is published while nobody listens is not kept), or with
    ``queue_name`` a named durable quorum queue, declared if missing: it keeps
    what is published while the consumer is away, and each message is
    acknowledged once printed, so that nothing is lost on a disconnection.
    """

    def __init__(
        self,
        reactor,
        config: Config,
        patterns: Sequence[str],
        as_json: bool,
        count: int | None,
        queue_name: str | None = None,
        since: datetime | None = None,
    ):
        self.reactor = reactor
        self.config = config
        self.patterns = tuple(patterns) or ("#",)
        self.as_json = as_json
        self.count = count
        self.queue_name = queue_name
        self.since = since
        self._matchers = [compile_pattern(pattern) for pattern in self.patterns]
        self._channel = None
        self._reader: StreamReader | None = None
        #: With ``since``: the archive's next offset to print (after the first end),
        #: the last offset seen before it, whether anything was read yet.
        self._next_offset: int | None = None
        self._seen: int | None = None
        self._archive_read = False
        self.colour = wants_colour(sys.stdout)
        self.received = 0
        self.stopped = False
        self._client = None
        self._queue = None
        self._connecting: defer.Deferred | None = None
        self._waiting: defer.Deferred | None = None
        self._done = False
        self._done_waiters: list[defer.Deferred] = []

    def stop(self) -> defer.Deferred:
        """Stop listening; fires once the connection is closed."""
        if not self.stopped:
            self.stopped = True
            for pending in (self._connecting, self._waiting):
                if pending is not None:
                    pending.cancel()
            if self._queue is not None:
                # Wakes the pending get() with Closed, so the loop closes the connection.
                self._queue.close()
            if self._reader is not None:
                defer.ensureDeferred(self._reader.close())
        if self._done:
            return defer.succeed(None)
        d: defer.Deferred = defer.Deferred()
        self._done_waiters.append(d)
        return d

    async def run(self) -> None:
        """Listen until stopped or ``count`` notifications were printed."""
        try:
            delays = reconnect_delays()
            while not self.stopped:
                try:
                    listened = await self.listen()
                except CommandError as error:
                    if self.stopped:
                        break
                    listened = False
                    complain(str(error))
                if self.stopped:
                    break
                if listened:
                    delays = reconnect_delays()
                    complain("lost the connection to the broker")
                delay = next(delays)
                complain(f"reconnecting in {delay} s")
                self._waiting = deferLater(self.reactor, delay)
                try:
                    await self._waiting
                except defer.CancelledError:
                    break
                finally:
                    self._waiting = None
        finally:
            self._done = True
            waiters, self._done_waiters = self._done_waiters, []
            for waiter in waiters:
                waiter.callback(None)

    async def listen(self) -> bool:
        """One connection: bind, consume, print. True if it got as far as listening."""
        from txamqp.client import Closed as ClientClosed
        from txamqp.queue import Closed as QueueClosed

        self._connecting = start_connection(self.reactor, self.config, listener=self)
        try:
            client, channel = await connected(self._connecting, self.config)
        finally:
            self._connecting = None
        self._client = client
        listening = False
        try:
            if self.stopped:
                return False
            if self.since is not None:
                listening = True
                await self.read_archive(client)
                return True
            self._queue = await self.consume(client, channel)
            listening = True
            if self.stopped:  # stopped while binding: stop() could not close the queue
                return True
            complain(
                f"listening on {self.config.broker.exchange} at {client.node} "
                f"for {' '.join(self.patterns)} …"
            )
            while not self.stopped:
                self.show(await self._queue.get())
        except (QueueClosed, ClientClosed, _Enough):
            pass
        except StreamClosed as error:
            if error.by_owner or self._archive_read:
                return listening  # stopped, or the connection went: reconnect
            raise CommandError(archive_unreadable(self.config, error)) from None
        except Exception as error:
            if not listening:
                raise CommandError(
                    f"cannot listen on {self.config.broker.exchange}: {describe_failure(error)}"
                ) from None
            raise
        finally:
            self._queue = None
            self._client = None
            await close_connection(client)
        return listening

    async def read_archive(self, client) -> None:
        """``--since``: the archive from that time to its end now, then what follows.

        Up to the end (a marker, see notifications.amqp.stream), the
        notifications accepted before ``since`` are left out (a timestamp
        seek starts at the chunk of that second); after it, every
        notification appended is printed: the offsets chain the two parts, so
        that nothing is missed nor printed twice, across reconnections too.
        """
        queue = self.config.archive.queue
        if self._next_offset is None:
            since = self.since.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")
            complain(f"reading the archive {queue} at {client.node} from {since} …")
            # After a reconnection in this part: on from the last one seen.
            start = self.since if self._seen is None else self._seen + 1
            end = await read_until_end(client, queue, self._show_history, start=start)
            self._next_offset = end.offset + 1
            if self.stopped:
                return
        complain(f"listening on {queue} at {client.node} for {' '.join(self.patterns)} …")
        self._reader = reader = StreamReader(client, queue, self._next_offset)
        await reader.start()
        self._archive_read = True
        if self.stopped:
            await reader.close()
            return
        async for delivery in reader:
            self._next_offset = delivery.offset + 1
            self._show_archived(delivery)

    def _show_history(self, delivery) -> None:
        self._seen = delivery.offset
        self._archive_read = True
        timestamp = delivery.properties.get("timestamp")
        if timestamp is not None and timestamp < int(self.since.timestamp()):
            return  # accepted before the time asked
        self._show_archived(delivery)

    def _show_archived(self, delivery) -> None:
        if self.stopped:
            raise _Enough
        if any(matcher(delivery.message.routing_key) for matcher in self._matchers):
            self.show(delivery.message)

    async def consume(self, client, channel):
        """The queue bound with each pattern, consumed: the txamqp queue of its messages."""
        self._channel = channel
        if self.queue_name is None:
            # Exclusive, auto-deleted, server-named.
            declared = await channel.queue_declare(exclusive=True, auto_delete=True)
            name = declared.queue
        else:
            name = self.queue_name
            # Kept as it is when it exists (a classic durable queue of an older
            # bot, say); else a quorum queue: replicated over a cluster.
            if not await queue_exists(client, name, PROBE_CHANNEL):
                await channel.queue_declare(
                    queue=name, durable=True, arguments={"x-queue-type": "quorum"}
                )
            await channel.basic_qos(prefetch_count=PREFETCH)
        for pattern in self.patterns:
            await channel.queue_bind(
                queue=name, exchange=self.config.broker.exchange, routing_key=pattern
            )
        reply = await channel.basic_consume(queue=name, no_ack=self.queue_name is None)
        return await client.queue(reply.consumer_tag)

    def show(self, message) -> None:
        """Print one message; a malformed one is a warning, not the end."""
        try:
            notification = parse_notification(message.content.body)
        except MalformedMessage as error:
            complain(
                f"skipped a message that is not a notification ({message.routing_key}): {error}"
            )
            self._acknowledge(message)
            return
        if self.as_json:
            # Re-serialized compactly so that each notification is one line.
            say(json.dumps(notification, ensure_ascii=False, separators=(",", ":")))
        else:
            timestamp = message.content.properties.get("timestamp") or time.time()
            say(format_notification(notification, timestamp, self.colour))
        self._acknowledge(message)
        self.received += 1
        if self.count is not None and self.received >= self.count:
            self.stop()

    def _acknowledge(self, message) -> None:
        # A named queue's message leaves it once printed (or skipped).
        if self.queue_name is not None and self._channel is not None:
            self._channel.basic_ack(delivery_tag=message.delivery_tag)

    def broker_cancel(self, message) -> None:
        # The broker dropped our consumer (queue deleted): start again on a new queue.
        if self._client is not None and self._client.transport is not None:
            self._client.transport.loseConnection()


async def tail_main(reactor, config: Config, args: argparse.Namespace) -> None:
    since = moment("--since", args.since)
    tail = Tail(reactor, config, args.patterns, args.json, args.count, args.queue, since)
    # Ctrl-C stops the reactor: close the connection first, so the exit is clean.
    reactor.addSystemEventTrigger("before", "shutdown", tail.stop)
    timer = reactor.callLater(args.timeout, tail.stop) if args.timeout else None
    try:
        await tail.run()
    finally:
        if timer is not None and timer.active():
            timer.cancel()


def command_tail(args: argparse.Namespace) -> int:
    config = load(args)
    check_patterns(args.patterns)
    moment("--since", args.since)
    if args.since is not None:
        if args.queue is not None:
            raise CommandError("--since reads the archive: it does not go with --queue", 2)
        if not config.archive.enabled:
            raise CommandError(ARCHIVE_OFF, 2)
    return run_react(reporting_errors, tail_main, config, args)


#: Why ``--since`` and ``history`` cannot read anything.
ARCHIVE_OFF = "the archive is off in this configuration ([archive] enabled = false): no history"


def archive_unreadable(config: Config, error: Exception) -> str:
    return (
        f"cannot read the archive {config.archive.queue}: {error}; the daemon declares it "
        "when it connects with [archive] enabled"
    )


def check_patterns(patterns: Sequence[str]) -> None:
    """A pattern that could never match a routing key is a usage error."""
    for pattern in patterns:
        problem = pattern_error(pattern)
        if problem is not None:
            raise CommandError(f"{pattern!r} is not a routing-key pattern: {problem}", 2)


def moment(option: str, text: str | None) -> datetime | None:
    """``--since``/``--until`` (see :func:`~notifications.commands.common.parse_time`),
    or one line and exit 2 (not argparse's usage text)."""
    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as error:
        raise CommandError(f"{option}: {error}", 2) from None


class _Enough(Exception):
    """Raised from a handler to end an archive read: ``tail`` was stopped."""


def queue_name(text: str) -> str:
    """A queue name the broker takes and that is ours to declare."""
    if not text or len(text.encode()) > 255:
        raise argparse.ArgumentTypeError("a queue name has 1 to 255 bytes")
    if text.startswith("amq."):
        raise argparse.ArgumentTypeError("names starting with amq. are the broker's own")
    return text


def add_commands(commands) -> None:
    """``tail``."""
    tail = commands.add_parser("tail", help="print the notifications published on the exchange")
    tail.add_argument("patterns", nargs="*", metavar="pattern", help="routing-key patterns (#)")
    tail.add_argument("--json", action="store_true", help="print each JSON body on one line")
    tail.add_argument("--count", type=positive_int, metavar="N", help="exit after N messages")
    add_timeout(tail, "exit after that long")
    tail.add_argument(
        "--since",
        metavar="TIME",
        help="first print the archive from TIME (2h, 30m, 2026-12-06T10:00:00Z), then follow",
    )
    tail.add_argument(
        "--queue",
        type=queue_name,
        metavar="NAME",
        help="consume a named durable (quorum) queue, declared if missing, that keeps "
        "what is published while tail is not running",
    )
    tail.set_defaults(command=command_tail)
