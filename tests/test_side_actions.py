"""Side actions end to end (docs/reference.rst §3.2, §3.4, §3.6): real gate calls to the daemon,
real HTTP to fake Conduit, Docker Hub and Mailgun servers on loopback, and the
notification consumed back from RabbitMQ.

The daemon here is wired as ``makeService`` wires it: one HTTP client, the
clients of :mod:`notifications.clients` given to the gates, the projects map
status in ``/config``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import pytest
import pytest_twisted
import treq
from twisted.internet import defer, reactor

from notifications.clients.conduit import Conduits
from notifications.clients.http import HTTP
from notifications.clients.projects import (
    ProjectsLookup,
    cache_path,
    projects_map_status,
    write_cache,
)
from notifications.credentials import Service
from tests import gate_cases
from tests.conftest import wait_for
from tests.fakes import FakeConduit, FakeDockerHub, FakeMailgun
from tests.gate_cases import Centers, stop_center
from tests.helpers import closed_port, first_line, signed_github_request
from tests.payloads import (
    dockerhub_build_failure,
    dockerhub_failure_mail,
    github_ping,
    github_push,
    jenkins,
    mailgun_stored_message,
    phabricator_form_body,
)

GITHUB_SECRET = "github-side-secret"
CONDUIT_TOKEN = "api-sideactionsconduittoken00000"
TRIGGER_TOKEN = "dockerhub-trigger-token-0000"
MAILGUN_KEY = "key-mailgun-side-0000"
CLONE_URL = "https://github.com/Acme/widgets.git"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

SERVERS = "PHID-PROJ-servers0000000"
WIDGETS = "PHID-PROJ-widgets0000000"
TASK = "PHID-TASK-acme0000widgets"
REVISION = "PHID-DREV-acme0000widgets"
COMMIT = "PHID-CMIT-acme0000widgets"
PASTE = "PHID-PSTE-acme0000widgets"
REPOSITORY = "PHID-REPO-acme0000widgets"

ANALYZER = {
    "defaultGroup": "tracker",
    "map": [
        {"group": "ops", "items": ["Servers"], "words": ["outage"]},
        {"group": "widgets", "items": ["Widgets"]},
    ],
}


@dataclass
class Fakes:
    conduit: FakeConduit
    dockerhub: FakeDockerHub
    mailgun: FakeMailgun


@pytest_twisted.async_yield_fixture
async def fakes():
    started = Fakes(
        await FakeConduit(CONDUIT_TOKEN).start(),
        await FakeDockerHub({"Acme/widgets": TRIGGER_TOKEN}).start(),
        await FakeMailgun(MAILGUN_KEY).start(),
    )
    started.conduit.add_repository(REPOSITORY, "WDG", CLONE_URL, [WIDGETS])
    started.conduit.projects.update({SERVERS: "Servers", WIDGETS: "Widgets"})
    yield started
    for fake in (started.conduit, started.dockerhub, started.mailgun):
        await fake.stop()


class Center(gate_cases.Center):
    """The shared center, with the calls these tests make."""

    async def push(self, door: str = "Acme", payload: dict | None = None):
        body, headers = signed_github_request("push", payload or github_push(), GITHUB_SECRET)
        response, answer = await self.post(f"/gate/GitHub/{door}", body, headers)
        return response.code, json.loads(answer)

    async def story(self, object_phid: str | None, text: str = "alice edited it."):
        response, answer = await self.post(
            "/gate/Phabricator/Acme", phabricator_form_body(object_phid, text), FORM
        )
        assert response.code == 200, answer
        return json.loads(answer)

    async def config_status(self) -> dict[str, str]:
        response = await treq.get(self.daemon.url + "/config")
        report = json.loads(await response.content())
        return {
            service["gate"] + "/" + service["door"]: service["status"]
            for service in report["services"]
        }


async def start_center(config) -> Center:
    status = partial(projects_map_status, config)
    return await gate_cases.start_center(config, Center, service_status=status)


def services(conduit_url: str) -> list[dict]:
    return [
        {"gate": "GitHub", "door": "Acme", "secret": GITHUB_SECRET},
        {"gate": "GitHub", "door": "Elsewhere", "secret": GITHUB_SECRET},
        {"gate": "Phabricator", "door": "Acme", "instance": conduit_url, "secret": CONDUIT_TOKEN},
        {"gate": "Jenkins", "door": "Acme"},
        {"gate": "DockerHub", "door": "acme"},
    ]


@pytest_twisted.async_yield_fixture
async def center_factory(tmp_path, broker, fakes):
    """``await center_factory(timeout=…)`` starts a daemon talking to the fakes;
    ``config=`` starts another one on the same configuration (a restart)."""
    centers = Centers(tmp_path, broker, start_center)

    async def factory(
        timeout: float = 3.0, config=None, dockerhub_url: str | None = None, **kwargs: Any
    ) -> Center:
        toml = (
            f"\n[http]\ntimeout = {timeout}\n"
            f'\n[dockerhub]\nbase_url = "{dockerhub_url or fakes.dockerhub.url}"\n'
            f'\n[mailgun]\nkey = "{MAILGUN_KEY}"\nhosts = ["127.0.0.1", "*.mailgun.test"]\n'
        )
        kwargs.setdefault("services", services(fakes.conduit.url))
        kwargs.setdefault("analyzers", {"Phabricator": {"Acme": ANALYZER}})
        kwargs.setdefault("tokens", {"Acme/widgets": TRIGGER_TOKEN})
        return await centers.start(config, toml=toml, **kwargs)

    yield factory
    await centers.stop_all()


def amqp(key: str) -> dict:
    return {
        "action": "AMQPAction",
        "method": "publish",
        "target": None,  # filled in by actions()
        "routingKey": key,
        "status": "published",
        "error": None,
    }


def actions(report: dict, exchange: str) -> list[dict]:
    """The report's actions, with the AMQP target checked and blanked."""
    found = []
    for action in report["actions"]:
        if action["action"] == "AMQPAction":
            assert action["target"] == exchange
            action = {**action, "target": None}
        found.append(action)
    return found


