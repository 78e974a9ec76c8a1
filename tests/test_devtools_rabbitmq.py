"""The pieces of ``devtools/rabbitmq.py`` that need no RabbitMQ node: ports, locks,
environment, cookie, the process table, and the ``ensure`` command."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from devtools import rabbitmq
from devtools.rabbitmq import (
    BLOCK_SIZE,
    SYSTEM_PORTS,
    Node,
    PortBlock,
    RabbitMQError,
    alive,
    clean_environment,
    descendants,
    ephemeral_low,
    kill_pids,
    reserve_ports,
    write_cookie,
)
from tests.conftest import BROKER_HOST, BROKER_PORT
from tests.helpers import closed_port
from tests.processes import ROOT


def test_a_port_block_lays_out_a_cluster():
    block = PortBlock(21000)
    assert [block.amqp(i) for i in range(3)] == [21000, 21001, 21002]
    assert [block.dist(i) for i in range(3)] == [21010, 21011, 21012]
    assert block.ctl == (21020, 21029)
    assert block.streams == (21030, 21099)
    assert block.ports == range(21000, 21100)


def test_reservations_take_free_blocks_below_the_ephemeral_range():
    first = reserve_ports(21000)
    try:
        second = reserve_ports(21000)
        try:
            # Two holders never share a block: the lock of the first is still held.
            assert second.block.base >= first.block.base + BLOCK_SIZE
            for reservation in (first, second):
                ports = reservation.block.ports
                assert ports[-1] < ephemeral_low()
                assert not SYSTEM_PORTS.intersection(ports)
            with pytest.raises(RabbitMQError, match="is busy"):
                reserve_ports(first.block.base, exact=True)
        finally:
            second.release()
        # Released, the block is free again.
        again = reserve_ports(second.block.base, exact=True)
        again.release()
    finally:
        first.release()


def test_a_block_with_a_port_in_use_is_skipped():
    probe = reserve_ports(21000)
    base = probe.block.base
    probe.release()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 42))
        busy.listen()
        reservation = reserve_ports(base)
        try:
            assert reservation.block.base > base
        finally:
            reservation.release()


def test_blocks_outside_the_allowed_range_are_refused():
    with pytest.raises(RabbitMQError, match="ephemeral range"):
        reserve_ports(ephemeral_low() - 50, exact=True)
    with pytest.raises(RabbitMQError, match="between 1024"):
        reserve_ports(80, exact=True)
    # 5600-5699 holds the system node's AMQP port: never taken.
    with pytest.raises(RabbitMQError, match="holds a port of the system node"):
        reserve_ports(5600, exact=True)


def test_the_node_environment_keeps_nothing_of_the_callers_broker(tmp_path, monkeypatch):
    for name, value in {
        "RABBITMQ_NODENAME": "rabbit@localhost",
        "RABBITMQ_MNESIA_BASE": "/var/lib/rabbitmq/mnesia",
        "ERL_FLAGS": "-setcookie stolen",
        "ERL_EPMD_PORT": "4369",
        "NOTIFY_SOCKET": "/run/systemd/notify",
        "HOME": "/root",
        "BROKER_PASSWORD": "secret",
    }.items():
        monkeypatch.setenv(name, value)
    node = Node("notif-check-1", 21000, 21010, tmp_path / "node", ctl_ports=(21020, 21029))
    environment = node.server_environment()
    leaked = [
        name
        for name in environment
        if name.startswith(("ERL_", "RABBITMQ_")) and environment[name] == os.environ.get(name)
    ]
    assert leaked == []
    assert "NOTIFY_SOCKET" not in environment
    assert "BROKER_PASSWORD" not in environment
    assert environment["HOME"] == str(tmp_path / "node" / "home")
    assert environment["RABBITMQ_NODENAME"] == "notif-check-1@localhost"
    assert environment["RABBITMQ_DIST_PORT"] == "21010"
    assert environment["RABBITMQ_CTL_DIST_PORT_MIN"] == "21020"
    assert environment["RABBITMQ_CTL_DIST_PORT_MAX"] == "21029"
    assert environment["RABBITMQ_CONF_ENV_FILE"] == str(tmp_path / "node" / "rabbitmq-env.conf")
    assert set(clean_environment()) == {"PATH", "LANG", "LC_ALL"} | (
        {"TMPDIR", "TZ"} & set(os.environ)
    )


def test_the_cookie_is_random_private_and_kept(tmp_path):
    write_cookie(tmp_path / "a")
    write_cookie(tmp_path / "b")
    first = (tmp_path / "a" / ".erlang.cookie").read_text()
    assert first != (tmp_path / "b" / ".erlang.cookie").read_text()
    assert len(first) == 40
    mode = stat.S_IMODE((tmp_path / "a" / ".erlang.cookie").stat().st_mode)
    assert mode == 0o400
    write_cookie(tmp_path / "a")
    assert (tmp_path / "a" / ".erlang.cookie").read_text() == first


def test_kill_pids_kills_a_process_tree_and_waits_for_it():
    parent = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60 & wait"], start_new_session=True)
    try:
        for _ in range(100):
            children = descendants(parent.pid)
            if len(children) == 2:
                break
            time.sleep(0.05)
        assert len(children) == 2
        kill_pids([parent.pid, *children])
        assert not [pid for pid in children if alive(pid)]
        assert parent.wait(5) == -signal.SIGKILL
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait(5)


def ensure(*arguments: str, **environment: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "devtools.rabbitmq", "ensure", *arguments],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **environment},
        check=False,
    )


def test_ensure_returns_at_once_when_the_broker_answers():
    done = ensure("--host", BROKER_HOST, "--port", str(BROKER_PORT))
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def test_ensure_fails_clearly_when_nothing_answers():
    port = closed_port()
    done = ensure("--host", "127.0.0.1", "--port", str(port))
    assert done.returncode == 1
    assert done.stderr.strip().endswith(f"RabbitMQ is not answering on 127.0.0.1:{port}")


def test_ensure_says_what_to_install(tmp_path, monkeypatch):
    # Only the system node's own port gets it started; here nothing is installed.
    monkeypatch.setattr(rabbitmq, "answers", lambda host, port, timeout=1.0: False)
    monkeypatch.setenv(rabbitmq.BIN_VARIABLE, str(tmp_path))
    with pytest.raises(RabbitMQError, match=r"apt-get install rabbitmq-server"):
        rabbitmq.ensure_system_broker("127.0.0.1", 5672, timeout=1)
