"""``twistd notifications``: options and the service tree of the daemon."""

from __future__ import annotations

import sys

from twisted.application import service, strports
from twisted.logger import Logger
from twisted.python import usage

from .clients import ClientsService, make_clients
from .clients.projects import projects_map_status
from .config import Config, ConfigError, config_path, load_config
from .dispatcher import Dispatcher
from .gates import make_gates
from .outbox import Outbox, OutboxUnavailable
from .publisher import Publisher
from .web import make_site

log = Logger()


class Options(usage.Options):
    """Command-line options of the daemon."""

    synopsis = "[--port ENDPOINT]... [--config PATH]"
    longdesc = (
        "Receive webhooks on the gates and publish notifications on RabbitMQ. "
        "--port takes any Twisted endpoint string and may be given more than once."
    )
    optParameters = [
        [
            "config",
            "c",
            None,
            "The configuration file (default: $NOTIFICATIONS_CONFIG, else etc/notifications.toml).",
        ],
    ]

    def __init__(self):
        super().__init__()
        self["ports"] = []

    def opt_port(self, endpoint: str) -> None:
        """A listening endpoint, e.g. tcp:8080 or tcp:8080:interface=127.0.0.1 (repeatable)."""
        self["ports"].append(endpoint)

    opt_p = opt_port

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = ["tcp:8080"]
        path = config_path(self["config"])
        try:
            self["configuration"] = load_config(path)
        except ConfigError as error:
            # One clear line and a non-zero exit, not a usage text or a traceback.
            raise SystemExit(f"notifications: configuration error: {error}") from None


def make_dispatcher(config: Config, reactor) -> Dispatcher:
    """The outbox, the publisher and the dispatcher between them."""
    outbox = Outbox(
        config.storage_directory,
        reactor,
        synchronous=config.synchronous,
        max_messages=config.max_messages,
        max_bytes=config.max_bytes,
        dedup_window=config.dedup_window,
    )
    publisher = Publisher(config.broker, reactor)
    return Dispatcher(outbox, publisher, reactor, drain_timeout=config.drain_timeout)


def makeService(options: Options, reactor=None) -> service.MultiService:
    """The daemon: the dispatcher (outbox and publisher), the HTTP clients of the side
    actions, and one web listener per ``--port``.

    On stop, the listeners close at once while the dispatcher finishes the
    calls in progress and drains the outbox for ``drain_timeout`` seconds.
    """
    if reactor is None:
        from twisted.internet import reactor
    config: Config = options["configuration"]
    top = service.MultiService()

    try:
        dispatcher = make_dispatcher(config, reactor)
    except OutboxUnavailable as error:
        raise SystemExit(f"notifications: storage error: {error}") from None
    dispatcher.setServiceParent(top)

    for gate in sorted(config.allow_unsigned):
        log.warn(
            "The {gate} gate accepts unsigned calls on doors without a secret (allow_unsigned)",
            gate=gate,
        )

    clients = make_clients(config, reactor)
    ClientsService(clients).setServiceParent(top)
    gates = make_gates(config, **clients.gate_collaborators())
    site = make_site(
        config,
        dispatcher,
        gates,
        reactor,
        service_status=lambda service: projects_map_status(config, service),
    )
    for description in options["ports"]:
        try:
            listener = strports.service(description, site, reactor=reactor)
        except (ValueError, KeyError, TypeError) as error:
            sys.stderr.write(f"notifications: bad --port {description!r}: {error}\n")
            raise SystemExit(1) from None
        listener.setServiceParent(top)
    return top
