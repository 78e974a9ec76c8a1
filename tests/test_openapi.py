"""The OpenAPI document (``GET /openapi.json``) against the daemon.

The document must be valid OpenAPI, list every gate and every route, be
served by the daemon as is, and describe every answer: schemathesis
generates calls from it against a daemon running as a process (its HTTP
calls block: they must not run in the test's reactor) and checks that no
answer is a 5xx or contradicts the document (status code, content type,
headers, body schema).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter

import pytest
import pytest_twisted
import treq
from hypothesis import HealthCheck, Phase, given, settings

from notifications.gates import gate_names
from notifications.openapi import OPENAPI_VERSION, OpenAPIResource, document
from notifications.outbox import OutboxFull
from notifications.report import amqp_action, make_report, report_status, side_action
from tests.conftest import make_config, test_broker
from tests.helpers import unavailable
from tests.processes import running_twistd

#: Every route of the HTTP surface besides the gates (README, "HTTP surface").
ROUTES = (
    "/",
    "/status",
    "/status.json",
    "/health",
    "/config",
    "/metrics",
    "/openapi.json",
    "/events",
)

#: The checks every schemathesis call runs (by name, looked up in schemathesis.checks).
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
)


def import_schemathesis():
    """schemathesis; without it, fail on CI (the check must run there), else skip."""
    try:
        import schemathesis
    except ImportError:
        unavailable("schemathesis is not installed: pip install -e '.[test]'")
    return schemathesis


@pytest.fixture(scope="module")
def schemathesis():
    module = import_schemathesis()

    # Error answers and /status are text/plain: validate them against their schemas
    # too (schemathesis only reads JSON and YAML bodies by itself).
    @module.deserializer("text/plain")
    def plain_text(_context, response):
        return response.content.decode("utf-8")

    return module


def test_missing_schemathesis_fails_on_ci(monkeypatch):
    monkeypatch.setitem(sys.modules, "schemathesis", None)  # import raises ImportError
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="schemathesis"):
        import_schemathesis()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="schemathesis"):
        import_schemathesis()


# --- the document -------------------------------------------------------------------------


def test_the_document_is_valid_openapi(schemathesis):
    value = document()
    assert value["openapi"] == OPENAPI_VERSION
    json.dumps(value, allow_nan=False)  # plain JSON
    schema = schemathesis.openapi.from_dict(value)
    schema.validate()  # against the OpenAPI 3.0 meta-schema; raises when invalid
    for result in schema.get_all_operations():
        result.ok()  # every operation resolves (references, parameters)


def test_a_broken_document_is_refused(schemathesis):
    # The validation above is not a no-op.
    broken = document()
    broken["paths"]["/status"]["get"]["responses"]["200"]["content"] = []
    with pytest.raises(Exception, match="content"):
        schemathesis.openapi.from_dict(broken).validate()


def test_the_document_lists_every_gate_and_route():
    paths = document()["paths"]
    for route in ROUTES:
        assert "get" in paths[route], route
    for gate in gate_names():
        door = paths[f"/gate/{gate}/{{door}}"]
        assert set(door) == {"get", "post"}, gate
        assert set(door["post"]["responses"]) >= {"200", "400", "413", "415", "503"}, gate
        assert "405" in door["get"]["responses"], gate
        assert set(paths[f"/gate/{gate}/"]) == {"get"}, gate
    gate_paths = {path for path in paths if path.startswith("/gate/")}
    assert gate_paths == {
        f"/gate/{gate}/{suffix}" for gate in gate_names() for suffix in ("", "{door}")
    }


def test_the_document_is_plain_data_built_anew():
    first = document()
    first["paths"].clear()
    assert document()["paths"]


class ServiceTimeout(Exception):
    """Stands for a side action's error (only its class name and message are reported)."""


