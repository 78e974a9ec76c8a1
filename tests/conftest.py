"""Shared fixtures: the daemon on a loopback port, and consumers on the real RabbitMQ.

No test here mocks the broker: a test that needs it connects to
127.0.0.1:5672 (or $BROKER_HOST/$BROKER_PORT) and fails when it is not there.
Each test publishes on an exchange of its own, so that tests never see each
other's messages and the deployment's ``notifications`` exchange is left alone.
"""

from __future__ import annotations

import importlib.util
import json
import os
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from notifications.amqp.connection import connect
from notifications.config import BrokerConfig, Config, load_config
from notifications.delivery import DeliveryService, make_delivery
from notifications.dispatcher import Dispatcher
from notifications.gates import make_gates
from notifications.publisher import Publisher
from notifications.web import make_site

BROKER_HOST = os.environ.get("BROKER_HOST", "127.0.0.1")
BROKER_PORT = int(os.environ.get("BROKER_PORT", "5672"))


#: The exchanges :func:`test_broker` named: whatever a test's daemons declared
#: on them (the exchange, its archive stream) is deleted when the session ends.
_NAMED_EXCHANGES: set[str] = set()


def test_broker(exchange: str | None = None, **changes: Any) -> BrokerConfig:
    """Broker settings for the local RabbitMQ, on an exchange of the test's own."""
    if exchange is None:
        exchange = f"notifications-test-{uuid.uuid4().hex[:12]}"
        _NAMED_EXCHANGES.add(exchange)
    settings: dict[str, Any] = {
        "host": BROKER_HOST,
        "port": BROKER_PORT,
        "exchange": exchange,
        "connect_timeout": 5.0,
        "heartbeat": 0,
    }
    return BrokerConfig(**{**settings, **changes})


test_broker.__test__ = False  # a helper, not a test


@dataclass
class Consumer:
    """A temporary queue bound to an exchange, and what arrived on it."""

    client: Any
    channel: Any
    queue: Any
    name: str

    async def get(self, timeout: float = 5.0) -> tuple[dict, Any]:
        """The next message: its JSON body and the txamqp message (for properties)."""
        message = await self.queue.get(timeout=timeout)
        body = message.content.body
        return json.loads(body), message

    async def expect_nothing(self, wait: float = 0.5) -> None:
        """Fail if a message arrives within ``wait`` seconds."""
        from txamqp.queue import Empty

        try:
            message = await self.queue.get(timeout=wait)
        except Empty:
            return
        raise AssertionError(f"unexpected message: {message.content.body!r}")

    async def drain(self, wait: float = 0.5) -> list[dict]:
        """Every message that arrives until ``wait`` seconds pass without one (its JSON)."""
        return [json.loads(message.content.body) for message in await self.drain_messages(wait)]

    async def drain_messages(self, wait: float = 0.5) -> list:
        """``drain``, the messages as txamqp gives them (properties and all)."""
        from txamqp.queue import Empty

        messages = []
        while True:
            try:
                messages.append(await self.queue.get(timeout=wait))
            except Empty:
                return messages

    async def drain_ids(self, wait: float = 0.5) -> list[str]:
        """``drain``, the messages' ids (the delivery id when a gate was given one)."""
        return [
            message.content.properties["message-id"] for message in await self.drain_messages(wait)
        ]


async def bind_consumer(broker: BrokerConfig, *patterns: str) -> Consumer:
    """Connect, declare an exclusive auto-deleted queue bound with ``patterns`` (default #)."""
    client, channel = await connect(reactor, broker)
    declared = await channel.queue_declare(exclusive=True, auto_delete=True)
    name = declared.queue
    for pattern in patterns or ("#",):
        await channel.queue_bind(queue=name, exchange=broker.exchange, routing_key=pattern)
    reply = await channel.basic_consume(queue=name, no_ack=True)
    queue = await client.queue(reply.consumer_tag)
    return Consumer(client, channel, queue, name)


async def close_consumer(consumer: Consumer, broker: BrokerConfig | None = None) -> None:
    if broker is not None:
        await consumer.channel.exchange_delete(exchange=broker.exchange)
    await consumer.client.close(within=2)


@pytest_twisted.async_yield_fixture
async def broker():
    """Broker settings on an exchange of the test's own; the exchange and its
    archive stream (if a daemon declared one) are deleted at the end."""
    settings = test_broker()
    yield settings
    await forget_exchange(settings)


async def forget_exchange(broker: BrokerConfig, *others: str) -> None:
    """Delete a test's exchange and archive stream (and those of the ``others``
    exchanges), when the broker answers.

    Best effort: a test that needs the broker has failed already if it does not
    answer; a test that only reads the settings must not fail for its sake.
    """
    try:
        client, channel = await connect(reactor, broker)
    except Exception:  # no broker: nothing to clean
        return
    try:
        for exchange in (broker.exchange, *others):
            await channel.queue_delete(queue=f"{exchange}.archive")
            await channel.exchange_delete(exchange=exchange)
    finally:
        await client.close(within=2)


