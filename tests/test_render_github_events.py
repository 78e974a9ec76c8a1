"""Every GitHub webhook event and action: texts, links, groups, ignore rules
(docs/reference.rst §4.1, §5).

Each row names an event and an action (or a case of an event without
actions) and asserts the exact text and link. The list of events and actions
GitHub documents is written out below, so that a row missing for one of them
fails a test rather than going unnoticed.
"""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.logger import LogLevel, capturedLogs

from notifications.analyzers import AnalyzerConfig, parse_analyzer
from notifications.renderers import github
from tests.gate_cases import GITHUB_PULL_REQUEST_ACTIONS, changed, payload_paths
from tests.payloads import (
    GITHUB,
    OTHER_SHA,
    SHA,
    github_comment,
    github_commit_comment,
    github_create,
    github_default_branch,
    github_delete,
    github_event,
    github_fork,
    github_installation,
    github_issue_comment,
    github_issue_object,
    github_ping,
    github_pull_request,
    github_pull_request_object,
    github_push,
    github_repository,
    github_repository_object,
    github_status,
    github_team,
    github_user,
    github_watch,
)

REPO = f"{GITHUB}/Acme/widgets"
SHORT = SHA[:8]
COMPARE = github_push()["compare"]
ISSUE = "#12 — Widgets spin backwards"
ISSUE_URL = f"{REPO}/issues/12"
SUB = "#13 — Fix the spin direction"
SUB_URL = f"{REPO}/issues/13"
PR = "#42 — Make widgets spin forwards"
PR_URL = f"{REPO}/pull/42"
DISCUSSION = "#7 — How fast should widgets spin?"
DISCUSSION_URL = f"{REPO}/discussions/7"
LONG = "word " * 40  # 200 characters, 199 once its whitespace is folded
LONG_CUT = ("word " * 23)[:113] + "…"
TEAM_URL = f"{GITHUB}/orgs/Acme/teams/owners"
COMMIT_URL = f"{REPO}/commit/{SHA}"
ISSUE_COMMENT_URL = f"{ISSUE_URL}#issuecomment-9001"
DISCUSSION_COMMENT_URL = f"{DISCUSSION_URL}#discussioncomment-9001"
JOB = "Job test of the workflow CI on Acme/widgets (branch master)"
DEPLOYMENT = "Deployment of Acme/widgets at master to production"
MERGE_GROUP = f"Merge group {SHORT} of Acme/widgets (branch master)"
QUEUE_URL = f"{REPO}/queue/master"
VULNERABILITY = "lodash — GHSA-35jh-r3h4-6jhm"
STATUS_UPDATE = "at risk — Spinning slower than planned."
INSTALLATION_URL = github_installation()["html_url"]
NO_ACTION = frozenset({None})

#: GitHub's webhook events and their actions, as its documentation lists
#: them (``None``: the event has no action). Events GitHub retired
#: (content_reference) are left out.
DOCUMENTED: dict[str, frozenset[str | None]] = {
    "branch_protection_configuration": frozenset({"enabled", "disabled"}),
    "branch_protection_rule": frozenset({"created", "edited", "deleted"}),
    "check_run": frozenset({"created", "completed", "rerequested", "requested_action"}),
    "check_suite": frozenset({"requested", "rerequested", "completed"}),
    "code_scanning_alert": frozenset(
        {
            "appeared_in_branch",
            "closed_by_user",
            "created",
            "fixed",
            "reopened",
            "reopened_by_user",
            "updated_assignment",
        }
    ),
    "commit_comment": frozenset({"created"}),
    "create": NO_ACTION,
    "custom_property": frozenset({"created", "deleted", "updated", "promoted_to_enterprise"}),
    "custom_property_values": frozenset({"updated"}),
    "delete": NO_ACTION,
    "dependabot_alert": frozenset(
        {
            "assignees_changed",
            "auto_dismissed",
            "auto_reopened",
            "created",
            "dismissed",
            "fixed",
            "reintroduced",
            "reopened",
        }
    ),
    "deploy_key": frozenset({"created", "deleted"}),
    "deployment": frozenset({"created"}),
    "deployment_protection_rule": frozenset({"requested"}),
    "deployment_review": frozenset({"approved", "rejected", "requested"}),
    "deployment_status": frozenset({"created"}),
    "discussion": frozenset(
        {
            "answered",
            "category_changed",
            "closed",
            "created",
            "deleted",
            "edited",
            "labeled",
            "locked",
            "pinned",
            "reopened",
            "transferred",
            "unanswered",
            "unlabeled",
            "unlocked",
            "unpinned",
        }
    ),
    "discussion_comment": frozenset({"created", "deleted", "edited"}),
    "fork": NO_ACTION,
    "github_app_authorization": frozenset({"revoked"}),
    "gollum": NO_ACTION,
    "installation": frozenset(
        {"created", "deleted", "new_permissions_accepted", "suspend", "unsuspend"}
    ),
    "installation_repositories": frozenset({"added", "removed"}),
    "installation_target": frozenset({"renamed"}),
    "issue_comment": frozenset({"created", "deleted", "edited", "pinned", "unpinned"}),
    "issue_dependencies": frozenset(
        {"blocked_by_added", "blocked_by_removed", "blocking_added", "blocking_removed"}
    ),
    "issues": frozenset(
        {
            "assigned",
            "closed",
            "deleted",
            "demilestoned",
            "edited",
            "labeled",
            "locked",
            "milestoned",
            "opened",
            "pinned",
            "reopened",
            "transferred",
            "typed",
            "unassigned",
            "unlabeled",
            "unlocked",
            "unpinned",
            "untyped",
        }
    ),
    "label": frozenset({"created", "deleted", "edited"}),
    "marketplace_purchase": frozenset(
        {"cancelled", "changed", "pending_change", "pending_change_cancelled", "purchased"}
    ),
    "member": frozenset({"added", "edited", "removed"}),
    "membership": frozenset({"added", "removed"}),
    "merge_group": frozenset({"checks_requested", "destroyed"}),
    "meta": frozenset({"deleted"}),
    "milestone": frozenset({"closed", "created", "deleted", "edited", "opened"}),
    "org_block": frozenset({"blocked", "unblocked"}),
    "organization": frozenset(
        {"deleted", "member_added", "member_invited", "member_removed", "renamed"}
    ),
    "package": frozenset({"published", "updated"}),
    "page_build": NO_ACTION,
    "personal_access_token_request": frozenset({"approved", "cancelled", "created", "denied"}),
    "ping": NO_ACTION,
    "project": frozenset({"closed", "created", "deleted", "edited", "reopened"}),
    "project_card": frozenset({"converted", "created", "deleted", "edited", "moved"}),
    "project_column": frozenset({"created", "deleted", "edited", "moved"}),
    "projects_v2": frozenset({"closed", "created", "deleted", "edited", "reopened"}),
    "projects_v2_item": frozenset(
        {"archived", "converted", "created", "deleted", "edited", "reordered", "restored"}
    ),
    "projects_v2_status_update": frozenset({"created", "deleted", "edited"}),
    "public": NO_ACTION,
    "pull_request": GITHUB_PULL_REQUEST_ACTIONS,
    "pull_request_review": frozenset({"dismissed", "edited", "submitted"}),
    "pull_request_review_comment": frozenset({"created", "deleted", "edited"}),
    "pull_request_review_thread": frozenset({"resolved", "unresolved"}),
    "push": NO_ACTION,
    "registry_package": frozenset({"published", "updated"}),
    "release": frozenset(
        {"created", "deleted", "edited", "prereleased", "published", "released", "unpublished"}
    ),
    "repository": frozenset(
        {
            "archived",
            "created",
            "deleted",
            "edited",
            "privatized",
            "publicized",
            "renamed",
            "transferred",
            "unarchived",
        }
    ),
    "repository_advisory": frozenset({"published", "reported"}),
    # The action of a repository_dispatch is the caller's own event name.
    "repository_dispatch": frozenset({"deploy-now"}),
    "repository_import": NO_ACTION,
    "repository_ruleset": frozenset({"created", "deleted", "edited"}),
    "repository_vulnerability_alert": frozenset({"create", "dismiss", "reopen", "resolve"}),
    "secret_scanning_alert": frozenset(
        {
            "assigned",
            "created",
            "publicly_leaked",
            "reopened",
            "resolved",
            "unassigned",
            "validated",
        }
    ),
    "secret_scanning_alert_location": frozenset({"created"}),
    "secret_scanning_scan": frozenset({"completed"}),
    "security_advisory": frozenset({"published", "updated", "withdrawn"}),
    "security_and_analysis": NO_ACTION,
    "sponsorship": frozenset(
        {
            "cancelled",
            "created",
            "edited",
            "pending_cancellation",
            "pending_tier_change",
            "tier_changed",
        }
    ),
    "star": frozenset({"created", "deleted"}),
    "status": NO_ACTION,
    "sub_issues": frozenset(
        {"parent_issue_added", "parent_issue_removed", "sub_issue_added", "sub_issue_removed"}
    ),
    "team": frozenset(
        {"added_to_repository", "created", "deleted", "edited", "removed_from_repository"}
    ),
    "team_add": NO_ACTION,
    "watch": frozenset({"started"}),
    "workflow_dispatch": NO_ACTION,
    "workflow_job": frozenset({"completed", "in_progress", "queued", "waiting"}),
    "workflow_run": frozenset({"completed", "in_progress", "requested"}),
}

#: The organization-level events: the administrative group's.
ADMINISTRATIVE = {
    "custom_property",
    "github_app_authorization",
    "installation",
    "installation_repositories",
    "installation_target",
    "marketplace_purchase",
    "member",
    "membership",
    "meta",
    "org_block",
    "organization",
    "personal_access_token_request",
    "ping",
    "repository",
    "security_advisory",
    "sponsorship",
    "team",
    "team_add",
}


