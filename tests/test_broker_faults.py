"""The broker going away and coming back, and the daemon as ``twistd`` runs it.

Faults are made with a loopback TCP proxy in front of the real RabbitMQ: the
test starts it late (broker down at start) or severs its connections (broker
lost mid-stream).
"""

from __future__ import annotations

import json
import signal

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.logger import formatEvent

from notifications.amqp.connection import AMQPFactory, broker_endpoint
from tests.conftest import stop_daemon, test_broker, wait_for
from tests.helpers import daemon_behind_proxy, listen_proxy
from tests.processes import free_port, http_status, loopback_endpoint, popen_twistd

NOTIFICATION = {"service": "Deployer", "group": "ops", "type": "deploy", "text": "v2"}


async def connect_raw(broker):
    """A connection and an open channel, without declaring the test's exchange."""
    client = await broker_endpoint(reactor, broker).connect(AMQPFactory(broker, reactor))
    credentials = b"\0" + broker.username.encode() + b"\0" + broker.password.encode()
    await client.start(credentials, mechanism="PLAIN")
    channel = await client.channel(1)
    await channel.channel_open()
    return client, channel


@pytest_twisted.ensureDeferred
async def test_broker_down_at_start_then_up(daemon_factory, broker, consumer):
    port = free_port()
    daemon = await daemon_factory(
        wait_for_broker=False, broker_config=test_broker(broker.exchange, port=port)
    )
    assert not daemon.publisher.connected

    status = await treq.get(daemon.url + "/status")
    assert await status.content() == b"ALIVE"
    for index in range(20):
        response, body = await daemon.post(
            "/gate/Notification/Acme", {**NOTIFICATION, "text": f"queued {index}"}
        )
        assert response.code == 200, body
        [action] = json.loads(body)["actions"]
        assert action["status"] == "queued"
        assert action["error"] is None
    await consumer.expect_nothing()
    health = json.loads(await (await treq.get(daemon.url + "/health")).content())
    assert health["status"] == "degraded"
    assert health["broker"]["connected"] is False
    assert health["outbox"]["depth"] == 20
    assert health["outbox"]["oldest_age"] >= 0

    proxy, listening = await listen_proxy(port)
    try:
        await daemon.publisher.when_connected().addTimeout(15, reactor)
        texts = [message["text"] for message in await consumer.drain(wait=1.0)]
        assert texts == [f"queued {index}" for index in range(20)]
        response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
        assert response.code == 200, body
        assert json.loads(body)["actions"][0]["status"] == "published"
        message, _ = await consumer.get()
        assert message["text"] == "v2"
        await wait_for(lambda: daemon.dispatcher.outbox.depth == 0)
    finally:
        await stop_daemon(daemon)
        proxy.sever()
        await listening.stopListening()


async def post_texts(daemon, texts) -> None:
    """A notification for each text, posted one after the other; each must be answered 200."""
    for text in texts:
        response, _ = await daemon.post("/gate/Notification/Acme", {**NOTIFICATION, "text": text})
        assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_connection_cut_mid_stream_reconnects(daemon_factory, broker, consumer):
    async with daemon_behind_proxy(daemon_factory, broker) as (daemon, proxy):
        await post_texts(daemon, [f"before {index}" for index in range(5)])
        proxy.sever()
        await wait_for(lambda: not daemon.publisher.connected)
        await daemon.publisher.when_connected().addTimeout(15, reactor)
        assert daemon.publisher.status()["reconnects"] == 1
        await post_texts(daemon, [f"after {index}" for index in range(5)])
        texts = [message["text"] for message in await consumer.drain()]
        assert texts == [f"before {i}" for i in range(5)] + [f"after {i}" for i in range(5)]


@pytest_twisted.ensureDeferred
async def test_a_silent_broker_is_noticed_by_heartbeats(daemon_factory, broker, consumer):
    async with daemon_behind_proxy(daemon_factory, broker, heartbeat=1) as (daemon, proxy):
        proxy.freeze()
        frozen = reactor.seconds()
        await wait_for(lambda: not daemon.publisher.connected, timeout=10)
        # txamqp drops the connection after three heartbeats without a frame.
        assert reactor.seconds() - frozen < 5
        _, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
        assert json.loads(body)["actions"][0]["status"] == "queued"
        await daemon.publisher.when_connected().addTimeout(15, reactor)
        message, _ = await consumer.get()
        assert message["text"] == "v2"


@pytest.mark.logged_errors
@pytest_twisted.ensureDeferred
async def test_an_exchange_of_another_type_is_retried_not_used(
    daemon_factory, broker, no_logged_errors
):
    client, channel = await connect_raw(broker)
    await channel.exchange_declare(exchange=broker.exchange, type="fanout", durable=False)
    try:
        daemon = await daemon_factory(wait_for_broker=False)
        await wait_for(lambda: daemon.publisher._setup_failures >= 2, timeout=15)
        response, body = await daemon.post("/gate/Notification/Acme", NOTIFICATION)
        assert response.code == 200
        assert json.loads(body)["actions"][0]["status"] == "queued"
        await stop_daemon(daemon)
    finally:
        await channel.exchange_delete(exchange=broker.exchange)
        await client.close(within=2)
    messages = [formatEvent(event) for event in no_logged_errors]
    assert messages and all("PRECONDITION_FAILED" in message for message in messages), messages


# twistd ---------------------------------------------------------------------


def test_twistd_stops_on_a_bad_configuration_with_one_line(tmp_path):
    (tmp_path / "c.json").write_text('{"services": [{"gate": "GitHub", "door": "A", "secert": 1}]}')
    (tmp_path / "n.toml").write_text('[gate]\ncredentials = "c.json"\n')
    process = popen_twistd(tmp_path / "n.toml")
    out, err = process.communicate(timeout=60)
    assert process.returncode != 0
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0] == (
        f"notifications: configuration error: {tmp_path / 'c.json'}: services[0] (GitHub/A): "
        "unknown key 'secert' (expected door, gate, instance, secret, secret_env, secret_file)"
    )


@pytest.mark.parametrize("runner", ["twistd", "twist"])
def test_the_example_configuration_runs_on_several_ports(runner):
    ports = [free_port(), free_port()]
    listen = [f"--port={loopback_endpoint(port)}" for port in ports]
    process = popen_twistd("etc/notifications.toml", *listen, runner=runner)
    try:
        for port in ports:
            body = http_status(port)
            assert body.startswith(b"HTTP/1.0 200") and body.endswith(b"\r\n\r\nALIVE"), body
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    # twistd ends by the signal it was stopped with, once it has shut down.
    assert process.returncode in (0, -signal.SIGTERM), out + err
    assert "Main loop terminated." in out + err
    assert "Traceback" not in out + err, out + err


@pytest.mark.parametrize("port", ["nope:1234", "tcp:notaport", "systemd:domain=INET:index=0"])
def test_a_bad_port_stops_the_start_with_one_line(port):
    process = popen_twistd("etc/notifications.toml", "--port", port)
    out, err = process.communicate(timeout=30)
    assert process.returncode != 0
    assert "Traceback" not in out + err
    assert err.strip().splitlines()[-1].startswith(f"notifications: bad --port {port!r}: ")
