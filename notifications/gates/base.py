"""The small contract every gate follows, and what gates share.

A gate gets a :class:`GateCall` (door, headers, raw body), checks that the
call is legit, parses it, and returns an :class:`Outcome`: the notifications
to publish and the side actions to run. It raises :class:`GateError` for a
call it refuses; the web layer turns that into the status code and body.
"""

from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from twisted.internet.defer import Deferred

from ..config import Config
from ..notification import Notification

BAD_REQUEST = "Bad request."
UNAUTHORIZED = "Unauthorized action."
NOT_FOUND = "Not found."

#: The deepest JSON nesting a gate accepts (GitHub payloads stay under 10).
MAX_JSON_DEPTH = 64


class GateError(Exception):
    """A refused call: the status code, the public message, and the reason for the log."""

    def __init__(self, status: int, message: str, reason: str = ""):
        super().__init__(f"{status} {message} {reason}".strip())
        self.status = status
        self.message = message
        self.reason = reason


def bad_request(reason: str) -> GateError:
    return GateError(400, BAD_REQUEST, reason)


@dataclass(frozen=True)
class GateCall:
    """What a gate needs to know of one HTTP call."""

    door: str
    headers: dict[str, str]  # lowercased names
    body: bytes
    query: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    @property
    def content_type(self) -> str:
        value = self.header("content-type") or ""
        return value.split(";", 1)[0].strip().lower()


@dataclass(frozen=True)
class Publication:
    """A notification and the AMQP message id it is published with."""

    notification: Notification
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))


#: A side action runs beside the publication; its Deferred never fails and fires
#: with one entry of the report, or None when there was nothing to do.
SideAction = Callable[[], Deferred]


@dataclass
class Outcome:
    """What a gate asks for after accepting a call."""

    gate: str
    publications: list[Publication] = field(default_factory=list)
    side_actions: list[SideAction] = field(default_factory=list)
    #: For the log: the event, the delivery id.
    event: str = ""
    delivery: str = ""


class Gate:
    """Base of the gates: a name and the configuration."""

    name = ""
    #: Whether the gate reads form bodies as well as JSON (for the 415 message).
    takes_form = False

    def __init__(self, config: Config):
        self.config = config

    def process(self, call: GateCall) -> Outcome | Deferred:
        raise NotImplementedError

    def check_door_secret(self, call: GateCall) -> None:
        """For gates whose callers do not sign: a door with a secret needs the secret.

        It comes as ``?token=<secret>`` or ``Authorization: Bearer <secret>``.
        """
        service = self.config.service(self.name, call.door)
        if service is None or not service.secret:
            return
        given = call.query.get("token")
        authorization = call.header("authorization") or ""
        if given is None and authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        if given is None or not hmac.compare_digest(given.encode(), service.secret.encode()):
            raise GateError(403, UNAUTHORIZED, "missing or wrong door token")


def _depth_checked(value: Any) -> Any:
    # An iterative walk: a recursive one would itself hit the recursion limit.
    # Only containers go on the stack: most values of a payload are scalars.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise bad_request(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return value


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """Parse a JSON object, or raise a 400 :class:`GateError` saying why."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text)
    except UnicodeDecodeError:
        raise bad_request("body is not valid UTF-8") from None
    except RecursionError:
        raise bad_request(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as error:
        raise bad_request(f"body is not valid JSON ({error.args[0].split(':')[0]})") from None
    if not isinstance(value, dict):
        raise bad_request("body is not a JSON object")
    if "\\ud" in text or "\\uD" in text:
        # An escaped lone surrogate parses, but no UTF-8 message can carry it.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("body has an unpaired surrogate escape") from None
    return _depth_checked(value)


def parse_form(raw: bytes) -> list[tuple[str, str]]:
    """Parse an ``application/x-www-form-urlencoded`` body into (key, value) pairs."""
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise bad_request("form body is not valid UTF-8") from None
