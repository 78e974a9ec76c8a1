"""Builders of small, realistic service payloads for the tests.

Each builder returns a fresh object with the shape the service sends (only
the fields the center reads, plus a few neighbours so that shapes stay
honest) and our own values: organization ``Acme``, repository ``widgets``,
users ``alice`` and ``bob``. Keyword arguments change what a test is about;
``**extra`` adds or overrides top-level fields.

GitHub builders return the JSON body; the event name goes in the
``X-GitHub-Event`` header, so it is the test's to choose (usually the
builder's name without ``github_``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

ORG = "Acme"
GITHUB = "https://github.com"
SHA = "5f3c2a7e9d1b4c6a8e0f2d4b6a8c0e2f4a6b8d0c"
OTHER_SHA = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567"


# GitHub ---------------------------------------------------------------------


def github_user(login: str = "alice") -> dict[str, Any]:
    """A GitHub user as in ``sender``, ``comment.user``, ``assignees``…"""
    return {
        "login": login,
        "id": sum(map(ord, login)),
        "html_url": f"{GITHUB}/{login}",
        "type": "User",
        "site_admin": False,
    }


def github_repository_object(
    name: str = "widgets",
    owner: str = ORG,
    *,
    fork: bool = False,
    description: str | None = "",
    default_branch: str = "master",
    private: bool = False,
) -> dict[str, Any]:
    """A GitHub repository object, as in every repository-scoped event."""
    full_name = f"{owner}/{name}"
    return {
        "id": 1000 + len(name),
        "name": name,
        "full_name": full_name,
        "owner": {"login": owner, "html_url": f"{GITHUB}/{owner}"},
        "private": private,
        "html_url": f"{GITHUB}/{full_name}",
        "clone_url": f"{GITHUB}/{full_name}.git",
        "description": description,
        "fork": fork,
        "default_branch": default_branch,
    }


def github_commit(
    message: str = "Add the widget factory",
    *,
    committer: str | None = "alice",
    author: str | None = None,
    repo: str = "widgets",
    owner: str = ORG,
    sha: str = SHA,
) -> dict[str, Any]:
    """A commit as in ``push.commits`` and ``push.head_commit``.

    ``author`` defaults to the committer; a username of None leaves the
    ``username`` key out, as GitHub does for an e-mail tied to no account.
    """
    author = committer if author is None else author

    def person(username: str | None) -> dict[str, Any]:
        who = username or "someone"
        person = {"name": who.title(), "email": f"{who}@acme.test"}
        if username is not None:
            person["username"] = username
        return person

    return {
        "id": sha,
        "tree_id": OTHER_SHA,
        "distinct": True,
        "message": message,
        "timestamp": "2024-05-04T10:00:00+02:00",
        "url": f"{GITHUB}/{owner}/{repo}/commit/{sha}",
        "author": person(author),
        "committer": person(committer),
        "added": [],
        "removed": [],
        "modified": ["README.md"],
    }


def github_push(
    commits: int = 1,
    ref: str = "refs/heads/master",
    *,
    committer: str | None = "alice",
    author: str | None = None,
    pusher: str = "alice",
    repo: str = "widgets",
    owner: str = ORG,
    message: str = "Add the widget factory",
    forced: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A ``push`` event with ``commits`` commits, the last one being the head commit.

    With ``commits=0`` (a forced update) the head commit is still there, as
    GitHub sends it; pass ``head_commit=None`` for a deleted branch.
    """
    history = [
        github_commit(
            message if index == commits - 1 else f"Step {index + 1}",
            committer=committer,
            author=author,
            repo=repo,
            owner=owner,
            sha=f"{index:02d}{SHA[2:]}" if index != commits - 1 else SHA,
        )
        for index in range(commits)
    ]
    head = history[-1] if history else github_commit(message, committer=committer, author=author)
    payload = {
        "ref": ref,
        "before": OTHER_SHA,
        "after": SHA,
        "created": False,
        "deleted": False,
        "forced": forced or commits == 0,
        "base_ref": None,
        "compare": f"{GITHUB}/{owner}/{repo}/compare/{OTHER_SHA[:12]}...{SHA[:12]}",
        "commits": history,
        "head_commit": head,
        "repository": github_repository_object(repo, owner),
        "pusher": {"name": pusher, "email": f"{pusher}@acme.test"},
        "sender": github_user(pusher),
    }
    payload.update(extra)
    return payload


def github_ping(zen: str = "Keep it logically awesome.", **extra: Any) -> dict[str, Any]:
    """A ``ping`` event, sent when an organization hook is created."""
    payload = {
        "zen": zen,
        "hook_id": 4242,
        "hook": {"type": "Organization", "id": 4242, "events": ["*"], "active": True},
        "organization": {"login": ORG, "id": 77},
        "sender": github_user(),
    }
    payload.update(extra)
    return payload


