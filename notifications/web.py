"""The HTTP surface: ``/``, ``/status``, ``/config`` and the ``/gate`` tree (docs/reference.rst §2).

A gate call goes one straight way: the door resource (or, for the common
call, the short path of :mod:`notifications.gatepath`) gives the request to
:class:`CallHandler`, which turns it into a
:class:`~notifications.gates.GateCall`; the gate checks and renders it, the
dispatcher makes each notification durable in the outbox and publishes it,
the side actions run, and the actions report is the answer.
"""

from __future__ import annotations

import random
from collections import deque
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import server
from twisted.web.http import combinedLogFormatter
from twisted.web.pages import notFound
from twisted.web.resource import Resource

from . import refusals
from .config import Config
from .dashboard import RECENT, Dashboard, RecentSource, StatusJSON
from .events import EventsResource
from .gatepath import GateCallSite
from .gates import Gate, GateCall, GateError, Outcome, gate_class, gate_names
from .gates.base import BAD_REQUEST
from .http import (
    ALIVE,
    INTERNAL_ERROR,
    PAYLOAD_TOO_LARGE,
    POST_ONLY,
    SHUTTING_DOWN,
    TOO_MANY_CALLS,
    UNSUPPORTED_MEDIA_TYPE,
    GateRequest,
    GateSite,
    Leaf,
)
from .jsonutil import dumps
from .metrics import Metrics
from .notification import RoutingKeyTooLong
from .openapi import OpenAPIResource
from .outbox import Duplicate, OutboxError
from .refusals import DoorActivity
from .report import PUBLISHED, QUEUED, REQUEST_ID_BYTES, amqp_action, make_report, report_status


def _plain(request, status: int, body: str) -> bytes:
    return _answer_with(request, status, b"text/plain; charset=utf-8", body.encode())


def _json(request, status: int, value: Any) -> bytes:
    return _answer_with(request, status, b"application/json", dumps(value))


def _answer_with(request, status: int, content_type: bytes, body: bytes) -> bytes:
    # The length too: an answer written later (not returned by render) would
    # otherwise go out chunked, framing and all, for a body known whole.
    request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    request.setHeader(b"content-length", b"%d" % len(body))
    return body


class PublicRoot(Leaf):
    """The root of the public port when the admin surface is elsewhere: nothing to see."""

    def render(self, request):
        return notFound().render(request)


class StatusResource(Leaf):
    """``GET /status``: monitoring probes depend on this exact body."""

    isLeaf = False

    def render_GET(self, request):
        return _plain(request, 200, ALIVE)


class ConfigResource(Leaf):
    """``GET /config``: the configuration report, never a secret (reference §7)."""

    def __init__(self, config: Config, service_status, activity: DoorActivity | None = None):
        super().__init__()
        self.config = config
        self.service_status = service_status
        self.activity = activity

    def render_GET(self, request):
        report = config_report(self.config, self.service_status, self.activity)
        return _json(request, 200, report)


def config_report(config: Config, service_status, activity: DoorActivity | None = None) -> dict:
    """The ``/config`` report: gates, features, services, consumers and subscriptions,
    without their secrets (a subscription's URL is only its origin: its path may be
    one); with ``activity``, each door's last call and refusals of the last hour, and
    the doors not declared that refused calls lately (reference §7.6)."""
    report: dict[str, Any] = {
        "gates": list(gate_names()) if config.feature("Gate") else [],
        "features": [
            {"name": name, "enabled": enabled} for name, enabled in config.features.items()
        ],
        "services": [
            {
                "gate": service.gate,
                "door": service.door,
                "instance": service.instance,
                "status": service_status(service),
                **(activity.door(service.gate, service.door) if activity is not None else {}),
            }
            for service in config.services
        ],
        "consumers": [
            {"name": consumer.name, "patterns": list(consumer.patterns)}
            for consumer in config.consumers
        ],
        "subscriptions": [
            {
                "name": subscription.name,
                "receiver": subscription.origin,
                "patterns": list(subscription.patterns),
                "allowPrivate": subscription.allow_private,
                "initialDelay": subscription.initial_delay,
                "maxDelay": subscription.max_delay,
                "maxAttempts": subscription.max_attempts,
            }
            for subscription in config.subscriptions
        ],
    }
    if activity is not None:
        report["undeclaredDoors"] = activity.undeclared()
    return report


