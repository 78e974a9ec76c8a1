"""The daemon in the shapes operators run it: daemonized twistd (it forks), with and
without ``--workers``; one answer per GitHub delivery across the workers.

Real processes, the real broker; every call answered 2xx is counted on the exchange.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import signal
import time

import pytest
import pytest_twisted
from twisted.internet import threads

from notifications.daemonfiles import PID_NAME, read_reload
from tests.conftest import make_config
from tests.processes import (
    DaemonizedTwistd,
    pid_alive,
    request,
    serving_twistd,
    start_twistd,
    wait_until,
)

SECRET = "deployment-secret"


def github_call(secret: str, delivery: str | None = None, event: str = "ping") -> tuple:
    body = json.dumps({"zen": "Design for failure.", "hook_id": 7}).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or os.urandom(8).hex(),
        "X-Hub-Signature-256": "sha256="
        + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }
    return body, headers


def post_github(port: int, count: int, secret: str = SECRET, delivery: str | None = None):
    """``count`` signed pings, each on a connection of its own: the answers' codes and bodies."""
    answers = []
    for _ in range(count):
        body, headers = github_call(secret, delivery)
        answers.append(request(port, "POST", "/gate/GitHub/Acme", body, headers))
    return answers


def wait_connected(daemon, processes: int) -> None:
    """Until each process of the daemon has said it is connected to the broker."""
    wait_until(lambda: daemon.output().count("Connected to the broker at") >= processes)


def write_credentials(directory, secret: str) -> None:
    (directory / "credentials.json").write_text(
        json.dumps({"services": [{"gate": "GitHub", "door": "Acme", "secret": secret}]})
    )


@pytest.mark.parametrize("workers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_daemonized_twistd_serves_reloads_rotates_and_stops(
    tmp_path, broker, consumer, workers
):
    make_config(tmp_path, broker, services=[{"gate": "GitHub", "door": "Acme", "secret": SECRET}])
    storage = tmp_path / "var"
    arguments = ("--workers", str(workers)) if workers > 1 else ()
    daemon = DaemonizedTwistd(tmp_path, *arguments)
    await threads.deferToThread(daemon.start)
    try:
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(wait_connected, daemon, workers)
        assert pid_alive(daemon.pid)
        # The process that answers signals holds the pid file of the storage directory.
        assert (storage / PID_NAME).read_text().strip() == str(daemon.pid)

        answers = await threads.deferToThread(post_github, daemon.port, 20)
        assert [code for code, _ in answers] == [200] * 20, answers[:3]
        statuses = {json.loads(body)["actions"][0]["status"] for _, body in answers}
        assert statuses == {"published"}
        messages = await consumer.drain(wait=1.0)
        assert len(messages) == 20
        # Every call has its line in the daemon's log file, workers' included.
        await threads.deferToThread(
            wait_until, lambda: daemon.output().count("→ 200 AMQPAction") == 20
        )
        if workers > 1:
            lines = daemon.output().splitlines()
            answering = {
                index
                for index in range(workers)
                for line in lines
                if f"[worker {index} " in line and "→ 200" in line
            }
            assert answering == {0, 1}, "over 20 connections, both workers answer some"

        # SIGHUP: the new secret works at once, and the reload is recorded.
        write_credentials(tmp_path, "rotated-secret")
        sent = time.time()
        daemon.signal(signal.SIGHUP)

        def reloaded() -> bool:
            record = read_reload(storage)
            return record is not None and record["time"] >= sent

        await threads.deferToThread(wait_until, reloaded)
        record = read_reload(storage)
        assert (record["ok"], record["error"], record["services"]) == (True, None, 1)
        # Only the credentials changed: nothing waits for a restart (a worker
        # once compared its own storage folder with the file's and said so).
        await threads.deferToThread(
            wait_until, lambda: daemon.output().count("Configuration reloaded") == workers
        )
        assert "takes a restart" not in daemon.output()
        assert daemon.output().count("at the next start: nothing") == workers
        answers = await threads.deferToThread(post_github, daemon.port, 3, "rotated-secret")
        assert [code for code, _ in answers] == [200] * 3
        answers = await threads.deferToThread(post_github, daemon.port, 1)
        assert [code for code, _ in answers] == [403]
        assert len(await consumer.drain(wait=1.0)) == 3

        # SIGUSR1: twistd reopens its log file; lines go on in the new one.
        daemon.signal(signal.SIGUSR1)
        rotated = tmp_path / "twistd.log.1"
        await threads.deferToThread(wait_until, rotated.exists)
        answers = await threads.deferToThread(post_github, daemon.port, 2, "rotated-secret")
        assert [code for code, _ in answers] == [200] * 2
        await threads.deferToThread(
            wait_until, lambda: daemon.log_path.read_text().count("→ 200 AMQPAction") == 2
        )
        assert len(await consumer.drain(wait=1.0)) == 2
    finally:
        await threads.deferToThread(daemon.stop)
    # SIGTERM: the process is gone, with its pid files; nothing went wrong on the way.
    assert not daemon.pidfile.exists()
    assert not (storage / PID_NAME).exists()
    daemon.assert_clean()
    assert "Server Shut Down." in daemon.output()


