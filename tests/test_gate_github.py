"""The GitHub gate end to end: real HTTP in, the notification back from RabbitMQ
(docs/reference.rst §3.1, §4.1, §5)."""

from __future__ import annotations

import json
import uuid

import pytest
import pytest_twisted

from tests.gate_cases import (
    COMPARE,
    GITHUB_ANALYZER,
    GITHUB_CASES,
    ISSUE,
    ISSUE_COMMENT_URL,
    LONG_COMMENT,
    PR,
    PR_URL,
    REPO,
    GitHubCase,
    assert_call_published,
    github_case,
)
from tests.helpers import (
    assert_report,
    first_line,
    notification,
    raw_http,
    signed_github_request,
)
from tests.payloads import (
    GITHUB,
    SHA,
    github_commit_comment,
    github_default_branch,
    github_delete,
    github_issue_comment,
    github_ping,
    github_pull_request,
    github_push,
    github_repository,
    github_repository_object,
    github_status,
    github_watch,
)

SECRET = "s3cret"
UNAUTHORIZED = "Unauthorized action."
NOT_FOUND = "Not found."
GATE = "/gate/GitHub/Acme"
SERVICES = [
    {"gate": "GitHub", "door": "Acme", "secret": SECRET},
    {"gate": "GitHub", "door": "Bare"},
]
ANALYZER = GITHUB_ANALYZER
ALLOW_UNSIGNED = 'allow_unsigned = ["GitHub"]\n'

LONG_TITLE = "Spin " * 20  # 100 characters on the first line


def row(id_, event, payload, text, link, group="tools", type_=None):
    return pytest.param(GitHubCase(id_, event, payload, text, link, group, type_), id=id_)


