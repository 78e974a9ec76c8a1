"""Cases and checks shared by the gate tests: the GitHub events that both the
renderer's tests and the end-to-end gate tests assert, GitHub's documented
pull request actions, the walk through a payload's paths, the check of a
gate call that published one notification (and of a Phabricator one), and
the daemons started with their clients as ``makeService`` wires them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from twisted.internet import reactor
from twisted.internet.endpoints import TCP4ServerEndpoint

from notifications.clients import Clients, ClientsService, make_clients
from notifications.delivery import make_delivery
from notifications.gates import make_gates
from notifications.web import WebApp
from tests.conftest import Daemon, make_config, stop_daemon
from tests.helpers import assert_published, assert_report, notification
from tests.payloads import (
    GITHUB,
    SHA,
    github_create,
    github_default_branch,
    github_delete,
    github_fork,
    github_issue_comment,
    github_ping,
    github_push,
    github_repository,
    github_status,
    github_watch,
)

REPO = f"{GITHUB}/Acme/widgets"
COMPARE = github_push()["compare"]
COMMIT_URL = f"{REPO}/commit/{SHA}"
PR = "#42 — Make widgets spin forwards"
PR_URL = f"{REPO}/pull/42"
ISSUE = "#12 — Widgets spin backwards"
ISSUE_COMMENT_URL = f"{REPO}/issues/12#issuecomment-9001"
LONG_COMMENT = "This comment goes on and on " * 6  # 168 characters
LONG_COMMENT_CUT = LONG_COMMENT[:113] + "…"

#: The analyzer of the GitHub gate tests' door: ``GitHubCase.group`` is the
#: group it gives.
GITHUB_ANALYZER = {
    "administrativeGroup": "admin",
    "defaultGroup": "",
    "map": [
        {"group": "docker", "items": ["docker-*"]},
        {"group": "tools", "items": ["widgets"]},
    ],
}

#: GitHub's documented pull request actions: each has a text of its own.
GITHUB_PULL_REQUEST_ACTIONS = frozenset(
    {
        "assigned",
        "auto_merge_disabled",
        "auto_merge_enabled",
        "closed",
        "converted_to_draft",
        "demilestoned",
        "dequeued",
        "edited",
        "enqueued",
        "labeled",
        "locked",
        "milestoned",
        "opened",
        "ready_for_review",
        "reopened",
        "review_request_removed",
        "review_requested",
        "synchronize",
        "unassigned",
        "unlabeled",
        "unlocked",
    }
)


class GitHubCase(NamedTuple):
    """A GitHub event and the notification made of it: its text and link, its
    group under :data:`GITHUB_ANALYZER`, and its type when it is not the
    event's name."""

    name: str
    event: str
    payload: dict[str, Any]
    text: str
    link: str
    group: str = "tools"
    type_: str | None = None


