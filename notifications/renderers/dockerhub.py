"""Docker Hub payloads as notification texts (docs/reference.rst §3.2, §4.2).

Docker Hub calls the gate itself for pushes; build failures only come as an
e-mail, which Mailgun stores and announces. The gate fetches that stored
message; :func:`parse_failure_mail` reads what the text needs from it.
"""

from __future__ import annotations

import re
from typing import Any

from . import dig, text_at

#: The type of a push, and of a build failure announced by Mailgun.
PUSH = "push"
BUILD_FAILURE = "buildFailure"

_QUOTED = re.compile(r'"([^"]*)"')
_HUB_LINK = re.compile(r"https://hub\.docker\.com/r\S*")


def event_of(payload: Any) -> str:
    """``push`` when the payload has a ``repository.repo_url``, else ``buildFailure``."""
    if dig(payload, "repository", "repo_url", default=None) is not None:
        return PUSH
    return BUILD_FAILURE


def render_push(payload: Any) -> tuple[str, str]:
    """``(text, link)`` of an image pushed to the registry."""
    repository = text_at(payload, "repository", "repo_name")
    pusher = text_at(payload, "push_data", "pusher")
    return (
        f"New image pushed to Docker Hub registry for {repository} by {pusher}",
        text_at(payload, "repository", "repo_url"),
    )


def render_build_failure(repository: str, link: str) -> tuple[str, str]:
    """``(text, link)`` of a failed automated build, from what the mail said."""
    return f"Image build by Docker Hub registry failure for {repository}", link


def parse_failure_mail(body_plain: str) -> tuple[str, str]:
    """``(repository, link)`` found in the plain-text body of Docker Hub's failure mail.

    The repository is the first double-quoted text containing a ``/``
    (``"acme/widgets"``); the link is the first ``https://hub.docker.com/r…``
    URL, up to the next whitespace. Either is "" when the mail has none.
    """
    if not isinstance(body_plain, str):
        return "", ""
    repository = next(
        (quoted for quoted in _QUOTED.findall(body_plain) if "/" in quoted),
        "",
    )
    link = _HUB_LINK.search(body_plain)
    return repository, link.group(0) if link else ""
