"""The gate surface against hostile input: sizes, slowness, types, encodings.

Raw sockets here, since the point is what a client that does not play by
the rules gets: an answer (4xx) and a closed connection, never a 5xx, and a
daemon that keeps serving.
"""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor

from tests.helpers import Collector, connect_collector

LIMITS = "max_body_size = 2048\nrequest_timeout = 0.5\nidle_timeout = 0.5\n"
NOTIFICATION = {"service": "Deployer", "group": "ops", "type": "deploy"}


async def post_by_hand(daemon, head: bytes = b"") -> Collector:
    """A connection on which a POST to the Notification gate starts, ``head`` (raw) after
    its request line: the test writes the rest, or not."""
    client = await connect_collector(daemon.url)
    client.transport.write(b"POST /gate/Notification/Acme HTTP/1.1\r\nHost: x\r\n" + head)
    return client


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def still_serving(daemon) -> None:
    response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
    assert response.code == 200, body


@pytest_twisted.ensureDeferred
async def test_a_declared_length_over_the_limit_is_refused_before_the_body(daemon_factory):
    daemon = await daemon_factory(toml=LIMITS)
    client = await post_by_hand(
        daemon, b"Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n{"
    )
    started = reactor.seconds()
    answer = await client.closed.addTimeout(5, reactor)
    assert status_of(answer) == 413
    assert answer.endswith(b"Payload too large.\n")
    # Answered at once, not after a timeout: only one byte of the body was sent.
    assert reactor.seconds() - started < 0.4
    await still_serving(daemon)


@pytest_twisted.ensureDeferred
async def test_a_chunked_body_growing_past_the_limit_is_refused(daemon_factory):
    daemon = await daemon_factory(toml=LIMITS)
    client = await post_by_hand(
        daemon, b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    for _ in range(3):
        client.transport.write(b"400\r\n" + b" " * 1024 + b"\r\n")
    answer = await client.closed.addTimeout(5, reactor)
    assert status_of(answer) == 413
    await still_serving(daemon)


@pytest_twisted.ensureDeferred
async def test_a_body_at_the_limit_is_accepted(daemon_factory, consumer):
    daemon = await daemon_factory(toml=LIMITS)
    body = json.dumps({**NOTIFICATION, "text": ""}).encode()
    body = body[:-1] + b" " * (2048 - len(body)) + b"}"
    assert len(body) == 2048
    response, answer = await daemon.post("/gate/Notification/Acme", body)
    assert response.code == 200, answer
    await consumer.get()


@pytest_twisted.ensureDeferred
async def test_a_request_trickling_in_is_cut_after_its_deadline(daemon_factory):
    daemon = await daemon_factory(toml=LIMITS)
    client = await post_by_hand(daemon)
    started = reactor.seconds()
    # A byte now and then keeps the idle timer quiet; the deadline still comes.
    trickle = reactor.callLater(0.3, client.transport.write, b"X-Slow: 1\r\n")
    answer = await client.closed.addTimeout(5, reactor)
    if trickle.active():
        trickle.cancel()
    assert status_of(answer) == 408
    assert 0.4 < reactor.seconds() - started < 3
    await still_serving(daemon)


@pytest_twisted.ensureDeferred
async def test_an_idle_connection_is_closed(daemon_factory):
    daemon = await daemon_factory(toml=LIMITS)
    client = await connect_collector(daemon.url)
    started = reactor.seconds()
    answer = await client.closed.addTimeout(5, reactor)
    assert answer == b""
    assert reactor.seconds() - started < 3


@pytest_twisted.ensureDeferred
async def test_oversized_headers_and_urls_get_4xx(daemon_factory):
    daemon = await daemon_factory()
    requests = [
        b"POST /gate/Notification/Acme HTTP/1.1\r\nHost: x\r\nX-Big: "
        + b"a" * 40_000
        + b"\r\nContent-Length: 2\r\n\r\n{}",
        b"POST /gate/Notification/" + b"a" * 40_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /gate/Notification/Acme HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-H%d: v\r\n" % index for index in range(600))
        + b"Content-Length: 2\r\n\r\n{}",
    ]
    for request in requests:
        client = await connect_collector(daemon.url)
        client.transport.write(request)
        answer = await client.closed.addTimeout(5, reactor)
        assert 400 <= status_of(answer) < 500, answer[:100]
    await still_serving(daemon)


@pytest_twisted.ensureDeferred
async def test_other_content_types_are_415(daemon_factory, consumer):
    daemon = await daemon_factory()
    body = json.dumps(NOTIFICATION)
    for content_type in ("application/xml", "image/png", "text/html; charset=utf-8"):
        response, answer = await daemon.post(
            "/gate/Notification/Acme", body, headers={"Content-Type": content_type}
        )
        assert response.code == 415, answer
        assert answer.startswith(b"Unsupported media type.\n")
    # twisted.web parses multipart bodies itself, and refuses this one first.
    response, answer = await daemon.post(
        "/gate/Notification/Acme", body, headers={"Content-Type": "multipart/form-data; b=x"}
    )
    assert 400 <= response.code < 500
    await consumer.expect_nothing()
    # What callers of the older system send is read as JSON.
    for content_type in ("application/json; charset=utf-8", "text/plain", "", "x/y+json"):
        response, answer = await daemon.post(
            "/gate/Notification/Acme", body, headers={"Content-Type": content_type}
        )
        assert response.code == 200, (content_type, answer)
    response, answer = await daemon.post(
        "/gate/Notification/Acme",
        body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.code == 200, answer


@pytest_twisted.ensureDeferred
async def test_invalid_utf8_and_nesting_bombs_are_400(daemon_factory, consumer):
    daemon = await daemon_factory()
    bodies = [
        b'{"service": "\xff\xfe", "group": "ops", "type": "deploy"}',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 5_000 + b"1" + b"}" * 5_000,
        json.dumps(
            {**NOTIFICATION, "rawContent": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}
        ).replace("[]", "[" * 70 + "]" * 70),
    ]
    for body in bodies:
        response, answer = await daemon.post("/gate/Notification/Acme", body)
        assert response.code == 400, answer[:200]
        assert answer.startswith(b"Bad request.\n")
    await consumer.expect_nothing()
    await still_serving(daemon)
