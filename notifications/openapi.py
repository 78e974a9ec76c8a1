"""The OpenAPI 3.0 document of the HTTP surface, served at ``GET /openapi.json``.

The document is built here, in Python, so that the shared pieces (the
actions report, the error answers) are written once; it is plain data and
never depends on the configuration: it describes every answer a daemon may
give, whatever its features, credentials and state (README, docs/reference.rst §2, §3, §6,
§7). ``tests/test_openapi.py`` runs schemathesis against a running daemon to
keep it honest.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from twisted.web.pages import notFound
from twisted.web.resource import Resource

from . import __version__
from .config import FEATURES, GATES

OPENAPI_VERSION = "3.0.3"

TEXT = "text/plain"
JSON = "application/json"
HTML = "text/html"
FORM = "application/x-www-form-urlencoded"

#: What a gate answers (503) while the daemon stops.
SHUTTING_DOWN = "The notifications center is shutting down.\n"
#: What a call past ``[gate] max_in_progress`` gets (with Retry-After).
TOO_MANY = "Too many calls in progress, retry later.\n"

#: What a GET on a gate says (``notifications.web.POST_ONLY``).
POST_ONLY = "This gate takes POST requests: see the documentation of the notifications center."

#: Gates that read ``?token=`` / ``Authorization: Bearer`` when their door has a secret.
TOKEN_GATES = ("DockerHub", "Jenkins", "Notification")

#: The side actions each gate may report, besides ``AMQPAction``.
SIDE_ACTIONS = {
    "GitHub": ("NotifyNewCommitsAction", "TriggerDockerHubBuildAction"),
    "DockerHub": ("MailgunAction",),
}


def _ref(kind: str, name: str) -> dict:
    return {"$ref": f"#/components/{kind}/{name}"}


def _text(description: str, schema: dict | None = None) -> dict:
    return {
        "description": description,
        "content": {TEXT: {"schema": {"type": "string", **(schema or {})}}},
    }


def _json(description: str, schema: dict) -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _counter(description: str) -> dict:
    return {"type": "integer", "minimum": 0, "description": description}


def _object(properties: dict, required: list[str] | None = None, extra: bool = False) -> dict:
    return {
        "type": "object",
        "required": list(properties) if required is None else required,
        "properties": properties,
        "additionalProperties": extra,
    }


def _error_object(nullable: bool) -> dict:
    schema = _object(
        {
            "type": {"type": "string", "minLength": 1, "description": "The error's class."},
            "message": {"type": "string", "minLength": 1, "description": "What went wrong."},
        }
    )
    if nullable:
        schema["nullable"] = True
        schema["description"] = "null when the action succeeded."
    return schema


def _action(name: str, description: str, fields: dict) -> dict:
    schema = _object(
        {
            "action": {"type": "string", "enum": [name]},
            **fields,
            "error": _error_object(nullable=True),
        }
    )
    schema["description"] = description
    return schema


ACTIONS = {
    "AMQPAction": _action(
        "AMQPAction",
        "The notification stored in the outbox and published on the exchange.",
        {
            "method": {"type": "string", "enum": ["publish"]},
            "target": {"type": "string", "description": "The exchange."},
            "routingKey": {
                "type": "string",
                "minLength": 7,
                "maxLength": 255,
                # project.group.service.type: no empty word, no topic wildcard.
                "pattern": r"^[^.*#]+(\.[^.*#]+){3,}$",
                "description": "project.group.service.type, lowercased and sanitized.",
            },
            "status": {
                "type": "string",
                "enum": ["published", "queued", "failed"],
                "description": "published: confirmed by the broker before the answer; "
                "queued: stored durably, published when the broker is back; "
                "failed: not stored (the only status with an error).",
            },
        },
    ),
    "NotifyNewCommitsAction": _action(
        "NotifyNewCommitsAction",
        "A GitHub push: Phabricator asked to fetch the new commits (diffusion.looksoon).",
        {"callSign": {"type": "string", "nullable": True}},
    ),
    "TriggerDockerHubBuildAction": _action(
        "TriggerDockerHubBuildAction",
        "A GitHub push: a Docker Hub build triggered.",
        {"image": {"type": "string"}},
    ),
    "MailgunAction": _action(
        "MailgunAction",
        "A Docker Hub build failure: the stored message fetched from Mailgun.",
        {"method": {"type": "string", "enum": ["GET"]}, "target": {"type": "string"}},
    ),
}


def _report(gate: str, accepted: bool) -> dict:
    """The actions report of a gate: 200 (no action has an error) or 503 (one has)."""
    kinds = ("AMQPAction", *SIDE_ACTIONS.get(gate, ()))
    item: dict[str, Any] = {"oneOf": [_ref("schemas", kind) for kind in kinds]}
    if accepted:
        item = {
            "allOf": [
                item,
                {
                    "type": "object",
                    "properties": {
                        "error": {"type": "object", "nullable": True, "enum": [None]},
                        "status": {"type": "string", "enum": ["published", "queued"]},
                    },
                },
            ]
        }
    properties: dict[str, Any] = {
        "gate": (
            {"type": "string", "minLength": 1, "description": "The notification's service."}
            if gate == "Notification"
            else {"type": "string", "enum": [gate]}
        ),
        "door": {"type": "string", "description": "The door of the call."},
        "created": {"type": "integer", "minimum": 0, "description": "Unix time."},
        "actions": {"type": "array", "items": item},
        "requestId": {
            "type": "string",
            "pattern": "^[0-9a-f]{16}$",
            "description": "The call's id, also in its log line and X-Request-Id header.",
        },
    }
    if gate == "GitHub" and accepted:
        properties["duplicate"] = {
            "type": "boolean",
            "enum": [True],
            "description": "A redelivery (same X-GitHub-Delivery within the dedup window): "
            "nothing published, no action.",
        }
    schema = _object(properties, required=["gate", "door", "created", "actions", "requestId"])
    schema["description"] = (
        "What was done (no action has an error)."
        if accepted
        else "What was done; at least one action has an error (the notification could "
        "not be stored, or a side action failed)."
    )
    return schema


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

GITHUB_PAYLOAD = {
    "type": "object",
    "description": "The webhook payload of the event (any JSON object).",
    "example": {"zen": "Design for failure.", "hook_id": 1},
}

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
    "description": "A Herald webhook call (Phorge/Phabricator), signed with "
    "X-Phabricator-Webhook-Signature.",
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

GATE_BODIES = {
    "GitHub": {
        JSON: {"schema": GITHUB_PAYLOAD},
        FORM: {
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
    },
    "DockerHub": {JSON: {"schema": DOCKERHUB_PAYLOAD}},
    "Jenkins": {JSON: {"schema": JENKINS_PAYLOAD}},
    "Phabricator": {
        FORM: {"schema": PHABRICATOR_FORM},
        JSON: {"schema": {"oneOf": [FEED_STORY_JSON, HERALD_JSON]}},
    },
    "Notification": {JSON: {"schema": _ref("schemas", "Notification")}},
}

GATE_SUMMARIES = {
    "GitHub": "A GitHub webhook (signed with the door's secret)",
    "DockerHub": "A Docker Hub push, or a build failure through Mailgun",
    "Jenkins": "A Jenkins Notification plugin build event",
    "Phabricator": "A Phabricator feed.http-hooks story",
    "Notification": "A ready-made notification from any tool",
}

GATE_DESCRIPTIONS = {
    "GitHub": (
        "A door with a secret requires X-Hub-Signature-256 (preferred, checked when both "
        "are present) or X-Hub-Signature over the raw body, else 403. A door without a "
        "secret answers 403, an unknown door 404, unless the configuration's "
        "allow_unsigned lists GitHub. Checks run in this order: signature (403), then "
        "validity (400: missing or malformed X-GitHub-Event / X-GitHub-Delivery, a body "
        "that is not a JSON object, a form without a payload field). A redelivery answers "
        "200 with duplicate: true."
    ),
    "DockerHub": "Group docker; type push or buildFailure.",
    "Jenkins": (
        "Type: the lowercase phase, plus . and the lowercase status. A job listed in "
        "notifyOnlyOnFailure publishes only on FAILURE, ABORTED or UNSTABLE: otherwise "
        "200 with no action."
    ),
    "Phabricator": (
        "The door must be a declared Phabricator instance, else 404 Unknown Phabricator "
        "instance. A feed story without a storyText string is 400. A Herald webhook "
        "(JSON with object.phid) must carry X-Phabricator-Webhook-Signature, the hex "
        "HMAC-SHA256 of the raw body with the door's hmac_key, else 403 (unless the door "
        "has no hmac_key and allow_unsigned lists Phabricator)."
    ),
    "Notification": (
        "service, group and type must be non-empty strings, text and link strings, else "
        "400. The report's gate is the notification's service."
    ),
}


def _gate_post(gate: str) -> dict:
    parameters: list[dict] = [_ref("parameters", "door")]
    if gate == "GitHub":
        parameters += [
            {
                "name": "X-GitHub-Event",
                "in": "header",
                "required": True,
                "description": "The event name.",
                "schema": {"type": "string", "pattern": "^[a-z0-9_]{1,100}$", "example": "ping"},
            },
            {
                "name": "X-GitHub-Delivery",
                "in": "header",
                "required": True,
                "description": "The delivery GUID (any printable ASCII token), the message id.",
                "schema": {
                    "type": "string",
                    "pattern": r"^[\x21-\x7e]{1,200}$",
                    "example": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                },
            },
            {
                "name": "X-Hub-Signature-256",
                "in": "header",
                "required": False,
                "description": "sha256=<hex HMAC-SHA256 of the raw body with the door's secret>.",
                "schema": {"type": "string", "pattern": "^sha256=[0-9a-fA-F]{64}$"},
            },
            {
                "name": "X-Hub-Signature",
                "in": "header",
                "required": False,
                "description": "sha1=<hex HMAC-SHA1 of the raw body with the door's secret>.",
                "schema": {"type": "string", "pattern": "^sha1=[0-9a-fA-F]{40}$"},
            },
        ]
    if gate in TOKEN_GATES:
        parameters.append(_ref("parameters", "token"))
    if gate == "Phabricator":
        parameters.append(
            {
                "name": "X-Phabricator-Webhook-Signature",
                "in": "header",
                "required": False,
                "description": "Herald webhooks: hex HMAC-SHA256 of the raw body.",
                "schema": {"type": "string"},
            }
        )
    request_id = {"X-Request-Id": _ref("headers", "X-Request-Id")}
    maybe_request_id = {"X-Request-Id": _ref("headers", "X-Request-Id-Optional")}
    responses: dict[str, Any] = {
        "200": {
            "description": "Accepted: the actions report (an empty text/plain body when the "
            "ActionsReport feature is off).",
            "headers": request_id,
            "content": {
                JSON: {"schema": _ref("schemas", f"{gate}Report")},
                TEXT: {"schema": {"type": "string", "maxLength": 0}},
            },
        },
        "400": {**_response("BadRequest"), "headers": request_id},
        "404": {**_response("NotFound"), "headers": maybe_request_id},
        "408": _ref("responses", "RequestTimeout"),
        "413": _ref("responses", "PayloadTooLarge"),
        "415": _ref("responses", "UnsupportedMediaType"),
        "431": _ref("responses", "HeadersTooLarge"),
        "503": {
            "description": "An action failed (the report), or the daemon is shutting down or "
            "has too many calls in progress (text/plain, with Retry-After).",
            "headers": {"Retry-After": _ref("headers", "Retry-After"), **maybe_request_id},
            "content": {
                JSON: {"schema": _ref("schemas", f"{gate}FailedReport")},
                TEXT: {"schema": {"type": "string", "enum": [SHUTTING_DOWN, TOO_MANY]}},
            },
        },
    }
    if gate in ("GitHub", "Phabricator", *TOKEN_GATES):
        responses["403"] = {**_response("Unauthorized"), "headers": request_id}
    operation: dict[str, Any] = {
        "operationId": f"post{gate}",
        "tags": ["gates"],
        "summary": GATE_SUMMARIES[gate],
        "description": GATE_DESCRIPTIONS[gate]
        + " Bodies sent as text/json, text/plain, */*+json or with no content type are "
        "read as JSON too, as the older system did; any other type is 415.",
        "parameters": parameters,
        "requestBody": {"required": True, "content": GATE_BODIES[gate]},
        "responses": dict(sorted(responses.items())),
    }
    if gate in TOKEN_GATES:
        operation["security"] = [{}, {"doorBearer": []}]
        operation["description"] += (
            " A door with a secret in the credentials needs it, as ?token=<secret> or "
            "Authorization: Bearer <secret> (403 otherwise); other doors are open."
        )
    return operation


def _gate_get(gate: str, door: bool) -> dict:
    operation = {
        "operationId": f"get{gate}" + ("Door" if door else ""),
        "tags": ["gates"],
        "summary": "Says to POST",
        "responses": {
            "404": _ref("responses", "NotFound"),
            "405": _ref("responses", "PostOnly"),
        },
    }
    if door:
        operation["parameters"] = [_ref("parameters", "door")]
    return operation


def _error_text(description: str, first_line: str, reason: bool = True) -> dict:
    """An error answer: the older system's message, then (maybe) a line saying why."""
    escaped = first_line.replace(".", r"\.")
    return _text(description, {"pattern": f"^{escaped}\\n" + (r"(.*\n)?$" if reason else "$")})


