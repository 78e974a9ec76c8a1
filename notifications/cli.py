"""The ``notifications`` command (SPEC §8): configuration tools, payloads, projects maps,
``tail`` and ``send``.

``config show`` and ``config validate`` read the configuration; ``payload``
runs a payload file through the daemon's own gate, so that what it prints
cannot drift from what the daemon publishes (a Phabricator story's projects
and a Docker Hub build failure's mail are fetched as the daemon would);
``phabricator projectsmap`` refreshes the projects map caches; ``tail`` and
``send`` are the command-line consumer and producer of the exchange.

The commands that need the broker run inside :func:`twisted.internet.task.react`;
the others never start the reactor, so they can be called in-process (tests).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from twisted.internet import defer
from twisted.internet.task import deferLater, react
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

from .clients import Clients, make_clients
from .clients.http import RemoteServiceError
from .clients.projects import cache_path, projects_map_status
from .config import FEATURES, Config, ConfigError, Service, config_path, load_config
from .config import validate_files as find_config_problems
from .gates import (
    GateCall,
    GateError,
    Outcome,
    Publication,
    gate_class,
    gate_names,
    make_gates,
    signing_gates,
)
from .notification import Notification, RoutingKeyTooLong
from .texts import SEPARATOR

PROG = "notifications"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: The door the ``send`` command and Notification payloads use when none is given.
CLI_DOOR = "cli"

#: Seconds between reconnection attempts of ``tail``.
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 30)


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


def load(args: argparse.Namespace) -> Config:
    """The configuration named by ``--config`` (or its default)."""
    return load_config(config_path(args.config))


# config show ----------------------------------------------------------------


def service_status(config: Config, service: Service) -> str:
    """The status of a service as in the ``/config`` report: "" when all is well."""
    return projects_map_status(config, service)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Columns aligned with spaces, a rule under the headers."""
    widths = [max(len(row[column]) for row in (headers, *rows)) for column in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))

    rule = "  ".join("-" * width for width in widths)
    return [line(headers).rstrip(), rule, *(line(row).rstrip() for row in rows)]


def show_config(config: Config) -> list[str]:
    """The lines of ``config show``: what ``/config`` reports, and never a secret."""
    gates = ", ".join(gate_names()) if config.feature("Gate") else "none (the Gate feature is off)"
    broker = config.broker
    lines = [
        f"Configuration: {config.path}",
        f"Broker: {broker.host}:{broker.port}, vhost {broker.vhost}, "
        f"exchange {broker.exchange}" + (", TLS" if broker.tls else ""),
        "",
        f"Gates: {gates}",
        "",
        "Features:",
        *(f"  {'✓' if config.feature(name) else '✗'} {name}" for name in FEATURES),
        "",
    ]
    if not config.services:
        return [*lines, "Services: none"]
    rows = [
        (
            service.gate,
            service.door,
            service.instance or "ø",
            service_status(config, service) or "✓",
        )
        for service in config.services
    ]
    table = format_table(("gate", "door", "instance", "status"), rows)
    return [*lines, "Services:", *(f"  {line}" for line in table)]


def command_config_show(args: argparse.Namespace) -> int:
    for line in show_config(load(args)):
        say(line)
    return EXIT_OK


def command_config_validate(args: argparse.Namespace) -> int:
    path = config_path(args.config)
    problems = find_config_problems(path)
    for problem in problems:
        say(f"{problem.path}{SEPARATOR}{problem.problem}")
    if problems:
        return EXIT_FAILURE
    files = load_config(path).files
    say(f"{path}: the configuration is valid ({len(files)} files read).")
    return EXIT_OK


# payload --------------------------------------------------------------------


def gate_name(name: str) -> str:
    """The gate called ``name``, whatever its case."""
    for gate in gate_names():
        if gate.lower() == name.lower():
            return gate
    raise CommandError(f"unknown service {name!r} (one of {', '.join(gate_names())})", EXIT_USAGE)


def content_type_of(body: bytes) -> str:
    """JSON when the body looks like it, else a form (GitHub's ``payload=``, Phabricator)."""
    if body.lstrip()[:1] in (b"{", b"["):
        return "application/json"
    return "application/x-www-form-urlencoded"