def pytest_sessionfinish(session, exitstatus):
    """Delete the exchanges the tests' daemons declared on the local broker
    (a test with the :func:`broker` fixture has deleted its own already)."""
    names = sorted(_NAMED_EXCHANGES)
    if names:
        cleaning = forget_exchange(test_broker(names[0]), *names[1:])
        pytest_twisted.blockon(defer.ensureDeferred(cleaning))


@pytest_twisted.async_yield_fixture
async def consumer(broker):
    """A consumer of everything published on the test's exchange (deleted afterwards)."""
    consumer = await bind_consumer(broker)
    yield consumer
    await close_consumer(consumer, broker)


@pytest_twisted.async_yield_fixture
async def subscribed(broker):
    """The names of the subscriptions a test configures: their quorum queues, the
    dead-letter exchange and the test's exchange are deleted at the end (the
    daemon's publisher declares them as soon as it connects)."""
    from notifications.config import dead_letter_exchange, dead_letter_queue, subscription_queue

    names: list[str] = []
    yield names
    client, channel = await connect(reactor, broker)
    try:
        for name in names:
            await channel.queue_delete(queue=subscription_queue(broker.exchange, name))
            await channel.queue_delete(queue=dead_letter_queue(broker.exchange, name))
        await channel.exchange_delete(exchange=dead_letter_exchange(broker.exchange))
        await channel.exchange_delete(exchange=broker.exchange)
    finally:
        await client.close(within=2)


def write_json(path: Path, value: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def make_config(
    directory: Path,
    broker: BrokerConfig,
    services: list[dict] | None = None,
    analyzers: dict[str, dict[str, dict]] | None = None,
    tokens: dict[str, str] | None = None,
    toml: str = "",
) -> Config:
    """Write a configuration folder the way an operator would, and load it.

    ``analyzers`` is ``{"GitHub": {"Acme": {...}, "default": {...}}, ...}``;
    ``toml`` is appended to the generated file (extra sections or keys).
    """
    write_json(directory / "credentials.json", {"services": services or []})
    write_json(directory / "dockerhub-tokens.json", tokens or {})
    (directory / "analyzers").mkdir(exist_ok=True)
    for service, doors in (analyzers or {}).items():
        for door, content in doors.items():
            write_json(directory / "analyzers" / service / f"{door}.json", content)
    text = (
        '[gate]\ncredentials = "credentials.json"\nanalyzers = "analyzers"\n'
        'dockerhub_tokens = "dockerhub-tokens.json"\n' + toml
    )
    if "[broker]" not in toml:
        # Written too, so that a daemon started as a process on this file
        # reaches the same broker and exchange as the returned Config.
        text += (
            f'\n[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'exchange = "{broker.exchange}"\nheartbeat = {broker.heartbeat}\n'
        )
    if "[storage]" not in toml:
        text += '\n[storage]\ndirectory = "var"\ndrain_timeout = 2\n'
    if "[archive]" not in toml:
        # Off unless a test asks: a stream keeps its data on the broker's disk
        # until it is deleted, and each test has an exchange of its own.
        text += "\n[archive]\nenabled = false\n"
    (directory / "notifications.toml").write_text(text, encoding="utf-8")
    config = load_config(directory / "notifications.toml", environ={})
    return replace(config, broker=broker)


@dataclass
class Daemon:
    """The daemon's web site and delivery service, running in the test's reactor."""

    url: str
    config: Config
    delivery: DeliveryService
    port: Any

    @property
    def dispatcher(self) -> Dispatcher:
        return self.delivery.dispatcher

    @property
    def publisher(self) -> Publisher:
        return self.delivery.publisher

    def gate(self, gate: str, door: str) -> str:
        return f"{self.url}/gate/{gate}/{door}"

    async def post(self, path: str, body: bytes | str | dict, headers=None, **kwargs):
        """POST to a path of the daemon; a dict body is sent as JSON."""
        if isinstance(body, dict):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        all_headers = {"Content-Type": ["application/json"]}
        for name, value in (headers or {}).items():
            all_headers[name] = [value] if isinstance(value, str | bytes) else value
        response = await treq.post(self.url + path, body, headers=all_headers, **kwargs)
        content = await response.content()
        return response, content


async def start_daemon(config: Config, wait_for_broker: bool = True, **gate_kwargs) -> Daemon:
    """Run the delivery service (outbox, publisher, dispatcher) and the site on
    127.0.0.1 (a free port)."""
    delivery = make_delivery(config, reactor)
    delivery.startService()
    if wait_for_broker:
        await delivery.publisher.when_connected().addTimeout(10, reactor)
    site = make_site(
        config, delivery.dispatcher, make_gates(config, clock=reactor, **gate_kwargs), reactor
    )
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
    return Daemon(f"http://127.0.0.1:{port.getHost().port}", config, delivery, port)


async def stop_daemon(daemon: Daemon) -> None:
    """Stop the daemon (again is fine): close the port, drain and close the outbox."""
    stopped = daemon.port.stopListening()
    if stopped is not None:
        await stopped
    if daemon.delivery.running:
        await daemon.delivery.stopService()
    # Let the closed connections' last callbacks run before the next test.
    await defer.Deferred.fromCoroutine(_settle())


async def _settle() -> None:
    d = defer.Deferred()
    reactor.callLater(0, d.callback, None)
    await d


@dataclass
class WholeDaemon:
    """Every service of one daemon process (``notifications.daemon.build_daemon``: the
    reading connection, event streams and subscriptions included), in the test's
    reactor, its site on 127.0.0.1."""

    url: str
    config: Config
    daemon: Any
    port: Any

    async def post(self, path: str, value: dict) -> tuple[int, bytes]:
        response = await treq.post(
            self.url + path,
            json.dumps(value).encode(),
            headers={"Content-Type": ["application/json"]},
        )
        return response.code, await response.content()

    async def stop(self) -> None:
        """Stop it (again is fine): the port, then every service."""
        if self.port is not None:
            await self.port.stopListening()
            self.port = None
        if self.daemon.top.running:
            await self.daemon.top.stopService()
        await defer.Deferred.fromCoroutine(_settle())


async def start_whole_daemon(config: Config, surface: str = "all") -> WholeDaemon:
    """Build and start a whole daemon; ready once both broker connections are up."""
    from notifications.daemon import build_daemon

    daemon = build_daemon(config, reactor)
    daemon.top.startService()
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
        daemon.app.site(surface)
    )
    running = WholeDaemon(f"http://127.0.0.1:{port.getHost().port}", config, daemon, port)
    try:
        await daemon.delivery.publisher.when_connected().addTimeout(10, reactor)
        await wait_for(lambda: daemon.consumer.connected)
    except BaseException:
        await running.stop()
        raise
    return running


