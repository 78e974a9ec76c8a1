"""``--workers N``: worker processes sharing the listening socket."""

from __future__ import annotations

import json
import os
import signal

import pytest_twisted
from twisted.internet import threads

from tests.conftest import make_config
from tests.processes import http_status, request, start_twistd, wait_until


def children_of(pid: int) -> list[int]:
    path = f"/proc/{pid}/task/{pid}/children"
    with open(path) as handle:
        return [int(child) for child in handle.read().split()]


def post_many(port: int, count: int) -> list[int]:
    body = json.dumps({"service": "Deployer", "group": "ops", "type": "deploy"})
    return [
        request(port, "POST", "/gate/Notification/Acme", body.encode())[0] for _ in range(count)
    ]


@pytest_twisted.ensureDeferred
async def test_two_workers_share_the_port_and_publish_everything(tmp_path, broker, consumer):
    make_config(tmp_path, broker)
    daemon = start_twistd(tmp_path, "--workers", "2")
    port = daemon.port
    try:
        assert (await threads.deferToThread(http_status, port)).endswith(b"ALIVE")
        workers = children_of(daemon.pid)
        assert len(workers) == 2
        codes = await threads.deferToThread(post_many, port, 60)
        assert codes == [200] * 60
        assert len(await consumer.drain(wait=1.0)) == 60
        # Each worker has an outbox of its own, and each took calls.
        spool = tmp_path / "var"
        assert sorted(path.name for path in spool.iterdir() if path.is_dir()) == [
            "worker-0",
            "worker-1",
        ]
        lines = daemon.log_path.read_text().splitlines()
        for index in (0, 1):
            answered = [line for line in lines if f"[worker {index} " in line and "→ 200" in line]
            # The kernel hands each connection to one worker; over 60, both get some.
            assert answered, f"worker {index} answered no call"

        # A worker that dies is started again; the port keeps answering.
        os.kill(workers[0], signal.SIGKILL)
        await threads.deferToThread(
            wait_until,
            lambda: len(children_of(daemon.pid)) == 2 and workers[0] not in children_of(daemon.pid),
        )
        codes = await threads.deferToThread(post_many, port, 10)
        assert codes == [200] * 10
        assert len(await consumer.drain(wait=1.0)) == 10
    finally:
        await threads.deferToThread(daemon.stop)
    assert daemon.returncode in (0, -signal.SIGTERM)
    log = daemon.log_path.read_text()
    assert "Traceback" not in log, log[-3000:]
    # Every worker stopped with its parent.
    for worker in workers[1:]:
        assert not os.path.exists(f"/proc/{worker}")
