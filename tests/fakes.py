"""Small fake Conduit, Docker Hub and Mailgun servers: real twisted.web sites on loopback.

Each records the requests it receives (method, path, form fields, headers,
basic auth) and answers from what the test put in it. ``mode`` (or
``modes[method]`` for Conduit) picks how it answers:

``normal``   the documented answer
``api-error`` Conduit's ``error_code``/``error_info`` (Conduit only)
``http-500`` an HTML error page with status 500
``malformed`` status 200 and a body that is not JSON
``slow``     the normal answer, ``delay`` seconds later (``reactor.callLater``)
``empty``    an empty result, as for an object the bot cannot see
``hang``     no answer at all: the connection stays open until the fake stops

Start with ``await FakeConduit(...).start()``; ``await fake.stop()`` closes
the port and every connection, and cancels pending slow answers.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web import server
from twisted.web.resource import Resource

MODES = ("normal", "api-error", "http-500", "malformed", "slow", "empty", "hang")


@dataclass
class Recorded:
    """One request a fake received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    user: str | None = None
    password: str | None = None
    #: When it arrived (reactor seconds).
    time: float = 0.0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


class _Site(server.Site):
    """A site that remembers its connections, to close them when the fake stops."""

    def __init__(self, resource):
        super().__init__(resource)
        self.channels: set = set()

    def buildProtocol(self, addr):
        channel = super().buildProtocol(addr)
        self.channels.add(channel)
        original = channel.connectionLost

        def lost(reason):
            self.channels.discard(channel)
            return original(reason)

        channel.connectionLost = lost
        return channel


class FakeService(Resource):
    """The common part: recording, modes, slow answers, start and stop."""

    isLeaf = True

    def __init__(self, delay: float = 5.0):
        super().__init__()
        self.requests: list[Recorded] = []
        self.mode = "normal"
        self.delay = delay
        self.url = ""
        self._port = None
        self._site = _Site(self)
        self._pending: set = set()

    async def start(self, port: int = 0) -> FakeService:
        self._port = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(
            self._site
        )
        self.url = f"http://127.0.0.1:{self._port.getHost().port}"
        return self

    @property
    def port(self) -> int:
        return self._port.getHost().port

    async def stop(self) -> None:
        for call in list(self._pending):
            if call.active():
                call.cancel()
        self._pending.clear()
        if self._port is not None:
            await self._port.stopListening()
            self._port = None
        for channel in list(self._site.channels):
            # Site wraps its HTTPChannel in a protocol switcher (HTTP/2).
            transport = getattr(channel, "_channel", channel).transport
            if transport is not None:
                transport.abortConnection()
        # Let the aborted connections' last callbacks run.
        d = defer.Deferred()
        reactor.callLater(0, d.callback, None)
        await d

    def mode_for(self, recorded: Recorded) -> str:
        return self.mode

    def answer(self, recorded: Recorded, mode: str) -> tuple[int, bytes]:
        """``(status, body)`` of a normal (or empty, or API error) answer."""
        raise NotImplementedError

    def render(self, request):
        body = request.content.read()
        headers = {
            name.decode().lower(): values[0].decode()
            for name, values in request.requestHeaders.getAllRawHeaders()
        }
        recorded = Recorded(
            method=request.method.decode(),
            path=unquote(request.path.decode()),
            headers=headers,
            body=body,
            time=reactor.seconds(),
        )
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            fields = parse_qs(body.decode(), keep_blank_values=True)
            recorded.form = {key: values[0] for key, values in fields.items()}
        authorization = headers.get("authorization", "")
        if authorization.startswith("Basic "):
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
            recorded.user, recorded.password = user, password
        self.requests.append(recorded)
        mode = self.mode_for(recorded)
        if mode == "hang":
            return server.NOT_DONE_YET  # stop() aborts the connection
        if mode == "http-500":
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/html")
            return b"<html><body><h1>500 Internal Server Error</h1></body></html>"
        if mode == "malformed":
            request.setHeader(b"content-type", b"application/json")
            return b'{"result": {"unterminated'
        status, content = self.answer(recorded, mode)
        if mode != "slow":
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            return content

        def later() -> None:
            self._pending.discard(call)
            request.setResponseCode(status)
            request.setHeader(b"content-type", b"application/json")
            request.write(content)
            request.finish()

        call = reactor.callLater(self.delay, later)
        self._pending.add(call)

        def gone(_) -> None:  # the client gave up: no answer to send
            if call.active():
                call.cancel()
            self._pending.discard(call)

        request.notifyFinish().addErrback(gone)
        return server.NOT_DONE_YET

    def paths(self) -> list[str]:
        return [recorded.path for recorded in self.requests]


