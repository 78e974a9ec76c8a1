"""Property tests through the real HTTP gates: whatever arrives, never a 5xx.

Arbitrary JSON, truncated and mutated payloads, random headers, sent over
real HTTP to a daemon publishing to the real broker; after each batch the
daemon must still answer ``/status``.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import make_config, test_broker
from tests.helpers import signed_github_request
from tests.payloads import (
    github_issue_comment,
    github_ping,
    github_pull_request,
    github_push,
    github_repository,
    jenkins,
)
from tests.processes import http_status, request, running_twistd

SECRET = "fuzz-secret"
EVENTS = [
    "push",
    "ping",
    "pull_request",
    "issues",
    "issue_comment",
    "repository",
    "workflow_run",
    "check_suite",
    "release",
    "create",
    "delete",
    "status",
    "made_up",
]
SAMPLES = [
    ("push", github_push(commits=3)),
    ("ping", github_ping()),
    ("pull_request", github_pull_request("opened")),
    ("issue_comment", github_issue_comment("created")),
    ("repository", github_repository("created")),
]
FUZZ = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=15), children, max_size=6)
    ),
    max_leaves=40,
)
# Objects that look like webhook payloads: known keys with any values.
payload_like = st.dictionaries(
    st.sampled_from(
        [
            "action",
            "ref",
            "commits",
            "head_commit",
            "repository",
            "sender",
            "pusher",
            "pull_request",
            "issue",
            "comment",
            "zen",
            "changes",
            "name",
            "build",
        ]
    ),
    json_values,
    max_size=8,
)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """The daemon as a process (the tests here block: they must not run in the reactor)."""
    directory = tmp_path_factory.mktemp("fuzz")
    make_config(
        directory,
        test_broker(),
        services=[
            {"gate": "GitHub", "door": "Acme", "secret": SECRET},
            {"gate": "Phabricator", "door": "Acme", "instance": "https://phab.invalid"},
        ],
        toml="publish_timeout = 0.05\n",
    )
    with running_twistd(directory) as daemon:
        yield daemon.port


def assert_no_5xx(code: int, body: bytes) -> None:
    assert 200 <= code < 500, (code, body[:300])


@FUZZ
@given(event=st.sampled_from(EVENTS), payload=json_values | payload_like)
def test_signed_github_calls_with_any_json(daemon, event, payload):
    body, headers = signed_github_request(event, payload, SECRET)
    code, answer = request(daemon, "POST", "/gate/GitHub/Acme", body, headers)
    assert_no_5xx(code, answer)
    if not isinstance(payload, dict):
        assert code == 400


@FUZZ
@given(
    sample=st.sampled_from(SAMPLES),
    cut=st.integers(min_value=0, max_value=4000),
    flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6),
)
def test_truncated_and_mutated_github_payloads(daemon, sample, cut, flips):
    event, payload = sample
    raw = bytearray(json.dumps(payload).encode())
    for position, value in flips:
        raw[position % len(raw)] = value
    raw = bytes(raw[: max(1, cut)]) if cut < len(raw) else bytes(raw)
    body, headers = signed_github_request(event, raw, SECRET)
    code, answer = request(daemon, "POST", "/gate/GitHub/Acme", body, headers)
    assert_no_5xx(code, answer)


header_names = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters=":"),
    min_size=1,
    max_size=30,
)
header_values = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)


@FUZZ
@given(
    gate=st.sampled_from(["GitHub", "DockerHub", "Jenkins", "Phabricator", "Notification"]),
    door=st.text(
        alphabet=st.characters(min_codepoint=0x30, max_codepoint=0x7A), min_size=1, max_size=20
    ),
    headers=st.dictionaries(header_names, header_values, max_size=6),
    content_type=st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "text/plain", "x/y", ""]
    ),
    body=st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()),
)
def test_random_headers_bodies_and_doors(daemon, gate, door, headers, content_type, body):
    headers = {**headers, "Content-Type": content_type}
    headers.pop("Content-Length", None)
    headers.pop("Transfer-Encoding", None)
    headers.pop("Host", None)
    code, answer = request(daemon, "POST", f"/gate/{gate}/{door}", body, headers)
    assert_no_5xx(code, answer)


@FUZZ
@given(payload=payload_like | json_values)
def test_jenkins_and_notification_gates_with_any_json(daemon, payload):
    for path in ("/gate/Jenkins/Acme", "/gate/Notification/Acme", "/gate/DockerHub/Acme"):
        code, answer = request(
            daemon, "POST", path, json.dumps(payload).encode(), {"Content-Type": "application/json"}
        )
        assert_no_5xx(code, answer)
    code, answer = request(
        daemon,
        "POST",
        "/gate/Jenkins/Acme",
        json.dumps({**jenkins(), "build": payload}).encode(),
        {"Content-Type": "application/json"},
    )
    assert_no_5xx(code, answer)


def test_the_daemon_still_serves_after_the_fuzzing(daemon):
    assert http_status(daemon).endswith(b"\r\n\r\nALIVE")
