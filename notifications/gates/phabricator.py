"""The Phabricator gate: feed stories from ``feed.http-hooks`` and Herald webhooks
(docs/reference.rst §3.4).

Feed stories are not signed (Phabricator cannot sign them): the door only has
to be a declared instance. Herald webhooks are signed with the webhook's HMAC
key, the door's ``hmac_key``: ``X-Phabricator-Webhook-Signature`` is the hex
HMAC-SHA256 of the raw body. A call is a Herald webhook when it carries that
header, or when its JSON body has a Herald webhook's shape (an ``object`` with
a ``phid``, no ``storyText``).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from twisted.internet import defer

from .. import refusals
from ..notification import Notification
from ..renderers import UnreadablePayload, phabricator
from .base import (
    UNAUTHORIZED,
    CheckCall,
    Gate,
    GateCall,
    GateDescription,
    GateError,
    Outcome,
    Publication,
    bad_request,
    matches_any,
    parse_form,
)
from .base import parse_json_object as parse_json

if TYPE_CHECKING:
    from ..credentials import Service

UNKNOWN_INSTANCE = "Unknown Phabricator instance."

#: What ``/config`` says of a door whose projects map is not cached (yet).
NOT_CACHED = "Projects map not cached."

#: The header of a Herald webhook: hex HMAC-SHA256 of the raw body.
SIGNATURE_HEADER = "X-Phabricator-Webhook-Signature"


def herald_signature(key: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``body`` with ``key``, as Herald signs a webhook."""
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def herald_signature_matches(call: GateCall, keys: str | Sequence[str]) -> bool:
    """Whether the call carries the hex HMAC-SHA256 of its raw body with the key, or
    with one of ``keys`` (a key and its previous one)."""
    given = call.header(SIGNATURE_HEADER)
    if given is None:
        return False
    if isinstance(keys, str):
        keys = (keys,)
    expected = (herald_signature(key, call.body).encode() for key in keys)
    return matches_any(given.strip().lower().encode(), expected)


# How the OpenAPI document describes a call: a feed story (a form, or JSON) or a
# Herald webhook.

_STORY_FIELDS = {
    "storyID": {"type": "string"},
    "storyType": {"type": "string"},
    "storyText": {"type": "string"},
    "storyAuthorPHID": {"type": "string"},
    "epoch": {"type": "string"},
}

PHABRICATOR_FORM = {
    "type": "object",
    "description": "A feed.http-hooks story: PHP-style bracket keys nest "
    "(storyData[objectPHID], storyData[transactionPHIDs][PHID-XACT-…]).",
    "required": ["storyText"],
    "properties": {**_STORY_FIELDS, "storyData[objectPHID]": {"type": "string"}},
    "additionalProperties": {"type": "string"},
    "example": {
        "storyID": "42",
        "storyType": "PhabricatorApplicationTransactionFeedStory",
        "storyData[objectPHID]": "PHID-TASK-abcdefghijklmnopqrst",
        "storyAuthorPHID": "PHID-USER-abcdefghijklmnopqrst",
        "storyText": "alice created T42: Widgets are late.",
        "epoch": "1452266121",
    },
}

HERALD_JSON = {
    "type": "object",
    "description": f"A Herald webhook call (Phorge/Phabricator), signed with {SIGNATURE_HEADER}.",
    "required": ["object"],
    "properties": {
        "object": {
            "type": "object",
            "required": ["phid"],
            "properties": {"phid": {"type": "string"}, "type": {"type": "string"}},
        },
        "triggers": {"type": "array", "items": {"type": "object"}},
        "action": {"type": "object"},
        "transactions": {"type": "array", "items": {"type": "object"}},
    },
}

FEED_STORY_JSON = {
    "type": "object",
    "description": "The same story as a JSON object.",
    "required": ["storyText"],
    "properties": {
        "storyID": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "storyType": {"type": "string"},
        "storyText": {"type": "string"},
        "storyAuthorPHID": {"type": "string"},
        "epoch": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "storyData": {
            "type": "object",
            "properties": {
                "objectPHID": {"type": "string"},
                "transactionPHIDs": {"type": "object"},
            },
        },
    },
}