#: Reports the generated calls never get (side actions, failures), built with
#: notifications.report as the daemon builds them: (gate, actions).
REPORTS = [
    (
        "GitHub",
        [
            amqp_action("notifications", "acme.widgets.github.push", status="published"),
            side_action("NotifyNewCommitsAction", callSign="WDG"),
            side_action("TriggerDockerHubBuildAction", image="acme/widgets"),
        ],
    ),
    (
        "GitHub",
        [
            amqp_action("notifications", "acme.widgets.github.push", status="queued"),
            side_action(
                "NotifyNewCommitsAction", ServiceTimeout("Conduit timed out"), callSign=None
            ),
            side_action("TriggerDockerHubBuildAction", ServiceTimeout("no answer"), image="a/w"),
        ],
    ),
    (
        "DockerHub",
        [
            side_action(
                "MailgunAction",
                ServiceTimeout("no answer"),
                method="GET",
                target="https://api.mailgun.net",
            )
        ],
    ),
    (
        "DockerHub",
        [
            amqp_action("notifications", "acme.docker.dockerhub.buildfailure", status="published"),
            side_action("MailgunAction", method="GET", target="https://api.mailgun.net"),
        ],
    ),
    ("Jenkins", []),
    ("Notification", [amqp_action("notifications", "acme.ops.cron.backup", OutboxFull("full"))]),
    (
        "Phabricator",
        [amqp_action("notifications", "acme.acme.phabricator.task", OutboxFull("full"))],
    ),
]


@pytest.mark.parametrize(("gate", "actions"), REPORTS)
def test_reports_with_side_actions_and_errors_match_the_document(schemathesis, gate, actions):
    import requests

    request_id = "0123456789abcdef"
    report = make_report(
        gate if gate != "Notification" else "Cron", DOOR, 1795855255, actions, request_id
    )
    status = report_status(report["actions"])
    operation = schemathesis.openapi.from_dict(document())[f"/gate/{gate}/{{door}}"]["POST"]
    case = operation.Case(path_parameters={"door": DOOR}, body={}, media_type="application/json")
    response = schemathesis.Response(
        status_code=status,
        headers={"content-type": ["application/json"], "x-request-id": [request_id]},
        content=json.dumps(report).encode(),
        request=requests.Request("POST", f"http://127.0.0.1/gate/{gate}/{DOOR}").prepare(),
        elapsed=0.0,
        verify=False,
    )
    # A 503 is a documented answer here: every check but not_a_server_error.
    checks = [getattr(schemathesis.checks, name) for name in CHECKS if name != "not_a_server_error"]
    case.validate_response(response, checks=checks)


# --- served by the daemon -------------------------------------------------------------------


async def fetch(url: str):
    response = await treq.get(url)
    return response, await response.content()


@pytest_twisted.ensureDeferred
async def test_the_daemon_serves_the_document(daemon_factory):
    """Fails until make_site puts OpenAPIResource at /openapi.json."""
    daemon = await daemon_factory()
    response, body = await fetch(daemon.url + "/openapi.json")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(body) == document()


@pytest_twisted.ensureDeferred
async def test_every_route_of_the_site_is_documented(daemon_factory):
    daemon = await daemon_factory()
    root = daemon.port.factory.resource
    paths = document()["paths"]
    for name in root.children:
        route = "/" + name.decode()
        assert route in paths or any(path.startswith(route + "/") for path in paths), route
    assert set(root.children[b"gate"].gates) == set(gate_names())


@pytest_twisted.ensureDeferred
async def test_the_resource(daemon_factory):
    """OpenAPIResource itself, put on a site by hand (whatever make_site does)."""
    daemon = await daemon_factory()
    daemon.port.factory.resource.putChild(b"openapi.json", OpenAPIResource())
    response, body = await fetch(daemon.url + "/openapi.json")
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(body) == document()
    response, _ = await fetch(daemon.url + "/openapi.json/more")
    assert response.code == 404


# --- schemathesis against a running daemon ----------------------------------------------------

#: The doors of the daemons below.
DOOR = "Acme"
SECRET = "openapi-door-secret"
MAX_BODY_SIZE = 8192

#: The token of the open daemon's consumer (its archive is off: /events is 503 there).
CONSUMER_TOKEN = "openapi-consumer-token-0123"

#: Doors open to anyone: a GitHub door without a secret and unsigned calls
#: allowed, open Docker Hub, Jenkins and Notification doors, a Phabricator
#: instance; every feature on.
OPEN = {
    "services": [
        {"gate": "GitHub", "door": DOOR},
        {"gate": "DockerHub", "door": DOOR},
        {"gate": "Jenkins", "door": DOOR},
        {"gate": "Notification", "door": DOOR},
        {"gate": "Phabricator", "door": DOOR, "instance": "https://phabricator.invalid"},
    ],
    "toml": 'allow_unsigned = ["GitHub"]\npublish_timeout = 0.5\n'
    f"max_body_size = {MAX_BODY_SIZE}\n"
    f'\n[[consumers]]\nname = "schema"\ntoken = "{CONSUMER_TOKEN}"\npatterns = ["acme.#"]\n',
}
#: Doors with secrets, unsigned GitHub calls refused, no actions report, no /config.
LOCKED = {
    "services": [
        {"gate": "GitHub", "door": DOOR, "secret": SECRET},
        {"gate": "DockerHub", "door": DOOR, "secret": SECRET},
        {"gate": "Jenkins", "door": DOOR, "secret": SECRET},
        {"gate": "Notification", "door": DOOR, "secret": SECRET},
    ],
    "toml": "publish_timeout = 0.5\n[features]\nActionsReport = false\nGetConfig = false\n",
}