def row(event, case, payload, text, link):
    return pytest.param(event, payload, text, link, id=f"{event}-{case}")


def without(payload, *keys):
    for key in keys:
        del payload[key]
    return payload


def pull_request(action, **extra):
    return github_pull_request(action, **extra)


def merged_pull_request():
    return changed(github_pull_request("closed"), ("pull_request", "merged"), True)


def issues(action, **fields):
    return github_event(action, issue=github_issue_object(), **fields)


def two_issues(action, first, second):
    return github_event(
        action,
        **{first: github_issue_object(), second: github_issue_object(13, "Fix the spin direction")},
    )


def discussion(action, **fields):
    topic = github_issue_object(
        7, "How fast should widgets spin?", kind="discussions", category={"name": "Q&A"}
    )
    return github_event(action, discussion=topic, **fields)


def discussion_comment(action, body="Faster."):
    comment = github_comment(body, html_url=f"{DISCUSSION_URL}#discussioncomment-9001")
    return discussion(action, comment=comment)


REVIEW_URL = f"{PR_URL}#pullrequestreview-80"


def review(action, state="approved", body=None, sender="bob"):
    the_review = {
        "id": 80,
        "user": github_user("bob"),
        "body": body,
        "state": state,
        "html_url": REVIEW_URL,
    }
    return github_event(
        action, sender=sender, pull_request=github_pull_request_object(), review=the_review
    )


REVIEW_COMMENT_URL = f"{PR_URL}#discussion_r9001"


def review_comment(action):
    comment = github_comment("Typo here.", html_url=REVIEW_COMMENT_URL)
    return github_event(action, pull_request=github_pull_request_object(), comment=comment)


def review_thread(action):
    thread = {"node_id": "PRRT_1", "comments": [github_comment("x", html_url=REVIEW_COMMENT_URL)]}
    return github_event(action, pull_request=github_pull_request_object(), thread=thread)


def label(action, **fields):
    return github_event(action, label={"name": "bug", "color": "d73a4a"}, **fields)


MILESTONE_URL = f"{REPO}/milestone/1"


def milestone(action):
    return github_event(action, milestone={"title": "1.0", "number": 1, "html_url": MILESTONE_URL})


RELEASE_URL = f"{REPO}/releases/tag/v1.0.0"


def release(action, name="Spinning widgets"):
    the_release = {"tag_name": "v1.0.0", "name": name, "html_url": RELEASE_URL, "draft": False}
    return github_event(action, release=the_release)


PACKAGE_URL = f"{REPO}/pkgs/npm/widgets"


def package(action, key="package", version=None):
    version = version or {"version": "1.2.0", "html_url": f"{PACKAGE_URL}/1234"}
    the_package = {
        "name": "widgets",
        "package_type": "npm",
        "html_url": PACKAGE_URL,
        "package_version": version,
    }
    return github_event(action, **{key: the_package})


def wiki_page(title="Home", action="edited"):
    return {
        "page_name": title,
        "title": title,
        "action": action,
        "html_url": f"{REPO}/wiki/{title}",
    }


RUN_URL = f"{REPO}/runs/4242"


def check_run(action, sender="widget-bot", **fields):
    run = {
        "name": "build",
        "head_sha": SHA,
        "status": "completed",
        "conclusion": "success",
        "html_url": RUN_URL,
        "details_url": "https://ci.acme.test/4242",
        "output": {"title": "All good", "summary": ""},
    }
    return github_event(action, sender=sender, check_run=run, **fields)


def check_suite(action, conclusion=None, sender="alice"):
    suite = {
        "head_sha": SHA,
        "head_branch": "master",
        "status": "completed" if conclusion else "queued",
        "conclusion": conclusion,
        "app": {"name": "GitHub Actions", "slug": "github-actions"},
    }
    return github_event(action, sender=sender, check_suite=suite)


WORKFLOW_RUN_URL = f"{REPO}/actions/runs/9000"


def workflow_run(action, conclusion=None):
    run = {
        "name": "CI",
        "run_number": 57,
        "head_branch": "master",
        "head_sha": SHA,
        "status": "completed" if conclusion else "in_progress",
        "conclusion": conclusion,
        "event": "push",
        "html_url": WORKFLOW_RUN_URL,
        "actor": github_user(),
    }
    return github_event(action, workflow_run=run)


JOB_URL = f"{WORKFLOW_RUN_URL}/job/31"


def workflow_job(action, conclusion=None, runner=None):
    job = {
        "name": "test",
        "workflow_name": "CI",
        "head_branch": "master",
        "status": action,
        "conclusion": conclusion,
        "runner_name": runner,
        "html_url": JOB_URL,
    }
    return github_event(action, workflow_job=job)


def deployment_object():
    return {"id": 1, "ref": "master", "sha": SHA, "environment": "production", "description": None}


def deployment_status(state="success", **urls):
    status = {"state": state, "description": "Deployed.", "environment": "production", **urls}
    return github_event("created", deployment=deployment_object(), deployment_status=status)


def deployment_review(action, sender="bob", comment=None, **fields):
    return github_event(
        action,
        sender=sender,
        workflow_run={"id": 9000, "html_url": WORKFLOW_RUN_URL},
        workflow_job_runs=[{"id": 31, "environment": "production"}],
        comment=comment,
        **fields,
    )


def merge_group(action, **fields):
    group_ = {
        "head_sha": SHA,
        "head_ref": "refs/heads/gh-readonly-queue/master/pr-42-5f3c2a7e",
        "base_ref": "refs/heads/master",
        "base_sha": OTHER_SHA,
        "head_commit": {"message": "Merge pull request #42 from bob/spin\n\nSpin forwards"},
    }
    return github_event(action, merge_group=group_, **fields)


CODE_ALERT = "#3 — Cross-site scripting"
CODE_ALERT_URL = f"{REPO}/security/code-scanning/3"


def code_scanning_alert(action, sender="alice", ref="refs/heads/master", **rule):
    alert = {
        "number": 3,
        "html_url": CODE_ALERT_URL,
        "state": "open",
        "rule": rule or {"id": "js/xss", "name": "xss", "description": "Cross-site scripting"},
        "tool": {"name": "CodeQL", "version": "2.17.0"},
    }
    return github_event(action, sender=sender, alert=alert, ref=ref, commit_oid=SHA)


DEPENDABOT_ALERT = "#5 — Prototype pollution in lodash"
DEPENDABOT_URL = f"{REPO}/security/dependabot/5"


def dependabot_alert(action, summary="Prototype pollution in lodash"):
    alert = {
        "number": 5,
        "html_url": DEPENDABOT_URL,
        "state": "open",
        "dependency": {"package": {"ecosystem": "npm", "name": "lodash"}},
        "security_advisory": {"ghsa_id": "GHSA-35jh-r3h4-6jhm", "summary": summary},
    }
    return github_event(action, alert=alert)


SECRET_ALERT = "#2 — GitHub Personal Access Token"
SECRET_URL = f"{REPO}/security/secret-scanning/2"


def secret_scanning_alert(action, **fields):
    alert = {
        "number": 2,
        "html_url": SECRET_URL,
        "secret_type": "github_personal_access_token",
        "secret_type_display_name": "GitHub Personal Access Token",
        "resolution": "false_positive" if action == "resolved" else None,
        "validity": "active",
    }
    return github_event(action, alert=alert, **fields)


ADVISORY = "GHSA-35jh-r3h4-6jhm (high) — Prototype pollution in lodash"
ADVISORY_URL = f"{GITHUB}/advisories/GHSA-35jh-r3h4-6jhm"


def security_advisory(action, **fields):
    advisory = {
        "ghsa_id": "GHSA-35jh-r3h4-6jhm",
        "summary": "Prototype pollution in lodash",
        "severity": "high",
        "html_url": ADVISORY_URL,
        "references": [{"url": "https://nvd.nist.gov/vuln/detail/CVE-2021-23337"}],
        **fields,
    }
    payload = github_event(action, repository=False, organization=False)
    payload["security_advisory"] = advisory
    return without(payload, "sender")


REPOSITORY_ADVISORY = "GHSA-wxyz-1234-5678 (critical) — Widgets spin out of control"
REPOSITORY_ADVISORY_URL = f"{REPO}/security/advisories/GHSA-wxyz-1234-5678"


def repository_advisory(action):
    advisory = {
        "ghsa_id": "GHSA-wxyz-1234-5678",
        "summary": "Widgets spin out of control",
        "severity": "critical",
        "html_url": REPOSITORY_ADVISORY_URL,
    }
    return github_event(action, repository_advisory=advisory)


def vulnerability_alert(action):
    alert = {
        "affected_package_name": "lodash",
        "affected_range": "<4.17.21",
        "ghsa_id": "GHSA-35jh-r3h4-6jhm",
        "severity": "high",
    }
    return github_event(action, alert=alert)


def security_and_analysis():
    repository = github_repository_object()
    repository["security_and_analysis"] = {
        "secret_scanning": {"status": "enabled"},
        "dependabot_security_updates": {"status": "disabled"},
    }
    before = {"secret_scanning": {"status": "disabled"}}
    return github_event(
        None, repository=repository, changes={"from": {"security_and_analysis": before}}
    )


def ruleset(action, repository=True):
    the_ruleset = {"id": 21, "name": "Protect master", "target": "branch", "enforcement": "active"}
    return github_event(action, repository=repository, repository_ruleset=the_ruleset)


def deploy_key(action, read_only=True):
    return github_event(action, key={"id": 9, "title": "CI deploy", "read_only": read_only})


def page_build(status, error=None):
    build = {"status": status, "error": {"message": error}, "pusher": github_user()}
    return github_event(None, build=build)


def property_values():
    values = [
        {"property_name": "environment", "value": "production"},
        {"property_name": "team", "value": None},
        {"property_name": "tags", "value": ["a", "b"]},
    ]
    return github_event("updated", new_property_values=values)


