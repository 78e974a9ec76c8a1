"""Outgoing webhooks (reference §11): the daemon POSTs what a subscription matches.

The whole daemon runs in the test's reactor, on the real broker; receivers
are real HTTP servers on loopback (``tests.fakes.FakeReceiver``). Every
notification is counted by id; signatures are checked with the standard
library, as a receiver would. Each test deletes the quorum queues, the
dead-letter queue and exchange it made.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import os
import sys
import textwrap

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, threads
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, ProcessProtocol, Protocol
from twisted.internet.task import deferLater
from txamqp.content import Content

from notifications.amqp.connection import ChannelEvents, connect
from notifications.amqp.fieldtable import Int64
from notifications.subscriptions import delivery_count
from tests.conftest import make_config, start_whole_daemon, wait_for
from tests.fakes import FakeReceiver
from tests.helpers import closed_port
from tests.processes import ROOT, request, start_twistd, wait_until
from tests.test_cli import cli

SECRET = "receiver-signing-secret"


def subscription_toml(name: str, url: str, patterns=("acme.#",), **settings) -> str:
    """A ``[[subscriptions]]`` entry (settings written as TOML values)."""
    lines = [
        "[[subscriptions]]",
        f'name = "{name}"',
        f'url = "{url}"',
        f"patterns = {json.dumps(list(patterns))}",
        f'secret = "{SECRET}"',
    ]
    lines += [f"{key} = {json.dumps(value)}" for key, value in settings.items()]
    return "\n" + "\n".join(lines) + "\n"


def notification(text: str, project: str = "Acme") -> dict:
    return {
        "service": "Deployer",
        "project": project,
        "group": "ops",
        "type": "deploy",
        "text": text,
    }


def verified(recorded) -> dict:
    """The notification a receiver got, once its signature is checked as a receiver would."""
    expected = "sha256=" + hmac.new(SECRET.encode(), recorded.body, hashlib.sha256).hexdigest()
    signature = recorded.headers["x-notifications-signature-256"]
    assert hmac.compare_digest(signature, expected), "the signature does not verify"
    return json.loads(recorded.body)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


@pytest_twisted.ensureDeferred
async def test_a_receiver_down_for_ten_seconds_gets_everything_once_in_order(
    tmp_path, broker, subscribed
):
    receiver = await FakeReceiver().start()
    port = receiver.port
    await receiver.stop()  # down: connections are refused
    subscribed.append("relay")
    toml = subscription_toml(
        "relay",
        f"http://127.0.0.1:{port}/hook",
        allow_private=True,
        initial_delay=0.2,
        max_delay=1.0,
    )
    daemon = await start_whole_daemon(make_config(tmp_path, broker, toml=toml))
    try:
        down_since = reactor.seconds()
        texts = [f"n{index}" for index in range(30)]
        for text in texts:
            code, answer = await daemon.post("/gate/Notification/Acme", notification(text))
            assert code == 200, answer
            # Another project, not matched by acme.#: never POSTed.
            code, _ = await daemon.post("/gate/Notification/Other", notification("x", "Other"))
            assert code == 200
        await sleep(max(0.0, down_since + 10 - reactor.seconds()))
        assert receiver.requests == []
        await receiver.start(port)
        await wait_for(lambda: len(receiver.requests) >= len(texts), timeout=20)
        await sleep(1.5)  # anything sent twice would arrive meanwhile
        received = [verified(recorded) for recorded in receiver.requests]
        assert [value["text"] for value in received] == texts
        assert {value["project"] for value in received} == {"Acme"}
        ids = [recorded.headers["x-notifications-id"] for recorded in receiver.requests]
        assert len(set(ids)) == len(texts)
        # The first one had been tried while the receiver was down; the others once.
        attempts = [int(r.headers["x-notifications-attempt"]) for r in receiver.requests]
        assert attempts[0] > 3 and attempts[1:] == [1] * (len(texts) - 1)
        headers = receiver.requests[0].headers
        assert headers["content-type"] == "application/json"
        assert headers["x-notifications-routing-key"] == "acme.ops.deployer.deploy"
        assert int(headers["x-notifications-timestamp"]) <= reactor.seconds()
        figures = daemon.daemon.subscriptions.subscribers["relay"].figures
        assert figures.delivered == len(texts)
        assert figures.retried == attempts[0] - 1
        assert figures.dead_lettered == 0
        assert "connection refused" in figures.last_error
    finally:
        await daemon.stop()
        await receiver.stop()


async def failing_receiver(tmp_path, broker, subscribed, max_delay: float, max_attempts: int):
    """A receiver answering 500 to everything, and a configuration subscribing "flaky" to it."""
    receiver = await FakeReceiver().start()
    receiver.mode = "http-500"
    subscribed.append("flaky")
    toml = subscription_toml(
        "flaky",
        receiver.url + "/hook",
        allow_private=True,
        initial_delay=0.3,
        max_delay=max_delay,
        max_attempts=max_attempts,
    )
    return receiver, make_config(tmp_path, broker, toml=toml)


@pytest_twisted.ensureDeferred
async def test_a_receiver_failing_forever_gets_max_attempts_then_the_dead_letter_queue(
    tmp_path, broker, subscribed
):
    receiver, config = await failing_receiver(tmp_path, broker, subscribed, 2.0, 4)
    config_file = tmp_path / "notifications.toml"
    daemon = await start_whole_daemon(config)
    subscriber = daemon.daemon.subscriptions.subscribers["flaky"]
    try:
        code, _ = await daemon.post("/gate/Notification/Acme", notification("doomed"))
        assert code == 200
        await wait_for(lambda: subscriber.figures.dead_lettered == 1, timeout=20)
        await sleep(1.0)  # no fifth attempt comes
        assert len(receiver.requests) == 4
        assert [int(r.headers["x-notifications-attempt"]) for r in receiver.requests] == [
            1,
            2,
            3,
            4,
        ]
        ids = {r.headers["x-notifications-id"] for r in receiver.requests}
        assert len(ids) == 1  # the same id on every attempt
        times = [r.time for r in receiver.requests]
        waits = [later - earlier for earlier, later in itertools.pairwise(times)]
        # Doubling from initial_delay (0.3, 0.6, 1.2 s), plus up to 0.3 s of jitter.
        for wait, least in zip(waits, (0.3, 0.6, 1.2), strict=True):
            assert wait >= least - 0.02, waits
        assert waits[2] > waits[0], waits
        assert subscriber.figures.retried == 3
        assert "HTTP 500" in subscriber.figures.last_error
        await daemon.daemon.subscriptions._refresh()  # the queues' depths, as every 5 s
        metrics = (await (await treq.get(daemon.url + "/metrics")).content()).decode()
        for line in (
            'notifications_subscription_delivered_total{subscription="flaky"} 0.0',
            'notifications_subscription_retried_total{subscription="flaky"} 3.0',
            'notifications_subscription_dead_lettered_total{subscription="flaky"} 1.0',
            'notifications_subscription_waiting{subscription="flaky"} 0.0',
            'notifications_subscription_dead{subscription="flaky"} 1.0',
        ):
            assert line in metrics, metrics
    finally:
        await daemon.stop()  # keeps the figures in the storage directory

    code, out, err = await cli(config_file, "subscriptions", "status")
    assert code == 0, err
    [row] = [line.split() for line in out.splitlines() if line.startswith("flaky")]
    # subscription, receiver, waiting, delivered, retried, dead, then the last error.
    assert row[:6] == ["flaky", receiver.url, "0", "0", "3", "1"], out
    assert "HTTP 500" in out

    receiver.mode = "normal"
    code, out, err = await cli(config_file, "subscriptions", "replay", "flaky")
    assert (code, err) == (0, ""), err
    assert out.startswith("1 notifications moved from ")

    daemon = await start_whole_daemon(config)
    try:
        await wait_for(lambda: len(receiver.requests) == 5, timeout=10)
        await sleep(1.0)
        assert len(receiver.requests) == 5
        replayed = receiver.requests[-1]
        assert verified(replayed)["text"] == "doomed"
        assert replayed.headers["x-notifications-id"] in ids
        assert replayed.headers["x-notifications-attempt"] == "1"
        assert replayed.headers["x-notifications-routing-key"] == "acme.ops.deployer.deploy"
    finally:
        await daemon.stop()
        await receiver.stop()
    code, out, err = await cli(config_file, "subscriptions", "status")
    [row] = [line.split() for line in out.splitlines() if line.startswith("flaky")]
    assert row[:6] == ["flaky", receiver.url, "0", "1", "3", "0"], out


@pytest_twisted.ensureDeferred
async def test_a_hanging_receiver_does_not_delay_another(tmp_path, broker, subscribed):
    hanging = await FakeReceiver().start()
    hanging.mode = "hang"
    healthy = await FakeReceiver().start()
    subscribed.extend(["hanging", "healthy"])
    toml = "[http]\ntimeout = 4\n" + "".join(
        subscription_toml(name, receiver.url + "/hook", allow_private=True, max_delay=2.0)
        for name, receiver in (("hanging", hanging), ("healthy", healthy))
    )
    daemon = await start_whole_daemon(make_config(tmp_path, broker, toml=toml))
    try:
        posted = []
        for index in range(10):
            posted.append(reactor.seconds())
            code, _ = await daemon.post("/gate/Notification/Acme", notification(f"t{index}"))
            assert code == 200
            await sleep(0.2)
        await wait_for(lambda: len(healthy.requests) == 10, timeout=5)
        delays = [r.time - sent for r, sent in zip(healthy.requests, posted, strict=True)]
        # Well within the 4 s the hanging one holds each attempt (a loaded machine aside).
        assert max(delays) < 2.0, delays
        assert [verified(r)["text"] for r in healthy.requests] == [f"t{i}" for i in range(10)]
        # The hanging receiver holds the first one (nothing after it goes there).
        assert [verified(r)["text"] for r in hanging.requests] == ["t0"]
    finally:
        await daemon.stop()
        await hanging.stop()
        await healthy.stop()


class _Counting(Factory):
    """A TCP server that only counts the connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0

    def buildProtocol(self, addr):
        self.connections += 1
        return Protocol()


