"""A RabbitMQ cluster in the configuration: ``[broker] hosts``, ``BROKER_HOST`` lists,
and the endpoint that goes from node to node."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import defer, reactor
from twisted.internet.protocol import Factory

from notifications.amqp.connection import NodesEndpoint
from notifications.config import BrokerConfig, load_config
from notifications.errors import ConfigError


def config_file(directory: Path, broker: str) -> Path:
    path = directory / "n.toml"
    path.write_text("[broker]\n" + broker, encoding="utf-8")
    return path


def test_hosts_name_the_nodes_with_the_default_port(tmp_path):
    path = config_file(
        tmp_path, 'hosts = ["rabbit1:5672", "rabbit2", "rabbit3:5671"]\nport = 5673\n'
    )
    broker = load_config(path, environ={}).broker
    assert broker.nodes == (("rabbit1", 5672), ("rabbit2", 5673), ("rabbit3", 5671))
    assert broker.describe() == "rabbit1:5672,rabbit2:5673,rabbit3:5671"


def test_ipv6_nodes_take_brackets(tmp_path):
    path = config_file(tmp_path, 'hosts = ["[::1]:5700", "[fe80::2]"]\n')
    broker = load_config(path, environ={}).broker
    assert broker.nodes == (("::1", 5700), ("fe80::2", 5672))
    assert broker.describe() == "[::1]:5700,[fe80::2]:5672"


def test_one_host_is_one_node(tmp_path):
    broker = load_config(config_file(tmp_path, 'host = "rabbit"\nport = 5999\n'), environ={}).broker
    assert broker.nodes == (("rabbit", 5999),)
    assert BrokerConfig().nodes == (("localhost", 5672),)


def test_broker_host_may_be_a_comma_separated_list(tmp_path):
    path = config_file(tmp_path, 'hosts = ["file1", "file2"]\n')
    broker = load_config(
        path, environ={"BROKER_HOST": "a:5701, b ,c:5703", "BROKER_PORT": "5702"}
    ).broker
    assert broker.nodes == (("a", 5701), ("b", 5702), ("c", 5703))
    # A single name in the environment replaces the file's list too.
    broker = load_config(path, environ={"BROKER_HOST": "solo"}).broker
    assert broker.nodes == (("solo", 5672),)


@pytest.mark.parametrize(
    ("broker", "environ", "message"),
    [
        ('host = "a"\nhosts = ["b"]\n', {}, "give host (one node) or hosts (a cluster), not both"),
        ("hosts = []\n", {}, "the list of nodes is empty"),
        ('hosts = ["a", "a:5672"]\n', {}, "'a:5672' is listed twice"),
        ('hosts = ["a:x"]\n', {}, "not a port number in 'a:x'"),
        ('hosts = ["a:70000"]\n', {}, "not a port number in 'a:70000'"),
        ('hosts = [":5672"]\n', {}, "not a host[:port]"),
        ('hosts = ["::1"]\n', {}, "an IPv6 address takes brackets"),
        ("hosts = [5672]\n", {}, "not a host[:port] string: 5672"),
        ("", {"BROKER_HOST": "a,b:y"}, "BROKER_HOST: not a port number in 'b:y'"),
    ],
)
def test_bad_node_lists_are_named(tmp_path, broker, environ, message):
    with pytest.raises(ConfigError) as caught:
        load_config(config_file(tmp_path, broker), environ=environ)
    assert message in str(caught.value)


class RecordingEndpoint:
    """Stands for one node's endpoint: records the attempts made to it."""

    def __init__(self, name: str, attempts: list[str]):
        self.name = name
        self.attempts = attempts

    def connect(self, factory):
        self.attempts.append(self.name)
        return defer.Deferred()


def test_nodes_are_shuffled_once_then_tried_in_turn():
    broker = BrokerConfig(hosts=(("r1", 5672), ("r2", 5672), ("r3", 5671)))
    endpoint = NodesEndpoint(reactor, broker, shuffle=lambda nodes: nodes.reverse())
    assert endpoint.nodes == ["r3:5671", "r2:5672", "r1:5672"]
    attempts: list[str] = []
    endpoint._endpoints = [RecordingEndpoint(name, attempts) for name in endpoint.nodes]
    for _ in range(4):
        endpoint.connect(Factory())
    assert attempts == ["r3:5671", "r2:5672", "r1:5672", "r3:5671"]
    assert endpoint.current == "r3:5671"


def test_the_default_shuffle_spreads_processes_over_the_nodes():
    broker = BrokerConfig(hosts=tuple((f"r{i}", 5672) for i in range(3)))
    firsts = {NodesEndpoint(reactor, broker).nodes[0] for _ in range(200)}
    assert firsts == {"r0:5672", "r1:5672", "r2:5672"}


def test_with_tls_each_node_is_checked_against_its_own_name(monkeypatch):
    from notifications.amqp import connection

    checked: list[str] = []

    def options_for(host: str):
        checked.append(host)
        return real(host)

    real = connection.optionsForClientTLS
    monkeypatch.setattr(connection, "optionsForClientTLS", options_for)
    broker = BrokerConfig(
        hosts=(("rabbit1.example.org", 5671), ("rabbit2.example.org", 5671)), tls=True
    )
    NodesEndpoint(reactor, broker, shuffle=lambda nodes: None)
    assert checked == ["rabbit1.example.org", "rabbit2.example.org"]
    NodesEndpoint(reactor, BrokerConfig(hosts=(("plain", 5672),)))
    assert checked == ["rabbit1.example.org", "rabbit2.example.org"]
