"""Server-sent events (reference §10): ``GET /events`` read from the archive stream.

The whole daemon runs in the test's reactor (or as a process where a restart
or its memory is measured), on the real broker, with the archive on: each
test deletes its stream and exchange at the end. Events are counted by id:
none missing, none twice, in order.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass, replace

import pytest_twisted
import treq
import treq.client
from twisted.internet import defer, reactor, threads
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.web.client import Agent, HTTPConnectionPool

from notifications.amqp.connection import connect
from notifications.amqp.stream import StreamReader
from notifications.events import NOT_CONNECTED
from tests.conftest import make_config, start_whole_daemon, wait_for
from tests.helpers import listen_proxy
from tests.processes import request, start_twistd, wait_until

ARCHIVE = '\n[archive]\nmax_age = "1h"\nmax_bytes = 10000000\nsegment_bytes = 1000000\n'
TOKEN = "dashboard-token-0123456789"
CI_TOKEN = "ci-script-token-0123456789"
MUTE_TOKEN = "mute-consumer-token-0123456789"


def consumers_toml(events: str = "heartbeat = 0.5\n") -> str:
    return (
        ARCHIVE
        + f"\n[events]\n{events}"
        + "\n[[consumers]]\n"
        + f'name = "dashboard"\ntoken = "{TOKEN}"\npatterns = ["acme.#", "*.ops.#"]\n'
        + "\n[[consumers]]\n"
        + f'name = "ci"\ntoken = "{CI_TOKEN}"\npatterns = ["#"]\n'
        + "\n[[consumers]]\n"
        + f'name = "mute"\ntoken = "{MUTE_TOKEN}"\npatterns = []\n'
    )


def notification(text: str, project: str = "Acme", group: str = "ops", service="Deployer"):
    return {"service": service, "project": project, "group": group, "type": "deploy", "text": text}


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


@pytest_twisted.async_yield_fixture
async def archived(broker):
    """The archive stream (and the exchange) deleted at the end."""
    yield broker
    client, channel = await connect(reactor, broker)
    try:
        await channel.queue_delete(queue=f"{broker.exchange}.archive")
        await channel.exchange_delete(exchange=broker.exchange)
    finally:
        await client.close(within=2)


@dataclass
class Event:
    id: str | None
    name: str
    data: bytes


class EventsReader(Protocol):
    """Reads a ``text/event-stream`` body as it comes: events, comments, the retry line."""

    def __init__(self) -> None:
        self.buffer = b""
        self.events: list[Event] = []
        self.comments: list[bytes] = []
        self.retry: int | None = None
        self.ended: defer.Deferred = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.buffer += data
        while b"\n\n" in self.buffer:
            block, self.buffer = self.buffer.split(b"\n\n", 1)
            fields: dict[str, str] = {}
            data_lines: list[bytes] = []
            for line in block.split(b"\n"):
                if line.startswith(b":"):
                    self.comments.append(line)
                    continue
                name, _, value = line.partition(b":")
                value = value[1:] if value.startswith(b" ") else value
                if name == b"data":
                    data_lines.append(value)
                else:
                    fields[name.decode()] = value.decode()
            if "retry" in fields:
                self.retry = int(fields["retry"])
            if "event" in fields or data_lines:
                self.events.append(
                    Event(fields.get("id"), fields.get("event", "message"), b"\n".join(data_lines))
                )

    def connectionLost(self, reason) -> None:
        self.ended.callback(None)

    def notifications(self) -> list[tuple[int, dict]]:
        return [(int(e.id), json.loads(e.data)) for e in self.events if e.name == "notification"]

    def texts(self) -> list[str]:
        return [value["text"] for _, value in self.notifications()]

    def gaps(self) -> list[dict]:
        return [json.loads(e.data) for e in self.events if e.name == "gap"]

    async def close(self) -> None:
        self.transport.stopProducing()
        await self.ended


class Stream:
    """One ``GET /events``: its answer, and its reader when it is a stream."""

    def __init__(self, response, reader: EventsReader | None, body: bytes):
        self.response = response
        self.reader = reader
        self.body = body

    @property
    def code(self) -> int:
        return self.response.code

    def header(self, name: str) -> str | None:
        values = self.response.headers.getRawHeaders(name)
        return values[0] if values else None


async def open_stream(
    url: str,
    token: str | None = TOKEN,
    patterns=(),
    last_id: str | int | None = None,
    in_query: bool = False,
) -> Stream:
    """``GET <url>/events`` on a connection of its own (closed with the stream).

    Asked again, as a client would, while the daemon says it is not connected
    to the broker yet (a process just started: its reading connection comes up
    after the publisher's).
    """
    deadline = reactor.seconds() + 15
    while True:
        stream = await _get_events(url, token, patterns, last_id, in_query)
        if stream.code != 503 or NOT_CONNECTED.encode() not in stream.body:
            return stream
        assert reactor.seconds() < deadline, "the daemon never connected to read"
        await sleep(0.2)


async def _get_events(url, token, patterns, last_id, in_query) -> Stream:
    client = treq.client.HTTPClient(
        Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
    )
    params = [("pattern", pattern) for pattern in patterns]
    headers = {}
    if token is not None and in_query:
        params.append(("token", token))
    elif token is not None:
        headers["Authorization"] = [f"Bearer {token}"]
    if last_id is not None:
        headers["Last-Event-ID"] = [str(last_id)]
    response = await client.get(
        url + "/events", params=params, headers=headers, unbuffered=True
    ).addTimeout(40, reactor)
    if response.code != 200:
        return Stream(response, None, await response.content())
    reader = EventsReader()
    response.deliverBody(reader)
    return Stream(response, reader, b"")


async def post_all(daemon, values: list[dict]) -> None:
    for value in values:
        code, answer = await daemon.post(f"/gate/Notification/{value['project']}", value)
        assert code == 200, answer


# Rights ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_consumer_reads_exactly_what_its_patterns_and_its_rights_both_match(
    tmp_path, archived
):
    daemon = await start_whole_daemon(make_config(tmp_path, archived, toml=consumers_toml()))
    try:
        # dashboard may read acme.# and *.ops.#; it asks for two narrower patterns.
        narrow = await open_stream(daemon.url, patterns=["acme.*.deployer.#", "beta.ops.#"])
        everything = await open_stream(daemon.url)  # no pattern: all it may read
        assert (narrow.code, everything.code) == (200, 200), narrow.body
        assert narrow.header("content-type") == "text/event-stream; charset=utf-8"
        assert narrow.header("cache-control") == "no-store"
        values = [
            notification("acme ops deployer"),  # both
            notification("acme ci deployer", group="ci"),  # narrow: acme.*.deployer.#
            notification("acme ops jenkins", service="Jenkins"),  # allowed, not asked for
            notification("beta ops", project="Beta"),  # narrow: beta.ops.#
            notification("beta ci", project="Beta", group="ci"),  # not allowed
            notification("gamma ops", project="Gamma"),  # allowed (*.ops.#), not asked for
        ]
        await post_all(daemon, values)
        await wait_for(lambda: len(everything.reader.notifications()) == 5, timeout=10)
        await sleep(1.2)  # anything else would arrive meanwhile; heartbeats too
        assert narrow.reader.texts() == ["acme ops deployer", "acme ci deployer", "beta ops"]
        assert everything.reader.texts() == [
            "acme ops deployer",
            "acme ci deployer",
            "acme ops jenkins",
            "beta ops",
            "gamma ops",
        ]
        ids = [event_id for event_id, _ in everything.reader.notifications()]
        assert ids == sorted(set(ids))
        assert narrow.reader.retry == 2000
        assert b": keep-alive" in narrow.reader.comments
        assert everything.reader.gaps() == []
        figures = daemon.daemon.events.figures()
        assert (figures["open"], figures["sent"]) == (2, 8)
        status = json.loads(await (await treq.get(daemon.url + "/status.json")).content())
        assert status["events"] == {
            "enabled": True,
            "open": 2,
            "opened": 2,
            "sent": 8,
            "tooSlow": 0,
            "maxStreams": 100,
        }
        await narrow.reader.close()
        await everything.reader.close()
        await wait_for(lambda: not daemon.daemon.events.streams)
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_tokens_patterns_and_limits_are_checked(tmp_path, archived):
    toml = consumers_toml(events="max_streams = 1\n")
    daemon = await start_whole_daemon(make_config(tmp_path, archived, toml=toml))
    try:
        missing = await open_stream(daemon.url, token=None)
        assert missing.code == 401
        assert missing.header("www-authenticate") == 'Bearer realm="notifications"'
        assert missing.body.startswith(b"Unauthorized.\n")
        wrong = await open_stream(daemon.url, token="not-a-consumer-token")
        assert wrong.code == 401
        assert wrong.header("www-authenticate") == (
            'Bearer realm="notifications", error="invalid_token"'
        )
        outside = await open_stream(daemon.url, patterns=["acme.#", "beta.#"])
        assert outside.code == 403
        assert outside.body.decode().splitlines() == [
            "Forbidden.",
            "'beta.#' matches routing keys this consumer may not read "
            "(it may read acme.# *.ops.#).",
        ]
        assert (await open_stream(daemon.url, patterns=["#"])).code == 403
        assert (await open_stream(daemon.url, token=MUTE_TOKEN)).code == 403
        malformed = await open_stream(daemon.url, patterns=["acme.de*"])
        assert malformed.code == 400
        assert b"'acme.de*' is not a routing-key pattern" in malformed.body
        assert (await open_stream(daemon.url, last_id="yesterday")).code == 400
        for answer in (missing, wrong, outside, malformed):
            for secret in (TOKEN, CI_TOKEN, MUTE_TOKEN):
                assert secret.encode() not in answer.body
        # A browser's EventSource cannot set headers: the token may be in the query.
        first = await open_stream(daemon.url, in_query=True, patterns=["acme.#"])
        assert first.code == 200
        full = await open_stream(daemon.url, token=CI_TOKEN)
        assert full.code == 503
        assert full.header("retry-after") == "5"
        assert full.body == b"Service unavailable.\nToo many event streams are open, retry later.\n"
        await first.reader.close()
        await wait_for(lambda: not daemon.daemon.events.streams)
        second = await open_stream(daemon.url, token=CI_TOKEN)
        assert second.code == 200
        await second.reader.close()
        assert daemon.daemon.events.refused == {401: 2, 403: 3, 400: 2, 503: 1}
        # /events is on the public surface too (it is authenticated).
        app = daemon.daemon.app
        assert b"events" in app.root("public").children
        assert b"events" in app.root("admin").children
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_without_the_archive_the_event_stream_is_503(tmp_path, broker):
    toml = consumers_toml().replace(ARCHIVE, "\n[archive]\nenabled = false\n")
    daemon = await start_whole_daemon(make_config(tmp_path, broker, toml=toml))
    try:
        stream = await open_stream(daemon.url)
        assert stream.code == 503
        assert stream.header("retry-after") is None  # not worth retrying
        assert stream.body == (
            b"Service unavailable.\n"
            b"The event stream reads the archive, which is off ([archive] enabled = false).\n"
        )
    finally:
        await daemon.stop()
        client, channel = await connect(reactor, broker)
        await channel.exchange_delete(exchange=broker.exchange)
        await client.close(within=2)


# Resuming ------------------------------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_reconnection_with_last_event_id_misses_nothing_and_repeats_nothing(
    tmp_path, archived
):
    daemon = await start_whole_daemon(make_config(tmp_path, archived, toml=consumers_toml()))
    try:
        stream = await open_stream(daemon.url, patterns=["acme.#"])
        await post_all(daemon, [notification(f"a{i}") for i in range(10)])
        await wait_for(lambda: len(stream.reader.notifications()) == 10)
        last_id = stream.reader.events[-1].id
        await stream.reader.close()
        # Missed while away, among others it does not ask for.
        await post_all(
            daemon,
            [
                value
                for i in range(10)
                for value in (notification(f"b{i}"), notification(f"x{i}", project="Other"))
            ],
        )
        again = await open_stream(daemon.url, patterns=["acme.#"], last_id=last_id)
        assert again.code == 200
        await post_all(daemon, [notification(f"c{i}") for i in range(5)])
        await wait_for(lambda: len(again.reader.notifications()) == 15)
        await sleep(1.0)
        assert again.reader.texts() == [f"b{i}" for i in range(10)] + [f"c{i}" for i in range(5)]
        ids = [int(event_id) for event_id, _ in again.reader.notifications()]
        assert ids == sorted(set(ids)) and ids[0] > int(last_id)
        assert again.reader.gaps() == []
        await again.reader.close()

        # An id the archive never gave (it was started again, say): a gap, then live.
        beyond = await open_stream(daemon.url, patterns=["acme.#"], last_id=ids[-1] + 10**9)
        assert beyond.code == 200
        await wait_for(lambda: beyond.reader.events)
        [gap] = beyond.reader.gaps()
        assert gap["lastEventId"] == str(ids[-1] + 10**9)
        assert "not an event id of this archive" in gap["reason"]
        await post_all(daemon, [notification("after the gap")])
        await wait_for(lambda: beyond.reader.texts() == ["after the gap"])
        await beyond.reader.close()
    finally:
        await daemon.stop()


async def first_offset(broker, queue: str) -> int:
    client, _ = await connect(reactor, broker)
    try:
        reader = await StreamReader(client, queue, "first", prefetch=1).start()
        delivery = await reader.get().addTimeout(10, reactor)
        await reader.close()
        return delivery.offset
    finally:
        await client.close(within=2)


@pytest_twisted.ensureDeferred
async def test_resuming_after_what_the_retention_dropped_says_gap(tmp_path, archived):
    # Tiny segments, a few notifications each: the first ones are soon dropped.
    tiny = '\n[archive]\nmax_age = "1h"\nmax_bytes = 3000\nsegment_bytes = 1000\n'
    toml = consumers_toml().replace(ARCHIVE, tiny)
    daemon = await start_whole_daemon(make_config(tmp_path, archived, toml=toml))
    queue = f"{archived.exchange}.archive"
    try:
        stream = await open_stream(daemon.url, patterns=["acme.#"])
        await post_all(daemon, [notification("seen")])
        await wait_for(lambda: stream.reader.texts() == ["seen"])
        seen = int(stream.reader.events[-1].id)
        await stream.reader.close()
        await post_all(daemon, [notification(f"later {i}") for i in range(60)])
        deadline = reactor.seconds() + 30
        while await first_offset(archived, queue) <= seen:
            assert reactor.seconds() < deadline, "the retention did not drop the first segments"
            await sleep(1)
        first = await first_offset(archived, queue)
        again = await open_stream(daemon.url, patterns=["acme.#"], last_id=seen)
        assert again.code == 200
        await wait_for(lambda: again.reader.notifications())
        [gap] = again.reader.gaps()
        assert gap == {
            "lastEventId": str(seen),
            "reason": "no longer in the archive: notifications may be lost",
        }
        assert again.reader.events[0].name == "gap"  # said before anything else
        await wait_for(lambda: again.reader.texts()[-1:] == ["later 59"])
        ids = [event_id for event_id, _ in again.reader.notifications()]
        assert ids[0] >= first and ids == sorted(set(ids))
        await again.reader.close()
    finally:
        await daemon.stop()


@pytest_twisted.ensureDeferred
async def test_resuming_across_a_daemon_restart(tmp_path, archived):
    make_config(tmp_path, archived, toml=consumers_toml())
    daemon = start_twistd(tmp_path)
    try:
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(
            wait_until, lambda: "are archived in the stream" in daemon.output()
        )
        stream = await open_stream(daemon.url, patterns=["acme.#"])
        assert stream.code == 200, stream.body
        await threads.deferToThread(post_process, daemon.port, [f"r{i}" for i in range(8)])
        await wait_for(lambda: len(stream.reader.notifications()) == 8)
        # SIGTERM ends the stream cleanly: the client sees its end.
        await threads.deferToThread(daemon.stop)
        await stream.reader.ended.addTimeout(10, reactor)
        last_id = stream.reader.events[-1].id
        daemon.start()
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(post_process, daemon.port, [f"s{i}" for i in range(6)])
        # This time with the token in the query, as a browser's EventSource sends it.
        again = await open_stream(daemon.url, patterns=["acme.#"], last_id=last_id, in_query=True)
        assert again.code == 200, again.body
        await threads.deferToThread(post_process, daemon.port, [f"t{i}" for i in range(4)])
        await wait_for(lambda: len(again.reader.notifications()) == 10)
        await sleep(1.0)
        assert again.reader.texts() == [f"s{i}" for i in range(6)] + [f"t{i}" for i in range(4)]
        assert again.reader.gaps() == []
        every = [int(i) for i, _ in stream.reader.notifications() + again.reader.notifications()]
        assert every == sorted(set(every))  # 18 events, none twice
    finally:
        await threads.deferToThread(daemon.stop)  # ends the stream: its access line is written
    await again.reader.ended.addTimeout(10, reactor)
    daemon.assert_clean()
    output = daemon.output()
    assert '"GET /events?pattern=redacted&token=redacted HTTP/1.1" 200' in output
    assert TOKEN not in output


def post_process(port: int, texts: list[str]) -> None:
    for text in texts:
        code, answer = request(
            port, "POST", "/gate/Notification/Acme", json.dumps(notification(text)).encode()
        )
        assert code == 200, answer


# A client that does not read ----------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def stalled_client(port: int, token: str) -> socket.socket:
    """A client that asks for the stream, then never reads (a small receive buffer)."""
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client.connect(("127.0.0.1", port))
    client.sendall(
        f"GET /events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    return client


def post_big(port: int, count: int, size: int) -> None:
    padding = "x" * size
    for index in range(count):
        body = json.dumps(notification(f"big {index} {padding}")).encode()
        code, answer = request(port, "POST", "/gate/Notification/Acme", body)
        assert code == 200, answer


@pytest_twisted.ensureDeferred
async def test_a_client_that_never_reads_is_disconnected_and_memory_stays_bounded(
    tmp_path, archived
):
    make_config(tmp_path, archived, toml=consumers_toml(events="max_buffer = 262144\n"))
    daemon = start_twistd(tmp_path)
    client = None
    try:
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(
            wait_until, lambda: "are archived in the stream" in daemon.output()
        )
        # Warm up: the gates' first calls and a stream read to the end.
        await threads.deferToThread(post_big, daemon.port, 50, 20_000)
        warm = await open_stream(daemon.url, token=CI_TOKEN)
        await threads.deferToThread(post_big, daemon.port, 50, 20_000)
        await wait_for(lambda: len(warm.reader.notifications()) == 50, timeout=20)
        await warm.reader.close()
        before = rss_kib(daemon.pid)
        client = await threads.deferToThread(stalled_client, daemon.port, CI_TOKEN)
        await threads.deferToThread(
            wait_until, lambda: "Consumer ci reads # from" in daemon.output()
        )
        # 100 MB of notifications while it does not read.
        peak = before
        started = time.monotonic()
        for _ in range(20):
            await threads.deferToThread(post_big, daemon.port, 50, 100_000)
            peak = max(peak, rss_kib(daemon.pid))
        flowed = time.monotonic() - started
        await threads.deferToThread(
            wait_until, lambda: "Disconnected consumer ci" in daemon.output()
        )
        after = rss_kib(daemon.pid)
        lines = daemon.output().splitlines()
        line = next(text for text in lines if "Disconnected consumer ci" in text)
        print(
            f"\nRSS of the daemon: {before} KiB before, peak {peak} KiB while 1000 "
            f"notifications of 100 KB flowed ({flowed:.1f} s), {after} KiB after; {line}"
        )
        assert "it reads too slowly" in line
        # What the client never read is not kept: far less than the 100 MB sent.
        assert peak - before < 40_000, (before, peak)
        metrics = request(daemon.port, "GET", "/metrics")[1].decode()
        assert "notifications_event_streams 0.0" in metrics
        assert "notifications_event_streams_too_slow_total 1.0" in metrics
        # The connection was dropped: the client sees its end (a reset, or the end of
        # what it had received), not a stream that stays open (recv would time out).
        client.settimeout(10)
        try:
            while client.recv(65536):
                pass
        except ConnectionResetError:
            pass
    finally:
        if client is not None:
            client.close()
        await threads.deferToThread(daemon.stop)
    daemon.assert_clean()


def test_the_stalled_client_helper_really_does_not_read():
    # The measure above depends on it: a client socket that only sends.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = stalled_client(server.getsockname()[1], "t")
    accepted, _ = server.accept()
    assert accepted.recv(1024).startswith(b"GET /events HTTP/1.1")
    accepted.setblocking(False)
    sent = 0
    try:
        while True:
            sent += accepted.send(b"x" * 65536)
    except BlockingIOError:
        pass
    assert sent < 20_000_000  # the kernel's buffers fill and stop the sender
    for sock in (accepted, client, server):
        sock.close()
    assert os.path.exists("/proc/self/status")


# The broker connection lost, a reload ------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_lost_broker_connection_keeps_the_streams_and_loses_nothing(tmp_path, archived):
    proxy, listening = await listen_proxy()
    through_proxy = replace(archived, port=listening.getHost().port)
    daemon = await start_whole_daemon(make_config(tmp_path, through_proxy, toml=consumers_toml()))
    try:
        stream = await open_stream(daemon.url, patterns=["acme.#"])
        await post_all(daemon, [notification(f"before {i}") for i in range(5)])
        await wait_for(lambda: len(stream.reader.notifications()) == 5)
        proxy.sever()  # both connections, the publisher's and the reading one
        # Accepted meanwhile (they wait in the outbox), then published.
        await post_all(daemon, [notification(f"during {i}") for i in range(5)])
        await wait_for(lambda: daemon.daemon.consumer.connected, timeout=15)
        await post_all(daemon, [notification(f"after {i}") for i in range(5)])
        await wait_for(lambda: len(stream.reader.notifications()) == 15, timeout=15)
        await sleep(1.0)
        assert stream.reader.texts() == [
            f"{when} {i}" for when in ("before", "during", "after") for i in range(5)
        ]
        ids = [event_id for event_id, _ in stream.reader.notifications()]
        assert ids == sorted(set(ids))
        assert stream.reader.gaps() == []
        assert not stream.reader.ended.called  # the HTTP stream stayed open
        await stream.reader.close()
    finally:
        await daemon.stop()
        await listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_a_reload_applies_consumers_at_once_and_subscriptions_at_the_next_start(
    tmp_path, archived
):
    lines: list[str] = []

    def observe(event: dict) -> None:
        lines.append(formatEvent(event) or "")

    daemon = await start_whole_daemon(make_config(tmp_path, archived, toml=consumers_toml()))
    globalLogPublisher.addObserver(observe)
    try:
        dashboard = await open_stream(daemon.url, patterns=["acme.#"])
        ops = await open_stream(daemon.url, patterns=["beta.ops.#"])
        ci = await open_stream(daemon.url, token=CI_TOKEN)
        assert (dashboard.code, ops.code, ci.code) == (200, 200, 200)
        path = tmp_path / "notifications.toml"
        text = path.read_text()
        text = text.replace('patterns = ["acme.#", "*.ops.#"]', 'patterns = ["*.ops.#"]')
        text = text.replace(CI_TOKEN, "ci-token-after-the-reload")
        text += (
            '\n[[subscriptions]]\nname = "later"\nurl = "https://relay.example.org/hook"\n'
            'patterns = ["#"]\nsecret = "s"\n'
        )
        path.write_text(text)
        await daemon.daemon.reloader.reload()
        # dashboard may no longer read acme.#, ci's token changed: both streams end.
        await dashboard.reader.ended.addTimeout(5, reactor)
        await ci.reader.ended.addTimeout(5, reactor)
        assert not ops.reader.ended.called  # beta.ops.# is still granted
        assert (await open_stream(daemon.url, patterns=["acme.#"])).code == 403
        assert (await open_stream(daemon.url, token=CI_TOKEN)).code == 401
        again = await open_stream(daemon.url, token="ci-token-after-the-reload")
        assert again.code == 200
        [line] = [line for line in lines if line.startswith("Configuration reloaded")]
        applied, _, later = line.partition("; at the next start: ")
        assert applied.endswith("applied now: consumers")
        # (broker too: the test's Config has its own connect_timeout, the file does not.)
        assert "subscriptions" in later.split(", ")
        assert daemon.daemon.subscriptions.subscribers == {}
        await ops.reader.close()
        await again.reader.close()
    finally:
        globalLogPublisher.removeObserver(observe)
        await daemon.stop()
