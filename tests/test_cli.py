"""The ``notifications`` command: config show/validate and payload in-process, tail and send
as real processes on the real RabbitMQ."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import pytest_twisted
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.utils import getProcessOutputAndValue
from txamqp.content import Content

from notifications.amqp.connection import connect
from notifications.cli import main
from notifications.commands.tail import format_notification, parse_notification
from notifications.config import BrokerConfig
from notifications.publisher import message_properties
from tests.conftest import make_config, test_broker, write_json
from tests.helpers import SeverableProxy
from tests.payloads import (
    dockerhub_push,
    github_ping,
    github_push,
    github_watch,
    jenkins,
    phabricator_form_body,
)

GITHUB_SECRET = "github-s3cret-do-not-print"
CONDUIT_TOKEN = "api-conduit-token-do-not-print"
JENKINS_TOKEN = "jenkins-door-token-do-not-print"

SERVICES = [
    {"gate": "GitHub", "door": "Acme", "secret": GITHUB_SECRET},
    {"gate": "Jenkins", "door": "Acme", "secret": JENKINS_TOKEN},
    {"gate": "DockerHub", "door": "acme"},
    {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": "https://phabricator.acme.test",
        "secret": CONDUIT_TOKEN,
    },
]

ANALYZERS = {
    "GitHub": {"Acme": {"map": [{"group": "ops", "items": ["infra-*"]}], "ignore": ["watch"]}},
    "Jenkins": {
        "Acme": {
            "defaultGroup": "ci",
            "map": [{"group": "ops", "items": ["deploy-*"]}],
            "notifyOnlyOnFailure": ["nightly"],
        }
    },
    "Phabricator": {"Acme": {"map": [{"group": "widgets", "words": ["widget"]}]}},
}

#: How long a test waits for a CLI process before failing.
PROCESS_TIMEOUT = 30


def write_config(directory: Path, toml: str = "", **kwargs: Any) -> Path:
    """A configuration folder (services and analyzers above by default); its TOML file."""
    kwargs.setdefault("services", SERVICES)
    kwargs.setdefault("analyzers", ANALYZERS)
    make_config(directory, test_broker(), toml=toml, **kwargs)
    return directory / "notifications.toml"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """Run the command in-process; its exit code, stdout and stderr."""
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def table_row(output: str, first: str, second: str) -> list[str]:
    """The cells of the services table row starting with ``first`` and ``second``."""
    for line in output.splitlines():
        cells = re.split(r" {2,}", line.strip())
        if cells[:2] == [first, second]:
            return cells
    raise AssertionError(f"no row {first} {second} in:\n{output}")


# config show ----------------------------------------------------------------


def test_config_show_lists_gates_features_and_services(tmp_path, capsys):
    path = write_config(tmp_path, toml="[features]\nGetConfig = false\n")
    code, out, err = run(capsys, "--config", str(path), "config", "show")
    assert (code, err) == (0, "")
    assert "Gates: Notification, DockerHub, GitHub, Jenkins, Phabricator" in out.splitlines()
    assert "  ✓ Gate" in out.splitlines()
    assert "  ✗ GetConfig" in out.splitlines()
    assert "  ✓ ActionsReport" in out.splitlines()
    assert re.split(r" {2,}", out.split("Services:\n")[1].splitlines()[0].strip()) == [
        "gate",
        "door",
        "instance",
        "status",
    ]
    assert table_row(out, "GitHub", "Acme") == ["GitHub", "Acme", "ø", "✓"]
    assert table_row(out, "DockerHub", "acme") == ["DockerHub", "acme", "ø", "✓"]
    assert table_row(out, "Phabricator", "Acme") == [
        "Phabricator",
        "Acme",
        "https://phabricator.acme.test",
        "Projects map not cached.",
    ]
    for secret in (GITHUB_SECRET, CONDUIT_TOKEN, JENKINS_TOKEN, "guest"):
        assert secret not in out


def test_config_show_columns_are_aligned(tmp_path, capsys):
    path = write_config(tmp_path)
    _, out, _ = run(capsys, "--config", str(path), "config", "show")
    rows = out.split("Services:\n")[1].split("\n\n")[0].splitlines()
    assert len(rows) == 2 + len(SERVICES)  # headers, rule, one row per service
    starts = {line.index("ø") for line in rows if "ø" in line}
    assert len(starts) == 1, rows


def test_config_show_without_gates_or_services(tmp_path, capsys):
    path = write_config(tmp_path, services=[], toml="[features]\nGate = false\n")
    code, out, _ = run(capsys, "--config", str(path), "config", "show")
    assert code == 0
    assert "Gates: none (the Gate feature is off)" in out
    assert "  ✗ Gate" in out.splitlines()
    assert "Services: none" in out.splitlines()
    assert "Consumers (GET /events): none" in out.splitlines()
    assert out.rstrip().endswith("Subscriptions (webhooks): none")


def test_config_show_lists_consumers_and_subscriptions_without_secrets(tmp_path, capsys):
    token = "consumer-token-0123456789"
    secret = "subscription-secret-0123456789"
    path = write_config(
        tmp_path,
        toml=f"""