class HealthResource(Leaf):
    """``GET /health``: broker state and outbox figures, as JSON."""

    def __init__(self, dispatcher):
        super().__init__()
        self.dispatcher = dispatcher

    def render_GET(self, request):
        d = self.dispatcher.report()

        def answer(outbox: dict) -> None:
            if not request._disconnected:
                request.write(_json(request, 200, health_report(self.dispatcher, outbox)))
                request.finish()

        def failed(failure) -> None:
            if not request._disconnected:
                request.write(
                    _json(request, 503, {"status": "error", "error": "outbox unreadable"})
                )
                request.finish()

        d.addCallbacks(answer, failed)
        return server.NOT_DONE_YET


def health_report(dispatcher, outbox: dict) -> dict:
    """Broker state (connected or not, to which node, since when), the outbox figures,
    and whether notifications are archived."""
    publisher = dispatcher.publisher
    broker = publisher.status()
    return {
        "status": "ok" if broker["connected"] else "degraded",
        "broker": broker,
        "outbox": outbox,
        "archive": publisher.archive.state.status() if publisher.archive else ARCHIVE_OFF,
    }


#: ``/health``'s archive when the publisher keeps none (a test's).
ARCHIVE_OFF = {"enabled": False, "queue": "", "on": False, "error": None}


class GateTree(Resource):
    """``/gate``: one child per gate, case-sensitive."""

    def __init__(self, gates: dict[str, Resource]):
        super().__init__()
        self.gates = gates

    def getChild(self, path, request):
        resource = self.gates.get(path.decode("utf-8", "replace"))
        return resource if resource is not None else notFound()

    def render(self, request):
        return notFound().render(request)


class GateResource(Resource):
    """``/gate/<Gate>/``: GET says to POST; each door is a :class:`DoorResource`."""

    def __init__(self, gate: Gate, handler: CallHandler):
        super().__init__()
        self.gate = gate
        self.handler = handler

    def getChild(self, path, request):
        if request.postpath:
            return notFound()
        if path == b"":
            return self
        try:
            door = path.decode("utf-8")
        except UnicodeDecodeError:
            return notFound()
        return DoorResource(self.gate, door, self.handler)

    def render(self, request):
        # Only a GET (or HEAD) deserves the "use POST" message here: a POST
        # without a door is a wrong address.
        if request.method in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"POST")
            return _plain(request, 405, POST_ONLY)
        return notFound().render(request)


class DoorResource(Resource):
    """``/gate/<Gate>/<door>``: POST processes a payload."""

    isLeaf = True

    def __init__(self, gate: Gate, door: str, handler: CallHandler):
        super().__init__()
        self.gate = gate
        self.door = door
        self.handler = handler

    def render(self, request):
        if request.method == b"POST":
            return self.render_POST(request)
        request.setHeader(b"allow", b"POST")
        return _plain(request, 405, POST_ONLY)

    def render_POST(self, request):
        return self.handler.handle(self.gate, self.door, request)


def _content_type(request) -> str:
    value = request.getHeader(b"content-type") or b""
    return value.split(b";", 1)[0].strip().lower().decode("latin-1")


def accepts(gate: Gate, content_type: str) -> bool:
    """Whether a gate reads bodies of this type (415 otherwise): the gate says."""
    return gate.accepts(content_type)


def _query(request) -> dict[str, str]:
    # From the URL only: request.args also holds the fields of a form body.
    query = request.uri.partition(b"?")[2].decode("latin-1")
    if not query:
        return {}
    return dict(parse_qsl(query, keep_blank_values=True, encoding="utf-8", errors="replace"))


class _Call:
    """One gate call between its outcome and its report."""

    __slots__ = ("created", "door", "entries", "outcome", "request_id", "side_actions")

    def __init__(self, outcome: Outcome, door: str, created: int, request_id: str, entries):
        self.outcome = outcome
        self.door = door
        self.created = created
        self.request_id = request_id
        self.entries = entries
        self.side_actions: list[defer.Deferred] | None = None

    def start_side_actions(self) -> None:
        """Start the side actions (once): beside the publication, never after it, so that
        a slow remote service never delays a notification; not for a duplicate."""
        if self.side_actions is None:
            self.side_actions = [defer.maybeDeferred(side) for side in self.outcome.side_actions]


