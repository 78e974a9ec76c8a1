"""``notifications outbox status|drain``: what an outbox holds, and publishing another
instance's leftovers.

A gateway whose machine is lost for good leaves its storage directory (a
volume, a disk) with notifications it answered 2xx for and could not publish.
``outbox drain --storage DIR`` publishes them with this configuration's broker,
in order and with their message ids, and exits when the outbox is empty. It
refuses an outbox that a running daemon holds: that daemon publishes it itself.
``--storage`` may name an outbox's directory or a storage directory whose
``worker-<i>`` folders hold the outboxes of ``--workers``.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from contextlib import closing
from pathlib import Path

from twisted.internet.task import deferLater

from ..delivery import DeliveryService
from ..dispatcher import Dispatcher
from ..lockfile import holder
from ..outbox import LOCK_NAME, Outbox, OutboxUnavailable
from ..publisher import Publisher
from .common import (
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    add_timeout,
    complain,
    format_table,
    load,
    printing_warnings,
    reporting_errors,
    run_react,
    say,
)

OUTBOX_FILE = "outbox.sqlite3"


def outbox_directories(storage: Path) -> list[Path]:
    """The outboxes under ``storage``: itself and its ``worker-<i>`` folders, as found."""
    found = [storage] if (storage / OUTBOX_FILE).exists() else []
    found += sorted(
        path.parent for path in storage.glob(f"worker-*/{OUTBOX_FILE}") if path.parent.is_dir()
    )
    if not found:
        raise CommandError(f"no outbox in {storage} (no {OUTBOX_FILE} there)", EXIT_USAGE)
    return found


def read_outbox(directory: Path) -> dict:
    """Count, oldest and newest creation time, and the count per routing key, read-only."""
    uri = (directory / OUTBOX_FILE).resolve().as_uri() + "?mode=ro"
    try:
        with closing(sqlite3.connect(uri, uri=True, timeout=5)) as database:
            count, oldest, newest = database.execute(
                "SELECT COUNT(*), MIN(created), MAX(created) FROM outbox"
            ).fetchone()
            keys = database.execute(
                "SELECT routing_key, COUNT(*) FROM outbox GROUP BY routing_key "
                "ORDER BY COUNT(*) DESC, routing_key LIMIT 20"
            ).fetchall()
            distinct = database.execute(
                "SELECT COUNT(DISTINCT routing_key) FROM outbox"
            ).fetchone()[0]
    except sqlite3.Error as error:
        raise CommandError(f"cannot read the outbox in {directory}: {error}") from None
    return {"count": count, "oldest": oldest, "newest": newest, "keys": keys, "distinct": distinct}


def describe_age(created: float | None, now: float) -> str:
    if created is None:
        return "-"
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
    return f"{when} ({max(0.0, now - created):.0f} s ago)"


def command_status(args: argparse.Namespace) -> int:
    now = time.time()
    for directory in outbox_directories(Path(args.storage)):
        figures = read_outbox(directory)
        pid = holder(directory / LOCK_NAME)
        held = f"held by a running daemon (process {pid or '?'})" if pid is not None else "not held"
        say(f"{directory}: {figures['count']} notifications waiting, {held}")
        if figures["count"]:
            say(f"  oldest: {describe_age(figures['oldest'], now)}")
            say(f"  newest: {describe_age(figures['newest'], now)}")
            rows = [(key, str(count)) for key, count in figures["keys"]]
            for line in format_table(("routing key", "count"), rows):
                say(f"  {line}")
            if figures["distinct"] > len(rows):
                say(f"  … and {figures['distinct'] - len(rows)} more routing keys")
    return EXIT_OK


async def drain_one(reactor, config, directory: Path, timeout: float) -> int:
    """Publish what one outbox holds; the number published."""
    outbox = Outbox(directory, reactor, synchronous=config.synchronous)
    try:
        outbox.open()
    except OutboxUnavailable as error:
        raise CommandError(f"{error}: a running daemon publishes its own outbox") from None
    publisher = Publisher(config.broker, reactor)
    dispatcher = Dispatcher(outbox, publisher, reactor, drain_timeout=1.0)
    delivery = DeliveryService(outbox, publisher, dispatcher)
    waiting = outbox.depth
    say(
        f"{directory}: {waiting} notifications to publish on {config.broker.exchange} "
        f"at {config.broker.describe()}"
    )
    delivery.startService()
    deadline = reactor.seconds() + timeout
    try:
        while outbox.depth > 0 and reactor.seconds() < deadline:
            await deferLater(reactor, 0.2)
    finally:
        left = outbox.depth
        await delivery.stopService()
    if left:
        raise CommandError(
            f"{directory}: {left} notifications still waiting after {timeout:g} s "
            f"(is the broker at {config.broker.describe()} reachable?); run it again"
        )
    say(f"{directory}: {waiting} published, the outbox is empty")
    return waiting


async def drain_main(reactor, config, directories: list[Path], timeout: float) -> None:
    for directory in directories:
        await drain_one(reactor, config, directory, timeout)


def command_drain(args: argparse.Namespace) -> int:
    config = load(args)
    directories = outbox_directories(Path(args.storage))
    held = [(directory, holder(directory / LOCK_NAME)) for directory in directories]
    refused = [(directory, pid) for directory, pid in held if pid is not None]
    for directory, pid in refused:
        complain(
            f"the outbox in {directory} is held by a running daemon (process {pid or '?'}): "
            "it publishes it itself; stop it first to drain it from here"
        )
    if refused:
        return EXIT_USAGE
    with printing_warnings("notifications.publisher", "notifications.dispatcher"):
        return run_react(reporting_errors, drain_main, config, directories, args.timeout)


def add_commands(commands) -> None:
    """``outbox status`` and ``outbox drain``."""
    outbox = commands.add_parser("outbox", help="inspect or publish an outbox")
    actions = outbox.add_subparsers(required=True, metavar="ACTION")
    status = actions.add_parser("status", help="what an outbox holds (count, oldest, routing keys)")
    status.add_argument("--storage", required=True, metavar="DIR", help="the storage directory")
    status.set_defaults(command=command_status)
    drain = actions.add_parser(
        "drain", help="publish another instance's leftover outbox with this broker, then exit"
    )
    drain.add_argument("--storage", required=True, metavar="DIR", help="the storage directory")
    add_timeout(drain, "give up after that long (default 600)", default=600.0)
    drain.set_defaults(command=command_drain)