# Conduit ---------------------------------------------------------------------


def indexed(form: dict[str, str], name: str) -> list[str]:
    """The values of ``name[0]``, ``name[1]``… in a PHP-style form."""
    values = []
    while f"{name}[{len(values)}]" in form:
        values.append(form[f"{name}[{len(values)}]"])
    return values


class FakeConduit(FakeService):
    """A Phabricator instance's ``/api/<method>``, with tasks, revisions, commits,
    repositories, pastes and projects the test adds."""

    def __init__(self, token: str, delay: float = 5.0):
        super().__init__(delay)
        self.token = token
        #: Per-method modes, over ``mode``.
        self.modes: dict[str, str] = {}
        #: What an API error says; ``{token}`` is the token received (Phabricator
        #: quotes a malformed one back).
        self.error_info = 'API token "{token}" has the wrong format.'
        self.tasks: dict[str, list[str]] = {}
        self.revisions: dict[str, str] = {}
        self.commits: dict[str, str] = {}
        self.repositories: dict[str, dict[str, Any]] = {}
        self.pastes: dict[str, list[str]] = {}
        self.projects: dict[str, str] = {}
        #: ``phid.query``: PHID → its handle (``fullName``, ``typeName``, ``uri``…).
        self.handles: dict[str, dict[str, Any]] = {}

    def add_repository(
        self, phid: str, callsign: str | None, clone_url: str, projects: list[str]
    ) -> None:
        self.repositories[phid] = {
            "id": str(len(self.repositories) + 1),
            "phid": phid,
            "name": callsign or phid,
            "callsign": callsign,
            "remoteURI": clone_url,
            "projectPHIDs": projects,
        }

    def method(self, recorded: Recorded) -> str:
        return recorded.path.removeprefix("/api/")

    def calls(self, method: str | None = None) -> list[tuple[str, dict[str, str]]]:
        """``(method, form without api.token)`` of each call, in order."""
        return [
            (self.method(recorded), {k: v for k, v in recorded.form.items() if k != "api.token"})
            for recorded in self.requests
            if method is None or self.method(recorded) == method
        ]

    def mode_for(self, recorded: Recorded) -> str:
        return self.modes.get(self.method(recorded), self.mode)

    def answer(self, recorded: Recorded, mode: str) -> tuple[int, bytes]:
        given = recorded.form.get("api.token", "")
        if mode == "api-error" or given != self.token:
            value = {
                "result": None,
                "error_code": "ERR-INVALID-AUTH",
                "error_info": self.error_info.format(token=given),
            }
            return 200, json.dumps(value).encode()
        method = self.method(recorded)
        handler = getattr(self, "call_" + method.replace(".", "_"), None)
        if handler is None:
            value = {
                "result": None,
                "error_code": "ERR-CONDUIT-CALL",
                "error_info": f'Conduit method "{method}" does not exist.',
            }
        else:
            value = {"result": handler(recorded.form, mode == "empty"), "error_code": None}
            value["error_info"] = None
        return 200, json.dumps(value).encode()

    # Methods, answering as Phabricator does (PHP's empty array is []).

    def call_maniphest_query(self, form, empty):
        found = {
            phid: {"phid": phid, "projectPHIDs": self.tasks[phid]}
            for phid in indexed(form, "phids")
            if phid in self.tasks and not empty
        }
        return found or []

    def call_differential_query(self, form, empty):
        return [
            {"phid": phid, "repositoryPHID": self.revisions[phid]}
            for phid in indexed(form, "phids")
            if phid in self.revisions and not empty
        ]

    def call_diffusion_querycommits(self, form, empty):
        data = {
            phid: {"phid": phid, "repositoryPHID": self.commits[phid]}
            for phid in indexed(form, "phids")
            if phid in self.commits and not empty
        }
        return {"data": data or [], "identifierMap": [], "cursor": {"limit": 100}}

    def call_repository_query(self, form, empty):
        phids = indexed(form, "phids")
        uris = indexed(form, "remoteURIs")
        return [
            repository
            for repository in self.repositories.values()
            if not empty and (repository["phid"] in phids or repository["remoteURI"] in uris)
        ]

    def call_diffusion_looksoon(self, form, empty):
        return None

    def call_paste_search(self, form, empty):
        data = [
            {
                "id": 7,
                "type": "PSTE",
                "phid": phid,
                "fields": {"title": "notes"},
                "attachments": {"projects": {"projectPHIDs": self.pastes[phid]}},
            }
            for phid in indexed(form, "constraints[phids]")
            if phid in self.pastes and not empty
        ]
        return {"data": data, "maps": {}, "query": {}, "cursor": {"limit": 100}}

    def call_phid_query(self, form, empty):
        found = {
            phid: {"phid": phid, **self.handles[phid]}
            for phid in indexed(form, "phids")
            if phid in self.handles and not empty
        }
        return found or []

    def call_project_query(self, form, empty):
        data = {
            phid: {"id": index, "phid": phid, "name": name, "slugs": []}
            for index, (phid, name) in enumerate(self.projects.items())
            if not empty
        }
        return {"data": data or [], "slugMap": [], "cursor": {"limit": form.get("limit")}}