def org_event(action, **fields):
    return github_event(action, repository=False, **fields)


def membership_of(login="bob"):
    return {"user": github_user(login), "role": "member", "state": "active"}


def team(action, repository=False):
    return github_event(action, repository=repository, team=github_team())


def installation(action, **fields):
    return org_event(action, installation=github_installation(), **fields)


def repositories(*names):
    return [{"full_name": f"Acme/{name}", "name": name} for name in names]


def token_request(action, sender):
    request = {"id": 1, "owner": github_user("bob"), "token_name": "deploy"}
    return org_event(action, sender=sender, personal_access_token_request=request)


def custom_property(action):
    definition = {"property_name": "environment", "value_type": "single_select"}
    return org_event(action, definition=definition)


def sponsorship(action):
    the_sponsorship = {
        "sponsor": github_user("bob"),
        "sponsorable": github_user("alice"),
        "tier": {"name": "$5 a month", "monthly_price_in_dollars": 5},
        "privacy_level": "public",
    }
    return github_event(
        action, sender="bob", repository=False, organization=False, sponsorship=the_sponsorship
    )


def marketplace_purchase(action):
    purchase = {
        "account": {"login": "Acme", "type": "Organization"},
        "plan": {"name": "Pro", "monthly_price_in_cents": 900},
        "billing_cycle": "monthly",
    }
    return github_event(action, repository=False, organization=False, marketplace_purchase=purchase)


PROJECT_URL = f"{GITHUB}/orgs/Acme/projects/1"


def project(action, repository=False):
    the_project = {"name": "Roadmap", "number": 1, "html_url": PROJECT_URL, "state": "open"}
    return github_event(action, repository=repository, project=the_project)


def project_card(action, note="Spin the widgets\nthe right way"):
    return org_event(action, project_card={"id": 5, "note": note, "column_id": 3})


def projects_v2(action):
    board = {"title": "Roadmap 2025", "number": 3, "owner": github_user("Acme")}
    return org_event(action, projects_v2=board)


def projects_v2_item(action, content_type="Issue"):
    item = {"content_type": content_type, "content_node_id": "I_1", "project_node_id": "PVT_1"}
    return org_event(action, projects_v2_item=item)


def status_update(action):
    update = {"status": "AT_RISK", "body": "Spinning slower\nthan planned."}
    return org_event(action, projects_v2_status_update=update)


# The rows -----------------------------------------------------------------------


def each(event, cases, payload_of, text_of, link):
    """Rows of an event whose texts differ by one word: the action, or ``cases[action]``."""
    words = cases if isinstance(cases, dict) else {case: case for case in cases}
    return [row(event, case, payload_of(case), text_of(word), link) for case, word in words.items()]