[[consumers]]
name = "dashboard"
token = "{token}"
patterns = ["acme.#", "*.ops.#"]

[[consumers]]
name = "nobody"
token = "another-token-0123456789"

[[subscriptions]]
name = "relay"
url = "https://relay.acme.test/hooks/k3y-in-the-path"
patterns = ["acme.#"]
secret = "{secret}"
""",
    )
    code, out, err = run(capsys, "--config", str(path), "config", "show")
    assert (code, err) == (0, "")
    assert table_row(out, "dashboard", "acme.# *.ops.#") == ["dashboard", "acme.# *.ops.#"]
    assert table_row(out, "nobody", "ø") == ["nobody", "ø"]
    assert table_row(out, "relay", "https://relay.acme.test") == [
        "relay",
        "https://relay.acme.test",
        "acme.#",
    ]
    for hidden in (token, secret, "k3y-in-the-path"):
        assert hidden not in out


def test_config_show_a_cached_projects_map_is_fine(tmp_path, capsys):
    path = write_config(tmp_path)
    write_json(tmp_path / "var" / "phabricator" / "Acme.json", {})
    _, out, _ = run(capsys, "--config", str(path), "config", "show")
    assert table_row(out, "Phabricator", "Acme")[3] == "✓"


def test_config_error_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nowhere.toml"
    code, out, err = run(capsys, "--config", str(missing), "config", "show")
    assert (code, out) == (2, "")
    assert err == f"notifications: {missing}: No such file or directory\n"


def test_config_path_from_the_environment(tmp_path, capsys, monkeypatch):
    path = write_config(tmp_path, toml='[broker]\nexchange = "from-environment"\n')
    monkeypatch.setenv("NOTIFICATIONS_CONFIG", str(path))
    code, out, _ = run(capsys, "config", "show")
    assert code == 0
    assert "exchange from-environment" in out


# config validate ------------------------------------------------------------


def test_config_validate_accepts_a_good_configuration(tmp_path, capsys):
    path = write_config(tmp_path)
    code, out, err = run(capsys, "--config", str(path), "config", "validate")
    assert (code, err) == (0, "")
    assert out.startswith(f"{path}: the configuration is valid")


def test_config_validate_reports_each_broken_file(tmp_path, capsys):
    path = write_config(tmp_path)
    # Broken after make_config, which loads (and so checks) the files it writes.
    analyzer = tmp_path / "analyzers" / "GitHub" / "Acme.json"
    analyzer.write_text('{"map": [', encoding="utf-8")
    credentials = write_json(
        tmp_path / "credentials.json",
        {"services": [{"gate": "GitHub", "door": "Acme", "secert": GITHUB_SECRET}]},
    )
    code, out, err = run(capsys, "--config", str(path), "config", "validate")
    assert (code, err) == (1, "")
    lines = out.splitlines()
    assert len(lines) == 2, out
    assert (
        f"{credentials.resolve()} — services[0] (GitHub/Acme): unknown key 'secert' "
        "(expected door, gate, instance, secret, secret_env, secret_file)"
    ) in lines
    assert any(line.startswith(f"{analyzer.resolve()} — invalid JSON: ") for line in lines)
    assert GITHUB_SECRET not in out


def test_config_validate_a_broken_toml(tmp_path, capsys):
    path = tmp_path / "notifications.toml"
    path.write_text("[broker\n", encoding="utf-8")
    code, out, _ = run(capsys, "--config", str(path), "config", "validate")
    assert code == 1
    assert out.startswith(f"{path} — invalid TOML: ")


# payload --------------------------------------------------------------------


def payload_file(tmp_path: Path, content: dict | bytes, name: str = "payload.json") -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return str(path)


def render(tmp_path, capsys, *args: str) -> tuple[int, Any, str]:
    """``payload`` with the ``etc`` configuration; exit code, JSON output (or text), stderr."""
    path = tmp_path / "etc" / "notifications.toml"
    code, out, err = run(capsys, "--config", str(path), "payload", *args)
    try:
        return code, json.loads(out), err
    except ValueError:
        return code, out, err


@pytest.fixture
def etc(tmp_path) -> Path:
    """A folder with the configuration in ``etc/``, and room for payload files."""
    (tmp_path / "etc").mkdir()
    write_config(tmp_path / "etc")
    return tmp_path


PUSHED = github_push(commits=1, repo="infra-servers")
BUILT = jenkins("deploy-web", "COMPLETED", "SUCCESS")
IMAGE = dockerhub_push("acme/widgets", "bob")
DEPLOYED = {"service": "Deployer", "group": "ops", "type": "deploy", "text": "Déployé"}


@pytest.mark.parametrize(
    ("args", "payload", "expected"),
    [
        pytest.param(
            ("GitHub", "Acme", "push"),
            PUSHED,
            {
                "service": "GitHub",
                "project": "Acme",
                "group": "ops",
                "rawContent": PUSHED,
                "type": "push",
                "text": "alice committed Add the widget factory",
                "link": PUSHED["head_commit"]["url"],
            },
            id="github push",
        ),
        pytest.param(
            ("Jenkins", "Acme"),
            BUILT,
            {
                "service": "Jenkins",
                "project": "Acme",
                "group": "ops",
                "rawContent": BUILT,
                "type": "completed.success",
                "text": "Jenkins job deploy-web has been completed: success",
                "link": "https://ci.acme.test/job/deploy-web/7/",
            },
            id="jenkins",
        ),
        pytest.param(
            ("DockerHub", "acme"),
            IMAGE,
            {
                "service": "DockerHub",
                "project": "acme",
                "group": "docker",
                "rawContent": IMAGE,
                "type": "push",
                "text": "New image pushed to Docker Hub registry for acme/widgets by bob",
                "link": "https://registry.hub.docker.com/u/acme/widgets/",
            },
            id="dockerhub push",
        ),
        pytest.param(
            ("Notification",),
            DEPLOYED,
            {
                "service": "Deployer",
                "project": "cli",  # no door given: the CLI's
                "group": "ops",
                "rawContent": None,
                "type": "deploy",
                "text": "Déployé",
                "link": "",
            },
            id="notification defaults to the cli door",
        ),
    ],
)
def test_payload_renders_the_notification(etc, capsys, args, payload, expected):
    """The gate's name, then the payload file, then the door and the event if any."""
    gate, *rest = args
    code, notification, err = render(etc, capsys, gate, payload_file(etc, payload), *rest)
    assert (code, err) == (0, "")
    assert notification == expected


