"""History: the archive stream the daemon declares, and the status page read from it.

Real daemon processes and the real broker. Each test's stream is deleted at the end
(a stream keeps its data on the broker's disk until then).
"""

from __future__ import annotations

import json
import uuid

import pytest
import pytest_twisted
from twisted.internet import reactor, threads

from notifications.amqp.connection import connect
from notifications.amqp.stream import StreamReader
from tests.conftest import make_config
from tests.helpers import delete_queue
from tests.processes import request, serving_twistd, wait_until

ARCHIVE = '\n[archive]\nmax_age = "1h"\nmax_bytes = 10000000\nsegment_bytes = 1000000\n'


def notification(text: str) -> bytes:
    return json.dumps(
        {"service": "Deployer", "group": "ops", "type": "deploy", "text": text}
    ).encode()


def post(port: int, texts: list[str]) -> list[int]:
    return [
        request(port, "POST", "/gate/Notification/Acme", notification(text))[0] for text in texts
    ]


def status_json(port: int) -> dict:
    code, body = request(port, "GET", "/status.json")
    assert code == 200, body
    return json.loads(body)


def health(port: int) -> dict:
    return json.loads(request(port, "GET", "/health")[1])


@pytest_twisted.async_yield_fixture
async def archived(tmp_path, broker):
    """A configuration with the archive on, on the test's exchange; the stream (and
    the exchange) deleted at the end."""
    make_config(tmp_path, broker, toml=ARCHIVE)
    yield broker, f"{broker.exchange}.archive"
    await delete_queue(broker, f"{broker.exchange}.archive")


def connected(daemon, processes: int = 1) -> None:
    wait_until(lambda: daemon.output().count("Connected to the broker at") >= processes)


@pytest_twisted.ensureDeferred
async def test_the_archive_keeps_every_notification_and_survives_a_restart(tmp_path, archived):
    broker, queue = archived
    async with serving_twistd(tmp_path) as daemon:
        await threads.deferToThread(connected, daemon)
        state = (await threads.deferToThread(health, daemon.port))["archive"]
        assert state == {"enabled": True, "queue": queue, "on": True, "error": None}
        assert "are archived in the stream" in daemon.output()
        texts = [f"n{index}" for index in range(25)]
        assert await threads.deferToThread(post, daemon.port, texts) == [200] * 25

        def recent() -> list[str]:
            report = status_json(daemon.port)
            return [entry["text"] for entry in report["recent"]], report["recentFrom"]

        await threads.deferToThread(
            wait_until, lambda: recent() == ([f"n{index}" for index in range(24, 4, -1)], "archive")
        )
    daemon.assert_clean()

    # In the stream, with their properties, in order.
    client, _ = await connect(reactor, broker)
    try:
        reader = await StreamReader(client, queue, "first").start()
        bodies = []
        for _ in range(25):
            delivery = await reader.get().addTimeout(10, reactor)
            bodies.append(json.loads(delivery.body)["text"])
            assert delivery.properties["delivery-mode"] == 2
            assert delivery.message.routing_key == "acme.ops.deployer.deploy"
        assert bodies == texts
        await reader.close()
    finally:
        await client.close(within=2)

    # A new process shows the same list at once, read from the archive.
    daemon.start()
    try:
        await threads.deferToThread(daemon.ready)
        await threads.deferToThread(connected, daemon, 2)
        await threads.deferToThread(
            wait_until,
            lambda: (
                [entry["text"] for entry in status_json(daemon.port)["recent"]]
                == [f"n{index}" for index in range(24, 4, -1)]
            ),
        )
    finally:
        await threads.deferToThread(daemon.stop)
    daemon.assert_clean()


@pytest_twisted.ensureDeferred
async def test_every_worker_shows_the_same_list(tmp_path, archived):
    async with serving_twistd(tmp_path, "--workers", "2") as daemon:
        await threads.deferToThread(connected, daemon, 2)
        texts = [f"w{index}" for index in range(30)]
        assert await threads.deferToThread(post, daemon.port, texts) == [200] * 30
        expected = [f"w{index}" for index in range(29, 9, -1)]

        def both_caught_up() -> bool:
            lists = [[e["text"] for e in status_json(daemon.port)["recent"]] for _ in range(6)]
            return all(found == expected for found in lists)

        await threads.deferToThread(wait_until, both_caught_up)
        reads = [await threads.deferToThread(status_json, daemon.port) for _ in range(20)]
        assert {json.dumps(report["recent"]) for report in reads} == {
            json.dumps(reads[0]["recent"])
        }
        assert {report["recentFrom"] for report in reads} == {"archive"}
        lines = daemon.output().splitlines()
        # The twenty reads went to both workers (connections are spread by the kernel).
        assert any("[worker 0 " in line for line in lines)
        assert any("[worker 1 " in line for line in lines)
    daemon.assert_clean()


