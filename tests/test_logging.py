"""What the daemon logs: one line per gate call, and never a secret."""

from __future__ import annotations

import json

import pytest
import pytest_twisted
from twisted.logger import formatEvent, globalLogPublisher

from tests.helpers import signed_github_request
from tests.payloads import github_push, jenkins

GITHUB_SECRET = "github-hook-secret-5d1f"
JENKINS_SECRET = "jenkins-door-token-77aa"
CONDUIT_TOKEN = "api-conduittoken0000000000001"


@pytest.fixture
def log_events():
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest_twisted.ensureDeferred
async def test_one_line_per_call_and_no_secret_anywhere(daemon_factory, consumer, log_events):
    daemon = await daemon_factory(
        services=[
            {"gate": "GitHub", "door": "Acme", "secret": GITHUB_SECRET},
            {"gate": "Jenkins", "door": "Acme", "secret": JENKINS_SECRET},
            {
                "gate": "Phabricator",
                "door": "Acme",
                "instance": "https://phabricator.invalid",
                "secret": CONDUIT_TOKEN,
            },
        ]
    )
    body, headers = signed_github_request("push", github_push(), GITHUB_SECRET, "delivery-log-1")
    calls = [
        ("/gate/GitHub/Acme", body, headers, 200),
        ("/gate/GitHub/Acme", body, {**headers, "X-Hub-Signature-256": "sha256=00"}, 403),
        (f"/gate/Jenkins/Acme?token={JENKINS_SECRET}", jenkins("deploy", "STARTED"), {}, 200),
        (
            "/gate/Jenkins/Acme",
            jenkins("deploy", "STARTED"),
            {"Authorization": f"Bearer {JENKINS_SECRET}x"},
            403,
        ),
        ("/gate/Phabricator/Acme", b"storyText=hello&storyID=1", {}, 200),
        ("/gate/Notification/Acme", b"[1]", {}, 400),
    ]
    request_ids = []
    for path, payload, extra, expected in calls:
        content_type = (
            {"Content-Type": "application/x-www-form-urlencoded"} if "Phabricator" in path else {}
        )
        response, answer = await daemon.post(path, payload, headers={**content_type, **extra})
        assert response.code == expected, answer
        [request_id] = response.headers.getRawHeaders(b"x-request-id")
        request_ids.append(request_id.decode())
        if expected == 200:
            assert json.loads(answer)["requestId"] == request_ids[-1]
        for secret in (GITHUB_SECRET, JENKINS_SECRET, CONDUIT_TOKEN):
            assert secret.encode() not in answer

    text = "\n".join(formatEvent(event) + repr(event) for event in log_events)
    for secret in (GITHUB_SECRET, JENKINS_SECRET, CONDUIT_TOKEN, "guest:guest"):
        assert secret not in text

    lines = [
        formatEvent(event)
        for event in log_events
        if event.get("log_namespace") == "notifications.web.CallHandler"
    ]
    assert len(lines) == len(calls), lines
    assert lines[0].startswith(
        f"GitHub/Acme event=push delivery=delivery-log-1 request={request_ids[0]} → 200"
    )
    assert lines[1].startswith(f"GitHub/Acme event=- delivery=- request={request_ids[1]} → 403")
    assert lines[-1].endswith(f"request={request_ids[-1]} → 400 body is not a JSON object")
    assert len(set(request_ids)) == len(calls)