@pytest_twisted.ensureDeferred
async def test_a_name_resolving_to_a_private_address_is_refused_when_connecting(
    tmp_path, broker, subscribed
):
    counting = _Counting()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(counting)
    number = port.getHost().port
    subscribed.append("sneaky")
    # https and a name: the configuration accepts it; /etc/hosts says localhost is 127.0.0.1.
    toml = subscription_toml(
        "sneaky", f"https://localhost:{number}/hook", initial_delay=0.2, max_attempts=2
    )
    daemon = await start_whole_daemon(make_config(tmp_path, broker, toml=toml))
    subscriber = daemon.daemon.subscriptions.subscribers["sneaky"]
    try:
        code, _ = await daemon.post("/gate/Notification/Acme", notification("to localhost"))
        assert code == 200
        await wait_for(lambda: subscriber.figures.dead_lettered == 1, timeout=10)
        assert subscriber.figures.retried == 1
        error = subscriber.figures.last_error
        assert error.startswith(f"subscription sneaky at https://localhost:{number}: ")
        assert "localhost resolves to 127.0.0.1, which is not a public address" in error
        assert counting.connections == 0  # refused before connecting
    finally:
        await daemon.stop()
        await port.stopListening()


def test_a_private_address_in_the_url_is_refused_at_start(tmp_path, broker):
    from notifications.errors import ConfigError

    toml = subscription_toml("local", "http://127.0.0.1:8000/hook")
    with pytest.raises(ConfigError) as refused:
        make_config(tmp_path, broker, toml=toml)
    assert "subscriptions[0] (local): url plain http is allowed only with allow_private" in str(
        refused.value
    )
    toml = subscription_toml("local", "https://127.0.0.1:8000/hook")
    with pytest.raises(ConfigError) as refused:
        make_config(tmp_path, broker, toml=toml)
    assert "127.0.0.1 is not a public address" in str(refused.value)
    # Allowed when the subscription says so.
    toml = subscription_toml("local", "http://127.0.0.1:8000/hook", allow_private=True)
    assert make_config(tmp_path, broker, toml=toml).subscriptions[0].allow_private