#: The events the renderer's tests and the end-to-end gate tests both check,
#: written once so that the two agree on what each one gives.
GITHUB_CASES = [
    GitHubCase(
        "ping",
        "ping",
        github_ping(),
        "« Keep it logically awesome. » — GitHub Webhooks ping zen aphorism.",
        "",
        group="admin",
    ),
    GitHubCase(
        "push-1", "push", github_push(1), "alice committed Add the widget factory", COMMIT_URL
    ),
    GitHubCase(
        "push-1-authored-by",
        "push",
        github_push(1, committer="alice", author="bob"),
        "alice committed Add the widget factory (authored by bob)",
        COMMIT_URL,
    ),
    GitHubCase("push-0-master", "push", github_push(0), "alice forcely updated widgets", COMPARE),
    GitHubCase(
        "push-n-branch-0",
        "push",
        github_push(2, "refs/heads/0"),
        "alice pushed 2 commits to widgets (branch 0)",
        COMPARE,
    ),
    GitHubCase(
        "push-n-empty-ref", "push", github_push(2, ""), "alice pushed 2 commits to widgets", COMPARE
    ),
    GitHubCase(
        "push-n-no-repo-name",
        "push",
        github_push(2, "refs/heads/feature/x", repo=""),
        "alice pushed 2 commits to ",
        github_push(repo="")["compare"],
        group="acme",
    ),
    GitHubCase(
        "create-tag",
        "create",
        github_create("tag", "v1.0.0"),
        "New tag on Acme/widgets: v1.0.0",
        f"{REPO}/releases/tag/v1.0.0",
    ),
    GitHubCase(
        "create-branch",
        "create",
        github_create("branch", "feature/x"),
        "New branch on Acme/widgets: feature/x",
        f"{REPO}/tree/feature/x",
    ),
    GitHubCase(
        "create-other",
        "create",
        github_create("repository", "widgets"),
        "Unknown create reference: repository widgets",
        "",
    ),
    GitHubCase(
        "delete-branch",
        "delete",
        github_delete("branch", "feature/x"),
        "Removed branch on Acme/widgets: feature/x",
        f"{REPO}/branches",
    ),
    GitHubCase(
        "issue_comment-created",
        "issue_comment",
        github_issue_comment("created", "I can reproduce this."),
        f"alice added a comment to issue {ISSUE}: I can reproduce this.",
        ISSUE_COMMENT_URL,
    ),
    GitHubCase(
        "issue_comment-body-over-114",
        "issue_comment",
        github_issue_comment("created", LONG_COMMENT),
        f"alice added a comment to issue {ISSUE}: {LONG_COMMENT_CUT}",
        ISSUE_COMMENT_URL,
    ),
    GitHubCase(
        # GitHub now documents pinned and unpinned: an undocumented action here.
        "issue_comment-other",
        "issue_comment",
        github_issue_comment("frobnicated"),
        "Unknown issue comment action: frobnicated",
        ISSUE_COMMENT_URL,
    ),
    GitHubCase(
        "fork",
        "fork",
        github_fork("bob"),
        "Acme/widgets has been forked to bob/widgets",
        f"{GITHUB}/bob/widgets",
    ),
    # repository (administrative)
    GitHubCase(
        "repository-created",
        "repository",
        github_repository("created"),
        "New repository Acme/widgets",
        REPO,
        group="admin",
    ),
    GitHubCase(
        "repository-deleted-null-description",
        "repository",
        github_repository("deleted", description=None),
        "Repository Acme/widgets deleted (danger zone)",
        REPO,
        group="admin",
    ),
    GitHubCase(
        "repository-other",
        "repository",
        github_repository("frobnicated"),
        "Unknown repository action: frobnicated",
        REPO,
        group="admin",
    ),
    # default_branch: a repository event, told apart, grouped by repository
    GitHubCase(
        "default_branch",
        "repository",
        github_default_branch("main", "master"),
        "Acme/widgets default branch is now 'main' instead of 'master'.",
        REPO,
        type_="default_branch",
    ),
    GitHubCase(
        "status",
        "status",
        github_status("success"),
        "Status of 5f3c2a7e: ci/jenkins — The build succeeded — success",
        "https://ci.acme.test/job/widgets/7/",
    ),
    GitHubCase("watch", "watch", github_watch("bob"), "bob starred Acme/widgets", f"{GITHUB}/bob"),
]