class PhabricatorGate(Gate):
    """``POST /gate/Phabricator/<door>``, the door being a declared instance."""

    name = "Phabricator"
    signs = True
    takes_form = True
    clients = ("projects",)
    #: The Herald webhook's HMAC key; the entry's ``secret`` is the Conduit API token.
    #: And, while it is being rotated, its previous value (reference §7.8).
    credential_keys = frozenset(
        {
            "hmac_key",
            "hmac_key_env",
            "hmac_key_file",
            "previous_hmac_key",
            "previous_hmac_key_file",
            "previous_hmac_key_expires",
        }
    )
    needs_instance = True
    default_status = NOT_CACHED
    openapi = GateDescription(
        summary="A Phabricator feed.http-hooks story",
        description=(
            "The door must be a declared Phabricator instance, else 404 Unknown Phabricator "
            "instance. A feed story without a storyText string is 400. A Herald webhook "
            f"(JSON with object.phid) must carry {SIGNATURE_HEADER}, the hex "
            "HMAC-SHA256 of the raw body with the door's hmac_key, else 403 (unless the door "
            "has no hmac_key and allow_unsigned lists Phabricator)."
        ),
        body={
            "application/x-www-form-urlencoded": {"schema": PHABRICATOR_FORM},
            "application/json": {"schema": {"oneOf": [FEED_STORY_JSON, HERALD_JSON]}},
        },
        headers=(
            {
                "name": SIGNATURE_HEADER,
                "in": "header",
                "required": False,
                "description": "Herald webhooks: hex HMAC-SHA256 of the raw body.",
                "schema": {"type": "string"},
            },
        ),
        not_found=(UNKNOWN_INSTANCE,),
    )
    sender = "On Phabricator, as an administrator:"
    #: Herald signs with the webhook's HMAC key, which Phabricator makes; the
    #: entry's ``secret`` is the Conduit API token, which the center sends.
    door_key = "hmac_key"
    makes_door_key = False

    @classmethod
    def sender_setup(cls, door: str, url: str, secret: str | None) -> list[str]:
        return [
            cls.sender,
            "  Feed stories: add the URL to feed.http-hooks, keeping those already listed:",
            f"    bin/config set feed.http-hooks '[\"{url}\"]'",
            "  Herald webhooks: Webhooks → Create Webhook:",
            f"    URI:     {url}",
            "    Status:  Enabled",
            "  then give its HMAC key (View HMAC Key) to the center in a file (unless "
            "door add had it):",
            f"    notifications door rotate Phabricator {door} --hmac-key-file FILE",
        ]

    @classmethod
    def check_call(cls, door: str, service: Service | None, nonce: str) -> CheckCall:
        """A feed story with no object, as ``feed.http-hooks`` posts it: type ``VOID``,
        and no Conduit call (there is no object to ask about)."""
        body = urlencode(
            {
                "storyID": "0",
                "storyType": "PhabricatorApplicationTransactionFeedStory",
                "storyAuthorPHID": "PHID-USER-notificationsdoorcheck",
                "storyText": f"door check of Phabricator/{door} ({nonce})",
                "epoch": str(int(time.time())),
            }
        ).encode()
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "user-agent": "notifications-door-check",
        }
        return CheckCall(body, headers)

    def __init__(self, config, projects=None, clock=None):
        super().__init__(config, clock)
        #: Finds the projects of a story's object (and names a Herald webhook's
        #: object) through Conduit; None: no Conduit call.
        self.projects = projects

    @classmethod
    def call_headers(cls, service: Service | None, body: bytes, event: str | None) -> dict:
        """Herald's signature, with the door's ``hmac_key`` (its ``secret`` is the
        Conduit token, and feed stories are not signed)."""
        if service is not None and service.hmac_key:
            return {SIGNATURE_HEADER.lower(): herald_signature(service.hmac_key, body)}
        return {}

    def story(self, call: GateCall, data: dict | None = None) -> tuple[dict, dict]:
        """The payload as received (parsed) and the story made of it."""
        if data is None:
            data = phabricator.parse_form(parse_form(call.body))
        story = phabricator.story_from(data)
        if not isinstance(story.get("text"), str):
            raise bad_request("expected a feed story with a storyText")
        return data, story

    def notification(
        self, door: str, data: dict, type_: str, text: str, link: str, projects: list[str]
    ) -> Notification:
        analyzer = self.config.analyzers.for_door(self.name, door)
        return Notification(
            service=self.name,
            project=door,
            group=analyzer.group_for_story(projects, text, door),
            rawContent=data,
            type=type_,
            text=text,
            link=link,
        )

    def needs_projects(self, service: Service, door: str) -> bool:
        # Projects only matter to mappings with items: without any (or without
        # an API token to ask Conduit with), no Conduit call.
        analyzer = self.config.analyzers.for_door(self.name, door)
        return bool(
            self.projects is not None
            and service.secret
            and any(mapping.items for mapping in analyzer.mappings)
        )

    def process(self, call: GateCall):
        service = self.config.service(self.name, call.door)
        if service is None:
            raise GateError(
                404, UNKNOWN_INSTANCE, "no such Phabricator door", refusals.UNKNOWN_DOOR
            )
        if call.header(SIGNATURE_HEADER) is not None:
            # Signed: a Herald webhook, whatever the body; signature first.
            self.authenticate_herald(call, service)
            return self.herald(call, service, parse_json(call.body))
        if call.content_type != "application/json":
            return self.feed_story(call, service, *self.story(call))
        data = parse_json(call.body)
        if phabricator.is_herald(data):
            self.authenticate_herald(call, service)
            return self.herald(call, service, data)
        return self.feed_story(call, service, *self.story(call, data))

    # Feed stories ------------------------------------------------------------

    def feed_story(self, call: GateCall, service: Service, data: dict, story: dict):
        type_, text, link = phabricator.render(story)
        outcome = Outcome(gate=self.name, event=type_)

        def publish(projects: list[str]) -> Outcome:
            notification = self.notification(call.door, data, type_, text, link, projects)
            outcome.publications.append(Publication(notification))
            return outcome

        if not self.needs_projects(service, call.door):
            return publish([])
        return self.projects.of_story(service, story).addCallback(publish)

    # Herald webhooks ---------------------------------------------------------

    def authenticate_herald(self, call: GateCall, service: Service) -> None:
        """The door's HMAC key signs Herald webhooks; a door without one takes
        them only when ``allow_unsigned`` lists Phabricator."""
        if service.hmac_key:
            if not herald_signature_matches(call, service.hmac_keys(self.now())):
                signed = call.header(SIGNATURE_HEADER) is not None
                code = refusals.SIGNATURE_MISMATCH if signed else refusals.MISSING_SIGNATURE
                raise GateError(
                    403, UNAUTHORIZED, "missing or wrong Herald webhook signature", code
                )
            return
        if self.name not in self.config.allow_unsigned:
            raise GateError(
                403,
                UNAUTHORIZED,
                "door has no hmac_key and unsigned calls are not allowed",
                refusals.UNPROTECTED_DOOR,
            )

    def herald(self, call: GateCall, service: Service, data: dict):
        try:
            phid, type_ = phabricator.herald_object(data)
        except UnreadablePayload:
            raise bad_request("expected a Herald webhook with an object.phid string") from None
        outcome = Outcome(gate=self.name, event=f"herald:{type_}")
        ask_conduit = self.projects is not None and bool(service.secret)
        handle = self.projects.handle_of(service, phid) if ask_conduit else defer.succeed(None)
        story = {"data": {"objectPHID": phid}}
        if self.needs_projects(service, call.door):
            projects = self.projects.of_story(service, story)
        else:
            projects = defer.succeed([])

        def publish(results: list) -> Outcome:
            handle, projects = results
            _, text, link = phabricator.render_herald(data, handle)
            notification = self.notification(call.door, data, type_, text, link, projects)
            outcome.publications.append(Publication(notification))
            return outcome

        # Both lookups run at once and never fail; each ends within the timeout.
        d = defer.gatherResults([handle, projects], consumeErrors=True)
        return d.addCallback(publish)
