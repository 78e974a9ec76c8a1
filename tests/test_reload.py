"""SIGHUP reload, setting by setting: each one a running daemon can take works at once,
the others are named in the reload's log line as taking effect at the next start.

The daemon is built as ``twistd notifications`` builds it (``build_daemon``), in the
test's reactor; a reload is the reloader's own (the file read again in a thread).
"""

from __future__ import annotations

import json
import time

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Protocol
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher

from notifications.config import BrokerConfig, load_config
from notifications.daemon import build_daemon
from tests.conftest import make_config, wait_for
from tests.fakes import FakeDockerHub
from tests.helpers import closed_port, signed_github_request
from tests.payloads import github_push

SECRET = "reload-secret"
TRIGGER = "trigger-token"


class Running:
    """A daemon built by build_daemon, listening on a loopback port."""

    def __init__(self, directory, daemon, port):
        self.directory = directory
        self.daemon = daemon
        self.port = port
        self.url = f"http://127.0.0.1:{port.getHost().port}"
        self.toml = directory / "notifications.toml"

    async def reload(self, **changes: str) -> None:
        """Rewrite ``[section] key = value`` lines (or add them), then reload."""
        text = self.toml.read_text()
        for key, line in changes.items():
            section, name = key.split("__")
            header = f"[{section}]\n"
            kept = [
                existing for existing in text.splitlines() if not existing.startswith(f"{name} =")
            ]
            text = "\n".join(kept) + "\n"
            if header in text:
                text = text.replace(header, header + f"{name} = {line}\n", 1)
            else:
                text += f"\n{header}{name} = {line}\n"
        self.toml.write_text(text)
        await self.daemon.reloader.reload()

    async def post(self, path: str, body: bytes, headers: dict | None = None, **kwargs):
        all_headers = {"Content-Type": ["application/json"]}
        all_headers.update({name: [value] for name, value in (headers or {}).items()})
        response = await treq.post(self.url + path, body, headers=all_headers, **kwargs)
        return response, await response.content()


@pytest_twisted.async_yield_fixture
async def running(tmp_path, broker):
    """``await running(broker=…, toml=…)``: a daemon; stopped at the end."""
    started: list[Running] = []

    async def start(broker_config: BrokerConfig | None = None, toml: str = "", **kwargs):
        directory = tmp_path / f"d{len(started)}"
        directory.mkdir()
        broker_config = broker_config or broker
        make_config(directory, broker_config, toml=toml, **kwargs)
        # As the file says (make_config's own Config carries the test's broker
        # settings, some of which the file leaves out): a reload reads the file.
        config = load_config(directory / "notifications.toml")
        daemon = build_daemon(config, reactor)
        daemon.top.startService()
        site = daemon.app.site("all")
        port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        run = Running(directory, daemon, port)
        started.append(run)
        return run

    yield start
    for run in started:
        await run.port.stopListening()
        await run.daemon.top.stopService()


@pytest.fixture
def log_lines():
    lines: list[str] = []

    def observer(event: dict) -> None:
        from twisted.logger import formatEvent

        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield lines
    globalLogPublisher.removeObserver(observer)


def notification(text: str = "x") -> bytes:
    return json.dumps({"service": "S", "group": "g", "type": "t", "text": text}).encode()


