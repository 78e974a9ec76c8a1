"""The gates of services that do not sign their calls: Docker Hub, Jenkins, Notification."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from .. import refusals
from ..notification import Notification
from ..renderers import dig, dockerhub, jenkins
from ..report import MAILGUN
from .base import (
    Gate,
    GateCall,
    GateDescription,
    Outcome,
    Publication,
    bad_request,
    parse_json_object,
)

# How the OpenAPI document describes the bodies of the calls.

DOCKERHUB_PAYLOAD = {
    "type": "object",
    "description": "A push (repository.repo_url present) or a Mailgun stored-message event "
    "announcing a build failure (storage.url, a Mailgun https URL; 400 when the daemon "
    "has no Mailgun key or the URL is not Mailgun's).",
    "properties": {
        "repository": {
            "type": "object",
            "properties": {"repo_url": {"type": "string"}, "repo_name": {"type": "string"}},
        },
        "push_data": {
            "type": "object",
            "properties": {"pusher": {"type": "string"}, "tag": {"type": "string"}},
        },
        "storage": {"type": "object", "properties": {"url": {"type": "string"}}},
    },
    "example": {
        "repository": {
            "repo_name": "acme/widgets",
            "repo_url": "https://hub.docker.com/r/acme/widgets",
        },
        "push_data": {"pusher": "alice", "tag": "latest"},
    },
}

JENKINS_PAYLOAD = {
    "type": "object",
    "description": "The Jenkins Notification plugin's JSON.",
    "required": ["name", "build"],
    "properties": {
        "name": {"type": "string", "description": "The job."},
        "build": {
            "type": "object",
            "required": ["phase"],
            "properties": {
                "phase": {"type": "string", "example": "COMPLETED"},
                "status": {"type": "string", "example": "SUCCESS"},
                "full_url": {"type": "string"},
            },
        },
    },
    "example": {
        "name": "widgets",
        "build": {"phase": "COMPLETED", "status": "SUCCESS", "full_url": "https://ci/job/1/"},
    },
}

NOTIFICATION = {
    "type": "object",
    "description": "A ready-made notification. project defaults to the door when absent or "
    'empty; text and link default to "" (null too); rawContent to null.',
    "required": ["service", "group", "type"],
    "properties": {
        "service": {"type": "string", "minLength": 1},
        "project": {"type": "string"},
        "group": {"type": "string", "minLength": 1},
        "type": {"type": "string", "minLength": 1},
        "text": {"type": "string", "nullable": True},
        "link": {"type": "string", "nullable": True},
        "rawContent": {"description": "Anything: kept in the notification as is."},
    },
    "example": {"service": "Deployer", "group": "ops", "type": "deploy", "text": "v2 is live"},
}


class DockerHubGate(Gate):
    """``POST /gate/DockerHub/<door>``: image pushes and (through Mailgun) build failures."""

    name = "DockerHub"
    clients = ("mailgun",)
    openapi = GateDescription(
        summary="A Docker Hub push, or a build failure through Mailgun",
        description="Group docker; type push or buildFailure.",
        body={"application/json": {"schema": DOCKERHUB_PAYLOAD}},
        side_actions=(MAILGUN,),
    )
    group = "docker"
    sender = "On Docker Hub, the repository's Webhooks → New webhook:"

    @classmethod
    def check_payload(cls, door: str, nonce: str) -> dict[str, Any]:
        """An image pushed by ``notifications-door-check``, the nonce as its tag."""
        repository = f"{door.lower()}/door-check"
        return {
            "push_data": {"pusher": "notifications-door-check", "tag": nonce},
            "repository": {
                "repo_name": repository,
                "repo_url": f"https://hub.docker.com/r/{repository}",
            },
        }

    def __init__(self, config, mailgun=None, clock=None):
        super().__init__(config, clock)
        #: Fetches Mailgun stored messages; without it build failures are refused.
        self.mailgun = mailgun

    def notification(self, door: str, payload: Any, type_: str, text: str, link: str):
        return Notification(
            service=self.name,
            project=door,
            group=self.group,
            rawContent=payload,
            type=type_,
            text=text,
            link=link,
        )

    def process(self, call: GateCall) -> Outcome:
        self.check_door_secret(call)
        payload = parse_json_object(call.body)
        event = dockerhub.event_of(payload)
        outcome = Outcome(gate=self.name, event=event)
        if event == dockerhub.PUSH:
            text, link = dockerhub.render_push(payload)
            outcome.publications.append(
                Publication(self.notification(call.door, payload, event, text, link))
            )
            return outcome
        return self.build_failure(call.door, payload, outcome)

    def build_failure(self, door: str, payload: Any, outcome: Outcome) -> defer.Deferred:
        """The stored mail Mailgun announced is fetched: it says what failed.

        A URL that is not Mailgun's is a 400 (raised at once). When the fetch
        fails nothing can be published (the mail is the notification); the
        outcome then only has the ``MailgunAction`` entry with the error, so
        that the answer is 503 and Mailgun, which retries failed webhook
        calls, calls again later.
        """
        if self.mailgun is None:
            raise bad_request(
                "build failure notifications need a Mailgun key", refusals.NOT_CONFIGURED
            )
        url = dig(payload, "storage", "url", default=None)
        reason = self.mailgun.refusal(url)
        if reason is not None:
            raise bad_request(reason)

        def fetched(result: tuple[dict | None, dict]) -> Outcome:
            message, report = result
            if message is not None:
                repository, link = dockerhub.parse_failure_mail(message["body-plain"])
                text, link = dockerhub.render_build_failure(repository, link)
                notification = self.notification(door, payload, dockerhub.BUILD_FAILURE, text, link)
                outcome.publications.append(Publication(notification))
            outcome.side_actions.append(lambda: defer.succeed(report))
            return outcome

        return self.mailgun.fetch(url, door).addCallback(fetched)


class JenkinsGate(Gate):
    """``POST /gate/Jenkins/<door>``: the Jenkins Notification plugin."""

    name = "Jenkins"
    openapi = GateDescription(
        summary="A Jenkins Notification plugin build event",
        description=(
            "Type: the lowercase phase, plus . and the lowercase status. A job listed in "
            "notifyOnlyOnFailure publishes only on FAILURE, ABORTED or UNSTABLE: otherwise "
            "200 with no action."
        ),
        body={"application/json": {"schema": JENKINS_PAYLOAD}},
    )
    sender = (
        "In Jenkins, the job's Job Notifications → Add Endpoint "
        "(Notification plugin; Format JSON, Protocol HTTP, Event All Events):"
    )

    @classmethod
    def check_payload(cls, door: str, nonce: str) -> dict[str, Any]:
        """A build of the job ``notifications-door-check`` started, the nonce in its url."""
        return {
            "name": "notifications-door-check",
            "url": f"job/notifications-door-check/{nonce}/",
            "build": {"phase": "STARTED", "number": 1, "url": f"job/{nonce}/1/"},
        }

    def process(self, call: GateCall) -> Outcome:
        self.check_door_secret(call)
        payload = parse_json_object(call.body)
        if not jenkins.is_valid(payload):
            raise bad_request("expected a Jenkins notification: name and build.phase")
        type_, text, link, job = jenkins.render(payload)
        outcome = Outcome(gate=self.name, event=type_)
        analyzer = self.config.analyzers.for_door(self.name, call.door)
        status = payload["build"].get("status")
        if not jenkins.should_notify(job, status, analyzer):
            return outcome
        notification = Notification(
            service=self.name,
            project=call.door,
            group=analyzer.group_for_item(job, call.door),
            rawContent=payload,
            type=type_,
            text=text,
            link=link,
        )
        outcome.publications.append(Publication(notification))
        return outcome


_REQUIRED = ("service", "project", "group", "type")


class NotificationGate(Gate):
    """``POST /gate/Notification/<door>``: a ready-made notification from any tool."""

    name = "Notification"
    openapi = GateDescription(
        summary="A ready-made notification from any tool",
        description=(
            "service, group and type must be non-empty strings, text and link strings, else "
            "400. The report's gate is the notification's service."
        ),
        body={"application/json": {"schema": {"$ref": "#/components/schemas/Notification"}}},
        schemas={"Notification": NOTIFICATION},
        report_gate={
            "type": "string",
            "minLength": 1,
            "description": "The notification's service.",
        },
    )
    sender = "Any tool: POST a JSON object with service, group, type, text and link to:"

    @classmethod
    def check_payload(cls, door: str, nonce: str) -> dict[str, Any]:
        return {
            "service": "notifications",
            "group": "check",
            "type": "door.check",
            "text": f"door check of Notification/{door} ({nonce})",
        }

    def process(self, call: GateCall) -> Outcome:
        self.check_door_secret(call)
        body = parse_json_object(call.body)
        values = dict(body)
        if values.get("project") in (None, ""):
            values["project"] = call.door
        for key in _REQUIRED:
            if not isinstance(values.get(key), str) or not values[key]:
                raise bad_request(f"{key} must be a non-empty string")
        for key in ("text", "link"):
            if values.get(key) is None:
                values[key] = ""
            elif not isinstance(values[key], str):
                raise bad_request(f"{key} must be a string")
        notification = Notification(
            service=values["service"],
            project=values["project"],
            group=values["group"],
            rawContent=values.get("rawContent"),
            type=values["type"],
            text=values["text"],
            link=values["link"],
        )
        outcome = Outcome(gate=notification.service, event=notification.type)
        outcome.publications.append(Publication(notification))
        return outcome