def test_payload_github_ping_and_case_insensitive_service(etc, capsys):
    file = payload_file(etc, github_ping())
    code, notification, _ = render(etc, capsys, "github", file, "Acme", "ping")
    assert code == 0
    assert (
        notification["text"]
        == "« Keep it logically awesome. » — GitHub Webhooks ping zen aphorism."
    )
    assert (notification["group"], notification["type"], notification["link"]) == (
        "orgz",
        "ping",
        "",
    )


def test_payload_github_form_body(etc, capsys):
    body = urlencode({"payload": json.dumps(github_ping(zen="Non-blocking is better."))})
    file = payload_file(etc, body.encode(), "form.txt")
    code, notification, _ = render(etc, capsys, "GitHub", file, "Acme", "ping")
    assert code == 0
    assert notification["text"].startswith("« Non-blocking is better. »")


def test_payload_github_needs_an_event(etc, capsys):
    code, out, err = render(etc, capsys, "GitHub", payload_file(etc, github_ping()), "Acme")
    assert (code, out) == (2, "")
    assert err == "notifications: payload: the GitHub gate needs an event (e.g. push)\n"


def test_payload_github_door_without_secret_still_renders_with_a_note(etc, capsys):
    code, notification, err = render(
        etc, capsys, "GitHub", payload_file(etc, github_ping()), "Other", "ping"
    )
    assert code == 0
    assert notification["project"] == "Other"
    assert "would answer 404" in err