EVENTS = [
    *(pytest.param(case, id=case.name) for case in GITHUB_CASES),
    # push
    row(
        "push-1-long-title",
        "push",
        github_push(1, message=LONG_TITLE + "\n\nWhy it spins."),
        "alice committed " + LONG_TITLE[:71] + "…",
        f"{REPO}/commit/{SHA}",
    ),
    row(
        "push-0-branch",
        "push",
        github_push(0, "refs/heads/feature/x", pusher="bob"),
        "bob forcely updated widgets (branch feature/x)",
        COMPARE,
    ),
    row(
        "push-n-master",
        "push",
        github_push(3),
        "alice pushed 3 commits to widgets",
        COMPARE,
    ),
    row(
        "push-n-branch",
        "push",
        github_push(2, "refs/heads/feature/x"),
        "alice pushed 2 commits to widgets (branch feature/x)",
        COMPARE,
    ),
    row(
        "push-n-docker-repo",
        "push",
        github_push(2, "refs/heads/main", repo="docker-nginx"),
        "alice pushed 2 commits to docker-nginx (branch main)",
        github_push(repo="docker-nginx")["compare"],
        group="docker",
    ),
    # create, delete
    row(
        "delete-tag",
        "delete",
        github_delete("tag", "v1.0.0"),
        "Removed tag on Acme/widgets: v1.0.0",
        f"{REPO}/tags",
    ),
    row(
        "delete-other",
        "delete",
        github_delete("repository", "widgets"),
        "Unknown delete reference: repository widgets",
        "",
    ),
    # comments
    row(
        "commit_comment",
        "commit_comment",
        github_commit_comment("Nice refactoring."),
        "alice added a comment to 5f3c2a7e: Nice refactoring.",
        f"{REPO}/commit/{SHA}#commitcomment-9001",
    ),
    row(
        "commit_comment-long",
        "commit_comment",
        github_commit_comment(LONG_COMMENT, login="bob"),
        "bob added a comment to 5f3c2a7e: " + LONG_COMMENT[:113] + "…",
        f"{REPO}/commit/{SHA}#commitcomment-9001",
    ),
    row(
        "issue_comment-edited-114",
        "issue_comment",
        github_issue_comment("edited", "y" * 114),
        f"alice edited a comment to issue {ISSUE}: " + "y" * 114,
        ISSUE_COMMENT_URL,
    ),
    row(
        "issue_comment-deleted",
        "issue_comment",
        github_issue_comment("deleted"),
        f"alice deleted a comment to issue {ISSUE}",
        ISSUE_COMMENT_URL,
    ),
    # pull_request
    row(
        "pull_request-opened",
        "pull_request",
        github_pull_request("opened"),
        f"alice has opened a pull request: {PR}",
        PR_URL,
    ),
    *(
        row(
            f"pull_request-{action}",
            "pull_request",
            github_pull_request(action, sender="bob"),
            f"bob has {action} the pull request {PR}",
            PR_URL,
        )
        for action in ("closed", "reopened", "edited", "labeled")
    ),
    row(
        "pull_request-unlabeled",
        "pull_request",
        github_pull_request("unlabeled"),
        f"alice has removed a label from the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request-assigned",
        "pull_request",
        github_pull_request("assigned", assignees=("bob", "carol")),
        f"alice has assigned the pull request {PR} to carol",
        PR_URL,
    ),
    row(
        "pull_request-unassigned",
        "pull_request",
        github_pull_request("unassigned"),
        f"alice has edited the assignees from the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request-undocumented",
        "pull_request",
        github_pull_request("frobnicated"),
        "Unknown pull request action: frobnicated",
        PR_URL,
    ),
    # repository (administrative)
    row(
        "repository-created-fork-description",
        "repository",
        github_repository("created", fork=True, description="Spinning widgets"),
        "New repository Acme/widgets (fork) — Spinning widgets",
        REPO,
        group="admin",
    ),
    row(
        "repository-publicized-fork",
        "repository",
        github_repository("publicized", fork=True),
        "Repository Acme/widgets is now public (fork)",
        REPO,
        group="admin",
    ),
    row(
        "repository-privatized-description",
        "repository",
        github_repository("privatized", description="Spinning widgets"),
        "Repository Acme/widgets is now private — Spinning widgets",
        REPO,
        group="admin",
    ),
    row(
        "repository-docker-name-still-administrative",
        "repository",
        github_repository("created", name="docker-nginx"),
        "New repository Acme/docker-nginx",
        f"{GITHUB}/Acme/docker-nginx",
        group="admin",
    ),
    # default_branch, grouped by repository
    row(
        "default_branch-docker",
        "repository",
        github_default_branch(
            "trunk",
            "main",
            repository=github_repository_object("docker-nginx", default_branch="trunk"),
        ),
        "Acme/docker-nginx default branch is now 'trunk' instead of 'main'.",
        f"{GITHUB}/Acme/docker-nginx",
        group="docker",
        type_="default_branch",
    ),
    # status
    row(
        "status-sparse",
        "status",
        github_status("failure", description=None, target_url=None),
        "Status of 5f3c2a7e: ci/jenkins — failure",
        "",
    ),
    # an event GitHub does not document
    row(
        "unknown-event",
        "made_up_event",
        {"action": "done", "repository": github_repository_object()},
        "Some made_up_event happened",
        "",
    ),
    row(
        "unknown-event-no-repository",
        "made_up_event",
        {"action": "done"},
        "Some made_up_event happened",
        "",
        group="acme",
    ),
]


async def github_daemon(daemon_factory, analyzer=ANALYZER, **kwargs):
    analyzers = {"GitHub": {"Acme": analyzer}} if analyzer is not None else None
    return await daemon_factory(services=SERVICES, analyzers=analyzers, **kwargs)


async def post(daemon, event, payload, secret=SECRET, door="Acme", **kwargs):
    body, headers = signed_github_request(event, payload, secret, **kwargs)
    return await daemon.post(f"/gate/GitHub/{door}", body, headers=headers)


async def assert_event_published(daemon, consumer, broker, case, door="Acme", **signing):
    """Post the payload of ``case`` as its GitHub event to ``door``, signed as
    ``signing`` asks (:func:`post`), and check the one notification it
    publishes: the door is its project, the call's delivery GUID its message
    id."""
    delivery = str(uuid.uuid4())
    response, answer = await post(
        daemon, case.event, case.payload, door=door, delivery=delivery, **signing
    )
    type_ = case.type_ or case.event
    key = f"{door.lower()}.{case.group}.github.{type_}"
    expected = notification(
        service="GitHub",
        project=door,
        group=case.group,
        rawContent=case.payload,
        type=type_,
        text=case.text,
        link=case.link,
    )
    await assert_call_published(
        response, answer, consumer, broker.exchange, key, expected, message_id=delivery
    )


