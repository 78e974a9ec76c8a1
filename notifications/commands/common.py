"""What every ``notifications`` command shares: errors, output, the reactor, options."""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.task import react
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from ..amqp.connection import BrokerEvents, connect
from ..config import Config, config_path, load_config
from ..daemonfiles import read_reload, running_pid
from ..gates import gate_names

PROG = "notifications"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A problem the user can fix: printed as one line, with an exit code."""

    def __init__(self, message: str, code: int = EXIT_FAILURE):
        super().__init__(message)
        self.code = code


def say(line: str = "", stream: TextIO | None = None) -> None:
    """Print one line and flush it at once, as ``tail`` output is often piped."""
    stream = stream or sys.stdout
    stream.write(line + "\n")
    stream.flush()


def complain(message: str) -> None:
    """Print one ``notifications: …`` line on stderr."""
    say(f"{PROG}: {message}", sys.stderr)


@contextmanager
def printing_warnings(*namespaces: str) -> Iterator[None]:
    """While active, the warnings and errors logged under ``namespaces`` (default:
    the clients') are printed on stderr: no log is set up in a command."""
    prefixes = namespaces or ("notifications.clients",)

    def observer(event: dict) -> None:
        namespace = event.get("log_namespace") or ""
        if namespace.startswith(prefixes) and event.get("log_level") in (
            LogLevel.warn,
            LogLevel.error,
            LogLevel.critical,
        ):
            complain(f"warning: {formatEvent(event)}")

    globalLogPublisher.addObserver(observer)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(observer)


def load(args: argparse.Namespace) -> Config:
    """The configuration named by ``--config`` (or its default)."""
    return load_config(config_path(args.config))


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns aligned with spaces, a rule under the headers."""
    widths = [max(len(row[column]) for row in (headers, *rows)) for column in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    rule = "  ".join("-" * width for width in widths)
    return [line(headers).rstrip(), rule, *(line(row).rstrip() for row in rows)]


def run_react(main: Callable[..., Any], *arguments: Any) -> int:
    """Run ``main(reactor, *arguments)`` in the reactor until it is done; its exit code."""
    try:
        react(main, arguments)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else EXIT_FAILURE
    return EXIT_OK  # pragma: no cover - react always exits


async def reporting_errors(reactor, main, *arguments) -> None:
    """Run ``main`` in the reactor so that a CommandError still ends as one line and a code."""
    try:
        await main(reactor, *arguments)
    except CommandError as error:
        complain(str(error))
        raise SystemExit(error.code) from None


#: Seconds a command waits for the daemon to record the reload it asked for: a
#: daemon with workers records it once every worker has reloaded, or after 30 s.
RELOAD_TIMEOUT = 35.0


def reload_daemon(storage: Path, timeout: float = RELOAD_TIMEOUT) -> None:
    """Make the daemon running on ``storage`` reload its configuration, and say how it went.

    SIGHUP to the process of ``<storage>/notifications.pid``, then wait (at most
    ``timeout`` seconds) for ``<storage>/reload.json`` to record a reload made
    since. No daemon running is one line, not an error: it reads the files when
    it starts. A refused configuration or no record in time is a
    :class:`CommandError`. (This blocks: the commands that call it run no reactor.)
    """
    pid = running_pid(storage)
    if pid is None:
        say(f"No daemon runs on {storage}: it reads the change when it starts.")
        return
    if pid == 0:
        raise CommandError(
            f"a daemon runs on {storage} but its pid file is unreadable: reload it with SIGHUP"
        )
    sent = time.time()
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        say(f"No daemon runs on {storage}: it reads the change when it starts.")
        return
    except PermissionError:
        raise CommandError(
            f"not allowed to signal the daemon (process {pid}): reload it as its user "
            f"(kill -HUP {pid})"
        ) from None
    deadline = time.monotonic() + timeout
    while True:
        record = read_reload(storage)
        if record is not None and isinstance(record.get("time"), int | float):
            if record["time"] >= sent:
                break
        if time.monotonic() > deadline:
            raise CommandError(
                f"the daemon (process {pid}) recorded no reload within {timeout:g} s: see its log"
            )
        time.sleep(0.1)
    if not record.get("ok"):
        raise CommandError(
            f"the daemon (process {pid}) refused the new configuration and keeps the one it "
            f"had: {record.get('error')}"
        )
    say(
        f"The daemon (process {pid}) reloaded its configuration "
        f"({record.get('services')} services)."
    )


def describe_failure(error: BaseException) -> str:
    text = str(error).strip()
    return text or type(error).__name__


# The broker, for the commands that talk to it ------------------------------------------


def start_connection(
    reactor, config: Config, listener: BrokerEvents | None = None
) -> defer.Deferred:
    """Connect and log in to the configured broker; fires with ``(client, channel)``."""
    d = connect(reactor, config.broker, listener=listener)
    # The TCP connection has its own timeout; this one also covers the AMQP log-in.
    d.addTimeout(config.broker.connect_timeout, reactor)
    return d


async def connected(d: defer.Deferred, config: Config):
    """The ``(client, channel)`` of :func:`start_connection`, or a :class:`CommandError`."""
    broker = config.broker
    where = broker.describe()
    try:
        return await d
    except defer.TimeoutError:
        raise CommandError(
            f"cannot reach the broker at {where}: no answer within {broker.connect_timeout:g} s"
        ) from None
    except Exception as error:
        raise CommandError(
            f"cannot reach the broker at {where}: {describe_failure(error)}"
        ) from None


async def close_connection(client) -> None:
    """Close the AMQP connection politely, giving up after two seconds."""
    try:
        await client.close(within=2)
    except Exception:  # noqa: S110 - the connection is going away anyway
        pass


_DURATION = re.compile(r"([1-9][0-9]*)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A moment: a duration before now (``90s``, ``30m``, ``2h``, ``7d``, ``1w``) or an
    ISO 8601 time (``2026-12-06T10:00:00Z``; without a zone, local time).

    Raises ValueError, with a message for the user, for anything else or a
    moment in the future.
    """
    now = now or datetime.now(UTC)
    value = text.strip()
    duration = _DURATION.fullmatch(value)
    if duration:
        moment = now - timedelta(seconds=int(duration[1]) * _UNITS[duration[2]])
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"{text!r} is not a time: give a duration before now (30m, 2h, 7d) or an "
                "ISO 8601 time (2026-12-06T10:00:00Z)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.astimezone()  # local time
    if moment > now:
        raise ValueError(f"{text!r} is in the future")
    return moment.astimezone(UTC)


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def add_timeout(parser: argparse.ArgumentParser, help: str, default: float | None = None) -> None:
    """``--timeout SECONDS``, a positive number, alike in every command that waits."""
    parser.add_argument(
        "--timeout", type=positive_float, default=default, metavar="SECONDS", help=help
    )


def gate_named(name: str, noun: str = "gate") -> str:
    """The gate called ``name``, whatever its case (``GITHUB`` is ``GitHub``).

    ``noun`` is what the command calls it in its error (``payload`` says service).
    """
    for gate in gate_names():
        if gate.lower() == name.lower():
            return gate
    raise CommandError(f"unknown {noun} {name!r} (one of {', '.join(gate_names())})", EXIT_USAGE)