class Trickle(Protocol):
    """Sends a request's head and then nothing: the daemon must give up on it."""

    def __init__(self) -> None:
        self.closed: defer.Deferred = defer.Deferred()
        self.received = b""

    def connectionMade(self) -> None:
        self.transport.write(b"POST /gate/Notification/Acme HTTP/1.1\r\nHost: x\r\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.closed.callback(time.monotonic())


async def open_trickle(run: Running) -> tuple[Trickle, float]:
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    protocol = Trickle()
    await connectProtocol(
        TCP4ClientEndpoint(reactor, "127.0.0.1", run.port.getHost().port), protocol
    )
    return protocol, time.monotonic()


@pytest_twisted.ensureDeferred
async def test_request_timeout_applies_at_once(running):
    run = await running(toml="request_timeout = 30\n")
    await run.reload(gate__request_timeout="0.5")
    trickle, opened = await open_trickle(run)
    closed = await trickle.closed.addTimeout(10, reactor)
    assert closed - opened < 5
    assert b"408 Request Timeout" in trickle.received


@pytest_twisted.ensureDeferred
async def test_idle_timeout_applies_to_new_connections(running):
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    run = await running(toml="idle_timeout = 60\n")
    await run.reload(gate__idle_timeout="0.5")
    idle = Trickle()
    idle.connectionMade = lambda: None  # connects, says nothing
    await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", run.port.getHost().port), idle)
    opened = time.monotonic()
    closed = await idle.closed.addTimeout(10, reactor)
    assert closed - opened < 5


@pytest_twisted.ensureDeferred
async def test_max_body_size_applies_at_once(running):
    run = await running()
    response, _ = await run.post("/gate/Notification/Acme", notification("y" * 500))
    assert response.code == 200
    await run.reload(gate__max_body_size="200")
    response, answer = await run.post("/gate/Notification/Acme", notification("y" * 500))
    assert response.code == 413
    assert answer == b"Payload too large.\n"


@pytest_twisted.ensureDeferred
async def test_max_messages_applies_at_once(running, broker):
    # No broker: notifications stay in the outbox, which fills.
    away = BrokerConfig(host="127.0.0.1", port=closed_port(), exchange=broker.exchange)
    run = await running(
        broker_config=away, toml='[storage]\ndirectory = "var"\nmax_messages = 100\n'
    )
    for _ in range(3):
        response, _ = await run.post("/gate/Notification/Acme", notification())
        assert response.code == 200
    await run.reload(storage__max_messages="3")
    response, answer = await run.post("/gate/Notification/Acme", notification())
    assert response.code == 503
    assert json.loads(answer)["actions"][0]["error"]["type"] == "OutboxFull"


@pytest_twisted.ensureDeferred
async def test_dedup_window_applies_at_once(running, consumer):
    services = [{"gate": "GitHub", "door": "Acme", "secret": SECRET}]
    run = await running(services=services, toml="dedup_window = 86400\n")
    body, headers = signed_github_request(
        "ping", {"zen": "z", "hook_id": 1}, SECRET, delivery="d-1"
    )
    response, _ = await run.post("/gate/GitHub/Acme", body, headers)
    assert response.code == 200
    await run.reload(gate__dedup_window="0.5")
    await deferLater(reactor, 1.0)
    response, answer = await run.post("/gate/GitHub/Acme", body, headers)
    assert response.code == 200
    assert "duplicate" not in json.loads(answer)
    assert len(await consumer.drain()) == 2


@pytest_twisted.async_yield_fixture
async def dockerhub():
    fake = await FakeDockerHub({"Acme/widgets": TRIGGER}, delay=30).start()
    yield fake
    await fake.stop()


@pytest_twisted.ensureDeferred
async def test_http_timeout_applies_at_once(running, dockerhub, consumer):
    services = [{"gate": "GitHub", "door": "Acme", "secret": SECRET}]
    run = await running(
        services=services,
        tokens={"Acme/widgets": TRIGGER},
        toml=f'\n[dockerhub]\nbase_url = "{dockerhub.url}"\n[http]\ntimeout = 20\n',
    )
    dockerhub.mode = "slow"
    await run.reload(http__timeout="0.5")
    body, headers = signed_github_request("push", github_push(), SECRET)
    started = time.monotonic()
    response, answer = await run.post("/gate/GitHub/Acme", body, headers)
    assert time.monotonic() - started < 5
    assert response.code == 503
    [trigger] = [
        a for a in json.loads(answer)["actions"] if a["action"] == "TriggerDockerHubBuildAction"
    ]
    assert trigger["error"]["type"] == "ServiceTimeout"
    assert "no answer within 0.5 s" in trigger["error"]["message"]


@pytest_twisted.ensureDeferred
async def test_drain_timeout_and_publish_timeout_apply_at_once(running):
    run = await running()
    await run.reload(storage__drain_timeout="7", gate__publish_timeout="0.25")
    assert run.daemon.delivery.dispatcher.drain_timeout == 7
    assert run.daemon.app.handler.config.publish_timeout == 0.25


async def reload_said(run, log_lines: list[str], **changes: str) -> str:
    """``run.reload(**changes)``, then the one "Configuration reloaded" line it logged."""
    await run.reload(**changes)
    [line] = [line for line in log_lines if line.startswith("Configuration reloaded")]
    return line


@pytest_twisted.ensureDeferred
async def test_settings_that_take_a_restart_are_named(running, log_lines):
    run = await running()
    line = await reload_said(
        run, log_lines, storage__synchronous='"normal"', features__GetConfig="false"
    )
    assert "at the next start: synchronous, features" in line
    assert any("changes synchronous, features: that takes a restart" in line for line in log_lines)
    # Not applied: /config is still served until the next start.
    response = await treq.get(run.url + "/config")
    assert response.code == 200
    await response.content()


@pytest_twisted.ensureDeferred
async def test_the_actions_report_feature_applies_at_once(running, log_lines):
    run = await running()
    line = await reload_said(run, log_lines, features__ActionsReport="false")
    assert "applied now: features (ActionsReport); at the next start: nothing" in line
    response, answer = await run.post("/gate/Notification/Acme", notification())
    assert (response.code, answer) == (200, b"")


@pytest_twisted.ensureDeferred
async def test_a_reload_says_what_it_applied(running, log_lines):
    run = await running()
    line = await reload_said(run, log_lines, gate__max_in_progress="7")
    assert "applied now: max_in_progress; at the next start: nothing" in line
    await wait_for(lambda: run.daemon.app.handler.config.max_in_progress == 7)
