"""The small contract every gate follows, and what gates share.

A gate gets a :class:`GateCall` (door, headers, raw body), checks that the
call is legit, parses it, and returns an :class:`Outcome`: the notifications
to publish and the side actions to run. It raises :class:`GateError` for a
call it refuses; the web layer turns that into the status code and body.

What a gate *is* (its name, whether its callers sign, the clients it needs,
how a caller signs a call, its OpenAPI description…) is said by the class
attributes of :class:`Gate`, which every gate sets for itself; the registry of
:mod:`notifications.gates` lists the gates.
"""

from __future__ import annotations

import hmac
import json
import math
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl, quote

import orjson
from twisted.internet.defer import Deferred

from .. import refusals
from ..jsonutil import NonFiniteFloat
from ..notification import Notification

if TYPE_CHECKING:
    # Only named in annotations: the configuration reads the gates' registry,
    # so the gates do not import it when they run.
    from ..config import Config
    from ..credentials import Service

BAD_REQUEST = "Bad request."
UNAUTHORIZED = "Unauthorized action."
NOT_FOUND = "Not found."

#: The deepest JSON nesting a gate accepts (GitHub payloads stay under 10).
MAX_JSON_DEPTH = 64


class GateError(Exception):
    """A refused call: the status code, the public message, the reason for the log
    (the answer's second line), and the reason's code among
    :data:`notifications.refusals.REASONS` (counted per door and in the metrics)."""

    def __init__(self, status: int, message: str, reason: str = "", code: str | None = None):
        super().__init__(f"{status} {message} {reason}".strip())
        self.status = status
        self.message = message
        self.reason = reason
        self.code = code


def bad_request(reason: str, code: str = refusals.BAD_PAYLOAD) -> GateError:
    return GateError(400, BAD_REQUEST, reason, code)


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


#: Content types the gates read a JSON body from. Callers of the older system
#: often sent JSON with no type, text/plain or curl's default form type, and
#: it read the body whatever the type said: so do we.
JSON_TYPES = frozenset(
    {"", "application/json", "text/json", "text/plain", "application/x-www-form-urlencoded"}
)


@dataclass(frozen=True)
class GateDescription:
    """How the OpenAPI document (``GET /openapi.json``) describes ``POST /gate/<Gate>/<door>``.

    Plain OpenAPI 3.0 data; the document adds what every gate shares (the
    door, the door token of the gates whose callers do not sign, the
    answers).
    """

    summary: str
    description: str
    #: The request body: media type → media type object (``{"schema": …}``).
    body: Mapping[str, Any]
    #: The headers the gate reads (OpenAPI parameter objects).
    headers: tuple[Mapping[str, Any], ...] = ()
    #: Schemas the body refers to, as ``#/components/schemas/<name>``.
    schemas: Mapping[str, Any] = field(default_factory=dict)
    #: The side actions its report may list, besides ``AMQPAction``.
    side_actions: tuple[str, ...] = ()
    #: The first lines of the 404 answers the gate itself gives.
    not_found: tuple[str, ...] = ()
    #: Whether a redelivery answers ``"duplicate": true``.
    duplicates: bool = False
    #: The schema of the report's ``gate`` when it is not the gate's name.
    report_gate: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class CheckCall:
    """The call ``notifications door check`` posts to a door, as its sender would make it."""

    body: bytes
    #: Lowercased names.
    headers: dict[str, str]
    #: The AMQP message id the notification will have, when the call decides it.
    message_id: str | None = None


