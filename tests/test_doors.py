"""``notifications door`` against a running daemon and the real broker.

The daemon runs as ``twistd`` (a process: the commands find it by its pid
file and reload it with SIGHUP), the commands as ``notifications`` processes;
the test's own consumer (its exchange deleted at the end) makes sure the
exchange exists. Opening a door takes no restart, a rotated secret keeps
working until its grace period ends, and ``door check`` shows the ping line or
says what is wrong.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest_twisted
import treq
from twisted.internet import reactor, threads
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue

from notifications.credentials import parse_expiry
from tests.conftest import bind_consumer, close_consumer, make_config, test_broker
from tests.helpers import closed_port, signed_github_request
from tests.processes import start_twistd
from tests.test_cli import cli_environment

#: How long a test waits for a command before failing.
PROCESS_TIMEOUT = 60

#: The ping line of ``door check``: the time, Acme/orgz, the zen, GitHub's words.
PING_LINE = re.compile(
    r"\[[A-Z][a-z]{2} [ 0-9]\d \d\d:\d\d:\d\d\] Acme/orgz « [^»]+ » — "
    r"GitHub Webhooks ping zen aphorism\."
)


async def door(directory: Path, *args: str) -> tuple[int, str, str]:
    """Run ``notifications door …`` on the folder's configuration: exit code, stdout, stderr."""
    argv = ["-m", "notifications", "--config", str(directory / "notifications.toml"), "door"]
    d = getProcessOutputAndValue(sys.executable, [*argv, *args], env=cli_environment())
    out, err, code = await d.addTimeout(PROCESS_TIMEOUT, reactor)
    return code, out.decode(), err.decode()


async def started(directory: Path):
    """The daemon on the folder's configuration, answering."""

    def start():
        daemon = start_twistd(directory)
        daemon.ready()
        return daemon

    return await threads.deferToThread(start)


async def stopped(daemon) -> None:
    await threads.deferToThread(daemon.stop)
    daemon.assert_clean()


async def ping(daemon, secret: str, door_name: str = "Acme") -> int:
    """A signed GitHub ping to the daemon: its status code."""
    body, headers = signed_github_request("ping", {"zen": "Design for failure."}, secret)
    response = await treq.post(
        f"{daemon.url}/gate/GitHub/{door_name}",
        body,
        headers={name: [value] for name, value in headers.items()},
    )
    await response.content()
    return response.code


def printed_secret(out: str) -> str:
    [secret] = re.findall(r"^  Secret: +([0-9a-f]{64})$", out, re.M)
    return secret


async def check_after_a_silent_edit(daemon, change) -> tuple[int, str, str]:
    """``door check GitHub Acme`` once the credentials file is rewritten (its text through
    ``change``) without a reload, a second after the daemon's last one: its modification
    time says it changed since."""
    await deferLater(reactor, 1.1)
    path = daemon.directory / "credentials.json"
    path.write_text(change(path.read_text()))
    return await door(daemon.directory, "check", "GitHub", "Acme", "--url", daemon.url)


def credentials(directory: Path) -> list[dict]:
    return json.loads((directory / "credentials.json").read_text())["services"]


@pytest_twisted.ensureDeferred
async def test_door_add_opens_the_door_without_a_restart(tmp_path, broker, consumer):
    make_config(tmp_path, broker, services=[{"gate": "GitHub", "door": "Other", "secret": "x"}])
    daemon = await started(tmp_path)
    try:
        assert await ping(daemon, "anything") == 404
        code, out, err = await door(tmp_path, "add", "GitHub", "Acme", "--public-url", daemon.url)
        assert (code, err) == (0, ""), err
        assert f"The daemon (process {daemon.pid}) reloaded its configuration (2 services)." in out
        assert f"  Payload URL:       {daemon.url}/gate/GitHub/Acme" in out
        secret = printed_secret(out)
        assert await ping(daemon, secret) == 200
        assert await ping(daemon, "not-the-secret") == 403
        message, _ = await consumer.get()
        assert (message["project"], message["type"]) == ("Acme", "ping")

        # door remove closes it the same way.
        code, out, err = await door(tmp_path, "remove", "GitHub", "Acme")
        assert (code, err) == (0, ""), err
        assert "reloaded its configuration (1 services)" in out
        assert await ping(daemon, secret) == 404
        assert daemon.poll() is None
    finally:
        await stopped(daemon)
    assert secret not in daemon.output()


