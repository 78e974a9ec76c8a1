"""``tail --since`` and ``history``: the archive read back from a time, then followed.

A daemon process with the archive on, the real broker; the CLI as a process.
Every notification counted: none missing, none twice, in order.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime

import pytest
import pytest_twisted
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater

from notifications.amqp.connection import connect
from tests.conftest import make_config
from tests.processes import request, start_twistd, wait_until
from tests.test_cli import LINE, cli, spawn

ARCHIVE = '\n[archive]\nmax_age = "1h"\nmax_bytes = 10000000\nsegment_bytes = 1000000\n'


def post(port: int, project: str, texts: list[str]) -> None:
    for text in texts:
        body = json.dumps(
            {
                "service": "Deployer",
                "project": project,
                "group": "ops",
                "type": "deploy",
                "text": text,
            }
        ).encode()
        code, answer = request(port, "POST", "/gate/Notification/door", body)
        assert code == 200, answer


def texts_of(out: str) -> list[str]:
    return [LINE.fullmatch(line)["rest"] for line in out.splitlines()]


async def next_second() -> datetime:
    """Wait for the next whole second; that moment (so that what came before it is older)."""
    now = time.time()
    await deferLater(reactor, math.floor(now) + 1 - now + 0.05)
    return datetime.fromtimestamp(math.floor(time.time()), UTC)


@pytest_twisted.async_yield_fixture
async def archiving(tmp_path, broker):
    """A daemon with the archive on: (its TwistdProcess, its configuration file)."""
    make_config(tmp_path, broker, toml=ARCHIVE)
    daemon = start_twistd(tmp_path)
    await threads.deferToThread(daemon.ready)
    await threads.deferToThread(wait_until, lambda: "are archived in the stream" in daemon.output())
    yield daemon, tmp_path / "notifications.toml"
    await threads.deferToThread(daemon.stop)
    daemon.assert_clean()
    client, channel = await connect(reactor, broker)
    try:
        await channel.queue_delete(queue=f"{broker.exchange}.archive")
    finally:
        await client.close(within=2)


@pytest_twisted.ensureDeferred
async def test_tail_since_prints_the_history_then_follows_without_gap_or_repeat(archiving):
    daemon, config = archiving
    await threads.deferToThread(post, daemon.port, "acme", [f"before {i}" for i in range(5)])
    since = await next_second()
    await threads.deferToThread(post, daemon.port, "acme", [f"after {i}" for i in range(8)])
    await threads.deferToThread(post, daemon.port, "other", ["not matching"])
    tail = spawn(
        config, "tail", "--since", since.isoformat(), "--count", "14", "--timeout", "30", "acme.#"
    )
    try:
        await tail.listening()  # the history is printed: now it follows the stream
        await threads.deferToThread(post, daemon.port, "acme", [f"live {i}" for i in range(6)])
        await threads.deferToThread(post, daemon.port, "other", ["not matching either"])
    finally:
        code = await tail.finish()
    assert code == 0, tail.err
    assert texts_of(tail.out.decode()) == [f"acme/ops after {i}" for i in range(8)] + [
        f"acme/ops live {i}" for i in range(6)
    ]
    assert b"reading the archive" in tail.err


@pytest_twisted.ensureDeferred
async def test_history_prints_a_time_range_and_exits(archiving):
    daemon, config = archiving
    await threads.deferToThread(post, daemon.port, "acme", ["old"])
    since = await next_second()
    await threads.deferToThread(post, daemon.port, "acme", [f"in {i}" for i in range(4)])
    await threads.deferToThread(post, daemon.port, "other", ["elsewhere"])
    until = await next_second()
    await deferLater(reactor, 1.1)
    await threads.deferToThread(post, daemon.port, "acme", ["too late"])

    code, out, err = await cli(
        config, "history", "--since", since.isoformat(), "--until", until.isoformat(), "acme.#"
    )
    assert code == 0, err
    assert texts_of(out) == [f"acme/ops in {i}" for i in range(4)]
    assert err.strip().endswith("4 notifications in " + f"{daemon_exchange(config)}.archive")

    # Everything since, as JSON: the other project and the last one too.
    code, out, err = await cli(config, "history", "--since", since.isoformat(), "--json")
    assert code == 0, err
    assert [json.loads(line)["text"] for line in out.splitlines()] == [
        "in 0",
        "in 1",
        "in 2",
        "in 3",
        "elsewhere",
        "too late",
    ]


def daemon_exchange(config) -> str:
    for line in config.read_text().splitlines():
        if line.startswith("exchange = "):
            return json.loads(line.split("=", 1)[1])
    raise AssertionError("no exchange in the configuration")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["history", "--since", "2099-01-01T00:00:00Z"],
            "--since: '2099-01-01T00:00:00Z' is in the future",
        ),
        (["history", "--since", "yesterday"], "--since: 'yesterday' is not a time"),
        (["history", "--since", "1h", "--until", "2h"], "--until is before --since"),
        (["tail", "--since", "soon"], "--since: 'soon' is not a time"),
        (["history", "--since", "1h", "a*.b"], "'a*.b' is not a routing-key pattern"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_bad_times_are_one_line_and_exit_2(tmp_path, broker, arguments, message):
    make_config(tmp_path, broker, toml=ARCHIVE)
    code, out, err = await cli(tmp_path / "notifications.toml", *arguments)
    assert (code, out) == (2, "")
    [line] = err.strip().splitlines()
    assert line.startswith("notifications: ") and message in line


@pytest_twisted.ensureDeferred
async def test_without_the_archive_history_says_so(tmp_path, broker):
    make_config(tmp_path, broker)  # archive off
    code, out, err = await cli(tmp_path / "notifications.toml", "history", "--since", "1h")
    assert (code, out) == (2, "")
    assert "the archive is off in this configuration" in err