# Docker Hub ------------------------------------------------------------------


class FakeDockerHub(FakeService):
    """``POST /u/<owner>/<repo>/trigger/<token>/``: 200 for a known (image, token)."""

    def __init__(self, tokens: dict[str, str], delay: float = 5.0):
        super().__init__(delay)
        self.tokens = tokens

    def answer(self, recorded: Recorded, mode: str) -> tuple[int, bytes]:
        parts = recorded.path.strip("/").split("/")
        if (
            recorded.method == "POST"
            and len(parts) == 5
            and parts[0] == "u"
            and parts[3] == "trigger"
            and self.tokens.get(f"{parts[1]}/{parts[2]}") == parts[4]
        ):
            return 200, b'{"state": "Success"}'
        return 404, b'{"detail": "Not found"}'


# Mailgun ---------------------------------------------------------------------


class FakeMailgun(FakeService):
    """Stored messages by path; basic auth ``api:<key>`` required, else 401."""

    def __init__(self, key: str, delay: float = 5.0):
        super().__init__(delay)
        self.key = key
        self.messages: dict[str, dict[str, Any]] = {}

    def answer(self, recorded: Recorded, mode: str) -> tuple[int, bytes]:
        if (recorded.user, recorded.password) != ("api", self.key):
            return 401, b'{"message": "Invalid private key"}'
        message = self.messages.get(recorded.path)
        if message is None or mode == "empty":
            return 404, b'{"message": "Message not found"}'
        return 200, json.dumps(message).encode()


# Webhook receivers -------------------------------------------------------------


class FakeReceiver(FakeService):
    """A receiver of outgoing webhooks: records each POST; ``normal`` answers 200,
    ``http-500`` 500, ``hang`` never answers. ``stop()`` then ``start(port)`` takes it
    down and brings it back on the same port."""

    def answer(self, recorded: Recorded, mode: str) -> tuple[int, bytes]:
        return 200, b'{"ok": true}'