@pytest_twisted.ensureDeferred
async def test_door_add_with_no_daemon_says_so(tmp_path, broker):
    make_config(tmp_path, broker)
    code, out, err = await door(tmp_path, "add", "Jenkins", "Acme")
    assert (code, err) == (0, "")
    assert f"No daemon runs on {tmp_path / 'var'}: it reads the change when it starts." in out
    assert credentials(tmp_path)[0]["door"] == "Acme"


@pytest_twisted.ensureDeferred
async def test_a_rotated_secret_keeps_working_until_the_grace_period_ends(
    tmp_path, broker, consumer
):
    make_config(tmp_path, broker)
    daemon = await started(tmp_path)
    try:
        code, out, err = await door(tmp_path, "add", "GitHub", "Acme")
        assert code == 0, err
        old = printed_secret(out)
        code, out, err = await door(tmp_path, "rotate", "GitHub", "Acme", "--grace", "5s")
        assert (code, err) == (0, ""), err
        new = printed_secret(out)
        [entry] = credentials(tmp_path)
        expires = parse_expiry(entry["previous_secret_expires"])
        assert f"The previous secret is accepted until {entry['previous_secret_expires']}" in out
        assert "Secrets being rotated: GitHub/Acme previous secret accepted until" in (
            daemon.output()
        )
        # Both work during the grace period: the sender can be changed meanwhile.
        assert time.time() < expires - 1, "the commands took longer than the grace period"
        assert await ping(daemon, old) == 200
        assert await ping(daemon, new) == 200
        # Then the old one stops working, without a reload: the daemon reads its clock.
        await deferLater(reactor, max(0.0, expires - time.time()) + 0.2)
        assert await ping(daemon, old) == 403
        assert await ping(daemon, new) == 200
        assert len(await consumer.drain()) == 3
    finally:
        await stopped(daemon)
    assert old not in daemon.output() and new not in daemon.output()


@pytest_twisted.ensureDeferred
async def test_door_check_shows_the_notification_of_each_gate(tmp_path, broker, consumer):
    make_config(tmp_path, broker)
    daemon = await started(tmp_path)
    (tmp_path / "conduit-token").write_text("api-token\n")
    try:
        for gate, extra in [
            ("GitHub", ()),
            ("Jenkins", ()),
            ("DockerHub", ()),
            ("Notification", ()),
            (
                "Phabricator",
                (
                    "--instance",
                    "https://phabricator.acme.test",
                    "--api-token-file",
                    str(tmp_path / "conduit-token"),
                ),
            ),
        ]:
            code, _, err = await door(tmp_path, "add", gate, "Acme", *extra)
            assert code == 0, err
        expected = {
            "GitHub": PING_LINE,
            "Jenkins": re.compile(
                r"\[.{15}\] Acme/acme Jenkins job notifications-door-check has been started"
            ),
            "DockerHub": re.compile(
                r"\[.{15}\] Acme/docker New image pushed to Docker Hub registry for "
                r"acme/door-check by notifications-door-check — https://hub\.docker\.com/r/"
                r"acme/door-check"
            ),
            "Notification": re.compile(
                r"\[.{15}\] Acme/check door check of Notification/Acme \([0-9a-f]{16}\)"
            ),
            "Phabricator": re.compile(
                r"\[.{15}\] Acme/acme door check of Phabricator/Acme \([0-9a-f]{16}\)"
            ),
        }
        for gate, line in expected.items():
            code, out, err = await door(tmp_path, "check", gate, "Acme", "--url", daemon.url)
            assert (code, err) == (0, ""), (gate, out, err)
            lines = out.splitlines()
            assert lines[0] == f"{daemon.url}/gate/{gate}/Acme answered 200, published.", out
            assert line.fullmatch(lines[1]), (gate, lines[1])
        assert len(await consumer.drain()) == len(expected)
    finally:
        await stopped(daemon)