@pytest.fixture
def config_dir(tmp_path) -> Path:
    return tmp_path


@pytest_twisted.async_yield_fixture
async def daemon_factory(tmp_path, broker):
    """``await daemon_factory(services=[...], analyzers={...})`` starts a daemon."""
    started: list[Daemon] = []

    async def factory(wait_for_broker: bool = True, broker_config=None, **kwargs) -> Daemon:
        directory = tmp_path / f"config{len(started)}"
        directory.mkdir()
        config = make_config(directory, broker_config or broker, **kwargs)
        daemon = await start_daemon(config, wait_for_broker=wait_for_broker)
        started.append(daemon)
        return daemon

    yield factory
    for daemon in started:
        await stop_daemon(daemon)


@pytest.fixture(autouse=True)
def no_logged_errors(request):
    """Fail a test during which anything logged an error or an unhandled failure.

    A test that expects an error log marks itself ``@pytest.mark.logged_errors``.
    """
    from twisted.logger import LogLevel, globalLogPublisher

    errors: list[dict] = []

    def observer(event: dict) -> None:
        if event.get("log_level") in (LogLevel.error, LogLevel.critical) or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observer)
    yield errors
    globalLogPublisher.removeObserver(observer)
    if errors and request.node.get_closest_marker("logged_errors") is None:
        from twisted.logger import formatEvent

        raise AssertionError("errors were logged: " + "; ".join(formatEvent(e) for e in errors))


async def wait_for(predicate, timeout: float = 10.0, step: float = 0.05) -> None:
    """Poll ``predicate`` on the reactor until it is true; fail after ``timeout`` seconds."""
    from twisted.internet.task import deferLater

    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        await deferLater(reactor, step)


# A real browser ------------------------------------------------------------------------

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")


def browser_or_skip() -> None:
    """Skip when the browser or its driver is missing; fail instead in CI."""
    from tests.helpers import unavailable as _unavailable

    missing = []
    if importlib.util.find_spec("selenium") is None:
        missing.append("the selenium package (pip install -e '.[test]')")
    for path, package in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")]:
        if not os.access(path, os.X_OK):
            missing.append(f"{path} (apt-get install {package})")
    if missing:
        _unavailable("the status page's browser test needs " + ", ".join(missing))


@pytest.fixture
def browser(tmp_path):
    """Headless Chromium driven by chromedriver, kept off the internet."""
    browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        # Without these Chromium reaches out to the internet on its own.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1280,900",
        "--lang=en-GB",
    ]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(15)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory):
    """A 3-node RabbitMQ cluster of private nodes, started once for the session.

    A ``devtools.rabbitmq.Cluster`` (its API blocks: call it through
    ``deferToThread`` from a test running in the reactor). Every test that
    uses it fails, never skips, when it cannot start; the message carries the
    tail of the nodes' logs.
    """
    from devtools.rabbitmq import Cluster, RabbitMQError

    cluster = Cluster(size=3, base_dir=tmp_path_factory.mktemp("rabbitmq"))
    try:
        cluster.start()
    except RabbitMQError as error:
        pytest.fail(str(error), pytrace=False)
    yield cluster
    cluster.stop_all()