ROWS = [
    # ping, push (the older system's forms, then tags, created and deleted branches, sizes)
    row(
        "ping",
        "zen",
        github_ping("Design for failure."),
        "« Design for failure. » — GitHub Webhooks ping zen aphorism.",
        "",
    ),
    row(
        "push",
        "one-commit",
        github_push(1),
        "alice committed Add the widget factory",
        f"{REPO}/commit/{SHA}",
    ),
    row(
        "push",
        "no-commit",
        github_push(0, "refs/heads/feature"),
        "alice forcely updated widgets (branch feature)",
        COMPARE,
    ),
    row("push", "commits", github_push(3), "alice pushed 3 commits to widgets", COMPARE),
    row(
        "push",
        "tag-created",
        github_push(0, "refs/tags/v1.0.0", created=True),
        "alice pushed tag v1.0.0 to widgets",
        RELEASE_URL,
    ),
    row(
        "push",
        "tag-with-commits",
        github_push(2, "refs/tags/v1.0.0", created=True),
        "alice pushed tag v1.0.0 to widgets",
        RELEASE_URL,
    ),
    row(
        "push",
        "tag-moved",
        github_push(0, "refs/tags/v1.0.0"),
        "alice forcely updated tag v1.0.0 on widgets",
        RELEASE_URL,
    ),
    row(
        "push",
        "tag-deleted",
        github_push(0, "refs/tags/v0.9", deleted=True, head_commit=None),
        "alice deleted tag v0.9 on widgets",
        f"{REPO}/tags",
    ),
    row(
        "push",
        "branch-created",
        github_push(1, "refs/heads/feature/x", created=True),
        "alice created branch feature/x on widgets",
        f"{REPO}/tree/feature/x",
    ),
    row(
        "push",
        "branch-deleted",
        github_push(0, "refs/heads/feature/x", deleted=True, head_commit=None),
        "alice deleted branch feature/x on widgets",
        f"{REPO}/branches",
    ),
    row(
        "push",
        "over-20-commits-size",
        github_push(20, "refs/heads/feature", size=25),
        "alice pushed 25 commits to widgets (branch feature)",
        COMPARE,
    ),
    row(
        "push",
        "over-20-commits-distinct-size",
        github_push(20, distinct_size=23),
        "alice pushed 23 commits to widgets",
        COMPARE,
    ),
    row(
        "push", "20-commits-no-size", github_push(20), "alice pushed 20 commits to widgets", COMPARE
    ),
    row(
        "push",
        "size-below-the-list",
        github_push(3, size=1),
        "alice pushed 3 commits to widgets",
        COMPARE,
    ),
    row(
        "push",
        "size-not-a-number",
        github_push(2, size="25"),
        "alice pushed 2 commits to widgets",
        COMPARE,
    ),
    row(
        "push",
        "size-one-commit-listed",
        github_push(1, size=4),
        "alice pushed 4 commits to widgets",
        COMPARE,
    ),
    # create, delete, comments on commits and issues, fork, status, stars
    row(
        "create",
        "tag",
        github_create("tag", "v1.0.0"),
        "New tag on Acme/widgets: v1.0.0",
        RELEASE_URL,
    ),
    row(
        "delete",
        "branch",
        github_delete("branch", "feature/x"),
        "Removed branch on Acme/widgets: feature/x",
        f"{REPO}/branches",
    ),
    row(
        "commit_comment",
        "created",
        github_commit_comment("Nice."),
        f"alice added a comment to {SHORT}: Nice.",
        f"{REPO}/commit/{SHA}#commitcomment-9001",
    ),
    row(
        "issue_comment",
        "created",
        github_issue_comment("created", "Same here."),
        f"alice added a comment to issue {ISSUE}: Same here.",
        ISSUE_COMMENT_URL,
    ),
    row(
        "issue_comment",
        "edited",
        github_issue_comment("edited", "Same."),
        f"alice edited a comment to issue {ISSUE}: Same.",
        ISSUE_COMMENT_URL,
    ),
    row(
        "issue_comment",
        "deleted",
        github_issue_comment("deleted"),
        f"alice deleted a comment to issue {ISSUE}",
        ISSUE_COMMENT_URL,
    ),
    *each(
        "issue_comment",
        ("pinned", "unpinned"),
        lambda action: github_issue_comment(action, "Spin twice.", sender=github_user("bob")),
        lambda verb: f"bob {verb} a comment to issue {ISSUE}: Spin twice.",
        ISSUE_COMMENT_URL,
    ),
    row(
        "fork",
        "fork",
        github_fork("bob"),
        "Acme/widgets has been forked to bob/widgets",
        f"{GITHUB}/bob/widgets",
    ),
    row(
        "status",
        "status",
        github_status("failure"),
        f"Status of {SHORT}: ci/jenkins — The build succeeded — failure",
        "https://ci.acme.test/job/widgets/7/",
    ),
    row("watch", "started", github_watch("bob"), "bob starred Acme/widgets", f"{GITHUB}/bob"),
    *each(
        "star",
        {"created": "starred", "deleted": "unstarred"},
        lambda action: github_event(action, sender="bob"),
        lambda verb: f"bob {verb} Acme/widgets",
        f"{GITHUB}/bob",
    ),
    # pull requests
    row(
        "pull_request",
        "opened",
        pull_request("opened"),
        f"alice has opened a pull request: {PR}",
        PR_URL,
    ),
    *each(
        "pull_request",
        ("closed", "reopened", "edited", "labeled", "locked", "unlocked"),
        pull_request,
        lambda verb: f"alice has {verb} the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request",
        "closed-merged",
        merged_pull_request(),
        f"alice has merged the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request",
        "unlabeled",
        pull_request("unlabeled"),
        f"alice has removed a label from the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request",
        "assigned",
        pull_request("assigned", assignees=("bob",)),
        f"alice has assigned the pull request {PR} to bob",
        PR_URL,
    ),
    row(
        "pull_request",
        "unassigned",
        pull_request("unassigned"),
        f"alice has edited the assignees from the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request",
        "synchronize",
        pull_request("synchronize"),
        f"alice has pushed new commits to the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request",
        "ready_for_review",
        pull_request("ready_for_review"),
        f"alice has marked the pull request {PR} as ready for review",
        PR_URL,
    ),
    row(
        "pull_request",
        "converted_to_draft",
        pull_request("converted_to_draft"),
        f"alice has converted the pull request {PR} to a draft",
        PR_URL,
    ),
    row(
        "pull_request",
        "review_requested",
        pull_request("review_requested", requested_reviewer=github_user("bob")),
        f"alice has requested a review of the pull request {PR} from bob",
        PR_URL,
    ),
    row(
        "pull_request",
        "review_requested-team",
        pull_request("review_requested", requested_team={"name": "Owners"}),
        f"alice has requested a review of the pull request {PR} from Owners",
        PR_URL,
    ),
    row(
        "pull_request",
        "review_request_removed",
        pull_request("review_request_removed", requested_reviewer=github_user("bob")),
        f"alice has removed the review request for bob from the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request",
        "milestoned",
        pull_request("milestoned", milestone={"title": "1.0"}),
        f"alice has added the pull request {PR} to the milestone 1.0",
        PR_URL,
    ),
    row(
        "pull_request",
        "demilestoned",
        pull_request("demilestoned", milestone={"title": "1.0"}),
        f"alice has removed the pull request {PR} from the milestone 1.0",
        PR_URL,
    ),
    *each(
        "pull_request",
        {"auto_merge_enabled": "enabled", "auto_merge_disabled": "disabled"},
        pull_request,
        lambda verb: f"alice has {verb} auto-merge for the pull request {PR}",
        PR_URL,
    ),
    row(
        "pull_request",
        "enqueued",
        pull_request("enqueued"),
        f"alice has added the pull request {PR} to the merge queue",
        PR_URL,
    ),
    row(
        "pull_request",
        "dequeued",
        pull_request("dequeued"),
        f"alice has removed the pull request {PR} from the merge queue",
        PR_URL,
    ),
    row(
        "pull_request_review",
        "submitted-approved",
        review("submitted"),
        f"bob has approved the pull request {PR}",
        REVIEW_URL,
    ),
    row(
        "pull_request_review",
        "submitted-approved-uppercase",
        review("submitted", "APPROVED"),
        f"bob has approved the pull request {PR}",
        REVIEW_URL,
    ),
    row(
        "pull_request_review",
        "submitted-changes-requested",
        review("submitted", "changes_requested", "Please add\ntests."),
        f"bob has requested changes on the pull request {PR}: Please add tests.",
        REVIEW_URL,
    ),
    row(
        "pull_request_review",
        "submitted-commented",
        review("submitted", "commented", LONG),
        f"bob has reviewed the pull request {PR}: {LONG_CUT}",
        REVIEW_URL,
    ),
    row(
        "pull_request_review",
        "edited",
        review("edited"),
        f"bob has edited a review of the pull request {PR}",
        REVIEW_URL,
    ),
    row(
        "pull_request_review",
        "dismissed",
        review("dismissed", sender="alice"),
        f"alice has dismissed the review by bob of the pull request {PR}",
        REVIEW_URL,
    ),
    *each(
        "pull_request_review_comment",
        {"created": "added", "edited": "edited"},
        review_comment,
        lambda verb: f"alice {verb} a review comment to pull request {PR}: Typo here.",
        REVIEW_COMMENT_URL,
    ),
    row(
        "pull_request_review_comment",
        "deleted",
        review_comment("deleted"),
        f"alice deleted a review comment to pull request {PR}",
        REVIEW_COMMENT_URL,
    ),
    *each(
        "pull_request_review_thread",
        {"resolved": "resolved", "unresolved": "reopened"},
        review_thread,
        lambda verb: f"alice has {verb} a review thread on the pull request {PR}",
        REVIEW_COMMENT_URL,
    ),
    # repository (administrative), and the changes the issue names
    row("repository", "created", github_repository("created"), "New repository Acme/widgets", REPO),
    row(
        "repository",
        "deleted",
        github_repository("deleted"),
        "Repository Acme/widgets deleted (danger zone)",
        REPO,
    ),
    row(
        "repository",
        "publicized",
        github_repository("publicized"),
        "Repository Acme/widgets is now public",
        REPO,
    ),
    row(
        "repository",
        "privatized",
        github_repository("privatized"),
        "Repository Acme/widgets is now private",
        REPO,
    ),
    row(
        "repository",
        "renamed",
        github_repository("renamed", changes={"repository": {"name": {"from": "gadgets"}}}),
        "Repository Acme/gadgets renamed to Acme/widgets by alice",
        REPO,
    ),
    row(
        "repository",
        "renamed-old-name-missing",
        github_repository("renamed"),
        "Repository Acme/widgets renamed by alice",
        REPO,
    ),
    *each(
        "repository",
        ("archived", "unarchived"),
        github_repository,
        lambda verb: f"Repository Acme/widgets {verb} by alice",
        REPO,
    ),
    row(
        "repository",
        "archived-fork-description",
        github_repository("archived", fork=True, description="Old copy."),
        "Repository Acme/widgets archived by alice (fork) — Old copy.",
        REPO,
    ),
    row(
        "repository",
        "transferred-from-user",
        github_repository("transferred", changes={"owner": {"from": {"user": github_user("bob")}}}),
        "Repository Acme/widgets transferred from bob by alice",
        REPO,
    ),
    row(
        "repository",
        "transferred-from-organization",
        github_repository(
            "transferred", changes={"owner": {"from": {"organization": {"login": "Gadgets"}}}}
        ),
        "Repository Acme/widgets transferred from Gadgets by alice",
        REPO,
    ),
    row(
        "repository",
        "edited",
        github_repository(
            "edited",
            description="Spun right.",
            changes={"homepage": {"from": ""}, "description": {"from": ""}},
        ),
        "Repository Acme/widgets edited by alice (description, homepage) — Spun right.",
        REPO,
    ),
    row(
        "repository",
        "undocumented",
        github_repository("frobnicated"),
        "Unknown repository action: frobnicated",
        REPO,
    ),
    row(
        "repository",
        "default-branch",
        github_default_branch("main", "master"),
        "Acme/widgets default branch is now 'main' instead of 'master'.",
        REPO,
    ),
    row(
        "repository_dispatch",
        "deploy-now",
        github_event("deploy-now", branch="master", client_payload={"env": "prod"}),
        "alice has dispatched the event deploy-now to Acme/widgets",
        REPO,
    ),
    *each(
        "repository_import",
        {"success": "succeeded", "cancelled": "was cancelled", "failure": "failed"},
        lambda status: github_event(None, status=status),
        lambda end: f"The import of Acme/widgets by alice {end}",
        REPO,
    ),
    row("public", "public", github_event(None), "alice has made Acme/widgets public", REPO),
    # issues and their kin
    row("issues", "opened", issues("opened"), f"alice has opened an issue: {ISSUE}", ISSUE_URL),
    *each(
        "issues",
        ("edited", "deleted", "closed", "reopened", "locked", "unlocked", "pinned", "unpinned"),
        issues,
        lambda verb: f"alice has {verb} the issue {ISSUE}",
        ISSUE_URL,
    ),
    *each(
        "issues",
        {"completed": "", "not_planned": " (not planned)", "duplicate": " (duplicate)"},
        lambda reason: changed(issues("closed"), ("issue", "state_reason"), reason),
        lambda reason: f"alice has closed the issue {ISSUE}{reason}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "assigned",
        issues("assigned", assignee=github_user("bob")),
        f"alice has assigned bob to the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "unassigned",
        issues("unassigned", assignee=github_user("bob")),
        f"alice has unassigned bob from the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "labeled",
        issues("labeled", label={"name": "bug"}),
        f"alice has added the label bug to the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "labeled-no-label",
        issues("labeled"),
        f"alice has added a label to the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "unlabeled",
        issues("unlabeled", label={"name": "bug"}),
        f"alice has removed the label bug from the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "milestoned",
        issues("milestoned", milestone={"title": "1.0"}),
        f"alice has set the milestone 1.0 on the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "demilestoned",
        issues("demilestoned", milestone={"title": "1.0"}),
        f"alice has removed the milestone 1.0 from the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "transferred",
        issues("transferred", changes={"new_repository": github_repository_object("gadgets")}),
        f"alice has transferred the issue {ISSUE} to Acme/gadgets",
        ISSUE_URL,
    ),
    row(
        "issues",
        "typed",
        issues("typed", type={"name": "Bug"}),
        f"alice has set the type Bug on the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "issues",
        "untyped",
        issues("untyped", type={"name": "Bug"}),
        f"alice has removed the type Bug from the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "sub_issues",
        "sub_issue_added",
        two_issues("sub_issue_added", "parent_issue", "sub_issue"),
        f"alice has added the sub-issue #13 to the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "sub_issues",
        "sub_issue_removed",
        two_issues("sub_issue_removed", "parent_issue", "sub_issue"),
        f"alice has removed the sub-issue #13 from the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "sub_issues",
        "parent_issue_added",
        two_issues("parent_issue_added", "sub_issue", "parent_issue"),
        f"alice has made #13 the parent of the issue {ISSUE}",
        ISSUE_URL,
    ),
    row(
        "sub_issues",
        "parent_issue_removed",
        two_issues("parent_issue_removed", "sub_issue", "parent_issue"),
        f"alice has removed the parent #13 of the issue {ISSUE}",
        ISSUE_URL,
    ),
    *each(
        "issue_dependencies",
        {"blocked_by_added": "", "blocked_by_removed": "no longer "},
        lambda action: two_issues(action, "blocked_issue", "blocking_issue"),
        lambda no: f"alice has marked the issue {ISSUE} as {no}blocked by #13",
        ISSUE_URL,
    ),
    *each(
        "issue_dependencies",
        {"blocking_added": "", "blocking_removed": "no longer "},
        lambda action: two_issues(action, "blocked_issue", "blocking_issue"),
        lambda no: f"alice has marked the issue {SUB} as {no}blocking #12",
        SUB_URL,
    ),
    *each(
        "label",
        ("created", "edited", "deleted"),
        label,
        lambda verb: f"alice has {verb} the label bug on Acme/widgets",
        f"{REPO}/labels",
    ),
    *each(
        "milestone",
        ("created", "opened", "closed", "edited", "deleted"),
        milestone,
        lambda verb: f"alice has {verb} the milestone 1.0 on Acme/widgets",
        MILESTONE_URL,
    ),
    # discussions
    row(
        "discussion",
        "created",
        discussion("created"),
        f"alice has started a discussion: {DISCUSSION}",
        DISCUSSION_URL,
    ),
    *each(
        "discussion",
        ("edited", "deleted", "closed", "reopened", "locked", "unlocked", "pinned", "unpinned"),
        discussion,
        lambda verb: f"alice has {verb} the discussion {DISCUSSION}",
        DISCUSSION_URL,
    ),
    row(
        "discussion",
        "labeled",
        discussion("labeled", label={"name": "question"}),
        f"alice has added the label question to the discussion {DISCUSSION}",
        DISCUSSION_URL,
    ),
    row(
        "discussion",
        "unlabeled",
        discussion("unlabeled", label={"name": "question"}),
        f"alice has removed the label question from the discussion {DISCUSSION}",
        DISCUSSION_URL,
    ),
    row(
        "discussion",
        "transferred",
        discussion("transferred", changes={"new_repository": github_repository_object("gadgets")}),
        f"alice has transferred the discussion {DISCUSSION} to Acme/gadgets",
        DISCUSSION_URL,
    ),
    row(
        "discussion",
        "category_changed",
        discussion("category_changed"),
        f"alice has moved the discussion {DISCUSSION} to the category Q&A",
        DISCUSSION_URL,
    ),
    row(
        "discussion",
        "answered",
        discussion("answered", answer=github_comment("Faster.")),
        f"alice has marked an answer to the discussion {DISCUSSION}",
        DISCUSSION_URL,
    ),
    row(
        "discussion",
        "unanswered",
        discussion("unanswered"),
        f"alice has unmarked the answer to the discussion {DISCUSSION}",
        DISCUSSION_URL,
    ),
    row(
        "discussion_comment",
        "created",
        discussion_comment("created"),
        f"alice added a comment to discussion {DISCUSSION}: Faster.",
        DISCUSSION_COMMENT_URL,
    ),
    row(
        "discussion_comment",
        "created-long-body",
        discussion_comment("created", LONG),
        f"alice added a comment to discussion {DISCUSSION}: {LONG_CUT}",
        DISCUSSION_COMMENT_URL,
    ),
    row(
        "discussion_comment",
        "edited",
        discussion_comment("edited", "Much\n\nfaster."),
        f"alice edited a comment to discussion {DISCUSSION}: Much faster.",
        DISCUSSION_COMMENT_URL,
    ),
    row(
        "discussion_comment",
        "deleted",
        discussion_comment("deleted"),
        f"alice deleted a comment to discussion {DISCUSSION}",
        DISCUSSION_COMMENT_URL,
    ),
    # releases, packages, wiki, pages
    *each(
        "release",
        {
            "created": "created a release",
            "published": "published a release",
            "prereleased": "published a pre-release",
            "released": "released a new version",
            "unpublished": "unpublished a release",
        },
        release,
        lambda verb: f"alice has {verb} of Acme/widgets: v1.0.0 — Spinning widgets",
        RELEASE_URL,
    ),
    row(
        "release",
        "edited",
        release("edited", name="v1.0.0"),
        "alice has edited a release of Acme/widgets: v1.0.0",
        RELEASE_URL,
    ),
    row(
        "release",
        "deleted",
        release("deleted", name=None),
        "alice has deleted a release of Acme/widgets: v1.0.0",
        RELEASE_URL,
    ),
    *each(
        "package",
        ("published", "updated"),
        package,
        lambda verb: f"alice has {verb} the package widgets 1.2.0",
        f"{PACKAGE_URL}/1234",
    ),
    row(
        "package",
        "published-container-tag",
        package(
            "published",
            version={"version": "sha256:ab12", "container_metadata": {"tag": {"name": "latest"}}},
        ),
        "alice has published the package widgets latest",
        PACKAGE_URL,
    ),
    *each(
        "registry_package",
        ("published", "updated"),
        lambda action: package(action, "registry_package"),
        lambda verb: f"alice has {verb} the package widgets 1.2.0",
        f"{PACKAGE_URL}/1234",
    ),
    row(
        "gollum",
        "one-page",
        github_event(None, pages=[wiki_page()]),
        "alice has edited the wiki page Home of Acme/widgets",
        f"{REPO}/wiki/Home",
    ),
    row(
        "gollum",
        "pages",
        github_event(None, pages=[wiki_page("Home"), wiki_page("Spin", "created")]),
        "alice has updated 2 wiki pages of Acme/widgets",
        f"{REPO}/wiki",
    ),
    row(
        "gollum",
        "no-page",
        github_event(None, pages=[]),
        "alice has updated the wiki of Acme/widgets",
        f"{REPO}/wiki",
    ),
    row(
        "page_build",
        "built",
        page_build("built"),
        "GitHub Pages build of Acme/widgets by alice: built",
        REPO,
    ),
    row(
        "page_build",
        "errored",
        page_build("errored", "Page build failed."),
        "GitHub Pages build of Acme/widgets by alice: errored — Page build failed.",
        REPO,
    ),
    # CI
    row(
        "check_run",
        "created",
        check_run("created"),
        f"widget-bot has created the check run build for {SHORT} on Acme/widgets",
        RUN_URL,
    ),
    row(
        "check_run",
        "completed",
        check_run("completed"),
        f"Check run build for {SHORT} on Acme/widgets: success — All good",
        RUN_URL,
    ),
    row(
        "check_run",
        "rerequested",
        check_run("rerequested", sender="alice"),
        f"alice has re-requested the check run build for {SHORT} on Acme/widgets",
        RUN_URL,
    ),
    row(
        "check_run",
        "requested_action",
        check_run("requested_action", sender="alice", requested_action={"identifier": "fix"}),
        f"alice has requested the action fix of the check run build for {SHORT} on Acme/widgets",
        RUN_URL,
    ),
    row(
        "check_suite",
        "requested",
        check_suite("requested"),
        f"Check suite of GitHub Actions requested for {SHORT} on Acme/widgets",
        COMMIT_URL,
    ),
    row(
        "check_suite",
        "rerequested",
        check_suite("rerequested"),
        f"alice has re-requested the check suite of GitHub Actions for {SHORT} on Acme/widgets",
        COMMIT_URL,
    ),
    row(
        "check_suite",
        "completed",
        check_suite("completed", "failure"),
        f"Check suite of GitHub Actions for {SHORT} on Acme/widgets: failure",
        COMMIT_URL,
    ),
    row(
        "workflow_run",
        "requested",
        workflow_run("requested"),
        "alice has triggered the workflow CI #57 on Acme/widgets (branch master)",
        WORKFLOW_RUN_URL,
    ),
    row(
        "workflow_run",
        "in_progress",
        workflow_run("in_progress"),
        "Workflow CI #57 on Acme/widgets (branch master) is in progress",
        WORKFLOW_RUN_URL,
    ),
    row(
        "workflow_run",
        "completed",
        workflow_run("completed", "success"),
        "Workflow CI #57 on Acme/widgets (branch master): success",
        WORKFLOW_RUN_URL,
    ),
    row("workflow_job", "queued", workflow_job("queued"), f"{JOB} is queued", JOB_URL),
    row(
        "workflow_job",
        "waiting",
        workflow_job("waiting"),
        f"{JOB} is waiting for approval",
        JOB_URL,
    ),
    row(
        "workflow_job",
        "in_progress",
        workflow_job("in_progress", runner="runner-7"),
        f"{JOB} is running on runner-7",
        JOB_URL,
    ),
    row(
        "workflow_job",
        "completed",
        workflow_job("completed", "failure"),
        f"{JOB}: failure",
        JOB_URL,
    ),
    row(
        "workflow_dispatch",
        "dispatch",
        github_event(
            None,
            workflow=".github/workflows/deploy.yml",
            ref="refs/heads/master",
            inputs={"env": "prod"},
        ),
        "alice has dispatched the workflow deploy.yml on Acme/widgets (branch master)",
        f"{REPO}/actions/workflows/deploy.yml",
    ),
    row(
        "deployment",
        "created",
        github_event("created", deployment=deployment_object()),
        "alice has started deploying Acme/widgets at master to production",
        f"{REPO}/deployments",
    ),
    row(
        "deployment",
        "created-by-workflow",
        github_event(
            "created", deployment=deployment_object(), workflow_run={"html_url": WORKFLOW_RUN_URL}
        ),
        "alice has started deploying Acme/widgets at master to production",
        WORKFLOW_RUN_URL,
    ),
    row(
        "deployment_status",
        "created",
        deployment_status(
            log_url="https://ci.acme.test/deploy/1", environment_url="https://widgets.acme.test"
        ),
        f"{DEPLOYMENT}: success — Deployed.",
        "https://ci.acme.test/deploy/1",
    ),
    row(
        "deployment_status",
        "created-environment-url",
        deployment_status(environment_url="https://widgets.acme.test"),
        f"{DEPLOYMENT}: success — Deployed.",
        "https://widgets.acme.test",
    ),
    row(
        "deployment_status",
        "created-no-url",
        deployment_status("failure"),
        f"{DEPLOYMENT}: failure — Deployed.",
        f"{REPO}/deployments",
    ),
    row(
        "deployment_review",
        "requested",
        deployment_review("requested", sender="alice", environment="production"),
        "alice has requested a review of the deployment of Acme/widgets to production",
        WORKFLOW_RUN_URL,
    ),
    row(
        "deployment_review",
        "approved",
        deployment_review("approved", comment="Ship it."),
        "bob has approved the deployment of Acme/widgets to production: Ship it.",
        WORKFLOW_RUN_URL,
    ),
    row(
        "deployment_review",
        "rejected",
        deployment_review("rejected"),
        "bob has rejected the deployment of Acme/widgets to production",
        WORKFLOW_RUN_URL,
    ),
    row(
        "deployment_protection_rule",
        "requested",
        github_event("requested", environment="production", event="push"),
        "A deployment of Acme/widgets to production awaits the approval of its protection rules",
        f"{REPO}/deployments",
    ),
    row(
        "merge_group",
        "checks_requested",
        merge_group("checks_requested"),
        f"{MERGE_GROUP} awaits its checks — Merge pull request #42 from bob/spin",
        QUEUE_URL,
    ),
    *each(
        "merge_group",
        {"merged": "merged", "invalidated": "invalidated", "dequeued": "dequeued"},
        lambda reason: merge_group("destroyed", reason=reason),
        lambda end: f"{MERGE_GROUP} has been {end}",
        QUEUE_URL,
    ),
    row(
        "merge_group",
        "destroyed-other-reason",
        merge_group("destroyed"),
        f"{MERGE_GROUP} has been removed from the merge queue",
        QUEUE_URL,
    ),
    # security
    row(
        "code_scanning_alert",
        "created",
        code_scanning_alert("created", sender="github"),
        f"CodeQL has found an alert on Acme/widgets: {CODE_ALERT}",
        CODE_ALERT_URL,
    ),
    row(
        "code_scanning_alert",
        "created-rule-id-only",
        code_scanning_alert("created", id="js/xss"),
        "CodeQL has found an alert on Acme/widgets: #3 — js/xss",
        CODE_ALERT_URL,
    ),
    row(
        "code_scanning_alert",
        "reopened",
        code_scanning_alert("reopened"),
        f"A code scanning alert has reappeared on Acme/widgets: {CODE_ALERT}",
        CODE_ALERT_URL,
    ),
    row(
        "code_scanning_alert",
        "appeared_in_branch",
        code_scanning_alert("appeared_in_branch", ref="refs/heads/feature/x"),
        f"A code scanning alert has appeared in branch feature/x of Acme/widgets: {CODE_ALERT}",
        CODE_ALERT_URL,
    ),
    row(
        "code_scanning_alert",
        "fixed",
        code_scanning_alert("fixed"),
        f"A code scanning alert has been fixed on Acme/widgets: {CODE_ALERT}",
        CODE_ALERT_URL,
    ),
    *each(
        "code_scanning_alert",
        {
            "closed_by_user": "closed",
            "reopened_by_user": "reopened",
            "updated_assignment": "changed the assignees of",
        },
        code_scanning_alert,
        lambda verb: f"alice has {verb} a code scanning alert on Acme/widgets: {CODE_ALERT}",
        CODE_ALERT_URL,
    ),
    row(
        "dependabot_alert",
        "created",
        dependabot_alert("created"),
        f"Dependabot has opened an alert on Acme/widgets: {DEPENDABOT_ALERT}",
        DEPENDABOT_URL,
    ),
    row(
        "dependabot_alert",
        "created-no-summary",
        dependabot_alert("created", summary=None),
        "Dependabot has opened an alert on Acme/widgets: #5 — lodash",
        DEPENDABOT_URL,
    ),
    *each(
        "dependabot_alert",
        {"auto_dismissed": "dismissed", "auto_reopened": "reopened"},
        dependabot_alert,
        lambda verb: f"Dependabot has {verb} an alert on Acme/widgets: {DEPENDABOT_ALERT}",
        DEPENDABOT_URL,
    ),
    *each(
        "dependabot_alert",
        ("fixed", "reintroduced"),
        dependabot_alert,
        lambda verb: f"A Dependabot alert has been {verb} on Acme/widgets: {DEPENDABOT_ALERT}",
        DEPENDABOT_URL,
    ),
    *each(
        "dependabot_alert",
        {
            "dismissed": "dismissed",
            "reopened": "reopened",
            "assignees_changed": "changed the assignees of",
        },
        dependabot_alert,
        lambda verb: f"alice has {verb} a Dependabot alert on Acme/widgets: {DEPENDABOT_ALERT}",
        DEPENDABOT_URL,
    ),
    row(
        "secret_scanning_alert",
        "created",
        secret_scanning_alert("created"),
        f"A secret has been found on Acme/widgets: {SECRET_ALERT}",
        SECRET_URL,
    ),
    row(
        "secret_scanning_alert",
        "publicly_leaked",
        secret_scanning_alert("publicly_leaked"),
        f"A secret of Acme/widgets has been leaked publicly: {SECRET_ALERT}",
        SECRET_URL,
    ),
    row(
        "secret_scanning_alert",
        "reopened",
        secret_scanning_alert("reopened"),
        f"alice has reopened a secret scanning alert on Acme/widgets: {SECRET_ALERT}",
        SECRET_URL,
    ),
    row(
        "secret_scanning_alert",
        "resolved",
        secret_scanning_alert("resolved"),
        "alice has resolved a secret scanning alert on Acme/widgets as false positive: "
        + SECRET_ALERT,
        SECRET_URL,
    ),
    row(
        "secret_scanning_alert",
        "validated",
        secret_scanning_alert("validated"),
        f"A secret scanning alert on Acme/widgets has been checked (active): {SECRET_ALERT}",
        SECRET_URL,
    ),
    row(
        "secret_scanning_alert",
        "assigned",
        secret_scanning_alert("assigned", assignee=github_user("bob")),
        f"alice has assigned bob to a secret scanning alert on Acme/widgets: {SECRET_ALERT}",
        SECRET_URL,
    ),
    row(
        "secret_scanning_alert",
        "unassigned",
        secret_scanning_alert("unassigned", assignee=github_user("bob")),
        f"alice has unassigned bob from a secret scanning alert on Acme/widgets: {SECRET_ALERT}",
        SECRET_URL,
    ),
    row(
        "secret_scanning_alert_location",
        "created",
        secret_scanning_alert("created", location={"type": "commit"}),
        f"A secret scanning alert on Acme/widgets has a new location: {SECRET_ALERT}",
        SECRET_URL,
    ),
    row(
        "secret_scanning_scan",
        "completed",
        github_event("completed", type="backfill", source="git"),
        "The secret scanning backfill scan of Acme/widgets has completed (git)",
        f"{REPO}/security/secret-scanning",
    ),
    row(
        "secret_scanning_scan",
        "completed-custom-pattern",
        github_event("completed", type="custom-pattern-backfill"),
        "The secret scanning custom pattern backfill scan of Acme/widgets has completed",
        f"{REPO}/security/secret-scanning",
    ),
    *each(
        "security_advisory",
        ("published", "updated"),
        security_advisory,
        lambda verb: f"GitHub has {verb} the security advisory {ADVISORY}",
        ADVISORY_URL,
    ),
    row(
        "security_advisory",
        "withdrawn",
        security_advisory("withdrawn", html_url=None),
        f"GitHub has withdrawn the security advisory {ADVISORY}",
        "https://nvd.nist.gov/vuln/detail/CVE-2021-23337",
    ),
    row(
        "repository_advisory",
        "published",
        repository_advisory("published"),
        f"alice has published a security advisory for Acme/widgets: {REPOSITORY_ADVISORY}",
        REPOSITORY_ADVISORY_URL,
    ),
    row(
        "repository_advisory",
        "reported",
        repository_advisory("reported"),
        f"alice has privately reported a vulnerability in Acme/widgets: {REPOSITORY_ADVISORY}",
        REPOSITORY_ADVISORY_URL,
    ),
    row(
        "repository_vulnerability_alert",
        "create",
        vulnerability_alert("create"),
        f"New vulnerability alert on Acme/widgets: {VULNERABILITY}",
        f"{REPO}/security",
    ),
    *each(
        "repository_vulnerability_alert",
        {"dismiss": "dismissed", "reopen": "reopened"},
        vulnerability_alert,
        lambda verb: f"alice has {verb} a vulnerability alert on Acme/widgets: {VULNERABILITY}",
        f"{REPO}/security",
    ),
    row(
        "repository_vulnerability_alert",
        "resolve",
        vulnerability_alert("resolve"),
        f"A vulnerability alert has been resolved on Acme/widgets: {VULNERABILITY}",
        f"{REPO}/security",
    ),
    row(
        "security_and_analysis",
        "changed",
        security_and_analysis(),
        "alice has changed the security features of Acme/widgets: secret scanning enabled",
        f"{REPO}/settings/security_analysis",
    ),
    *each(
        "branch_protection_rule",
        ("created", "edited", "deleted"),
        lambda action: github_event(action, rule={"id": 1, "name": "master"}),
        lambda verb: f"alice has {verb} the branch protection rule master on Acme/widgets",
        f"{REPO}/settings/branches",
    ),
    *each(
        "branch_protection_configuration",
        ("enabled", "disabled"),
        github_event,
        lambda verb: f"alice has {verb} branch protections on Acme/widgets",
        f"{REPO}/settings/branches",
    ),
    *each(
        "repository_ruleset",
        ("created", "edited", "deleted"),
        ruleset,
        lambda verb: f"alice has {verb} the ruleset Protect master on Acme/widgets",
        f"{REPO}/rules/21",
    ),
    row(
        "repository_ruleset",
        "created-organization",
        ruleset("created", repository=False),
        "alice has created the ruleset Protect master in Acme",
        "",
    ),
    row(
        "deploy_key",
        "created",
        deploy_key("created"),
        "alice has added the deploy key CI deploy to Acme/widgets (read-only)",
        f"{REPO}/settings/keys",
    ),
    row(
        "deploy_key",
        "created-read-write",
        deploy_key("created", read_only=False),
        "alice has added the deploy key CI deploy to Acme/widgets (read-write)",
        f"{REPO}/settings/keys",
    ),
    row(
        "deploy_key",
        "deleted",
        deploy_key("deleted"),
        "alice has removed the deploy key CI deploy from Acme/widgets",
        f"{REPO}/settings/keys",
    ),
    # organizations, teams, access
    row(
        "member",
        "added",
        github_event("added", member=github_user("bob"), changes={"permission": {"to": "write"}}),
        "alice has added bob as a collaborator to Acme/widgets with the role write",
        f"{GITHUB}/bob",
    ),
    row(
        "member",
        "edited",
        github_event(
            "edited",
            member=github_user("bob"),
            changes={"permission": {"from": "read", "to": "write"}},
        ),
        "alice has changed the permissions of bob on Acme/widgets to write",
        f"{GITHUB}/bob",
    ),
    row(
        "member",
        "removed",
        github_event("removed", member=github_user("bob")),
        "alice has removed bob as a collaborator from Acme/widgets",
        f"{GITHUB}/bob",
    ),
    *each(
        "membership",
        {"added": "added bob to", "removed": "removed bob from"},
        lambda action: org_event(
            action, scope="team", member=github_user("bob"), team=github_team()
        ),
        lambda verb: f"alice has {verb} the team Owners of Acme",
        TEAM_URL,
    ),
    row(
        "organization",
        "member_added",
        org_event("member_added", membership=membership_of()),
        "alice has added bob to the organization Acme",
        f"{GITHUB}/bob",
    ),
    row(
        "organization",
        "member_invited",
        org_event(
            "member_invited",
            invitation={"login": "carol", "email": None},
            user=github_user("carol"),
        ),
        "alice has invited carol to the organization Acme",
        f"{GITHUB}/carol",
    ),
    row(
        "organization",
        "member_invited-by-email",
        org_event("member_invited", invitation={"login": None, "email": "carol@acme.test"}),
        "alice has invited a new member to the organization Acme",
        "",
    ),
    row(
        "organization",
        "member_removed",
        org_event("member_removed", membership=membership_of()),
        "alice has removed bob from the organization Acme",
        f"{GITHUB}/bob",
    ),
    row(
        "organization",
        "renamed",
        org_event("renamed", changes={"login": {"from": "Acme-old"}}),
        "alice has renamed the organization Acme-old to Acme",
        "",
    ),
    row(
        "organization",
        "renamed-old-name-missing",
        org_event("renamed"),
        "alice has renamed the organization to Acme",
        "",
    ),
    row(
        "organization",
        "deleted",
        org_event("deleted"),
        "alice has deleted the organization Acme",
        "",
    ),
    *each(
        "team",
        ("created", "edited", "deleted"),
        team,
        lambda verb: f"alice has {verb} the team Owners in Acme",
        TEAM_URL,
    ),
    row(
        "team",
        "added_to_repository",
        team("added_to_repository", repository=True),
        "alice has given the team Owners access to Acme/widgets",
        TEAM_URL,
    ),
    row(
        "team",
        "removed_from_repository",
        team("removed_from_repository", repository=True),
        "alice has removed the access of the team Owners to Acme/widgets",
        TEAM_URL,
    ),
    row(
        "team_add",
        "added",
        github_event(None, team=github_team()),
        "alice has added Acme/widgets to the team Owners",
        TEAM_URL,
    ),
    *each(
        "org_block",
        ("blocked", "unblocked"),
        lambda action: org_event(action, blocked_user=github_user("mallory")),
        lambda verb: f"alice has {verb} mallory from the organization Acme",
        f"{GITHUB}/mallory",
    ),
    *each(
        "installation",
        {
            "created": "installed",
            "deleted": "uninstalled",
            "new_permissions_accepted": "accepted new permissions for",
            "suspend": "suspended",
            "unsuspend": "unsuspended",
        },
        installation,
        lambda verb: f"alice has {verb} the GitHub App widget-bot on Acme",
        INSTALLATION_URL,
    ),
    row(
        "installation_repositories",
        "added",
        installation("added", repositories_added=repositories("widgets", "gadgets")),
        "alice has given the GitHub App widget-bot access to Acme/widgets, Acme/gadgets",
        INSTALLATION_URL,
    ),
    row(
        "installation_repositories",
        "added-many",
        installation("added", repositories_added=repositories("a", "b", "c", "d", "e")),
        "alice has given the GitHub App widget-bot access to Acme/a, Acme/b, Acme/c and 2 more",
        INSTALLATION_URL,
    ),
    row(
        "installation_repositories",
        "removed",
        installation("removed", repositories_removed=repositories("widgets")),
        "alice has removed the access of the GitHub App widget-bot to Acme/widgets",
        INSTALLATION_URL,
    ),
    row(
        "installation_target",
        "renamed",
        installation(
            "renamed", account=github_user("Acme"), changes={"login": {"from": "Acme-old"}}
        ),
        "alice has renamed the account Acme-old to Acme",
        f"{GITHUB}/Acme",
    ),
    row(
        "github_app_authorization",
        "revoked",
        github_event("revoked", repository=False, organization=False),
        "alice has revoked their authorization of a GitHub App",
        "",
    ),
    row(
        "meta",
        "deleted",
        org_event("deleted", hook_id=4242, hook={"type": "Organization", "id": 4242}),
        "alice has deleted the webhook 4242 in Acme",
        "",
    ),
    row(
        "meta",
        "deleted-repository-hook",
        github_event("deleted", hook_id=4243, hook={"type": "Repository", "id": 4243}),
        "alice has deleted the webhook 4243 on Acme/widgets",
        "",
    ),
    row(
        "personal_access_token_request",
        "created",
        token_request("created", "bob"),
        "bob has requested access to Acme for a personal access token",
        "",
    ),
    row(
        "personal_access_token_request",
        "cancelled",
        token_request("cancelled", "bob"),
        "bob has cancelled their request for access to Acme for a personal access token",
        "",
    ),
    *each(
        "personal_access_token_request",
        ("approved", "denied"),
        lambda action: token_request(action, "alice"),
        lambda verb: (
            f"alice has {verb} the request of bob for access to Acme for a personal access token"
        ),
        "",
    ),
    *each(
        "custom_property",
        ("created", "updated", "deleted"),
        custom_property,
        lambda verb: f"alice has {verb} the custom property environment in Acme",
        "",
    ),
    row(
        "custom_property",
        "promoted_to_enterprise",
        custom_property("promoted_to_enterprise"),
        "alice has promoted the custom property environment to the enterprise",
        "",
    ),
    row(
        "custom_property_values",
        "updated",
        property_values(),
        "alice has changed the custom properties of Acme/widgets: "
        "environment → production; team unset; tags → a, b",
        REPO,
    ),
    row(
        "sponsorship",
        "created",
        sponsorship("created"),
        "bob is now sponsoring alice ($5 a month)",
        f"{GITHUB}/alice",
    ),
    *each(
        "sponsorship",
        {
            "cancelled": "has cancelled",
            "edited": "has edited",
            "pending_cancellation": "will cancel",
        },
        sponsorship,
        lambda verb: f"bob {verb} their sponsorship of alice",
        f"{GITHUB}/alice",
    ),
    *each(
        "sponsorship",
        {"pending_tier_change": "will change", "tier_changed": "has changed"},
        sponsorship,
        lambda verb: f"bob {verb} their sponsorship of alice to the tier $5 a month",
        f"{GITHUB}/alice",
    ),
    *each(
        "marketplace_purchase",
        {
            "purchased": "purchased",
            "cancelled": "cancelled",
            "changed": "changed to",
            "pending_change": "asked to change to",
            "pending_change_cancelled": "cancelled the pending change to",
        },
        marketplace_purchase,
        lambda verb: f"Acme has {verb} the Marketplace plan Pro",
        "",
    ),
    # projects
    *each(
        "project",
        ("created", "edited", "closed", "reopened", "deleted"),
        project,
        lambda verb: f"alice has {verb} the project Roadmap in Acme",
        PROJECT_URL,
    ),
    row(
        "project",
        "created-repository-project",
        project("created", repository=True),
        "alice has created the project Roadmap on Acme/widgets",
        PROJECT_URL,
    ),
    *each(
        "project_card",
        {
            "created": "added a card to a project",
            "edited": "edited a project card",
            "converted": "converted a project card to an issue",
            "deleted": "deleted a project card",
        },
        project_card,
        lambda verb: f"alice has {verb} in Acme: Spin the widgets the right way",
        "",
    ),
    row(
        "project_card",
        "moved",
        project_card("moved", note=None),
        "alice has moved a project card in Acme",
        "",
    ),
    *each(
        "project_column",
        ("created", "edited", "moved", "deleted"),
        lambda action: org_event(action, project_column={"name": "To do"}),
        lambda verb: f"alice has {verb} the project column To do in Acme",
        "",
    ),
    *each(
        "projects_v2",
        ("created", "edited", "closed", "reopened", "deleted"),
        projects_v2,
        lambda verb: f"alice has {verb} the project Roadmap 2025 of Acme",
        "",
    ),
    row(
        "projects_v2_item",
        "created",
        projects_v2_item("created"),
        "alice has added an issue to a project of Acme",
        "",
    ),
    row(
        "projects_v2_item",
        "edited",
        projects_v2_item("edited", "PullRequest"),
        "alice has edited a pull request in a project of Acme",
        "",
    ),
    row(
        "projects_v2_item",
        "deleted",
        projects_v2_item("deleted", "DraftIssue"),
        "alice has removed a draft issue from a project of Acme",
        "",
    ),
    row(
        "projects_v2_item",
        "archived",
        projects_v2_item("archived"),
        "alice has archived an issue in a project of Acme",
        "",
    ),
    row(
        "projects_v2_item",
        "restored",
        projects_v2_item("restored", None),
        "alice has restored an item in a project of Acme",
        "",
    ),
    row(
        "projects_v2_item",
        "reordered",
        projects_v2_item("reordered"),
        "alice has moved an issue in a project of Acme",
        "",
    ),
    row(
        "projects_v2_item",
        "converted",
        projects_v2_item("converted"),
        "alice has converted a draft issue to an issue in a project of Acme",
        "",
    ),
    *each(
        "projects_v2_status_update",
        {
            "created": "posted a status update to",
            "edited": "edited a status update of",
            "deleted": "deleted a status update of",
        },
        status_update,
        lambda verb: f"alice has {verb} a project of Acme: {STATUS_UPDATE}",
        "",
    ),
]


