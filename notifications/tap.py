"""``twistd notifications``: options and the service tree of the daemon."""

from __future__ import annotations

import gc
import signal

from twisted.application import internet, service
from twisted.internet import endpoints, threads
from twisted.logger import Logger
from twisted.python import usage

from .clients import ClientsService, make_clients
from .clients.projects import projects_map_status
from .config import Config, ConfigError, config_path, load_config
from .dispatcher import Dispatcher
from .gates import make_gates
from .logs import use_log_observer
from .outbox import Outbox, OutboxUnavailable
from .publisher import Publisher
from .web import WebApp

log = Logger()


class Options(usage.Options):
    """Command-line options of the daemon."""

    synopsis = "[--port ENDPOINT]... [--admin-port ENDPOINT]... [--config PATH] [--json-logs]"
    longdesc = (
        "Receive webhooks on the gates and publish notifications on RabbitMQ. "
        "--port takes any Twisted endpoint string and may be given more than once. "
        "With --admin-port, the status page, /config, /health and /metrics move there "
        "and --port serves only /gate and /status. SIGHUP reloads the credentials, "
        "analyzer and token files."
    )
    optFlags = [
        ["json-logs", None, "Log one JSON object per line (twisted.logger's JSON format)."],
    ]
    optParameters = [
        [
            "config",
            "c",
            None,
            "The configuration file (default: $NOTIFICATIONS_CONFIG, else etc/notifications.toml).",
        ],
        [
            "workers",
            "w",
            1,
            "Worker processes sharing the listening sockets, each with its own outbox "
            "and broker connection (tcp: endpoints only).",
            int,
        ],
    ]

    def __init__(self):
        super().__init__()
        self["ports"] = []
        self["admin_ports"] = []

    def opt_port(self, endpoint: str) -> None:
        """A listening endpoint, e.g. tcp:8080 or tcp:8080:interface=127.0.0.1 (repeatable)."""
        self["ports"].append(endpoint)

    opt_p = opt_port

    def opt_admin_port(self, endpoint: str) -> None:
        """An endpoint for the admin surface, e.g. tcp:8081:interface=127.0.0.1 (repeatable)."""
        self["admin_ports"].append(endpoint)

    def postOptions(self) -> None:
        if not self["ports"]:
            self["ports"] = ["tcp:8080"]
        if self["workers"] < 1:
            raise usage.UsageError("--workers must be 1 or more")
        use_log_observer(self.parent, json_logs=self["json-logs"])
        path = config_path(self["config"])
        try:
            self["configuration"] = load_config(path)
        except ConfigError as error:
            # One clear line and a non-zero exit, not a usage text or a traceback.
            raise SystemExit(f"notifications: configuration error: {error}") from None