def test_payload_github_event_ignored_by_the_analyzer(etc, capsys):
    code, out, _ = render(etc, capsys, "GitHub", payload_file(etc, github_watch()), "Acme", "watch")
    assert code == 0
    assert out.startswith("No notification: the GitHub gate publishes nothing")


def test_payload_jenkins_ignored_job(etc, capsys):
    file = payload_file(etc, jenkins("nightly", "COMPLETED", "SUCCESS"))
    code, out, err = render(etc, capsys, "Jenkins", file, "Acme")
    assert (code, err) == (0, "")
    assert out == (
        "No notification: the Jenkins gate publishes nothing for this payload "
        "(the door's analyzer configuration leaves it out).\n"
    )


def test_payload_jenkins_needs_a_door(etc, capsys):
    code, _, err = render(etc, capsys, "Jenkins", payload_file(etc, jenkins()))
    assert code == 2
    assert "needs a door" in err


def test_payload_output_keeps_non_ascii(etc, capsys):
    body = {"service": "Deployer", "group": "ops", "type": "deploy", "text": "Déployé"}
    code, out, _ = run(
        capsys,
        "--config",
        str(etc / "etc" / "notifications.toml"),
        "payload",
        "Notification",
        payload_file(etc, body),
    )
    assert code == 0
    assert '\n    "text": "Déployé",\n' in out


def test_payload_phabricator_form_body(etc, capsys):
    body = phabricator_form_body("PHID-TASK-acme0000widgets", "alice created T42: Widget spins.")
    file = payload_file(etc, body, "story.txt")
    code, notification, _ = render(etc, capsys, "Phabricator", file, "Acme")
    assert code == 0
    assert notification["rawContent"]["storyData"]["objectPHID"] == "PHID-TASK-acme0000widgets"
    del notification["rawContent"]
    assert notification == {
        "service": "Phabricator",
        "project": "Acme",
        "group": "widgets",
        "type": "TASK",
        "text": "alice created T42: Widget spins.",
        "link": "",
    }


def test_payload_refused_by_the_gate(etc, capsys):
    file = payload_file(etc, phabricator_form_body(), "story.txt")
    code, out, err = render(etc, capsys, "Phabricator", file, "Elsewhere")
    assert (code, out) == (1, "")
    assert err == (
        "notifications: the Phabricator gate refuses this payload: "
        "404 Unknown Phabricator instance. (no such Phabricator door)\n"
    )


def test_payload_bad_body(etc, capsys):
    file = payload_file(etc, {"name": "widgets"})
    code, _, err = render(etc, capsys, "Jenkins", file, "Acme")
    assert code == 1
    assert "400 Bad request. (expected a Jenkins notification" in err


def test_payload_unknown_service_and_missing_file(etc, capsys):
    code, _, err = render(etc, capsys, "GitLab", payload_file(etc, {}), "Acme")
    assert code == 2
    assert err.startswith("notifications: unknown service 'GitLab'")
    code, _, err = render(etc, capsys, "Jenkins", str(etc / "missing.json"), "Acme")
    assert code == 2
    assert err == f"notifications: {etc / 'missing.json'}: No such file or directory\n"


# send, refused before any connection ------------------------------------------


def test_send_refuses_an_invalid_notification_without_a_broker(tmp_path, capsys):
    path = write_config(tmp_path, toml='[broker]\nhost = "127.0.0.1"\nport = 1\n')
    argv = ["--config", str(path), "send", "--service", "S", "--project", "acme", "--type", "t"]
    code, out, err = run(capsys, *argv, "--group", "")
    assert (code, out) == (1, "")
    assert err == "notifications: not a valid notification: group must be a non-empty string\n"
    code, _, err = run(capsys, *argv, "--group", "ops", "--raw", "{")
    assert code == 2
    assert err.startswith("notifications: --raw is not JSON")


def test_usage_errors_exit_2(capsys):
    assert main([]) == 2
    assert main(["send", "--service", "S"]) == 2
    assert main(["tail", "--count", "0"]) == 2
    capsys.readouterr()


# tail formatting ------------------------------------------------------------


