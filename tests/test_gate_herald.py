"""Herald webhooks on the Phabricator gate, end to end
(docs/reference.rst §3.4, §3.1 allow_unsigned).

Real HTTP calls to the daemon (wired as ``makeService`` wires it: the clients
given to the gates), a real RabbitMQ, and the fake Conduit of
:mod:`tests.fakes` on loopback for ``phid.query`` and the projects lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import reactor

from notifications.config import load_config
from notifications.credentials import load_services
from notifications.errors import ConfigError
from tests import gate_cases
from tests.conftest import make_config, write_json
from tests.fakes import FakeConduit
from tests.gate_cases import Centers, assert_phabricator_published, start_center
from tests.helpers import closed_port, first_line
from tests.payloads import phabricator_form_body, phabricator_story

HERALD_KEY = "herald-hmac-key-acme-0000000000"
OTHER_KEY = "herald-hmac-key-wrong-000000000"
CONDUIT_TOKEN = "api-heraldconduittoken0000000000"
SIGNATURE = "X-Phabricator-Webhook-Signature"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}

SERVERS = "PHID-PROJ-servers0000000"
WIDGETS = "PHID-PROJ-widgets0000000"
TASK = "PHID-TASK-acme0000herald1"
REVISION = "PHID-DREV-acme0000herald1"
REPOSITORY = "PHID-REPO-acme0000herald1"
WIKI = "PHID-WIKI-acme0000herald1"

ANALYZER = {
    "defaultGroup": "tracker",
    "map": [
        {"group": "ops", "items": ["Servers"], "words": ["outage"]},
        {"group": "widgets", "items": ["Widgets"], "words": ["WIDGET"]},
    ],
}


def herald_payload(
    phid: Any = TASK, type_: Any = "TASK", *, test: bool = False, silent: bool = False
) -> dict[str, Any]:
    """A Herald webhook body as Phorge sends it."""
    return {
        "object": {"type": type_, "phid": phid},
        "triggers": [{"phid": "PHID-HRUL-acme0000rule0001"}],
        "action": {"test": test, "silent": silent, "secure": False, "epoch": 1714816800},
        "transactions": [{"phid": "PHID-XACT-TASK-acme00000001"}],
    }


def signed(body: bytes, key: str | None = HERALD_KEY) -> dict[str, str]:
    """The headers of a Herald call: JSON, signed with ``key`` (None: unsigned)."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers[SIGNATURE] = hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    return headers


def encode(payload: Any) -> bytes:
    return json.dumps(payload).encode()


def services(conduit_url: str, **acme: Any) -> list[dict]:
    entry = {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": conduit_url,
        "secret": CONDUIT_TOKEN,
        "hmac_key": HERALD_KEY,
        **acme,
    }
    return [
        {key: value for key, value in entry.items() if value is not None},
        {"gate": "Phabricator", "door": "NoKey", "instance": conduit_url, "secret": CONDUIT_TOKEN},
        {"gate": "GitHub", "door": "OnlyGitHub", "secret": "s3cret"},
    ]


@pytest_twisted.async_yield_fixture
async def conduit():
    fake = await FakeConduit(CONDUIT_TOKEN).start()
    fake.projects.update({SERVERS: "Servers", WIDGETS: "Widgets"})
    fake.tasks[TASK] = [SERVERS]
    fake.revisions[REVISION] = REPOSITORY
    fake.add_repository(REPOSITORY, "WDG", "https://example.test/widgets.git", [WIDGETS])
    fake.handles[TASK] = {
        "uri": "https://phabricator.acme.test/T42",
        "typeName": "Maniphest Task",
        "type": "TASK",
        "name": "T42",
        "fullName": "T42: Widgets spin backwards",
        "status": "open",
    }
    fake.handles[REVISION] = {
        "uri": "https://phabricator.acme.test/D7",
        "typeName": "Differential Revision",
        "type": "DREV",
        "name": "D7",
        "fullName": "D7: Make the widgets\nspin forwards",
    }
    yield fake
    await fake.stop()


class Center(gate_cases.Center):
    """The shared center, with a signed Herald call."""

    async def herald(self, payload: Any = None, key: str | None = HERALD_KEY, door: str = "Acme"):
        body = encode(herald_payload() if payload is None else payload)
        return await self.post(f"/gate/Phabricator/{door}", body, signed(body, key))