def json_body(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


class Gate:
    """Base of the gates: what a gate is (class attributes), and the configuration.

    A gate sets the class attributes below for itself; the registry of
    :mod:`notifications.gates` reads them for the configuration, the web
    site, the command line and the OpenAPI document.
    """

    #: The name in ``/gate/<name>/`` and in the credentials file (case-sensitive).
    name: ClassVar[str] = ""
    #: Whether its callers sign their calls (an HMAC with a door's key): only
    #: such a gate may be told to accept unsigned calls (``[gate]
    #: allow_unsigned``). The others take the door's secret as a token.
    signs: ClassVar[bool] = False
    #: Whether the gate reads form bodies as well as JSON (for the 415 message).
    takes_form: ClassVar[bool] = False
    #: Whether the event comes beside the payload (a header) rather than in
    #: it: ``notifications payload`` then needs one.
    takes_event: ClassVar[bool] = False
    #: The clients (attributes of :class:`notifications.clients.Clients`) the
    #: gate reads a call with, given to its constructor by name;
    #: ``notifications payload`` gives them too.
    clients: ClassVar[tuple[str, ...]] = ()
    #: The clients of its side actions, given to its constructor by name;
    #: ``notifications payload`` runs no side action and gives none.
    side_action_clients: ClassVar[tuple[str, ...]] = ()
    #: The keys a credentials entry of this gate may have besides the common ones.
    credential_keys: ClassVar[frozenset[str]] = frozenset()
    #: Whether a credentials entry of this gate must give an ``instance`` URL.
    needs_instance: ClassVar[bool] = False
    #: What ``/config`` says of a door of this gate when nothing better is
    #: known ("" when all is well).
    default_status: ClassVar[str] = ""
    #: How the OpenAPI document describes the gate.
    openapi: ClassVar[GateDescription]
    #: Where its sender is set up: the first line of :meth:`sender_setup`.
    sender: ClassVar[str] = ""
    #: The key of a credentials entry that proves a call comes from the door's
    #: sender: ``notifications door rotate`` renews it, the previous value
    #: accepted for a while (reference §7.8).
    door_key: ClassVar[str] = "secret"
    #: Whether the center makes that key (``door add`` draws a random one);
    #: else the sender makes it, and the operator gives it in a file.
    makes_door_key: ClassVar[bool] = True

    def __init__(self, config: Config, clock=None):
        self.config = config
        #: The reactor's clock (``seconds()``), which says whether a previous
        #: secret is still accepted; without one (a command), the wall clock.
        self.clock = clock

    def now(self) -> float:
        return self.clock.seconds() if self.clock is not None else time.time()

    @classmethod
    def accepts(cls, content_type: str) -> bool:
        """Whether the gate reads bodies of this type (else 415): any of
        :data:`JSON_TYPES` or a ``*+json`` type. The form type is among them:
        a gate that takes forms reads such a body as a form, the others as JSON."""
        return content_type in JSON_TYPES or content_type.endswith("+json")

    @classmethod
    def call_headers(
        cls, service: Service | None, body: bytes, event: str | None
    ) -> dict[str, str]:
        """The headers (lowercased) of a call as the service itself makes it.

        For ``notifications payload``: the door's ``service`` entry signs it,
        or, as here for the gates whose callers do not sign, gives its token.
        """
        if service is not None and service.secret:
            return {"authorization": f"Bearer {service.secret}"}
        return {}

    @classmethod
    def sender_setup(cls, door: str, url: str, secret: str | None) -> list[str]:
        """What to set on the sender's side for a door at ``url`` (``notifications door
        add`` prints it). Here, for the gates whose callers do not sign: the door's
        secret is a token, given as ``?token=`` or ``Authorization: Bearer``."""
        lines = [cls.sender] if cls.sender else []
        if not secret:
            return [
                *lines,
                f"  URL:           {url}",
                "  Content type:  application/json",
                "This door has no secret: it accepts calls from anyone who knows its URL.",
            ]
        return [
            *lines,
            f"  URL:           {url}?token={quote(secret, safe='')}",
            "  Content type:  application/json",
            "(Or the URL without ?token= and the header Authorization: Bearer <token>.)",
        ]

    @classmethod
    def check_payload(cls, door: str, nonce: str) -> dict[str, Any]:
        """A small valid payload of this gate, with ``nonce`` in it (``door check``)."""
        raise NotImplementedError

    @classmethod
    def check_call(cls, door: str, service: Service | None, nonce: str) -> CheckCall:
        """The call ``notifications door check`` posts, as the sender would make it:
        here :meth:`check_payload` with the door's token (:meth:`call_headers`)."""
        body = json_body(cls.check_payload(door, nonce))
        headers = {
            "content-type": "application/json",
            "user-agent": "notifications-door-check",
            **cls.call_headers(service, body, None),
        }
        return CheckCall(body, headers)

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
        accepted = (secret.encode() for secret in service.secrets(self.now()))
        if given is None:
            raise GateError(
                403, UNAUTHORIZED, "missing or wrong door token", refusals.MISSING_SIGNATURE
            )
        if not matches_any(given.encode(), accepted):
            raise GateError(
                403, UNAUTHORIZED, "missing or wrong door token", refusals.SIGNATURE_MISMATCH
            )


def matches_any(given: bytes, accepted: Iterable[bytes]) -> bool:
    """Whether ``given`` is one of ``accepted`` (a secret and its previous one),
    each compared in constant time, all of them compared."""
    found = False
    for value in accepted:
        found |= hmac.compare_digest(given, value)
    return found


#: orjson keeps integers in [-2**63, 2**64) exact and reads larger ones as floats.
_INT64_BOUND = 2.0**63


class _ReadAsFloat(Exception):
    """orjson read an integer past 64 bits as a float: only the stdlib keeps it exact."""


def _depth_checked(container: dict | list, depth: int, from_orjson: bool) -> None:
    # Recursive, descending only into containers, and no further than the
    # limit: at most MAX_JSON_DEPTH frames, whatever the input. Classes are
    # compared with `is`: a parsed value is made of exact dicts and lists.
    # A float past 2**63 that orjson read may be an integer it could not keep.
    for child in container.values() if type(container) is dict else container:
        kind = type(child)
        if kind is dict or kind is list:
            if depth == MAX_JSON_DEPTH:
                raise bad_request(
                    f"JSON nested deeper than {MAX_JSON_DEPTH} levels", refusals.BAD_JSON
                )
            _depth_checked(child, depth + 1, from_orjson)
        elif kind is float and from_orjson and not -_INT64_BOUND < child < _INT64_BOUND:
            raise _ReadAsFloat


def _read_float(text: str) -> float:
    value = float(text)
    return value if math.isfinite(value) else NonFiniteFloat(value)


def _read_constant(name: str) -> float:
    return NonFiniteFloat(name)  # NaN, Infinity, -Infinity


def parse_json_object(raw: bytes | str) -> dict[str, Any]:
    """Parse a JSON object, or raise a 400 :class:`GateError` saying why.

    orjson reads the body. A body it refuses, or may read differently, goes
    to the standard library's reading, which then decides and says why: so
    what is accepted, its values and the reasons of a 400 are the stdlib's.
    orjson refuses invalid UTF-8 or JSON, lone surrogate escapes, NaN and
    Infinity, numbers past a double and nesting past 1024 levels; a body that
    is not an object is refused either way, and an integer past 64 bits,
    which orjson reads as a float, must stay an exact int.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _parse_with_stdlib(raw)
    if type(value) is not dict:
        # Not an object, or (nested past the stdlib's recursion limit) too deep.
        return _parse_with_stdlib(raw)
    try:
        _depth_checked(value, 1, True)
    except _ReadAsFloat:
        return _parse_with_stdlib(raw)
    return value


def _parse_with_stdlib(raw: bytes | str) -> dict[str, Any]:
    # The reference reading, and the only one before orjson. The NaN and
    # infinities it reads are marked for the notification's encoder.
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        value = json.loads(text, parse_float=_read_float, parse_constant=_read_constant)
    except UnicodeDecodeError:
        raise bad_request("body is not valid UTF-8", refusals.BAD_JSON) from None
    except RecursionError:
        raise bad_request(
            f"JSON nested deeper than {MAX_JSON_DEPTH} levels", refusals.BAD_JSON
        ) from None
    except ValueError as error:
        raise bad_request(
            f"body is not valid JSON ({error.args[0].split(':')[0]})", refusals.BAD_JSON
        ) from None
    if not isinstance(value, dict):
        raise bad_request("body is not a JSON object", refusals.BAD_JSON)
    if "\\ud" in text or "\\uD" in text:
        # An escaped lone surrogate parses, but no UTF-8 message can carry it.
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise bad_request("body has an unpaired surrogate escape", refusals.BAD_JSON) from None
    _depth_checked(value, 1, False)
    return value


def parse_form(raw: bytes) -> list[tuple[str, str]]:
    """Parse an ``application/x-www-form-urlencoded`` body into (key, value) pairs."""
    try:
        return parse_qsl(raw.decode("utf-8"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise bad_request("form body is not valid UTF-8", refusals.BAD_JSON) from None