@pytest.mark.parametrize(("event", "payload", "text", "link"), ROWS)
def test_render(event, payload, text, link):
    type_, rendered, rendered_link = github.render(event, payload)
    assert (rendered, rendered_link) == (text, link)
    assert type_ == github.event_type(event, payload)


# Coverage of GitHub's documentation ---------------------------------------------


def test_every_documented_event_has_a_renderer():
    assert set(DOCUMENTED) <= set(github.RENDERERS)


def test_every_renderer_is_a_documented_event():
    # default_branch is the center's own name for a repository event (reference §3.1).
    assert set(github.RENDERERS) - set(DOCUMENTED) == {"default_branch"}


def test_every_documented_event_and_action_has_a_row():
    covered = {(param.values[0], param.values[1].get("action")) for param in ROWS}
    missing = {
        (event, action)
        for event, actions in DOCUMENTED.items()
        for action in actions
        if (event, action) not in covered
    }
    assert not missing


@pytest.mark.parametrize(("event", "payload", "text", "link"), ROWS)
def test_no_row_is_a_fallback(event, payload, text, link):
    assert not text.startswith("Some "), "a documented event has a text of its own"
    assert not text.startswith("Unknown ") or dict.get(payload, "action") == "frobnicated"


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("issues", issues("frobnicated")),
        ("discussion", discussion("frobnicated")),
        ("workflow_run", workflow_run("frobnicated")),
        ("star", github_event("frobnicated")),
        ("made_up_event", github_event("created")),
        ("sponsorship", sponsorship(None)),
    ],
)
def test_unknown_event_or_action_gives_the_fallback(event, payload):
    assert github.render(event, payload) == (event, f"Some {event} happened", "")


