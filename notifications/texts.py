"""Small text helpers shared by every renderer (docs/reference.rst §4)."""

from __future__ import annotations

#: Between the parts of a text: space, em dash, space.
SEPARATOR = " — "

ELLIPSIS = "…"


def cut(text: str, length: int = 114) -> str:
    """Keep ``text`` if it has at most ``length`` characters, else cut it with an ellipsis."""
    if length < 1:
        return ELLIPSIS
    if len(text) <= length:
        return text
    return text[: length - 1] + ELLIPSIS


def commit_title(message: str) -> str:
    """The first line of a commit message, cut to 72 characters."""
    return cut(message.split("\n", 1)[0].rstrip("\r"), 72)