# What RabbitMQ 3.10 does with a quorum queue, which the subscriber relies on ----------------


class _Deliveries(ChannelEvents):
    def __init__(self) -> None:
        self.queue: defer.DeferredQueue = defer.DeferredQueue()

    def deliver(self, message) -> None:
        self.queue.put(message)


async def _consume_one(client, queue: str):
    listener = _Deliveries()
    channel = await client.open_extra_channel(listener)
    await channel.basic_qos(prefetch_count=1)
    await channel.basic_consume(queue=queue, no_ack=False)
    message = await listener.queue.get().addTimeout(5, reactor)
    return channel, listener, message


@pytest_twisted.ensureDeferred
async def test_the_broker_requeues_a_reject_at_the_tail_and_a_closed_channel_at_the_head(broker):
    queue = f"{broker.exchange}.order"
    client, channel = await connect(reactor, broker)
    try:
        await channel.queue_declare(queue=queue, durable=True, arguments={"x-queue-type": "quorum"})
        for index in range(4):
            channel.basic_publish(
                exchange="", routing_key=queue, content=Content(str(index).encode())
            )
        await sleep(0.3)
        # A reject with requeue: the message goes to the tail (the order is lost).
        consuming, listener, first = await _consume_one(client, queue)
        assert (first.content.body, delivery_count(first)) == (b"0", 0)
        consuming.basic_reject(delivery_tag=first.delivery_tag, requeue=True)
        second = await listener.queue.get().addTimeout(5, reactor)
        assert second.content.body == b"1"
        # A closed channel: back at the head, counted in x-delivery-count (type l).
        await client.close_extra_channel(consuming)
        for count in (1, 2):
            consuming, _, again = await _consume_one(client, queue)
            headers = again.content.properties["headers"]
            assert (again.content.body, headers["x-delivery-count"]) == (b"1", count)
            assert isinstance(headers["x-delivery-count"], Int64)
            await client.close_extra_channel(consuming)
        consuming, listener, head = await _consume_one(client, queue)
        bodies = [head.content.body]
        consuming.basic_ack(delivery_tag=head.delivery_tag)
        for _ in range(3):
            message = await listener.queue.get().addTimeout(5, reactor)
            bodies.append(message.content.body)
            consuming.basic_ack(delivery_tag=message.delivery_tag)
        assert bodies == [b"1", b"2", b"3", b"0"]
        await client.close_extra_channel(consuming)
    finally:
        await channel.queue_delete(queue=queue)
        await channel.exchange_delete(exchange=broker.exchange)
        await client.close(within=2)


