"""The notification: the one standardized message every gate produces (docs/reference.rst §1)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .jsonutil import dumps

#: AMQP shortstr fields (routing key, message id) are at most 255 bytes.
MAX_SHORTSTR = 255

#: What :func:`routing_key` gives: four dot-separated parts (the type may have
#: more words), no empty word, no topic wildcard.
ROUTING_KEY_PATTERN = r"^[^.*#]+(\.[^.*#]+){3,}$"


class RoutingKeyTooLong(ValueError):
    """The routing key of a notification does not fit in an AMQP shortstr."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One short notification, published as JSON with exactly these seven keys."""

    service: str
    project: str
    group: str
    rawContent: Any  # the wire name consumers already read
    type: str
    text: str
    link: str

    def as_dict(self) -> dict[str, Any]:
        """The notification as the JSON object consumers receive, keys in reference §1.1 order."""
        return {
            "service": self.service,
            "project": self.project,
            "group": self.group,
            "rawContent": self.rawContent,
            "type": self.type,
            "text": self.text,
            "link": self.link,
        }

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON, non-ASCII characters kept as they are.

        What ``json.dumps(..., ensure_ascii=False, separators=(",", ":"))``
        wrote before, but for the spelling of some floats: see
        :func:`notifications.jsonutil.dumps`.
        """
        return dumps(self.as_dict())

    @property
    def routing_key(self) -> str:
        """``project.group.service.type``, lowercased and sanitized."""
        return routing_key(self.project, self.group, self.service, self.type)


def _word(word: str) -> str:
    return word or "_"


def _part(value: str, keep_dots: bool) -> str:
    value = value.lower().replace("*", "_").replace("#", "_")
    if not keep_dots:
        return _word(value.replace(".", "_"))
    return ".".join(_word(word) for word in value.split("."))


def routing_key(project: str, group: str, service: str, type_: str) -> str:
    """Build the routing key so that no part can inject topic syntax.

    ``*`` and ``#`` become ``_``; dots in project, group and service become
    ``_`` while the dots of the type stay (consumers bind on
    ``*.*.jenkins.completed.*``); an empty part or word becomes ``_``.
    Raises :class:`RoutingKeyTooLong` past 255 UTF-8 bytes.
    """
    key = ".".join(
        (
            _part(project, keep_dots=False),
            _part(group, keep_dots=False),
            _part(service, keep_dots=False),
            _part(type_, keep_dots=True),
        )
    )
    if len(key.encode()) > MAX_SHORTSTR:
        raise RoutingKeyTooLong(f"routing key is over {MAX_SHORTSTR} bytes")
    return key