# Groups ------------------------------------------------------------------------

ANALYZER = parse_analyzer(
    {"administrativeGroup": "orgz", "map": [{"group": "ops", "items": ["widgets"]}]}
)


def test_administrative_events():
    assert github.ADMINISTRATIVE_EVENTS == ADMINISTRATIVE
    assert "default_branch" not in github.ADMINISTRATIVE_EVENTS


def first_payloads():
    seen = {}
    for param in ROWS:
        seen.setdefault(param.values[0], param.values[1])
    return sorted(seen.items())


@pytest.mark.parametrize(("event", "payload"), first_payloads())
def test_group_of_each_event(event, payload):
    type_ = github.event_type(event, payload)
    if event in ADMINISTRATIVE:
        expected = "orgz"
    elif dict.get(payload, "repository"):
        expected = "ops"
    else:
        expected = "acme"  # no repository named: the default group
    assert github.group(type_, payload, ANALYZER, "Acme") == expected


def test_repository_level_events_follow_the_repository_map():
    payload = workflow_run("completed", "success")
    payload["repository"] = github_repository_object("gadgets")
    assert github.group("workflow_run", payload, ANALYZER, "Acme") == "acme"
    assert github.group("workflow_run", workflow_run("requested"), ANALYZER, "Acme") == "ops"


