"""The status page: ``GET /``, its JSON feed ``GET /status.json`` and ``/static/…``.

The page is one static HTML file with a stylesheet and a script, all served
by the daemon (no build step, no CDN): the script polls ``/status.json``
every two seconds and draws the gates, the broker state, the outbox and the
last notifications accepted. The files are read once, when the site is made.

Every answer carries a strict Content-Security-Policy (``default-src
'self'``: no inline script or style, nothing from elsewhere), and the script
builds the page with ``textContent`` only, so that a notification's text or
link can never become markup.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from importlib import resources

from twisted.internet import defer
from twisted.web import server
from twisted.web.pages import notFound
from twisted.web.resource import Resource

from . import __version__
from .config import Config
from .gates import gate_names
from .http import Leaf
from .refusals import DoorActivity

#: How many accepted notifications the status page shows.
RECENT = 20

#: The files of ``notifications/static/`` and their content types.
STATIC_TYPES = {
    ".html": b"text/html; charset=utf-8",
    ".js": b"text/javascript; charset=utf-8",
    ".css": b"text/css; charset=utf-8",
    ".svg": b"image/svg+xml",
}

SECURITY_HEADERS = {
    b"content-security-policy": b"default-src 'self'",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"x-frame-options": b"DENY",
}


def _secure(request, content_type: bytes, cache: bytes = b"no-cache") -> None:
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"cache-control", cache)
    for name, value in SECURITY_HEADERS.items():
        request.setHeader(name, value)


def load_static() -> dict[str, tuple[bytes, bytes]]:
    """The files of ``notifications/static/``: ``{name: (content type, content)}``."""
    files = {}
    for entry in resources.files(__package__).joinpath("static").iterdir():
        suffix = "." + entry.name.rpartition(".")[2]
        if entry.is_file() and suffix in STATIC_TYPES:
            files[entry.name] = (STATIC_TYPES[suffix], entry.read_bytes())
    return files


class StaticFile(Leaf):
    """One file held in memory."""

    def __init__(self, content_type: bytes, content: bytes):
        super().__init__()
        self.content_type = content_type
        self.content = content

    def render_GET(self, request):
        _secure(request, self.content_type)
        return self.content


class StaticFiles(Leaf):
    """``/static/<name>``: the page's script, stylesheet and icon."""

    def __init__(self, files: dict[str, tuple[bytes, bytes]]):
        super().__init__()
        for name, (content_type, content) in files.items():
            self.putChild(name.encode(), StaticFile(content_type, content))

    def render(self, request):
        return notFound().render(request)


class RecentSource:
    """Where the status page's last notifications come from.

    The archive's (:class:`~notifications.archive.RecentNotifications`) when it
    is on and readable: the same list on every worker and instance, and after
    a restart. Else the calls this process accepted (``local``, newest last).
    """

    def __init__(self, local: Iterable[dict], archive=None):
        self.local = local
        self.archive = archive

    def entries(self) -> defer.Deferred:
        """Fires with the entries, newest first, and where they come from: ``archive``
        or ``process`` (also when the archive cannot be read now)."""
        local = (list(reversed(list(self.local))), "process")
        if self.archive is None or not self.archive.available:
            return defer.succeed(local)
        d = self.archive.read()
        d.addCallbacks(lambda entries: (entries, "archive"), lambda _: local)
        return d


class StatusJSON(Leaf):
    """``GET /status.json``: what the status page shows (never a secret)."""

    def __init__(
        self,
        config: Config,
        dispatcher,
        recent: RecentSource,
        reactor,
        activity=None,
        events=None,
        subscriptions=None,
    ):
        super().__init__()
        self.config = config
        self.dispatcher = dispatcher
        self.recent = recent
        self.reactor = reactor
        self.activity = activity
        self.events = events
        self.subscriptions = subscriptions

    def render_GET(self, request):
        outbox = self.dispatcher.report()
        outbox.addErrback(lambda _: self.dispatcher.status() | UNREADABLE)
        d = defer.gatherResults([outbox, self.recent.entries()])

        def answer(results) -> None:
            outbox, recent = results
            report = status_report(
                self.config,
                self.dispatcher,
                recent,
                self.reactor.seconds(),
                outbox,
                self.activity,
            )
            report.update(readers_report(self.config, self.events, self.subscriptions))
            if not request._disconnected:
                _secure(request, b"application/json", cache=b"no-store")
                request.write(json.dumps(report, ensure_ascii=False).encode())
                request.finish()

        d.addCallback(answer)
        return server.NOT_DONE_YET


#: What the outbox figures of an unreadable outbox add.
UNREADABLE = {"oldest_age": None, "error": "outbox unreadable"}


def status_report(
    config: Config,
    dispatcher,
    recent: tuple[list[dict], str],
    now: float,
    outbox: dict,
    activity: DoorActivity | None = None,
) -> dict:
    """The status page's data: gates, broker, outbox, last notifications (newest first,
    and where they come from), and each door's last call and refusals of the last
    hour (reference §2.6)."""
    entries, source = recent
    doors = []
    undeclared = []
    if activity is not None:
        doors = [
            {
                "gate": service.gate,
                "door": service.door,
                **activity.door(service.gate, service.door),
            }
            for service in config.services
        ]
        undeclared = activity.undeclared()
    return {
        "version": __version__,
        "now": round(now, 3),
        "exchange": config.broker.exchange,
        "gates": {"enabled": config.feature("Gate"), "names": list(gate_names())},
        "config": config.feature("GetConfig"),
        "broker": dispatcher.publisher.status(),
        "outbox": outbox,
        "recent": entries,
        "recentFrom": source,
        "doors": doors,
        "undeclaredDoors": undeclared,
    }


def readers_report(config: Config, events=None, subscriptions=None) -> dict:
    """The event streams and the outgoing webhooks, as the status page shows them."""
    figures = subscriptions.figures() if subscriptions is not None else {}
    return {
        "events": events.figures() if events is not None else None,
        "subscriptions": [
            {
                "name": subscription.name,
                "receiver": subscription.origin,
                **figures[subscription.name].report(),
            }
            for subscription in config.subscriptions
            if subscription.name in figures
        ],
    }


class Dashboard(Resource):
    """``/``: the status page, the root of the site (the other children are put on it).

    ``status`` is the ``/status.json`` the page reads.
    """

    def __init__(self, status: StatusJSON):
        super().__init__()
        files = load_static()
        _, self.page = files.pop("index.html")
        self.putChild(b"status.json", status)
        self.putChild(b"static", StaticFiles(files))

    def getChild(self, path, request):
        if path == b"":
            return self
        return notFound()

    def render_GET(self, request):
        _secure(request, STATIC_TYPES[".html"])
        return self.page