def test_format_notification():
    stamp = 1714816800
    when = time.strftime("%b %d %H:%M:%S", time.localtime(stamp))
    notification = {"project": "acme", "group": "ops", "text": "Deployed", "link": ""}
    assert format_notification(notification, stamp, colour=False) == f"[{when}] acme/ops Deployed"
    notification["link"] = "https://ci.acme.test/7"
    assert (
        format_notification(notification, stamp, colour=False)
        == f"[{when}] acme/ops Deployed — https://ci.acme.test/7"
    )
    coloured = format_notification(notification, stamp, colour=True)
    assert (
        coloured
        == f"[\x1b[2m{when}\x1b[0m] \x1b[1macme/ops\x1b[0m Deployed — https://ci.acme.test/7"
    )


def test_format_notification_keeps_the_terminal_safe():
    notification = {
        "project": "acme",
        "group": "ops",
        "text": "two\nlines \x1b[31mred",
        "link": None,
    }
    line = format_notification(notification, 0, colour=False)
    assert line.endswith("acme/ops two lines  [31mred")


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_parse_notification_rejects_what_is_not_an_object(body):
    with pytest.raises(ValueError):
        parse_notification(body)


# tail and send on the real broker ---------------------------------------------

LINE = re.compile(r"\[(?P<when>[A-Z][a-z]{2} \d{2} \d{2}:\d{2}:\d{2})\] (?P<rest>.*)")


def broker_toml(broker: BrokerConfig, port: int | None = None) -> str:
    """The ``[broker]`` section a CLI process reads (make_config's Config is not seen there)."""
    return (
        f'[broker]\nhost = "{broker.host}"\nport = {port or broker.port}\n'
        f'exchange = "{broker.exchange}"\nconnect_timeout = 5\n'
    )


