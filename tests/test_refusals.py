"""Why calls fail, door by door: the reasons of refusals in ``/config``, ``/metrics``,
``/status.json`` and on the status page.

The record itself (:class:`DoorActivity`) runs on a clock of the test's own;
the reasons are those the daemon gives real calls, in the test's reactor; the
page is drawn by a real headless Chromium (as in ``tests/test_dashboard.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re

import pytest
import pytest_twisted
import treq
from twisted.internet.task import Clock

from notifications.refusals import MAX_UNDECLARED, REASONS, DoorActivity, reason_of
from tests.conftest import make_config, test_broker
from tests.helpers import raw_http, signed_github_request
from tests.processes import request, running_twistd

SECRET = "github-door-secret-271828"
TOKEN = "jenkins-door-token-314159"

SERVICES = [
    {"gate": "GitHub", "door": "Acme", "secret": SECRET},
    {"gate": "GitHub", "door": "Open"},
    {"gate": "Jenkins", "door": "Acme", "secret": TOKEN},
    {"gate": "Notification", "door": "Acme"},
    {"gate": "DockerHub", "door": "Acme"},
]


# The record, on the test's clock --------------------------------------------------------


def test_a_door_keeps_its_last_call_and_an_hour_of_refusals():
    clock = Clock()
    clock.advance(1_000_000)
    activity = DoorActivity(clock, [("GitHub", "Acme")])
    assert activity.door("GitHub", "Acme") == {"lastCall": None, "refusals": {}}
    activity.called("GitHub", "Acme", 403, None, "signature_mismatch")
    clock.advance(30)
    activity.called("GitHub", "Acme", 403, None, "signature_mismatch")
    activity.called("GitHub", "Acme", 400, None, "missing_header")
    clock.advance(600)
    activity.called("GitHub", "Acme", 200, "push", None)
    assert activity.door("GitHub", "Acme") == {
        "lastCall": {"time": 1_000_630, "event": "push", "status": 200},
        "refusals": {"missing_header": 1, "signature_mismatch": 2},
    }
    # An hour after the first minute, its refusals are no longer counted.
    clock.advance(3600 - 630 + 60)
    assert activity.door("GitHub", "Acme")["refusals"] == {}
    assert activity.door("GitHub", "Acme")["lastCall"]["event"] == "push"


def test_undeclared_doors_are_bounded():
    clock = Clock()
    activity = DoorActivity(clock, [("GitHub", "Acme")])
    # Accepted calls on doors the file does not declare are not kept (any door takes calls).
    activity.called("Notification", "anything", 200, "deploy", None)
    assert activity.undeclared() == []
    for index in range(MAX_UNDECLARED + 20):
        activity.called("GitHub", f"made-up-{index:03}", 404, None, "unknown_door")
    undeclared = activity.undeclared()
    named = [entry for entry in undeclared if entry["door"] is not None]
    assert len(named) == MAX_UNDECLARED
    [other] = [entry for entry in undeclared if entry["door"] is None]
    assert other["gate"] == "GitHub"
    assert other["refusals"] == {"unknown_door": 20}
    assert len(undeclared) == MAX_UNDECLARED + 1

    # An hour later the quiet doors give their places to new ones.
    clock.advance(3700)
    activity.called("Jenkins", "new", 403, None, "signature_mismatch")
    assert [(entry["gate"], entry["door"]) for entry in activity.undeclared()] == [
        ("Jenkins", "new")
    ]


def test_a_reload_keeps_the_records_and_declares_new_doors():
    clock = Clock()
    activity = DoorActivity(clock, [("GitHub", "Acme")])
    activity.called("GitHub", "Acme", 403, None, "missing_signature")
    activity.called("GitHub", "Late", 404, None, "unknown_door")
    activity.declare([("GitHub", "Acme"), ("GitHub", "Late")])
    assert activity.undeclared() == []
    assert activity.door("GitHub", "Late")["refusals"] == {"unknown_door": 1}
    assert activity.door("GitHub", "Acme")["refusals"] == {"missing_signature": 1}


def test_a_refusal_without_a_known_code_gets_one_by_status():
    assert reason_of(403, "signature_mismatch") == "signature_mismatch"
    assert reason_of(403, None) == "signature_mismatch"
    assert reason_of(400, "made up") == "bad_payload"
    assert reason_of(404, None) == "unknown_door"
    assert reason_of(418, None) == "internal_error"


# The reasons of real calls -------------------------------------------------------------


async def post(daemon, path: str, body: bytes, headers: dict[str, str] | None = None):
    response = await treq.post(
        daemon.url + path,
        body,
        headers={name: [value] for name, value in (headers or {}).items()},
    )
    return response.code, await response.content()


def github(secret: str | None, event: str | None = "ping", **kwargs):
    return signed_github_request(event, {"zen": "Design for failure."}, secret, **kwargs)


def github_form_without_payload() -> tuple[bytes, dict[str, str]]:
    body = b"other=1"
    _, headers = signed_github_request("ping", body, SECRET)
    signature = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers.update(
        {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Hub-Signature-256": f"sha256={signature}",
        }
    )
    return body, headers


#: Calls and the reason each is refused for: (path, body, headers, status, reason).
REFUSED = [
    ("/gate/GitHub/Acme", *github("wrong"), 403, "signature_mismatch"),
    ("/gate/GitHub/Acme", *github("wrong", algorithm="sha1"), 403, "signature_mismatch"),
    ("/gate/GitHub/Acme", *github(None), 403, "missing_signature"),
    ("/gate/GitHub/Acme", *github(SECRET, event=None), 400, "missing_header"),
    ("/gate/GitHub/Acme", *github(SECRET, event="Not-An-Event"), 400, "bad_header"),
    ("/gate/GitHub/Acme", *github_form_without_payload(), 400, "bad_payload"),
    ("/gate/GitHub/Open", *github(None), 403, "unprotected_door"),
    ("/gate/GitHub/Nobody", *github(SECRET), 404, "unknown_door"),
    (
        "/gate/Jenkins/Acme",
        b'{"name": "j", "build": {"phase": "STARTED"}}',
        {},
        403,
        "missing_signature",
    ),
    (
        "/gate/Jenkins/Acme?token=wrong",
        b'{"name": "j", "build": {"phase": "STARTED"}}',
        {},
        403,
        "signature_mismatch",
    ),
    (
        "/gate/Jenkins/Acme",
        b'{"name": "j"}',
        {"Authorization": f"Bearer {TOKEN}"},
        400,
        "bad_payload",
    ),
    ("/gate/Notification/Acme", b'{"service": ', {}, 400, "bad_json"),
    ("/gate/Notification/Acme", b"[]", {}, 400, "bad_json"),
    ("/gate/Notification/Acme", b'{"service": "S"}', {}, 400, "bad_payload"),
    (
        "/gate/Notification/Acme",
        json.dumps({"service": "S", "group": "g" * 300, "type": "t"}).encode(),
        {},
        400,
        "routing_key_too_long",
    ),
    (
        "/gate/Notification/Acme",
        b"{}",
        {"Content-Type": "image/png"},
        415,
        "unsupported_media_type",
    ),
    (
        "/gate/DockerHub/Acme",
        b'{"storage": {"url": "https://api.mailgun.net/v3/x"}}',
        {},
        400,
        "not_configured",
    ),
    ("/gate/Notification/Made-Up", b'{"service": "S"}', {}, 400, "bad_payload"),
]


@pytest_twisted.ensureDeferred
async def test_each_refusal_has_its_reason_in_config_and_metrics(daemon_factory):
    daemon = await daemon_factory(services=SERVICES, toml="max_body_size = 2048\n")
    for path, body, headers, status, _ in REFUSED:
        code, answer = await post(
            daemon, path, body, {"Content-Type": "application/json", **headers}
        )
        assert code == status, (path, answer)
    # Accepted calls: the last call of their door.
    code, _ = await post(daemon, "/gate/GitHub/Acme", *github(SECRET))
    assert code == 200
    code, _ = await post(
        daemon,
        "/gate/Notification/Acme",
        json.dumps({"service": "S", "group": "g", "type": "deploy"}).encode(),
    )
    assert code == 200
    # A body over max_body_size: refused by the HTTP layer as soon as its length is read.
    code, answer = await raw_http(
        daemon.url,
        "POST",
        "/gate/Jenkins/Acme",
        [("Content-Type", "application/json")],
        b"x" * 4096,
    )
    assert code == 413, answer

    response = await treq.get(daemon.url + "/config")
    body = await response.content()
    report = json.loads(body)
    doors = {(entry["gate"], entry["door"]): entry for entry in report["services"]}
    expected: dict[tuple[str, str], dict[str, int]] = {}
    for path, *_, reason in REFUSED:
        gate, door = path.split("?")[0].split("/")[2:4]
        counts = expected.setdefault((gate, door), {})
        counts[reason] = counts.get(reason, 0) + 1
    expected[("Jenkins", "Acme")]["body_too_large"] = 1
    for key, entry in doors.items():
        assert entry["refusals"] == dict(sorted(expected.get(key, {}).items())), key
    assert doors[("GitHub", "Acme")]["lastCall"]["status"] == 200
    assert doors[("GitHub", "Acme")]["lastCall"]["event"] == "ping"
    assert doors[("Notification", "Acme")]["lastCall"]["event"] == "deploy"
    assert doors[("Jenkins", "Acme")]["lastCall"]["status"] == 413
    assert doors[("DockerHub", "Acme")]["lastCall"] == {
        "time": doors[("DockerHub", "Acme")]["lastCall"]["time"],
        "event": None,
        "status": 400,
    }
    assert report["undeclaredDoors"] == [
        {
            "gate": "GitHub",
            "door": "Nobody",
            "lastCall": report["undeclaredDoors"][0]["lastCall"],
            "refusals": {"unknown_door": 1},
        },
        {
            "gate": "Notification",
            "door": "Made-Up",
            "lastCall": report["undeclaredDoors"][1]["lastCall"],
            "refusals": {"bad_payload": 1},
        },
    ]
    assert SECRET.encode() not in body and TOKEN.encode() not in body
    assert b"Design for failure" not in body and b"wrong" not in body

    # /status.json says the same.
    response = await treq.get(daemon.url + "/status.json")
    status = json.loads(await response.content())
    assert [(entry["gate"], entry["door"]) for entry in status["doors"]] == list(doors)
    for entry in status["doors"]:
        assert entry["refusals"] == doors[(entry["gate"], entry["door"])]["refusals"]
    assert status["undeclaredDoors"] == report["undeclaredDoors"]

    # /metrics counts them by gate (of the URL) and reason.
    response = await treq.get(daemon.url + "/metrics")
    metrics = (await response.content()).decode()
    by_gate: dict[tuple[str, str], int] = {}
    for (gate, _), counts in expected.items():
        for reason, count in counts.items():
            by_gate[(gate, reason)] = by_gate.get((gate, reason), 0) + count
    for (gate, reason), count in by_gate.items():
        line = f'notifications_gate_refusals_total{{gate="{gate}",reason="{reason}"}} {count}.0'
        assert line in metrics.splitlines(), line
    labels = re.findall(
        r'notifications_gate_refusals_total\{gate="(\w+)",reason="(\w+)"\}', metrics
    )
    assert {reason for _, reason in labels} <= set(REASONS)


@pytest_twisted.ensureDeferred
async def test_herald_refusals(daemon_factory):
    phabricator = {
        "gate": "Phabricator",
        "door": "Acme",
        "instance": "https://phabricator.acme.test",
        "hmac_key": "herald-key",
    }
    bare = {**phabricator, "door": "Bare"}
    del bare["hmac_key"]
    daemon = await daemon_factory(services=[phabricator, bare])
    herald = json.dumps({"object": {"phid": "PHID-TASK-1", "type": "TASK"}}).encode()
    json_type = {"Content-Type": "application/json"}
    calls = [
        ("/gate/Phabricator/Acme", {**json_type, "X-Phabricator-Webhook-Signature": "00"}, 403),
        ("/gate/Phabricator/Acme", json_type, 403),
        ("/gate/Phabricator/Bare", json_type, 403),
        ("/gate/Phabricator/Nope", json_type, 404),
    ]
    for path, headers, status in calls:
        code, _ = await post(daemon, path, herald, headers)
        assert code == status
    response = await treq.get(daemon.url + "/config")
    report = json.loads(await response.content())
    assert [entry["refusals"] for entry in report["services"]] == [
        {"missing_signature": 1, "signature_mismatch": 1},
        {"unprotected_door": 1},
    ]
    assert [(entry["door"], entry["refusals"]) for entry in report["undeclaredDoors"]] == [
        ("Nope", {"unknown_door": 1})
    ]


# The status page, in a real browser ------------------------------------------------------


@pytest.fixture
def daemon_with_doors(tmp_path):
    make_config(tmp_path, test_broker(), services=SERVICES)
    with running_twistd(tmp_path) as daemon:
        yield daemon


def test_the_status_page_shows_why_calls_fail(browser, daemon_with_doors):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    port = daemon_with_doors.port
    for secret in ("wrong", "wrong", None):
        body, headers = github(secret)
        assert request(port, "POST", "/gate/GitHub/Acme", body, headers)[0] == 403
    body, headers = github(SECRET)
    assert request(port, "POST", "/gate/GitHub/Nobody", body, headers)[0] == 404
    assert request(port, "POST", "/gate/Notification/Acme", b"{", {})[0] == 400

    wait = WebDriverWait(browser, 15)
    browser.get(daemon_with_doors.url + "/")
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#door-rows tr")) == 6)
    rows = browser.find_elements(By.CSS_SELECTOR, "#door-rows tr")
    assert [(row.get_attribute("data-gate"), row.get_attribute("data-door")) for row in rows] == [
        ("GitHub", "Acme"),
        ("GitHub", "Open"),
        ("Jenkins", "Acme"),
        ("Notification", "Acme"),
        ("DockerHub", "Acme"),
        ("GitHub", "Nobody"),
    ]
    acme, open_door, _, notification, _, nobody = rows

    def reasons(row) -> list[str]:
        return [item.text for item in row.find_elements(By.CSS_SELECTOR, ".reasons li")]

    assert reasons(acme) == ["1 × missing signature", "2 × signature mismatch"]
    last = acme.find_element(By.CSS_SELECTOR, "td.last").text
    assert re.fullmatch(r"\d\d:\d\d:\d\d 403", last), last
    assert open_door.find_element(By.CSS_SELECTOR, "td.last").text == "no call since the start"
    assert open_door.find_element(By.CSS_SELECTOR, "td.refusals").text == "none"
    assert reasons(notification) == ["1 × bad json"]
    assert reasons(nobody) == ["1 × unknown door"]
    assert "not in the credentials file" in nobody.find_element(By.CSS_SELECTOR, "td.door").text
    for secret in (SECRET, TOKEN):
        assert secret not in browser.page_source
    problems = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert problems == []
