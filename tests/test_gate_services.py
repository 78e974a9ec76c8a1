"""The Docker Hub, Jenkins and Notification gates end to end
(docs/reference.rst §3.2, §3.3, §3.5)."""

from __future__ import annotations

import json

import pytest
import pytest_twisted

from tests.gate_cases import assert_call_published
from tests.helpers import assert_report, first_line, notification
from tests.payloads import dockerhub_push, jenkins

DOOR_SECRET = "d00r-t0ken"
JENKINS_ANALYZER = {
    "defaultGroup": "ci",
    "map": [
        {"group": "widgets", "items": ["widgets-*"]},
        {"group": "ops", "items": ["deploy"]},
    ],
    "notifyOnlyOnFailure": ["nightly"],
}


# Docker Hub -----------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_dockerhub_push(daemon_factory, consumer, broker):
    daemon = await daemon_factory()
    payload = dockerhub_push("acme/widgets", pusher="bob")
    response, answer = await daemon.post("/gate/DockerHub/Acme", payload)
    key = "acme.docker.dockerhub.push"
    expected = notification(
        service="DockerHub",
        project="Acme",
        group="docker",
        rawContent=payload,
        type="push",
        text="New image pushed to Docker Hub registry for acme/widgets by bob",
        link="https://registry.hub.docker.com/u/acme/widgets/",
    )
    await assert_call_published(response, answer, consumer, broker.exchange, key, expected)


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        pytest.param(f"?token={DOOR_SECRET}", {}, id="query-token"),
        pytest.param("", {"Authorization": f"Bearer {DOOR_SECRET}"}, id="bearer"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_dockerhub_door_secret_given(daemon_factory, consumer, path, headers):
    daemon = await daemon_factory(
        services=[{"gate": "DockerHub", "door": "Acme", "secret": DOOR_SECRET}]
    )
    response, answer = await daemon.post(
        "/gate/DockerHub/Acme" + path, dockerhub_push(), headers=headers
    )
    assert response.code == 200, answer
    message, raw = await consumer.get()
    assert message["type"] == "push"
    assert raw.routing_key == "acme.docker.dockerhub.push"


@pytest_twisted.ensureDeferred
async def test_dockerhub_door_secret_wrong_or_missing(daemon_factory, consumer):
    daemon = await daemon_factory(
        services=[{"gate": "DockerHub", "door": "Acme", "secret": DOOR_SECRET}]
    )
    for path, headers in [
        ("", {}),
        ("?token=wrong", {}),
        ("?token=", {}),
        (f"?token={DOOR_SECRET}x", {}),
        ("", {"Authorization": "Bearer wrong"}),
        ("", {"Authorization": "Bearer "}),
        ("", {"Authorization": f"Basic {DOOR_SECRET}"}),
    ]:
        response, answer = await daemon.post(
            "/gate/DockerHub/Acme" + path, dockerhub_push(), headers=headers
        )
        assert response.code == 403, (path, headers)
        assert first_line(answer) == "Unauthorized action."
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_dockerhub_door_without_credentials_is_accepted(daemon_factory, consumer):
    # Another door has a secret; this one has no credentials entry at all.
    daemon = await daemon_factory(
        services=[{"gate": "DockerHub", "door": "Other", "secret": DOOR_SECRET}]
    )
    response, answer = await daemon.post("/gate/DockerHub/Acme", dockerhub_push())
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert message["project"] == "Acme"


# Jenkins --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "type_", "text", "group"),
    [
        pytest.param(
            jenkins("widgets-build", "COMPLETED", "SUCCESS"),
            "completed.success",
            "Jenkins job widgets-build has been completed: success",
            "widgets",
            id="completed-success",
        ),
        pytest.param(
            jenkins("widgets-build", "STARTED", None),
            "started",
            "Jenkins job widgets-build has been started",
            "widgets",
            id="started",
        ),
        pytest.param(
            jenkins("deploy", "FINALIZED", "FAILURE"),
            "finalized.failure",
            "Jenkins job deploy has been finalized: failure",
            "ops",
            id="finalized-failure",
        ),
        pytest.param(
            jenkins("docs", "COMPLETED", "UNSTABLE"),
            "completed.unstable",
            "Jenkins job docs has been completed: unstable",
            "ci",
            id="default-group",
        ),
        # nightly notifies only on failure: its failures are published.
        *(
            pytest.param(
                jenkins("nightly", "COMPLETED", status),
                f"completed.{status.lower()}",
                f"Jenkins job nightly has been completed: {status.lower()}",
                "ci",
                id=f"notify-only-on-failure-{status.lower()}",
            )
            for status in ("FAILURE", "ABORTED", "UNSTABLE")
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_jenkins(daemon_factory, consumer, broker, payload, type_, text, group):
    daemon = await daemon_factory(analyzers={"Jenkins": {"Acme": JENKINS_ANALYZER}})
    response, answer = await daemon.post("/gate/Jenkins/Acme", payload)
    key = f"acme.{group}.jenkins.{type_}"
    expected = notification(
        service="Jenkins",
        project="Acme",
        group=group,
        rawContent=payload,
        type=type_,
        text=text,
        link=payload["build"]["full_url"],
    )
    await assert_call_published(response, answer, consumer, broker.exchange, key, expected)


@pytest_twisted.ensureDeferred
async def test_jenkins_without_analyzer_groups_by_door(daemon_factory, consumer):
    daemon = await daemon_factory()
    response, answer = await daemon.post("/gate/Jenkins/Acme", jenkins())
    assert response.code == 200, answer
    _, raw = await consumer.get()
    assert raw.routing_key == "acme.acme.jenkins.completed.success"


@pytest.mark.parametrize(
    ("phase", "status"),
    [("COMPLETED", "SUCCESS"), ("STARTED", None)],
)
@pytest_twisted.ensureDeferred
async def test_jenkins_notify_only_on_failure_skips(
    daemon_factory, consumer, broker, phase, status
):
    daemon = await daemon_factory(analyzers={"Jenkins": {"Acme": JENKINS_ANALYZER}})
    response, answer = await daemon.post("/gate/Jenkins/Acme", jenkins("nightly", phase, status))
    assert response.code == 200, answer
    assert_report(answer, "Jenkins", "Acme", broker.exchange, [])
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_jenkins_invalid_body_is_400(daemon_factory, consumer):
    daemon = await daemon_factory()
    for body in [
        {"build": jenkins()["build"]},
        {"name": "widgets-build"},
        {"name": "widgets-build", "build": "COMPLETED"},
        {"name": "widgets-build", "build": {"status": "SUCCESS"}},
        {"name": None, "build": jenkins()["build"]},
        b"[1, 2]",
        b"{nope",
    ]:
        response, answer = await daemon.post("/gate/Jenkins/Acme", body)
        assert response.code == 400, body
        assert first_line(answer) == "Bad request."
    await consumer.expect_nothing()


# Notification ---------------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_notification_published_as_is(daemon_factory, consumer, broker):
    daemon = await daemon_factory()
    sent = {
        "service": "Deployer",
        "project": "Widgets",
        "group": "ops",
        "rawContent": {"version": "1.2.3", "hosts": ["a", "b"]},
        "type": "deploy.done",
        "text": "Widgets 1.2.3 déployé",
        "link": "https://deploy.acme.test/42",
    }
    response, answer = await daemon.post("/gate/Notification/Acme", sent)
    key = "widgets.ops.deployer.deploy.done"
    raw = await assert_call_published(
        response, answer, consumer, broker.exchange, key, sent, door="Acme"
    )
    assert "déployé".encode() in raw.content.body


@pytest.mark.parametrize("project", [None, ""], ids=["absent", "empty"])
@pytest_twisted.ensureDeferred
async def test_notification_project_defaults_to_door(daemon_factory, consumer, broker, project):
    daemon = await daemon_factory()
    sent = {"service": "Cron", "group": "ops", "type": "backup"}
    if project is not None:
        sent["project"] = project
    response, answer = await daemon.post("/gate/Notification/Acme", sent)
    key = "acme.ops.cron.backup"
    expected = notification(
        service="Cron",
        project="Acme",
        group="ops",
        rawContent=None,
        type="backup",
        text="",
        link="",
    )
    await assert_call_published(response, answer, consumer, broker.exchange, key, expected)


@pytest_twisted.ensureDeferred
async def test_notification_required_field_is_400(daemon_factory, consumer):
    daemon = await daemon_factory()
    for key in ("service", "group", "type"):
        for value in ("absent", "", None, 3, ["x"]):
            sent = {"service": "Cron", "project": "Acme", "group": "ops", "type": "backup"}
            if value == "absent":
                del sent[key]
            else:
                sent[key] = value
            response, answer = await daemon.post("/gate/Notification/Acme", sent)
            assert response.code == 400, sent
            assert first_line(answer) == "Bad request."
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_notification_not_an_object_is_400(daemon_factory, consumer):
    daemon = await daemon_factory()
    for body in (b"[]", b'[{"service": "Cron"}]', b'"text"', b"3", b"null", b"{", b""):
        response, answer = await daemon.post("/gate/Notification/Acme", body)
        assert response.code == 400, body
        assert first_line(answer) == "Bad request."
    await consumer.expect_nothing()


@pytest.mark.parametrize(
    ("values", "routing_key"),
    [
        pytest.param(
            {"project": "a.b*c", "group": "g#h", "service": "S.v*c", "type": "x.y"},
            "a_b_c.g_h.s_v_c.x.y",
            id="dots-stars-hashes",
        ),
        pytest.param(
            {"project": "*", "group": "#", "service": "..", "type": "deploy.*.#"},
            "_._.__.deploy._._",
            id="only-syntax",
        ),
        pytest.param(
            {"project": "Acme", "group": "ops", "service": "Cron", "type": "a..b"},
            "acme.ops.cron.a._.b",
            id="empty-type-word",
        ),
        pytest.param(
            {"project": "Acme", "group": "ops", "service": "Cron", "type": ".a."},
            "acme.ops.cron._.a._",
            id="type-edges",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_notification_routing_key_injection(
    daemon_factory, consumer, broker, values, routing_key
):
    daemon = await daemon_factory()
    sent = {**values, "rawContent": None, "text": "t", "link": ""}
    response, answer = await daemon.post("/gate/Notification/Acme", sent)
    # The body is what was sent; only the routing key is sanitized.
    await assert_call_published(
        response, answer, consumer, broker.exchange, routing_key, sent, door="Acme"
    )


@pytest_twisted.ensureDeferred
async def test_notification_routing_key_too_long_is_400(daemon_factory, consumer):
    daemon = await daemon_factory()
    sent = {"service": "Cron", "group": "g" * 240, "type": "backup"}
    response, answer = await daemon.post("/gate/Notification/Acme", sent)
    assert response.code == 400
    assert first_line(answer) == "Bad request."
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_notification_routing_key_of_255_bytes_is_accepted(daemon_factory, consumer):
    daemon = await daemon_factory()
    # "acme." + group + ".cron.backup" is 255 bytes.
    group = "g" * (255 - len("acme..cron.backup"))
    response, answer = await daemon.post(
        "/gate/Notification/Acme", {"service": "Cron", "group": group, "type": "backup"}
    )
    assert response.code == 200, answer
    _, raw = await consumer.get()
    assert len(raw.routing_key.encode()) == 255


@pytest.mark.parametrize("gate", ["Notification", "Jenkins", "DockerHub"])
@pytest_twisted.ensureDeferred
async def test_door_secret_of_unsigned_gates(daemon_factory, consumer, gate):
    daemon = await daemon_factory(services=[{"gate": gate, "door": "Acme", "secret": DOOR_SECRET}])
    body = {
        "Notification": {"service": "Cron", "group": "ops", "type": "backup"},
        "Jenkins": jenkins(),
        "DockerHub": dockerhub_push(),
    }[gate]
    path = f"/gate/{gate}/Acme"
    for query, headers in [
        (f"?token={DOOR_SECRET}", {}),
        ("", {"Authorization": f"Bearer {DOOR_SECRET}"}),
        ("", {"authorization": f"bearer {DOOR_SECRET}"}),
    ]:
        response, answer = await daemon.post(path + query, body, headers=headers)
        assert response.code == 200, (query, headers, answer)
        assert json.loads(answer)["actions"][0]["error"] is None
        message, _ = await consumer.get()
        assert message["project"] == "Acme"
    for query, headers in [
        ("", {}),
        ("?token=wrong", {}),
        ("", {"Authorization": f"Bearer {DOOR_SECRET}x"}),
    ]:
        response, answer = await daemon.post(path + query, body, headers=headers)
        assert response.code == 403, (query, headers)
        assert first_line(answer) == "Unauthorized action."
    await consumer.expect_nothing()