def github_create(ref_type: str = "tag", ref: str = "v1.0.0", **extra: Any) -> dict[str, Any]:
    """A ``create`` event: a new tag or branch."""
    payload = {
        "ref": ref,
        "ref_type": ref_type,
        "master_branch": "master",
        "description": "",
        "pusher_type": "user",
        "repository": github_repository_object(),
        "sender": github_user(),
    }
    payload.update(extra)
    return payload


def github_delete(ref_type: str = "branch", ref: str = "feature/x", **extra: Any) -> dict[str, Any]:
    """A ``delete`` event: a removed tag or branch."""
    payload = {
        "ref": ref,
        "ref_type": ref_type,
        "pusher_type": "user",
        "repository": github_repository_object(),
        "sender": github_user(),
    }
    payload.update(extra)
    return payload


def github_comment(body: str, login: str = "alice", **fields: Any) -> dict[str, Any]:
    """A comment object, as in ``commit_comment`` and ``issue_comment``."""
    comment = {
        "id": 9001,
        "html_url": f"{GITHUB}/{ORG}/widgets/comments/9001",
        "user": github_user(login),
        "body": body,
        "created_at": "2024-05-04T10:00:00Z",
    }
    comment.update(fields)
    return comment


def github_commit_comment(
    body: str = "Nice refactoring.", *, login: str = "alice", commit_id: str = SHA, **extra: Any
) -> dict[str, Any]:
    """A ``commit_comment`` event."""
    comment = github_comment(
        body,
        login,
        commit_id=commit_id,
        html_url=f"{GITHUB}/{ORG}/widgets/commit/{commit_id}#commitcomment-9001",
    )
    payload = {
        "action": "created",
        "comment": comment,
        "repository": github_repository_object(),
        "sender": github_user(login),
    }
    payload.update(extra)
    return payload


def github_issue_comment(
    action: str = "created",
    body: str = "I can reproduce this.",
    *,
    login: str = "alice",
    number: int = 12,
    title: str = "Widgets spin backwards",
    **extra: Any,
) -> dict[str, Any]:
    """An ``issue_comment`` event on issue ``number``."""
    payload = {
        "action": action,
        "issue": {
            "number": number,
            "title": title,
            "state": "open",
            "html_url": f"{GITHUB}/{ORG}/widgets/issues/{number}",
            "user": github_user("bob"),
        },
        "comment": github_comment(
            body,
            login,
            html_url=f"{GITHUB}/{ORG}/widgets/issues/{number}#issuecomment-9001",
        ),
        "repository": github_repository_object(),
        "sender": github_user(login),
    }
    payload.update(extra)
    return payload


def github_fork(forkee_owner: str = "bob", **extra: Any) -> dict[str, Any]:
    """A ``fork`` event: ``Acme/widgets`` forked to ``<forkee_owner>/widgets``."""
    payload = {
        "forkee": github_repository_object("widgets", forkee_owner, fork=True),
        "repository": github_repository_object(),
        "sender": github_user(forkee_owner),
    }
    payload.update(extra)
    return payload