#: Examples per operation and generation mode (operations without parameters
#: have one possible call, which hypothesis makes once), bounded so that the
#: whole file runs in about 30 s; OPENAPI_EXAMPLES=<n> searches longer.
EXAMPLES = {
    "open": int(os.environ.get("OPENAPI_EXAMPLES", 60)),
    "locked": int(os.environ.get("OPENAPI_EXAMPLES", 25)),
}


@pytest.fixture(scope="module", params=["open", "locked"])
def daemon_process(request, tmp_path_factory):
    """``(setup name, base URL)`` of a daemon run as a process (the calls here block)."""
    directory = tmp_path_factory.mktemp(request.param)
    setup = OPEN if request.param == "open" else LOCKED
    make_config(directory, test_broker(), **setup)
    # A 5xx that slipped through (or a crash beside a call) leaves a traceback.
    with running_twistd(directory) as daemon:
        yield request.param, daemon.url


def run_operation(operation, mode, path_parameters, examples: int, call) -> Counter[int]:
    """Generate calls to one operation, make and check each; the status codes seen.

    Raises the first failure (after hypothesis shrank it).
    """
    codes: Counter[int] = Counter()

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )
    @given(case=operation.as_strategy(mode, path_parameters=path_parameters))
    def check(case):
        codes[call(case)] += 1

    check()
    return codes


def run_schemathesis(schemathesis, base_url: str, runs) -> tuple[list[str], list[str]]:
    """Run each (operation, generation mode, fixed path parameters, examples) of ``runs``.

    Returns the summary lines and the failures, one text per failed run: a run
    stops at its first failure, the others go on.
    """
    import requests

    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    session = requests.Session()

    def call(case) -> int:
        response = case.call(base_url=base_url, session=session, timeout=10)
        case.validate_response(response, checks=checks)
        return response.status_code

    summary, failures = [], []
    for operation, mode, path_parameters, examples in runs:
        label = f"{operation.label} [{mode.value}" + (f" door={DOOR}]" if path_parameters else "]")
        try:
            codes = run_operation(operation, mode, path_parameters, examples, call)
        # schemathesis' FailureGroup is a BaseExceptionGroup: catch it too, report all at the end.
        except (Exception, BaseExceptionGroup) as error:
            failures.append(f"{label}: {type(error).__name__}: {error}")
            continue
        answers = ", ".join(f"{code}×{count}" for code, count in sorted(codes.items()))
        summary.append(f"{label}: {codes.total()} calls ({answers})")
    session.close()
    return summary, failures


def test_schemathesis_finds_no_answer_contradicting_the_document(schemathesis, daemon_process):
    setup, base_url = daemon_process
    started = time.monotonic()
    schema = schemathesis.openapi.from_dict(document())
    modes = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
    runs = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/openapi.json":
            continue  # test_the_daemon_serves_the_document checks it, byte for byte
        gate_call = operation.method.upper() == "POST"
        for mode in modes if gate_call else modes[:1]:
            runs.append((operation, mode, None, EXAMPLES[setup]))
            # Calls to the declared doors too, not only to random ones.
            if gate_call and mode is modes[0]:
                runs.append((operation, mode, {"door": DOOR}, EXAMPLES[setup]))
    summary, failures = run_schemathesis(schemathesis, base_url, runs)
    report = "\n".join(summary)
    print(f"\nschemathesis ({setup}), {time.monotonic() - started:.1f} s:\n{report}")
    assert not failures, "\n\n".join(failures)