def notify(callsign: str | None, error: dict | None = None) -> dict:
    return {"action": "NotifyNewCommitsAction", "callSign": callsign, "error": error}


def trigger(error: dict | None = None) -> dict:
    return {"action": "TriggerDockerHubBuildAction", "image": "Acme/widgets", "error": error}


# GitHub push: Phabricator looksoon and Docker Hub build ------------------------------


@pytest_twisted.ensureDeferred
async def test_push_notifies_phabricator_and_triggers_the_docker_hub_build(
    center_factory, fakes, consumer, broker
):
    center = await center_factory()
    code, report = await center.push()
    assert code == 200, report
    assert actions(report, broker.exchange) == [
        amqp("acme.acme.github.push"),
        notify("WDG"),
        trigger(),
    ]
    assert fakes.conduit.calls() == [
        ("repository.query", {"remoteURIs[0]": CLONE_URL}),
        ("diffusion.looksoon", {"callsigns[0]": "WDG"}),
    ]
    assert {request.form["api.token"] for request in fakes.conduit.requests} == {CONDUIT_TOKEN}
    [build] = fakes.dockerhub.requests
    assert (build.method, build.path) == ("POST", f"/u/Acme/widgets/trigger/{TRIGGER_TOKEN}/")
    assert build.headers["content-type"].startswith("application/json")
    assert build.json == {"build": True}
    message, raw = await consumer.get()
    assert raw.routing_key == "acme.acme.github.push"
    assert message["text"] == "alice committed Add the widget factory"


@pytest_twisted.ensureDeferred
async def test_no_side_action_without_phabricator_door_or_docker_hub_token(
    center_factory, fakes, consumer, broker
):
    center = await center_factory()
    # No Phabricator door "Elsewhere", no Docker Hub token for Elsewhere/gadgets.
    code, report = await center.push("Elsewhere", github_push(owner="Elsewhere", repo="gadgets"))
    assert code == 200, report
    assert actions(report, broker.exchange) == [amqp("elsewhere.elsewhere.github.push")]
    # Side actions are for pushes only.
    body, headers = signed_github_request("ping", github_ping(), GITHUB_SECRET)
    response, answer = await center.post("/gate/GitHub/Acme", body, headers)
    assert response.code == 200
    assert [action["action"] for action in json.loads(answer)["actions"]] == ["AMQPAction"]
    assert fakes.conduit.requests == fakes.dockerhub.requests == []
    assert len(await consumer.drain()) == 2


@pytest_twisted.ensureDeferred
async def test_repository_unknown_to_phabricator_is_not_reported(
    center_factory, fakes, consumer, broker
):
    center = await center_factory()
    code, report = await center.push(payload=github_push(repo="unmirrored"))
    assert code == 200, report
    assert actions(report, broker.exchange) == [amqp("acme.acme.github.push")]
    assert fakes.conduit.calls() == [
        ("repository.query", {"remoteURIs[0]": "https://github.com/Acme/unmirrored.git"})
    ]
    await consumer.get()