def payload_paths(value, prefix=()):
    """Every path (keys and indexes) to a value inside a payload, deepest last."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from payload_paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield (*prefix, index)
            yield from payload_paths(item, (*prefix, index))


def changed(payload, path, value):
    """``payload`` with the value at ``path`` (keys and indexes) replaced."""
    target = payload
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return payload


def github_case(name: str) -> GitHubCase:
    """The case of :data:`GITHUB_CASES` called ``name``."""
    [case] = [case for case in GITHUB_CASES if case.name == name]
    return case


async def assert_call_published(
    response: Any,
    answer: bytes,
    consumer: Any,
    exchange: str,
    routing_key: str,
    expected: dict[str, Any],
    *,
    gate: str | None = None,
    door: str | None = None,
    message_id: str | None = None,
) -> Any:
    """Check a gate call that published one notification: a 200 answer whose
    report lists one published action under ``routing_key``, then
    ``expected`` consumed back from RabbitMQ with its AMQP properties.

    The report's gate and door are the notification's service and project
    unless given (a Notification call names a project of its own). Returns
    the raw message, for the checks a test adds.
    """
    assert response.code == 200, answer
    gate = expected["service"] if gate is None else gate
    door = expected["project"] if door is None else door
    assert_report(answer, gate, door, exchange, [routing_key])
    message, raw = await consumer.get()
    assert_published(message, raw, expected, routing_key, message_id=message_id)
    return raw


async def assert_phabricator_published(
    response: Any,
    answer: bytes,
    consumer: Any,
    exchange: str,
    raw_content: Any,
    type_: str,
    group: str,
    text: str,
    link: str = "",
) -> None:
    """Check a Phabricator call to the door Acme (a feed story or a Herald
    webhook) that published one notification: ``raw_content`` is what was
    posted, ``type_`` the object's type (lowercased in the routing key)."""
    key = f"acme.{group}.phabricator.{type_.lower()}"
    expected = notification(
        service="Phabricator",
        project="Acme",
        group=group,
        rawContent=raw_content,
        type=type_,
        text=text,
        link=link,
    )
    await assert_call_published(response, answer, consumer, exchange, key, expected)


@dataclass
class Center:
    """A daemon with its clients, as ``makeService`` builds it."""

    daemon: Daemon
    clients: Clients
    service: ClientsService
    app: WebApp

    async def post(self, path: str, body: bytes | dict, headers: dict | None = None):
        return await self.daemon.post(path, body, headers)


async def start_center(config, center_class=Center, service_status=None) -> Any:
    """Start the daemon of ``config`` as ``makeService`` wires it: its delivery
    connected to RabbitMQ, its clients given to the gates, ``service_status``
    the status ``/config`` shows (the gates' defaults without it). Returns a
    ``center_class``, :class:`Center` or a test's own with its shortcuts."""
    delivery = make_delivery(config, reactor)
    delivery.startService()
    await delivery.publisher.when_connected().addTimeout(10, reactor)
    clients = make_clients(config, reactor)
    service = ClientsService(clients)
    service.startService()
    gates = make_gates(config, **clients.gate_collaborators())
    app = WebApp(config, delivery.dispatcher, gates, reactor, service_status=service_status)
    port = await TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(app.site("all"))
    daemon = Daemon(f"http://127.0.0.1:{port.getHost().port}", config, delivery, port)
    return center_class(daemon, clients, service, app)


async def stop_center(center: Center) -> None:
    """Stop the daemon of ``center``, then its clients if still running."""
    await stop_daemon(center.daemon)
    if center.service.running:
        await center.service.stopService()


class Centers:
    """The centers a test starts, each on a configuration of its own written
    under ``tmp_path`` unless it is given one (a restart), and all stopped
    when the test ends: the body of a ``center_factory`` fixture.

    ``start``, given here, starts a center on a configuration as the test
    module wires it.
    """

    def __init__(self, tmp_path, broker, start) -> None:
        self.tmp_path = tmp_path
        self.broker = broker
        self.start_on = start
        self.started: list[Center] = []

    async def start(self, config=None, **config_values: Any) -> Any:
        """A started center; ``config_values`` are :func:`make_config`'s."""
        if config is None:
            directory = self.tmp_path / f"config{len(self.started)}"
            directory.mkdir()
            config = make_config(directory, self.broker, **config_values)
        center = await self.start_on(config)
        self.started.append(center)
        return center

    async def stop_all(self) -> None:
        for center in self.started:
            await stop_center(center)
