"""``phabricator projectsmap`` and ``payload Phabricator`` against a fake Conduit on loopback
(and ``payload DockerHub`` against a fake Mailgun).

Both wait on the network, so they run as real ``notifications`` processes
(``react`` cannot run inside the tests' reactor); ``config show`` runs in-process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest_twisted

from notifications.clients.projects import cache_path
from tests.conftest import make_config, test_broker
from tests.fakes import FakeConduit, FakeMailgun
from tests.helpers import closed_port
from tests.payloads import (
    dockerhub_build_failure,
    dockerhub_failure_mail,
    mailgun_stored_message,
    phabricator_form_body,
)
from tests.test_cli import cli, run, table_row

TOKEN = "api-clicondduittoken000000000000"
SERVERS = "PHID-PROJ-servers0000000"
WIDGETS = "PHID-PROJ-widgets0000000"
TASK = "PHID-TASK-acme0000widgets"
ANALYZER = {
    "defaultGroup": "tracker",
    "map": [
        {"group": "ops", "items": ["Servers"]},
        {"group": "widgets", "items": ["Widgets"], "words": ["widget"]},
    ],
}


@pytest_twisted.async_yield_fixture
async def conduit():
    fake = await FakeConduit(TOKEN).start()
    fake.projects.update({WIDGETS: "Widgets", SERVERS: "Servers"})
    fake.tasks[TASK] = [SERVERS]
    yield fake
    await fake.stop()


def write_config(directory: Path, *instances: tuple[str, str]) -> Path:
    """A configuration with a Phabricator door per ``(door, instance)``."""
    services = [
        {"gate": "Phabricator", "door": door, "instance": url, "secret": TOKEN}
        for door, url in instances
    ]
    services.append({"gate": "GitHub", "door": "Acme", "secret": "s3cret"})
    make_config(
        directory,
        test_broker(),
        services=services,
        analyzers={"Phabricator": {"Acme": ANALYZER}},
        toml="\n[http]\ntimeout = 2\n",
    )
    return directory / "notifications.toml"


@pytest_twisted.ensureDeferred
async def test_projectsmap_prints_and_caches_each_map(tmp_path, conduit, capsys):
    path = write_config(tmp_path, ("Acme", conduit.url))
    code, out, err = await cli(path, "phabricator", "projectsmap")
    assert (code, err) == (0, "")
    cache = cache_path(tmp_path / "var", "Acme")
    lines = out.splitlines()
    assert lines[0] == f"Acme — {conduit.url}: 2 projects, cached in {cache}"
    header, rule, *rows = (re.split(r" {2,}", line.strip()) for line in lines[1:])
    assert header == ["PHID", "name"]
    assert set("".join(rule)) == {"-"}
    assert rows == [[SERVERS, "Servers"], [WIDGETS, "Widgets"]]  # sorted by name
    assert conduit.calls() == [("project.query", {"limit": "1000"})]
    assert conduit.requests[0].form["api.token"] == TOKEN
    cached = json.loads(cache.read_text(encoding="utf-8"))
    assert cached["instance"] == conduit.url
    assert cached["projects"] == {SERVERS: "Servers", WIDGETS: "Widgets"}
    # config show (and /config, through the same function) now says all is well.
    _, shown, _ = run(capsys, "--config", str(path), "config", "show")
    assert table_row(shown, "Phabricator", "Acme")[3] == "✓"


@pytest_twisted.ensureDeferred
async def test_projectsmap_failure_of_one_instance(tmp_path, conduit, capsys):
    conduit.modes["project.query"] = "api-error"
    dead = f"http://127.0.0.1:{closed_port()}"
    path = write_config(tmp_path, ("Acme", conduit.url), ("Dead", dead))
    code, out, err = await cli(path, "phabricator", "projectsmap")
    assert code == 1
    assert out == ""
    assert err.splitlines() == [
        "notifications: warning: Could not refresh the projects map of "
        f'{conduit.url}: API token "…" has the wrong format.',
        'notifications: Acme: API token "…" has the wrong format.',
        f"notifications: warning: Could not refresh the projects map of {dead}: "
        f"Conduit project.query at {dead}: connection refused",
        f"notifications: Dead: Conduit project.query at {dead}: connection refused",
        "notifications: 2 of 2 projects maps not refreshed",
    ]
    assert TOKEN not in out + err
    assert not cache_path(tmp_path / "var", "Acme").exists()
    _, shown, _ = run(capsys, "--config", str(path), "config", "show")
    assert table_row(shown, "Phabricator", "Acme")[3] == "Projects map not cached."


@pytest_twisted.ensureDeferred
async def test_projectsmap_without_an_instance(tmp_path):
    path = write_config(tmp_path)
    code, out, err = await cli(path, "phabricator", "projectsmap")
    assert (code, out) == (1, "")
    assert err == "notifications: no Phabricator instance is declared in the credentials file\n"


def story_file(directory: Path, text: str = "alice edited T42.") -> str:
    path = directory / "story.txt"
    path.write_bytes(phabricator_form_body(TASK, text))
    return str(path)


@pytest_twisted.ensureDeferred
async def test_payload_phabricator_asks_the_instance(tmp_path, conduit):
    path = write_config(tmp_path, ("Acme", conduit.url))
    code, out, err = await cli(path, "payload", "Phabricator", story_file(tmp_path), "Acme")
    assert (code, err) == (0, "")
    notification = json.loads(out)
    assert (notification["group"], notification["type"]) == ("ops", "TASK")
    assert conduit.calls() == [
        ("maniphest.query", {"phids[0]": TASK}),
        ("project.query", {"limit": "1000"}),
    ]
    # The map fetched on the way is cached, as the daemon would.
    assert cache_path(tmp_path / "var", "Acme").is_file()


@pytest_twisted.ensureDeferred
async def test_payload_phabricator_with_the_instance_unreachable(tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"
    path = write_config(tmp_path, ("Acme", dead))
    story = story_file(tmp_path, "alice fixed the widget.")
    code, out, err = await cli(path, "payload", "Phabricator", story, "Acme")
    assert code == 0
    # No projects: grouped by the story's words.
    assert json.loads(out)["group"] == "widgets"
    assert err == (
        f"notifications: warning: Acme: no projects for {TASK}: "
        f"Conduit maniphest.query at {dead}: connection refused\n"
    )


# payload DockerHub: a build failure's mail comes from Mailgun, as in the daemon.


@pytest_twisted.ensureDeferred
async def test_payload_dockerhub_build_failure_fetches_the_mail(tmp_path):
    mailgun = await FakeMailgun("key-cli-mailgun").start()
    try:
        make_config(
            tmp_path,
            test_broker(),
            toml='\n[mailgun]\nkey = "key-cli-mailgun"\nhosts = ["127.0.0.1"]\n',
        )
        path = tmp_path / "notifications.toml"
        mailgun.messages["/v3/m/1"] = mailgun_stored_message(dockerhub_failure_mail())
        payload = tmp_path / "failure.json"
        payload.write_text(json.dumps(dockerhub_build_failure(mailgun.url + "/v3/m/1")))
        code, out, err = await cli(path, "payload", "DockerHub", str(payload), "acme")
        assert (code, err) == (0, "")
        assert json.loads(out)["text"] == (
            "Image build by Docker Hub registry failure for acme/widgets"
        )
        assert [(r.user, r.password) for r in mailgun.requests] == [("api", "key-cli-mailgun")]
        mailgun.mode = "http-500"
        code, out, err = await cli(path, "payload", "DockerHub", str(payload), "acme")
        assert (code, out) == (1, "")
        assert err.splitlines() == [
            "notifications: warning: acme: build failure mail not fetched: "
            f"Mailgun at {mailgun.url}: HTTP 500",
            "notifications: no notification: the build failure mail could not be fetched",
        ]
    finally:
        await mailgun.stop()
