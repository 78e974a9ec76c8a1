"""Phabricator feed stories as notification texts (SPEC §3.4).

Phabricator's ``feed.http-hooks`` post a form with PHP-style bracket keys
(``storyData[objectPHID]``); :func:`parse_form` nests them as PHP would, and
:func:`story_from` gives the keys the names the rest of the center uses.
"""

from __future__ import annotations

import re
from typing import Any

from . import dig, text_at

#: Type of a story without a readable object PHID.
VOID = "VOID"

#: Fields nested deeper are dropped, as PHP does past ``max_input_nesting_level``.
MAX_DEPTH = 64

_KEY = re.compile(r"([^\[\]]+)((?:\[[^\[\]]*\])*)")
_BRACKETS = re.compile(r"\[([^\[\]]*)\]")


class _Node(dict):
    """A container being built; it becomes a list if only ``[]`` ever filled it."""

    def __init__(self, is_list: bool):
        super().__init__()
        self.is_list = is_list

    def next_index(self) -> str:
        # Like PHP, an appended value takes the key after the largest integer one.
        indexes = [int(name) for name in self if name.isascii() and name.isdigit()]
        return str(max(indexes) + 1 if indexes else 0)


def _split_key(key: str) -> list[str]:
    # "a[b][]" → ["a", "b", ""]; a key not of that shape stays whole rather
    # than guess what a broken key meant.
    match = _KEY.fullmatch(key)
    if match is None:
        return [key]
    return [match.group(1), *_BRACKETS.findall(match.group(2))]


def _finish(value: Any) -> Any:
    if not isinstance(value, _Node):
        return value
    if value.is_list:
        return [_finish(item) for item in value.values()]
    return {name: _finish(item) for name, item in value.items()}


def parse_form(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Nest form fields with PHP-style bracket keys into dicts and lists.

    ``a[b][c]=x`` gives ``{"a": {"b": {"c": "x"}}}``; ``a[]=x&a[]=y`` gives
    ``{"a": ["x", "y"]}``. When fields disagree on a shape the later one wins,
    as in PHP (``a=1&a[b]=2`` gives ``{"a": {"b": "2"}}`` and the reverse
    gives ``{"a": "1"}``); a list that also gets a named key becomes a dict
    keyed by position (``a[]=x&a[k]=y`` gives ``{"a": {"0": "x", "k": "y"}}``).
    Fields nested over :data:`MAX_DEPTH` levels are dropped. Never raises.
    """
    root = _Node(is_list=False)
    for key, value in pairs:
        if not isinstance(key, str) or not key:
            continue
        path = _split_key(key)
        if len(path) > MAX_DEPTH:
            continue
        node = root
        for index, step in enumerate(path):
            if step == "":
                step = node.next_index()
            else:
                node.is_list = False
            if index == len(path) - 1:
                node[step] = value
                break
            child = node.get(step)
            if not isinstance(child, _Node):
                # Missing, or a scalar that this later field overrides.
                child = node[step] = _Node(is_list=path[index + 1] == "")
            node = child
    return _finish(root)


def story_from(data: Any) -> dict[str, Any]:
    """A feed story with the center's key names.

    ``storyID`` becomes ``id``; other ``story…`` keys lose the prefix and the
    next letter is lowercased (``storyAuthorPHID`` → ``authorPHID``,
    ``storyData`` → ``data``); the other keys keep their name.
    """
    if not isinstance(data, dict):
        return {}
    story: dict[str, Any] = {}
    for key, value in data.items():
        if key == "storyID":
            key = "id"
        elif isinstance(key, str) and key.startswith("story") and len(key) > len("story"):
            key = key[5].lower() + key[6:]
        story[key] = value
    return story


def object_type(story: Any) -> str:
    """The four characters after ``PHID-`` in ``data.objectPHID`` (``TASK``,
    ``DREV``…), or ``VOID`` when there is no such PHID."""
    phid = dig(story, "data", "objectPHID")
    if not isinstance(phid, str) or not phid.startswith("PHID-") or len(phid) < 9:
        return VOID
    return phid[5:9]


def render(story: Any) -> tuple[str, str, str]:
    """``(type, text, link)`` of a story: its object type, its text, no link."""
    return object_type(story), text_at(story, "text"), ""