def gate_case(schemathesis, gate: str, **changes):
    """A call to a gate's declared door, valid but for ``changes``."""
    operation = schemathesis.openapi.from_dict(document())[f"/gate/{gate}/{{door}}"]["POST"]
    headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "f00"} if gate == "GitHub" else {}
    bodies = {
        "GitHub": {"zen": "Keep it logically awesome.", "hook_id": 1},
        "DockerHub": {"repository": {"repo_url": "https://hub.docker.com/r/a/b"}},
        "Jenkins": {"name": "widgets", "build": {"phase": "STARTED"}},
        "Phabricator": {"storyText": "alice closed T1."},
        "Notification": {"service": "Cron", "group": "ops", "type": "backup"},
    }
    arguments = {
        "path_parameters": {"door": DOOR},
        "headers": headers,
        "body": bodies[gate],
        "media_type": "application/json",
    }
    for name, value in changes.items():
        arguments[name] = {**arguments[name], **value} if name == "headers" else value
    return operation.Case(**arguments)


#: Calls the generated ones do not make: (name, changes, expected status in the open setup).
EDGES = [
    (
        "a content type no gate reads",
        {
            "body": b"\x00\x01",
            "media_type": "application/octet-stream",
            "headers": {"Content-Type": "application/octet-stream"},
        },
        415,
    ),
    ("a body over max_body_size", {"body": {"text": "x" * MAX_BODY_SIZE}}, 413),
    ("a header line over 16 KiB", {"headers": {"X-Padding": "x" * 20000}}, 431),
]


@pytest.mark.parametrize("gate", gate_names())
@pytest.mark.parametrize(("edge", "changes", "expected"), EDGES, ids=[e[0] for e in EDGES])
def test_limit_answers_match_the_document(
    schemathesis, daemon_process, gate, edge, changes, expected
):
    setup, base_url = daemon_process
    case = gate_case(schemathesis, gate, **changes)
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    response = case.call(base_url=base_url, timeout=10)
    case.validate_response(response, checks=checks)
    if setup == "open":
        assert response.status_code == expected, response.text


@pytest.fixture(scope="module")
def open_daemon_for_bugs(tmp_path_factory):
    """An open daemon of its own, whose log may hold the tracebacks of known bugs."""
    directory = tmp_path_factory.mktemp("bugs")
    make_config(directory, test_broker(), **OPEN)
    with running_twistd(directory, clean=False) as daemon:
        yield daemon.url


@pytest.mark.parametrize("gate", gate_names())
def test_a_lone_surrogate_in_a_json_body_is_no_5xx(schemathesis, open_daemon_for_bugs, gate):
    field = {
        "GitHub": "zen",
        "DockerHub": "repo",
        "Jenkins": "name",
        "Phabricator": "storyText",
        "Notification": "text",
    }[gate]
    body = gate_case(schemathesis, gate).body
    raw = json.dumps({**body, field: "\ud800"}).encode()  # "\\ud800": valid JSON syntax
    case = gate_case(
        schemathesis,
        gate,
        body=raw,
        media_type="application/octet-stream",
        headers={"Content-Type": "application/json"},
    )
    checks = [getattr(schemathesis.checks, name) for name in CHECKS]
    case.validate_response(case.call(base_url=open_daemon_for_bugs, timeout=10), checks=checks)


#: Calls to /events with the consumer's token: (query, headers, expected status).
EVENT_CALLS = [
    ({"pattern": ["acme.de*"]}, {}, 400),
    ({}, {"Last-Event-ID": "yesterday"}, 400),
    ({"pattern": ["#"]}, {}, 403),
    ({"pattern": ["acme.#"]}, {}, 503),  # the archive is off in these tests
    ({}, {"Authorization": "Bearer wrong-token"}, 401),
]


@pytest.fixture(scope="module")
def open_daemon(tmp_path_factory):
    """The open setup's daemon (with its consumer), once for the module."""
    directory = tmp_path_factory.mktemp("events")
    make_config(directory, test_broker(), **OPEN)
    with running_twistd(directory) as daemon:
        yield daemon.url


@pytest.mark.parametrize(("query", "headers", "expected"), EVENT_CALLS)
def test_event_refusals_match_the_document(schemathesis, open_daemon, query, headers, expected):
    base_url = open_daemon
    operation = schemathesis.openapi.from_dict(document())["/events"]["GET"]
    case = operation.Case(
        query=query, headers={"Authorization": f"Bearer {CONSUMER_TOKEN}", **headers}
    )
    response = case.call(base_url=base_url, timeout=10)
    checks = [getattr(schemathesis.checks, name) for name in CHECKS if name != "not_a_server_error"]
    case.validate_response(response, checks=checks)
    assert response.status_code == expected, response.text
