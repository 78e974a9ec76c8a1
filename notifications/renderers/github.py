"""GitHub webhook payloads as notification texts (SPEC §4.1) and groups (SPEC §5).

Each event type has one entry in :data:`RENDERERS`: a function from the
payload to ``(text, link)``. To teach the center a new event, add a function
and a line to the table; :func:`render` does the rest, including the fallback
text for events it does not know and payloads it cannot read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..analyzers import AnalyzerConfig, item_matches
from ..texts import SEPARATOR, commit_title, cut
from . import UnreadablePayload, dig, need, text_at

Renderer = Callable[[Any], tuple[str, str]]

#: Organization-level events: they go to the administrative group, not to a
#: repository's group. ``default_branch`` is not one of them (SPEC §3.1).
ADMINISTRATIVE_EVENTS = frozenset(
    {
        "membership",
        "ping",
        "repository",
        "organization",
        "team",
        "member",
        "org_block",
        "team_add",
        "installation",
        "installation_repositories",
        "meta",
        "sponsorship",
        "security_advisory",
    }
)

_BRANCH_PREFIX = "refs/heads/"


def event_type(event: str, payload: Any) -> str:
    """The notification type of an event: the event name, or ``default_branch``.

    A ``repository`` event whose action is ``edited`` and whose ``changes``
    has ``default_branch`` is told apart, as the older system did.
    """
    if (
        event == "repository"
        and dig(payload, "action") == "edited"
        and isinstance(dig(payload, "changes", default=None), dict)
        and "default_branch" in payload["changes"]
    ):
        return "default_branch"
    return event


def branch_of(ref: str) -> str:
    """A ref without its leading ``refs/heads/``."""
    return ref.removeprefix(_BRANCH_PREFIX)


def where(payload: Any) -> str:
    """Repository name, plus `` (branch <b>)`` unless the branch is empty or ``master``."""
    repository = text_at(payload, "repository", "name")
    if repository == "":
        return ""
    branch = branch_of(text_at(payload, "ref"))
    if branch in ("", "master"):
        return repository
    return f"{repository} (branch {branch})"


def _under(base: str, suffix: str) -> str:
    # A link built on a missing html_url would be a bare path: no link is better.
    return base + suffix if base else ""


def _person(commit: Any, role: str) -> str:
    # GitHub omits the username of a committer whose e-mail is not tied to an
    # account; their name is then the best we have.
    return text_at(commit, role, "username") or text_at(commit, role, "name")


def render_ping(payload: Any) -> tuple[str, str]:
    """``« <zen> » — GitHub Webhooks ping zen aphorism.``"""
    return f"« {need(payload, 'zen')} » — GitHub Webhooks ping zen aphorism.", ""


def render_push(payload: Any) -> tuple[str, str]:
    """One commit: the commit; none: a forced update; several: how many."""
    commits = dig(payload, "commits", default=None)
    if not isinstance(commits, list):
        raise UnreadablePayload("commits")
    if len(commits) == 1:
        commit = dig(payload, "head_commit", default=None)
        committer = _person(commit, "committer")
        if not committer:
            raise UnreadablePayload("head_commit.committer")
        text = f"{committer} committed {commit_title(need(commit, 'message'))}"
        author = _person(commit, "author")
        if author and author != committer:
            text += f" (authored by {author})"
        return text, text_at(commit, "url")
    pusher = need(payload, "pusher", "name")
    if not commits:
        return f"{pusher} forcely updated {where(payload)}", text_at(payload, "compare")
    return (
        f"{pusher} pushed {len(commits)} commits to {where(payload)}",
        text_at(payload, "compare"),
    )


_CREATE_LINKS = {"tag": "/releases/tag/", "branch": "/tree/"}
_DELETE_LINKS = {"tag": "/tags", "branch": "/branches"}


def render_create(payload: Any) -> tuple[str, str]:
    """A new tag or branch."""
    ref_type, ref = need(payload, "ref_type"), need(payload, "ref")
    if ref_type not in _CREATE_LINKS:
        return f"Unknown create reference: {ref_type} {ref}", ""
    repository = need(payload, "repository", "full_name")
    link = _under(text_at(payload, "repository", "html_url"), _CREATE_LINKS[ref_type] + ref)
    return f"New {ref_type} on {repository}: {ref}", link


def render_delete(payload: Any) -> tuple[str, str]:
    """A removed tag or branch."""
    ref_type, ref = need(payload, "ref_type"), need(payload, "ref")
    if ref_type not in _DELETE_LINKS:
        return f"Unknown delete reference: {ref_type} {ref}", ""
    repository = need(payload, "repository", "full_name")
    link = _under(text_at(payload, "repository", "html_url"), _DELETE_LINKS[ref_type])
    return f"Removed {ref_type} on {repository}: {ref}", link


def render_commit_comment(payload: Any) -> tuple[str, str]:
    """A comment on a commit, its body cut to 114 characters."""
    comment = dig(payload, "comment", default=None)
    author = need(comment, "user", "login")
    commit = need(comment, "commit_id")[:8]
    body = cut(need(comment, "body"))
    return f"{author} added a comment to {commit}: {body}", text_at(comment, "html_url")


_ISSUE_COMMENT_VERBS = {"created": "added", "edited": "edited", "deleted": "deleted"}


def render_issue_comment(payload: Any) -> tuple[str, str]:
    """A comment on an issue or a pull request, added, edited or deleted."""
    action = need(payload, "action")
    link = text_at(payload, "comment", "html_url")
    verb = _ISSUE_COMMENT_VERBS.get(action)
    if verb is None:
        return f"Unknown issue comment action: {action}", link
    author = need(payload, "comment", "user", "login")
    issue = f"#{need(payload, 'issue', 'number')}{SEPARATOR}{need(payload, 'issue', 'title')}"
    text = f"{author} {verb} a comment to issue {issue}"
    if action != "deleted":
        text += f": {cut(need(payload, 'comment', 'body'))}"
    return text, link


def render_fork(payload: Any) -> tuple[str, str]:
    """A repository forked."""
    base = need(payload, "repository", "full_name")
    fork = need(payload, "forkee", "full_name")
    return f"{base} has been forked to {fork}", text_at(payload, "forkee", "html_url")


def _reviewer(payload: Any) -> str:
    return text_at(payload, "requested_reviewer", "login") or text_at(
        payload, "requested_team", "name"
    )


def _last_assignee(payload: Any) -> str:
    # The older system named the last of the pull request's assignees; the
    # event's own ``assignee`` stands in when that list is missing.
    return text_at(payload, "pull_request", "assignees", -1, "login") or text_at(
        payload, "assignee", "login"
    )


def _milestone(payload: Any) -> str:
    return text_at(payload, "milestone", "title") or text_at(
        payload, "pull_request", "milestone", "title"
    )


def _suffix(before: str, value: str) -> str:
    # Appended only when the payload named someone or something.
    return before + value if value else ""


def _either(before: str, value: str, otherwise: str) -> str:
    # Names what the payload names, else stays vague rather than leave a blank.
    return before + value if value else otherwise


#: ``pull_request`` actions: ``(author, "#<n> — <title>", payload)`` → text.
_PULL_REQUEST_TEXTS: dict[str, Callable[[str, str, Any], str]] = {
    # The older system's eight texts, byte for byte.
    "opened": lambda a, pr, p: f"{a} has opened a pull request: {pr}",
    "closed": lambda a, pr, p: f"{a} has closed the pull request {pr}",
    "reopened": lambda a, pr, p: f"{a} has reopened the pull request {pr}",
    "edited": lambda a, pr, p: f"{a} has edited the pull request {pr}",
    "labeled": lambda a, pr, p: f"{a} has labeled the pull request {pr}",
    "unlabeled": lambda a, pr, p: f"{a} has removed a label from the pull request {pr}",
    "assigned": lambda a, pr, p: (
        f"{a} has assigned the pull request {pr}" + _suffix(" to ", _last_assignee(p))
    ),
    "unassigned": lambda a, pr, p: f"{a} has edited the assignees from the pull request {pr}",
    # Actions GitHub added since, in the same style.
    "synchronize": lambda a, pr, p: f"{a} has pushed new commits to the pull request {pr}",
    "ready_for_review": lambda a, pr, p: (
        f"{a} has marked the pull request {pr} as ready for review"
    ),
    "converted_to_draft": lambda a, pr, p: f"{a} has converted the pull request {pr} to a draft",
    "review_requested": lambda a, pr, p: (
        f"{a} has requested a review of the pull request {pr}" + _suffix(" from ", _reviewer(p))
    ),
    "review_request_removed": lambda a, pr, p: (
        f"{a} has removed {_either('the review request for ', _reviewer(p), 'a review request')}"
        f" from the pull request {pr}"
    ),
    "locked": lambda a, pr, p: f"{a} has locked the pull request {pr}",
    "unlocked": lambda a, pr, p: f"{a} has unlocked the pull request {pr}",
    "milestoned": lambda a, pr, p: (
        f"{a} has added the pull request {pr} to "
        + _either("the milestone ", _milestone(p), "a milestone")
    ),
    "demilestoned": lambda a, pr, p: (
        f"{a} has removed the pull request {pr} from "
        + _either("the milestone ", _milestone(p), "its milestone")
    ),
    "auto_merge_enabled": lambda a, pr, p: f"{a} has enabled auto-merge for the pull request {pr}",
    "auto_merge_disabled": lambda a, pr, p: (
        f"{a} has disabled auto-merge for the pull request {pr}"
    ),
    "enqueued": lambda a, pr, p: f"{a} has added the pull request {pr} to the merge queue",
    "dequeued": lambda a, pr, p: f"{a} has removed the pull request {pr} from the merge queue",
}


def render_pull_request(payload: Any) -> tuple[str, str]:
    """A pull request opened, closed, labeled, synchronized…"""
    action = need(payload, "action")
    link = text_at(payload, "pull_request", "html_url")
    text_for = _PULL_REQUEST_TEXTS.get(action)
    if text_for is None:
        return f"Unknown pull request action: {action}", link
    author = need(payload, "sender", "login")
    pull_request = f"#{need(payload, 'number')}{SEPARATOR}{need(payload, 'pull_request', 'title')}"
    return text_for(author, pull_request, payload), link


_REPOSITORY_TEXTS = {
    "created": "New repository {}",
    "deleted": "Repository {} deleted (danger zone)",
    "publicized": "Repository {} is now public",
    "privatized": "Repository {} is now private",
}


def render_repository(payload: Any) -> tuple[str, str]:
    """A repository created, deleted, made public or private."""
    action = need(payload, "action")
    link = text_at(payload, "repository", "html_url")
    template = _REPOSITORY_TEXTS.get(action)
    if template is None:
        return f"Unknown repository action: {action}", link
    text = template.format(need(payload, "repository", "full_name"))
    if dig(payload, "repository", "fork", default=False) is True:
        text += " (fork)"
    description = text_at(payload, "repository", "description")
    if description:
        text += SEPARATOR + description
    return text, link


def render_default_branch(payload: Any) -> tuple[str, str]:
    """The default branch of a repository changed."""
    repository = need(payload, "repository", "full_name")
    new = need(payload, "repository", "default_branch")
    old = need(payload, "changes", "default_branch", "from")
    return (
        f"{repository} default branch is now '{new}' instead of '{old}'.",
        text_at(payload, "repository", "html_url"),
    )


def render_status(payload: Any) -> tuple[str, str]:
    """A commit status: context, description and state, the empty ones left out."""
    commit = need(payload, "sha")[:8]
    parts = (text_at(payload, key) for key in ("context", "description", "state"))
    status = SEPARATOR.join(part for part in parts if part)
    return f"Status of {commit}: {status}", text_at(payload, "target_url")


def render_watch(payload: Any) -> tuple[str, str]:
    """Someone starred a repository."""
    user = need(payload, "sender", "login")
    repository = need(payload, "repository", "full_name")
    return f"{user} starred {repository}", text_at(payload, "sender", "html_url")


#: Event type → renderer. One line per event the center knows how to tell.
RENDERERS: dict[str, Renderer] = {
    "ping": render_ping,
    "push": render_push,
    "create": render_create,
    "delete": render_delete,
    "commit_comment": render_commit_comment,
    "issue_comment": render_issue_comment,
    "fork": render_fork,
    "pull_request": render_pull_request,
    "repository": render_repository,
    "default_branch": render_default_branch,
    "status": render_status,
    "watch": render_watch,
}


def fallback_text(type_: str) -> str:
    """The text of an event the center does not know or cannot read."""
    return f"Some {type_} happened"


def render(event: str, payload: Any) -> tuple[str, str, str]:
    """``(type, text, link)`` of a GitHub event.

    Never raises: an unknown event, or a payload its renderer cannot read
    (missing keys, nulls, wrong types), gives ``Some <type> happened`` and no
    link, where the type is the normalised event name (see :func:`event_type`).
    """
    type_ = event_type(event, payload)
    renderer = RENDERERS.get(type_)
    if renderer is None:
        return type_, fallback_text(type_), ""
    try:
        text, link = renderer(payload)
    except Exception:
        # Anything odd in a payload must end as the fallback, never as a 5xx.
        return type_, fallback_text(type_), ""
    return type_, text, link


def group(type_: str, payload: Any, analyzer: AnalyzerConfig, door: str) -> str:
    """The group of a GitHub notification (SPEC §5).

    Organization-level events go to the administrative group; the others to
    the group of their repository's ``name``, or the default group when the
    payload names no repository.
    """
    if type_ in ADMINISTRATIVE_EVENTS:
        return analyzer.administrative_group
    repository = text_at(payload, "repository", "name")
    if not repository:
        return analyzer.default_group_for(door)
    return analyzer.group_for_item(repository, door)


def is_ignored(type_: str, payload: Any, analyzer: AnalyzerConfig) -> bool:
    """Whether the door's analyzer ``ignore`` list silences this event.

    Entries are an event type (``watch``), ``<type>:<action>``
    (``pull_request:labeled``), or for pushes ``push:<branch pattern>``
    (``push:dependabot/*``), matched against the ref without ``refs/heads/``;
    ``*`` stands for any run of characters in the action or branch.
    """
    if type_ == "push":
        detail = branch_of(text_at(payload, "ref"))
    else:
        detail = text_at(payload, "action")
    for entry in analyzer.ignore:
        name, colon, pattern = entry.partition(":")
        if name != type_:
            continue
        if not colon or item_matches(pattern, detail):
            return True
    return False