@pytest.mark.parametrize("case", EVENTS)
@pytest_twisted.ensureDeferred
async def test_event_text_link_and_group(daemon_factory, consumer, broker, case):
    daemon = await github_daemon(daemon_factory)
    await assert_event_published(daemon, consumer, broker, case)


@pytest_twisted.ensureDeferred
async def test_pull_request_synchronize_has_its_own_text(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    response, answer = await post(daemon, "pull_request", github_pull_request("synchronize"))
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert message["text"].startswith("alice has ")
    assert PR in message["text"]
    assert message["link"] == PR_URL


# Groups ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("analyzer", "event", "payload", "group"),
    [
        pytest.param(None, "ping", github_ping(), "orgz", id="builtin-administrative"),
        pytest.param(None, "push", github_push(2), "acme", id="builtin-default-is-door"),
        pytest.param(
            ANALYZER,
            "membership",
            {"action": "added", "scope": "team", "repository": github_repository_object()},
            "admin",
            id="membership-administrative",
        ),
        pytest.param(
            ANALYZER, "push", github_push(2, repo="nginx-docker"), "acme", id="whole-name-match"
        ),
        pytest.param(ANALYZER, "push", github_push(2, repo="Widgets"), "acme", id="case-sensitive"),
        pytest.param(
            ANALYZER, "push", github_push(2, repo="docker-"), "docker", id="star-matches-empty"
        ),
        pytest.param({"defaultGroup": "dev"}, "push", github_push(2), "dev", id="explicit-default"),
        pytest.param(
            {"map": [{"group": "first", "items": ["w*"]}, {"group": "second", "items": ["*"]}]},
            "push",
            github_push(2),
            "first",
            id="first-mapping-wins",
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_group(daemon_factory, consumer, analyzer, event, payload, group):
    daemon = await github_daemon(daemon_factory, analyzer=analyzer)
    response, answer = await post(daemon, event, payload)
    assert response.code == 200, answer
    message, raw = await consumer.get()
    assert message["group"] == group
    assert raw.routing_key == f"acme.{group}.github.{event}"


# Signatures and doors -------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["sha1", "sha256", "both"])
@pytest_twisted.ensureDeferred
async def test_good_signature_is_accepted(daemon_factory, consumer, algorithm):
    daemon = await github_daemon(daemon_factory)
    response, answer = await post(daemon, "ping", github_ping(), algorithm=algorithm)
    assert response.code == 200, answer
    message, _ = await consumer.get()
    assert message["type"] == "ping"


def _with_bad(headers: dict, name: str, prefix: str) -> dict:
    return {**headers, name: prefix + "0" * (64 if prefix == "sha256=" else 40)}


@pytest.mark.parametrize(
    ("change", "status"),
    [
        pytest.param(
            lambda h: _with_bad(h, "X-Hub-Signature-256", "sha256="), 403, id="good-sha1-bad-sha256"
        ),
        pytest.param(
            lambda h: _with_bad(h, "X-Hub-Signature", "sha1="), 200, id="bad-sha1-good-sha256"
        ),
    ],
)
@pytest_twisted.ensureDeferred
async def test_sha256_is_the_one_checked(daemon_factory, consumer, change, status):
    daemon = await github_daemon(daemon_factory)
    body, headers = signed_github_request("ping", github_ping(), SECRET, algorithm="both")
    response, answer = await daemon.post(GATE, body, headers=change(headers))
    assert response.code == status, answer
    if status == 403:
        assert first_line(answer) == UNAUTHORIZED
        await consumer.expect_nothing()
    else:
        message, _ = await consumer.get()
        assert message["type"] == "ping"


@pytest_twisted.ensureDeferred
async def test_wrong_or_missing_signature_is_403(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    for secret, algorithm in [
        ("wrong", "sha256"),
        ("wrong", "sha1"),
        ("wrong", "both"),
        (SECRET.upper(), "sha256"),
        (None, "sha256"),
    ]:
        response, answer = await post(
            daemon, "ping", github_ping(), secret=secret, algorithm=algorithm
        )
        assert response.code == 403, (secret, algorithm)
        assert first_line(answer) == UNAUTHORIZED
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_signature_over_other_bytes_is_403(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    body, headers = signed_github_request("ping", github_ping(), SECRET)
    response, answer = await daemon.post(GATE, body + b" ", headers=headers)
    assert response.code == 403
    assert first_line(answer) == UNAUTHORIZED
    await consumer.expect_nothing()


@pytest.mark.parametrize(
    ("toml", "door", "secret", "status", "answer_line"),
    [
        pytest.param("", "Bare", None, 403, UNAUTHORIZED, id="door-without-secret"),
        # Signing with any secret does not help a door that has none.
        pytest.param("", "Bare", "anything", 403, UNAUTHORIZED, id="door-without-secret-signed"),
        pytest.param("", "Nobody", None, 404, NOT_FOUND, id="unknown-door"),
        pytest.param("", "Nobody", SECRET, 404, NOT_FOUND, id="unknown-door-signed"),
        # allow_unsigned still checks the secret of a door that has one.
        pytest.param(ALLOW_UNSIGNED, "Acme", None, 403, UNAUTHORIZED, id="allow-unsigned-no-sig"),
        pytest.param(ALLOW_UNSIGNED, "Acme", "wrong", 403, UNAUTHORIZED, id="allow-unsigned-wrong"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_door_refuses_the_call(
    daemon_factory, consumer, toml, door, secret, status, answer_line
):
    daemon = await github_daemon(daemon_factory, toml=toml)
    response, answer = await post(daemon, "ping", github_ping(), secret=secret, door=door)
    assert response.code == status
    assert first_line(answer) == answer_line
    await consumer.expect_nothing()


@pytest.mark.parametrize("door", ["Nobody", "Bare"])
@pytest_twisted.ensureDeferred
async def test_allow_unsigned_accepts_unknown_and_secretless_doors(
    daemon_factory, consumer, broker, door
):
    daemon = await github_daemon(daemon_factory, toml=ALLOW_UNSIGNED)
    assert daemon.config.allow_unsigned == frozenset({"GitHub"})
    case = GitHubCase(
        "push-n",
        "push",
        github_push(3),
        "alice pushed 3 commits to widgets",
        COMPARE,
        group=door.lower(),
    )
    await assert_event_published(daemon, consumer, broker, case, door=door, secret=None)


# Validity, checked after the signature ---------------------------------------


@pytest_twisted.ensureDeferred
async def test_signature_is_checked_before_validity(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    for event, payload in [(None, github_ping()), ("ping", b"{not json"), ("ping", [1])]:
        for secret in ("wrong", None):
            response, answer = await post(daemon, event, payload, secret=secret)
            assert response.code == 403, (event, payload, secret)
            assert first_line(answer) == UNAUTHORIZED
    await consumer.expect_nothing()


def _without(name):
    return lambda headers: {key: value for key, value in headers.items() if key != name}


@pytest_twisted.ensureDeferred
async def test_invalid_call_is_400(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    same = dict
    for name, payload, change in [
        ("no event header", github_ping(), _without("X-GitHub-Event")),
        ("no delivery header", github_ping(), _without("X-GitHub-Delivery")),
        ("empty event header", github_ping(), lambda h: {**h, "X-GitHub-Event": ""}),
        ("malformed JSON", b'{"zen": "Half', same),
        ("empty body", b"", same),
        ("JSON array", [github_ping()], same),
        ("JSON string", "zen", same),
    ]:
        body, headers = signed_github_request("ping", payload, SECRET)
        response, answer = await daemon.post(GATE, body, headers=change(headers))
        assert response.code == 400, (name, answer)
        assert first_line(answer) == "Bad request."
    await consumer.expect_nothing()


@pytest.mark.parametrize("algorithm", ["sha1", "sha256"])
@pytest_twisted.ensureDeferred
async def test_form_encoded_payload(daemon_factory, consumer, broker, algorithm):
    daemon = await github_daemon(daemon_factory)
    case = github_case("push-1-authored-by")
    body, _ = signed_github_request(
        case.event, case.payload, SECRET, algorithm=algorithm, form=True
    )
    assert body.startswith(b"payload=")
    await assert_event_published(daemon, consumer, broker, case, algorithm=algorithm, form=True)


@pytest_twisted.ensureDeferred
async def test_form_signed_over_the_json_only_is_403(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    _, json_headers = signed_github_request("ping", github_ping(), SECRET)
    form_body, form_headers = signed_github_request("ping", github_ping(), None, form=True)
    headers = {**form_headers, "X-Hub-Signature-256": json_headers["X-Hub-Signature-256"]}
    response, answer = await daemon.post(GATE, form_body, headers=headers)
    assert response.code == 403
    assert first_line(answer) == UNAUTHORIZED
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_header_names_are_case_insensitive(daemon_factory, consumer, broker):
    daemon = await github_daemon(daemon_factory)
    delivery = str(uuid.uuid4())
    body, headers = signed_github_request("ping", github_ping(), SECRET, delivery=delivery)
    status, answer = await raw_http(
        daemon.url,
        "POST",
        GATE,
        [
            ("content-TYPE", "application/json"),
            ("x-github-event", "ping"),
            ("X-GITHUB-DELIVERY", delivery),
            ("x-Hub-Signature-256", headers["X-Hub-Signature-256"]),
        ],
        body,
    )
    assert status == 200, answer
    assert_report(answer, "GitHub", "Acme", broker.exchange, ["acme.admin.github.ping"])
    message, raw = await consumer.get()
    assert message["text"] == "« Keep it logically awesome. » — GitHub Webhooks ping zen aphorism."
    assert raw.content.properties["message-id"] == delivery


@pytest_twisted.ensureDeferred
async def test_each_delivery_is_its_message_id(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    deliveries = [str(uuid.uuid4()) for _ in range(3)]
    for delivery in deliveries:
        response, answer = await post(daemon, "watch", github_watch(), delivery=delivery)
        assert response.code == 200, answer
    received = []
    for _ in deliveries:
        _, raw = await consumer.get()
        received.append(raw.content.properties["message-id"])
    assert received == deliveries


@pytest_twisted.ensureDeferred
async def test_report_is_json(daemon_factory, consumer):
    daemon = await github_daemon(daemon_factory)
    response, answer = await post(daemon, "watch", github_watch())
    assert response.code == 200
    assert response.headers.getRawHeaders(b"content-type") == [b"application/json"]
    assert json.loads(answer)["actions"][0]["routingKey"] == "acme.tools.github.watch"
    await consumer.get()


@pytest_twisted.ensureDeferred
async def test_duplicate_delivery_is_published_once(daemon_factory, consumer, broker):
    daemon = await github_daemon(daemon_factory)
    delivery = str(uuid.uuid4())
    response, answer = await post(daemon, "watch", github_watch(), delivery=delivery)
    assert response.code == 200, answer
    assert_report(answer, "GitHub", "Acme", broker.exchange, ["acme.tools.github.watch"])
    # GitHub's redelivery: same GUID, same body.
    response, answer = await post(daemon, "watch", github_watch(), delivery=delivery)
    assert response.code == 200, answer
    report = json.loads(answer)
    assert report["duplicate"] is True
    assert report["actions"] == []
    _, raw = await consumer.get()
    assert raw.content.properties["message-id"] == delivery
    await consumer.expect_nothing()


@pytest_twisted.ensureDeferred
async def test_ignored_events_answer_200_without_publishing(daemon_factory, consumer):
    analyzer = {**ANALYZER, "ignore": ["watch", "push:gh-readonly-queue/*", "pull_request:labeled"]}
    daemon = await github_daemon(daemon_factory, analyzer=analyzer)
    ignored = [
        ("watch", github_watch()),
        ("push", github_push(ref="refs/heads/gh-readonly-queue/main/pr-1")),
        ("pull_request", github_pull_request("labeled")),
    ]
    for event, payload in ignored:
        response, answer = await post(daemon, event, payload)
        assert response.code == 200, answer
        assert json.loads(answer)["actions"] == []
    await consumer.expect_nothing()
    # Not everything is silenced: another branch, another action.
    response, answer = await post(daemon, "push", github_push(ref="refs/heads/main"))
    assert json.loads(answer)["actions"][0]["status"] == "published"
    message, _ = await consumer.get()
    assert message["type"] == "push"