@pytest_twisted.ensureDeferred
async def test_without_the_archive_the_page_shows_this_process_calls(tmp_path, broker, consumer):
    make_config(tmp_path, broker)  # [archive] enabled = false
    async with serving_twistd(tmp_path) as daemon:
        await threads.deferToThread(connected, daemon)
        assert (await threads.deferToThread(health, daemon.port))["archive"] == {
            "enabled": False,
            "queue": f"{broker.exchange}.archive",
            "on": False,
            "error": None,
        }
        assert await threads.deferToThread(post, daemon.port, ["a", "b"]) == [200, 200]
        report = await threads.deferToThread(status_json, daemon.port)
        assert [entry["text"] for entry in report["recent"]] == ["b", "a"]
        assert report["recentFrom"] == "process"
        assert len(await consumer.drain()) == 2
    daemon.assert_clean()
    client, _channel = await connect(reactor, broker)
    try:
        from txamqp.client import Closed

        probe = await client.channel(2)
        await probe.channel_open()
        with pytest.raises(Closed):
            await probe.queue_declare(queue=f"{broker.exchange}.archive", passive=True)
    finally:
        await client.close(within=2)


@pytest_twisted.ensureDeferred
async def test_an_archive_the_broker_refuses_is_one_log_line_and_the_gates_publish(
    tmp_path, archived, consumer
):
    broker, queue = archived
    # A classic queue already has the archive's name: the broker refuses the stream.
    await consumer.channel.queue_declare(queue=queue, durable=False, auto_delete=True)
    make_config(tmp_path, broker, toml=ARCHIVE)
    async with serving_twistd(tmp_path) as daemon:
        await threads.deferToThread(connected, daemon)
        state = (await threads.deferToThread(health, daemon.port))["archive"]
        assert (state["enabled"], state["on"]) == (True, False)
        assert "PRECONDITION_FAILED" in state["error"]
        assert await threads.deferToThread(post, daemon.port, ["still published"]) == [200]
        [message] = await consumer.drain()
        assert message["text"] == "still published"
        refusals = [line for line in daemon.output().splitlines() if "refused the archive" in line]
        assert len(refusals) == 1, refusals
        assert "goes on without history" in refusals[0]
        report = await threads.deferToThread(status_json, daemon.port)
        assert report["recentFrom"] == "process"
    # The refusal is an error line; nothing else went wrong.
    output = daemon.output()
    assert "Traceback" not in output and "Unhandled" not in output


def test_archive_settings_are_checked(tmp_path):
    from notifications.config import load_config
    from notifications.errors import ConfigError

    for toml, message in [
        ('[archive]\nmax_age = "7 days"\n', "is not a duration such as 7D"),
        ("[archive]\nmax_bytes = 0\n", "max_bytes must be positive"),
        ('[archive]\nqueue = "amq.history"\n', "is not a queue name of ours"),
        ("[archive]\nkeep = 1\n", "unknown key 'keep' in [archive]"),
    ]:
        path = tmp_path / f"{uuid.uuid4().hex}.toml"
        path.write_text(toml)
        with pytest.raises(ConfigError) as refused:
            load_config(path, environ={})
        assert message in str(refused.value)
    path = tmp_path / "default.toml"
    path.write_text('[broker]\nexchange = "events"\n')
    archive = load_config(path, environ={}).archive
    assert (archive.enabled, archive.queue, archive.max_age, archive.max_bytes) == (
        True,
        "events.archive",
        "7D",
        1024**3,
    )


@pytest_twisted.ensureDeferred
async def test_the_page_shows_the_archive_after_a_restart(tmp_path, archived, browser):
    """In Chromium: what was published before a restart is on the page after it, newest first."""
    async with serving_twistd(tmp_path) as daemon:
        await threads.deferToThread(connected, daemon)
        texts = ["first deploy", "second deploy"]
        assert await threads.deferToThread(post, daemon.port, texts) == [200, 200]
        await threads.deferToThread(
            wait_until, lambda: len(status_json(daemon.port)["recent"]) == 2
        )
        await threads.deferToThread(daemon.stop)
        daemon.start()
        await threads.deferToThread(daemon.ready)
        shown = await threads.deferToThread(rows_on_the_page, browser, daemon.url, 2)
        assert shown == ["second deploy", "first deploy"]
    daemon.assert_clean()


def rows_on_the_page(browser, url: str, count: int) -> list[str]:
    """The texts of the page's last notifications once it shows ``count`` of them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(url + "/")
    rows = "#recent-rows tr"
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, rows)) == count)
    return [
        row.find_element(By.CSS_SELECTOR, ".text").text
        for row in browser.find_elements(By.CSS_SELECTOR, rows)
    ]
