"""Nothing accepted is lost: real broker, real faults, real processes.

The daemon runs as ``twistd`` in a subprocess when the test kills or stops
it, in the test's reactor otherwise. Messages are counted, not sampled.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor, task
from twisted.web.client import HTTPConnectionPool

from tests.conftest import bind_consumer, close_consumer, stop_daemon, test_broker, wait_for
from tests.helpers import closed_port, listen_proxy, signed_github_request
from tests.payloads import github_push
from tests.processes import TwistdProcess, free_port

SECRET = "durable-secret"


def notification(text: str) -> dict:
    return {"service": "Deployer", "group": "ops", "type": "deploy", "text": text}


# Deduplication -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_redelivery_is_recognised_after_a_restart(daemon_factory, consumer, tmp_path):
    services = [{"gate": "GitHub", "door": "Acme", "secret": SECRET}]
    storage = f'[storage]\ndirectory = "{tmp_path / "spool"}"\ndrain_timeout = 2\n'
    body, headers = signed_github_request("push", github_push(), SECRET, delivery="d-0001")

    first = await daemon_factory(services=services, toml=storage)
    response, answer = await first.post("/gate/GitHub/Acme", body, headers=headers)
    assert response.code == 200
    assert "duplicate" not in json.loads(answer)
    await stop_daemon(first)

    second = await daemon_factory(services=services, toml=storage)
    response, answer = await second.post("/gate/GitHub/Acme", body, headers=headers)
    assert response.code == 200
    report = json.loads(answer)
    assert report["duplicate"] is True
    assert report["actions"] == []

    other_body, other_headers = signed_github_request("push", github_push(), SECRET, "d-0002")
    response, _ = await second.post("/gate/GitHub/Acme", other_body, headers=other_headers)
    assert response.code == 200
    ids = await consumer.drain_ids()
    assert ids == ["d-0001", "d-0002"]


# Storage that cannot take more ---------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_full_storage_answers_503_and_loses_nothing_accepted(daemon_factory, broker):
    daemon = await daemon_factory(
        wait_for_broker=False,
        broker_config=test_broker(broker.exchange, port=closed_port()),
        toml='[storage]\ndirectory = "var"\nmax_bytes = 131072\ndrain_timeout = 1\n',
    )
    big = "x" * 20_000
    answers = []
    for index in range(12):
        response, body = await daemon.post(
            "/gate/Notification/Acme", {**notification(f"n{index}"), "rawContent": big}
        )
        answers.append((response.code, json.loads(body)["actions"][0]))
    accepted = [action for code, action in answers if code == 200]
    refused = [action for code, action in answers if code == 503]
    assert accepted and refused, answers
    assert all(action["status"] == "queued" for action in accepted)
    assert all(action["status"] == "failed" for action in refused)
    assert {action["error"]["type"] for action in refused} == {"OutboxFull"}
    assert daemon.dispatcher.outbox.depth == len(accepted)
    # Once full, it stays usable: a small notification still fits after a removal.
    assert answers[-1][0] == 503


# Broker refusals ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_a_nacked_notification_is_retried_in_order(daemon_factory, broker):
    """A queue that rejects publications when full makes RabbitMQ answer basic.nack."""
    consumer = await bind_consumer(broker)
    channel = consumer.channel
    full = await channel.queue_declare(
        exclusive=True,
        auto_delete=True,
        arguments={"x-max-length": 1, "x-overflow": "reject-publish"},
    )
    await channel.queue_bind(queue=full.queue, exchange=broker.exchange, routing_key="#")
    try:
        daemon = await daemon_factory()
        daemon.dispatcher.nack_delay = 0.2
        for index in range(3):
            response, _ = await daemon.post("/gate/Notification/Acme", notification(f"n{index}"))
            assert response.code == 200
        await wait_for(lambda: daemon.dispatcher.nacked >= 1)
        assert daemon.dispatcher.outbox.depth >= 1
        await channel.queue_purge(queue=full.queue)
        await wait_for(lambda: daemon.dispatcher.nacked >= 2)
        await channel.queue_delete(queue=full.queue)
        await wait_for(lambda: daemon.dispatcher.outbox.depth == 0)
        texts = [message["text"] for message in await consumer.drain()]
        # The consumer queue takes every attempt; each notification arrives,
        # in order of acceptance once duplicates of retried ones are set aside.
        firsts = list(dict.fromkeys(texts))
        assert firsts == ["n0", "n1", "n2"]
    finally:
        await close_consumer(consumer, broker)


# The daemon killed or stopped --------------------------------------------------------


class DaemonProcess:
    """``twistd notifications`` in a subprocess, on a configuration folder of the test."""

    def __init__(self, directory: Path, broker, port: int):
        self.directory = directory
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        (directory / "credentials.json").write_text(
            json.dumps({"services": [{"gate": "GitHub", "door": "Acme", "secret": SECRET}]})
        )
        (directory / "notifications.toml").write_text(
            f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\n'
            f'exchange = "{broker.exchange}"\nheartbeat = 2\n'
            '[gate]\ncredentials = "credentials.json"\npublish_timeout = 0.5\n'
            '[storage]\ndirectory = "spool"\ndrain_timeout = 3\n'
            # No archive stream: it would stay on the broker's disk after the test.
            "[archive]\nenabled = false\n"
        )
        self.twistd = TwistdProcess(directory, port=port)
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @property
    def process(self):
        """The ``subprocess.Popen`` of the last start, None before the first."""
        return self.twistd.process

    def start(self) -> None:
        self.twistd.start()

    async def ready(self) -> None:
        for _ in range(300):
            try:
                response = await treq.get(self.url + "/status", pool=self.pool)
                if await response.content() == b"ALIVE":
                    return
            except Exception:  # noqa: S110 - not listening yet
                pass
            await task.deferLater(reactor, 0.1)
        raise AssertionError("the daemon did not start: " + self.output())

    async def health(self) -> dict:
        response = await treq.get(self.url + "/health", pool=self.pool)
        return json.loads(await response.content())

    async def push(self, number: int):
        body, headers = signed_github_request(
            "push", github_push(commits=2), SECRET, delivery=f"delivery-{number:05}"
        )
        return await treq.post(
            self.url + "/gate/GitHub/Acme",
            body,
            headers={name: [value] for name, value in headers.items()},
            pool=self.pool,
        )

    def signal(self, number: int) -> None:
        self.twistd.signal(number)

    async def exited(self, timeout: float = 30) -> int:
        for _ in range(int(timeout * 20)):
            if self.process.poll() is not None:
                return self.process.returncode
            await task.deferLater(reactor, 0.05)
        raise AssertionError("the daemon did not exit: " + self.output())

    def output(self) -> str:
        return self.twistd.output()

    def kill(self) -> None:
        self.twistd.kill()


@pytest.fixture
def daemon_process(tmp_path, broker):
    processes = []

    def make() -> DaemonProcess:
        process = DaemonProcess(tmp_path, broker, free_port())
        processes.append(process)
        return process

    yield make
    for process in processes:
        process.kill()


async def stream_until_killed(daemon: DaemonProcess, calls: int, kill_after: int) -> set[str]:
    """Post ``calls`` pushes, four at a time; SIGKILL the daemon after ``kill_after`` answers.

    Returns the delivery ids whose call was answered 2xx.
    """
    answered: set[str] = set()
    numbers = iter(range(calls))

    async def worker() -> None:
        for number in numbers:
            if daemon.process.poll() is not None:
                return
            try:
                response = await daemon.push(number)
                await response.content()
            except Exception:  # noqa: S112 - the daemon was killed under this call
                continue
            if 200 <= response.code < 300:
                answered.add(f"delivery-{number:05}")
            if len(answered) == kill_after and daemon.process.poll() is None:
                daemon.signal(signal.SIGKILL)

    await defer.gatherResults(
        [defer.Deferred.fromCoroutine(worker()) for _ in range(4)], consumeErrors=True
    )
    return answered


@pytest_twisted.ensureDeferred
async def test_sigkill_mid_stream_loses_no_answered_call(daemon_process, broker, consumer):
    daemon = daemon_process()
    daemon.start()
    await daemon.ready()
    answered = await stream_until_killed(daemon, calls=400, kill_after=150)
    assert await daemon.exited() == -signal.SIGKILL
    assert len(answered) >= 150

    daemon.start()
    await daemon.ready()
    for _ in range(200):
        if (await daemon.health())["outbox"]["depth"] == 0:
            break
        await task.deferLater(reactor, 0.1)
    assert (await daemon.health())["outbox"]["depth"] == 0

    received = await consumer.drain_ids(1.0)
    missing = answered - set(received)
    assert not missing, f"{len(missing)} answered calls lost: {sorted(missing)[:5]}"
    # A re-publication after the crash keeps its message id: nothing unknown arrives.
    assert set(received) <= {f"delivery-{n:05}" for n in range(400)}
    daemon.signal(signal.SIGTERM)
    await daemon.exited()


@pytest_twisted.ensureDeferred
async def test_sigterm_drains_then_a_restart_replays_the_rest(daemon_process, broker, tmp_path):
    proxy, listening = await listen_proxy()
    port = listening.getHost().port
    down = test_broker(broker.exchange, port=port)
    daemon = daemon_process()
    DaemonProcess.__init__(daemon, tmp_path, down, daemon.port)
    consumer = await bind_consumer(broker)
    try:
        daemon.start()
        await daemon.ready()
        await wait_for(lambda: bool(proxy.servers), timeout=15)
        # The broker goes away: the calls are queued on disk.
        await listening.stopListening()
        proxy.sever()
        for number in range(30):
            response = await daemon.push(number)
            report = json.loads(await response.content())
            assert response.code == 200
            assert report["actions"][0]["status"] == "queued"
        assert (await daemon.health())["outbox"]["depth"] == 30

        daemon.signal(signal.SIGTERM)
        started = reactor.seconds()
        await daemon.exited()
        # Stopped within the drain timeout (3 s) plus start-up noise, nothing lost.
        assert reactor.seconds() - started < 15
        assert "Stopping with 30 notifications left in the outbox" in daemon.output()
        await consumer.expect_nothing()

        # The broker is back: a plain restart publishes all of them, in order.
        listening = await listen_on(proxy, port)
        daemon.start()
        await daemon.ready()
        ids = await consumer.drain_ids(2.0)
        assert ids == [f"delivery-{n:05}" for n in range(30)]
        daemon.signal(signal.SIGTERM)
        await daemon.exited()
    finally:
        proxy.sever()
        await defer.maybeDeferred(listening.stopListening)
        await close_consumer(consumer, broker)


async def listen_on(proxy, port: int):
    from twisted.internet.endpoints import TCP4ServerEndpoint

    return await TCP4ServerEndpoint(reactor, port, interface="127.0.0.1").listen(proxy)
