"""The private 3-node RabbitMQ cluster the deployment tests run on, tried for real.

``rabbit_cluster`` (tests/conftest.py) boots three private nodes of the
installed rabbitmq-server with ``devtools.rabbitmq`` and clusters them; these
tests check that it is a cluster worth testing against: replicated queues,
a node killed and restarted. The cluster's API blocks, so it is called
through ``deferToThread``; the broker is reached with the project's own
connection and publisher.
"""

from __future__ import annotations

import json
import uuid
from contextlib import asynccontextmanager

import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from devtools.rabbitmq import SYSTEM_PORTS, ephemeral_low
from notifications.amqp.connection import connect
from notifications.publisher import PublicationRefused, Publisher
from tests.conftest import Consumer, close_consumer, test_broker
from tests.helpers import delete_queue


def node_broker(cluster, index: int, exchange: str):
    """Broker settings for one node of the cluster, on the test's exchange."""
    host, port = cluster.addresses[index]
    return test_broker(exchange, host=host, port=port)


def exchange_name() -> str:
    return f"cluster-test-{uuid.uuid4().hex[:12]}"


async def declare_queue(broker, name: str, queue_type: str) -> None:
    """Declare a durable replicated queue bound with ``#`` to the broker's exchange."""
    client, channel = await connect(reactor, broker)
    try:
        await channel.queue_declare(
            queue=name, durable=True, arguments={"x-queue-type": queue_type}
        )
        await channel.queue_bind(queue=name, exchange=broker.exchange, routing_key="#")
    finally:
        await client.close(within=2)


@asynccontextmanager
async def replicated_queue(cluster, queue_type: str, prefix: str):
    """A queue of ``queue_type`` declared through node 1, bound to a new exchange of its own;
    the queue and the exchange deleted at the end (through node 2, in case node 1 was killed).

    Yields the exchange's name and the queue's.
    """
    exchange, queue = exchange_name(), f"{prefix}-{uuid.uuid4().hex[:8]}"
    await declare_queue(node_broker(cluster, 0, exchange), queue, queue_type)
    try:
        yield exchange, queue
    finally:
        await delete_queue(node_broker(cluster, 1, exchange), queue)


async def consume(broker, queue: str) -> Consumer:
    """A consumer of an existing queue (messages acknowledged on delivery)."""
    client, channel = await connect(reactor, broker)
    reply = await channel.basic_consume(queue=queue, no_ack=True)
    return Consumer(client, channel, await client.queue(reply.consumer_tag), queue)


async def start_publisher(broker) -> Publisher:
    publisher = Publisher(broker, reactor)
    publisher.startService()
    await publisher.when_connected().addTimeout(10, reactor)
    return publisher


async def publish_confirmed(publisher: Publisher, body: dict, timeout: float = 30.0) -> int:
    """Publish until the broker acknowledges; returns how many times it said nack.

    While a quorum queue elects a new leader, the broker may refuse messages
    (``basic.nack``) for a second or so: a refused message is published
    again, never dropped. A confirm that does not come within ``timeout``
    fails the test.
    """
    deadline = reactor.seconds() + timeout
    nacks = 0
    while True:
        confirmed = publisher.publish("cluster.test", json.dumps(body).encode(), body["id"])
        try:
            await confirmed.addTimeout(max(0.1, deadline - reactor.seconds()), reactor)
            return nacks
        except PublicationRefused:
            nacks += 1
            if reactor.seconds() > deadline:
                raise AssertionError(f"{body['id']} still refused after {timeout:g} s") from None
            await deferLater(reactor, 0.2)


async def publish_all(publisher: Publisher, prefix: str, count: int) -> tuple[list[str], set[str]]:
    """Publish ``count`` messages one after the other: (their ids, the ids ever nacked)."""
    ids, nacked = [], set()
    for index in range(count):
        body = {"id": f"{prefix}-{index}", "index": index}
        if await publish_confirmed(publisher, body):
            nacked.add(body["id"])
        ids.append(body["id"])
    return ids, nacked


async def assert_delivered(consumer: Consumer, ids: list[str], nacked: set[str]) -> None:
    """Every acknowledged message arrives, in order; a message may come twice only if
    it was refused once (the broker may have kept a copy it then nacked)."""
    received = [body["id"] for body in await consumer.drain(wait=1.5)]
    first_seen = list(dict.fromkeys(received))
    assert first_seen == ids, f"expected {ids}, received {received}"
    twice = {identifier for identifier in received if received.count(identifier) > 1}
    assert twice <= nacked, f"delivered twice though never refused: {sorted(twice - nacked)}"


async def queue_info(cluster, index: int, name: str) -> dict:
    """The queue as ``rabbitmqctl list_queues`` on node ``index`` shows it."""
    output = await threads.deferToThread(
        cluster.ctl,
        index,
        "list_queues",
        "name",
        "type",
        "members",
        "online",
        "leader",
        "--formatter",
        "json",
    )
    [info] = [queue for queue in json.loads(output) if queue["name"] == name]
    return info


async def wait_online(cluster, index: int, name: str, timeout: float = 30.0) -> dict:
    """Poll until every node is an online member of the queue; its last info."""
    names = sorted(node.name for node in cluster.nodes)
    deadline = reactor.seconds() + timeout
    while True:
        info = await queue_info(cluster, index, name)
        if sorted(info["members"]) == names and sorted(info["online"]) == names:
            return info
        if reactor.seconds() > deadline:
            raise AssertionError(f"{name} members are not all online after {timeout:g} s: {info}")
        await deferLater(reactor, 0.5)


