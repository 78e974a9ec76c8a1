"""``twistd notifications``: the options, and the service tree of the daemon.

The daemon itself is built by :mod:`notifications.daemon`; ``--workers``
processes by :mod:`notifications.workers`.
"""

from __future__ import annotations

from twisted.application import service
from twisted.python import usage

from .config import Config, ConfigError, config_path, load_config
from .daemon import build_daemon, endpoint, freeze_startup_objects, listen
from .daemonfiles import DaemonFiles
from .logs import use_log_observer


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


def makeService(options: Options, reactor=None) -> service.MultiService:
    """The daemon (see :mod:`notifications.daemon`) and one web listener per
    ``--port``; with ``--workers N``, a pool of N worker processes sharing the
    listening sockets instead.

    Nothing is opened or started here (twistd forks afterwards): each service
    starts in ``startService``. On stop, the listeners close at once while
    the delivery service finishes the calls in progress and drains the outbox
    for ``drain_timeout`` seconds.
    """
    if reactor is None:
        from twisted.internet import reactor
    config: Config = options["configuration"]
    files = DaemonFiles(config.storage_directory, reactor)
    if options["workers"] > 1:
        from .workers import WorkerPool

        files.check()
        top = service.MultiService()
        files.setServiceParent(top)
        WorkerPool(
            config,
            options["ports"],
            options["admin_ports"],
            options["workers"],
            files=files,
        ).setServiceParent(top)
        return top
    # Endpoints first: a wrong one must stop the start before anything else.
    listeners = {
        surface: [endpoint(option, description, reactor) for description in descriptions]
        for surface, option, descriptions in (
            ("public", "--port", options["ports"]),
            ("admin", "--admin-port", options["admin_ports"]),
        )
    }
    daemon = build_daemon(config, reactor, files=files)
    reactor.callWhenRunning(freeze_startup_objects)
    if listeners["admin"]:
        listen(daemon.top, listeners["public"], daemon.app.site("public"))
        listen(daemon.top, listeners["admin"], daemon.app.site("admin"))
    else:
        listen(daemon.top, listeners["public"], daemon.app.site("all"))
    return daemon.top