@pytest_twisted.async_yield_fixture
async def center_factory(tmp_path, broker, conduit):
    """``await center_factory(...)``: a daemon with its clients, talking to the fake Conduit."""
    centers = Centers(tmp_path, broker, partial(start_center, center_class=Center))

    async def factory(
        timeout: float = 3.0,
        gate_toml: str = "",
        config=None,
        **kwargs: Any,
    ) -> Center:
        kwargs.setdefault("services", services(conduit.url))
        kwargs.setdefault("analyzers", {"Phabricator": {"Acme": ANALYZER, "NoKey": ANALYZER}})
        # gate_toml lands in the [gate] section make_config starts.
        toml = gate_toml + f"\n[http]\ntimeout = {timeout}\n"
        return await centers.start(config, toml=toml, **kwargs)

    yield factory
    await centers.stop_all()


def routing_key(answer: bytes) -> str:
    return json.loads(answer)["actions"][0]["routingKey"]


# A good signature -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phid", "type_", "group", "text", "link", "lookups"),
    [
        pytest.param(
            TASK,
            "TASK",
            "ops",
            "Maniphest Task T42: Widgets spin backwards was updated",
            "https://phabricator.acme.test/T42",
            [("maniphest.query", {"phids[0]": TASK})],
            id="TASK",
        ),
        pytest.param(
            REVISION,
            "DREV",
            "widgets",
            "Differential Revision D7: Make the widgets spin forwards was updated",
            "https://phabricator.acme.test/D7",
            [
                ("differential.query", {"phids[0]": REVISION}),
                ("repository.query", {"phids[0]": REPOSITORY}),
            ],
            id="DREV",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_signed_herald_webhook_is_published(
    center_factory, conduit, consumer, broker, phid, type_, group, text, link, lookups
):
    center = await center_factory()
    payload = herald_payload(phid, type_)
    response, answer = await center.herald(payload)
    await assert_phabricator_published(
        response, answer, consumer, broker.exchange, payload, type_, group, text, link
    )
    calls = conduit.calls()
    assert ("phid.query", {"phids[0]": phid}) in calls
    for lookup in lookups:
        assert lookup in calls
    assert ("project.query", {"limit": "1000"}) in calls
    assert {request.form["api.token"] for request in conduit.requests} == {CONDUIT_TOKEN}


@pytest_twisted.ensureDeferred
async def test_signature_header_is_case_insensitive_and_hex_in_any_case(center_factory, consumer):
    center = await center_factory()
    body = encode(herald_payload())
    digest = hmac.new(HERALD_KEY.encode(), body, hashlib.sha256).hexdigest().upper()
    headers = {"Content-Type": "application/json", SIGNATURE.lower(): digest}
    response, answer = await center.post("/gate/Phabricator/Acme", body, headers)
    assert response.code == 200, answer
    await consumer.get()


@pytest_twisted.ensureDeferred
async def test_test_webhook_is_published_and_says_so(center_factory, consumer):
    center = await center_factory()
    response, answer = await center.herald(herald_payload(test=True))
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert message["text"] == "Maniphest Task T42: Widgets spin backwards was updated (test)"
    assert message["rawContent"]["action"]["test"] is True


# Refused calls -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param(lambda body: signed(body, OTHER_KEY), id="other-key"),
        pytest.param(lambda body: signed(body, None), id="missing"),
        pytest.param(lambda body: {**signed(body), SIGNATURE: ""}, id="empty"),
        pytest.param(lambda body: {**signed(body), SIGNATURE: "not hex at all"}, id="garbage"),
        pytest.param(
            lambda body: {**signed(body), SIGNATURE: "sha256=" + signed(body)[SIGNATURE]},
            id="github-style-prefix",
        ),
        pytest.param(
            lambda body: {
                "Content-Type": "application/json",
                SIGNATURE: hmac.new(HERALD_KEY.encode(), body, hashlib.sha1).hexdigest(),
            },
            id="sha1",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_wrong_or_missing_signature_is_403(center_factory, conduit, consumer, headers):
    center = await center_factory()
    body = encode(herald_payload())
    response, answer = await center.post("/gate/Phabricator/Acme", body, headers(body))
    assert response.code == 403, answer
    assert first_line(answer) == "Unauthorized action."
    assert conduit.requests == []
    await consumer.expect_nothing()


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"{not json", id="invalid-json"),
        pytest.param(b"[1, 2]", id="not-an-object"),
        pytest.param(encode({"object": None}), id="object-null"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_signature_is_checked_before_validity(center_factory, consumer, body):
    center = await center_factory()
    response, answer = await center.post(
        "/gate/Phabricator/Acme", body, {**signed(body), SIGNATURE: "0" * 64}
    )
    assert response.code == 403, answer
    assert first_line(answer) == "Unauthorized action."
    # The same bodies, well signed, are invalid.
    response, answer = await center.post("/gate/Phabricator/Acme", body, signed(body))
    assert response.code == 400, answer
    assert first_line(answer) == "Bad request."
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_signature_is_over_the_raw_bytes(center_factory, consumer):
    center = await center_factory()
    payload = herald_payload()
    spaced = json.dumps(payload, indent=2).encode()
    compact = json.dumps(payload, separators=(",", ":")).encode()
    assert spaced != compact and json.loads(spaced) == json.loads(compact)
    headers = signed(spaced)
    # The same JSON, serialised otherwise, with the signature of the first bytes.
    response, answer = await center.post("/gate/Phabricator/Acme", compact, headers)
    assert response.code == 403, answer
    await consumer.expect_nothing()
    response, answer = await center.post("/gate/Phabricator/Acme", spaced, headers)
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert message["rawContent"] == payload


@pytest_twisted.ensureDeferred
async def test_door_without_hmac_key_refuses_herald_calls(center_factory, conduit, consumer):
    center = await center_factory()
    for key in (HERALD_KEY, None):
        response, answer = await center.herald(key=key, door="NoKey")
        assert response.code == 403, answer
        assert first_line(answer) == "Unauthorized action."
    assert conduit.requests == []
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_allow_unsigned_accepts_herald_calls_on_doors_without_hmac_key(
    center_factory, consumer
):
    center = await center_factory(gate_toml='allow_unsigned = ["Phabricator"]\n')
    assert "Phabricator" in center.daemon.config.allow_unsigned
    for key in (None, OTHER_KEY):
        response, answer = await center.herald(key=key, door="NoKey")
        assert response.code == 200, answer
        assert routing_key(answer) == "nokey.ops.phabricator.task"
    messages = await consumer.drain()
    assert [message["text"] for message in messages] == [
        "Maniphest Task T42: Widgets spin backwards was updated"
    ] * 2
    # A door with a key still needs its signature.
    response, answer = await center.herald(key=None)
    assert response.code == 403, answer
    response, answer = await center.herald(key=OTHER_KEY)
    assert response.code == 403, answer
    await consumer.expect_nothing()


@pytest.mark.parametrize("door", ["Nobody", "OnlyGitHub"])
@pytest.mark.parametrize("gate_toml", ["", 'allow_unsigned = ["Phabricator"]\n'])
@pytest_twisted.ensureDeferred
async def test_unknown_door_is_404(center_factory, conduit, consumer, door, gate_toml):
    center = await center_factory(gate_toml=gate_toml)
    for key in (HERALD_KEY, None):
        response, answer = await center.herald(key=key, door=door)
        assert response.code == 404, answer
        assert first_line(answer) == "Unknown Phabricator instance."
    assert conduit.requests == []
    await consumer.expect_nothing()


# Conduit cannot tell: the fallback text --------------------------------------------------


FALLBACK = f"TASK {TASK} was updated"


@pytest.mark.parametrize("mode", ["empty", "api-error", "http-500", "malformed", "slow"])
@pytest_twisted.ensureDeferred
async def test_conduit_failure_gives_the_fallback_text(center_factory, conduit, consumer, mode):
    # Logged as warnings: an error in the log would fail the test (conftest).
    center = await center_factory(timeout=0.5)
    conduit.mode = mode
    started = reactor.seconds()
    response, answer = await center.herald()
    assert reactor.seconds() - started < 1.5
    assert response.code == 200, answer
    # No projects either: the default group.
    assert routing_key(answer) == "acme.tracker.phabricator.task"
    message, _ = await consumer.get()
    assert (message["text"], message["link"]) == (FALLBACK, "")


@pytest_twisted.ensureDeferred
async def test_only_phid_query_failing_still_groups_by_projects(center_factory, conduit, consumer):
    center = await center_factory(timeout=0.5)
    conduit.modes["phid.query"] = "slow"
    response, answer = await center.herald(herald_payload(test=True))
    assert response.code == 200, answer
    assert routing_key(answer) == "acme.ops.phabricator.task"
    message, _ = await consumer.get()
    assert message["text"] == FALLBACK + " (test)"


@pytest_twisted.ensureDeferred
async def test_unreachable_conduit_gives_the_fallback_text(center_factory, consumer):
    dead = f"http://127.0.0.1:{closed_port()}"
    center = await center_factory(services=services(dead))
    response, answer = await center.herald()
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert (message["text"], message["link"], message["group"]) == (FALLBACK, "", "tracker")


@pytest_twisted.ensureDeferred
async def test_door_without_api_token_asks_nothing(center_factory, conduit, consumer):
    center = await center_factory(services=services(conduit.url, secret=None))
    # Words of the text still group it: here the PHID has none.
    response, answer = await center.herald(herald_payload(WIKI, "WIKI"))
    assert response.code == 200, answer
    assert routing_key(answer) == "acme.tracker.phabricator.wiki"
    message, _ = await consumer.get()
    assert message["text"] == f"WIKI {WIKI} was updated"
    assert conduit.requests == []


@pytest_twisted.ensureDeferred
async def test_handle_words_group_the_notification(center_factory, conduit, consumer):
    conduit.handles[WIKI] = {"typeName": "Phriction Document", "fullName": "Outage runbook"}
    center = await center_factory()
    response, answer = await center.herald(herald_payload(WIKI, "WIKI"))
    assert response.code == 200, answer
    assert routing_key(answer) == "acme.ops.phabricator.wiki"
    message, _ = await consumer.get()
    assert (message["text"], message["link"]) == (
        "Phriction Document Outage runbook was updated",
        "",
    )
    # Other types have no projects lookup: phid.query only.
    assert [method for method, _ in conduit.calls()] == ["phid.query"]


# Configuration: hmac_key, hmac_key_env, hmac_key_file ---------------------------------


@pytest.mark.parametrize("way", ["env", "file"])
@pytest_twisted.ensureDeferred
async def test_hmac_key_from_the_environment_or_a_file(
    center_factory, conduit, consumer, broker, tmp_path, way
):
    directory = tmp_path / "secrets-config"
    directory.mkdir()
    config = make_config(directory, broker, analyzers={"Phabricator": {"Acme": ANALYZER}})
    entry: dict[str, Any] = {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": conduit.url,
        "secret": CONDUIT_TOKEN,
    }
    if way == "env":
        entry["hmac_key_env"] = "PHABRICATOR_HERALD_KEY"
    else:
        (directory / "herald.key").write_text(HERALD_KEY + "\n")
        entry["hmac_key_file"] = "herald.key"
    write_json(directory / "credentials.json", {"services": [entry]})
    environ = {"PHABRICATOR_HERALD_KEY": HERALD_KEY}
    config = replace(load_config(directory / "notifications.toml", environ=environ), broker=broker)
    assert config.service("Phabricator", "Acme").hmac_key == HERALD_KEY
    center = await center_factory(config=config)
    response, answer = await center.herald()
    assert response.code == 200, answer
    response, answer = await center.herald(key=OTHER_KEY)
    assert response.code == 403, answer
    message, _ = await consumer.get()
    assert message["link"] == "https://phabricator.acme.test/T42"
    await consumer.expect_nothing()


def credentials(tmp_path: Path, *entries: dict) -> Path:
    return write_json(tmp_path / "credentials.json", {"services": list(entries)})


PHAB = {"gate": "Phabricator", "door": "Acme", "instance": "https://phab.test"}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        pytest.param(
            {"gate": "GitHub", "door": "Acme", "hmac_key": "k"},
            "unknown key 'hmac_key' (expected door, gate, instance, secret, secret_env, "
            "secret_file)",
            id="not-for-github",
        ),
        pytest.param(
            {**PHAB, "hmac_kye": "k"},
            "unknown key 'hmac_kye' (expected door, gate, hmac_key, hmac_key_env, "
            "hmac_key_file, instance, secret, secret_env, secret_file)",
            id="typo",
        ),
        pytest.param(
            {**PHAB, "hmac_key": "k", "hmac_key_env": "KEY"},
            "give only one of hmac_key, hmac_key_env",
            id="two-ways",
        ),
        pytest.param({**PHAB, "hmac_key": 42}, "hmac_key must be a string", id="not-a-string"),
        pytest.param(
            {**PHAB, "hmac_key_env": "NOT_SET"},
            "environment variable NOT_SET is not set",
            id="env-missing",
        ),
    ],
)
def test_hmac_key_entries_are_checked(tmp_path, entry, message):
    with pytest.raises(ConfigError) as raised:
        load_services(credentials(tmp_path, entry), environ={})
    assert message in str(raised.value)


def test_hmac_key_stays_out_of_repr(tmp_path):
    [service] = load_services(credentials(tmp_path, {**PHAB, "hmac_key": HERALD_KEY}), environ={})
    assert service.hmac_key == HERALD_KEY
    assert HERALD_KEY not in repr(service)
    [service] = load_services(credentials(tmp_path, {**PHAB, "hmac_key": ""}), environ={})
    assert service.hmac_key is None


# Feed stories on the same door ---------------------------------------------------------


@pytest.mark.parametrize("encoding", ["form", "json"])
@pytest_twisted.ensureDeferred
async def test_feed_stories_still_work_on_a_door_with_hmac_key(
    center_factory, conduit, consumer, broker, encoding
):
    center = await center_factory()
    text = "alice created T42: Widgets spin backwards."
    story = phabricator_story(TASK, text)
    if encoding == "form":
        response, answer = await center.post(
            "/gate/Phabricator/Acme", phabricator_form_body(TASK, text), FORM
        )
    else:
        response, answer = await center.post("/gate/Phabricator/Acme", story)
    await assert_phabricator_published(
        response, answer, consumer, broker.exchange, story, "TASK", "ops", text
    )
    # A story asks for projects, never for phid.query.
    assert "phid.query" not in [method for method, _ in conduit.calls()]


@pytest_twisted.ensureDeferred
async def test_a_story_with_an_object_key_is_still_a_story(center_factory, consumer):
    center = await center_factory()
    story = {**phabricator_story(TASK, "bob fixed the outage."), "object": {"phid": TASK}}
    response, answer = await center.post("/gate/Phabricator/Acme", story)
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert message["text"] == "bob fixed the outage."


# Odd bodies: 400 or the fallback, never a 5xx ---------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param({"object": None}, id="object-null"),
        pytest.param({"object": "PHID-TASK-x"}, id="object-string"),
        pytest.param({"object": {"phid": 42, "type": "TASK"}}, id="phid-number"),
        pytest.param({"object": {"phid": None}}, id="phid-null"),
        pytest.param({"object": {"phid": ["PHID-TASK-x"]}}, id="phid-list"),
        pytest.param({"object": {"phid": "  "}}, id="phid-blank"),
        pytest.param({"triggers": [], "action": {}}, id="no-object"),
        pytest.param([herald_payload()], id="a-list"),
        pytest.param("PHID-TASK-x", id="a-string"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_unreadable_herald_bodies_are_400(center_factory, conduit, consumer, payload):
    center = await center_factory(gate_toml='allow_unsigned = ["Phabricator"]\n')
    response, answer = await center.herald(payload)
    assert response.code == 400, answer
    assert first_line(answer) == "Bad request."
    # Unsigned, on a door without a key where unsigned calls are allowed.
    response, answer = await center.herald(payload, key=None, door="NoKey")
    assert response.code == 400, answer
    assert conduit.requests == []
    await consumer.expect_nothing()


@pytest.mark.parametrize(
    ("payload", "type_", "text"),
    [
        pytest.param(
            {"object": {"phid": TASK, "type": 7}, "action": "test", "triggers": "x"},
            "TASK",
            "Maniphest Task T42: Widgets spin backwards was updated",
            id="type-number-from-phid",
        ),
        pytest.param(
            {"object": {"phid": TASK, "type": "T A.S#K"}, "action": {"test": "yes"}},
            "TASK",
            "Maniphest Task T42: Widgets spin backwards was updated",
            id="type-odd-from-phid",
        ),
        pytest.param(
            {"object": {"phid": "not-a-phid"}, "action": None, "transactions": {"a": 1}},
            "VOID",
            "VOID not-a-phid was updated",
            id="void",
        ),
        pytest.param(
            {"object": {"phid": "PHID-X", "type": "X" * 65}},
            "VOID",
            "VOID PHID-X was updated",
            id="type-too-long",
        ),
        pytest.param(
            {"object": {"phid": "PHID-TASK-" + "z" * 300, "type": "TASK"}},
            "TASK",
            "TASK PHID-TASK-" + "z" * 103 + "… was updated",
            id="long-phid-cut",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_odd_herald_bodies_fall_back(center_factory, conduit, consumer, payload, type_, text):
    center = await center_factory()
    response, answer = await center.herald(payload)
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert (message["type"], message["text"]) == (type_, text)
    assert message["rawContent"] == payload


@pytest.mark.parametrize(
    "handle",
    [
        pytest.param({"fullName": 42, "uri": ["x"], "typeName": None}, id="wrong-types"),
        pytest.param({"fullName": "", "uri": "javascript:alert(1)"}, id="empty-and-odd-uri"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_odd_conduit_handles_fall_back(center_factory, conduit, consumer, handle):
    conduit.handles[TASK] = handle
    center = await center_factory()
    response, answer = await center.herald()
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert (message["text"], message["link"]) == (FALLBACK, "")


@pytest_twisted.ensureDeferred
async def test_handle_without_type_name_or_full_name(center_factory, conduit, consumer):
    conduit.handles[TASK] = {"name": "T42", "uri": "https://phabricator.acme.test/T42"}
    center = await center_factory()
    response, answer = await center.herald()
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert (message["text"], message["link"]) == (
        "T42 was updated",
        "https://phabricator.acme.test/T42",
    )
