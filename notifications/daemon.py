"""One daemon process, built from a configuration: its services and its web app.

``twistd notifications`` (:mod:`notifications.tap`) and each worker of
``--workers`` (:mod:`notifications.workers`) build their process here:

- :class:`~notifications.daemonfiles.DaemonFiles` (the pid file, the reload
  record) in the process that answers signals;
- the :class:`~notifications.delivery.DeliveryService` (outbox, publisher,
  dispatcher);
- the :class:`~notifications.clients.ClientsService` (the HTTP clients of the
  side actions);
- the :class:`~notifications.consumer.ConsumerConnection`, the reading
  connection, and what reads over it: the archive's last notifications, the
  :class:`~notifications.events.EventStreams` of ``GET /events`` and the
  :class:`~notifications.subscriptions.Subscriptions` (outgoing webhooks);
- the :class:`ConfigurationReloader` (SIGHUP);
- the web app, whose sites the caller puts on its listening ports.

Building opens nothing, connects nothing and starts no thread: twistd may
fork after ``makeService``. Each service does its work in ``startService``.
"""

from __future__ import annotations

import gc
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

from twisted.application import internet, service
from twisted.internet import endpoints, threads
from twisted.logger import Logger

from .archive import RecentNotifications
from .clients import Clients, ClientsService, make_clients
from .clients.projects import projects_map_status
from .config import Config, ConfigError, load_config
from .consumer import ConsumerConnection
from .credentials import describe_previous_secrets
from .daemonfiles import DaemonFiles
from .delivery import DeliveryService, make_delivery
from .events import EventStreams
from .gates import make_gates
from .outbox import OutboxUnavailable
from .subscriptions import Subscriptions
from .web import WebApp

log = Logger()

#: Settings a reload cannot change in a running process: a reload that
#: changes them says they take effect at the next start.
AT_NEXT_START = (
    "broker",
    "storage_directory",
    "synchronous",
    "max_bytes",
    "features",
    "mailgun_key",
    "mailgun_hosts",
    "dockerhub_base_url",
    "archive",
    "subscriptions",
)

#: Features that shape the resource tree (the others are read per request).
TREE_FEATURES = ("Gate", "GetConfig")


def _differs(name: str, old: Config, new: Config) -> bool:
    if name == "features":
        return any(old.feature(feature) != new.feature(feature) for feature in TREE_FEATURES)
    return getattr(old, name) != getattr(new, name)


class ConfigurationReloader(service.Service):
    """Reloads the configuration on SIGHUP, keeping the old one when the new one is wrong.

    Every setting a running process can take is applied at once (each by one
    of ``appliers``); the others (:data:`AT_NEXT_START`) are named in the
    reload's log line as taking effect at the next start. ``reported`` is
    called with the outcome: ``(ok, error, services)``.
    """

    log = Logger()

    def __init__(
        self,
        path: Path,
        config: Config,
        appliers: Sequence[Callable[[Config], object]],
        reactor,
        reported: Callable[[bool, str | None, int | None], object] | None = None,
        load: Callable[[Path], Config] = load_config,
    ):
        self.path = path
        self.config = config
        self.appliers = list(appliers)
        self.reactor = reactor
        self.reported = reported
        #: Reads the configuration as this process runs it (a worker's has its own storage).
        self.load = load
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
        d = threads.deferToThreadPool(
            self.reactor, self.reactor.getThreadPool(), self.load, self.path
        )
        d.addCallbacks(self._apply, self._refused)
        return d

    def _refused(self, failure) -> None:
        failure.trap(ConfigError)
        error = str(failure.value)
        self.log.error(
            "Keeping the current configuration, the new one is wrong: {error}",
            error=error,
            reload_ok=False,
        )
        if self.reported is not None:
            self.reported(False, error, None)

    def _apply(self, config: Config) -> Config:
        old = self.config
        later = [name for name in AT_NEXT_START if _differs(name, old, config)]
        for apply in self.appliers:
            apply(config)
        self.config = config
        changed = [
            field.name
            for field in fields(Config)
            if field.name not in ("path", "files", "features", *later)
            and getattr(old, field.name) != getattr(config, field.name)
        ]
        if old.feature("ActionsReport") != config.feature("ActionsReport"):
            changed.append("features (ActionsReport)")
        self.log.info(
            "Configuration reloaded: {count} services, {files} files; "
            "applied now: {applied}; at the next start: {later}",
            count=len(config.services),
            files=len(config.files),
            applied=", ".join(changed) or "nothing changed",
            later=", ".join(later) or "nothing",
            reload_ok=True,
        )
        if later:
            self.log.warn(
                "The new configuration changes {names}: that takes a restart",
                names=", ".join(later),
            )
        log_previous_secrets(self.log, config, self.reactor.seconds())
        if self.reported is not None:
            self.reported(True, None, len(config.services))
        return config