@pytest_twisted.ensureDeferred
async def test_the_cluster_has_three_running_members(rabbit_cluster):
    names = [node.name for node in rabbit_cluster.nodes]
    assert len(set(names)) == 3
    assert await threads.deferToThread(rabbit_cluster.running_members) == sorted(names)
    low = ephemeral_low()
    for node in rabbit_cluster.nodes:
        assert node.host == "127.0.0.1"
        for port in (node.port, node.dist_port, *node.ctl_ports, *node.stream_ports):
            assert 1024 <= port < low
            assert port not in SYSTEM_PORTS
        beam, pids = await threads.deferToThread(lambda node=node: (node.beam_pid(), node.pids()))
        assert beam in pids
    # Each node answers AMQP on its own port.
    exchange = exchange_name()
    for index in range(3):
        client, channel = await connect(reactor, node_broker(rabbit_cluster, index, exchange))
        if index == 2:
            await channel.exchange_delete(exchange=exchange)
        await client.close(within=2)


@pytest_twisted.ensureDeferred
async def test_a_quorum_queue_is_replicated_on_every_node(rabbit_cluster):
    async with replicated_queue(rabbit_cluster, "quorum", "qq") as (exchange, queue):
        info = await wait_online(rabbit_cluster, 0, queue)
        assert info["type"] == "quorum"
        assert len(info["members"]) == 3

        consumer = await consume(node_broker(rabbit_cluster, 2, exchange), queue)
        publisher = await start_publisher(node_broker(rabbit_cluster, 1, exchange))
        try:
            ids, nacked = await publish_all(publisher, "replicated", 10)
            assert publisher.unroutable == 0
            await assert_delivered(consumer, ids, nacked)
        finally:
            await publisher.stopService()
            await close_consumer(consumer)


@pytest_twisted.ensureDeferred
async def test_a_quorum_queue_outlives_a_killed_node_which_then_rejoins(rabbit_cluster):
    killed = rabbit_cluster.nodes[0]
    async with replicated_queue(rabbit_cluster, "quorum", "qq") as (exchange, queue):
        first, second, third = (node_broker(rabbit_cluster, index, exchange) for index in range(3))
        try:
            info = await wait_online(rabbit_cluster, 0, queue)
            # Declared through node 1, led from there: its death forces an election.
            assert info["leader"] == killed.name

            publisher = await start_publisher(second)
            consumer = await consume(third, queue)
            try:
                # A publisher that has already published to the queue, as the
                # daemon's long-lived connection has. (With RabbitMQ 3.10, a
                # channel whose very first publish to a quorum queue falls in the
                # second of the election is refused for as long as it lives.)
                ids, nacked = await publish_all(publisher, "before", 5)
                await assert_delivered(consumer, ids, nacked)

                beam = await threads.deferToThread(killed.beam_pid)
                assert beam is not None
                await threads.deferToThread(rabbit_cluster.kill, 0)
                assert await threads.deferToThread(killed.pids) == []

                # Right away, while the queue elects a leader among the two left;
                # the consumer through node 3 stays subscribed across the election.
                try:
                    ids, nacked = await publish_all(publisher, "during", 20)
                except AssertionError as error:
                    info = await queue_info(rabbit_cluster, 1, queue)
                    raise AssertionError(f"{error}; {info}\n{rabbit_cluster.log_tail()}") from None
                await assert_delivered(consumer, ids, nacked)
                members = await threads.deferToThread(rabbit_cluster.running_members, 1)
                assert members == sorted(node.name for node in rabbit_cluster.nodes[1:])
                info = await queue_info(rabbit_cluster, 1, queue)
                assert info["leader"] in {node.name for node in rabbit_cluster.nodes[1:]}
                assert len(info["members"]) == 3
                assert killed.name not in info["online"]

                await threads.deferToThread(rabbit_cluster.start_node, 0)
                assert await threads.deferToThread(killed.beam_pid) not in (None, beam)
                await wait_online(rabbit_cluster, 0, queue)

                # The restarted node takes messages again, for consumers elsewhere.
                await publisher.stopService()
                publisher = await start_publisher(first)
                ids, nacked = await publish_all(publisher, "after", 10)
                await assert_delivered(consumer, ids, nacked)
            finally:
                await publisher.stopService()
                await close_consumer(consumer)
        finally:
            if not await threads.deferToThread(killed.running):
                # Leave a whole cluster to the tests that come next.
                await threads.deferToThread(rabbit_cluster.start_node, 0)


@pytest_twisted.ensureDeferred
async def test_a_stream_queue_has_a_replica_on_every_node(rabbit_cluster):
    async with replicated_queue(rabbit_cluster, "stream", "stream") as (exchange, queue):
        info = await wait_online(rabbit_cluster, 1, queue)
        assert info["type"] == "stream"
        assert info["leader"] == rabbit_cluster.nodes[0].name
        assert sorted(info["members"]) == sorted(node.name for node in rabbit_cluster.nodes)

        # Messages go in through any node (the leader appends them).
        publisher = await start_publisher(node_broker(rabbit_cluster, 2, exchange))
        try:
            ids, _ = await publish_all(publisher, "stream", 5)
            assert len(ids) == 5
            assert publisher.unroutable == 0
        finally:
            await publisher.stopService()