#: The answers shared by several operations (components/responses).
RESPONSES: dict[str, Any] = {
    "BadRequest": _error_text(
        "An invalid call (missing header, body that is not what the gate reads, "
        "routing key over 255 bytes…). A request that is not valid HTTP (a malformed "
        "request line or header, headers over 16 KiB in total) gets a bare 400 Bad Request "
        "from the HTTP layer instead, with no body, and the connection is closed.",
        "Bad request.",
    ),
    "Unauthorized": _error_text(
        "A missing or wrong signature or door token, or a GitHub door without a "
        "secret (unless allow_unsigned).",
        "Unauthorized action.",
    ),
    "NotFound": {
        "description": "No such resource: text/plain from a gate (an unknown GitHub "
        "door when unsigned calls are not allowed, an unknown Phabricator "
        "instance), text/html for any other path.",
        "content": {
            TEXT: {
                "schema": {
                    "type": "string",
                    "pattern": r"^(Not found\.|Unknown Phabricator instance\.)\n"
                    r"(.*\n)?$",
                }
            },
            HTML: {"schema": {"type": "string"}},
        },
    },
    "PostOnly": {
        "description": "A gate takes POST requests only.",
        "headers": {"Allow": _ref("headers", "Allow")},
        "content": {TEXT: {"schema": {"type": "string", "enum": [POST_ONLY]}}},
    },
    "RequestTimeout": _text(
        "The request did not arrive in full within [gate] request_timeout; the "
        "connection is closed.",
        {"enum": ["Request timeout.\n"]},
    ),
    "PayloadTooLarge": _text(
        "The body is over [gate] max_body_size (refused as soon as its length is "
        "known); the connection is closed.",
        {"enum": ["Payload too large.\n"]},
    ),
    "UnsupportedMediaType": _error_text(
        "The body's content type is not one the gate reads.",
        "Unsupported media type.",
    ),
    "HeadersTooLarge": _text(
        "The request line or headers are too long; the connection is closed.",
        {"enum": ["Request line or headers too large.\n"]},
    ),
}