def log_previous_secrets(logger: Logger, config: Config, now: float) -> None:
    """Say which previous secrets of a rotation are still accepted, and until when,
    and which have expired (reference §7.8)."""
    phrases = describe_previous_secrets(config.services, now)
    if phrases:
        logger.info("Secrets being rotated: {previous}", previous="; ".join(phrases))


#: Containers allocated (net) before a collection of the youngest generation.
GC_YOUNG_THRESHOLD = 10_000


def freeze_startup_objects() -> None:
    """Keep what start-up built (modules, Twisted, the configuration) out of
    every later garbage collection: ``gc.freeze`` for a long-running server.

    A gate call makes a hundred or so containers (its parsed payload among
    them), so collections run every few calls, and each went over the whole
    start-up heap: 48 µs per call, 16 µs frozen, in benchmarks/components.py's
    whole-call step. The youngest generation is also collected less often
    (every :data:`GC_YOUNG_THRESHOLD` containers rather than 700): each
    collection went over the payloads of every call in flight, and promoted
    them to older generations that were then collected over and over
    (``run.py compare``: 0.97 × the CPU per call at 16 and 64 connections).
    Most of a call's containers are freed by their reference counts, so
    memory does not grow with it.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)


@dataclass
class Daemon:
    """The services of one daemon process, and the web app its ports serve."""

    top: service.MultiService
    app: WebApp
    delivery: DeliveryService
    clients: Clients
    reloader: ConfigurationReloader
    consumer: ConsumerConnection
    subscriptions: Subscriptions
    events: EventStreams


def build_daemon(
    config: Config,
    reactor,
    files: DaemonFiles | None = None,
    deliveries: Path | None = None,
    load: Callable[[Path], Config] = load_config,
) -> Daemon:
    """Every service of one daemon process but the listeners, and its web app.

    ``files``: the process answers signals (a single daemon, not a worker):
    it holds the pid file and records reloads. ``deliveries``: the deliveries
    database shared by the workers. ``load``: how a reload reads the
    configuration, as ``config`` was read.
    """
    top = service.MultiService()
    if files is not None:
        files.check()
        files.setServiceParent(top)
    delivery = make_delivery(config, reactor, deliveries=deliveries)
    try:
        # Checked now, before twistd forks, so that a wrong storage stops the
        # start with one line; opened in startService.
        delivery.outbox.check()
    except OutboxUnavailable as error:
        raise SystemExit(f"notifications: storage error: {error}") from None
    delivery.setServiceParent(top)

    for gate in sorted(config.allow_unsigned):
        log.warn(
            "The {gate} gate accepts unsigned calls on doors without a secret "
            "(GitHub) or an hmac_key (Phabricator Herald webhooks): allow_unsigned",
            gate=gate,
        )

    log_previous_secrets(log, config, reactor.seconds())
    clients = make_clients(config, reactor)
    ClientsService(clients).setServiceParent(top)
    gates = make_gates(config, clock=reactor, **clients.gate_collaborators())
    consumer = ConsumerConnection(config.broker, reactor)
    recent = None
    if config.archive.enabled:
        recent = RecentNotifications(config.archive.queue, reactor)
        consumer.add_user(recent)
    consumer.setServiceParent(top)
    subscriptions = Subscriptions(config, reactor)
    consumer.add_user(subscriptions)
    subscriptions.setServiceParent(top)
    events = EventStreams(config, reactor)
    consumer.add_user(events)
    events.setServiceParent(top)
    app = WebApp(
        config,
        delivery.dispatcher,
        gates,
        reactor,
        service_status=lambda service: projects_map_status(clients.config, service),
        archive_recent=recent,
        events=events,
        subscriptions=subscriptions,
    )
    reloader = ConfigurationReloader(
        config.path,
        config,
        [
            app.reconfigure,
            clients.reconfigure,
            delivery.reconfigure,
            subscriptions.reconfigure,
            events.reconfigure,
        ],
        reactor,
        reported=files.reloaded if files is not None else None,
        load=load,
    )
    reloader.setServiceParent(top)
    return Daemon(top, app, delivery, clients, reloader, consumer, subscriptions, events)


def endpoint(option: str, description: str, reactor):
    """Parse a listening endpoint, or stop the start with one line saying why."""
    try:
        return endpoints.serverFromString(reactor, description)
    except (ValueError, KeyError, TypeError, IndexError) as error:
        # IndexError: a systemd: endpoint with no socket handed over.
        raise SystemExit(f"notifications: bad {option} {description!r}: {error}") from None


def listen(top: service.MultiService, listeners: list, site) -> None:
    """One listening service per endpoint."""
    for listener in listeners:
        internet.StreamServerEndpointService(listener, site).setServiceParent(top)