def github_pull_request(
    action: str = "opened",
    *,
    number: int = 42,
    title: str = "Make widgets spin forwards",
    sender: str = "alice",
    assignees: tuple[str, ...] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A ``pull_request`` event. Add ``requested_reviewer=github_user("bob")``,
    ``milestone={"title": "1.0"}``… through ``extra`` for the actions that have them."""
    payload = {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": title,
            "state": "open",
            "html_url": f"{GITHUB}/{ORG}/widgets/pull/{number}",
            "user": github_user(sender),
            "assignee": github_user(assignees[0]) if assignees else None,
            "assignees": [github_user(login) for login in assignees],
            "milestone": None,
            "draft": False,
            "merged": False,
        },
        "repository": github_repository_object(),
        "sender": github_user(sender),
    }
    payload.update(extra)
    return payload


def github_repository(
    action: str = "created",
    *,
    name: str = "widgets",
    fork: bool = False,
    description: str | None = "",
    **extra: Any,
) -> dict[str, Any]:
    """A ``repository`` event (organization level)."""
    payload = {
        "action": action,
        "repository": github_repository_object(name, fork=fork, description=description),
        "organization": {"login": ORG, "id": 77},
        "sender": github_user(),
    }
    payload.update(extra)
    return payload


def github_default_branch(new: str = "main", old: str = "master", **extra: Any) -> dict[str, Any]:
    """A ``repository`` event, action ``edited``, changing the default branch.

    Sent with the ``repository`` event name; the center tells it apart.
    """
    payload = github_repository("edited", changes={"default_branch": {"from": old}})
    payload["repository"]["default_branch"] = new
    payload.update(extra)
    return payload


def github_status(
    state: str = "success",
    *,
    context: str | None = "ci/jenkins",
    description: str | None = "The build succeeded",
    target_url: str | None = "https://ci.acme.test/job/widgets/7/",
    sha: str = SHA,
    **extra: Any,
) -> dict[str, Any]:
    """A ``status`` event: a commit status set by a CI."""
    payload = {
        "id": 31337,
        "sha": sha,
        "name": f"{ORG}/widgets",
        "context": context,
        "description": description,
        "state": state,
        "target_url": target_url,
        "branches": [{"name": "master", "commit": {"sha": sha}}],
        "repository": github_repository_object(),
        "sender": github_user(),
    }
    payload.update(extra)
    return payload


def github_watch(login: str = "bob", **extra: Any) -> dict[str, Any]:
    """A ``watch`` event: someone starred the repository."""
    payload = {
        "action": "started",
        "repository": github_repository_object(),
        "sender": github_user(login),
    }
    payload.update(extra)
    return payload


# GitHub, any event ----------------------------------------------------------


def github_organization(login: str = ORG) -> dict[str, Any]:
    """An organization as in ``organization`` (it has no ``html_url`` in webhooks)."""
    return {
        "login": login,
        "id": 77,
        "url": f"https://api.github.com/orgs/{login}",
        "description": "",
    }


def github_event(
    action: str | None = None,
    *,
    sender: str = "alice",
    repository: dict[str, Any] | bool = True,
    organization: dict[str, Any] | bool = True,
    **fields: Any,
) -> dict[str, Any]:
    """A GitHub event of any type: the envelope every event shares, plus ``fields``.

    The envelope is ``action`` (left out when None, for events that have
    none), ``sender``, ``repository`` and ``organization``: True gives
    ``Acme/widgets`` and ``Acme``, False leaves them out (organization-level
    and account-level events), an object is used as it is. ``fields`` are the
    event's own objects (``issue=github_issue_object()``, ``alert={…}``).
    """
    payload: dict[str, Any] = {} if action is None else {"action": action}
    if repository:
        payload["repository"] = github_repository_object() if repository is True else repository
    if organization:
        payload["organization"] = github_organization() if organization is True else organization
    payload["sender"] = github_user(sender)
    payload.update(fields)
    return payload


def github_issue_object(
    number: int = 12,
    title: str = "Widgets spin backwards",
    *,
    kind: str = "issues",
    **fields: Any,
) -> dict[str, Any]:
    """An issue of ``Acme/widgets``; with ``kind="discussions"``, a discussion."""
    issue = {
        "id": 7000 + number,
        "number": number,
        "title": title,
        "state": "open",
        "html_url": f"{GITHUB}/{ORG}/widgets/{kind}/{number}",
        "user": github_user("bob"),
        "labels": [],
        "assignee": None,
        "milestone": None,
        "body": "It spins the wrong way.",
    }
    issue.update(fields)
    return issue


def github_pull_request_object(
    number: int = 42, title: str = "Make widgets spin forwards", **fields: Any
) -> dict[str, Any]:
    """The ``pull_request`` object of :func:`github_pull_request`, for the review events."""
    pull_request = github_pull_request(number=number, title=title)["pull_request"]
    pull_request.update(fields)
    return pull_request


def github_team(name: str = "Owners", **fields: Any) -> dict[str, Any]:
    """A team of the ``Acme`` organization."""
    slug = name.lower().replace(" ", "-")
    team = {
        "id": 600,
        "name": name,
        "slug": slug,
        "privacy": "closed",
        "permission": "pull",
        "html_url": f"{GITHUB}/orgs/{ORG}/teams/{slug}",
    }
    team.update(fields)
    return team


def github_installation(
    app: str = "widget-bot", account: str = ORG, **fields: Any
) -> dict[str, Any]:
    """A GitHub App installation on ``account``, as in the ``installation*`` events."""
    installation = {
        "id": 5150,
        "app_id": 31,
        "app_slug": app,
        "account": github_user(account),
        "repository_selection": "selected",
        "html_url": f"{GITHUB}/organizations/{account}/settings/installations/5150",
    }
    installation.update(fields)
    return installation


# Docker Hub -----------------------------------------------------------------


def dockerhub_push(
    repo_name: str = "acme/widgets", pusher: str = "alice", **extra: Any
) -> dict[str, Any]:
    """A Docker Hub webhook call for an image pushed to ``repo_name``."""
    namespace, _, name = repo_name.partition("/")
    payload = {
        "callback_url": f"https://registry.hub.docker.com/u/{repo_name}/hook/0123abcd/",
        "push_data": {"images": [], "pushed_at": 1714816800, "pusher": pusher, "tag": "latest"},
        "repository": {
            "name": name,
            "namespace": namespace,
            "owner": namespace,
            "repo_name": repo_name,
            "repo_url": f"https://registry.hub.docker.com/u/{repo_name}/",
            "is_private": False,
            "status": "Active",
        },
    }
    payload.update(extra)
    return payload


def dockerhub_build_failure(
    storage_url: str = "https://api.mailgun.test/v3/domains/acme.test/messages/abc123",
    **extra: Any,
) -> dict[str, Any]:
    """A Mailgun "stored message" event announcing Docker Hub's build failure mail."""
    payload = {
        "event": "stored",
        "timestamp": 1714816800.5,
        "id": "mailgun-event-1",
        "storage": {"url": storage_url, "key": "abc123"},
        "message": {
            "headers": {
                "from": "no-reply@notify.docker.com",
                "to": "docker-hub@acme.test",
                "subject": "There's been an issue with your automated build",
            },
        },
    }
    payload.update(extra)
    return payload


def dockerhub_failure_mail(
    repository: str = "acme/widgets",
    link: str = "https://hub.docker.com/r/acme/widgets/builds/b5e7c1d2/",
) -> str:
    """The plain-text body of Docker Hub's build failure mail."""
    return (
        "Hello,\n\n"
        f'Your automated build for "{repository}" has failed.\n'
        "Check the build logs:\n"
        f"{link}\n\n"
        '-- The "Docker Hub" team\n'
    )


def mailgun_stored_message(body_plain: str) -> dict[str, Any]:
    """The stored message Mailgun answers with, as the Docker Hub gate fetches it."""
    return {
        "From": "no-reply@notify.docker.com",
        "subject": "There's been an issue with your automated build",
        "body-plain": body_plain,
    }


# Jenkins --------------------------------------------------------------------


def jenkins(
    name: str = "widgets-build",
    phase: str = "COMPLETED",
    status: str | None = "SUCCESS",
    *,
    number: int = 7,
    **extra: Any,
) -> dict[str, Any]:
    """A Jenkins Notification plugin call; ``status=None`` leaves it out, as in ``STARTED``."""
    build: dict[str, Any] = {
        "full_url": f"https://ci.acme.test/job/{name}/{number}/",
        "number": number,
        "phase": phase,
        "url": f"job/{name}/{number}/",
        "scm": {"branch": "origin/master", "commit": SHA},
    }
    if status is not None:
        build["status"] = status
    payload = {"name": name, "url": f"job/{name}/", "build": build}
    payload.update(extra)
    return payload


# Phabricator ----------------------------------------------------------------


def phabricator_story(
    object_phid: str | None = "PHID-TASK-acme0000widgets",
    text: str = "alice created T42: Widgets spin backwards.",
    *,
    story_id: str = "4242",
    author_phid: str = "PHID-USER-alice0000000000",
    transactions: tuple[str, ...] = ("PHID-XACT-TASK-aaaa1111", "PHID-XACT-TASK-bbbb2222"),
    epoch: str = "1714816800",
) -> dict[str, Any]:
    """A feed story as Phabricator's ``feed.http-hooks`` mean it (the nested form).

    ``object_phid=None`` gives a story without an object.
    """
    data: dict[str, Any] = {"transactionPHIDs": {phid: phid for phid in transactions}}
    if object_phid is not None:
        data["objectPHID"] = object_phid
    return {
        "storyID": story_id,
        "storyType": "PhabricatorApplicationTransactionFeedStory",
        "storyData": data,
        "storyAuthorPHID": author_phid,
        "storyText": text,
        "epoch": epoch,
    }


def phabricator_form(*args: Any, **kwargs: Any) -> list[tuple[str, str]]:
    """The same story as the form fields Phabricator posts, with bracket keys.

    Takes :func:`phabricator_story`'s arguments.
    """
    story = phabricator_story(*args, **kwargs)
    pairs: list[tuple[str, str]] = []
    for key, value in story.items():
        if key != "storyData":
            pairs.append((key, value))
            continue
        for data_key, data_value in value.items():
            if isinstance(data_value, dict):
                pairs.extend(
                    (f"storyData[{data_key}][{name}]", item) for name, item in data_value.items()
                )
            else:
                pairs.append((f"storyData[{data_key}]", data_value))
    return pairs


def phabricator_form_body(*args: Any, **kwargs: Any) -> bytes:
    """:func:`phabricator_form` url-encoded, as the body of the request."""
    return urlencode(phabricator_form(*args, **kwargs)).encode()