def test_administrative_group_is_configurable():
    analyzer = AnalyzerConfig(administrative_group="admin")
    assert github.group("team", team("created"), analyzer, "Acme") == "admin"
    assert github.group("member", github_event("added"), analyzer, "Acme") == "admin"


# Ignore rules --------------------------------------------------------------------

IGNORING = AnalyzerConfig(
    ignore=(
        "watch",
        "check_suite",
        "push:gh-readonly-queue/*",
        "push:refs/tags/nightly-*",
        "pull_request:synchronize",
        "issues:*labeled",
        "repository:edited",
        "made_up_event",
    )
)


@pytest.mark.parametrize(
    ("type_", "payload", "expected"),
    [
        pytest.param("watch", github_watch(), True, id="event"),
        pytest.param("check_suite", check_suite("completed", "success"), True, id="event-2"),
        pytest.param("check_run", check_run("completed"), False, id="other-event"),
        pytest.param(
            "push",
            github_push(1, "refs/heads/gh-readonly-queue/master/pr-42-5f3c2a7e"),
            True,
            id="push-merge-queue-branch",
        ),
        pytest.param(
            "push", github_push(1, "refs/heads/gh-readonly-queue"), False, id="push-no-slash"
        ),
        pytest.param("push", github_push(1, "refs/heads/master"), False, id="push-master"),
        pytest.param(
            "push",
            github_push(0, "refs/tags/nightly-2024-05-04", created=True),
            True,
            id="push-tag",
        ),
        pytest.param(
            "push", github_push(0, "refs/tags/v1.0", created=True), False, id="push-tag-2"
        ),
        pytest.param("push", github_push(0, "nightly-x"), False, id="push-tag-pattern-anchored"),
        pytest.param("pull_request", pull_request("synchronize"), True, id="event-action"),
        pytest.param("pull_request", pull_request("opened"), False, id="event-other-action"),
        pytest.param("issues", issues("labeled"), True, id="action-pattern"),
        pytest.param("issues", issues("unlabeled"), True, id="action-pattern-2"),
        pytest.param("issues", issues("opened"), False, id="action-pattern-other"),
        pytest.param("repository", github_repository("edited"), True, id="repository-edited"),
        pytest.param("repository", github_repository("created"), False, id="repository-created"),
        pytest.param(
            "default_branch", github_default_branch(), True, id="default-branch-as-repository"
        ),
        pytest.param("made_up_event", {}, True, id="unknown-event"),
        pytest.param("issues", {"action": None}, False, id="odd-action"),
        pytest.param("push", {"ref": 42}, False, id="odd-ref"),
        pytest.param("push", None, False, id="no-payload"),
    ],
)
def test_is_ignored(type_, payload, expected):
    assert github.is_ignored(type_, payload, IGNORING) is expected


