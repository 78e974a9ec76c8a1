"""Phabricator feed stories and Herald webhooks as notification texts (docs/reference.rst §3.4).

Phabricator's ``feed.http-hooks`` post a form with PHP-style bracket keys
(``storyData[objectPHID]``); :func:`parse_form` nests them as PHP would, and
:func:`story_from` gives the keys the names the rest of the center uses.

Herald webhooks post JSON naming the object (``object.phid``, ``object.type``)
and no text: :func:`render_herald` makes one from what Conduit's
``phid.query`` says of the object, or from the PHID alone.
"""

from __future__ import annotations

import re
from typing import Any

from ..texts import cut
from . import UnreadablePayload, dig, text_at

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


# Herald webhooks -------------------------------------------------------------

#: A Herald object type as Phorge spells it (``TASK``, ``DREV``…); other values are ignored.
_HERALD_TYPE = re.compile(r"[A-Za-z0-9_-]{1,64}")

#: Added to the text of the call Herald's "Test webhook" button makes.
TEST_SUFFIX = " (test)"


def is_herald(data: Any) -> bool:
    """Whether a JSON body has a Herald webhook's shape: an ``object`` with a
    ``phid``, and no ``storyText`` (which only feed stories have)."""
    return (
        isinstance(data, dict)
        and "storyText" not in data
        and isinstance(data.get("object"), dict)
        and "phid" in data["object"]
    )


def herald_object(data: Any) -> tuple[str, str]:
    """``(phid, type)`` of a Herald webhook's object.

    The type is ``object.type``, else the type in the PHID, else ``VOID``.
    Raises :class:`UnreadablePayload` when there is no object PHID string.
    """
    phid = dig(data, "object", "phid", default=None)
    if not isinstance(phid, str) or not phid.strip():
        raise UnreadablePayload("object.phid")
    type_ = dig(data, "object", "type", default=None)
    if not isinstance(type_, str) or not _HERALD_TYPE.fullmatch(type_):
        type_ = object_type({"data": {"objectPHID": phid}})
    return phid, type_


def _one_line(value: str) -> str:
    return " ".join(value.split())


def render_herald(data: Any, handle: dict[str, str] | None) -> tuple[str, str, str]:
    """``(type, text, link)`` of a Herald webhook.

    With the object's handle from ``phid.query``: ``<typeName> <fullName> was
    updated`` (``Maniphest Task T42: Widgets spin backwards was updated``) and
    its ``uri`` as the link; without one (no API token, Conduit down or
    refusing, an object the bot cannot see): ``<type> <phid> was updated`` and
    no link. A test call (``action.test``) ends with ``" (test)"``.
    """
    phid, type_ = herald_object(data)
    handle = handle or {}
    name = _one_line(handle.get("fullName") or handle.get("name") or "")
    if name:
        type_name = _one_line(handle.get("typeName") or "")
        text = f"{type_name} {cut(name)}" if type_name else cut(name)
    else:
        text = f"{type_} {cut(_one_line(phid))}"
    text += " was updated"
    if dig(data, "action", "test", default=False) is True:
        text += TEST_SUFFIX
    uri = handle.get("uri") or ""
    link = uri if uri.startswith(("https://", "http://")) else ""
    return type_, text, link