def cli_environment() -> dict[str, str]:
    """Our environment, without what would override the configuration file."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key != "NOTIFICATIONS_CONFIG" and not key.startswith("BROKER_")
    }
    env.setdefault("PYTHONIOENCODING", "utf-8")
    return env


class CLIProcess(protocol.ProcessProtocol):
    """A ``notifications`` process: what it wrote, when it says it listens, how it ended."""

    def __init__(self):
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred = defer.Deferred()
        self._listening: list[tuple[int, defer.Deferred]] = []

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data
        self._check_listening()

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)

    def listening(self, times: int = 1) -> defer.Deferred:
        """Fires once the process said ``listening on`` ``times`` times."""
        d: defer.Deferred = defer.Deferred()
        self._listening.append((times, d))
        self._check_listening()
        return d.addTimeout(PROCESS_TIMEOUT, reactor)

    def _check_listening(self) -> None:
        said = self.err.count(b"listening on ")
        for times, d in list(self._listening):
            if said >= times:
                self._listening.remove((times, d))
                d.callback(None)

    async def finish(self) -> int:
        """The exit code, killing the process if it does not end in time."""
        try:
            return await self.ended.addTimeout(PROCESS_TIMEOUT, reactor)
        except defer.TimeoutError:
            self.transport.signalProcess("KILL")
            raise AssertionError(f"the process did not end; stderr: {self.err!r}") from None


def spawn(config: Path, *args: str) -> CLIProcess:
    process = CLIProcess()
    argv = [sys.executable, "-m", "notifications", "--config", str(config), *args]
    reactor.spawnProcess(process, sys.executable, argv, env=cli_environment())
    return process


async def cli(config: Path, *args: str) -> tuple[int, str, str]:
    """Run a ``notifications`` process to its end: exit code, stdout, stderr."""
    argv = ["-m", "notifications", "--config", str(config), *args]
    d = getProcessOutputAndValue(sys.executable, argv, env=cli_environment())
    out, err, code = await d.addTimeout(PROCESS_TIMEOUT, reactor)
    return code, out.decode(), err.decode()


async def send(config: Path, project: str, text: str, *more: str) -> str:
    argv = ["--service", "Deployer", "--project", project, "--group", "ops", "--type", "deploy"]
    code, out, err = await cli(config, "send", *argv, "--text", text, *more)
    assert (code, err) == (0, ""), err
    return out


def seconds_between(before: float, after: float) -> set[str]:
    """Every ``Mon DD HH:MM:SS`` a timestamp taken between the two could read."""
    return {
        time.strftime("%b %d %H:%M:%S", time.localtime(second))
        for second in range(int(before), int(after) + 1)
    }


async def tail_while(config: Path, args: list[str], sending):
    """``tail`` with ``args``, listening while ``sending()`` publishes; it must exit 0."""
    tail = spawn(config, "tail", *args)
    try:
        await tail.listening()
        await sending()
    finally:
        code = await tail.finish()
    assert code == 0, tail.err
    return tail


@pytest_twisted.ensureDeferred
async def test_tail_prints_the_matching_notifications(tmp_path, broker, consumer):
    config = write_config(tmp_path, toml=broker_toml(broker))
    times: list[float] = []

    async def sending() -> None:
        times.append(time.time())
        out = await send(config, "acme", "Déployé v1.2", "--link", "https://ci.acme.test/7")
        assert out == "acme.ops.deployer.deploy\n"
        assert await send(config, "other", "Not for this tail") == "other.ops.deployer.deploy\n"
        await send(config, "acme", "Rolled back", "--raw", '{"version": "1.1"}')
        times.append(time.time())

    tail = await tail_while(config, ["--count", "2", "--timeout", "20", "acme.#"], sending)
    before, after = times
    lines = tail.out.decode().splitlines()
    assert [LINE.fullmatch(line)["rest"] for line in lines] == [
        "acme/ops Déployé v1.2 — https://ci.acme.test/7",
        "acme/ops Rolled back",
    ]
    for line in lines:
        assert LINE.fullmatch(line)["when"] in seconds_between(before, after)
    assert b"\x1b[" not in tail.out  # no colours on a pipe

    # What send published, as any consumer sees it.
    first, raw = await consumer.get()
    assert first["text"] == "Déployé v1.2"
    assert raw.content.properties["delivery-mode"] == 2
    assert len(raw.content.properties["message-id"]) == 36
    assert [message["project"] for message in await consumer.drain()] == ["other", "acme"]


@pytest_twisted.ensureDeferred
async def test_tail_json(tmp_path, broker, consumer):
    config = write_config(tmp_path, toml=broker_toml(broker))

    async def sending() -> None:
        await send(config, "acme", "Déployé", "--raw", '{"version": "1.2"}')

    tail = await tail_while(config, ["--json", "--count", "1", "--timeout", "20"], sending)
    lines = tail.out.decode().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {
        "service": "Deployer",
        "project": "acme",
        "group": "ops",
        "rawContent": {"version": "1.2"},
        "type": "deploy",
        "text": "Déployé",
        "link": "",
    }


@pytest_twisted.ensureDeferred
async def test_tail_skips_malformed_messages(tmp_path, broker, consumer):
    config = write_config(tmp_path, toml=broker_toml(broker))

    async def sending() -> None:
        client, channel = await connect(reactor, broker)
        channel.basic_publish(
            exchange=broker.exchange,
            routing_key="acme.ops.x.y",
            content=Content(b"{not json", properties=message_properties("bad-1")),
        )
        await client.close(within=2)
        await send(config, "acme", "After the bad one")

    tail = await tail_while(config, ["--count", "1", "--timeout", "20"], sending)
    assert [LINE.fullmatch(line)["rest"] for line in tail.out.decode().splitlines()] == [
        "acme/ops After the bad one"
    ]
    assert (
        b"notifications: skipped a message that is not a notification (acme.ops.x.y): not JSON"
        in tail.err
    )


@pytest_twisted.ensureDeferred
async def test_tail_timeout_exits_0(tmp_path, broker, consumer):
    config = write_config(tmp_path, toml=broker_toml(broker))
    tail = spawn(config, "tail", "--timeout", "1")
    await tail.listening()
    assert await tail.finish() == 0
    assert tail.out == b""


@pytest_twisted.ensureDeferred
async def test_tail_reconnects_when_the_connection_drops(tmp_path, broker, consumer):
    proxy = SeverableProxy(broker.host, broker.port)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(proxy)
    (tmp_path / "proxied").mkdir()
    through_proxy = write_config(
        tmp_path / "proxied", toml=broker_toml(broker, port.getHost().port)
    )
    (tmp_path / "direct").mkdir()
    direct = write_config(tmp_path / "direct", toml=broker_toml(broker))
    tail = spawn(through_proxy, "tail", "--count", "1", "--timeout", "25")
    try:
        await tail.listening()
        proxy.sever()
        await tail.listening(times=2)
        await send(direct, "acme", "After the reconnection")
    finally:
        code = await tail.finish()
        await port.stopListening()
        proxy.sever()
    assert code == 0, tail.err
    err = tail.err.decode()
    assert "notifications: lost the connection to the broker\n" in err
    assert "notifications: reconnecting in 1 s\n" in err
    assert [LINE.fullmatch(line)["rest"] for line in tail.out.decode().splitlines()] == [
        "acme/ops After the reconnection"
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest_twisted.ensureDeferred
async def test_send_to_an_unreachable_broker(tmp_path):
    port = free_port()
    config = write_config(
        tmp_path, toml=f'[broker]\nhost = "127.0.0.1"\nport = {port}\nconnect_timeout = 5\n'
    )
    argv = ["--service", "S", "--project", "acme", "--group", "ops", "--type", "t"]
    code, out, err = await cli(config, "send", *argv)
    assert (code, out) == (1, "")
    assert err.startswith(f"notifications: cannot reach the broker at 127.0.0.1:{port}: ")
    assert err.count("\n") == 1, err


@pytest_twisted.ensureDeferred
async def test_tail_ctrl_c_exits_cleanly(tmp_path, broker, consumer):
    config = write_config(tmp_path, toml=broker_toml(broker))
    tail = spawn(config, "tail")
    await tail.listening()
    tail.transport.signalProcess("INT")
    assert await tail.finish() == 0
    assert tail.err.decode().splitlines() == [
        f"notifications: listening on {broker.exchange} at {broker.host}:{broker.port} for # …"
    ]


@pytest_twisted.ensureDeferred
async def test_tail_queue_keeps_what_is_published_while_it_is_away(tmp_path, broker, consumer):
    config = write_config(tmp_path, toml=broker_toml(broker))
    name = f"{broker.exchange}.bot"
    try:
        # First run: declares the named queue, prints one notification, leaves.
        tail = spawn(config, "tail", "--queue", name, "--count", "1", "--timeout", "20", "acme.#")
        await tail.listening()
        await send(config, "acme", "while listening")
        assert await tail.finish() == 0, tail.err
        assert LINE.fullmatch(tail.out.decode().strip())["rest"] == "acme/ops while listening"

        # Published while no tail runs: kept by the queue (and only what matches).
        for index in range(5):
            await send(config, "acme", f"missed {index}")
        await send(config, "other", "not bound")

        code, out, err = await cli(
            config, "tail", "--queue", name, "--count", "5", "--timeout", "20", "acme.#"
        )
        assert code == 0, err
        texts = [LINE.fullmatch(line)["rest"] for line in out.splitlines()]
        assert texts == [f"acme/ops missed {index}" for index in range(5)]

        # Acknowledged once printed: a third run finds nothing left.
        code, out, err = await cli(config, "tail", "--queue", name, "--timeout", "2", "acme.#")
        assert (code, out) == (0, ""), err
    finally:
        await consumer.channel.queue_delete(queue=name)
    # The queue was a durable quorum queue (asked again here, it is gone now).


@pytest_twisted.ensureDeferred
async def test_tail_queue_declares_a_quorum_queue_and_keeps_an_existing_one(
    tmp_path, broker, consumer
):
    config = write_config(tmp_path, toml=broker_toml(broker))
    quorum, classic = f"{broker.exchange}.quorum", f"{broker.exchange}.classic"
    await consumer.channel.queue_declare(queue=classic, durable=True)
    try:
        for name in (quorum, classic):
            code, _, err = await cli(config, "tail", "--queue", name, "--timeout", "1")
            assert code == 0, err
        # A quorum queue refuses a classic redeclaration: it was declared as quorum.
        declared = await consumer.channel.queue_declare(
            queue=quorum, durable=True, arguments={"x-queue-type": "quorum"}
        )
        assert declared.queue == quorum
        declared = await consumer.channel.queue_declare(queue=classic, durable=True)
        assert declared.queue == classic
    finally:
        for name in (quorum, classic):
            await consumer.channel.queue_delete(queue=name)


@pytest.mark.parametrize("name", ["amq.mine", ""])
def test_tail_queue_refuses_names_that_are_not_ours(tmp_path, capsys, name):
    config = write_config(tmp_path)
    assert main(["--config", str(config), "tail", "--queue", name]) == 2
    assert "--queue" in capsys.readouterr().err