class CallHandler:
    """Runs a gate call from the request to the actions report."""

    log = Logger()

    def __init__(
        self,
        config: Config,
        dispatcher,
        reactor,
        metrics: Metrics | None = None,
        activity: DoorActivity | None = None,
    ):
        self.config = config
        self.dispatcher = dispatcher
        self.reactor = reactor
        self.metrics = metrics
        #: The last notifications accepted, newest last (for the status page).
        self.recent: deque[dict] = deque(maxlen=RECENT)
        #: Each door's last call and refusals (for /config and the status page).
        self.activity = activity
        # The class's Logger makes a new Logger at each ``self.log``: this
        # handler's own, made once, logs the same (a line per call).
        self.log = self.log

    @property
    def exchange(self) -> str:
        return self.dispatcher.publisher.exchange

    def handle(self, gate: Gate, door: str, request) -> int | bytes:
        if not self.dispatcher.running:
            self.refused(gate.name, door, 503, refusals.SHUTTING_DOWN)
            request.setHeader(b"retry-after", b"5")
            return _plain(request, 503, SHUTTING_DOWN)
        if self.dispatcher.calls_in_progress >= self.config.max_in_progress:
            # Past this many calls at once, answer at once rather than queue
            # without bound: callers retry, and memory stays bounded.
            request.setHeader(b"retry-after", b"1")
            self._log_call(
                gate.name,
                door,
                None,
                503,
                "too many calls in progress",
                request,
                refusals.TOO_MANY_CALLS,
            )
            return _plain(request, 503, TOO_MANY_CALLS)
        body = request.content.read()
        if len(body) > self.config.max_body_size:
            self._log_call(
                gate.name, door, None, 413, "body too large", request, refusals.BODY_TOO_LARGE
            )
            return _plain(request, 413, PAYLOAD_TOO_LARGE)
        content_type = _content_type(request)
        if not accepts(gate, content_type):
            self._log_call(
                gate.name,
                door,
                None,
                415,
                f"content type {content_type!r}",
                request,
                refusals.UNSUPPORTED_MEDIA_TYPE,
            )
            return _plain(
                request,
                415,
                f"{UNSUPPORTED_MEDIA_TYPE}\nThe {gate.name} gate takes JSON"
                + (" or a form." if gate.takes_form else ".")
                + "\n",
            )
        call = GateCall(
            door=door, headers=request.first_headers(), body=body, query=_query(request)
        )
        request.call_started = self.reactor.seconds()
        request.request_id = _request_id()
        request.setHeader(b"x-request-id", request.request_id.encode())
        self.dispatcher.call_started()
        d = self._processed(gate, call, door, request.request_id)
        d.addBoth(self._settled, request, gate, door)
        return server.NOT_DONE_YET

    def _processed(self, gate: Gate, call: GateCall, door: str, request_id: str):
        """The call's ``(outcome, report)``, as a Deferred.

        The gate and :meth:`run` are called directly rather than through
        ``maybeDeferred`` and a callback: when the gate answers at once (most
        calls), the Deferred of the publication is then the call's own, with
        no other Deferred chained in front of it (measured, per call).
        """
        try:
            outcome = gate.process(call)
            if isinstance(outcome, defer.Deferred):
                return outcome.addCallback(self.run, door, request_id)
            result = self.run(outcome, door, request_id)
        except Exception:
            return defer.fail()
        return result if isinstance(result, defer.Deferred) else defer.succeed(result)

    def _settled(self, result, request, gate: Gate, door: str) -> None:
        """The call's end: answered, refused, or a 500 when either fails.

        One callback rather than a chain of three (answer or refusal, crash,
        the count of calls in progress): this runs for every call.
        """
        try:
            if isinstance(result, Failure):
                self._refused(result, request, gate, door)
            else:
                self._answer(result, request, gate, door)
        except Exception:
            self._crashed(Failure(), request, gate, door)
        finally:
            self.dispatcher.call_finished()

    def run(self, outcome: Outcome, door: str, request_id: str = "") -> defer.Deferred:
        """Store and publish the notifications, run the side actions, build the report.

        Fires with ``(outcome, report)``. The side actions start once the
        notifications are stored, beside their publication, so that a slow
        remote service never delays a notification. (Plain callbacks rather
        than inlineCallbacks: this runs for every call, and its Deferreds were
        a measured part of a call's time.)
        """
        try:
            keys = [publication.notification.routing_key for publication in outcome.publications]
        except RoutingKeyTooLong as error:
            raise GateError(400, BAD_REQUEST, str(error), refusals.ROUTING_KEY_TOO_LONG) from None
        created = int(self.reactor.seconds())
        if not keys:
            return self._report([], _Call(outcome, door, created, request_id, []))
        entries = [
            (publication.message_id, key, publication.notification.to_json())
            for publication, key in zip(outcome.publications, keys, strict=True)
        ]
        # Without a connection (or with a broker that stopped confirming) no
        # confirm can come soon: answer "queued" at once rather than make every
        # caller wait during an outage.
        timeout = self.config.publish_timeout
        if not self.dispatcher.publisher.connected or self.dispatcher.stalled(timeout):
            timeout = 0
        call = _Call(outcome, door, created, request_id, entries)
        d = self.dispatcher.deliver(
            entries, outcome.delivery or None, timeout, accepted=call.start_side_actions
        )
        return d.addCallbacks(self._delivered, self._not_delivered, (call,), None, (call,))

    def _delivered(self, confirmed: list[bool], call: _Call):
        publications = []
        for publication, entry, ok in zip(
            call.outcome.publications, call.entries, confirmed, strict=True
        ):
            self._remember(publication.notification, entry, call.created)
            publications.append(
                amqp_action(self.exchange, entry[1], status=PUBLISHED if ok else QUEUED)
            )
        return self._report(publications, call)

    def _not_delivered(self, failure, call: _Call):
        if failure.check(Duplicate):
            report = make_report(call.outcome.gate, call.door, call.created, [], call.request_id)
            report["duplicate"] = True
            return call.outcome, report
        failure.trap(OutboxError)
        publications = [
            amqp_action(self.exchange, entry[1], failure.value, status="failed")
            for entry in call.entries
        ]
        return self._report(publications, call)

    def _report(self, publications: list[dict], call: _Call):
        """``(outcome, report)``, or a Deferred of it while side actions run."""
        call.start_side_actions()
        if not call.side_actions:
            # The common case, answered without a Deferred more.
            return call.outcome, self._make_report(call, publications)
        d = defer.gatherResults(call.side_actions, consumeErrors=True)
        return d.addCallback(
            lambda actions: (call.outcome, self._make_report(call, publications + list(actions)))
        )

    @staticmethod
    def _make_report(call: _Call, actions: list) -> dict:
        return make_report(call.outcome.gate, call.door, call.created, actions, call.request_id)

    def _remember(self, notification, entry, created: int) -> None:
        message_id, routing_key, _ = entry
        self.recent.append(
            {
                "time": created,
                "service": notification.service,
                "project": notification.project,
                "group": notification.group,
                "type": notification.type,
                "text": notification.text,
                "link": notification.link,
                "routingKey": routing_key,
                "messageId": message_id,
            }
        )

    def _answer(self, result, request, gate: Gate, door: str) -> None:
        outcome, report = result
        status = report_status(report["actions"])
        detail = "duplicate delivery" if report.get("duplicate") else _summary(report["actions"])
        self._log_call(gate.name, door, outcome, status, detail or "nothing to do", request)
        if self.metrics is not None:
            self.metrics.observe_report(report)
        if request._disconnected:
            return
        if self.config.feature("ActionsReport"):
            body = _json(request, status, report)
        else:
            body = _plain(request, 200, "")
        request.write(body)
        request.finish()

    def _refused(self, failure, request, gate: Gate, door: str):
        failure.trap(GateError)
        error = failure.value
        reason = refusals.reason_of(error.status, error.code)
        detail = error.reason or error.message
        self._log_call(gate.name, door, None, error.status, detail, request, reason)
        if request._disconnected:
            return
        message = error.message + ("\n" + error.reason if error.reason else "")
        request.write(_plain(request, error.status, message + "\n"))
        request.finish()

    def _crashed(self, failure, request, gate: Gate, door: str) -> None:
        self.log.failure("Gate {gate}/{door} failed", failure, gate=gate.name, door=door)
        if self.metrics is not None:
            self.metrics.observe_call(gate.name, door, 500, None)
        self.refused(gate.name, door, 500, refusals.INTERNAL_ERROR)
        if request._disconnected:
            return
        request.write(_plain(request, 500, INTERNAL_ERROR))
        request.finish()

    def refused(self, gate: str, door: str, status: int, reason: str) -> None:
        """Count a refused call for its door and in the metrics (reference §2.6)."""
        if self.activity is not None:
            self.activity.called(gate, door, status, None, reason)
        if self.metrics is not None:
            self.metrics.observe_refusal(gate, reason)

    def refused_while_arriving(self, path: bytes) -> None:
        """A body refused as too large before the call reached its gate (the HTTP
        layer): counted for its door when the path is a gate's."""
        segments = path.partition(b"?")[0].split(b"/")
        if len(segments) != 4 or segments[:2] != [b"", b"gate"] or not segments[3]:
            return
        try:
            gate = segments[2].decode("utf-8")
            door = unquote_to_bytes(segments[3]).decode("utf-8")
        except UnicodeDecodeError:
            return
        if gate_class(gate) is not None:
            self.refused(gate, door, 413, refusals.BODY_TOO_LARGE)

    def _log_call(
        self,
        gate: str,
        door: str,
        outcome,
        status: int,
        detail: str,
        request: GateRequest,
        reason: str | None = None,
    ) -> None:
        """Log the call's line, and count it: per door (and as a refusal when
        ``reason`` says why it was refused) and in the metrics."""
        request.call_logged = True
        if self.metrics is not None:
            started = request.call_started
            seconds = None if started is None else self.reactor.seconds() - started
            self.metrics.observe_call(gate, door, status, seconds)
            if reason is not None:
                self.metrics.observe_refusal(gate, reason)
        if self.activity is not None:
            self.activity.called(gate, door, status, outcome.event if outcome else None, reason)
        event = outcome.event if outcome else "-"
        delivery = outcome.delivery if outcome and outcome.delivery else "-"
        request_id = request.request_id
        # The line is built here and logged as one field: Twisted's formatter
        # would parse an eight-field format string for every call (measured).
        # The fields stay in the event for the JSON log.
        self.log.info(
            "{line}",
            line=f"{gate}/{door} event={event} delivery={delivery} request={request_id} "
            f"→ {status} {detail}",
            request_id=request_id,
            gate=gate,
            door=door,
            event=event,
            delivery=delivery,
            status=status,
            detail=detail,
        )


