"""``notifications history``: the archived notifications of a time range, printed once.

It reads the archive stream (:mod:`notifications.archive`) from ``--since``
to its end as it is when the command starts (an end marker, see
:mod:`notifications.amqp.stream`), keeps the notifications accepted between
``--since`` and ``--until`` (by their ``timestamp``, to the second) whose
routing key matches the patterns, prints them as ``tail`` does, and exits.
``tail --since`` prints the same, then follows.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime

from ..amqp.stream import StreamClosed, read_until_end
from ..config import Config
from ..routing import compile_pattern
from .common import (
    EXIT_USAGE,
    CommandError,
    close_connection,
    complain,
    connected,
    load,
    reporting_errors,
    run_react,
    say,
    start_connection,
)
from .tail import (
    ARCHIVE_OFF,
    MalformedMessage,
    archive_unreadable,
    check_patterns,
    format_notification,
    moment,
    parse_notification,
    wants_colour,
)


async def history_main(reactor, config: Config, args: argparse.Namespace) -> None:
    since = moment("--since", args.since)
    until = moment("--until", args.until) or datetime.now(UTC)
    first, last = int(since.timestamp()), int(until.timestamp())
    matchers = [compile_pattern(pattern) for pattern in args.patterns or ("#",)]
    colour = wants_colour(sys.stdout)
    printed = 0

    def show(delivery) -> None:
        nonlocal printed
        timestamp = delivery.properties.get("timestamp")
        if timestamp is not None and not first <= timestamp <= last:
            return
        message = delivery.message
        if not any(matcher(message.routing_key) for matcher in matchers):
            return
        try:
            notification = parse_notification(delivery.body)
        except MalformedMessage as error:
            complain(
                f"skipped a message that is not a notification ({message.routing_key}): {error}"
            )
            return
        if args.json:
            say(json.dumps(notification, ensure_ascii=False, separators=(",", ":")))
        else:
            say(format_notification(notification, timestamp or 0, colour))
        printed += 1

    queue = config.archive.queue
    client, _ = await connected(start_connection(reactor, config), config)
    try:
        await read_until_end(client, queue, show, start=since)
    except StreamClosed as error:
        raise CommandError(archive_unreadable(config, error)) from None
    finally:
        await close_connection(client)
    complain(f"{printed} notifications in {queue}")


def command_history(args: argparse.Namespace) -> int:
    config = load(args)
    check_patterns(args.patterns)
    if not config.archive.enabled:
        raise CommandError(ARCHIVE_OFF, EXIT_USAGE)
    since, until = moment("--since", args.since), moment("--until", args.until)
    if until is not None and until < since:
        raise CommandError("--until is before --since", EXIT_USAGE)
    return run_react(reporting_errors, history_main, config, args)


def add_commands(commands) -> None:
    """``history``."""
    history = commands.add_parser(
        "history", help="print the archived notifications of a time range, then exit"
    )
    history.add_argument("patterns", nargs="*", metavar="pattern", help="routing-key patterns (#)")
    history.add_argument(
        "--since",
        required=True,
        metavar="TIME",
        help="from TIME: a duration before now (30m, 2h, 7d) or 2026-12-06T10:00:00Z",
    )
    history.add_argument("--until", metavar="TIME", help="up to TIME (default: now), as --since")
    history.add_argument("--json", action="store_true", help="print each JSON body on one line")
    history.set_defaults(command=command_history)
