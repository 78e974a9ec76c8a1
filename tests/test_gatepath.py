"""The gate calls' short HTTP path (``notifications/gatepath.py``), on raw sockets.

A ``POST /gate/<Gate>/<door>`` call in HTTP/1.1 with a ``Content-Length`` body
is answered by :class:`~notifications.gatepath.GateCallProtocol` itself; any
other request hands the connection over to twisted.web's channel. Each test
writes requests by hand, reads the answers as bytes, and checks which of the
two served the connection (the protocols the daemon's site built, and the
connections it handed over). Most run with ``[gate] short_path`` true and
false: both ways must answer alike.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, replace
from email.utils import parsedate_to_datetime

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.internet.address import IPv4Address
from twisted.internet.task import deferLater

from notifications.gatepath import GateCallProtocol, GateCallSite
from notifications.gates import make_gates
from notifications.http import GateChannel
from notifications.web import WebApp
from tests.conftest import wait_for
from tests.helpers import (
    assert_report,
    connect_collector,
    daemon_behind_proxy,
    signed_github_request,
)

GATE = "/gate/Notification/Acme"
NOTIFICATION = {"service": "Deployer", "group": "ops", "type": "deploy"}
SECRET = "gatepath-secret-161803"
SERVICES = [
    {"gate": "GitHub", "door": "Acme", "secret": SECRET},
    {"gate": "Notification", "door": "Acme"},
]
STATUS = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
BOTH_PATHS = pytest.mark.parametrize("short_path", [True, False], ids=["short", "twisted"])


def call(
    body: bytes | dict = NOTIFICATION,
    path: str = GATE,
    version: str = "1.1",
    headers: dict[str, str | None] | None = None,
) -> bytes:
    """A POST written by hand; ``headers`` add to the default ones, or remove one (None)."""
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    fields: dict[str, str | None] = {
        "Host": "127.0.0.1",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
    }
    fields.update(headers or {})
    lines = [f"POST {path} HTTP/{version}"]
    lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def deploy(type_: str, headers: dict[str, str | None] | None = None) -> bytes:
    """A Notification call of this ``type`` (its routing key ``acme.ops.deployer.<type>``)."""
    return call({**NOTIFICATION, "type": type_}, headers=headers)


def github(secret: str | None, path: str = "/gate/GitHub/Acme") -> bytes:
    body, headers = signed_github_request("ping", {"zen": "Keep it simple."}, secret)
    return call(body, path, headers=headers)


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes

    def header(self, name: bytes) -> bytes | None:
        """The last value of a header (its name in any case), or None."""
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return values[-1] if values else None

    def routing_keys(self) -> list[str]:
        return [action["routingKey"] for action in json.loads(self.body)["actions"]]


def answers_in(data: bytes) -> list[Answer]:
    """The whole answers at the start of ``data`` (framed by their Content-Length, or
    chunked)."""
    found = []
    while True:
        head, end, rest = data.partition(b"\r\n\r\n")
        if not end:
            return found
        status_line, *lines = head.split(b"\r\n")
        headers = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines]
        answer = Answer(int(status_line.split(b" ", 2)[1]), headers, b"")
        if answer.header(b"transfer-encoding") == b"chunked":
            body, data = dechunked(rest)
            if body is None:
                return found
            answer.body = body
        else:
            length = int(answer.header(b"content-length") or 0)  # none on a 100 Continue
            if len(rest) < length:
                return found
            answer.body, data = rest[:length], rest[length:]
        found.append(answer)


def dechunked(data: bytes) -> tuple[bytes | None, bytes]:
    """A chunked body at the start of ``data`` and what follows it (None: not all there)."""
    body = b""
    while True:
        size_line, end, rest = data.partition(b"\r\n")
        size = int(size_line, 16) if end else -1
        if size < 0 or len(rest) < size + 2:
            return None, b""
        body, data = body + rest[:size], rest[size + 2 :]
        if size == 0:
            return body, data


async def answers(client, count: int, timeout: float = 5) -> list[Answer]:
    """The first ``count`` answers on a connection (fewer if the server closed it)."""
    await wait_for(
        lambda: len(answers_in(client.received)) >= count or client.closed.called,
        timeout=timeout,
        step=0.01,
    )
    return answers_in(client.received)[:count]


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


class Connections:
    """What a daemon's gate site did with its connections: the protocols it built, and
    the twisted.web channels the short path handed connections over to."""

    def __init__(self, site: GateCallSite):
        self.built: list = []
        self.handed_over: list = []
        build, channel = site.buildProtocol, site.twisted_channel

        def build_protocol(addr):
            self.built.append(build(addr))
            return self.built[-1]

        def twisted_channel(addr):
            self.handed_over.append(channel(addr))
            return self.handed_over[-1]

        site.buildProtocol = build_protocol
        site.twisted_channel = twisted_channel

    def assert_served(self, short_path: bool, handed_over: int = 0) -> None:
        """Every connection started on the path ``short_path`` says, and so many of
        them were handed over to twisted.web (none when twisted.web had them all)."""
        assert self.built
        kind = GateCallProtocol if short_path else GateChannel
        assert {type(protocol) for protocol in self.built} == {kind}
        assert len(self.handed_over) == (handed_over if short_path else 0)


async def start(daemon_factory, short_path: bool = True, toml: str = "", **kwargs):
    """A daemon with ``[gate] short_path`` so, and what its site does with its connections."""
    daemon = await daemon_factory(toml=f"short_path = {str(short_path).lower()}\n{toml}", **kwargs)
    assert daemon.config.short_path is short_path
    return daemon, Connections(daemon.port.factory)


async def still_serving(daemon) -> None:
    response, body = await daemon.post(GATE, NOTIFICATION)
    assert response.code == 200, body


# Gate calls ---------------------------------------------------------------------------


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_a_gate_call_is_answered_and_published(daemon_factory, consumer, broker, short_path):
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    client.transport.write(call())
    [answer] = await answers(client, 1)
    assert answer.status == 200, answer
    assert answer.header(b"content-type") == b"application/json"
    # The whole answer is its head and a body of the length it declares.
    assert client.received.endswith(b"\r\n\r\n" + answer.body)
    report = assert_report(
        answer.body, "Deployer", "Acme", broker.exchange, ["acme.ops.deployer.deploy"]
    )
    assert answer.header(b"x-request-id") == report["requestId"].encode()
    date = parsedate_to_datetime(answer.header(b"date").decode())
    assert abs(date.timestamp() - time.time()) < 5
    assert answer.header(b"server").startswith(b"TwistedWeb/")
    message, raw = await consumer.get()
    assert message["type"] == "deploy"
    assert raw.routing_key == "acme.ops.deployer.deploy"
    connections.assert_served(short_path)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_calls_one_after_the_other_keep_the_connection(daemon_factory, short_path):
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    ids = []
    for type_ in ("first", "second"):
        client.received = b""
        client.transport.write(deploy(type_))
        [answer] = await answers(client, 1)
        assert answer.status == 200, answer
        assert answer.routing_keys() == [f"acme.ops.deployer.{type_}"]
        ids.append(answer.header(b"x-request-id"))
    assert ids[0] != ids[1]
    await sleep(0.1)
    assert not client.closed.called
    assert len(connections.built) == 1
    connections.assert_served(short_path)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_pipelined_calls_are_answered_in_order(daemon_factory, consumer, short_path):
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    client.transport.write(deploy("first") + deploy("second") + deploy("third"))
    found = await answers(client, 3)
    assert [answer.status for answer in found] == [200, 200, 200]
    assert [answer.routing_keys() for answer in found] == [
        [f"acme.ops.deployer.{type_}"] for type_ in ("first", "second", "third")
    ]
    assert [message["type"] for message in await consumer.drain(0.2)] == [
        "first",
        "second",
        "third",
    ]
    connections.assert_served(short_path)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_an_empty_line_between_pipelined_calls_is_skipped(daemon_factory, short_path):
    # Some clients end a POST with an extra CRLF; twisted.web skips it.
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    client.transport.write(deploy("first") + b"\r\n" + deploy("second"))
    found = await answers(client, 2)
    assert [answer.status for answer in found] == [200, 200]
    assert found[1].routing_keys() == ["acme.ops.deployer.second"]
    connections.assert_served(short_path)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_many_calls_sent_ahead_are_all_answered_in_order(daemon_factory, short_path):
    # Far more than 64 KB sent at once behind the first call: the short path stops
    # reading while it answers, and reads on afterwards.
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    text = "x" * 16_000
    count = 30
    client.transport.write(
        b"".join(
            call({**NOTIFICATION, "type": f"t{index}", "text": text}) for index in range(count)
        )
    )
    found = await answers(client, count)
    assert [answer.status for answer in found] == [200] * count
    assert [answer.routing_keys() for answer in found] == [
        [f"acme.ops.deployer.t{index}"] for index in range(count)
    ]
    connections.assert_served(short_path)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_answers_a_client_does_not_read_yet_wait_and_keep_their_order(
    daemon_factory, short_path
):
    # The short path sends each answer on the socket at once; once the socket
    # is full (here: a small send buffer, and a client that stops reading), the rest
    # must wait in the transport, behind what did not fit, and come in order.
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    await wait_for(lambda: connections.built, timeout=5, step=0.01)
    server_side = connections.built[0].transport.getHandle()
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    client.transport.pauseProducing()
    count = 600
    published = daemon.dispatcher.published
    client.transport.write(b"".join(deploy(f"t{index}") for index in range(count)))
    # The short path answers them all while the client reads nothing;
    # twisted.web stops taking requests once its answers pile up.
    last, still = -1, 0
    while daemon.dispatcher.published - published < count and still < 10:
        still = still + 1 if daemon.dispatcher.published == last else 0
        last = daemon.dispatcher.published
        await sleep(0.05)
    await sleep(0.1)
    assert client.received == b""
    if short_path:
        assert daemon.dispatcher.published - published == count
        assert daemon.dispatcher.calls_in_progress == 0
        # The socket was full at some point: the transport took the rest.
        assert connections.built[0]._socket is None
    server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    client.transport.resumeProducing()
    # Counted before they are parsed: parsing 600 answers at each step is slow.
    await wait_for(lambda: client.received.count(b"HTTP/1.1 ") >= count, timeout=20, step=0.05)
    found = answers_in(client.received)
    assert [answer.status for answer in found] == [200] * count
    assert [answer.routing_keys() for answer in found] == [
        [f"acme.ops.deployer.t{index}"] for index in range(count)
    ]
    connections.assert_served(short_path)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_many_pipelined_refusals_are_all_answered(daemon_factory, short_path):
    # Answered at once, without waiting for the broker: each answer leads to the
    # next request while the previous one is still on the stack.
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    client.transport.write(call(b'{"service": ') * 300)
    found = await answers(client, 300, timeout=2)
    assert [answer.status for answer in found] == [400] * 300
    assert {answer.body.split(b"\n")[0] for answer in found} == {b"Bad request."}
    connections.assert_served(short_path)
    client.transport.loseConnection()
    await still_serving(daemon)


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_a_call_then_another_request_in_one_write(daemon_factory, short_path):
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    client.transport.write(deploy("first") + STATUS + deploy("after"))
    found = await answers(client, 3)
    assert [answer.status for answer in found] == [200, 200, 200]
    assert found[0].routing_keys() == ["acme.ops.deployer.first"]
    assert found[1].body == b"ALIVE"
    assert found[2].routing_keys() == ["acme.ops.deployer.after"]
    # Answered here, then handed over from GET /status on.
    connections.assert_served(short_path, handed_over=1)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_another_request_first_then_a_call(daemon_factory, short_path):
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    client.transport.write(STATUS)
    [status] = await answers(client, 1)
    assert (status.status, status.body) == (200, b"ALIVE")
    client.transport.write(deploy("after"))
    found = await answers(client, 2)
    assert found[1].status == 200, found[1]
    assert found[1].routing_keys() == ["acme.ops.deployer.after"]
    connections.assert_served(short_path, handed_over=1)
    client.transport.loseConnection()


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_a_call_arriving_in_small_pieces(daemon_factory, short_path):
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    client.transport.setTcpNoDelay(True)
    request = deploy("pieces")
    head_length = request.index(b"\r\n\r\n") + 4
    pieces = [request[index : index + 1] for index in range(head_length)]
    body = request[head_length:]
    pieces += [body[:5], body[5:20], body[20:]]
    for piece in pieces:
        client.transport.write(piece)
        await sleep(0.001)
    [answer] = await answers(client, 1)
    assert answer.status == 200, answer
    assert answer.routing_keys() == ["acme.ops.deployer.pieces"]
    connections.assert_served(short_path)
    client.transport.loseConnection()


@pytest.mark.parametrize("value", ["close", "Close", "keep-alive, close"])
@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_connection_close_is_honoured(daemon_factory, consumer, short_path, value):
    daemon, connections = await start(daemon_factory, short_path)
    client = await connect_collector(daemon.url)
    # The call after the one asking to close is never read.
    client.transport.write(deploy("last", {"Connection": value}) + deploy("never"))
    received = await client.closed.addTimeout(5, reactor)
    [answer] = answers_in(received)
    assert answer.status == 200, answer
    assert answer.header(b"connection") == b"close"
    assert answer.routing_keys() == ["acme.ops.deployer.last"]
    assert [message["type"] for message in await consumer.drain(0.3)] == ["last"]
    connections.assert_served(short_path)


# Limits -------------------------------------------------------------------------------


@pytest.mark.parametrize("earlier", [False, True], ids=["first-request", "after-a-call"])
@pytest_twisted.ensureDeferred
async def test_a_call_not_arriving_in_time_is_cut(daemon_factory, earlier):
    # An idle timeout longer than the deadline: the deadline is what cuts.
    daemon, connections = await start(
        daemon_factory, toml="request_timeout = 0.5\nidle_timeout = 5\n"
    )
    client = await connect_collector(daemon.url)
    if earlier:
        client.transport.write(deploy("earlier"))
        [answer] = await answers(client, 1)
        assert answer.status == 200, answer
        # The deadline counts from the request's first byte, not the connection's.
        await sleep(0.3)
    request = deploy("late")
    started = reactor.seconds()
    client.transport.write(request[:-10])
    received = await client.closed.addTimeout(5, reactor)
    assert 0.4 < reactor.seconds() - started < 1.0
    answer = answers_in(received)[-1]
    assert answer.status == 408
    assert answer.body == b"Request timeout.\n"
    assert len(answers_in(received)) == (2 if earlier else 1)
    connections.assert_served(True)
    await still_serving(daemon)


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_a_request_handed_over_keeps_its_deadline(daemon_factory, short_path):
    # A head that turns out to be twisted.web's only at its end (chunked): its
    # deadline still counts from its first byte, not from the hand-over.
    daemon, connections = await start(
        daemon_factory, short_path, toml="request_timeout = 0.5\nidle_timeout = 5\n"
    )
    client = await connect_collector(daemon.url)
    head = call(b"", headers={"Content-Length": None, "Transfer-Encoding": "chunked"})
    started = reactor.seconds()
    client.transport.write(head[:40])
    await sleep(0.3)
    client.transport.write(head[40:] + b"5\r\n{}   \r\n")
    received = await client.closed.addTimeout(5, reactor)
    assert 0.4 < reactor.seconds() - started < 0.75
    [answer] = answers_in(received)
    assert (answer.status, answer.body) == (408, b"Request timeout.\n")
    connections.assert_served(short_path, handed_over=1)
    await still_serving(daemon)


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_an_idle_connection_after_a_call_is_closed(daemon_factory, short_path):
    daemon, connections = await start(daemon_factory, short_path, toml="idle_timeout = 0.5\n")
    client = await connect_collector(daemon.url)
    client.transport.write(call())
    [answer] = await answers(client, 1)
    assert answer.status == 200, answer
    answered = reactor.seconds()
    received = await client.closed.addTimeout(5, reactor)
    assert 0.3 < reactor.seconds() - answered < 1.5
    assert len(answers_in(received)) == 1
    connections.assert_served(short_path)


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_the_idle_timeout_spares_a_call_being_answered(daemon_factory, broker, short_path):
    # The broker stops answering: the call waits publish_timeout (1 s) for its
    # confirm, longer than the idle timeout (0.3 s), then is answered "queued".
    # The idle clock starts again with the answer.
    toml = f"short_path = {str(short_path).lower()}\nidle_timeout = 0.3\npublish_timeout = 1\n"
    async with daemon_behind_proxy(daemon_factory, broker, toml=toml) as (daemon, proxy):
        connections = Connections(daemon.port.factory)
        client = await connect_collector(daemon.url)
        proxy.freeze()
        started = reactor.seconds()
        client.transport.write(call())
        [answer] = await answers(client, 1, timeout=5)
        answered = reactor.seconds()
        assert answer.status == 200, answer
        assert json.loads(answer.body)["actions"][0]["status"] == "queued"
        assert answered - started > 0.9
        await client.closed.addTimeout(5, reactor)
        assert 0.2 < reactor.seconds() - answered < 1.5
        connections.assert_served(short_path)


@BOTH_PATHS
@pytest_twisted.ensureDeferred
async def test_a_declared_length_over_the_limit_is_refused_and_counted(daemon_factory, short_path):
    daemon, connections = await start(
        daemon_factory, short_path, toml="max_body_size = 2048\n", services=SERVICES
    )
    client = await connect_collector(daemon.url)
    started = reactor.seconds()
    client.transport.write(call(b"{", headers={"Content-Length": "104857600"}))
    received = await client.closed.addTimeout(5, reactor)
    assert reactor.seconds() - started < 0.4
    [answer] = answers_in(received)
    assert answer.status == 413
    assert answer.body == b"Payload too large.\n"
    connections.assert_served(short_path, handed_over=1)
    response = await treq.get(daemon.url + "/config")
    doors = {
        (entry["gate"], entry["door"]): entry
        for entry in json.loads(await response.content())["services"]
    }
    assert doors[("Notification", "Acme")]["refusals"] == {"body_too_large": 1}
    await still_serving(daemon)


# Requests twisted.web serves ------------------------------------------------------------


async def send_and_continue(client) -> None:
    """A call with ``Expect: 100-continue``: its body once the server said to go on."""
    request = deploy("expecting", {"Expect": "100-continue"})
    head_length = request.index(b"\r\n\r\n") + 4
    client.transport.write(request[:head_length])
    [interim] = await answers(client, 1)
    assert interim.status == 100
    client.transport.write(request[head_length:])


def chunked(type_: str) -> bytes:
    body = json.dumps({**NOTIFICATION, "type": type_}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
    head = call(b"", headers={"Content-Length": None, "Transfer-Encoding": "chunked"})
    return head + chunks + b"0\r\n\r\n"


@pytest.mark.parametrize("kind", ["http-1.0", "chunked", "expect-100-continue"])
@pytest_twisted.ensureDeferred
async def test_other_framings_of_a_call_are_served_by_twisted_web(daemon_factory, kind):
    daemon, connections = await start(daemon_factory)
    client = await connect_collector(daemon.url)
    if kind == "http-1.0":
        client.transport.write(call({**NOTIFICATION, "type": "old"}, version="1.0"))
        expected = "old"
    elif kind == "chunked":
        client.transport.write(chunked("chunked"))
        expected = "chunked"
    else:
        await send_and_continue(client)
        expected = "expecting"
    found = await answers(client, 2 if kind == "expect-100-continue" else 1)
    answer = found[-1]
    assert answer.status == 200, answer
    assert answer.routing_keys() == [f"acme.ops.deployer.{expected}"]
    if kind == "http-1.0":
        await client.closed.addTimeout(5, reactor)
    connections.assert_served(True, handed_over=1)
    client.transport.loseConnection()


OTHER_REQUESTS = [
    pytest.param(call(path="/gate/NoSuchGate/door"), (404,), id="unknown-gate"),
    pytest.param(call(path="/gate/Notification/Acme/more"), (404,), id="too-deep"),
    pytest.param(call(path="/gate/Notification/"), (404,), id="no-door"),
    pytest.param(b"GET /gate/Notification/Acme HTTP/1.1\r\nHost: x\r\n\r\n", (405,), id="get"),
    pytest.param(b"NOT HTTP\r\n\r\n", (400, None), id="garbage"),
    pytest.param(b"POST /gate/Notification/Acme HTTP/1.1\r\n\x00\r\n\r\n", (400, None), id="nul"),
]


@pytest.mark.parametrize(("request_", "statuses"), OTHER_REQUESTS)
@pytest_twisted.ensureDeferred
async def test_other_requests_are_served_by_twisted_web(daemon_factory, request_, statuses):
    daemon, connections = await start(daemon_factory)
    client = await connect_collector(daemon.url)
    client.transport.write(request_)
    found = await answers(client, 1)
    status = found[0].status if found else None
    assert status in statuses, client.received[:200]
    connections.assert_served(True, handed_over=1)
    client.transport.loseConnection()
    await still_serving(daemon)


@pytest.mark.parametrize("sent", ["whole-call", "head-only", "two-calls"])
@pytest_twisted.ensureDeferred
async def test_a_client_gone_before_its_answer(daemon_factory, consumer, sent):
    # No error logged (the no_logged_errors fixture), and the daemon serves on.
    daemon, connections = await start(daemon_factory)
    client = await connect_collector(daemon.url)
    request = {
        "whole-call": deploy("gone"),
        "head-only": deploy("gone")[:40],
        "two-calls": deploy("gone") + deploy("gone"),
    }[sent]
    client.transport.write(request)
    client.transport.loseConnection()
    await client.closed.addTimeout(5, reactor)
    if sent != "head-only":
        message, _ = await consumer.get()
        assert message["type"] == "gone"
    await wait_for(lambda: daemon.dispatcher.calls_in_progress == 0, timeout=5, step=0.01)
    await sleep(0.05)
    connections.assert_served(True)
    await still_serving(daemon)


# Both paths alike ----------------------------------------------------------------------

SAME_ANSWERS = [
    pytest.param(call(), id="call"),
    pytest.param(call(path="/gate/Notification/Caf%C3%A9%2Fbar?x=1&y"), id="quoted-door"),
    pytest.param(call(path="/gate/Notific%61tion/Acme"), id="quoted-gate"),
    pytest.param(github(SECRET), id="github-ping"),
    pytest.param(github("wrong"), id="bad-signature"),
    pytest.param(github(None), id="no-signature"),
    pytest.param(github(SECRET, "/gate/GitHub/Nobody"), id="unknown-door"),
    pytest.param(call(b"{}", headers={"Content-Type": "image/png"}), id="media-type"),
    pytest.param(call(b'{"service": '), id="bad-json"),
    pytest.param(call(b""), id="empty-body"),
    pytest.param(call(b'{"service": "S"}'), id="bad-payload"),
]


def comparable(answer: Answer) -> tuple:
    """An answer without what differs from one call to the next (ids, times)."""
    body: bytes | dict = answer.body
    if answer.header(b"content-type") == b"application/json":
        body = {
            k: v for k, v in json.loads(answer.body).items() if k not in ("requestId", "created")
        }
    names = {name.lower() for name, _ in answer.headers}
    return answer.status, answer.header(b"content-type"), names, body


@pytest.mark.parametrize("request_", SAME_ANSWERS)
@pytest_twisted.ensureDeferred
async def test_both_paths_answer_alike(daemon_factory, request_):
    found = []
    for short_path in (True, False):
        daemon, connections = await start(daemon_factory, short_path, services=SERVICES)
        client = await connect_collector(daemon.url)
        client.transport.write(request_)
        [answer] = await answers(client, 1)
        client.transport.loseConnection()
        connections.assert_served(short_path)
        found.append(comparable(answer))
    assert found[0] == found[1]
    assert found[0][0] < 500


# The setting --------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_the_setting_chooses_the_protocol_and_a_reload_changes_it(daemon_factory):
    daemon = await daemon_factory()
    assert daemon.config.short_path is True  # the default
    address = IPv4Address("TCP", "127.0.0.1", 12345)
    assert type(daemon.port.factory.buildProtocol(address)) is GateCallProtocol
    app = WebApp(
        daemon.config, daemon.dispatcher, make_gates(daemon.config, clock=reactor), reactor
    )
    site = app.site()
    assert isinstance(site, GateCallSite)
    app.reconfigure(replace(daemon.config, short_path=False))
    assert type(site.buildProtocol(address)) is GateChannel
    app.reconfigure(replace(daemon.config, short_path=True))
    assert type(site.buildProtocol(address)) is GateCallProtocol
