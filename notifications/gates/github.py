"""The GitHub gate: signed webhooks, one notification per event (docs/reference.rst §3.1)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Sequence
from functools import partial
from typing import TYPE_CHECKING

from twisted.logger import Logger

from .. import refusals
from ..notification import Notification
from ..renderers import github as render
from ..renderers import text_at
from ..report import NOTIFY_NEW_COMMITS, TRIGGER_BUILD
from .base import (
    NOT_FOUND,
    UNAUTHORIZED,
    CheckCall,
    Gate,
    GateCall,
    GateDescription,
    GateError,
    Outcome,
    Publication,
    SideAction,
    bad_request,
    json_body,
    matches_any,
    parse_form,
    parse_json_object,
)

if TYPE_CHECKING:
    from ..credentials import Service

EVENT_HEADER = "X-GitHub-Event"
DELIVERY_HEADER = "X-GitHub-Delivery"

#: GitHub's delivery ids are GUIDs; accept any short printable token, as
#: redeliveries and other senders use other shapes, but it must fit an AMQP
#: message id.
_DELIVERY = re.compile(r"[\x21-\x7e]{1,200}")
_EVENT = re.compile(r"[a-z0-9_]{1,100}")

#: GitHub's zen aphorisms: a ping carries one.
ZEN = (
    "Anything added dilutes everything else.",
    "Approachable is better than simple.",
    "Avoid administrative distraction.",
    "Design for failure.",
    "Encourage flow.",
    "Favor focus over features.",
    "Half measures are as bad as nothing at all.",
    "It's not fully shipped until it's fast.",
    "Keep it logically awesome.",
    "Mind your words, they are important.",
    "Non-blocking is better than blocking.",
    "Practicality beats purity.",
    "Responsive is better than fast.",
    "Speak like a human.",
)

#: The signature headers, strongest first: (header, prefix, digest).
SIGNATURES = (
    ("X-Hub-Signature-256", "sha256=", hashlib.sha256),
    ("X-Hub-Signature", "sha1=", hashlib.sha1),
)


def signature(secret: str, body: bytes, prefix: str, digest) -> str:
    """``<prefix><hex HMAC of the body>``, as GitHub signs a call."""
    return prefix + hmac.new(secret.encode(), body, digest).hexdigest()


def signature_matches(call: GateCall, secrets: str | Sequence[str]) -> bool:
    """Check ``X-Hub-Signature-256`` (preferred) or ``X-Hub-Signature`` over the raw body,
    made with the secret, or one of ``secrets`` (a secret and its previous one)."""
    if isinstance(secrets, str):
        secrets = (secrets,)
    for header, prefix, digest in SIGNATURES:
        given = call.header(header)
        if given is None:
            continue
        expected = (signature(secret, call.body, prefix, digest).encode() for secret in secrets)
        # The strongest header present is the only one checked: a good sha1
        # must not rescue a wrong sha256.
        return matches_any(given.strip().lower().encode(), expected)
    return False


#: The headers of a call, as the OpenAPI document describes them.
OPENAPI_HEADERS = (
    {
        "name": EVENT_HEADER,
        "in": "header",
        "required": True,
        "description": "The event name.",
        "schema": {"type": "string", "pattern": f"^{_EVENT.pattern}$", "example": "ping"},
    },
    {
        "name": DELIVERY_HEADER,
        "in": "header",
        "required": True,
        "description": "The delivery GUID (any printable ASCII token), the message id.",
        "schema": {
            "type": "string",
            "pattern": f"^{_DELIVERY.pattern}$",
            "example": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        },
    },
    *(
        {
            "name": header,
            "in": "header",
            "required": False,
            "description": f"{prefix}<hex HMAC-{digest().name.upper()} of the raw body "
            "with the door's secret>.",
            "schema": {
                "type": "string",
                "pattern": f"^{prefix}[0-9a-fA-F]{{{digest().digest_size * 2}}}$",
            },
        }
        for header, prefix, digest in SIGNATURES
    ),
)

#: The body of a call, as the OpenAPI document describes it: JSON, or a form
#: with the JSON in its ``payload`` field.
OPENAPI_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": "The webhook payload of the event (any JSON object).",
            "example": {"zen": "Design for failure.", "hook_id": 1},
        }
    },
    "application/x-www-form-urlencoded": {
        "schema": {
            "type": "object",
            "required": ["payload"],
            "properties": {
                "payload": {
                    "type": "string",
                    "description": "The webhook payload, a JSON object.",
                    "example": '{"zen": "Design for failure.", "hook_id": 1}',
                }
            },
        }
    },
}


class GitHubGate(Gate):
    """``POST /gate/GitHub/<door>``."""

    name = "GitHub"
    signs = True
    takes_form = True
    takes_event = True
    side_action_clients = ("conduits", "dockerhub")
    openapi = GateDescription(
        summary="A GitHub webhook (signed with the door's secret)",
        description=(
            "A door with a secret requires X-Hub-Signature-256 (preferred, checked when both "
            "are present) or X-Hub-Signature over the raw body, else 403. A door without a "
            "secret answers 403, an unknown door 404, unless the configuration's "
            "allow_unsigned lists GitHub. Checks run in this order: signature (403), then "
            "validity (400: missing or malformed X-GitHub-Event / X-GitHub-Delivery, a body "
            "that is not a JSON object, a form without a payload field). A redelivery answers "
            "200 with duplicate: true."
        ),
        body=OPENAPI_BODY,
        headers=OPENAPI_HEADERS,
        side_actions=(NOTIFY_NEW_COMMITS, TRIGGER_BUILD),
        not_found=(NOT_FOUND,),
        duplicates=True,
    )
    sender = "On GitHub, the organization's (or repository's) Settings → Webhooks → Add webhook:"
    log = Logger()

    @classmethod
    def sender_setup(cls, door: str, url: str, secret: str | None) -> list[str]:
        return [
            cls.sender,
            f"  Payload URL:       {url}",
            "  Content type:      application/json",
            f"  Secret:            {secret or '(none: set one, the door refuses unsigned calls)'}",
            "  SSL verification:  Enable",
            "  Which events:      Send me everything.",
            "  Active:            checked",
            "GitHub then sends a ping: its Recent Deliveries must show it answered 200.",
        ]

    @classmethod
    def check_call(cls, door: str, service: Service | None, nonce: str) -> CheckCall:
        """A ``ping`` as GitHub sends it when an organization's webhook is made: its
        headers, a fresh delivery id, both signatures (sha256 and sha1)."""
        hook_id = int(nonce[:8], 16)
        payload = {
            "zen": secrets.choice(ZEN),
            "hook_id": hook_id,
            "hook": {
                "type": "Organization",
                "id": hook_id,
                "name": "web",
                "active": True,
                "events": ["*"],
                "config": {"content_type": "json", "insecure_ssl": "0"},
            },
            "organization": {"login": door, "description": f"door check {nonce}"},
            "sender": {"login": "notifications-door-check", "type": "User"},
        }
        body = json_body(payload)
        delivery = str(uuid.uuid4())
        headers = {
            "content-type": "application/json",
            "user-agent": "GitHub-Hookshot/notifications-door-check",
            EVENT_HEADER.lower(): "ping",
            DELIVERY_HEADER.lower(): delivery,
            "x-github-hook-id": str(hook_id),
            "x-github-hook-installation-target-type": "organization",
            "x-github-hook-installation-target-id": str(hook_id),
        }
        if service is not None and service.secret:
            for header, prefix, digest in SIGNATURES:
                headers[header.lower()] = signature(service.secret, body, prefix, digest)
        return CheckCall(body, headers, message_id=delivery)

    def __init__(self, config, conduits=None, dockerhub=None, clock=None):
        super().__init__(config, clock)
        #: ``notify_new_commits(service, clone_url)``: Phabricator fetches at once.
        self.conduits = conduits
        #: ``trigger_build(image, token)``: Docker Hub builds the image.
        self.dockerhub = dockerhub

    @classmethod
    def call_headers(cls, service: Service | None, body: bytes, event: str | None) -> dict:
        """GitHub's headers: the event, a new delivery id, the sha256 signature."""
        headers = {EVENT_HEADER.lower(): event or "", DELIVERY_HEADER.lower(): str(uuid.uuid4())}
        if service is not None and service.secret:
            header, prefix, digest = SIGNATURES[0]
            headers[header.lower()] = signature(service.secret, body, prefix, digest)
        return headers

    def authenticate(self, call: GateCall) -> None:
        service = self.config.service(self.name, call.door)
        if service is not None and service.secret:
            if not signature_matches(call, service.secrets(self.now())):
                signed = any(call.header(header) is not None for header, _, _ in SIGNATURES)
                code = refusals.SIGNATURE_MISMATCH if signed else refusals.MISSING_SIGNATURE
                raise GateError(403, UNAUTHORIZED, "missing or wrong signature", code)
            return
        if self.name in self.config.allow_unsigned:
            return
        if service is None:
            raise GateError(404, NOT_FOUND, "unknown door", refusals.UNKNOWN_DOOR)
        raise GateError(
            403,
            UNAUTHORIZED,
            "door has no secret and unsigned calls are not allowed",
            refusals.UNPROTECTED_DOOR,
        )

    def payload(self, call: GateCall) -> dict:
        if call.content_type == "application/x-www-form-urlencoded":
            fields = dict(parse_form(call.body))
            if "payload" not in fields:
                raise bad_request("form body without a payload field")
            return parse_json_object(fields["payload"])
        return parse_json_object(call.body)

    def process(self, call: GateCall) -> Outcome:
        self.authenticate(call)
        event = call.header(EVENT_HEADER)
        delivery = call.header(DELIVERY_HEADER)
        if not event:
            raise bad_request(f"missing {EVENT_HEADER} header", refusals.MISSING_HEADER)
        if not delivery:
            raise bad_request(f"missing {DELIVERY_HEADER} header", refusals.MISSING_HEADER)
        event = event.strip()
        delivery = delivery.strip()
        if not _EVENT.fullmatch(event):
            raise bad_request(f"{EVENT_HEADER} is not an event name", refusals.BAD_HEADER)
        if not _DELIVERY.fullmatch(delivery):
            raise bad_request(f"{DELIVERY_HEADER} is not a delivery id", refusals.BAD_HEADER)
        payload = self.payload(call)

        outcome = Outcome(gate=self.name, event=event, delivery=delivery)
        outcome.side_actions.extend(self.side_actions(call.door, event, payload))
        analyzer = self.config.analyzers.for_door(self.name, call.door)
        type_, text, link = render.render(event, payload)
        if render.is_ignored(type_, payload, analyzer):
            self.log.debug("{door}: {type} ignored by the analyzer", door=call.door, type=type_)
            return outcome
        notification = Notification(
            service=self.name,
            project=call.door,
            group=render.group(type_, payload, analyzer, call.door),
            rawContent=payload,
            type=type_,
            text=text,
            link=link,
        )
        outcome.publications.append(Publication(notification, message_id=delivery))
        return outcome

    def side_actions(self, door: str, event: str, payload: dict) -> list[SideAction]:
        """What a push asks of other services (reference §3.6), each only when configured:
        a Phabricator door of the same name with its API token, a Docker Hub token
        for the repository."""
        if event != "push":
            return []
        actions: list[SideAction] = []
        phabricator = self.config.service("Phabricator", door)
        clone_url = text_at(payload, "repository", "clone_url")
        if self.conduits is not None and phabricator and phabricator.secret and clone_url:
            actions.append(partial(self.conduits.notify_new_commits, phabricator, clone_url))
        image = text_at(payload, "repository", "full_name")
        token = self.config.dockerhub_tokens.get(image)
        if self.dockerhub is not None and token:
            actions.append(partial(self.dockerhub.trigger_build, image, token))
        return actions
