"""GitHub texts, links, types, groups and ignore rules (docs/reference.rst §3.1, §4.1, §5)."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifications.analyzers import AnalyzerConfig, parse_analyzer
from notifications.renderers import github
from tests.gate_cases import (
    COMMIT_URL,
    COMPARE,
    GITHUB_CASES,
    GITHUB_PULL_REQUEST_ACTIONS,
    ISSUE,
    ISSUE_COMMENT_URL,
    LONG_COMMENT,
    LONG_COMMENT_CUT,
    PR,
    PR_URL,
    REPO,
    changed,
    payload_paths,
)
from tests.payloads import (
    SHA,
    github_commit_comment,
    github_create,
    github_default_branch,
    github_delete,
    github_fork,
    github_issue_comment,
    github_ping,
    github_pull_request,
    github_push,
    github_repository,
    github_status,
    github_user,
    github_watch,
)


def row(id_, event, payload, text, link, type_=None):
    return pytest.param(event, payload, type_ or event, text, link, id=id_)


TEXTS = [
    *(
        row(case.name, case.event, case.payload, case.text, case.link, case.type_)
        for case in GITHUB_CASES
    ),
    # push, one commit
    row(
        "push-1-other-branch-same-text",
        "push",
        github_push(1, "refs/heads/feature/x"),
        "alice committed Add the widget factory",
        COMMIT_URL,
    ),
    row(
        "push-1-title-first-line-cut-72",
        "push",
        github_push(1, message="W" * 80 + "\n\nSummary: long.\n"),
        "alice committed " + "W" * 71 + "…",
        COMMIT_URL,
    ),
    row(
        "push-1-committer-without-username",
        "push",
        github_push(1, committer=None, author="bob"),
        "Someone committed Add the widget factory (authored by bob)",
        COMMIT_URL,
    ),
    # push, no commit
    row(
        "push-0-branch",
        "push",
        github_push(0, "refs/heads/novolume", pusher="bob"),
        "bob forcely updated widgets (branch novolume)",
        COMPARE,
    ),
    row(
        # The issue asks for branch deletions to be told as such.
        "push-deleted-branch-no-head-commit",
        "push",
        github_push(0, "refs/heads/old", head_commit=None, deleted=True),
        "alice deleted branch old on widgets",
        f"{REPO}/branches",
    ),
    # push, several commits: where = repository + branch
    row(
        "push-n-master",
        "push",
        github_push(2),
        "alice pushed 2 commits to widgets",
        COMPARE,
    ),
    row(
        "push-n-feature-slash-x",
        "push",
        github_push(3, "refs/heads/feature/x"),
        "alice pushed 3 commits to widgets (branch feature/x)",
        COMPARE,
    ),
    row(
        "push-n-ref-without-prefix",
        "push",
        github_push(2, "0"),
        "alice pushed 2 commits to widgets (branch 0)",
        COMPARE,
    ),
    row(
        "push-n-ref-heads-only",
        "push",
        github_push(2, "refs/heads/"),
        "alice pushed 2 commits to widgets",
        COMPARE,
    ),
    row(
        "push-n-branch-master-elsewhere-kept",
        "push",
        github_push(2, "refs/heads/master2"),
        "alice pushed 2 commits to widgets (branch master2)",
        COMPARE,
    ),
    row(
        # The issue asks for tag pushes to be told as such.
        "push-tag",
        "push",
        github_push(2, "refs/tags/v1.0", created=True),
        "alice pushed tag v1.0 to widgets",
        f"{REPO}/releases/tag/v1.0",
    ),
    # create and delete
    row(
        "delete-tag",
        "delete",
        github_delete("tag", "v0.9"),
        "Removed tag on Acme/widgets: v0.9",
        f"{REPO}/tags",
    ),
    row(
        "delete-other",
        "delete",
        github_delete("note", "n1"),
        "Unknown delete reference: note n1",
        "",
    ),
    # comments
    row(
        "commit-comment",
        "commit_comment",
        github_commit_comment("Nice refactoring.", login="bob"),
        f"bob added a comment to {SHA[:8]}: Nice refactoring.",
        f"{COMMIT_URL}#commitcomment-9001",
    ),
    row(
        "commit-comment-body-over-114",
        "commit_comment",
        github_commit_comment(LONG_COMMENT),
        f"alice added a comment to {SHA[:8]}: {LONG_COMMENT_CUT}",
        f"{COMMIT_URL}#commitcomment-9001",
    ),
    row(
        "commit-comment-body-exactly-114",
        "commit_comment",
        github_commit_comment("b" * 114),
        f"alice added a comment to {SHA[:8]}: " + "b" * 114,
        f"{COMMIT_URL}#commitcomment-9001",
    ),
    row(
        "issue-comment-edited",
        "issue_comment",
        github_issue_comment("edited", "Fixed in master."),
        f"alice edited a comment to issue {ISSUE}: Fixed in master.",
        ISSUE_COMMENT_URL,
    ),
    row(
        "issue-comment-deleted",
        "issue_comment",
        github_issue_comment("deleted", "Oops."),
        f"alice deleted a comment to issue {ISSUE}",
        ISSUE_COMMENT_URL,
    ),
    # repository (administrative)
    row(
        "repository-deleted",
        "repository",
        github_repository("deleted"),
        "Repository Acme/widgets deleted (danger zone)",
        REPO,
    ),
    row(
        "repository-publicized",
        "repository",
        github_repository("publicized"),
        "Repository Acme/widgets is now public",
        REPO,
    ),
    row(
        "repository-privatized",
        "repository",
        github_repository("privatized"),
        "Repository Acme/widgets is now private",
        REPO,
    ),
    row(
        "repository-fork",
        "repository",
        github_repository("created", fork=True),
        "New repository Acme/widgets (fork)",
        REPO,
    ),
    row(
        "repository-description",
        "repository",
        github_repository("created", description="Widgets, spun right."),
        "New repository Acme/widgets — Widgets, spun right.",
        REPO,
    ),
    row(
        "repository-fork-and-description",
        "repository",
        github_repository("created", fork=True, description="Our copy."),
        "New repository Acme/widgets (fork) — Our copy.",
        REPO,
    ),
    row(
        # The issue asks for a text of its own for edited.
        "repository-edited-not-default-branch",
        "repository",
        github_repository("edited", changes={"description": {"from": ""}}),
        "Repository Acme/widgets edited by alice (description)",
        REPO,
    ),
    # status
    row(
        "status-null-description",
        "status",
        github_status("pending", description=None),
        f"Status of {SHA[:8]}: ci/jenkins — pending",
        "https://ci.acme.test/job/widgets/7/",
    ),
    row(
        "status-empty-context-and-description",
        "status",
        github_status("failure", context="", description=""),
        f"Status of {SHA[:8]}: failure",
        "https://ci.acme.test/job/widgets/7/",
    ),
    row(
        "status-all-parts-empty",
        "status",
        github_status("", context=None, description=None),
        f"Status of {SHA[:8]}: ",
        "https://ci.acme.test/job/widgets/7/",
    ),
    row(
        "status-null-target-url",
        "status",
        github_status("error", target_url=None),
        f"Status of {SHA[:8]}: ci/jenkins — The build succeeded — error",
        "",
    ),
    row("unknown-event", "frobnication", {"pages": []}, "Some frobnication happened", ""),
    row("unknown-event-empty-payload", "frobnication", {}, "Some frobnication happened", ""),
]


@pytest.mark.parametrize(("event", "payload", "type_", "text", "link"), TEXTS)
def test_render(event, payload, type_, text, link):
    assert github.render(event, payload) == (type_, text, link)


def pr(action, **kwargs):
    return github_pull_request(action, **kwargs)


PULL_REQUESTS = [
    # The older system's texts, byte for byte.
    ("opened", pr("opened"), f"alice has opened a pull request: {PR}"),
    ("closed", pr("closed"), f"alice has closed the pull request {PR}"),
    ("closed-merged", pr("closed", merged=True), f"alice has closed the pull request {PR}"),
    ("reopened", pr("reopened"), f"alice has reopened the pull request {PR}"),
    ("edited", pr("edited"), f"alice has edited the pull request {PR}"),
    ("labeled", pr("labeled"), f"alice has labeled the pull request {PR}"),
    ("unlabeled", pr("unlabeled"), f"alice has removed a label from the pull request {PR}"),
    (
        "assigned",
        pr("assigned", assignees=("bob", "carol")),
        f"alice has assigned the pull request {PR} to carol",
    ),
    (
        "assigned-without-list",
        pr("assigned", assignee=github_user("dave")),
        f"alice has assigned the pull request {PR} to dave",
    ),
    (
        "unassigned",
        pr("unassigned"),
        f"alice has edited the assignees from the pull request {PR}",
    ),
    # Actions GitHub added since.
    (
        "synchronize",
        pr("synchronize"),
        f"alice has pushed new commits to the pull request {PR}",
    ),
    (
        "ready_for_review",
        pr("ready_for_review"),
        f"alice has marked the pull request {PR} as ready for review",
    ),
    (
        "converted_to_draft",
        pr("converted_to_draft"),
        f"alice has converted the pull request {PR} to a draft",
    ),
    (
        "review_requested-user",
        pr("review_requested", requested_reviewer=github_user("bob")),
        f"alice has requested a review of the pull request {PR} from bob",
    ),
    (
        "review_requested-team",
        pr("review_requested", requested_team={"name": "reviewers", "slug": "reviewers"}),
        f"alice has requested a review of the pull request {PR} from reviewers",
    ),
    (
        "review_request_removed",
        pr("review_request_removed", requested_reviewer=github_user("bob")),
        f"alice has removed the review request for bob from the pull request {PR}",
    ),
    (
        "review_request_removed-nobody",
        pr("review_request_removed"),
        f"alice has removed a review request from the pull request {PR}",
    ),
    ("locked", pr("locked"), f"alice has locked the pull request {PR}"),
    ("unlocked", pr("unlocked"), f"alice has unlocked the pull request {PR}"),
    (
        "milestoned",
        pr("milestoned", milestone={"title": "1.0"}),
        f"alice has added the pull request {PR} to the milestone 1.0",
    ),
    (
        "demilestoned",
        pr("demilestoned", milestone={"title": "1.0"}),
        f"alice has removed the pull request {PR} from the milestone 1.0",
    ),
    (
        "auto_merge_enabled",
        pr("auto_merge_enabled"),
        f"alice has enabled auto-merge for the pull request {PR}",
    ),
    (
        "auto_merge_disabled",
        pr("auto_merge_disabled"),
        f"alice has disabled auto-merge for the pull request {PR}",
    ),
    ("enqueued", pr("enqueued"), f"alice has added the pull request {PR} to the merge queue"),
    (
        "dequeued",
        pr("dequeued"),
        f"alice has removed the pull request {PR} from the merge queue",
    ),
    ("undocumented", pr("frobnicated"), "Unknown pull request action: frobnicated"),
]


@pytest.mark.parametrize(
    ("payload", "text"),
    [pytest.param(payload, text, id=id_) for id_, payload, text in PULL_REQUESTS],
)
def test_render_pull_request(payload, text):
    assert github.render("pull_request", payload) == ("pull_request", text, PR_URL)


def test_every_documented_pull_request_action_has_its_own_text():
    for action in GITHUB_PULL_REQUEST_ACTIONS:
        _, text, _ = github.render("pull_request", pr(action))
        assert not text.startswith("Unknown"), action


def test_renderers_table_holds_the_spec_events():
    # The issue grows the table to every documented event (test_render_github_events).
    assert set(github.RENDERERS) >= {
        "ping",
        "push",
        "create",
        "delete",
        "commit_comment",
        "issue_comment",
        "fork",
        "pull_request",
        "repository",
        "default_branch",
        "status",
        "watch",
    }


# Event type normalisation ---------------------------------------------------


@pytest.mark.parametrize(
    ("event", "payload", "expected"),
    [
        ("repository", github_default_branch(), "default_branch"),
        ("repository", github_repository("edited"), "repository"),
        ("repository", github_repository("edited", changes={"name": {"from": "x"}}), "repository"),
        ("repository", github_repository("created", changes={"default_branch": {}}), "repository"),
        ("repository", github_repository("edited", changes=["default_branch"]), "repository"),
        ("push", github_default_branch(), "push"),
        ("repository", None, "repository"),
        ("repository", [], "repository"),
    ],
)
def test_event_type(event, payload, expected):
    assert github.event_type(event, payload) == expected


# Groups ---------------------------------------------------------------------

ANALYZER = parse_analyzer(
    {
        "administrativeGroup": "orgz",
        "defaultGroup": "",
        "map": [
            {"group": "docker", "items": ["docker-*"]},
            {"group": "ops", "items": ["widgets", "ops-*"]},
        ],
    }
)


@pytest.mark.parametrize(
    ("type_", "payload", "analyzer", "expected"),
    [
        pytest.param("ping", github_ping(), ANALYZER, "orgz", id="ping-administrative"),
        pytest.param(
            "repository", github_repository(), ANALYZER, "orgz", id="repository-administrative"
        ),
        pytest.param(
            "repository",
            github_repository(name="docker-nginx"),
            ANALYZER,
            "orgz",
            id="repository-administrative-even-when-mapped",
        ),
        pytest.param("membership", {}, ANALYZER, "orgz", id="membership"),
        pytest.param("organization", {}, ANALYZER, "orgz", id="organization"),
        pytest.param("team", {}, ANALYZER, "orgz", id="team"),
        pytest.param(
            "repository",
            github_repository(),
            AnalyzerConfig(administrative_group="admin"),
            "admin",
            id="custom-administrative-group",
        ),
        pytest.param(
            "default_branch",
            github_repository(name="docker-nginx"),
            ANALYZER,
            "docker",
            id="default-branch-by-repository",
        ),
        pytest.param(
            "push", github_push(repo="docker-nginx"), ANALYZER, "docker", id="pattern-docker-*"
        ),
        pytest.param(
            "push", github_push(repo="docker-"), ANALYZER, "docker", id="pattern-empty-star"
        ),
        pytest.param(
            "push", github_push(repo="mydocker-x"), ANALYZER, "acme", id="pattern-whole-name"
        ),
        pytest.param(
            "push", github_push(repo="Docker-nginx"), ANALYZER, "acme", id="pattern-case-sensitive"
        ),
        pytest.param("push", github_push(repo="widgets"), ANALYZER, "ops", id="exact-item"),
        pytest.param("status", github_status(), ANALYZER, "ops", id="status-by-repository"),
        pytest.param(
            "push", github_push(repo="gadgets"), ANALYZER, "acme", id="default-lowercased-door"
        ),
        pytest.param(
            "push",
            github_push(repo="gadgets"),
            AnalyzerConfig(default_group="dev"),
            "dev",
            id="default-group-set",
        ),
        pytest.param("gollum", {"pages": []}, ANALYZER, "acme", id="no-repository"),
        pytest.param("push", github_push(repo=""), ANALYZER, "acme", id="empty-repository-name"),
        pytest.param("push", {"repository": []}, ANALYZER, "acme", id="odd-repository"),
        pytest.param("push", None, ANALYZER, "acme", id="no-payload"),
    ],
)
def test_group(type_, payload, analyzer, expected):
    assert github.group(type_, payload, analyzer, "Acme") == expected


def test_default_branch_is_not_administrative():
    assert "default_branch" not in github.ADMINISTRATIVE_EVENTS
    assert {"membership", "ping", "repository"} <= github.ADMINISTRATIVE_EVENTS


# Ignore rules ---------------------------------------------------------------

IGNORING = AnalyzerConfig(
    ignore=("watch", "pull_request:labeled", "push:dependabot/*", "push:gh-pages")
)


@pytest.mark.parametrize(
    ("type_", "payload", "expected"),
    [
        pytest.param("watch", github_watch(), True, id="whole-event"),
        pytest.param("pull_request", pr("labeled"), True, id="event-action"),
        pytest.param("pull_request", pr("unlabeled"), False, id="other-action"),
        pytest.param(
            "push", github_push(2, "refs/heads/dependabot/npm/left-pad"), True, id="push-pattern"
        ),
        pytest.param("push", github_push(2, "refs/heads/gh-pages"), True, id="push-exact"),
        pytest.param("push", github_push(2, "refs/heads/gh-pages-2"), False, id="push-whole-name"),
        pytest.param("push", github_push(2, "refs/heads/master"), False, id="push-not-listed"),
        pytest.param(
            "push", github_push(2, "refs/heads/x/dependabot/y"), False, id="push-anchored"
        ),
        pytest.param("status", github_status(), False, id="other-event"),
        pytest.param("push", None, False, id="odd-payload"),
        pytest.param("pull_request", {"action": ["labeled"]}, False, id="odd-action"),
    ],
)
def test_is_ignored(type_, payload, expected):
    assert github.is_ignored(type_, payload, IGNORING) is expected


def test_nothing_is_ignored_by_default():
    assert not github.is_ignored("watch", github_watch(), AnalyzerConfig())


def test_action_pattern():
    analyzer = AnalyzerConfig(ignore=("pull_request:review_*",))
    assert github.is_ignored("pull_request", pr("review_requested"), analyzer)
    assert not github.is_ignored("pull_request", pr("opened"), analyzer)


# Garbage never raises ---------------------------------------------------------

BUILDERS = {
    "ping": github_ping,
    "push": lambda: github_push(1, committer="alice", author="bob"),
    "push0": lambda: github_push(0, "refs/heads/feature"),
    "pushn": lambda: github_push(3, "refs/heads/feature"),
    "create": github_create,
    "delete": github_delete,
    "commit_comment": github_commit_comment,
    "issue_comment": github_issue_comment,
    "fork": github_fork,
    "pull_request": lambda: pr("assigned", assignees=("bob",), milestone={"title": "1.0"}),
    "repository": lambda: github_repository("created", fork=True, description="d"),
    "default_branch": github_default_branch,
    "status": github_status,
    "watch": github_watch,
}
EVENTS = sorted({*github.RENDERERS, "gollum"})
ODD_VALUES = [None, [], {}, 7, 1.5, True, "", "x", [1, "a"], {"a": None}]


def event_of(name):
    if name.startswith("push"):
        return "push"
    return "repository" if name == "default_branch" else name


def replaced(payload, path, value):
    return changed(copy.deepcopy(payload), path, value)


def assert_sane(event, result):
    type_, text, link = result
    assert isinstance(type_, str) and isinstance(text, str) and isinstance(link, str)
    assert text, "a notification always says something"
    # An odd value may show in a text as a number, never as a Python repr.
    for leak in ("None", "True", "False", "{", "["):
        assert leak not in text, text


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("payload", [None, [], 42, "push", {}, {"repository": None}, [{}]])
def test_garbage_payload_gives_the_fallback(event, payload):
    type_, text, link = github.render(event, payload)
    assert (type_, text, link) == (event, f"Some {event} happened", "")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_odd_value_anywhere_gives_a_sane_text(name):
    event = event_of(name)
    original = BUILDERS[name]()
    for path in payload_paths(original):
        for value in ODD_VALUES:
            result = github.render(event, replaced(original, path, value))
            assert_sane(event, result)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_missing_key_gives_a_sane_text(name):
    event = event_of(name)
    original = BUILDERS[name]()
    for path in payload_paths(original):
        payload = copy.deepcopy(original)
        target = payload
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
        assert_sane(event, github.render(event, payload))


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("push", {"commits": [{}], "head_commit": None}),
        ("push", {"commits": "three", "pusher": {"name": "alice"}}),
        ("push", {"commits": [], "pusher": {"name": None}}),
        ("push", {"commits": [{}], "head_commit": {"committer": {}, "message": "m"}}),
        ("pull_request", {"action": None}),
        ("pull_request", {"action": "opened", "sender": {"login": "a"}, "number": 1}),
        ("issue_comment", {"action": "created", "comment": "hello"}),
        ("status", {"sha": None}),
        ("ping", {"zen": {"text": "hi"}}),
        ("create", {"ref_type": "tag", "ref": "v1", "repository": "Acme/widgets"}),
    ],
)
def test_unreadable_payload_gives_the_fallback(event, payload):
    assert github.render(event, payload) == (event, f"Some {event} happened", "")


def test_fields_as_numbers_are_read_as_text():
    payload = github_push(2, "refs/heads/feature", pusher="alice")
    payload["pusher"]["name"] = 1234
    assert github.render("push", payload)[1] == "1234 pushed 2 commits to widgets (branch feature)"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "action",
        "ref",
        "ref_type",
        "commits",
        "head_commit",
        "pusher",
        "repository",
        "comment",
        "issue",
        "number",
        "pull_request",
        "sender",
        "forkee",
        "changes",
        "zen",
        "sha",
        "context",
        "description",
        "state",
        "target_url",
        "compare",
    ]
)


@settings(max_examples=300, deadline=None)
@given(event=st.sampled_from(EVENTS), payload=JSON | st.dictionaries(KEYS, JSON, max_size=8))
def test_render_never_raises(event, payload):
    type_, text, link = github.render(event, payload)
    assert isinstance(text, str) and text
    assert isinstance(link, str)
    assert isinstance(github.group(type_, payload, ANALYZER, "Acme"), str)
    assert isinstance(github.is_ignored(type_, payload, IGNORING), bool)