def _response(name: str) -> dict:
    """A shared answer, copied, so that an operation can add its headers."""
    return dict(RESPONSES[name])


def _outbox_state() -> dict:
    return _object(
        {
            "depth": _counter("Notifications stored, not yet confirmed."),
            "in_flight": _counter("Published, waiting for the confirm."),
            "in_memory": _counter("Waiting in memory to be published."),
            "published": _counter("Confirmed by the broker since the start."),
            "nacked": _counter("Refused by the broker (basic.nack), then retried."),
            "oldest_age": {
                "type": "number",
                "minimum": 0,
                "nullable": True,
                "description": "Seconds the oldest waiting notification has waited; "
                "null when none waits.",
            },
        }
    )


def _status_json() -> dict:
    recent = _object(
        {
            "time": {"type": "integer", "minimum": 0},
            "service": {"type": "string"},
            "project": {"type": "string"},
            "group": {"type": "string"},
            "type": {"type": "string"},
            "text": {"type": "string"},
            "link": {"type": "string"},
            "routingKey": {"type": "string"},
            "messageId": {"type": "string"},
        },
        extra=True,
    )
    outbox = _outbox_state()
    outbox["properties"]["error"] = {"type": "string", "enum": ["outbox unreadable"]}
    return _object(
        {
            "version": {"type": "string"},
            "now": {"type": "number"},
            "exchange": {"type": "string"},
            "gates": _object(
                {
                    "enabled": {"type": "boolean"},
                    "names": {"type": "array", "items": {"type": "string", "enum": list(GATES)}},
                }
            ),
            "config": {"type": "boolean", "description": "Whether /config is served."},
            "broker": _ref("schemas", "BrokerState"),
            "outbox": outbox,
            "recent": {"type": "array", "items": recent, "maxItems": 20},
        },
        extra=True,
    )