@pytest_twisted.ensureDeferred
async def test_conduit_api_error_is_reported_and_the_notification_still_published(
    center_factory, fakes, consumer, broker
):
    center = await center_factory()
    fakes.conduit.mode = "api-error"
    code, report = await center.push()
    assert code == 503
    error = {"type": "PhabricatorAPIException", "message": 'API token "…" has the wrong format.'}
    assert actions(report, broker.exchange) == [
        amqp("acme.acme.github.push"),
        notify(None, error),
        trigger(),
    ]
    assert CONDUIT_TOKEN not in json.dumps(report)
    _, raw = await consumer.get()
    assert raw.routing_key == "acme.acme.github.push"


@pytest.mark.parametrize("method", ["repository.query", "diffusion.looksoon"])
@pytest_twisted.ensureDeferred
async def test_conduit_timeout_is_bounded_and_blocks_nobody(
    center_factory, fakes, consumer, broker, method
):
    center = await center_factory(timeout=0.5)
    fakes.conduit.modes[method] = "slow"
    started = reactor.seconds()
    push = defer.ensureDeferred(center.push())
    # Another call, made while Conduit keeps the push waiting, is answered at once.
    response, _ = await center.post("/gate/Jenkins/Acme", jenkins())
    assert response.code == 200
    assert reactor.seconds() - started < 0.4
    assert not push.called
    code, report = await push
    assert 0.5 <= reactor.seconds() - started < 1.5
    assert code == 503
    callsign = None if method == "repository.query" else "WDG"
    where = f"Conduit {method} at {fakes.conduit.url}"
    assert actions(report, broker.exchange) == [
        amqp("acme.acme.github.push"),
        notify(callsign, {"type": "ServiceTimeout", "message": f"{where}: no answer within 0.5 s"}),
        trigger(),
    ]
    keys = sorted(message["type"] for message in await consumer.drain())
    assert keys == ["completed.success", "push"]


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        pytest.param("http-500", {"type": "ServiceHTTPError", "message": "HTTP 500"}, id="500"),
        pytest.param(
            "slow", {"type": "ServiceTimeout", "message": "no answer within 0.5 s"}, id="slow"
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_docker_hub_failure_is_reported(center_factory, fakes, consumer, broker, mode, error):
    center = await center_factory(timeout=0.5)
    fakes.dockerhub.mode = mode
    code, report = await center.push()
    assert code == 503
    error = {**error, "message": f"Docker Hub at {fakes.dockerhub.url}: {error['message']}"}
    assert actions(report, broker.exchange) == [
        amqp("acme.acme.github.push"),
        notify("WDG"),
        trigger(error),
    ]
    assert TRIGGER_TOKEN not in json.dumps(report)
    await consumer.get()


@pytest_twisted.ensureDeferred
async def test_unreachable_services_are_reported(center_factory, consumer):
    dead = f"http://127.0.0.1:{closed_port()}"
    center = await center_factory(services=services(dead), dockerhub_url=dead)
    code, report = await center.push()
    assert code == 503
    assert [action["error"] for action in report["actions"][1:]] == [
        {
            "type": "ServiceUnreachable",
            "message": f"Conduit repository.query at {dead}: connection refused",
        },
        {"type": "ServiceUnreachable", "message": f"Docker Hub at {dead}: connection refused"},
    ]
    await consumer.get()


# Phabricator stories: projects through Conduit ------------------------------------------


def story_fixtures(conduit: FakeConduit) -> None:
    conduit.tasks[TASK] = [SERVERS]
    conduit.revisions[REVISION] = REPOSITORY
    conduit.commits[COMMIT] = REPOSITORY
    conduit.pastes[PASTE] = [SERVERS, WIDGETS]


@pytest.mark.parametrize(
    ("phid", "group", "lookups"),
    [
        pytest.param(TASK, "ops", [("maniphest.query", {"phids[0]": TASK})], id="TASK"),
        pytest.param(
            REVISION,
            "widgets",
            [
                ("differential.query", {"phids[0]": REVISION}),
                ("repository.query", {"phids[0]": REPOSITORY}),
            ],
            id="DREV",
        ),
        pytest.param(
            COMMIT,
            "widgets",
            [
                ("diffusion.querycommits", {"phids[0]": COMMIT}),
                ("repository.query", {"phids[0]": REPOSITORY}),
            ],
            id="CMIT",
        ),
        pytest.param(
            PASTE,
            "ops",
            [("paste.search", {"constraints[phids][0]": PASTE, "attachments[projects]": "1"})],
            id="PSTE",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_story_is_grouped_by_the_projects_of_its_object(
    center_factory, fakes, consumer, phid, group, lookups
):
    story_fixtures(fakes.conduit)
    center = await center_factory()
    report = await center.story(phid)
    type_ = phid[5:9].lower()
    assert report["actions"][0]["routingKey"] == f"acme.{group}.phabricator.{type_}"
    # The map was not cached: the first project PHID refreshes it.
    assert fakes.conduit.calls() == [*lookups, ("project.query", {"limit": "1000"})]
    assert {request.form["api.token"] for request in fakes.conduit.requests} == {CONDUIT_TOKEN}
    message, _ = await consumer.get()
    assert message["group"] == group


@pytest_twisted.ensureDeferred
async def test_other_object_types_ask_nothing(center_factory, fakes, consumer):
    center = await center_factory()
    report = await center.story("PHID-WIKI-acme0000document", "alice edited the outage notes.")
    assert report["actions"][0]["routingKey"] == "acme.ops.phabricator.wiki"
    report = await center.story(None, "alice joined.")
    assert report["actions"][0]["routingKey"] == "acme.tracker.phabricator.void"
    assert fakes.conduit.requests == []
    assert len(await consumer.drain()) == 2


@pytest.mark.parametrize("phid", [TASK, REVISION, COMMIT, PASTE])
@pytest_twisted.ensureDeferred
async def test_private_object_gives_no_projects(center_factory, fakes, consumer, phid):
    # Nothing registered in the fake: Conduit answers empty results, as for an
    # object the bot cannot see.
    center = await center_factory()
    type_ = phid[5:9].lower()
    report = await center.story(phid, "alice reported an OUTAGE.")
    assert report["actions"][0]["routingKey"] == f"acme.ops.phabricator.{type_}"
    report = await center.story(phid, "alice edited it.")
    assert report["actions"][0]["routingKey"] == f"acme.tracker.phabricator.{type_}"
    assert "project.query" not in [method for method, _ in fakes.conduit.calls()]
    assert len(await consumer.drain()) == 2


@pytest.mark.parametrize("mode", ["api-error", "http-500", "malformed", "slow"])
@pytest_twisted.ensureDeferred
async def test_conduit_failure_gives_no_projects_never_an_error(
    center_factory, fakes, consumer, mode
):
    # Logged as a warning: an error in the log would fail the test (conftest).
    story_fixtures(fakes.conduit)
    center = await center_factory(timeout=0.5)
    fakes.conduit.mode = mode
    started = reactor.seconds()
    report = await center.story(TASK, "alice fixed the outage.")
    assert reactor.seconds() - started < 1.5
    assert report["actions"][0]["routingKey"] == "acme.ops.phabricator.task"
    assert report["actions"][0]["error"] is None
    await consumer.get()


@pytest_twisted.ensureDeferred
async def test_unknown_phid_refreshes_the_map_once(center_factory, fakes, consumer):
    story_fixtures(fakes.conduit)
    center = await center_factory()
    config = center.daemon.config
    # A cache from before the Widgets project existed.
    write_cache(
        cache_path(config.storage_directory, "Acme"), fakes.conduit.url, {SERVERS: "Servers"}, 0
    )
    await stop_center(center)
    center = await center_factory(config=config)
    fakes.conduit.tasks[TASK] = [WIDGETS]
    report = await center.story(TASK)
    assert report["actions"][0]["routingKey"] == "acme.widgets.phabricator.task"
    assert len(fakes.conduit.calls("project.query")) == 1
    # A PHID the instance does not know either: one refresh, then "" for good.
    fakes.conduit.tasks[TASK] = ["PHID-PROJ-hidden0000000"]
    for _ in range(2):
        report = await center.story(TASK)
        assert report["actions"][0]["routingKey"] == "acme.tracker.phabricator.task"
    assert len(fakes.conduit.calls("project.query")) == 2
    # Known PHIDs need no refresh.
    fakes.conduit.tasks[TASK] = [SERVERS]
    report = await center.story(TASK)
    assert report["actions"][0]["routingKey"] == "acme.ops.phabricator.task"
    assert len(fakes.conduit.calls("project.query")) == 2
    assert len(await consumer.drain()) == 4


@pytest_twisted.ensureDeferred
async def test_concurrent_lookups_share_one_refresh(center_factory, fakes, consumer):
    story_fixtures(fakes.conduit)
    fakes.conduit.pastes[PASTE] = [WIDGETS]
    center = await center_factory()
    fakes.conduit.modes["project.query"] = "slow"
    fakes.conduit.delay = 0.3
    reports = await defer.gatherResults(
        [defer.ensureDeferred(center.story(phid)) for phid in (TASK, PASTE, TASK)]
    )
    keys = [report["actions"][0]["routingKey"] for report in reports]
    assert keys == [
        "acme.ops.phabricator.task",
        "acme.widgets.phabricator.pste",
        "acme.ops.phabricator.task",
    ]
    assert len(fakes.conduit.calls("project.query")) == 1
    assert len(await consumer.drain()) == 3


@pytest_twisted.ensureDeferred
async def test_projects_map_cache_survives_a_restart(center_factory, fakes, consumer):
    story_fixtures(fakes.conduit)
    center = await center_factory()
    config = center.daemon.config
    assert (await center.config_status())["Phabricator/Acme"] == "Projects map not cached."
    report = await center.story(TASK)
    assert report["actions"][0]["routingKey"] == "acme.ops.phabricator.task"
    assert (await center.config_status()) == {
        "GitHub/Acme": "",
        "GitHub/Elsewhere": "",
        "Phabricator/Acme": "",
        "Jenkins/Acme": "",
        "DockerHub/acme": "",
    }
    cached = json.loads(cache_path(config.storage_directory, "Acme").read_text())
    assert cached["instance"] == fakes.conduit.url
    assert cached["projects"] == {SERVERS: "Servers", WIDGETS: "Widgets"}
    await stop_center(center)

    # The projects map cannot be fetched any more: the names come from the cache.
    fakes.conduit.modes["project.query"] = "http-500"
    fakes.conduit.requests.clear()
    center = await center_factory(config=config)
    report = await center.story(TASK)
    assert report["actions"][0]["routingKey"] == "acme.ops.phabricator.task"
    assert fakes.conduit.calls() == [("maniphest.query", {"phids[0]": TASK})]
    assert (await center.config_status())["Phabricator/Acme"] == ""
    assert len(await consumer.drain()) == 2


@pytest_twisted.ensureDeferred
async def test_cached_map_names_projects_without_conduit(tmp_path):
    dead = f"http://127.0.0.1:{closed_port()}"
    service = Service("Phabricator", "Acme", instance=dead, secret=CONDUIT_TOKEN)
    http = HTTP(reactor)

    def started_lookup() -> ProjectsLookup:  # what a start of the daemon builds
        return ProjectsLookup(Conduits(http, 1.0), tmp_path, reactor, 1.0)

    try:
        write_cache(cache_path(tmp_path, "Acme"), dead, {SERVERS: "Servers"}, 0)
        projects_map = started_lookup().map(service)
        assert await defer.ensureDeferred(projects_map.names_of([SERVERS])) == ["Servers"]
        # The cache of another instance (the door was moved) is not used.
        write_cache(cache_path(tmp_path, "Acme"), "https://other.test", {SERVERS: "Old"}, 0)
        projects_map = started_lookup().map(service)
        assert await defer.ensureDeferred(projects_map.names_of([SERVERS])) == [""]
    finally:
        await http.close()


# Docker Hub build failures through Mailgun ------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_build_failure_mail_is_fetched_from_mailgun(center_factory, fakes, consumer, broker):
    center = await center_factory()
    path = "/v3/domains/acme.test/messages/abc123"
    fakes.mailgun.messages[path] = mailgun_stored_message(dockerhub_failure_mail())
    payload = dockerhub_build_failure(fakes.mailgun.url + path)
    response, answer = await center.post("/gate/DockerHub/acme", payload)
    assert response.code == 200, answer
    assert actions(json.loads(answer), broker.exchange) == [
        amqp("acme.docker.dockerhub.buildfailure"),
        {
            "action": "MailgunAction",
            "method": "GET",
            "target": fakes.mailgun.url,
            "error": None,
        },
    ]
    [fetch] = fakes.mailgun.requests
    assert (fetch.method, fetch.path) == ("GET", path)
    assert (fetch.user, fetch.password) == ("api", MAILGUN_KEY)
    message, _ = await consumer.get()
    assert message == {
        "service": "DockerHub",
        "project": "acme",
        "group": "docker",
        "rawContent": payload,
        "type": "buildFailure",
        "text": "Image build by Docker Hub registry failure for acme/widgets",
        "link": "https://hub.docker.com/r/acme/widgets/builds/b5e7c1d2/",
    }


@pytest.mark.parametrize(
    ("mode", "error"),
    [
        pytest.param("http-500", ("ServiceHTTPError", "HTTP 500"), id="500"),
        pytest.param("empty", ("ServiceHTTPError", "HTTP 404"), id="not-found"),
        pytest.param("malformed", ("MalformedAnswer", "the answer is not JSON"), id="malformed"),
        pytest.param("slow", ("ServiceTimeout", "no answer within 0.5 s"), id="slow"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_mail_not_fetched_publishes_nothing_and_answers_503(
    center_factory, fakes, consumer, mode, error
):
    center = await center_factory(timeout=0.5)
    path = "/v3/domains/acme.test/messages/abc123"
    fakes.mailgun.messages[path] = mailgun_stored_message(dockerhub_failure_mail())
    fakes.mailgun.mode = mode
    response, answer = await center.post(
        "/gate/DockerHub/acme", dockerhub_build_failure(fakes.mailgun.url + path)
    )
    assert response.code == 503
    kind, message = error
    assert json.loads(answer)["actions"] == [
        {
            "action": "MailgunAction",
            "method": "GET",
            "target": fakes.mailgun.url,
            "error": {"type": kind, "message": f"Mailgun at {fakes.mailgun.url}: {message}"},
        }
    ]
    assert MAILGUN_KEY not in answer.decode()
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_wrong_mailgun_key_is_a_401_reported(center_factory, fakes, consumer):
    center = await center_factory()
    fakes.mailgun.key = "another-key"
    path = "/v3/domains/acme.test/messages/abc123"
    fakes.mailgun.messages[path] = mailgun_stored_message(dockerhub_failure_mail())
    response, answer = await center.post(
        "/gate/DockerHub/acme", dockerhub_build_failure(fakes.mailgun.url + path)
    )
    assert response.code == 503
    assert json.loads(answer)["actions"][0]["error"]["message"].endswith(": HTTP 401")
    await consumer.expect_nothing()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("http://api.mailgun.test{port}/v3/m/1", id="http-not-loopback"),
        pytest.param("https://evil.test{port}/v3/m/1", id="https-host-not-listed"),
        pytest.param("https://mailgun.test.evil.test{port}/v3/m/1", id="suffix-trick"),
        pytest.param("http://localhost{port}/v3/m/1", id="loopback-not-listed"),
        pytest.param("https://api:x@api.mailgun.test{port}/v3/m/1", id="userinfo"),
        pytest.param("ftp://127.0.0.1{port}/v3/m/1", id="other-scheme"),
        pytest.param(None, id="no-url"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_mailgun_url_refused(center_factory, fakes, consumer, url):
    center = await center_factory()
    payload = dockerhub_build_failure()
    payload["storage"]["url"] = url and url.format(port=f":{fakes.mailgun.port}")
    response, answer = await center.post("/gate/DockerHub/acme", payload)
    assert response.code == 400
    assert first_line(answer) == "Bad request."
    assert fakes.mailgun.requests == []
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_past_max_in_progress_calls_get_503_at_once(center_factory, fakes, consumer):
    """Overload: calls beyond the limit are refused at once, with Retry-After."""
    center = await center_factory(timeout=1.0)
    center.app.reconfigure(replace(center.app.config, max_in_progress=2))
    fakes.conduit.modes["repository.query"] = "slow"
    pushes = [defer.ensureDeferred(center.push()) for _ in range(2)]
    await wait_for(lambda: center.daemon.dispatcher.calls_in_progress == 2)
    started = reactor.seconds()
    response, answer = await center.post("/gate/Jenkins/Acme", jenkins())
    assert response.code == 503
    assert response.headers.getRawHeaders(b"retry-after") == [b"1"]
    assert answer.startswith(b"Too many calls in progress")
    assert reactor.seconds() - started < 0.3
    for push in pushes:
        code, _ = await push
        assert code == 503  # the Conduit timeout, as a side-action error
    response, _ = await center.post("/gate/Jenkins/Acme", jenkins())
    assert response.code == 200
    types = sorted(message["type"] for message in await consumer.drain())
    assert types == ["completed.success", "push", "push"]
