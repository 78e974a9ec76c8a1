"""The HTTP surface: ``/``, ``/status``, ``/config`` and the ``/gate`` tree (SPEC §2).

A gate call goes one straight way: the door resource turns the request into
a :class:`~notifications.gates.GateCall`, the gate checks and renders it, the
publisher publishes each notification, the side actions run, and the actions
report is the answer.
"""

from __future__ import annotations

import html
import json
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import server
from twisted.web.pages import notFound
from twisted.web.resource import Resource

from .config import GATES, Config
from .gates import Gate, GateCall, GateError, Outcome
from .notification import RoutingKeyTooLong
from .report import amqp_action, make_report, report_status

POST_ONLY = "This gate takes POST requests: see the documentation of the notifications center."


def _plain(request, status: int, body: str) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return body.encode()


def _json(request, status: int, value: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(value, ensure_ascii=False).encode()


class Leaf(Resource):
    """A resource with no children: anything below it is 404."""

    def getChild(self, path, request):
        return notFound()


class StatusResource(Leaf):
    """``GET /status``: monitoring probes depend on this exact body."""

    isLeaf = False

    def render_GET(self, request):
        return _plain(request, 200, "ALIVE")


class ConfigResource(Leaf):
    """``GET /config``: the configuration report, never a secret (SPEC §7)."""

    def __init__(self, config: Config, service_status):
        super().__init__()
        self.config = config
        self.service_status = service_status

    def render_GET(self, request):
        return _json(request, 200, config_report(self.config, self.service_status))


def config_report(config: Config, service_status) -> dict:
    """The ``/config`` report: gates, features, services without their secrets."""
    return {
        "gates": list(GATES) if config.feature("Gate") else [],
        "features": [
            {"name": name, "enabled": enabled} for name, enabled in config.features.items()
        ],
        "services": [
            {
                "gate": service.gate,
                "door": service.door,
                "instance": service.instance,
                "status": service_status(service),
            }
            for service in config.services
        ],
    }


class RootResource(Resource):
    """``GET /``: what this is, its gates, where to look next."""

    def __init__(self, config: Config, publisher):
        super().__init__()
        self.config = config
        self.publisher = publisher

    def getChild(self, path, request):
        if path == b"":
            return self
        return notFound()

    def render_GET(self, request):
        broker = "connected" if self.publisher.connected else "not connected"
        gates = "".join(f"<li><code>POST /gate/{name}/&lt;door&gt;</code></li>" for name in GATES)
        links = '<a href="/status">/status</a>'
        if self.config.feature("GetConfig"):
            links += ' · <a href="/config">/config</a>'
        page = (
            "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            "<title>Notifications center</title></head><body>"
            "<h1>Notifications center</h1>"
            "<p>Receives webhooks from GitHub, Docker Hub, Jenkins, Phabricator and any tool "
            "that can POST JSON, and publishes one short notification for each on the "
            f"RabbitMQ exchange <code>{html.escape(self.config.broker.exchange)}</code>.</p>"
            f"<p>Broker: {broker}.</p>"
            + (f"<h2>Gates</h2><ul>{gates}</ul>" if self.config.feature("Gate") else "")
            + f"<p>{links}</p></body></html>"
        )
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        return page.encode()


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
        request.setHeader(b"allow", b"POST")
        return _plain(request, 405, POST_ONLY)


class DoorResource(Resource):
    """``/gate/<Gate>/<door>``: POST processes a payload."""

    isLeaf = True

    def __init__(self, gate: Gate, door: str, handler: CallHandler):
        super().__init__()
        self.gate = gate
        self.door = door
        self.handler = handler

    def render_GET(self, request):
        request.setHeader(b"allow", b"POST")
        return _plain(request, 405, POST_ONLY)

    render_HEAD = render_GET

    def render_POST(self, request):
        return self.handler.handle(self.gate, self.door, request)


def _headers(request) -> dict[str, str]:
    return {
        name.decode("latin-1").lower(): values[0].decode("latin-1")
        for name, values in request.requestHeaders.getAllRawHeaders()
    }


def _query(request) -> dict[str, str]:
    return {
        key.decode("utf-8", "replace"): values[0].decode("utf-8", "replace")
        for key, values in request.args.items()
        if values
    }


class CallHandler:
    """Runs a gate call from the request to the actions report."""

    log = Logger()

    def __init__(self, config: Config, publisher, reactor):
        self.config = config
        self.publisher = publisher
        self.reactor = reactor

    def handle(self, gate: Gate, door: str, request) -> int | bytes:
        body = request.content.read()
        if len(body) > self.config.max_body_size:
            self._log_call(gate.name, door, None, 413, "body too large")
            return _plain(request, 413, "Payload too large.")
        call = GateCall(door=door, headers=_headers(request), body=body, query=_query(request))
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)
        d = defer.maybeDeferred(gate.process, call)
        d.addCallback(self.run, door)
        d.addCallbacks(
            self._answer, self._refused, (request, gate, door), None, (request, gate, door)
        )
        d.addErrback(self._crashed, request, gate, door)
        return server.NOT_DONE_YET

    @defer.inlineCallbacks
    def run(self, outcome: Outcome, door: str):
        """Publish the outcome's notifications, run its side actions, build the report."""
        try:
            keys = [publication.notification.routing_key for publication in outcome.publications]
        except RoutingKeyTooLong as error:
            raise GateError(400, "Bad request.", str(error)) from None
        created = int(self.reactor.seconds())
        publications = [
            self.publish(publication, key)
            for publication, key in zip(outcome.publications, keys, strict=True)
        ]
        sides = [defer.maybeDeferred(side) for side in outcome.side_actions]
        results = yield defer.gatherResults(publications + sides, consumeErrors=True)
        return outcome, make_report(outcome.gate, door, created, list(results))

    def publish(self, publication, routing_key: str) -> defer.Deferred:
        d = self.publisher.publish(
            routing_key, publication.notification.to_json(), publication.message_id
        )
        d.addTimeout(self.config.publish_timeout, self.reactor, onTimeoutCancel=_no_confirm)
        d.addCallbacks(
            lambda _: amqp_action(self.publisher.exchange, routing_key),
            lambda failure: amqp_action(self.publisher.exchange, routing_key, failure.value),
        )
        return d

    def _answer(self, result, request, gate: Gate, door: str) -> None:
        outcome, report = result
        status = report_status(report["actions"])
        self._log_call(
            outcome.gate, door, outcome, status, _summary(report["actions"]) or "nothing to do"
        )
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
        self._log_call(gate.name, door, None, error.status, error.reason or error.message)
        if request._disconnected:
            return
        message = error.message + ("\n" + error.reason if error.reason else "")
        request.write(_plain(request, error.status, message + "\n"))
        request.finish()

    def _crashed(self, failure, request, gate: Gate, door: str) -> None:
        self.log.failure("Gate {gate}/{door} failed", failure, gate=gate.name, door=door)
        if request._disconnected:
            return
        request.write(_plain(request, 500, "Internal error.\n"))
        request.finish()

    def _log_call(self, gate: str, door: str, outcome, status: int, detail: str) -> None:
        self.log.info(
            "{gate}/{door} event={event} delivery={delivery} → {status} {detail}",
            gate=gate,
            door=door,
            event=outcome.event if outcome else "-",
            delivery=outcome.delivery if outcome and outcome.delivery else "-",
            status=status,
            detail=detail,
        )


class NoConfirm(Exception):
    """The broker did not confirm the message in time."""


def _no_confirm(result, timeout):
    raise NoConfirm(f"no confirm from the broker within {timeout:g} s")


def _summary(actions: list[dict]) -> str:
    parts = []
    for action in actions:
        target = action.get("routingKey") or action.get("callSign") or action.get("image") or ""
        state = "error: " + action["error"]["message"] if action.get("error") else "ok"
        parts.append(f"{action['action']} {target} {state}".replace("  ", " "))
    return "; ".join(parts)


def make_site(config: Config, publisher, gates: dict[str, Gate], reactor, service_status=None):
    """The :class:`twisted.web.server.Site` of the daemon."""
    handler = CallHandler(config, publisher, reactor)
    root = RootResource(config, publisher)
    root.putChild(b"status", StatusResource())
    if config.feature("GetConfig"):
        root.putChild(b"config", ConfigResource(config, service_status or _default_status))
    if config.feature("Gate"):
        root.putChild(
            b"gate",
            GateTree({name: GateResource(gate, handler) for name, gate in gates.items()}),
        )
    site = server.Site(root)
    site.displayTracebacks = False
    return site


def _default_status(service) -> str:
    return "Projects map not cached." if service.gate == "Phabricator" else ""