def _request_id() -> str:
    """A short id tying a call's log line, its report and its X-Request-Id header."""
    # Not a secret (the caller gets it back), so Python's generator rather
    # than a system call per call; the random module reseeds it in a forked
    # worker.
    return f"{random.getrandbits(REQUEST_ID_BYTES * 8):0{REQUEST_ID_BYTES * 2}x}"


def _summary(actions: list[dict]) -> str:
    parts = []
    for action in actions:
        target = action.get("routingKey") or action.get("callSign") or action.get("image") or ""
        state = "error: " + action["error"]["message"] if action.get("error") else "ok"
        if action.get("status") and not action.get("error"):
            state = action["status"]
        parts.append(f"{action['action']} {target} {state}".replace("  ", " "))
    return "; ".join(parts)


class _RedactedURI:
    """A request seen by the access log, its query values hidden (``?token=`` is a secret)."""

    def __init__(self, request):
        self._request = request
        path, mark, query = request.uri.partition(b"?")
        if mark:
            pairs = [pair.partition(b"=")[0] + b"=redacted" for pair in query.split(b"&")]
            path += b"?" + b"&".join(pairs)
        self.uri = path

    def __getattr__(self, name):
        return getattr(self._request, name)


def redacted_log_formatter(timestamp: str, request) -> str:
    """Twisted's combined access-log line, without the query string's values."""
    return combinedLogFormatter(timestamp, _RedactedURI(request))