def test_ignore_a_default_branch_change_only():
    analyzer = AnalyzerConfig(ignore=("default_branch",))
    assert github.is_ignored("default_branch", github_default_branch(), analyzer)
    assert not github.is_ignored("repository", github_repository("edited"), analyzer)


# Fallbacks are told once, at debug level -------------------------------------------


@pytest.fixture
def fallbacks(monkeypatch):
    told = github.FallbackLog(limit=3)
    monkeypatch.setattr(github, "FALLBACKS", told)
    return told


def debug_events(events):
    return [event for event in events if event.get("log_namespace", "").endswith("FallbackLog")]


def test_fallback_is_told_once_per_event_and_action(fallbacks):
    with capturedLogs() as events:
        for _ in range(3):
            github.render("made_up_event", {"action": "x"})
            github.render("issues", issues("frobnicated"))
            github.render("issues", {"action": "opened"})
    told = debug_events(events)
    assert [(e["event"], e["action"], e["reason"]) for e in told] == [
        ("made_up_event", "x", "unknown event"),
        ("issues", "frobnicated", "unknown action"),
        ("issues", "opened", "unreadable sender.login"),
    ]
    assert all(e["log_level"] == LogLevel.debug for e in told)


def test_spec_unknown_actions_are_told_too(fallbacks):
    with capturedLogs() as events:
        github.render("pull_request", pull_request("frobnicated"))
        github.render("repository", github_repository("frobnicated"))
    assert [e["reason"] for e in debug_events(events)] == ["unknown action", "unknown action"]


def test_fallbacks_remembered_are_bounded(fallbacks):
    with capturedLogs() as events:
        for index in range(10):
            github.render("issues", issues(f"made-up-{index}"))
    assert len(debug_events(events)) == 3
    assert len(fallbacks.seen) == 3


def test_huge_action_is_told_cut(fallbacks):
    with capturedLogs() as events:
        github.render("issues", issues("x" * 100_000))
    (told,) = debug_events(events)
    assert len(told["action"]) == 100


def test_renderer_error_is_the_fallback(fallbacks, monkeypatch):
    def broken(payload):
        raise RuntimeError("bug")

    monkeypatch.setitem(github.RENDERERS, "issues", broken)
    with capturedLogs() as events:
        assert github.render("issues", issues("opened")) == (
            "issues",
            "Some issues happened",
            "",
        )
    (told,) = debug_events(events)
    assert told["reason"] == "renderer error"
    assert told["log_failure"].check(RuntimeError)


# Odd payloads never raise ------------------------------------------------------------

ODD_VALUES = [None, [], {}, 7, 1.5, True, "", "x" * 10_000, [1, "a"], {"a": None}]


def assert_sane(result):
    type_, text, link = result
    assert isinstance(type_, str) and isinstance(text, str) and isinstance(link, str)
    assert text, "a notification always says something"
    # An odd value may show as a number, never as a Python repr.
    for leak in ("None", "True", "False", "{", "["):
        assert leak not in text, text


@pytest.mark.parametrize(("event", "payload"), first_payloads())
def test_every_odd_value_anywhere_gives_a_sane_text(event, payload):
    for path in payload_paths(payload):
        for value in ODD_VALUES:
            assert_sane(github.render(event, changed(copy.deepcopy(payload), path, value)))
        missing = copy.deepcopy(payload)
        target = missing
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]
        assert_sane(github.render(event, missing))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
PAYLOADS = [payload for _, payload in first_payloads()]
KEYS = st.sampled_from(sorted({key for payload in PAYLOADS for key in payload}))


@st.composite
def mutated_payloads(draw):
    """A row's payload with one value, anywhere in it, replaced by any JSON."""
    payload = copy.deepcopy(draw(st.sampled_from(PAYLOADS)))
    every_path = list(payload_paths(payload))
    if every_path:
        changed(payload, draw(st.sampled_from(every_path)), draw(JSON))
    return payload


@settings(max_examples=500, deadline=None)
@given(
    event=st.sampled_from(sorted(github.RENDERERS)),
    payload=JSON | st.dictionaries(KEYS, JSON, max_size=8) | mutated_payloads(),
)
def test_render_never_raises(event, payload):
    type_, text, link = github.render(event, payload)
    assert isinstance(type_, str)
    assert isinstance(text, str) and text
    assert isinstance(link, str)
    assert isinstance(github.group(type_, payload, ANALYZER, "Acme"), str)
    assert isinstance(github.is_ignored(type_, payload, IGNORING), bool)