class ConfigurationReloader(service.Service):
    """Reloads the configuration on SIGHUP, keeping the old one when the new one is wrong.

    Credentials, analyzer files, Docker Hub tokens, features read per request
    and timeouts take effect at once; the broker, the storage and the
    listening endpoints need a restart (a reload that changes them says so).
    """

    log = Logger()

    def __init__(self, path, config: Config, holders: list, clients, reactor):
        self.path = path
        self.config = config
        self.holders = holders
        self.clients = clients
        self.reactor = reactor
        self._previous = None

    def startService(self) -> None:
        super().startService()
        self._previous = signal.signal(signal.SIGHUP, self._on_signal)

    def stopService(self):
        if self._previous is not None:
            signal.signal(signal.SIGHUP, self._previous)
            self._previous = None
        return super().stopService()

    def _on_signal(self, number, frame) -> None:
        self.reactor.callFromThread(self.reload)

    def reload(self):
        """Read the configuration again (in a thread: it reads several files)."""
        self.log.info("Reloading the configuration from {path}", path=str(self.path))
        d = threads.deferToThread(load_config, self.path)
        d.addCallbacks(self._apply, self._refused)
        return d

    def _refused(self, failure) -> None:
        failure.trap(ConfigError)
        self.log.error(
            "Keeping the current configuration, the new one is wrong: {error}",
            error=str(failure.value),
        )

    def _apply(self, config: Config) -> Config:
        old = self.config
        for name in ("broker", "storage_directory", "features", "max_body_size", "mailgun_key"):
            if getattr(old, name) != getattr(config, name):
                self.log.warn(
                    "The new configuration changes {name}: that takes a restart", name=name
                )
        for holder in self.holders:
            holder.config = config
        self.clients.config = config
        self.clients.projects.load(config.services)
        self.config = config
        self.log.info(
            "Configuration reloaded: {count} services, {files} files",
            count=len(config.services),
            files=len(config.files),
        )
        return config


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
    actions, and one web listener per ``--port``; with ``--workers N``, a pool of
    N worker processes sharing the listening sockets instead.

    On stop, the listeners close at once while the dispatcher finishes the
    calls in progress and drains the outbox for ``drain_timeout`` seconds.
    """
    if reactor is None:
        from twisted.internet import reactor
    config: Config = options["configuration"]
    if options["workers"] > 1:
        from .workers import WorkerPool

        return WorkerPool(
            config,
            options["ports"],
            options["admin_ports"],
            options["workers"],
            json_logs=options["json-logs"],
        )
    # Endpoints first: a wrong one must stop the start before any thread runs.
    listeners = {
        surface: [endpoint(option, description, reactor) for description in descriptions]
        for surface, option, descriptions in (
            ("public", "--port", options["ports"]),
            ("admin", "--admin-port", options["admin_ports"]),
        )
    }
    top, app = make_daemon(config, reactor)
    reactor.callWhenRunning(freeze_startup_objects)
    if listeners["admin"]:
        listen(top, listeners["public"], app.site("public"))
        listen(top, listeners["admin"], app.site("admin"))
    else:
        listen(top, listeners["public"], app.site("all"))
    return top


def freeze_startup_objects() -> None:
    """Keep what start-up built (modules, Twisted, the configuration) out of
    every later garbage collection: ``gc.freeze`` for a long-running server.

    A gate call makes a hundred or so containers (its parsed payload among
    them), so collections run every few calls, and each went over the whole
    start-up heap: 48 µs per call, 16 µs frozen, in benchmarks/components.py's
    whole-call step.
    """
    gc.collect()
    gc.freeze()


def make_daemon(config: Config, reactor) -> tuple[service.MultiService, WebApp]:
    """Every service of one daemon process but the listeners, and its web app."""
    top = service.MultiService()
    try:
        dispatcher = make_dispatcher(config, reactor)
    except OutboxUnavailable as error:
        raise SystemExit(f"notifications: storage error: {error}") from None
    dispatcher.setServiceParent(top)

    for gate in sorted(config.allow_unsigned):
        log.warn(
            "The {gate} gate accepts unsigned calls on doors without a secret "
            "(GitHub) or an hmac_key (Phabricator Herald webhooks): allow_unsigned",
            gate=gate,
        )

    clients = make_clients(config, reactor)
    ClientsService(clients).setServiceParent(top)
    gates = make_gates(config, **clients.gate_collaborators())
    app = WebApp(
        config,
        dispatcher,
        gates,
        reactor,
        service_status=lambda service: projects_map_status(clients.config, service),
    )
    ConfigurationReloader(
        config.path, config, app.config_holders(), clients, reactor
    ).setServiceParent(top)
    return top, app


def endpoint(option: str, description: str, reactor):
    """Parse a listening endpoint, or stop the start with one line saying why."""
    try:
        return endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        # IndexError: a systemd: endpoint with no socket handed over.
        raise SystemExit(f"notifications: bad {option} {description!r}: {error}") from None


def listen(top, listeners: list, site) -> None:
    """One listening service per endpoint."""
    for listener in listeners:
        internet.StreamServerEndpointService(listener, site).setServiceParent(top)