def gate_call(config: Config, gate: str, door: str, body: bytes, event: str | None) -> GateCall:
    """A call the gate accepts as if the service had made it: signed, with the door's token."""
    headers = {"content-type": content_type_of(body)}
    headers.update(gate_class(gate).call_headers(config.service(gate, door), body, event))
    return GateCall(door=door, headers=headers, body=body)


def read_payload(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise CommandError(f"{path}: {error.strerror or error}", EXIT_USAGE) from None


def payload_door(gate: str, door: str | None) -> str:
    if door:
        return door
    if gate == "Notification":
        return CLI_DOOR
    raise CommandError(f"payload: the {gate} gate needs a door (the project)", EXIT_USAGE)


def unsigned_note(config: Config, door: str) -> str | None:
    """Why the daemon would refuse an unsigned GitHub call that the command still renders."""
    service = config.service("GitHub", door)
    if (service is not None and service.secret) or "GitHub" in config.allow_unsigned:
        return None
    if service is None:
        return f"note: the daemon would answer 404: no GitHub door {door!r} is declared"
    return f"note: the daemon would answer 403: the GitHub door {door!r} has no secret"


def render_payload(
    config: Config,
    gate: str,
    door: str,
    body: bytes,
    event: str | None,
    clients: Clients | None = None,
):
    """Run the gate on the payload; the :class:`Outcome`, or a Deferred of it.

    With ``clients``, the gate fetches what the payload needs as the daemon
    does: a story's projects from Conduit, a build failure's mail from Mailgun.
    """
    # The command reads a local file: the caller is trusted, and a GitHub
    # door with no secret must render rather than be refused.
    trusting = replace(config, allow_unsigned=config.allow_unsigned | set(signing_gates()))
    collaborators = {}
    if clients is not None:
        # What the gate reads a call with, not the clients of side actions.
        collaborators = {name: getattr(clients, name) for name in gate_class(gate).clients}
    gates = make_gates(trusting, **collaborators)
    return gates[gate].process(gate_call(config, gate, door, body, event))


def reactor_running() -> bool:
    from twisted.internet import reactor

    return reactor.running


def run_until_fired(result: Any, cleanup: Callable[[], Any] | None = None) -> Any:
    """The result of a gate, running the reactor only while it is a pending Deferred.

    ``cleanup`` (closing the HTTP connections) runs once the result is there.
    """
    if not isinstance(result, defer.Deferred):
        if cleanup is not None:
            cleanup()
        return result
    fired: list[Any] = []
    result.addBoth(fired.append)
    if not fired:
        if reactor_running():
            # Called from code already inside the reactor (a test): react()
            # would stop that reactor for good.
            raise CommandError("payload: cannot wait for the network inside a running reactor")

        async def wait(reactor) -> None:
            await result
            if cleanup is not None:
                await cleanup()

        run_react(wait)
    if not fired:
        raise CommandError("interrupted")
    if isinstance(fired[0], Failure):
        fired[0].raiseException()
    return fired[0]


def print_outcome(gate: str, outcome: Outcome) -> None:
    if not outcome.publications:
        say(
            f"No notification: the {gate} gate publishes nothing for this payload "
            "(the door's analyzer configuration leaves it out)."
        )
        return
    for publication in outcome.publications:
        say(json.dumps(publication.notification.as_dict(), indent=4, ensure_ascii=False))


def command_payload(args: argparse.Namespace) -> int:
    config = load(args)
    gate = gate_name(args.service)
    door = payload_door(gate, args.door)
    if gate_class(gate).takes_event and not args.event:
        raise CommandError(f"payload: the {gate} gate needs an event (e.g. push)", EXIT_USAGE)
    body = read_payload(args.file)
    if gate == "GitHub" and (note := unsigned_note(config, door)):
        say(note, sys.stderr)
    clients = None
    if gate_class(gate).clients:
        from twisted.internet import reactor

        clients = make_clients(config, reactor)
    try:
        with printing_warnings():
            outcome = run_until_fired(
                render_payload(config, gate, door, body, args.event, clients),
                clients.http.close if clients is not None else None,
            )
    except GateError as error:
        reason = f" ({error.reason})" if error.reason else ""
        raise CommandError(
            f"the {gate} gate refuses this payload: {error.status} {error.message}{reason}"
        ) from None
    if args.event and not gate_class(gate).takes_event and args.event != outcome.event:
        say(
            f"note: the {gate} gate reads the event from the payload ({outcome.event}), "
            f"not from the command line",
            sys.stderr,
        )
    if gate == "DockerHub" and not outcome.publications:
        # The daemon would answer 503 (and Mailgun call again): the warning says why.
        raise CommandError("no notification: the build failure mail could not be fetched")
    print_outcome(gate, outcome)
    return EXIT_OK


# phabricator projectsmap ----------------------------------------------------


def print_client_warning(event: dict) -> None:
    """Print a warning of the clients (a Conduit call that failed…) on stderr."""
    namespace = event.get("log_namespace") or ""
    if namespace.startswith("notifications.clients") and event.get("log_level") in (
        LogLevel.warn,
        LogLevel.error,
        LogLevel.critical,
    ):
        complain(f"warning: {formatEvent(event)}")


@contextmanager
def printing_warnings() -> Iterator[None]:
    """While active, the clients' warnings are printed (no log is set up in a command)."""
    globalLogPublisher.addObserver(print_client_warning)
    try:
        yield
    finally:
        globalLogPublisher.removeObserver(print_client_warning)


async def projectsmap_main(reactor, config: Config) -> None:
    services = [service for service in config.services if service.gate == "Phabricator"]
    if not services:
        raise CommandError("no Phabricator instance is declared in the credentials file")
    clients = make_clients(config, reactor)
    failed = 0
    try:
        for service in services:
            try:
                names = await clients.projects.refresh(service)
            except RemoteServiceError as error:
                complain(f"{service.door}: {error}")
                failed += 1
                continue
            path = cache_path(config.storage_directory, service.door)
            say(f"{service.door} — {service.instance}: {len(names)} projects, cached in {path}")
            rows = sorted(names.items(), key=lambda item: (item[1].lower(), item[0]))
            for line in format_table(("PHID", "name"), rows):
                say(f"  {line}")
    finally:
        await clients.http.close()
    if failed:
        raise CommandError(f"{failed} of {len(services)} projects maps not refreshed")


def command_projectsmap(args: argparse.Namespace) -> int:
    config = load(args)
    with printing_warnings():
        return run_react(reporting_errors, projectsmap_main, config)


# Running in the reactor -----------------------------------------------------


def run_react(main: Callable[..., Any], *arguments: Any) -> int:
    """Run ``main(reactor, *arguments)`` in the reactor until it is done; its exit code."""
    try:
        react(main, arguments)
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else EXIT_FAILURE
    return EXIT_OK  # pragma: no cover - react always exits


def describe_failure(error: BaseException) -> str:
    text = str(error).strip()
    return text or type(error).__name__


def start_connection(reactor, config: Config, listener: Any = None) -> defer.Deferred:
    """Connect and log in to the configured broker; fires with ``(client, channel)``."""
    from .amqp.connection import connect

    d = connect(reactor, config.broker, listener=listener)
    # The TCP connection has its own timeout; this one also covers the AMQP log-in.
    d.addTimeout(config.broker.connect_timeout, reactor)
    return d


async def connected(d: defer.Deferred, config: Config):
    """The ``(client, channel)`` of :func:`start_connection`, or a :class:`CommandError`."""
    broker = config.broker
    where = f"{broker.host}:{broker.port}"
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


# tail -----------------------------------------------------------------------

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


class Tail:
    """Prints what arrives on a temporary queue bound to the exchange, reconnecting as needed."""

    def __init__(
        self, reactor, config: Config, patterns: Sequence[str], as_json: bool, count: int | None
    ):
        self.reactor = reactor
        self.config = config
        self.patterns = tuple(patterns) or ("#",)
        self.as_json = as_json
        self.count = count
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
            self._queue = await self.consume(client, channel)
            listening = True
            if self.stopped:  # stopped while binding: stop() could not close the queue
                return True
            complain(
                f"listening on {self.config.broker.exchange} at {self.config.broker.host}:"
                f"{self.config.broker.port} for {' '.join(self.patterns)} …"
            )
            while not self.stopped:
                self.show(await self._queue.get())
        except (QueueClosed, ClientClosed):
            pass
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

    async def consume(self, client, channel):
        """An exclusive, auto-deleted, server-named queue bound with each pattern."""
        declared = await channel.queue_declare(exclusive=True, auto_delete=True)
        for pattern in self.patterns:
            await channel.queue_bind(
                queue=declared.queue, exchange=self.config.broker.exchange, routing_key=pattern
            )
        reply = await channel.basic_consume(queue=declared.queue, no_ack=True)
        return await client.queue(reply.consumer_tag)

    def show(self, message) -> None:
        """Print one message; a malformed one is a warning, not the end."""
        try:
            notification = parse_notification(message.content.body)
        except MalformedMessage as error:
            complain(
                f"skipped a message that is not a notification ({message.routing_key}): {error}"
            )
            return
        if self.as_json:
            # Re-serialized compactly so that each notification is one line.
            say(json.dumps(notification, ensure_ascii=False, separators=(",", ":")))
        else:
            timestamp = message.content.properties.get("timestamp") or time.time()
            say(format_notification(notification, timestamp, self.colour))
        self.received += 1
        if self.count is not None and self.received >= self.count:
            self.stop()

    def broker_cancel(self, message) -> None:
        # The broker dropped our consumer (queue deleted): start again on a new queue.
        if self._client is not None and self._client.transport is not None:
            self._client.transport.loseConnection()


async def tail_main(reactor, config: Config, args: argparse.Namespace) -> None:
    tail = Tail(reactor, config, args.patterns, args.json, args.count)
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
    return run_react(reporting_errors, tail_main, config, args)


# send -----------------------------------------------------------------------


class Confirms:
    """Waits for the broker's ``basic.ack`` of the one message ``send`` publishes."""

    def __init__(self):
        self.confirmed = defer.Deferred()

    def broker_ack(self, message) -> None:
        if not self.confirmed.called:
            self.confirmed.callback(None)

    def broker_nack(self, message) -> None:
        if not self.confirmed.called:
            self.confirmed.errback(CommandError("the broker refused the message (nack)"))

    def broker_return(self, message) -> None:
        # Published as mandatory (the daemon's PublishEncoder sets the flag), a
        # notification no queue is bound for comes back before its ack: that is
        # the normal fate of a notification nobody listens to, so not an error.
        pass


def notification_from_args(config: Config, args: argparse.Namespace) -> Publication:
    """The :class:`Publication` the Notification gate makes of the options."""
    body: dict[str, Any] = {
        "service": args.service,
        "project": args.project,
        "group": args.group,
        "type": args.type,
        "text": args.text,
        "link": args.link,
    }
    if args.raw is not None:
        try:
            body["rawContent"] = json.loads(args.raw)
        except ValueError as error:
            raise CommandError(f"--raw is not JSON: {error}", EXIT_USAGE) from None
    raw = json.dumps(body, ensure_ascii=False).encode()
    gate = make_gates(config)["Notification"]
    try:
        outcome = gate.process(gate_call(config, "Notification", CLI_DOOR, raw, None))
    except GateError as error:
        raise CommandError(f"not a valid notification: {error.reason or error.message}") from None
    return outcome.publications[0]


async def publish(reactor, config: Config, notification: Notification, message_id: str) -> None:
    """Publish with publisher confirms; return once the broker has acknowledged it."""
    from .amqp.connection import PublishEncoder
    from .publisher import message_properties

    confirms = Confirms()
    client, channel = await connected(start_connection(reactor, config, confirms), config)
    try:
        await channel.confirm_select()
        # The daemon's own framing: txamqp's basic_publish counts a non-ASCII
        # exchange name or message id in characters, not bytes.
        properties = message_properties(message_id)
        encoder = PublishEncoder(channel.id, config.broker.exchange, client.MAX_LENGTH, properties)
        client.transport.write(
            encoder.encode(
                notification.routing_key.encode(),
                notification.to_json(),
                message_id.encode(),
                properties["timestamp"],
            )
        )
        # Not the gates' short publish_timeout: nobody is waiting on an HTTP answer here.
        timeout = config.broker.connect_timeout
        try:
            await confirms.confirmed.addTimeout(timeout, reactor)
        except defer.TimeoutError:
            raise CommandError(f"no confirm from the broker within {timeout:g} s") from None
    finally:
        await close_connection(client)


async def send_main(reactor, config: Config, publication: Publication) -> None:
    await publish(reactor, config, publication.notification, publication.message_id)
    say(publication.notification.routing_key)


async def reporting_errors(reactor, main, *arguments) -> None:
    # Inside the reactor a CommandError still ends as one line and an exit code.
    try:
        await main(reactor, *arguments)
    except CommandError as error:
        complain(str(error))
        raise SystemExit(error.code) from None


def command_send(args: argparse.Namespace) -> int:
    config = load(args)
    # Checked before connecting: a bad notification is refused without a broker.
    publication = notification_from_args(config, args)
    try:
        publication.notification.routing_key  # noqa: B018 - raises when too long
    except RoutingKeyTooLong as error:
        raise CommandError(str(error)) from None
    return run_react(reporting_errors, send_main, config, publication)


# Command line ---------------------------------------------------------------


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Tools of the notifications center: configuration, payloads, projects maps, tail, send."
        ),
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="the configuration file (default: $NOTIFICATIONS_CONFIG, else etc/notifications.toml)",
    )
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

    config = commands.add_parser("config", help="show or validate the configuration")
    config_commands = config.add_subparsers(required=True, metavar="ACTION")
    show = config_commands.add_parser("show", help="gates, features and services (no secret)")
    show.set_defaults(command=command_config_show)
    validate = config_commands.add_parser("validate", help="check every file of the configuration")
    validate.set_defaults(command=command_config_validate)

    payload = commands.add_parser(
        "payload", help="print the notification a payload file gives, as the daemon would"
    )
    payload.add_argument("service", help=f"the gate: {', '.join(gate_names())} (any case)")
    payload.add_argument("file", help="the payload, as the service posts it (JSON or form)")
    payload.add_argument("door", nargs="?", help="the door, i.e. the project (Notification: cli)")
    payload.add_argument("event", nargs="?", help="the event, for GitHub (X-GitHub-Event)")
    payload.set_defaults(command=command_payload)

    phabricator = commands.add_parser("phabricator", help="Phabricator instances")
    phabricator_commands = phabricator.add_subparsers(required=True, metavar="ACTION")
    projectsmap = phabricator_commands.add_parser(
        "projectsmap", help="refresh, print and cache each instance's projects map"
    )
    projectsmap.set_defaults(command=command_projectsmap)

    tail = commands.add_parser("tail", help="print the notifications published on the exchange")
    tail.add_argument("patterns", nargs="*", metavar="pattern", help="routing-key patterns (#)")
    tail.add_argument("--json", action="store_true", help="print each JSON body on one line")
    tail.add_argument("--count", type=positive_int, metavar="N", help="exit after N messages")
    tail.add_argument(
        "--timeout", type=positive_float, metavar="SECONDS", help="exit after that long"
    )
    tail.set_defaults(command=command_tail)

    send = commands.add_parser("send", help="publish a custom notification")
    send.add_argument("--service", required=True, help="the source service")
    send.add_argument("--project", required=True, help="the target project")
    send.add_argument("--group", required=True, help="the group inside the project")
    send.add_argument("--type", required=True, help="the notification type")
    send.add_argument("--text", default="", help="one human-readable line")
    send.add_argument("--link", default="", help="the main URL")
    send.add_argument("--raw", metavar="JSON", help="the rawContent, as JSON (default: null)")
    send.set_defaults(command=command_send)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``notifications`` command; the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    try:
        return args.command(args)
    except ConfigError as error:
        complain(str(error))
        return EXIT_USAGE
    except CommandError as error:
        complain(str(error))
        return error.code
    except KeyboardInterrupt:
        return 130