# The status page --------------------------------------------------------------------------


#: The cells of the webhooks table's one row, read in one go: the page redraws its
#: tables every two seconds, and an element found earlier would be stale by then.
READ_ROW = """
const rows = document.querySelectorAll("#webhook-rows tr");
if (rows.length !== 1) return null;
const cells = {};
for (const cell of rows[0].querySelectorAll("td")) cells[cell.dataset.label] = cell.innerText;
return cells;
"""


def webhook_cells(browser, url: str) -> dict[str, str]:
    """The page's row of the subscription, once it shows a retried notification waiting."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")

    def shown(driver) -> dict[str, str] | None:
        cells = driver.execute_script(READ_ROW)
        if cells and cells["Waiting"] == "1" and cells["Retried"] not in ("0", "?"):
            return cells
        return None

    cells = WebDriverWait(browser, 30).until(shown)
    cells["events"] = browser.find_element(By.ID, "events-state").text
    cells["problems"] = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    return cells


@pytest_twisted.ensureDeferred
async def test_the_status_page_shows_each_subscription(tmp_path, broker, subscribed, browser):
    port = closed_port()
    subscribed.append("down")
    toml = subscription_toml(
        "down",
        f"http://127.0.0.1:{port}/hook/path-secret-6d1f",
        allow_private=True,
        initial_delay=0.2,
        max_delay=0.5,
    )
    make_config(tmp_path, broker, toml=toml)
    daemon = start_twistd(tmp_path)
    try:
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(
            wait_until, lambda: "Connected to the broker at" in daemon.output()
        )
        body = json.dumps(notification("for nobody")).encode()
        code, _ = await threads.deferToThread(
            request, daemon.port, "POST", "/gate/Notification/Acme", body
        )
        assert code == 200
        cells = await threads.deferToThread(webhook_cells, browser, daemon.url)
    finally:
        await threads.deferToThread(daemon.stop)
    daemon.assert_clean()
    assert cells["Subscription"] == "down"
    assert cells["Receiver"] == f"http://127.0.0.1:{port}"
    assert (cells["Delivered"], cells["Dead"]) == ("0", "0")
    assert cells["Last error"].endswith(
        f"subscription down at http://127.0.0.1:{port}: connection refused"
    )
    assert cells["events"] == "off: the archive is off"
    assert cells["problems"] == []
    # The URL's path (a secret for many receivers) and the signing secret are never shown.
    for secret in ("path-secret-6d1f", SECRET):
        assert secret not in daemon.output()
        assert secret not in json.dumps(cells)


# The reference's receiver, run as written -----------------------------------------------------


def reference_receiver(port: int) -> str:
    """The Python receiver of docs/reference.rst §11.3, listening on ``port``."""
    text = (ROOT / "docs" / "reference.rst").read_text(encoding="utf-8")
    start = text.index("    import hashlib, hmac, json, os\n")
    end = text.index("serve_forever()", start) + len("serve_forever()")
    code = textwrap.dedent(text[start:end])
    assert code.count('HTTPServer(("", 8000), Receiver)') == 1
    return code.replace('HTTPServer(("", 8000)', f'HTTPServer(("127.0.0.1", {port})')


class _Printed(ProcessProtocol):
    def __init__(self) -> None:
        self.out = b""
        self.ended: defer.Deferred = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def processEnded(self, reason) -> None:
        self.ended.callback(None)


@pytest_twisted.ensureDeferred
async def test_the_receiver_of_the_reference_verifies_and_prints(tmp_path, broker, subscribed):
    port = closed_port()
    printed = _Printed()
    process = reactor.spawnProcess(
        printed,
        sys.executable,
        [sys.executable, "-c", reference_receiver(port)],
        env={**os.environ, "NOTIFICATIONS_SECRET": SECRET},
    )
    subscribed.append("documented")
    toml = subscription_toml("documented", f"http://127.0.0.1:{port}/", allow_private=True)
    daemon = await start_whole_daemon(make_config(tmp_path, broker, toml=toml))
    try:
        texts = [f"as documented {i}" for i in range(3)]
        for text in texts:
            code, _ = await daemon.post("/gate/Notification/Acme", notification(text))
            assert code == 200
        await wait_for(lambda: printed.out.decode().splitlines() == texts, timeout=15)
        subscriber = daemon.daemon.subscriptions.subscribers["documented"]
        assert subscriber.figures.delivered == 3
        # A body signed with another secret is refused by it.
        forged = await treq.post(
            f"http://127.0.0.1:{port}/",
            b'{"text": "forged"}',
            headers={"X-Notifications-Signature-256": ["sha256=" + "0" * 64]},
        )
        assert forged.code == 403
        await forged.content()
        assert "forged" not in printed.out.decode()
    finally:
        await daemon.stop()
        process.signalProcess("TERM")
        await printed.ended


@pytest_twisted.ensureDeferred
async def test_with_several_workers_one_delivers_in_order(tmp_path, broker, subscribed):
    receiver = await FakeReceiver().start()
    subscribed.append("relay")
    toml = subscription_toml("relay", receiver.url + "/hook", allow_private=True)
    make_config(tmp_path, broker, toml=toml)
    daemon = start_twistd(tmp_path, "--workers", "2")
    try:
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(
            wait_until, lambda: daemon.output().count("Connected to the broker at") >= 2
        )
        texts = [f"w{index}" for index in range(20)]
        for text in texts:
            body = json.dumps(notification(text)).encode()
            code, _ = await threads.deferToThread(
                request, daemon.port, "POST", "/gate/Notification/Acme", body
            )
            assert code == 200
        await wait_for(lambda: len(receiver.requests) >= len(texts), timeout=15)
        await sleep(1.0)
        # Both workers consume the queue; the broker delivers to one at a time.
        assert [verified(r)["text"] for r in receiver.requests] == texts
    finally:
        await threads.deferToThread(daemon.stop)
        await receiver.stop()
    daemon.assert_clean()
    code, out, err = await cli(tmp_path / "notifications.toml", "subscriptions", "status")
    assert code == 0, err
    [row] = [line.split() for line in out.splitlines() if line.startswith("relay")]
    assert row[:6] == ["relay", receiver.url, "0", "20", "0", "0"], out


@pytest_twisted.ensureDeferred
async def test_subscriptions_list_shows_no_secret_and_replay_names_the_known_ones(tmp_path, broker):
    toml = subscription_toml(
        "chat", "https://hooks.example.org/services/T0/B0/path-secret-91c2"
    ) + subscription_toml(
        "ci", "http://127.0.0.1:8000/", patterns=("*.ci.#", "acme.#"), allow_private=True
    )
    make_config(tmp_path, broker, toml=toml)
    config = tmp_path / "notifications.toml"
    code, out, err = await cli(config, "subscriptions", "list")
    assert (code, err) == (0, ""), err
    lines = out.splitlines()
    assert lines[0].split() == [
        "subscription",
        "receiver",
        "patterns",
        "private",
        "retries",
        "queue",
    ]
    assert lines[2].split() == [
        "chat",
        "https://hooks.example.org",
        "acme.#",
        "no",
        "1",
        "s",
        "to",
        "300",
        "s,",
        "300",
        "attempts",
        f"{broker.exchange}.subscription.chat",
    ]
    assert lines[3].split()[:5] == ["ci", "http://127.0.0.1:8000", "*.ci.#", "acme.#", "yes"]
    for secret in ("path-secret-91c2", SECRET):
        assert secret not in out
    code, out, err = await cli(config, "subscriptions", "replay", "nope")
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"notifications: no subscription named 'nope' in {config} (known: chat, ci)"
    )


@pytest_twisted.ensureDeferred
async def test_the_attempts_are_counted_across_a_restart(tmp_path, broker, subscribed):
    receiver, config = await failing_receiver(tmp_path, broker, subscribed, 1.0, 5)
    daemon = await start_whole_daemon(config)
    try:
        code, _ = await daemon.post("/gate/Notification/Acme", notification("stubborn"))
        assert code == 200
        await wait_for(lambda: len(receiver.requests) == 2, timeout=10)
    finally:
        await daemon.stop()
    before = len(receiver.requests)
    daemon = await start_whole_daemon(config)
    subscriber = daemon.daemon.subscriptions.subscribers["flaky"]
    try:
        await wait_for(lambda: subscriber.figures.dead_lettered == 1, timeout=15)
    finally:
        await daemon.stop()
        await receiver.stop()
    attempts = [int(r.headers["x-notifications-attempt"]) for r in receiver.requests]
    # The broker's count went on: the new process did not start again from 1 (the one
    # held when the daemon stopped counts too), and gave up at the fifth.
    assert attempts[:before] == list(range(1, before + 1))
    assert attempts[before] > before
    assert attempts == sorted(set(attempts)) and attempts[-1] >= 5
    assert subscriber.figures.retried >= 2  # read back from the storage directory, then more
    print(f"\nattempts seen by the receiver, the daemon restarted after {before}: {attempts}")
