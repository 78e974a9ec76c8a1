"""The Phabricator gate end to end: feed stories from ``feed.http-hooks``
(docs/reference.rst §3.4)."""

from __future__ import annotations

import pytest
import pytest_twisted

from tests.gate_cases import assert_phabricator_published
from tests.helpers import first_line
from tests.payloads import phabricator_form_body, phabricator_story

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SERVICES = [
    {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": "https://phabricator.acme.test",
        "secret": "api-phab-token",
    },
    {"gate": "GitHub", "door": "OnlyGitHub", "secret": "s3cret"},
]
ANALYZER = {
    "defaultGroup": "tracker",
    "map": [
        {"group": "ops", "items": ["Servers"], "words": ["DEPLOY", "outage"]},
        {"group": "widgets", "items": ["Widgets"], "words": ["WIDGET"]},
    ],
}
TASK = "PHID-TASK-acme0000widgets"
PASTE = "PHID-PSTE-acme0000paste01"


async def phabricator_daemon(daemon_factory):
    return await daemon_factory(services=SERVICES, analyzers={"Phabricator": {"Acme": ANALYZER}})


@pytest.mark.parametrize(
    ("object_phid", "text", "type_", "group"),
    [
        pytest.param(
            TASK, "alice created T42: Widgets spin backwards.", "TASK", "widgets", id="task-word"
        ),
        pytest.param(
            PASTE, "bob created P7: outage notes", "PSTE", "ops", id="paste-first-mapping"
        ),
        pytest.param(
            None, "alice joined the project Rockets.", "VOID", "tracker", id="void-default-group"
        ),
        pytest.param(
            TASK, "bob closed T43: Deploy widgets.", "TASK", "ops", id="first-word-mapping-wins"
        ),
    ],
)
@pytest.mark.parametrize("encoding", ["form", "json"])
@pytest_twisted.ensureDeferred
async def test_story(daemon_factory, consumer, broker, encoding, object_phid, text, type_, group):
    daemon = await phabricator_daemon(daemon_factory)
    story = phabricator_story(object_phid, text)
    if encoding == "form":
        response, answer = await daemon.post(
            "/gate/Phabricator/Acme", phabricator_form_body(object_phid, text), headers=FORM
        )
    else:
        response, answer = await daemon.post("/gate/Phabricator/Acme", story)
    await assert_phabricator_published(
        response, answer, consumer, broker.exchange, story, type_, group, text
    )


@pytest_twisted.ensureDeferred
async def test_form_nests_bracket_keys(daemon_factory, consumer):
    daemon = await phabricator_daemon(daemon_factory)
    body = phabricator_form_body(
        TASK, "alice edited T42.", transactions=("PHID-XACT-TASK-one", "PHID-XACT-TASK-two")
    )
    assert b"storyData%5BtransactionPHIDs%5D%5BPHID-XACT-TASK-one%5D" in body
    response, answer = await daemon.post("/gate/Phabricator/Acme", body, headers=FORM)
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert message["rawContent"]["storyData"] == {
        "objectPHID": TASK,
        "transactionPHIDs": {
            "PHID-XACT-TASK-one": "PHID-XACT-TASK-one",
            "PHID-XACT-TASK-two": "PHID-XACT-TASK-two",
        },
    }
    assert message["rawContent"]["storyID"] == "4242"
    assert message["rawContent"]["epoch"] == "1714816800"


@pytest_twisted.ensureDeferred
async def test_default_group_is_door_without_analyzer(daemon_factory, consumer):
    daemon = await daemon_factory(services=SERVICES)
    response, answer = await daemon.post(
        "/gate/Phabricator/Acme", phabricator_form_body(TASK, "alice created T42."), headers=FORM
    )
    assert response.code == 200, answer
    _, raw = await consumer.get()
    assert raw.routing_key == "acme.acme.phabricator.task"


@pytest.mark.parametrize(
    "door",
    [
        pytest.param("Nobody", id="unknown-door"),
        pytest.param("OnlyGitHub", id="door-of-another-gate"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_unknown_instance_is_404(daemon_factory, consumer, door):
    daemon = await phabricator_daemon(daemon_factory)
    response, answer = await daemon.post(
        f"/gate/Phabricator/{door}", phabricator_form_body(), headers=FORM
    )
    assert response.code == 404
    assert first_line(answer) == "Unknown Phabricator instance."
    response, answer = await daemon.post(f"/gate/Phabricator/{door}", phabricator_story())
    assert response.code == 404
    assert first_line(answer) == "Unknown Phabricator instance."
    await consumer.expect_nothing()
