"""Helpers of the end-to-end gate tests: signed GitHub calls, raw HTTP, checks
of the actions report and of the notification consumed back from RabbitMQ, and
a proxy in front of the broker whose connections a test can cut."""

from __future__ import annotations

import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import socket
import uuid
from contextlib import asynccontextmanager
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import Phase, given, settings
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from twisted.protocols import portforward

from notifications.amqp.connection import connect
from tests.conftest import BROKER_HOST, BROKER_PORT, stop_daemon, test_broker

#: The seven keys of a notification (reference §1).
NOTIFICATION_KEYS = {"service", "project", "group", "rawContent", "type", "text", "link"}


def signed_github_request(
    event: str | None,
    payload: Any,
    secret: str | None,
    delivery: str | None = None,
    algorithm: str = "sha256",
    form: bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a GitHub webhook call, signed as GitHub signs it.

    ``payload`` is a JSON value, or bytes sent as they are (to send broken
    JSON). ``algorithm`` is ``sha256``, ``sha1`` or ``both``; a ``secret`` of
    None sends no signature. ``form`` sends the JSON in a ``payload`` field of
    an url-encoded form, signed over the form bytes. ``event=None`` leaves the
    ``X-GitHub-Event`` header out.
    """
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    if form:
        body = urlencode({"payload": raw.decode()}).encode()
        content_type = "application/x-www-form-urlencoded"
    else:
        body = raw
        content_type = "application/json"
    headers = {
        "Content-Type": content_type,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
    }
    if event is not None:
        headers["X-GitHub-Event"] = event
    if secret is not None:
        key = secret.encode()
        if algorithm in ("sha1", "both"):
            digest = hmac.new(key, body, hashlib.sha1).hexdigest()
            headers["X-Hub-Signature"] = f"sha1={digest}"
        if algorithm in ("sha256", "both"):
            digest = hmac.new(key, body, hashlib.sha256).hexdigest()
            headers["X-Hub-Signature-256"] = f"sha256={digest}"
    return body, headers


def first_line(body: bytes) -> str:
    """The first line of an error body (the public message)."""
    return body.decode("utf-8").split("\n", 1)[0]


def notification(**values: Any) -> dict[str, Any]:
    """A notification dict; every one of the seven keys must be given."""
    assert set(values) == NOTIFICATION_KEYS, sorted(values)
    return values


def assert_published(
    message: dict,
    raw: Any,
    expected: dict,
    routing_key: str,
    message_id: str | None = None,
) -> None:
    """Check a consumed notification: body, routing key and AMQP properties.

    Without ``message_id``, the message id must be a generated UUID.
    """
    assert set(message) == NOTIFICATION_KEYS
    assert message == expected
    assert raw.routing_key == routing_key
    properties = raw.content.properties
    assert properties["delivery-mode"] == 2
    assert properties["app-id"] == "notifications"
    assert properties["content-type"] == "application/json"
    if message_id is None:
        uuid.UUID(properties["message-id"])
    else:
        assert properties["message-id"] == message_id


def assert_report(
    answer: bytes, gate: str, door: str, exchange: str, routing_keys: list[str]
) -> dict:
    """Check an actions report with one published ``AMQPAction`` per routing key."""
    report = json.loads(answer)
    assert set(report) >= {"gate", "door", "created", "actions"}
    assert report["gate"] == gate
    assert report["door"] == door
    assert isinstance(report["created"], int)
    assert len(report["actions"]) == len(routing_keys)
    for action, key in zip(report["actions"], routing_keys, strict=True):
        # With the broker up, the confirm comes before the answer (reference §6).
        assert action == {
            "action": "AMQPAction",
            "method": "publish",
            "target": exchange,
            "routingKey": key,
            "status": "published",
            "error": None,
        }
    return report


def closed_port() -> int:
    """A loopback TCP port nothing listens on (just released by the OS)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Collector(Protocol):
    """A client connection keeping what the server sends; ``closed`` fires with all of it."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(self.received)


async def connect_collector(base_url: str) -> Collector:
    """A ``Collector`` connected to the daemon at ``base_url``, to write requests by hand."""
    port = urlsplit(base_url).port
    return await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Collector())


async def raw_http(
    base_url: str, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> tuple[int, bytes]:
    """Send an HTTP/1.0 request byte for byte (header names as written).

    treq canonicalizes header names; this sends them exactly as given, to
    check that the daemon does not care about their case.
    """
    lines = [f"{method} {path} HTTP/1.0", "Host: 127.0.0.1", f"Content-Length: {len(body)}"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
    collector = await connect_collector(base_url)
    collector.transport.write(request)
    response = await collector.closed.addTimeout(5, reactor)
    head, _, content = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, content


class SeverableProxy(portforward.ProxyFactory):
    """A port forwarder to a broker (the tests' by default) whose connections a test can cut."""

    def __init__(self, host: str = BROKER_HOST, port: int = BROKER_PORT):
        super().__init__(host, port)
        self.servers: list[portforward.ProxyServer] = []

    def buildProtocol(self, addr):
        server = super().buildProtocol(addr)
        self.servers.append(server)
        return server

    def freeze(self) -> None:
        """Stop forwarding in both directions, the TCP connections left open."""
        for server in self.servers:
            for side in (server, server.peer):
                if side is not None and side.transport is not None:
                    side.transport.pauseProducing()

    def sever(self) -> None:
        for server in self.servers:
            if server.transport is not None:
                server.transport.abortConnection()
        self.servers.clear()


async def listen_proxy(port: int = 0):
    """A ``SeverableProxy`` listening on a loopback port (0: any): (proxy, listening port)."""
    proxy = SeverableProxy()
    listening = await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(proxy)
    return proxy, listening


@asynccontextmanager
async def daemon_behind_proxy(daemon_factory, broker, toml: str = "", **settings):
    """A daemon reaching the broker through a proxy the test can cut; both stopped at the end.

    ``toml``: more of the daemon's configuration (``[gate]`` settings);
    ``settings``: more of its broker configuration (e.g. ``heartbeat``).
    """
    proxy, listening = await listen_proxy()
    try:
        daemon = await daemon_factory(
            toml=toml,
            broker_config=test_broker(broker.exchange, port=listening.getHost().port, **settings),
        )
        try:
            yield daemon, proxy
        finally:
            await stop_daemon(daemon)
    finally:
        proxy.sever()
        await listening.stopListening()


def in_ci() -> bool:
    """Whether the tests run in CI, where every tool a test needs must be there."""
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> NoReturn:
    """A test cannot run for want of ``reason``: fail in CI (it must run there), else skip."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def self_signed(name: str) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``name`` (DNS name and, for an address, IP), its own CA,
    and its key (PEM): for the tests of TLS verified against the URL's host name."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(name)))
    except ValueError:
        pass
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return (
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


async def delete_queue(broker, queue: str) -> None:
    """Delete a queue of the test and the test's exchange, through a connection of its own."""
    client, channel = await connect(reactor, broker)
    try:
        await channel.queue_delete(queue=queue)
        await channel.exchange_delete(exchange=broker.exchange)
    finally:
        await client.close(within=2)


def generated(strategy, count: int) -> list:
    """``count`` examples drawn by hypothesis (generation only: the broker runs afterwards)."""
    drawn: list = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate])
    @given(strategy)
    def draw(example) -> None:
        drawn.append(example)

    draw()
    return drawn