@pytest_twisted.ensureDeferred
async def test_door_check_says_what_is_wrong(tmp_path, broker, consumer):
    make_config(tmp_path, broker)
    daemon = await started(tmp_path)
    try:
        code, _, err = await door(tmp_path, "add", "GitHub", "Acme")
        assert code == 0, err
        code, out, err = await door(tmp_path, "check", "GitHub", "Acme", "--url", daemon.url)
        assert code == 0, err
        assert PING_LINE.fullmatch(out.splitlines()[-1])

        # An unknown door.
        code, out, err = await door(tmp_path, "check", "GitHub", "Nope", "--url", daemon.url)
        assert code == 1
        assert err == (
            "notifications: 404: the daemon does not know the GitHub door Nope, nor does the "
            "credentials file: notifications door add GitHub Nope (the daemon said: Not found. "
            "— unknown door)\n"
        )

        # The file edited without a reload: the daemon checks the old secret.
        code, out, err = await check_after_a_silent_edit(
            daemon, lambda text: text.replace('"secret": "', '"secret": "changed-')
        )
        assert code == 1
        assert err.startswith(
            "notifications: 403: the daemon refused the signature made with the credentials "
            "file's secret: it checks another one — was it reloaded since the file changed? "
            "(the daemon said: Unauthorized action. — missing or wrong signature); "
        ), err
        assert f"after the daemon (process {daemon.pid}) last read it: reload it" in err
        assert err.count("\n") == 1
        assert "changed-" not in err + out

    finally:
        await stopped(daemon)

    # The daemon stopped: nothing listens there.
    code, out, err = await door(tmp_path, "check", "GitHub", "Acme", "--url", daemon.url)
    assert code == 1
    assert err == (
        f"notifications: connection refused at {daemon.url}/gate/GitHub/Acme: is the daemon "
        "running, and listening there (--url)?\n"
    )


@pytest_twisted.ensureDeferred
async def test_door_check_of_a_door_the_daemon_has_not_read(tmp_path, broker, consumer):
    make_config(tmp_path, broker)
    daemon = await started(tmp_path)
    try:
        # Declared behind the daemon's back (no reload): it does not know the door.
        new = {"services": [{"gate": "GitHub", "door": "Acme", "secret": "s"}]}
        code, _, err = await check_after_a_silent_edit(daemon, lambda _: json.dumps(new))
        assert code == 1
        assert err.startswith(
            "notifications: 404: the daemon does not know the GitHub door Acme, which the "
            "credentials file declares: it has not read the file since (the daemon said: Not "
            "found. — unknown door); "
        ), err
        assert f"reload it (kill -HUP {daemon.pid})" in err
    finally:
        await stopped(daemon)


@pytest_twisted.ensureDeferred
async def test_door_check_when_the_notification_never_reaches_the_exchange(
    tmp_path, broker, consumer
):
    """The daemon answers 200, but publishes elsewhere (another exchange) or not yet
    (no broker): the command, on its own configuration, says so."""
    services = [{"gate": "Notification", "door": "Acme", "secret": "token-1"}]
    daemon_dir, command_dir = tmp_path / "daemon", tmp_path / "command"
    daemon_dir.mkdir()
    command_dir.mkdir()
    make_config(daemon_dir, broker, services=services)
    elsewhere = test_broker()
    other = await bind_consumer(elsewhere)  # declares the command's exchange
    make_config(command_dir, elsewhere, services=services)
    daemon = await started(daemon_dir)
    try:
        code, out, err = await door(
            command_dir, "check", "Notification", "Acme", "--url", daemon.url, "--timeout", "2"
        )
        assert code == 1, out
        assert out == f"{daemon.url}/gate/Notification/Acme answered 200, published.\n"
        assert err == (
            "notifications: the daemon accepted the call but its notification "
            "(acme.check.notifications.door.check) was not seen on the exchange "
            f"{elsewhere.exchange} at {elsewhere.describe()} within 2 s: does the daemon "
            "publish on another broker or exchange than this configuration's?\n"
        )
        assert len(await consumer.drain()) == 1  # it went to the daemon's exchange
    finally:
        await stopped(daemon)
        await close_consumer(other, elsewhere)


@pytest_twisted.ensureDeferred
async def test_door_check_of_a_daemon_without_its_broker(tmp_path, broker, consumer):
    services = [{"gate": "Jenkins", "door": "Acme"}]
    daemon_dir, command_dir = tmp_path / "daemon", tmp_path / "command"
    daemon_dir.mkdir()
    command_dir.mkdir()
    make_config(
        daemon_dir, test_broker(exchange=broker.exchange, port=closed_port()), services=services
    )
    make_config(command_dir, broker, services=services)
    daemon = await started(daemon_dir)
    try:
        code, out, err = await door(
            command_dir, "check", "Jenkins", "Acme", "--url", daemon.url, "--timeout", "2"
        )
        assert code == 1
        assert out == f"{daemon.url}/gate/Jenkins/Acme answered 200, queued.\n"
        assert err.endswith(
            "within 2 s: the daemon answered queued, it is not connected to the broker "
            "(see /health)\n"
        ), err
    finally:
        await threads.deferToThread(daemon.stop)
