"""``notifications outbox status|drain``: an instance lost for good, its outbox published
by another one; a held outbox refused."""

from __future__ import annotations

import json
import re
import signal

import pytest_twisted
from twisted.internet import threads

from tests.conftest import make_config, test_broker
from tests.helpers import closed_port
from tests.processes import request, serving_twistd, start_twistd
from tests.test_cli import cli


def post_notifications(port: int, count: int) -> list[tuple[int, dict]]:
    answers = []
    for index in range(count):
        body = json.dumps(
            {"service": "Deployer", "group": "ops", "type": "deploy", "text": f"n{index}"}
        ).encode()
        code, answer = request(port, "POST", "/gate/Notification/Acme", body)
        answers.append((code, json.loads(answer)))
    return answers


@pytest_twisted.ensureDeferred
async def test_drain_publishes_what_a_killed_daemon_left(tmp_path, broker, consumer):
    # The lost instance: its broker is unreachable, so every call waits in its outbox.
    lost = tmp_path / "lost"
    lost.mkdir()
    away = test_broker(exchange=broker.exchange, port=closed_port())
    make_config(lost, away)
    daemon = start_twistd(lost)
    try:
        await threads.deferToThread(daemon.ready)
        answers = await threads.deferToThread(post_notifications, daemon.port, 25)
    finally:
        daemon.signal(signal.SIGKILL)
        await threads.deferToThread(daemon.process.wait, 10)
    assert [code for code, _ in answers] == [200] * 25
    assert {report["actions"][0]["status"] for _, report in answers} == {"queued"}
    await consumer.expect_nothing()

    # Another instance's configuration, with a broker that works.
    here = tmp_path / "here"
    here.mkdir()
    make_config(here, broker)
    config = here / "notifications.toml"
    storage = lost / "var"

    code, out, err = await cli(config, "outbox", "status", "--storage", str(storage))
    assert code == 0, err
    assert f"{storage}: 25 notifications waiting, not held" in out
    assert re.search(r"acme\.ops\.deployer\.deploy\s+25", out)

    code, out, err = await cli(config, "outbox", "drain", "--storage", str(storage))
    assert code == 0, err
    assert f"{storage}: 25 published, the outbox is empty" in out
    messages = await consumer.drain(wait=1.0)
    assert [message["text"] for message in messages] == [f"n{index}" for index in range(25)]

    code, out, _ = await cli(config, "outbox", "status", "--storage", str(storage))
    assert f"{storage}: 0 notifications waiting, not held" in out


@pytest_twisted.ensureDeferred
async def test_drain_refuses_an_outbox_a_running_daemon_holds(tmp_path, broker):
    make_config(tmp_path, broker)
    async with serving_twistd(tmp_path) as daemon:
        storage = tmp_path / "var"
        config = tmp_path / "notifications.toml"
        code, out, err = await cli(config, "outbox", "drain", "--storage", str(storage))
        assert (code, out) == (2, "")
        assert err.strip().splitlines() == [
            f"notifications: the outbox in {storage} is held by a running daemon "
            f"(process {daemon.pid}): it publishes it itself; stop it first to drain it "
            "from here"
        ]
        code, out, err = await cli(config, "outbox", "status", "--storage", str(storage))
        assert code == 0, err
        assert f"held by a running daemon (process {daemon.pid})" in out


@pytest_twisted.ensureDeferred
async def test_status_of_a_folder_without_an_outbox_is_a_clear_error(tmp_path, broker):
    make_config(tmp_path, broker)
    config = tmp_path / "notifications.toml"
    code, out, err = await cli(config, "outbox", "status", "--storage", str(tmp_path / "none"))
    assert (code, out) == (2, "")
    assert err.strip() == (
        f"notifications: no outbox in {tmp_path / 'none'} (no outbox.sqlite3 there)"
    )
