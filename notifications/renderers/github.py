"""GitHub webhook payloads as notification texts (docs/reference.rst §4.1) and groups (§5).

Each event type has one entry in :data:`RENDERERS`: a function from the
payload to ``(text, link)``. Most events say what happened through their
``action``; their renderer is made by :func:`by_action` from a small table
action → text, so that teaching the center a new event or action is one entry.
:func:`render` does the rest: the fallback text ``Some <event> happened`` for
events and actions it does not know and for payloads it cannot read, each
told once at debug level (the only thing here that is not a pure function).

Conventions of the texts beyond the older system's own: who (``sender.login``) did
what to which object, the object last when it carries a free title
(``#<n> — <title>``); bodies and descriptions as one line cut to 114
characters; repositories by full name, except in ``push`` texts (by name, as
the older system's). Details a payload may lack are left out rather than left blank.
"""

from __future__ import annotations

from collections.abc import Callable
from string import Formatter
from typing import Any

from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from ..analyzers import AnalyzerConfig, item_matches
from ..texts import SEPARATOR, commit_title, cut
from . import UnreadablePayload, dig, need, text_at, text_of

Renderer = Callable[[Any], tuple[str, str]]

#: The text of one action: ``(actor, subject, payload)`` → text.
Texts = dict[str, Callable[[str, str, Any], str]]

