"""The GitHub gate: signed webhooks, one notification per event (docs/reference.rst §3.1)."""

from __future__ import annotations

import hashlib
import hmac
import re
from functools import partial

from twisted.logger import Logger

from ..notification import Notification
from ..renderers import github as render
from ..renderers import text_at
from .base import (
    NOT_FOUND,
    UNAUTHORIZED,
    Gate,
    GateCall,
    GateError,
    Outcome,
    Publication,
    SideAction,
    bad_request,
    parse_form,
    parse_json_object,
)

#: GitHub's delivery ids are GUIDs; accept any short printable token, as
#: redeliveries and other senders use other shapes, but it must fit an AMQP
#: message id.
_DELIVERY = re.compile(r"[\x21-\x7e]{1,200}")
_EVENT = re.compile(r"[a-z0-9_]{1,100}")


def signature_matches(call: GateCall, secret: str) -> bool:
    """Check ``X-Hub-Signature-256`` (preferred) or ``X-Hub-Signature`` over the raw body."""
    for header, prefix, digest in (
        ("x-hub-signature-256", "sha256=", hashlib.sha256),
        ("x-hub-signature", "sha1=", hashlib.sha1),
    ):
        given = call.header(header)
        if given is None:
            continue
        expected = prefix + hmac.new(secret.encode(), call.body, digest).hexdigest()
        # The strongest header present is the only one checked: a good sha1
        # must not rescue a wrong sha256.
        return hmac.compare_digest(given.strip().lower().encode(), expected.encode())
    return False


class GitHubGate(Gate):
    """``POST /gate/GitHub/<door>``."""

    name = "GitHub"
    takes_form = True
    log = Logger()

    def __init__(self, config, phabricator=None, dockerhub=None):
        super().__init__(config)
        #: ``notify_new_commits(service, clone_url)``: Phabricator fetches at once.
        self.phabricator = phabricator
        #: ``trigger_build(image, token)``: Docker Hub builds the image.
        self.dockerhub = dockerhub

    def authenticate(self, call: GateCall) -> None:
        service = self.config.service(self.name, call.door)
        if service is not None and service.secret:
            if not signature_matches(call, service.secret):
                raise GateError(403, UNAUTHORIZED, "missing or wrong signature")
            return
        if self.name in self.config.allow_unsigned:
            return
        if service is None:
            raise GateError(404, NOT_FOUND, "unknown door")
        raise GateError(403, UNAUTHORIZED, "door has no secret and unsigned calls are not allowed")

    def payload(self, call: GateCall) -> dict:
        if call.content_type == "application/x-www-form-urlencoded":
            fields = dict(parse_form(call.body))
            if "payload" not in fields:
                raise bad_request("form body without a payload field")
            return parse_json_object(fields["payload"])
        return parse_json_object(call.body)

    def process(self, call: GateCall) -> Outcome:
        self.authenticate(call)
        event = call.header("x-github-event")
        delivery = call.header("x-github-delivery")
        if not event:
            raise bad_request("missing X-GitHub-Event header")
        if not delivery:
            raise bad_request("missing X-GitHub-Delivery header")
        event = event.strip()
        delivery = delivery.strip()
        if not _EVENT.fullmatch(event):
            raise bad_request("X-GitHub-Event is not an event name")
        if not _DELIVERY.fullmatch(delivery):
            raise bad_request("X-GitHub-Delivery is not a delivery id")
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
        if self.phabricator is not None and phabricator and phabricator.secret and clone_url:
            actions.append(partial(self.phabricator.notify_new_commits, phabricator, clone_url))
        image = text_at(payload, "repository", "full_name")
        token = self.config.dockerhub_tokens.get(image)
        if self.dockerhub is not None and token:
            actions.append(partial(self.dockerhub.trigger_build, image, token))
        return actions