def broker_connected(port: int) -> bool:
    """Whether ``/health`` says the process answering on ``port`` is connected to the broker."""
    code, body = request(port, "GET", "/health")
    return code == 200 and json.loads(body)["broker"]["connected"]


@pytest.mark.parametrize("workers", [1, 2])
@pytest_twisted.ensureDeferred
async def test_daemonized_twistd_logging_to_syslog_serves_and_stops(
    tmp_path, broker, consumer, workers
):
    make_config(tmp_path, broker, services=[{"gate": "GitHub", "door": "Acme", "secret": SECRET}])
    arguments = ("--workers", str(workers)) if workers > 1 else ()
    daemon = DaemonizedTwistd(tmp_path, *arguments, syslog=True)
    await threads.deferToThread(daemon.start)
    try:
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(wait_until, lambda: broker_connected(daemon.port))
        answers = await threads.deferToThread(post_github, daemon.port, 10)
        assert [code for code, _ in answers] == [200] * 10, answers[:3]
        # A worker that has not connected yet answers "queued", and publishes it
        # once connected: either way every call reaches the exchange.
        statuses = {json.loads(body)["actions"][0]["status"] for _, body in answers}
        assert statuses <= {"published", "queued"}
        assert len(await consumer.drain(wait=2.0)) == 10
    finally:
        await threads.deferToThread(daemon.stop)
    assert not daemon.pidfile.exists()
    assert not (tmp_path / "var" / PID_NAME).exists()
    assert not daemon.log_path.exists(), "with --syslog, twistd writes no log file"


@pytest_twisted.ensureDeferred
async def test_a_second_daemon_on_the_same_storage_is_refused(tmp_path, broker):
    make_config(tmp_path, broker)
    async with serving_twistd(tmp_path) as first:
        second = start_twistd(tmp_path)
        code = await threads.deferToThread(second.process.wait, 30)
        assert code != 0
        assert "another daemon (process " in second.output()
        assert f"runs on the storage directory {tmp_path / 'var'}" in second.output()
        assert first.poll() is None


@pytest_twisted.ensureDeferred
async def test_a_redelivery_is_published_once_whichever_worker_gets_it(tmp_path, broker, consumer):
    make_config(tmp_path, broker, services=[{"gate": "GitHub", "door": "Acme", "secret": SECRET}])
    delivery = "3f8a7c2e-0000-4000-8000-redelivered"
    async with serving_twistd(tmp_path, "--workers", "2") as daemon:
        await threads.deferToThread(wait_connected, daemon, 2)
        answers = await threads.deferToThread(post_github, daemon.port, 20, SECRET, delivery)
        assert [code for code, _ in answers] == [200] * 20
        reports = [json.loads(body) for _, body in answers]
        assert [report.get("duplicate", False) for report in reports] == [False] + [True] * 19
        messages = await consumer.drain(wait=1.0)
        assert len(messages) == 1
        # Both workers were given the delivery: the kernel spreads 20 connections.
        lines = [line for line in daemon.output().splitlines() if f"delivery={delivery}" in line]
        assert len(lines) == 20
        assert {line.split("[worker ")[1][0] for line in lines} == {"0", "1"}
    daemon.assert_clean()
