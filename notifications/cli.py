"""The ``notifications`` command (docs/reference.rst §8): configuration tools, payloads,
projects maps, ``tail`` and ``send``.

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
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from .amqp.connection import BrokerEvents
from .clients import Clients, make_clients
from .clients.http import RemoteServiceError
from .clients.projects import cache_path, projects_map_status
from .commands import doors as door_commands
from .commands import history as history_commands
from .commands import outbox as outbox_commands
from .commands import subscriptions as subscription_commands
from .commands import tail as tail_commands
from .commands.common import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CommandError,
    close_connection,
    complain,
    connected,
    format_table,
    gate_named,
    load,
    printing_warnings,
    reporting_errors,
    run_react,
    say,
    start_connection,
)
from .config import FEATURES, Config, ConfigError, config_path, load_config
from .config import validate_files as find_config_problems
from .credentials import Service
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
from .publisher import Confirms, PublicationRefused
from .texts import SEPARATOR

#: The door the ``send`` command and Notification payloads use when none is given.
CLI_DOOR = "cli"

#: Seconds between reconnection attempts of ``tail``.
RECONNECT_DELAYS = (1, 2, 4, 8, 16, 30)


# config show ----------------------------------------------------------------


def service_status(config: Config, service: Service) -> str:
    """The status of a service as in the ``/config`` report: "" when all is well."""
    return projects_map_status(config, service)


def show_config(config: Config) -> list[str]:
    """The lines of ``config show``: what ``/config`` reports, and never a secret."""
    gates = ", ".join(gate_names()) if config.feature("Gate") else "none (the Gate feature is off)"
    broker = config.broker
    lines = [
        f"Configuration: {config.path}",
        f"Broker: {broker.describe()}, vhost {broker.vhost}, "
        f"exchange {broker.exchange}" + (", TLS" if broker.tls else ""),
        "",
        f"Gates: {gates}",
        "",
        "Features:",
        *(f"  {'✓' if config.feature(name) else '✗'} {name}" for name in FEATURES),
        "",
    ]
    rows = [
        (
            service.gate,
            service.door,
            service.instance or "ø",
            service_status(config, service) or "✓",
        )
        for service in config.services
    ]
    lines += section("Services", ("gate", "door", "instance", "status"), rows)
    rows = [(consumer.name, " ".join(consumer.patterns) or "ø") for consumer in config.consumers]
    lines += ["", *section("Consumers (GET /events)", ("name", "patterns"), rows)]
    # A subscription's URL is shown by its origin only, as in /config: its
    # path may be a secret.
    rows = [
        (subscription.name, subscription.origin, " ".join(subscription.patterns))
        for subscription in config.subscriptions
    ]
    lines += ["", *section("Subscriptions (webhooks)", ("name", "receiver", "patterns"), rows)]
    return lines


def section(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """A titled table of ``config show``, or "<title>: none"."""
    if not rows:
        return [f"{title}: none"]
    return [f"{title}:", *(f"  {line}" for line in format_table(header, rows))]


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
    gate = gate_named(args.service, noun="service")
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


# send -----------------------------------------------------------------------


class SendEvents(BrokerEvents):
    """The broker's confirms of what ``send`` publishes, tracked as the daemon does."""

    def __init__(self) -> None:
        self.confirms = Confirms()

    def broker_ack(self, message) -> None:
        self.confirms.ack(message.delivery_tag, message.multiple)

    def broker_nack(self, message) -> None:
        self.confirms.nack(message.delivery_tag, message.multiple)

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

    events = SendEvents()
    client, channel = await connected(start_connection(reactor, config, events), config)
    try:
        await channel.confirm_select()
        # The daemon's own framing: txamqp's basic_publish counts a non-ASCII
        # exchange name or message id in characters, not bytes.
        properties = message_properties(message_id)
        encoder = PublishEncoder(channel.id, config.broker.exchange, client.MAX_LENGTH, properties)
        confirmed = events.confirms.expect()
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
            await confirmed.addTimeout(timeout, reactor)
        except defer.TimeoutError:
            raise CommandError(f"no confirm from the broker within {timeout:g} s") from None
        except PublicationRefused:
            raise CommandError("the broker refused the message (nack)") from None
    finally:
        await close_connection(client)


async def send_main(reactor, config: Config, publication: Publication) -> None:
    await publish(reactor, config, publication.notification, publication.message_id)
    say(publication.notification.routing_key)


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

    tail_commands.add_commands(commands)
    history_commands.add_commands(commands)
    outbox_commands.add_commands(commands)
    door_commands.add_commands(commands)
    subscription_commands.add_commands(commands)

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