def document() -> dict:
    """The OpenAPI document: new, plain JSON data on each call."""
    return copy.deepcopy(_document())


def _document() -> dict:
    paths: dict[str, Any] = {
        "/": {
            "get": {
                "operationId": "getStatusPage",
                "tags": ["status"],
                "summary": "The status page (HTML)",
                "responses": {"200": {"description": "The page.", "content": {HTML: {}}}},
            }
        },
        "/status": {
            "get": {
                "operationId": "getStatus",
                "tags": ["status"],
                "summary": "Liveness probe: always ALIVE",
                "responses": {"200": _text("The daemon is up.", {"enum": ["ALIVE"]})},
            }
        },
        "/status.json": {
            "get": {
                "operationId": "getStatusFeed",
                "tags": ["status"],
                "summary": "What the status page shows (never a secret)",
                "responses": {"200": _json("The page's data.", _status_json())},
            }
        },
        "/static/{name}": {
            "get": {
                "operationId": "getStaticFile",
                "tags": ["status"],
                "summary": "The status page's script, stylesheet and icon",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                        "example": "app.js",
                    }
                ],
                "responses": {
                    "200": {
                        "description": "The file.",
                        "content": {
                            "text/javascript": {},
                            "text/css": {},
                            "image/svg+xml": {},
                        },
                    },
                    "404": _ref("responses", "NotFound"),
                },
            }
        },
        "/health": {
            "get": {
                "operationId": "getHealth",
                "tags": ["status"],
                "summary": "Broker state and outbox figures",
                "responses": {
                    "200": _json("The state.", _ref("schemas", "Health")),
                    "503": _json(
                        "The outbox could not be read.",
                        _object(
                            {
                                "status": {"type": "string", "enum": ["error"]},
                                "error": {"type": "string"},
                            }
                        ),
                    ),
                },
            }
        },
        "/config": {
            "get": {
                "operationId": "getConfig",
                "tags": ["status"],
                "summary": "The configuration report (never a secret)",
                "description": "404 when the GetConfig feature is off.",
                "responses": {
                    "200": _json("The report.", _ref("schemas", "ConfigReport")),
                    "404": _ref("responses", "NotFound"),
                },
            }
        },
        "/metrics": {
            "get": {
                "operationId": "getMetrics",
                "tags": ["status"],
                "summary": "Prometheus metrics",
                "description": "The text format; the OpenMetrics format when the Accept "
                "header asks for application/openmetrics-text.",
                "responses": {
                    "200": {
                        "description": "The metrics.",
                        "content": {
                            TEXT: {"schema": {"type": "string"}},
                            "application/openmetrics-text": {"schema": {"type": "string"}},
                        },
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "getOpenAPI",
                "tags": ["status"],
                "summary": "This document",
                "responses": {
                    "200": _json(
                        "The OpenAPI document.",
                        {
                            "type": "object",
                            "required": ["openapi", "info", "paths"],
                            "properties": {
                                "openapi": {"type": "string", "enum": [OPENAPI_VERSION]}
                            },
                        },
                    )
                },
            }
        },
    }
    for gate in GATES:
        paths[f"/gate/{gate}/"] = {"get": _gate_get(gate, door=False)}
        paths[f"/gate/{gate}/{{door}}"] = {
            "get": _gate_get(gate, door=True),
            "post": _gate_post(gate),
        }

    schemas: dict[str, Any] = {
        **ACTIONS,
        "Notification": NOTIFICATION,
        "BrokerState": _object(
            {
                "connected": {"type": "boolean"},
                "node": {
                    "type": "string",
                    "nullable": True,
                    "description": "The node (host:port) connected to; null while disconnected.",
                },
                "since": {
                    "type": "number",
                    "description": "Unix time the connection came up (or was lost).",
                },
                "reconnects": _counter("Connections made after the first one."),
                "unroutable": _counter("Notifications no queue was bound for."),
                "unconfirmed": _counter("Publications waiting for the broker's confirm."),
            }
        ),
        "OutboxState": _outbox_state(),
        "Health": _object(
            {
                "status": {
                    "type": "string",
                    "enum": ["ok", "degraded"],
                    "description": "degraded while the broker is not connected.",
                },
                "broker": _ref("schemas", "BrokerState"),
                "outbox": _ref("schemas", "OutboxState"),
            }
        ),
        "ConfigReport": _object(
            {
                "gates": {
                    "type": "array",
                    "description": "Every gate, or none when the Gate feature is off.",
                    "items": {"type": "string", "enum": list(GATES)},
                    "uniqueItems": True,
                },
                "features": {
                    "type": "array",
                    "items": _object(
                        {
                            "name": {"type": "string", "enum": list(FEATURES)},
                            "enabled": {"type": "boolean"},
                        }
                    ),
                },
                "services": {
                    "type": "array",
                    "items": _object(
                        {
                            "gate": {"type": "string", "enum": list(GATES)},
                            "door": {"type": "string"},
                            "instance": {"type": "string", "nullable": True},
                            "status": {
                                "type": "string",
                                "description": "Projects map not cached. for a Phabricator "
                                "instance whose projects map is not cached, else empty.",
                            },
                        }
                    ),
                },
            }
        ),
    }
    for gate in GATES:
        schemas[f"{gate}Report"] = _report(gate, accepted=True)
        schemas[f"{gate}FailedReport"] = _report(gate, accepted=False)

    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "Notifications center",
            "version": __version__,
            "description": "Receives webhooks on the gates, makes each notification durable in "
            "an outbox, publishes it on a RabbitMQ topic exchange and answers with the actions "
            "report. Error answers are text/plain: the first line is the message of the older "
            "system, the second says what was wrong. Any path not listed here is 404.",
        },
        "tags": [
            {
                "name": "gates",
                "description": "POST /gate/<Gate>/<door>: gate names are "
                "case-sensitive; the door is the last path segment.",
            },
            {"name": "status", "description": "Monitoring and introspection."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "parameters": {
                "door": {
                    "name": "door",
                    "in": "path",
                    "required": True,
                    "description": "The door: for service gates, the project (e.g. the GitHub "
                    "organization).",
                    "schema": {"type": "string", "minLength": 1},
                    "example": "Acme",
                },
                "token": {
                    "name": "token",
                    "in": "query",
                    "required": False,
                    "description": "The door's secret, when the door has one in the "
                    "credentials (or send it as Authorization: Bearer).",
                    "schema": {"type": "string"},
                },
            },
            "headers": {
                "Retry-After": {
                    "description": "Seconds to wait before calling again (shutting down).",
                    "schema": {"type": "integer", "minimum": 0},
                },
                "X-Request-Id": {
                    "required": True,
                    "description": "The call's id, also in its log line (and report).",
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                },
                "X-Request-Id-Optional": {
                    "description": "The call's id, when the call reached its gate.",
                    "schema": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                },
                "Allow": {
                    "required": True,
                    "description": "The only method a gate takes.",
                    "schema": {"type": "string", "enum": ["POST"]},
                },
            },
            "responses": RESPONSES,
            "securitySchemes": {
                "doorBearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "The door's secret, for a DockerHub, Jenkins or Notification "
                    "door that has one (or send it as ?token=).",
                }
            },
        },
    }


class OpenAPIResource(Resource):
    """``GET /openapi.json``: the document, serialized once, at construction."""

    def __init__(self, value: dict | None = None):
        super().__init__()
        self.body = json.dumps(document() if value is None else value, ensure_ascii=False).encode()

    def getChild(self, path, request):
        return notFound()

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        return self.body