#: Organization-level events: they go to the administrative group, not to a
#: repository's group. ``member`` (a repository's collaborators) is one of
#: them, as reference §5 says: who may push is the organization admins' business,
#: whatever the repository. ``default_branch`` is not one (reference §3.1).
ADMINISTRATIVE_EVENTS = frozenset(
    {
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
)

_BRANCH_PREFIX = "refs/heads/"
_TAG_PREFIX = "refs/tags/"


class UnknownAction(UnreadablePayload):
    """An action the renderer of the event has no text for."""


# Fallbacks, told once -------------------------------------------------------


class FallbackLog:
    """Tells, at debug level and once per event and action, that a call got the fallback.

    Neither payloads nor texts are logged. At most ``limit`` keys are
    remembered, and nothing is told past them, so that a caller inventing
    actions can grow neither the memory nor the logs without bound.
    """

    log = Logger()

    def __init__(self, limit: int = 1000):
        self.limit = limit
        self.seen: set[tuple[str, str]] = set()

    def tell(self, event: str, action: str, reason: str, failure: Failure | None = None) -> None:
        """Log why ``event``/``action`` got the fallback, unless already told."""
        key = (event[:100], action[:100])
        if key in self.seen or len(self.seen) >= self.limit:
            return
        self.seen.add(key)
        fields = {"event": key[0], "action": key[1] or "-", "reason": reason}
        message = "GitHub event {event}, action {action}: fallback text ({reason})"
        if failure is None:
            self.log.debug(message, **fields)
        else:
            self.log.failure(message, failure, LogLevel.debug, **fields)


FALLBACKS = FallbackLog()


# Small readers --------------------------------------------------------------


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


def _suffix(before: str, value: str) -> str:
    # Appended only when the payload named someone or something.
    return before + value if value else ""


def _either(before: str, value: str, otherwise: str) -> str:
    # Names what the payload names, else stays vague rather than leave a blank.
    return before + value if value else otherwise


def _excerpt(text: str) -> str:
    """A body or a description as one line, cut to 114 characters."""
    return cut(" ".join(text.split()))


def _sender(payload: Any) -> str:
    return need(payload, "sender", "login")


def _repository(payload: Any) -> str:
    return need(payload, "repository", "full_name")


def _repository_link(suffix: str = "") -> Callable[[Any], str]:
    return lambda p: _under(text_at(p, "repository", "html_url"), suffix)


def _at(*path: str | int) -> Callable[[Any], str]:
    """A reader of the text at ``path``: the link or the subject of many events."""
    return lambda p: text_at(p, *path)


def _needed(*path: str | int) -> Callable[[Any], str]:
    """A reader of the text at ``path``, which the text cannot do without."""
    return lambda p: need(p, *path)


def _numbered(key: str) -> Callable[[Any], str]:
    """``#<n> — <title>`` of the issue, pull request or discussion under ``key``."""
    return lambda p: f"#{need(p, key, 'number')}{SEPARATOR}{need(p, key, 'title')}"


def _alert(summary: Callable[[Any], str]) -> Callable[[Any], str]:
    """``#<n> — <summary>`` of a security alert."""
    return lambda p: f"#{need(p, 'alert', 'number')}{SEPARATOR}{summary(p)}"


def _nowhere(payload: Any) -> str:
    """Nothing: the link of events that have no page to show, the subject of
    events that are about no one thing."""
    return ""


def _parenthesized(value: str) -> str:
    return f" ({value})" if value else ""


def _on_branch(ref: str) -> str:
    """`` (branch <b>)`` for a branch or a ref, or nothing."""
    return _parenthesized(_suffix("branch ", branch_of(ref)))


def _branch(*path: str) -> Callable[[Any], str]:
    """`` (branch <b>)`` for the branch at ``path``, or nothing."""
    return lambda p: _on_branch(text_at(p, *path))


def _scope(payload: Any) -> str:
    """`` on <repository>`` or `` in <organization>``: where a project lives."""
    repository = text_at(payload, "repository", "full_name")
    if repository:
        return f" on {repository}"
    return _suffix(" in ", text_at(payload, "organization", "login"))


def _the(noun: str, name: str) -> str:
    return f"the {noun} {name}" if name else f"a {noun}"


def _names(items: Any, key: str, limit: int = 3) -> str:
    """``a, b and 2 more``: the ``key`` of each object of a list."""
    names = [text_at(item, key) for item in items] if isinstance(items, list) else []
    names = [name for name in names if name]
    if not names:
        raise UnreadablePayload(key)
    shown = ", ".join(names[:limit])
    return shown + _suffix(" and ", f"{len(names) - limit} more" if len(names) > limit else "")


# Tables of actions ----------------------------------------------------------


def by_action(
    texts: Texts,
    subject: Callable[[Any], str],
    link: Callable[[Any], str],
    actor: Callable[[Any], str] = _sender,
) -> Renderer:
    """The renderer of an event whose text depends on its ``action``.

    ``texts`` maps each action GitHub documents to its text, given the actor
    (``sender.login`` unless told), the ``subject`` the event is about, and
    the payload; an action not in ``texts`` gets the fallback.
    """

    def render_action(payload: Any) -> tuple[str, str]:
        action = need(payload, "action")
        text_for = texts.get(action)
        if text_for is None:
            raise UnknownAction(action)
        return text_for(actor(payload), subject(payload), payload), link(payload)

    return render_action


def uniform(template: str, verbs: dict[str, str], **fields: Callable[[Any], str]) -> Texts:
    """Texts of actions that differ by their verb only.

    ``template`` has ``{a}`` (actor), ``{verb}``, ``{s}`` (subject), and a
    field for each of ``fields``, read from the payload. A verb may place the
    subject or a field itself (``added {s} to``, ``added {label} to``), so that
    the pairs of actions that put something on the subject and take it off
    (``labeled``, ``unlabeled``) are two verbs of one table. A text reads only
    the fields its phrase names.
    """

    def text(verb: str) -> Callable[[str, str, Any], str]:
        phrase = template.replace("{verb}", verb)
        used = [name for _, name, _, _ in Formatter().parse(phrase) if name in fields]
        return lambda a, s, p: phrase.format(a=a, s=s, **{name: fields[name](p) for name in used})

    return {action: text(verb) for action, verb in verbs.items()}


def _same(*actions: str) -> dict[str, str]:
    """Verbs that are the action itself (``closed`` → ``closed``)."""
    return {action: action for action in actions}


# The older system's twelve events (reference §4.1) ------------------------


def _person(commit: Any, role: str) -> str:
    # GitHub omits the username of a committer whose e-mail is not tied to an
    # account; their name is then the best we have.
    return text_at(commit, role, "username") or text_at(commit, role, "name")


def render_ping(payload: Any) -> tuple[str, str]:
    """``« <zen> » — GitHub Webhooks ping zen aphorism.``"""
    return f"« {need(payload, 'zen')} » — GitHub Webhooks ping zen aphorism.", ""


def _commit_count(payload: Any, commits: list[Any]) -> int:
    # GitHub lists at most 20 commits; the Events API's size and
    # distinct_size count them all, when a payload carries them.
    for key in ("size", "distinct_size"):
        size = dig(payload, key, default=None)
        if isinstance(size, int) and not isinstance(size, bool) and size > len(commits):
            return size
    return len(commits)


def _render_ref_push(payload: Any) -> tuple[str, str] | None:
    """A pushed tag, or a branch created or deleted by a push; None for other pushes."""
    ref = text_at(payload, "ref")
    repository = text_at(payload, "repository", "name")
    base = text_at(payload, "repository", "html_url")
    deleted = dig(payload, "deleted", default=False) is True
    created = dig(payload, "created", default=False) is True
    if ref.startswith(_TAG_PREFIX):
        pusher, tag = need(payload, "pusher", "name"), ref.removeprefix(_TAG_PREFIX)
        if deleted:
            return f"{pusher} deleted tag {tag} on {repository}", _under(base, "/tags")
        verb = "pushed tag {} to" if created else "forcely updated tag {} on"
        return f"{pusher} {verb.format(tag)} {repository}", _under(base, "/releases/tag/" + tag)
    if deleted or created:
        pusher, branch = need(payload, "pusher", "name"), branch_of(ref)
        if deleted:
            return f"{pusher} deleted branch {branch} on {repository}", _under(base, "/branches")
        return f"{pusher} created branch {branch} on {repository}", _under(base, "/tree/" + branch)
    return None


def render_push(payload: Any) -> tuple[str, str]:
    """One commit: the commit; none: a forced update; several: how many.

    Tags, and branches created or deleted, are told as such, whatever the commits.
    """
    commits = dig(payload, "commits", default=None)
    if not isinstance(commits, list):
        raise UnreadablePayload("commits")
    ref_push = _render_ref_push(payload)
    if ref_push is not None:
        return ref_push
    count = _commit_count(payload, commits)
    if count == 1:
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
    if not count:
        return f"{pusher} forcely updated {where(payload)}", text_at(payload, "compare")
    return f"{pusher} pushed {count} commits to {where(payload)}", text_at(payload, "compare")


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


_ISSUE_COMMENT_VERBS = {
    "created": "added",
    "edited": "edited",
    "deleted": "deleted",
    "pinned": "pinned",
    "unpinned": "unpinned",
}


def render_issue_comment(payload: Any) -> tuple[str, str]:
    """A comment on an issue or a pull request, added, edited, deleted or (un)pinned."""
    action = need(payload, "action")
    link = text_at(payload, "comment", "html_url")
    verb = _ISSUE_COMMENT_VERBS.get(action)
    if verb is None:
        FALLBACKS.tell("issue_comment", action, "unknown action")
        return f"Unknown issue comment action: {action}", link
    # The older system names the comment's author; who pins a comment is the sender.
    who = ("sender", "login") if action.endswith("pinned") else ("comment", "user", "login")
    author = need(payload, *who)
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


def _closed_or_merged(payload: Any) -> str:
    return "merged" if dig(payload, "pull_request", "merged", default=False) is True else "closed"


#: ``pull_request`` actions: ``(author, "#<n> — <title>", payload)`` → text.
_PULL_REQUEST_TEXTS: Texts = {
    # The older system's eight texts, byte for byte; "closed" tells a merge apart.
    "opened": lambda a, pr, p: f"{a} has opened a pull request: {pr}",
    "closed": lambda a, pr, p: f"{a} has {_closed_or_merged(p)} the pull request {pr}",
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
    "auto_merge_enabled": lambda a, pr, p: f"{a} has enabled auto-merge for the pull request {pr}",
    "auto_merge_disabled": lambda a, pr, p: (
        f"{a} has disabled auto-merge for the pull request {pr}"
    ),
} | uniform(
    "{a} has {verb}",
    {
        "milestoned": "added the pull request {s} to {milestone}",
        "demilestoned": "removed the pull request {s} from {its_milestone}",
        "enqueued": "added the pull request {s} to the merge queue",
        "dequeued": "removed the pull request {s} from the merge queue",
    },
    milestone=lambda p: _either("the milestone ", _milestone(p), "a milestone"),
    its_milestone=lambda p: _either("the milestone ", _milestone(p), "its milestone"),
)


def render_pull_request(payload: Any) -> tuple[str, str]:
    """A pull request opened, closed, merged, labeled, synchronized…"""
    action = need(payload, "action")
    link = text_at(payload, "pull_request", "html_url")
    text_for = _PULL_REQUEST_TEXTS.get(action)
    if text_for is None:
        FALLBACKS.tell("pull_request", action, "unknown action")
        return f"Unknown pull request action: {action}", link
    author = need(payload, "sender", "login")
    pull_request = f"#{need(payload, 'number')}{SEPARATOR}{need(payload, 'pull_request', 'title')}"
    return text_for(author, pull_request, payload), link


def _renamed(what: str, name: str, old: str) -> str:
    """``<what> <old> renamed to <name>``, or ``<what> <name> renamed`` without the old name."""
    return f"{what} {old} renamed to {name}" if old else f"{what} {name} renamed"


def _from_to(old: str, new: str) -> str:
    """``<old> to <new>``, or ``to <new>`` without the old name."""
    return f"{old} to {new}" if old else f"to {new}"


def _renamed_from(payload: Any) -> str:
    old = text_at(payload, "changes", "repository", "name", "from")
    owner = text_at(payload, "repository", "owner", "login")
    return f"{owner}/{old}" if owner and old else old


def _previous_owner(payload: Any) -> str:
    owner = dig(payload, "changes", "owner", "from", default=None)
    return text_at(owner, "organization", "login") or text_at(owner, "user", "login")


def _changed_keys(payload: Any) -> str:
    changes = dig(payload, "changes", default=None)
    keys = sorted(key for key in changes if key) if isinstance(changes, dict) else []
    return cut(", ".join(keys))


#: ``repository`` actions: ``(sender, full name, payload)`` → text. The first
#: four are the older system's; the others also say who did it.
_REPOSITORY_TEXTS: Texts = {
    "created": lambda a, r, p: f"New repository {r}",
    "deleted": lambda a, r, p: f"Repository {r} deleted (danger zone)",
    "publicized": lambda a, r, p: f"Repository {r} is now public",
    "privatized": lambda a, r, p: f"Repository {r} is now private",
    "renamed": lambda a, r, p: _renamed("Repository", r, _renamed_from(p)) + _suffix(" by ", a),
    "archived": lambda a, r, p: f"Repository {r} archived{_suffix(' by ', a)}",
    "unarchived": lambda a, r, p: f"Repository {r} unarchived{_suffix(' by ', a)}",
    "transferred": lambda a, r, p: (
        f"Repository {r} transferred{_suffix(' from ', _previous_owner(p))}{_suffix(' by ', a)}"
    ),
    "edited": lambda a, r, p: (
        f"Repository {r} edited{_suffix(' by ', a)}{_parenthesized(_changed_keys(p))}"
    ),
}


def render_repository(payload: Any) -> tuple[str, str]:
    """A repository created, deleted, made public or private, renamed, archived…"""
    action = need(payload, "action")
    link = text_at(payload, "repository", "html_url")
    text_for = _REPOSITORY_TEXTS.get(action)
    if text_for is None:
        FALLBACKS.tell("repository", action, "unknown action")
        return f"Unknown repository action: {action}", link
    sender = text_at(payload, "sender", "login")
    text = text_for(sender, need(payload, "repository", "full_name"), payload)
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


# Issues, discussions, reviews -----------------------------------------------

_CLOSE_REASONS = {"not_planned": " (not planned)", "duplicate": " (duplicate)"}


def _milestone_of(payload: Any, key: str) -> str:
    return text_at(payload, "milestone", "title") or text_at(payload, key, "milestone", "title")


def _named(noun: str, *path: str) -> Callable[[Any], str]:
    """A reader of ``the <noun> <name>`` (the name at ``path``), or ``a <noun>``."""
    return lambda p: _the(noun, text_at(p, *path))


_ISSUES: Texts = {
    "opened": lambda a, s, p: f"{a} has opened an issue: {s}",
    "closed": lambda a, s, p: (
        f"{a} has closed the issue {s}"
        + _CLOSE_REASONS.get(text_at(p, "issue", "state_reason"), "")
    ),
    "transferred": lambda a, s, p: (
        f"{a} has transferred the issue {s}"
        + _suffix(" to ", text_at(p, "changes", "new_repository", "full_name"))
    ),
} | uniform(
    "{a} has {verb} the issue {s}",
    {
        **_same("edited", "deleted", "reopened", "locked", "unlocked", "pinned", "unpinned"),
        "assigned": "assigned {assignee} to",
        "unassigned": "unassigned {assignee} from",
        "labeled": "added {label} to",
        "unlabeled": "removed {label} from",
        "milestoned": "set {milestone} on",
        "demilestoned": "removed {milestone} from",
        "typed": "set {issue_type} on",
        "untyped": "removed {issue_type} from",
    },
    assignee=lambda p: text_at(p, "assignee", "login") or "someone",
    label=_named("label", "label", "name"),
    milestone=lambda p: _the("milestone", _milestone_of(p, "issue")),
    issue_type=_named("type", "type", "name"),
)


_DISCUSSION: Texts = {
    "created": lambda a, s, p: f"{a} has started a discussion: {s}",
    "transferred": lambda a, s, p: (
        f"{a} has transferred the discussion {s}"
        + _suffix(" to ", text_at(p, "changes", "new_repository", "full_name"))
    ),
    "category_changed": lambda a, s, p: (
        f"{a} has moved the discussion {s}"
        + _suffix(" to the category ", text_at(p, "discussion", "category", "name"))
    ),
    "answered": lambda a, s, p: f"{a} has marked an answer to the discussion {s}",
    "unanswered": lambda a, s, p: f"{a} has unmarked the answer to the discussion {s}",
} | uniform(
    "{a} has {verb} the discussion {s}",
    {
        **_same(
            "edited", "deleted", "closed", "reopened", "locked", "unlocked", "pinned", "unpinned"
        ),
        "labeled": "added {label} to",
        "unlabeled": "removed {label} from",
    },
    label=_named("label", "label", "name"),
)


def _comment_texts(target: str) -> Texts:
    """Texts of comments added, edited, deleted on a ``target``, in the older system's words."""
    return {
        "created": lambda a, s, p: (
            f"{a} added a comment to {target} {s}: {_excerpt(need(p, 'comment', 'body'))}"
        ),
        "edited": lambda a, s, p: (
            f"{a} edited a comment to {target} {s}: {_excerpt(need(p, 'comment', 'body'))}"
        ),
        "deleted": lambda a, s, p: f"{a} deleted a comment to {target} {s}",
    }


_REVIEW_STATES = {
    "approved": "approved",
    "changes_requested": "requested changes on",
    "commented": "reviewed",
}

_PULL_REQUEST_REVIEW: Texts = {
    "submitted": lambda a, s, p: (
        f"{a} has {_REVIEW_STATES.get(text_at(p, 'review', 'state').lower(), 'reviewed')}"
        f" the pull request {s}" + _suffix(": ", _excerpt(text_at(p, "review", "body")))
    ),
    "edited": lambda a, s, p: f"{a} has edited a review of the pull request {s}",
    "dismissed": lambda a, s, p: (
        f"{a} has dismissed "
        + _either("the review by ", text_at(p, "review", "user", "login"), "a review")
        + f" of the pull request {s}"
    ),
}

_PULL_REQUEST_REVIEW_COMMENT: Texts = {
    "created": lambda a, s, p: (
        f"{a} added a review comment to pull request {s}: " + _excerpt(need(p, "comment", "body"))
    ),
    "edited": lambda a, s, p: (
        f"{a} edited a review comment to pull request {s}: " + _excerpt(need(p, "comment", "body"))
    ),
    "deleted": lambda a, s, p: f"{a} deleted a review comment to pull request {s}",
}

_PULL_REQUEST_REVIEW_THREAD = uniform(
    "{a} has {verb} a review thread on the pull request {s}",
    {"resolved": "resolved", "unresolved": "reopened"},
)


def _between_issues(template: str, verbs: dict[str, str], *issues: str) -> Renderer:
    """The renderer of an event that ties two issues (a sub-issue and its parent, an
    issue and the one blocking it), each under its key in ``issues``.

    A verb names one issue in full (``{parent_issue}``: its number and title) and
    the other by its number (``#{parent}``, the key without ``_issue``); the link
    is the page of the issue named in full, the one the text is about.
    """
    texts = uniform(
        template,
        verbs,
        **{issue.removesuffix("_issue"): _needed(issue, "number") for issue in issues},
        **{issue: _numbered(issue) for issue in issues},
    )
    shown = {
        action: next(issue for issue in issues if "{" + issue + "}" in verb)
        for action, verb in verbs.items()
    }
    return by_action(texts, _nowhere, lambda p: text_at(p, shown[need(p, "action")], "html_url"))


_SUB_ISSUES = _between_issues(
    "{a} has {verb}",
    {
        "sub_issue_added": "added the sub-issue #{sub} to the issue {parent_issue}",
        "sub_issue_removed": "removed the sub-issue #{sub} from the issue {parent_issue}",
        "parent_issue_added": "made #{parent} the parent of the issue {sub_issue}",
        "parent_issue_removed": "removed the parent #{parent} of the issue {sub_issue}",
    },
    "sub_issue",
    "parent_issue",
)

_ISSUE_DEPENDENCIES = _between_issues(
    "{a} has marked the issue {verb}",
    {
        "blocked_by_added": "{blocked_issue} as blocked by #{blocking}",
        "blocked_by_removed": "{blocked_issue} as no longer blocked by #{blocking}",
        "blocking_added": "{blocking_issue} as blocking #{blocked}",
        "blocking_removed": "{blocking_issue} as no longer blocking #{blocked}",
    },
    "blocked_issue",
    "blocking_issue",
)


# Releases, packages, wiki, pages --------------------------------------------


def _release(payload: Any) -> str:
    tag, name = need(payload, "release", "tag_name"), text_at(payload, "release", "name")
    return tag + _suffix(SEPARATOR, name if name != tag else "")


_RELEASE = uniform(
    "{a} has {verb} of {repository}: {s}",
    {
        "created": "created a release",
        "published": "published a release",
        "prereleased": "published a pre-release",
        "released": "released a new version",
        "edited": "edited a release",
        "deleted": "deleted a release",
        "unpublished": "unpublished a release",
    },
    repository=_repository,
)


def _package(key: str) -> Callable[[Any], str]:
    """``<name> <version>`` of the package under ``key`` (a container's tag as its version)."""

    def read(payload: Any) -> str:
        version = text_at(payload, key, "package_version", "container_metadata", "tag", "name")
        version = version or text_at(payload, key, "package_version", "version")
        return need(payload, key, "name") + _suffix(" ", version)

    return read


def _package_link(key: str) -> Callable[[Any], str]:
    return lambda p: text_at(p, key, "package_version", "html_url") or text_at(p, key, "html_url")


_PACKAGE = uniform("{a} has {verb} the package {s}", _same("published", "updated"))


def render_gollum(payload: Any) -> tuple[str, str]:
    """Wiki pages created or edited: the page when there is one, else how many."""
    sender, repository = _sender(payload), _repository(payload)
    pages = dig(payload, "pages", default=[])
    pages = pages if isinstance(pages, list) else []
    if len(pages) == 1:
        verb = text_at(pages[0], "action") or "updated"
        title = need(pages[0], "title")
        text = f"{sender} has {verb} the wiki page {title} of {repository}"
        return text, text_at(pages[0], "html_url")
    link = _under(text_at(payload, "repository", "html_url"), "/wiki")
    if pages:
        return f"{sender} has updated {len(pages)} wiki pages of {repository}", link
    return f"{sender} has updated the wiki of {repository}", link


def render_page_build(payload: Any) -> tuple[str, str]:
    """A GitHub Pages build, built or errored."""
    status, repository = need(payload, "build", "status"), _repository(payload)
    pusher = text_at(payload, "build", "pusher", "login")
    error = _excerpt(text_at(payload, "build", "error", "message"))
    text = f"GitHub Pages build of {repository}{_suffix(' by ', pusher)}: {status}"
    return text + _suffix(SEPARATOR, error), text_at(payload, "repository", "html_url")


# CI: checks, workflows, deployments, merge queue ----------------------------


def _commit_on(key: str) -> Callable[[Any], str]:
    """``<sha[:8]> on <repository>``: the commit a check of ``key`` is about."""
    return lambda p: f"{need(p, key, 'head_sha')[:8]} on {_repository(p)}"


def _outcome(key: str) -> Callable[[Any], str]:
    # A conclusion once completed; the status says where it is before that.
    return lambda p: text_at(p, key, "conclusion") or text_at(p, key, "status")


def _check_run(payload: Any) -> str:
    return f"{need(payload, 'check_run', 'name')} for {_commit_on('check_run')(payload)}"


_CHECK_RUN: Texts = {
    "created": lambda a, s, p: f"{a} has created the check run {s}",
    "rerequested": lambda a, s, p: f"{a} has re-requested the check run {s}",
    "completed": lambda a, s, p: (
        f"Check run {s}: {_outcome('check_run')(p)}"
        + _suffix(SEPARATOR, text_at(p, "check_run", "output", "title"))
    ),
    "requested_action": lambda a, s, p: (
        f"{a} has requested the action {need(p, 'requested_action', 'identifier')}"
        f" of the check run {s}"
    ),
}

_CHECK_SUITE: Texts = {
    "requested": lambda a, s, p: f"Check suite of {s} requested for {_commit_on('check_suite')(p)}",
    "rerequested": lambda a, s, p: (
        f"{a} has re-requested the check suite of {s} for {_commit_on('check_suite')(p)}"
    ),
    "completed": lambda a, s, p: (
        f"Check suite of {s} for {_commit_on('check_suite')(p)}: {_outcome('check_suite')(p)}"
    ),
}


def _check_suite_link(payload: Any) -> str:
    return _under(
        text_at(payload, "repository", "html_url"),
        "/commit/" + text_at(payload, "check_suite", "head_sha"),
    )


def _workflow_run(payload: Any) -> str:
    number = text_at(payload, "workflow_run", "run_number")
    return need(payload, "workflow_run", "name") + _suffix(" #", number)


_WORKFLOW_RUN: Texts = {
    "requested": lambda a, s, p: (
        f"{a} has triggered the workflow {s} on {_repository(p)}"
        + _branch("workflow_run", "head_branch")(p)
    ),
    "in_progress": lambda a, s, p: (
        f"Workflow {s} on {_repository(p)}{_branch('workflow_run', 'head_branch')(p)}"
        " is in progress"
    ),
    "completed": lambda a, s, p: (
        f"Workflow {s} on {_repository(p)}{_branch('workflow_run', 'head_branch')(p)}: "
        + _outcome("workflow_run")(p)
    ),
}


def _job(payload: Any) -> str:
    workflow = text_at(payload, "workflow_job", "workflow_name")
    return (
        need(payload, "workflow_job", "name")
        + _suffix(" of the workflow ", workflow)
        + f" on {_repository(payload)}"
        + _branch("workflow_job", "head_branch")(payload)
    )


_WORKFLOW_JOB: Texts = {
    "queued": lambda a, s, p: f"Job {s} is queued",
    "waiting": lambda a, s, p: f"Job {s} is waiting for approval",
    "in_progress": lambda a, s, p: (
        f"Job {s} is running" + _suffix(" on ", text_at(p, "workflow_job", "runner_name"))
    ),
    "completed": lambda a, s, p: f"Job {s}: {_outcome('workflow_job')(p)}",
}


def _workflow_file(payload: Any) -> str:
    return need(payload, "workflow").rpartition("/")[2]


def render_workflow_dispatch(payload: Any) -> tuple[str, str]:
    """Someone ran a workflow by hand."""
    workflow = _workflow_file(payload)
    branch = text_at(payload, "ref")
    text = f"{_sender(payload)} has dispatched the workflow {workflow} on {_repository(payload)}"
    link = _repository_link("/actions/workflows/" + workflow)(payload)
    return text + _on_branch(branch), link


def _deployment(payload: Any) -> str:
    """``<repository> at <ref> to <environment>``."""
    ref = text_at(payload, "deployment", "ref")
    environment = need(payload, "deployment", "environment")
    return f"{_repository(payload)}{_suffix(' at ', ref)} to {environment}"


_DEPLOYMENT: Texts = {"created": lambda a, s, p: f"{a} has started deploying {s}"}


def _deployment_link(payload: Any) -> str:
    return text_at(payload, "workflow_run", "html_url") or _repository_link("/deployments")(payload)


_DEPLOYMENT_STATUS: Texts = {
    "created": lambda a, s, p: (
        f"Deployment of {s}: {need(p, 'deployment_status', 'state')}"
        + _suffix(SEPARATOR, _excerpt(text_at(p, "deployment_status", "description")))
    ),
}


def _deployment_status_link(payload: Any) -> str:
    for key in ("log_url", "target_url", "environment_url"):
        link = text_at(payload, "deployment_status", key)
        if link:
            return link
    return _repository_link("/deployments")(payload)


def _review_environment(payload: Any) -> str:
    environment = text_at(payload, "environment")
    return environment or need(payload, "workflow_job_runs", 0, "environment")


_DEPLOYMENT_REVIEW: Texts = {
    "requested": lambda a, s, p: (
        f"{a} has requested a review of the deployment of {_repository(p)} to {s}"
    ),
    "approved": lambda a, s, p: (
        f"{a} has approved the deployment of {_repository(p)} to {s}"
        + _suffix(": ", _excerpt(text_at(p, "comment")))
    ),
    "rejected": lambda a, s, p: (
        f"{a} has rejected the deployment of {_repository(p)} to {s}"
        + _suffix(": ", _excerpt(text_at(p, "comment")))
    ),
}

_DEPLOYMENT_PROTECTION_RULE: Texts = {
    "requested": lambda a, s, p: (
        f"A deployment of {_repository(p)} to {s} awaits the approval of its protection rules"
    ),
}

_MERGE_GROUP_ENDS = {
    "merged": "has been merged",
    "invalidated": "has been invalidated",
    "dequeued": "has been dequeued",
}


def _merge_group(payload: Any) -> str:
    sha = need(payload, "merge_group", "head_sha")[:8]
    return f"{sha} of {_repository(payload)}" + _branch("merge_group", "base_ref")(payload)


_MERGE_GROUP: Texts = {
    "checks_requested": lambda a, s, p: (
        f"Merge group {s} awaits its checks"
        + _suffix(SEPARATOR, commit_title(text_at(p, "merge_group", "head_commit", "message")))
    ),
    "destroyed": lambda a, s, p: (
        f"Merge group {s} "
        + _MERGE_GROUP_ENDS.get(text_at(p, "reason"), "has been removed from the merge queue")
    ),
}


def _merge_queue_link(payload: Any) -> str:
    base = branch_of(text_at(payload, "merge_group", "base_ref"))
    return _repository_link("/queue/" + base)(payload) if base else ""


# Security --------------------------------------------------------------------

_CODE_SCANNING_ALERT: Texts = {
    "created": lambda a, s, p: (
        f"{text_at(p, 'alert', 'tool', 'name') or 'Code scanning'} has found an alert"
        f" on {_repository(p)}: {s}"
    ),
    "reopened": lambda a, s, p: f"A code scanning alert has reappeared on {_repository(p)}: {s}",
    "appeared_in_branch": lambda a, s, p: (
        f"A code scanning alert has appeared in branch {branch_of(text_at(p, 'ref'))}"
        f" of {_repository(p)}: {s}"
    ),
    "fixed": lambda a, s, p: f"A code scanning alert has been fixed on {_repository(p)}: {s}",
} | uniform(
    "{a} has {verb} a code scanning alert on {repository}: {s}",
    {
        "closed_by_user": "closed",
        "reopened_by_user": "reopened",
        "updated_assignment": "changed the assignees of",
    },
    repository=_repository,
)


def _rule(payload: Any) -> str:
    rule = dig(payload, "alert", "rule", default=None)
    return text_at(rule, "description") or text_at(rule, "name") or need(rule, "id")


_DEPENDABOT_ALERT: Texts = {
    "created": lambda a, s, p: f"Dependabot has opened an alert on {_repository(p)}: {s}",
    "auto_dismissed": lambda a, s, p: f"Dependabot has dismissed an alert on {_repository(p)}: {s}",
    "auto_reopened": lambda a, s, p: f"Dependabot has reopened an alert on {_repository(p)}: {s}",
    "fixed": lambda a, s, p: f"A Dependabot alert has been fixed on {_repository(p)}: {s}",
    "reintroduced": lambda a, s, p: (
        f"A Dependabot alert has been reintroduced on {_repository(p)}: {s}"
    ),
} | uniform(
    "{a} has {verb} a Dependabot alert on {repository}: {s}",
    {
        "dismissed": "dismissed",
        "reopened": "reopened",
        "assignees_changed": "changed the assignees of",
    },
    repository=_repository,
)


def _advisory_summary(payload: Any) -> str:
    return text_at(payload, "alert", "security_advisory", "summary") or need(
        payload, "alert", "dependency", "package", "name"
    )


def _secret_type(payload: Any) -> str:
    return text_at(payload, "alert", "secret_type_display_name") or need(
        payload, "alert", "secret_type"
    )


_SECRET_SCANNING_ALERT: Texts = {
    "created": lambda a, s, p: f"A secret has been found on {_repository(p)}: {s}",
    "publicly_leaked": lambda a, s, p: (
        f"A secret of {_repository(p)} has been leaked publicly: {s}"
    ),
    "reopened": lambda a, s, p: (
        f"{a} has reopened a secret scanning alert on {_repository(p)}: {s}"
    ),
    "resolved": lambda a, s, p: (
        f"{a} has resolved a secret scanning alert on {_repository(p)}"
        + _suffix(" as ", text_at(p, "alert", "resolution").replace("_", " "))
        + f": {s}"
    ),
    "validated": lambda a, s, p: (
        f"A secret scanning alert on {_repository(p)} has been checked"
        + _parenthesized(text_at(p, "alert", "validity"))
        + f": {s}"
    ),
    "assigned": lambda a, s, p: (
        f"{a} has assigned {text_at(p, 'assignee', 'login') or 'someone'} to a secret scanning"
        f" alert on {_repository(p)}: {s}"
    ),
    "unassigned": lambda a, s, p: (
        f"{a} has unassigned {text_at(p, 'assignee', 'login') or 'someone'} from a secret"
        f" scanning alert on {_repository(p)}: {s}"
    ),
}

_SECRET_SCANNING_ALERT_LOCATION: Texts = {
    "created": lambda a, s, p: (
        f"A secret scanning alert on {_repository(p)} has a new location: {s}"
    ),
}

_SECRET_SCANNING_SCAN: Texts = {
    "completed": lambda a, s, p: (
        f"The secret scanning {need(p, 'type').replace('-', ' ')} scan of {s} has completed"
        + _parenthesized(text_at(p, "source"))
    ),
}


def _advisory(key: str) -> Callable[[Any], str]:
    """``<GHSA id> (<severity>) — <summary>`` of the advisory under ``key``."""
    return lambda p: (
        need(p, key, "ghsa_id")
        + _parenthesized(text_at(p, key, "severity"))
        + _suffix(SEPARATOR, _excerpt(text_at(p, key, "summary")))
    )


def _advisory_link(payload: Any) -> str:
    advisory = dig(payload, "security_advisory", default=None)
    return text_at(advisory, "html_url") or text_at(advisory, "references", 0, "url")


_SECURITY_ADVISORY = uniform(
    "GitHub has {verb} the security advisory {s}", _same("published", "updated", "withdrawn")
)

_REPOSITORY_ADVISORY: Texts = {
    "published": lambda a, s, p: f"{a} has published a security advisory for {_repository(p)}: {s}",
    "reported": lambda a, s, p: (
        f"{a} has privately reported a vulnerability in {_repository(p)}: {s}"
    ),
}


def _vulnerable_package(payload: Any) -> str:
    return need(payload, "alert", "affected_package_name") + _suffix(
        SEPARATOR, text_at(payload, "alert", "ghsa_id")
    )


_REPOSITORY_VULNERABILITY_ALERT: Texts = {
    "create": lambda a, s, p: f"New vulnerability alert on {_repository(p)}: {s}",
    "resolve": lambda a, s, p: f"A vulnerability alert has been resolved on {_repository(p)}: {s}",
} | uniform(
    "{a} has {verb} a vulnerability alert on {repository}: {s}",
    {"dismiss": "dismissed", "reopen": "reopened"},
    repository=_repository,
)


def _analysis_changes(payload: Any) -> str:
    before = dig(payload, "changes", "from", "security_and_analysis", default=None)
    features = sorted(key for key in before if key) if isinstance(before, dict) else []
    now = (
        f"{feature.replace('_', ' ')} "
        + (text_at(payload, "repository", "security_and_analysis", feature, "status") or "changed")
        for feature in features
    )
    return cut(", ".join(now))


def render_security_and_analysis(payload: Any) -> tuple[str, str]:
    """Code security features turned on or off for a repository."""
    changes = _analysis_changes(payload)
    text = f"{_sender(payload)} has changed the security features of {_repository(payload)}"
    link = _repository_link("/settings/security_analysis")(payload)
    return text + _suffix(": ", changes), link


_BRANCH_PROTECTION_RULE = uniform(
    "{a} has {verb} the branch protection rule {s} on {repository}",
    _same("created", "edited", "deleted"),
    repository=_repository,
)

_BRANCH_PROTECTION_CONFIGURATION = uniform(
    "{a} has {verb} branch protections on {s}", _same("enabled", "disabled")
)

_REPOSITORY_RULESET = uniform(
    "{a} has {verb} the ruleset {s}{scope}", _same("created", "edited", "deleted"), scope=_scope
)


def _ruleset_link(payload: Any) -> str:
    ruleset = text_at(payload, "repository_ruleset", "id")
    return _repository_link("/rules/" + ruleset)(payload) if ruleset else ""


_DEPLOY_KEY_ACCESS = {True: " (read-only)", False: " (read-write)"}

_DEPLOY_KEY = uniform(
    "{a} has {verb}",
    {
        "created": "added the deploy key {s} to {repository}{access}",
        "deleted": "removed the deploy key {s} from {repository}",
    },
    repository=_repository,
    access=lambda p: _DEPLOY_KEY_ACCESS.get(dig(p, "key", "read_only", default=None), ""),
)


# Repositories, organizations, access ----------------------------------------


def render_public(payload: Any) -> tuple[str, str]:
    """A private repository made public."""
    text = f"{_sender(payload)} has made {_repository(payload)} public"
    return text, text_at(payload, "repository", "html_url")


_STAR = uniform("{a} {verb} {s}", {"created": "starred", "deleted": "unstarred"})


def render_repository_dispatch(payload: Any) -> tuple[str, str]:
    """A custom event sent through the API; its action is the caller's own name."""
    text = f"{_sender(payload)} has dispatched the event {need(payload, 'action')}"
    return f"{text} to {_repository(payload)}", text_at(payload, "repository", "html_url")


_IMPORT_ENDS = {"success": "succeeded", "cancelled": "was cancelled", "failure": "failed"}


def render_repository_import(payload: Any) -> tuple[str, str]:
    """A repository import through GitHub Importer ended."""
    status = need(payload, "status")
    end = _IMPORT_ENDS.get(status, f"ended: {status}")
    text = f"The import of {_repository(payload)} by {_sender(payload)} {end}"
    return text, text_at(payload, "repository", "html_url")


def _permission(payload: Any) -> str:
    return text_at(payload, "changes", "permission", "to") or text_at(
        payload, "changes", "role_name", "to"
    )


_MEMBER = uniform(
    "{a} has {verb}",
    {
        "added": "added {s} as a collaborator to {repository}{with_role}",
        "edited": "changed the permissions of {s} on {repository}{to_permission}",
        "removed": "removed {s} as a collaborator from {repository}",
    },
    repository=_repository,
    with_role=lambda p: _suffix(" with the role ", _permission(p)),
    to_permission=lambda p: _suffix(" to ", _permission(p)),
)

_MEMBERSHIP = uniform(
    "{a} has {verb} the team {team}{organization}",
    {"added": "added {s} to", "removed": "removed {s} from"},
    team=_needed("team", "name"),
    organization=lambda p: _suffix(" of ", text_at(p, "organization", "login")),
)


def _member_of_organization(payload: Any) -> str:
    return text_at(payload, "membership", "user", "login") or "someone"


def _invitee(payload: Any) -> str:
    return (
        text_at(payload, "invitation", "login")
        or text_at(payload, "user", "login")
        or "a new member"
    )


_ORGANIZATION: Texts = {
    "renamed": lambda a, s, p: (
        f"{a} has renamed the organization {_from_to(text_at(p, 'changes', 'login', 'from'), s)}"
    ),
} | uniform(
    "{a} has {verb} the organization {s}",
    {
        "member_added": "added {member} to",
        "member_invited": "invited {invitee} to",
        "member_removed": "removed {member} from",
        "deleted": "deleted",
    },
    member=_member_of_organization,
    invitee=_invitee,
)


def _organization_link(payload: Any) -> str:
    return text_at(payload, "membership", "user", "html_url") or text_at(
        payload, "user", "html_url"
    )


_TEAM = uniform(
    "{a} has {verb} the team {s}{organization}",
    _same("created", "edited", "deleted"),
    organization=lambda p: _suffix(" in ", text_at(p, "organization", "login")),
) | uniform(
    "{a} has {verb} {repository}",
    {
        "added_to_repository": "given the team {s} access to",
        "removed_from_repository": "removed the access of the team {s} to",
    },
    repository=lambda p: text_at(p, "repository", "full_name") or "a repository",
)


def render_team_add(payload: Any) -> tuple[str, str]:
    """A repository added to a team."""
    team = need(payload, "team", "name")
    text = f"{_sender(payload)} has added {_repository(payload)} to the team {team}"
    return text, text_at(payload, "team", "html_url")


_ORG_BLOCK = uniform(
    "{a} has {verb} {s}{organization}",
    _same("blocked", "unblocked"),
    organization=lambda p: _suffix(" from the organization ", text_at(p, "organization", "login")),
)

_INSTALLATION = uniform(
    "{a} has {verb} the GitHub App {s}{account}",
    {
        "created": "installed",
        "deleted": "uninstalled",
        "new_permissions_accepted": "accepted new permissions for",
        "suspend": "suspended",
        "unsuspend": "unsuspended",
    },
    account=lambda p: _suffix(" on ", text_at(p, "installation", "account", "login")),
)


def _app(payload: Any) -> str:
    return text_at(payload, "installation", "app_slug") or need(payload, "installation", "app_id")


_INSTALLATION_REPOSITORIES = uniform(
    "{a} has {verb}",
    {
        "added": "given the GitHub App {s} access to {added}",
        "removed": "removed the access of the GitHub App {s} to {removed}",
    },
    added=lambda p: _names(dig(p, "repositories_added"), "full_name"),
    removed=lambda p: _names(dig(p, "repositories_removed"), "full_name"),
)

_INSTALLATION_TARGET: Texts = {
    "renamed": lambda a, s, p: (
        f"{a} has renamed the account {_from_to(text_at(p, 'changes', 'login', 'from'), s)}"
    ),
}

_GITHUB_APP_AUTHORIZATION: Texts = {
    "revoked": lambda a, s, p: f"{a} has revoked their authorization of a GitHub App",
}

_META: Texts = {
    "deleted": lambda a, s, p: f"{a} has deleted the webhook {s}{_scope(p)}",
}

_PERSONAL_ACCESS_TOKEN_REQUEST: Texts = {
    "created": lambda a, s, p: f"{a} has requested access to {s} for a personal access token",
    "cancelled": lambda a, s, p: (
        f"{a} has cancelled their request for access to {s} for a personal access token"
    ),
} | uniform(
    "{a} has {verb} the request of {owner} for access to {s} for a personal access token",
    _same("approved", "denied"),
    owner=lambda p: text_at(p, "personal_access_token_request", "owner", "login") or "someone",
)

_CUSTOM_PROPERTY = uniform(
    "{a} has {verb} the custom property {s}{organization}",
    _same("created", "updated", "deleted"),
    organization=lambda p: _suffix(" in ", text_at(p, "organization", "login")),
) | {
    "promoted_to_enterprise": lambda a, s, p: (
        f"{a} has promoted the custom property {s} to the enterprise"
    ),
}


def _property_value(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, list):
        return "→ " + ", ".join(text_of(item) for item in value)
    return "→ " + text_of(value)


def _property_values(payload: Any) -> str:
    """``<name> → <value>; <name> unset…`` of the properties set on a repository."""
    values = dig(payload, "new_property_values", default=[])
    values = values if isinstance(values, list) else []
    changes = (
        f"{text_at(value, 'property_name')} {_property_value(dig(value, 'value', default=None))}"
        for value in values
        if text_at(value, "property_name")
    )
    return cut("; ".join(changes))


_CUSTOM_PROPERTY_VALUES: Texts = {
    "updated": lambda a, s, p: (
        f"{a} has changed the custom properties of {s}" + _suffix(": ", _property_values(p))
    ),
}


def _sponsor(payload: Any) -> str:
    return text_at(payload, "sponsorship", "sponsor", "login") or _sender(payload)


_SPONSORSHIP: Texts = {
    "created": lambda a, s, p: f"{a} is now sponsoring {s}" + _parenthesized(_tier(p)),
    "cancelled": lambda a, s, p: f"{a} has cancelled their sponsorship of {s}",
    "edited": lambda a, s, p: f"{a} has edited their sponsorship of {s}",
    "pending_cancellation": lambda a, s, p: f"{a} will cancel their sponsorship of {s}",
    "pending_tier_change": lambda a, s, p: (
        f"{a} will change their sponsorship of {s}" + _suffix(" to the tier ", _tier(p))
    ),
    "tier_changed": lambda a, s, p: (
        f"{a} has changed their sponsorship of {s}" + _suffix(" to the tier ", _tier(p))
    ),
}


def _tier(payload: Any) -> str:
    return text_at(payload, "sponsorship", "tier", "name")


_MARKETPLACE_PURCHASE = uniform(
    "{a} has {verb} the Marketplace plan {s}",
    {
        "purchased": "purchased",
        "cancelled": "cancelled",
        "changed": "changed to",
        "pending_change": "asked to change to",
        "pending_change_cancelled": "cancelled the pending change to",
    },
)


def _purchaser(payload: Any) -> str:
    return text_at(payload, "marketplace_purchase", "account", "login") or _sender(payload)


# Projects ----------------------------------------------------------------------

_PROJECT = uniform(
    "{a} has {verb} the project {s}{scope}",
    _same("created", "edited", "closed", "reopened", "deleted"),
    scope=_scope,
)

_PROJECT_CARD = uniform(
    "{a} has {verb}{scope}{s}",
    {
        "created": "added a card to a project",
        "edited": "edited a project card",
        "moved": "moved a project card",
        "converted": "converted a project card to an issue",
        "deleted": "deleted a project card",
    },
    scope=_scope,
)

_PROJECT_COLUMN = uniform(
    "{a} has {verb} the project column {s}{scope}",
    _same("created", "edited", "moved", "deleted"),
    scope=_scope,
)


def _of_organization(payload: Any) -> str:
    return _suffix(" of ", text_at(payload, "organization", "login"))


_PROJECTS_V2 = uniform(
    "{a} has {verb} the project {s}{organization}",
    _same("created", "edited", "closed", "reopened", "deleted"),
    organization=_of_organization,
)

_ITEM_KINDS = {"Issue": "an issue", "PullRequest": "a pull request", "DraftIssue": "a draft issue"}

_PROJECTS_V2_ITEM = uniform(
    "{a} has {verb} a project{organization}",
    {
        "created": "added {s} to",
        "edited": "edited {s} in",
        "deleted": "removed {s} from",
        "archived": "archived {s} in",
        "restored": "restored {s} in",
        "reordered": "moved {s} in",
        "converted": "converted a draft issue to an issue in",
    },
    organization=_of_organization,
)

_PROJECTS_V2_STATUS_UPDATE = uniform(
    "{a} has {verb} a project{organization}{s}",
    {
        "created": "posted a status update to",
        "edited": "edited a status update of",
        "deleted": "deleted a status update of",
    },
    organization=_of_organization,
)


def _status_update(payload: Any) -> str:
    status = text_at(payload, "projects_v2_status_update", "status").replace("_", " ").lower()
    body = _excerpt(text_at(payload, "projects_v2_status_update", "body"))
    return _suffix(": ", SEPARATOR.join(part for part in (status, body) if part))


# The table -------------------------------------------------------------------

#: Event type → renderer. One line per event the center knows how to tell.
RENDERERS: dict[str, Renderer] = {
    # The older system's twelve (reference §4.1).
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
    # Issues, discussions, pull request reviews.
    "issues": by_action(_ISSUES, _numbered("issue"), _at("issue", "html_url")),
    "sub_issues": _SUB_ISSUES,
    "issue_dependencies": _ISSUE_DEPENDENCIES,
    "discussion": by_action(_DISCUSSION, _numbered("discussion"), _at("discussion", "html_url")),
    "discussion_comment": by_action(
        _comment_texts("discussion"), _numbered("discussion"), _at("comment", "html_url")
    ),
    "pull_request_review": by_action(
        _PULL_REQUEST_REVIEW, _numbered("pull_request"), _at("review", "html_url")
    ),
    "pull_request_review_comment": by_action(
        _PULL_REQUEST_REVIEW_COMMENT, _numbered("pull_request"), _at("comment", "html_url")
    ),
    "pull_request_review_thread": by_action(
        _PULL_REQUEST_REVIEW_THREAD,
        _numbered("pull_request"),
        lambda p: (
            text_at(p, "thread", "comments", 0, "html_url")
            or text_at(p, "pull_request", "html_url")
        ),
    ),
    "label": by_action(
        uniform(
            "{a} has {verb} the label {s} on {repository}",
            _same("created", "edited", "deleted"),
            repository=_repository,
        ),
        _needed("label", "name"),
        _repository_link("/labels"),
    ),
    "milestone": by_action(
        uniform(
            "{a} has {verb} the milestone {s} on {repository}",
            _same("created", "opened", "closed", "edited", "deleted"),
            repository=_repository,
        ),
        _needed("milestone", "title"),
        _at("milestone", "html_url"),
    ),
    # Releases, packages, wiki, pages.
    "release": by_action(_RELEASE, _release, _at("release", "html_url")),
    "package": by_action(_PACKAGE, _package("package"), _package_link("package")),
    "registry_package": by_action(
        _PACKAGE, _package("registry_package"), _package_link("registry_package")
    ),
    "gollum": render_gollum,
    "page_build": render_page_build,
    # CI: checks, workflows, deployments, merge queue.
    "check_run": by_action(
        _CHECK_RUN,
        _check_run,
        lambda p: text_at(p, "check_run", "html_url") or text_at(p, "check_run", "details_url"),
    ),
    "check_suite": by_action(
        _CHECK_SUITE,
        lambda p: text_at(p, "check_suite", "app", "name") or "an app",
        _check_suite_link,
    ),
    "workflow_run": by_action(_WORKFLOW_RUN, _workflow_run, _at("workflow_run", "html_url")),
    "workflow_job": by_action(_WORKFLOW_JOB, _job, _at("workflow_job", "html_url")),
    "workflow_dispatch": render_workflow_dispatch,
    "deployment": by_action(_DEPLOYMENT, _deployment, _deployment_link),
    "deployment_status": by_action(_DEPLOYMENT_STATUS, _deployment, _deployment_status_link),
    "deployment_review": by_action(
        _DEPLOYMENT_REVIEW, _review_environment, _at("workflow_run", "html_url")
    ),
    "deployment_protection_rule": by_action(
        _DEPLOYMENT_PROTECTION_RULE, _needed("environment"), _repository_link("/deployments")
    ),
    "merge_group": by_action(_MERGE_GROUP, _merge_group, _merge_queue_link),
    # Security.
    "code_scanning_alert": by_action(_CODE_SCANNING_ALERT, _alert(_rule), _at("alert", "html_url")),
    "dependabot_alert": by_action(
        _DEPENDABOT_ALERT, _alert(_advisory_summary), _at("alert", "html_url")
    ),
    "secret_scanning_alert": by_action(
        _SECRET_SCANNING_ALERT, _alert(_secret_type), _at("alert", "html_url")
    ),
    "secret_scanning_alert_location": by_action(
        _SECRET_SCANNING_ALERT_LOCATION, _alert(_secret_type), _at("alert", "html_url")
    ),
    "secret_scanning_scan": by_action(
        _SECRET_SCANNING_SCAN, _repository, _repository_link("/security/secret-scanning")
    ),
    "security_advisory": by_action(
        _SECURITY_ADVISORY, _advisory("security_advisory"), _advisory_link, lambda p: "GitHub"
    ),
    "repository_advisory": by_action(
        _REPOSITORY_ADVISORY,
        _advisory("repository_advisory"),
        _at("repository_advisory", "html_url"),
    ),
    "repository_vulnerability_alert": by_action(
        _REPOSITORY_VULNERABILITY_ALERT, _vulnerable_package, _repository_link("/security")
    ),
    "security_and_analysis": render_security_and_analysis,
    "branch_protection_rule": by_action(
        _BRANCH_PROTECTION_RULE, _needed("rule", "name"), _repository_link("/settings/branches")
    ),
    "branch_protection_configuration": by_action(
        _BRANCH_PROTECTION_CONFIGURATION, _repository, _repository_link("/settings/branches")
    ),
    "repository_ruleset": by_action(
        _REPOSITORY_RULESET, _needed("repository_ruleset", "name"), _ruleset_link
    ),
    "deploy_key": by_action(
        _DEPLOY_KEY, _needed("key", "title"), _repository_link("/settings/keys")
    ),
    # Repositories, organizations, access.
    "public": render_public,
    "star": by_action(_STAR, _repository, _at("sender", "html_url")),
    "repository_dispatch": render_repository_dispatch,
    "repository_import": render_repository_import,
    "member": by_action(_MEMBER, _needed("member", "login"), _at("member", "html_url")),
    "membership": by_action(_MEMBERSHIP, _needed("member", "login"), _at("team", "html_url")),
    "organization": by_action(_ORGANIZATION, _needed("organization", "login"), _organization_link),
    "team": by_action(_TEAM, _needed("team", "name"), _at("team", "html_url")),
    "team_add": render_team_add,
    "org_block": by_action(
        _ORG_BLOCK, _needed("blocked_user", "login"), _at("blocked_user", "html_url")
    ),
    "installation": by_action(_INSTALLATION, _app, _at("installation", "html_url")),
    "installation_repositories": by_action(
        _INSTALLATION_REPOSITORIES, _app, _at("installation", "html_url")
    ),
    "installation_target": by_action(
        _INSTALLATION_TARGET, _needed("account", "login"), _at("account", "html_url")
    ),
    "github_app_authorization": by_action(_GITHUB_APP_AUTHORIZATION, _nowhere, _nowhere),
    "meta": by_action(_META, _needed("hook_id"), _nowhere),
    "personal_access_token_request": by_action(
        _PERSONAL_ACCESS_TOKEN_REQUEST, _needed("organization", "login"), _nowhere
    ),
    "custom_property": by_action(
        _CUSTOM_PROPERTY, _needed("definition", "property_name"), _nowhere
    ),
    "custom_property_values": by_action(
        _CUSTOM_PROPERTY_VALUES, _repository, _at("repository", "html_url")
    ),
    "sponsorship": by_action(
        _SPONSORSHIP,
        _needed("sponsorship", "sponsorable", "login"),
        _at("sponsorship", "sponsorable", "html_url"),
        actor=_sponsor,
    ),
    "marketplace_purchase": by_action(
        _MARKETPLACE_PURCHASE,
        _needed("marketplace_purchase", "plan", "name"),
        _nowhere,
        actor=_purchaser,
    ),
    # Projects (classic and new).
    "project": by_action(_PROJECT, _needed("project", "name"), _at("project", "html_url")),
    "project_card": by_action(
        _PROJECT_CARD,
        lambda p: _suffix(": ", _excerpt(text_at(p, "project_card", "note"))),
        _nowhere,
    ),
    "project_column": by_action(_PROJECT_COLUMN, _needed("project_column", "name"), _nowhere),
    "projects_v2": by_action(_PROJECTS_V2, _needed("projects_v2", "title"), _nowhere),
    "projects_v2_item": by_action(
        _PROJECTS_V2_ITEM,
        lambda p: _ITEM_KINDS.get(text_at(p, "projects_v2_item", "content_type"), "an item"),
        _nowhere,
    ),
    "projects_v2_status_update": by_action(_PROJECTS_V2_STATUS_UPDATE, _status_update, _nowhere),
}


def fallback_text(type_: str) -> str:
    """The text of an event the center does not know or cannot read."""
    return f"Some {type_} happened"


def render(event: str, payload: Any) -> tuple[str, str, str]:
    """``(type, text, link)`` of a GitHub event.

    Never raises: an unknown event or action, or a payload its renderer
    cannot read (missing keys, nulls, wrong types), gives ``Some <type>
    happened`` and no link, where the type is the normalised event name
    (see :func:`event_type`); :data:`FALLBACKS` tells why, once.
    """
    type_ = event_type(event, payload)
    renderer = RENDERERS.get(type_)
    action = text_at(payload, "action")
    if renderer is None:
        FALLBACKS.tell(type_, action, "unknown event")
        return type_, fallback_text(type_), ""
    try:
        text, link = renderer(payload)
    except UnknownAction:
        FALLBACKS.tell(type_, action, "unknown action")
    except UnreadablePayload as error:
        FALLBACKS.tell(type_, action, f"unreadable {error}")
    except Exception:
        # Anything odd in a payload must end as the fallback, never as a 5xx.
        FALLBACKS.tell(type_, action, "renderer error", Failure())
    else:
        if isinstance(text, str) and text and isinstance(link, str):
            return type_, text, link
        FALLBACKS.tell(type_, action, "renderer gave no text")
    return type_, fallback_text(type_), ""


def group(type_: str, payload: Any, analyzer: AnalyzerConfig, door: str) -> str:
    """The group of a GitHub notification (reference §5).

    Organization-level events (:data:`ADMINISTRATIVE_EVENTS`) go to the
    administrative group; the others to the group of their repository's
    ``name``, or the default group when the payload names no repository.
    """
    if type_ in ADMINISTRATIVE_EVENTS:
        return analyzer.administrative_group
    repository = text_at(payload, "repository", "name")
    if not repository:
        return analyzer.default_group_for(door)
    return analyzer.group_for_item(repository, door)


def is_ignored(type_: str, payload: Any, analyzer: AnalyzerConfig) -> bool:
    """Whether the door's analyzer ``ignore`` list silences this event.

    Entries are an event type (``watch``, ``check_suite``), ``<type>:<action>``
    (``pull_request:labeled``, ``pull_request:review_*``), or for pushes
    ``push:<ref pattern>``, matched against the ref without its leading
    ``refs/heads/``: ``push:gh-readonly-queue/*`` or ``push:dependabot/*``
    silence branches, ``push:refs/tags/*`` silences tag pushes. ``*`` stands
    for any run of characters; the match is on the whole name, case-sensitive.
    A default branch change is type ``default_branch``, and also answers to
    the entries of ``repository`` (``repository`` or ``repository:edited``).
    """
    if type_ == "push":
        detail = branch_of(text_at(payload, "ref"))
    else:
        detail = text_at(payload, "action")
    names = {type_, "repository"} if type_ == "default_branch" else {type_}
    for entry in analyzer.ignore:
        name, colon, pattern = entry.partition(":")
        if name not in names:
            continue
        if not colon or item_matches(pattern, detail):
            return True
    return False
