"""The daemon on a 3-node RabbitMQ cluster (``[broker] hosts``): a node killed under it,
a rolling restart of the nodes, the whole cluster down then up. Nothing answered 2xx
is lost; a copy published twice keeps its message id.

Real processes: the private cluster of ``rabbit_cluster`` (tests/conftest.py), the
daemon as ``twistd -n``, signed GitHub calls on a thread. Each test leaves the
cluster as it found it: three running members.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid

import pytest_twisted
from twisted.internet import reactor, threads
from txamqp.queue import Empty

from notifications.amqp.connection import connect
from tests.conftest import make_config, test_broker
from tests.processes import request, start_twistd, wait_until

SECRET = "cluster-secret"


def hosts_toml(cluster, exchange: str, archive: bool = False) -> str:
    nodes = ", ".join(f'"{host}:{port}"' for host, port in cluster.addresses)
    text = (
        f'\n[broker]\nhosts = [{nodes}]\nexchange = "{exchange}"\nheartbeat = 2\n'
        "connect_timeout = 5\n"
    )
    if archive:
        text += '\n[archive]\nmax_age = "1h"\nmax_bytes = 10000000\nsegment_bytes = 1000000\n'
    return text


def signed_ping(delivery: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"zen": "Mind your words, they are important.", "hook_id": 9}).encode()
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "ping",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": f"sha256={digest}",
    }


class Stream(threading.Thread):
    """Signed calls one after the other until stopped: which were answered 2xx, which not."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.answered: list[str] = []
        self.statuses: dict[str, str] = {}
        self.refused: list[tuple[str, int]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            delivery = str(uuid.uuid4())
            body, headers = signed_ping(delivery)
            try:
                code, answer = request(self.port, "POST", "/gate/GitHub/Acme", body, headers)
            except OSError:
                code, answer = 0, b""
            if 200 <= code < 300:
                self.answered.append(delivery)
                self.statuses[delivery] = json.loads(answer)["actions"][0]["status"]
            else:
                self.refused.append((delivery, code))

    def stop(self) -> None:
        self.halt.set()
        self.join(60)


def health(port: int) -> dict:
    return json.loads(request(port, "GET", "/health")[1])


def drained(port: int) -> bool:
    state = health(port)
    return state["broker"]["connected"] and state["outbox"]["depth"] == 0


async def declare_queue(cluster, exchange: str, name: str) -> None:
    host, port = cluster.addresses[0]
    client, channel = await connect(reactor, test_broker(exchange, host=host, port=port))
    try:
        await channel.queue_declare(queue=name, durable=True, arguments={"x-queue-type": "quorum"})
        await channel.queue_bind(queue=name, exchange=exchange, routing_key="#")
    finally:
        await client.close(within=2)


async def read_ids(cluster, exchange: str, name: str, index: int = 0) -> list[str]:
    """Every message id in the quorum queue (consumed through node ``index``); then the
    queue, the archive stream (if any) and the exchange are deleted."""
    host, port = cluster.addresses[index]
    client, channel = await connect(reactor, test_broker(exchange, host=host, port=port))
    ids = []
    try:
        await channel.basic_qos(prefetch_count=500)
        reply = await channel.basic_consume(queue=name, no_ack=True)
        queue = await client.queue(reply.consumer_tag)
        while True:
            try:
                message = await queue.get(timeout=3)
            except Empty:
                break
            ids.append(message.content.properties["message-id"])
        await channel.queue_delete(queue=name)
        await channel.queue_delete(queue=f"{exchange}.archive")
        await channel.exchange_delete(exchange=exchange)
    finally:
        await client.close(within=2)
    return ids


def node_index(cluster, node: str) -> int:
    """The index of the node a daemon's ``/health`` names (``host:port``)."""
    port = int(node.rsplit(":", 1)[1])
    return [port for _, port in cluster.addresses].index(port)


def assert_nothing_lost(stream: Stream, ids: list[str]) -> None:
    missing = set(stream.answered) - set(ids)
    assert not missing, f"{len(missing)} of {len(stream.answered)} calls answered 2xx are missing"
    assert set(ids) <= set(stream.answered) | {delivery for delivery, _ in stream.refused}
    queued = sum(status == "queued" for status in stream.statuses.values())
    print(
        f"\n{len(stream.answered)} answered 2xx ({queued} queued), {len(stream.refused)} not "
        f"answered 2xx, {len(ids)} messages, {len(set(ids))} distinct"
    )


async def start_daemon(tmp_path, cluster, archive: bool = False):
    exchange = f"cluster-deploy-{uuid.uuid4().hex[:10]}"
    queue = f"{exchange}.all"
    await declare_queue(cluster, exchange, queue)
    make_config(
        tmp_path,
        test_broker(exchange),
        services=[{"gate": "GitHub", "door": "Acme", "secret": SECRET}],
        toml=hosts_toml(cluster, exchange, archive),
    )
    daemon = start_twistd(tmp_path)
    await threads.deferToThread(daemon.ready)
    await threads.deferToThread(wait_until, lambda: health(daemon.port)["broker"]["connected"], 30)
    return daemon, exchange, queue


@pytest_twisted.ensureDeferred
async def test_the_node_the_daemon_uses_killed_during_a_stream(tmp_path, rabbit_cluster):
    cluster = rabbit_cluster
    daemon, exchange, queue = await start_daemon(tmp_path, cluster)
    try:
        node = (await threads.deferToThread(health, daemon.port))["broker"]["node"]
        killed = node_index(cluster, node)
        stream = Stream(daemon.port)
        stream.start()
        await threads.deferToThread(time.sleep, 2)
        before = len(stream.answered)
        await threads.deferToThread(cluster.kill, killed)
        await threads.deferToThread(time.sleep, 8)
        await threads.deferToThread(stream.stop)
        assert before > 10 and len(stream.answered) > before + 10
        await threads.deferToThread(wait_until, lambda: drained(daemon.port), 60)
        now = (await threads.deferToThread(health, daemon.port))["broker"]["node"]
        assert now != node, "the daemon went to another node"
        survivor = next(i for i in range(len(cluster.nodes)) if i != killed)
        ids = await read_ids(cluster, exchange, queue, survivor)
    finally:
        await threads.deferToThread(daemon.stop)
        await threads.deferToThread(cluster.start_node, killed)
    assert_nothing_lost(stream, ids)
    assert "Lost the connection to the broker at " + node in daemon.output()
    daemon.assert_clean()


@pytest_twisted.ensureDeferred
async def test_a_rolling_restart_of_the_nodes_under_load(tmp_path, rabbit_cluster):
    cluster = rabbit_cluster
    daemon, exchange, queue = await start_daemon(tmp_path, cluster)
    try:
        stream = Stream(daemon.port)
        stream.start()
        await threads.deferToThread(time.sleep, 1)
        await threads.deferToThread(cluster.rolling_restart, 2.0)
        await threads.deferToThread(time.sleep, 2)
        await threads.deferToThread(stream.stop)
        await threads.deferToThread(wait_until, lambda: drained(daemon.port), 60)
        ids = await read_ids(cluster, exchange, queue)
    finally:
        await threads.deferToThread(daemon.stop)
    assert_nothing_lost(stream, ids)
    assert stream.refused == []
    daemon.assert_clean()


@pytest_twisted.ensureDeferred
async def test_the_whole_cluster_down_then_up(tmp_path, rabbit_cluster):
    cluster = rabbit_cluster
    daemon, exchange, queue = await start_daemon(tmp_path, cluster, archive=True)
    try:
        # The archive stream is replicated on the three nodes.
        info = json.loads(
            await threads.deferToThread(
                cluster.ctl, 0, "list_queues", "name", "type", "members", "--formatter", "json"
            )
        )
        [archive] = [q for q in info if q["name"] == f"{exchange}.archive"]
        assert archive["type"] == "stream"
        assert sorted(archive["members"]) == sorted(node.name for node in cluster.nodes)

        stream = Stream(daemon.port)
        stream.start()
        await threads.deferToThread(time.sleep, 1)
        up = len(stream.answered)
        for index in range(len(cluster.nodes)):
            await threads.deferToThread(cluster.stop, index)
        down = len(stream.answered)
        await threads.deferToThread(time.sleep, 3)
        assert len(stream.answered) > down + 10, "calls are answered while the cluster is down"
        assert (await threads.deferToThread(health, daemon.port))["status"] == "degraded"
        for node in cluster.nodes:
            await threads.deferToThread(node.start)
        for node in cluster.nodes:
            await threads.deferToThread(node.wait_ready, 120)
        await threads.deferToThread(cluster.wait_members, 120)
        await threads.deferToThread(stream.stop)
        await threads.deferToThread(wait_until, lambda: drained(daemon.port), 90)
        archived = await archived_ids(cluster, exchange)
        ids = await read_ids(cluster, exchange, queue)
    finally:
        await threads.deferToThread(daemon.stop)
    assert_nothing_lost(stream, ids)
    assert "queued" in stream.statuses.values()
    # The archive kept what was confirmed with the whole cluster up, across the
    # restart of every node. (Around the stop itself, RabbitMQ 3.10 was seen to
    # confirm a notification its quorum queue kept and its stream did not: 1 of
    # 3,605 once. The archive is history; a consumer that must not miss one
    # reads a quorum queue.)
    assert set(stream.answered[:up]) <= set(archived)
    missing = set(stream.answered) - set(archived)
    print(f"archive: {len(set(archived))} distinct, {len(missing)} answered ones missing")
    daemon.assert_clean()


async def archived_ids(cluster, exchange: str) -> list[str]:
    """The message ids in the archive stream, read through node 1 to its end."""
    from notifications.amqp.stream import read_until_end

    host, port = cluster.addresses[1]
    client, _ = await connect(reactor, test_broker(exchange, host=host, port=port))
    ids: list[str] = []
    try:
        await read_until_end(
            client,
            f"{exchange}.archive",
            lambda delivery: ids.append(delivery.properties["message-id"]),
        )
    finally:
        await client.close(within=2)
    return ids