class WebApp:
    """The daemon's HTTP resources, built once and served whole or split in two.

    ``site("all")`` serves everything on one port; with an admin endpoint,
    ``site("public")`` serves only ``/gate``, ``/status`` and ``/events`` and
    ``site("admin")`` the rest (status page, ``/config``, ``/health``,
    ``/metrics``, and ``/events`` too). Both share one call handler, so the status page shows the
    calls the public port received.
    """

    def __init__(
        self,
        config: Config,
        dispatcher,
        gates: dict[str, Gate],
        reactor,
        service_status=None,
        metrics: Metrics | None = None,
        archive_recent=None,
        events=None,
        subscriptions=None,
    ):
        """``archive_recent``: the archive's last notifications
        (:class:`~notifications.archive.RecentNotifications`), for the status page;
        ``events``: the :class:`~notifications.events.EventStreams` of ``/events``
        (no such path without it); ``subscriptions``: the
        :class:`~notifications.subscriptions.Subscriptions`, for the status page and
        the metrics."""
        if metrics is None:
            known = [(service.gate, service.door) for service in config.services]
            metrics = Metrics(
                dispatcher,
                reactor,
                known_doors=known,
                events=events,
                subscriptions=subscriptions,
            )
        self.config = config
        self.reactor = reactor
        self.metrics = metrics
        self.events = events
        self.activity = DoorActivity(reactor, _doors(config))
        self.handler = CallHandler(config, dispatcher, reactor, metrics, self.activity)
        self.recent = RecentSource(self.handler.recent, archive_recent)
        self.dashboard = Dashboard(
            StatusJSON(
                config,
                dispatcher,
                self.recent,
                reactor,
                self.activity,
                events=events,
                subscriptions=subscriptions,
            )
        )
        self.status = StatusResource()
        self.health = HealthResource(dispatcher)
        self.config_resource = ConfigResource(
            config, service_status or _default_status, self.activity
        )
        self.gates = gates
        #: The sites made so far (a reload changes their limits).
        self.sites: list[GateSite] = []
        self.gate_tree = GateTree(
            {name: GateResource(gate, self.handler) for name, gate in gates.items()}
        )

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded configuration to everything that reads it at request
        time, and the limits and timeouts to the sites already made (the idle
        timeout and ``short_path`` to the connections made from now on)."""
        self.config = config
        holders = [self.handler, self.config_resource, *self.gates.values()]
        holders.extend(
            child for child in self.dashboard.children.values() if hasattr(child, "config")
        )
        for holder in holders:
            holder.config = config
        self.activity.declare(_doors(config))
        for site in self.sites:
            site.max_body_size = config.max_body_size
            site.request_timeout = config.request_timeout
            site.timeOut = config.idle_timeout
            if isinstance(site, GateCallSite):
                site.short_path = config.short_path

    def root(self, surface: str = "all") -> Resource:
        if surface == "public":
            root = PublicRoot()
        else:
            root = self.dashboard
            root.putChild(b"health", self.health)
            root.putChild(b"metrics", self.metrics.resource())
            root.putChild(b"openapi.json", OpenAPIResource())
            if self.config.feature("GetConfig"):
                root.putChild(b"config", self.config_resource)
        root.putChild(b"status", self.status)
        if self.events is not None:
            # On every surface: the public one too, as it is authenticated.
            root.putChild(b"events", EventsResource(self.events))
        if surface != "admin" and self.config.feature("Gate"):
            root.putChild(b"gate", self.gate_tree)
        return root

    def site(self, surface: str = "all") -> GateSite:
        limits = dict(
            max_body_size=self.config.max_body_size,
            request_timeout=self.config.request_timeout,
            idle_timeout=self.config.idle_timeout,
            logFormatter=redacted_log_formatter,
        )
        root = self.root(surface)
        if root.children.get(b"gate") is self.gate_tree:
            site: GateSite = GateCallSite(
                root, self.gates, self.handler, short_path=self.config.short_path, **limits
            )
        else:
            site = GateSite(root, **limits)
        site.displayTracebacks = False
        if surface != "admin":
            site.refused_while_arriving = self.handler.refused_while_arriving
        self.sites.append(site)
        return site


def make_site(*args, **kwargs) -> GateSite:
    """One :class:`twisted.web.server.Site` serving everything, made of
    :class:`WebApp`'s arguments."""
    return WebApp(*args, **kwargs).site("all")


def _doors(config: Config) -> list[tuple[str, str]]:
    return [(service.gate, service.door) for service in config.services]


def _default_status(service) -> str:
    # Without a status function (tests), each gate's own default text.
    gate = gate_class(service.gate)
    return gate.default_status if gate is not None else ""
