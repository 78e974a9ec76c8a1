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
import json

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from notifications.amqp.connection import connect
from notifications.config import dead_letter_exchange, dead_letter_queue, subscription_queue
from tests.conftest import make_config, start_whole_daemon, wait_for
from tests.fakes import FakeReceiver

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
    return {"service": "Deployer", "project": project, "group": "ops", "type": "deploy", "text": text}


def verified(recorded) -> dict:
    """The notification a receiver got, once its signature is checked as a receiver would."""
    expected = "sha256=" + hmac.new(SECRET.encode(), recorded.body, hashlib.sha256).hexdigest()
    signature = recorded.headers["x-notifications-signature-256"]
    assert hmac.compare_digest(signature, expected), "the signature does not verify"
    return json.loads(recorded.body)


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds)


@pytest_twisted.async_yield_fixture
async def subscribed(broker):
    """The names of the subscriptions a test declares: their queues, the dead-letter
    exchange and the test's exchange are deleted at the end."""
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
