"""Several gateways behind nginx (the shipped configuration): one of them killed during
a stream of calls loses nothing answered 2xx, and a redelivery is published once.

Real processes: Debian's nginx, two daemons (``twistd -n``), the real broker.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import signal
import threading
import time
import uuid

import pytest_twisted
from twisted.internet import threads

from tests.conftest import make_config
from tests.nginx import Nginx
from tests.processes import request, start_twistd

SECRET = "gateways-secret"


def signed_push(delivery: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"zen": "Half measures are as bad as nothing at all.", "hook_id": 3})
    raw = body.encode()
    return raw, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": "sha256="
        + hmac.new(SECRET.encode(), raw, hashlib.sha256).hexdigest(),
    }


def through(nginx: Nginx, delivery: str) -> int:
    body, headers = signed_push(delivery)
    try:
        return request(nginx.port, "POST", "/gate/GitHub/Acme", body, headers)[0]
    except OSError:
        return 0  # no answer at all: not counted as answered


def start_gateways(tmp_path, broker, count: int = 2):
    daemons = []
    for index in range(count):
        directory = tmp_path / f"gateway-{index}"
        directory.mkdir()
        make_config(
            directory, broker, services=[{"gate": "GitHub", "door": "Acme", "secret": SECRET}]
        )
        daemons.append(start_twistd(directory))
    for daemon in daemons:
        daemon.ready()
        # Connected to the broker: "published" answers from the first call.
        deadline = time.monotonic() + 15
        while "Connected to the broker" not in daemon.output() and time.monotonic() < deadline:
            time.sleep(0.1)
    return daemons


@pytest_twisted.ensureDeferred
async def test_a_gateway_killed_during_a_stream_loses_no_answered_call(tmp_path, broker, consumer):
    daemons = await threads.deferToThread(start_gateways, tmp_path, broker)
    nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{daemon.port}" for daemon in daemons])
    await threads.deferToThread(nginx.start)
    answered: list[str] = []
    refused: list[tuple[str, int]] = []
    stop = threading.Event()

    def stream() -> None:
        while not stop.is_set():
            delivery = str(uuid.uuid4())
            code = through(nginx, delivery)
            if 200 <= code < 300:
                answered.append(delivery)
            else:
                refused.append((delivery, code))

    try:
        sender = threading.Thread(target=stream)
        sender.start()
        await threads.deferToThread(time.sleep, 2.0)
        killed = len(answered)
        daemons[0].signal(signal.SIGKILL)
        await threads.deferToThread(time.sleep, 3.0)
        stop.set()
        await threads.deferToThread(sender.join, 30)
        assert killed > 20, "the stream was running before the kill"
        assert len(answered) > killed + 20, "calls went on through the other gateway"
        # The killed gateway's outbox is published when it comes back.
        await threads.deferToThread(daemons[0].process.wait, 10)
        daemons[0].start()
        await threads.deferToThread(daemons[0].ready)
        ids = await consumer.drain_ids(2.0)
    finally:
        stop.set()
        await threads.deferToThread(nginx.stop)
        for daemon in daemons:
            await threads.deferToThread(daemon.stop)
    missing = set(answered) - set(ids)
    assert not missing, f"{len(missing)} calls answered 2xx are not in the queue"
    # Nothing but what was sent; a copy published twice (the killed gateway's
    # outbox replayed after nginx's retry) keeps its delivery id.
    assert set(ids) <= set(answered) | {delivery for delivery, _ in refused}
    # nginx answered with a gateway's answer, or at worst a 502 while both were
    # unreachable for it: never a made-up 2xx.
    assert {code for _, code in refused} <= {502, 504}, refused[:5]
    print(
        f"\n{len(answered)} answered 2xx, {len(refused)} refused, {len(ids)} messages, "
        f"{len(set(ids))} distinct; killed after {killed}"
    )


@pytest_twisted.ensureDeferred
async def test_a_redelivery_through_nginx_is_published_once(tmp_path, broker, consumer):
    daemons = await threads.deferToThread(start_gateways, tmp_path, broker)
    ports = [daemon.port for daemon in daemons]
    nginx = Nginx(tmp_path / "nginx", [f"127.0.0.1:{port}" for port in ports])
    await threads.deferToThread(nginx.start)
    delivery = str(uuid.uuid4())
    try:
        codes = [await threads.deferToThread(through, nginx, delivery) for _ in range(10)]
        ids = await consumer.drain_ids(1.0)
    finally:
        await threads.deferToThread(nginx.stop)
        for daemon in daemons:
            await threads.deferToThread(daemon.stop)
    assert codes == [200] * 10
    assert ids == [delivery]
    # The consistent hash sent the ten to the same gateway.
    answering = [daemon for daemon in daemons if f"delivery={delivery}" in daemon.output()]
    assert len(answering) == 1
    assert answering[0].output().count(f"delivery={delivery}") == 10
